//! Off-CPU stacks as evidence, on real perf profiles of the fan-out
//! deployment (Frontend calls Inventory once and Pricing once per word on
//! every request, Recommend on 1 request in 200), built as users ship it:
//! `-O2`, without frame pointers.
//!
//! Served by `faasfuse run --ipc` (a worker process per function, nested
//! calls over IPC, as on nightcore), a caller blocks while its callee runs
//! in another process: on-CPU samples of the callee never hold the
//! caller's RPC site, but the caller's own stack, each time it is switched
//! out blocked in the call, does. Recorded with `perf record -a -e
//! sched:sched_switch --call-graph dwarf`, those stacks count the calls of
//! each edge, and `plan` decides as on the platform's exact trace (the two
//! hot edges fused, Recommend cold). With `-g`, the frame-pointer chains
//! of the same switch-outs stop in libc and the worker: every edge has no
//! evidence, none is called cold, nothing is fused. Served in one process
//! and recorded with an on-CPU event beside the switches, the on-CPU
//! chains decide, and the switch-outs are no CPU time: the profile's CPU
//! samples are exactly the on-CPU event's. Worker processes recorded with
//! both, as the fleet guide advises, count calls by the blockings and CPU
//! time by the on-CPU event.
//!
//! Every test records with perf and fails if perf cannot record (CI
//! installs linux-perf; tracepoints need root or perf_event_paranoid -1
//! and tracefs): none passes without its profile.

mod common;
use common::plans::*;
use common::*;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

fn dir() -> PathBuf {
    scratch_dir("offcpu")
}

const CALLEES: [&str; 3] = ["Inventory", "Pricing", "Recommend"];

/// The fan-out deployment's `func_config.json`.
fn config() -> PathBuf {
    fanout_config(&dir())
}

/// 199 requests without a recommendation and one with: Recommend cold.
fn inputs() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| fanout_one_rare(0x0ffc, "offcpu"))
}

/// Held while a test records: a system-wide recording sees every process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `perf record <how> -- faasfuse run [--ipc] <fan-out deployment>` into
/// `TAG.data`, one recording at a time: each records every process, and
/// the worker processes of one would block at Frontend's sites in
/// another's profile.
fn record(tag: &str, how: &[&str], repeat: usize, ipc: bool) -> PathBuf {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let data = dir().join(format!("{tag}.data"));
    // perf keeps an existing file as .old: hundreds of MB each.
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(data.with_extension("data.old"));
    let w = workflow("fanout");
    perf_record_run(
        &data,
        how,
        &w.deploy_args("default"),
        &w.root,
        inputs(),
        repeat,
        ipc,
    );
    data
}

/// Worker processes, off-CPU stacks unwound with DWARF, system-wide.
/// Every switch-out is a sample with 8 KiB of stack: a few passes over
/// the requests are enough.
fn ipc_dwarf_profile() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        record(
            "ipc-dwarf",
            &["-a", "-e", "sched:sched_switch", "--call-graph", "dwarf"],
            5,
            true,
        )
    })
}

/// Worker processes, off-CPU stacks as frame-pointer chains.
fn ipc_fp_profile() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| record("ipc-fp", &["-a", "-e", "sched:sched_switch", "-g"], 5, true))
}

/// Worker processes, CPU time and switch-outs together, as the fleet
/// guide records them.
fn ipc_both_profile() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        record(
            "ipc-both",
            &[
                "-a",
                "-e",
                "cpu-clock",
                "-e",
                "sched:sched_switch",
                "--call-graph",
                "dwarf",
            ],
            5,
            true,
        )
    })
}

/// One process: CPU time (`cpu-clock`: `cycles` needs a PMU this VM may
/// lack), switch-outs and wake-ups (a tracepoint that is neither), all
/// with DWARF stacks.
fn in_process_profile() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        record(
            "inproc",
            &[
                "-a",
                "-e",
                "cpu-clock",
                "-e",
                "sched:sched_switch",
                "-e",
                "sched:sched_wakeup",
                "--call-graph",
                "dwarf",
            ],
            1500,
            false,
        )
    })
}

/// The plan on the platform's exact count of the same requests' calls
/// (`faasfuse run --json`).
fn trace_plan() -> &'static Value {
    static PLAN: OnceLock<Value> = OnceLock::new();
    PLAN.get_or_init(|| exact_trace_plan(&config(), inputs(), &dir().join("trace.json")))
}

/// Exact calls per callee of Frontend for one pass over the requests.
fn exact_calls() -> BTreeMap<String, f64> {
    trace_plan();
    let t = read_json(&dir().join("trace.json"));
    t["calls"]["Frontend"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

/// Frontend's group and each edge's status: what a plan decided.
fn decisions(plan: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let statuses = CALLEES
        .iter()
        .map(|c| {
            (
                c.to_string(),
                edge(plan, c)["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (members(plan, "Frontend"), statuses)
}

/// `plan` on `data` decides as on the exact trace: Inventory and Pricing
/// fused into Frontend's group, Recommend cold. The plan.
fn assert_decides_as_the_trace(data: &Path) -> Value {
    let plan = plan_json(&config(), &[data]);
    assert_eq!(
        decisions(&plan),
        decisions(trace_plan()),
        "{}",
        plan["edges"]
    );
    assert_eq!(
        members(&plan, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    assert_eq!(edge(&plan, "Recommend")["status"], "cold");
    plan
}

/// `faasfuse profile DATA --lib ... -o TAG.json`: the printed summary and
/// the profile.
fn profile(tag: &str, data: &Path) -> (String, Value) {
    let w = workflow("fanout");
    run_profile(data, lib_args(&w), &dir().join(format!("{tag}.json")))
}

/// Frontend's RPC sites: (callee, on-CPU samples, blockings).
fn sites(p: &Value) -> Vec<(String, u64, u64)> {
    p["images"]["Frontend"]["rpc_sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["callee"].as_str().unwrap().to_string(),
                s["sample_count"].as_u64().unwrap(),
                s["offcpu_count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Samples per event name in DATA, as perf itself counts them.
fn perf_samples_by_event(data: &Path) -> BTreeMap<String, u64> {
    let o = run_perf(
        Command::new("perf")
            .args(["script", "-F", "event", "-i"])
            .arg(data),
    );
    let mut n = BTreeMap::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let e = l.trim().trim_end_matches(':');
        if !e.is_empty() {
            *n.entry(e.to_string()).or_default() += 1;
        }
    }
    n
}

/// A profile's CPU samples (`st`, its stats) are exactly the `cpu-clock`
/// ones perf counts in `data`, its off-CPU samples exactly the
/// `sched:sched_switch` ones. perf's counts by event.
fn assert_samples_are_perfs(data: &Path, st: &Value) -> BTreeMap<String, u64> {
    let by_event = perf_samples_by_event(data);
    assert_eq!(st["samples"], by_event["cpu-clock"], "{by_event:?} {st}");
    assert_eq!(
        st["offcpu_samples"], by_event["sched:sched_switch"],
        "{by_event:?} {st}"
    );
    by_event
}

#[test]
fn off_cpu_dwarf_stacks_of_worker_processes_decide_as_the_exact_trace() {
    let data = ipc_dwarf_profile();
    let (text, p) = profile("ipc-dwarf", data);
    let st = &p["stats"];
    // Only switch-outs: no CPU time at all, and none counted as such.
    assert_eq!(st["samples"], 0, "{st}");
    assert_eq!(st["dwarf_samples"], 0, "{st}");
    assert!(st["offcpu_samples"].as_u64().unwrap() > 0, "{st}");
    assert!(st["offcpu_blocked"].as_u64().unwrap() > 0, "{st}");
    for (name, img) in p["images"].as_object().unwrap() {
        assert_eq!(img["samples"], 0, "{name}");
        assert_eq!(img["attributed_samples"], 0, "{name}");
        assert_eq!(img["addresses"], serde_json::json!([]), "{name}");
        assert_eq!(p["cpu"][name], 0.0, "{name}");
    }
    // Frontend blocked in its calls: the hot sites many times, on-CPU
    // chains never (there are none).
    let s = sites(&p);
    let exact = exact_calls();
    eprintln!("Frontend's sites (callee, on-CPU samples, blockings) over 5 passes: {s:?}; exact calls per pass: {exact:?}");
    for (callee, samples, blocked) in &s {
        assert_eq!(*samples, 0, "{callee}");
        if callee != "Recommend" {
            assert!(*blocked > 0, "{callee}: {s:?}");
        }
    }
    for c in CALLEES {
        assert_eq!(p["evidence"]["Frontend"][c], "off_cpu_chains", "{c}");
    }
    assert!(text.contains("off-CPU samples"), "{text}");
    assert!(!text.contains("cannot see"), "{text}");

    let plan = assert_decides_as_the_trace(data);
    for c in CALLEES {
        let e = edge(&plan, c);
        assert_eq!(e["evidence"], "off_cpu_chains", "{e}");
        assert!(e.get("reason").is_none(), "{e}");
    }
    let table = plan_table(&config(), data);
    assert!(
        table.contains("(off-CPU chains)") && !table.contains("no evidence"),
        "{table}"
    );
}

#[test]
fn off_cpu_frame_pointer_chains_show_no_edge_and_call_none_cold() {
    let data = ipc_fp_profile();
    let (text, p) = profile("ipc-fp", data);
    let st = &p["stats"];
    assert_eq!(st["samples"], 0, "{st}");
    assert!(st["offcpu_blocked"].as_u64().unwrap() > 0, "{st}");
    // The chains stop in libc and the worker, before Frontend's sites.
    for (callee, samples, blocked) in sites(&p) {
        assert_eq!((samples, blocked), (0, 0), "{callee}");
    }
    assert_eq!(p["calls"], serde_json::json!({}), "{}", p["calls"]);
    for c in CALLEES {
        assert!(
            !p["evidence"]["Frontend"][c]
                .as_str()
                .unwrap()
                .contains("chains"),
            "{c}: {}",
            p["evidence"]
        );
    }
    assert!(text.contains("cannot see"), "{text}");
    assert!(
        text.contains("sched:sched_switch --call-graph dwarf"),
        "{text}"
    );

    let plan = plan_json(&config(), &[data]);
    assert_eq!(members(&plan, "Frontend"), ["Frontend"]);
    for c in CALLEES {
        let e = edge(&plan, c);
        assert_eq!(e["status"], "no evidence", "{e}");
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("perf record -a -e sched:sched_switch --call-graph dwarf"),
            "{e}"
        );
    }
    for d in plan["decisions"].as_array().unwrap() {
        assert_eq!(d["fused"], false, "{d}");
        assert!(!d["reason"].as_str().unwrap().contains("cold"), "{d}");
    }
    let table = plan_table(&config(), data);
    assert!(!table.contains("cold"), "{table}");
}

#[test]
fn in_one_process_on_cpu_chains_decide_and_switch_outs_are_no_cpu_time() {
    let data = in_process_profile();
    let (_, p) = profile("inproc", data);
    let st = &p["stats"];
    // CPU samples are exactly the on-CPU event's; the switch-outs and the
    // wake-ups are counted apart.
    let by_event = assert_samples_are_perfs(data, st);
    eprintln!("samples by event: {by_event:?}; stats: {st}");
    assert_eq!(
        st["other_samples"], by_event["sched:sched_wakeup"],
        "{by_event:?} {st}"
    );
    assert!(st["offcpu_samples"].as_u64().unwrap() > 0, "{st}");
    // Per image, self and attributed samples sum within the CPU samples,
    // and each share is of them.
    let total = st["samples"].as_f64().unwrap();
    let (mut own, mut attributed) = (0, 0);
    for (name, img) in p["images"].as_object().unwrap() {
        own += img["samples"].as_u64().unwrap();
        attributed += img["attributed_samples"].as_u64().unwrap();
        let share = img["attributed_samples"].as_f64().unwrap() / total;
        assert!((p["cpu"][name].as_f64().unwrap() - share).abs() < 1e-12);
        let addressed: u64 = img["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["count"].as_u64().unwrap())
            .sum();
        assert_eq!(addressed, img["samples"].as_u64().unwrap(), "{name}");
    }
    assert_eq!(own, st["matched_samples"].as_u64().unwrap());
    assert!(attributed as f64 <= total);
    // A callee in the caller's thread never blocks it: no blocking at
    // Frontend's sites, and the on-CPU chains see every edge.
    for (callee, _, blocked) in sites(&p) {
        assert_eq!(blocked, 0, "{callee}");
    }
    for c in CALLEES {
        assert_eq!(p["evidence"]["Frontend"][c], "dwarf_chains", "{c}");
    }

    assert_decides_as_the_trace(data);
}

#[test]
fn worker_processes_recorded_on_and_off_cpu_count_blockings_and_cpu_time_apart() {
    let data = ipc_both_profile();
    let (_, p) = profile("ipc-both", data);
    let st = &p["stats"];
    assert_samples_are_perfs(data, st);
    // The DWARF chains of the callers' own time in their calls do not
    // count their calls: their blockings do.
    for c in CALLEES {
        assert_eq!(p["evidence"]["Frontend"][c], "off_cpu_chains", "{c}");
    }
    for (callee, _, blocked) in sites(&p) {
        let calls = p["calls"]["Frontend"][&callee].as_f64().unwrap_or(0.0);
        assert_eq!(calls, blocked as f64, "{callee}");
    }
    let plan = plan_json(&config(), &[data]);
    assert_eq!(
        decisions(&plan),
        decisions(trace_plan()),
        "{}",
        plan["edges"]
    );
}

#[test]
fn a_callee_blocking_in_its_callers_thread_does_not_make_the_caller_look_remote() {
    // Root calls Sleeper (a 200 µs sleep in its own code) and Spinner
    // (CPU only) on every request, both in Root's thread. Root's thread
    // blocks with Root's Sleeper site on its stack, but under Sleeper's
    // frames: it waits for a sleep, not an RPC. Were that counted, Root
    // would look like a caller whose callees run elsewhere, and its
    // Spinner edge, never blocked in, would be measured zero: cold.
    let d = dir().join("in-thread");
    std::fs::create_dir_all(&d).unwrap();
    let libs: Vec<(&str, PathBuf)> = [
        ("Root", "oc_root.c"),
        ("Sleeper", "oc_sleeper.c"),
        ("Spinner", "oc_spinner.c"),
    ]
    .into_iter()
    .map(|(n, src)| (n, build_test_lib(src, &d)))
    .collect();
    let deploy: Vec<String> = libs.iter().map(|(n, lib)| spec(n, lib)).collect();
    let data = d.join("sleeper.data");
    let _ = std::fs::remove_file(&data);
    {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut run: Vec<OsString> = vec![env!("CARGO_BIN_EXE_faasfuse").into(), "run".into()];
        run.extend(deploy.iter().map(Into::into));
        run.extend(["--quiet", "--repeat", "300", "--", "Root", "abc"].map(Into::into));
        perf_record(
            &data,
            &["-e", "sched:sched_switch", "--call-graph", "dwarf"],
            &run,
        );
    }
    let (_, p) = run_profile(&data, lib_args_for(&deploy), &d.join("sleeper.json"));
    // The sleeps were recorded: a blocked switch-out per request at least.
    assert!(
        p["stats"]["offcpu_blocked"].as_u64().unwrap() >= 300,
        "{}",
        p["stats"]
    );
    // No blocking is counted at Root's sites, so its edges are not seen by
    // off-CPU stacks: neither is cold, both have no evidence.
    for s in p["images"]["Root"]["rpc_sites"].as_array().unwrap() {
        assert!(s.get("offcpu_count").is_none(), "{s}");
    }
    for callee in ["Sleeper", "Spinner"] {
        let e = &p["evidence"]["Root"][callee];
        assert!(e == "samples_only" || e == "nothing", "{callee}: {e}");
    }
    assert_eq!(p["calls"], serde_json::json!({}), "{}", p["calls"]);
}
