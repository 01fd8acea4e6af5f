//! Independent check of the KVM backend's ACPI tables with ACPICA's `iasl`:
//! each table is disassembled (`iasl -d`), the disassembly must report no
//! checksum or structure problem and must show the values we meant, and
//! compiling the disassembly back (`iasl X.dsl`) must give the same bytes
//! (apart from the checksum and compiler ID/revision, which iasl rewrites).
//!
//! Skips, saying so, when `iasl` is not installed.

use std::path::Path;
use std::process::Command;

use ktstr_host::vm::kvm::acpi::{AcpiConfig, AcpiTables, build};
use ktstr_host::vm::kvm::layout::{ACPI_START, EBDA_START};
use ktstr_host::vm::kvm::topology::CpuTopology;

const MIB: u64 = 1 << 20;

fn iasl_installed() -> bool {
    ktstr_host::skip::tool("iasl", "acpica-tools")
}

/// One disassembled table: `name : value` fields in order, split into the
/// part before the first subtable and one group per subtable.
struct Dsl {
    text: String,
    groups: Vec<Vec<(String, String)>>,
}

impl Dsl {
    fn parse(text: String) -> Self {
        let mut groups = vec![Vec::new()];
        for line in text.lines() {
            if line.starts_with("Raw Table Data") {
                break;
            }
            // "[02Ch 0044   1]   Subtable Type : 09 [...]" or a decoded flag
            // line "      Processor Enabled : 1".
            let body = line.split_once("] ").map_or(line, |(_, b)| b);
            let Some((name, value)) = body.split_once(" : ") else {
                continue;
            };
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            if name == "Subtable Type" {
                groups.push(Vec::new());
            }
            groups.last_mut().unwrap().push((name, value));
        }
        Self { text, groups }
    }

    fn header(&self) -> &[(String, String)] {
        &self.groups[0]
    }

    fn subtables(&self) -> &[Vec<(String, String)>] {
        &self.groups[1..]
    }
}

/// The value of the first field called `name`.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {name:?} in {fields:?}"))
}

/// The leading hex number of a field value ("000001B1", "01 [SystemIO]").
fn hex(value: &str) -> u64 {
    let tok = value.split_whitespace().next().unwrap_or("");
    u64::from_str_radix(tok, 16).unwrap_or_else(|_| panic!("{value:?} is not hex"))
}

/// Disassembles `bytes` as `dir/name.dat`, checks iasl's verdict, compiles
/// the result back and compares, and returns the disassembly.
fn iasl(dir: &Path, name: &str, bytes: &[u8]) -> Dsl {
    std::fs::write(dir.join(format!("{name}.dat")), bytes).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("iasl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl {args:?} failed:\n{log}");
        for bad in ["Incorrect", "Warning", "Error", "Invalid"] {
            let clean = log
                .lines()
                .all(|l| !l.contains(bad) || l.contains(" 0 Errors, 0 Warnings"));
            assert!(clean, "iasl {args:?} reports {bad}:\n{log}");
        }
        log
    };
    run(&["-d", &format!("{name}.dat")]);
    let text = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
    for bad in ["Incorrect", "Invalid", "Unknown", "**** "] {
        assert!(!text.contains(bad), "{name}.dsl contains {bad:?}:\n{text}");
    }
    let log = run(&[&format!("{name}.dsl")]);
    assert!(log.contains("Compilation successful"), "{log}");
    let again = std::fs::read(dir.join(format!("{name}.aml"))).unwrap();
    // Checksum (byte 9) and compiler ID/revision (28..36) are iasl's own.
    let strip = |b: &[u8]| [&b[..9], &b[10..28], &b[36..]].concat();
    assert_eq!(
        strip(&again),
        strip(bytes),
        "{name}: iasl re-encodes differently"
    );
    Dsl::parse(text)
}

/// 256 MiB per node; node 0 also has the RAM below the EBDA.
fn node_memory(nodes: u64) -> Vec<Vec<(u64, u64)>> {
    (0..nodes)
        .map(|n| {
            let mut ranges = vec![(256 * MIB * (n + 1), 256 * MIB)];
            if n == 0 {
                ranges.insert(0, (0, EBDA_START));
            }
            ranges
        })
        .collect()
}

fn tables(cpus: &CpuTopology, distances: Vec<Vec<u32>>) -> AcpiTables {
    let cfg = AcpiConfig {
        cpus,
        node_memory: node_memory(u64::from(cpus.topology.numa_nodes)),
        distances,
    };
    build(&cfg, ACPI_START).unwrap()
}

fn check_madt(dsl: &Dsl, cpus: &CpuTopology) {
    let h = dsl.header();
    assert_eq!(field(h, "Local Apic Address"), "FEE00000");
    assert_eq!(field(h, "PC-AT Compatibility"), "1");
    let subs = dsl.subtables();
    let kind = |s: &Vec<(String, String)>| field(s, "Subtable Type").to_string();
    assert_eq!(kind(&subs[0]), "01 [I/O APIC]");
    assert_eq!(field(&subs[0], "Address"), "FEC00000");
    assert_eq!(kind(&subs[1]), "02 [Interrupt Source Override]");
    assert_eq!(hex(field(&subs[1], "Source")), 0);
    assert_eq!(hex(field(&subs[1], "Interrupt")), 2);
    let n = cpus.vcpus.len();
    let procs = &subs[2..2 + n];
    let x2 = cpus.needs_x2apic();
    let (want_kind, id_field, uid_field) = if x2 {
        (
            "09 [Processor Local x2APIC]",
            "Processor x2Apic ID",
            "Processor UID",
        )
    } else {
        ("00 [Processor Local APIC]", "Local Apic ID", "Processor ID")
    };
    let count = |k: &str| subs.iter().filter(|s| kind(s) == k).count();
    assert_eq!(count(want_kind), n);
    assert_eq!(
        count("00 [Processor Local APIC]") + count("09 [Processor Local x2APIC]"),
        n
    );
    for (s, v) in procs.iter().zip(&cpus.vcpus) {
        assert_eq!(kind(s), want_kind);
        assert_eq!(
            hex(field(s, id_field)),
            u64::from(v.apic_id),
            "vCPU {}",
            v.index
        );
        assert_eq!(hex(field(s, uid_field)), u64::from(v.index));
        assert_eq!(field(s, "Processor Enabled"), "1");
    }
    let nmi = &subs[2 + n];
    assert_eq!(subs.len(), 3 + n);
    if x2 {
        assert_eq!(kind(nmi), "0A [Local x2APIC NMI]");
        assert_eq!(field(nmi, "Processor UID"), "FFFFFFFF");
    } else {
        assert_eq!(kind(nmi), "04 [Local APIC NMI]");
        assert_eq!(field(nmi, "Processor ID"), "FF");
    }
    assert_eq!(hex(field(nmi, "Interrupt Input LINT")), 1);
}

fn check_srat(dsl: &Dsl, cpus: &CpuTopology) {
    let subs = dsl.subtables();
    let n = cpus.vcpus.len();
    for (s, v) in subs[..n].iter().zip(&cpus.vcpus) {
        if cpus.needs_x2apic() {
            assert_eq!(
                field(s, "Subtable Type"),
                "02 [Processor Local x2APIC Affinity]"
            );
            assert_eq!(hex(field(s, "Proximity Domain")), u64::from(v.node));
        } else {
            assert_eq!(
                field(s, "Subtable Type"),
                "00 [Processor Local APIC/SAPIC Affinity]"
            );
            assert_eq!(hex(field(s, "Proximity Domain Low(8)")), u64::from(v.node));
            assert_eq!(hex(field(s, "Proximity Domain High(24)")), 0);
        }
        assert_eq!(
            hex(field(s, "Apic ID")),
            u64::from(v.apic_id),
            "vCPU {}",
            v.index
        );
        assert_eq!(field(s, "Enabled"), "1");
    }
    let ranges: Vec<(u64, u64, u64)> = subs[n..]
        .iter()
        .map(|s| {
            assert_eq!(field(s, "Subtable Type"), "01 [Memory Affinity]");
            assert_eq!(field(s, "Enabled"), "1");
            (
                hex(field(s, "Proximity Domain")),
                hex(field(s, "Base Address")),
                hex(field(s, "Address Length")),
            )
        })
        .collect();
    let want: Vec<(u64, u64, u64)> = node_memory(u64::from(cpus.topology.numa_nodes))
        .iter()
        .enumerate()
        .flat_map(|(node, r)| r.iter().map(move |&(b, s)| (node as u64, b, s)))
        .collect();
    assert_eq!(ranges, want);
}

fn check_slit(dsl: &Dsl, distances: &[Vec<u32>]) {
    let h = dsl.header();
    assert_eq!(hex(field(h, "Localities")), distances.len() as u64);
    for (i, row) in distances.iter().enumerate() {
        let want: Vec<String> = row.iter().map(|d| format!("{d:02X}")).collect();
        assert_eq!(field(h, &format!("Locality {i:>3}")), want.join(" "));
    }
}

fn check_fadt(dsl: &Dsl, t: &AcpiTables) {
    let h = dsl.header();
    assert_eq!(field(h, "Revision"), "06");
    assert_eq!(field(h, "FADT Minor Revision"), "05");
    assert_eq!(field(h, "Hardware Reduced (V5)"), "1");
    assert_eq!(field(h, "Reset Register Supported (V2)"), "1");
    assert_eq!(field(h, "VGA Not Present (V4)"), "1");
    assert_eq!(field(h, "MSI Not Supported (V4)"), "0");
    assert_eq!(field(h, "Value to cause reset"), "01");
    let after = |name: &str| {
        let at = h.iter().position(|(n, _)| n == name).unwrap();
        (
            field(&h[at..], "Space ID").to_string(),
            hex(field(&h[at..], "Address")),
        )
    };
    assert_eq!(
        after("Reset Register"),
        ("01 [SystemIO]".to_string(), 0x3c1)
    );
    assert_eq!(
        after("Sleep Control Register"),
        ("01 [SystemIO]".to_string(), 0x3c0)
    );
    assert_eq!(
        after("Sleep Status Register"),
        ("01 [SystemIO]".to_string(), 0x3c0)
    );
    let dsdt = t.tables.iter().find(|(s, ..)| s == "DSDT").unwrap().1;
    let dsdt_fields: Vec<u64> = h
        .iter()
        .filter(|(n, _)| n == "DSDT Address")
        .map(|(_, v)| hex(v))
        .collect();
    assert_eq!(dsdt_fields, [0, dsdt], "32-bit DSDT unused, X_DSDT set");
}

fn check_xsdt(dsl: &Dsl, t: &AcpiTables) {
    let want: Vec<u64> = ["FACP", "APIC", "SRAT", "SLIT"]
        .iter()
        .map(|s| t.tables.iter().find(|(n, ..)| n == s).unwrap().1)
        .collect();
    let got: Vec<u64> = (0..4)
        .map(|i| hex(field(dsl.header(), &format!("ACPI Table Address {i:>3}"))))
        .collect();
    assert_eq!(got, want);
}

fn check_dsdt(dsl: &Dsl) {
    let squeezed: String = dsl.text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        squeezed.contains("Name (_S5, Package (0x02) // _S5_: S5 System State { 0x05, Zero })"),
        "{}",
        dsl.text
    );
    assert!(squeezed.contains("Device (_SB.COM1)"));
    assert!(squeezed.contains("EisaId (\"PNP0501\")"));
    assert!(squeezed.contains("IO (Decode16, 0x03F8, // Range Minimum 0x03F8, // Range Maximum"));
    assert!(squeezed.contains(
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000004, }"
    ));
}

fn check_topology(topo: &str, distances: Option<Vec<Vec<u32>>>) {
    let cpus = CpuTopology::new(topo.parse().unwrap()).unwrap();
    let distances = distances.unwrap_or_else(|| cpus.topology.distances());
    let t = tables(&cpus, distances.clone());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = |s: &str| t.table(s).unwrap();
    check_madt(&iasl(d, "apic", table("APIC")), &cpus);
    check_srat(&iasl(d, "srat", table("SRAT")), &cpus);
    check_slit(&iasl(d, "slit", table("SLIT")), &distances);
    check_fadt(&iasl(d, "facp", table("FACP")), &t);
    check_xsdt(&iasl(d, "xsdt", table("XSDT")), &t);
    check_dsdt(&iasl(d, "dsdt", table("DSDT")));
    println!(
        "{topo}: {} vCPUs, {} bytes of tables ({}), iasl agrees",
        cpus.vcpus.len(),
        t.bytes.len(),
        t.tables
            .iter()
            .map(|(s, _, l)| format!("{} {l}", s.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn four_cpus_xapic() {
    if iasl_installed() {
        check_topology("1n1l4c1t", None);
    }
}

#[test]
fn smt_and_two_llcs() {
    if iasl_installed() {
        check_topology("1n2l2c2t", None);
    }
}

#[test]
fn two_nodes() {
    if iasl_installed() {
        check_topology("2n4l2c2t", Some(vec![vec![10, 21], vec![21, 10]]));
    }
}

#[test]
fn x2apic_ids_above_254() {
    if iasl_installed() {
        check_topology("1n14l9c2t", None);
    }
}

#[test]
fn four_nodes_asymmetric_distances() {
    if iasl_installed() {
        let d = vec![
            vec![10, 16, 22, 28],
            vec![16, 10, 16, 22],
            vec![22, 17, 10, 16],
            vec![28, 22, 16, 10],
        ];
        check_topology("4n4l2c1t", Some(d));
    }
}

#[test]
fn harness_catches_a_bad_checksum() {
    if iasl_installed() {
        let cpus = CpuTopology::new("1n1l1c1t".parse().unwrap()).unwrap();
        let t = tables(&cpus, cpus.topology.distances());
        let mut slit = t.table("SLIT").unwrap().to_vec();
        slit[9] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        let caught = std::panic::catch_unwind(|| iasl(dir.path(), "slit", &slit));
        assert!(caught.is_err(), "iasl accepted a wrong checksum");
    }
}
