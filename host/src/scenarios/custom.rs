//! The custom family: scenarios written as Rust functions in the agent
//! (the spec's custom-scenario API), run by name.

use super::canned::{Canned, UNEVEN};

pub(super) fn entries() -> Vec<Canned> {
    vec![
        Canned::custom(
            "custom_cgroups",
            "custom scenario: setup_cgroups, hold, collect_all (the spec's example)",
            "custom_cgroups",
        ),
        Canned::custom(
            "custom_diverse",
            "custom scenario: CgroupGroup and spawn_diverse (spread check off: the work types \
             differ)",
            "custom_diverse",
        )
        .set_checks(UNEVEN),
        Canned::custom(
            "custom_defs",
            "custom scenario: execute_defs with two cgroups",
            "custom_defs",
        ),
        Canned::custom(
            "custom_steps_with",
            "custom scenario: execute_steps_with explicit checks over the context's",
            "custom_steps_with",
        ),
    ]
}
