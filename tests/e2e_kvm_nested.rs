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
use ktstr_protocol::model::Topology;

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
    let plan = steady(1, 2, 2);
    let _guard = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let run = launch::run(&NestedRequest {
        kernel: &p.kernel.image,
        l2_initramfs: &p.initramfs,
        modules: &modules,
        guest_bin: &guest_bin,
        topology,
        memory_mib: 512,
        plan,
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
