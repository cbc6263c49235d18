//! Fused images under nightcore's process model: for every process-model
//! workflow (tests/data/pm_workflows.json), the fused image of its root and
//! callees answers exactly as the unfused deployment does under
//! `faasfuse run --ipc` (a pool of worker processes per function, one
//! worker per process, never re-entered, NUL-terminated input copies).
//! The fused root is deployed in place of the root; the other functions
//! keep their own libraries, serving whatever stays an RPC.

mod common;
use common::*;

use std::path::PathBuf;

/// Fuse workflow `w` (root and every callee) into one image.
fn fuse(w: &PmWorkflow, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let dir = scratch_dir("fused-model");
    let tag = extra.join("-").replace("--", "");
    let out = dir.join(format!("{}{tag}.fused.so", w.name));
    let m = run_ok(
        faasfuse()
            .arg("merge")
            .args(w.deploy_args())
            .args(extra)
            .args(["--json", "-o"])
            .arg(&out),
    );
    (out, serde_json::from_slice(&m.stdout).unwrap())
}

/// The deployment with the fused image serving the root.
fn fused_deploy(w: &PmWorkflow, fused: &std::path::Path) -> Vec<String> {
    let mut d = vec![format!("{}={}", w.root, fused.display())];
    d.extend(
        w.functions[1..]
            .iter()
            .map(|(n, p)| format!("{n}={}", p.display())),
    );
    d
}

/// Unfused and fused answers of `w` under the process-model host, and the
/// two reports.
fn compare(w: &PmWorkflow, extra: &[&str]) -> (serde_json::Value, serde_json::Value, String) {
    let (fused, manifest) = fuse(w, extra);
    let (before, want, _) = pm_serve(&w.deploy_args(), &w.root, &w.inputs, true, &[], &w.name);
    let (after, got, err) = pm_serve(
        &fused_deploy(w, &fused),
        &w.root,
        &w.inputs,
        true,
        &[],
        &format!("{}-fused", w.name),
    );
    for ((i, a), b) in w.inputs.iter().zip(&want).zip(&got) {
        assert_eq!(
            (a.0, String::from_utf8_lossy(&a.1)),
            (b.0, String::from_utf8_lossy(&b.1)),
            "{}: input {:?}",
            w.name,
            String::from_utf8_lossy(i)
        );
    }
    let _ = manifest;
    (before, after, err)
}

#[test]
fn recursion_reaches_another_process_fused_as_unfused() {
    let w = pm_workflow("recurse_static");
    let (_, after, _) = compare(w, &[]);
    // R re-entering itself left the image as an RPC: the host started a
    // process per level for the fused image too.
    let inputs: Vec<String> = w
        .inputs
        .iter()
        .map(|i| String::from_utf8_lossy(i).into_owned())
        .collect();
    let deepest: u64 = inputs
        .iter()
        .map(|i| i.parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert_eq!(after["processes"]["R"], deepest + 1, "{after:#}");
    let sum: u64 = inputs.iter().map(|i| i.parse::<u64>().unwrap()).sum();
    assert_eq!(after["calls"]["R"]["R"], sum, "{after:#}");
}

#[test]
fn declared_reentrant_recursion_stays_in_the_image() {
    // Loop (fixtures) keeps no state across its nested call: declared
    // re-entrant, its recursion runs in-process, with the same answers.
    let wf = workflow("recurse");
    let lib = fixtures().join("default").join("libloop.so");
    let dir = scratch_dir("fused-model");
    let inputs: Vec<Vec<u8>> = ["", "a", "abc", "!x", "0123456789"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let deploy = vec![format!("Loop={}", lib.display())];
    let (_, want, _) = pm_serve(&deploy, "Loop", &inputs, true, &[], "loop");
    for (declared, rpcs) in [(false, 1 + 3 + 10), (true, 0)] {
        let out = dir.join(format!("loop-{declared}.fused.so"));
        let mut cmd = faasfuse();
        cmd.arg("merge").args(&deploy).arg("-o").arg(&out);
        if declared {
            cmd.args(["--reentrant", "Loop"]);
        }
        run_ok(&mut cmd);
        let d = vec![format!("Loop={}", out.display())];
        let (report, got, _) =
            pm_serve(&d, "Loop", &inputs, true, &[], &format!("loop-{declared}"));
        assert_eq!(got, want, "declared re-entrant: {declared}");
        let relayed = report["calls"]["Loop"]["Loop"].as_u64().unwrap_or(0);
        assert_eq!(relayed, rpcs, "RPCs the host relayed, declared: {declared}");
    }
    assert!(wf.reentrant.contains(&"Loop".to_string()));
}

#[test]
fn a_diamond_callee_with_globals_gets_one_worker_fused_as_unfused() {
    let w = pm_workflow("diamond");
    let (before, after, _) = compare(w, &[]);
    // Every call between A, B and C stayed in the image: the host relayed
    // only B's calls to a name nobody serves, and A needed one process.
    assert_eq!(after["processes"]["A"], 1, "{after:#}");
    assert_eq!(
        after["calls"],
        serde_json::json!({"A": {"Nobody": before["calls"]["B"]["Nobody"]}}),
        "{after:#}"
    );
}

#[test]
fn a_fused_callee_gets_a_nul_terminated_copy() {
    let w = pm_workflow("strlen");
    let (_, after, _) = compare(w, &[]);
    assert!(after["calls"].as_object().unwrap().is_empty(), "{after:#}");
}

#[test]
fn a_second_thread_is_refused_fused_as_unfused() {
    let w = pm_workflow("threads");
    let (_, _, err) = compare(w, &[]);
    assert!(
        err.contains("second thread"),
        "the fused runtime said nothing: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn binary_inputs_cross_a_fused_call_unchanged() {
    let w = pm_workflow("binary");
    compare(w, &[]);
}

#[test]
fn every_lowering_level_keeps_the_process_model() {
    for level in ["none", "dispatch", "direct"] {
        for name in ["recurse_static", "diamond", "strlen", "threads"] {
            compare(pm_workflow(name), &["--lower", level]);
        }
    }
}
