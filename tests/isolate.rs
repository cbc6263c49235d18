//! `merge --isolate stack`: a fused callee runs on a stack of its own. A
//! spying callee finds nothing of its caller's stack (as when deployed
//! alone), a fault in it fails only its call, exceptions and gdb cross the
//! switch, and benign workflows answer as unfused.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

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
        merge_isolated(&[("Vault", &vault), ("Spy", &spy)], &out, mode);
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
    merge_isolated(
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
    merge_isolated(&[("Guard", &guard), ("Crasher", &crasher)], &plain, "none");
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
    merge_isolated(&[("Guard", &guard), ("Crasher", &catcher)], &out, "stack");
    let file = input_file("isolate-catch", &["xyz".into(), "again".into()]);
    assert_eq!(
        serve(&[format!("Guard={}", out.display())], "Guard", &file, false),
        "rc=0\trc=0 caught inside: bad:xyz\nrc=0\trc=0 caught inside: bad:again\n"
    );
    // Escaping the callee: unwinding crosses the switch back to the root's
    // stack and into its catch.
    let (root, thrower) = (l.lib("throwroot.cc"), l.lib("thrower.cc"));
    let out = l.dir.join("throw-stack.so");
    merge_isolated(&[("Root", &root), ("Thrower", &thrower)], &out, "stack");
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
    merge_isolated(&[("Vault", &vault), ("Spy", &spy)], &out, "stack");
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

/// iso_step.c built once and copied as `lib{name}.so` per name: one
/// library deployed under several names builds any chain of calls (its
/// input is its script, "Relay/Leaf/segv").
fn steps(l: &Libs, names: &[&str]) -> Vec<PathBuf> {
    let step = l.lib("iso_step.c");
    names
        .iter()
        .map(|n| {
            let p = l.dir.join(format!("lib{n}.so"));
            std::fs::copy(&step, &p).unwrap();
            p
        })
        .collect()
}

/// Root with Relay (isolated) and Leaf (not isolated, re-entrant) fused,
/// built from a config that isolates only Relay; and Leaf's library.
fn blame_image(l: &Libs) -> (PathBuf, PathBuf) {
    let libs = steps(l, &["Root", "Relay", "Leaf"]);
    let weights = l.dir.join("w.json");
    let w = r#"{"calls": {"Root": {"Relay": 1000, "Leaf": 1000}, "Relay": {"Leaf": 1000}},
                "external": {"Root": 1000}}"#;
    std::fs::write(&weights, w).unwrap();
    let config = l.dir.join("func_config.json");
    let c = serde_json::json!([
        {"funcName": "Root", "funcId": 1, "library": libs[0], "entry": true},
        {"funcName": "Relay", "funcId": 2, "library": libs[1], "isolate": "stack"},
        {"funcName": "Leaf", "funcId": 3, "library": libs[2], "reentrant": true},
    ]);
    std::fs::write(&config, c.to_string()).unwrap();
    let out = l.dir.join("out");
    build_deployment(&config, &weights, &out);
    let image = out.join("libroot.fused.so");
    let mut got = isolation(&image);
    got.sort();
    assert_eq!(
        got,
        [("Leaf", "none"), ("Relay", "stack"), ("Root", "none")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    (image, libs[2].clone())
}

#[test]
fn the_function_whose_code_faulted_is_retired_and_the_calls_above_it_serve_on() {
    let l = Libs::new("isolate-blame");
    let (image, leaf) = blame_image(&l);
    let deploy = [
        format!("Root={}", image.display()),
        format!("Leaf={}", leaf.display()),
    ];
    let (ok, segv) = ("Relay/Leaf/ok", "Relay/Leaf/segv");
    // In-process, the host serves the retired Leaf on Relay's stack: its
    // fault there retires the host's Leaf worker, not Relay.
    let inputs = [ok, segv, ok, segv, ok, "Relay/ok"];
    let expect = "<<ok>>\n<rc=-1>\n<<ok>>\n<rc=-1>\n<<rc=-1>>\n<ok>\n";
    let file = input_file("isolate-blame", &inputs.map(String::from));
    let o = run(&deploy, "Root", &file, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let lines: String = expect.lines().map(|l| format!("rc=0\t{l}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&o.stdout), lines, "{err}");
    for line in [
        "Leaf faulted (signal 11 at 0x8) on the isolated stack of Relay: Relay's call fails \
         with -1 and the host serves Leaf from now on",
        "a function the host serves (called by Relay) faulted (signal 11 at 0x8) on the \
         isolated stack of Relay",
        "Leaf faulted while the host ran it on a fused image's isolated stack",
    ] {
        assert_eq!(err.matches(line).count(), 1, "{line}: {err}");
    }
    assert!(!err.contains("Relay faulted"), "{err}");
    // Over IPC the host's Leaf runs in a process of its own.
    let inputs = [ok, segv, ok, "Relay/ok"];
    let file = input_file("isolate-blame-ipc", &inputs.map(String::from));
    let o = run(&deploy, "Root", &file, true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "rc=0\t<<ok>>\nrc=0\t<rc=-1>\nrc=0\t<<ok>>\nrc=0\t<ok>\n",
        "{err}"
    );
}

/// iso_driver.c, compiled: loads a fused image as another host would.
fn driver(l: &Libs) -> PathBuf {
    let exe = l.dir.join("iso_driver");
    run_ok(
        Command::new("gcc")
            .args(["-O1", "-I"])
            .arg(repo().join("fixtures/include"))
            .arg(repo().join("tests/data/iso_driver.c"))
            .arg("-o")
            .arg(&exe)
            .arg("-ldl"),
    );
    exe
}

fn drive(exe: &Path, mode: &str, image: &Path, input: &str) -> std::process::Output {
    Command::new(exe)
        .arg(mode)
        .arg(image)
        .arg(input)
        .output()
        .unwrap()
}

#[test]
fn a_fault_abandoning_a_reentered_call_keeps_the_fast_path() {
    let l = Libs::new("isolate-fast");
    let (image, _) = blame_image(&l);
    // Root -> Leaf -> Relay (own stack) -> Leaf again (an extra worker:
    // depths are counted meanwhile), which faults on Relay's stack.
    let o = drive(&driver(&l), "fast", &image, "Leaf/Relay/Leaf/segv");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert_eq!(out, "rc=<<rc=-1>> 0\nfast_count 3 -> 3\n");
}

/// Root and Leaf (isolated) merged with `--isolate stack`.
fn stack_image(l: &Libs) -> PathBuf {
    let libs = steps(l, &["Root", "Leaf"]);
    let out = l.dir.join("root-stack.so");
    merge_isolated(&[("Root", &libs[0]), ("Leaf", &libs[1])], &out, "stack");
    out
}

#[test]
fn a_fault_inside_libc_on_an_isolated_stack_is_not_recovered() {
    use std::os::unix::process::ExitStatusExt;
    let l = Libs::new("isolate-libc");
    let image = stack_image(&l);
    let file = input_file("isolate-libc", &["Leaf/ok".into(), "Leaf/libc".into()]);
    let o = run(&[format!("Root={}", image.display())], "Root", &file, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{err}");
    assert!(err.contains("inside a system library"), "{err}");
    // A fault in the callee's own code still recovers.
    let file = input_file("isolate-own", &["Leaf/segv".into(), "Leaf/ok".into()]);
    let out = serve(&[format!("Root={}", image.display())], "Root", &file, false);
    assert_eq!(out, "rc=0\t<rc=-1>\nrc=0\t<rc=-1>\n");
}

#[test]
fn signals_sent_or_outside_the_stacks_keep_their_previous_action() {
    use std::os::unix::process::ExitStatusExt;
    let l = Libs::new("isolate-signals");
    let (image, exe) = (stack_image(&l), driver(&l));
    // Default action: the process dies by the signal, as without faasfuse.
    let o = drive(&exe, "user-dfl", &image, "");
    assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    // Ignored: a sent SIGSEGV is ignored, and isolation stays on.
    let o = drive(&exe, "user-ign", &image, "Leaf/segv");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "after the first signal\nrc=<rc=-1> 0\nsurvived\n"
    );
    // A handler: run with its mask (SIGUSR1 blocked) and flags
    // (SA_SIGINFO; SA_RESETHAND: the second signal takes the default).
    let o = drive(&exe, "handler", &image, "Leaf/segv");
    assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "own handler: sig=11 code=-6 usr1-blocked=1\nafter the first signal\nrc=<rc=-1> 0\n"
    );
}

#[test]
fn the_image_stays_mapped_for_its_handlers_after_dlclose() {
    let l = Libs::new("isolate-dlclose");
    let (image, exe) = (stack_image(&l), driver(&l));
    let o = drive(&exe, "dlclose", &image, "");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "own handler ran\n");
}

#[test]
fn destroyed_workers_give_their_stacks_back() {
    let l = Libs::new("isolate-churn");
    let (image, exe) = (stack_image(&l), driver(&l));
    let o = drive(&exe, "churn", &image, "");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    let grown: i64 = out.trim().strip_prefix("maps+").unwrap().parse().unwrap();
    assert!(grown < 8, "200 workers made and destroyed: {out}");
}

/// "Odd/Even/Odd/.../ok": `hops` nested calls alternating Odd and Even.
fn chain(hops: usize) -> String {
    let mut s: String = (0..hops)
        .map(|i| if i % 2 == 0 { "Odd/" } else { "Even/" })
        .collect();
    s.push_str("ok");
    s
}

#[test]
fn nesting_depth_counts_host_rpcs_and_fused_calls_alike() {
    let l = Libs::new("isolate-depth");
    let libs = steps(&l, &["Even", "Odd"]);
    let fused = l.dir.join("even.so");
    merge_isolated(&[("Even", &libs[0]), ("Odd", &libs[1])], &fused, "stack");
    // Odd calls Even, busy in its image: the host serves it, and that
    // image's Odd is fused again: host RPCs and fused calls alternate.
    let inputs: Vec<String> = [63, 64, 65, 70].map(chain).to_vec();
    let file = input_file("isolate-depth", &inputs);
    let reentrant = ["--reentrant", "Even", "--reentrant", "Odd"].map(String::from);
    let mut unfused_args = vec![
        format!("Even={}", libs[0].display()),
        format!("Odd={}", libs[1].display()),
    ];
    unfused_args.extend(reentrant.iter().cloned());
    let unfused = serve(&unfused_args, "Even", &file, false);
    let refused = unfused.lines().filter(|l| l.contains("rc=-1")).count();
    assert_eq!(refused, 2, "the host refuses depths above 64: {unfused}");
    let mut fused_args = vec![format!("Even={}", fused.display())];
    fused_args.extend(reentrant[..2].iter().cloned());
    for ipc in [false, true] {
        let got = serve(&fused_args, "Even", &file, ipc);
        assert_lines_equal(&unfused, &got, &inputs, &format!("ipc={ipc}"));
    }
}
