//! Damaged and hostile inputs (issue 13): each is crafted here by mutating
//! a fixture library or file, and each must be refused on one line naming
//! the input, with exit code 2, without a panic, a hang, a corrupt output,
//! a replaced file or a leftover temporary.

mod common;
use common::damage::{self, assert_refused, damaged_copy, run_for};
use common::elf_bytes::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn dir() -> PathBuf {
    scratch_dir("hardening")
}

fn lib(name: &str) -> PathBuf {
    fixtures().join("default").join(name)
}

// ---- ELF surgery: tests/common/elf_bytes.rs ------------------------------

/// Write a mutated copy of fixture `name` as `out`.
fn mutate(name: &str, out: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    damaged_copy(&lib(name), &dir(), out, f)
}

fn mutate_file(src: &Path, out: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    damaged_copy(src, &dir(), out, f)
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// `merge libfoo.so BAD -o OUT` is refused for BAD, and OUT never appears.
fn merge_refuses_callee(bad: &Path, reason: &str) {
    merge_refuses(bad, false, reason);
}

/// [`common::damage::merge_refuses`] writing into this file's directory.
fn merge_refuses(bad: &Path, as_root: bool, reason: &str) {
    damage::merge_refuses(bad, as_root, reason, &dir());
}

/// No hidden temporary (`.NAME.staged…`, `.NAME.tmp…`) in `d`.
fn assert_no_temporaries(d: &Path) {
    let left: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && (n.contains(".staged") || n.contains(".tmp")))
        .collect();
    assert!(
        left.is_empty(),
        "temporaries left in {}: {left:?}",
        d.display()
    );
}

// ---- 1: callee relocations outside the callee ----------------------------

#[test]
fn callee_relocation_outside_its_image_is_refused() {
    let (_, rela, _) = section(&std::fs::read(lib("libbar.so")).unwrap(), ".rela.dyn").unwrap();
    for (name, offset) in [
        ("libbar-reloc-past-end.so", 0x40_0000u64),
        ("libbar-reloc-wraps.so", 0xffff_ffff_ffff_fff8),
        ("libbar-reloc-in-text.so", 0x1000),
    ] {
        let bad = mutate("libbar.so", name, |d| put64(d, rela, offset));
        merge_refuses_callee(&bad, "r_offset");
    }
}

#[test]
fn executable_section_in_a_nonexecutable_segment_is_refused() {
    // .rodata flagged executable: it lies in a read-only segment.
    let bad = mutate("libbar.so", "libbar-x-rodata.so", |d| {
        let (h, _, _) = section(d, ".rodata").unwrap();
        let flags = u64_at(d, h + 8) | 0x4;
        put64(d, h + 8, flags);
    });
    merge_refuses_callee(&bad, "executable but its segment is not");
}

// ---- 2: hangs --------------------------------------------------------------

#[test]
fn huge_initializer_array_sizes_are_refused_quickly() {
    for (tag, name) in [
        (27u64, "libbar-initarraysz.so"),
        (28, "libbar-finiarraysz.so"),
    ] {
        let bad = mutate("libbar.so", name, |d| {
            let at = dyn_value(d, tag);
            put64(d, at, 0x7fff_ffff_ffff_fff8);
        });
        merge_refuses_callee(&bad, "ARRAYSZ");
    }
    // In range of the parser's limit but beyond the image.
    let bad = mutate("libbar.so", "libbar-initarray-beyond.so", |d| {
        let at = dyn_value(d, 27);
        put64(d, at, 0x10_0000);
    });
    merge_refuses_callee(&bad, "DT_INIT_ARRAY");
}

/// The spinning library, built into a directory of the calling test's own
/// (tests run concurrently).
fn spin_lib(test: &str) -> PathBuf {
    build_test_lib(
        "spin_ctor.c",
        &scratch_dir(&format!("hardening-lib-{test}")),
    )
}

#[test]
fn load_test_has_a_time_limit_and_its_child_dies() {
    let spin = spin_lib("timeout");
    let d = scratch_dir("hardening-spin");
    let out = d.join("spin.fused.so");
    let pid_file = d.join("spin.pid");
    let _ = std::fs::remove_file(&pid_file);
    let start = Instant::now();
    let o = run_for(
        faasfuse()
            .env("FAASFUSE_LOAD_TIMEOUT", "2")
            .env("SPIN_PID_FILE", &pid_file)
            .arg("merge")
            .arg(format!("Spin={}", spin.display()))
            .arg("-o")
            .arg(&out),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    // The library does not load by itself either: it is named, as bad input.
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("did not return within"), "{err}");
    assert!(err.contains(&spin.display().to_string()), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(!out.exists());
    assert_no_temporaries(&d);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "load-test child {pid} still runs"
    );
}

#[test]
fn killed_merge_leaves_no_child_and_no_temporary() {
    let spin = spin_lib("kill");
    for (sig, tag) in [
        (libc::SIGTERM, "term"),
        (libc::SIGINT, "int"),
        (libc::SIGHUP, "hup"),
        (libc::SIGKILL, "kill"),
    ] {
        let d = scratch_dir(&format!("hardening-kill-{tag}"));
        let out = d.join("spin.fused.so");
        let pid_file = d.join("spin.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut child = faasfuse()
            .env("SPIN_PID_FILE", &pid_file)
            .arg("merge")
            .arg(format!("Spin={}", spin.display()))
            .arg("-o")
            .arg(&out)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !pid_file.exists() || std::fs::read_to_string(&pid_file).unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "load test never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        assert!(!status.success());
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        });
        assert!(gone, "{tag}: load-test child {pid} survives faasfuse");
        assert!(!out.exists(), "{tag}: no output");
        assert_no_temporaries(&d);
    }
}

// ---- 3: outputs never replace what is not theirs ---------------------------

#[test]
fn outputs_refuse_inputs_and_non_regular_files() {
    let d = dir();
    let foo = dir().join("libfoo-copy.so");
    let bar = dir().join("libbar-copy.so");
    std::fs::copy(lib("libfoo.so"), &foo).unwrap();
    std::fs::copy(lib("libbar.so"), &bar).unwrap();
    let before = std::fs::read(&bar).unwrap();
    // An input as the output, by another name too (a hard link).
    let link = d.join("libbar-link.so");
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(&bar, &link).unwrap();
    for o in [&bar, &link] {
        assert_refused(
            &[
                os("merge"),
                foo.as_os_str(),
                bar.as_os_str(),
                os("-o"),
                o.as_os_str(),
            ],
            o,
            "refusing to overwrite an input",
        );
    }
    assert_eq!(std::fs::read(&bar).unwrap(), before);
    // A FIFO as -o, --manifest, plan -o and profile merge -o.
    let fifo = d.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let good = d.join("ok.fused.so");
    for args in [
        vec![
            os("merge"),
            foo.as_os_str(),
            bar.as_os_str(),
            os("-o"),
            fifo.as_os_str(),
        ],
        vec![
            os("merge"),
            foo.as_os_str(),
            bar.as_os_str(),
            os("-o"),
            good.as_os_str(),
            os("--manifest"),
            fifo.as_os_str(),
        ],
    ] {
        assert_refused(&args, &fifo, "only replaces regular files");
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo_like());
    let (config, weights) = deployment(&d);
    assert_refused(
        &[
            os("plan"),
            os("--config"),
            config.as_os_str(),
            os("--profile"),
            weights.as_os_str(),
            os("-o"),
            fifo.as_os_str(),
        ],
        &fifo,
        "only replaces regular files",
    );
    assert_refused(
        &[
            os("merge"),
            foo.as_os_str(),
            bar.as_os_str(),
            os("-o"),
            os("/dev/null"),
        ],
        Path::new("/dev/null"),
        "character device",
    );
    // build --out-dir holding the input config.
    let before = std::fs::read(&config).unwrap();
    assert_refused(
        &[
            os("build"),
            os("--config"),
            config.as_os_str(),
            os("--profile"),
            weights.as_os_str(),
            os("--out-dir"),
            d.as_os_str(),
        ],
        &config,
        "refusing to overwrite an input",
    );
    assert_eq!(std::fs::read(&config).unwrap(), before);
    assert_no_temporaries(&d);
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

/// A func_config.json (named so, in `d`) for Foo and Bar, and weights.
fn deployment(d: &Path) -> (PathBuf, PathBuf) {
    let config = d.join("func_config.json");
    std::fs::write(
        &config,
        format!(
            r#"[{{"funcName":"Foo","funcId":1,"minWorkers":1,"maxWorkers":1,"library":"{}"}},
{{"funcName":"Bar","funcId":2,"minWorkers":1,"maxWorkers":1,"library":"{}"}}]"#,
            lib("libfoo.so").display(),
            lib("libbar.so").display()
        ),
    )
    .unwrap();
    let weights = d.join("weights.json");
    std::fs::write(&weights, r#"{"calls":{"Foo":{"Bar":100}}}"#).unwrap();
    (config, weights)
}

// ---- 4, 5: overflows and huge alignments -----------------------------------

#[test]
fn symbol_value_plus_size_overflow_is_refused() {
    let bad = mutate("libbar.so", "libbar-symsize.so", |d| {
        let s = dynsym(d, "faas_func_call");
        put64(d, s + 16, u64::MAX - 8);
    });
    assert_refused(&[os("inspect"), bad.as_os_str()], &bad, "overflows");
    merge_refuses_callee(&bad, "overflows");
    let perf = dir().join("empty.fdata");
    std::fs::write(&perf, "").unwrap();
    let arg = format!("Bar={}", bad.display());
    let o = run_for(
        faasfuse().args([os("profile"), perf.as_os_str(), os("--lib"), os(&arg)]),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
}

#[test]
fn packed_relocation_near_the_top_of_memory_is_refused() {
    let src = fixtures().join("relr/libbar.so");
    let d = std::fs::read(&src).unwrap();
    let (_, relr, _) = section(&d, ".relr.dyn")
        .expect("the relr fixture variant has .relr.dyn (binutils with -z pack-relative-relocs)");
    let bad = mutate_file(&src, "libbar-relr-top.so", |d| {
        put64(d, relr, 0xffff_ffff_ffff_fff8)
    });
    merge_refuses_callee(&bad, "DT_RELR");
}

#[test]
fn tls_and_load_alignments_are_bounded() {
    for (align, name) in [
        (1u64 << 63, "libfoo-tls-2e63.so"),
        (1 << 32, "libfoo-tls-2e32.so"),
    ] {
        let bad = mutate("libfoo.so", name, |d| {
            let p = phdrs(d, 7)[0];
            put64(d, p + 48, align);
        });
        let out = dir().join(format!("{name}.fused.so"));
        assert_refused(
            &[
                os("merge"),
                bad.as_os_str(),
                lib("libbar.so").as_os_str(),
                os("-o"),
                out.as_os_str(),
            ],
            &bad,
            "PT_TLS p_align",
        );
        assert!(!out.exists());
        assert_refused(&[os("inspect"), bad.as_os_str()], &bad, "PT_TLS p_align");
    }
    let bad = mutate("libbar.so", "libbar-load-align.so", |d| {
        let p = phdrs(d, 1)[1];
        put64(d, p + 48, 1 << 40);
    });
    merge_refuses_callee(&bad, "PT_LOAD p_align");
}

// ---- 6: unbounded reads ----------------------------------------------------

#[test]
fn devices_and_fifos_are_refused_where_a_file_is_needed() {
    let d = dir();
    let (config, weights) = deployment(&scratch_dir("hardening-dev"));
    for dev in ["/dev/zero", "/dev/urandom"] {
        let dev = Path::new(dev);
        assert_refused(&[os("inspect"), dev.as_os_str()], dev, "character device");
        assert_refused(
            &[
                os("plan"),
                os("--config"),
                dev.as_os_str(),
                os("--profile"),
                weights.as_os_str(),
            ],
            dev,
            "character device",
        );
        assert_refused(
            &[
                os("plan"),
                os("--config"),
                config.as_os_str(),
                os("--profile"),
                dev.as_os_str(),
            ],
            dev,
            "character device",
        );
        let bar = format!("Bar={}", dev.display());
        assert_refused(
            &[os("profile"), weights.as_os_str(), os("--lib"), os(&bar)],
            dev,
            "character device",
        );
    }
    // A FIFO nobody writes to must not block.
    let fifo = d.join("in-fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_refused(&[os("inspect"), fifo.as_os_str()], &fifo, "FIFO");
    // A large file of zeros is refused by its magic, not read whole.
    let big = d.join("zeros.so");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(3 << 30).unwrap();
    let start = Instant::now();
    assert_refused(&[os("inspect"), big.as_os_str()], &big, "not an ELF");
    assert!(start.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_file(&big);
}

// ---- 7: damaged callees are input errors naming the file --------------------

#[test]
fn damaged_callee_structures_exit_2_naming_the_file() {
    // A version index beyond the version table.
    let bad = mutate("libbar.so", "libbar-versym.so", |d| {
        let (_, off, size) = section(d, ".gnu.version").unwrap();
        for at in (off..off + size).step_by(2) {
            d[at..at + 2].copy_from_slice(&0x7777u16.to_le_bytes());
        }
    });
    merge_refuses_callee(&bad, "libbar-versym.so");
    // A damaged unwind table.
    let bad = mutate("libbar.so", "libbar-ehframe.so", |d| {
        let (_, off, _) = section(d, ".eh_frame").unwrap();
        d[off..off + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    });
    merge_refuses_callee(&bad, "eh_frame");
}

// ---- 11: messages -----------------------------------------------------------

#[test]
fn control_bytes_are_escaped_and_usage_errors_are_one_line() {
    let bad = dir().join("evil\x1b[2J\rname.so");
    std::fs::write(&bad, b"\x7fELF\x02\x01junk").unwrap();
    let o = run_for(faasfuse().arg("inspect").arg(&bad), Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.trim_end().contains(['\x1b', '\r']), "{err:?}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    for args in [
        vec!["merge"],
        vec!["merge", "--bogus"],
        vec!["nosuchcommand"],
        vec!["plan", "--config"],
    ] {
        let o = run_for(faasfuse().args(&args), Duration::from_secs(30));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("faasfuse: error: "), "{err}");
    }
}

// ---- 9: garbage weights -------------------------------------------------------

#[test]
fn garbage_weights_are_refused() {
    let d = scratch_dir("hardening-weights");
    let (config, _) = deployment(&d);
    for (name, text, reason) in [
        (
            "huge.json",
            r#"{"calls":{"Foo":{"Bar":1e308}}}"#,
            "not a count",
        ),
        (
            "negative.json",
            r#"{"calls":{"Foo":{"Bar":-5}}}"#,
            "not a count",
        ),
        (
            "cpu-neg.json",
            r#"{"calls":{"Foo":{"Bar":5}},"cpu":{"Foo":-0.5}}"#,
            "not a share",
        ),
        (
            "cpu-big.json",
            r#"{"calls":{"Foo":{"Bar":5}},"cpu":{"Foo":1.5}}"#,
            "not a share",
        ),
        (
            "external.json",
            r#"{"calls":{"Foo":{"Bar":5}},"external":{"Foo":-1}}"#,
            "not a count",
        ),
        (
            "dup.json",
            r#"{"calls":{"Foo":{"Bar":5,"Bar":7}}}"#,
            "duplicate key",
        ),
    ] {
        let w = d.join(name);
        std::fs::write(&w, text).unwrap();
        assert_refused(
            &[
                os("plan"),
                os("--config"),
                config.as_os_str(),
                os("--profile"),
                w.as_os_str(),
            ],
            &w,
            reason,
        );
    }
}

// ---- fuzz findings --------------------------------------------------------------

#[test]
fn fuzz_findings_exit_2_naming_the_file() {
    let data = repo().join("tests/data/fuzz");
    // Its first PT_LOAD does not start at 0: the dynamic segment's tables
    // lie outside what the loader would map from the file's start.
    merge_refuses(
        &data.join("root-not-at-zero.so"),
        true,
        "lies outside the file's loaded bytes",
    );
    merge_refuses_callee(&data.join("callee-fde-outside.so"), "FDE covers");
    // Damage only the load test finds (ld.so crashes loading it alone): the
    // input is named, not the fused image.
    merge_refuses_callee(
        &data.join("callee-does-not-load.so"),
        "does not load by itself",
    );
    // An initializer that points nowhere (its displaced value overflowed).
    merge_refuses_callee(
        &data.join("callee-init-array-garbage.so"),
        "DT_INIT_ARRAY entry 0",
    );
    // A 4 GiB .bss: beyond the reach of direct calls in the fused image.
    merge_refuses_callee(&data.join("callee-4gib-bss.so"), "p_memsz");
    // A RELRO range far beyond its segment (the fused image copied it).
    merge_refuses(
        &data.join("root-relro-beyond-load.so"),
        true,
        "PT_GNU_RELRO",
    );
}
