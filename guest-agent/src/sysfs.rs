//! Reads the CPU topology the guest kernel reports in sysfs: online CPUs,
//! last-level cache groups, SMT siblings, NUMA nodes and distances.
//!
//! Takes the sysfs root as a parameter so tests can point it at a fake tree.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::ObservedTopology;

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
                if a > b || b - a > 65536 {
                    bail!("bad CPU range {part:?}");
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(|| format!("bad CPU {part:?}"))?),
        }
    }
    Ok(out)
}

/// Formats CPUs as a kernel CPU list (`0-3,8`).
pub fn format_cpu_list(cpus: impl IntoIterator<Item = usize>) -> String {
    let set: BTreeSet<usize> = cpus.into_iter().collect();
    let mut parts = Vec::new();
    let mut iter = set.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The cache index directory describing the last-level cache of `cpu`: the
/// highest-level unified or data cache.
fn llc_shared_list(cpu_dir: &Path) -> Result<Option<String>> {
    let cache = cpu_dir.join("cache");
    let Ok(entries) = fs::read_dir(&cache) else {
        return Ok(None);
    };
    let mut best: Option<(u32, String)> = None;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("index") {
            continue;
        }
        let dir = e.path();
        let level: u32 = read(&dir.join("level"))?.trim().parse()?;
        let kind = read(&dir.join("type"))?;
        if kind.trim() == "Instruction" {
            continue;
        }
        if best.as_ref().is_none_or(|(l, _)| level > *l) {
            best = Some((level, read(&dir.join("shared_cpu_list"))?));
        }
    }
    Ok(best.map(|(_, list)| list))
}

fn group_insert(groups: &mut Vec<Vec<u32>>, group: Vec<u32>) {
    if !groups.contains(&group) {
        groups.push(group);
    }
}

/// Reads the topology under `sys` (normally `/sys`).
pub fn observe(sys: &Path) -> Result<ObservedTopology> {
    let cpu_root = sys.join("devices/system/cpu");
    let online = parse_cpu_list(&read(&cpu_root.join("online"))?)?;
    let mut llcs = Vec::new();
    let mut cores = Vec::new();
    for cpu in &online {
        let dir = cpu_root.join(format!("cpu{cpu}"));
        let siblings = parse_cpu_list(&read(&dir.join("topology/thread_siblings_list"))?)?;
        group_insert(&mut cores, siblings);
        let llc = match llc_shared_list(&dir)? {
            Some(list) => parse_cpu_list(&list)?,
            None => parse_cpu_list(&read(&dir.join("topology/package_cpus_list"))?)?,
        };
        group_insert(&mut llcs, llc);
    }
    let mut nodes: Vec<(u32, Vec<u32>)> = Vec::new();
    let node_root = sys.join("devices/system/node");
    if let Ok(entries) = fs::read_dir(&node_root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let cpus = parse_cpu_list(&read(&e.path().join("cpulist"))?)?;
            nodes.push((id, cpus));
        }
    }
    nodes.sort();
    let mut distances = Vec::new();
    for (id, _) in &nodes {
        let text = read(&node_root.join(format!("node{id}/distance")))?;
        let row: Vec<u32> = text
            .split_whitespace()
            .map(|d| d.parse().context("bad node distance"))
            .collect::<Result<_>>()?;
        distances.push(row);
    }
    if nodes.is_empty() {
        nodes.push((0, online.clone()));
        distances.push(vec![10]);
    }
    let numa_nodes = nodes
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| !c.is_empty())
        .collect();
    llcs.sort();
    cores.sort();
    Ok(ObservedTopology {
        online_cpus: online,
        llcs,
        cores,
        numa_nodes,
        distances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<u32>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(format_cpu_list([0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_list([5]), "5");
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn fake_two_node_smt_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "devices/system/cpu/online", "0-7\n");
        for cpu in 0..8u32 {
            let base = format!("devices/system/cpu/cpu{cpu}");
            let core = cpu / 2;
            write(
                root,
                &format!("{base}/topology/thread_siblings_list"),
                &format!("{}-{}\n", core * 2, core * 2 + 1),
            );
            let llc = cpu / 4;
            for (idx, level, kind, list) in [
                (0, 1, "Data", format!("{}-{}", core * 2, core * 2 + 1)),
                (
                    1,
                    1,
                    "Instruction",
                    format!("{}-{}", core * 2, core * 2 + 1),
                ),
                (2, 2, "Unified", format!("{}-{}", core * 2, core * 2 + 1)),
                (3, 3, "Unified", format!("{}-{}", llc * 4, llc * 4 + 3)),
            ] {
                let c = format!("{base}/cache/index{idx}");
                write(root, &format!("{c}/level"), &format!("{level}\n"));
                write(root, &format!("{c}/type"), &format!("{kind}\n"));
                write(root, &format!("{c}/shared_cpu_list"), &format!("{list}\n"));
            }
        }
        write(root, "devices/system/node/node0/cpulist", "0-3\n");
        write(root, "devices/system/node/node0/distance", "10 20\n");
        write(root, "devices/system/node/node1/cpulist", "4-7\n");
        write(root, "devices/system/node/node1/distance", "20 10\n");
        let t = observe(root).unwrap();
        assert_eq!(t.online_cpus, (0..8).collect::<Vec<_>>());
        assert_eq!(t.llcs, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(t.cores.len(), 4);
        assert_eq!(t.distances, vec![vec![10, 20], vec![20, 10]]);
        assert!(t.diff(&"2n2l2c2t".parse().unwrap()).is_empty());
    }

    #[test]
    fn this_machine_parses() {
        // The host running the tests has a real sysfs; it must parse.
        if !Path::new("/sys/devices/system/cpu/online").exists() {
            eprintln!("SKIP: no sysfs here");
            return;
        }
        let t = observe(Path::new("/sys")).unwrap();
        assert!(!t.online_cpus.is_empty());
        assert!(!t.llcs.is_empty());
    }
}
