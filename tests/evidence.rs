//! Evidence before decisions, on real perf profiles of the fan-out
//! deployment (Frontend calls Inventory once and Pricing once per word
//! on every request, Recommend on 1 request in 200), built as users ship
//! it: `-O2`, without frame pointers.
//!
//! Recorded system-wide with frame-pointer call chains (`perf record -a
//! -g`), no chain reaches an RPC site: the site's return address is in
//! the frame of the host's invoke callback, and `faasfuse run`'s host
//! keeps no frame pointers (tests/fp_chains.rs records a platform worker
//! that does): `faasfuse profile`, `plan`, `build` and
//! `merge --profile` report every edge as "no evidence" with the advice
//! how to record a profile that shows it, never as cold, and fuse nothing
//! on that profile alone. Recorded with `perf record -a --call-graph
//! dwarf`, the same deployment decides as it always did: the two hot
//! edges fused, the Recommend edge cold. A platform trace given with the
//! frame-pointer profile supplies the counts the profile lacks.
//!
//! Every test records with perf and fails if perf cannot record (CI
//! installs linux-perf): none passes without its profile.

mod common;
use common::plans::*;
use common::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

fn dir() -> PathBuf {
    scratch_dir("evidence")
}

const ADVICE: &str = "perf record --call-graph dwarf";

/// The fan-out deployment's `func_config.json`.
fn config() -> PathBuf {
    fanout_config(&dir())
}

/// Requests of the fan-out workflow, of which 1 in 200 asks for a
/// recommendation: the Recommend edge is cold (below 1% of Frontend's
/// executions), the other two are hot.
fn inputs() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| fanout_one_rare(0xe71d, "evidence"))
}

/// `perf record <how> -- faasfuse run <fan-out deployment>` into
/// `TAG.data`, recorded once per test binary.
fn record(tag: &str, how: &[&str]) -> PathBuf {
    let data = dir().join(format!("{tag}.data"));
    let w = workflow("fanout");
    perf_record_run(
        &data,
        how,
        &w.deploy_args("default"),
        &w.root,
        inputs(),
        1500,
        false,
    );
    data
}

/// Frame-pointer call chains, system-wide, as production hosts record.
fn frame_pointer_profile() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| record("fp", &["-a", "-g"]))
}

/// DWARF-unwound call chains, system-wide.
fn dwarf_profile() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| record("dwarf", &["-a", "--call-graph", "dwarf"]))
}

/// `merge --profile PROFILE` of the deployment (Frontend the root): the
/// report as JSON.
fn merge_report(tag: &str, profile: &Path) -> Value {
    let w = workflow("fanout");
    let out = dir().join(format!("{tag}.so"));
    let o = run_ok(
        faasfuse()
            .arg("merge")
            .args(w.deploy_args("default"))
            .arg("--profile")
            .arg(profile)
            .arg("--json")
            .arg("-o")
            .arg(&out),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn input_names(m: &Value) -> Vec<String> {
    m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// `build` into `DIR/OUT`: the written plan, deployment and graph.
fn build(out: &str, profile: &Path) -> (Value, Value, String) {
    let out = dir().join(out);
    let _ = std::fs::remove_dir_all(&out);
    build_deployment(&config(), profile, &out);
    let dot = std::fs::read_to_string(out.join("graph.dot")).unwrap();
    (
        read_json(&out.join("plan.json")),
        read_json(&out.join("func_config.json")),
        dot,
    )
}

#[test]
fn frame_pointer_chains_show_no_rpc_edge_and_the_profile_says_so() {
    let data = frame_pointer_profile();
    let w = workflow("fanout");
    let (text, p) = run_profile(data, lib_args(&w), &dir().join("fp.json"));
    assert!(
        text.contains("cannot see") && text.contains("Frontend -> Pricing (samples only)"),
        "{text}"
    );
    assert!(text.contains(ADVICE), "{text}");
    // A frame-pointer profile with samples in the callees, not a DWARF one.
    let st = &p["stats"];
    assert!(st["callchain_samples"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["dwarf_samples"], 0, "{st}");
    assert!(p["images"]["Pricing"]["samples"].as_u64().unwrap() > 0);
    // No chain reaches an RPC site: no edge has a count, and none is seen.
    assert_eq!(p["calls"], serde_json::json!({}), "{}", p["calls"]);
    let ev = &p["evidence"]["Frontend"];
    for callee in ["Inventory", "Pricing", "Recommend"] {
        let e = ev[callee].as_str().unwrap_or_default();
        assert!(e == "samples_only" || e == "nothing", "{callee}: {ev}");
    }
    assert_eq!(ev["Pricing"], "samples_only", "{ev}");
}

#[test]
fn plan_reports_edges_a_frame_pointer_profile_cannot_see_as_no_evidence_never_cold() {
    let data = frame_pointer_profile();
    let plan = plan_json(&config(), &[data]);
    for callee in ["Inventory", "Pricing", "Recommend"] {
        let e = edge(&plan, callee);
        assert_eq!(e["status"], "no evidence", "{e}");
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(ADVICE), "{e}");
        assert!(reason.contains("-fno-omit-frame-pointer"), "{e}");
    }
    assert_eq!(edge(&plan, "Pricing")["evidence"], "samples_only");
    assert_eq!(members(&plan, "Frontend"), ["Frontend"]);
    for d in plan["decisions"].as_array().unwrap() {
        assert_eq!(d["fused"], false, "{d}");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("no evidence") && reason.contains(ADVICE),
            "{d}"
        );
        assert!(!reason.contains("cold"), "{d}");
    }
    // The table says it too, and calls nothing cold.
    let table = plan_table(&config(), data);
    assert!(table.contains("no evidence (samples only)"), "{table}");
    assert!(table.contains(ADVICE), "{table}");
    assert!(!table.contains("cold"), "{table}");
}

#[test]
fn build_and_merge_fuse_nothing_on_a_frame_pointer_profile_alone() {
    let data = frame_pointer_profile();
    let (plan, deployed, dot) = build("fp-build", data);
    // Drawn dotted, not dashed as a cold edge.
    assert!(
        dot.contains("style=dotted") && !dot.contains("style=dashed"),
        "{dot}"
    );
    for g in plan["groups"].as_array().unwrap() {
        assert_eq!(g["removed_calls"], 0.0, "{g}");
    }
    assert!(
        plan["edges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "no evidence"),
        "{}",
        plan["edges"]
    );
    // Every function keeps its own library: no fused image is deployed.
    for f in deployed.as_array().unwrap() {
        let lib = f["library"].as_str().unwrap();
        assert!(!lib.contains("fused"), "{f}");
    }

    let m = merge_report("fp-merge", data);
    assert_eq!(input_names(&m), ["Frontend", "faasfuse"], "{}", m["inputs"]);
    let notes = m["notes"].to_string();
    assert!(
        notes.contains("no evidence") && notes.contains(ADVICE),
        "{notes}"
    );
    assert!(!notes.contains("cold"), "{notes}");
}

#[test]
fn dwarf_chains_decide_as_before_hot_edges_fused_and_the_cold_one_cold() {
    let data = dwarf_profile();
    let plan = plan_json(&config(), &[data]);
    assert_eq!(
        members(&plan, "Frontend"),
        ["Frontend", "Inventory", "Pricing"],
        "{}",
        plan["decisions"]
    );
    for callee in ["Inventory", "Pricing"] {
        let e = edge(&plan, callee);
        assert_eq!(e["status"], "fused", "{e}");
        assert_eq!(e["evidence"], "dwarf_chains", "{e}");
        assert!(e.get("reason").is_none(), "{e}");
    }
    let rec = edge(&plan, "Recommend");
    assert_eq!(rec["status"], "cold", "{rec}");
    assert_eq!(rec["evidence"], "dwarf_chains", "{rec}");
    let table = plan_table(&config(), data);
    assert!(!table.contains("no evidence"), "{table}");

    let (built, deployed, dot) = build("dwarf-build", data);
    assert!(!dot.contains("style=dotted"), "{dot}");
    assert_eq!(
        members(&built, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    assert_eq!(deployed[0]["library"], "libfrontend.fused.so");

    let m = merge_report("dwarf-merge", data);
    assert_eq!(
        input_names(&m),
        ["Frontend", "Inventory", "Pricing", "faasfuse"],
        "{}",
        m["notes"]
    );
    let notes = m["notes"].to_string();
    assert!(
        notes.contains("cold") && !notes.contains("no evidence"),
        "{notes}"
    );
}

#[test]
fn a_platform_trace_gives_the_counts_a_frame_pointer_profile_lacks() {
    let data = frame_pointer_profile();
    let trace = dir().join("trace.json");
    write_trace(&config(), inputs(), "Frontend", &trace);
    let plan = plan_json(&config(), &[data, &trace]);
    assert_eq!(
        members(&plan, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    assert_eq!(edge(&plan, "Recommend")["status"], "cold");
    assert!(!plan["edges"].to_string().contains("no evidence"));
}
