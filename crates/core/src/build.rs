//! `faasfuse build`: the CI step. Plan fusion groups, merge and verify one
//! image per group, and write the new deployment beside them:
//! `func_config.json` pointing each group's root at its fused image (every
//! other function keeps its library and still serves RPCs), `launch.sh`
//! (nightcore's launcher per function: nightcore reads no `library` field,
//! a function's library is its launcher's `--fprocess` argument),
//! `plan.json`, and the RPC graph (`graph.dot`, and `graph.svg` when
//! Graphviz is there). The deployment appears whole or not at all: every
//! file is staged first and named only when all are complete.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// The plan's graph as DOT, and as SVG when Graphviz `dot` runs (`None`
/// otherwise).
pub fn graph_files(p: &Plan) -> (String, Option<Vec<u8>>) {
    let dot = plan::dot(p);
    (dot.clone(), render_svg(&dot))
}

/// `dot -Tsvg` on `dot`, through pipes.
fn render_svg(dot: &str) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let text = dot.to_string();
    // Fed from a thread: dot may write before it has read everything.
    let feeder = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().ok()?;
    let fed = feeder.join().ok()?.is_ok();
    (fed && out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
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

/// The file of the fused image rooted at `root`.
pub fn image_file(root: &str) -> String {
    format!("lib{}.fused.so", root.to_lowercase())
}

/// Plan, merge every group, verify, and write the new deployment: every
/// file or none (see [`crate::output::StagedDir`]); on an error `out_dir`
/// is left as it was.
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
    let mut out = crate::output::StagedDir::new(out_dir)?;
    let p = plan::plan(config, weights, profile, options, previous)?;
    // A group that removes RPCs gets an image, even alone: a function that
    // calls itself then does so in-process.
    let groups: Vec<&plan::Group> = p.groups.iter().filter(|g| g.removed_calls > 0.0).collect();
    check_destinations(out_dir, &groups)?;
    let mut images = Vec::new();
    let mut entries = config.functions.clone();
    for g in groups {
        let (staged, image) = fuse_group(config, g, out_dir, level, &mut out, verify_with)?;
        out.add(staged);
        let e = entries
            .iter_mut()
            .find(|e| e.func_name == g.root)
            .expect("root in config");
        e.library = PathBuf::from(image_file(&g.root));
        images.push(image);
    }
    // Libraries that were not fused keep absolute paths.
    for e in &mut entries {
        if e.library.is_relative() && !images.iter().any(|i| i.root == e.func_name) {
            e.library = std::path::absolute(&e.library)?;
        }
    }
    out.write(
        "plan.json",
        (serde_json::to_string_pretty(&p)? + "\n").as_bytes(),
        false,
    )?;
    let (dot, svg) = graph_files(&p);
    out.write("graph.dot", dot.as_bytes(), false)?;
    if let Some(svg) = &svg {
        out.write("graph.svg", svg, false)?;
    }
    out.write(
        "launch.sh",
        launch_script(&entries, out_dir)?.as_bytes(),
        true,
    )?;
    // Last: the config that points at everything above.
    out.write(
        "func_config.json",
        (serde_json::to_string_pretty(&entries)? + "\n").as_bytes(),
        false,
    )?;
    out.commit()?;
    let built = Built {
        out_dir: out_dir.display().to_string(),
        config: out_dir.join("func_config.json").display().to_string(),
        launch: out_dir.join("launch.sh").display().to_string(),
        plan: out_dir.join("plan.json").display().to_string(),
        graph_dot: out_dir.join("graph.dot").display().to_string(),
        graph_svg: svg.map(|_| out_dir.join("graph.svg").display().to_string()),
        images,
    };
    Ok((p, built))
}

/// Every destination of a build, checked before any work: none an input,
/// none named twice (roots whose names differ only in case).
fn check_destinations(out_dir: &Path, groups: &[&plan::Group]) -> Result<()> {
    let fixed = [
        "func_config.json",
        "launch.sh",
        "plan.json",
        "graph.dot",
        "graph.svg",
    ];
    let labels: Vec<(String, PathBuf)> = fixed
        .iter()
        .map(|f| (f.to_string(), out_dir.join(f)))
        .chain(groups.iter().map(|g| {
            (
                format!("the fused image of {}", g.root),
                out_dir.join(image_file(&g.root)),
            )
        }))
        .collect();
    let pairs: Vec<(&str, &Path)> = labels
        .iter()
        .map(|(l, p)| (l.as_str(), p.as_path()))
        .collect();
    crate::output::check_distinct(&pairs)?;
    for (_, path) in &pairs {
        crate::output::check_destination(path)?;
    }
    Ok(())
}

/// Merge and verify one group into a file staged in `out`, and check its
/// real size against the budget the planner estimated for.
fn fuse_group(
    config: &Config,
    g: &plan::Group,
    out_dir: &Path,
    level: Level,
    out: &mut crate::output::StagedDir,
    verify_with: Option<&Path>,
) -> Result<(crate::output::Staged, BuiltImage)> {
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
    let file = image_file(&g.root);
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
    let staged = out.create(&file, true)?;
    let (manifest, staged) = crate::merge::merge_staged(&specs, staged, verify_with, &opts)
        .with_context(|| format!("fusing the group of {}", g.root))?;
    // The planner budgets with an estimate; the real image must hold it.
    if let Some(max) = config.get(&g.root).and_then(|e| e.max_image_bytes) {
        if manifest.output_bytes > max {
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
    let image = BuiltImage {
        root: g.root.clone(),
        members: g.members.clone(),
        path: path.display().to_string(),
        bytes: manifest.output_bytes,
        manifest,
    };
    Ok((staged, image))
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
