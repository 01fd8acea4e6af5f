//! Our own minimal KVM VMM (work in progress): topology and APIC IDs,
//! CPUID, ACPI tables, guest memory, boot setup, vCPU threads, serial and
//! the freeze rendezvous. Each concern has its own file.

pub mod acpi;
pub mod backend;
pub mod boot;
pub mod cpuid;
pub mod devices;
pub mod gdt;
pub mod layout;
pub mod machine;
pub mod memory;
pub mod regs;
pub mod tiny;
pub mod topology;
pub mod vcpu;
