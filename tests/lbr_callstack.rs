//! LBR call stacks (`perf record --call-graph lbr`) of the fan-out
//! deployment (Frontend calls Inventory and Pricing on every request,
//! Recommend on 1 request in 200), recorded from real executions by the
//! test kit's `record-lbr --call-stack` (this CPU has no LBR): each
//! sample's branch stack is the thread's open calls, newest first, not its
//! latest taken branches.
//!
//! perf itself reads the file as call stacks: `perf script` stitches the
//! entries into call chains that hold the caller's RPC sites, on exactly
//! the samples `faasfuse profile` counts for each site. faasfuse reads
//! them as call chains, not branches: no branch, fall-through or branch
//! count comes out of them, every edge is seen (`lbr_call_stacks`), and
//! `plan` decides what it decides on the platform's exact count of the
//! same requests. A call-stack attribute with branch filter bits faasfuse
//! does not know is refused.

mod common;
use common::plans::*;
use common::*;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

fn dir() -> PathBuf {
    scratch_dir("lbr_callstack")
}

/// Taken branches (in the libraries) per sample: a sampling recording,
/// dense enough that the one Recommend call (16 branches) stays below 1%
/// of the edge counts, as it is below 1% of the calls.
const EVERY: u64 = 5;

fn config() -> PathBuf {
    fanout_config(&dir())
}

fn inputs() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| fanout_one_rare(0x1b57, "lbr_callstack"))
}

/// `faasfuse-testkit record-lbr --call-stack --every EVERY -- faasfuse run
/// <fan-out deployment>`, once per test binary.
fn call_stacks() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let data = dir().join("callstack.data");
        let w = workflow("fanout");
        run_ok(
            testkit()
                .args(["record-lbr", "--call-stack", "--every", &EVERY.to_string()])
                .arg("-o")
                .arg(&data)
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_faasfuse"))
                .arg("run")
                .args(w.deploy_args("default"))
                .arg("--inputs")
                .arg(inputs())
                .args(["--quiet", "--"])
                .arg(&w.root),
        );
        data
    })
}

/// `faasfuse profile DATA --lib ... -o JSON --fdata-dir DIR`: the profile.
fn profile() -> &'static Value {
    static P: OnceLock<Value> = OnceLock::new();
    P.get_or_init(|| {
        let w = workflow("fanout");
        let mut args: Vec<OsString> = lib_args(&w).into_iter().map(Into::into).collect();
        args.extend(["--fdata-dir".into(), dir().join("fdata").into()]);
        run_profile(call_stacks(), args, &dir().join("callstack.json")).1
    })
}

/// What a plan decides: each edge's status and each group's members.
fn decisions(plan: &Value) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let edges = plan_edges(plan)
        .into_iter()
        .map(|(caller, callee, e)| {
            (
                format!("{caller} -> {callee}"),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (edges, plan_groups(plan).into_iter().collect())
}

/// The RPC site of Frontend calling `callee`, from the profile.
fn site<'a>(p: &'a Value, callee: &str) -> &'a Value {
    p["images"]["Frontend"]["rpc_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["callee"] == callee)
        .unwrap_or_else(|| panic!("no site to {callee}"))
}

#[test]
fn call_stacks_are_read_as_call_chains_not_as_branches() {
    let p = profile();
    let st = &p["stats"];
    let samples = st["samples"].as_u64().unwrap();
    assert!(samples > 1000, "{st}");
    assert_eq!(st["lbr_callstack_samples"], samples, "{st}");
    assert_eq!(st["lbr_samples"], 0, "{st}");
    assert_eq!(st["branches"], 0, "{st}");
    assert!(st["callchain_samples"].as_u64().unwrap() > 0, "{st}");
    for (name, img) in p["images"].as_object().unwrap() {
        assert_eq!(img["branches"], serde_json::json!([]), "{name}");
        assert_eq!(img["fallthroughs"], serde_json::json!([]), "{name}");
        for s in img["rpc_sites"].as_array().unwrap() {
            assert_eq!(s["branch_count"], 0, "{name}: {s}");
        }
    }
    // Sites counted once per sample whose stack holds them.
    let (inv, pri) = (site(p, "Inventory"), site(p, "Pricing"));
    assert!(inv["sample_count"].as_u64().unwrap() > 100, "{inv}");
    assert!(pri["sample_count"].as_u64().unwrap() > 100, "{pri}");
    assert_eq!(
        p["calls"]["Frontend"]["Inventory"].as_f64(),
        inv["sample_count"].as_f64()
    );
    // Every edge seen, the one no stack held as zero.
    for callee in ["Inventory", "Pricing", "Recommend"] {
        assert_eq!(
            p["evidence"]["Frontend"][callee], "lbr_call_stacks",
            "{}",
            p["evidence"]
        );
    }
    // BOLT gets samples (no_lbr), never branches made up from call stacks.
    for f in ["Frontend", "Inventory", "Pricing"] {
        let fdata = std::fs::read_to_string(dir().join("fdata").join(format!("{f}.fdata")))
            .unwrap_or_else(|e| panic!("{f}.fdata: {e}"));
        assert!(fdata.starts_with("no_lbr\n"), "{f}: {fdata}");
        assert!(
            fdata.lines().skip(1).all(|l| l.starts_with("1 ")),
            "{f}: {fdata}"
        );
    }
}

/// The samples `perf script` prints, each as its call-chain lines.
fn perf_chains(data: &Path) -> Vec<Vec<String>> {
    let out = run_perf(
        std::process::Command::new("perf")
            .args(["script", "-F", "tid,ip,sym,symoff,dso", "-i"])
            .arg(data),
    );
    let mut chains: Vec<Vec<String>> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('\t') {
            chains
                .last_mut()
                .expect("a frame before any sample")
                .push(line.trim().to_string());
        } else {
            chains.push(Vec::new());
        }
    }
    chains
}

/// Address of the function symbol `name` in the ELF file `lib`.
fn symbol_address(lib: &Path, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(lib).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .unwrap_or_else(|| panic!("no {name} in {}", lib.display()))
}

#[test]
fn perf_script_stitches_the_stacks_into_chains_through_the_rpc_sites() {
    let p = profile();
    let chains = perf_chains(call_stacks());
    assert_eq!(chains.len() as u64, p["stats"]["samples"].as_u64().unwrap());
    // A worker is never re-entered while busy: a chain holds at most one
    // call made by each library's faas_func_call (two would be a call that
    // returned, unseen, left on the stack). `+0x0` is an entry, not a call.
    for c in &chains {
        let mut calls: Vec<&str> = c
            .iter()
            .filter(|f| f.contains(" faas_func_call+0x") && !f.contains("+0x0 "))
            .map(|f| f.rsplit(' ').next().unwrap())
            .collect();
        let n = calls.len();
        calls.sort();
        calls.dedup();
        assert_eq!(calls.len(), n, "{c:#?}");
    }
    let frontend = fixtures().join("default/libfrontend.so");
    let base = symbol_address(&frontend, "faas_func_call");
    for (callee, lib) in [
        ("Inventory", "libinventory.so"),
        ("Pricing", "libpricing.so"),
    ] {
        let s = site(p, callee);
        assert_eq!(s["function"], "faas_func_call", "{s}");
        // perf names a call-stack entry by its call instruction.
        let frame = format!(
            "faas_func_call+{:#x} ({})",
            s["address"].as_u64().unwrap() - base,
            frontend.display()
        );
        let through: Vec<&Vec<String>> = chains
            .iter()
            .filter(|c| c.iter().any(|f| f.ends_with(&frame)))
            .collect();
        // perf's chains through the site are the samples faasfuse counts.
        assert_eq!(
            through.len() as u64,
            s["sample_count"].as_u64().unwrap(),
            "{frame}"
        );
        // Some run in the callee's library, called under the site.
        assert!(
            through.iter().any(|c| {
                let at = c.iter().position(|f| f.ends_with(&frame)).unwrap();
                c[..at].iter().any(|f| f.contains(lib))
            }),
            "no chain from {lib} through {frame}"
        );
    }
    // Recommend's site holds no more than its one call's share.
    let rec = site(p, "Recommend")["sample_count"].as_u64().unwrap();
    assert!(rec * 100 < site(p, "Inventory")["sample_count"].as_u64().unwrap());
}

#[test]
fn plan_on_call_stacks_decides_as_on_the_exact_trace() {
    profile();
    let plan = plan_json(&config(), &[&dir().join("callstack.json")]);
    let exact = exact_trace_plan(&config(), inputs(), &dir().join("trace.json"));
    assert_eq!(decisions(&plan), decisions(&exact));
    let (edges, groups) = decisions(&plan);
    assert_eq!(
        groups["Frontend"],
        ["Frontend", "Inventory", "Pricing"],
        "{edges:?}"
    );
    assert_eq!(edges["Frontend -> Recommend"], "cold", "{edges:?}");
    for e in plan["edges"].as_array().unwrap() {
        assert_eq!(e["evidence"], "lbr_call_stacks", "{e}");
    }
    // The perf.data itself, read by plan, decides the same.
    assert_eq!(
        decisions(&plan_json(&config(), &[call_stacks()])),
        decisions(&exact)
    );
}

#[test]
fn call_stacks_with_branch_filters_faasfuse_does_not_know_are_refused() {
    let bytes = std::fs::read(call_stacks()).unwrap();
    let attrs = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let bst = u64::from_le_bytes(bytes[attrs + 72..attrs + 80].try_into().unwrap());
    assert_eq!(bst & 1 << 11, 1 << 11, "not a call-stack event: {bst:#x}");
    // PERF_SAMPLE_BRANCH_ANY_CALL: only calls, whatever that would mean
    // for call stacks.
    let mut patched = bytes.clone();
    patched[attrs + 72..attrs + 80].copy_from_slice(&(bst | 1 << 4).to_le_bytes());
    let bad = dir().join("callstack-any-call.data");
    std::fs::write(&bad, &patched).unwrap();
    let w = workflow("fanout");
    let err = run_refused(faasfuse().arg("profile").arg(&bad).args(lib_args(&w)));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("LBR call stacks"),
        "{err}"
    );
}
