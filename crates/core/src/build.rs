//! `faasfuse build`: the CI step. Plan fusion groups, merge and verify one
//! image per group, and write the new deployment beside them:
//! `func_config.json` pointing each group's root at its fused image (every
//! other function keeps its library and still serves RPCs), `launch.sh`
//! (nightcore's launcher per function: nightcore reads no `library` field,
//! a function's library is its launcher's `--fprocess` argument),
//! `plan.json`, and the RPC graph (`graph.dot`, and `graph.svg` when
//! Graphviz is there).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::InputError;
use crate::lower::Level;
use crate::merge::Manifest;
use crate::plan::{self, Config, Options, Plan, Weights};
use crate::spec::FunctionSpec;

#[derive(Debug, Serialize)]
pub struct Built {
    pub out_dir: String,
    pub config: String,
    /// Starts nightcore's launchers for the deployment.
    pub launch: String,
    pub plan: String,
    pub graph_dot: String,
    pub graph_svg: Option<String>,
    pub images: Vec<BuiltImage>,
}

#[derive(Debug, Serialize)]
pub struct BuiltImage {
    pub root: String,
    pub members: Vec<String>,
    pub path: String,
    pub bytes: u64,
    pub manifest: Manifest,
}

/// Write the plan's graph as DOT, and as SVG when `dot` runs.
pub fn write_graph(p: &Plan, dot_path: &Path, svg_path: Option<&Path>) -> Result<Option<PathBuf>> {
    crate::output::write_atomically(dot_path, plan::dot(p).as_bytes(), false)?;
    let Some(svg) = svg_path else {
        return Ok(None);
    };
    crate::output::check_destination(svg)?;
    let tmp = crate::output::NamedTemp::new(crate::output::sibling_temp(svg, "tmp")?);
    let ok = Command::new("dot")
        .arg("-Tsvg")
        .arg(dot_path)
        .arg("-o")
        .arg(tmp.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        tmp.commit(svg)?;
        Ok(Some(svg.to_path_buf()))
    } else {
        Ok(None)
    }
}

/// `merge --profile`: the planner over just `specs` (the first the root);
/// returns the libraries to fuse, root first, and the plan that chose them.
pub fn plan_merge(
    specs: &[FunctionSpec],
    weights: &Weights,
    profile: &Path,
    options: &Options,
) -> Result<(Vec<FunctionSpec>, Plan)> {
    let config = Config::from_specs(specs);
    let p = plan::plan(&config, weights, profile, options, None)?;
    let group = p
        .groups
        .iter()
        .find(|g| g.root == specs[0].name)
        .ok_or_else(|| anyhow::anyhow!("no group for the root {}", specs[0].name))?;
    let chosen = group
        .members
        .iter()
        .map(|m| {
            specs
                .iter()
                .find(|s| &s.name == m)
                .cloned()
                .expect("members come from the specs")
        })
        .collect();
    Ok((chosen, p))
}

/// Plan, merge every group, verify, and write the new deployment.
#[allow(clippy::too_many_arguments)]
pub fn build(
    config: &Config,
    weights: &Weights,
    profile: &Path,
    options: &Options,
    previous: Option<&Plan>,
    out_dir: &Path,
    level: Level,
    verify_with: Option<&Path>,
) -> Result<(Plan, Built)> {
    let p = plan::plan(config, weights, profile, options, previous)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for f in [
        "func_config.json",
        "launch.sh",
        "plan.json",
        "graph.dot",
        "graph.svg",
    ] {
        crate::output::check_destination(&out_dir.join(f))?;
    }
    let mut images = Vec::new();
    let mut entries = config.functions.clone();
    // A group that removes RPCs gets an image, even alone: a function that
    // calls itself then does so in-process.
    for g in p.groups.iter().filter(|g| g.removed_calls > 0.0) {
        let specs: Vec<FunctionSpec> = g
            .members
            .iter()
            .map(|m| FunctionSpec {
                name: m.clone(),
                path: config
                    .get(m)
                    .expect("planned from the config")
                    .library
                    .clone(),
            })
            .collect();
        let file = format!("lib{}.fused.so", g.root.to_lowercase());
        let path = out_dir.join(&file);
        let opts = crate::merge::MergeOptions {
            level,
            reentrant: g
                .members
                .iter()
                .filter(|m| config.get(m).and_then(|e| e.reentrant) == Some(true))
                .cloned()
                .collect(),
            isolate: Default::default(),
            isolate_fn: g
                .members
                .iter()
                .filter_map(|m| Some((m.clone(), config.get(m)?.isolate?)))
                .collect(),
        };
        let manifest = crate::merge::merge_verified(&specs, &path, verify_with, &opts)
            .with_context(|| format!("fusing the group of {}", g.root))?;
        // The planner budgets with an estimate; the real image must hold it.
        if let Some(max) = config.get(&g.root).and_then(|e| e.max_image_bytes) {
            if manifest.output_bytes > max {
                let _ = std::fs::remove_file(&path);
                return Err(InputError::new(
                    &config.path,
                    format!(
                        "the fused image of {} ({}) is {} B, over its maxImageBytes {max} B; raise the budget or leave a callee out",
                        g.root,
                        g.members.join(" + "),
                        manifest.output_bytes
                    ),
                )
                .into());
            }
        }
        let e = entries
            .iter_mut()
            .find(|e| e.func_name == g.root)
            .expect("root in config");
        e.library = PathBuf::from(&file);
        images.push(BuiltImage {
            root: g.root.clone(),
            members: g.members.clone(),
            path: path.display().to_string(),
            bytes: std::fs::metadata(&path)?.len(),
            manifest,
        });
    }
    // Libraries that were not fused keep absolute paths.
    for e in &mut entries {
        if e.library.is_relative() && !images.iter().any(|i| i.root == e.func_name) {
            e.library = std::path::absolute(&e.library)?;
        }
    }
    let config_path = out_dir.join("func_config.json");
    crate::output::write_atomically(
        &config_path,
        (serde_json::to_string_pretty(&entries)? + "\n").as_bytes(),
        false,
    )?;
    let launch_path = out_dir.join("launch.sh");
    crate::output::write_atomically(
        &launch_path,
        launch_script(&entries, out_dir)?.as_bytes(),
        true,
    )?;
    let plan_path = out_dir.join("plan.json");
    crate::output::write_atomically(
        &plan_path,
        (serde_json::to_string_pretty(&p)? + "\n").as_bytes(),
        false,
    )?;
    let dot_path = out_dir.join("graph.dot");
    let svg = write_graph(&p, &dot_path, Some(&out_dir.join("graph.svg")))?;
    let built = Built {
        out_dir: out_dir.display().to_string(),
        config: config_path.display().to_string(),
        launch: launch_path.display().to_string(),
        plan: plan_path.display().to_string(),
        graph_dot: dot_path.display().to_string(),
        graph_svg: svg.map(|s| s.display().to_string()),
        images,
    };
    Ok((p, built))
}

/// `launch.sh`: one nightcore launcher per function of the deployment, its
/// `--fprocess` running `func_worker_v1` on the function's library (an
/// absolute path, so the script runs from anywhere). The platform's
/// gateway and engine are the operator's; the script takes their programs'
/// directory and the engine's IPC root from the environment.
pub fn launch_script(entries: &[crate::plan::FuncEntry], out_dir: &Path) -> Result<String> {
    let mut s = String::from(LAUNCH_HEAD);
    for e in entries {
        let Some(id) = e.func_id else {
            s += &format!(
                "# {}: no funcId in func_config.json, so nightcore cannot launch it\n",
                e.func_name
            );
            continue;
        };
        let lib = if e.library.is_relative() {
            std::path::absolute(out_dir.join(&e.library))?
        } else {
            e.library.clone()
        };
        let lib = lib.to_str().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the library of {} is not a UTF-8 path, which launch.sh cannot name",
                lib.display(),
                e.func_name
            )
        })?;
        s += &format!(
            "launch {id} {}  # {}\n",
            sh_word(lib),
            e.func_name.escape_default()
        );
    }
    s += "wait\n";
    Ok(s)
}

/// `s` as one word for `/bin/sh`.
fn sh_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

const LAUNCH_HEAD: &str = r#"#!/bin/sh
# Written by `faasfuse build`: starts one nightcore launcher per function of
# this deployment. func_config.json beside this script is the gateway's and
# the engine's --func_config_file; nightcore reads no library field, so each
# function's library is its launcher's --fprocess argument, below.
#
# Usage: NIGHTCORE_BIN=DIR IPC_DIR=DIR [OUTPUT_DIR=DIR] sh launch.sh
#   NIGHTCORE_BIN  the directory of nightcore's launcher and func_worker_v1
#   IPC_DIR        the engine's --root_path_for_ipc
#   OUTPUT_DIR     where the workers' stdout and stderr go (default: dropped)
set -eu
: "${NIGHTCORE_BIN:?set NIGHTCORE_BIN to the directory of nightcore's programs}"
: "${IPC_DIR:?set IPC_DIR to the engine's --root_path_for_ipc}"
# q WORD: WORD quoted for the shell the launcher runs --fprocess with.
q() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\''/g")"; }
# launch FUNC_ID LIBRARY
launch() {
  "$NIGHTCORE_BIN/launcher" --func_id="$1" --fprocess_mode=cpp \
    --root_path_for_ipc="$IPC_DIR" ${OUTPUT_DIR:+--fprocess_output_dir="$OUTPUT_DIR"} \
    --fprocess="$(q "$NIGHTCORE_BIN/func_worker_v1") $(q "$2")" &
}
"#;
