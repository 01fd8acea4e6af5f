//! Tests of the scheduler lifecycle with fake schedulers and a fake sysfs.

use std::path::Path;

use std::time::{Duration, Instant};

use ktstr_protocol::model::SchedulerSpec;

use super::*;

fn spec(name: &str, script: &str) -> SchedulerSpec {
    SchedulerSpec::new(
        name.to_string(),
        "/bin/sh",
        vec!["-c".into(), script.into()],
    )
    .set_ops(name)
}

/// A fake sched_ext directory: `state` disabled, `root/` present.
fn fake_sysfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("root")).unwrap();
    std::fs::write(d.path().join("state"), "disabled\n").unwrap();
    d
}

fn cfg(root: &Path) -> SchedulerConfig {
    SchedulerConfig {
        sysfs_root: root.into(),
        kmsg: None,
        tracefs: None,
        attach_timeout: Duration::from_secs(5),
        detach_timeout: Duration::from_secs(5),
        eject_grace: Duration::from_secs(2),
        poll: Duration::from_millis(10),
    }
}

/// Shell that replaces a fake sysfs file whole: sysfs reads never see a
/// half-written value, and a plain `echo >` (truncate, then write) would let
/// the manager's poll read an empty state in between.
fn set_sh(path: &str, value: &str) -> String {
    format!("echo {value} > {path}.new && mv {path}.new {path}")
}

/// Shell that marks `name` attached in the fake sysfs `dir`.
fn attach_sh(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "{}; {}; echo {name} attached",
        set_sh(&format!("{d}/root/ops"), name),
        set_sh(&format!("{d}/state"), "enabled")
    )
}

#[test]
fn output_tail_keeps_the_last_lines() {
    let mut t = OutputTail::new(3);
    t.push(b"a\nb\r\nc");
    assert_eq!(t.tail(10), vec!["a", "b", "c"], "with the partial line");
    t.push(b"\n");
    t.push(b"d\ne\nf\n");
    assert_eq!(t.tail(10), vec!["d", "e", "f"]);
    assert_eq!(t.tail(2), vec!["e", "f"]);
    assert_eq!(t.dropped(), 3);
    t.push(&vec![b'x'; MAX_LINE + 10]);
    t.finish();
    let last = t.tail(2);
    assert_eq!(last[0].len(), MAX_LINE);
    assert_eq!(last[1].len(), 10);
}

#[test]
fn kmsg_records_are_filtered() {
    assert_eq!(
        kmsg_message(
            "3,1234,5678,-;sched_ext: BPF scheduler \"ktstr_fifo\" disabled (runnable task stall)\n SUBSYSTEM=x\n"
        ),
        Some("sched_ext: BPF scheduler \"ktstr_fifo\" disabled (runnable task stall)")
    );
    assert_eq!(kmsg_message("garbage"), None);
    let mut k = KernelLog::open(None);
    k.push_record("6,1,2,-;Linux version 7.3\n");
    let mark = k.mark();
    k.push_record("3,2,3,-;sched_ext: BPF scheduler \"x\" disabled (runtime error)\n");
    k.push_record("3,3,4,-;sched_ext: x: RCU CPU stall on CPUs (0)\n");
    k.push_record("4,4,5,-;rcu: INFO: rcu_preempt detected stalls\n");
    assert_eq!(k.since(mark).len(), 2);
    assert_eq!(k.since(k.mark()), Vec::<String>::new());
    assert!(k.since(0)[1].contains("RCU CPU stall"));
}

#[test]
fn attach_state_from_a_fake_sysfs() {
    let d = fake_sysfs();
    let v = SchedExtView::new(d.path());
    let fifo = Some("fifo");
    assert_eq!(v.attach_state(fifo), AttachState::Not("disabled".into()));
    assert_eq!(v.current(), EEVDF);
    std::fs::write(d.path().join("state"), "enabling\n").unwrap();
    assert_eq!(v.attach_state(fifo), AttachState::Enabling);
    assert!(v.attach_state(fifo).to_string().contains("\"enabling\""));
    assert_eq!(v.current(), EEVDF);
    std::fs::write(d.path().join("state"), "enabled\n").unwrap();
    std::fs::write(d.path().join("root/ops"), "other\n").unwrap();
    assert_eq!(v.attach_state(fifo), AttachState::OtherOps("other".into()));
    assert_eq!(
        v.attach_state(None),
        AttachState::Attached("other".into()),
        "without an expectation any ops are ours"
    );
    std::fs::write(
        d.path().join("root/ops"),
        "fifo_1.0.4_x86_64_unknown_linux_gnu\n",
    )
    .unwrap();
    let versioned = AttachState::Attached("fifo_1.0.4_x86_64_unknown_linux_gnu".into());
    assert_eq!(v.attach_state(fifo), versioned, "a prefix matches");
    assert_eq!(v.attach_state(Some("scx_fifo")), versioned);
    assert_eq!(v.current(), "fifo_1.0.4_x86_64_unknown_linux_gnu");
    let none = SchedExtView::new(d.path().join("nope"));
    assert_eq!(none.attach_state(fifo), AttachState::NoSchedExt);
    assert_eq!(none.current(), EEVDF);
}

#[test]
fn exit_before_attach_carries_status_and_output() {
    let d = fake_sysfs();
    let mut m = SchedulerManager::new(cfg(d.path()));
    let e = format!(
        "{:#}",
        m.attach(&spec(
            "fifo",
            "echo loading; echo failed to open system Kconfig >&2; exit 3"
        ))
        .unwrap_err()
    );
    assert!(
        e.contains("exited with exit status 3 before attaching"),
        "{e}"
    );
    assert!(e.contains("state \"disabled\""), "{e}");
    assert!(
        e.contains("  loading\n  failed to open system Kconfig"),
        "{e}"
    );
    assert!(!m.is_running());
}

#[test]
fn attach_timeout_names_the_state() {
    let d = fake_sysfs();
    let mut c = cfg(d.path());
    c.attach_timeout = Duration::from_millis(300);
    let mut m = SchedulerManager::new(c);
    let script = format!(
        "{}; exec sleep 30",
        set_sh(&format!("{}/state", d.path().display()), "enabling")
    );
    let t = Instant::now();
    let e = format!("{:#}", m.attach(&spec("fifo", &script)).unwrap_err());
    assert!(e.contains("did not attach within 300ms"), "{e}");
    assert!(e.contains("\"enabling\""), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "killed, not waited out"
    );
}

#[test]
fn missing_binary_is_a_clear_error() {
    let d = fake_sysfs();
    let mut m = SchedulerManager::new(cfg(d.path()));
    let mut s = spec("fifo", "");
    s.binary = "/nonexistent/ktstr_fifo".into();
    let e = format!("{:#}", m.attach(&s).unwrap_err());
    assert!(
        e.contains("/nonexistent/ktstr_fifo") && e.contains("not in the guest"),
        "{e}"
    );
    let m2 = SchedulerManager::new(cfg(&d.path().join("none")));
    let mut m2 = m2;
    let e = format!("{:#}", m2.attach(&spec("fifo", "")).unwrap_err());
    assert!(e.contains("no sched_ext"), "{e}");
}

#[test]
fn attach_watch_detach() {
    let d = fake_sysfs();
    let mut m = SchedulerManager::new(cfg(d.path()));
    // Detaches like a real scheduler: on SIGINT it disables and exits 0.
    let script = format!(
        "trap '{set}; echo fifo detached; exit 0' INT; {}; \
             while :; do sleep 0.05; done",
        attach_sh(d.path(), "fifo"),
        set = set_sh(&format!("{}/state", d.path().display()), "disabled")
    );
    let a = m.attach(&spec("fifo", &script)).unwrap();
    assert_eq!(a.name, "fifo");
    assert_eq!(m.pid(), Some(a.pid));
    assert!(
        a.to_string()
            .starts_with(&format!("attached fifo (pid {})", a.pid))
    );
    assert!(!m.poll(), "alive and attached");
    let e = format!("{:#}", m.attach(&spec("other", "")).unwrap_err());
    assert!(e.contains("still attached"), "{e}");
    let det = m.detach().unwrap().unwrap();
    assert_eq!(
        det.to_string(),
        format!("detached fifo (pid {}, exit status 0)", a.pid)
    );
    assert!(m.detach().unwrap().is_none(), "nothing left to detach");
    assert!(m.take_death().is_none(), "a deliberate detach is no death");
    assert_eq!(m.last_spec().unwrap().name, "fifo");
}

#[test]
fn death_by_exit_is_detected() {
    let d = fake_sysfs();
    let mut m = SchedulerManager::new(cfg(d.path()));
    let script = format!(
        "{}; sleep 0.2; echo bye >&2; exit 3",
        attach_sh(d.path(), "fifo")
    );
    let a = m.attach(&spec("fifo", &script)).unwrap();
    let t = Instant::now();
    while !m.poll() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let death = m.take_death().unwrap();
    assert_eq!(death.pid, a.pid);
    assert_eq!(death.how, "exited with exit status 3");
    assert_eq!(death.output, vec!["fifo attached", "bye"]);
    let msg = death.message("during step 2");
    assert!(
        msg.starts_with("scheduler died during step 2: fifo (pid"),
        "{msg}"
    );
    assert!(msg.contains("  bye"), "{msg}");
    assert!(!m.is_running());
    assert!(m.take_death().is_none(), "taken once");
}

#[test]
fn ejection_is_a_death_even_before_the_exit() {
    let d = fake_sysfs();
    let mut m = SchedulerManager::new(cfg(d.path()));
    let script = format!(
        "{}; sleep 0.2; {set}; sleep 0.2; \
             echo 'fifo ejected: kind=1026 (SCX_EXIT_ERROR_STALL) reason=\"runnable task stall\"'; \
             exit 1",
        attach_sh(d.path(), "fifo"),
        set = set_sh(&format!("{}/state", d.path().display()), "disabled")
    );
    m.attach(&spec("fifo", &script)).unwrap();
    let t = Instant::now();
    while !m.poll() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let death = m.take_death().unwrap();
    assert!(
        death
            .how
            .starts_with("was ejected by the kernel (state \"disabled\")")
            && death.how.ends_with("exited with exit status 1"),
        "{}",
        death.how
    );
    assert!(death.is_stall());
    assert!(
        death
            .output
            .last()
            .unwrap()
            .contains("SCX_EXIT_ERROR_STALL")
    );
    // An op on a dead scheduler reports the death, not a fresh error.
    let d2 = fake_sysfs();
    let mut m = SchedulerManager::new(cfg(d2.path()));
    m.attach(&spec(
        "fifo",
        &format!("{}; sleep 0.2; exit 1", attach_sh(d2.path(), "fifo")),
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let e = m.detach().unwrap_err();
    assert!(e.is::<SchedulerDied>(), "{e:#}");
    assert!(m.take_death().is_some());
}

#[test]
fn terminal_escapes_are_stripped_from_output() {
    assert_eq!(
        strip_ansi("\u{1b}[1;32mINFO\u{1b}[0m rusty attached \u{1b}]0;title\u{7}ok"),
        "INFO rusty attached ok"
    );
    let mut t = OutputTail::new(4);
    t.push(b"\x1b[31mred\x1b[0m line\n");
    assert_eq!(t.tail(1), vec!["red line"]);
}

/// A scheduler that registers ops no one named attaches with no
/// expectation, and the attachment names the ops it registered.
#[test]
fn any_ops_attach_without_an_expected_name() {
    let d = fake_sysfs();
    let mut m = SchedulerManager::new(cfg(d.path()));
    let p = d.path().display();
    let s = SchedulerSpec::new(
        "scx_versioned",
        "/bin/sh",
        vec![
            "-c".into(),
            format!(
                "trap 'echo disabled > {p}/state; exit 0' INT; \
                 echo fifo_0.1.0_x86_64 > {p}/root/ops; echo enabled > {p}/state; \
                 while :; do sleep 0.05; done"
            ),
        ],
    );
    let a = m.attach(&s).unwrap();
    assert_eq!(a.ops, "fifo_0.1.0_x86_64");
    assert!(
        a.to_string()
            .starts_with("attached scx_versioned as fifo_0.1.0_x86_64 (pid"),
        "{a}"
    );
    assert!(!m.poll(), "still attached");
    m.detach().unwrap();
}
