//! Bad input: every command that takes a library names the file and the
//! reason on one line and exits with code 2, without panicking.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad-input");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A 32-bit shared object built by the compiler when it can target i386,
/// else a copy of an x86-64 library with its class byte changed.
fn elf32() -> PathBuf {
    let src = scratch("t32.c");
    std::fs::write(&src, "int f(void) { return 1; }\n").unwrap();
    let out = scratch("lib32.so");
    let built = Command::new("gcc")
        .args(["-m32", "-shared", "-nostdlib", "-fPIC", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        let mut bytes = std::fs::read(fixtures().join("default/libbar.so")).unwrap();
        bytes[4] = 1;
        std::fs::write(&out, bytes).unwrap();
    }
    out
}

/// An x86-64 library whose header says AArch64.
fn aarch64() -> PathBuf {
    let mut bytes = std::fs::read(fixtures().join("default/libbar.so")).unwrap();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    let out = scratch("libarm.so");
    std::fs::write(&out, bytes).unwrap();
    out
}

fn truncated() -> PathBuf {
    let bytes = std::fs::read(fixtures().join("default/libbar.so")).unwrap();
    let out = scratch("libtrunc.so");
    std::fs::write(&out, &bytes[..bytes.len() / 2]).unwrap();
    out
}

fn text_file() -> PathBuf {
    let out = scratch("notes.txt");
    std::fs::write(&out, "this is not a library\n").unwrap();
    out
}

fn executable() -> PathBuf {
    let src = scratch("main.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let out = scratch("not-pie");
    let ok = Command::new("gcc")
        .args(["-no-pie", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    out
}

/// Run faasfuse; assert exit code 2 and one line naming `file` with `reason`.
fn assert_rejected(args: &[&str], file: &Path, reason: &str) {
    let out = faasfuse().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    assert!(stderr.starts_with("faasfuse: error: "), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "{args:?}: names the file: {stderr}"
    );
    assert!(
        stderr.contains(reason),
        "{args:?}: says {reason:?}: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?}: no output on error");
}

/// The bad libraries and what their refusal says, made once per test
/// process (tests run side by side, and a file being rewritten by one is
/// no bad input for another).
fn cases() -> Vec<(PathBuf, &'static str)> {
    static CASES: std::sync::OnceLock<Vec<(PathBuf, &'static str)>> = std::sync::OnceLock::new();
    CASES
        .get_or_init(|| {
            vec![
                (scratch("does-not-exist.so"), "no such file"),
                (text_file(), "not an ELF file"),
                (truncated(), "truncated"),
                (elf32(), "32-bit"),
                (aarch64(), "AArch64"),
                (executable(), "not a shared object"),
                (scratch(""), "directory"),
            ]
        })
        .clone()
}

#[test]
fn inspect_rejects_bad_libraries() {
    for (file, reason) in cases() {
        assert_rejected(&["inspect", file.to_str().unwrap()], &file, reason);
        assert_rejected(
            &["inspect", "--json", file.to_str().unwrap()],
            &file,
            reason,
        );
    }
}

#[test]
fn run_rejects_bad_libraries_in_both_modes() {
    let foo = fixtures().join("default/libfoo.so");
    let nofunc = fixtures().join("bad/libnofunc.so");
    let mut all = cases();
    all.push((nofunc, "faas_func_call"));
    for (file, reason) in all {
        let bar = format!("Bar={}", file.display());
        for ipc in [false, true] {
            let mut args = vec!["run", foo.to_str().unwrap(), bar.as_str()];
            if ipc {
                args.push("--ipc");
            }
            args.extend(["--", "Foo", "hello"]);
            assert_rejected(&args, &file, reason);
        }
    }
}

#[test]
fn inspect_reports_missing_entry_points_without_failing() {
    let nofunc = fixtures().join("bad/libnofunc.so");
    let out = run_ok(faasfuse().arg("inspect").arg(&nofunc));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("faas_func_call") && text.contains("MISSING"),
        "{text}"
    );
}

#[test]
fn run_rejects_missing_inputs_file_and_undeployed_root() {
    let foo = fixtures().join("default/libfoo.so");
    let bar = fixtures().join("default/libbar.so");
    let missing = scratch("no-inputs.txt");
    assert_rejected(
        &[
            "run",
            foo.to_str().unwrap(),
            bar.to_str().unwrap(),
            "--inputs",
            missing.to_str().unwrap(),
            "--",
            "Foo",
        ],
        &missing,
        "cannot read inputs",
    );
    assert_rejected(
        &["run", foo.to_str().unwrap(), "--", "Nobody", "x"],
        Path::new("Nobody"),
        "not deployed",
    );
}

#[test]
fn duplicate_function_names_are_rejected() {
    let foo = fixtures().join("default/libfoo.so");
    let bar = fixtures().join("default/libbar.so");
    let a = format!("Foo={}", foo.display());
    let b = format!("Foo={}", bar.display());
    assert_rejected(&["run", &a, &b, "--", "Foo", "x"], &bar, "already served");
}

/// A symbol-less `R_X86_64_DTPMOD64` needs the word after its own (the
/// module-local TLS offset) in the file: a library whose word lies past its
/// segment's file bytes is refused naming it, not an internal error (found
/// by the `elf-merge` fuzz target: one relocation type byte changed).
#[test]
fn module_local_tls_relocation_without_its_offset_word_is_refused() {
    use object::read::elf::{ElfFile64, ProgramHeader, SectionHeader};
    use object::{elf, LittleEndian as LE};
    let w = workflow("hello");
    let lib = fixtures().join("default/libbar.so");
    let mut bytes = std::fs::read(&lib).unwrap();
    let e = LE;
    let at = {
        let file = ElfFile64::<LE>::parse(&bytes[..]).unwrap();
        let file_end = |va: u64| {
            file.elf_program_headers().iter().any(|p| {
                p.p_type(e) == elf::PT_LOAD
                    && va >= p.p_vaddr(e)
                    && va < p.p_vaddr(e) + p.p_filesz(e)
                    && va + 16 > p.p_vaddr(e) + p.p_filesz(e)
            })
        };
        let rela = file
            .elf_section_table()
            .iter()
            .find(|s| {
                s.sh_type(e) == elf::SHT_RELA && s.sh_flags(e) & u64::from(elf::SHF_ALLOC) != 0
            })
            .expect("a .rela.dyn");
        let (off, size) = (rela.sh_offset(e) as usize, rela.sh_size(e) as usize);
        (off..off + size)
            .step_by(24)
            .find(|&r| {
                let word = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
                word(r + 8) == u64::from(elf::R_X86_64_RELATIVE) && file_end(word(r))
            })
            .expect("a relative relocation of a word the segment's file bytes end just after")
    };
    bytes[at + 8] = elf::R_X86_64_DTPMOD64 as u8;
    let bad = scratch("dtpmod-past-file.so");
    std::fs::write(&bad, &bytes).unwrap();
    let out = scratch("dtpmod-past-file.fused.so");
    let foo = fixtures()
        .join("default")
        .join(&w.functions.iter().find(|(n, _)| n == "Foo").unwrap().1);
    assert_rejected(
        &[
            "merge",
            &format!("Foo={}", foo.display()),
            &format!("Bar={}", bad.display()),
            "-o",
            out.to_str().unwrap(),
        ],
        &bad,
        "must be in the file",
    );
    assert!(!out.exists(), "no output");
}
