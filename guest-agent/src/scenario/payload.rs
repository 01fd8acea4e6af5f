//! Payloads: user binaries run in the background by `Op::RunPayload`,
//! waited for or killed by name ([`Payloads`]).
//!
//! A payload bound for a cgroup is placed there before it execs, so its
//! first instruction already runs under the cgroup's cpuset and scheduler
//! policy: the child writes itself into `cgroup.procs` between fork and
//! exec when the manager exposes that file; otherwise (an in-memory
//! double) the agent moves it right after spawning.
//!
//! A payload with a [`MetricsFormat`] is asked to write that output to a
//! file under `/tmp`; waiting for it reads the file into
//! [`PayloadMetrics`] (and removes it). A payload that is killed leaves no
//! metrics.
//!
//! Owns the payload processes only; whether a cgroup is live is the run
//! state's business, checked before a payload is started.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::{MetricLimit, MetricsFormat, PayloadMetrics, PayloadSpec};

use super::owner::Owner;
use crate::cgroup::CgroupOps;

/// A payload started by this scenario and not yet reaped.
struct LivePayload {
    name: String,
    cgroup: Option<String>,
    child: Child,
    owner: Owner,
    /// Where it writes its metrics, in which format.
    output: Option<(MetricsFormat, PathBuf)>,
    limits: Vec<MetricLimit>,
}

/// What a payload that was waited for measured.
pub(crate) struct Measured {
    /// The figures, or why they could not be read.
    pub(crate) metrics: Result<PayloadMetrics>,
    pub(crate) limits: Vec<MetricLimit>,
}

/// The payloads of one run.
#[derive(Default)]
pub(crate) struct Payloads {
    live: Vec<LivePayload>,
    /// Payloads started so far (numbers their output files).
    started: u32,
}

/// How a payload ended, in words ("exit code 3", "signal 9").
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

impl Payloads {
    /// Starts `spec` with its default arguments followed by `args`, in
    /// `cgroup` (which the caller checked is live) or the runner's cgroup.
    pub(crate) fn run(
        &mut self,
        cgroups: &dyn CgroupOps,
        spec: &PayloadSpec,
        args: &[String],
        cgroup: Option<&str>,
        owner: Owner,
    ) -> Result<u32> {
        let mut cmd = Command::new(&spec.binary);
        cmd.args(&spec.default_args).args(args);
        self.started += 1;
        let output = spec.metrics.map(|format| {
            let file: String = spec
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let path = PathBuf::from(format!(
                "/tmp/ktstr-payload-{}-{file}.{}",
                self.started,
                super::metrics::extension(format)
            ));
            let _ = std::fs::remove_file(&path);
            cmd.args(super::metrics::output_args(format, &path));
            (format, path)
        });
        let procs_file = cgroup.and_then(|cg| cgroups.procs_file(cg));
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
            && let Err(e) = cgroups.move_task(cg, pid as i32)
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context(format!("placing payload {} in cgroup {cg}", spec.name)));
        }
        self.live.push(LivePayload {
            name: spec.name.to_string(),
            cgroup: cgroup.map(String::from),
            child,
            owner,
            output,
            limits: spec.limits.clone(),
        });
        Ok(pid)
    }

    /// Takes the one live payload matching `name` (and `cgroup`, where `""`
    /// means the runner's cgroup).
    fn take(&mut self, what: &str, name: &str, cgroup: Option<&str>) -> Result<LivePayload> {
        let matches = |p: &LivePayload| {
            p.name == name
                && match cgroup {
                    None => true,
                    Some("") => p.cgroup.is_none(),
                    Some(c) => p.cgroup.as_deref() == Some(c),
                }
        };
        let found: Vec<usize> = (0..self.live.len())
            .filter(|&i| matches(&self.live[i]))
            .collect();
        match found.as_slice() {
            [i] => Ok(self.live.remove(*i)),
            [] => bail!(
                "{what}: no running payload {name:?}{} (running: {:?}); start it with \
                 Op::run_payload first",
                cgroup
                    .map(|c| format!(" in cgroup {c:?}"))
                    .unwrap_or_default(),
                self.live
                    .iter()
                    .map(|p| (&p.name, &p.cgroup))
                    .collect::<Vec<_>>()
            ),
            many => bail!(
                "{what}: {} payloads named {name:?} are running (cgroups {:?}); name the cgroup \
                 with the *_in_cgroup form of the op",
                many.len(),
                many.iter()
                    .map(|&i| &self.live[i].cgroup)
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Waits for the payload to end; returns how it ended and, for one
    /// with a metrics format, what it measured.
    pub(crate) fn wait(
        &mut self,
        name: &str,
        cgroup: Option<&str>,
    ) -> Result<(ExitStatus, Option<Measured>)> {
        let mut p = self.take("WaitPayload", name, cgroup)?;
        let status = p
            .child
            .wait()
            .with_context(|| format!("waiting for payload {name}"))?;
        let measured = p.output.map(|(format, path)| {
            let metrics = super::metrics::read(format, &path).map(|values| PayloadMetrics {
                payload: p.name.clone(),
                cgroup: p.cgroup.clone(),
                values,
            });
            let _ = std::fs::remove_file(&path);
            Measured {
                metrics,
                limits: p.limits,
            }
        });
        Ok((status, measured))
    }

    /// SIGKILLs the payload, reaps it and returns how it ended.
    pub(crate) fn kill(&mut self, name: &str, cgroup: Option<&str>) -> Result<ExitStatus> {
        let mut p = self.take("KillPayload", name, cgroup)?;
        // An already-exited child makes kill fail; wait still reaps it.
        let _ = p.child.kill();
        p.child
            .wait()
            .with_context(|| format!("reaping payload {name}"))
    }

    /// Kills and reaps the payloads `owner` started (their phase is over).
    pub(crate) fn kill_owned(&mut self, owner: Owner, errors: &mut Vec<String>) {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|p| p.owner == owner);
        self.live = rest;
        for mut p in mine {
            let _ = p.child.kill();
            if let Err(e) = p.child.wait() {
                errors.push(format!("reaping payload {}: {e}", p.name));
            }
            if let Some((_, path)) = &p.output {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
