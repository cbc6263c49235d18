//! `faasfuse plan` of a deployment's `func_config.json` over profiles, the
//! plan on the platform's exact trace that a profile's plan is compared
//! with, and what a JSON plan decided: its edges and its groups.

use std::path::Path;

use serde_json::Value;

use super::{faasfuse, run_ok, run_stdout};

/// `faasfuse plan --config CONFIG --json --profile P...` (each profile in
/// turn), which must succeed: the plan.
pub fn plan_json(config: &Path, profiles: &[&Path]) -> Value {
    plan_json_with(config, profiles, &[])
}

/// [`plan_json`] with `extra` arguments after the profiles (`--previous
/// PLAN`, budgets).
pub fn plan_json_with(config: &Path, profiles: &[&Path], extra: &[&str]) -> Value {
    let mut cmd = faasfuse();
    cmd.arg("plan").arg("--config").arg(config).arg("--json");
    for p in profiles {
        cmd.arg("--profile").arg(p);
    }
    cmd.args(extra);
    serde_json::from_slice(&run_ok(&mut cmd).stdout).unwrap()
}

/// `faasfuse plan --config CONFIG --profile PROFILE`, which must succeed:
/// the table it prints.
pub fn plan_table(config: &Path, profile: &Path) -> String {
    run_stdout(
        faasfuse()
            .arg("plan")
            .arg("--config")
            .arg(config)
            .arg("--profile")
            .arg(profile),
    )
}

/// `faasfuse run --config CONFIG --json --inputs INPUTS -- ROOT`, which
/// must succeed, its report written to `trace`: the platform's exact count
/// of the calls the requests make, a profile `plan` reads.
pub fn write_trace(config: &Path, inputs: &Path, root: &str, trace: &Path) {
    let o = run_ok(
        faasfuse()
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--json")
            .arg("--inputs")
            .arg(inputs)
            .args(["--", root]),
    );
    std::fs::write(trace, &o.stdout).unwrap();
}

/// The plan on the platform's exact trace of `inputs` served from
/// Frontend: [`write_trace`] into `trace`, then [`plan_json`] of it.
pub fn exact_trace_plan(config: &Path, inputs: &Path, trace: &Path) -> Value {
    write_trace(config, inputs, "Frontend", trace);
    plan_json(config, &[trace])
}

/// Frontend's edge to `callee` in a plan of the fan-out deployment;
/// panics naming the plan's edges when there is none.
pub fn edge<'a>(plan: &'a Value, callee: &str) -> &'a Value {
    plan["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "Frontend" && e["callee"] == callee)
        .unwrap_or_else(|| panic!("no edge to {callee}: {}", plan["edges"]))
}

/// The members of the plan's group rooted at `root`.
pub fn members(plan: &Value, root: &str) -> Vec<String> {
    plan_groups(plan)
        .into_iter()
        .find(|(r, _)| r == root)
        .unwrap_or_else(|| panic!("no group of {root}: {}", plan["groups"]))
        .1
}

/// Every edge of a plan as (caller, callee, the edge), in the plan's
/// order.
pub fn plan_edges(plan: &Value) -> Vec<(String, String, &Value)> {
    plan["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["caller"].as_str().unwrap().to_string(),
                e["callee"].as_str().unwrap().to_string(),
                e,
            )
        })
        .collect()
}

/// Every group of a plan as (root, members), in the plan's order.
pub fn plan_groups(plan: &Value) -> Vec<(String, Vec<String>)> {
    plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let members = g["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
            (g["root"].as_str().unwrap().to_string(), members)
        })
        .collect()
}
