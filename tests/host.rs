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
    let hello = workflows().into_iter().find(|w| w.name == "hello").unwrap();
    let r = report(&hello, &["a".into(), "b".into(), "fail".into()], false);
    assert_eq!(r["calls"]["Foo"]["Bar"], 3);
}
