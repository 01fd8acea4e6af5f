//! PID 1 of the nested-KVM check's L1 guest (see `ktstr_host::nested`):
//! loads kvm_amd, boots L2 on our VMM, prints the outcome, powers off.
//! Built static by the check; useless on a host.

fn main() {
    if std::process::id() != 1 {
        eprintln!("ktstr-nested-guest runs as PID 1 of the nested check's L1 guest, not on a host");
        std::process::exit(2);
    }
    ktstr_host::nested::guest::main()
}
