//! A command's outputs appear together or not at all: a failing `build`
//! leaves `--out-dir` as it was (absent, or holding the previous
//! deployment byte for byte), `build --out-dir` on a file is refused, and
//! two outputs of one command that name one file (by another spelling, a
//! symbolic link to the directory, a hard link, or the DOT file `plan`
//! writes beside `--svg`) are refused with exit 2 before anything is
//! written, as are outputs `merge`, `plan` and `profile` could not all
//! write.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Every file under `dir` (none when it is absent): name -> bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.map(|e| {
        let e = e.unwrap();
        (
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        )
    })
    .collect()
}

/// Hidden entries (staging leftovers) in `dir`.
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn refused(args: &[&OsStr], needles: &[&str]) -> String {
    // An output that cannot be written exits 3; a refused one 2.
    let want = if needles.iter().any(|n| n.contains("cannot write output")) {
        3
    } else {
        2
    };
    let o = faasfuse().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(want), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: no {n:?} in: {err}");
    }
    err
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Two groups: Frontend (+ Inventory, Pricing) first, then Foo (+ Bar),
/// whose image may have at most `foo_budget` bytes.
fn two_groups(dir: &Path, foo_budget: u64) -> (PathBuf, PathBuf) {
    let lib = fixtures().join("default");
    let c = serde_json::json!([
        {"funcName": "Frontend", "funcId": 1, "library": lib.join("libfrontend.so"), "entry": true},
        {"funcName": "Inventory", "funcId": 2, "library": lib.join("libinventory.so")},
        {"funcName": "Pricing", "funcId": 3, "library": lib.join("libpricing.so")},
        {"funcName": "Recommend", "funcId": 4, "library": lib.join("librecommend.so")},
        {"funcName": "Foo", "funcId": 5, "library": lib.join("libfoo.so"), "entry": true,
         "maxImageBytes": foo_budget},
        {"funcName": "Bar", "funcId": 6, "library": lib.join("libbar.so")},
    ]);
    let config = dir.join(format!("config-{foo_budget}.json"));
    std::fs::write(&config, c.to_string()).unwrap();
    let w = dir.join("weights.json");
    std::fs::write(
        &w,
        r#"{"calls": {"Foo": {"Bar": 1000}, "Frontend": {"Inventory": 1000, "Pricing": 1000}},
            "external": {"Foo": 1000, "Frontend": 1000}}"#,
    )
    .unwrap();
    (config, w)
}

/// The size of Foo + Bar fused, as `build` fuses it.
fn foo_bar_bytes(dir: &Path) -> u64 {
    let lib = fixtures().join("default");
    let probe = dir.join("probe.so");
    run_ok(
        faasfuse()
            .arg("merge")
            .arg(format!("Foo={}", lib.join("libfoo.so").display()))
            .arg(format!("Bar={}", lib.join("libbar.so").display()))
            .arg("-o")
            .arg(&probe),
    );
    std::fs::metadata(&probe).unwrap().len()
}

fn build(config: &Path, w: &Path, out: &Path) -> std::process::Output {
    build_with(config, w, out, &[])
}

fn build_with(config: &Path, w: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    faasfuse()
        .arg("build")
        .args(extra)
        .arg("--config")
        .arg(config)
        .arg("--profile")
        .arg(w)
        .arg("--out-dir")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_failing_build_leaves_the_out_dir_as_it_was() {
    let dir = scratch_dir("outputs-build");
    let real = foo_bar_bytes(&dir);
    let (tight, w) = two_groups(&dir, real - 1);
    let (roomy, _) = two_groups(&dir, real);
    let parent = dir.join("deployments");
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();

    // The first group fuses, the second is over its budget: no --out-dir.
    for out in [parent.join("fused"), parent.join("new/deeper/fused")] {
        let o = build(&tight, &w, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("over its maxImageBytes"), "{err}");
        assert!(
            !out.exists(),
            "{} written by a failing build",
            out.display()
        );
    }
    assert!(!parent.join("new").exists());
    assert_eq!(hidden(&parent), Vec::<String>::new());

    // A deployment in place stays byte for byte, with nothing added (one
    // lowered otherwise, so that no image of the failing build equals it).
    let out = parent.join("fused");
    let o = build_with(&roomy, &w, &out, &["--lower", "none"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = snapshot(&out);
    for f in [
        "libfrontend.fused.so",
        "libfoo.fused.so",
        "func_config.json",
        "launch.sh",
    ] {
        assert!(before.contains_key(f), "{f}: {:?}", before.keys());
    }
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&out);
    let o = build(&tight, &w, &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        snapshot(&out) == before,
        "a failing build changed {}",
        out.display()
    );
    assert_eq!(hidden(&out), Vec::<String>::new());
    assert_eq!(hidden(&parent), Vec::<String>::new());

    // A successful build into it replaces the deployment, keeps the rest,
    // and its config serves requests from where it points.
    let o = build(&roomy, &w, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    let r = run_stdout(
        faasfuse()
            .arg("run")
            .arg("--config")
            .arg(out.join("func_config.json"))
            .args(["--", "Foo", "x"]),
    );
    assert!(r.starts_with("rc=0"), "{r}");
    assert_eq!(hidden(&out), Vec::<String>::new());
}

#[test]
fn build_out_dir_that_is_a_file_is_refused() {
    let dir = scratch_dir("outputs-build-file");
    let (config, w) = two_groups(&dir, 1 << 30);
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "keep").unwrap();
    // The file itself, and a directory under it.
    let under = file.join("fused");
    for (out, says) in [
        (
            &file,
            "the output directory is a regular file, not a directory",
        ),
        (&under, "is a regular file"),
    ] {
        refused(
            &[
                os("build"),
                os("--config"),
                config.as_os_str(),
                os("--profile"),
                w.as_os_str(),
                os("--out-dir"),
                out.as_os_str(),
            ],
            &[&out.display().to_string(), says],
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

#[test]
fn two_outputs_naming_one_file_are_refused_before_anything_is_written() {
    let d = scratch_dir("outputs-same");
    let lib = fixtures().join("default");
    let foo = lib.join("libfoo.so");
    let bar = lib.join("libbar.so");
    let x = d.join("x.so");
    let _ = std::fs::remove_file(&x);
    let sub = d.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let link = d.join("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&d, &link).unwrap();
    let merge = |o: &Path, m: &Path, needles: &[&str]| {
        refused(
            &[
                os("merge"),
                foo.as_os_str(),
                bar.as_os_str(),
                os("-o"),
                o.as_os_str(),
                os("--manifest"),
                m.as_os_str(),
            ],
            needles,
        );
    };
    let same = "-o and --manifest name the same file";
    // The same name, another spelling, the directory through a link.
    merge(&x, &x, &[same]);
    merge(&x, &sub.join("..").join("x.so"), &[same]);
    merge(&x, &link.join("x.so"), &[same]);
    assert!(!x.exists());
    // An existing file and a hard link to it: neither changes.
    std::fs::write(&x, "old").unwrap();
    let hard = sub.join("hard.json");
    let _ = std::fs::remove_file(&hard);
    std::fs::hard_link(&x, &hard).unwrap();
    merge(&x, &hard, &[same]);
    assert_eq!(std::fs::read(&x).unwrap(), b"old");
    std::fs::remove_file(&x).unwrap();
    std::fs::remove_file(&hard).unwrap();
    // A manifest that cannot be written: no image either.
    merge(
        &x,
        &d.join("no-such-dir/m.json"),
        &["no-such-dir/m.json", "cannot write output"],
    );
    assert!(!x.exists());

    // plan: -o, --dot, --svg and the DOT file beside --svg.
    let (config, w) = two_groups(&d, 1 << 30);
    let plan = |args: &[&Path], flags: &[&str], needles: &[&str]| {
        let mut a: Vec<&OsStr> = vec![
            os("plan"),
            os("--config"),
            config.as_os_str(),
            os("--profile"),
            w.as_os_str(),
        ];
        for (f, p) in flags.iter().zip(args) {
            a.push(os(f));
            a.push(p.as_os_str());
        }
        refused(&a, needles);
        for p in args {
            assert!(!p.exists(), "{} written", p.display());
        }
    };
    let p = d.join("p.json");
    let g = d.join("g.dot");
    plan(
        &[&p, &p],
        &["-o", "--dot"],
        &["-o and --dot name the same file"],
    );
    plan(
        &[&p, &p],
        &["-o", "--svg"],
        &["-o and --svg name the same file"],
    );
    plan(
        &[&g, &g],
        &["--dot", "--svg"],
        &["--dot and --svg name the same file"],
    );
    plan(
        &[&g],
        &["--svg"],
        &["the DOT file written beside --svg and --svg name the same file"],
    );
    plan(
        &[&g, &d.join("g.svg")],
        &["-o", "--svg"],
        &["-o and the DOT file written beside --svg name the same file"],
    );
    // An output that cannot be written: none of the others is.
    plan(
        &[&g, &d.join("no-such-dir/p.json")],
        &["--dot", "-o"],
        &["no-such-dir/p.json", "cannot write output"],
    );

    // profile: -o where --fdata-dir writes a library's .fdata.
    let fd = d.join("fdata");
    let input = d.join("empty.fdata");
    std::fs::write(&input, "").unwrap();
    let o = fd.join("Foo.fdata");
    refused(
        &[
            os("profile"),
            input.as_os_str(),
            os("--lib"),
            os(&format!("Foo={}", foo.display())),
            os("--lib"),
            os(&format!("Bar={}", bar.display())),
            os("-o"),
            o.as_os_str(),
            os("--fdata-dir"),
            fd.as_os_str(),
        ],
        &["-o and --fdata-dir's Foo.fdata name the same file"],
    );
    assert!(!fd.exists());

    // build: two roots whose image names differ only in case.
    let c = serde_json::json!([
        {"funcName": "Foo", "funcId": 1, "library": foo, "entry": true},
        {"funcName": "FOO", "funcId": 2, "library": foo, "entry": true},
        {"funcName": "Bar", "funcId": 3, "library": bar},
    ]);
    let cases = d.join("case.json");
    std::fs::write(&cases, c.to_string()).unwrap();
    let cw = d.join("case-weights.json");
    std::fs::write(
        &cw,
        r#"{"calls": {"Foo": {"Bar": 1000}, "FOO": {"Bar": 1000}}, "external": {"Foo": 1000, "FOO": 1000}}"#,
    )
    .unwrap();
    let out = d.join("case-out");
    let _ = std::fs::remove_dir_all(&out);
    refused(
        &[
            os("build"),
            os("--config"),
            cases.as_os_str(),
            os("--profile"),
            cw.as_os_str(),
            os("--out-dir"),
            out.as_os_str(),
        ],
        &[
            "libfoo.fused.so",
            "the fused image of Foo",
            "the fused image of FOO",
            "name the same file",
        ],
    );
    assert!(!out.exists());
    assert_eq!(hidden(&d), Vec::<String>::new());
}

#[test]
fn the_svg_is_what_graphviz_renders_and_is_written_with_the_rest() {
    // A stand-in for Graphviz's `dot` that renders a graph as its own text.
    let d = scratch_dir("outputs-svg");
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let dot = bin.join("dot");
    std::fs::write(&dot, "#!/bin/sh\n[ \"$1\" = -Tsvg ] || exit 1\nexec cat\n").unwrap();
    std::fs::set_permissions(&dot, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (config, w) = two_groups(&d, 1 << 30);
    let svg = d.join("g.svg");
    let plan = d.join("p.json");
    for f in [&svg, &plan, &d.join("g.dot")] {
        let _ = std::fs::remove_file(f);
    }
    run_ok(
        faasfuse()
            .env("PATH", &path)
            .arg("plan")
            .arg("--config")
            .arg(&config)
            .arg("--profile")
            .arg(&w)
            .arg("--svg")
            .arg(&svg)
            .arg("-o")
            .arg(&plan),
    );
    let dot_text = std::fs::read(d.join("g.dot")).unwrap();
    assert!(
        dot_text.starts_with(b"digraph"),
        "{}",
        String::from_utf8_lossy(&dot_text)
    );
    assert_eq!(std::fs::read(&svg).unwrap(), dot_text);
    assert!(plan.is_file());
    let out = d.join("fused");
    let _ = std::fs::remove_dir_all(&out);
    let o = faasfuse()
        .env("PATH", &path)
        .arg("build")
        .arg("--config")
        .arg(&config)
        .arg("--profile")
        .arg(&w)
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("graph.svg")).unwrap(),
        std::fs::read(out.join("graph.dot")).unwrap()
    );
}

/// A full disk under the output: exit 3 naming the output, and nothing
/// left on the disk. The disk is a 32 KiB tmpfs in a mount namespace of
/// the test's own (`unshare`, util-linux), too small for a fused image.
#[test]
fn a_full_disk_exits_3_naming_the_output_and_leaves_nothing() {
    let lib = fixtures().join("default");
    let mnt = scratch_dir("outputs-full-disk");
    let script = r#"
set -u
mount -t tmpfs -o size=32k tmpfs "$1" || exit 90
"$2" merge "$3" "$4" -o "$1/fused.so"
rc=$?
echo "left: $(ls -A "$1")"
exit $rc
"#;
    let o = std::process::Command::new("unshare")
        .args(["-Urm", "sh", "-c", script, "sh"])
        .arg(&mnt)
        .arg(env!("CARGO_BIN_EXE_faasfuse"))
        .arg(lib.join("libfoo.so"))
        .arg(lib.join("libbar.so"))
        .output()
        .expect("unshare (util-linux)");
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_ne!(o.status.code(), Some(90), "cannot mount a tmpfs: {err}");
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("fused.so") && err.contains("cannot write output"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(out.trim(), "left:", "files left on the full disk");
}

/// A report whose standard output is a full disk (`/dev/full`): exit 3
/// naming standard output, on one line, for every command that prints one.
#[test]
fn a_full_standard_output_exits_3_naming_it() {
    let lib = fixtures().join("default");
    let foo = spec("Foo", &lib.join("libfoo.so"));
    let bar = spec("Bar", &lib.join("libbar.so"));
    let out = scratch_dir("outputs-full-stdout").join("fused.so");
    let inputs = input_file("outputs-full-stdout", &["a".to_string()]);
    let (foo_lib, out, inputs) = (
        lib.join("libfoo.so"),
        out.display().to_string(),
        inputs.display().to_string(),
    );
    for args in [
        vec!["inspect", foo_lib.to_str().unwrap()],
        vec!["merge", &foo, &bar, "-o", &out],
        vec!["run", &foo, &bar, "--inputs", &inputs, "--", "Foo"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = faasfuse().args(&args).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("standard output: cannot write output"),
            "{err}"
        );
        assert!(err.contains("No space left on device"), "{err}");
    }
}

/// An internal error (a panic, a bug in faasfuse) exits 101 with one line
/// that says so, and the output it was staging is not left behind: the
/// panic is injected while the fused image is staged, before its commit.
#[test]
fn an_internal_error_exits_101_and_leaves_no_output() {
    let lib = fixtures().join("default");
    let dir = scratch_dir("outputs-panic");
    let out = dir.join("fused.so");
    let _ = std::fs::remove_file(&out);
    let o = faasfuse()
        .env("FAASFUSE_INJECT_PANIC", "commit")
        .arg("merge")
        .arg(spec("Foo", &lib.join("libfoo.so")))
        .arg(spec("Bar", &lib.join("libbar.so")))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(101), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("faasfuse: internal error: injected"),
        "{err}"
    );
    assert!(!out.exists(), "output left");
    assert_eq!(hidden(&dir), Vec::<String>::new(), "staging left");
}
