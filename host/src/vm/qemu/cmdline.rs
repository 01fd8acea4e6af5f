//! The QEMU command line and the guest kernel command line, built as pure
//! functions of the spec, the accelerator, the memory layout and the file
//! paths, so the exact arguments are unit-tested without starting QEMU.

use std::path::{Path, PathBuf};

use ktstr_protocol::ShmArg;
use ktstr_protocol::model::Topology;

use super::fast_boot::FastBoot;
use super::layout::MemoryLayout;
use crate::vm::{VmError, VmSpec};

/// How QEMU runs guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation on one host thread (`thread=single`): with
    /// multi-threaded TCG, QEMU 7.2 lets other vCPUs run stale code while the
    /// kernel live-patches itself with int3 (static keys), and the guest
    /// oopses in about one boot in three.
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

impl Accel {
    /// The `-accel` value.
    pub fn qemu_arg(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg,thread=single",
            Accel::Kvm => "kvm",
        }
    }

    /// The `-cpu` model: every feature TCG emulates, or the host's under KVM.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Tcg => "max",
            Accel::Kvm => "host",
        }
    }
}

/// Every file the QEMU process reads or writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuFiles {
    /// Backing file of each NUMA node's RAM, by node id.
    pub ram: Vec<PathBuf>,
    /// Serial console output.
    pub console: PathBuf,
    /// QMP listening socket.
    pub qmp: PathBuf,
    /// gdbstub listening socket (write watchpoints).
    pub gdb: PathBuf,
}

impl QemuFiles {
    /// The files of one VM: console and QMP socket in `workdir`, RAM files
    /// `<ram_dir>/<ram_prefix>-node<I>.ram`.
    pub fn new(workdir: &Path, ram_dir: &Path, ram_prefix: &str, nodes: u32) -> Self {
        Self {
            ram: (0..nodes)
                .map(|i| ram_dir.join(format!("{ram_prefix}-node{i}.ram")))
                .collect(),
            console: workdir.join("console.log"),
            qmp: workdir.join("qmp.sock"),
            gdb: workdir.join("gdb.sock"),
        }
    }
}

/// A path as a QEMU option value: UTF-8, with commas doubled because QEMU's
/// option parser splits on single commas.
fn opt_path(path: &Path) -> Result<String, VmError> {
    let s = path.to_str().ok_or_else(|| {
        VmError::Setup(format!(
            "path {} is not UTF-8; QEMU options need UTF-8 paths",
            path.display()
        ))
    })?;
    Ok(s.replace(',', ",,"))
}

/// A path passed as a whole argument (`-kernel`, `-initrd`), not parsed.
fn raw_path(path: &Path) -> Result<String, VmError> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        VmError::Setup(format!(
            "path {} is not UTF-8; QEMU options need UTF-8 paths",
            path.display()
        ))
    })
}

/// A byte count in the largest unit `memmap=` accepts that divides it.
fn mem_size(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        b if b % GIB == 0 => format!("{}G", b / GIB),
        b if b % MIB == 0 => format!("{}M", b / MIB),
        b if b % KIB == 0 => format!("{}K", b / KIB),
        b => b.to_string(),
    }
}

/// The guest kernel command line: console on the first serial port, KASLR
/// unless the spec turns it off (the decompressor keeps clear of `memmap=`
/// regions and the initrd, so the ring stays whole), panic and reboot turn into a QEMU exit (`-no-reboot`), the region
/// reserved with `memmap=SIZE$ADDR` and announced with `ktstr.shm=`, the
/// fast-boot words, then the spec's extra words (last, so they win).
pub fn kernel_cmdline(spec: &VmSpec, layout: &MemoryLayout, fast: &FastBoot) -> String {
    let mut words: Vec<String> = ["console=ttyS0", "panic=-1", "reboot=k"]
        .map(String::from)
        .into();
    if !spec.kaslr {
        words.push("nokaslr".into());
    }
    if !spec.verbose {
        words.push("quiet".into());
        words.push("loglevel=3".into());
    }
    words.push(format!(
        "memmap={}${:#x}",
        mem_size(layout.shm_size),
        layout.shm_addr
    ));
    words.push(
        ShmArg {
            addr: layout.shm_addr,
            size: layout.shm_size,
        }
        .to_string(),
    );
    words.extend(fast.words.iter().cloned());
    words.extend(spec.cmdline_extra.iter().cloned());
    words.join(" ")
}

/// The largest APIC ID QEMU gives a CPU of `topo` as [`qemu_args`] lays
/// it out (socket, core and thread fields each rounded up to a power of
/// two, as QEMU packs them).
pub fn max_apic_id(topo: &Topology) -> u32 {
    let bits = |n: u32| n.max(1).next_power_of_two().trailing_zeros();
    let thread_bits = bits(topo.threads_per_core);
    let core_bits = bits(topo.cores_per_llc);
    ((topo.llcs - 1) << (core_bits + thread_bits))
        | ((topo.cores_per_llc - 1) << thread_bits)
        | (topo.threads_per_core - 1)
}

/// Refuses, before QEMU starts, what QEMU would refuse (its own words
/// come back too, but only after a start-up): under TCG, APIC IDs past
/// 254 (x2APIC needs KVM's in-kernel irqchip in QEMU 7.2). The vCPU count
/// itself is capped by [`Topology::validate`] below q35's 288.
/// `-icount` for [`VmSpec::icount`]: a guest nanosecond is 2^3 executed
/// instructions' worth; when every vCPU idles, time jumps to the next
/// timer instead of passing in real time.
pub const ICOUNT: &str = "shift=3,sleep=off";

pub fn check_limits(topo: &Topology, accel: Accel) -> Result<(), VmError> {
    let apic = max_apic_id(topo);
    if accel == Accel::Tcg && apic > 254 {
        return Err(VmError::Setup(format!(
            "topology {topo} needs APIC IDs up to {apic} (QEMU rounds cores and threads per LLC \
             up to powers of two); under TCG QEMU stops at 254, since x2APIC needs KVM's \
             in-kernel irqchip: choose fewer LLCs or cores per LLC, or run on a host with \
             hardware KVM (--backend kvm, our VMM, has no such limit)"
        )));
    }
    Ok(())
}

/// The QEMU arguments (without the program name).
///
/// One socket per LLC, because QEMU shares its modelled L3 per socket; LLCs
/// are numbered node by node, so node I holds sockets
/// `I*llcs_per_node .. (I+1)*llcs_per_node`. Each node's RAM is its own
/// shared file backend; with one node it backs the whole machine.
pub fn qemu_args(
    spec: &VmSpec,
    accel: Accel,
    layout: &MemoryLayout,
    files: &QemuFiles,
    fast: &FastBoot,
) -> Result<Vec<String>, VmError> {
    let topo = &spec.topology;
    check_limits(topo, accel)?;
    if files.ram.len() != layout.nodes as usize || layout.nodes != topo.numa_nodes {
        return Err(VmError::Setup(format!(
            "{} RAM files and a {}-node memory layout for topology {topo}",
            files.ram.len(),
            layout.nodes
        )));
    }
    let mut a: Vec<String> = Vec::new();
    let mut push = |words: &[&str]| a.extend(words.iter().map(|w| w.to_string()));
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-no-reboot"]);
    let machine = if topo.numa_nodes == 1 {
        "q35,memory-backend=ram0"
    } else {
        "q35"
    };
    push(&["-machine", machine]);
    push(&["-accel", accel.qemu_arg(), "-cpu", accel.cpu_model()]);
    if spec.icount {
        if accel != Accel::Tcg {
            return Err(VmError::Setup(
                "instruction-counted guest time (--icount) needs QEMU's TCG; this QEMU runs the \
                 guest on hardware KVM"
                    .into(),
            ));
        }
        push(&["-icount", ICOUNT]);
    }
    push(&["-m", &format!("{}M", layout.total_mib())]);
    push(&[
        "-smp",
        &format!(
            "cpus={},sockets={},cores={},threads={}",
            topo.total_cpus(),
            topo.llcs,
            topo.cores_per_llc,
            topo.threads_per_core
        ),
    ]);
    for (i, path) in files.ram.iter().enumerate() {
        push(&[
            "-object",
            &format!(
                "memory-backend-file,id=ram{i},size={}M,mem-path={},share=on",
                layout.node_mib(),
                opt_path(path)?
            ),
        ]);
    }
    if topo.numa_nodes > 1 {
        for node in 0..topo.numa_nodes {
            push(&["-numa", &format!("node,nodeid={node},memdev=ram{node}")]);
        }
        for socket in 0..topo.llcs {
            let node = topo.node_of_llc(socket);
            push(&["-numa", &format!("cpu,node-id={node},socket-id={socket}")]);
        }
        for (src, row) in topo.distances().iter().enumerate() {
            for (dst, val) in row.iter().enumerate() {
                if src != dst {
                    push(&["-numa", &format!("dist,src={src},dst={dst},val={val}")]);
                }
            }
        }
    }
    push(&[
        "-chardev",
        &format!("file,id=con,path={}", opt_path(&files.console)?),
        "-serial",
        "chardev:con",
    ]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", opt_path(&files.qmp)?),
    ]);
    push(&[
        "-gdb",
        &format!("unix:{},server=on,wait=off", opt_path(&files.gdb)?),
    ]);
    push(&[
        "-kernel",
        &raw_path(fast.pvh_kernel.as_ref().unwrap_or(&spec.kernel))?,
    ]);
    push(&["-initrd", &raw_path(&spec.initramfs)?]);
    push(&["-append", &kernel_cmdline(spec, layout, fast)]);
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn spec(topo: &str, memory_mib: u64) -> VmSpec {
        let mut s = VmSpec::new(
            "/k/bzImage".into(),
            "/k/initrd.cpio".into(),
            topo.parse().unwrap(),
        );
        s.memory_mib = memory_mib;
        s
    }

    fn files(nodes: u32) -> QemuFiles {
        QemuFiles::new(
            Path::new("/tmp/w"),
            Path::new("/dev/shm"),
            "ktstr-7-3",
            nodes,
        )
    }

    /// The value following each occurrence of `flag`.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn one_node_one_llc() {
        let s = spec("1n1l2c1t", 512);
        let l = MemoryLayout::plan(512, 1, 16 * MIB, 0x400_0000, 0).unwrap();
        let args = qemu_args(&s, Accel::Tcg, &l, &files(1), &FastBoot::default()).unwrap();
        let expected = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-machine",
            "q35,memory-backend=ram0",
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-m",
            "512M",
            "-smp",
            "cpus=2,sockets=1,cores=2,threads=1",
            "-object",
            "memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/ktstr-7-3-node0.ram,share=on",
            "-chardev",
            "file,id=con,path=/tmp/w/console.log",
            "-serial",
            "chardev:con",
            "-qmp",
            "unix:/tmp/w/qmp.sock,server=on,wait=off",
            "-gdb",
            "unix:/tmp/w/gdb.sock,server=on,wait=off",
            "-kernel",
            "/k/bzImage",
            "-initrd",
            "/k/initrd.cpio",
            "-append",
            "console=ttyS0 panic=-1 reboot=k nokaslr quiet loglevel=3 \
             memmap=16M$0x10000000 ktstr.shm=0x10000000,0x1000000",
        ];
        assert_eq!(args, expected);
        assert!(values(&args, "-numa").is_empty());
    }

    #[test]
    fn two_nodes_four_llcs_smt() {
        let mut s = spec("2n4l2c2t", 1024);
        s.verbose = true;
        s.kaslr = false;
        s.cmdline_extra = vec!["foo=1".into(), "bar".into()];
        let l = MemoryLayout::plan(1024, 2, 16 * MIB, 0x400_0000, 0).unwrap();
        assert_eq!(l.node_bytes, 512 * MIB);
        let args = qemu_args(&s, Accel::Kvm, &l, &files(2), &FastBoot::default()).unwrap();
        assert_eq!(values(&args, "-machine"), ["q35"]);
        assert_eq!(values(&args, "-accel"), ["kvm"]);
        assert_eq!(values(&args, "-cpu"), ["host"]);
        assert_eq!(values(&args, "-m"), ["1024M"]);
        assert_eq!(
            values(&args, "-smp"),
            ["cpus=16,sockets=4,cores=2,threads=2"]
        );
        assert_eq!(
            values(&args, "-object"),
            [
                "memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/ktstr-7-3-node0.ram,share=on",
                "memory-backend-file,id=ram1,size=512M,mem-path=/dev/shm/ktstr-7-3-node1.ram,share=on",
            ]
        );
        assert_eq!(
            values(&args, "-numa"),
            [
                "node,nodeid=0,memdev=ram0",
                "node,nodeid=1,memdev=ram1",
                "cpu,node-id=0,socket-id=0",
                "cpu,node-id=0,socket-id=1",
                "cpu,node-id=1,socket-id=2",
                "cpu,node-id=1,socket-id=3",
                "dist,src=0,dst=1,val=20",
                "dist,src=1,dst=0,val=20",
            ]
        );
        // The region sits in the middle of node 0, not at the top of RAM.
        assert_eq!(l.shm_addr, 256 * MIB);
        assert_eq!(l.shm_addr % (2 * MIB), 0);
        assert_eq!(
            values(&args, "-append"),
            ["console=ttyS0 panic=-1 reboot=k nokaslr \
              memmap=16M$0x10000000 ktstr.shm=0x10000000,0x1000000 foo=1 bar"]
        );
    }

    #[test]
    fn icount_is_for_tcg_only() {
        let mut s = spec("1n1l2c1t", 512);
        let l = MemoryLayout::plan(512, 1, 16 * MIB, 0x400_0000, 0).unwrap();
        let plain = qemu_args(&s, Accel::Tcg, &l, &files(1), &FastBoot::default()).unwrap();
        assert!(values(&plain, "-icount").is_empty());
        s.icount = true;
        let args = qemu_args(&s, Accel::Tcg, &l, &files(1), &FastBoot::default()).unwrap();
        assert_eq!(values(&args, "-icount"), [ICOUNT]);
        let e = qemu_args(&s, Accel::Kvm, &l, &files(1), &FastBoot::default()).unwrap_err();
        assert!(e.to_string().contains("needs QEMU's TCG"), "{e}");
    }

    #[test]
    fn memmap_sizes_use_the_largest_exact_unit() {
        assert_eq!(mem_size(16 * MIB), "16M");
        assert_eq!(mem_size(1 << 30), "1G");
        assert_eq!(mem_size(68 * 1024), "68K");
        assert_eq!(mem_size(1000), "1000");
        let mut s = spec("1n1l1c1t", 512);
        s.shm_size = 68 * 1024;
        let l = MemoryLayout::plan(512, 1, s.shm_size, 0, 0).unwrap();
        let line = kernel_cmdline(&s, &l, &FastBoot::default());
        assert!(
            line.contains("memmap=68K$0x10000000 ktstr.shm=0x10000000,0x11000"),
            "{line}"
        );
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let s = spec("1n1l1c1t", 512);
        let l = MemoryLayout::plan(512, 1, 16 * MIB, 0, 0).unwrap();
        let f = QemuFiles::new(Path::new("/tmp/a,b"), Path::new("/dev/shm"), "k", 1);
        let args = qemu_args(&s, Accel::Tcg, &l, &f, &FastBoot::default()).unwrap();
        assert_eq!(
            values(&args, "-qmp"),
            ["unix:/tmp/a,,b/qmp.sock,server=on,wait=off"]
        );
    }

    #[test]
    fn what_qemu_would_refuse_is_refused_before_it_starts() {
        let t = |s: &str| s.parse::<Topology>().unwrap();
        // Every preset the gauntlet ships fits under TCG.
        assert_eq!(max_apic_id(&t("4n12l8c2t")), 191);
        assert!(check_limits(&t("4n12l8c2t"), Accel::Tcg).is_ok());
        assert_eq!(max_apic_id(&t("1n1l2c1t")), 1);
        assert_eq!(max_apic_id(&t("1n2l3c1t")), 6, "3 cores take 2 bits");
        // 10 LLCs of 12 cores (16 IDs) x 2 threads: 240 vCPUs, IDs to 311.
        let big = t("1n10l12c2t");
        assert_eq!(max_apic_id(&big), 311);
        let e = check_limits(&big, Accel::Tcg).unwrap_err().to_string();
        assert!(
            e.contains("APIC IDs up to 311") && e.contains("hardware KVM"),
            "{e}"
        );
        assert!(check_limits(&big, Accel::Kvm).is_ok());
    }

    #[test]
    fn node_count_mismatch_is_an_error() {
        let s = spec("2n2l1c1t", 512);
        let l = MemoryLayout::plan(512, 1, 16 * MIB, 0, 0).unwrap();
        assert!(qemu_args(&s, Accel::Tcg, &l, &files(1), &FastBoot::default()).is_err());
    }

    #[test]
    fn a_pvh_kernel_replaces_the_bzimage_and_user_words_come_last() {
        let mut s = spec("1n1l1c1t", 512);
        s.cmdline_extra = vec!["lpj=7".into()];
        let l = MemoryLayout::plan(512, 1, 16 * MIB, 0, 0).unwrap();
        let fast = FastBoot {
            pvh_kernel: Some("/cache/pvh/abc.vmlinux".into()),
            words: vec!["lpj=123".into(), "cryptomgr.notests".into()],
            pvh_skipped: None,
        };
        let args = qemu_args(&s, Accel::Tcg, &l, &files(1), &fast).unwrap();
        assert_eq!(values(&args, "-kernel"), ["/cache/pvh/abc.vmlinux"]);
        let line = &values(&args, "-append")[0];
        assert!(
            line.ends_with("lpj=123 cryptomgr.notests lpj=7"),
            "the user's own words override: {line}"
        );
    }
}
