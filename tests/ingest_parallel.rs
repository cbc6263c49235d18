//! Counting samples on several threads gives exactly the profile one
//! thread gives, on a generated profile of realistic diversity (Zipf walks
//! over a branchy synthetic library, several processes) and on the
//! example functions (several libraries).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use faasfuse_core::profile::images::Lib;
use faasfuse_core::profile::ingest::{ingest_perf_threads, Options};

fn ingest(data: &Path, libs: &[Lib], threads: usize) -> faasfuse_core::profile::aggregate::Profile {
    ingest_perf_threads(data, libs, Options::default(), threads)
        .unwrap()
        .0
}

#[test]
fn parallel_counting_equals_serial() {
    let dir = scratch_dir("ingest-parallel");
    // A 0.5 MB library of about fifty thousand branch sites.
    run_ok(
        Command::new("python3")
            .arg(repo().join("benches/gen/biglib.py"))
            .args(["BigA", "-", "0.5"])
            .arg(&dir)
            .arg("branchy"),
    );
    let so = dir.join("libbiga.so");
    run_ok(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-I"])
            .arg(repo().join("fixtures/include"))
            .arg(dir.join("BigA.c"))
            .arg(dir.join("BigA.S"))
            .arg("-o")
            .arg(&so),
    );
    let data = dir.join("diverse.data");
    run_ok(
        testkit()
            .args(["gen-lbr", "--mode", "diverse", "--size-mb", "4"])
            .args(["--processes", "3", "-o"])
            .arg(&data)
            .arg(&so),
    );
    let libs = vec![Lib::load("BigA", &so).unwrap()];
    let serial = ingest(&data, &libs, 1);
    let img = &serial.images["BigA"];
    assert!(
        img.branches.len() > 20_000,
        "{} branches",
        img.branches.len()
    );
    assert!(!img.fallthroughs.is_empty());
    for threads in [2, 3] {
        assert!(ingest(&data, &libs, threads) == serial, "{threads} threads");
    }

    // Several libraries and processes, few distinct branches.
    let d = fixtures().join("default");
    let toy = dir.join("toy.data");
    run_ok(
        testkit()
            .args(["gen-lbr", "--size-mb", "3", "--processes", "3", "-o"])
            .arg(&toy)
            .arg(d.join("libparse.so"))
            .arg(d.join("libvalidate.so")),
    );
    let libs = vec![
        Lib::load("Parse", &d.join("libparse.so")).unwrap(),
        Lib::load("Validate", &d.join("libvalidate.so")).unwrap(),
    ];
    let serial = ingest(&toy, &libs, 1);
    assert!(serial.stats.branches > 0);
    assert!(ingest(&toy, &libs, 4) == serial);
}
