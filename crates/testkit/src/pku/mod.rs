//! A machine with memory protection keys for the tests of `merge --isolate
//! mpk`, on every host.
//!
//! [`Machine::get`] returns the test binary's one machine. Where the host's
//! `/proc/cpuinfo` lists both `pku` and `ospke` it runs commands natively.
//! Elsewhere it boots, on first use, one QEMU system emulator in TCG mode
//! with `-cpu max` (which implements protection keys whatever the host CPU
//! has; KVM would expose the host's CPU, and user-mode qemu has no keys),
//! and every later command of the test binary runs in that same machine,
//! one at a time. Booting takes 6–10 s on an idle 2-core host, a command
//! from 0.2 s (everything is emulated: a dynamically linked program starts
//! in about 0.25 s). The idle machine costs no CPU.
//!
//! What a command sees inside the machine:
//!
//! - the host's whole file tree, read-only, at the same paths (9p over
//!   virtio): programs and libraries built on the host (`target/debug/
//!   faasfuse`, a test's `CARGO_TARGET_TMPDIR`, the system's compilers and
//!   libraries) run unchanged. Files the host writes anywhere outside the
//!   two cached directories below are visible at once (no caching), also
//!   while the machine runs. Cached, for speed (an 88 MiB debug binary
//!   starts in 0.3 s instead of 4–13 s): `/usr`, and the test binary's
//!   profile directory (`target/debug` or `target/release`, which holds
//!   `faasfuse` and the test binaries). Nothing may change there while the
//!   test binary runs: tests write their files under `CARGO_TARGET_TMPDIR`
//!   (`target/tmp`) or in [`Machine::shared_dir`], never in
//!   `target/debug`;
//! - its own `/tmp`, `/dev/shm`, `/proc`, `/sys` and `/dev`: the host's
//!   `/tmp` is NOT visible as `/tmp` inside (files for a command belong
//!   under the target directory, e.g. `CARGO_TARGET_TMPDIR`, or in
//!   [`Machine::shared_dir`]);
//! - [`Machine::shared_dir`], a host directory under the target directory,
//!   mounted writable at the same path: what a command writes there the
//!   host reads back, and the other way round;
//! - the environment the host process has with the command's changes
//!   applied (`Command::env`, `env_remove`; `env_clear` cannot be seen from
//!   a `Command` and is not honoured; a `TMPDIR` set on the host names a
//!   directory the machine's `/tmp` lacks), the command's working
//!   directory (the host process's when unset) and standard input from
//!   `/dev/null`.
//!
//! A command killed by a signal inside the machine is reported as killed by
//! it (a command that itself exits with 129–192 reads the same). A program
//! that cannot be found exits 127 inside the machine, where natively
//! [`Machine::try_run`] returns an error.
//!
//! Missing tools fail the test with one line naming the Debian package to
//! install (`qemu-system-x86`, `linux-image-amd64`, `busybox-static`),
//! never a skip. The machine dies with the test binary: QEMU runs with
//! `PR_SET_PDEATHSIG` from a thread that lives as long as the process.
//!
//! Knobs, for debugging: `FAASFUSE_PKU_MACHINE=vm` boots the emulated
//! machine even on a host with protection keys; `FAASFUSE_VM_CPU` sets
//! QEMU's `-cpu` (default `max`; `qemu64` has no protection keys);
//! `FAASFUSE_VM_BOOT_TIMEOUT` the seconds a boot may take (default 300).
//! The work directory (`<target>/tmp/pku-machine/<pid>`) keeps the console
//! log (`console.log`) and QEMU's output (`qemu.log`).

mod initramfs;
mod vm;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a command may run by default.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(600);

/// Where commands run with protection keys (see the module's notes).
pub struct Machine {
    vm: Option<vm::Vm>,
    where_: String,
    shared: PathBuf,
}

impl Machine {
    /// The test binary's machine, started on first use. Panics with the
    /// one-line reason when there can be none (a missing tool, a failed
    /// boot).
    pub fn get() -> &'static Machine {
        match Self::try_get() {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Machine::get`], the reason as an error.
    pub fn try_get() -> Result<&'static Machine, String> {
        static MACHINE: OnceLock<Result<Machine, String>> = OnceLock::new();
        MACHINE
            .get_or_init(|| {
                Machine::start().map_err(|e| format!("protection-key test machine: {e:#}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn start() -> Result<Machine> {
        let (target, profile) = build_dirs()?;
        let root = target.join("tmp/pku-machine");
        remove_stale(&root);
        let dir = root.join(std::process::id().to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        let shared = dir.join("share");
        std::fs::create_dir_all(&shared).with_context(|| format!("create {}", shared.display()))?;
        let force_vm = std::env::var("FAASFUSE_PKU_MACHINE").is_ok_and(|v| v == "vm");
        if host_has_pku() && !force_vm {
            return Ok(Machine {
                vm: None,
                where_: "native".into(),
                shared,
            });
        }
        let cpu = std::env::var("FAASFUSE_VM_CPU").unwrap_or_else(|_| "max".into());
        let boot_limit = std::env::var("FAASFUSE_VM_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        let vm = vm::Vm::boot(&dir, &profile, &cpu, Duration::from_secs(boot_limit))?;
        eprintln!(
            "pku machine: booted qemu-system-x86_64 TCG -cpu {cpu} in {:.1} s ({})",
            vm.boot_time.as_secs_f64(),
            dir.display()
        );
        Ok(Machine {
            vm: Some(vm),
            where_: format!("emulated: qemu-system-x86_64 TCG -cpu {cpu}"),
            shared,
        })
    }

    /// `native`, or `emulated: qemu-system-x86_64 TCG -cpu max`.
    pub fn where_(&self) -> &str {
        &self.where_
    }

    /// Whether commands run in the emulated machine.
    pub fn is_emulated(&self) -> bool {
        self.vm.is_some()
    }

    /// A host directory, writable by the host and by commands, at the same
    /// path in both.
    pub fn shared_dir(&self) -> &Path {
        &self.shared
    }

    /// How long booting took (zero when native).
    pub fn boot_time(&self) -> Duration {
        self.vm.as_ref().map_or(Duration::ZERO, |v| v.boot_time)
    }

    /// Run `cmd` to completion (at most [`DEFAULT_LIMIT`]) and collect its
    /// output. Panics with the reason when it cannot be run or times out.
    pub fn run(&self, cmd: &mut Command) -> Output {
        match self.try_run(cmd, DEFAULT_LIMIT) {
            Ok(o) => o,
            Err(e) => panic!("{}: {e:#}", self.where_),
        }
    }

    /// Run `cmd` for at most `limit` and collect its output.
    pub fn try_run(&self, cmd: &mut Command, limit: Duration) -> Result<Output> {
        match &self.vm {
            Some(vm) => vm.run(cmd, limit),
            None => run_native(cmd, limit),
        }
    }
}

/// Whether this host's CPU and kernel offer protection keys.
pub fn host_has_pku() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| has_flags(l, &["pku", "ospke"]))
}

/// Whether a `/proc/cpuinfo` flags line lists every one of `flags`.
pub fn has_flags(line: &str, flags: &[&str]) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    flags.iter().all(|f| words.contains(f))
}

/// The cargo target directory the running test binary was built in, and
/// its profile directory there (`target/debug`).
fn build_dirs() -> Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("locate the test binary")?;
    let target = match exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
        Some(d) => d,
        // target/PROFILE/deps/NAME
        None => exe
            .ancestors()
            .nth(3)
            .context("the test binary is not in a target directory")?,
    };
    let profile = exe
        .ancestors()
        .find(|d| d.parent() == Some(target))
        .with_context(|| format!("{}: not in a cargo target directory", exe.display()))?;
    Ok((target.to_path_buf(), profile.to_path_buf()))
}

/// Remove the work directories of test binaries that are gone.
fn remove_stale(root: &Path) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn run_native(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {what}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} timed out after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
