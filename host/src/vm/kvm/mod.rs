//! Our own minimal KVM VMM (work in progress): topology and APIC IDs,
//! CPUID, ACPI tables, guest memory, boot setup, vCPU threads, serial and
//! the freeze rendezvous. Each concern has its own file.

pub mod topology;
