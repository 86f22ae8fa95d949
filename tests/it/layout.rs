//! The server's layout stays a layering: no import cycles between its
//! source files, and telemetry depends on neither the engine nor the store.
//! Read from the source as text (`use crate::…`, `crate::…` and `super::…`
//! paths outside test modules), which is what a reader follows too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, keyed by its module path (`engine::tcc`).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                found.insert(parts.join("::"), path);
            }
        }
    }
    found
}

/// The code of a file without its test modules and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file refers to, resolved against `super`.
fn references(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut refs = Vec::new();
    let here: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let flat = code.replace(['\n', ' '], "");
    for (start, _) in flat
        .match_indices("crate::")
        .chain(flat.match_indices("super::"))
    {
        let rest = &flat[start..];
        let (base, rest) = if let Some(r) = rest.strip_prefix("crate::") {
            (Vec::new(), r)
        } else {
            let mut base = here.clone();
            base.pop();
            (base, &rest["super::".len()..])
        };
        // `crate::{a::B, c}` names several paths.
        let group = |r: &str| -> Vec<String> {
            if let Some(inner) = r.strip_prefix('{') {
                let end = inner
                    .find("};")
                    .or_else(|| inner.find('}'))
                    .unwrap_or(inner.len());
                inner[..end].split(',').map(String::from).collect()
            } else {
                let end = r
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(r.len());
                vec![r[..end].to_string()]
            }
        };
        for path in group(rest) {
            let mut full = base.clone();
            full.extend(
                path.split("::")
                    .take_while(|s| !s.is_empty() && *s != "{")
                    .map(|s| s.trim_start_matches('{').to_string()),
            );
            refs.push(full);
        }
    }
    refs
}

/// The longest prefix of `path` that is a module (file) of the crate.
fn target(path: &[String], modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].join("::"))
        .find(|m| modules.contains_key(m))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &modules {
        let to = edges.entry(module.clone()).or_default();
        for r in references(module, &code(path)) {
            if let Some(t) = target(&r, &modules)
                && &t != module
                // A parent and its own submodules are one unit.
                && !module.starts_with(&format!("{t}::"))
                && !t.starts_with(&format!("{module}::"))
                && !t.is_empty()
            {
                to.insert(t);
            }
        }
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_import_cycles_between_source_files() {
    let found = cycles(&graph());
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn telemetry_imports_nothing_from_the_engine_or_the_store() {
    for (module, to) in graph() {
        if module.starts_with("telemetry") {
            let bad: Vec<_> = to
                .iter()
                .filter(|t| t.starts_with("engine") || t.starts_with("store"))
                .collect();
            assert!(bad.is_empty(), "{module} imports {bad:?}");
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let edges = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".to_string()]]);
    let refs = references(
        "engine::tcc",
        "use super::{calls::BranchCall, Engine};\nuse crate::machine::tcc;",
    );
    assert!(refs.contains(&vec!["engine".into(), "calls".into(), "BranchCall".into()]));
    assert!(refs.contains(&vec!["machine".into(), "tcc".into()]));
}
