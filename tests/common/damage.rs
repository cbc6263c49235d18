//! Damaged inputs and their refusal: a damaged copy of a library, a
//! command run with a deadline, and the one-line exit-2 refusal that names
//! the damaged file.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{faasfuse, fixtures};

/// A copy of `src` with `f` applied, written as `dir/out`.
pub fn damaged_copy(src: &Path, dir: &Path, out: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut d = std::fs::read(src).unwrap();
    f(&mut d);
    let p = dir.join(out);
    std::fs::write(&p, d).unwrap();
    p
}

/// Run with a deadline (a hang is a failure, not a stuck test).
pub fn run_for(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} hung for {limit:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Exit 2, one line `faasfuse: error: FILE: ...REASON...`, nothing on stdout.
pub fn assert_refused(args: &[&OsStr], file: &Path, reason: &str) -> String {
    let out = run_for(faasfuse().args(args), Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.starts_with("faasfuse: error: "), "{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "{args:?}: names {}: {err}",
        file.display()
    );
    assert!(err.contains(reason), "{args:?}: says {reason:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}: no output on error");
    err
}

/// `merge` with `bad` as the root (Foo) or the callee (Bar) of the hello
/// workflow (default build) exits 2 naming it for `reason`, and writes
/// nothing into `dir`.
pub fn merge_refuses(bad: &Path, as_root: bool, reason: &str, dir: &Path) {
    let out = dir.join(format!(
        "{}.fused.so",
        bad.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&out);
    let lib = fixtures().join("default");
    let (root, callee) = if as_root {
        (
            format!("Foo={}", bad.display()).into(),
            lib.join("libbar.so").into_os_string(),
        )
    } else {
        (
            lib.join("libfoo.so").into_os_string(),
            format!("Bar={}", bad.display()).into(),
        )
    };
    assert_refused(
        &[
            OsStr::new("merge"),
            &root,
            &callee,
            OsStr::new("-o"),
            out.as_os_str(),
        ],
        bad,
        reason,
    );
    assert!(!out.exists(), "no output for a refused input");
}
