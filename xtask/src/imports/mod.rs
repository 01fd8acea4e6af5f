//! Import-cycle check: within one crate, no source file may depend on a file
//! that (directly or through others) depends back on it.
//!
//! A file depends on another when one of its private `use` declarations, or
//! a path written out in its code (`crate::x::Y`, `super::Y`, `child::Y`),
//! names an item defined there. Re-exports (`pub use`) are a module's facade,
//! not a dependency, so they add no edge; resolution follows them to the
//! file that defines the item. Test code (`#[cfg(test)]` items and test
//! modules) is left out: a test may use what it tests.
//!
//! This module reads source files only; it builds nothing and needs no
//! compiler. Paths hidden in macro bodies are found by a token scan for
//! `crate ::`, `super ::` and `self ::` sequences.

mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use model::Crate;
pub use model::Edge;

/// A set of files that depend on each other, with the edges between them.
#[derive(Debug)]
pub struct Cycle {
    pub files: Vec<PathBuf>,
    pub edges: Vec<Edge>,
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles_in(edges: &[Edge]) -> Vec<Cycle> {
    let mut nodes: BTreeMap<&Path, usize> = BTreeMap::new();
    for e in edges {
        let n = nodes.len();
        nodes.entry(&e.from).or_insert(n);
        let n = nodes.len();
        nodes.entry(&e.to).or_insert(n);
    }
    let names: Vec<&Path> = {
        let mut v = vec![Path::new(""); nodes.len()];
        for (p, i) in &nodes {
            v[*i] = p;
        }
        v
    };
    let mut adj = vec![Vec::new(); nodes.len()];
    for e in edges {
        adj[nodes[e.from.as_path()]].push(nodes[e.to.as_path()]);
    }
    struct Tarjan<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adj[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.out.push(comp);
                }
            }
        }
    }
    let n = nodes.len();
    let mut t = Tarjan {
        adj: &adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out
        .into_iter()
        .map(|comp| {
            let set: BTreeSet<usize> = comp.iter().copied().collect();
            let mut files: Vec<PathBuf> = comp.iter().map(|&i| names[i].to_path_buf()).collect();
            files.sort();
            let edges = edges
                .iter()
                .filter(|e| {
                    set.contains(&nodes[e.from.as_path()]) && set.contains(&nodes[e.to.as_path()])
                })
                .cloned()
                .collect();
            Cycle { files, edges }
        })
        .collect()
}

/// Import cycles among the files of the crate whose root is `root_file`
/// (`src/lib.rs` or `src/main.rs`).
pub fn crate_cycles(root_file: &Path) -> Result<Vec<Cycle>> {
    let krate = Crate::load(root_file)?;
    Ok(cycles_in(&krate.edges()))
}

/// The crate roots of the workspace at `root`: every `src/lib.rs`,
/// `src/main.rs` and `src/bin/*.rs` of its member crates.
pub fn workspace_roots(root: &Path) -> Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for member in ["", "protocol", "host", "guest-agent", "initramfs", "xtask"] {
        let src = root.join(member).join("src");
        for f in ["lib.rs", "main.rs"] {
            if src.join(f).exists() {
                roots.push(src.join(f));
            }
        }
    }
    if roots.is_empty() {
        bail!("no crate roots under {}", root.display());
    }
    Ok(roots)
}

/// Renders cycles for a person, with paths relative to `root`.
pub fn describe(root: &Path, cycles: &[Cycle]) -> String {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut s = String::new();
    for c in cycles {
        let files: Vec<String> = c.files.iter().map(|f| rel(f)).collect();
        s.push_str(&format!("cycle: {}\n", files.join(" <-> ")));
        for e in &c.edges {
            s.push_str(&format!(
                "    {}:{} uses {} (defined in {})\n",
                rel(&e.from),
                e.line,
                e.path,
                rel(&e.to)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests;
