//! `merge --isolate stack`: a fused callee runs on a stack of its own. A
//! spying callee finds nothing of its caller's stack (as when deployed
//! alone), a fault in it fails only its call, exceptions and gdb cross the
//! switch, and benign workflows answer as unfused.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn merge(pairs: &[(&str, &Path)], out: &Path, isolate: &str) {
    let mut cmd = faasfuse();
    cmd.arg("merge");
    for (name, lib) in pairs {
        cmd.arg(format!("{name}={}", lib.display()));
    }
    run_ok(cmd.args(["--isolate", isolate, "-o"]).arg(out));
}

fn run(deploy: &[String], root: &str, inputs: &Path, ipc: bool) -> std::process::Output {
    let mut cmd = faasfuse();
    cmd.arg("run").args(deploy).arg("--inputs").arg(inputs);
    if ipc {
        cmd.arg("--ipc");
    }
    cmd.arg("--").arg(root).output().unwrap()
}

/// The isolation of each image as `inspect` decodes it from the fused
/// table the runtime reads.
fn isolation(image: &Path) -> Vec<(String, String)> {
    let o = run_ok(faasfuse().arg("inspect").arg("--json").arg(image));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["fused_images"]
        .as_array()
        .expect("a fused image lists its images")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["isolation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

struct Libs {
    dir: PathBuf,
}

impl Libs {
    fn new(name: &str) -> Libs {
        Libs {
            dir: scratch_dir(name),
        }
    }
    fn lib(&self, source: &str) -> PathBuf {
        build_test_lib(source, &self.dir)
    }
}

#[test]
fn a_spying_callee_finds_nothing_of_its_callers_stack() {
    let l = Libs::new("isolate-spy");
    let (vault, spy) = (l.lib("iso_vault.c"), l.lib("iso_spy.c"));
    let inputs: Vec<String> = vec!["abc".into(), "second".into()];
    let file = input_file("isolate-spy", &inputs);
    // Deployed alone: Spy in a process of its own.
    let alone = serve(
        &[
            format!("Vault={}", vault.display()),
            format!("Spy={}", spy.display()),
        ],
        "Vault",
        &file,
        true,
    );
    assert_eq!(alone, "rc=0\tstack:none global:none\n".repeat(2));
    for (mode, expect) in [
        // The spy works: fused without isolation it sees both secrets.
        ("none", "stack:found global:found"),
        // Its own stack holds nothing of Vault's; globals stay reachable.
        ("stack", "stack:none global:found"),
    ] {
        let out = l.dir.join(format!("vault-{mode}.so"));
        merge(&[("Vault", &vault), ("Spy", &spy)], &out, mode);
        assert_eq!(
            isolation(&out),
            [
                ("Vault".to_string(), "none".to_string()),
                ("Spy".to_string(), mode.to_string())
            ]
        );
        for ipc in [false, true] {
            let got = serve(&[format!("Vault={}", out.display())], "Vault", &file, ipc);
            assert_eq!(
                got,
                format!("rc=0\t{expect}\n").repeat(2),
                "{mode} ipc={ipc}"
            );
        }
    }
}

#[test]
fn a_fault_in_an_isolated_callee_fails_its_call_and_the_root_serves_on() {
    let l = Libs::new("isolate-crash");
    let (guard, crasher) = (l.lib("iso_guard.c"), l.lib("iso_crasher.c"));
    let isolated = l.dir.join("guard-stack.so");
    merge(
        &[("Guard", &guard), ("Crasher", &crasher)],
        &isolated,
        "stack",
    );
    // Crasher is deployed too: once its image faulted, the host serves it.
    let deploy = [
        format!("Guard={}", isolated.display()),
        format!("Crasher={}", crasher.display()),
    ];
    for (what, first) in [("segv", "bad pointer"), ("overflow", "stack overflow")] {
        let inputs: Vec<String> = vec!["a".into(), what.into(), "b".into()];
        let file = input_file(&format!("isolate-{what}"), &inputs);
        for ipc in [false, true] {
            let o = run(&deploy, "Guard", &file, ipc);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{first}, ipc={ipc}: {err}");
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                "rc=0\trc=0 ok:a\nrc=0\trc=-1 \nrc=0\trc=0 ok:b\n",
                "{first}, ipc={ipc}"
            );
            assert_eq!(
                err.matches("Crasher faulted").count(),
                1,
                "one line per fault: {err}"
            );
        }
    }
    // Without isolation the same fault takes the process down.
    let plain = l.dir.join("guard-none.so");
    merge(&[("Guard", &guard), ("Crasher", &crasher)], &plain, "none");
    let file = input_file("isolate-none-segv", &["a".into(), "segv".into()]);
    let o = run(
        &[format!("Guard={}", plain.display())],
        "Guard",
        &file,
        false,
    );
    assert!(
        !o.status.success(),
        "a fault without isolation must kill the process"
    );
}

#[test]
fn exceptions_inside_and_out_of_an_isolated_cpp_callee() {
    let l = Libs::new("isolate-throw");
    // Thrown and caught inside the callee, on its own stack.
    let (guard, catcher) = (l.lib("iso_guard.c"), l.lib("iso_catcher.cc"));
    let out = l.dir.join("catch-stack.so");
    merge(&[("Guard", &guard), ("Crasher", &catcher)], &out, "stack");
    let file = input_file("isolate-catch", &["xyz".into(), "again".into()]);
    assert_eq!(
        serve(&[format!("Guard={}", out.display())], "Guard", &file, false),
        "rc=0\trc=0 caught inside: bad:xyz\nrc=0\trc=0 caught inside: bad:again\n"
    );
    // Escaping the callee: unwinding crosses the switch back to the root's
    // stack and into its catch.
    let (root, thrower) = (l.lib("throwroot.cc"), l.lib("thrower.cc"));
    let out = l.dir.join("throw-stack.so");
    merge(&[("Root", &root), ("Thrower", &thrower)], &out, "stack");
    let file = input_file(
        "isolate-throw",
        &["hello".into(), "please throw".into(), "again".into()],
    );
    assert_eq!(
        serve(&[format!("Root={}", out.display())], "Root", &file, false),
        "rc=0\trc=0 fine:hello\nrc=0\tcaught: thrown by Thrower on please throw\nrc=0\trc=0 fine:again\n"
    );
}

#[test]
fn gdb_backtrace_from_an_isolated_callee_reaches_the_host() {
    require_tool("gdb", &["--version"], "gdb");
    let l = Libs::new("isolate-gdb");
    let (vault, spy) = (l.lib("iso_vault.c"), l.lib("iso_spy.c"));
    let out = l.dir.join("vault-stack.so");
    merge(&[("Vault", &vault), ("Spy", &spy)], &out, "stack");
    let o = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set breakpoint pending on"])
        .args(["-ex", "break Spy::scan", "-ex", "run", "-ex", "bt"])
        .arg("--args")
        .arg(env!("CARGO_BIN_EXE_faasfuse"))
        .arg("run")
        .arg(format!("Vault={}", out.display()))
        .args(["--", "Vault", "abc"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let bt: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let pos = |needle: &str| bt.iter().position(|l| l.contains(needle));
    // The callee's frames come from its own DWARF, carried into the image.
    let spy = pos("scan (")
        .filter(|&i| bt[i].contains("iso_spy.c"))
        .expect(&text);
    let switch = pos("ff_stack_call").expect(&text);
    let root = pos("iso_vault.c").expect(&text);
    let host = pos("faasfuse_host").expect(&text);
    assert!(spy < switch && switch < root && root < host, "{text}");
    assert!(!text.contains("Backtrace stopped"), "{text}");
}

#[test]
fn workflows_answer_as_unfused_with_every_callee_isolated() {
    for w in workflows() {
        let out = scratch_dir("isolate-workflows").join(format!("{}.so", w.name));
        fuse_workflow(&w, "default", &out, &["--isolate", "stack"]);
        let images = isolation(&out);
        assert_eq!(images[0], (w.root.clone(), "none".to_string()));
        assert!(
            images[1..].iter().all(|(_, i)| i == "stack"),
            "{}: {images:?}",
            w.name
        );
        let inputs = generate_inputs(&w, 30, 0x150);
        let file = input_file(&format!("isolate-{}", w.name), &inputs);
        let unfused = serve(&w.run_args("default"), &w.root, &file, false);
        for ipc in [false, true] {
            let fused = serve(
                &[format!("{}={}", w.root, out.display())],
                &w.root,
                &file,
                ipc,
            );
            assert_lines_equal(&unfused, &fused, &inputs, &format!("{} ipc={ipc}", w.name));
        }
    }
}

#[test]
fn build_isolates_the_functions_its_config_marks() {
    let dir = scratch_dir("isolate-build");
    let lib = fixtures().join("default");
    let weights = dir.join("w.json");
    std::fs::write(
        &weights,
        r#"{"calls": {"Foo": {"Bar": 1000}}, "external": {"Foo": 1000}}"#,
    )
    .unwrap();
    let config = dir.join("func_config.json");
    let c = serde_json::json!([
        {"funcName": "Foo", "funcId": 1, "library": lib.join("libfoo.so"), "entry": true},
        {"funcName": "Bar", "funcId": 2, "library": lib.join("libbar.so"), "isolate": "stack"},
    ]);
    std::fs::write(&config, c.to_string()).unwrap();
    let out = dir.join("out");
    build_deployment(&config, &weights, &out);
    assert_eq!(
        isolation(&out.join("libfoo.fused.so")),
        [
            ("Foo".to_string(), "none".to_string()),
            ("Bar".to_string(), "stack".to_string())
        ]
    );
}
