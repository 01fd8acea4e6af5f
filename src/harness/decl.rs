//! The binary's declared tests as the harness uses them: sorted and
//! checked for duplicate names ([`tests`]), and the agent registries they
//! make ([`registries`]). What a declaration is lives in `ktstr::decl`.

use ktstr_agent::decl::{KTSTR_TESTS, TestDecl, sorted};
use ktstr_agent::init::Registries;

/// The tests in name order; two with one name are an error.
pub fn tests() -> Result<Vec<&'static TestDecl>, String> {
    sorted(&KTSTR_TESTS)
}

/// The agent's registries (the built-ins and the catalog's guest
/// entries) with every guest test of this binary added under its full
/// name.
pub fn registries() -> Registries {
    let mut r = Registries::builtin();
    for t in KTSTR_TESTS.iter() {
        if let Some(f) = t.guest_fn() {
            r.scenarios = r.scenarios.register(t.full_name(), f);
        }
    }
    r
}
