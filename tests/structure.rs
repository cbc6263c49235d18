//! The structure the README claims, checked on the sources: data flows one
//! way (no module of the library imports one that imports it back, at any
//! level), the command-line crates (clap, indicatif) are dependencies of
//! the binary only, and no product function is longer than
//! `MAX_FN_LINES`.

mod common;
use common::repo;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src`, with its text.
fn sources(src: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

/// Module path (`merge::input`) of each source file under `src`.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (p, text) in sources(src) {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
            parts.pop();
        }
        // Unit tests may reach anywhere.
        let product = text.split("#[cfg(test)]").next().unwrap().to_string();
        out.insert(parts.join("::"), product);
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

/// The longest a product function may be, from its `fn` line to its
/// closing brace: past this, a reader loses the steps; name them instead.
const MAX_FN_LINES: usize = 120;

/// `text` with comments and string and character literals blanked
/// (newlines kept, so offsets and lines still match): braces and `fn` in
/// what is left are code.
fn code_only(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let ident = |i: usize| b[i].is_ascii_alphanumeric() || b[i] == b'_';
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            // A raw string: `r"`, `r#"`, `br"`, not the end of a name.
            b'r' if (i == 0 || !ident(i - 1) || (b[i - 1] == b'b' && (i < 2 || !ident(i - 2))))
                && b[i + 1..].iter().find(|&&c| c != b'#') == Some(&b'"') =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat(b'#').take(hashes));
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            // A character literal, not a lifetime or label.
            b'\'' => {
                let c = text[i + 1..].chars().next().unwrap_or(' ');
                if c == '\\' {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else if b.get(i + 1 + c.len_utf8()) == Some(&b'\'') {
                    i += 2 + c.len_utf8();
                } else {
                    i += 1;
                    continue;
                }
            }
            _ => {
                i += 1;
                continue;
            }
        }
        let end = i.min(b.len());
        for c in &mut out[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    }
    out
}

/// The offset just past the item or field starting at `from` in `code`:
/// past its closing brace, or at the `;`, `,` or `}` that ends it.
fn item_end(code: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    for (i, &c) in code.iter().enumerate().skip(from) {
        match c {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b'{' if depth == 0 => return block_end(code, i),
            b';' | b',' | b'}' if depth == 0 => return i,
            _ => {}
        }
    }
    code.len()
}

/// The offset just past the brace that closes the one at `open`.
fn block_end(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// A function longer than `MAX_FN_LINES`: where it starts (1-based line),
/// its name and its length in lines.
#[derive(Debug, PartialEq)]
struct LongFn {
    line: usize,
    name: String,
    lines: usize,
}

/// The functions with a body in `text` longer than `max` lines, outside
/// `#[cfg(test)]` items.
fn long_functions(text: &str, max: usize) -> Vec<LongFn> {
    let code = code_only(text);
    let line_of = |at: usize| 1 + code[..at].iter().filter(|&&c| c == b'\n').count();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let attr = b"#[cfg(test)]";
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < code.len() {
        if code[i..].starts_with(attr) {
            i = item_end(&code, i + attr.len());
            continue;
        }
        let is_fn = code[i..].starts_with(b"fn")
            && (i == 0 || !ident(code[i - 1]))
            && code[i + 2].is_ascii_whitespace();
        if !is_fn {
            i += 1;
            continue;
        }
        let name_at = i
            + 2
            + code[i + 2..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
        let name: String = code[name_at..]
            .iter()
            .take_while(|&&c| ident(c))
            .map(|&c| c as char)
            .collect();
        // The body opens at the first brace outside the signature's
        // parentheses; a `;` there first is a declaration without one.
        let mut depth = 0usize;
        let mut body = None;
        for (j, &c) in code.iter().enumerate().skip(name_at) {
            match c {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth = depth.saturating_sub(1),
                b'{' if depth == 0 => {
                    body = Some(j);
                    break;
                }
                b';' if depth == 0 => break,
                _ => {}
            }
        }
        if let (false, Some(open)) = (name.is_empty(), body) {
            let first = line_of(i);
            let lines = line_of(block_end(&code, open) - 1) - first + 1;
            if lines > max {
                out.push(LongFn {
                    line: first,
                    name,
                    lines,
                });
            }
        }
        // Functions nested in this one are measured too.
        i = name_at;
    }
    out
}

/// The files a `#[cfg(test)] mod NAME;` in some file of `files` declares:
/// unit tests kept in a file of their own.
fn test_module_files(files: &[(PathBuf, String)]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (p, text) in files {
        let dir = match p.file_stem().unwrap().to_str().unwrap() {
            "mod" | "lib" | "main" => p.parent().unwrap().to_path_buf(),
            stem => p.parent().unwrap().join(stem),
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#[cfg(test)]") {
            rest = &rest[at + "#[cfg(test)]".len()..];
            let decl = rest.trim_start();
            let Some(decl) = decl.strip_prefix("mod ").or(decl.strip_prefix("pub mod ")) else {
                continue;
            };
            let name = decl
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap();
            if decl[name.len()..].trim_start().starts_with(';') {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

#[test]
fn no_product_function_is_longer_than_the_limit() {
    let mut offenders = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(repo().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    crates.push(repo().join("src"));
    let mut seen = 0;
    for src in crates {
        let files = sources(&src);
        let tests = test_module_files(&files);
        for (p, text) in &files {
            let rel = p.strip_prefix(repo()).unwrap();
            let in_tests = rel
                .components()
                .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches");
            if in_tests || tests.contains(p) {
                continue;
            }
            seen += 1;
            for f in long_functions(text, MAX_FN_LINES) {
                offenders.push(format!(
                    "{}:{} fn {}: {} lines",
                    rel.display(),
                    f.line,
                    f.name,
                    f.lines
                ));
            }
        }
    }
    assert!(seen > 50, "only {seen} source files found");
    assert!(
        offenders.is_empty(),
        "functions longer than {MAX_FN_LINES} lines (split them into named steps):\n{}",
        offenders.join("\n")
    );
}

/// The length check finds a planted long function and measures it from
/// its `fn` line to its closing brace, past braces in strings, characters
/// and comments; it passes over one at the limit, declarations, and
/// `#[cfg(test)]` code.
#[test]
fn the_length_check_finds_a_planted_long_function() {
    let body = |n: usize| "    let _ = 1;\n".repeat(n);
    // Two lines of signature and brace, then the body.
    let text = format!(
        "//! A file.\n\
         /// Docs are not counted. {{\n\
         pub(crate) fn long<'a>(x: &'a str) -> Result<(), ()>\n{{\n\
         {}    let s = \"}}\"; let c = '}}'; let r = r#\"}}\"#; /* }} */ // }}\n\
         }}\n\
         fn at_limit() {{\n{}}}\n\
         trait T {{ fn declared(&self); }}\n\
         #[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{}    }}\n}}\n",
        body(119),
        body(118),
        body(200)
    );
    assert_eq!(
        long_functions(&text, MAX_FN_LINES),
        vec![LongFn {
            line: 3,
            name: "long".into(),
            lines: 123
        }]
    );
}
