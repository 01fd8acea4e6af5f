//! One guest kernel as the host reaches it: its symbols and layout (from
//! the [`KernelInfo`] the agent sent and the guest's own variables, plus a
//! matching [`Vmlinux`]'s symbols the guest's kallsyms lacks), its BTF (the
//! vmlinux's `.BTF` when given, else read out of guest memory between
//! `__start_BTF` and `__stop_BTF`),
//! and the accesses of a [`ktstr_protocol::model::KernelRequest`] resolved and done in order.
//!
//! Layout and BTF are found on first use and kept; a failure to find them
//! is reported per access and retried next time.

use std::sync::Arc;

use ktstr_protocol::model::{
    AccessResult, KernelAccess, KernelInfo, KernelTarget, KernelValue, KernelValueWidth,
};

use super::btf::Types;
use super::error::KmemError;
use super::symbols::{MAX_BLOB, Symbols, gunzip};
use super::translate::{AddressSpace, KernelLayout};
use super::view::{MAX_READ, View};
use super::vmlinux::Vmlinux;
use crate::vm::ram::PhysMemory;

/// Where the kernel image mapping starts (`__START_KERNEL_map`); link
/// addresses below it are not in the image.
const KERNEL_IMAGE_MAP: u64 = 0xffff_ffff_8000_0000;

/// Most entries walked on the task list before calling it a loop.
const TASK_LIMIT: usize = 1 << 16;

/// A guest kernel's memory.
pub struct Kernel {
    syms: Symbols,
    info: KernelInfo,
    layout: Option<KernelLayout>,
    types: Option<Types>,
    vmlinux: Option<Arc<Vmlinux>>,
}

/// Where a target is, and how big its BTF field is (when it has one).
struct Located {
    va: u64,
    field_size: Option<usize>,
}

impl Kernel {
    /// Parses what the agent sent; the kallsyms text is checked here.
    pub fn new(info: KernelInfo) -> Result<Self, KmemError> {
        Self::with_vmlinux(info, None)
    }

    /// [`Self::new`], with the symbols `vmlinux` has and the guest's
    /// kallsyms lacks added at their KASLR-moved addresses, and its BTF;
    /// refused when the vmlinux is not the guest's kernel.
    pub fn with_vmlinux(
        info: KernelInfo,
        vmlinux: Option<Arc<Vmlinux>>,
    ) -> Result<Self, KmemError> {
        let text = gunzip("kallsyms", &info.kallsyms_gz)?;
        let text =
            String::from_utf8(text).map_err(|_| KmemError::Kallsyms("not UTF-8 text".into()))?;
        let mut syms = Symbols::parse(&text)?;
        if let Some(v) = &vmlinux {
            let offset = v.offset_against(&syms)?;
            for (name, link) in v.symbols() {
                // Zero-based per-CPU symbols (older x86-64 kernels) are
                // offsets, not image addresses: KASLR does not move them.
                let run = if link >= KERNEL_IMAGE_MAP {
                    link.wrapping_add(offset)
                } else {
                    link
                };
                syms.add_missing(name, run);
            }
        }
        Ok(Self {
            syms,
            info: KernelInfo {
                kallsyms_gz: Vec::new(),
                ..info
            },
            layout: None,
            types: None,
            vmlinux,
        })
    }

    pub fn symbols(&self) -> &Symbols {
        &self.syms
    }

    pub fn proc_version(&self) -> &str {
        &self.info.proc_version
    }

    pub fn hz(&self) -> u32 {
        self.info.hz
    }

    /// The layout, found on first use.
    pub fn layout(&mut self, mem: &dyn PhysMemory) -> Result<KernelLayout, KmemError> {
        if let Some(l) = self.layout {
            return Ok(l);
        }
        let l = KernelLayout::discover(mem, &self.syms, self.info.text_pa)?;
        self.layout = Some(l);
        Ok(l)
    }

    /// The BTF, from the vmlinux or read from guest memory, on first use.
    fn types(&mut self, space: &AddressSpace<'_>) -> Result<&Types, KmemError> {
        if self.types.is_none()
            && let Some(btf) = self.vmlinux.as_ref().and_then(|v| v.btf())
        {
            self.types = Some(Types::parse(btf)?);
        }
        if self.types.is_none() {
            if !self.syms.has("__start_BTF") {
                return Err(KmemError::Btf(
                    "the guest kernel has no BTF in memory (no __start_BTF: built without \
                     CONFIG_DEBUG_INFO_BTF?); pass its vmlinux, with a .BTF section, with --vmlinux"
                        .into(),
                ));
            }
            let start = self.syms.addr("__start_BTF")?;
            let stop = self.syms.addr("__stop_BTF")?;
            let len = stop
                .checked_sub(start)
                .filter(|&n| n > 0 && n <= MAX_BLOB as u64)
                .ok_or_else(|| {
                    KmemError::Btf(format!(
                        "__start_BTF {start:#x} .. __stop_BTF {stop:#x} is not a sane range"
                    ))
                })?;
            let mut bytes = vec![0u8; len as usize];
            space.read(start, &mut bytes)?;
            self.types = Some(Types::parse(&bytes)?);
        }
        self.types
            .as_ref()
            .ok_or_else(|| KmemError::Btf("not loaded".into()))
    }

    /// The kernel virtual address of `target`.
    fn locate(
        &mut self,
        space: &AddressSpace<'_>,
        target: &KernelTarget,
    ) -> Result<Located, KmemError> {
        match target {
            KernelTarget::Addr(va) => Ok(Located {
                va: *va,
                field_size: None,
            }),
            KernelTarget::Symbol { name, offset } => Ok(Located {
                va: self.syms.addr(name)?.wrapping_add(*offset),
                field_size: None,
            }),
            KernelTarget::PerCpu { symbol, cpu, field } => {
                let nr = space.read_u32(self.syms.addr("nr_cpu_ids")?)?;
                if *cpu >= nr {
                    return Err(KmemError::NoCpu { cpu: *cpu, nr });
                }
                let offsets = self.syms.addr("__per_cpu_offset")?;
                let offset = space.read_u64(offsets + 8 * u64::from(*cpu))?;
                let base = self.syms.addr(symbol)?.wrapping_add(offset);
                let types = self.types(space)?;
                let ty = types.var_type(symbol)?;
                let f = types.field(&ty, field)?;
                Ok(Located {
                    va: base.wrapping_add(f.offset),
                    field_size: Some(f.size),
                })
            }
            KernelTarget::TaskField { pid, field } => {
                let init = self.syms.addr("init_task")?;
                let types = self.types(space)?;
                let task_ty = types.named("task_struct")?;
                let tasks = types.field(&task_ty, "tasks")?.offset;
                let pid_off = types.field(&task_ty, "pid")?.offset;
                let f = types.field(&task_ty, field)?;
                let task = find_task(space, init, tasks, pid_off, *pid)?;
                Ok(Located {
                    va: task.wrapping_add(f.offset),
                    field_size: Some(f.size),
                })
            }
        }
    }

    /// Does `accesses` in order against `mem` (frozen or not: the caller
    /// decides); one result per access.
    pub fn execute(
        &mut self,
        mem: &dyn PhysMemory,
        accesses: &[KernelAccess],
    ) -> Vec<AccessResult> {
        let layout = match self.layout(mem) {
            Ok(l) => l,
            Err(e) => {
                let why = format!("finding the kernel in guest memory: {e}");
                return accesses.iter().map(|_| Err(why.clone())).collect();
            }
        };
        let space = AddressSpace::new(mem, layout);
        accesses
            .iter()
            .map(|a| self.access(&space, a).map_err(|e| e.to_string()))
            .collect()
    }

    fn access(
        &mut self,
        space: &AddressSpace<'_>,
        access: &KernelAccess,
    ) -> Result<Option<KernelValue>, KmemError> {
        match access {
            KernelAccess::Read { target, width, .. } => {
                let at = self.locate(space, target)?;
                let n = match width {
                    KernelValueWidth::U32 => 4,
                    KernelValueWidth::U64 => 8,
                    KernelValueWidth::Bytes(n) if *n > 0 && *n <= MAX_READ => *n,
                    KernelValueWidth::Bytes(n) => {
                        return Err(KmemError::Invalid(format!(
                            "a read of {n} bytes; reads are 1..={MAX_READ} bytes"
                        )));
                    }
                };
                check_width(
                    target,
                    at.field_size,
                    n,
                    matches!(width, KernelValueWidth::Bytes(_)),
                )?;
                let mut buf = vec![0u8; n];
                space.read(at.va, &mut buf)?;
                Ok(Some(match width {
                    KernelValueWidth::U32 => {
                        KernelValue::U32(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]))
                    }
                    KernelValueWidth::U64 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&buf);
                        KernelValue::U64(u64::from_le_bytes(b))
                    }
                    KernelValueWidth::Bytes(_) => KernelValue::Bytes(buf),
                }))
            }
            KernelAccess::Capture { name } => Err(KmemError::Invalid(format!(
                "capture {name:?}: captures are taken by the runner, not by kernel accesses"
            ))),
            KernelAccess::Watch { symbol } => Err(KmemError::Invalid(format!(
                "watch {symbol:?}: watchpoints are set by the runner, not by kernel accesses"
            ))),
            KernelAccess::Write { target, value } => {
                let at = self.locate(space, target)?;
                let bytes = match value {
                    KernelValue::U32(v) => v.to_le_bytes().to_vec(),
                    KernelValue::U64(v) => v.to_le_bytes().to_vec(),
                    KernelValue::Bytes(b) if !b.is_empty() && b.len() <= MAX_READ => b.clone(),
                    KernelValue::Bytes(b) => {
                        return Err(KmemError::Invalid(format!(
                            "a write of {} bytes; writes are 1..={MAX_READ} bytes",
                            b.len()
                        )));
                    }
                    KernelValue::OrU32(bits) => {
                        let old = space.read_u32(at.va)?;
                        (old | bits).to_le_bytes().to_vec()
                    }
                };
                check_width(
                    target,
                    at.field_size,
                    bytes.len(),
                    matches!(value, KernelValue::Bytes(_)),
                )?;
                space.write(at.va, &bytes)?;
                Ok(None)
            }
        }
    }
}

impl Kernel {
    /// A read-only view of the guest kernel for code that walks its
    /// structures (the monitor, snapshots): symbols, BTF layouts and
    /// translated reads. Finds the layout and BTF first if need be.
    pub fn view<'k>(&'k mut self, mem: &'k dyn PhysMemory) -> Result<View<'k>, KmemError> {
        let layout = self.layout(mem)?;
        let space = AddressSpace::new(mem, layout);
        self.types(&space)?;
        let types = self
            .types
            .as_ref()
            .ok_or_else(|| KmemError::Btf("not loaded".into()))?;
        Ok(View::new(&self.syms, types, space))
    }
}

/// A u32 or u64 access to a BTF field must match its size; bytes may
/// cover part of it.
fn check_width(
    target: &KernelTarget,
    field: Option<usize>,
    n: usize,
    bytes: bool,
) -> Result<(), KmemError> {
    match field {
        Some(size) if (!bytes && n != size) || (bytes && n > size) => Err(KmemError::Invalid(
            format!("{target} is {size} bytes; a {n}-byte access does not fit it"),
        )),
        _ => Ok(()),
    }
}

/// The `task_struct` address of process `pid`, walking `init_task.tasks`.
fn find_task(
    space: &AddressSpace<'_>,
    init: u64,
    tasks: u64,
    pid_off: u64,
    pid: i32,
) -> Result<u64, KmemError> {
    if space.read_u32(init + pid_off)? as i32 == pid {
        return Ok(init);
    }
    let mut node = space.read_u64(init + tasks)?;
    for scanned in 0..TASK_LIMIT {
        let task = node.wrapping_sub(tasks);
        if task == init {
            return Err(KmemError::NoTask { pid, scanned });
        }
        if space.read_u32(task + pid_off)? as i32 == pid {
            return Ok(task);
        }
        node = space.read_u64(node)?;
    }
    Err(KmemError::TaskListLoop { limit: TASK_LIMIT })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;
    use crate::vm::ram::VecRam;

    const MIB: u64 = 1 << 20;
    pub(crate) const TEXT_VA: u64 = 0xffff_ffff_9a00_0000;
    pub(crate) const TEXT_PA: u64 = 0x0200_0000;
    const POB: u64 = 0xffff_9000_0000_0000;

    fn gz(text: &str) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap()
    }

    /// A guest with 2 CPUs whose per-CPU `runqueues` (the tiny BTF's
    /// `struct rq`) live at 16 and 17 MiB, a banner in the image and
    /// `jiffies_64` = 77: its RAM and the kernel info its agent would send.
    pub(crate) fn test_guest() -> (VecRam, KernelInfo) {
        let ram = VecRam::new(0, vec![0; (64 * MIB) as usize], Vec::new());
        let btf = super::super::btf::tests::tiny_btf();
        let v = |off: u64| TEXT_VA + off;
        let text = format!(
            "{:016x} T _text\n{:016x} B _end\n{:016x} D page_offset_base\n\
             {:016x} D init_top_pgt\n{:016x} D linux_banner\n{:016x} D nr_cpu_ids\n\
             {:016x} D __per_cpu_offset\n0000000000000100 D runqueues\n\
             {:016x} R __start_BTF\n{:016x} R __stop_BTF\n{:016x} D jiffies_64\n",
            v(0),
            v(8 * MIB),
            v(0x1000),
            v(0x2000),
            v(0x3000),
            v(0x4000),
            v(0x5000),
            v(0x10_0000),
            v(0x10_0000 + btf.len() as u64),
            v(0x6000),
        );
        ram.write(TEXT_PA + 0x1000, &POB.to_le_bytes()).unwrap();
        ram.write(TEXT_PA + 0x3000, b"Linux version 7.3.4\0")
            .unwrap();
        ram.write(TEXT_PA + 0x4000, &2u32.to_le_bytes()).unwrap();
        for cpu in 0..2u64 {
            let pcpu = POB + (16 + cpu) * MIB;
            ram.write(TEXT_PA + 0x5000 + 8 * cpu, &pcpu.to_le_bytes())
                .unwrap();
            // nr_running at offset 0 of rq, rq at per-CPU offset 0x100.
            ram.write((16 + cpu) * MIB + 0x100, &(3 + cpu as u32).to_le_bytes())
                .unwrap();
        }
        ram.write(TEXT_PA + 0x10_0000, &btf).unwrap();
        ram.write(TEXT_PA + 0x6000, &77u64.to_le_bytes()).unwrap();
        let info = KernelInfo {
            kallsyms_gz: gz(&text),
            text_pa: TEXT_PA,
            proc_version: "Linux version 7.3.4".into(),
            hz: 250,
        };
        (ram, info)
    }

    fn guest() -> (VecRam, Kernel) {
        let (ram, info) = test_guest();
        (ram, Kernel::new(info).unwrap())
    }

    fn read(tag: &'static str, target: KernelTarget, width: KernelValueWidth) -> KernelAccess {
        KernelAccess::Read {
            tag: tag.into(),
            target,
            width,
        }
    }

    /// A guest whose kallsyms lacks data symbols and BTF markers (no
    /// CONFIG_KALLSYMS_ALL) reached through a vmlinux with them; a vmlinux
    /// of another build is refused.
    #[test]
    fn a_vmlinux_fills_in_symbols_and_btf() {
        use crate::kmem::vmlinux::tests::{LINK_TEXT, elf};
        let (ram, info) = test_guest();
        let text = String::from_utf8(gunzip("k", &info.kallsyms_gz).unwrap()).unwrap();
        let keep = ["_text", "_end", "page_offset_base", "init_top_pgt"];
        let short: String = text
            .lines()
            .filter(|l| keep.iter().any(|k| l.ends_with(&format!(" {k}"))))
            .map(|l| format!("{l}\n"))
            .collect();
        let short_info = KernelInfo {
            kallsyms_gz: gz(&short),
            ..info.clone()
        };
        // Link addresses: the guest's minus its KASLR offset.
        let link = |run: u64| run - TEXT_VA + LINK_TEXT;
        let btf = super::super::btf::tests::tiny_btf();
        let syms = [
            ("_text", link(TEXT_VA), true),
            ("jiffies_64", link(TEXT_VA + 0x6000), false),
            ("nr_cpu_ids", link(TEXT_VA + 0x4000), false),
            ("__per_cpu_offset", link(TEXT_VA + 0x5000), false),
            ("runqueues", 0x100, false),
            ("linux_banner", link(TEXT_VA + 0x3000), false),
        ];
        let v = Arc::new(Vmlinux::parse("vmlinux", &elf(&syms, Some(&btf))).unwrap());
        let mut k = Kernel::with_vmlinux(short_info.clone(), Some(v)).unwrap();
        let out = k.execute(
            &ram,
            &[
                read(
                    "j",
                    KernelTarget::symbol("jiffies_64"),
                    KernelValueWidth::U64,
                ),
                read(
                    "nr1",
                    KernelTarget::per_cpu("runqueues", 1, "nr_running"),
                    KernelValueWidth::U32,
                ),
            ],
        );
        assert_eq!(out[0], Ok(Some(KernelValue::U64(77))));
        assert_eq!(out[1], Ok(Some(KernelValue::U32(4))));
        // Without the vmlinux the same guest has neither.
        let mut bare = Kernel::new(short_info.clone()).unwrap();
        let out = bare.execute(
            &ram,
            &[read(
                "j",
                KernelTarget::symbol("jiffies_64"),
                KernelValueWidth::U64,
            )],
        );
        assert!(
            out[0].as_ref().unwrap_err().contains("jiffies_64"),
            "{out:?}"
        );
        // A vmlinux whose banner sits elsewhere is another kernel.
        let mut other = syms;
        other[5].1 += 0x40;
        let v = Arc::new(Vmlinux::parse("other", &elf(&other, None)).unwrap());
        let with_banner = KernelInfo {
            kallsyms_gz: gz(&format!(
                "{short}{:016x} D linux_banner\n",
                TEXT_VA + 0x3000
            )),
            ..info
        };
        let e = Kernel::with_vmlinux(with_banner, Some(v))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("not the kernel the guest runs"), "{e}");
    }

    #[test]
    fn symbols_per_cpu_fields_and_writes() {
        let (ram, mut k) = guest();
        let out = k.execute(
            &ram,
            &[
                read(
                    "banner",
                    KernelTarget::symbol("linux_banner"),
                    KernelValueWidth::Bytes(13),
                ),
                read(
                    "j",
                    KernelTarget::symbol("jiffies_64"),
                    KernelValueWidth::U64,
                ),
                read(
                    "nr1",
                    KernelTarget::per_cpu("runqueues", 1, "nr_running"),
                    KernelValueWidth::U32,
                ),
                KernelAccess::Write {
                    target: KernelTarget::per_cpu("runqueues", 0, "clock"),
                    value: KernelValue::U32(0x10),
                },
                KernelAccess::Write {
                    target: KernelTarget::per_cpu("runqueues", 0, "clock"),
                    value: KernelValue::OrU32(0x3),
                },
                read(
                    "clk",
                    KernelTarget::per_cpu("runqueues", 0, "clock"),
                    KernelValueWidth::U32,
                ),
                read(
                    "cpu9",
                    KernelTarget::per_cpu("runqueues", 9, "nr_running"),
                    KernelValueWidth::U32,
                ),
                read(
                    "wide",
                    KernelTarget::per_cpu("runqueues", 0, "nr_running"),
                    KernelValueWidth::U64,
                ),
                read("nosym", KernelTarget::symbol("nope"), KernelValueWidth::U64),
            ],
        );
        assert_eq!(
            out[0],
            Ok(Some(KernelValue::Bytes(b"Linux version".to_vec())))
        );
        assert_eq!(out[1], Ok(Some(KernelValue::U64(77))));
        assert_eq!(out[2], Ok(Some(KernelValue::U32(4))));
        assert_eq!(out[3], Ok(None));
        assert_eq!(out[5], Ok(Some(KernelValue::U32(0x13))));
        assert!(
            out[6].as_ref().unwrap_err().contains("CPU 9"),
            "{:?}",
            out[6]
        );
        assert!(
            out[7].as_ref().unwrap_err().contains("4 bytes"),
            "{:?}",
            out[7]
        );
        assert!(
            out[8].as_ref().unwrap_err().contains("nope"),
            "{:?}",
            out[8]
        );
        assert_eq!(k.layout(&ram).unwrap().page_offset_base, POB);
    }

    #[test]
    fn hostile_info_is_refused() {
        assert!(Kernel::new(KernelInfo::default()).is_err());
        let truncated = KernelInfo {
            kallsyms_gz: gz("ffffffff9a000000 T _text\nffffffff9a00"),
            ..Default::default()
        };
        assert!(matches!(
            Kernel::new(truncated),
            Err(KmemError::Kallsyms(_))
        ));
        let garbage = KernelInfo {
            kallsyms_gz: vec![0x1f, 0x8b, 0, 1, 2, 3],
            ..Default::default()
        };
        assert!(matches!(
            Kernel::new(garbage),
            Err(KmemError::Decompress { .. })
        ));
        // A guest whose layout cannot be found answers every access with why.
        let (_, mut k) = guest();
        let empty = VecRam::new(0, vec![0; 4096], Vec::new());
        let out = k.execute(
            &empty,
            &[read(
                "j",
                KernelTarget::symbol("jiffies_64"),
                KernelValueWidth::U64,
            )],
        );
        assert!(
            out[0].as_ref().unwrap_err().contains("finding the kernel"),
            "{out:?}"
        );
    }

    #[test]
    fn a_task_list_that_loops_is_cut() {
        let (ram, k) = guest();
        let layout = KernelLayout {
            text_va: TEXT_VA,
            text_pa: TEXT_PA,
            end_va: TEXT_VA + 8 * MIB,
            page_offset_base: POB,
            levels: 4,
            top_pgt_pa: TEXT_PA + 0x2000,
        };
        let space = AddressSpace::new(&ram, layout);
        let _ = k;
        // init_task at image +0x7000 with tasks at +0x10 and pid at +0x20;
        // its list points at a node that points at itself.
        let init = TEXT_VA + 0x7000;
        let node = POB + 0x20_0000;
        ram.write(TEXT_PA + 0x7010, &node.to_le_bytes()).unwrap();
        ram.write(0x20_0000, &node.to_le_bytes()).unwrap();
        let e = find_task(&space, init, 0x10, 0x20, 1234).unwrap_err();
        assert!(matches!(e, KmemError::TaskListLoop { .. }), "{e}");
        // A list that returns to init_task without the pid.
        ram.write(0x20_0000, &(init + 0x10).to_le_bytes()).unwrap();
        let e = find_task(&space, init, 0x10, 0x20, 1234).unwrap_err();
        assert!(matches!(e, KmemError::NoTask { scanned: 1, .. }), "{e}");
        // And one that has it.
        ram.write(0x20_0000 - 0x10 + 0x20, &1234u32.to_le_bytes())
            .unwrap();
        assert_eq!(
            find_task(&space, init, 0x10, 0x20, 1234).unwrap(),
            node - 0x10
        );
        // A pointer out of RAM ends the walk with an error, not a read.
        ram.write(TEXT_PA + 0x7010, &(POB + 0x100_0000_0000).to_le_bytes())
            .unwrap();
        assert!(find_task(&space, init, 0x10, 0x20, 99).is_err());
    }
}
