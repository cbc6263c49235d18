//! `faasfuse profile`: real perf call-chain profiles (DWARF and frame
//! pointers, one process and `run --ipc` workers), LBR profiles checked
//! against the recorder's exact counts and against perf2bolt's `.fdata`,
//! RPC edge counts against the platform's own count of the calls it
//! relayed, BOLT formats in and out, merging, and damaged inputs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use faasfuse_testkit::record::Truth;
use serde_json::Value;

const PERF2BOLT: &str = "/usr/lib/llvm-16/bin/perf2bolt";

fn dir() -> PathBuf {
    scratch_dir("profile")
}

/// `perf record` works here (CI installs linux-perf); the test fails if not.
fn require_perf() {
    static OK: OnceLock<()> = OnceLock::new();
    OK.get_or_init(|| {
        let probe = dir().join("probe.data");
        let probe = probe.to_str().unwrap();
        require_tool(
            "perf",
            &[
                "record",
                "-q",
                "-e",
                "cpu-clock:u",
                "-o",
                probe,
                "--",
                "true",
            ],
            "linux-perf",
        );
    });
}

/// `perf record <how> -- faasfuse run <workflow> --repeat N`.
fn perf_record(tag: &str, w: &Workflow, how: &[&str], ipc: bool, repeat: usize) -> PathBuf {
    let data = dir().join(format!("{tag}.data"));
    let inputs = input_file(&format!("prof-{tag}"), &generate_inputs(w, 40, 3));
    perf_record_run(
        &data,
        how,
        &w.deploy_args("default"),
        &w.root,
        &inputs,
        repeat,
        ipc,
    );
    data
}

/// `faasfuse profile INPUTS --lib ... -o OUT.json [extra]`: the profile.
fn profile(tag: &str, inputs: &[&Path], libs: &[String], extra: &[&str]) -> Value {
    let out = dir().join(format!("{tag}.json"));
    run_ok(
        faasfuse()
            .arg("profile")
            .args(inputs)
            .args(libs)
            .arg("-o")
            .arg(&out)
            .args(extra),
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

fn calls(p: &Value, a: &str, b: &str) -> f64 {
    p["calls"][a][b].as_f64().unwrap_or(0.0)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn dwarf_call_chains_rank_the_rpc_edges_hot() {
    require_perf();
    let w = workflow("chain");
    let data = perf_record(
        "chain-dwarf",
        &w,
        &["-e", "cpu-clock:u", "--call-graph", "dwarf"],
        false,
        // Enough samples (about 400) that Parse's lead over Store in
        // their shares, about two to one, stands clear of sampling noise.
        1000,
    );
    let p = profile("chain-dwarf", &[&data], &lib_args(&w), &[]);
    let st = &p["stats"];
    assert!(u(&st["callchain_samples"]) * 2 > u(&st["samples"]), "{st}");
    // Every RPC edge of the workflow is seen, and nothing else.
    for (a, b) in [
        ("Parse", "Validate"),
        ("Validate", "Enrich"),
        ("Enrich", "Store"),
    ] {
        assert!(calls(&p, a, b) > 0.0, "{a} -> {b} not seen: {}", p["calls"]);
    }
    let edges: usize = p["calls"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m.as_object().unwrap().len())
        .sum();
    assert_eq!(edges, 3, "{}", p["calls"]);
    // Samples land in the right images, mapped by build-id.
    for (name, lib) in &w.functions {
        let img = &p["images"][name];
        assert!(u(&img["attributed_samples"]) > 0, "{name}: {img}");
        let mapped: Vec<&str> = img["mapped_as"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(
            mapped.iter().all(|m| m.ends_with(lib.as_str())),
            "{name}: {mapped:?}"
        );
    }
    // The root runs everything below it: its share is the largest.
    let cpu = |n: &str| p["cpu"][n].as_f64().unwrap();
    assert!(cpu("Parse") > cpu("Store"), "{}", p["cpu"]);
}

#[test]
fn frame_pointer_call_chains_map_samples_to_images() {
    require_perf();
    let w = workflow("hello");
    let data = perf_record("hello-fp", &w, &["-e", "cpu-clock:u", "-g"], false, 3000);
    let p = profile("hello-fp", &[&data], &lib_args(&w), &[]);
    assert!(u(&p["stats"]["callchain_samples"]) > 0, "{}", p["stats"]);
    let in_libs = u(&p["images"]["Foo"]["samples"]) + u(&p["images"]["Bar"]["samples"]);
    assert_eq!(in_libs, u(&p["stats"]["matched_samples"]));
    assert!(in_libs > 0, "{}", p["stats"]);
    // Samples outside the libraries are reported per file.
    let unmatched = p["unmatched"].as_object().unwrap();
    assert!(
        unmatched.keys().any(|k| k.ends_with("/faasfuse")),
        "{unmatched:?}"
    );
}

#[test]
fn ipc_worker_processes_aggregate_in_one_pass() {
    require_perf();
    let w = workflow("hello");
    let data = perf_record(
        "hello-ipc",
        &w,
        &["-e", "cpu-clock:u", "--call-graph", "dwarf"],
        true,
        400,
    );
    let p = profile("hello-ipc", &[&data], &lib_args(&w), &["--json"]);
    // Foo and Bar run in different worker processes.
    for name in ["Foo", "Bar"] {
        let img = &p["images"][name];
        assert!(u(&img["attributed_samples"]) > 0, "{name}: {img}");
        assert_eq!(
            img["mapped_as"].as_array().unwrap().len(),
            1,
            "{name}: {img}"
        );
    }
    assert!(calls(&p, "Foo", "Bar") > 0.0, "{}", p["calls"]);
}

fn record_lbr(tag: &str, w: &Workflow, every: u64) -> (PathBuf, Truth) {
    let data = dir().join(format!("{tag}.data"));
    let truth = dir().join(format!("{tag}.truth.json"));
    let inputs = input_file(&format!("lbr-{tag}"), &generate_inputs(w, 30, 5));
    record_lbr_run(
        &data,
        every,
        Some(&truth),
        &w.deploy_args("default"),
        &w.root,
        &inputs,
    );
    let t = Truth::read(&truth).unwrap();
    (data, t)
}

/// The truth's branches of image `path` as (from, to) -> (count, mispred).
fn truth_branches(t: &Truth, path: &str) -> BTreeMap<(u64, Option<u64>), (u64, u64)> {
    let mut out = BTreeMap::new();
    for b in &t.branches {
        let Some((img, from)) = t.image_address(b.pid, b.from) else {
            continue;
        };
        if !img.path.ends_with(path) {
            continue;
        }
        let to = t
            .image_address(b.pid, b.to)
            .filter(|(i, _)| i.path == img.path)
            .map(|(_, a)| a);
        let e: &mut (u64, u64) = out.entry((from, to)).or_default();
        e.0 += b.count;
        e.1 += b.mispred;
    }
    out
}

fn profile_branches(p: &Value, name: &str) -> BTreeMap<(u64, Option<u64>), (u64, u64)> {
    p["images"][name]["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                (u(&b["from"]), b["to"].as_u64()),
                (u(&b["count"]), u(&b["mispred"])),
            )
        })
        .collect()
}

#[test]
fn lbr_branch_counts_equal_the_recorded_truth() {
    let w = workflow("chain");
    for every in [1, 32] {
        let (data, truth) = record_lbr(&format!("chain-lbr-{every}"), &w, every);
        let p = profile(&format!("chain-lbr-{every}"), &[&data], &lib_args(&w), &[]);
        for (name, lib) in &w.functions {
            assert_eq!(
                profile_branches(&p, name),
                truth_branches(&truth, lib),
                "{name}, --every {every}"
            );
        }
    }
}

/// Calls per (caller, callee) of a `calls` object (a profile's or a run
/// report's), as exact integers.
fn edge_counts(calls: &Value) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (a, row) in calls.as_object().unwrap() {
        for (b, n) in row.as_object().unwrap() {
            let n = n.as_f64().unwrap();
            assert!(n >= 0.0 && n.fract() == 0.0, "{a} -> {b}: {n}");
            out.insert((a.clone(), b.clone()), n as u64);
        }
    }
    out
}

/// The recorder's own count of each constant-name RPC edge of `w`: the
/// taken branches leaving each call site `faasfuse inspect` finds in the
/// input libraries, summed per (caller, callee).
fn truth_edge_counts(w: &Workflow, t: &Truth) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (name, lib) in &w.functions {
        let path = fixtures().join("default").join(lib);
        let o = run_ok(faasfuse().arg("inspect").arg("--json").arg(&path));
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        for s in report["rpc_sites"].as_array().unwrap() {
            if s["callee"]["kind"] != "constant" {
                continue;
            }
            let at = u(&s["address"]);
            let n: u64 = t
                .branches
                .iter()
                .filter(|b| {
                    t.image_address(b.pid, b.from)
                        .is_some_and(|(i, a)| i.path.ends_with(lib.as_str()) && a == at)
                })
                .map(|b| b.count)
                .sum();
            let callee = s["callee"]["name"].as_str().unwrap().to_string();
            *out.entry((name.clone(), callee)).or_default() += n;
        }
    }
    out.retain(|_, n| *n > 0);
    out
}

/// RPC edge counts checked against oracles that owe nothing to faasfuse's
/// aggregation: the platform's own count of the calls it relayed (`run
/// --json` of the very run the recorder traced), and the recorder's list
/// of every taken branch it saw. The recorder sees every branch and, at
/// `--every 1` and `--every 32`, puts each one in exactly one sample's
/// counted entries, so the profile's count of each edge must equal both,
/// exactly.
#[test]
fn lbr_rpc_edge_counts_equal_the_platforms_exact_calls() {
    for (name, every) in [("chain", 1), ("fanout", 1), ("fanout", 32), ("hello", 32)] {
        let w = workflow(name);
        let tag = format!("{name}-edges-{every}");
        let data = dir().join(format!("{tag}.data"));
        let truth = dir().join(format!("{tag}.truth.json"));
        let inputs = input_file(&format!("lbr-{tag}"), &generate_inputs(&w, 30, 11));
        // The run under the recorder reports its own calls on stdout.
        let o = run_ok(
            testkit()
                .arg("record-lbr")
                .arg("-o")
                .arg(&data)
                .args(["--every", &every.to_string(), "--truth"])
                .arg(&truth)
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_faasfuse"))
                .arg("run")
                .args(w.deploy_args("default"))
                .arg("--inputs")
                .arg(&inputs)
                .args(["--json", "--"])
                .arg(&w.root),
        );
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        let exact = edge_counts(&report["calls"]);
        let requests = u(&report["requests"]);
        assert!(requests >= 30, "{tag}: {requests} requests");
        // Every edge of the workflow is called, some more than once per
        // request (fanout's Pricing, once per word).
        assert_eq!(exact.len(), w.functions.len() - 1, "{tag}: {exact:?}");
        assert!(exact.values().all(|&n| n > 0), "{tag}: {exact:?}");
        if name == "fanout" {
            let pricing = exact[&("Frontend".to_string(), "Pricing".to_string())];
            assert!(pricing > requests, "{tag}: {exact:?}");
        }
        // The recorder saw every one of those calls leave its site.
        let t = Truth::read(&truth).unwrap();
        assert_eq!(
            truth_edge_counts(&w, &t),
            exact,
            "{tag}: recorder vs platform"
        );
        // And the profile counts each exactly once.
        let p = profile(&tag, &[&data], &lib_args(&w), &[]);
        assert_eq!(
            edge_counts(&p["calls"]),
            exact,
            "{tag}: profile vs platform"
        );
    }
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    l.sort();
    l
}

#[test]
fn fdata_equals_perf2bolt_output() {
    require_tool(PERF2BOLT, &["--version"], "bolt-16");
    for name in ["chain", "social"] {
        let w = workflow(name);
        let (data, _) = record_lbr(&format!("{name}-bolt"), &w, 32);
        let fdir = dir().join(format!("{name}-fdata"));
        profile(
            &format!("{name}-bolt"),
            &[&data],
            &lib_args(&w),
            &["--fdata-dir", fdir.to_str().unwrap()],
        );
        for (func, lib) in &w.functions {
            let theirs = dir().join(format!("{name}-{func}.perf2bolt.fdata"));
            run_ok(
                Command::new(PERF2BOLT)
                    .arg(fixtures().join("default").join(lib))
                    .arg("-p")
                    .arg(&data)
                    .arg("-o")
                    .arg(&theirs),
            );
            assert_eq!(
                sorted_lines(&fdir.join(format!("{func}.fdata"))),
                sorted_lines(&theirs),
                "{name}/{func}"
            );
        }
    }
}

#[test]
fn fdata_and_preaggregated_round_trip() {
    let w = workflow("hello");
    let (data, _) = record_lbr("hello-rt", &w, 32);
    let f1 = dir().join("rt1");
    let p = profile(
        "hello-rt",
        &[&data],
        &lib_args(&w),
        &["--fdata-dir", f1.to_str().unwrap()],
    );
    let bar = fixtures().join("default/libbar.so");
    let bar_lib = format!("Bar={}", bar.display());
    // .fdata in, .fdata out: the same text.
    let f2 = dir().join("rt2");
    let q = profile(
        "hello-rt-fdata",
        &[&f1.join("Bar.fdata")],
        &["--lib".into(), bar_lib.clone()],
        &["--fdata-dir", f2.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read_to_string(f1.join("Bar.fdata")).unwrap(),
        std::fs::read_to_string(f2.join("Bar.fdata")).unwrap()
    );
    assert!(u(&q["stats"]["branches"]) > 0);
    // The RPC site counts survive the trip through Foo's .fdata.
    let foo_lib = format!("Foo={}", fixtures().join("default/libfoo.so").display());
    let r = profile(
        "hello-rt-foo",
        &[&f1.join("Foo.fdata")],
        &["--lib".into(), foo_lib],
        &[],
    );
    assert_eq!(calls(&r, "Foo", "Bar"), calls(&p, "Foo", "Bar"));
    assert!(calls(&p, "Foo", "Bar") > 0.0);
    // Pre-aggregated text with build-id locations gives the same branches.
    let text = "E cycles\n".to_string() + &preaggregated_branches(&p["images"]["Bar"]);
    let pa = dir().join("bar.preagg");
    std::fs::write(&pa, text).unwrap();
    let s = profile("hello-rt-preagg", &[&pa], &lib_args(&w), &[]);
    assert_eq!(profile_branches(&s, "Bar"), profile_branches(&p, "Bar"));
}

#[test]
fn merge_sums_profiles() {
    let w = workflow("hello");
    let (data, _) = record_lbr("hello-merge", &w, 1);
    let p = profile("hello-merge", &[&data], &lib_args(&w), &[]);
    let a = dir().join("hello-merge.json");
    let out = dir().join("merged.json");
    let o = run_ok(
        faasfuse()
            .args(["profile", "merge"])
            .arg(&a)
            .arg(&a)
            .arg("-o")
            .arg(&out)
            .arg("--json"),
    );
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(calls(&m, "Foo", "Bar"), 2.0 * calls(&p, "Foo", "Bar"));
    assert_eq!(summary["calls"], m["calls"]);
    assert_eq!(u(&m["stats"]["samples"]), 2 * u(&p["stats"]["samples"]));
    let doubled: BTreeMap<_, _> = profile_branches(&p, "Bar")
        .into_iter()
        .map(|(k, (c, x))| (k, (2 * c, 2 * x)))
        .collect();
    assert_eq!(profile_branches(&m, "Bar"), doubled);
    // Two inputs to `profile` sum the same way.
    let both = profile("hello-merge-2", &[&data, &data], &lib_args(&w), &[]);
    assert_eq!(both["calls"], m["calls"]);
    assert_eq!(both["images"], m["images"]);
}

#[test]
fn damaged_inputs_fail_with_the_byte_offset_or_are_skipped() {
    let w = workflow("hello");
    let (data, _) = record_lbr("hello-bad", &w, 1);
    let bytes = std::fs::read(&data).unwrap();
    let libs = lib_args(&w);
    let run = |tag: &str, content: &[u8], extra: &[&str]| {
        let p = dir().join(tag);
        std::fs::write(&p, content).unwrap();
        let o = faasfuse()
            .arg("profile")
            .arg(&p)
            .args(&libs)
            .args(extra)
            .output()
            .unwrap();
        (p, o)
    };
    for (i, cut) in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 13, 100, 20]
        .into_iter()
        .enumerate()
    {
        let (p, o) = run(&format!("cut{i}.data"), &bytes[..cut], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "cut at {cut}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&p.display().to_string()) && err.contains("at byte"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // A flipped record size inside the data: an error at that offset, or
    // with --lenient, a profile of what came before.
    let mut bad = bytes.clone();
    let data_off = u64::from_le_bytes(bad[40..48].try_into().unwrap()) as usize;
    let mut at = data_off;
    for _ in 0..20 {
        at += u16::from_le_bytes([bad[at + 6], bad[at + 7]]) as usize;
    }
    bad[at + 6] = 1;
    bad[at + 7] = 0;
    let (_, o) = run("flip.data", &bad, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("at byte {at}")), "{err}");
    let (_, o) = run("flip-lenient.data", &bad, &["--lenient", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(u(&s["stats"]["bad_records"]), 1, "{s}");
    // Garbage of every kind: one line, exit 2, never a panic.
    let mut rng = Rng::new(9);
    let noise: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    for (tag, content) in [
        ("noise.data", &noise[..]),
        ("empty.data", &b""[..]),
        ("text.data", &b"hello\n"[..]),
    ] {
        let (_, o) = run(tag, content, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{tag}: {err}");
        assert_eq!(err.lines().count(), 1, "{tag}: {err}");
    }
    let mut header_noise = bytes[..16].to_vec();
    header_noise.extend_from_slice(&noise);
    let (_, o) = run("header-noise.data", &header_noise, &["--lenient"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

#[test]
fn help_teaches_with_examples() {
    let o = run_ok(faasfuse().args(["profile", "--help"]));
    let help = String::from_utf8(o.stdout).unwrap();
    for s in [
        "--call-graph dwarf",
        "--fdata-dir",
        "profile merge",
        "build-id",
        "Examples:",
    ] {
        assert!(help.contains(s), "missing {s:?}:\n{help}");
    }
    let o = faasfuse().args(["profile", "x.data"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn stdin_empty_files_and_other_builds() {
    let w = workflow("hello");
    let (data, _) = record_lbr("stdin", &w, 8);
    let from_file = profile("stdin-file", &[&data], &lib_args(&w), &[]);

    // `-` reads standard input, here a file as `perf record -o -` would pipe it.
    let out = dir().join("stdin-pipe.json");
    run_ok(
        faasfuse()
            .args(["profile", "-"])
            .args(lib_args(&w))
            .arg("-o")
            .arg(&out)
            .stdin(std::fs::File::open(&data).unwrap()),
    );
    let from_stdin: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(from_stdin["images"], from_file["images"]);
    assert_eq!(from_stdin["calls"], from_file["calls"]);
    assert!(u(&from_file["stats"]["samples"]) > 0);

    // An empty file is no profile (it used to read as an empty one).
    let empty = dir().join("empty.data");
    std::fs::write(&empty, b"").unwrap();
    let err = run_refused(faasfuse().arg("profile").arg(&empty).args(lib_args(&w)));
    assert!(err.contains("empty.data") && err.contains("empty"), "{err}");

    // Recorded with one build of Foo; profiled with another build at the
    // same path: its samples cannot be counted, and the report says why.
    let copies = dir().join("other-build");
    std::fs::create_dir_all(&copies).unwrap();
    for (_, lib) in &w.functions {
        std::fs::copy(fixtures().join("default").join(lib), copies.join(lib)).unwrap();
    }
    let deploy = w.deploy_args_in(&copies);
    let recorded = dir().join("other-build.data");
    let inputs = input_file("other-build", &generate_inputs(&w, 10, 3));
    record_lbr_run(&recorded, 8, None, &deploy, &w.root, &inputs);
    let foo = copies.join("libfoo.so");
    run_ok(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-O1", "-DOTHER_BUILD", "-I"])
            .arg(repo().join("fixtures/include"))
            .arg(repo().join("fixtures/functions/foo.c"))
            .arg("-o")
            .arg(&foo),
    );
    let libs: Vec<String> = deploy
        .iter()
        .flat_map(|a| ["--lib".to_string(), a.clone()])
        .collect();
    let o = run_ok(faasfuse().arg("profile").arg(&recorded).args(&libs));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("warning:")
            && text.contains("libfoo.so")
            && text.contains("another build-id"),
        "{text}"
    );
    let o = run_ok(
        faasfuse()
            .arg("profile")
            .arg(&recorded)
            .args(&libs)
            .arg("--json"),
    );
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let foo_summary = j["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "Foo")
        .unwrap()
        .clone();
    assert_eq!(u(&foo_summary["samples"]), 0, "{foo_summary:#}");
    assert_eq!(
        foo_summary["other_builds"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn lenient_skips_bad_fdata_lines_and_counts_them() {
    let w = workflow("hello");
    let (data, _) = record_lbr("lenient-fdata", &w, 8);
    let fdir = dir().join("lenient-fdata");
    profile(
        "lenient-fdata",
        &[&data],
        &lib_args(&w),
        &["--fdata-dir", fdir.to_str().unwrap()],
    );
    let clean = fdir.join("Foo.fdata");
    let foo_lib = vec![
        "--lib".to_string(),
        format!("Foo={}", fixtures().join("default/libfoo.so").display()),
    ];
    let want = profile("lenient-clean", &[&clean], &foo_lib, &[]);
    let text = std::fs::read_to_string(&clean).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 2, "{text}");
    lines.insert(1, "1 faas_func_call zz 1 faas_func_call 10 0 3");
    lines.push("this is not a record");
    let damaged = dir().join("Foo.damaged.fdata");
    std::fs::write(&damaged, lines.join("\n") + "\n").unwrap();
    let err = run_refused(faasfuse().arg("profile").arg(&damaged).args(&foo_lib));
    assert!(err.contains("line 2"), "{err}");
    let got = profile("lenient-damaged", &[&damaged], &foo_lib, &["--lenient"]);
    assert_eq!(u(&got["stats"]["bad_records"]), 2, "{}", got["stats"]);
    let branches = &want["images"]["Foo"]["branches"];
    assert!(
        branches.as_array().is_some_and(|b| !b.is_empty()),
        "{}",
        want["images"]
    );
    assert_eq!(&got["images"]["Foo"]["branches"], branches);
}

/// Many hosts' profiles (issue 28): `profile merge` of per-host profile
/// JSONs is `faasfuse profile` of all their perf.data files at once, byte
/// for byte; and it is associative and commutative to the byte, so a
/// fleet's profiles can be summed in any grouping and order.
#[test]
fn merge_of_host_profiles_equals_profiling_all_at_once_in_any_order() {
    let w = workflow("chain");
    let libs = lib_args(&w);
    // Four hosts, each serving its own requests.
    let hosts: Vec<PathBuf> = (0..4u64)
        .map(|h| {
            let data = dir().join(format!("host{h}.data"));
            let inputs = input_file(&format!("host{h}"), &generate_inputs(&w, 20, 100 + h));
            record_lbr_run(&data, 8, None, &w.deploy_args("default"), &w.root, &inputs);
            data
        })
        .collect();
    let jsons: Vec<PathBuf> = hosts
        .iter()
        .enumerate()
        .map(|(h, data)| {
            profile(&format!("host{h}"), &[data], &libs, &[]);
            dir().join(format!("host{h}.json"))
        })
        .collect();
    let merge = |tag: &str, inputs: &[&PathBuf]| -> Vec<u8> {
        let out = dir().join(format!("{tag}.json"));
        run_ok(
            faasfuse()
                .args(["profile", "merge"])
                .args(inputs)
                .arg("-o")
                .arg(&out),
        );
        std::fs::read(&out).unwrap()
    };
    let all: Vec<&Path> = hosts.iter().map(|p| p.as_path()).collect();
    profile("all-hosts", &all, &libs, &[]);
    let at_once = std::fs::read(dir().join("all-hosts.json")).unwrap();
    let [a, b, c, d] = [&jsons[0], &jsons[1], &jsons[2], &jsons[3]];
    assert_eq!(
        String::from_utf8_lossy(&merge("m-abcd", &[a, b, c, d])),
        String::from_utf8_lossy(&at_once),
        "profile merge of the hosts' JSONs vs profile of their perf.data files"
    );
    // Any order.
    for (i, order) in [[d, c, b, a], [b, d, a, c], [c, a, d, b]]
        .iter()
        .enumerate()
    {
        assert!(merge(&format!("m-order{i}"), order) == at_once, "order {i}");
    }
    // Any grouping: ((a, b), c) and (a, (b, c)), then with d.
    merge("ab", &[a, b]);
    merge("bc", &[b, c]);
    let (ab, bc) = (dir().join("ab.json"), dir().join("bc.json"));
    let left = merge("ab-c", &[&ab, c]);
    let right = merge("a-bc", &[a, &bc]);
    assert!(left == right, "merge((a,b),c) != merge(a,(b,c))");
    let (abc, abc2) = (dir().join("ab-c.json"), dir().join("a-bc.json"));
    assert!(merge("abc-d", &[&abc, d]) == at_once);
    assert!(merge("d-abc", &[d, &abc2]) == at_once);
    let m: Value = serde_json::from_slice(&at_once).unwrap();
    assert_eq!(
        m["sources"].as_array().unwrap().len(),
        4,
        "{}",
        m["sources"]
    );
    assert!(calls(&m, "Parse", "Validate") > 0.0, "{}", m["calls"]);
}
