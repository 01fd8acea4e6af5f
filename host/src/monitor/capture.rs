//! Captures: a [`Sample`] of every CPU and the sched_ext state plus every
//! vCPU's registers, taken inside a freeze and kept under a name with the
//! step and plan time it belongs to. [`SchedReader`] is the one way both
//! captures and the monitor read scheduler state (the layout found once).

use serde::Serialize;

use super::bpf_maps::{self, BpfMap, BtfCache, MapsLayout};
use super::layout::SchedLayout;
use super::sample::{self, Sample};
use crate::kmem::Kernel;
use crate::vm::VcpuRegs;
use crate::vm::ram::PhysMemory;

/// What asked for a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A `CaptureSnapshot` op.
    Op,
    /// The monitor caught a stall: the state at the failure.
    Stall,
    /// The guest wrote a watched kernel variable.
    Watch,
    /// The monitor's periodic capture.
    Periodic,
    /// The plan's verdict failed: the state right after.
    Failure,
}

/// One capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capture {
    pub name: String,
    pub trigger: Trigger,
    /// The step running (0 = baseline) and ms since the plan started,
    /// time frozen left out.
    pub step: u16,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
    pub registers: Vec<VcpuRegs>,
    /// The guest's BPF maps (the scheduler's, in a test guest).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<BpfMap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maps_error: Option<String>,
    /// Why the scheduler state could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads scheduler state, finding where it lives on first use.
#[derive(Default)]
pub struct SchedReader {
    layout: Option<Result<SchedLayout, String>>,
    maps_layout: Option<Result<MapsLayout, String>>,
    btfs: BtfCache,
}

impl std::fmt::Debug for SchedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedReader")
            .field("layout", &self.layout)
            .field("maps_layout", &self.maps_layout.as_ref().map(|r| r.is_ok()))
            .finish_non_exhaustive()
    }
}

impl SchedReader {
    /// Every CPU's runqueue and the sched_ext state now (stamps at 0).
    pub fn read(&mut self, kernel: &mut Kernel, mem: &dyn PhysMemory) -> Result<Sample, String> {
        let view = kernel.view(mem).map_err(|e| e.to_string())?;
        let layout = self
            .layout
            .get_or_insert_with(|| {
                SchedLayout::resolve(&view)
                    .map_err(|e| format!("finding the runqueue in this kernel's BTF: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        sample::read(&view, layout).map_err(|e| e.to_string())
    }

    /// The guest's BPF maps now, their values rendered.
    pub fn maps(
        &mut self,
        kernel: &mut Kernel,
        mem: &dyn PhysMemory,
    ) -> Result<Vec<BpfMap>, String> {
        let view = kernel.view(mem).map_err(|e| e.to_string())?;
        let layout = self
            .maps_layout
            .get_or_insert_with(|| {
                MapsLayout::resolve(&view)
                    .map_err(|e| format!("finding the BPF map list in this kernel's BTF: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        bpf_maps::read_maps(&view, layout, &mut self.btfs).map_err(|e| e.to_string())
    }

    /// A capture named `name` of the (frozen) guest.
    #[allow(clippy::too_many_arguments)]
    pub fn capture(
        &mut self,
        kernel: &mut Kernel,
        mem: &dyn PhysMemory,
        name: &str,
        trigger: Trigger,
        step: u16,
        at_ms: u64,
        registers: Vec<VcpuRegs>,
    ) -> Capture {
        let (sample, error) = match self.read(kernel, mem) {
            Ok(mut s) => {
                s.step = step;
                s.at_ms = at_ms;
                (Some(s), None)
            }
            Err(e) => (None, Some(e)),
        };
        let (maps, maps_error) = match self.maps(kernel, mem) {
            Ok(m) => (m, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        Capture {
            name: name.to_string(),
            trigger,
            step,
            at_ms,
            sample,
            registers,
            maps,
            maps_error,
            error,
        }
    }
}
