//! The PKRU scan of `merge`: a callee whose code holds a WRPKRU, XRSTOR or
//! XRSTORS byte sequence (in an immediate, as an instruction never run,
//! across two instructions) is refused `--isolate mpk` with exit code 2
//! and a line naming it, the address and the sequence, and accepted under
//! `stack`, where the manifest and `inspect` count it; a root holding one
//! refuses `mpk` for its callee too. Addresses are checked against this
//! test's own scan of the input (tests/common/pkru.rs).

mod common;
use common::pkru::{sequences, Found};
use common::*;

use std::path::{Path, PathBuf};

/// A plant of tests/data/pkru_plant.c: its macro, the sequence, and where
/// it lies among the instructions.
const PLANTS: &[(&str, &str, &str)] = &[
    ("PLANT_WRPKRU", "wrpkru", "inside one instruction"),
    ("PLANT_XRSTOR", "xrstor", "the instruction itself"),
    ("PLANT_XRSTORS", "xrstors", "inside one instruction"),
    ("PLANT_SPAN", "wrpkru", "spanning two instructions"),
];

/// pkru_plant.c built into `dir` with `-D` each of `defines`.
fn plant(dir: &Path, defines: &[&str]) -> PathBuf {
    let flags: Vec<String> = defines.iter().map(|d| format!("-D{d}")).collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    build_test_lib_with("pkru_plant.c", dir, &flags)
}

/// The one sequence of `lib`'s executable pages, by this test's scan.
fn the_sequence(lib: &Path) -> Found {
    let found = sequences(&std::fs::read(lib).unwrap());
    assert_eq!(found.len(), 1, "{}: {found:?}", lib.display());
    found[0]
}

fn merge_cmd(pairs: &[(&str, &Path)], isolate: &str, out: &Path) -> std::process::Command {
    let mut cmd = faasfuse();
    cmd.arg("merge");
    for (name, lib) in pairs {
        cmd.arg(spec(name, lib));
    }
    cmd.args(["--isolate", isolate, "-o"]).arg(out);
    cmd
}

fn inspect_json(lib: &Path) -> serde_json::Value {
    let o = run_ok(faasfuse().arg("inspect").arg("--json").arg(lib));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_callee_holding_a_pkru_sequence_is_refused_mpk_and_accepted_under_stack() {
    for &(define, kind, lies) in PLANTS {
        let dir = scratch_dir(&format!("pkru-{define}"));
        let guard = build_test_lib("iso_guard.c", &dir);
        let callee = plant(&dir, &[define]);
        let seq = the_sequence(&callee);
        assert_eq!(seq.kind, kind, "{define}");
        let pairs = [("Guard", guard.as_path()), ("Crasher", callee.as_path())];

        // mpk: refused, one line naming the file, the address, the sequence.
        let out = dir.join("mpk.so");
        let _ = std::fs::remove_file(&out);
        let err = run_refused(&mut merge_cmd(&pairs, "mpk", &out));
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        for part in [
            callee.display().to_string(),
            "`--isolate mpk` refused for Crasher: its code holds a".into(),
            format!(
                " {} byte sequence at {:#x} ({lies}, in planted",
                kind.to_uppercase(),
                seq.address
            ),
            "it could reopen the protection keys".into(),
        ] {
            assert!(err.contains(&part), "{define}: `{part}` not in: {err}");
        }
        assert!(!out.exists(), "a refused merge leaves no output");

        // stack: fused, the sequence counted where it lies.
        let out = dir.join("stack.so");
        let m = merge_with_manifest(
            pairs.iter().map(|(n, l)| spec(n, l)),
            &out,
            &["--isolate", "stack"],
        );
        let found = m["pkru_sequences"]["unvetted"].as_array().unwrap();
        assert_eq!(found.len(), 1, "{define}: {found:?}");
        assert_eq!(found[0]["holder"], "Crasher");
        assert_eq!(found[0]["sequence"], kind);
        assert_eq!(found[0]["input_address"], seq.address);
        assert!(found[0]["lies"].as_str().unwrap().starts_with(lies));
        // The fused bytes hold it where the manifest says, by this test's
        // scan too; `inspect` finds the same.
        let fused = sequences(&std::fs::read(&out).unwrap());
        let at = found[0]["address"].as_u64().unwrap();
        assert!(fused.contains(&Found { address: at, kind }), "{fused:?}");
        let report = inspect_json(&out);
        let listed = report["pkru_sequences"]["unvetted"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["address"], at);
        assert_eq!(listed[0]["function"], "Crasher::planted");
        // It serves (the plant never runs its sequence).
        let file = input_file(&format!("pkru-{define}"), &["abc".to_string()]);
        let got = serve(&[spec("Guard", &out)], "Guard", &file, false);
        assert_eq!(got, "rc=0\trc=0 ok:abc\n", "{define}");
    }
}

#[test]
fn a_root_holding_a_pkru_sequence_refuses_mpk_for_its_callee() {
    let dir = scratch_dir("pkru-root");
    let root = plant(&dir, &["PLANT_WRPKRU", "CALLS"]);
    let callee = build_test_lib("iso_crasher.c", &dir);
    let seq = the_sequence(&root);
    let pairs = [("Guard", root.as_path()), ("Crasher", callee.as_path())];
    let out = dir.join("mpk.so");
    let _ = std::fs::remove_file(&out);
    let err = run_refused(&mut merge_cmd(&pairs, "mpk", &out));
    for part in [
        root.display().to_string(),
        "`--isolate mpk` refused for Crasher: Guard's code holds a WRPKRU".into(),
        format!("at {:#x}", seq.address),
        "which Crasher could jump to".into(),
    ] {
        assert!(err.contains(&part), "`{part}` not in: {err}");
    }
    assert!(!out.exists());
    // Without mpk it is only counted, and the summary says what mpk would do.
    let o = run_ok(&mut merge_cmd(&pairs, "none", &out));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("1 byte sequence that writes PKRU outside the runtime's gates")
            && text.contains("`--isolate mpk` refuses this group"),
        "{text}"
    );
    // `inspect` of the input lists it before any merge.
    let report = inspect_json(&root);
    assert_eq!(report["pkru_sequences"]["vetted"], 0);
    let listed = report["pkru_sequences"]["unvetted"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["address"], seq.address);
}
