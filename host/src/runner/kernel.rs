//! Serving the agent's kernel-memory requests during a run: keeps the
//! guest's [`Kernel`] (from the `KernelInfo` it sent), freezes the VM for a
//! cold request and does the accesses through the VM's guest RAM
//! ([`KernelDesk::serve`]); the runner puts the reply in the ring and only
//! then thaws ([`KernelDesk::thaw`]), so the guest finds its answer the
//! moment it runs again. Every read and every failure is logged in the
//! plan's outcome.

use std::sync::Arc;
use std::time::Instant;

use ktstr_protocol::model::{KernelAccess, KernelInfo, KernelReply, KernelRequest};

use crate::kmem::{Kernel, Vmlinux};
use crate::monitor::{Capture, SchedReader, Trigger};
use crate::outcome::{KernelAccessLog, KernelRead};
use crate::vm::{Vm, VmError};

/// A served request: the reply, and when the freeze began while the VM is
/// still frozen for it.
pub(super) struct Served {
    pub(super) reply: KernelReply,
    pub(super) frozen_since: Option<Instant>,
}

/// Bytes a watchpoint covers: an `int` or `atomic_t`, as sysctls and the
/// sched_ext exit kind are.
const WATCH_LEN: u32 = 4;

/// When something happened in the running plan: the step and ms since
/// the plan was sent, frozen time left out.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stamp {
    pub(super) step: u16,
    pub(super) at_ms: u64,
}

/// The guest kernel as this VM's requests find it.
#[derive(Default)]
pub(super) struct KernelDesk {
    /// Reads scheduler state for captures.
    reader: SchedReader,
    /// Watchpoints set, by address.
    watches: Vec<(u64, String)>,
    /// `None` until the agent sends its kernel info; `Err` when that info
    /// could not be used (every request then gets why).
    kernel: Option<Result<Kernel, String>>,
}

impl KernelDesk {
    /// Takes the agent's kernel info (once per guest), with the user's
    /// vmlinux when there is one.
    pub(super) fn info(&mut self, info: KernelInfo, vmlinux: Option<Arc<Vmlinux>>) {
        self.kernel = Some(
            Kernel::with_vmlinux(info, vmlinux).map_err(|e| format!("the guest's kernel: {e}")),
        );
    }

    /// Freezes the guest, captures it under `name`, thaws; `None` when the
    /// kernel is not known yet or the guest cannot be frozen.
    pub(super) fn capture_now(
        &mut self,
        vm: &mut dyn Vm,
        name: &str,
        trigger: Trigger,
        at: Stamp,
    ) -> Option<Capture> {
        let ram = vm.guest_ram()?;
        let kernel = self.kernel.as_mut()?.as_mut().ok()?;
        vm.freeze().ok()?;
        let regs = vm.frozen_registers().unwrap_or_default();
        let c = self
            .reader
            .capture(kernel, ram.as_ref(), name, trigger, at.step, at.at_ms, regs);
        let _ = vm.thaw();
        Some(c)
    }

    /// Names the watchpoint at `va` (set by the runner itself) `name`, in
    /// place of any earlier one there.
    pub(super) fn name_watch(&mut self, va: u64, name: &str) {
        self.watches.retain(|(w, _)| *w != va);
        self.watches.push((va, name.to_string()));
    }

    /// Forgets the watchpoint at `va`.
    pub(super) fn forget_watch(&mut self, va: u64) {
        self.watches.retain(|(w, _)| *w != va);
    }

    /// A capture for the watchpoint that fired at `va` (the guest is
    /// stopped by it; the caller lets it run on).
    pub(super) fn watch_hit(&mut self, vm: &mut dyn Vm, va: u64, at: Stamp) -> Option<Capture> {
        let symbol = self
            .watches
            .iter()
            .find(|(w, _)| va >= *w && va < w + u64::from(WATCH_LEN))
            .map_or_else(|| format!("{va:#x}"), |(_, s)| s.clone());
        let ram = vm.guest_ram()?;
        let kernel = self.kernel.as_mut()?.as_mut().ok()?;
        let regs = vm.frozen_registers().unwrap_or_default();
        Some(self.reader.capture(
            kernel,
            ram.as_ref(),
            &format!("watch:{symbol}"),
            Trigger::Watch,
            at.step,
            at.at_ms,
            regs,
        ))
    }

    /// The guest kernel, once its info arrived and could be used.
    pub(super) fn kernel_mut(&mut self) -> Option<&mut Kernel> {
        self.kernel.as_mut().and_then(|k| k.as_mut().ok())
    }

    /// Thaws the VM if `served` left it frozen; records how long it was.
    pub(super) fn thaw(
        vm: &mut dyn Vm,
        frozen_since: Option<Instant>,
        log: &mut Option<KernelAccessLog>,
    ) -> Result<u64, VmError> {
        let Some(since) = frozen_since else {
            return Ok(0);
        };
        vm.thaw()?;
        let us = since.elapsed().as_micros() as u64;
        if let Some(log) = log.as_mut() {
            log.max_frozen_us = log.max_frozen_us.max(us);
        }
        Ok(us)
    }

    /// Does `req` (inside one freeze when cold) and logs it in `log`. A
    /// cold request leaves the VM frozen (`frozen_since`): the caller sends
    /// the reply, then calls [`Self::thaw`].
    pub(super) fn serve(
        &mut self,
        vm: &mut dyn Vm,
        req: &KernelRequest,
        at: Stamp,
        log: &mut Option<KernelAccessLog>,
        captures: &mut Vec<Capture>,
    ) -> Served {
        let step = at.step;
        let mut reply = KernelReply {
            id: req.id,
            results: Err(String::new()),
            freezes: 0,
            frozen_us: 0,
        };
        let kernel = match &mut self.kernel {
            Some(Ok(k)) => k,
            Some(Err(why)) => {
                reply.results = Err(why.clone());
                return Served {
                    reply,
                    frozen_since: None,
                };
            }
            None => {
                reply.results = Err("the agent sent no kernel info before its request".into());
                return Served {
                    reply,
                    frozen_since: None,
                };
            }
        };
        let Some(ram) = vm.guest_ram() else {
            reply.results = Err("this backend gives no access to guest RAM".into());
            return Served {
                reply,
                frozen_since: None,
            };
        };
        let log = log.get_or_insert_with(|| KernelAccessLog {
            proc_version: kernel.proc_version().to_string(),
            hz: kernel.hz(),
            ..Default::default()
        });
        log.requests += 1;
        // Frozen time runs from asking for the freeze to the thaw's return.
        let frozen = Instant::now();
        if req.cold {
            if let Err(e) = vm.freeze() {
                reply.results = Err(format!("freezing the guest: {e}"));
                return Served {
                    reply,
                    frozen_since: None,
                };
            }
            reply.freezes = 1;
        }
        // Accesses in order; captures are taken here, the rest by the
        // kernel in runs between them.
        let mut results = Vec::with_capacity(req.accesses.len());
        let mut rest = req.accesses.as_slice();
        while !rest.is_empty() {
            let plain = rest
                .iter()
                .take_while(|a| {
                    !matches!(a, KernelAccess::Capture { .. } | KernelAccess::Watch { .. })
                })
                .count();
            if plain > 0 {
                results.extend(kernel.execute(ram.as_ref(), &rest[..plain]));
                rest = &rest[plain..];
                continue;
            }
            if let KernelAccess::Watch { symbol } = &rest[0] {
                let set = kernel
                    .symbols()
                    .addr(symbol)
                    .and_then(|va| Ok((va, kernel.view(ram.as_ref())?.to_phys(va)?)))
                    .map_err(|e| e.to_string())
                    .and_then(|(va, pa)| {
                        vm.watch(va, pa, WATCH_LEN)
                            .map(|()| va)
                            .map_err(|e| e.to_string())
                    });
                results.push(match set {
                    Ok(va) => {
                        self.watches.push((va, symbol.to_string()));
                        Ok(None)
                    }
                    Err(e) => Err(format!("watching {symbol}: {e}")),
                });
            }
            if let KernelAccess::Capture { name } = &rest[0] {
                if !req.cold {
                    results.push(Err(format!("capture {name:?} asked for without a freeze")));
                } else {
                    let regs = vm.frozen_registers().unwrap_or_default();
                    let c = self.reader.capture(
                        kernel,
                        ram.as_ref(),
                        name,
                        Trigger::Op,
                        at.step,
                        at.at_ms,
                        regs,
                    );
                    results.push(match &c.error {
                        Some(e) => Err(format!("capture {name:?}: {e}")),
                        None => Ok(None),
                    });
                    captures.push(c);
                }
            }
            rest = &rest[1..];
        }
        // The reply can only tell the time up to now; the log gets the whole
        // freeze once thawed.
        if req.cold {
            reply.frozen_us = frozen.elapsed().as_micros() as u64;
        }
        log.freezes += reply.freezes;
        if let Ok(l) = kernel.layout(ram.as_ref()) {
            log.text_va = l.text_va;
            log.kaslr_offset = l.kaslr_offset();
            log.text_pa = l.text_pa;
            log.page_offset_base = l.page_offset_base;
            log.paging_levels = l.levels;
        }
        for (access, result) in req.accesses.iter().zip(&results) {
            match (access, result) {
                (KernelAccess::Read { tag, target, .. }, Ok(Some(value))) => {
                    log.reads.push(KernelRead {
                        step,
                        tag: tag.to_string(),
                        target: target.to_string(),
                        cold: req.cold,
                        value: value.clone(),
                    });
                }
                (_, Err(e)) => log.errors.push(e.clone()),
                _ => {}
            }
        }
        reply.results = Ok(results);
        Served {
            reply,
            frozen_since: req.cold.then_some(frozen),
        }
    }
}
