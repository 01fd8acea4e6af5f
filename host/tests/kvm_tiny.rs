//! The KVM backend with tiny guest programs under this machine's /dev/kvm
//! (here: PVM, which runs small guests but not Linux). Each program was
//! assembled from the source in its comment (`as --64`, `objcopy -O binary`).
//! Skipped, with the reason, where /dev/kvm is absent.

use std::time::{Duration, Instant};

use ktstr_host::vm::kvm::devices::GuestStop;
use ktstr_host::vm::kvm::layout::{TEST_ARGS_MAX_SIZE, TEST_ARGS_START};
use ktstr_host::vm::kvm::machine::{Machine, MachineExit, Running};
use ktstr_host::vm::kvm::tiny::{
    self, COUNTER, COUNTER_AT, CPUID, CPUID_DONE, GUEST_COPY_AT, HOST_WORD_AT, SERIAL, data_block,
};
use vm_memory::{Bytes, GuestAddress};

fn kvm_available() -> bool {
    ktstr_host::skip::dev_kvm()
}

fn machine(topo: &str, code: &[u8], rsi: u64) -> Machine {
    tiny::machine(topo, 64, code, rsi).expect("creating the VM")
}

#[test]
fn guest_prints_over_serial_and_exits() {
    if !kvm_available() {
        return;
    }
    let started = Instant::now();
    let run = machine("1n1l1c1t", SERIAL, 0).start().unwrap();
    let exit = run.wait(Duration::from_secs(20));
    let console = run.console().tail(4096);
    assert_eq!(
        exit,
        Some(MachineExit::Guest(GuestStop::TestExit(0x42))),
        "console: {console:?}"
    );
    assert_eq!(console, "hello from a ktstr tiny guest\n");
    eprintln!("serial tiny guest: {:?}", started.elapsed());
}

fn counters(run: &Running, n: u32) -> Vec<u64> {
    (0..n)
        .map(|i| {
            run.memory()
                .read_obj::<u64>(GuestAddress(data_block(i) + COUNTER_AT))
                .unwrap()
        })
        .collect()
}

#[test]
fn freeze_stops_counters_and_thaw_resumes_them() {
    if !kvm_available() {
        return;
    }
    let n = 4;
    let mut run = machine("1n2l2c1t", COUNTER, 0).start().unwrap();
    let wait_all_move = |run: &Running, before: &[u64]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = counters(run, n);
            if now.iter().zip(before).all(|(a, b)| a > b) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "counters stuck: {before:?} -> {now:?}; exit {:?}",
                run.exit()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let mut last = wait_all_move(&run, &[0; 4]);
    let rounds = 1000;
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let t = Instant::now();
        let snap = run
            .freeze(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        latencies.push(t.elapsed());
        assert!(
            snap.iter().all(Option::is_some),
            "every vCPU reported registers"
        );
        let frozen = counters(&run, n);
        std::thread::sleep(Duration::from_micros(300));
        assert_eq!(
            counters(&run, n),
            frozen,
            "round {round}: counters moved while frozen"
        );
        if round == 0 {
            // A host write during the freeze is what the guest sees after.
            for i in 0..n {
                run.memory()
                    .write_obj(
                        0xfeed_0000u64 + u64::from(i),
                        GuestAddress(data_block(i) + HOST_WORD_AT),
                    )
                    .unwrap();
            }
        }
        run.thaw().unwrap();
        last = wait_all_move(
            &run,
            &frozen
                .iter()
                .zip(&last)
                .map(|(a, b)| *a.max(b))
                .collect::<Vec<_>>(),
        );
    }
    for i in 0..n {
        let copy: u64 = run
            .memory()
            .read_obj(GuestAddress(data_block(i) + GUEST_COPY_AT))
            .unwrap();
        assert_eq!(
            copy,
            0xfeed_0000 + u64::from(i),
            "vCPU {i} saw the host's write"
        );
    }
    latencies.sort();
    eprintln!(
        "freeze-to-parked, {n} vCPUs, {rounds} rounds: median {:?} p99 {:?} max {:?}",
        latencies[rounds / 2],
        latencies[rounds * 99 / 100],
        latencies[rounds - 1]
    );
    assert_eq!(run.stop(), MachineExit::Stopped);
}

/// Leaves the CPUID program queries, as (leaf, subleaf).
const LEAVES: &[(u32, u32)] = &[
    (0, 0),
    (1, 0),
    (4, 0),
    (4, 1),
    (4, 2),
    (4, 3),
    (4, 4),
    (0xb, 0),
    (0xb, 1),
    (0xb, 2),
    (0x1f, 0),
    (0x1f, 1),
    (0x1f, 2),
    (0x8000_0000, 0),
    (0x8000_0001, 0),
    (0x8000_0008, 0),
    (0x8000_001d, 0),
    (0x8000_001d, 1),
    (0x8000_001d, 2),
    (0x8000_001d, 3),
    (0x8000_001d, 4),
    (0x8000_001e, 0),
];
/// Runs the CPUID program on every vCPU of `topo` and returns, per vCPU, what
/// the guest's own `cpuid` instructions returned.
fn guest_cpuid(topo: &str) -> Vec<Vec<kvm_bindings::kvm_cpuid_entry2>> {
    let m = machine(topo, CPUID, TEST_ARGS_START);
    let mut table = vec![LEAVES.len() as u32, 0];
    for &(leaf, sub) in LEAVES {
        table.extend([leaf, sub]);
    }
    let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(bytes.len() as u64 <= TEST_ARGS_MAX_SIZE);
    m.memory()
        .write_slice(&bytes, GuestAddress(TEST_ARGS_START))
        .unwrap();
    let n = m.cpus().vcpus.len() as u32;
    let run = m.start().unwrap();
    let done = |i: u32| {
        run.memory()
            .read_obj::<u32>(GuestAddress(data_block(i) + 16 * LEAVES.len() as u64))
            .unwrap()
            == CPUID_DONE
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(0..n).all(done) {
        assert!(
            Instant::now() < deadline,
            "{topo}: not every vCPU finished; exit {:?}",
            run.exit()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    (0..n)
        .map(|i| {
            LEAVES
                .iter()
                .enumerate()
                .map(|(k, &(function, index))| {
                    let at = data_block(i) + 16 * k as u64;
                    let r = |o: u64| run.memory().read_obj::<u32>(GuestAddress(at + o)).unwrap();
                    kvm_bindings::kvm_cpuid_entry2 {
                        function,
                        index,
                        eax: r(0),
                        ebx: r(4),
                        ecx: r(8),
                        edx: r(12),
                        ..Default::default()
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn cpuid_seen_by_guest_code_matches_the_topology() {
    use ktstr_host::vm::kvm::cpuid::decode_topology;
    use ktstr_host::vm::kvm::topology::CpuTopology;
    if !kvm_available() {
        return;
    }
    // The last shape has APIC ids up to 433, above the xAPIC limit.
    for topo in ["1n1l4c1t", "1n2l2c2t", "2n4l2c2t", "1n14l9c2t"] {
        let started = Instant::now();
        let want = CpuTopology::new(topo.parse().unwrap()).unwrap();
        let seen = guest_cpuid(topo);
        assert_eq!(seen.len(), want.vcpus.len());
        let decoded: Vec<_> = seen.iter().map(|e| decode_topology(e)).collect();
        for (p, d) in want.vcpus.iter().zip(&decoded) {
            assert_eq!(d.apic_id, p.apic_id, "{topo} vCPU {}: APIC id", p.index);
            assert_eq!(
                d.threads_per_core, want.topology.threads_per_core,
                "{topo} vCPU {}: threads per core",
                p.index
            );
        }
        for a in &want.vcpus {
            for b in &want.vcpus {
                let (da, db) = (&decoded[a.index as usize], &decoded[b.index as usize]);
                assert_eq!(
                    a.llc == b.llc,
                    da.llc_id() == db.llc_id(),
                    "{topo}: vCPUs {} and {} L3 sharing",
                    a.index,
                    b.index
                );
                let same_core = a.llc == b.llc && a.core == b.core;
                assert_eq!(
                    same_core,
                    da.apic_id >> da.smt_shift == db.apic_id >> db.smt_shift,
                    "{topo}: vCPUs {} and {} SMT siblings",
                    a.index,
                    b.index
                );
            }
        }
        eprintln!(
            "cpuid {topo}: {} vCPUs checked in {:?}",
            want.vcpus.len(),
            started.elapsed()
        );
    }
}

#[test]
fn triple_fault_ends_the_machine_with_a_reason() {
    if !kvm_available() {
        return;
    }
    // `int3` with a one-entry, not-present IDT: #GP, then #DF, then a
    // triple fault (KVM_EXIT_SHUTDOWN) on hardware KVM. PVM cannot deliver
    // the exception and reports an emulation failure instead; either way the
    // machine must end promptly with the vCPU and a reason, not hang.
    let run = machine("1n1l2c1t", &[0xcc], 0).start().unwrap();
    let exit = run.wait(Duration::from_secs(20));
    match exit {
        Some(MachineExit::TripleFault { vcpu }) => assert!(vcpu < 2),
        Some(MachineExit::Failed { vcpu, reason }) => {
            assert!(vcpu < 2 && reason.contains("emulation"), "{reason}")
        }
        other => panic!("expected a triple fault or a failure, got {other:?}"),
    }
}

#[test]
fn unknown_ports_are_not_fatal() {
    if !kvm_available() {
        return;
    }
    // out 0x1234, al; in al, 0x1235 (via dx); then the test exit port.
    // mov dx,0x1234; out dx,al; mov dx,0x1235; in al,dx; mov dx,0x501; mov al,7; out dx,al; hlt
    let code = [
        0x66, 0xba, 0x34, 0x12, 0xee, 0x66, 0xba, 0x35, 0x12, 0xec, 0x66, 0xba, 0x01, 0x05, 0xb0,
        0x07, 0xee, 0xf4,
    ];
    let run = machine("1n1l1c1t", &code, 0).start().unwrap();
    assert_eq!(
        run.wait(Duration::from_secs(20)),
        Some(MachineExit::Guest(GuestStop::TestExit(7)))
    );
}

/// A write watchpoint on vCPU 0's counter (the tiny guest's page tables
/// map addresses one to one, so its virtual address is its physical one)
/// fires once per write, the writes still land (the guest counts on),
/// writes to the rest of the page are carried out without a hit, and
/// after unwatching the counter runs free with no more hits.
#[test]
fn a_write_watchpoint_fires_once_per_write_and_the_guest_runs_on() {
    if !kvm_available() {
        return;
    }
    let mut run = machine("1n1l1c1t", COUNTER, 0).start().unwrap();
    let va = data_block(0) + COUNTER_AT;
    std::thread::sleep(Duration::from_millis(20));
    run.freeze(Duration::from_secs(5)).unwrap();
    let start = counters(&run, 1)[0];
    run.watch(va, va, 8).unwrap();
    run.thaw().unwrap();
    let mut hits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while hits.len() < 300 {
        if let Some(exit) = run.exit() {
            panic!("the guest ended under a watchpoint: {exit:?}");
        }
        assert!(
            Instant::now() < deadline,
            "only {} hits in 20 s (counter {} -> {})",
            hits.len(),
            start,
            counters(&run, 1)[0]
        );
        hits.extend(run.take_hits());
        std::thread::sleep(Duration::from_millis(1));
    }
    run.freeze(Duration::from_secs(5)).unwrap();
    hits.extend(run.take_hits());
    let end = counters(&run, 1)[0];
    assert!(hits.iter().all(|&h| h == va), "{hits:x?}");
    assert_eq!(
        hits.len() as u64,
        end - start,
        "one hit per increment ({start} -> {end})"
    );
    // The guest's copy of the host word sits on the same page: those
    // writes were carried out too (the loop reads it back each time).
    run.memory()
        .write_obj(0x5eed_u64, GuestAddress(data_block(0) + HOST_WORD_AT))
        .unwrap();
    run.unwatch(va).unwrap();
    run.thaw().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let copy: u64 = run
        .memory()
        .read_obj(GuestAddress(data_block(0) + GUEST_COPY_AT))
        .unwrap();
    assert_eq!(copy, 0x5eed);
    assert!(counters(&run, 1)[0] > end + 1000, "the counter runs free");
    assert!(run.take_hits().is_empty(), "no hits once unwatched");
    // Refused: a watch outside RAM, and one across a page boundary.
    assert!(run.watch(1, 0xfee0_0000, 4).is_err());
    assert!(run.watch(2, 0x10ffe, 4).is_err());
    run.stop();
}
