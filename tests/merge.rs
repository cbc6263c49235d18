//! `faasfuse merge`: a fused root deployed alone behaves exactly like the
//! unfused deployment, in-process and over IPC, on every workflow and
//! variant; the output is a clean, deterministic ELF shared object.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn out_dir() -> PathBuf {
    scratch_dir("merge-out")
}

fn fuse(w: &Workflow, variant: &str, out: &Path) -> serde_json::Value {
    fuse_workflow(w, variant, out, &[])
}

fn compare(w: &Workflow, variant: &str, n: usize, ipc_too: bool) {
    let out = out_dir().join(format!("{}-{variant}.fused.so", w.name));
    let manifest = fuse(w, variant, &out);
    assert_eq!(manifest["root"], w.root.as_str());
    let inputs = generate_inputs(w, n, 0x5eed);
    let file = input_file(&format!("merge-{}-{variant}", w.name), &inputs);
    let unfused = serve(&w.run_args(variant), &w.root, &file, false);
    let fused_deploy = vec![format!("{}={}", w.root, out.display())];
    let fused = serve(&fused_deploy, &w.root, &file, false);
    assert_lines_equal(
        &unfused,
        &fused,
        &inputs,
        &format!("{} {variant} in-process", w.name),
    );
    if ipc_too {
        let fused_ipc = serve(&fused_deploy, &w.root, &file, true);
        assert_lines_equal(
            &unfused,
            &fused_ipc,
            &inputs,
            &format!("{} {variant} ipc", w.name),
        );
    }
    let ok = unfused.lines().filter(|l| l.starts_with("rc=0\t")).count();
    assert!(
        ok > 0 && ok < inputs.len(),
        "{}: both success and error paths",
        w.name
    );
}

#[test]
fn fused_root_alone_matches_unfused_deployment_on_every_workflow() {
    for w in workflows() {
        compare(&w, "default", 1000, true);
    }
}

#[test]
fn fused_variants_match_unfused_deployment() {
    for v in variants().iter().filter(|v| *v != "default") {
        for w in workflows() {
            compare(&w, v, 300, false);
        }
    }
}

#[test]
fn output_is_clean_for_elf_tools_and_verify() {
    for v in variants() {
        for w in workflows() {
            let out = out_dir().join(format!("{}-{v}-tools.so", w.name));
            fuse(&w, &v, &out);
            assert_elflint_clean(&out);
            let o = run_ok(Command::new("readelf").args(["-W", "-a"]).arg(&out));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.trim().is_empty(),
                "readelf warnings on {}: {err}",
                out.display()
            );
            run_ok(faasfuse().arg("verify").arg(&out));
            let r = run_ok(faasfuse().arg("inspect").arg("--json").arg(&out));
            let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
            assert_eq!(report["entry_points"].as_array().unwrap().len(), 4);
        }
    }
}

#[test]
fn output_is_deterministic_and_atomic() {
    let w = &workflows()[0];
    let a = out_dir().join("det-a.so");
    let b = out_dir().join("det-b.so");
    fuse(w, "default", &a);
    fuse(w, "default", &b);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // A failing merge leaves no output and no temporary file behind.
    let dir = out_dir().join("atomic");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("never.so");
    let lib = fixtures().join("default/libbar.so");
    let bad = fixtures().join("bad/libnofunc.so");
    let o = faasfuse()
        .arg("merge")
        .arg(&lib)
        .arg(&bad)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn unreachable_input_is_an_error_naming_it() {
    let w = workflow("hello");
    let other = workflow("chain");
    let foreign = fixtures().join("default").join(&other.functions[0].1);
    let mut args = w.deploy_args("default");
    args.push(foreign.display().to_string());
    let out = out_dir().join("unreachable.so");
    let err = run_refused(faasfuse().arg("merge").args(&args).arg("-o").arg(&out));
    assert!(err.contains(&foreign.display().to_string()), "{err}");
    assert!(!out.exists());
}

#[test]
fn calls_to_functions_left_out_still_reach_the_host() {
    // Fuse the root with only some of its callees; the rest stay deployed.
    for w in workflows().iter().filter(|w| w.functions.len() > 2) {
        let mut fns = w.functions.clone();
        fns.sort_by_key(|(n, _)| n != &w.root);
        let dir = fixtures().join("default");
        let fused_set: Vec<String> = fns[..2]
            .iter()
            .map(|(n, l)| format!("{n}={}", dir.join(l).display()))
            .collect();
        let out = out_dir().join(format!("{}-partial.so", w.name));
        let o = faasfuse()
            .arg("merge")
            .args(&fused_set)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        if !o.status.success() {
            // The second function is not called by the root directly.
            continue;
        }
        let mut deploy = vec![format!("{}={}", w.root, out.display())];
        deploy.extend(
            fns[2..]
                .iter()
                .map(|(n, l)| format!("{n}={}", dir.join(l).display())),
        );
        let inputs = generate_inputs(w, 200, 7);
        let file = input_file(&format!("partial-{}", w.name), &inputs);
        let unfused = serve(&w.deploy_args("default"), &w.root, &file, false);
        let partial = serve(&deploy, &w.root, &file, true);
        assert_lines_equal(&unfused, &partial, &inputs, &format!("{} partial", w.name));
    }
}

/// A root built with compressed DWARF (`-g -gz=zlib`), fused with a callee
/// that has none, keeps its debug info as it was: every section keeps
/// `SHF_COMPRESSED` and its alignment, so `readelf` decodes it without
/// complaint and `addr2line` names the same function, file and line at
/// every function of the root. (Callees' compressed DWARF: tests/debuginfo.rs.)
#[test]
fn compressed_debug_info_of_the_root_stays_readable() {
    require_tool("addr2line", &["--version"], "binutils");
    let dir = scratch_dir("merge-gz");
    // Only the root has debug info: its sections are carried as they are.
    let foo = build_example(&dir, "foo", &["-g", "-gz=zlib"]);
    let bar = build_example(&dir, "bar", &[]);
    let fused = dir.join("fused.so");
    run_ok(
        faasfuse()
            .arg("merge")
            .arg(format!("Foo={}", foo.display()))
            .arg(format!("Bar={}", bar.display()))
            .arg("-o")
            .arg(&fused),
    );
    let readelf = run_ok(
        Command::new("readelf")
            .args(["--debug-dump=info,line,str"])
            .arg(&fused),
    );
    let complaints = String::from_utf8_lossy(&readelf.stderr);
    assert!(
        complaints.trim().is_empty(),
        "readelf on the fused image: {complaints}"
    );
    let headers = run_stdout(Command::new("readelf").args(["-S", "-W"]).arg(&fused));
    let info = headers
        .lines()
        .find(|l| l.contains(" .debug_info "))
        .unwrap_or_else(|| panic!("no .debug_info:\n{headers}"));
    assert!(
        info.split_whitespace().any(|w| w == "C"),
        "the root's compressed .debug_info is not marked compressed: {info}"
    );
    let data = std::fs::read(&foo).unwrap();
    let file = object::File::parse(&*data).unwrap();
    use object::{Object, ObjectSymbol};
    let addrs: Vec<String> = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .map(|s| format!("{:#x}", s.address()))
        .collect();
    assert!(addrs.len() >= 4, "root functions: {addrs:?}");
    let lines = |lib: &Path| {
        let o = run_ok(
            Command::new("addr2line")
                .args(["-f", "-e"])
                .arg(lib)
                .args(&addrs),
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let before = lines(&foo);
    assert!(!before.contains("??"), "input: {before}");
    assert_eq!(lines(&fused), before);
}
