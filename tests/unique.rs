//! What the inputs promised the dynamic linker holds in the fused image:
//! `STB_GNU_UNIQUE` definitions stay unique process-wide (a C++ function's
//! inline statics are the ones its system libraries see), and an image that
//! could not be unloaded (it defines a unique symbol) still cannot be, so
//! exit handlers of other libraries may call into it.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

struct Built {
    dir: PathBuf,
    root: PathBuf,
    callee: PathBuf,
    driver: PathBuf,
}

fn build() -> Built {
    let dir = scratch_dir("unique");
    let data = repo().join("tests/data");
    let inc = repo().join("fixtures/include");
    // The helper stays loaded for the whole process, as libstdc++ does.
    run_ok(
        Command::new("g++")
            .args(["-shared", "-fPIC", "-O2", "-Wl,-z,nodelete", "-I"])
            .arg(&data)
            .arg(data.join("uq_helper.cc"))
            .arg("-o")
            .arg(dir.join("libuqhelper.so")),
    );
    let callee = dir.join("libuqcallee.so");
    run_ok(
        Command::new("g++")
            .args(["-shared", "-fPIC", "-O2", "-I"])
            .arg(&inc)
            .arg("-I")
            .arg(&data)
            .arg(data.join("uq_callee.cc"))
            .arg("-o")
            .arg(&callee)
            .arg(format!("-L{}", dir.display()))
            .arg(format!("-Wl,-rpath,{}", dir.display()))
            .arg("-luqhelper"),
    );
    let root = build_test_lib("uq_root.c", &dir);
    let driver = dir.join("uq_driver");
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-I"])
            .arg(&inc)
            .arg(data.join("uq_driver.c"))
            .arg("-o")
            .arg(&driver)
            .arg("-ldl"),
    );
    Built {
        dir,
        root,
        callee,
        driver,
    }
}

/// Symbol names with `UNIQUE` binding in `readelf --dyn-syms` of `lib`.
fn unique_dynsyms(lib: &Path) -> Vec<String> {
    let text = run_stdout(Command::new("readelf").args(["--dyn-syms", "-W"]).arg(lib));
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some("UNIQUE"))
        .filter(|l| l.split_whitespace().nth(6) != Some("UND"))
        .filter_map(|l| l.split_whitespace().nth(7).map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Load, call, `dlclose`, exit: the driver's whole output and exit status.
fn drive(b: &Built, lib: &Path) -> (String, Option<i32>) {
    let out = Command::new(&b.driver).arg(lib).arg("hi").output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

#[test]
fn unique_symbols_stay_unique_and_the_image_stays_loaded() {
    let b = build();
    let fused = b.dir.join("libuqroot.fused.so");
    run_ok(
        faasfuse()
            .arg("merge")
            .arg(format!("UqRoot={}", b.root.display()))
            .arg(format!("UqCallee={}", b.callee.display()))
            .arg("-o")
            .arg(&fused),
    );

    // The loader sees the callee's unique definitions in the fused image.
    let want = unique_dynsyms(&b.callee);
    assert!(
        want.iter().any(|n| n.contains("Registry")) && want.iter().any(|n| n.contains("Counter")),
        "the compiler made no unique symbols: {want:?}"
    );
    let got = unique_dynsyms(&fused);
    for n in &want {
        assert!(
            got.contains(n),
            "{n} is not a unique export of the fused image: {got:?}"
        );
    }
    let dynamic = run_stdout(Command::new("readelf").arg("-d").arg(&fused));
    assert!(
        dynamic
            .lines()
            .any(|l| l.contains("FLAGS_1") && l.contains("NODELETE")),
        "fused image is not marked NODELETE:\n{dynamic}"
    );

    // Deployed alone the callee shares Registry with its helper library
    // and outlives dlclose; fused, the same.
    let (alone, alone_rc) = drive(&b, &b.callee);
    assert_eq!(alone_rc, Some(0), "{alone}");
    assert!(
        alone.contains("hi: registry shared, hits 1, calls 1"),
        "{alone}"
    );
    assert!(
        alone.contains("unloaded\nUqCallee still mapped at exit"),
        "{alone}"
    );
    let (fused_out, fused_rc) = drive(&b, &fused);
    assert_eq!(
        fused_rc,
        Some(0),
        "fused image crashed at exit: {fused_out}"
    );
    assert_eq!(fused_out, alone);

    // And served by the host, unfused and fused answer alike.
    let inputs = vec!["one".to_string(), "two".to_string()];
    let file = input_file("unique", &inputs);
    let unfused = serve(
        &[
            format!("UqRoot={}", b.root.display()),
            format!("UqCallee={}", b.callee.display()),
        ],
        "UqRoot",
        &file,
        true,
    );
    assert!(
        unfused.contains("two: registry shared, hits 2, calls 2"),
        "{unfused}"
    );
    let fused_run = serve(
        &[format!("UqRoot={}", fused.display())],
        "UqRoot",
        &file,
        true,
    );
    assert_lines_equal(&unfused, &fused_run, &inputs, "unique symbols");
}
