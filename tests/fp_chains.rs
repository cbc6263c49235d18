//! Frame-pointer call chains where the code keeps frame pointers: real
//! `perf record -a -g` profiles (with `--buildid-mmap`) of the fan-out
//! deployment (Frontend calls Inventory once and Pricing once per word on
//! every request, Recommend on 1 request in 1000) served by a platform
//! worker built with `-fno-omit-frame-pointer` (tests/data/fp_worker.c:
//! it loads the libraries by the function ABI, serves nested calls
//! in-process on the same stack, and counts every call it serves).
//!
//! An RPC site is a call from the caller's library into the worker's
//! invoke callback; its return address is on a frame-pointer chain only
//! when the callback, and every frame from it to the callee, keeps rbp as
//! a frame pointer. With such a worker, `faasfuse profile` sees every
//! edge by frame-pointer chains and `plan --profile` decides exactly as
//! the exact counts do (the worker's own, and a `faasfuse run --json`
//! trace): Inventory and Pricing fused, Recommend cold. The same
//! functions under the same worker built without frame pointers, or with
//! them everywhere but in its invoke callback, or served by `faasfuse
//! run` (whose host keeps none), show no edge ("no evidence"): the
//! worker's frames are what make the difference. The functions' own frame
//! pointers are not needed: built without, the chains still reach the
//! sites through the worker's frames.
//!
//! Every test records with perf and fails if perf cannot record (CI
//! installs linux-perf): none passes without its profile.

mod common;
use common::plans::*;
use common::*;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const FUNCTIONS: [(&str, &str); 4] = [
    ("Frontend", "frontend"),
    ("Inventory", "inventory"),
    ("Pricing", "pricing"),
    ("Recommend", "recommend"),
];
const CALLEES: [&str; 3] = ["Inventory", "Pricing", "Recommend"];

/// Keep rbp as a frame pointer in every function, leaves included.
const FRAME_POINTERS: &[&str] = &["-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"];
/// As `-O2` builds without asking (said outright).
const NO_FRAME_POINTERS: &[&str] = &["-fomit-frame-pointer"];

/// How every recording is made: system-wide frame-pointer chains, and
/// build-ids in the mappings (as the fleet guide advises), so that files
/// of the same names in other processes on the machine are told apart.
const HOW: &[&str] = &["-a", "-g", "--buildid-mmap"];

/// Passes over the inputs per recording: about two seconds of serving.
const REPEAT: usize = 4000;

fn dir() -> PathBuf {
    scratch_dir("fp_chains")
}

/// The fan-out functions built with (`fp`) or without (`nofp`) frame
/// pointers, into their own directory, with their `func_config.json`.
struct Build {
    libs: PathBuf,
    config: PathBuf,
}

impl Build {
    /// `NAME=PATH` for each function, Frontend first.
    fn deploy(&self) -> Vec<String> {
        FUNCTIONS
            .iter()
            .map(|(name, stem)| spec(name, &self.libs.join(format!("lib{stem}.so"))))
            .collect()
    }
    /// `--lib NAME=PATH` for `faasfuse profile`.
    fn lib_args(&self) -> Vec<String> {
        lib_args_for(&self.deploy())
    }
}

fn build_functions(tag: &str, flags: &[&str]) -> Build {
    let libs = dir().join(tag);
    std::fs::create_dir_all(&libs).unwrap();
    for (_, stem) in FUNCTIONS {
        build_example(&libs, stem, flags);
    }
    Build {
        config: fanout_config_for(&libs, &libs),
        libs,
    }
}

fn functions_fp() -> &'static Build {
    static B: OnceLock<Build> = OnceLock::new();
    B.get_or_init(|| build_functions("fp", FRAME_POINTERS))
}

fn functions_nofp() -> &'static Build {
    static B: OnceLock<Build> = OnceLock::new();
    B.get_or_init(|| build_functions("nofp", NO_FRAME_POINTERS))
}

/// tests/data/fp_worker.c built `-O2` with `flags` as `worker-TAG`.
fn build_worker(tag: &str, flags: &[&str]) -> PathBuf {
    let exe = dir().join(format!("worker-{tag}"));
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-Werror"])
            .args(flags)
            .arg("-I")
            .arg(repo().join("fixtures/include"))
            .arg(repo().join("tests/data/fp_worker.c"))
            .arg("-o")
            .arg(&exe)
            .arg("-ldl"),
    );
    exe
}

/// Whether `function` of the executable `exe` begins by setting up an
/// rbp frame (`push %rbp; mov %rsp,%rbp`, after an `endbr64` if any):
/// what the build flags asked for, read from the code.
fn sets_up_frame(exe: &Path, function: &str) -> bool {
    use object::{Object, ObjectSection, ObjectSymbol};
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(function))
        .unwrap_or_else(|| panic!("{function} is not in {}", exe.display()));
    let text = file.section_by_name(".text").unwrap();
    let code = text.data_range(sym.address(), 8).unwrap().unwrap();
    let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
    code.starts_with(&[0x55, 0x48, 0x89, 0xe5])
}

fn worker_fp() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| build_worker("fp", FRAME_POINTERS))
}

fn worker_nofp() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| build_worker("nofp", NO_FRAME_POINTERS))
}

/// The worker with frame pointers except in its invoke callback.
fn worker_bare_callback() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let mut flags = FRAME_POINTERS.to_vec();
        flags.push("-DBARE_CALLBACK");
        build_worker("bare-callback", &flags)
    })
}

/// 999 fan-out requests without a recommendation and one with: the
/// Recommend edge is cold (0.1% of Frontend's executions) with a margin
/// sampled time keeps (a rare call costs more than a hot one: its code
/// and data are out of the caches), the other two hot.
fn inputs() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| fanout_one_in(1000, 0xf9c4, "fp_chains"))
}

/// The worker's arguments serving `b` `repeat` times, its counts written
/// to `weights`.
fn worker_args(worker: &Path, b: &Build, repeat: usize, weights: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        worker.into(),
        inputs().into(),
        repeat.to_string().into(),
        weights.into(),
        "Frontend".into(),
    ];
    a.extend(b.deploy().into_iter().map(Into::into));
    a
}

/// A recording: the perf.data and the worker's exact counts of the same
/// run (a faasfuse weights file).
struct Recording {
    data: PathBuf,
    weights: PathBuf,
}

/// Held while a worker runs: a system-wide profile holds every process,
/// and one worker's chains must not land in another's recording (nor
/// frames in the same files of other builds, mapped without build-ids).
fn one_worker_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `perf record -a -g --buildid-mmap -- WORKER ...` into `TAG.data`.
fn record(tag: &str, worker: &Path, b: &Build) -> Recording {
    let _one = one_worker_at_a_time();
    let data = dir().join(format!("{tag}.data"));
    let weights = dir().join(format!("{tag}.weights.json"));
    perf_record(&data, HOW, &worker_args(worker, b, REPEAT, &weights));
    Recording { data, weights }
}

/// Functions and worker with frame pointers.
fn fp_everywhere() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| record("fp-fp", worker_fp(), functions_fp()))
}

/// Functions with frame pointers, the worker without.
fn fp_functions_only() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| record("fp-nofp", worker_nofp(), functions_fp()))
}

/// Functions and worker with frame pointers, except the worker's invoke
/// callback.
fn fp_but_the_callback() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| record("fp-bare", worker_bare_callback(), functions_fp()))
}

/// Functions with frame pointers served by `faasfuse run`, whose host
/// keeps none.
fn fp_functions_under_faasfuse_run() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let _one = one_worker_at_a_time();
        let data = dir().join("fp-run.data");
        let deploy = functions_fp().deploy();
        perf_record_run(&data, HOW, &deploy, "Frontend", inputs(), 300, false);
        data
    })
}

/// The worker with frame pointers, the functions without.
fn fp_worker_only() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| record("nofp-fp", worker_fp(), functions_nofp()))
}

/// `faasfuse profile DATA --lib ...`: its text and the JSON profile.
fn profile(tag: &str, data: &Path, b: &Build) -> (String, Value) {
    let out = dir().join(format!("{tag}.profile.json"));
    run_profile(data, b.lib_args(), &out)
}

/// Each edge's status, and each decision's verdict, of a plan.
fn decisions(plan: &Value) -> Vec<(String, Value)> {
    let mut d: Vec<(String, Value)> = CALLEES
        .iter()
        .map(|c| (format!("edge {c}"), edge(plan, c)["status"].clone()))
        .collect();
    for x in plan["decisions"].as_array().unwrap() {
        d.push((format!("decision {}", x["function"]), x["fused"].clone()));
    }
    d
}

/// A `faasfuse run --json` trace of the inputs on `b`'s libraries.
fn run_trace(b: &Build) -> Value {
    serde_json::from_slice(
        &run_ok(
            faasfuse()
                .arg("run")
                .args(b.deploy())
                .arg("--json")
                .arg("--inputs")
                .arg(inputs())
                .args(["--", "Frontend"]),
        )
        .stdout,
    )
    .unwrap()
}

/// The plan from the exact counts: a `faasfuse run --json` trace of the
/// inputs on `b`'s libraries.
fn exact_plan(tag: &str, b: &Build) -> Value {
    let trace = dir().join(format!("{tag}.trace.json"));
    std::fs::write(&trace, run_trace(b).to_string()).unwrap();
    plan_json(&b.config, &[&trace])
}

#[test]
fn the_workers_keep_the_frames_their_flags_ask_for() {
    for f in ["invoke", "serve"] {
        assert!(sets_up_frame(worker_fp(), f), "{f}");
        assert!(!sets_up_frame(worker_nofp(), f), "{f}");
    }
    assert!(!sets_up_frame(worker_bare_callback(), "invoke"));
    assert!(sets_up_frame(worker_bare_callback(), "serve"));
}

#[test]
fn the_worker_serves_as_faasfuse_run_does_and_counts_every_call() {
    let b = functions_fp();
    let weights = dir().join("once.weights.json");
    let args = worker_args(worker_fp(), b, 3, &weights);
    let o = {
        let _one = one_worker_at_a_time();
        run_ok(Command::new(&args[0]).args(&args[1..]))
    };
    let first_pass = String::from_utf8(o.stdout).unwrap();
    let served = serve(&b.deploy(), "Frontend", inputs(), false);
    assert_eq!(first_pass, served);
    // Its counts are the host's trace's, per pass.
    let w = read_json(&weights);
    let t = run_trace(b);
    assert_eq!(t["calls"]["Frontend"]["Recommend"], 1, "{t}");
    for callee in CALLEES {
        let n = t["calls"]["Frontend"][callee].as_u64().unwrap();
        assert_eq!(w["calls"]["Frontend"][callee], 3 * n, "{callee}: {w}");
    }
    assert_eq!(w["external"]["Frontend"], 3 * 1000, "{w}");
}

#[test]
fn frame_pointer_chains_through_the_worker_see_every_edge() {
    let b = functions_fp();
    let (text, p) = profile("fp-fp", &fp_everywhere().data, b);
    assert!(!text.contains("cannot see"), "{text}");
    let st = &p["stats"];
    assert!(st["callchain_samples"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["dwarf_samples"], 0, "{st}");
    assert_eq!(st["lbr_samples"], 0, "{st}");
    for callee in CALLEES {
        assert_eq!(
            p["evidence"]["Frontend"][callee], "frame_pointer_chains",
            "{}",
            p["evidence"]
        );
    }
    // Calls counted through Frontend's sites to the two hot callees.
    let sites = p["images"]["Frontend"]["rpc_sites"].as_array().unwrap();
    for callee in ["Inventory", "Pricing"] {
        let n = p["calls"]["Frontend"][callee].as_f64().unwrap_or(0.0);
        assert!(n > 0.0, "{callee}: {}", p["calls"]);
        let site = sites.iter().find(|s| s["callee"] == callee).unwrap();
        assert!(site["sample_count"].as_u64().unwrap() > 0, "{site}");
    }
}

#[test]
fn plan_on_frame_pointer_chains_decides_as_the_exact_counts_do() {
    let b = functions_fp();
    let rec = fp_everywhere();
    let plan = plan_json(&b.config, &[&rec.data]);
    assert_eq!(
        members(&plan, "Frontend"),
        ["Frontend", "Inventory", "Pricing"],
        "{}",
        plan["edges"]
    );
    for callee in ["Inventory", "Pricing"] {
        let e = edge(&plan, callee);
        assert_eq!(e["status"], "fused", "{e}");
        assert_eq!(e["evidence"], "frame_pointer_chains", "{e}");
    }
    // Measured: zero or below the threshold, never unseen.
    let r = edge(&plan, "Recommend");
    assert_eq!(r["status"], "cold", "{r}");
    assert_eq!(r["evidence"], "frame_pointer_chains", "{r}");
    assert!(!plan.to_string().contains("no evidence"), "{plan}");

    // The exact counts decide the same: the worker's own, of this very
    // run, and a trace of faasfuse's host.
    let by_worker = plan_json(&b.config, &[&rec.weights]);
    let by_trace = exact_plan("fp", b);
    for exact in [&by_worker, &by_trace] {
        assert_eq!(members(exact, "Frontend"), members(&plan, "Frontend"));
        assert_eq!(decisions(exact), decisions(&plan), "{}", exact["edges"]);
    }
}

/// Neither `faasfuse profile` nor `plan` sees an edge in `data`, a
/// recording of `b`: no calls, samples only, "no evidence", nothing fused.
fn assert_no_edge_seen(tag: &str, data: &Path, b: &Build) {
    let (text, p) = profile(tag, data, b);
    assert!(text.contains("cannot see"), "{text}");
    assert_eq!(p["calls"], serde_json::json!({}), "{}", p["calls"]);
    assert!(p["images"]["Pricing"]["samples"].as_u64().unwrap() > 0);
    assert!(p["stats"]["callchain_samples"].as_u64().unwrap() > 0);
    for callee in CALLEES {
        let e = p["evidence"]["Frontend"][callee]
            .as_str()
            .unwrap_or_default();
        assert!(e == "samples_only" || e == "nothing", "{callee}: {e}");
    }
    let plan = plan_json(&b.config, &[data]);
    for callee in CALLEES {
        assert_eq!(edge(&plan, callee)["status"], "no evidence", "{tag}");
    }
    assert_eq!(members(&plan, "Frontend"), ["Frontend"], "{tag}");
}

#[test]
fn without_frame_pointers_in_the_worker_no_chain_reaches_a_site() {
    // The same functions, with frame pointers, under the same worker
    // built without: the callback's frame is gone, and with it the sites.
    assert_no_edge_seen("fp-nofp", &fp_functions_only().data, functions_fp());
}

#[test]
fn faasfuse_run_shows_no_edge_of_functions_with_frame_pointers() {
    // faasfuse's host keeps no frame pointers: the functions' own are not
    // enough.
    assert_no_edge_seen("fp-run", fp_functions_under_faasfuse_run(), functions_fp());
}

#[test]
fn the_invoke_callback_s_own_frame_is_what_holds_the_site() {
    // Everything keeps frame pointers but the invoke callback: the walk
    // goes from the frame that called the callee to the rbp the callback
    // was entered with (the caller's frame), over the site's return
    // address.
    assert_no_edge_seen("fp-bare", &fp_but_the_callback().data, functions_fp());
}

#[test]
fn the_functions_need_no_frame_pointers_of_their_own() {
    // Functions built without frame pointers under the worker built with:
    // the chains still pass the callback's frame, so every edge is seen
    // and the decisions are the exact counts'.
    let b = functions_nofp();
    let rec = fp_worker_only();
    let (_, p) = profile("nofp-fp", &rec.data, b);
    for callee in CALLEES {
        assert_eq!(
            p["evidence"]["Frontend"][callee], "frame_pointer_chains",
            "{}",
            p["evidence"]
        );
    }
    let plan = plan_json(&b.config, &[&rec.data]);
    assert_eq!(
        members(&plan, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    assert_eq!(edge(&plan, "Recommend")["status"], "cold");
    let exact = plan_json(&b.config, &[&rec.weights]);
    assert_eq!(decisions(&exact), decisions(&plan), "{}", plan["edges"]);
}
