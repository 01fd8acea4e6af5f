//! Payloads: user binaries run in the background by `Op::RunPayload`,
//! waited for or killed by name.
//!
//! A payload bound for a cgroup is placed there before it execs, so its
//! first instruction already runs under the cgroup's cpuset and scheduler
//! policy: the child writes itself into `cgroup.procs` between fork and
//! exec when the manager exposes that file; otherwise (an in-memory
//! double) the agent moves it right after spawning.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::{DetailKind, PayloadSpec};

use super::ctx::Ctx;
use super::state::{Owner, RunState};

/// A payload started by this scenario and not yet reaped.
pub(crate) struct LivePayload {
    name: String,
    cgroup: Option<String>,
    child: Child,
    owner: Owner,
}

/// Starts `spec` with its default arguments followed by `args`.
pub(crate) fn run(
    ctx: &Ctx,
    st: &mut RunState,
    spec: &PayloadSpec,
    args: &[String],
    cgroup: Option<&str>,
) -> Result<u32> {
    if let Some(cg) = cgroup {
        st.require(cg, "RunPayload")?;
    }
    let mut cmd = Command::new(&spec.binary);
    cmd.args(&spec.default_args).args(args);
    let procs_file = cgroup.and_then(|cg| ctx.cgroups.procs_file(cg));
    if let Some(path) = &procs_file {
        let path = CString::new(path.as_os_str().as_bytes())
            .with_context(|| format!("cgroup path {}", path.display()))?;
        crate::sys::join_cgroup_before_exec(&mut cmd, path);
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting payload {} ({}){}; check that the binary is packed into the guest",
            spec.name,
            spec.binary,
            cgroup
                .map(|c| format!(" in cgroup {c}"))
                .unwrap_or_default()
        )
    })?;
    let pid = child.id();
    if let (Some(cg), None) = (cgroup, &procs_file)
        && let Err(e) = ctx.cgroups.move_task(cg, pid as i32)
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context(format!("placing payload {} in cgroup {cg}", spec.name)));
    }
    st.payloads.push(LivePayload {
        name: spec.name.to_string(),
        cgroup: cgroup.map(String::from),
        child,
        owner: st.op_owner(),
    });
    Ok(pid)
}

/// Takes the one live payload matching `name` (and `cgroup`, where `""`
/// means the runner's cgroup).
fn take(st: &mut RunState, what: &str, name: &str, cgroup: Option<&str>) -> Result<LivePayload> {
    let matches = |p: &LivePayload| {
        p.name == name
            && match cgroup {
                None => true,
                Some("") => p.cgroup.is_none(),
                Some(c) => p.cgroup.as_deref() == Some(c),
            }
    };
    let found: Vec<usize> = (0..st.payloads.len())
        .filter(|&i| matches(&st.payloads[i]))
        .collect();
    match found.as_slice() {
        [i] => Ok(st.payloads.remove(*i)),
        [] => bail!(
            "{what}: no running payload {name:?}{} (running: {:?}); start it with \
             Op::run_payload first",
            cgroup
                .map(|c| format!(" in cgroup {c:?}"))
                .unwrap_or_default(),
            st.payloads
                .iter()
                .map(|p| (&p.name, &p.cgroup))
                .collect::<Vec<_>>()
        ),
        many => bail!(
            "{what}: {} payloads named {name:?} are running (cgroups {:?}); name the cgroup with \
             the *_in_cgroup form of the op",
            many.len(),
            many.iter()
                .map(|&i| &st.payloads[i].cgroup)
                .collect::<Vec<_>>()
        ),
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

/// Waits for the payload; a non-zero exit fails the step.
pub(crate) fn wait(st: &mut RunState, name: &str, cgroup: Option<&str>) -> Result<String> {
    let mut p = take(st, "WaitPayload", name, cgroup)?;
    let status = p
        .child
        .wait()
        .with_context(|| format!("waiting for payload {name}"))?;
    let how = describe(status);
    if !status.success() {
        st.result.push_failure(
            DetailKind::Error,
            format!("payload {name} ended with {how}"),
        );
    }
    Ok(how)
}

/// SIGKILLs the payload and reaps it.
pub(crate) fn kill(st: &mut RunState, name: &str, cgroup: Option<&str>) -> Result<String> {
    let mut p = take(st, "KillPayload", name, cgroup)?;
    // An already-exited child makes kill fail; wait still reaps it.
    let _ = p.child.kill();
    let status = p
        .child
        .wait()
        .with_context(|| format!("reaping payload {name}"))?;
    Ok(describe(status))
}

/// Kills and reaps the payloads `owner` started (their phase is over).
pub(crate) fn kill_owned(st: &mut RunState, owner: Owner, errors: &mut Vec<String>) {
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.payloads)
        .into_iter()
        .partition(|p| p.owner == owner);
    st.payloads = rest;
    for mut p in mine {
        let _ = p.child.kill();
        if let Err(e) = p.child.wait() {
            errors.push(format!("reaping payload {}: {e}", p.name));
        }
    }
}
