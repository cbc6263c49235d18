//! The structure the README claims, checked on the sources: data flows one
//! way (no module of the library imports one that imports it back, at any
//! level), and the command-line crates (clap, indicatif) are dependencies
//! of the binary only.

mod common;
use common::repo;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`merge::input`) of each source file under `src`.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().map_or(true, |x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            // Unit tests may reach anywhere.
            let product = text.split("#[cfg(test)]").next().unwrap().to_string();
            out.insert(parts.join("::"), product);
        }
    }
    out
}

/// Every `crate::a::b` and `super::a` path a source names, brace groups
/// expanded, resolved against the module `m` it is in (`is_dir`: the file
/// is a `mod.rs`).
fn references(m: &str, is_dir: bool, text: &str) -> Vec<Vec<String>> {
    let here: Vec<String> = m
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let parent = if is_dir {
        here.clone()
    } else {
        here[..here.len().saturating_sub(1)].to_vec()
    };
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            // `self::super::` or an identifier ending in `crate` is not a path start.
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let items: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                vec![rest[..end].to_string()]
            };
            for item in items {
                let mut path = base.clone();
                let is_module = |s: &&str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_lowercase() || c == '_' || c.is_ascii_digit())
                };
                path.extend(
                    item.split("::")
                        .map(str::trim)
                        .take_while(is_module)
                        .map(String::from),
                );
                out.push(path);
            }
        }
    }
    out
}

/// Strongly connected components of more than one node.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability by DFS is enough at this size.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(v) = stack.pop() {
            for w in g.get(&v).into_iter().flatten() {
                if seen.insert(w.clone()) {
                    stack.push(w.clone());
                }
            }
        }
        seen
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut done = BTreeSet::new();
    for v in g.keys() {
        if done.contains(v) {
            continue;
        }
        let fwd = reach(v);
        let scc: Vec<String> = fwd
            .iter()
            .filter(|w| *w != v && reach(w).contains(v))
            .cloned()
            .collect();
        if !scc.is_empty() {
            let mut c = scc;
            c.push(v.clone());
            c.sort();
            done.extend(c.iter().cloned());
            out.push(c);
        }
    }
    out
}

/// Import edges between sibling modules at every level of `crate_src`.
fn sibling_graph(crate_src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(crate_src);
    let is_dir = |m: &str| {
        let p = crate_src.join(m.replace("::", "/"));
        p.is_dir()
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &mods {
        let from: Vec<&str> = m.split("::").filter(|s| !s.is_empty()).collect();
        for to in references(m, is_dir(m), text) {
            // The longest prefix of the path that is a module.
            let Some(k) = (1..=to.len())
                .rev()
                .find(|&k| mods.contains_key(&to[..k].join("::")))
            else {
                continue;
            };
            let to = &to[..k];
            // The two modules' ancestors just below their common one.
            let common = from.iter().zip(to).take_while(|(a, b)| *a == b).count();
            if common < from.len() && common < to.len() {
                g.entry(from[..=common].join("::"))
                    .or_default()
                    .insert(to[..=common].join("::"));
            }
        }
    }
    g
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    for krate in [
        "crates/core/src",
        "crates/host/src",
        "crates/sys/src",
        "src",
    ] {
        let g = sibling_graph(&repo().join(krate));
        assert!(
            !g.is_empty() || krate != "crates/core/src",
            "no imports found in {krate}"
        );
        assert_eq!(
            cycles(&g),
            Vec::<Vec<String>>::new(),
            "import loops in {krate}"
        );
    }
}

/// The checker itself finds a loop: two sibling modules naming each other,
/// through a brace group and a plain path.
#[test]
fn the_loop_check_finds_a_planted_loop() {
    let dir = common::scratch_dir("structure-planted");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "mod x;\nmod y;\n").unwrap();
    std::fs::write(dir.join("a/x.rs"), "use super::{y::Y, Z};\npub struct X;\n").unwrap();
    std::fs::write(
        dir.join("a/y.rs"),
        "pub fn f() -> crate::a::x::X { todo!() }\n",
    )
    .unwrap();
    let c = cycles(&sibling_graph(&dir));
    assert_eq!(c, vec![vec!["a::x".to_string(), "a::y".to_string()]]);
}

#[test]
fn command_line_crates_are_dependencies_of_the_binary_only() {
    for manifest in [
        "crates/core/Cargo.toml",
        "crates/host/Cargo.toml",
        "crates/sys/Cargo.toml",
        "crates/runtime/Cargo.toml",
    ] {
        let text = std::fs::read_to_string(repo().join(manifest)).unwrap();
        for dep in ["clap", "indicatif"] {
            assert!(
                !text.lines().any(|l| l.trim_start().starts_with(dep)),
                "{manifest} depends on {dep}"
            );
        }
    }
}
