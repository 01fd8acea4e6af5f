//! The guide's pages, included only when rustdoc collects doctests: each
//! page's fenced `rust` blocks become doctests of the `ktstr` crate, so an
//! example that no longer compiles fails `cargo test`. Blocks in other
//! languages (`sh`, `toml`, `text`) are not compiled; their `cargo xtask`
//! lines are checked by `tests/docs_commands.rs`.

#[doc = include_str!("../docs/writing-tests.md")]
pub struct WritingTests;

#[doc = include_str!("../docs/running.md")]
pub struct Running;

#[doc = include_str!("../docs/schedulers.md")]
pub struct Schedulers;

#[doc = include_str!("../docs/backends.md")]
pub struct Backends;

#[doc = include_str!("../docs/scenarios.md")]
pub struct Scenarios;

#[doc = include_str!("../docs/checks.md")]
pub struct Checks;

#[doc = include_str!("../docs/gauntlet.md")]
pub struct Gauntlet;

#[doc = include_str!("../docs/ci.md")]
pub struct Ci;

#[doc = include_str!("../docs/kernel-inspection.md")]
pub struct KernelInspection;

#[doc = include_str!("../docs/architecture.md")]
pub struct Architecture;

#[doc = include_str!("../docs/performance.md")]
pub struct Performance;

#[doc = include_str!("../docs/trust.md")]
pub struct Trust;

#[doc = include_str!("../docs/development.md")]
pub struct Development;
