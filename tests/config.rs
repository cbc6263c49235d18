//! The deployment config (nightcore's `func_config.json`) is checked as
//! nightcore checks it, the same in `plan`, `build` and `run --config`:
//! every bad config is refused by all three with exit 2 and one line naming
//! the file, the entry and the field, and `build` writes nothing. nightcore's
//! own gateway is the oracle: it refuses (exits) on each config whose
//! loading faasfuse refuses for nightcore's reasons, and loads the configs
//! faasfuse accepts, `build`'s output included. Worker limits of 0 or less
//! mean no limit, in faasfuse's host as in nightcore.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use faasfuse_testkit::nightcore::{self, ConfigVerdict};
use serde_json::{json, Value};

/// Foo (the entry, calls Bar) and Bar, with nightcore's fields and their
/// libraries.
fn base() -> Value {
    let lib = fixtures().join("default");
    json!([
        {"funcName": "Foo", "funcId": 1, "minWorkers": 1, "maxWorkers": 8,
         "library": lib.join("libfoo.so"), "entry": true},
        {"funcName": "Bar", "funcId": 2, "minWorkers": 1, "maxWorkers": 8,
         "library": lib.join("libbar.so")},
    ])
}

fn write(dir: &Path, tag: &str, v: &Value) -> PathBuf {
    let p = dir.join(format!("{tag}.json"));
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p
}

fn weights(dir: &Path) -> PathBuf {
    let p = dir.join("weights.json");
    std::fs::write(
        &p,
        r#"{"calls": {"Foo": {"Bar": 1000}}, "external": {"Foo": 1000}}"#,
    )
    .unwrap();
    p
}

/// What nightcore's gateway does with a config.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Nightcore {
    /// Its FuncConfig::Load refuses it.
    Refuses,
    /// It loads it (faasfuse refuses it for what nightcore's engine would
    /// do with it).
    Loads,
    /// Not asked (nightcore would convert the value; faasfuse wants an
    /// integer).
    NotAsked,
}

type Mutation = fn(&mut Value);

/// Bad configs: what to change in [`base`], what the message must say,
/// and what nightcore's gateway does with it.
fn bad_configs() -> Vec<(&'static str, Mutation, Vec<&'static str>, Nightcore)> {
    use Nightcore::*;
    vec![
        (
            "duplicate-name",
            |v| v[1]["funcName"] = "Foo".into(),
            vec!["entry 2 (Foo)", "funcName Foo is listed twice"],
            Refuses,
        ),
        (
            "duplicate-id",
            |v| v[1]["funcId"] = 1.into(),
            vec![
                "entry 2 (Bar)",
                "funcId 1 is also the funcId of entry 1 (Foo)",
            ],
            Refuses,
        ),
        (
            "id-0",
            |v| v[1]["funcId"] = 0.into(),
            vec!["entry 2 (Bar)", "funcId 0 is outside 1..=255"],
            Refuses,
        ),
        (
            "id-256",
            |v| v[1]["funcId"] = 256.into(),
            vec!["entry 2 (Bar)", "funcId 256 is outside 1..=255"],
            Refuses,
        ),
        (
            "id-100000",
            |v| v[1]["funcId"] = 100000.into(),
            vec!["entry 2 (Bar)", "funcId 100000 is outside 1..=255"],
            Refuses,
        ),
        (
            "id-negative",
            |v| v[0]["funcId"] = (-3).into(),
            vec!["entry 1 (Foo)", "funcId -3 is outside 1..=255"],
            Refuses,
        ),
        (
            "id-missing",
            |v| {
                v[1].as_object_mut().unwrap().remove("funcId");
            },
            vec!["entry 2 (Bar)", "funcId is missing"],
            Refuses,
        ),
        (
            "id-string",
            |v| v[1]["funcId"] = "2".into(),
            vec!["entry 2 (Bar)", "funcId is a string"],
            Refuses,
        ),
        (
            "id-fraction",
            |v| v[1]["funcId"] = 2.5.into(),
            vec!["entry 2 (Bar)", "funcId is a fractional number"],
            NotAsked,
        ),
        (
            "name-dash",
            |v| v[1]["funcName"] = "Bar-2".into(),
            vec![
                "entry 2 (Bar-2)",
                r#"funcName "Bar-2" is not a name nightcore takes"#,
            ],
            Refuses,
        ),
        (
            "name-space",
            |v| v[0]["funcName"] = "Foo Bar".into(),
            vec!["entry 1 (Foo Bar)", "funcName"],
            Refuses,
        ),
        (
            "name-grpc-dash",
            |v| {
                v[1]["funcName"] = "grpc:bar-svc".into();
                v[1]["grpcMethods"] = json!(["Get"]);
            },
            vec!["entry 2 (grpc:bar-svc)", "funcName"],
            Refuses,
        ),
        (
            "name-missing",
            |v| {
                v[1].as_object_mut().unwrap().remove("funcName");
            },
            vec!["entry 2:", "funcName is missing"],
            Refuses,
        ),
        (
            "name-number",
            |v| v[1]["funcName"] = 7.into(),
            vec!["entry 2:", "funcName is an integer, not a string"],
            Refuses,
        ),
        (
            "not-an-array",
            |v| *v = v[0].clone(),
            vec!["not a function config", "JSON array", "this is an object"],
            Refuses,
        ),
        (
            "entry-not-object",
            |v| v.as_array_mut().unwrap().push(5.into()),
            vec!["entry 3:", "is an integer, not an object"],
            Refuses,
        ),
        (
            "min-over-max",
            |v| {
                v[1]["minWorkers"] = 3.into();
                v[1]["maxWorkers"] = 2.into();
            },
            vec![
                "entry 2 (Bar)",
                "minWorkers 3 exceeds maxWorkers 2",
                "undefined behaviour",
            ],
            Loads,
        ),
        (
            "max-workers-string",
            |v| v[0]["maxWorkers"] = "8".into(),
            vec!["entry 1 (Foo)", "maxWorkers is a string"],
            Refuses,
        ),
        (
            "min-workers-huge",
            |v| v[0]["minWorkers"] = 4294967296u64.into(),
            vec![
                "entry 1 (Foo)",
                "minWorkers 4294967296 does not fit nightcore's 32-bit int",
            ],
            NotAsked,
        ),
        (
            "allow-http-get-string",
            |v| v[1]["allowHttpGet"] = "yes".into(),
            vec!["entry 2 (Bar)", "allowHttpGet is a string"],
            Refuses,
        ),
        (
            "grpc-without-methods",
            |v| v[1]["funcName"] = "grpc:bar.Svc".into(),
            vec!["entry 2 (grpc:bar.Svc)", "grpcMethods is missing"],
            Refuses,
        ),
        (
            "grpc-method-twice",
            |v| {
                v[1]["funcName"] = "grpc:bar.Svc".into();
                v[1]["grpcMethods"] = json!(["Get", "Put", "Get"]);
            },
            vec!["entry 2 (grpc:bar.Svc)", r#"grpcMethods lists "Get" twice"#],
            Refuses,
        ),
        (
            "grpc-65-methods",
            |v| {
                v[1]["funcName"] = "grpc:bar.Svc".into();
                v[1]["grpcMethods"] = (0..65).map(|i| format!("M{i}")).collect();
            },
            vec!["entry 2 (grpc:bar.Svc)", "grpcMethods has 65 methods"],
            Refuses,
        ),
    ]
}

/// Configs faasfuse plans, builds and runs, and nightcore loads.
fn good_configs() -> Vec<(&'static str, Mutation)> {
    vec![
        ("base", |_| {}),
        ("max-workers-0", |v| v[1]["maxWorkers"] = 0.into()),
        ("max-workers-negative", |v| {
            v[1]["maxWorkers"] = (-1).into();
            v[1]["minWorkers"] = (-1).into();
        }),
        // A positive minimum over a maximum of "no limit" is no conflict.
        ("min-over-no-limit", |v| {
            v[0]["minWorkers"] = 3.into();
            v[0]["maxWorkers"] = 0.into();
            v[1]["minWorkers"] = 0.into();
        }),
        ("no-worker-fields", |v| {
            for e in v.as_array_mut().unwrap() {
                let o = e.as_object_mut().unwrap();
                o.remove("minWorkers");
                o.remove("maxWorkers");
            }
        }),
        ("ids-at-the-ends", |v| {
            v[0]["funcId"] = 255.into();
            v[1]["funcId"] = 1.into();
        }),
        ("http-flags", |v| {
            v[1]["allowHttpGet"] = true.into();
            v[1]["qsAsInput"] = false.into();
        }),
    ]
}

/// `faasfuse plan`, `build` and `run --config` on `config`: each exits 2
/// with the same one line, which names the file and holds every needle;
/// `build` leaves no --out-dir behind.
fn refused_by_all_three(dir: &Path, tag: &str, config: &Path, needles: &[&str]) {
    let w = weights(dir);
    let out = dir.join(format!("out-{tag}"));
    let mut lines = Vec::new();
    for (what, mut cmd) in [
        ("plan", {
            let mut c = faasfuse();
            c.arg("plan")
                .arg("--config")
                .arg(config)
                .arg("--profile")
                .arg(&w);
            c
        }),
        ("build", {
            let mut c = faasfuse();
            c.arg("build")
                .arg("--config")
                .arg(config)
                .arg("--profile")
                .arg(&w)
                .arg("--out-dir")
                .arg(&out);
            c
        }),
        ("run", {
            let mut c = faasfuse();
            c.arg("run")
                .arg("--config")
                .arg(config)
                .args(["--ipc", "--", "Foo", "x"]);
            c
        }),
    ] {
        let err = run_refused(&mut cmd);
        assert_eq!(err.trim_end().lines().count(), 1, "{tag}: {what}: {err}");
        assert!(
            err.starts_with(&format!("faasfuse: error: {}: ", config.display())),
            "{tag}: {what}: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{tag}: {what}: no {n:?} in: {err}");
        }
        assert!(!err.contains("panicked"), "{tag}: {what}: {err}");
        lines.push(err);
    }
    assert_eq!(lines[0], lines[1], "{tag}: plan and build say the same");
    assert_eq!(
        lines[0], lines[2],
        "{tag}: plan and run --config say the same"
    );
    assert!(!out.exists(), "{tag}: build wrote {}", out.display());
}

#[test]
fn bad_configs_are_refused_by_plan_build_and_run_alike() {
    let dir = scratch_dir("config-bad");
    for (tag, mutate, needles, _) in bad_configs() {
        let mut v = base();
        mutate(&mut v);
        let config = write(&dir, tag, &v);
        refused_by_all_three(&dir, tag, &config, &needles);
    }
}

#[test]
fn good_configs_plan_build_and_run() {
    let dir = scratch_dir("config-good");
    let w = weights(&dir);
    for (tag, mutate) in good_configs() {
        let mut v = base();
        mutate(&mut v);
        let config = write(&dir, tag, &v);
        run_ok(
            faasfuse()
                .arg("plan")
                .arg("--config")
                .arg(&config)
                .arg("--profile")
                .arg(&w),
        );
        let out = dir.join(format!("out-{tag}"));
        let _ = std::fs::remove_dir_all(&out);
        build_deployment(&config, &w, &out);
        // build keeps nightcore's fields as they were.
        let built: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("func_config.json")).unwrap())
                .unwrap();
        for (b, e) in built.as_array().unwrap().iter().zip(v.as_array().unwrap()) {
            for k in ["funcName", "funcId", "minWorkers", "maxWorkers"] {
                assert_eq!(b.get(k), e.get(k), "{tag}: {k}");
            }
        }
        for c in [config, out.join("func_config.json")] {
            let o = run_stdout(
                faasfuse()
                    .arg("run")
                    .arg("--config")
                    .arg(&c)
                    .args(["--ipc", "--", "Foo", "x"]),
            );
            assert!(o.starts_with("rc=0"), "{tag}: {}: {o}", c.display());
        }
    }
}

/// The `processes` per function that `run --config --ipc --json` reports.
fn processes(config: &Path, root: &str, input: &str) -> Value {
    let o = run_ok(
        faasfuse()
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--ipc", "--json", "--", root, input]),
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["results"][0]["rc"], 0, "{report:#}");
    report["processes"].clone()
}

#[test]
fn worker_limits_of_zero_or_less_mean_no_limit_in_the_host() {
    let dir = scratch_dir("config-limits");
    // minWorkers start up front, also under "no limit"; minWorkers 0 starts
    // none, and the first call to Bar starts one.
    let mut v = base();
    v[0]["minWorkers"] = 3.into();
    v[0]["maxWorkers"] = 0.into();
    v[1]["minWorkers"] = 0.into();
    v[1]["maxWorkers"] = (-1).into();
    let c = write(&dir, "up-front", &v);
    let p = processes(&c, "Foo", "x");
    assert_eq!(p["Foo"], 3, "{p}");
    assert_eq!(p["Bar"], 1, "{p}");
    // R calls itself: four levels need four processes, which maxWorkers 3
    // refuses (tests/host.rs) and "no limit" gives.
    let w = pm_workflow("recurse_static");
    for max in [0, -1] {
        let c = write(
            &dir,
            &format!("recurse-{max}"),
            &json!([{"funcName": "R", "funcId": 1, "minWorkers": 1, "maxWorkers": max,
                     "library": w.lib("R")}]),
        );
        let p = processes(&c, "R", "3");
        assert_eq!(p["R"], 4, "maxWorkers {max}: {p}");
    }
}

#[test]
fn grpc_services_are_checked_as_nightcore_checks_them() {
    use faasfuse_core::plan::config::check_nightcore;
    let path = Path::new("func_config.json");
    let ok = json!([
        {"funcName": "Foo", "funcId": 1},
        {"funcName": "grpc:shop.Cart_v2", "funcId": 2, "grpcMethods": ["Get", "Put"]},
        {"funcName": "grpc:", "funcId": 3, "grpcMethods": (0..64).map(|i| format!("M{i}")).collect::<Vec<_>>()},
    ]);
    check_nightcore(path, &ok).unwrap();
    for (tag, mutate, needles, _) in bad_configs() {
        let mut v = base();
        mutate(&mut v);
        let e = check_nightcore(path, &v).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{tag}: no {n:?} in {e}");
        }
    }
}

// ---- nightcore's gateway as the oracle -----------------------------------

fn verdict(config: &Path) -> ConfigVerdict {
    nightcore::gateway_verdict(
        config,
        &scratch_dir("config-gateway"),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{}: {e:#}", config.display()))
}

#[test]
fn nightcore_s_gateway_refuses_what_faasfuse_refuses_and_loads_what_it_accepts() {
    use faasfuse_core::plan::config::check_nightcore;
    let dir = scratch_dir("config-oracle");
    let mut asked = 0;
    for (tag, mutate, _, nightcore) in bad_configs() {
        let mut v = base();
        mutate(&mut v);
        let config = write(&dir, tag, &v);
        assert!(
            check_nightcore(&config, &v).is_err(),
            "{tag}: faasfuse takes it"
        );
        match (nightcore, verdict(&config)) {
            (Nightcore::Refuses, ConfigVerdict::Refused { status, log }) => {
                assert!(!status.success(), "{tag}: {status}");
                assert!(
                    log.contains("func_config") || log.contains("Check failed"),
                    "{tag}: {log}"
                );
            }
            (Nightcore::Loads, ConfigVerdict::Accepted) | (Nightcore::NotAsked, _) => {}
            (want, got) => panic!("{tag}: nightcore's gateway: {got:?}, expected {want:?}"),
        }
        asked += (nightcore != Nightcore::NotAsked) as usize;
    }
    assert!(asked >= 15);
    // What faasfuse accepts, nightcore loads; and what build writes too.
    let w = weights(&dir);
    for (tag, mutate) in good_configs() {
        let mut v = base();
        mutate(&mut v);
        let config = write(&dir, tag, &v);
        check_nightcore(&config, &v).unwrap();
        assert!(
            matches!(verdict(&config), ConfigVerdict::Accepted),
            "{tag}: nightcore's gateway refuses it"
        );
        let out = dir.join(format!("out-{tag}"));
        let _ = std::fs::remove_dir_all(&out);
        build_deployment(&config, &w, &out);
        assert!(
            matches!(
                verdict(&out.join("func_config.json")),
                ConfigVerdict::Accepted
            ),
            "{tag}: nightcore's gateway refuses build's func_config.json"
        );
    }
}
