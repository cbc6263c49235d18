//! Each input is opened and parsed once per command, however many
//! stages use it: `build` (the plan's static edges, every group's merge)
//! and `merge --profile` of a perf.data (the profile's image matching, the
//! planner, the merge). The oracle is the kernel's: `strace` counts the
//! `open` calls of each file, and the libraries' `--json` outputs are
//! compared with what each stage would have found alone.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// How many times the traced command opened each of `files`.
fn opens(log: &Path, files: &[PathBuf]) -> Vec<usize> {
    let text = std::fs::read_to_string(log).unwrap();
    files
        .iter()
        .map(|f| {
            let quoted = format!("\"{}\"", f.display());
            text.lines()
                .filter(|l| l.contains("open") && l.contains(&quoted) && !l.contains("= -1"))
                .count()
        })
        .collect()
}

/// `strace -f -e trace=open,openat` of `faasfuse ARGS`, which must succeed.
fn traced(tag: &str, args: &[String]) -> PathBuf {
    require_tool("strace", &["-V"], "strace");
    let log = scratch_dir("load-once").join(format!("{tag}.strace"));
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_faasfuse"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    log
}

#[test]
fn build_opens_each_library_once() {
    let w = workflow("chain");
    let dir = scratch_dir("load-once-build");
    let libs: Vec<PathBuf> = w
        .functions
        .iter()
        .map(|(_, l)| fixtures().join("default").join(l))
        .collect();
    let config: Vec<serde_json::Value> = w
        .functions
        .iter()
        .enumerate()
        .map(|(i, (name, lib))| {
            serde_json::json!({
                "funcName": name, "funcId": i + 1, "minWorkers": 1, "maxWorkers": 4,
                "library": fixtures().join("default").join(lib),
            })
        })
        .collect();
    let config_path = dir.join("func_config.json");
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    // Every edge hot: every library is read by the planner and merged.
    let calls: serde_json::Map<String, serde_json::Value> = [
        ("Parse", "Validate"),
        ("Validate", "Enrich"),
        ("Enrich", "Store"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), serde_json::json!({ *b: 1000 })))
    .collect();
    let weights = dir.join("weights.json");
    std::fs::write(&weights, serde_json::json!({ "calls": calls }).to_string()).unwrap();
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let log = traced(
        "build",
        &[
            "build".into(),
            "--config".into(),
            config_path.display().to_string(),
            "--profile".into(),
            weights.display().to_string(),
            "--out-dir".into(),
            out.display().to_string(),
        ],
    );
    assert!(out.join("func_config.json").exists());
    assert_eq!(opens(&log, &libs), vec![1; libs.len()], "{libs:?}");
}

#[test]
fn merge_with_a_perf_profile_opens_each_library_once() {
    require_tool("perf", &["--version"], "linux-perf");
    let w = workflow("hello");
    let dir = scratch_dir("load-once-merge");
    let deploy = w.deploy_args("default");
    let libs: Vec<PathBuf> = ["libfoo.so", "libbar.so"]
        .iter()
        .map(|l| fixtures().join("default").join(l))
        .collect();
    let inputs = input_file("load-once", &generate_inputs(&w, 50, 7));
    let data = dir.join("perf.data");
    perf_record_run(
        &data,
        &["-e", "cpu-clock:u", "--call-graph", "dwarf"],
        &deploy,
        &w.root,
        &inputs,
        200,
        false,
    );
    let out = dir.join("fused.so");
    let mut args = vec!["merge".to_string()];
    args.extend(deploy.iter().cloned());
    args.extend([
        "--profile".into(),
        data.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ]);
    let log = traced("merge", &args);
    assert!(out.exists());
    assert_eq!(opens(&log, &libs), vec![1, 1], "{libs:?}");
    // The profile too: its first bytes tell a perf.data from text, and the
    // reader goes on from the same open file.
    assert_eq!(
        opens(&log, std::slice::from_ref(&data)),
        vec![1],
        "{data:?}"
    );
}

/// The counter itself sees a second open: `inspect` twice in one shell.
#[test]
fn the_open_count_sees_every_open() {
    let lib = fixtures().join("default/libfoo.so");
    let log = scratch_dir("load-once").join("twice.strace");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat", "-o"])
        .arg(&log)
        .args([
            "sh",
            "-c",
            "\"$0\" inspect \"$1\" >/dev/null && \"$0\" inspect \"$1\" >/dev/null",
        ])
        .arg(env!("CARGO_BIN_EXE_faasfuse"))
        .arg(&lib)
        .output()
        .expect("strace (CI installs it)");
    assert!(o.status.success());
    assert_eq!(opens(&log, &[lib]), vec![2]);
}
