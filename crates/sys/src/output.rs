//! Output files appear whole or not at all, only ever replace a regular
//! file, never replace one of the command's inputs, and leave nothing
//! behind when the command fails or is killed.
//!
//! An output is written to an unnamed file (`O_TMPFILE`) in the
//! destination's directory and given its name only when complete: linked
//! under a hidden name and renamed onto the destination with signals
//! blocked. Where the file system has no `O_TMPFILE`, a hidden named file
//! is used instead and removed on failure and on SIGINT, SIGTERM, SIGHUP,
//! SIGQUIT and SIGXFSZ ([`install_signal_cleanup`]).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};

use anyhow::Result;

use crate::error::InputError;

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A hidden temporary path in the directory of `path` (same file system, so
/// a rename onto `path` is atomic), unique to this process and call.
pub fn sibling_temp(path: &Path, tag: &str) -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let file = path
        .file_name()
        .ok_or_else(|| InputError::new(path, "output path has no file name"))?;
    Ok(dir_of(path).join(format!(
        ".{}.{tag}{}-{}",
        file.to_string_lossy(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Refuse `path` as an output unless it is absent or a regular file that is
/// not one of this command's inputs.
pub fn check_destination(path: &Path) -> Result<()> {
    if path.file_name().is_none() {
        return Err(InputError::new(path, "output path has no file name").into());
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(InputError::new(
            path,
            format!(
                "output is {}; faasfuse only replaces regular files",
                crate::files::kind_of(&m)
            ),
        )
        .into()),
        Ok(m) => match crate::files::input_like(&m) {
            Some(input) => Err(InputError::new(
                path,
                format!(
                    "output is the input {} (same file); refusing to overwrite an input",
                    input.display()
                ),
            )
            .into()),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InputError::new(path, format!("cannot write output: {e}")).into()),
    }
}

// ---- signal cleanup -------------------------------------------------------

const SLOTS: usize = 64;
static NAMED: [AtomicPtr<libc::c_char>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
/// Process group of a running child (the load test) to kill on a signal.
static CHILD_GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    for slot in &NAMED {
        let p = slot.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: unlink is async-signal-safe; p is a leaked CString.
            unsafe { libc::unlink(p) };
        }
    }
    let g = CHILD_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill, signal and raise are async-signal-safe.
    unsafe {
        if g > 0 {
            libc::kill(-g, libc::SIGKILL);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

const CLEANUP_SIGNALS: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGXFSZ,
];

/// Remove registered temporary files and kill the load-test child when the
/// process is interrupted or terminated, then die of the signal as before.
pub fn install_signal_cleanup() {
    for sig in CLEANUP_SIGNALS {
        // SAFETY: installing a handler that only calls async-signal-safe
        // functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Record the process group of a child to kill if this process is
/// interrupted (0: none).
pub fn set_child_group(pgid: i32) {
    CHILD_GROUP.store(pgid, Ordering::SeqCst);
}

/// A named temporary file, removed when dropped and on the signals of
/// [`install_signal_cleanup`].
pub struct NamedTemp {
    path: PathBuf,
    slot: Option<usize>,
}

impl NamedTemp {
    pub fn new(path: PathBuf) -> NamedTemp {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
        let raw = c.into_raw();
        let slot = NAMED.iter().position(|s| {
            s.compare_exchange(
                std::ptr::null_mut(),
                raw,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        });
        if slot.is_none() {
            // SAFETY: raw came from into_raw just above and was not stored.
            drop(unsafe { CString::from_raw(raw) });
        }
        NamedTemp { path, slot }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn forget_slot(&mut self) {
        if let Some(i) = self.slot.take() {
            let p = NAMED[i].swap(std::ptr::null_mut(), Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: p came from CString::into_raw in new.
                drop(unsafe { CString::from_raw(p) });
            }
        }
    }

    /// Rename onto `dest` (checked first); the temporary is gone either way.
    pub fn commit(mut self, dest: &Path) -> Result<()> {
        check_destination(dest)?;
        let r = with_signals_blocked(|| std::fs::rename(&self.path, dest));
        r.map_err(|e| InputError::new(dest, format!("cannot write output: {e}")))?;
        self.forget_slot();
        Ok(())
    }
}

impl Drop for NamedTemp {
    fn drop(&mut self) {
        if self.slot.is_some() || self.path.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
        self.forget_slot();
    }
}

fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset manipulation on local values.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in CLEANUP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// An output being written: an unnamed file in the destination's
/// directory (or a [`NamedTemp`] where `O_TMPFILE` is unsupported).
pub struct Staged {
    file: File,
    dest: PathBuf,
    named: Option<NamedTemp>,
}

impl Staged {
    /// Start writing `dest` (checked now and again at commit).
    pub fn create(dest: &Path, executable: bool) -> Result<Staged> {
        check_destination(dest)?;
        let mode = if executable { 0o755 } else { 0o644 };
        let cannot = |e: std::io::Error| -> anyhow::Error {
            InputError::new(dest, format!("cannot write output: {e}")).into()
        };
        let dir = dir_of(dest);
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(mode)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir)
        {
            Ok(file) => Ok(Staged {
                file,
                dest: dest.to_path_buf(),
                named: None,
            }),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let named = NamedTemp::new(sibling_temp(dest, "staged")?);
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(named.path())
                    .map_err(cannot)?;
                Ok(Staged {
                    file,
                    dest: dest.to_path_buf(),
                    named: Some(named),
                })
            }
            Err(e) => Err(cannot(e)),
        }
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// A path that opens the staged contents in this process (and in a
    /// child that inherits [`Staged::fd`]).
    pub fn read_path(&self) -> PathBuf {
        match &self.named {
            Some(n) => n.path().to_path_buf(),
            None => PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
        }
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Write everything, sync, and give the file its name.
    pub fn commit(mut self) -> Result<()> {
        let dest = self.dest.clone();
        let cannot = |e: std::io::Error| -> anyhow::Error {
            InputError::new(&dest, format!("cannot write output: {e}")).into()
        };
        self.file.flush().map_err(cannot)?;
        self.file.sync_all().map_err(cannot)?;
        if let Some(named) = self.named.take() {
            return named.commit(&dest);
        }
        check_destination(&dest)?;
        let tmp = sibling_temp(&dest, "staged")?;
        let from = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))?;
        let to = CString::new(tmp.as_os_str().as_bytes())?;
        let r = with_signals_blocked(|| {
            // SAFETY: linkat with valid C strings.
            let rc = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::rename(&tmp, &dest).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        });
        r.map_err(cannot)
    }
}

/// Write `bytes` to `path` atomically, executable when `executable`.
pub fn write_atomically(path: &Path, bytes: &[u8], executable: bool) -> Result<()> {
    write_parts_atomically(path, &[bytes], executable)
}

/// Write `parts` one after another to `path` atomically (a large text
/// built in parts need not be joined first), executable when
/// `executable`.
pub fn write_parts_atomically(
    path: &Path,
    parts: &[impl AsRef<[u8]>],
    executable: bool,
) -> Result<()> {
    let mut s = Staged::create(path, executable)?;
    for p in parts {
        s.file()
            .write_all(p.as_ref())
            .map_err(|e| InputError::new(path, format!("cannot write output: {e}")))?;
    }
    s.commit()
}
