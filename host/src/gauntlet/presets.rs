//! The gauntlet's topology presets: named machine shapes from 4 to 252
//! vCPUs, and choosing the ones a sweep runs (by name or topology, and by
//! what this host can boot in reasonable time).

use ktstr_protocol::model::Topology;
use thiserror::Error;

/// A named topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: String,
    pub topology: Topology,
}

/// The presets, smallest first: (name, `NnLlCcTt`).
pub const PRESETS: &[(&str, &str)] = &[
    ("tiny-1llc", "1n1l4c1t"),
    ("tiny-2llc", "1n2l2c1t"),
    ("smt-2llc", "1n2l2c2t"),
    ("odd-3llc", "1n3l3c1t"),
    ("smt-3llc", "1n3l2c2t"),
    ("odd-7llc", "1n7l2c1t"),
    ("odd-5llc", "1n5l3c1t"),
    ("numa2-4llc", "2n4l4c1t"),
    ("medium-4llc", "1n4l4c2t"),
    ("numa4-8llc", "4n8l4c1t"),
    ("medium-8llc", "1n8l4c2t"),
    ("large-4llc", "1n4l16c2t"),
    ("large-8llc", "1n8l8c2t"),
    ("numa2-8llc", "2n8l8c2t"),
    ("numa4-12llc", "4n12l8c2t"),
    ("near-max-llc", "1n15l8c2t"),
    ("max-cpu", "1n14l9c2t"),
];

/// Why a preset selection cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PresetError {
    #[error("{0:?} is neither a preset ({known}) nor a topology (NnLlCcTt): {1}", known = names())]
    Unknown(String, String),
    #[error("--presets names no preset")]
    Empty,
    #[error(
        "no preset fits: every one has more than {max_cpus} vCPUs or needs more than \
         {memory_mib} MiB (raise --max-cpus, or name presets with --presets)"
    )]
    NoneFit { max_cpus: u32, memory_mib: u64 },
}

/// The preset names, comma separated.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn preset(name: &str, topo: &str) -> Preset {
    Preset {
        name: name.to_string(),
        // The table above is ours and parses; a test checks every row.
        topology: topo
            .parse()
            .unwrap_or_else(|e| panic!("preset {name}: {e}")),
    }
}

/// Every preset.
pub fn all() -> Vec<Preset> {
    PRESETS.iter().map(|(n, t)| preset(n, t)).collect()
}

/// The memory a guest of `topo` gets by default (as `VmSpec::new` sizes it).
pub fn guest_memory_mib(topo: &Topology) -> u64 {
    (512 + 64 * u64::from(topo.total_cpus())).clamp(512, 2048)
}

/// The presets a sweep runs: the ones `selection` names (preset names or
/// topologies, comma separated; a topology is its own preset, named after
/// itself), or by default every preset with at most `max_cpus` vCPUs whose
/// guest fits in `memory_mib`.
pub fn choose(
    selection: Option<&str>,
    max_cpus: u32,
    memory_mib: u64,
) -> Result<Vec<Preset>, PresetError> {
    if let Some(sel) = selection {
        let mut out: Vec<Preset> = Vec::new();
        for part in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p = match PRESETS.iter().find(|(n, _)| *n == part) {
                Some((n, t)) => preset(n, t),
                None => Preset {
                    name: part.to_string(),
                    topology: part
                        .parse()
                        .map_err(|e: ktstr_protocol::model::TopologyError| {
                            PresetError::Unknown(part.to_string(), e.to_string())
                        })?,
                },
            };
            if !out.iter().any(|q| q.name == p.name) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(PresetError::Empty);
        }
        return Ok(out);
    }
    let fit: Vec<Preset> = all()
        .into_iter()
        .filter(|p| {
            p.topology.total_cpus() <= max_cpus && guest_memory_mib(&p.topology) <= memory_mib
        })
        .collect();
    if fit.is_empty() {
        return Err(PresetError::NoneFit {
            max_cpus,
            memory_mib,
        });
    }
    Ok(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_they_grow() {
        let all = all();
        assert_eq!(all.len(), PRESETS.len());
        let cpus: Vec<u32> = all.iter().map(|p| p.topology.total_cpus()).collect();
        assert_eq!(cpus.first(), Some(&4));
        assert_eq!(cpus.iter().max(), Some(&252));
        assert!(cpus.windows(2).all(|w| w[0] <= w[1]), "{cpus:?}");
    }

    #[test]
    fn choosing_by_name_topology_and_capacity() {
        let p = choose(Some("tiny-2llc, 2n2l1c1t,tiny-2llc"), 8, 4096).unwrap();
        assert_eq!(p.len(), 2, "duplicates dropped");
        assert_eq!(p[0].topology.to_string(), "1n2l2c1t");
        assert_eq!(p[1].name, "2n2l1c1t");
        assert_eq!(choose(Some(" , "), 8, 4096), Err(PresetError::Empty));
        assert!(matches!(
            choose(Some("huge"), 8, 4096),
            Err(PresetError::Unknown(..))
        ));
        let small = choose(None, 8, 4096).unwrap();
        assert!(small.iter().all(|p| p.topology.total_cpus() <= 8));
        assert!(small.iter().any(|p| p.name == "smt-2llc"));
        assert!(matches!(
            choose(None, 2, 4096),
            Err(PresetError::NoneFit { .. })
        ));
    }
}
