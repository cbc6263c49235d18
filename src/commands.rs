//! One function per command: read the arguments, call the pipeline's
//! stages, print what they return.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use faasfuse_core::error::{InputError, OutputError};
use faasfuse_core::output::to_stdout;
use faasfuse_host::{stats::human, RunOptions};

use crate::cli::*;

/// Write `value` as JSON to `file` (if given), and print it as JSON or as
/// the human `text`.
fn report_out<T: serde::Serialize>(
    value: &T,
    file: Option<&std::path::Path>,
    json: bool,
    text: String,
) -> Result<()> {
    let j = serde_json::to_string_pretty(value)?;
    if let Some(f) = file {
        faasfuse_core::output::write_atomically(f, format!("{j}\n").as_bytes(), false)?;
    }
    if json {
        to_stdout(&format!("{j}\n"))?;
    } else {
        to_stdout(&text)?;
    }
    Ok(())
}

/// Refuse outputs that are not regular files, or that are one of the
/// inputs (same device and inode), before any work is done.
fn refuse_inputs_as_outputs<'a>(
    inputs: impl Iterator<Item = &'a std::path::Path>,
    outputs: impl IntoIterator<Item = Option<&'a std::path::Path>>,
) -> Result<()> {
    for i in inputs {
        // A NAME=FILE profile names FILE.
        let p = i
            .to_str()
            .and_then(|s| s.split_once('='))
            .map(|(_, f)| std::path::Path::new(f));
        for cand in [Some(i), p].into_iter().flatten() {
            if let Ok(m) = std::fs::metadata(cand) {
                faasfuse_core::files::note_input(cand, &m);
            }
        }
    }
    for o in outputs.into_iter().flatten() {
        faasfuse_core::output::check_destination(o)?;
    }
    Ok(())
}

/// What `plan` and `build` read: the deployment, the profile's weights
/// and the previous plan, if any.
fn planning_inputs(
    i: &PlanInputs,
) -> Result<(
    faasfuse_core::plan::Config,
    faasfuse_core::plan::Weights,
    Option<faasfuse_core::plan::Plan>,
)> {
    let config = faasfuse_core::plan::Config::load_with(&i.config, &i.libs)?;
    let functions: Vec<(String, PathBuf)> = config
        .functions
        .iter()
        .map(|f| (f.func_name.clone(), f.library.clone()))
        .collect();
    let weights = faasfuse_core::plan::load_weights(&i.profile, &functions)?;
    Ok((
        config,
        weights,
        i.previous
            .as_deref()
            .map(faasfuse_core::plan::Plan::load)
            .transpose()?,
    ))
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let InspectArgs { library, json } = a;
    let report = faasfuse_core::inspect::inspect(&library)?;
    if json {
        to_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        to_stdout(&report.render())?;
    }
    Ok(())
}

pub fn run(a: RunArgs) -> Result<()> {
    let RunArgs {
        functions,
        config,
        libs,
        ipc,
        reentrant,
        repeat,
        inputs,
        inputs_format,
        json,
        quiet,
        request,
    } = a;
    let root = request[0].clone();
    let mut all_inputs: Vec<Vec<u8>> = request[1..].iter().map(|s| s.as_bytes().to_vec()).collect();
    if let Some(file) = &inputs {
        all_inputs.extend(read_inputs(file, inputs_format)?);
    }
    let mut specs = faasfuse_host::resolve_specs(&functions, Some(&root))?;
    let mut opts = RunOptions {
        ipc,
        repeat,
        reentrant,
        ..RunOptions::default()
    };
    if let Some(c) = &config {
        let c = faasfuse_core::plan::Config::load_with(c, &libs)?;
        for f in &c.functions {
            specs.push(faasfuse_host::FunctionSpec {
                name: f.func_name.clone(),
                path: f.library.clone(),
            });
            if f.reentrant == Some(true) {
                opts.reentrant.push(f.func_name.clone());
            }
            let limits = faasfuse_host::PoolLimits::of_entry(f);
            if let Err(why) = limits.check() {
                bail!(InputError::new(&c.path, format!("{}: {why}", f.func_name)));
            }
            opts.pools.insert(f.func_name.clone(), limits);
        }
        faasfuse_host::check_unique(&specs)?;
    }
    let report = faasfuse_host::run(&specs, &root, &all_inputs, &opts)?;
    if json {
        return to_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    }
    let mut out = Vec::new();
    if !quiet {
        for r in &report.raw {
            writeln!(out, "rc={}\t{}", r.rc, faasfuse_host::escape(&r.output))?;
        }
    }
    if repeat > 1 || quiet {
        if let Some(p) = &report.request_latency {
            writeln!(
                out,
                "{} mode: {} requests, request latency p50 {} p99 {}",
                report.mode,
                p.count,
                human(p.p50_ns),
                human(p.p99_ns)
            )?;
        }
        if let Some(p) = &report.nested_call_latency {
            writeln!(
                out,
                "{} nested calls, nested call round trip p50 {} p99 {}",
                p.count,
                human(p.p50_ns),
                human(p.p99_ns)
            )?;
        }
    }
    to_stdout(&String::from_utf8_lossy(&out))?;
    Ok(())
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let MergeArgs {
        libraries,
        output,
        manifest,
        profile,
        json,
        no_verify,
        lower,
        reentrant,
        isolate,
        isolate_fn,
    } = a;
    let mut specs = faasfuse_host::resolve_specs(&libraries, None)?;
    if let Some(m) = &manifest {
        faasfuse_core::output::check_distinct(&[("-o", &output), ("--manifest", m)])?;
    }
    refuse_inputs_as_outputs(
        specs
            .iter()
            .map(|s| s.path.as_path())
            .chain(profile.iter().map(|p| p.as_path())),
        [Some(output.as_path()), manifest.as_deref()],
    )?;
    let mut opts = faasfuse_core::merge::MergeOptions {
        level: lower.into(),
        reentrant: reentrant.into_iter().collect(),
        isolate: isolate.into(),
        isolate_fn: isolate_fn.into_iter().map(|(n, m)| (n, m.into())).collect(),
    };
    opts.check(&specs)?;
    let mut planned = None;
    if let Some(p) = profile.first() {
        let functions: Vec<(String, PathBuf)> = specs
            .iter()
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect();
        let w = faasfuse_core::plan::load_weights(&profile, &functions)?;
        let (chosen, plan) = faasfuse_core::build::plan_merge(
            &specs,
            &w,
            p,
            &faasfuse_core::plan::Options::default(),
        )?;
        specs = chosen;
        planned = Some(plan);
    }
    let exe = std::env::current_exe()?;
    let verify_with = (!no_verify).then_some(exe.as_path());
    opts.reentrant
        .retain(|r| specs.iter().any(|s| &s.name == r));
    // The image and the manifest appear together or not at all.
    let mut staged_manifest = manifest
        .as_deref()
        .map(|m| faasfuse_core::output::Staged::create(m, false))
        .transpose()?;
    let image = faasfuse_core::output::Staged::create(&output, true)?;
    let (mut report, image) =
        faasfuse_core::merge::merge_staged(&specs, image, verify_with, &opts)?;
    if let Some(p) = planned {
        report.notes.extend(
            p.decisions
                .iter()
                .map(|d| format!("profile: {} <- {}: {}", d.root, d.function, d.reason)),
        );
    }
    let mut files = vec![image];
    if let Some(mut m) = staged_manifest.take() {
        let text = format!("{}\n", serde_json::to_string_pretty(&report)?);
        m.file()
            .write_all(text.as_bytes())
            .map_err(|e| OutputError::write(m.dest(), e))?;
        files.push(m);
    }
    faasfuse_core::output::commit_all(files)?;
    report_out(&report, None, json, faasfuse_core::merge::render(&report))
}

pub fn plan(a: PlanArgs) -> Result<()> {
    let PlanArgs {
        inputs,
        output,
        dot,
        svg,
        json,
        tuning,
    } = a;
    // The DOT file is written beside --svg when --dot is not given.
    let dot_path = dot
        .clone()
        .or_else(|| svg.as_ref().map(|s| s.with_extension("dot")));
    let dot_label = if dot.is_some() {
        "--dot"
    } else {
        "the DOT file written beside --svg"
    };
    faasfuse_core::output::check_distinct(
        &[
            ("-o", output.as_deref()),
            (dot_label, dot_path.as_deref()),
            ("--svg", svg.as_deref()),
        ]
        .into_iter()
        .filter_map(|(l, p)| Some((l, p?)))
        .collect::<Vec<_>>(),
    )?;
    let (c, w, prev) = planning_inputs(&inputs)?;
    let p =
        faasfuse_core::plan::plan(&c, &w, &inputs.profile[0], &tuning.options(), prev.as_ref())?;
    // Every output or none.
    let plan_json = format!("{}\n", serde_json::to_string_pretty(&p)?);
    let (dot_text, svg_bytes) = match &dot_path {
        Some(_) => {
            let (d, s) = faasfuse_core::build::graph_files(&p);
            (d, if svg.is_some() { s } else { None })
        }
        None => (String::new(), None),
    };
    let mut files: Vec<(&std::path::Path, &[u8], bool)> = Vec::new();
    if let Some(d) = &dot_path {
        files.push((d, dot_text.as_bytes(), false));
    }
    if let (Some(s), Some(b)) = (&svg, &svg_bytes) {
        files.push((s, b, false));
    }
    if let Some(o) = &output {
        files.push((o, plan_json.as_bytes(), false));
    }
    faasfuse_core::output::write_all_atomically(&files)?;
    if let (Some(d), None) = (&dot_path, &svg_bytes) {
        if svg.is_some() {
            eprintln!(
                "faasfuse: Graphviz `dot` not found: wrote {} only",
                d.display()
            );
        }
    }
    report_out(&p, None, json, faasfuse_core::plan::table(&p))
}

pub fn build(a: BuildArgs) -> Result<()> {
    let BuildArgs {
        inputs,
        out_dir,
        lower,
        json,
        tuning,
    } = a;
    let (c, w, prev) = planning_inputs(&inputs)?;
    let exe = std::env::current_exe()?;
    let (p, built) = faasfuse_core::build::build(
        &c,
        &w,
        &inputs.profile[0],
        &tuning.options(),
        prev.as_ref(),
        &out_dir,
        lower.into(),
        Some(&exe),
    )?;
    if json {
        to_stdout(&format!("{}\n", serde_json::to_string_pretty(&built)?))?;
    } else {
        to_stdout(&faasfuse_core::plan::table(&p))?;
        to_stdout("\n")?;
        for i in &built.images {
            to_stdout(&format!(
                "fused {} ({} B): {}\n",
                i.members.join(" + "),
                i.bytes,
                i.path
            ))?;
        }
        to_stdout(&format!("deployment: {}\n", built.config))?;
        to_stdout(&format!(
            "graph: {}\n",
            built.graph_svg.as_deref().unwrap_or(&built.graph_dot)
        ))?;
    }
    Ok(())
}

pub fn verify(a: VerifyArgs) -> Result<()> {
    let VerifyArgs { library, json } = a;
    let exe = std::env::current_exe()?;
    let report = faasfuse_core::verify::verify(&library, Some(&exe))?;
    if json {
        to_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        to_stdout(&report.render())?;
    }
    // A library that fails a check is damaged input, as `merge`
    // would say of it: exit 2 naming it and the first failed check.
    if let Some(c) = report.checks.iter().find(|c| !c.ok) {
        return Err(InputError::new(
            &library,
            format!("verification failed: {}: {}", c.name, c.detail),
        )
        .into());
    }
    Ok(())
}

fn read_inputs(file: &PathBuf, format: InputsFormat) -> Result<Vec<Vec<u8>>> {
    let mut text = Vec::new();
    if file.as_os_str() == "-" {
        // Bounded as a file is: one byte past the limit says it is too large.
        let limit = faasfuse_core::files::MAX_TEXT_BYTES;
        std::io::stdin()
            .take(limit + 1)
            .read_to_end(&mut text)
            .context("reading stdin")?;
        if text.len() as u64 > limit {
            bail!(InputError::new(
                "<stdin>",
                format!("cannot read inputs: more than {limit} bytes")
            ));
        }
    } else {
        text = faasfuse_core::files::read(
            file,
            faasfuse_core::files::MAX_TEXT_BYTES,
            "an inputs file",
        )
        .map_err(|e| InputError::new(file, format!("cannot read inputs: {}", e.reason)))?;
    }
    if format == InputsFormat::Len32 {
        return split_len32(&text).map_err(|(offset, why)| {
            InputError::new(
                file,
                format!("truncated len32 record at byte {offset}: {why}"),
            )
            .into()
        });
    }
    Ok(text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .skip_while(|l| l.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect())
}

/// Split `len32` records; a truncated one gives its byte offset and why.
fn split_len32(mut data: &[u8]) -> std::result::Result<Vec<Vec<u8>>, (usize, String)> {
    let total = data.len();
    let mut out = Vec::new();
    while !data.is_empty() {
        let offset = total - data.len();
        let Some((head, rest)) = data.split_first_chunk::<4>() else {
            return Err((
                offset,
                format!("{} bytes left, a length needs 4", data.len()),
            ));
        };
        let len = u32::from_le_bytes(*head) as usize;
        if rest.len() < len {
            return Err((
                offset,
                format!("length {len} but only {} bytes follow", rest.len()),
            ));
        }
        out.push(rest[..len].to_vec());
        data = &rest[len..];
    }
    Ok(out)
}
