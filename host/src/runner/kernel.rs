//! Serving the agent's kernel-memory requests during a run: keeps the
//! guest's [`Kernel`] (from the `KernelInfo` it sent), freezes the VM for a
//! cold request, does the accesses through the VM's guest RAM, thaws, and
//! answers; every read and every failure is logged in the plan's outcome.

use std::time::Instant;

use ktstr_protocol::model::{KernelAccess, KernelInfo, KernelReply, KernelRequest};

use crate::kmem::Kernel;
use crate::outcome::{KernelAccessLog, KernelRead};
use crate::vm::Vm;

/// The guest kernel as this VM's requests find it.
#[derive(Default)]
pub(super) struct KernelDesk {
    /// `None` until the agent sends its kernel info; `Err` when that info
    /// could not be used (every request then gets why).
    kernel: Option<Result<Kernel, String>>,
}

impl KernelDesk {
    /// Takes the agent's kernel info (once per guest).
    pub(super) fn info(&mut self, info: KernelInfo) {
        self.kernel = Some(Kernel::new(info).map_err(|e| format!("the guest's kernel info: {e}")));
    }

    /// Does `req` (inside one freeze when cold) and logs it in `log`.
    pub(super) fn serve(
        &mut self,
        vm: &mut dyn Vm,
        req: &KernelRequest,
        step: u16,
        log: &mut Option<KernelAccessLog>,
    ) -> KernelReply {
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
                return reply;
            }
            None => {
                reply.results = Err("the agent sent no kernel info before its request".into());
                return reply;
            }
        };
        let Some(ram) = vm.guest_ram() else {
            reply.results = Err("this backend gives no access to guest RAM".into());
            return reply;
        };
        let log = log.get_or_insert_with(|| KernelAccessLog {
            proc_version: kernel.proc_version().to_string(),
            hz: kernel.hz(),
            ..Default::default()
        });
        log.requests += 1;
        if req.cold {
            if let Err(e) = vm.freeze() {
                reply.results = Err(format!("freezing the guest: {e}"));
                return reply;
            }
            reply.freezes = 1;
        }
        let frozen = Instant::now();
        let results = kernel.execute(ram.as_ref(), &req.accesses);
        if req.cold {
            reply.frozen_us = frozen.elapsed().as_micros() as u64;
            if let Err(e) = vm.thaw() {
                reply.results = Err(format!("thawing the guest: {e}"));
                return reply;
            }
        }
        log.freezes += reply.freezes;
        log.max_frozen_us = log.max_frozen_us.max(reply.frozen_us);
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
        reply
    }
}
