//! Lowering RPC sites (`merge --lower`): at every level the fused root
//! behaves exactly like the unfused deployment, constant-name sites reach
//! tier 2 and the run-time-name transport site tier 1; the guard keeps a
//! site that only looks like an RPC correct; exceptions and debuggers cross
//! lowered sites; the rewritten code is what objdump and inspect show.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const LEVELS: [&str; 3] = ["none", "dispatch", "direct"];

fn out_dir() -> PathBuf {
    scratch_dir("lower-out")
}

/// The tier `level` must give a site whose callee is `callee` (all fixture
/// constant names are fused callees).
fn expected_tier(level: &str, callee: &serde_json::Value) -> u64 {
    match (level, callee["kind"].as_str().unwrap()) {
        ("none", _) => 0,
        ("dispatch", _) | ("direct", "dynamic") => 1,
        _ => 2,
    }
}

#[test]
fn every_level_matches_unfused_on_every_workflow_and_variant() {
    let variants: Vec<String> = variants()
        .into_iter()
        .filter(|v| ["default", "emit-relocs", "cet", "debug"].contains(&v.as_str()))
        .collect();
    assert_eq!(variants.len(), 4, "fixture variants: {variants:?}");
    std::thread::scope(|scope| {
        for v in &variants {
            scope.spawn(move || {
                for w in workflows() {
                    let inputs = generate_inputs(&w, 1000, 0x10e5);
                    let file = input_file(&format!("lower-{}-{v}", w.name), &inputs);
                    let unfused = serve(&w.run_args(v), &w.root, &file, false);
                    for level in LEVELS {
                        let out = out_dir().join(format!("{}-{v}-{level}.so", w.name));
                        let m = fuse_workflow(&w, v, &out, &["--lower", level]);
                        let sites = m["rpc_sites"].as_array().unwrap();
                        assert!(!sites.is_empty());
                        for s in sites {
                            assert_eq!(
                                s["tier"].as_u64().unwrap(),
                                expected_tier(level, &s["callee"]),
                                "{} {v} --lower={level}: {s}",
                                w.name
                            );
                        }
                        let deploy = vec![format!("{}={}", w.root, out.display())];
                        let fused = serve(&deploy, &w.root, &file, false);
                        let what = format!("{} {v} --lower={level}", w.name);
                        assert_lines_equal(&unfused, &fused, &inputs, &what);
                    }
                }
            });
        }
    });
}

#[test]
fn lowered_images_stay_clean_for_elflint_and_verify() {
    for w in workflows() {
        for level in ["dispatch", "direct"] {
            let out = out_dir().join(format!("{}-clean-{level}.so", w.name));
            fuse_workflow(&w, "default", &out, &["--lower", level]);
            assert_elflint_clean(&out);
            run_ok(faasfuse().arg("verify").arg(&out));
        }
    }
}

/// `faasfuse merge NAME=LIB... --lower LEVEL --json -o OUT`: its manifest.
fn merge_lowered(libs: &[(&str, &Path)], level: &str, out: &Path) -> serde_json::Value {
    let m = run_ok(
        faasfuse()
            .arg("merge")
            .args(libs.iter().map(|(n, p)| format!("{n}={}", p.display())))
            .args(["--lower", level, "--json", "-o"])
            .arg(out),
    );
    serde_json::from_slice(&m.stdout).unwrap()
}

/// Fuse the decoy root (one real RPC to Bar, one look-alike local call)
/// with Bar at `level`.
fn fused_decoy(level: &str) -> (PathBuf, PathBuf, serde_json::Value) {
    let dir = scratch_dir("lower-decoy");
    let decoy = build_test_lib("decoy.c", &dir);
    let bar = fixtures().join("default/libbar.so");
    let out = dir.join(format!("decoy-{level}.so"));
    let m = merge_lowered(&[("Decoy", &decoy), ("Bar", &bar)], level, &out);
    (decoy, out, m)
}

#[test]
fn guard_sends_a_look_alike_site_to_its_real_target() {
    let inputs: Vec<String> = ["hello", "fail", "", "a longer input with fail in it", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let file = input_file("decoy", &inputs);
    let bar = fixtures().join("default/libbar.so");
    for level in LEVELS {
        let (decoy, out, m) = fused_decoy(level);
        // Both sites look like RPCs to Bar and both are lowered.
        let sites = m["rpc_sites"].as_array().unwrap();
        assert_eq!(sites.len(), 2, "{m}");
        for s in sites {
            assert_eq!(s["callee"]["name"], "Bar");
            assert_eq!(
                s["tier"].as_u64().unwrap(),
                expected_tier(level, &s["callee"])
            );
        }
        let unfused = serve(
            &[
                format!("Decoy={}", decoy.display()),
                format!("Bar={}", bar.display()),
            ],
            "Decoy",
            &file,
            false,
        );
        assert!(unfused.contains("audit(Bar,5) rc=7"), "{unfused}");
        let fused = serve(&[format!("Decoy={}", out.display())], "Decoy", &file, false);
        assert_lines_equal(&unfused, &fused, &inputs, &format!("decoy --lower={level}"));
    }
}

#[test]
fn exception_from_a_fused_callee_is_caught_across_a_lowered_site() {
    let dir = scratch_dir("lower-throw");
    let root = build_test_lib("throwroot.cc", &dir);
    let callee = build_test_lib("thrower.cc", &dir);
    let inputs: Vec<String> = vec!["hello".into(), "please throw".into(), "again".into()];
    let file = input_file("throw", &inputs);
    for level in LEVELS {
        let out = dir.join(format!("throw-{level}.so"));
        let m = merge_lowered(&[("Root", &root), ("Thrower", &callee)], level, &out);
        let tier = m["rpc_sites"][0]["tier"].as_u64().unwrap();
        assert_eq!(tier, expected_tier(level, &m["rpc_sites"][0]["callee"]));
        let got = serve(&[format!("Root={}", out.display())], "Root", &file, false);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(
            lines,
            [
                "rc=0\trc=0 fine:hello",
                "rc=0\tcaught: thrown by Thrower on please throw",
                "rc=0\trc=0 fine:again",
            ],
            "--lower={level}"
        );
    }
}

#[test]
fn gdb_backtrace_through_a_lowered_site_is_complete() {
    let w = workflow("hello");
    let out = out_dir().join("hello-gdb.so");
    let m = fuse_workflow(&w, "debug", &out, &["--lower", "direct"]);
    assert_eq!(m["rpc_sites"][0]["tier"], 2);
    let deploy = format!("Foo={}", out.display());
    let (text, bt) = gdb_backtrace(
        "Bar::faas_func_call",
        &[
            env!("CARGO_BIN_EXE_faasfuse").as_ref(),
            "run".as_ref(),
            deploy.as_ref(),
            "--".as_ref(),
            "Foo".as_ref(),
            "hello".as_ref(),
        ],
    );
    let pos = |needle: &str| bt.iter().position(|l| l.contains(needle));
    // The callee's frame is named from its own DWARF, carried into the image.
    let callee = pos("bar.c").expect(&text);
    let runtime = pos("faasfuse_rt_call_image").expect(&text);
    let root = pos("Foo::faas_func_call")
        .or_else(|| pos("foo.c"))
        .expect(&text);
    let host = pos("faasfuse_host").expect(&text);
    assert!(callee < runtime && runtime < root && root < host, "{text}");
    assert!(!text.contains("Backtrace stopped"), "{text}");
}

#[test]
fn objdump_and_inspect_show_the_lowered_sites() {
    let w = workflow("hello");
    let out = out_dir().join("hello-objdump.so");
    let m = fuse_workflow(&w, "default", &out, &[]);
    let site = &m["rpc_sites"][0];
    assert_eq!(site["tier"], 2, "--lower defaults to direct");
    let at = site["address"].as_u64().unwrap();
    // The original call, from the input library (the root keeps its
    // addresses).
    let r = run_ok(
        faasfuse()
            .args(["inspect", "--json"])
            .arg(fixtures().join("default/libfoo.so")),
    );
    let input: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let orig = &input["rpc_sites"][0];
    assert_eq!(orig["address"].as_u64(), Some(at), "{orig}");
    let orig_end = at + orig["length"].as_u64().unwrap();
    let o = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-j", ".text"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    // The new call ends where the original indirect call ended.
    let call_at = text
        .lines()
        .find(|l| l.contains("call") && l.contains("<Foo::to_Bar@"))
        .and_then(|l| u64::from_str_radix(l.trim().split(':').next()?, 16).ok())
        .unwrap_or_else(|| panic!("no direct call of the site's stub:\n{text}"));
    assert_eq!(
        call_at + 5,
        orig_end,
        "call at {call_at:#x}, original call {at:#x}..{orig_end:#x}"
    );
    let o = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-j", ".text.faasfuse.rpc"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("<Bar::entry_stub>:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("jmp") && l.contains("<Bar::entry_stub>")),
        "{text}"
    );

    let r = run_ok(faasfuse().arg("inspect").arg("--json").arg(&out));
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    // Lowered sites are direct calls now; the runtime's own calls are not
    // reported as sites.
    assert_eq!(
        report["rpc_sites"].as_array().unwrap().len(),
        0,
        "{}",
        report["rpc_sites"]
    );
    let fused = report["fused_sites"].as_array().expect("fused_sites");
    assert_eq!(fused.len(), 1);
    assert_eq!(fused[0]["tier"], 2);
    assert_eq!(fused[0]["address"], at);
    let r = run_ok(faasfuse().arg("inspect").arg(&out));
    assert!(String::from_utf8_lossy(&r.stdout).contains("tier 2"));
}
