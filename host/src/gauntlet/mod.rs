//! The gauntlet: sweeps of canned scenarios across topology presets,
//! scheduler flag profiles and kernels, with a results store and shards.
//!
//! | file | owns |
//! | --- | --- |
//! | `presets.rs` | the named topologies and choosing them for a host |
//! | `sweep.rs` | cells, VM groups, skips with reasons, shards (pure) |
//! | `matrix.rs` | a cell's record; the matrix table, JSON and JUnit |
//! | `store.rs` | `target/ktstr/runs/<id>/`, baselines, reading runs back |
//! | `run.rs` | booting the groups, `jobs` guests at a time |
//! | `compare.rs` | A/B: metrics per cell, dual gates, Welch's t-test |
//!
//! It sits above the runner and the catalog and below the command line;
//! it prints nothing itself (the command does).

pub mod compare;
pub mod matrix;
pub mod presets;
pub mod run;
pub mod store;
pub mod sweep;

pub use matrix::{CellRecord, Status};
pub use presets::Preset;
pub use sweep::{Cell, Profile, Shard, Sweep};
