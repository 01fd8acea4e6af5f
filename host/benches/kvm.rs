//! KVM backend figures with tiny guests: freeze-to-parked latency (median,
//! p99, max over 1000 freezes) for 1, 2 and 8 vCPUs, and a cold read (freeze,
//! then one u64 through the guest-RAM view kernel accesses use: the moment
//! the runner has its reply, which it sends before thawing); setup time from
//! `Machine::new` to the guest's first memory write; resident host memory the
//! VMM adds beyond the guest RAM it touches; what a write to a watched
//! (write-protected) page costs against a free one.
//! Run: `cargo bench -p ktstr-host --bench kvm`.

use std::time::{Duration, Instant};

use ktstr_host::vm::kvm::machine::{Machine, Running};
use ktstr_host::vm::kvm::tiny::{self, COUNTER, COUNTER_AT, data_block};
use ktstr_host::vm::ram::{PhysMemory, SlotRam};
use vm_memory::{Bytes, GuestAddress};

fn machine(topo: &str) -> Machine {
    tiny::machine(topo, 256, COUNTER, 0).expect("creating the VM")
}

fn counter(run: &Running, i: u32) -> u64 {
    run.memory()
        .read_obj::<u64>(GuestAddress(data_block(i) + COUNTER_AT))
        .unwrap()
}

fn wait_running(run: &Running, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..n).any(|i| counter(run, i) == 0) {
        assert!(Instant::now() < deadline, "vCPUs did not start");
        std::hint::spin_loop();
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn main() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("SKIP: /dev/kvm is absent or not accessible");
        return;
    }
    println!(
        "freeze-to-parked latency, 1000 freezes each (host: {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (topo, n) in [("1n1l1c1t", 1u32), ("1n1l2c1t", 2), ("1n2l4c1t", 8)] {
        let mut run = machine(topo).start().unwrap();
        wait_running(&run, n);
        let ram = SlotRam::new(run.memory().clone(), Vec::new());
        let mut lat = Vec::with_capacity(1000);
        let mut cold = Vec::with_capacity(1000);
        let mut last = 0;
        for _ in 0..1000 {
            let t = Instant::now();
            run.freeze(Duration::from_secs(5)).expect("freeze");
            lat.push(t.elapsed());
            // A cold read as the kernel desk does one: the counter vCPU 0
            // keeps bumping, through the same guest-RAM view, then thaw.
            let v = ram
                .read_u64(data_block(0) + COUNTER_AT)
                .expect("reading guest RAM");
            assert!(v >= last, "the counter went back");
            last = v;
            // The runner puts the reply in the ring here, before thawing.
            cold.push(t.elapsed());
            run.thaw().unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        lat.sort();
        cold.sort();
        println!(
            "  {n} vCPUs: median {:?}  p99 {:?}  max {:?}; freeze and read a u64 (reply ready): median {:?}  \
             p99 {:?}  max {:?}",
            pct(&lat, 50),
            pct(&lat, 99),
            lat[lat.len() - 1],
            pct(&cold, 50),
            pct(&cold, 99),
            cold[cold.len() - 1]
        );
        run.stop();
    }
    let mut setups = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let run = machine("1n1l1c1t").start().unwrap();
        wait_running(&run, 1);
        setups.push(t.elapsed());
    }
    setups.sort();
    println!(
        "setup to first guest write (1 vCPU, 256 MiB), 20 runs: median {:?}  min {:?}  max {:?}",
        pct(&setups, 50),
        setups[0],
        setups[setups.len() - 1]
    );
    watch_cost();
    let before = rss_kib();
    let run = machine("1n2l4c1t").start().unwrap();
    wait_running(&run, 8);
    let after = rss_kib();
    // The guest touched its page tables, code and 8 data pages: under 40 KiB.
    println!(
        "resident host memory added by an 8-vCPU, 256 MiB VM: {} KiB",
        after.saturating_sub(before)
    );
    drop(run);
}

/// The counter guest's time per increment with its page free and with it
/// watched (every write an exit the vCPU thread carries out), 200 ms
/// windows alternated five times in one run.
fn watch_cost() {
    let mut run = machine("1n1l1c1t").start().unwrap();
    wait_running(&run, 1);
    let va = data_block(0) + COUNTER_AT;
    let window = Duration::from_millis(200);
    let (mut free, mut watched) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for watch in [false, true] {
            if watch {
                run.watch(va, va, 8).expect("watch");
            }
            let c0 = counter(&run, 0);
            std::thread::sleep(window);
            let n = counter(&run, 0).saturating_sub(c0).max(1);
            if watch {
                run.unwatch(va).expect("unwatch");
                let _ = run.take_hits();
            }
            let per = window / n as u32;
            if watch { &mut watched } else { &mut free }.push(per);
        }
    }
    free.sort();
    watched.sort();
    println!(
        "time per guest write, 5 x 200 ms: free page median {:?} (min {:?} max {:?}); watched page \
         median {:?} (min {:?} max {:?})",
        pct(&free, 50),
        free[0],
        free[4],
        pct(&watched, 50),
        watched[0],
        watched[4]
    );
    run.stop();
}
