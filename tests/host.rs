//! `faasfuse run`: the in-process and `--ipc` deployments of every fixture
//! workflow give identical outputs, error paths included.

mod common;
use common::*;

/// Serve `inputs` to the workflow's root and return stdout lines.
fn serve(w: &Workflow, variant: &str, inputs: &[String], ipc: bool) -> Vec<String> {
    let file = input_file(&format!("{}-{variant}-{ipc}", w.name), inputs);
    let out = common::serve(&w.run_args(variant), &w.root, &file, ipc);
    let _ = std::fs::remove_file(&file);
    out.lines().map(str::to_string).collect()
}

fn check_workflow(w: &Workflow, variant: &str, n: usize) {
    let inputs = generate_inputs(w, n, 0xfaa5);
    let local = serve(w, variant, &inputs, false);
    let ipc = serve(w, variant, &inputs, true);
    assert_eq!(local.len(), inputs.len(), "{}: one line per input", w.name);
    for (i, (a, b)) in local.iter().zip(&ipc).enumerate() {
        assert_eq!(
            a, b,
            "{} ({variant}): input {:?} differs",
            w.name, inputs[i]
        );
    }
    // The inputs reach both successful and failing requests.
    let ok = local.iter().filter(|l| l.starts_with("rc=0\t")).count();
    assert!(ok > n / 10, "{}: only {ok} successful requests", w.name);
    assert!(ok < local.len(), "{}: no request failed", w.name);
}

#[test]
fn ipc_matches_in_process_on_every_workflow() {
    for w in workflows() {
        check_workflow(&w, "default", 150);
    }
}

#[test]
fn ipc_matches_in_process_on_variants() {
    for v in variants().iter().filter(|v| *v != "default") {
        for w in workflows() {
            check_workflow(&w, v, 40);
        }
    }
}

/// The `--json` report of serving `inputs` to the workflow's root.
fn report(w: &Workflow, inputs: &[String], ipc: bool) -> serde_json::Value {
    let file = input_file(&format!("{}-calls-{ipc}", w.name), inputs);
    let mut cmd = faasfuse();
    cmd.arg("run")
        .args(w.run_args("default"))
        .arg("--inputs")
        .arg(&file)
        .arg("--json");
    if ipc {
        cmd.arg("--ipc");
    }
    cmd.arg("--").arg(&w.root);
    serde_json::from_slice(&run_ok(&mut cmd).stdout).unwrap()
}

#[test]
fn both_modes_count_the_same_nested_calls_per_edge() {
    for w in workflows() {
        let inputs = generate_inputs(&w, 60, 0xca11);
        let a = report(&w, &inputs, false);
        let b = report(&w, &inputs, true);
        assert_eq!(a["calls"], b["calls"], "{}", w.name);
        assert_eq!(a["external"][&w.root], inputs.len());
        let total: u64 = a["calls"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|m| m.as_object().unwrap().values())
            .map(|n| n.as_u64().unwrap())
            .sum();
        // Calls refused past the depth limit are attempts, not calls.
        assert!(total <= a["nested_calls"].as_u64().unwrap(), "{}", w.name);
        assert!(total > 0, "{}", w.name);
    }
    // The hello chain: Foo calls Bar once per request.
    let hello = workflow("hello");
    let r = report(&hello, &["a".into(), "b".into(), "fail".into()], false);
    assert_eq!(r["calls"]["Foo"]["Bar"], 3);
}

// ---- nightcore's process model (tests/data/pm_*.c) ----

fn texts(inputs: &[&str]) -> Vec<Vec<u8>> {
    inputs.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// R's answer under nightcore: every level in its own process, with its own
/// scratch buffer.
fn recurse_per_process(n: u32) -> String {
    if n == 0 {
        "r0()".into()
    } else {
        format!("r{n}({})", recurse_per_process(n - 1))
    }
}

/// R's answer when all levels share one process (and one scratch buffer):
/// after its nested call returns, every level finds the deepest level's
/// "r1(" in the buffer.
fn recurse_shared(n: u32) -> String {
    if n == 0 {
        "r0()".into()
    } else {
        format!("r1({})", recurse_shared(n - 1))
    }
}

#[test]
fn recurse_static_reaches_a_new_process_per_level_under_ipc() {
    let w = pm_workflow("recurse_static");
    let ns = [0u32, 1, 3, 5];
    let inputs: Vec<Vec<u8>> = ns.iter().map(|n| n.to_string().into_bytes()).collect();
    let (report, results, _) = pm_serve(&w.deploy_args(), "R", &inputs, true, &[], "recurse");
    for (n, (rc, out)) in ns.iter().zip(&results) {
        assert_eq!(*rc, 0);
        assert_eq!(
            String::from_utf8_lossy(out),
            recurse_per_process(*n),
            "n={n}"
        );
    }
    assert_eq!(recurse_per_process(3), "r3(r2(r1(r0())))");
    // One process per level of the deepest request, reused afterwards.
    assert_eq!(report["processes"]["R"], 6, "{}", report["processes"]);
    assert_eq!(report["calls"]["R"]["R"], 1 + 3 + 5);
    assert!(report.get("workers").is_none());
}

#[test]
fn recurse_static_in_process_fails_clearly_unless_declared_reentrant() {
    let w = pm_workflow("recurse_static");
    // Without recursion one process serves it.
    let (_, r, _) = pm_serve(&w.deploy_args(), "R", &texts(&["0"]), false, &[], "rec0");
    assert_eq!(r, vec![(0, b"r0()".to_vec())]);
    // Recursion cannot be served by the one worker of R.
    let (code, err) = pm_fail(
        &w.deploy_args(),
        "R",
        &texts(&["0", "3"]),
        false,
        &[],
        "rec3",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("R calls R while R is already running in this process")
            && err.contains("use --ipc, or declare R re-entrant"),
        "{err}"
    );
    // Declared re-entrant, extra workers serve it, but R is not truly
    // re-entrant: the levels share its static buffer, and the answer is
    // not nightcore's.
    let inputs = texts(&["3", "5"]);
    let (report, r, _) = pm_serve(
        &w.deploy_args(),
        "R",
        &inputs,
        false,
        &["--reentrant", "R"],
        "rec-reentrant",
    );
    assert_eq!(
        r,
        vec![
            (0, recurse_shared(3).into_bytes()),
            (0, recurse_shared(5).into_bytes())
        ]
    );
    assert_eq!(recurse_shared(3), "r1(r1(r1(r0())))");
    assert_ne!(recurse_shared(3), recurse_per_process(3));
    // One worker, plus one per nesting depth it was re-entered at.
    assert_eq!(report["workers"]["R"], 6, "{report}");
    assert!(report.get("processes").is_none());
    // A re-entrant name that is not deployed is an input error.
    let (code, err) = pm_fail(
        &w.deploy_args(),
        "R",
        &texts(&["0"]),
        false,
        &["--reentrant", "Q"],
        "rec-undeployed",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Q: declared re-entrant but not deployed"),
        "{err}"
    );
    // --reentrant changes nothing under --ipc.
    let (_, r, _) = pm_serve(
        &w.deploy_args(),
        "R",
        &inputs,
        true,
        &["--reentrant", "R"],
        "rec-reentrant",
    );
    assert_eq!(r[0].1, recurse_per_process(3).into_bytes());
}

/// A func_config.json deploying R with these extra fields.
fn recurse_config(tag: &str, fields: serde_json::Value) -> std::path::PathBuf {
    let w = pm_workflow("recurse_static");
    let mut entry = serde_json::json!({"funcName": "R", "funcId": 1, "library": w.lib("R")});
    for (k, v) in fields.as_object().unwrap() {
        entry[k] = v.clone();
    }
    let p = scratch_dir("pm-config").join(format!("{tag}.json"));
    std::fs::write(&p, serde_json::to_string(&[entry]).unwrap()).unwrap();
    p
}

#[test]
fn the_process_pool_follows_func_config_and_a_full_pool_fails_the_request() {
    let c = recurse_config(
        "pool",
        serde_json::json!({"minWorkers": 2, "maxWorkers": 3}),
    );
    let config = ["--config".to_string(), c.display().to_string()];
    // minWorkers start up front.
    let (report, r, _) = pm_serve(&config, "R", &texts(&["0"]), true, &[], "pool0");
    assert_eq!(r, vec![(0, b"r0()".to_vec())]);
    assert_eq!(report["processes"]["R"], 2);
    // Three levels fit in three processes.
    let (report, r, _) = pm_serve(&config, "R", &texts(&["2"]), true, &[], "pool2");
    assert_eq!(r[0].1, recurse_per_process(2).into_bytes());
    assert_eq!(report["processes"]["R"], 3);
    // A fourth level finds every process busy and the pool full: nightcore
    // would wait forever; the request fails, naming R and its limit.
    let (code, err) = pm_fail(&config, "R", &texts(&["1", "3"]), true, &[], "pool3");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("R calls R, but all 3 worker processes of R (its maxWorkers) are busy"),
        "{err}"
    );
    assert!(err.contains("input 2"), "{err}");
    // Limits that allow no process are an input error naming the config.
    let c = recurse_config(
        "bad-pool",
        serde_json::json!({"minWorkers": 3, "maxWorkers": 2}),
    );
    let config = ["--config".to_string(), c.display().to_string()];
    let (code, err) = pm_fail(&config, "R", &texts(&["0"]), true, &[], "bad-pool");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{}: entry 1 (R): minWorkers 3 exceeds maxWorkers 2",
            c.display()
        )),
        "{err}"
    );
    // `reentrant: true` in the config serves the in-process recursion.
    let c = recurse_config("reentrant", serde_json::json!({"reentrant": true}));
    let config = ["--config".to_string(), c.display().to_string()];
    let (_, r, _) = pm_serve(&config, "R", &texts(&["3"]), false, &[], "cfg-reentrant");
    assert_eq!(r[0].1, recurse_shared(3).into_bytes());
}

#[test]
fn diamond_callee_keeps_its_context_in_globals() {
    let w = pm_workflow("diamond");
    let n = w.inputs.len() as u64;
    for ipc in [false, true] {
        let (report, r, _) = pm_serve(&w.deploy_args(), "A", &w.inputs, ipc, &[], "diamond");
        for (input, (rc, out)) in w.inputs.iter().zip(&r) {
            let i = String::from_utf8_lossy(input);
            assert_eq!(*rc, 0, "ipc={ipc}");
            assert_eq!(
                String::from_utf8_lossy(out),
                format!("A[B<{i}>|C(B<{i}>)]"),
                "ipc={ipc}"
            );
        }
        // B is called twice per request, never while it runs: one worker
        // (one process) each.
        let pool = &report[if ipc { "processes" } else { "workers" }];
        assert_eq!(
            *pool,
            serde_json::json!({"A": 1, "B": 1, "C": 1}),
            "ipc={ipc}"
        );
        assert_eq!(
            report["calls"],
            serde_json::json!({"A": {"B": n, "C": n}, "B": {"Nobody": 2 * n}, "C": {"B": n}}),
            "ipc={ipc}"
        );
    }
}

#[test]
fn every_input_is_a_private_nul_terminated_copy() {
    let w = pm_workflow("strlen");
    for ipc in [false, true] {
        let (_, r, _) = pm_serve(&w.deploy_args(), "Sub", &w.inputs, ipc, &[], "strlen");
        assert_eq!(r, vec![(0, b"Sub:len=3 nul=1 n=3".to_vec())], "ipc={ipc}");
        // A request's input too (cut from a larger file buffer).
        let (_, r, _) = pm_serve(
            &w.deploy_args(),
            "Len",
            &texts(&["abc", "", "abcdef"]),
            ipc,
            &[],
            "strlen-root",
        );
        let want: Vec<(i64, Vec<u8>)> = [3, 0, 6]
            .iter()
            .map(|n| (0, format!("len={n} nul=1 n={n}").into_bytes()))
            .collect();
        assert_eq!(r, want, "ipc={ipc}");
    }
}

#[test]
fn nested_calls_from_a_second_thread_fail_cleanly() {
    let w = pm_workflow("threads");
    for ipc in [false, true] {
        let (_, r, err) = pm_serve(&w.deploy_args(), "Spawner", &w.inputs, ipc, &[], "threads");
        for (rc, out) in &r {
            assert_eq!(*rc, 0);
            assert_eq!(
                String::from_utf8_lossy(out),
                "main=0(m) thread=-1 create=-1",
                "ipc={ipc}"
            );
        }
        let count = |s: &str| err.lines().filter(|l| l.contains(s)).count();
        assert_eq!(
            count("faasfuse: Spawner invoked Echo from a second thread; one call at a time per process"),
            w.inputs.len(),
            "ipc={ipc}: {err}"
        );
        assert_eq!(
            count("faasfuse: Spawner invoked Echo while no call of it is running"),
            1,
            "ipc={ipc}: {err}"
        );
        assert_eq!(
            count("faasfuse: Spawner appended output from a thread"),
            w.inputs.len(),
            "ipc={ipc}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn binary_len32_inputs_round_trip_in_both_modes() {
    let w = pm_workflow("binary");
    assert!(w.inputs.iter().any(|i| i.contains(&0)));
    assert!(w.inputs.iter().any(|i| i.contains(&b'\n')));
    for ipc in [false, true] {
        let (report, r, _) = pm_serve(&w.deploy_args(), "Relay", &w.inputs, ipc, &[], "binary");
        for (input, (rc, out)) in w.inputs.iter().zip(&r) {
            let mut want = b"[".to_vec();
            want.extend_from_slice(input);
            want.push(b']');
            assert_eq!((*rc, out), (0, &want), "ipc={ipc}");
        }
        assert_eq!(report["results"][0]["output_hex"], hex(b"[a\0b\nc]"));
        let (_, r, _) = pm_serve(&w.deploy_args(), "Echo", &w.inputs, ipc, &[], "binary-echo");
        let outs: Vec<Vec<u8>> = r.into_iter().map(|(_, o)| o).collect();
        assert_eq!(outs, w.inputs, "ipc={ipc}");
    }
}

#[test]
fn a_truncated_len32_record_is_a_clear_input_error() {
    let w = pm_workflow("binary");
    let dir = scratch_dir("pm-len32");
    for (name, data, offset) in [
        ("short-body", b"\x03\0\0\0abc\x05\0\0\0x".to_vec(), 7),
        ("short-length", b"\x01\0".to_vec(), 0),
    ] {
        let file = dir.join(format!("{name}.len32"));
        std::fs::write(&file, data).unwrap();
        let err = run_refused(
            faasfuse()
                .arg("run")
                .args(w.deploy_args())
                .arg("--inputs")
                .arg(&file)
                .args(["--inputs-format", "len32", "--", "Echo"]),
        );
        assert!(
            err.contains(&file.display().to_string())
                && err.contains(&format!("truncated len32 record at byte {offset}")),
            "{name}: {err}"
        );
    }
}
