//! Our own minimal KVM VMM (work in progress): topology and APIC IDs,
//! CPUID, ACPI tables, guest memory and its layout, boot setup, vCPU threads
//! and their kick signal, serial and the freeze rendezvous. Each concern has
//! its own file; this one only declares them.

pub mod acpi;
pub mod backend;
pub mod boot;
pub mod cpuid;
pub mod devices;
pub mod error;
pub mod exit;
pub mod gdt;
pub mod kick;
pub mod layout;
pub mod machine;
pub mod memory;
pub mod regs;
pub mod tiny;
pub mod topology;
pub mod vcpu;
pub mod watch;
