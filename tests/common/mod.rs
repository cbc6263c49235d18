//! Shared test support: builds the example functions from source, reads
//! the workflow descriptions, generates inputs, and runs the faasfuse binary.
#![allow(dead_code)]

pub mod damage;
pub mod elf_bytes;
pub mod pkru;
pub mod plans;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build every fixture variant once per test binary, into a directory of
/// its own (test binaries run concurrently).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fixtures-{stem}"));
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-fixtures.sh"))
            .arg(&dir)
            .output()
            .expect("run scripts/build-fixtures.sh");
        assert!(
            out.status.success(),
            "building fixtures failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Fixture variants the build script produces on this machine.
pub fn variants() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "bad")
        .collect();
    v.sort();
    v
}

pub struct Workflow {
    pub name: String,
    pub root: String,
    /// (function name, library file name)
    pub functions: Vec<(String, String)>,
    pub keywords: Vec<String>,
    /// Functions declared re-entrant (`run --reentrant`): the in-process
    /// host serves their recursion with extra workers instead of failing.
    pub reentrant: Vec<String>,
}

pub fn workflows() -> Vec<Workflow> {
    let text = std::fs::read_to_string(repo().join("fixtures/workflows.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| Workflow {
            name: w["name"].as_str().unwrap().to_string(),
            root: w["root"].as_str().unwrap().to_string(),
            functions: w["functions"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            keywords: w["keywords"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect(),
            reentrant: w["reentrant"]
                .as_array()
                .map(|a| a.iter().map(|k| k.as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// The workflow called `name` in fixtures/workflows.json.
pub fn workflow(name: &str) -> Workflow {
    workflows().into_iter().find(|w| w.name == name).unwrap()
}

/// `--lib NAME=PATH` for each function of `w`'s default build.
pub fn lib_args(w: &Workflow) -> Vec<String> {
    lib_args_for(&w.deploy_args("default"))
}

/// `--lib NAME=PATH` (for `faasfuse profile`) for each `NAME=PATH` of
/// `deploy`, in order.
pub fn lib_args_for(deploy: &[String]) -> Vec<String> {
    deploy
        .iter()
        .flat_map(|a| ["--lib".to_string(), a.clone()])
        .collect()
}

impl Workflow {
    /// `NAME=PATH` deployment arguments for a fixture variant, root first.
    pub fn deploy_args(&self, variant: &str) -> Vec<String> {
        self.deploy_args_in(&fixtures().join(variant))
    }

    /// `NAME=PATH` deployment arguments for the libraries in `dir`, root
    /// first.
    pub fn deploy_args_in(&self, dir: &Path) -> Vec<String> {
        let mut f = self.functions.clone();
        f.sort_by_key(|(n, _)| n != &self.root);
        f.iter()
            .map(|(n, lib)| format!("{n}={}", dir.join(lib).display()))
            .collect()
    }
}

impl Workflow {
    /// `faasfuse run` arguments serving the unfused deployment of a fixture
    /// variant: [`Workflow::deploy_args`] plus `--reentrant` for each
    /// function the workflow declares re-entrant.
    pub fn run_args(&self, variant: &str) -> Vec<String> {
        self.run_args_in(&fixtures().join(variant))
    }

    /// [`Workflow::run_args`] for the libraries in `dir`.
    pub fn run_args_in(&self, dir: &Path) -> Vec<String> {
        let mut a = self.deploy_args_in(dir);
        for f in &self.reentrant {
            a.extend(["--reentrant".to_string(), f.clone()]);
        }
        a
    }
}

/// splitmix64: a small deterministic generator for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `n` single-line printable inputs mixing random text and the workflow's
/// keywords, so every branch (errors, exceptions, optional callees) is hit.
pub fn generate_inputs(w: &Workflow, n: usize, seed: u64) -> Vec<String> {
    const ALPHABET: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.:;-_=+*#@!?/";
    let mut rng = Rng::new(seed ^ w.name.len() as u64);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = String::new();
        if i == 0 {
            out.push(s);
            continue;
        }
        let pieces = 1 + rng.below(6);
        for _ in 0..pieces {
            if !w.keywords.is_empty() && rng.below(3) == 0 {
                s.push_str(&w.keywords[rng.below(w.keywords.len())]);
            } else {
                for _ in 0..1 + rng.below(12) {
                    s.push(ALPHABET[rng.below(ALPHABET.len())] as char);
                }
            }
            if rng.below(2) == 0 {
                s.push(' ');
            }
        }
        s.truncate(200);
        out.push(s);
    }
    // Each keyword alone too.
    for k in &w.keywords {
        out.push(k.clone());
    }
    out
}

pub fn faasfuse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_faasfuse"))
}

/// The test kit's binary (`faasfuse-testkit`: the LBR recorder and the
/// profile generator). Cargo builds it beside `faasfuse` for
/// `cargo test --workspace`, the README's test command.
pub fn testkit() -> Command {
    let exe =
        std::path::Path::new(env!("CARGO_BIN_EXE_faasfuse")).with_file_name("faasfuse-testkit");
    assert!(
        exe.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p faasfuse-testkit` first)",
        exe.display()
    );
    Command::new(exe)
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run `cmd`, which must refuse as faasfuse refuses bad input: exit code
/// 2. Its standard error.
pub fn run_refused(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
    err
}

/// [`run_ok`], and its standard output as text.
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

/// The JSON file at `path`.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `faasfuse profile DATA ARGS... -o OUT` (ARGS: the `--lib NAME=PATH`
/// and other options), which must succeed: the summary it prints and the
/// profile it writes.
pub fn run_profile(
    data: &Path,
    args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
    out: &Path,
) -> (String, serde_json::Value) {
    let text = run_stdout(
        faasfuse()
            .arg("profile")
            .arg(data)
            .args(args)
            .arg("-o")
            .arg(out),
    );
    (text, read_json(out))
}

/// Write inputs one per line into a file in the test temp dir.
pub fn input_file(name: &str, inputs: &[String]) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("inputs-{name}-{}.txt", std::process::id()));
    std::fs::write(&p, inputs.join("\n") + "\n").unwrap();
    p
}

/// A directory for a test's outputs, created on first use.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Fuse every function of `w` (root first) into `out` with `extra` merge
/// arguments; returns the manifest.
pub fn fuse_workflow(w: &Workflow, variant: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    fuse_workflow_in(w, &fixtures().join(variant), out, extra)
}

/// [`fuse_workflow`] of the libraries in `dir`.
pub fn fuse_workflow_in(w: &Workflow, dir: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    // Functions the workflow lists as re-entrant are declared so: their
    // recursion runs inside the image, as the in-process host serves it.
    merge_with_manifest(w.run_args_in(dir), out, extra)
}

/// `faasfuse merge LIBS... -o OUT --manifest OUT.json EXTRA...`, which must
/// succeed; returns the manifest.
pub fn merge_with_manifest(
    libs: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let manifest = out.with_extension("json");
    run_ok(
        faasfuse()
            .arg("merge")
            .args(libs)
            .arg("-o")
            .arg(out)
            .arg("--manifest")
            .arg(&manifest)
            .args(extra),
    );
    serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap()
}

/// `NAME=LIB` for `merge` and `run`.
pub fn spec(name: &str, lib: &Path) -> String {
    format!("{name}={}", lib.display())
}

/// Compile the example function `fixtures/functions/STEM.c` with gcc
/// (`-O2` and `flags`) into `dir`.
pub fn build_example(dir: &Path, stem: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(format!("lib{stem}.so"));
    run_ok(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2"])
            .args(flags)
            .arg("-I")
            .arg(repo().join("fixtures/include"))
            .arg(repo().join(format!("fixtures/functions/{stem}.c")))
            .arg("-o")
            .arg(&out),
    );
    out
}

/// `scripts/build-matrix.sh DIR VARIANTS...` (PGO data in `pgo`), which
/// must succeed: a missing compiler fails the test.
pub fn build_matrix(dir: &Path, variants: &[&str], pgo: Option<&Path>) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/build-matrix.sh"))
        .arg(dir)
        .args(variants);
    if let Some(pgo) = pgo {
        cmd.env("PGO_DIR", pgo);
    }
    let out = cmd.output().expect("run scripts/build-matrix.sh");
    assert!(
        out.status.success(),
        "building the compiler matrix failed (CI installs gcc, clang-16 and lld-16):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `faasfuse build --config CONFIG --profile PROFILE --out-dir OUT`, which
/// must succeed.
pub fn build_deployment(config: &Path, profile: &Path, out: &Path) -> Output {
    run_ok(
        faasfuse()
            .arg("build")
            .arg("--config")
            .arg(config)
            .arg("--profile")
            .arg(profile)
            .arg("--out-dir")
            .arg(out),
    )
}

/// Serve `inputs` (a file, one per line) on the local host; its stdout.
pub fn serve(deploy: &[String], root: &str, inputs: &Path, ipc: bool) -> String {
    let mut cmd = faasfuse();
    cmd.arg("run").args(deploy).arg("--inputs").arg(inputs);
    if ipc {
        cmd.arg("--ipc");
    }
    cmd.arg("--").arg(root);
    String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
}

/// Same output line for every input.
pub fn assert_lines_equal(a: &str, b: &str, inputs: &[String], what: &str) {
    let (a, b): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(a.len(), b.len(), "{what}: line count");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{what}: input {:?}", inputs[i]);
    }
}

/// Compile one C or C++ test library from tests/data into `dir`.
pub fn build_test_lib(source: &str, dir: &Path) -> PathBuf {
    build_test_lib_with(source, dir, &["-g"])
}

/// [`build_test_lib`] with `flags` (debug info, warnings) in place of
/// `-g`.
pub fn build_test_lib_with(source: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    let stem = Path::new(source).file_stem().unwrap().to_string_lossy();
    let out = dir.join(format!("lib{stem}.so"));
    let cc = if source.ends_with(".c") { "gcc" } else { "g++" };
    run_ok(
        Command::new(cc)
            .args(["-shared", "-fPIC", "-O2"])
            .args(flags)
            .arg("-I")
            .arg(repo().join("fixtures/include"))
            .arg(repo().join("tests/data").join(source))
            .arg("-o")
            .arg(&out),
    );
    out
}

/// gdb's stdout when `program` (path and arguments) stops at `function`
/// and gdb prints the backtrace there, and that backtrace's frames (its
/// `#N` lines), innermost first.
pub fn gdb_backtrace(function: &str, program: &[&std::ffi::OsStr]) -> (String, Vec<String>) {
    require_tool("gdb", &["--version"], "gdb");
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set breakpoint pending on"])
        .arg("-ex")
        .arg(format!("break {function}"))
        .args(["-ex", "run", "-ex", "bt", "--args"])
        .args(program)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let frames = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(str::to_string)
        .collect();
    (text, frames)
}

/// A tool a test needs: found on PATH (or at its absolute path) and able
/// to run `tool args...`. A test never passes without the tool it checks
/// with: it fails, naming the Debian package `.ci/run` installs.
pub fn require_tool(tool: &str, args: &[&str], package: &str) {
    let out = Command::new(tool).args(args).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`{tool} {}` fails here (Debian {package}): {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ),
        Err(e) => panic!("{tool} is not installed (Debian {package}): {e}"),
    }
}

/// `eu-elflint --gnu-ld` finds nothing wrong.
pub fn assert_elflint_clean(path: &Path) {
    require_tool("eu-elflint", &["--version"], "elfutils");
    let o = Command::new("eu-elflint")
        .args(["--gnu-ld", "--quiet"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty(),
        "eu-elflint {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A process-model workflow of tests/data/pm_workflows.json, its test
/// functions built (see [`build_pm_libs`]).
pub struct PmWorkflow {
    pub name: String,
    pub root: String,
    /// (function name, built library), root first.
    pub functions: Vec<(String, PathBuf)>,
    pub inputs: Vec<Vec<u8>>,
}

impl PmWorkflow {
    /// `NAME=PATH` arguments deploying it (for `run` or `merge`), root first.
    pub fn deploy_args(&self) -> Vec<String> {
        self.functions
            .iter()
            .map(|(n, p)| format!("{n}={}", p.display()))
            .collect()
    }
    /// The built library of function `name`.
    pub fn lib(&self, name: &str) -> &Path {
        &self.functions.iter().find(|(n, _)| n == name).unwrap().1
    }
}

/// Build every process-model test function (tests/data/pm_*.c) once per
/// test binary and return the workflows of tests/data/pm_workflows.json
/// with their libraries: the unfused deployments whose `run --ipc` answers
/// a fused image of the same functions must reproduce.
pub fn build_pm_libs() -> &'static [PmWorkflow] {
    static W: OnceLock<Vec<PmWorkflow>> = OnceLock::new();
    W.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = scratch_dir(&format!("pm-libs-{stem}"));
        let text = std::fs::read_to_string(repo().join("tests/data/pm_workflows.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut built: std::collections::BTreeMap<String, PathBuf> = Default::default();
        v["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let root = w["root"].as_str().unwrap().to_string();
                let mut functions: Vec<(String, PathBuf)> = w["functions"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, src)| {
                        let src = src.as_str().unwrap().to_string();
                        let lib = built
                            .entry(src.clone())
                            .or_insert_with(|| build_test_lib(&src, &dir))
                            .clone();
                        (name.clone(), lib)
                    })
                    .collect();
                functions.sort_by_key(|(n, _)| n != &root);
                PmWorkflow {
                    name: w["name"].as_str().unwrap().to_string(),
                    root,
                    functions,
                    inputs: w["inputs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_str().unwrap().as_bytes().to_vec())
                        .collect(),
                }
            })
            .collect()
    })
}

/// The process-model workflow called `name`.
pub fn pm_workflow(name: &str) -> &'static PmWorkflow {
    build_pm_libs().iter().find(|w| w.name == name).unwrap()
}

/// Write inputs as `run --inputs-format len32` records (a 4-byte
/// little-endian length, then the bytes) into a file in the test temp dir.
pub fn len32_file(name: &str, inputs: &[Vec<u8>]) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("inputs-{name}-{}.len32", std::process::id()));
    let mut data = Vec::new();
    for i in inputs {
        data.extend_from_slice(&(i.len() as u32).to_le_bytes());
        data.extend_from_slice(i);
    }
    std::fs::write(&p, data).unwrap();
    p
}

/// BOLT pre-aggregated `B` records (build-id locations) of the branches of
/// `image`, one image of a `faasfuse profile` JSON profile.
pub fn preaggregated_branches(image: &serde_json::Value) -> String {
    let id = image["build_id"].as_str().unwrap();
    let mut text = String::new();
    for b in image["branches"].as_array().unwrap() {
        let to = b["to"]
            .as_u64()
            .map_or("00:0".to_string(), |t| format!("{id}:{t:x}"));
        text += &format!(
            "B {id}:{:x} {to} {} {}\n",
            b["from"].as_u64().unwrap(),
            b["count"].as_u64().unwrap(),
            b["mispred"].as_u64().unwrap()
        );
    }
    text
}

/// Lowercase hex of bytes, as `run --json` reports `output_hex`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `faasfuse run --json` of `deploy` with `inputs` as len32 records.
pub fn pm_command(
    deploy: &[String],
    root: &str,
    inputs: &[Vec<u8>],
    ipc: bool,
    extra: &[&str],
    tag: &str,
) -> std::process::Command {
    let file = len32_file(&format!("pm-{tag}-{ipc}"), inputs);
    let mut cmd = faasfuse();
    cmd.arg("run")
        .args(deploy)
        .args(extra)
        .arg("--inputs")
        .arg(&file)
        .args(["--inputs-format", "len32", "--json"]);
    if ipc {
        cmd.arg("--ipc");
    }
    cmd.arg("--").arg(root);
    cmd
}

/// Serve `inputs` (must succeed); the report, and each result's rc and
/// exact output bytes (from `output_hex`).
pub fn pm_serve(
    deploy: &[String],
    root: &str,
    inputs: &[Vec<u8>],
    ipc: bool,
    extra: &[&str],
    tag: &str,
) -> (serde_json::Value, Vec<(i64, Vec<u8>)>, String) {
    let out = run_ok(&mut pm_command(deploy, root, inputs, ipc, extra, tag));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results: Vec<(i64, Vec<u8>)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let h = r["output_hex"].as_str().unwrap();
            let bytes = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect();
            (r["rc"].as_i64().unwrap(), bytes)
        })
        .collect();
    assert_eq!(results.len(), inputs.len(), "one result per input");
    (
        report,
        results,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Serve `inputs`, expecting the run to fail; its exit code and stderr.
pub fn pm_fail(
    deploy: &[String],
    root: &str,
    inputs: &[Vec<u8>],
    ipc: bool,
    extra: &[&str],
    tag: &str,
) -> (i32, String) {
    let out = pm_command(deploy, root, inputs, ipc, extra, tag)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{tag}: run should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{tag}: {err}");
    (out.status.code().unwrap_or(-1), err)
}

/// `perf record -q -o DATA HOW -- faasfuse run DEPLOY --inputs INPUTS
/// --quiet --repeat N [--ipc] -- ROOT`. Panics when perf cannot record (CI
/// installs linux-perf): a profile test never passes without a profile.
#[allow(clippy::too_many_arguments)]
pub fn perf_record_run(
    data: &Path,
    how: &[&str],
    deploy: &[String],
    root: &str,
    inputs: &Path,
    repeat: usize,
    ipc: bool,
) {
    let mut run: Vec<std::ffi::OsString> =
        vec![env!("CARGO_BIN_EXE_faasfuse").into(), "run".into()];
    run.extend(deploy.iter().map(Into::into));
    run.extend([
        "--inputs".into(),
        inputs.into(),
        "--quiet".into(),
        "--repeat".into(),
    ]);
    run.push(repeat.to_string().into());
    if ipc {
        run.push("--ipc".into());
    }
    run.extend(["--".into(), root.into()]);
    perf_record(data, how, &run);
}

/// `perf record -q -o DATA HOW -- PROGRAM...`. Panics when perf cannot
/// record (CI installs linux-perf) or the program fails.
pub fn perf_record(data: &Path, how: &[&str], program: &[std::ffi::OsString]) {
    run_perf(
        Command::new("perf")
            .args(["record", "-q", "-o"])
            .arg(data)
            .args(how)
            .arg("--")
            .args(program),
    );
}

/// Run `cmd`, a perf command, which must succeed: its output. Panics when
/// perf is not installed (CI installs linux-perf) and, with its standard
/// error, when the command fails.
pub fn run_perf(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("perf is not installed (Debian linux-perf): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `faasfuse-testkit record-lbr -o DATA --every K [--truth FILE] -- faasfuse run
/// DEPLOY --inputs INPUTS --quiet -- ROOT`: a real LBR perf.data with exact
/// branch counts (`--every 1`), on any CPU.
pub fn record_lbr_run(
    data: &Path,
    every: u64,
    truth: Option<&Path>,
    deploy: &[String],
    root: &str,
    inputs: &Path,
) {
    let mut cmd = testkit();
    cmd.arg("record-lbr")
        .arg("-o")
        .arg(data)
        .args(["--every", &every.to_string()]);
    if let Some(t) = truth {
        cmd.arg("--truth").arg(t);
    }
    cmd.arg("--")
        .arg(env!("CARGO_BIN_EXE_faasfuse"))
        .arg("run")
        .args(deploy)
        .arg("--inputs")
        .arg(inputs)
        .args(["--quiet", "--"])
        .arg(root);
    run_ok(&mut cmd);
}

/// `faasfuse merge NAME=LIB... --isolate MODE -o OUT`, which must succeed.
pub fn merge_isolated(pairs: &[(&str, &Path)], out: &Path, isolate: &str) {
    let mut cmd = faasfuse();
    cmd.arg("merge");
    for (name, lib) in pairs {
        cmd.arg(format!("{name}={}", lib.display()));
    }
    run_ok(cmd.args(["--isolate", isolate, "-o"]).arg(out));
}

/// Whether the library has a PT_TLS segment (read here, not by faasfuse).
pub fn has_tls(lib: &Path) -> bool {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let data = std::fs::read(lib).unwrap();
    let elf = ElfFile64::<object::Endianness>::parse(&*data).unwrap();
    let e = elf.endian();
    elf.elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(e) == object::elf::PT_TLS)
}

/// The fan-out deployment's `func_config.json` (Frontend the entry) over
/// the libraries of the default build, written into `dir`.
pub fn fanout_config(dir: &Path) -> PathBuf {
    fanout_config_for(dir, &fixtures().join("default"))
}

/// The fan-out deployment's functions and their library files, root
/// first.
pub const FANOUT_LIBS: [(&str, &str); 4] = [
    ("Frontend", "libfrontend.so"),
    ("Inventory", "libinventory.so"),
    ("Pricing", "libpricing.so"),
    ("Recommend", "librecommend.so"),
];

/// [`fanout_config`] over the fan-out libraries in `lib` (as
/// [`build_example`] writes them).
pub fn fanout_config_for(dir: &Path, lib: &Path) -> PathBuf {
    let entries: Vec<serde_json::Value> = FANOUT_LIBS
        .iter()
        .enumerate()
        .map(|(i, (name, file))| {
            serde_json::json!({
                "funcName": name, "funcId": i + 1, "minWorkers": 1, "maxWorkers": 8,
                "library": lib.join(file), "entry": *name == "Frontend",
            })
        })
        .collect();
    let p = dir.join("func_config.json");
    std::fs::write(&p, serde_json::to_string_pretty(&entries).unwrap()).unwrap();
    p
}

/// 199 fan-out requests without a recommendation (drawn with `seed`) and
/// one with: the Recommend edge is cold (0.5% of Frontend's executions),
/// the other two hot. Written as the input file `tag`.
pub fn fanout_one_rare(seed: u64, tag: &str) -> PathBuf {
    fanout_one_in(200, seed, tag)
}

/// `n - 1` fan-out requests without a recommendation (drawn with `seed`)
/// and one with, written as the input file `tag`.
pub fn fanout_one_in(n: usize, seed: u64, tag: &str) -> PathBuf {
    let w = workflow("fanout");
    let mut inputs: Vec<String> = generate_inputs(&w, 2 * n, seed)
        .into_iter()
        .filter(|i| !i.contains("rec"))
        .take(n - 1)
        .collect();
    assert_eq!(inputs.len(), n - 1);
    inputs.push("rec please".into());
    input_file(tag, &inputs)
}
