//! `#[ktstr::test]`: declares a scheduler test, a `fn(&Ctx) ->
//! Result<AssertResult>` that runs inside a ktstr VM, and registers it in
//! the test binary's list (a `linkme` distributed slice in the agent
//! crate's `decl` module, re-exported as `ktstr::decl`), so
//! `ktstr::main!()` can list it for cargo and nextest on the host and run
//! it as the agent in the guest.
//!
//! A function of `&ScenarioParams` returning `(Backdrop, Vec<Step>)` (wire
//! types) is a scenario as data instead: the host builds its steps and
//! sends them as the plan. With `family = "..."` (and `about`,
//! `needs_scheduler`, `payloads`) a declaration joins the canned catalog
//! rather than the binary's tests; `crate = path` names where `decl` lives
//! for crates that cannot depend on the `ktstr` facade (the catalog
//! itself, which the host links).
//!
//! Everything the attribute takes is checked here, at compile time, with
//! the error pointing at the argument: unknown keys, wrong value kinds,
//! durations that do not parse, a function with the wrong shape.
//!
//! ```text
//! #[ktstr::test(scheduler = "fixture", topology = "1n2l2c1t", duration = "3s")]
//! fn two_cgroups(ctx: &Ctx) -> Result<AssertResult> { ... }
//! ```

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Expr, ItemFn, LitBool, LitInt, LitStr, parse_macro_input};

/// The attribute's arguments, as written.
#[derive(Default)]
struct Args {
    scheduler: Option<LitStr>,
    sched_args: Option<LitStr>,
    sched_flags: Option<LitStr>,
    topology: Option<LitStr>,
    min_llcs: Option<LitInt>,
    max_llcs: Option<LitInt>,
    min_cpus: Option<LitInt>,
    max_cpus: Option<LitInt>,
    min_numa_nodes: Option<LitInt>,
    max_numa_nodes: Option<LitInt>,
    requires_smt: Option<bool>,
    duration_ms: Option<u64>,
    timeout_ms: Option<u64>,
    memory_mib: Option<LitInt>,
    workers: Option<LitInt>,
    checks: Option<Expr>,
    ignore: Option<String>,
    monitor: Option<bool>,
    family: Option<LitStr>,
    about: Option<LitStr>,
    needs_scheduler: Option<bool>,
    payloads: Option<Expr>,
    krate: Option<syn::Path>,
}

/// `"3s"`, `"500ms"`, `"2m"` in milliseconds.
fn parse_duration(lit: &LitStr) -> syn::Result<u64> {
    let s = lit.value();
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("{s:?}: a duration like 3s, 500ms or 2m"),
        )
    })?;
    let scale = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        _ => {
            return Err(syn::Error::new(
                lit.span(),
                format!("{s:?}: unit {unit:?}; use ms, s or m"),
            ));
        }
    };
    n.checked_mul(scale)
        .filter(|&ms| ms > 0)
        .ok_or_else(|| syn::Error::new(lit.span(), format!("{s:?}: out of range (0 < d)")))
}

/// A flag that may be written bare (`requires_smt`) or with a value.
fn flag(meta: &ParseNestedMeta<'_>) -> syn::Result<bool> {
    if meta.input.peek(syn::Token![=]) {
        Ok(meta.value()?.parse::<LitBool>()?.value)
    } else {
        Ok(true)
    }
}

impl Args {
    fn parse(&mut self, meta: ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        macro_rules! set {
            ($field:ident, $ty:ty) => {{
                self.$field = Some(meta.value()?.parse::<$ty>()?);
            }};
        }
        match key.as_str() {
            "scheduler" => set!(scheduler, LitStr),
            "sched_args" => set!(sched_args, LitStr),
            "sched_flags" => set!(sched_flags, LitStr),
            "topology" => set!(topology, LitStr),
            "min_llcs" => set!(min_llcs, LitInt),
            "max_llcs" => set!(max_llcs, LitInt),
            "min_cpus" => set!(min_cpus, LitInt),
            "max_cpus" => set!(max_cpus, LitInt),
            "min_numa_nodes" => set!(min_numa_nodes, LitInt),
            "max_numa_nodes" => set!(max_numa_nodes, LitInt),
            "memory_mib" => set!(memory_mib, LitInt),
            "workers" => set!(workers, LitInt),
            "checks" => set!(checks, Expr),
            "family" => set!(family, LitStr),
            "about" => set!(about, LitStr),
            "payloads" => set!(payloads, Expr),
            "crate" => set!(krate, syn::Path),
            "needs_scheduler" => self.needs_scheduler = Some(flag(&meta)?),
            "requires_smt" => self.requires_smt = Some(flag(&meta)?),
            "monitor" => self.monitor = Some(flag(&meta)?),
            "duration" => {
                let lit = meta.value()?.parse::<LitStr>()?;
                self.duration_ms = Some(parse_duration(&lit)?);
            }
            "timeout" => {
                let lit = meta.value()?.parse::<LitStr>()?;
                self.timeout_ms = Some(parse_duration(&lit)?);
            }
            "ignore" => {
                self.ignore = Some(if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<LitStr>()?.value()
                } else {
                    String::new()
                });
            }
            _ => {
                return Err(meta.error(format!(
                    "unknown ktstr::test argument {key:?}; known: scheduler, sched_args, \
                     sched_flags, topology, min_llcs, max_llcs, min_cpus, max_cpus, \
                     min_numa_nodes, max_numa_nodes, requires_smt, duration, timeout, \
                     memory_mib, workers, checks, monitor, ignore, about, family, \
                     needs_scheduler, payloads, crate"
                )));
            }
        }
        Ok(())
    }
}

fn opt<T: quote::ToTokens>(v: &Option<T>) -> proc_macro2::TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

/// A count limit; 0 (none) when not given.
fn limit(v: &Option<LitInt>) -> syn::Result<u32> {
    v.as_ref().map_or(Ok(0), |l| l.base10_parse())
}

/// Declares a ktstr scheduler test; see the crate documentation.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| args.parse(meta));
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    match expand(&args, &func) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Whether the function's one parameter is a `&Ctx` (a test run in the
/// guest) rather than `&ScenarioParams` (steps built on the host).
fn takes_ctx(sig: &syn::Signature) -> bool {
    let Some(syn::FnArg::Typed(arg)) = sig.inputs.first() else {
        return false;
    };
    let syn::Type::Reference(r) = &*arg.ty else {
        return false;
    };
    match &*r.elem {
        syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Ctx"),
        _ => false,
    }
}

fn expand(a: &Args, func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if sig.inputs.len() != 1 || sig.asyncness.is_some() || !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.span(),
            "a ktstr test is `fn name(ctx: &Ctx) -> Result<AssertResult>` (run in the guest) \
             or `fn name(p: &ScenarioParams) -> (Backdrop, Vec<Step>)` (steps sent as a plan)",
        ));
    }
    let krate = a
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::ktstr));
    let ident = &sig.ident;
    let name = ident.to_string();
    let static_ident = format_ident!("__KTSTR_TEST_{}", name.to_uppercase());
    let checks_fn = format_ident!("__ktstr_checks_{}", name);
    let body = if takes_ctx(sig) {
        quote!(#krate::decl::TestBody::Guest(#ident))
    } else {
        quote!(#krate::decl::TestBody::Steps(#ident))
    };
    let slice = if a.family.is_some() {
        quote!(#krate::decl::KTSTR_CATALOG)
    } else {
        quote!(#krate::decl::KTSTR_TESTS)
    };
    let family = opt(&a.family);
    let about = a
        .about
        .clone()
        .unwrap_or_else(|| LitStr::new("", Span::call_site()));
    let needs_scheduler = a.needs_scheduler.unwrap_or(false);
    let payloads = match &a.payloads {
        Some(e) => quote!(&#e),
        None => quote!(&[]),
    };
    let scheduler = opt(&a.scheduler);
    let sched_args = a
        .sched_args
        .clone()
        .unwrap_or_else(|| LitStr::new("", Span::call_site()));
    let sched_flags = a
        .sched_flags
        .clone()
        .unwrap_or_else(|| LitStr::new("", Span::call_site()));
    let topology = opt(&a.topology);
    let min_llcs = limit(&a.min_llcs)?;
    let max_llcs = limit(&a.max_llcs)?;
    let min_cpus = limit(&a.min_cpus)?;
    let max_cpus = limit(&a.max_cpus)?;
    let min_numa = limit(&a.min_numa_nodes)?;
    let max_numa = limit(&a.max_numa_nodes)?;
    let requires_smt = a.requires_smt.unwrap_or(false);
    let duration_ms = a.duration_ms.unwrap_or(0);
    let timeout_ms = opt(&a.timeout_ms);
    let memory_mib = match &a.memory_mib {
        Some(l) => {
            let n: u64 = l.base10_parse()?;
            quote!(::core::option::Option::Some(#n))
        }
        None => quote!(::core::option::Option::None),
    };
    let workers = match &a.workers {
        Some(l) => {
            let n: usize = l.base10_parse()?;
            if n == 0 {
                return Err(syn::Error::new(l.span(), "workers must be at least 1"));
            }
            n
        }
        None => 0,
    };
    let monitor = a.monitor.unwrap_or(false);
    let ignore = opt(&a.ignore.as_ref().map(|r| LitStr::new(r, Span::call_site())));
    let (checks_item, checks) = match &a.checks {
        Some(e) => (
            quote! {
                #[doc(hidden)]
                fn #checks_fn() -> #krate::decl::check_scope::Assert {
                    #[allow(unused_imports)]
                    use #krate::decl::check_scope::*;
                    #e
                }
            },
            quote!(::core::option::Option::Some(#checks_fn)),
        ),
        None => (quote!(), quote!(::core::option::Option::None)),
    };
    Ok(quote! {
        #func

        #checks_item

        #[doc(hidden)]
        #[#krate::decl::linkme::distributed_slice(#slice)]
        #[linkme(crate = #krate::decl::linkme)]
        static #static_ident: #krate::decl::TestDecl = #krate::decl::TestDecl {
            name: #name,
            module: ::core::module_path!(),
            line: ::core::line!(),
            body: #body,
            family: #family,
            about: #about,
            scheduler: #scheduler,
            sched_args: #sched_args,
            sched_flags: #sched_flags,
            topology: #topology,
            needs: #krate::decl::check_scope::Needs {
                min_llcs: #min_llcs,
                max_llcs: #max_llcs,
                min_cpus: #min_cpus,
                max_cpus: #max_cpus,
                min_numa_nodes: #min_numa,
                max_numa_nodes: #max_numa,
                smt: #requires_smt,
            },
            needs_scheduler: #needs_scheduler,
            payloads: #payloads,
            duration_ms: #duration_ms,
            timeout_ms: #timeout_ms,
            memory_mib: #memory_mib,
            workers: #workers,
            checks: #checks,
            monitor: #monitor,
            ignore: #ignore,
        };
    })
}
