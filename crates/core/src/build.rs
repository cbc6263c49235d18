//! `faasfuse build`: the CI step. Plan fusion groups, merge and verify one
//! image per group, and write the new deployment beside them:
//! `func_config.json` pointing each group's root at its fused image (every
//! other function keeps its library and still serves RPCs), `plan.json`,
//! and the RPC graph (`graph.dot`, and `graph.svg` when Graphviz is there).

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
    for f in ["func_config.json", "plan.json", "graph.dot", "graph.svg"] {
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
        plan: plan_path.display().to_string(),
        graph_dot: dot_path.display().to_string(),
        graph_svg: svg.map(|s| s.display().to_string()),
        images,
    };
    Ok((p, built))
}
