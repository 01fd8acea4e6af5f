//! One crate's module tree as the cycle check sees it: which file holds
//! which module, what each module defines and imports, the paths its code
//! writes, and how those resolve to the files that define them.
//!
//! Parses source with `syn`; knows nothing of cycles (that is the parent
//! module's).

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
pub(super) struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

impl Crate {
    pub(super) fn load(root_file: &Path) -> Result<Self> {
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
    pub(super) fn edges(&self) -> Vec<Edge> {
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
