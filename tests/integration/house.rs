//! The house of the Rust code (docs/architecture.md), checked from the sources: every
//! `crate::` and `super::` path in `src/` is an arrow from the module that writes it to the
//! module it names. No arrow may close a cycle, nothing in `engine` may point out of the
//! engine, and no layer may point to a layer above it (main, commands, plan, cli, plumbing,
//! engine, from the top).
//!
//! The paths are read from the text with comments and string literals blanked out; a module's
//! `#[cfg(test)] mod tests` is a module of its own (`...::tests`), as Rust sees it. The graph is
//! printed (`cargo test --release house -- --nocapture`) for the drawing in the docs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, from the top: a module may point only to its own layer or to one below. (The
/// arguments flow the other way: main parses them with `cli`, `plan` validates them, a command
/// runs the plan; so a command imports its plan, and a plan the arguments it is made from.)
const LAYERS: &[(&str, &[&str])] = &[
    ("main", &["main"]),
    ("commands", &["commands"]),
    ("plan", &["plan"]),
    ("cli", &["cli"]),
    ("plumbing", &["jobs", "records", "streams", "progress", "exit", "ordered", "pathcodec"]),
    ("engine", &["engine"]),
];

/// The layer of a module: the index in [`LAYERS`] of its first path segment.
fn layer(module: &str) -> Option<usize> {
    let first = module.split("::").next().unwrap_or_default();
    LAYERS.iter().position(|(_, tops)| tops.contains(&first))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines: `src/engine/index/store.rs` is `engine::index::store`,
/// `src/engine/mod.rs` is `engine`, `src/lib.rs` the crate root (`""`), `src/main.rs` `main`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file with comments and the contents of string and character literals
/// replaced by spaces (lines kept), so that only code is searched for paths.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !is_ident(chars.get(i.wrapping_sub(1))) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars[i..]) {
            // 'x', '\n', '\u{..}': a character literal (a lifetime has no closing quote).
            let end = chars[i + 1..].iter().position(|&q| q == '\'').map_or(chars.len(), |k| i + 2 + k);
            let end = if chars[i + 1] == '\\' && chars[i + 2] == '\'' { i + 4 } else { end };
            out.push_str(&" ".repeat(end - i));
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

fn is_char_literal(rest: &[char]) -> bool {
    matches!(rest, ['\'', '\\', _, ..] | ['\'', _, '\'', ..])
}

/// Splits `a, b::{c, d}` at the commas outside braces.
fn split_top(list: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[start..]);
    out.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// The full paths a path expression names: `a::{b, c::d}` is `a::b` and `a::c::d`.
fn expand(path: &str, out: &mut Vec<String>) {
    match path.find('{') {
        None => out.push(path.split_whitespace().collect()),
        Some(open) => {
            let close = path.rfind('}').unwrap_or(path.len());
            let prefix: String = path[..open].split_whitespace().collect();
            for part in split_top(&path[open + 1..close]) {
                expand(&format!("{prefix}{part}"), out);
            }
        }
    }
}

/// The paths written from position `at` (just after `crate::`, `super::` or
/// `omero_iscc::`): a path, possibly with braces.
fn path_at(code: &str, at: usize) -> String {
    let rest = &code[at..];
    let mut depth = 0;
    let mut end = rest.len();
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth > 0 || c.is_alphanumeric() || c == '_' || c == ':' => {}
            _ => {
                end = i;
                break;
            }
        }
        if depth == 0 && c == '}' {
            end = i + 1;
            break;
        }
    }
    rest[..end].to_string()
}

/// The module a path names: the longest of its prefixes that is a module.
fn target(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    // `crate::warn!` is the macro `streams` exports at the crate root.
    if path == "warn" {
        return Some("streams".into());
    }
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty() && *p != "self").collect();
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| modules.contains(m))
}

/// The arrows of one module's code.
fn arrows(code: &str, module: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = module.split("::").collect();
    for (prefix, base) in [
        ("crate::", String::new()),
        ("omero_iscc::", String::new()),
        ("super::", {
            let n = parent.len().saturating_sub(1);
            parent[..n].join("::")
        }),
    ] {
        for (at, _) in code.match_indices(prefix) {
            if is_ident(code[..at].chars().last().as_ref()) || code[..at].ends_with('$') {
                continue;
            }
            let mut paths = Vec::new();
            expand(&path_at(code, at + prefix.len()), &mut paths);
            for path in paths {
                let full = if base.is_empty() { path } else { format!("{base}::{path}") };
                if let Some(t) = target(&full, modules) {
                    out.insert(t);
                }
            }
        }
    }
    out
}

/// The arrows of the crate: module → the modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    modules.remove("");
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = code_only(&fs::read_to_string(file).unwrap());
        // A `#[cfg(test)] mod tests { ... }` is a module of its own.
        let (main, tests) = match code.find("#[cfg(test)]\nmod tests") {
            Some(at) => code.split_at(at),
            None => (code.as_str(), ""),
        };
        let mut own = arrows(main, &module, &modules);
        own.remove(&module);
        graph.insert(module.clone(), own);
        if !tests.is_empty() {
            let name = format!("{module}::tests");
            let mut test_arrows = arrows(tests, &name, &modules);
            // `super::` in the tests module is the module itself.
            test_arrows.remove(&module);
            graph.insert(name, test_arrows);
        }
    }
    graph.remove("");
    graph
}

/// The cycles of `graph`: its strongly connected components of more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: finishing order on the graph, then components on the reversed graph.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<&'a str>,
        order: &mut Vec<&'a str>,
    ) {
        if !seen.insert(node) {
            return;
        }
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, seen, order);
        }
        order.push(node);
    }
    let mut reversed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            reversed.entry(to.clone()).or_default().insert(from.clone());
        }
    }
    let (mut seen, mut order) = (BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        visit(node, graph, &mut seen, &mut order);
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for node in order.into_iter().rev() {
        let mut component = Vec::new();
        visit(node, &reversed, &mut assigned, &mut component);
        if component.len() > 1 {
            component.sort();
            out.push(component.into_iter().map(str::to_string).collect());
        }
    }
    out
}

#[test]
fn the_module_graph_has_no_cycle_and_no_arrow_up_or_out_of_the_engine() {
    let graph = graph();
    for (from, tos) in &graph {
        for to in tos {
            eprintln!("{from} -> {to}");
        }
    }
    let mut wrong = Vec::new();
    for cycle in cycles(&graph) {
        wrong.push(format!("a cycle: {}", cycle.join(", ")));
    }
    for (from, tos) in &graph {
        for to in tos {
            let (Some(a), Some(b)) = (layer(from), layer(to)) else {
                wrong.push(format!("{from} -> {to}: a module of no layer (add it to LAYERS)"));
                continue;
            };
            if from.starts_with("engine") && !to.starts_with("engine") {
                wrong.push(format!("{from} -> {to}: the engine points out of the engine"));
            } else if b < a {
                wrong.push(format!("{from} -> {to}: {} points up to {}", LAYERS[a].0, LAYERS[b].0));
            }
        }
    }
    assert!(wrong.is_empty(), "the house is not as drawn:\n{}", wrong.join("\n"));
}

/// The reader of the sources finds what it should: a sample with every form of path.
#[test]
fn the_reader_of_the_sources_finds_every_form_of_path() {
    let modules: BTreeSet<String> =
        ["a", "a::b", "a::c", "d", "e", "streams"].into_iter().map(String::from).collect();
    let code = code_only(
        "use crate::a::{b::{self, X}, c};\n\
         // use crate::d;\n\
         let s = \"crate::e\"; let r = r#\"crate::e\"#; let c = '\"'; let q = '\\'';\n\
         fn f<'a>(x: &'a str) { crate::d::g(); crate::warn!(\"x\"); }\n\
         use super::c as _;\n",
    );
    let found = arrows(&code, "a::b", &modules);
    let want: BTreeSet<String> = ["a::b", "a::c", "d", "streams"].into_iter().map(String::from).collect();
    assert_eq!(found, want, "{code}");
    let mut cyclic: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
        cyclic.entry(from.to_string()).or_default().insert(to.to_string());
    }
    assert_eq!(cycles(&cyclic), [["a", "b", "c"]]);
}
