//! Child processes that cannot outlive faasfuse: each runs in a process
//! group of its own, dies with this process (`PR_SET_PDEATHSIG`), is killed
//! with everything it started when it finishes or runs out of time, and is
//! killed too when faasfuse is interrupted (see
//! [`crate::output::install_signal_cleanup`]).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

/// How a contained child ended.
pub struct Contained {
    /// `None` when it ran out of time and was killed.
    pub status: Option<ExitStatus>,
    /// The first 64 KiB of its standard error.
    pub stderr: String,
}

/// Run `cmd` (stdin and stdout closed, stderr captured) contained as the
/// module says, for at most `limit`. `inherit_fd`, when not -1, stays open
/// in the child across `exec`.
pub fn run_contained(mut cmd: Command, inherit_fd: i32, limit: Duration) -> Result<Contained> {
    let parent = std::process::id() as i32;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if inherit_fd >= 0 {
                libc::fcntl(inherit_fd, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id() as i32;
    crate::output::set_child_group(pgid);
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.take(64 << 10).read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The group goes, whatever the child started.
    // SAFETY: kill of the child's own process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    crate::output::set_child_group(0);
    let stderr = if status.is_some() {
        reader.join().unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Contained { status, stderr })
}
