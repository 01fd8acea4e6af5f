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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module path inside one crate; the root is the empty vector.
type ModPath = Vec<String>;

/// What one module (a file, or an inline module inside it) declares.
#[derive(Default)]
struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
    /// Names defined here (types, functions, constants, macros, traits).
    items: BTreeSet<String>,
    /// Every `use` here, public or not: name -> absolute path it imports.
    imports: BTreeMap<String, Vec<String>>,
    /// Targets of `use x::*`.
    globs: Vec<Vec<String>>,
    /// Paths this module depends on, with the line they appear on: private
    /// `use`s and paths written in code (relative, not yet resolved).
    refs: Vec<(Vec<String>, usize)>,
}

/// One dependency edge that closes a cycle, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: PathBuf,
    pub line: usize,
    pub to: PathBuf,
    pub path: String,
}

/// A set of files that depend on each other, with the edges between them.
#[derive(Debug)]
pub struct Cycle {
    pub files: Vec<PathBuf>,
    pub edges: Vec<Edge>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn is_pub(vis: &syn::Visibility) -> bool {
    !matches!(vis, syn::Visibility::Inherited)
}

/// Walks a `use` tree, calling `f(name_bound, absolute_path, is_glob)`.
fn flatten_use(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    f: &mut impl FnMut(String, &[String], bool),
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(&p.tree, prefix, f);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                if let Some(last) = prefix.last().cloned() {
                    f(last, prefix, false);
                }
            } else {
                prefix.push(name.clone());
                f(name, prefix, false);
                prefix.pop();
            }
        }
        syn::UseTree::Rename(r) => {
            prefix.push(r.ident.to_string());
            f(r.rename.to_string(), prefix, false);
            prefix.pop();
        }
        syn::UseTree::Glob(_) => f(String::new(), prefix, true),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(t, prefix, f);
            }
        }
    }
}

/// Collects the paths written in code, skipping test-only items.
struct PathCollector {
    paths: Vec<(Vec<String>, usize)>,
}

impl PathCollector {
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            if let TokenTree::Group(g) = &trees[i] {
                self.scan_tokens(g.stream());
                i += 1;
                continue;
            }
            let start = match &trees[i] {
                TokenTree::Ident(id)
                    if ["crate", "super", "self"].contains(&id.to_string().as_str()) =>
                {
                    id
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            let line = start.span().start().line;
            let mut segs = vec![start.to_string()];
            let mut j = i + 1;
            // `::` is two Punct tokens followed by an identifier.
            loop {
                match (trees.get(j), trees.get(j + 1), trees.get(j + 2)) {
                    (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(id)),
                    ) if a.as_char() == ':' && b.as_char() == ':' => {
                        segs.push(id.to_string());
                        j += 3;
                    }
                    _ => break,
                }
            }
            if segs.len() > 1 {
                self.paths.push((segs, line));
            }
            i = j.max(i + 1);
        }
    }
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Use(_) => return, // handled by the module walk
            _ => return syn::visit::visit_item(self, item),
        };
        if is_cfg_test(attrs) {
            return;
        }
        if let syn::Item::Mod(_) = item {
            return; // inline modules are walked as modules of their own
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = p.segments[0].ident.span().start().line;
            self.paths.push((segs, line));
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.scan_tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The modules of one crate, keyed by module path.
struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

impl Crate {
    fn load(root_file: &Path) -> Result<Self> {
        let mut krate = Crate {
            modules: BTreeMap::new(),
        };
        let dir = root_file.parent().context("crate root has no directory")?;
        krate.load_file(root_file, dir, Vec::new())?;
        Ok(krate)
    }

    /// Loads `file` as module `path`; `child_dir` is where its `mod x;`
    /// children live.
    fn load_file(&mut self, file: &Path, child_dir: &Path, path: ModPath) -> Result<()> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        self.load_items(file, child_dir, path, &ast.items)
    }

    fn load_items(
        &mut self,
        file: &Path,
        child_dir: &Path,
        path: ModPath,
        items: &[syn::Item],
    ) -> Result<()> {
        let mut module = Module {
            file: file.to_path_buf(),
            ..Default::default()
        };
        let mut pending: Vec<(String, Option<Vec<syn::Item>>)> = Vec::new();
        let mut collector = PathCollector { paths: Vec::new() };
        for item in items {
            let (ident, attrs) = match item {
                syn::Item::Const(i) => (Some(&i.ident), &i.attrs),
                syn::Item::Enum(i) => (Some(&i.ident), &i.attrs),
                syn::Item::Fn(i) => (Some(&i.sig.ident), &i.attrs),
                syn::Item::Static(i) => (Some(&i.ident), &i.attrs),
                syn::Item::Struct(i) => (Some(&i.ident), &i.attrs),
                syn::Item::Trait(i) => (Some(&i.ident), &i.attrs),
                syn::Item::Type(i) => (Some(&i.ident), &i.attrs),
                syn::Item::Union(i) => (Some(&i.ident), &i.attrs),
                syn::Item::Macro(i) => (i.ident.as_ref(), &i.attrs),
                syn::Item::Mod(i) => (None, &i.attrs),
                syn::Item::Use(i) => (None, &i.attrs),
                syn::Item::Impl(i) => (None, &i.attrs),
                _ => (None, &Vec::new()),
            };
            if is_cfg_test(attrs) {
                continue;
            }
            if let Some(id) = ident {
                module.items.insert(id.to_string());
            }
            match item {
                syn::Item::Mod(m) => {
                    let name = m.ident.to_string();
                    module.children.insert(name.clone());
                    pending.push((name, m.content.as_ref().map(|(_, items)| items.clone())));
                }
                syn::Item::Use(u) => {
                    let public = is_pub(&u.vis);
                    let line = u.use_token.span.start().line;
                    let mut prefix = Vec::new();
                    flatten_use(&u.tree, &mut prefix, &mut |name, full, glob| {
                        if glob {
                            module.globs.push(full.to_vec());
                        } else {
                            module.imports.insert(name, full.to_vec());
                        }
                        if !public {
                            module.refs.push((full.to_vec(), line));
                        }
                    });
                }
                _ => collector.visit_item(item),
            }
        }
        module.refs.extend(collector.paths);
        self.modules.insert(path.clone(), module);
        for (name, inline) in pending {
            let mut child = path.clone();
            child.push(name.clone());
            match inline {
                Some(items) => {
                    self.load_items(file, &child_dir.join(&name), child, &items)?;
                }
                None => {
                    let flat = child_dir.join(format!("{name}.rs"));
                    let nested = child_dir.join(&name).join("mod.rs");
                    if flat.exists() {
                        self.load_file(&flat, &child_dir.join(&name), child)?;
                    } else if nested.exists() {
                        self.load_file(&nested, &child_dir.join(&name), child)?;
                    } else {
                        bail!("module {name} of {} has no file", file.display());
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns a path written in module `at` into an absolute one, or `None`
    /// when it leaves the crate (std, another crate, a local variable).
    fn absolute(&self, at: &ModPath, segs: &[String]) -> Option<Vec<String>> {
        self.absolute_depth(at, segs, 0)
    }

    fn absolute_depth(&self, at: &ModPath, segs: &[String], depth: usize) -> Option<Vec<String>> {
        let first = segs.first()?;
        if depth > 16 {
            return None;
        }
        let module = self.modules.get(at)?;
        match first.as_str() {
            "crate" => Some(segs[1..].to_vec()),
            "self" => {
                let mut out = at.clone();
                out.extend_from_slice(&segs[1..]);
                Some(out)
            }
            "super" => {
                let mut base = at.clone();
                let mut rest = segs;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                base.extend_from_slice(rest);
                Some(base)
            }
            _ if module.children.contains(first) => {
                let mut out = at.clone();
                out.extend_from_slice(segs);
                Some(out)
            }
            _ => {
                let imported = module.imports.get(first)?;
                if imported.len() == 1 && imported[0] == *first {
                    return None; // `use some_crate;`
                }
                let mut full = self.absolute_depth(at, imported, depth + 1)?;
                full.extend_from_slice(&segs[1..]);
                Some(full)
            }
        }
    }

    /// The module that defines the item an absolute path names.
    fn defining_module(&self, abs: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 {
            return None;
        }
        let mut module: ModPath = Vec::new();
        let mut i = 0;
        while i < abs.len() && self.modules[&module].children.contains(&abs[i]) {
            module.push(abs[i].clone());
            i += 1;
        }
        let Some(item) = abs.get(i) else {
            return Some(module); // the path names a module itself
        };
        let m = &self.modules[&module];
        if m.items.contains(item) {
            return Some(module);
        }
        if let Some(target) = m.imports.get(item) {
            if let Some(t) = self.absolute(&module, target) {
                let mut t = t;
                t.extend_from_slice(&abs[i + 1..]);
                return self.defining_module(&t, depth + 1).or(Some(module));
            }
            return Some(module);
        }
        for glob in &m.globs {
            if let Some(mut t) = self.absolute(&module, glob) {
                t.extend_from_slice(&abs[i..]);
                if let Some(found) = self.defining_module(&t, depth + 1) {
                    if self.modules[&found].items.contains(item) {
                        return Some(found);
                    }
                }
            }
        }
        Some(module)
    }

    /// Every file-to-file dependency, one edge per (from, to) pair.
    fn edges(&self) -> Vec<Edge> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (at, module) in &self.modules {
            for (segs, line) in &module.refs {
                let Some(abs) = self.absolute(at, segs) else {
                    continue;
                };
                let Some(def) = self.defining_module(&abs, 0) else {
                    continue;
                };
                let to = &self.modules[&def].file;
                if *to != module.file && seen.insert((module.file.clone(), to.clone())) {
                    out.push(Edge {
                        from: module.file.clone(),
                        line: *line,
                        to: to.clone(),
                        path: segs.join("::"),
                    });
                }
            }
        }
        out
    }
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
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ktstr-imports-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn finds_a_cycle_through_use_and_inline_paths() {
        let d = tmp("cycle");
        write(&d, "src/lib.rs", "mod a;\nmod b;\nmod c;\n");
        write(&d, "src/a.rs", "use crate::b::B;\npub struct A;\n");
        write(
            &d,
            "src/b.rs",
            "pub struct B;\nfn f() { let _ = crate::c::make(); }\n",
        );
        write(&d, "src/c.rs", "pub fn make() -> super::a::A { todo!() }\n");
        let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
        assert_eq!(cycles.len(), 1, "{}", describe(&d, &cycles));
        assert_eq!(cycles[0].files.len(), 3);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reexports_and_tests_add_no_edges() {
        let d = tmp("facade");
        write(
            &d,
            "src/lib.rs",
            "pub mod m;\npub use m::Thing;\n#[cfg(test)]\nmod tests { use crate::m::x::Thing; }\n",
        );
        write(
            &d,
            "src/m/mod.rs",
            "mod x;\npub use x::Thing;\npub struct Top;\n",
        );
        write(
            &d,
            "src/m/x.rs",
            "pub struct Thing;\n#[cfg(test)]\nmod tests { use super::super::Top; }\n",
        );
        write(&d, "src/other.rs", "");
        let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
        assert!(cycles.is_empty(), "{}", describe(&d, &cycles));
        // A child using an item its parent defines, while the parent's code
        // uses the child: a cycle.
        write(
            &d,
            "src/m/mod.rs",
            "mod x;\npub struct Top;\nfn f() -> x::Thing { todo!() }\n",
        );
        write(
            &d,
            "src/m/x.rs",
            "pub struct Thing;\nfn g() { vec![super::Top]; }\n",
        );
        let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
        assert_eq!(cycles.len(), 1, "{}", describe(&d, &cycles));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reexport_is_followed_to_the_defining_file() {
        let d = tmp("follow");
        write(&d, "src/lib.rs", "mod a;\nmod b;\npub use b::B;\n");
        write(&d, "src/a.rs", "pub struct A;\nfn f(_: crate::B) {}\n");
        write(&d, "src/b.rs", "pub struct B;\nfn g(_: crate::a::A) {}\n");
        let cycles = crate_cycles(&d.join("src/lib.rs")).unwrap();
        assert_eq!(cycles.len(), 1, "{}", describe(&d, &cycles));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The rule this module exists for, applied to this workspace.
    #[test]
    fn workspace_has_no_import_cycles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut all = Vec::new();
        for krate in workspace_roots(root).unwrap() {
            all.extend(crate_cycles(&krate).unwrap());
        }
        assert!(all.is_empty(), "import cycles:\n{}", describe(root, &all));
    }
}
