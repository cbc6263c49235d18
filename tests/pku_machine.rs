//! The protection-key test machine (`faasfuse_testkit::pku::Machine`) is
//! one: inside it the CPU and kernel offer protection keys, and a program
//! built on the host uses them (a denied read faults with SEGV_PKUERR, a
//! WRPKRU that allows the key lets a write through). On a host without
//! them this boots QEMU; without QEMU, a kernel or a static busybox it
//! fails, naming what to install.

mod common;
use common::repo;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use faasfuse_testkit::pku::{has_flags, Machine};

fn machine() -> &'static Machine {
    let m = Machine::get();
    eprintln!("protection keys: {}", m.where_());
    m
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_machine_lists_protection_keys() {
    let m = machine();
    let out = m.run(Command::new("cat").arg("/proc/cpuinfo"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = text(&out.stdout);
    let flags: Vec<&str> = info.lines().filter(|l| l.starts_with("flags")).collect();
    assert!(!flags.is_empty(), "no flags in /proc/cpuinfo:\n{info}");
    for l in &flags {
        assert!(
            has_flags(l, &["pku", "ospke"]),
            "{}: a CPU without pku and ospke: {l}",
            m.where_()
        );
    }
}

#[test]
fn a_host_built_program_faults_on_a_denied_key_and_writes_when_allowed() {
    let m = machine();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pkey_probe");
    let cc = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&exe)
        .arg(repo().join("tests/data/pkey_probe.c"))
        .output()
        .expect("run cc");
    assert!(cc.status.success(), "cc: {}", text(&cc.stderr));
    let out = m.run(&mut Command::new(&exe));
    let stdout = text(&out.stdout);
    eprintln!("{}:\n{stdout}{}", m.where_(), text(&out.stderr));
    assert!(
        stdout.contains("pkey_alloc: key "),
        "pkey_alloc failed on {}: {stdout}",
        m.where_()
    );
    assert!(
        stdout.contains("read denied: fault si_code=4 "),
        "a read of a page whose key denies access must fault with SEGV_PKUERR (4): {stdout}"
    );
    assert!(
        stdout.contains("(ok)"),
        "a write after WRPKRU allowed the key must succeed: {stdout}"
    );
    assert!(out.status.success(), "{stdout}");
}

#[test]
fn commands_see_the_host_tree_their_env_and_cwd_and_share_a_directory() {
    let m = machine();
    let dir = m.shared_dir().join("env-cwd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("from-host"), "hello from the host\n").unwrap();
    let out = m.run(
        Command::new("sh")
            .arg("-c")
            .arg("cat from-host; echo \"$PKU_TEST_VALUE\"; pwd; echo written > from-machine; echo oops >&2; exit 3")
            .env("PKU_TEST_VALUE", "it's here")
            .current_dir(&dir),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("hello from the host\nit's here\n{}\n", dir.display())
    );
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("from-machine")).unwrap(),
        "written\n"
    );
    // The test binary itself, built on the host, runs there.
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let out = m.run(Command::new(&exe).arg("--list"));
    eprintln!(
        "{}: this test binary --list took {:?}",
        m.where_(),
        start.elapsed()
    );
    assert!(text(&out.stdout).contains("the_machine_lists_protection_keys"));
}

#[test]
fn a_command_past_its_limit_fails_naming_it() {
    let m = machine();
    let e = m
        .try_run(Command::new("sleep").arg("30"), Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(e.to_string(), "\"sleep\" timed out after 1 s");
    // The machine serves on.
    let out = m.run(Command::new("sh").arg("-c").arg("kill -SEGV $$"));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{:?}", out.status);
}
