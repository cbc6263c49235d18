//! Debug info of a fused image: every input image's DWARF is carried, so
//! a user's tools see each function as in the library it was built as.
//!
//! The oracles are outside faasfuse: binutils (`objdump` lists each input's
//! line-table rows, `addr2line` resolves them) and gdb. An image's
//! displacement is read from the symbol tables (`S` in the input,
//! `Image::S` in the fused `.symtab`) and checked against the manifest.
//!
//! - Every line-table row of every input (root and callees) of every
//!   example workflow, at its displaced address in the fused image, names
//!   the same function, inlined callers and file:line as in its input.
//! - gdb stopped on a callee source line (inside an inlined helper) shows
//!   the same backtrace, locals, static, thread-local variable and source
//!   as the unfused deployment.
//! - The same line check over the debug-info variants of the compiler
//!   matrix (DWARF 4 and 5, -g3, compressed sections, type units, split
//!   DWARF, gcc and clang); for split DWARF, gdb reads the `.dwo` files.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use object::{Object, ObjectSymbol};

/// The addresses of the line-table rows of `elf` as `objdump
/// --dwarf=decodedline` lists them, without end-of-sequence rows (which
/// address the byte after a sequence) and the empty rows at that same
/// address just before them (they cover no instruction: a reader resolves
/// that address from whatever follows the sequence).
fn line_rows(elf: &Path) -> BTreeSet<u64> {
    let text = run_stdout(Command::new("objdump").arg("--dwarf=decodedline").arg(elf));
    let mut rows = BTreeSet::new();
    // Rows of the current sequence, so far.
    let mut sequence: Vec<u64> = Vec::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        // `FILE LINE 0xADDR [VIEW] [x]`; an end of sequence has `-` as LINE.
        for i in 1..t.len() {
            if let Some(hex) = t[i].strip_prefix("0x") {
                if let Ok(a) = u64::from_str_radix(hex, 16) {
                    if t[i - 1].parse::<u64>().is_ok() {
                        sequence.push(a);
                    } else if t[i - 1] == "-" {
                        rows.extend(sequence.drain(..).filter(|r| *r != a));
                    }
                }
                break;
            }
        }
    }
    rows.extend(sequence);
    rows
}

/// One address as `addr2line -f -i` resolves it: (function, file:line)
/// for the innermost frame, then each inlined caller.
type Frames = Vec<(String, String)>;

/// `addr2line -a -f -i -e ELF` of `addrs` (one batch on stdin).
fn addr2line(elf: &Path, addrs: &[u64]) -> Vec<Frames> {
    let mut child = Command::new("addr2line")
        .args(["-a", "-f", "-i", "-e"])
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("addr2line is not installed (Debian binutils): {e}"));
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "addr2line {}: {}",
        elf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut res: Vec<Frames> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        assert!(l.starts_with("0x"), "addr2line {}: {l}", elf.display());
        let mut frames = Frames::new();
        while lines.peek().is_some_and(|n| !n.starts_with("0x")) {
            let func = lines.next().unwrap().to_string();
            let loc = lines.next().unwrap_or("").to_string();
            frames.push((func, loc));
        }
        res.push(frames);
    }
    assert_eq!(res.len(), addrs.len(), "addr2line {}", elf.display());
    res
}

/// gdb's `info line *ADDR` (not running) of each of `addrs` in `elf`,
/// without its addresses and symbols: `Line N of "FILE"`, or that there is
/// no line. gdb reads split DWARF's line tables where addr2line does not.
fn gdb_lines(elf: &Path, addrs: &[u64]) -> Vec<String> {
    let script = scratch_dir("debuginfo-gdb-lines").join(format!(
        "{}-{}.gdb",
        std::process::id(),
        elf.to_string_lossy().replace('/', "_")
    ));
    let cmds: String = addrs
        .iter()
        .map(|a| format!("info line *{a:#x}\n"))
        .collect();
    std::fs::write(&script, cmds).unwrap();
    let out = run_ok(
        Command::new("gdb")
            .args(["-batch", "-nx", "-x"])
            .arg(&script)
            .arg(elf),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("Line ") || l.starts_with("No line number"))
        .map(|l| {
            let end = [" starts at address", " is at address", " for address"]
                .iter()
                .filter_map(|m| l.find(m))
                .min()
                .unwrap_or(l.len());
            l[..end].to_string()
        })
        .collect();
    assert_eq!(
        lines.len(),
        addrs.len(),
        "gdb info line {}:\n{text}",
        elf.display()
    );
    lines
}

/// Address of `name` in the `.symtab` (else `.dynsym`) of `elf`.
fn symbol(elf: &Path, name: &str) -> Option<u64> {
    let data = std::fs::read(elf).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let found = f
        .symbols()
        .chain(f.dynamic_symbols())
        .find(|s| s.name() == Ok(name) && s.address() != 0)
        .map(|s| s.address());
    found
}

/// The displacement of image `name` (input library `lib`) in `fused`:
/// `Image::faas_func_call` of the fused `.symtab` less `faas_func_call`
/// of the input, which must agree with the manifest's.
fn displacement(fused: &Path, manifest: &serde_json::Value, name: &str, lib: &Path) -> u64 {
    let input = symbol(lib, "faas_func_call").unwrap_or_else(|| panic!("{}", lib.display()));
    let out = symbol(fused, &format!("{name}::faas_func_call"))
        .unwrap_or_else(|| panic!("{name}::faas_func_call in {}", fused.display()));
    let disp = out.wrapping_sub(input);
    let listed = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} in manifest {manifest}"))["displacement"]
        .as_u64()
        .unwrap();
    assert_eq!(disp, listed, "{name}: symbol tables and manifest disagree");
    disp
}

/// How the rows of one input image resolve in the fused image.
#[derive(Debug, Default)]
struct ImageLines {
    image: String,
    rows: usize,
    /// Rows DWARF gives no line for (a line-0 row; for split DWARF, rows
    /// addr2line cannot name a file of): addr2line names their file from
    /// the symbol table, see [`same_frames`].
    symtab_rows: usize,
    /// Answers that differ, addr2line's and gdb's (a row may have two):
    /// `image addr (fused addr): input answer / fused answer`.
    mismatches: Vec<String>,
}

/// A copy of input `lib` in `dir` whose `.symtab` names every symbol `S`
/// as the fused image names it, `Image::S` (`objcopy --prefix-symbols`):
/// where addr2line names a function from the symbol table rather than from
/// DWARF (no usable subprogram, or split DWARF, whose `.dwo` files it does
/// not read), the input answers as the fused image must; where DWARF names
/// it, the copy answers as the input.
fn named_as_fused(lib: &Path, image: &str) -> PathBuf {
    // One directory per directory of inputs (a fixture or matrix variant).
    let variant = lib.parent().unwrap().file_name().unwrap().to_string_lossy();
    let dir = scratch_dir(&format!("debuginfo-named-as-fused/{variant}"));
    let out = dir.join(format!(
        "{image}-{}",
        lib.file_name().unwrap().to_string_lossy()
    ));
    run_ok(
        Command::new("objcopy")
            .arg(format!("--prefix-symbols={image}::"))
            .arg(lib)
            .arg(&out),
    );
    out
}

/// Whether the fused image's answer `got` for a row is the input's `want`
/// (from [`named_as_fused`]); the second when the input's answer names
/// no line, only a symbol (`Image::S`) and maybe the file of an `STT_FILE`
/// symbol (`Image::F:?`): those come from `.symtab`, not debug info, so
/// there any answer without a line is accepted whose function is `Image::S`
/// or an alias of it (a symbol of the input at the same address:
/// addr2line's choice among aliases follows the symbol table's order).
fn same_frames(
    want: &Frames,
    got: &Frames,
    image: &str,
    symbols: &BTreeMap<String, u64>,
) -> (bool, bool) {
    if want == got {
        return (true, false);
    }
    let prefix = format!("{image}::");
    let no_line = |loc: &str| loc == "??:?" || (loc.starts_with(&prefix) && loc.ends_with(":?"));
    let symtab = want.len() == 1 && no_line(&want[0].1);
    let address = |f: &str| f.strip_prefix(&prefix).and_then(|n| symbols.get(n));
    let ok = symtab
        && got.len() == 1
        && got[0].1.ends_with(":?")
        && address(&got[0].0).is_some()
        && address(&got[0].0) == address(&want[0].0);
    (ok, symtab)
}

/// The `.symtab` of `elf`: name -> address.
fn symbols(elf: &Path) -> BTreeMap<String, u64> {
    let data = std::fs::read(elf).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let map = f
        .symbols()
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .collect();
    map
}

/// Resolve every line-table row of every input image (root first) at its
/// displaced address in `fused` and compare with the input's own answer
/// (its symbols named as in the fused image, see [`named_as_fused`]).
fn check_lines(
    fused: &Path,
    manifest: &serde_json::Value,
    images: &[(String, PathBuf)],
) -> Vec<ImageLines> {
    images
        .iter()
        .map(|(name, lib)| {
            let disp = displacement(fused, manifest, name, lib);
            let addrs: Vec<u64> = line_rows(lib).into_iter().collect();
            let shifted: Vec<u64> = addrs.iter().map(|a| a.wrapping_add(disp)).collect();
            let want = addr2line(&named_as_fused(lib, name), &addrs);
            let syms = symbols(lib);
            let got = addr2line(fused, &shifted);
            let mut r = ImageLines {
                image: name.clone(),
                rows: addrs.len(),
                ..Default::default()
            };
            for ((a, w), g) in addrs.iter().zip(&want).zip(&got) {
                let (same, symtab) = same_frames(w, g, name, &syms);
                r.symtab_rows += usize::from(symtab);
                if !same {
                    r.mismatches.push(format!(
                        "{name} {a:#x} (fused {:#x}): input {w:?} / fused {g:?}",
                        a.wrapping_add(disp)
                    ));
                }
            }
            // The same rows as gdb reads them.
            let want = gdb_lines(lib, &addrs);
            let got = gdb_lines(fused, &shifted);
            for ((a, w), g) in addrs.iter().zip(&want).zip(&got) {
                if w != g {
                    r.mismatches.push(format!(
                        "{name} {a:#x} (fused {:#x}): gdb `info line`: input {w:?} / fused {g:?}",
                        a.wrapping_add(disp)
                    ));
                }
            }
            r
        })
        .collect()
}

/// A workflow's functions built in `dir`, root first.
fn images_in(w: &Workflow, dir: &Path) -> Vec<(String, PathBuf)> {
    let mut f: Vec<(String, PathBuf)> = w
        .functions
        .iter()
        .map(|(n, lib)| (n.clone(), dir.join(lib)))
        .collect();
    f.sort_by_key(|(n, _)| n != &w.root);
    f
}

/// Print a table of `results` (one per workflow and image); the images
/// without rows or with a mismatch, showing the first few mismatches.
fn line_problems(what: &str, results: &[(String, ImageLines)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (w, r) in results {
        eprintln!(
            "{what} {w} {}: {} rows ({} without a DWARF line), {} answers differ",
            r.image,
            r.rows,
            r.symtab_rows,
            r.mismatches.len()
        );
        if r.rows == 0 {
            problems.push(format!("{what} {w} {}: no line-table rows", r.image));
        }
        if !r.mismatches.is_empty() {
            problems.push(format!(
                "{what} {w} {}: {} answers differ (addr2line and gdb, {} rows), first:\n  {}",
                r.image,
                r.mismatches.len(),
                r.rows,
                r.mismatches[..r.mismatches.len().min(4)].join("\n  ")
            ));
        }
    }
    problems
}

/// The tools the line-row checks ask: addr2line, objdump, objcopy, gdb.
fn require_line_tools() {
    require_tool("addr2line", &["--version"], "binutils");
    require_tool("objdump", &["--version"], "binutils");
    require_tool("objcopy", &["--version"], "binutils");
    require_tool("gdb", &["--version"], "gdb");
}

#[test]
fn every_line_row_of_every_input_resolves_in_the_fused_image_as_in_its_input() {
    require_line_tools();
    let dir = fixtures().join("debug");
    let outs = scratch_dir("debuginfo-lines");
    let mut results = Vec::new();
    for w in workflows() {
        let out = outs.join(format!("{}.so", w.name));
        let manifest = fuse_workflow(&w, "debug", &out, &[]);
        for r in check_lines(&out, &manifest, &images_in(&w, &dir)) {
            results.push((w.name.clone(), r));
        }
    }
    let problems = line_problems("debug", &results);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// gdb in a callee

/// The line of tests/data/`source` holding `marker`, 1-based.
fn marked_line(source: &str, marker: &str) -> usize {
    let text = std::fs::read_to_string(repo().join("tests/data").join(source)).unwrap();
    text.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} in {source}"))
        + 1
}

/// What gdb showed of one command of [`gdb_in_callee`]'s session.
type Session = BTreeMap<&'static str, String>;

/// The commands run at the breakpoint, each output kept under its name.
const GDB_COMMANDS: &[(&str, &str)] = &[
    ("bt", "bt 3"),
    ("v", "print v"),
    ("static_counter", "print static_counter"),
    ("tls_var", "print tls_var"),
    ("frame", "frame 1"),
    ("locals", "info locals"),
    ("local_value", "print local_value"),
    ("list", "list dbg_callee.c:@LINE@,@LINE@"),
];

/// Run `faasfuse run ARGS -- Root INPUT` under gdb, stop at
/// dbg_callee.c:`line` and run [`GDB_COMMANDS`]; gdb's whole output and
/// each command's.
fn gdb_in_callee(deploy: &[String], input: &str, line: usize) -> (String, Session) {
    let mut cmd = Command::new("timeout");
    cmd.args(["300", "gdb", "-batch", "-nx"])
        .args(["-ex", "set breakpoint pending on"])
        .arg("-ex")
        .arg(format!("break dbg_callee.c:{line}"))
        .args(["-ex", "run"]);
    for (name, c) in GDB_COMMANDS {
        cmd.arg("-ex")
            .arg(format!("echo @@{name}\\n"))
            .arg("-ex")
            .arg(c.replace("@LINE@", &line.to_string()));
    }
    cmd.args(["-ex", "echo @@end\\n", "-ex", "kill", "--args"])
        .arg(env!("CARGO_BIN_EXE_faasfuse"))
        .arg("run")
        .args(deploy)
        .args(["--", "Root", input]);
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut session = Session::new();
    for (name, _) in GDB_COMMANDS {
        let start = format!("@@{name}\n");
        let part = text
            .split_once(&start)
            .map_or("", |(_, rest)| rest.split("@@").next().unwrap_or(""));
        session.insert(name, part.trim().to_string());
    }
    (text, session)
}

/// Hex numbers (pointers, return addresses) replaced: they differ between
/// deployments.
fn without_addresses(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        out.push_str("0x_");
        rest = rest[i + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out + rest
}

/// Check what gdb showed in the callee against the source and the input.
fn check_session(what: &str, text: &str, s: &Session, line: usize, call_line: usize, input: &str) {
    let len = input.len() as i64;
    let local = 1234 + len + i64::from(input.starts_with('!'));
    let ctx = || format!("{what}: gdb said:\n{text}");
    let frames: Vec<&str> = s["bt"].lines().filter(|l| l.starts_with('#')).collect();
    assert!(frames.len() >= 3, "{}", ctx());
    let at = |f: &str, func: &str, l: usize| {
        f.contains(&format!(" {func} (")) && f.contains(&format!("dbg_callee.c:{l}"))
    };
    assert!(at(frames[0], "inlined_helper", line), "{}", ctx());
    assert!(at(frames[1], "outer_work", call_line), "{}", ctx());
    assert!(
        frames[2].contains(" faas_func_call (") && frames[2].contains("dbg_callee.c:"),
        "{}",
        ctx()
    );
    assert_eq!(s["v"], format!("$1 = {local}"), "{}", ctx());
    assert_eq!(s["static_counter"], "$2 = 42", "{}", ctx());
    assert_eq!(s["tls_var"], format!("$3 = {}", 7000 + len), "{}", ctx());
    assert!(s["frame"].contains("outer_work"), "{}", ctx());
    assert!(
        s["locals"].contains(&format!("local_value = {local}")),
        "{}",
        ctx()
    );
    assert_eq!(s["local_value"], format!("$4 = {local}"), "{}", ctx());
    assert!(
        s["list"].starts_with(&format!("{line}\t")) && s["list"].contains("dbg-marker"),
        "{}",
        ctx()
    );
}

#[test]
fn gdb_in_a_fused_callee_shows_what_the_unfused_callee_shows() {
    require_tool("gdb", &["--version"], "gdb");
    let line = marked_line("dbg_callee.c", "dbg-marker: stop here");
    let call_line = marked_line("dbg_callee.c", "return inlined_helper(");
    let input = "hello";
    let variants = [
        ("dwarf5", &["-g"][..]),
        ("dwarf4", &["-g", "-gdwarf-4"][..]),
    ];
    // The oracle first, for every variant: the unfused deployment, each
    // library loaded alone.
    let mut oracles = Vec::new();
    for (variant, flags) in variants {
        let dir = scratch_dir(&format!("debuginfo-gdb-{variant}"));
        let flags: Vec<&str> = std::iter::once("-Wall")
            .chain(flags.iter().copied())
            .collect();
        let root = build_test_lib_with("dbg_root.c", &dir, &flags);
        let callee = build_test_lib_with("dbg_callee.c", &dir, &flags);
        let (text, unfused) = gdb_in_callee(
            &[
                format!("Root={}", root.display()),
                format!("Callee={}", callee.display()),
            ],
            input,
            line,
        );
        let what = format!("{variant} unfused");
        check_session(&what, &text, &unfused, line, call_line, input);
        oracles.push((variant, dir, root, callee, unfused));
    }
    for (variant, dir, root, callee, unfused) in oracles {
        let fused = dir.join("fused.so");
        let m = merge_with_manifest([spec("Root", &root), spec("Callee", &callee)], &fused, &[]);
        // The root's TLS block comes first, so the callee's TLS variable
        // moved: gdb finds it only through the shifted offset.
        assert!(
            m["inputs"][1]["tls_offset"].as_u64().is_some_and(|x| x > 0),
            "{variant}: the callee's TLS block did not move: {}",
            m["inputs"][1]
        );
        let (text, fused_session) =
            gdb_in_callee(&[format!("Root={}", fused.display())], input, line);
        let what = format!("{variant} fused");
        check_session(&what, &text, &fused_session, line, call_line, input);
        for (name, _) in GDB_COMMANDS {
            let (a, b) = (&unfused[name], &fused_session[name]);
            let (a, b) = if *name == "bt" {
                // The callee's own frames; their callers differ (the host
                // serves the unfused call, the root calls the fused one).
                let three = |s: &str| {
                    s.lines()
                        .filter(|l| l.starts_with('#'))
                        .take(3)
                        .map(without_addresses)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                (three(a), three(b))
            } else {
                (without_addresses(a), without_addresses(b))
            };
            assert_eq!(a, b, "{variant}: `{name}` differs fused:\n{text}");
        }
    }
}

// ---------------------------------------------------------------------------
// The compiler matrix's debug-info variants

/// Every debug-info variant of scripts/build-matrix.sh; all must pass (a
/// missing compiler fails).
const VARIANTS: &[&str] = &[
    "gcc-g-dwarf4",
    "gcc-g-dwarf5",
    "gcc-g3",
    "gcc-gz",
    "gcc-g-types",
    "gcc-split-dwarf",
    "clang-g-dwarf4",
    "clang-g-dwarf5",
    "clang-gz",
    "clang-g-types",
];

/// Build every variant once.
fn matrix() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("debuginfo-matrix");
        build_matrix(&dir, VARIANTS, None);
        dir
    })
}

/// The debugging entries of gdb's `info functions` and `info variables` of
/// `elf` (not running): `File F:` blocks of `LINE: declaration`, as
/// `F|LINE: declaration`; gdb reads split DWARF's `.dwo` files for them.
fn gdb_declarations(elf: &Path) -> BTreeSet<String> {
    let out = run_ok(
        Command::new("gdb")
            .args([
                "-batch",
                "-nx",
                "-ex",
                "info functions",
                "-ex",
                "info variables",
            ])
            .arg(elf),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut set = BTreeSet::new();
    let mut file: Option<String> = None;
    for l in text.lines() {
        if let Some(f) = l.strip_prefix("File ") {
            file = Some(f.trim_end_matches(':').to_string());
        } else if l.starts_with("Non-debugging symbols") || l.starts_with("All defined") {
            file = None;
        } else if let (Some(f), false) = (&file, l.trim().is_empty()) {
            set.insert(format!("{f}|{l}"));
        }
    }
    set
}

#[test]
fn debug_info_variants_of_the_compiler_matrix_resolve_every_line_row() {
    require_line_tools();
    let dir = matrix();
    let outs = scratch_dir("debuginfo-matrix-out");
    let mut problems = Vec::new();
    for v in VARIANTS {
        let vdir = dir.join(v);
        let mut results = Vec::new();
        for w in workflows() {
            let out = outs.join(format!("{}-{v}.so", w.name));
            let manifest = fuse_workflow_in(&w, &vdir, &out, &[]);
            let images = images_in(&w, &vdir);
            // Every image's DWARF is carried; with split DWARF the manifest
            // names each image's `.dwo` files, and they are where it says.
            let info = &manifest["debug_info"];
            for (name, _) in &images {
                if !info["carried"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c == name)
                {
                    problems.push(format!("{v} {} {name}: DWARF not carried: {info}", w.name));
                }
                let dwo: Vec<&str> = info["dwo"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d[0] == *name)
                    .filter_map(|d| d[1].as_str())
                    .collect();
                let split = v.contains("split");
                if split == dwo.is_empty() || dwo.iter().any(|d| !Path::new(d).is_file()) {
                    problems.push(format!("{v} {} {name}: .dwo files {dwo:?}", w.name));
                }
            }
            for r in check_lines(&out, &manifest, &images) {
                results.push((w.name.clone(), r));
            }
            // Functions and variables as gdb lists them from the full
            // debugging entries (from the `.dwo` files for split DWARF):
            // each input's are the fused image's too.
            let fused_decls = gdb_declarations(&out);
            for (name, lib) in &images {
                let decls = gdb_declarations(lib);
                if decls.is_empty() {
                    problems.push(format!("{v} {} {name}: gdb lists no declarations", w.name));
                }
                let missing: Vec<&String> = decls.difference(&fused_decls).collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "{v} {} {name}: {} of {} declarations gdb lists for the input are not listed for the fused image, first: {:?}",
                        w.name,
                        missing.len(),
                        decls.len(),
                        &missing[..missing.len().min(4)]
                    ));
                }
            }
        }
        problems.extend(line_problems(v, &results));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
