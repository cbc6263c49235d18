//! The compiler matrix: the example workflows built with every compiler and
//! flag combination of scripts/build-matrix.sh (gcc at each -O level,
//! distro-hardened flags, LTO, -fno-plt, PGO, retpolines, frame pointers;
//! clang-16 with lld-16) merge, answer exactly as their unfused
//! deployment, and every RPC site becomes a direct `call rel32` ending
//! where the original call ended and calling into the new code
//! (`.text.faasfuse.rpc`), constant-name sites reaching their callee's
//! entry stub.
//!
//! Lowering is checked from the bytes, not from faasfuse's manifest: sites
//! come from `faasfuse inspect` of the *input* libraries (which must agree
//! with the `/* rpc-site: ... */` markers in the sources), and the fused
//! output is decoded with iced-x86 at those addresses, moved by each
//! image's displacement as its `.symtab` shows it.
//!
//! Each workflow is also merged with `--isolate mpk` (`stack` for a callee
//! with TLS), and the fused image's executable pages are scanned by this
//! test's own code (tests/common/pkru.rs), not faasfuse's scanner: the only
//! WRPKRU/XRSTOR/XRSTORS byte sequences are in the `faasfuse::ff_pkru_gate*`
//! functions of its `.symtab`, as many WRPKRUs as the runtime's gates hold.

mod common;
use common::pkru;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl};
use object::{Object, ObjectSection, ObjectSymbol};

/// Every variant of the matrix; all must pass (a missing compiler fails).
const VARIANTS: &[&str] = &[
    "gcc-O0",
    "gcc-O1",
    "gcc-O2",
    "gcc-O3",
    "gcc-Os",
    "gcc-hardened",
    "gcc-lto",
    "gcc-noplt",
    "gcc-pgo",
    "gcc-retpoline",
    "gcc-fp",
    "clang-O0",
    "clang-O2",
    "clang-O3",
    "clang-retpoline",
];

/// Inputs per workflow: enough to take every branch (keywords included).
const INPUTS: usize = 40;

/// Build every variant once; PGO is trained on the workflows' inputs.
fn matrix() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("compiler-matrix");
        let pgo = dir.join("pgo-data");
        let _ = std::fs::remove_dir_all(&pgo);
        let mut first: Vec<&str> = VARIANTS
            .iter()
            .copied()
            .filter(|v| *v != "gcc-pgo")
            .collect();
        first.push("gcc-pgo-gen");
        build_matrix(&dir, &first, Some(&pgo));
        for w in workflows() {
            let inputs = generate_inputs(&w, INPUTS, 0x9601);
            let file = input_file(&format!("pgo-train-{}", w.name), &inputs);
            serve(
                &w.run_args_in(&dir.join("gcc-pgo-gen")),
                &w.root,
                &file,
                false,
            );
        }
        build_matrix(&dir, &["gcc-pgo"], Some(&pgo));
        dir
    })
}

/// `/* rpc-site: callee=X fn=F */` markers of each library's source:
/// library file name -> [(callee, function)].
fn markers() -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in std::fs::read_dir(repo().join("fixtures/functions")).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("/* rpc-site:") else {
                continue;
            };
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap()
                    .to_string()
            };
            out.entry(format!("lib{stem}.so"))
                .or_default()
                .push((field("callee="), field("fn=")));
        }
    }
    out
}

struct Elf {
    data: Vec<u8>,
}

impl Elf {
    fn read(p: &Path) -> Elf {
        Elf {
            data: std::fs::read(p).unwrap(),
        }
    }
    fn file(&self) -> object::File<'_> {
        object::File::parse(&*self.data).unwrap()
    }
    /// Address of a symbol of `.symtab` (else `.dynsym`).
    fn symbol(&self, name: &str) -> Option<u64> {
        let f = self.file();
        f.symbols()
            .chain(f.dynamic_symbols())
            .find(|s| s.name() == Ok(name) && s.address() != 0)
            .map(|s| s.address())
    }
    /// Up to `n` bytes at virtual address `addr`, from the section
    /// holding it (fewer at its end, none outside every section: a wrong
    /// address decodes as an invalid instruction and is reported).
    fn bytes_at(&self, addr: u64, n: usize) -> Vec<u8> {
        let f = self.file();
        let Some(s) = f
            .sections()
            .find(|s| s.address() <= addr && addr < s.address() + s.size())
        else {
            return Vec::new();
        };
        let data = s.data().unwrap_or_default();
        let rest = data
            .get((addr - s.address()) as usize..)
            .unwrap_or_default();
        rest[..n.min(rest.len())].to_vec()
    }
    /// Name of the section holding virtual address `addr`.
    fn section_of(&self, addr: u64) -> Option<String> {
        let f = self.file();
        let s = f
            .sections()
            .find(|s| s.address() <= addr && addr < s.address() + s.size())?;
        s.name().ok().map(str::to_string)
    }
}

fn inspect_sites(lib: &Path) -> Vec<serde_json::Value> {
    let out = run_ok(faasfuse().arg("inspect").arg("--json").arg(lib));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["rpc_sites"].as_array().unwrap().clone()
}

/// Same function, or a part the compiler split off it (`F.cold`,
/// `F.part.0`, `F.constprop.0`).
fn same_function(site: &str, marker: &str) -> bool {
    site == marker
        || site
            .strip_prefix(marker)
            .is_some_and(|r| r.starts_with('.'))
}

/// Counts of one workflow in one variant.
#[derive(Default, Debug)]
struct Tally {
    constant: usize,
    constant_lowered: usize,
    dynamic: usize,
    dynamic_lowered: usize,
    /// Input images merged with `--isolate mpk` and checked byte by byte.
    pkru_images: usize,
    problems: Vec<String>,
}

/// WRPKRU sequences in the runtime's gates, counted in the runtime image
/// itself (which holds none anywhere else).
fn runtime_gate_wrpkrus() -> usize {
    let rt = faasfuse_core::runtime::RUNTIME_SO;
    let gates = pkru::symbol_ranges(rt, "ff_pkru_gate");
    let found = pkru::sequences(rt);
    let in_gate = |f: &pkru::Found| gates.iter().any(|g| f.address >= g.1 && f.address < g.2);
    assert!(
        found.iter().all(in_gate),
        "runtime: {found:?} outside {gates:?}"
    );
    found.iter().filter(|f| f.kind == "wrpkru").count()
}

/// Merge `w` with every callee isolated with `mpk` (`stack` for one with
/// TLS, which `mpk` refuses) into `out`, and check its executable pages by
/// this test's own scan: every WRPKRU/XRSTOR/XRSTORS sequence lies in a
/// `faasfuse::ff_pkru_gate*` function of its `.symtab`, and those hold
/// exactly the runtime's WRPKRUs. The input images it covered.
fn check_pkru(w: &Workflow, dir: &Path, out: &Path) -> Result<usize, String> {
    let mut cmd = faasfuse();
    cmd.arg("merge")
        .args(w.run_args_in(dir))
        .args(["--isolate", "mpk"]);
    for (f, lib) in &w.functions {
        if *f != w.root && has_tls(&dir.join(lib)) {
            cmd.arg(format!("--isolate-fn={f}=stack"));
        }
    }
    let merged = cmd.arg("-o").arg(out).output().unwrap();
    if !merged.status.success() {
        return Err(format!(
            "merge --isolate mpk failed: {}",
            String::from_utf8_lossy(&merged.stderr)
        ));
    }
    let data = std::fs::read(out).unwrap();
    let gates = pkru::symbol_ranges(&data, "faasfuse::ff_pkru_gate");
    let found = pkru::sequences(&data);
    let outside: Vec<_> = found
        .iter()
        .filter(|f| !gates.iter().any(|g| f.address >= g.1 && f.address < g.2))
        .collect();
    let in_gates = found.len() - outside.len();
    let want = runtime_gate_wrpkrus();
    if !outside.is_empty() || in_gates != want || found.iter().any(|f| f.kind != "wrpkru") {
        return Err(format!(
            "{}: {outside:?} outside the gates {gates:?}; {in_gates} in them, the runtime's gates hold {want}",
            out.display()
        ));
    }
    Ok(w.functions.len())
}

/// Check that every site of `w`'s input libraries is a `call rel32` in the
/// fused image `out`, ending where the original call ended, a constant
/// name's thunk jumping to the callee's entry stub.
fn check_sites(
    w: &Workflow,
    dir: &Path,
    out: &Path,
    marks: &BTreeMap<String, Vec<(String, String)>>,
) -> Tally {
    let fused = Elf::read(out);
    let mut t = Tally::default();
    for (name, lib) in &w.functions {
        let input_path = dir.join(lib);
        let input = Elf::read(&input_path);
        let sites = inspect_sites(&input_path);
        for (callee, func) in marks.get(lib).into_iter().flatten() {
            let found = sites.iter().any(|s| {
                same_function(s["function"].as_str().unwrap_or(""), func)
                    && match s["callee"]["kind"].as_str().unwrap() {
                        "dynamic" => callee == "dynamic",
                        _ => s["callee"]["name"] == callee.as_str(),
                    }
            });
            if !found {
                t.problems.push(format!(
                    "{lib}: marked site {callee} in {func} not found: {sites:?}"
                ));
            }
        }
        let disp = fused
            .symbol(&format!("{name}::faas_func_call"))
            .unwrap()
            .wrapping_sub(input.symbol("faas_func_call").unwrap());
        for s in &sites {
            let addr = s["address"].as_u64().unwrap();
            let len = s["length"].as_u64().unwrap();
            // The input really has a call there.
            let orig = Decoder::with_ip(
                64,
                &input.bytes_at(addr, len as usize),
                addr,
                DecoderOptions::NONE,
            )
            .decode();
            assert!(
                matches!(
                    orig.flow_control(),
                    FlowControl::Call | FlowControl::IndirectCall
                ) && orig.len() as u64 == len,
                "{lib}: no call at {addr:#x}: {orig}"
            );
            let end = addr + len + disp;
            let call = Decoder::with_ip(
                64,
                &fused.bytes_at(end - 5, 5),
                end - 5,
                DecoderOptions::NONE,
            )
            .decode();
            let constant = s["callee"]["kind"] == "constant";
            if constant {
                t.constant += 1;
            } else {
                t.dynamic += 1;
            }
            // A `call rel32` ending there, into the new code (a retpoline
            // build's unlowered site is a `call rel32` too, of its thunk).
            let lowered = call.code() == Code::Call_rel32_64
                && call.next_ip() == end
                && fused.section_of(call.near_branch_target()).as_deref()
                    == Some(".text.faasfuse.rpc");
            let reaches = if !lowered {
                false
            } else if constant {
                // The thunk jumps to the callee's entry stub.
                let callee = s["callee"]["name"].as_str().unwrap();
                let stub = fused.symbol(&format!("{callee}::entry_stub"));
                let thunk = call.near_branch_target();
                let code = fused.bytes_at(thunk, 48);
                stub.is_some()
                    && Decoder::with_ip(64, &code, thunk, DecoderOptions::NONE)
                        .iter()
                        .take(8)
                        .any(|x| {
                            x.code() == Code::Jmp_rel32_64 && Some(x.near_branch_target()) == stub
                        })
            } else {
                true
            };
            match (reaches, constant) {
                (true, true) => t.constant_lowered += 1,
                (true, false) => t.dynamic_lowered += 1,
                (false, _) => t.problems.push(format!(
                    "{lib}: site {addr:#x} ({}) is `{call}` at {:#x} in the fused image",
                    s["callee"],
                    end - 5
                )),
            }
        }
    }
    t
}

#[test]
fn every_compiler_and_flag_merges_answers_identically_and_lowers_every_site() {
    let dir = matrix();
    let marks = markers();
    let outs = scratch_dir("compilers-out");
    let rows: Vec<(String, bool, bool, Tally)> = std::thread::scope(|scope| {
        let workers: Vec<_> = VARIANTS
            .iter()
            .map(|v| {
                let (marks, outs) = (&marks, &outs);
                scope.spawn(move || {
                    let vdir = dir.join(v);
                    let mut total = Tally::default();
                    let (mut merges, mut identical) = (true, true);
                    for w in workflows() {
                        let inputs = generate_inputs(&w, INPUTS, 0xc0de);
                        let file = input_file(&format!("compilers-{}-{v}", w.name), &inputs);
                        let out = outs.join(format!("{}-{v}.so", w.name));
                        let merged = faasfuse()
                            .arg("merge")
                            .args(w.run_args_in(&vdir))
                            .arg("-o")
                            .arg(&out)
                            .output()
                            .unwrap();
                        if !merged.status.success() {
                            merges = false;
                            total.problems.push(format!(
                                "{}: merge failed: {}",
                                w.name,
                                String::from_utf8_lossy(&merged.stderr)
                            ));
                            continue;
                        }
                        let unfused = serve(&w.run_args_in(&vdir), &w.root, &file, false);
                        let fused = serve(
                            &[format!("{}={}", w.root, out.display())],
                            &w.root,
                            &file,
                            false,
                        );
                        if unfused != fused {
                            identical = false;
                            total
                                .problems
                                .push(format!("{}: fused answers differ", w.name));
                        }
                        let mpk_out = outs.join(format!("{}-{v}-mpk.so", w.name));
                        match check_pkru(&w, &vdir, &mpk_out) {
                            Ok(n) => total.pkru_images += n,
                            Err(p) => total.problems.push(format!("{}: {p}", w.name)),
                        }
                        let t = check_sites(&w, &vdir, &out, marks);
                        total.constant += t.constant;
                        total.constant_lowered += t.constant_lowered;
                        total.dynamic += t.dynamic;
                        total.dynamic_lowered += t.dynamic_lowered;
                        total
                            .problems
                            .extend(t.problems.into_iter().map(|p| format!("{}: {p}", w.name)));
                    }
                    (v.to_string(), merges, identical, total)
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The table README.md reports.
    eprintln!("| variant | merges | identical answers | constant-name sites lowered | run-time-name sites lowered |");
    eprintln!("|---|---|---|---|---|");
    for (v, m, i, t) in &rows {
        eprintln!(
            "| {v} | {} | {} | {}/{} | {}/{} |",
            if *m { "yes" } else { "no" },
            if *i { "yes" } else { "no" },
            t.constant_lowered,
            t.constant,
            t.dynamic_lowered,
            t.dynamic
        );
    }
    let pkru_images: usize = rows.iter().map(|r| r.3.pkru_images).sum();
    eprintln!(
        "--isolate mpk: {pkru_images} input images in {} fused images: PKRU writes only in the runtime's gates ({} WRPKRU)",
        VARIANTS.len() * workflows().len(),
        runtime_gate_wrpkrus()
    );
    let problems: Vec<String> = rows
        .iter()
        .flat_map(|(v, _, _, t)| t.problems.iter().map(move |p| format!("{v}: {p}")))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every constant-name marker of a workflow's sources is a site.
    let marked: usize = workflows()
        .iter()
        .flat_map(|w| {
            w.functions
                .iter()
                .map(|(_, lib)| lib.clone())
                .collect::<Vec<_>>()
        })
        .filter_map(|lib| marks.get(&lib))
        .flatten()
        .filter(|(callee, _)| callee != "dynamic")
        .count();
    assert!(marked >= 8, "markers: {marks:?}");
    for (v, _, _, t) in &rows {
        assert!(
            t.constant >= marked,
            "{v}: {} constant-name sites, {marked} marked",
            t.constant
        );
        assert_eq!(t.constant, t.constant_lowered, "{v}");
        let images: usize = workflows().iter().map(|w| w.functions.len()).sum();
        assert_eq!(t.pkru_images, images, "{v}: images checked under mpk");
    }
}
