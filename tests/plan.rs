//! `faasfuse plan` and `faasfuse build` on the example deployment: hot
//! edges fused, a cold edge left an RPC that still reaches its callee
//! through the host, trust domains and size budgets respected, hysteresis
//! against a previous plan, and clear errors for bad configurations.

mod common;
use common::plans::*;
use common::*;

use std::path::{Path, PathBuf};

/// The fan-out deployment (Frontend calls Inventory, Pricing, Recommend),
/// with `extra` fields merged into the entry of each named function.
fn write_config(dir: &Path, extra: &[(&str, serde_json::Value)]) -> PathBuf {
    let lib = fixtures().join("default");
    let mut entries = Vec::new();
    for (i, (name, file)) in FANOUT_LIBS.iter().enumerate() {
        let mut e = serde_json::json!({
            "funcName": name, "funcId": i + 1, "minWorkers": 1, "maxWorkers": 8,
            "library": lib.join(file), "queue": "keep-me",
        });
        if *name == "Frontend" {
            e["entry"] = true.into();
        }
        for (n, v) in extra {
            if n == name {
                for (k, x) in v.as_object().unwrap() {
                    e[k] = x.clone();
                }
            }
        }
        entries.push(e);
    }
    let p = dir.join("func_config.json");
    std::fs::write(&p, serde_json::to_string_pretty(&entries).unwrap()).unwrap();
    p
}

/// Weights as a profile window of 10,000 requests would give them.
fn write_weights(dir: &Path, name: &str, pricing: f64, recommend: f64) -> PathBuf {
    let w = serde_json::json!({
        "calls": {"Frontend": {"Inventory": 100000, "Pricing": pricing, "Recommend": recommend}},
        "cpu": {"Frontend": 0.2, "Inventory": 0.1, "Pricing": 0.15, "Recommend": 0.05},
        "external": {"Frontend": 10000},
    });
    let p = dir.join(name);
    std::fs::write(&p, w.to_string()).unwrap();
    p
}

#[test]
fn build_fuses_hot_edges_and_the_cold_callee_still_serves_through_the_host() {
    let dir = scratch_dir("plan-build");
    let config = write_config(&dir, &[]);
    // Recommend is called on 0.5% of requests: cold.
    let profile = write_weights(&dir, "profile.json", 25000.0, 50.0);
    let out = dir.join("fused");
    let _ = std::fs::remove_dir_all(&out);
    let o = build_deployment(&config, &profile, &out);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("cold"), "{text}");
    let plan = read_json(&out.join("plan.json"));
    assert_eq!(
        members(&plan, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    let cold = edge(&plan, "Recommend");
    assert_eq!(cold["status"], "cold");
    assert!(out.join("graph.dot").is_file());
    let dot = std::fs::read_to_string(out.join("graph.dot")).unwrap();
    assert!(dot.contains("style=dashed") && dot.contains("cluster_"));

    // The new deployment: Frontend's fused image, the rest unchanged.
    let deployed = read_json(&out.join("func_config.json"));
    assert_eq!(deployed[0]["library"], "libfrontend.fused.so");
    assert_eq!(deployed[0]["queue"], "keep-me", "unknown fields are kept");

    let w = workflow("fanout");
    let inputs = generate_inputs(&w, 300, 0x91a);
    assert!(inputs.iter().any(|i| i.contains("rec")));
    let file = input_file("plan-build", &inputs);
    let run = |cfg: &Path| {
        let mut cmd = faasfuse();
        cmd.arg("run")
            .arg("--config")
            .arg(cfg)
            .arg("--ipc")
            .arg("--inputs")
            .arg(&file)
            .args(["--", "Frontend"]);
        String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
    };
    let before = run(&config);
    let after = run(&out.join("func_config.json"));
    assert_lines_equal(&before, &after, &inputs, "built deployment");
    assert!(
        after.contains("rec="),
        "the cold callee still answers: {after}"
    );
}

#[test]
fn trust_domains_are_never_crossed() {
    let dir = scratch_dir("plan-domain");
    let config = write_config(
        &dir,
        &[("Pricing", serde_json::json!({"domain": "tenant-b"}))],
    );
    let profile = write_weights(&dir, "profile.json", 1e9, 5000.0);
    let plan = plan_json(&config, &[&profile]);
    let m = members(&plan, "Frontend");
    assert!(!m.contains(&"Pricing".to_string()), "{m:?}");
    let d = plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["function"] == "Pricing")
        .unwrap();
    assert!(
        d["reason"].as_str().unwrap().contains("trust domain"),
        "{d}"
    );
}

#[test]
fn a_size_budget_smaller_than_a_callee_keeps_it_out_with_the_reason() {
    let dir = scratch_dir("plan-size");
    let lib = fixtures().join("default");
    let size = |f: &str| std::fs::metadata(lib.join(f)).unwrap().len();
    // Room for the root, Inventory and the runtime, not for Pricing too.
    let budget = size("libfrontend.so") + size("libinventory.so") + 16 * 1024 + 1000;
    let config = write_config(
        &dir,
        &[("Frontend", serde_json::json!({"maxImageBytes": budget}))],
    );
    let profile = write_weights(&dir, "profile.json", 5000.0, 5000.0);
    let o = run_ok(
        faasfuse()
            .arg("plan")
            .arg("--config")
            .arg(&config)
            .arg("--profile")
            .arg(&profile),
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("over budget") && text.contains("maxImageBytes"),
        "{text}"
    );
    let plan = plan_json(&config, &[&profile]);
    assert_eq!(members(&plan, "Frontend"), ["Frontend", "Inventory"]);
}

#[test]
fn previous_plan_holds_against_small_changes_and_yields_to_large_ones() {
    let dir = scratch_dir("plan-hysteresis");
    let lib = fixtures().join("default");
    let size = |f: &str| std::fs::metadata(lib.join(f)).unwrap().len();
    // Room for one of the two equal-sized leaf services besides Inventory.
    let leaf = size("libpricing.so").max(size("librecommend.so"));
    let budget = size("libfrontend.so") + size("libinventory.so") + leaf + 16 * 1024 + 1000;
    let config = write_config(
        &dir,
        &[("Frontend", serde_json::json!({"maxImageBytes": budget}))],
    );
    let first = write_weights(&dir, "p1.json", 20000.0, 15000.0);
    let plan1 = plan_json(&config, &[&first]);
    assert_eq!(
        members(&plan1, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    let prev = dir.join("plan1.json");
    std::fs::write(&prev, plan1.to_string()).unwrap();

    // Recommend now slightly hotter than Pricing: keep the previous group.
    let small = write_weights(&dir, "p2.json", 20000.0, 21000.0);
    let without = plan_json(&config, &[&small]);
    assert_eq!(
        members(&without, "Frontend"),
        ["Frontend", "Inventory", "Recommend"]
    );
    let with = plan_json_with(&config, &[&small], &["--previous", prev.to_str().unwrap()]);
    assert_eq!(
        members(&with, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    assert_eq!(with["groups"][0]["kept_from_previous"], true);

    // A large shift changes it.
    let large = write_weights(&dir, "p3.json", 20000.0, 60000.0);
    let moved = plan_json_with(&config, &[&large], &["--previous", prev.to_str().unwrap()]);
    assert_eq!(
        members(&moved, "Frontend"),
        ["Frontend", "Inventory", "Recommend"]
    );
}

#[test]
fn bad_configs_and_profiles_fail_with_one_line_naming_the_file() {
    let dir = scratch_dir("plan-bad");
    let config = write_config(&dir, &[]);
    let profile = write_weights(&dir, "profile.json", 1.0, 1.0);
    let check = |cfg: &Path, prof: &Path, needle: &str| {
        let err = run_refused(
            faasfuse()
                .arg("plan")
                .arg("--config")
                .arg(cfg)
                .arg("--profile")
                .arg(prof),
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    };
    let text = std::fs::read_to_string(&config).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dup = dir.join("dup.json");
    let mut d = v.clone();
    d.as_array_mut().unwrap().push(v[1].clone());
    std::fs::write(&dup, d.to_string()).unwrap();
    check(&dup, &profile, "listed twice");
    let missing = dir.join("missing.json");
    v[2]["library"] = "/nonexistent/libpricing.so".into();
    std::fs::write(&missing, v.to_string()).unwrap();
    check(&missing, &profile, "not found");
    let unknown = dir.join("unknown.json");
    std::fs::write(&unknown, r#"{"calls": {"Frontend": {"Checkout": 5}}}"#).unwrap();
    check(&config, &unknown, "Checkout");
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "not json").unwrap();
    check(&config, &garbage, "garbage.json");
}

#[test]
fn cycles_are_fused_safely() {
    // Frontend and Inventory call each other in the profile: planning
    // terminates and the group's image serves requests (the runtime's depth
    // limit bounds any recursion, as the host's does).
    let dir = scratch_dir("plan-cycle");
    let config = write_config(&dir, &[]);
    let w = serde_json::json!({
        "calls": {"Frontend": {"Inventory": 1000, "Pricing": 1000}, "Inventory": {"Frontend": 500}},
    });
    let profile = dir.join("cycle.json");
    std::fs::write(&profile, w.to_string()).unwrap();
    let plan = plan_json(&config, &[&profile]);
    assert!(members(&plan, "Frontend").contains(&"Inventory".to_string()));
    let out = dir.join("fused");
    build_deployment(&config, &profile, &out);
    let o = run_ok(
        faasfuse()
            .arg("run")
            .arg("--config")
            .arg(out.join("func_config.json"))
            .args(["--", "Frontend", "red shoes"]),
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("rc=0"));
}

#[test]
fn merge_with_a_profile_fuses_only_what_the_planner_chooses() {
    let dir = scratch_dir("plan-merge");
    let profile = write_weights(&dir, "profile.json", 25000.0, 50.0);
    let lib = fixtures().join("default");
    let out = dir.join("frontend.so");
    let o = run_ok(
        faasfuse()
            .arg("merge")
            .arg(format!("Frontend={}", lib.join("libfrontend.so").display()))
            .arg(lib.join("libinventory.so"))
            .arg(lib.join("libpricing.so"))
            .arg(lib.join("librecommend.so"))
            .arg("--profile")
            .arg(&profile)
            .arg("--json")
            .arg("-o")
            .arg(&out),
    );
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Frontend", "Inventory", "Pricing", "faasfuse"]);
    assert!(m["notes"].to_string().contains("cold"), "{}", m["notes"]);
}

#[test]
fn a_run_report_is_a_profile_too() {
    // The host's own trace of the unfused deployment: Recommend is asked
    // for on 1 request in 200.
    let dir = scratch_dir("plan-trace");
    let config = write_config(&dir, &[]);
    let mut inputs: Vec<String> = (0..199).map(|i| format!("red shoes {i}")).collect();
    inputs.push("rec please".into());
    let file = input_file("plan-trace", &inputs);
    let o = run_ok(
        faasfuse()
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--ipc")
            .arg("--json")
            .arg("--inputs")
            .arg(&file)
            .args(["--", "Frontend"]),
    );
    let trace = dir.join("trace.json");
    std::fs::write(&trace, &o.stdout).unwrap();
    let plan = plan_json(&config, &[&trace]);
    assert_eq!(
        members(&plan, "Frontend"),
        ["Frontend", "Inventory", "Pricing"]
    );
    let rec = edge(&plan, "Recommend");
    assert_eq!(rec["status"], "cold", "{rec}");
    assert_eq!(rec["calls"], 1.0);
}

#[test]
fn a_trace_names_the_callees_of_a_transport_function() {
    // ComposePost sends every RPC through one function with a run-time
    // name: no static edge exists; the platform trace supplies them, and
    // a sampled profile still gives CPU shares.
    let dir = scratch_dir("plan-social");
    let w = workflow("social");
    let lib = fixtures().join("default");
    let entries: Vec<serde_json::Value> = w
        .functions
        .iter()
        .enumerate()
        .map(|(i, (name, file))| {
            serde_json::json!({"funcName": name, "funcId": i + 1, "library": lib.join(file), "entry": *name == w.root})
        })
        .collect();
    let config = dir.join("func_config.json");
    std::fs::write(&config, serde_json::to_string(&entries).unwrap()).unwrap();
    let inputs = generate_inputs(&w, 100, 0x50c1);
    let file = input_file("plan-social", &inputs);
    let trace = dir.join("trace.json");
    write_trace(&config, &file, &w.root, &trace);
    let cpu = dir.join("cpu.json");
    std::fs::write(
        &cpu,
        r#"{"calls": {}, "cpu": {"ComposePost": 0.4, "Text": 0.2}}"#,
    )
    .unwrap();
    let plan = plan_json(&config, &[&cpu, &trace]);
    let mut m = members(&plan, "ComposePost");
    m.sort();
    assert_eq!(m, ["ComposePost", "Text", "UniqueId", "UserTimeline"]);
    let f = plan["functions"].as_array().unwrap();
    let cp = f.iter().find(|x| x["name"] == "ComposePost").unwrap();
    assert_eq!(cp["cpu"], 0.4);
}

#[test]
fn reentering_edges_stay_rpcs_unless_the_callee_is_declared_reentrant() {
    // Frontend and Inventory call each other: Frontend→Inventory runs in
    // the image, Inventory→Frontend finds Frontend running and stays an
    // RPC, so it removes nothing.
    let dir = scratch_dir("plan-reenter");
    let config = write_config(&dir, &[]);
    let w = serde_json::json!({
        "calls": {"Frontend": {"Inventory": 1000, "Pricing": 700}, "Inventory": {"Frontend": 500}},
        "external": {"Frontend": 1000},
    });
    let profile = dir.join("cycle.json");
    std::fs::write(&profile, w.to_string()).unwrap();
    let removed = |plan: &serde_json::Value| {
        plan["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["root"] == "Frontend")
            .unwrap()["removed_calls"]
            .as_f64()
            .unwrap()
    };
    let plan = plan_json(&config, &[&profile]);
    assert_eq!(removed(&plan), 1700.0, "{plan:#}");
    // Declared re-entrant, the back edge runs in-process too.
    let config = write_config(
        &dir,
        &[("Frontend", serde_json::json!({"reentrant": true}))],
    );
    let plan = plan_json(&config, &[&profile]);
    assert_eq!(removed(&plan), 2200.0, "{plan:#}");

    // A function that only calls itself: nothing to fuse unless declared
    // re-entrant.
    let lib = fixtures().join("default").join("libloop.so");
    let weights = dir.join("loop.json");
    std::fs::write(
        &weights,
        r#"{"calls": {"Loop": {"Loop": 3000}}, "external": {"Loop": 1000}}"#,
    )
    .unwrap();
    for (reentrant, want) in [(false, 0.0), (true, 3000.0)] {
        let mut e =
            serde_json::json!({"funcName": "Loop", "funcId": 1, "library": lib, "entry": true});
        if reentrant {
            e["reentrant"] = true.into();
        }
        let c = dir.join(format!("loop-{reentrant}.json"));
        std::fs::write(&c, serde_json::json!([e]).to_string()).unwrap();
        let plan = plan_json(&c, &[&weights]);
        assert_eq!(
            plan["groups"][0]["removed_calls"].as_f64(),
            Some(want),
            "{plan:#}"
        );
        let out = dir.join(format!("loop-{reentrant}"));
        build_deployment(&c, &weights, &out);
        let built = read_json(&out.join("func_config.json"));
        let library = built[0]["library"].as_str().unwrap();
        assert_eq!(library.ends_with(".fused.so"), reentrant, "{built:#}");
    }
}

#[test]
fn build_never_writes_an_image_over_its_budget() {
    // The real fused size of Foo + Bar, then a budget one byte below it.
    let dir = scratch_dir("plan-budget-real");
    let lib = fixtures().join("default");
    let probe = dir.join("probe.so");
    let m = run_ok(
        faasfuse()
            .arg("merge")
            .arg(format!("Foo={}", lib.join("libfoo.so").display()))
            .arg(format!("Bar={}", lib.join("libbar.so").display()))
            .args(["--json", "-o"])
            .arg(&probe),
    );
    let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    let real = std::fs::metadata(&probe).unwrap().len();
    assert_eq!(m["output_bytes"].as_u64(), Some(real));
    let weights = dir.join("w.json");
    std::fs::write(
        &weights,
        r#"{"calls": {"Foo": {"Bar": 1000}}, "external": {"Foo": 1000}}"#,
    )
    .unwrap();
    for (budget, fits) in [(real, true), (real - 1, false)] {
        let config = dir.join(format!("config-{budget}.json"));
        let c = serde_json::json!([
            {"funcName": "Foo", "funcId": 1, "library": lib.join("libfoo.so"), "entry": true, "maxImageBytes": budget},
            {"funcName": "Bar", "funcId": 2, "library": lib.join("libbar.so")},
        ]);
        std::fs::write(&config, c.to_string()).unwrap();
        let out = dir.join(format!("out-{budget}"));
        let o = faasfuse()
            .arg("build")
            .arg("--config")
            .arg(&config)
            .arg("--profile")
            .arg(&weights)
            .arg("--out-dir")
            .arg(&out)
            .output()
            .unwrap();
        let image = out.join("libfoo.fused.so");
        if fits {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(std::fs::metadata(&image).unwrap().len(), real);
        } else {
            // Refused with the reason, or planned without Bar: never an
            // image over the budget.
            let err = String::from_utf8_lossy(&o.stderr);
            if !o.status.success() {
                assert_eq!(o.status.code(), Some(2), "{err}");
                assert!(err.contains("maxImageBytes"), "{err}");
            }
            if let Ok(meta) = std::fs::metadata(&image) {
                assert!(meta.len() <= budget, "{} B over {budget} B", meta.len());
            }
        }
    }
}

/// The heuristic against exact enumeration where the heuristic, not
/// enumeration, plans the group: the first 40 groups of 15–20 candidates
/// of random deployments (`synthetic::deployment`, 20–59 functions, size
/// and CPU budgets, cycles, two trust domains). Measured when written:
/// optimal on 38, mean gap 0.038 %, worst gap 1.0 %. Without local search
/// and lookahead (greedy alone) it is optimal on 27, mean gap 4.1 %, worst
/// 75.8 % (a callee that removes little itself but leads to hot ones).
#[test]
fn heuristic_stays_near_the_exact_optimum_on_groups_of_15_to_20_candidates() {
    use faasfuse_core::plan::solve::{exact_removed_calls, solve, Verdict};
    use faasfuse_testkit::synthetic::deployment;
    let mut gaps = Vec::new();
    for seed in 0.. {
        if gaps.len() == 40 {
            break;
        }
        assert!(seed < 2000, "too few groups of 15-20 candidates");
        let (rg, limits) = deployment(20 + (seed % 40) as usize, seed);
        for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
            let l = &limits[root.index()];
            let h = solve(&rg, root, l, false);
            let candidates = h
                .verdicts
                .values()
                .filter(|v| !matches!(v, Verdict::Cold { .. } | Verdict::OtherDomain))
                .count();
            if !(15..=20).contains(&candidates) || gaps.len() == 40 {
                continue;
            }
            assert!(!h.exact, "seed {seed}: {candidates} candidates enumerated");
            let e = exact_removed_calls(&rg, root, l);
            assert!(
                h.removed_calls <= e * (1.0 + 1e-9) + 1e-9,
                "seed {seed} root {root:?}: heuristic {} beats the optimum {e}",
                h.removed_calls
            );
            gaps.push((
                if e > 0.0 {
                    (e - h.removed_calls) / e
                } else {
                    0.0
                },
                seed,
            ));
        }
    }
    let optimal = gaps.iter().filter(|g| g.0 <= 1e-9).count();
    let mean = gaps.iter().map(|g| g.0).sum::<f64>() / gaps.len() as f64;
    let worst = gaps
        .iter()
        .copied()
        .fold((0.0, 0), |a, g| if g.0 > a.0 { g } else { a });
    let what = format!(
        "optimal on {optimal} of {}, mean gap {:.3}%, worst {:.3}% (seed {})",
        gaps.len(),
        100.0 * mean,
        100.0 * worst.0,
        worst.1
    );
    eprintln!("heuristic vs exact: {what}");
    assert!(optimal >= 35, "{what}");
    assert!(mean <= 0.002, "{what}");
    assert!(worst.0 <= 0.03, "{what}");
}

/// A platform trace beside a sampled profile: where samples name an edge
/// its sampled count stays; the trace adds the edge samples do not name
/// and the request counts, scaled to the samples' window by the edges
/// both name (here 400 sampled calls against 100 traced: 4).
#[test]
fn a_trace_adds_only_edges_no_sample_names() {
    let dir = scratch_dir("plan-combine");
    let config = write_config(&dir, &[]);
    let sampled = dir.join("sampled.json");
    std::fs::write(
        &sampled,
        r#"{"calls": {"Frontend": {"Inventory": 100, "Pricing": 300}},
            "cpu": {"Frontend": 0.2, "Pricing": 0.1}}"#,
    )
    .unwrap();
    let trace = dir.join("trace.json");
    std::fs::write(
        &trace,
        r#"{"requests": 50, "nested_calls": 110,
            "calls": {"Frontend": {"Inventory": 50, "Pricing": 50, "Recommend": 10}},
            "external": {"Frontend": 50}}"#,
    )
    .unwrap();
    for (first, second) in [(&sampled, &trace), (&trace, &sampled)] {
        let plan = plan_json(&config, &[first, second]);
        let calls = |callee: &str| edge(&plan, callee)["calls"].as_f64().unwrap();
        assert_eq!(calls("Inventory"), 100.0, "sampled count kept");
        assert_eq!(calls("Pricing"), 300.0, "sampled count kept");
        assert_eq!(calls("Recommend"), 40.0, "trace-only edge, scaled");
        let frontend = plan["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "Frontend")
            .unwrap();
        assert_eq!(frontend["executions"], 200.0, "{frontend}");
        assert_eq!(frontend["cpu"], 0.2, "{frontend}");
    }
    // A trace alone keeps its exact counts.
    let plan = plan_json(&config, &[&trace]);
    let inv = edge(&plan, "Inventory");
    assert_eq!(inv["calls"], 50.0, "{inv}");
}

#[path = "../benches/gen/shapes.rs"]
mod shapes;

/// What every group must keep, whatever searched for it: its removed
/// calls are those of its members; every member is reached from the root
/// through hot edges between members of the root's domain, within the
/// root's budgets; each member's marginal is what the group loses without
/// it (`marginals`: checked where the group is small); a candidate is
/// `Fused` exactly when a member, and `Reenters` exactly when, added, every
/// call into it from the group would stay an RPC (the rule
/// `reentering_edges` applies, checked where no function is re-entrant).
fn check_group(
    rg: &faasfuse_core::plan::RpcGraph,
    root: petgraph::graph::NodeIndex,
    l: &faasfuse_core::plan::solve::Limits,
    s: &faasfuse_core::plan::solve::Solved,
    what: &str,
) {
    use faasfuse_core::plan::solve::{self, Verdict};
    use petgraph::visit::EdgeRef;
    let g = &rg.g;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-7 * a.abs().max(b.abs()).max(1.0);
    let m = &s.members;
    assert!(m.contains(&root), "{what}: root missing");
    let again = solve::removed_calls(rg, root, m);
    assert!(
        close(s.removed_calls, again),
        "{what}: {} != {again}",
        s.removed_calls
    );
    // Reached through hot edges between members, one domain, budgets.
    let mut seen = std::collections::BTreeSet::from([root]);
    let mut stack = vec![root];
    while let Some(u) = stack.pop() {
        for e in g.edges(u) {
            if e.weight().share >= l.cold && m.contains(&e.target()) && seen.insert(e.target()) {
                stack.push(e.target());
            }
        }
    }
    assert_eq!(&seen, m, "{what}: members not reached through hot edges");
    assert!(m.iter().all(|&u| g[u].domain == g[root].domain), "{what}");
    let bytes: u64 = m.iter().map(|&u| g[u].image_bytes).sum::<u64>() + solve::RUNTIME_BYTES;
    let cpu: f64 = m.iter().map(|&u| g[u].cpu).sum();
    let mem: u64 = m.iter().map(|&u| g[u].memory_bytes).sum();
    // (A root over its budget by itself stays alone.)
    let alone = m.len() == 1;
    assert!(
        l.max_image_bytes.map_or(true, |b| alone || bytes <= b),
        "{what}: image"
    );
    assert!(
        l.cpu_budget.map_or(true, |b| alone || cpu <= b),
        "{what}: cpu"
    );
    assert!(
        l.memory_bytes.map_or(true, |b| alone || mem <= b),
        "{what}: memory"
    );
    // Marginals, against removing each member in turn.
    if m.len() <= 40 {
        for &c in m.iter().filter(|&&c| c != root) {
            let mut without = m.clone();
            without.remove(&c);
            let lost = s.removed_calls - solve::removed_calls(rg, root, &without);
            let got = s.marginal.get(&c).copied().unwrap_or(f64::NAN);
            assert!(
                close(got, lost),
                "{what}: marginal of {c:?} {got} != {lost}"
            );
        }
    }
    // Verdicts (of small groups: checked the long way).
    for (&c, v) in s.verdicts.iter().filter(|_| m.len() <= 40) {
        assert_eq!(*v == Verdict::Fused, m.contains(&c), "{what}: {c:?} {v:?}");
        if m.contains(&c) || matches!(v, Verdict::Cold { .. } | Verdict::OtherDomain) {
            continue;
        }
        let with: Vec<_> = m.iter().copied().chain([c]).collect();
        if with.iter().any(|&u| g[u].reentrant) || matches!(v, Verdict::OverBudget(_)) {
            continue;
        }
        let at = |u| {
            if u == root {
                0
            } else {
                1 + with
                    .iter()
                    .filter(|&&w| w != root)
                    .position(|&w| w == u)
                    .unwrap()
            }
        };
        let edges: Vec<_> = g
            .edge_references()
            .filter(|e| with.contains(&e.source()) && with.contains(&e.target()))
            .collect();
        let pairs: Vec<_> = edges
            .iter()
            .map(|e| (at(e.source()), at(e.target())))
            .collect();
        let stays = faasfuse_core::plan::reentering_edges(with.len(), &pairs);
        let all_stay = edges
            .iter()
            .zip(&stays)
            .filter(|(e, _)| e.target() == c)
            .all(|(_, &s)| s);
        assert_eq!(*v == Verdict::Reenters, all_stay, "{what}: {c:?} {v:?}");
    }
}

/// The planner on random small groups (the planning benchmark's shapes:
/// cycles, uniform and heavy-tailed call counts, re-entrant functions,
/// trust domains, with and without budgets) against exact enumeration:
/// every group keeps the rules of `check_group`; the search `plan` runs on
/// larger groups, forced onto these, and the incremental greedy alone
/// (what serves groups of more than 64 candidates) never beat the optimum
/// and stay near the gaps measured when this was written, on 294 groups:
/// the search below the optimum on 3, mean gap 0.12 %, worst 20 %; the
/// greedy alone below on 33, mean 1.3 %, worst 72 % (a callee with a large
/// gain of its own taken early, whose call back to a member then closes a
/// cycle through every candidate between them).
#[test]
fn groups_keep_their_rules_and_the_search_stays_near_enumeration_on_random_shapes() {
    use faasfuse_core::plan::solve::{Planner, Search};
    let forced = Search {
        heuristic: true,
        ..Search::default()
    };
    let alone = Search {
        heuristic: true,
        refine: false,
        ..Search::default()
    };
    let (mut searched, mut greedy) = (Vec::new(), Vec::new());
    for seed in 0..250 {
        let mut shape = shapes::Shape::random(30, seed % 2 == 0, 11_000 + seed);
        shape.functions = 6 + (seed % 25) as usize;
        shape.entries = shape.entries.clamp(1, 3);
        let (rg, limits) = shape.build();
        let planner = Planner::new(&rg);
        for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
            let l = &limits[root.index()];
            let exact = planner.solve(root, l, &Search::default());
            if !exact.exact || exact.verdicts.len() < 3 {
                continue;
            }
            let what = format!("{shape} root {}", root.index());
            check_group(&rg, root, l, &exact, &what);
            for (search, gaps) in [(&forced, &mut searched), (&alone, &mut greedy)] {
                let h = planner.solve(root, l, search);
                check_group(&rg, root, l, &h, &what);
                let e = exact.removed_calls;
                assert!(
                    h.removed_calls <= e * (1.0 + 1e-9) + 1e-9,
                    "{what}: {} beats the optimum {e}",
                    h.removed_calls
                );
                gaps.push(if e > 0.0 {
                    (e - h.removed_calls) / e
                } else {
                    0.0
                });
            }
        }
    }
    let summary = |g: &[f64]| {
        let below = g.iter().filter(|&&x| x > 1e-9).count();
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        let worst = g.iter().copied().fold(0.0, f64::max);
        (below, mean, worst)
    };
    let (sb, sm, sw) = summary(&searched);
    let (gb, gm, gw) = summary(&greedy);
    eprintln!(
        "{} groups: search {sb} below the optimum, mean gap {:.3}%, worst {:.2}%; greedy alone {gb} below, mean {:.3}%, worst {:.2}%",
        searched.len(),
        100.0 * sm,
        100.0 * sw,
        100.0 * gm,
        100.0 * gw
    );
    assert!(searched.len() >= 250, "{} groups", searched.len());
    assert!(
        sb <= 6 && sm <= 0.0025 && sw <= 0.25,
        "search: {sb} {sm} {sw}"
    );
    assert!(
        gb <= 45 && gm <= 0.02 && gw <= 0.8,
        "greedy alone: {gb} {gm} {gw}"
    );
}

/// A group of some 1,600 candidates on a cyclic graph (the shape that ran
/// past ten minutes: 2,000 functions, one to three callees each anywhere,
/// call counts up to 10^6, no budgets): the search ends within its work
/// limit, and a far smaller limit stops it early with a group that still
/// keeps the rules.
#[test]
fn a_group_of_thousands_of_candidates_is_searched_within_its_work_limit() {
    use faasfuse_core::plan::solve::{Planner, Search};
    let shape = shapes::Shape {
        calls: shapes::Calls::Uniform(1e6),
        entries: 2,
        ..shapes::Shape::issue(1)
    };
    let (rg, limits) = shape.build();
    let planner = Planner::new(&rg);
    for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
        let l = &limits[root.index()];
        let s = planner.solve(root, l, &Search::default());
        assert!(s.verdicts.len() > 1000, "{} candidates", s.verdicts.len());
        assert!(!s.stopped && !s.exact);
        check_group(&rg, root, l, &s, "default limit");
        let tight = Search {
            work: 10_000,
            work_per_item: 0,
            ..Search::default()
        };
        let t = planner.solve(root, l, &tight);
        assert!(t.stopped && t.members.len() < s.members.len());
        check_group(&rg, root, l, &t, "tight limit");
    }
}
