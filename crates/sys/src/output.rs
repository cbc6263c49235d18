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

use crate::error::{InputError, OutputError};

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A hidden temporary path in the directory of `path` (same file system, so
/// a rename onto `path` is atomic), unique to this process and call.
pub fn sibling_temp(path: &Path, tag: &str) -> Result<PathBuf> {
    temp_in(&dir_of(path), path, tag)
}

/// A hidden temporary path for `path` in directory `dir`, unique to this
/// process and call.
fn temp_in(dir: &Path, path: &Path, tag: &str) -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let file = path
        .file_name()
        .ok_or_else(|| InputError::new(path, "output path has no file name"))?;
    Ok(dir.join(format!(
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
        Err(e) => Err(OutputError::write(path, e).into()),
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
        r.map_err(|e| OutputError::write(dest, e))?;
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
        Staged::create_in(&dir_of(dest), dest, executable)
    }

    /// Start writing `dest` as an unnamed file in directory `dir`, which
    /// must be on the file system `dest` will be on (`dest`'s directory
    /// may not exist yet).
    pub fn create_in(dir: &Path, dest: &Path, executable: bool) -> Result<Staged> {
        check_destination(dest)?;
        let mode = if executable { 0o755 } else { 0o644 };
        let cannot = |e: std::io::Error| -> anyhow::Error { OutputError::write(dest, e).into() };
        let dir = dir.to_path_buf();
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
                let named = NamedTemp::new(temp_in(&dir, dest, "staged")?);
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

    /// Where the file goes.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Write everything, sync, and give the file its name.
    pub fn commit(self) -> Result<()> {
        let dest = self.dest.clone();
        self.commit_to(&dest)
    }

    /// [`Staged::commit`] under the name `dest` instead.
    fn commit_to(mut self, dest: &Path) -> Result<()> {
        // A deliberate internal error while an output is staged, for the
        // test that proves a panic exits 101 and leaves nothing behind.
        if std::env::var_os("FAASFUSE_INJECT_PANIC").is_some_and(|v| v == "commit") {
            panic!(
                "injected before committing {} (FAASFUSE_INJECT_PANIC=commit)",
                dest.display()
            );
        }
        let dest = dest.to_path_buf();
        let cannot = |e: std::io::Error| -> anyhow::Error { OutputError::write(&dest, e).into() };
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

/// Start writing `file`'s dirty pages to disk without waiting for them:
/// the sync before the file gets its name then waits for less. Only a
/// hint; an error is ignored (the sync reports what matters).
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range on a descriptor we own; it reads no memory.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
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
            .map_err(|e| OutputError::write(path, e))?;
    }
    s.commit()
}

/// Write each `(path, bytes, executable)`: every file is staged before any
/// gets its name, so an error (a missing directory, a full disk) leaves
/// none of them written.
pub fn write_all_atomically(files: &[(&Path, &[u8], bool)]) -> Result<()> {
    let mut staged = Vec::new();
    for (path, bytes, executable) in files {
        let mut s = Staged::create(path, *executable)?;
        s.file()
            .write_all(bytes)
            .map_err(|e| OutputError::write(path, e))?;
        staged.push(s);
    }
    commit_all(staged)
}

/// Give staged files their names in order, with signals blocked.
pub fn commit_all(files: Vec<Staged>) -> Result<()> {
    with_signals_blocked(|| files.into_iter().try_for_each(Staged::commit))
}

// ---- a directory of outputs -------------------------------------------------

/// The files of one output directory (`build --out-dir`), given their names
/// all together once every one is complete, or not at all.
///
/// Each file is staged as an unnamed file (see [`Staged`]) in the directory
/// or, while it does not exist, in its nearest existing ancestor (the file
/// system it will be on). [`StagedDir::commit`] then, with signals blocked,
/// either renames a hidden directory holding every file onto the directory,
/// which so appears whole, or, when the directory exists, renames the files
/// into it one after another, in the order they were added. Dropped
/// uncommitted, it leaves nothing behind, and the directory as it was.
pub struct StagedDir {
    dir: PathBuf,
    /// Where the unnamed files live.
    base: PathBuf,
    exists: bool,
    files: Vec<Staged>,
}

impl StagedDir {
    /// Stage the files of `dir`, which must be a directory or absent.
    pub fn new(dir: &Path) -> Result<StagedDir> {
        let bad = |why: String| -> anyhow::Error { InputError::new(dir, why).into() };
        if dir.file_name().is_none() && std::fs::metadata(dir).is_err() {
            return Err(bad("output directory path has no name".into()));
        }
        let (base, exists) = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => (dir.to_path_buf(), true),
            Ok(m) => {
                return Err(bad(format!(
                    "the output directory is {}, not a directory",
                    crate::files::kind_of(&m)
                )))
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                let abs = std::path::absolute(dir)
                    .map_err(|e| bad(format!("cannot use as output directory: {e}")))?;
                let base = abs
                    .ancestors()
                    .skip(1)
                    .find(|a| std::fs::symlink_metadata(a).is_ok())
                    .unwrap_or(Path::new("/"))
                    .to_path_buf();
                match std::fs::metadata(&base) {
                    Ok(m) if m.is_dir() => (base, false),
                    Ok(m) => {
                        return Err(bad(format!(
                            "cannot create the output directory: {} is {}",
                            base.display(),
                            crate::files::kind_of(&m)
                        )))
                    }
                    Err(e) => {
                        return Err(bad(format!(
                            "cannot create the output directory: {}: {e}",
                            base.display()
                        )))
                    }
                }
            }
            Err(e) => return Err(bad(format!("cannot use as output directory: {e}"))),
        };
        raise_open_file_limit();
        Ok(StagedDir {
            dir: dir.to_path_buf(),
            base,
            exists,
            files: Vec::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Start writing file `name` of the directory (add it when complete).
    pub fn create(&self, name: &str, executable: bool) -> Result<Staged> {
        Staged::create_in(&self.base, &self.dir.join(name), executable)
    }

    /// Add a complete file; files get their names in the order added.
    pub fn add(&mut self, file: Staged) {
        self.files.push(file);
    }

    /// Stage and add file `name` holding `bytes`.
    pub fn write(&mut self, name: &str, bytes: &[u8], executable: bool) -> Result<()> {
        let mut s = self.create(name, executable)?;
        s.file()
            .write_all(bytes)
            .map_err(|e| OutputError::write(self.dir.join(name), e))?;
        self.add(s);
        Ok(())
    }

    /// Give every file its name (see [`StagedDir`]).
    pub fn commit(self) -> Result<()> {
        if self.exists {
            return commit_all(self.files);
        }
        let dir = self.dir;
        let files = self.files;
        let cannot = |e: std::io::Error| -> anyhow::Error {
            InputError::new(&dir, format!("cannot create the output directory: {e}")).into()
        };
        with_signals_blocked(|| {
            let parent = dir_of(&dir);
            std::fs::create_dir_all(&parent).map_err(cannot)?;
            let hidden = temp_in(&parent, &dir, "building")?;
            std::fs::create_dir(&hidden).map_err(cannot)?;
            let r = files.into_iter().try_for_each(|f| {
                let name = f.dest().file_name().map(PathBuf::from).unwrap_or_default();
                f.commit_to(&hidden.join(name))
            });
            let r = r.and_then(|()| std::fs::rename(&hidden, &dir).map_err(cannot));
            if r.is_err() {
                let _ = std::fs::remove_dir_all(&hidden);
            }
            r
        })
    }
}

/// Let this process hold as many open files as it may (a staged output
/// directory keeps one descriptor per file until it commits).
fn raise_open_file_limit() {
    // SAFETY: getrlimit and setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---- outputs that name one file ---------------------------------------------

/// Where `path` would be written: its directory with symbolic links
/// resolved as far as it exists (the rest taken as written, `.` and `..`
/// applied), then its name.
pub fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return abs;
    };
    for a in parent.ancestors() {
        let Ok(mut p) = a.canonicalize() else {
            continue;
        };
        for c in parent.strip_prefix(a).unwrap_or(Path::new("")).components() {
            match c {
                std::path::Component::ParentDir => {
                    p.pop();
                }
                std::path::Component::Normal(n) => p.push(n),
                _ => {}
            }
        }
        return p.join(name);
    }
    abs
}

/// Refuse two outputs of one command that name one file: the same
/// directory and name once resolved (see [`resolved`]), or, for files that
/// exist, the same device and inode (hard links). `outputs` are (what the
/// command calls it, path); the error names the later path and both.
pub fn check_distinct(outputs: &[(&str, &Path)]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut by_path: std::collections::HashMap<PathBuf, usize> = Default::default();
    let mut by_inode: std::collections::HashMap<(u64, u64), usize> = Default::default();
    for (j, (what, path)) in outputs.iter().enumerate() {
        let mut first = by_path.insert(resolved(path), j);
        if let Ok(m) = std::fs::metadata(path) {
            first = first.or(by_inode.insert((m.dev(), m.ino()), j));
        }
        if let Some(i) = first {
            return Err(InputError::new(
                path,
                format!(
                    "{} and {what} name the same file; give each output a file of its own",
                    outputs[i].0
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Write a report to standard output. A reader that went away (`| head`)
/// ends the report quietly, as a closed pipe ends any Unix filter; any
/// other failure (a full disk, a bad descriptor) is an output error naming
/// standard output, not a panic.
pub fn to_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(crate::error::OutputError::write("standard output", e).into())
        }
        _ => Ok(()),
    }
}
