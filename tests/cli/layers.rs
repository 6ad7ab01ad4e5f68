//! The module layering of `src/`, enforced. Each top-level module sits in one
//! layer of [`LAYERS`] and may import (`use crate::…`, or a `crate::…` path in
//! code or in a macro's tokens) only modules of lower layers, so the module graph
//! has no cycle. Test-only code (`#[cfg(test)]` items and modules) is not counted.
//!
//! A new top-level module needs a row here; an upward edge fails the test naming
//! its file and line. Run `cargo test --test cli layers:: -- --nocapture` to see
//! the layer order and the module graph as built.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// Bottom first: a module may use modules of the layers before its own, never
/// its own layer's or a later one's. Data flows down: a line goes
/// `shell` → `command::parse` → `app` → the subsystems; no module below `app`
/// knows the terminal, and the simulator knows nothing of the app.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves: names, prompts, the terminal, signals, the Ollama client",
        &["names", "prompt", "ui", "signals", "blocking", "ollama"],
    ),
    ("the two files and the word settings", &["config"]),
    (
        "nodes, the simulator, sharding",
        &["nodes", "sim", "sharding"],
    ),
    (
        "the scheduler (it owns the traits for sharing its rule and health), and the \
         cluster's models managed as one (management calls: no scheduler slot)",
        &["scheduler", "models"],
    ),
    // Redis implements the scheduler's traits; `report` is above the scheduler
    // only because `Metrics` holds its `Attribution`.
    ("Redis, and what a query reports", &["redis", "report"]),
    ("retrieval and the dashboard", &["rag", "dashboard"]),
    ("agents and answers", &["pipeline"]),
    (
        "the command table and the HTTP gateway",
        &["command", "gateway"],
    ),
    ("the application: state, dispatcher, glue", &["app"]),
    (
        "front ends: the shell and the command line",
        &["shell", "cli"],
    ),
    ("start-up: the command line to an App", &["startup"]),
    ("the binary", &["main"]),
];

/// Edges allowed although they break the order above, each with its reason.
/// Edges allowed against the table, each with its reason (none today: keep it so).
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

#[derive(Debug)]
struct Edge {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

#[test]
fn modules_import_only_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let layer_of = layer_table();
    let edges = crate_edges(&src);

    let mut problems = Vec::new();
    let mut present = BTreeSet::new();
    for file in rust_files(&src) {
        if let Some(top) = top_module(&src, &file) {
            if !layer_of.contains_key(top.as_str()) {
                problems.push(format!(
                    "{}: module `{top}` has no layer in tests/cli/layers.rs LAYERS",
                    rel(root, &file)
                ));
            }
            present.insert(top);
        }
    }
    for name in layer_of.keys() {
        if !present.contains(*name) {
            problems.push(format!(
                "LAYERS names `{name}`, which is not a module of src/"
            ));
        }
    }
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut used_exceptions = BTreeSet::new();
    for e in &edges {
        graph.entry(&e.from).or_default().insert(&e.to);
        let (Some(&lf), Some(&lt)) = (layer_of.get(e.from.as_str()), layer_of.get(e.to.as_str()))
        else {
            if !layer_of.contains_key(e.to.as_str()) {
                problems.push(format!(
                    "{}:{}: `{}` → `{}`, which is not a module of src/",
                    rel(root, &e.file),
                    e.line,
                    e.from,
                    e.to
                ));
            }
            continue;
        };
        if lt < lf {
            continue;
        }
        if let Some(i) = EXCEPTIONS
            .iter()
            .position(|(f, t, _)| *f == e.from && *t == e.to)
        {
            used_exceptions.insert(i);
            continue;
        }
        problems.push(format!(
            "{}:{}: `{}` (layer {}) uses `{}` (layer {}){}",
            rel(root, &e.file),
            e.line,
            e.from,
            lf + 1,
            e.to,
            lt + 1,
            if lt == lf {
                ", the same layer"
            } else {
                ", a higher layer"
            }
        ));
    }
    for (i, (f, t, why)) in EXCEPTIONS.iter().enumerate() {
        if !used_exceptions.contains(&i) {
            problems.push(format!(
                "the exception `{f}` → `{t}` ({why}) is no longer needed: remove it from EXCEPTIONS"
            ));
        }
    }

    let order = layer_order();
    println!("{order}\nmodule graph as built:");
    for (from, tos) in &graph {
        let tos: Vec<&str> = tos.iter().copied().collect();
        println!("  {from} → {}", tos.join(", "));
    }
    assert!(
        problems.is_empty(),
        "{} layering problem(s):\n  {}\n{order}",
        problems.len(),
        problems.join("\n  ")
    );
}

fn layer_table() -> BTreeMap<&'static str, usize> {
    let mut map = BTreeMap::new();
    for (i, (_, modules)) in LAYERS.iter().enumerate() {
        for m in *modules {
            assert!(map.insert(*m, i).is_none(), "`{m}` is in LAYERS twice");
        }
    }
    map
}

fn layer_order() -> String {
    let mut out =
        String::from("layer order, bottom first (each layer uses only the layers before it):\n");
    for (i, (what, modules)) in LAYERS.iter().enumerate() {
        out.push_str(&format!("  {}. {} ({what})\n", i + 1, modules.join(", ")));
    }
    for (f, t, why) in EXCEPTIONS {
        out.push_str(&format!("  exception: {f} → {t}: {why}\n"));
    }
    out
}

fn rel(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read src/") {
            let path = entry.expect("read src/").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `src/a/b.rs` → `[a, b]`, `src/a/mod.rs` → `[a]`, `src/main.rs` → `[main]`,
/// `src/lib.rs` → `[]` (the crate root only declares the modules).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && stem == "lib")) {
        parts.push(stem.to_string());
    }
    parts
}

fn top_module(src: &Path, file: &Path) -> Option<String> {
    module_path(src, file).into_iter().next()
}

/// Every cross-module edge of non-test code in `src/`.
fn crate_edges(src: &Path) -> Vec<Edge> {
    let mut test_files = BTreeSet::new();
    let mut edges = Vec::new();
    for file in rust_files(src) {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let path = module_path(src, &file);
        edges.extend(file_edges(&file, &text, path, &mut test_files));
    }
    // Files that `#[cfg(test)] mod name;` declares are test code throughout.
    edges.retain(|e| !test_files.contains(&e.file));
    edges
}

/// The edges of one file whose module is `path`; the files of the test-only
/// modules it declares go into `test_files`.
fn file_edges(
    file: &Path,
    text: &str,
    path: Vec<String>,
    test_files: &mut BTreeSet<PathBuf>,
) -> Vec<Edge> {
    let ast =
        syn::parse_file(text).unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
    let mut edges = Vec::new();
    let Some(top) = path.first().cloned() else {
        return edges;
    };
    if ast.attrs.iter().any(is_cfg_test) {
        return edges;
    }
    let mut v = Collector {
        file,
        is_main: path == ["main"],
        module: path,
        top,
        edges: &mut edges,
        test_files,
    };
    v.visit_file(&ast);
    // One edge per line and target (`use crate::b::{self, Y}` is one).
    edges.dedup_by(|a, b| a.line == b.line && a.to == b.to);
    edges
}

struct Collector<'a> {
    file: &'a Path,
    /// `src/main.rs` names the library as `synapticllamas::`.
    is_main: bool,
    /// The module being visited (inline `mod` blocks included).
    module: Vec<String>,
    top: String,
    edges: &'a mut Vec<Edge>,
    test_files: &'a mut BTreeSet<PathBuf>,
}

impl Collector<'_> {
    fn edge(&mut self, target: &[String], span: Span) {
        let Some(to) = target.first() else { return };
        if *to != self.top {
            self.edges.push(Edge {
                file: self.file.to_path_buf(),
                line: span.start().line,
                from: self.top.clone(),
                to: to.clone(),
            });
        }
    }

    /// The absolute module path a path's first segment starts from, if it is
    /// in this crate: `crate` → `[]`, `super` → the parent, `self` → here.
    fn base(&self, first: &str) -> Option<Vec<String>> {
        match first {
            "crate" => Some(Vec::new()),
            "synapticllamas" if self.is_main => Some(Vec::new()),
            "super" => Some(self.module[..self.module.len().saturating_sub(1)].to_vec()),
            "self" => Some(self.module.clone()),
            _ => None,
        }
    }

    fn use_tree(&mut self, tree: &syn::UseTree, base: Option<Vec<String>>) {
        match tree {
            syn::UseTree::Path(p) => {
                let name = p.ident.to_string();
                let next = match base {
                    None => self.base(&name),
                    Some(mut b) if name == "super" => {
                        b.pop();
                        Some(b)
                    }
                    Some(mut b) => {
                        b.push(name);
                        Some(b)
                    }
                };
                if next.is_some() {
                    self.use_tree(&p.tree, next);
                }
            }
            syn::UseTree::Name(n) => {
                if let Some(mut b) = base {
                    if n.ident != "self" {
                        b.push(n.ident.to_string());
                    }
                    self.edge(&b, n.ident.span());
                }
            }
            syn::UseTree::Rename(r) => {
                if let Some(mut b) = base {
                    if r.ident != "self" {
                        b.push(r.ident.to_string());
                    }
                    self.edge(&b, r.ident.span());
                }
            }
            syn::UseTree::Glob(g) => {
                if let Some(b) = base {
                    self.edge(&b, g.star_token.spans[0]);
                }
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(t, base.clone());
                }
            }
        }
    }

    /// `crate :: name` (and `synapticllamas :: name` in main.rs) in a macro's
    /// tokens, which syn leaves unparsed.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, t) in trees.iter().enumerate() {
            match t {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) => {
                    let is_root = id == "crate" || (self.is_main && id == "synapticllamas");
                    if !is_root {
                        continue;
                    }
                    if let [TokenTree::Punct(a), TokenTree::Punct(b), TokenTree::Ident(name), ..] =
                        &trees[i + 1..]
                    {
                        if a.as_char() == ':' && b.as_char() == ':' {
                            self.edge(&[name.to_string()], name.span());
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// A `#[cfg(test)] mod name;` declared here lives in a file of its own.
    fn skip_file_of(&mut self, name: &str) {
        let dir = match self.file.file_stem().and_then(|s| s.to_str()) {
            Some("mod") | Some("lib") | Some("main") => self.file.parent().unwrap().to_path_buf(),
            _ => self.file.with_extension(""),
        };
        self.test_files.insert(dir.join(format!("{name}.rs")));
        self.test_files.insert(dir.join(name).join("mod.rs"));
    }
}

fn is_cfg_test(attr: &syn::Attribute) -> bool {
    match &attr.meta {
        syn::Meta::List(l) => l.path.is_ident("cfg") && l.tokens.to_string() == "test",
        _ => false,
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if item_attrs(item).iter().any(is_cfg_test) {
            if let syn::Item::Mod(m) = item {
                if m.content.is_none() {
                    self.skip_file_of(&m.ident.to_string());
                }
            }
            return;
        }
        visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !attrs.iter().any(is_cfg_test) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&u.tree, None);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if let Some(first) = p.segments.first() {
            if let Some(mut base) = self.base(&first.ident.to_string()) {
                for seg in p.segments.iter().skip(1) {
                    if seg.ident == "super" {
                        base.pop();
                    } else {
                        base.push(seg.ident.to_string());
                        break;
                    }
                }
                self.edge(&base, first.ident.span());
            }
        }
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        visit::visit_macro(self, m);
    }
}

/// The check itself: each form of reference is seen, test-only code is not.
#[test]
fn every_form_of_reference_is_an_edge() {
    let text = r#"
        use crate::{a::X, b::{self, Y}};
        use super::super::c::Z;
        fn f() {
            let _ = crate::d::f();
            println!("{}", crate::e::G);
        }
        type T = crate::f::T;
        mod inner {
            use super::super::super::g::K;
            use super::same::L;
        }
        use self::mine::M;
        #[cfg(test)]
        mod tests {
            use crate::t1::H;
        }
        #[cfg(test)]
        fn only_in_tests() {
            crate::t2::f();
        }
        impl S {
            #[cfg(test)]
            fn t() {
                crate::t3::f();
            }
        }
        #[cfg(test)]
        mod more_tests;
        use std::fmt;
        use other_crate::x;
    "#;
    let file = Path::new("src/x/y.rs");
    let mut test_files = BTreeSet::new();
    let edges = file_edges(file, text, vec!["x".into(), "y".into()], &mut test_files);
    let seen: Vec<(usize, &str)> = edges.iter().map(|e| (e.line, e.to.as_str())).collect();
    assert_eq!(
        seen,
        [
            (2, "a"),
            (2, "b"),
            (3, "c"),
            (5, "d"),
            (6, "e"),
            (8, "f"),
            (10, "g")
        ]
    );
    assert!(edges.iter().all(|e| e.from == "x"));
    assert!(test_files.contains(Path::new("src/x/y/more_tests.rs")));
}
