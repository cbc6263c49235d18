//! `--profile` takes any profile faasfuse reads (issue 17): the README's
//! `faasfuse merge libfoo.so libbar.so --profile perf.data -o out.so` on a
//! real `perf record --call-graph dwarf` of the fan-out deployment, an LBR
//! perf.data, the `.fdata` and the profile JSON made from it (same fusion
//! decision), a cold callee left out and still served through the host,
//! and nightcore's own func_config.json (no `library` fields) with `--lib`.
//!
//! perf is required: CI installs linux-perf (`.ci/run`); without it these
//! tests fail rather than skip.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn dir() -> PathBuf {
    scratch_dir("profile-input")
}

fn fanout() -> Workflow {
    workflow("fanout")
}

const FANOUT_LIBS: [&str; 4] = [
    "libfrontend.so",
    "libinventory.so",
    "libpricing.so",
    "librecommend.so",
];

/// Requests that price two words each; one in `rare` asks for
/// recommendations (Recommend is a cold callee).
fn requests(n: usize, rare: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i % rare == rare - 1 {
                format!("rec shoes {i}")
            } else {
                format!("red shoes {i}")
            }
        })
        .collect()
}

/// The fan-out libraries copied into `into` (another path than the one
/// profiled: they are matched by build-id).
fn copy_libs(into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    for f in FANOUT_LIBS {
        std::fs::copy(fixtures().join("default").join(f), into.join(f)).unwrap();
    }
}

/// `faasfuse merge libfrontend.so ... --profile PROFILE.. -o OUT.so` run in
/// `cwd`, as typed in the README; (stdout, manifest).
fn merge_as_typed(cwd: &Path, profiles: &[&str], out: &str) -> (String, Value) {
    let mut cmd = faasfuse();
    cmd.current_dir(cwd).arg("merge").args(FANOUT_LIBS);
    for p in profiles {
        cmd.arg("--profile").arg(p);
    }
    cmd.arg("-o")
        .arg(out)
        .arg("--manifest")
        .arg(format!("{out}.json"));
    let o = run_ok(&mut cmd);
    let m = std::fs::read_to_string(cwd.join(format!("{out}.json"))).unwrap();
    (
        String::from_utf8(o.stdout).unwrap(),
        serde_json::from_str(&m).unwrap(),
    )
}

/// The profile's decisions in a manifest: (function, reason).
fn decisions(m: &Value) -> Vec<String> {
    m["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .filter(|n| n.starts_with("profile: "))
        .map(str::to_string)
        .collect()
}

fn fused_names(m: &Value) -> Vec<String> {
    m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Image names in the output's `.symtab`, read by readelf (binutils), not
/// by faasfuse: `Inventory::faas_func_call` for each fused image.
fn symtab_images(so: &Path) -> Vec<String> {
    let symtab = run_stdout(std::process::Command::new("readelf").arg("-sW").arg(so));
    let mut images: Vec<String> = symtab
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter_map(|s| s.strip_suffix("::faas_func_call"))
        .map(str::to_string)
        .collect();
    images.sort();
    images.dedup();
    images
}

/// Serve `inputs` on `deploy` with `run --json`: the report.
fn run_json(deploy: &[String], inputs: &[String], tag: &str) -> Value {
    let file = input_file(tag, inputs);
    let o = run_ok(
        faasfuse()
            .arg("run")
            .args(deploy)
            .arg("--json")
            .arg("--inputs")
            .arg(&file)
            .args(["--", "Frontend"]),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The fused Frontend serves like the unfused deployment; the cold
/// Recommend is still reached, relayed by the host as an RPC, while the
/// hot callees never reach the host.
fn check_fused_serves(fused: &Path, tag: &str) {
    let lib = fixtures().join("default");
    let inputs = requests(40, 4);
    let unfused: Vec<String> = fanout().deploy_args("default");
    let mut deploy = vec![format!("Frontend={}", fused.display())];
    deploy.extend(
        ["Inventory", "Pricing", "Recommend"]
            .iter()
            .zip(&FANOUT_LIBS[1..])
            .map(|(n, f)| format!("{n}={}", lib.join(f).display())),
    );
    let before = run_json(&unfused, &inputs, &format!("{tag}-before"));
    let after = run_json(&deploy, &inputs, &format!("{tag}-after"));
    assert_eq!(before["results"], after["results"], "same outputs");
    let relayed = &after["calls"];
    assert_eq!(relayed["Frontend"]["Recommend"], 10, "{relayed}");
    for hot in ["Inventory", "Pricing"] {
        assert!(
            relayed["Frontend"].get(hot).is_none(),
            "{hot} relayed by the host: {relayed}"
        );
    }
    assert!(
        after["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["output"].as_str().unwrap().contains("rec=")),
        "the cold callee answers"
    );
}

fn assert_frontend_group(m: &Value, stdout: &str, out: &Path) {
    assert_eq!(
        fused_names(m),
        ["frontend", "Inventory", "Pricing", "faasfuse"],
        "{m}"
    );
    let d = decisions(m);
    assert!(
        d.iter()
            .any(|n| n.contains("<- Recommend: not fused: the edge to it is cold")),
        "{d:?}"
    );
    for hot in ["Inventory", "Pricing"] {
        assert!(
            d.iter().any(|n| n.contains(&format!("<- {hot}: fused"))),
            "{d:?}"
        );
    }
    // Printed in text mode too.
    assert!(stdout.contains("Recommend: not fused"), "{stdout}");
    assert_eq!(
        symtab_images(out),
        ["Inventory", "Pricing", "faasfuse", "frontend"]
    );
}

#[test]
fn merge_with_a_perf_data_as_typed_in_the_readme() {
    // A real perf profile: DWARF call chains (no LBR on this CPU).
    let d = dir().join("dwarf");
    copy_libs(&d);
    let data = d.join("perf.data");
    let inputs = input_file("pi-dwarf", &requests(800, 800));
    perf_record_run(
        &data,
        &["-e", "cpu-clock:u", "--call-graph", "dwarf"],
        &fanout().deploy_args("default"),
        "Frontend",
        &inputs,
        // Enough samples on the hot edges that a stray sample or two on
        // Recommend (its first call binds its symbols lazily) stays far
        // below the 1 % cold threshold.
        200,
        false,
    );
    let (stdout, m) = merge_as_typed(&d, &["perf.data"], "libfrontend.fused.so");
    let out = d.join("libfrontend.fused.so");
    assert_frontend_group(&m, &stdout, &out);
    check_fused_serves(&out, "pi-dwarf");

    // perf's pipe format (`perf record -o - > FILE`) reads the same way.
    // It has no build-id table: `--buildid-mmap` puts the build-ids in the
    // mappings, which match the copies in `d` (without them, a mapping
    // matching a library by name alone is refused: tests/containers.rs).
    record_pipe(&d.join("pipe.data"), &inputs, &["--buildid-mmap"]);
    let (stdout, m) = merge_as_typed(&d, &["pipe.data"], "pipe.so");
    assert_frontend_group(&m, &stdout, &d.join("pipe.so"));

    // Without them a pipe has no build-id at all; the files at the
    // recorded paths, here, are the same builds as the copies in `d`,
    // which proves the mappings (as perf reads a build-id a profile lacks).
    record_pipe(&d.join("bare.data"), &inputs, &[]);
    let (stdout, m) = merge_as_typed(&d, &["bare.data"], "bare.so");
    assert_frontend_group(&m, &stdout, &d.join("bare.so"));
}

/// `perf record -o - ... > data` of the fan-out deployment serving
/// `inputs`, with `extra` flags.
fn record_pipe(data: &Path, inputs: &Path, extra: &[&str]) {
    let pipe = std::fs::File::create(data).unwrap();
    run_ok(
        std::process::Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock:u", "--call-graph", "dwarf"])
            .args(extra)
            .args(["-o", "-", "--"])
            .arg(env!("CARGO_BIN_EXE_faasfuse"))
            .arg("run")
            .args(fanout().deploy_args("default"))
            .arg("--inputs")
            .arg(inputs)
            // As many rounds as above: with fewer, a stray sample on
            // Recommend can reach the cold threshold on a loaded machine.
            .args(["--quiet", "--repeat", "200", "--", "Frontend"])
            .stdout(pipe),
    );
}

#[test]
fn lbr_perf_data_fdata_and_json_give_the_same_decision() {
    let d = dir().join("lbr");
    copy_libs(&d);
    // One request in 200 asks for recommendations: 0.5% < --cold 1%.
    let inputs = input_file("pi-lbr", &requests(400, 200));
    record_lbr_run(
        &d.join("perf.data"),
        1,
        None,
        &fanout().deploy_args("default"),
        "Frontend",
        &inputs,
    );
    // The .fdata and profile JSON of the same perf.data, over the same
    // libraries (named as `merge` names them: the root `frontend`).
    run_ok(
        faasfuse()
            .current_dir(&d)
            .args(["profile", "perf.data"])
            .args(FANOUT_LIBS.iter().flat_map(|f| ["--lib", f]))
            .args(["-o", "profile.json", "--fdata-dir", "fdata"]),
    );
    // A name that says nothing: the content says it is the root's.
    std::fs::copy(d.join("fdata/frontend.fdata"), d.join("perf.fdata")).unwrap();

    // BOLT's pre-aggregated text of the root's branches, by build-id.
    let p: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("profile.json")).unwrap()).unwrap();
    let text = preaggregated_branches(&p["images"]["frontend"]);
    std::fs::write(d.join("perf.preagg"), text).unwrap();

    let (stdout, from_perf) = merge_as_typed(&d, &["perf.data"], "a.so");
    assert_frontend_group(&from_perf, &stdout, &d.join("a.so"));
    let mut outputs = vec![std::fs::read(d.join("a.so")).unwrap()];
    for (profiles, out) in [
        (&["perf.fdata"][..], "b.so"),
        (&["frontend=fdata/frontend.fdata"][..], "c.so"),
        (&["profile.json"][..], "d.so"),
        (&["perf.preagg"][..], "f.so"),
        // Callees' .fdata add their own images' counts, no RPC edges.
        (&["perf.fdata", "fdata/Pricing.fdata"][..], "e.so"),
    ] {
        let (_, m) = merge_as_typed(&d, profiles, out);
        assert_eq!(decisions(&m), decisions(&from_perf), "{profiles:?}");
        outputs.push(std::fs::read(d.join(out)).unwrap());
    }
    // Same decision, same inputs: the same bytes.
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    check_fused_serves(&d.join("a.so"), "pi-lbr");
}

#[test]
fn a_profile_of_other_libraries_is_an_error_naming_what_it_maps() {
    let d = dir().join("other");
    let hello = workflow("hello");
    let data = d.join("hello.data");
    std::fs::create_dir_all(&d).unwrap();
    let inputs = input_file("pi-other", &requests(20, 20));
    record_lbr_run(
        &data,
        32,
        None,
        &hello.deploy_args("default"),
        "Foo",
        &inputs,
    );
    let lib = fixtures().join("default");
    let _ = std::fs::remove_file(d.join("x.so"));
    // Merge the fanout libraries with `profile`: refused, its stderr.
    let refused = |profile: &std::ffi::OsStr| {
        run_refused(
            faasfuse()
                .arg("merge")
                .args(FANOUT_LIBS.iter().map(|f| lib.join(f)))
                .arg("--profile")
                .arg(profile)
                .arg("-o")
                .arg(d.join("x.so")),
        )
    };
    let err = refused(data.as_os_str());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for s in [
        "hello.data",
        "maps none of the libraries",
        "libfoo.so",
        "build-id",
    ] {
        assert!(err.contains(s), "missing {s:?}: {err}");
    }
    assert!(!d.join("x.so").exists());
    // An .fdata of no given library, and one given as the wrong function.
    let fdata = d.join("fdata");
    run_ok(
        faasfuse()
            .arg("profile")
            .arg(&data)
            .args(lib_args(&hello))
            .arg("--fdata-dir")
            .arg(&fdata),
    );
    std::fs::copy(fdata.join("Foo.fdata"), d.join("foo-renamed.fdata")).unwrap();
    for (arg, needle) in [
        (
            d.join("foo-renamed.fdata").display().to_string(),
            "cannot tell which library",
        ),
        (
            format!("Inventory={}", fdata.join("Foo.fdata").display()),
            "given as Inventory's profile",
        ),
        (
            format!("Checkout={}", fdata.join("Foo.fdata").display()),
            "Checkout is not among the libraries",
        ),
    ] {
        let err = refused(arg.as_ref());
        assert!(err.contains(needle), "{arg}: {err}");
    }
}

/// nightcore's own func_config.json: Foo and Bar, no `library` fields.
fn nightcore_config() -> PathBuf {
    repo().join("tests/data/nightcore_func_config.json")
}

fn hello_libs() -> Vec<String> {
    let lib = fixtures().join("default");
    vec![
        "--lib".into(),
        format!("Foo={}", lib.join("libfoo.so").display()),
        "--lib".into(),
        format!("Bar={}", lib.join("libbar.so").display()),
    ]
}

#[test]
fn nightcore_func_config_plans_and_builds_with_lib() {
    let d = dir().join("nightcore");
    std::fs::create_dir_all(&d).unwrap();
    let hello = workflow("hello");
    let inputs = generate_inputs(&hello, 30, 0x17);
    let file = input_file("pi-nightcore", &inputs);
    let data = d.join("perf.data");
    record_lbr_run(&data, 32, None, &hello.deploy_args("default"), "Foo", &file);

    // plan: the perf.data is read over the libraries --lib gives.
    let o = run_ok(
        faasfuse()
            .arg("plan")
            .arg("--config")
            .arg(nightcore_config())
            .args(hello_libs())
            .arg("--profile")
            .arg(&data)
            .arg("--json"),
    );
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        plan["groups"][0]["members"],
        serde_json::json!(["Foo", "Bar"])
    );

    // build: the deployment written back keeps nightcore's fields and
    // names each library.
    let out = d.join("fused");
    let _ = std::fs::remove_dir_all(&out);
    run_ok(
        faasfuse()
            .arg("build")
            .arg("--config")
            .arg(nightcore_config())
            .args(hello_libs())
            .arg("--profile")
            .arg(&data)
            .arg("--out-dir")
            .arg(&out),
    );
    let deployed: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("func_config.json")).unwrap())
            .unwrap();
    assert_eq!(deployed[0]["funcName"], "Foo");
    assert_eq!(deployed[0]["funcId"], 1);
    assert_eq!(deployed[0]["maxWorkers"], 8);
    assert_eq!(deployed[0]["library"], "libfoo.fused.so");
    assert!(deployed[1]["library"]
        .as_str()
        .unwrap()
        .ends_with("libbar.so"));

    // run --config with --lib serves the unfused deployment; the built one
    // serves the same outputs.
    let unfused = run_ok(
        faasfuse()
            .arg("run")
            .arg("--config")
            .arg(nightcore_config())
            .args(hello_libs())
            .arg("--inputs")
            .arg(&file)
            .args(["--", "Foo"]),
    );
    let fused = run_ok(
        faasfuse()
            .arg("run")
            .arg("--config")
            .arg(out.join("func_config.json"))
            .arg("--inputs")
            .arg(&file)
            .args(["--", "Foo"]),
    );
    assert_lines_equal(
        &String::from_utf8_lossy(&unfused.stdout),
        &String::from_utf8_lossy(&fused.stdout),
        &inputs,
        "nightcore deployment",
    );
}

#[test]
fn a_function_without_library_or_an_unknown_lib_is_an_error() {
    let lib = fixtures().join("default");
    let w = dir().join("w.json");
    std::fs::create_dir_all(dir()).unwrap();
    std::fs::write(&w, r#"{"calls": {"Foo": {"Bar": 10}}}"#).unwrap();
    let check = |libs: &[String], needles: &[&str]| {
        let err = run_refused(
            faasfuse()
                .arg("plan")
                .arg("--config")
                .arg(nightcore_config())
                .args(libs)
                .arg("--profile")
                .arg(&w),
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for n in needles {
            assert!(err.contains(n), "missing {n:?}: {err}");
        }
    };
    let foo = format!("Foo={}", lib.join("libfoo.so").display());
    check(
        &["--lib".into(), foo.clone()],
        &["nightcore_func_config.json", "function Bar has no library"],
    );
    check(
        &hello_libs()
            .into_iter()
            .chain([
                "--lib".into(),
                format!("Baz={}", lib.join("libbar.so").display()),
            ])
            .collect::<Vec<_>>(),
        &["nightcore_func_config.json", "Baz"],
    );
}

#[test]
fn help_names_every_profile_kind() {
    for cmd in ["plan", "merge"] {
        let o = run_ok(faasfuse().args([cmd, "--help"]));
        let help = String::from_utf8(o.stdout).unwrap();
        for s in ["perf.data", ".fdata", "NAME=FILE", "JSON", "run --json"] {
            assert!(help.contains(s), "{cmd} --help misses {s:?}:\n{help}");
        }
    }
}
