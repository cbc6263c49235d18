//! Fused-image lifecycle and tooling: initializers and `faas_init` run once,
//! callees first; finalizers run when the inputs would run them (at exit
//! when one input could never be unloaded); thread-local data
//! of two images works from several threads; exceptions inside a fused
//! callee are caught; gdb, perf and valgrind see a well-formed image.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Built {
    dir: PathBuf,
    fused: PathBuf,
    driver: PathBuf,
    deploy: Vec<String>,
}

/// Build the lifecycle test libraries, the driver, and their fused image.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let data = repo().join("tests/data");
        let inc = repo().join("fixtures/include");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lifecycle");
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("libtraceroot.so");
        let callee = dir.join("libtracecallee.so");
        run_ok(
            Command::new("gcc")
                .args(["-shared", "-fPIC", "-O2", "-g"])
                .arg("-I")
                .arg(&inc)
                .arg(data.join("traceroot.c"))
                .arg("-o")
                .arg(&root),
        );
        run_ok(
            Command::new("g++")
                .args(["-shared", "-fPIC", "-O2"])
                .arg("-I")
                .arg(&inc)
                .arg(data.join("tracecallee.cc"))
                .arg("-o")
                .arg(&callee),
        );
        let driver = dir.join("driver");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-pthread"])
                .arg("-I")
                .arg(&inc)
                .arg(data.join("driver.c"))
                .arg("-o")
                .arg(&driver)
                .arg("-ldl"),
        );
        let deploy = vec![
            format!("TraceRoot={}", root.display()),
            format!("TraceCallee={}", callee.display()),
        ];
        let fused = dir.join("libtraceroot.fused.so");
        run_ok(faasfuse().arg("merge").args(&deploy).arg("-o").arg(&fused));
        Built {
            dir,
            fused,
            driver,
            deploy,
        }
    })
}

fn drive(lib: &Path, threads: u32, calls: u32, input: &str, trace: &Path) -> String {
    let _ = std::fs::remove_file(trace);
    run_stdout(
        Command::new(&built().driver)
            .arg(lib)
            .arg(threads.to_string())
            .arg(calls.to_string())
            .arg(input)
            .env("FAASFUSE_TRACE", trace),
    )
}

fn trace_of(lib: &Path, name: &str) -> Vec<String> {
    let trace = built().dir.join(name);
    drive(lib, 1, 1, "abc", &trace);
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether `lib`, loaded alone, stays mapped after `dlclose` (its
/// finalizers run at exit): the dynamic linker never unloads an object
/// whose `STB_GNU_UNIQUE` definition it bound.
fn stays_loaded(lib: &Path, name: &str) -> bool {
    let t = trace_of(lib, name);
    let pos = |l: &str| t.iter().position(|x| x.starts_with(l)).unwrap();
    pos("dtor") > pos("exit")
}

#[test]
fn initializers_run_once_callees_first_and_finalizers_as_the_inputs_promised() {
    let b = built();
    // The oracle: each input library loaded alone by the same driver.
    let inputs: Vec<PathBuf> = b
        .deploy
        .iter()
        .map(|d| PathBuf::from(d.split_once('=').unwrap().1))
        .collect();
    let stays = inputs
        .iter()
        .enumerate()
        .any(|(i, l)| stays_loaded(l, &format!("trace-alone-{i}.txt")));
    // The C++ callee defines std::to_string's unique digit table.
    assert!(stays, "no input stays loaded: the test lost its C++ callee");
    let lines = trace_of(&b.fused, "trace-order.txt");
    assert_eq!(
        lines[..5],
        [
            "ctor callee",
            "ctor root",
            "init callee",
            "init root",
            "dlclose"
        ],
        "lifecycle order"
    );
    // One input promised never to be unloaded, so the fused image is not:
    // every finalizer runs at exit, none at dlclose.
    assert_eq!(lines[5], "exit", "finalizers ran at dlclose: {lines:?}");
    let mut dtors = lines[6..].to_vec();
    dtors.sort();
    assert_eq!(dtors, ["dtor callee", "dtor root"], "{lines:?}");
}

#[test]
fn thread_local_data_of_two_images_from_several_threads() {
    let b = built();
    let out = drive(&b.fused, 4, 7, "abcd", &b.dir.join("trace-tls.txt"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4);
    for l in lines {
        // Each image's own counter and its own `helper`/`g_state`.
        assert_eq!(l, "root calls=7 helper=1 callee calls=7 helper=20 len=4");
    }
}

#[test]
fn exceptions_inside_a_fused_callee_are_caught() {
    let b = built();
    let out = drive(&b.fused, 1, 1, "xyz", &b.dir.join("trace-exc.txt"));
    assert!(out.contains("caught=bad input: xyz"), "{out}");
}

#[test]
fn fused_image_matches_unfused_on_the_host() {
    let b = built();
    let inputs = ["abc", "xyz", "", "hello world"];
    let serve = |deploy: &[String]| {
        let o = run_ok(
            faasfuse()
                .arg("run")
                .args(deploy)
                .arg("--")
                .arg("TraceRoot")
                .args(inputs),
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let fused = [format!("TraceRoot={}", b.fused.display())];
    assert_eq!(serve(&b.deploy), serve(&fused));
}

#[test]
fn gdb_backtrace_from_a_fused_callee_reaches_the_root() {
    let b = built();
    let (text, bt) = gdb_backtrace(
        "TraceCallee::faas_func_call",
        &[
            b.driver.as_os_str(),
            b.fused.as_os_str(),
            "1".as_ref(),
            "1".as_ref(),
            "abc".as_ref(),
        ],
    );
    let pos = |needle: &str| bt.iter().position(|l| l.contains(needle));
    let callee = pos("TraceCallee::faas_func_call").expect(&text);
    // The root keeps its debug info, so gdb may name its frame from DWARF.
    let root = pos("TraceRoot::faas_func_call")
        .or_else(|| pos("traceroot.c"))
        .expect(&text);
    let serve = pos("serve").expect(&text);
    assert!(callee < root && root < serve, "{text}");
}

#[test]
fn perf_attributes_samples_to_fused_function_names() {
    let b = built();
    let data = b.dir.join("perf.data");
    let rec = Command::new("perf")
        .args(["record", "-q", "-g", "-F", "5000", "-o"])
        .arg(&data)
        .arg("--")
        .arg(&b.driver)
        .arg(&b.fused)
        .args(["1", "200000", "abc"])
        .output();
    let rec = rec.unwrap_or_else(|e| panic!("perf is not installed (Debian linux-perf): {e}"));
    assert!(
        rec.status.success(),
        "perf record fails here: {}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let rep = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", "sym", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rep.stdout);
    assert!(text.contains("TraceCallee::"), "{text}");
    assert!(text.contains("TraceRoot::"), "{text}");
}

#[test]
fn valgrind_finds_no_errors_in_a_fused_run() {
    require_tool("valgrind", &["--version"], "valgrind");
    let b = built();
    run_ok(
        Command::new("valgrind")
            .args(["-q", "--error-exitcode=1"])
            .arg(env!("CARGO_BIN_EXE_faasfuse"))
            .arg("run")
            .arg(format!("TraceRoot={}", b.fused.display()))
            .args(["--", "TraceRoot", "abc", "xyz", ""]),
    );
}
