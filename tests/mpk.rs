//! `merge --isolate mpk`: each isolated callee behind a protection key of
//! its own. Everything is prepared on this machine (libraries, fused
//! images, inputs, the unfused answers); the fused images are then served
//! on a machine with protection keys: this one when its CPU has them,
//! else one emulated machine booted once for all of them. A spying callee
//! finds neither its caller's stack nor its data, a callee that forges its
//! I/O record or its way back gets nothing, a crashing callee fails only
//! its call, exceptions inside a callee work, and every workflow
//! answers as unfused with every callee isolated. Where the CPU has no
//! protection keys, an mpk image refuses to start.

mod common;
use common::*;

use faasfuse_testkit::pku::{host_has_pku, Machine};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One `faasfuse run` to make on the machine with protection keys.
struct Case {
    what: String,
    deploy: Vec<String>,
    root: String,
    inputs: PathBuf,
    ipc: bool,
    /// The exact stdout expected.
    expect: String,
    /// The exit status expected (the shell's: 128 + a signal).
    status: u8,
    /// A line stderr must hold exactly once, if any.
    stderr_once: Option<String>,
}

impl Case {
    fn command(&self) -> Vec<String> {
        let mut c = vec![env!("CARGO_BIN_EXE_faasfuse").to_string(), "run".into()];
        c.extend(self.deploy.iter().cloned());
        c.extend(["--inputs".into(), self.inputs.display().to_string()]);
        if self.ipc {
            c.push("--ipc".into());
        }
        c.extend(["--".into(), self.root.clone()]);
        c
    }
}

fn lib(dir: &Path, source: &str) -> PathBuf {
    build_test_lib(source, dir)
}

/// The spy fused under `mode`, served in-process and over IPC.
fn spy_cases(dir: &Path, cases: &mut Vec<Case>) {
    let (vault, spy) = (lib(dir, "iso_vault.c"), lib(dir, "iso_spy.c"));
    let file = input_file("mpk-spy", &["abc".into(), "second".into()]);
    for (mode, expect) in [
        // The control: without a key the spy finds the root's global.
        ("stack", "stack:none global:found"),
        ("mpk", "stack:none global:none"),
    ] {
        let out = dir.join(format!("vault-{mode}.so"));
        merge_isolated(&[("Vault", &vault), ("Spy", &spy)], &out, mode);
        for ipc in [false, true] {
            cases.push(Case {
                what: format!("spy under {mode}, ipc={ipc}"),
                deploy: vec![format!("Vault={}", out.display())],
                root: "Vault".into(),
                inputs: file.clone(),
                ipc,
                expect: format!("rc=0\t{expect}\n").repeat(2),
                stderr_once: None,
                status: 0,
            });
        }
    }
}

/// A callee that tries the runtime's own paths to reach the group's memory
/// (tests/data/mpk_forger.c): its I/O record pointing at a closed page,
/// and a forged way back from its call. Neither gives it anything: the
/// first call fails (its output is out of bounds), the second returns as
/// any call.
fn forger_cases(dir: &Path, cases: &mut Vec<Case>) {
    let (vault, forger) = (lib(dir, "iso_vault.c"), lib(dir, "mpk_forger.c"));
    let out = dir.join("vault-forger-mpk.so");
    merge_isolated(&[("Vault", &vault), ("Spy", &forger)], &out, "mpk");
    let inputs = ["record".into(), "return".into(), "plain".into()];
    cases.push(Case {
        what: "a callee forging its record and its way back".into(),
        deploy: vec![format!("Vault={}", out.display())],
        root: "Vault".into(),
        inputs: input_file("mpk-forger", &inputs),
        ipc: false,
        expect: "rc=-1\t\nrc=0\ttried\nrc=0\ttried\n".into(),
        stderr_once: None,
        status: 0,
    });
}

/// A callee that faults (a bad pointer, a stack overflow) and one that
/// throws and catches inside itself.
fn crash_cases(dir: &Path, cases: &mut Vec<Case>) {
    let (guard, crasher) = (lib(dir, "iso_guard.c"), lib(dir, "iso_crasher.c"));
    let fused = dir.join("guard-mpk.so");
    merge_isolated(&[("Guard", &guard), ("Crasher", &crasher)], &fused, "mpk");
    for what in ["segv", "overflow"] {
        let file = input_file(
            &format!("mpk-{what}"),
            &["a".into(), what.into(), "b".into()],
        );
        for ipc in [false, true] {
            cases.push(Case {
                what: format!("{what}, ipc={ipc}"),
                deploy: vec![
                    format!("Guard={}", fused.display()),
                    format!("Crasher={}", crasher.display()),
                ],
                root: "Guard".into(),
                inputs: file.clone(),
                ipc,
                expect: "rc=0\trc=0 ok:a\nrc=0\trc=-1 \nrc=0\trc=0 ok:b\n".into(),
                stderr_once: Some("Crasher faulted".into()),
                status: 0,
            });
        }
    }
    let catcher = build_test_lib("iso_catcher.cc", dir);
    let fused = dir.join("catch-mpk.so");
    merge_isolated(&[("Guard", &guard), ("Crasher", &catcher)], &fused, "mpk");
    cases.push(Case {
        what: "exception caught inside the callee".into(),
        deploy: vec![format!("Guard={}", fused.display())],
        root: "Guard".into(),
        inputs: input_file("mpk-catch", &["xyz".into(), "again".into()]),
        ipc: false,
        expect: "rc=0\trc=0 caught inside: bad:xyz\nrc=0\trc=0 caught inside: bad:again\n".into(),
        stderr_once: None,
        status: 0,
    });
    // Escaping it: unwinding stops at the gate, and the process ends as an
    // unfused worker's would (std::terminate: SIGABRT, exit status 134).
    let (root, thrower) = (
        build_test_lib("throwroot.cc", dir),
        build_test_lib("thrower.cc", dir),
    );
    let fused = dir.join("throw-mpk.so");
    merge_isolated(&[("Root", &root), ("Thrower", &thrower)], &fused, "mpk");
    cases.push(Case {
        what: "exception escaping the callee".into(),
        deploy: vec![format!("Root={}", fused.display())],
        root: "Root".into(),
        inputs: input_file("mpk-throw", &["please throw".into()]),
        ipc: false,
        expect: String::new(),
        stderr_once: Some("terminate called after throwing".into()),
        status: 134,
    });
}

/// Every workflow with every callee isolated (with `mpk`, or `stack` for a
/// callee with thread-local storage, which `mpk` refuses: checked too),
/// against its unfused answers.
fn workflow_cases(dir: &Path, cases: &mut Vec<Case>) {
    let mut keyed = 0;
    for w in workflows() {
        let out = dir.join(format!("{}.so", w.name));
        let mut extra = vec!["--isolate".to_string(), "mpk".into()];
        for (f, lib) in w.functions.iter().filter(|(f, _)| *f != w.root) {
            if has_tls(&fixtures().join("default").join(lib)) {
                let o = faasfuse()
                    .arg("merge")
                    .args(w.run_args("default"))
                    .args(&extra)
                    .arg("-o")
                    .arg(&out)
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&o.stderr);
                assert_eq!(o.status.code(), Some(2), "{}: {err}", w.name);
                assert!(
                    err.contains(lib.as_str()) && err.contains("thread-local"),
                    "{err}"
                );
                extra.push(format!("--isolate-fn={f}=stack"));
            } else {
                keyed += 1;
            }
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        fuse_workflow(&w, "default", &out, &extra);
        let inputs = generate_inputs(&w, 30, 0x150);
        let file = input_file(&format!("mpk-{}", w.name), &inputs);
        let unfused = serve(&w.run_args("default"), &w.root, &file, false);
        for ipc in [false, true] {
            cases.push(Case {
                what: format!("workflow {} ipc={ipc}", w.name),
                deploy: vec![format!("{}={}", w.root, out.display())],
                root: w.root.clone(),
                inputs: file.clone(),
                ipc,
                expect: unfused.clone(),
                stderr_once: None,
                status: 0,
            });
        }
    }
    assert!(keyed >= 6, "only {keyed} callees behind their own key");
}

/// A shell script that runs every case and marks where each one's output
/// begins, with its exit status.
fn script(cases: &[Case]) -> String {
    let mut s = String::from("OUT=$(mktemp -d)\n");
    for (i, c) in cases.iter().enumerate() {
        let cmd: Vec<String> = c.command().iter().map(|a| format!("'{a}'")).collect();
        writeln!(s, "echo '@@case {i}'").unwrap();
        writeln!(
            s,
            "{} 2>\"$OUT/err{i}\"; echo \"@@status $?\"",
            cmd.join(" ")
        )
        .unwrap();
        writeln!(s, "echo '@@stderr'; cat \"$OUT/err{i}\"").unwrap();
    }
    s
}

/// Per case: (stdout, exit status, stderr), from the script's output.
fn split(out: &str, n: usize) -> Vec<(String, String, String)> {
    let mut got = vec![(String::new(), String::new(), String::new()); n];
    let (mut at, mut part) = (None, 0);
    for line in out.lines() {
        if let Some(i) = line.strip_prefix("@@case ") {
            at = i.parse::<usize>().ok();
            part = 0;
        } else if let Some(s) = line.strip_prefix("@@status ") {
            if let Some(i) = at {
                got[i].1 = s.to_string();
            }
        } else if line == "@@stderr" {
            part = 2;
        } else if let Some(i) = at {
            let slot = if part == 2 {
                &mut got[i].2
            } else {
                &mut got[i].0
            };
            slot.push_str(line);
            slot.push('\n');
        }
    }
    got
}

#[test]
fn mpk_isolates_callees_on_a_machine_with_protection_keys() {
    let dir = scratch_dir("mpk");
    let mut cases = Vec::new();
    spy_cases(&dir, &mut cases);
    forger_cases(&dir, &mut cases);
    crash_cases(&dir, &mut cases);
    workflow_cases(&dir, &mut cases);
    let machine = Machine::get();
    eprintln!("protection keys: {}", machine.where_());
    let o = machine.run(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script(&cases)),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = split(&String::from_utf8_lossy(&o.stdout), cases.len());
    for (c, (stdout, status, stderr)) in cases.iter().zip(&got) {
        assert_eq!(
            status,
            &c.status.to_string(),
            "{}: exit status; stderr:\n{stderr}",
            c.what
        );
        assert_eq!(stdout, &c.expect, "{}; stderr:\n{stderr}", c.what);
        if let Some(line) = &c.stderr_once {
            assert_eq!(
                stderr.matches(line.as_str()).count(),
                1,
                "{}: {stderr}",
                c.what
            );
        }
    }
    eprintln!("{} mpk cases served as expected", cases.len());
}

#[test]
fn without_protection_keys_an_mpk_image_refuses_to_start() {
    let dir = scratch_dir("mpk-refuse");
    let (vault, spy) = (lib(&dir, "iso_vault.c"), lib(&dir, "iso_spy.c"));
    let out = dir.join("vault-mpk.so");
    merge_isolated(&[("Vault", &vault), ("Spy", &spy)], &out, "mpk");
    let file = input_file("mpk-refuse", &["abc".into()]);
    let o = faasfuse()
        .arg("run")
        .arg(format!("Vault={}", out.display()))
        .arg("--inputs")
        .arg(&file)
        .args(["--", "Vault"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if host_has_pku() {
        assert!(o.status.success(), "{err}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "rc=0\tstack:none global:none\n"
        );
    } else {
        // Never served unprotected.
        assert!(!o.status.success());
        assert!(
            err.contains("isolated with mpk, but its protection keys could not be set"),
            "{err}"
        );
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn merge_refuses_mpk_for_a_callee_with_tls_or_that_imports_pkey_functions() {
    let dir = scratch_dir("mpk-refused");
    let guard = lib(&dir, "iso_guard.c");
    for (source, why) in [
        ("mpk_tls.c", "has thread-local storage"),
        ("mpk_pkey.c", "imports pkey_set"),
    ] {
        let callee = lib(&dir, source);
        let out = dir.join(format!("{source}-mpk.so"));
        let _ = std::fs::remove_file(&out);
        let o = faasfuse()
            .arg("merge")
            .arg(format!("Guard={}", guard.display()))
            .arg(format!("Crasher={}", callee.display()))
            .args(["--isolate", "mpk", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{source}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(why) && err.contains(source.trim_end_matches(".c")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists());
        // `stack` takes it.
        merge_isolated(
            &[("Guard", &guard), ("Crasher", &callee)],
            &dir.join(format!("{source}-stack.so")),
            "stack",
        );
    }
}
