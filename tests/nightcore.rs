//! Fused images on the real nightcore stack (gateway, engine, launchers,
//! `func_worker_v1`; found through `NIGHTCORE_BIN`), each compared with the
//! unfused deployment served by the same stack: every example workflow and
//! every process-model workflow of tests/data (binary inputs too), fused at
//! each lowering level, with `--isolate stack`, and the deployment `faasfuse
//! build` writes, started by its own `launch.sh`. `faasfuse run --ipc` is
//! measured against the same answers, concurrent clients must get every
//! answer right, and a crashing callee is shown as the client sees it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::plans::*;
use common::*;
use faasfuse_testkit::nightcore::{self, Answer, Function, Launch, Options, Stack};

/// Deepest recursion served: each level of Loop and R is a worker process
/// of its own under nightcore, and a nested call needs an idle one.
const MAX_DEPTH: usize = 7;

/// Concurrent clients, and the deepest recursion they ask for. nightcore's
/// engine grows a function's pool only within
/// `--min_worker_request_interval_ms` (200) of its previous growth (the
/// check in `Dispatcher::MayRequestNewFuncWorker` is inverted), so
/// recursive functions get every worker they need up front: clients ×
/// (depth + 1). With fewer, the clients' chains hold every worker and wait
/// for each other for good.
const CLIENTS: usize = 8;
const CONCURRENT_DEPTH: usize = 3;

/// The nesting depth a request of a recursive workflow reaches (Loop: one
/// level per byte; R: its number), or 0.
fn depth(flow: &str, input: &[u8]) -> usize {
    match flow {
        "recurse" => input.len(),
        "recurse_static" => String::from_utf8_lossy(input).trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// One workflow as the stack serves it.
struct Flow {
    name: String,
    root: String,
    /// (function, library), root first.
    functions: Vec<(String, PathBuf)>,
    inputs: Vec<Vec<u8>>,
    /// Functions declared re-entrant when fused (`merge --reentrant`).
    reentrant: Vec<String>,
}

/// Every workflow: the examples (fixtures/workflows.json, default build)
/// and the process-model workflows (tests/data/pm_workflows.json).
fn flows() -> &'static [Flow] {
    static F: OnceLock<Vec<Flow>> = OnceLock::new();
    F.get_or_init(|| {
        let mut flows: Vec<Flow> = workflows()
            .iter()
            .map(|w| {
                let mut functions: Vec<(String, PathBuf)> = w
                    .functions
                    .iter()
                    .map(|(n, lib)| (n.clone(), fixtures().join("default").join(lib)))
                    .collect();
                functions.sort_by_key(|(n, _)| n != &w.root);
                Flow {
                    name: w.name.clone(),
                    root: w.root.clone(),
                    functions,
                    inputs: generate_inputs(w, 64, 0x6e63)
                        .into_iter()
                        .map(String::into_bytes)
                        .filter(|i| depth(&w.name, i) <= MAX_DEPTH)
                        .collect(),
                    reentrant: w.reentrant.clone(),
                }
            })
            .collect();
        // Not "threads": nightcore's worker crashes on its nested call from
        // a second thread (see the test of its own below).
        flows.extend(
            build_pm_libs()
                .iter()
                .filter(|w| w.name != "threads")
                .map(|w| Flow {
                    name: w.name.clone(),
                    root: w.root.clone(),
                    functions: w.functions.clone(),
                    inputs: w.inputs.clone(),
                    reentrant: Vec::new(),
                }),
        );
        flows
    })
}

/// Worker processes per function (min, max): `recursive` for the functions
/// that call themselves.
fn workers(name: &str, recursive: u32) -> (u32, u32) {
    match name {
        "Loop" | "R" => (recursive, recursive),
        _ => (1, 16),
    }
}

/// Every function of every flow once, with its library, or with a fused
/// image in place of the library of the roots `fused` names; enough
/// workers for one client's recursion.
fn deployment(fused: &BTreeMap<String, PathBuf>) -> Vec<Function> {
    deployment_with(fused, MAX_DEPTH as u32 + 1)
}

/// [`deployment`] with `recursive` workers for each recursive function.
fn deployment_with(fused: &BTreeMap<String, PathBuf>, recursive: u32) -> Vec<Function> {
    let mut out: Vec<Function> = Vec::new();
    for f in flows() {
        for (name, lib) in &f.functions {
            match out.iter().find(|d| &d.name == name) {
                Some(d) => assert_eq!(d.library.as_deref(), Some(lib.as_path()), "{name} twice"),
                None => out.push(Function::new(
                    name,
                    out.len() as u32 + 1,
                    workers(name, recursive),
                    lib,
                )),
            }
        }
    }
    for d in &mut out {
        if let Some(img) = fused.get(&d.name) {
            d.library = Some(img.clone());
        }
    }
    out
}

fn start(tag: &str, functions: &[Function], launch: &Launch) -> Stack {
    Stack::start(
        &scratch_dir("nightcore"),
        tag,
        functions,
        launch,
        &Options::default(),
    )
    .unwrap_or_else(|e| panic!("{tag}: {e:#}"))
}

/// Every flow's inputs, one request at a time, in order.
fn serve_all(stack: &Stack) -> Vec<Vec<Answer>> {
    let mut client = stack.client();
    flows()
        .iter()
        .map(|f| {
            f.inputs
                .iter()
                .map(|i| client.call(&f.root, i).expect("request"))
                .collect()
        })
        .collect()
}

/// The unfused deployment's answers on nightcore: the oracle.
fn unfused() -> &'static [Vec<Answer>] {
    // Kept even when it fails, so that the tests sharing it fail at once.
    static A: OnceLock<Result<Vec<Vec<Answer>>, String>> = OnceLock::new();
    let answers = A.get_or_init(|| {
        let stack = Stack::start(
            &scratch_dir("nightcore"),
            "unfused",
            &deployment(&BTreeMap::new()),
            &Launch::Libraries,
            &Options::default(),
        )
        .map_err(|e| format!("{e:#}"))?;
        let answers = serve_all(&stack);
        stack.stop().map_err(|e| format!("{e:#}"))?;
        // No workflow relies on a request the platform never answers.
        for (f, a) in flows().iter().zip(&answers) {
            for (i, a) in f.inputs.iter().zip(a) {
                if *a == Answer::NoAnswer {
                    return Err(format!(
                        "{}: {:?} got no answer unfused",
                        f.name,
                        String::from_utf8_lossy(i)
                    ));
                }
            }
        }
        Ok(answers)
    });
    match answers {
        Ok(a) => a,
        Err(e) => panic!("the unfused deployment on nightcore: {e}"),
    }
}

/// Panic listing every request whose answer differs from the oracle's.
fn assert_answers(what: &str, got: &[Vec<Answer>], want: &[Vec<Answer>]) {
    let mut diffs = Vec::new();
    let mut total = 0;
    for ((f, g), w) in flows().iter().zip(got).zip(want) {
        for ((i, g), w) in f.inputs.iter().zip(g).zip(w) {
            total += 1;
            if g != w {
                diffs.push(format!(
                    "  {} {:?}: {} where unfused {}",
                    f.name,
                    String::from_utf8_lossy(i),
                    g.show(),
                    w.show()
                ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} of {total} answers differ from the unfused deployment on nightcore:\n{}",
        diffs.len(),
        diffs[..diffs.len().min(12)].join("\n")
    );
    assert!(total > 280, "{what}: only {total} requests");
}

/// Fuse each workflow that makes RPCs (root first, every callee; its
/// re-entrant functions declared) with `extra` merge arguments; the fused
/// image of each root.
fn fuse_all(tag: &str, extra: &[&str]) -> BTreeMap<String, PathBuf> {
    let dir = scratch_dir(&format!("nightcore-fused-{tag}"));
    flows()
        .iter()
        .filter(|f| f.functions.len() > 1 || !f.reentrant.is_empty())
        .map(|f| {
            let out = dir.join(format!("lib{}.fused.so", f.root.to_lowercase()));
            let mut cmd = faasfuse();
            cmd.arg("merge");
            for (n, lib) in &f.functions {
                cmd.arg(format!("{n}={}", lib.display()));
            }
            for r in &f.reentrant {
                cmd.args(["--reentrant", r]);
            }
            run_ok(cmd.args(extra).arg("-o").arg(&out));
            (f.root.clone(), out)
        })
        .collect()
}

/// Fuse with `extra`, serve on nightcore, compare with unfused.
fn fused_answer_as_unfused(tag: &str, extra: &[&str]) {
    let want = unfused();
    let images = fuse_all(tag, extra);
    let stack = start(tag, &deployment(&images), &Launch::Libraries);
    let got = serve_all(&stack);
    stack.stop().unwrap();
    assert_answers(&format!("merge {}", extra.join(" ")), &got, want);
}

#[test]
fn fused_at_lowering_level_none_answers_as_unfused_on_nightcore() {
    fused_answer_as_unfused("none", &["--lower", "none"]);
}

#[test]
fn fused_at_lowering_level_dispatch_answers_as_unfused_on_nightcore() {
    fused_answer_as_unfused("dispatch", &["--lower", "dispatch"]);
}

#[test]
fn fused_at_lowering_level_direct_answers_as_unfused_on_nightcore() {
    fused_answer_as_unfused("direct", &["--lower", "direct"]);
}

#[test]
fn fused_with_isolated_stacks_answers_as_unfused_on_nightcore() {
    fused_answer_as_unfused("stack", &["--isolate", "stack"]);
}

/// A `func_config.json` for every function (faasfuse's `library` field
/// included), the flows' roots as entries.
fn write_config(dir: &Path) -> PathBuf {
    let roots: Vec<&str> = flows().iter().map(|f| f.root.as_str()).collect();
    let entries: Vec<serde_json::Value> = deployment(&BTreeMap::new())
        .iter()
        .map(|f| {
            serde_json::json!({
                "funcName": f.name, "funcId": f.id,
                "minWorkers": f.min_workers, "maxWorkers": f.max_workers,
                "library": f.library.as_ref().unwrap(),
                "entry": roots.contains(&f.name.as_str()),
                "reentrant": flows().iter().any(|w| w.reentrant.contains(&f.name)),
            })
        })
        .collect();
    let path = dir.join("func_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&entries).unwrap()).unwrap();
    path
}

#[test]
fn the_deployment_build_writes_runs_on_nightcore_through_its_launch_script() {
    let want = unfused();
    let dir = scratch_dir("nightcore-build");
    let config = write_config(&dir);
    let out = dir.join("fused");
    let _ = std::fs::remove_dir_all(&out);
    // Planned from the platform traces of the unfused deployment, but for
    // diamond's: B calls a function nobody deployed, and `plan` refuses a
    // profile naming a function the config lacks.
    let traces = host_runs()
        .0
        .iter()
        .filter(|t| !t.ends_with("trace-diamond.json"));
    let o = run_ok(
        faasfuse()
            .args(["build", "--json", "--config"])
            .arg(&config)
            .arg("--profile")
            .args(traces)
            .arg("--out-dir")
            .arg(&out),
    );
    let built: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let images = built["images"].as_array().unwrap();
    assert!(images.len() >= 3, "build fused too little: {built}");
    // The script names each fused image as the launcher's --fprocess.
    let script = std::fs::read_to_string(out.join("launch.sh")).unwrap();
    for i in images {
        let path = std::fs::canonicalize(i["path"].as_str().unwrap()).unwrap();
        assert!(
            script.contains(&format!("'{}'", path.display())),
            "launch.sh does not launch {}:\n{script}",
            path.display()
        );
    }
    let functions = nightcore::read_config(&out.join("func_config.json")).unwrap();
    let stack = start("build", &functions, &Launch::Script(out.join("launch.sh")));
    // Each group's root runs its fused image, not its own library.
    for i in images {
        let root = i["root"].as_str().unwrap();
        let image = std::fs::canonicalize(i["path"].as_str().unwrap()).unwrap();
        let workers = stack.workers_of(root);
        assert!(!workers.is_empty(), "no worker of {root}");
        for pid in workers {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
            assert!(
                maps.contains(&image.display().to_string()),
                "{root}'s worker {pid} does not run {}",
                image.display()
            );
        }
    }
    let got = serve_all(&stack);
    stack.stop().unwrap();
    assert_answers("faasfuse build + launch.sh", &got, want);
}

/// Every flow served by `faasfuse run --config --ipc --json` (the unfused
/// deployment on faasfuse's own host): its report files (platform traces
/// with exact call counts) and each request's answer as the platform
/// would give it: 200 with the output, or 500 with no body when the
/// function failed.
fn host_runs() -> &'static (Vec<PathBuf>, Vec<Vec<Answer>>) {
    static H: OnceLock<(Vec<PathBuf>, Vec<Vec<Answer>>)> = OnceLock::new();
    H.get_or_init(|| {
        let dir = scratch_dir("nightcore-host");
        let config = write_config(&dir);
        flows()
            .iter()
            .map(|f| {
                let (report, results, _) = pm_serve(
                    &["--config".to_string(), config.display().to_string()],
                    &f.root,
                    &f.inputs,
                    true,
                    &[],
                    &format!("nightcore-host-{}", f.name),
                );
                let path = dir.join(format!("trace-{}.json", f.name));
                std::fs::write(&path, report.to_string()).unwrap();
                let answers = results
                    .into_iter()
                    .map(|(rc, out)| {
                        if rc == 0 {
                            Answer::Ok(out)
                        } else {
                            Answer::Status(500, Vec::new())
                        }
                    })
                    .collect();
                (path, answers)
            })
            .unzip()
    })
}

#[test]
fn faasfuse_run_ipc_answers_as_nightcore() {
    assert_answers("faasfuse run --ipc", &host_runs().1, unfused());
}

/// The output with the digits of per-process counters (`Foo#3`,
/// `stored#3`, `/q3`, `3da4-3`, `timeline[3]`) replaced by `N`: under
/// concurrent clients, which worker process serves a request (and so
/// which count it shows) is the platform's choice; everything else must
/// be exact.
fn mask_counters(a: &Answer) -> Answer {
    let Answer::Ok(b) = a else { return a.clone() };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let after_marker = i > 0 && matches!(b[i - 1], b'#' | b'[' | b'-' | b'q');
        if b[i].is_ascii_digit() && after_marker {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(b'N');
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Answer::Ok(out)
}

/// Eight clients, 200 requests each per workflow, at once: every answer
/// arrives and equals the sequential unfused answer (counters masked).
fn concurrent_clients_all_answered(tag: &str, fused: &BTreeMap<String, PathBuf>) {
    const EACH: usize = 200;
    let want = unfused();
    let recursive = (CLIENTS * (CONCURRENT_DEPTH + 1)) as u32;
    let stack = start(tag, &deployment_with(fused, recursive), &Launch::Libraries);
    let mut wrong = Vec::new();
    for (f, w) in flows().iter().zip(want) {
        let inputs: Vec<usize> = (0..f.inputs.len())
            .filter(|&i| depth(&f.name, &f.inputs[i]) <= CONCURRENT_DEPTH)
            .collect();
        let inputs = &inputs;
        let results: Vec<Vec<(usize, Answer)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let mut client = stack.client();
                    s.spawn(move || {
                        (0..EACH)
                            .map(|k| {
                                let i = inputs[(c * 7 + k) % inputs.len()];
                                (i, client.call(&f.root, &f.inputs[i]).expect("request"))
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let answers: Vec<(usize, Answer)> = results.into_iter().flatten().collect();
        assert_eq!(answers.len(), CLIENTS * EACH);
        for (i, a) in answers {
            if mask_counters(&a) != mask_counters(&w[i]) {
                wrong.push(format!(
                    "  {} {:?}: {} where unfused {}",
                    f.name,
                    String::from_utf8_lossy(&f.inputs[i]),
                    a.show(),
                    w[i].show()
                ));
            }
        }
    }
    stack.stop().unwrap();
    assert!(
        wrong.is_empty(),
        "{tag}: {} wrong or lost answers of {}:\n{}",
        wrong.len(),
        flows().len() * CLIENTS * EACH,
        wrong[..wrong.len().min(12)].join("\n")
    );
}

#[test]
fn eight_concurrent_clients_get_every_answer_unfused() {
    concurrent_clients_all_answered("concurrent-unfused", &BTreeMap::new());
}

#[test]
fn eight_concurrent_clients_get_every_answer_fused() {
    concurrent_clients_all_answered("concurrent-fused", &fuse_all("concurrent", &[]));
}

#[test]
fn mask_counters_hides_only_counter_digits() {
    let m = mask_counters(&Answer::Ok(
        b"Foo#12(h=37)[Bar(513):X] post 3da4-7 #2 $1.50/q9 timeline[4]".to_vec(),
    ));
    assert_eq!(
        m,
        Answer::Ok(b"Foo#N(h=37)[Bar(513):X] post 3da4-N #N $1.50/qN timeline[N]".to_vec())
    );
}

/// Serve `inputs`, one at a time, to `root` on a stack of `root` and its
/// one callee (each (name, library)); `check` sees the stack and the
/// answers before it stops.
fn serve_pair(
    tag: &str,
    root: (&str, &Path),
    callee: (&str, &Path),
    inputs: &[&[u8]],
    check: impl FnOnce(&Stack, &[Answer]),
) -> Vec<Answer> {
    let functions = [
        Function::new(root.0, 1, (1, 4), root.1),
        Function::new(callee.0, 2, (1, 4), callee.1),
    ];
    let stack = start(tag, &functions, &Launch::Libraries);
    let mut client = stack.client_with_deadline(Duration::from_secs(3));
    let answers: Vec<Answer> = inputs
        .iter()
        .map(|i| client.call(root.0, i).unwrap())
        .collect();
    check(&stack, &answers);
    stack.stop().unwrap();
    answers
}

/// A callee that crashes (Guard calls Crasher; "segv" makes Crasher write
/// through a null pointer), as the client sees it on nightcore.
#[test]
fn a_crashing_callee_as_the_client_sees_it_on_nightcore() {
    let dir = scratch_dir("nightcore-crash");
    let guard = build_test_lib("iso_guard.c", &dir);
    let crasher = build_test_lib("iso_crasher.c", &dir);
    let fuse = |isolate: &str| {
        let out = dir.join(format!("libguard-{isolate}.fused.so"));
        run_ok(
            faasfuse()
                .arg("merge")
                .arg(format!("Guard={}", guard.display()))
                .arg(format!("Crasher={}", crasher.display()))
                .args(["--isolate", isolate, "-o"])
                .arg(&out),
        );
        out
    };
    let serve = |tag: &str, root_lib: &Path| {
        let inputs: [&[u8]; 3] = [b"a", b"segv", b"b"];
        serve_pair(
            tag,
            ("Guard", root_lib),
            ("Crasher", &crasher),
            &inputs,
            |_, _| {},
        )
    };
    let ok = |s: &str| Answer::Ok(s.as_bytes().to_vec());
    // Unfused: Crasher's process dies and never answers; Guard waits in its
    // nested call for good, and the request behind it queues for Guard.
    let unfused = serve("crash-unfused", &guard);
    assert_eq!(
        unfused,
        [ok("rc=0 ok:a"), Answer::NoAnswer, Answer::NoAnswer]
    );
    // faasfuse's host does not wait for good: it ends the run naming the
    // worker that died.
    let (code, err) = pm_fail(
        &[
            format!("Guard={}", guard.display()),
            format!("Crasher={}", crasher.display()),
        ],
        "Guard",
        &[b"a".to_vec(), b"segv".to_vec(), b"b".to_vec()],
        true,
        &[],
        "nightcore-crash-host",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("worker process for Crasher") && err.contains("died"),
        "{err}"
    );
    // Fused without isolation: the fault kills Guard's process, Crasher
    // inside it; the client sees the same as unfused.
    assert_eq!(serve("crash-none", &fuse("none")), unfused);
    // Fused with --isolate stack: the fault fails only Crasher's call
    // (-1, as DESIGN.md's isolation asks), Guard answers and serves on.
    assert_eq!(
        serve("crash-stack", &fuse("stack")),
        [ok("rc=0 ok:a"), ok("rc=-1 "), ok("rc=0 ok:b")]
    );
}

/// A stack stopped leaves no process behind; one whose programs are
/// missing fails with the reason.
#[test]
fn a_stack_leaves_nothing_behind() {
    let functions = deployment(&BTreeMap::new());
    let stack = start("cleanup", &functions[..2], &Launch::Libraries);
    let mut pids = stack.platform_pids();
    pids.extend(stack.worker_pids());
    assert!(
        pids.len() >= 2 + 2 + 2,
        "gateway, engine, launchers, workers: {pids:?}"
    );
    stack.stop().unwrap();
    for p in pids {
        let st = nightcore::procs::stat(p);
        assert!(st.is_none(), "process {p} left behind: {st:?}");
    }
}

/// Spawner makes a nested call from a second thread while its main thread
/// is in a nested call of its own. faasfuse's host and fusion runtime fail
/// the second thread's call (-1); nightcore's worker process dies of it
/// (SIGSEGV) and the client never gets an answer. The contract (one call
/// at a time, on the worker's main thread) leaves this undefined; the test
/// pins down both sides.
#[test]
fn a_nested_call_from_a_second_thread_crashes_nightcores_worker() {
    let w = pm_workflow("threads");
    let (spawner, echo) = (w.lib("Spawner"), w.lib("Echo"));
    let serve = |tag: &str, root_lib: &Path| -> Answer {
        let answers = serve_pair(
            tag,
            ("Spawner", root_lib),
            ("Echo", echo),
            &[b"a"],
            |stack, a| {
                let died = std::fs::read_to_string(stack.dir.join("out/Spawner_worker_0.stderr"))
                    .unwrap_or_default()
                    .contains("SIGSEGV");
                assert_eq!(died, a[0] == Answer::NoAnswer, "{tag}: {}", a[0].show());
            },
        );
        answers[0].clone()
    };
    assert_eq!(serve("threads-unfused", spawner), Answer::NoAnswer);
    let dir = scratch_dir("nightcore-threads");
    let fused = dir.join("libspawner.fused.so");
    run_ok(
        faasfuse()
            .arg("merge")
            .args(w.deploy_args())
            .arg("-o")
            .arg(&fused),
    );
    assert_eq!(
        serve("threads-fused", &fused),
        Answer::Ok(b"main=0(m) thread=-1 create=-1".to_vec())
    );
}

/// Tally and Count both define the C++ inline static `requests_seen()::n`
/// (STB_GNU_UNIQUE). On nightcore each function has its own process and so
/// its own count; the fused image must keep that (each image its own
/// copy), and `merge` says which copy other libraries share.
#[test]
fn unique_statics_keep_a_copy_per_function_as_on_nightcore() {
    let dir = scratch_dir("nightcore-unique");
    let build = |src: &str| {
        let out = dir.join(format!("lib{src}.so"));
        run_ok(
            std::process::Command::new("g++")
                .args(["-shared", "-fPIC", "-O2", "-I"])
                .arg(repo().join("fixtures/include"))
                .arg("-I")
                .arg(repo().join("tests/data"))
                .arg(repo().join(format!("tests/data/{src}.cc")))
                .arg("-o")
                .arg(&out),
        );
        out
    };
    let (tally, count) = (build("uq_counter_root"), build("uq_counter_callee"));
    let fused = dir.join("libtally.fused.so");
    let o = run_ok(
        faasfuse()
            .arg("merge")
            .arg(format!("Tally={}", tally.display()))
            .arg(format!("Count={}", count.display()))
            .arg("-o")
            .arg(&fused),
    );
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        report.contains("Tally and Count both define the unique symbol _ZZ13requests_seenvE1n"),
        "{report}"
    );
    let serve = |tag: &str, root_lib: &Path| {
        let inputs: [&[u8]; 4] = [b"x"; 4];
        serve_pair(
            tag,
            ("Tally", root_lib),
            ("Count", &count),
            &inputs,
            |_, _| {},
        )
    };
    let unfused = serve("unique-unfused", &tally);
    assert_eq!(unfused[3], Answer::Ok(b"tally=4 count=4".to_vec()));
    assert_eq!(serve("unique-fused", &fused), unfused);
}

/// The fan-out deployment on nightcore, recorded system-wide with off-CPU
/// stacks (`perf record -a -e sched:sched_switch --call-graph dwarf`)
/// while a client sends its requests (199 without a recommendation, one
/// with) over and over: Frontend's worker blocks in each nested call until
/// the engine brings the answer, and `plan` on those blockings decides as
/// on the platform's exact count of the same requests' calls (`faasfuse
/// run --json`): Inventory and Pricing fused, Recommend cold, every edge
/// seen by off-CPU chains.
#[test]
fn off_cpu_stacks_of_nightcores_workers_decide_as_the_exact_trace() {
    let dir = scratch_dir("nightcore-offcpu");
    let config = fanout_config(&dir);
    let inputs = fanout_one_rare(0x0ffc, "nightcore-offcpu");
    let requests: Vec<Vec<u8>> = std::fs::read_to_string(&inputs)
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let functions: Vec<Function> = ["Frontend", "Inventory", "Pricing", "Recommend"]
        .iter()
        .zip(["libfrontend", "libinventory", "libpricing", "librecommend"])
        .enumerate()
        .map(|(i, (name, lib))| {
            let lib = fixtures().join("default").join(format!("{lib}.so"));
            Function::new(name, i as u32 + 1, (1, 8), &lib)
        })
        .collect();
    let stack = start("offcpu", &functions, &Launch::Libraries);
    let data = dir.join("nightcore.data");
    let _ = std::fs::remove_file(&data);
    let log = dir.join("perf.log");
    let child = std::process::Command::new("perf")
        .args(["record", "-q", "-a", "-e", "sched:sched_switch"])
        .args(["--call-graph", "dwarf", "-o"])
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("perf is not installed (Debian linux-perf): {e}"));
    /// The recording: stopped (SIGINT, as ^C stops it) when the test
    /// is done with it, killed if the test fails first (every switch-out
    /// of the machine goes to its file).
    struct Recording(std::process::Child);
    impl Recording {
        fn stop(mut self) -> std::process::ExitStatus {
            // SAFETY: a signal to the child this test started.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            self.0.wait().unwrap()
        }
    }
    impl Drop for Recording {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let perf = Recording(child);
    // perf starts recording some time after it starts: serve the requests
    // over and over for a while, whatever part of it perf sees.
    let mut client = stack.client();
    let t0 = std::time::Instant::now();
    let mut served = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        for r in &requests {
            let a = client.call("Frontend", r).expect("request");
            // Some requests fail by design (a sold-out item): 500.
            assert!(
                a != Answer::NoAnswer,
                "{}: no answer",
                String::from_utf8_lossy(r)
            );
        }
        served += 1;
    }
    let status = perf.stop();
    stack.stop().unwrap();
    // perf ends as the signal that stopped it, once its file is written.
    let stopped = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
    assert!(
        (status.success() || stopped) && data.exists(),
        "perf record failed: {status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let w = workflow("fanout");
    let (text, p) = run_profile(&data, lib_args(&w), &dir.join("nightcore.json"));
    eprintln!("{served} passes over the requests (perf saw part of them); the profile:\n{text}");
    assert_eq!(p["stats"]["samples"], 0, "{}", p["stats"]);
    for c in ["Inventory", "Pricing", "Recommend"] {
        assert_eq!(p["evidence"]["Frontend"][c], "off_cpu_chains", "{text}");
    }

    let decided = |plan: &serde_json::Value| -> (Vec<String>, Vec<String>) {
        let status: Vec<String> = plan_edges(plan)
            .into_iter()
            .filter(|(caller, _, _)| caller == "Frontend")
            .map(|(_, callee, e)| format!("{callee} {}", e["status"]))
            .collect();
        (members(plan, "Frontend"), status)
    };
    let on_nightcore = plan_json(&config, &[&data]);
    let exact = exact_trace_plan(&config, &inputs, &dir.join("trace.json"));
    assert_eq!(
        decided(&on_nightcore),
        decided(&exact),
        "{}",
        on_nightcore["edges"]
    );
    assert_eq!(decided(&exact).0, ["Frontend", "Inventory", "Pricing"]);
    // Hundreds of MB of every switch-out on the machine: kept only when
    // the test fails.
    let _ = std::fs::remove_file(&data);
}
