//! Guest kernel memory from the host: symbols (the guest's kallsyms, plus
//! a vmlinux's symbol table when the user gives one),
//! where the kernel sits (KASLR, direct map, page tables), struct layouts
//! (the guest's BTF), and reads and writes of kernel variables, per-CPU
//! data and task fields.
//!
//! Works on any [`crate::vm::ram::PhysMemory`]; freezing the guest around
//! an access is the caller's business (the runner's), as is getting the
//! guest's kallsyms. Everything read from the guest is hostile input.

pub mod btf;
pub mod error;
pub mod kernel;
pub mod render;
pub mod symbols;
pub mod translate;
pub mod view;
pub mod vmlinux;

#[cfg(test)]
mod hostile_tests;

pub use error::KmemError;
pub use kernel::Kernel;
pub use vmlinux::Vmlinux;
