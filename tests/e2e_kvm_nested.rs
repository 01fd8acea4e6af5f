//! Linux on our own KVM VMM, on real KVM, on a host without hardware
//! virtualization: QEMU's TCG emulates AMD SVM (`-cpu max`), the Debian
//! kernel inside it (L1) loads the real `kvm_amd`, and our VMM, built
//! static as L1's `/init`, boots the same kernel with the agent (L2) and
//! runs a plan through the runner, exactly as `--backend kvm` would on a
//! machine with VT-x or AMD-V. See `ktstr_host::nested`.
//!
//! Slow (a few minutes: L2 runs under emulated SVM inside TCG) and needs the
//! kernel's KVM modules, fetched once and cached next to the kernel.

mod common;

use common::{VM_LOCK, prepared, steady};

use std::time::Duration;

use ktstr_host::agent_build::{build_static, workspace_root};
use ktstr_host::kernel::{self, FetchOptions};
use ktstr_host::nested::launch::{self, GUEST_BIN, NestedOutcome, NestedRequest};
use ktstr_host::progress::Progress;
use ktstr_protocol::model::{
    Assert, HoldSpec, KernelTarget, KernelValue, KernelValueWidth, Op, Plan, Step, Topology,
};

/// What `vm_swappiness` and `dirty_background_ratio` are set to from the
/// host (no kernel default).
const SWAPPINESS: u32 = 23;
const DIRTY_BG: u32 = 7;

fn read(tag: &'static str, symbol: &'static str, width: KernelValueWidth) -> Op {
    Op::read_kernel_cold(tag, KernelTarget::symbol(symbol), width)
}

/// The read/write subset of `e2e_kmem.rs` on our VMM: after the workers'
/// step, the banner and `jiffies_64` twice in one freeze, a 500 ms hold,
/// then two sysctl variables written and read back and `jiffies_64` again,
/// all in one freeze.
fn with_kernel_ops(mut plan: Plan) -> Plan {
    let u64w = KernelValueWidth::u64();
    let u32w = KernelValueWidth::u32();
    plan.steps.push(Step::new(
        vec![
            read("banner", "linux_banner", KernelValueWidth::bytes(512)),
            read("j0", "jiffies_64", u64w),
            read("j1", "jiffies_64", u64w),
        ],
        HoldSpec::fixed(Duration::from_millis(500)),
    ));
    plan.steps.push(Step::new(
        vec![
            Op::write_kernel_cold(
                KernelTarget::symbol("vm_swappiness"),
                KernelValue::U32(SWAPPINESS),
            ),
            Op::write_kernel_cold(
                KernelTarget::symbol("dirty_background_ratio"),
                KernelValue::U32(DIRTY_BG),
            ),
            read("swappiness", "vm_swappiness", u32w),
            read("dirty_bg", "dirty_background_ratio", u32w),
            read("j2", "jiffies_64", u64w),
            // A capture in the same freeze: runqueues and registers
            // through our rendezvous.
            Op::capture_snapshot("nested"),
        ],
        HoldSpec::fixed(Duration::ZERO),
    ));
    plan
}

/// The value of the read tagged `tag` in the L2 outcome's kernel log.
fn kernel_read<'a>(kernel: &'a serde_json::Value, tag: &str) -> &'a serde_json::Value {
    kernel["reads"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["tag"] == tag))
        .map(|r| &r["value"])
        .unwrap_or_else(|| panic!("no read tagged {tag} in {kernel}"))
}

/// Checks the kernel-memory part of the L2 outcome.
fn check_kernel_ops(out: &serde_json::Value) {
    let k = &out["kernel"];
    assert_eq!(k["errors"], serde_json::json!([]), "{k}");
    // Two steps with cold ops, each folded into one freeze through our
    // rendezvous.
    assert_eq!(k["freezes"], 2, "{k}");
    assert_eq!(k["requests"], 2, "{k}");
    let banner: Vec<u8> = kernel_read(k, "banner")["Bytes"]
        .as_array()
        .expect("banner bytes")
        .iter()
        .map(|b| b.as_u64().unwrap_or(0) as u8)
        .collect();
    let end = banner.iter().position(|&b| b == 0).expect("a NUL");
    assert_eq!(
        String::from_utf8_lossy(&banner[..end]).trim_end(),
        k["proc_version"].as_str().unwrap_or("").trim_end(),
        "linux_banner vs /proc/version"
    );
    let u = |tag, kind| kernel_read(k, tag)[kind].as_u64().expect(tag);
    assert_eq!(
        u("j0", "U64"),
        u("j1", "U64"),
        "jiffies_64 moved in a freeze"
    );
    let hz = k["hz"].as_u64().expect("hz");
    let ticks = u("j2", "U64") - u("j1", "U64");
    assert!(
        ticks + 2 >= hz / 2,
        "{ticks} ticks over a 500 ms hold at HZ={hz}"
    );
    assert_eq!(u("swappiness", "U32"), u64::from(SWAPPINESS));
    let capture = out["captures"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "nested"))
        .unwrap_or_else(|| panic!("no capture: {}", out["captures"]));
    assert_eq!(capture["step"], 3, "{capture}");
    assert_eq!(
        capture["sample"]["cpus"].as_array().map(Vec::len),
        Some(2),
        "{capture}"
    );
    let regs = capture["registers"].as_array().expect("registers");
    assert_eq!(regs.len(), 2, "{capture}");
    assert!(
        regs.iter().all(|r| r["rip"].as_u64().unwrap_or(0) != 0),
        "{capture}"
    );
    assert_eq!(u("dirty_bg", "U32"), u64::from(DIRTY_BG));
    // KASLR on our VMM: the decompressor moved the kernel, virtually or
    // physically (both staying put is a one in many thousands draw).
    assert!(
        k["kaslr_offset"] != 0 || k["text_pa"] != 0x100_0000,
        "KASLR left the kernel at its link and load addresses: {k}"
    );
}

#[test]
fn boots_linux_on_our_kvm_vmm_under_emulated_svm() {
    let Some(p) = prepared() else { return };
    let say = Progress::new(|m| eprintln!("nested: {m}"));
    let opts = FetchOptions {
        progress: say.clone(),
        ..Default::default()
    };
    let modules = match kernel::fetch_kvm_modules(&p.kernel, &opts) {
        Ok(m) => m,
        Err(e) if e.is_unavailable() => {
            println!("SKIP: the kernel's KVM modules cannot be fetched here: {e}");
            return;
        }
        Err(e) => panic!("fetching the KVM modules: {e}"),
    };
    let guest_bin = build_static(&workspace_root(), "ktstr-host", GUEST_BIN)
        .expect("building the static L1 program");
    let topology: Topology = "2n2l1c1t".parse().unwrap();
    // The second plan writes a watched sysctl four times: our VMM's
    // write-protected pages must give four captures.
    let plans = vec![
        with_kernel_ops(steady(1, 2, 2)),
        Plan::custom("kmem_watch", "kmem_watch_sysctl", Duration::from_secs(1))
            .set_assert(Assert::NONE),
    ];
    let _guard = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let run = launch::run(&NestedRequest {
        kernel: &p.kernel.image,
        l2_initramfs: &p.initramfs,
        modules: &modules,
        guest_bin: &guest_bin,
        topology,
        memory_mib: 512,
        plans,
        boot_timeout: Duration::from_secs(
            std::env::var("KTSTR_NESTED_BOOT_TIMEOUT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(400),
        ),
        timeout: Duration::from_secs(900),
        verbose: std::env::var_os("KTSTR_NESTED_VERBOSE").is_some(),
        l2_cmdline_extra: std::env::var("KTSTR_NESTED_L2_CMDLINE")
            .map(|v| v.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        progress: say,
    })
    .unwrap_or_else(|e| panic!("nested run: {e}"));
    eprintln!("nested: L1 console tail:\n{}", run.console);
    let out = match run.outcome {
        NestedOutcome::Skipped(why) => {
            println!("SKIP: L1 offers no hardware KVM: {why}");
            return;
        }
        NestedOutcome::Ran(v) => v,
    };
    let all = out.as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 2, "one outcome per plan: {out}");
    check_watch(&all[1]);
    let out = all[0].clone();
    eprintln!(
        "nested: whole run {:.1} s; L2 outcome: {}",
        run.elapsed.as_secs_f64(),
        serde_json::to_string_pretty(&out).unwrap_or_default()
    );
    assert_eq!(out["backend"], "kvm", "L2 ran on our VMM");
    assert_eq!(
        out["passed"], true,
        "L2 run failed: {}\nL2 console:\n{}",
        out["failure"], out["console_tail"]
    );
    // What the L2 kernel read from our CPUID and ACPI tables (SRAT, SLIT).
    let hello = &out["hello"];
    assert_eq!(hello["online_cpus"], 2, "L2 saw both vCPUs");
    assert_eq!(
        hello["llcs"],
        serde_json::json!([[0], [1]]),
        "one LLC per vCPU"
    );
    assert_eq!(
        hello["numa_nodes"],
        serde_json::json!([[0], [1]]),
        "one NUMA node per vCPU"
    );
    assert_eq!(
        hello["distances"],
        serde_json::json!([[10, 20], [20, 10]]),
        "SLIT distances"
    );
    assert_eq!(out["vm_exit"], "shutdown", "L2 powered itself off");
    check_kernel_ops(&out);
    let reports = out["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 1, "one cgroup's reports");
    let workers = reports[0]["reports"].as_array().expect("worker reports");
    assert_eq!(workers.len(), 2);
    for w in workers {
        assert!(w["work_units"].as_u64().unwrap_or(0) > 0, "{w}");
    }
    assert!(
        std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
            .all(|e| !e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("ktstr-nested-{}-", std::process::id()))),
        "the L1 initramfs was removed"
    );
}

/// Four writes to a watched sysctl, four captures, in order, each with the
/// runqueues and both vCPUs' registers.
fn check_watch(out: &serde_json::Value) {
    assert_eq!(out["passed"], true, "watch plan failed: {}", out["failure"]);
    let caps: Vec<&serde_json::Value> = out["captures"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["trigger"] == "watch").collect())
        .unwrap_or_default();
    assert_eq!(caps.len(), 4, "{}", out["captures"]);
    for c in &caps {
        assert_eq!(c["name"], "watch:vm_swappiness", "{c}");
        assert_eq!(c["sample"]["cpus"].as_array().map(Vec::len), Some(2), "{c}");
        assert_eq!(c["registers"].as_array().map(Vec::len), Some(2), "{c}");
    }
    let at: Vec<u64> = caps.iter().filter_map(|c| c["at_ms"].as_u64()).collect();
    eprintln!("nested: watch:vm_swappiness captures at {at:?} ms");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
}
