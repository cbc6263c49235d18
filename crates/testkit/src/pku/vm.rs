//! The emulated machine: QEMU booted with the initramfs of
//! [`super::initramfs`], driven through a spool directory that both sides
//! see (the host writes `N.sh`, the machine's init answers with `N.out`,
//! `N.err` and `N.status`; see `init.sh`). The host announces each request
//! on the machine's second serial port, so the idle machine sleeps instead
//! of polling.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::initramfs;

/// How much longer than a command's limit the host waits for the machine
/// to answer before it declares the machine lost.
const GRACE: Duration = Duration::from_secs(60);

pub struct Vm {
    dir: PathBuf,
    spool: PathBuf,
    /// The control line and the next request's number; held while a
    /// command runs.
    ctl: Mutex<(std::fs::File, u64)>,
    /// The static busybox that runs each request inside the machine.
    busybox: PathBuf,
    /// How QEMU ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
    pub boot_time: Duration,
}

impl Vm {
    /// Boot QEMU for the work directory `dir` (it exists, holding `share`)
    /// and wait until its init serves the spool. `build` (the test binary's
    /// profile directory) is exported cached.
    pub fn boot(dir: &Path, build: &Path, cpu: &str, limit: Duration) -> Result<Vm> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let qemu = initramfs::find_qemu(&path)?;
        let busybox =
            initramfs::find_busybox(&[Path::new("/bin/busybox"), Path::new("/usr/bin/busybox")])?;
        let (kernel, modules) =
            initramfs::find_kernel(Path::new("/boot"), Path::new("/lib/modules"))?;
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool).with_context(|| format!("create {}", spool.display()))?;
        let initrd = dir.join("initramfs.cpio");
        let conf = format!(
            "WORK={}\nBUILD={}\nMSIZE=512000\n",
            String::from_utf8_lossy(&quote(dir.as_os_str())),
            String::from_utf8_lossy(&quote(build.as_os_str()))
        );
        initramfs::write(&initrd, &busybox, &modules, &conf)?;
        let inside = dir.join("busybox");
        std::fs::copy(&busybox, &inside)
            .with_context(|| format!("copy busybox to {}", inside.display()))?;
        let ctl = dir.join("ctl");
        for end in ["ctl.in", "ctl.out"] {
            make_fifo(&dir.join(end))?;
        }
        let mut cmd = Command::new(&qemu);
        cmd.args(["-accel", "tcg", "-cpu", cpu, "-smp", "2", "-m", "1536"])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-monitor", "none", "-serial"])
            .arg(format!("file:{}", dir.join("console.log").display()))
            .arg("-serial")
            .arg(format!("pipe:{}", ctl.display()))
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args(export("hostroot", Path::new("/"), true))
            .args(export("hostusr", Path::new("/usr"), true))
            .args(export("build", build, true))
            .args(export("work", dir, false));
        let log = std::fs::File::create(dir.join("qemu.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let start = Instant::now();
        let ended = spawn_keeper(cmd)?;
        wait_ready(dir, &ended, start, limit)?;
        // QEMU holds both ends of the pipe open: this open does not block.
        let line = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("ctl.in"))
            .context("open the machine's control line")?;
        Ok(Vm {
            dir: dir.to_path_buf(),
            spool,
            ctl: Mutex::new((line, 0)),
            busybox: inside,
            ended,
            boot_time: start.elapsed(),
        })
    }

    fn tail(&self) -> String {
        tail(&self.dir)
    }

    /// Run `cmd` in the machine, for at most `limit`.
    pub fn run(&self, cmd: &Command, limit: Duration) -> Result<Output> {
        let mut ctl = self.ctl.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(how) = self.ended.lock().unwrap().clone() {
            bail!("the machine is gone (qemu {how}); {}", self.tail());
        }
        let n = ctl.1;
        ctl.1 += 1;
        let base = self.spool.join(n.to_string());
        let file = |ext: &str| base.with_extension(ext);
        let tmp = file("tmp");
        std::fs::write(&tmp, script(cmd, &self.busybox, limit)?)?;
        std::fs::rename(&tmp, file("sh"))?;
        writeln!(ctl.0, "{n}").context("announce the request to the machine")?;
        let start = Instant::now();
        let what = format!("{:?}", cmd.get_program());
        while !file("status").exists() {
            if let Some(how) = self.ended.lock().unwrap().clone() {
                bail!("qemu {how} while {what} ran; {}", self.tail());
            }
            if start.elapsed() > limit + GRACE {
                let lost = format!(
                    "stopped answering: no status {} s after {what}'s limit",
                    GRACE.as_secs()
                );
                *self.ended.lock().unwrap() = Some(lost.clone());
                bail!("the machine {lost}; {}", self.tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let code: i32 = std::fs::read_to_string(file("status"))?
            .trim()
            .parse()
            .context("the machine's exit status")?;
        let out = Output {
            status: exit_status(code),
            stdout: std::fs::read(file("out"))?,
            stderr: std::fs::read(file("err"))?,
        };
        for ext in ["run", "out", "err", "status"] {
            let _ = std::fs::remove_file(file(ext));
        }
        if out.status.signal() == Some(libc::SIGKILL) && start.elapsed() >= limit {
            bail!("{what} timed out after {} s", limit.as_secs());
        }
        Ok(out)
    }
}

/// Wait until the machine's init serves the spool of work directory `dir`.
fn wait_ready(
    dir: &Path,
    ended: &Mutex<Option<String>>,
    start: Instant,
    limit: Duration,
) -> Result<()> {
    let ready = dir.join("spool/ready");
    while !ready.exists() {
        if let Some(how) = ended.lock().unwrap().clone() {
            bail!("qemu {how} while booting; {}", tail(dir));
        }
        if start.elapsed() > limit {
            bail!(
                "qemu did not boot within {} s (FAASFUSE_VM_BOOT_TIMEOUT); {}",
                limit.as_secs(),
                tail(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The last lines of the console and of QEMU's output in work directory
/// `dir`, on one line.
fn tail(dir: &Path) -> String {
    let mut parts = Vec::new();
    for name in ["console.log", "qemu.log"] {
        let text = std::fs::read(dir.join(name)).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines[lines.len().saturating_sub(5)..].join(" | ");
        parts.push(format!(
            "{name}: {}",
            if last.is_empty() { "(empty)" } else { &last }
        ));
    }
    parts.join("; ")
}

fn make_fifo(p: &Path) -> Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mkfifo {}", p.display()));
    }
    Ok(())
}

/// The arguments that export host directory `dir` to the machine as 9p
/// tag `tag`.
fn export(tag: &str, dir: &Path, readonly: bool) -> Vec<OsString> {
    let mut fsdev = OsString::from(format!("local,id={tag},path="));
    // QEMU's option syntax escapes a comma by doubling it.
    let escaped = dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(Vec::new(), |mut v, &b| {
            v.push(b);
            if b == b',' {
                v.push(b',');
            }
            v
        });
    fsdev.push(OsStr::from_bytes(&escaped));
    fsdev.push(",security_model=none,multidevs=remap");
    if readonly {
        fsdev.push(",readonly=on");
    }
    vec![
        "-fsdev".into(),
        fsdev,
        "-device".into(),
        format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}").into(),
    ]
}

/// Start QEMU from a thread that lives as long as the process (QEMU dies
/// with that thread: `PR_SET_PDEATHSIG`), which records how QEMU ended.
fn spawn_keeper(mut cmd: Command) -> Result<Arc<Mutex<Option<String>>>> {
    let ended = Arc::new(Mutex::new(None));
    let record = ended.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pku-machine".into())
        .spawn(move || {
            let parent = std::process::id() as i32;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            let how = match child.wait() {
                Ok(s) => format!("exited ({s})"),
                Err(e) => format!("could not be waited for ({e})"),
            };
            *record.lock().unwrap() = Some(how);
        })?;
    rx.recv()?.context("start qemu-system-x86_64")?;
    Ok(ended)
}

/// The exit status the machine's shell reports (`128 + N` for a command
/// killed by signal N) as a wait status.
fn exit_status(code: i32) -> ExitStatus {
    if code > 128 && code <= 128 + 64 {
        ExitStatus::from_raw(code - 128)
    } else {
        ExitStatus::from_raw((code & 0xff) << 8)
    }
}

/// The script the machine runs for `cmd`: its first line carries the
/// limit in seconds (init reads it), then the working directory and the
/// environment the command would have on the host.
fn script(cmd: &Command, busybox: &Path, limit: Duration) -> Result<Vec<u8>> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => env.insert(k.to_owned(), v.to_owned()),
            None => env.remove(k),
        };
    }
    let here = std::env::current_dir().context("the current directory")?;
    let cwd = match cmd.get_current_dir() {
        Some(d) => here.join(d),
        None => here,
    };
    let mut s = format!("# limit {}\ncd ", limit.as_secs().max(1)).into_bytes();
    s.extend(quote(cwd.as_os_str()));
    s.extend_from_slice(b" || exit 127\nexec ");
    s.extend(quote(busybox.as_os_str()));
    s.extend_from_slice(b" env -i --");
    for (k, v) in &env {
        let mut kv = k.clone();
        kv.push("=");
        kv.push(v);
        s.push(b' ');
        s.extend(quote(&kv));
    }
    for a in std::iter::once(cmd.get_program()).chain(cmd.get_args()) {
        s.push(b' ');
        s.extend(quote(a));
    }
    s.push(b'\n');
    Ok(s)
}

/// `s` as one shell word.
fn quote(s: &OsStr) -> Vec<u8> {
    let mut q = vec![b'\''];
    for &b in s.as_bytes() {
        if b == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(b);
        }
    }
    q.push(b'\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_quote_every_word_and_carry_the_limit() {
        let mut cmd = Command::new("/bin/echo");
        cmd.arg("it's")
            .arg("a b")
            .env("FOO", "x'y")
            .current_dir("/");
        // `env env -i -- ...` runs as `busybox env -i -- ...` does.
        let bb = Path::new("/usr/bin/env");
        let s = String::from_utf8(script(&cmd, bb, Duration::from_secs(7)).unwrap()).unwrap();
        assert!(s.starts_with("# limit 7\ncd '/' || exit 127\n"), "{s}");
        assert!(s.contains(" 'FOO=x'\\''y' "), "{s}");
        assert!(
            s.trim_end().ends_with(" '/bin/echo' 'it'\\''s' 'a b'"),
            "{s}"
        );
        let out = Command::new("sh").arg("-c").arg(&s).output().unwrap();
        assert_eq!(out.stdout, b"it's a b\n");
    }

    #[test]
    fn shell_statuses_read_as_wait_statuses() {
        assert_eq!(exit_status(0).code(), Some(0));
        assert_eq!(exit_status(3).code(), Some(3));
        assert_eq!(exit_status(139).signal(), Some(libc::SIGSEGV));
        assert_eq!(exit_status(137).signal(), Some(libc::SIGKILL));
    }
}
