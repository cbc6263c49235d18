//! Reading input files safely: only regular files (a FIFO or device never
//! blocks or streams forever), sizes checked before reading, magic checked
//! before the bulk of a file is read. Every file read is remembered so that
//! an output never replaces one of the command's own inputs.
//!
//! Large inputs (ELF images) are mapped rather than copied ([`map_checked`]):
//! a private, read-only mapping of the file as it was opened, read from the
//! page cache only where it is touched. A mapped input that shrinks while
//! it is read (truncated or rewritten in place) ends the process with one
//! line naming it and exit code 2, never a bare SIGBUS. (A file replaced by
//! renaming a new one over it, as linkers and package managers do, never
//! changes under a mapping.)

use std::fs::{File, Metadata};
use std::io::Read;
use std::ops::{Deref, Range};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::InputError;

/// Largest ELF input read (the biggest benchmark pair is 2 x 117 MB).
pub const MAX_ELF_BYTES: u64 = 4 << 30;
/// Largest text or JSON input read (configs, profiles, plans, weights).
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

static INPUTS: Mutex<Vec<(u64, u64, PathBuf)>> = Mutex::new(Vec::new());

/// Remember that `meta` (of `path`) is an input of this command.
pub fn note_input(path: &Path, meta: &Metadata) {
    if let Ok(mut v) = INPUTS.lock() {
        if !v
            .iter()
            .any(|(d, i, _)| *d == meta.dev() && *i == meta.ino())
        {
            v.push((meta.dev(), meta.ino(), path.to_path_buf()));
        }
    }
}

/// The input that is the same file (device and inode) as `meta`, if any.
pub fn input_like(meta: &Metadata) -> Option<PathBuf> {
    INPUTS.lock().ok().and_then(|v| {
        v.iter()
            .find(|(d, i, _)| *d == meta.dev() && *i == meta.ino())
            .map(|(_, _, p)| p.clone())
    })
}

/// Inputs opened to tell what they hold (their first bytes read), kept
/// open for the reader that follows: each is opened once per command.
static KEPT: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// Keep `file`, opened as `path`, for [`take_kept`].
pub fn keep_open(path: &Path, file: File) {
    if let Ok(mut v) = KEPT.lock() {
        v.push((path.to_path_buf(), file));
    }
}

/// The file [`keep_open`] kept for `path`, read from its start again.
pub fn take_kept(path: &Path) -> Option<File> {
    use std::io::{Seek, SeekFrom};
    let mut v = KEPT.lock().ok()?;
    let i = v.iter().position(|(p, _)| p == path)?;
    let (_, mut f) = v.swap_remove(i);
    f.seek(SeekFrom::Start(0)).ok()?;
    Some(f)
}

/// What kind of non-regular file `meta` is, for messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => format!("cannot read: {e}"),
    }
}

/// Open `path` for reading as a regular file of at most `max` bytes; the
/// open never blocks (FIFOs are opened non-blocking and then refused).
pub fn open_regular(path: &Path, max: u64, what: &str) -> Result<(File, u64), InputError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| InputError::new(path, io_reason(&e)))?;
    let meta = f
        .metadata()
        .map_err(|e| InputError::new(path, io_reason(&e)))?;
    if meta.is_dir() {
        return Err(InputError::new(path, format!("is a directory, not {what}")));
    }
    if !meta.is_file() {
        return Err(InputError::new(
            path,
            format!(
                "is {}, not a regular file ({what} is read from a file)",
                kind_of(&meta)
            ),
        ));
    }
    if meta.len() > max {
        return Err(InputError::new(
            path,
            format!(
                "{} bytes: larger than the {max}-byte limit for {what}",
                meta.len()
            ),
        ));
    }
    // Back to blocking reads (a regular file never blocks anyway).
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    note_input(path, &meta);
    Ok((f, meta.len()))
}

/// Read the whole regular file `path` (at most `max` bytes); `check_head`
/// judges its first bytes (up to 64) before the rest is read.
pub fn read_checked(
    path: &Path,
    max: u64,
    what: &str,
    check_head: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Result<Vec<u8>, InputError> {
    let (f, len) = open_regular(path, max, what)?;
    read_open(f, len, path, max, what, check_head)
}

/// The bytes of a whole input file, shared read-only: a private mapping of
/// the file, or bytes held in memory (a file that cannot be mapped, or
/// bytes made by the program).
pub struct FileBytes {
    inner: Inner,
    /// The version of the file the bytes were read from, if from a file.
    version: Option<FileVersion>,
}

/// What tells one version of a file from another: its device and inode (a
/// new file renamed over the path), its size and its modification and
/// change times (the file rewritten in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileVersion {
    pub fn of(meta: &Metadata) -> FileVersion {
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The version of the file at `path` now (`None` if it cannot be
    /// read).
    pub fn now(path: &Path) -> Option<FileVersion> {
        std::fs::metadata(path).ok().map(|m| FileVersion::of(&m))
    }
}

enum Inner {
    Owned(Vec<u8>),
    Mapped {
        ptr: std::ptr::NonNull<u8>,
        len: usize,
        /// The fault-guard slot that names the file, if one was free.
        slot: Option<usize>,
        /// The file, open, for copies the kernel makes file to file.
        file: File,
    },
}

// SAFETY: a mapped file is never written through (PROT_READ) and is
// unmapped only when the owner is dropped; sharing `&[u8]` views of it
// between threads is as sound as sharing a `Vec<u8>`'s.
unsafe impl Send for FileBytes {}
// SAFETY: as above.
unsafe impl Sync for FileBytes {}

impl FileBytes {
    /// The bytes (as `Vec::as_slice`).
    pub fn as_slice(&self) -> &[u8] {
        self
    }

    /// The version of the file the bytes were mapped from (`None` for
    /// bytes not mapped from a file).
    pub fn version(&self) -> Option<FileVersion> {
        self.version
    }

    /// Whether the bytes are a mapping of the file (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Mapped { .. })
    }

    /// Tell the kernel that `range` will not be read again soon: the pages
    /// of a mapping wholly inside it leave this process's resident memory
    /// (the page cache keeps them; a later read maps them back, with the
    /// same contents). Changes memory use, never the bytes.
    pub fn release(&self, range: Range<usize>) {
        let Inner::Mapped { ptr, len, .. } = self.inner else {
            return;
        };
        let page = page_size();
        let start = range.start.min(len).next_multiple_of(page);
        let end = if range.end >= len {
            len.next_multiple_of(page)
        } else {
            range.end & !(page - 1)
        };
        if end > start {
            // SAFETY: [start, end) lies inside the mapping this value owns
            // (its last page included); MADV_DONTNEED on a private mapping
            // that was never written drops page-table entries only: a later
            // access reads the file's page again.
            unsafe {
                libc::madvise(
                    ptr.as_ptr().add(start).cast(),
                    end - start,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

impl FileBytes {
    /// Fill `dst` with the bytes from offset `from` on, releasing
    /// ([`FileBytes::release`]) each part of a mapping once it is copied:
    /// copying a whole file costs a few megabytes of resident memory, not
    /// its size.
    ///
    /// Panics if the range is out of bounds, as slicing does.
    pub fn copy_out(&self, from: usize, dst: &mut [u8]) {
        const PART: usize = 4 << 20;
        let src = &self[from..from + dst.len()];
        for (i, (d, s)) in dst.chunks_mut(PART).zip(src.chunks(PART)).enumerate() {
            d.copy_from_slice(s);
            let at = from + i * PART;
            self.release(at..at + s.len());
        }
    }
}

impl FileBytes {
    /// Write the bytes `from..from + len` into `out` at offset `at`. From a
    /// mapped file the kernel copies them file to file (no pass through this
    /// process's memory); where it cannot (another file system, an old
    /// kernel), and for bytes held in memory, they are written.
    ///
    /// Panics if the range is out of bounds, as slicing does.
    pub fn copy_to(&self, from: usize, len: usize, out: &File, at: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let src = &self[from..from + len];
        let Inner::Mapped { file, .. } = &self.inner else {
            return out.write_all_at(src, at);
        };
        let done = kernel_copy(file, from as u64, out, at, len)?;
        out.write_all_at(&src[done..], at + done as u64)
    }
}

/// Copy up to `len` bytes of `src` from `from` into `dst` at `at` with
/// `copy_file_range`; how many were copied before the kernel declined
/// (the rest is the caller's to write). A source that ends early changed
/// while it was read: an error.
fn kernel_copy(src: &File, from: u64, dst: &File, at: u64, len: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut done = 0usize;
    while done < len {
        let mut off_in = (from + done as u64) as libc::loff_t;
        let mut off_out = (at + done as u64) as libc::loff_t;
        // SAFETY: both descriptors are open files this process owns; the
        // offsets are passed by pointer and the files' own offsets untouched.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                len - done,
                0,
            )
        };
        match n {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "input changed while being read (it is shorter than when opened)",
                ))
            }
            n if n > 0 => done += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(
                        libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF,
                    ) => break,
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(done)
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Owned(v) => v,
            // SAFETY: the mapping is `len` readable bytes, alive as long as
            // `self`.
            Inner::Mapped { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
        }
    }
}

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(v: Vec<u8>) -> FileBytes {
        FileBytes {
            inner: Inner::Owned(v),
            version: None,
        }
    }
}

impl Default for FileBytes {
    fn default() -> FileBytes {
        Vec::new().into()
    }
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileBytes({} bytes, {})",
            self.len(),
            if self.is_mapped() { "mapped" } else { "owned" }
        )
    }
}

impl Drop for FileBytes {
    fn drop(&mut self) {
        if let Inner::Mapped { ptr, len, slot, .. } = self.inner {
            if let Some(i) = slot {
                guard::forget(i);
            }
            // SAFETY: the mapping was made by `map_checked` with this
            // address and length, and no view of it outlives `self`.
            unsafe {
                libc::munmap(ptr.as_ptr().cast(), len);
            }
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// The whole regular file `path` (at most `max` bytes) without copying it:
/// a private, read-only mapping of its `len` bytes as opened. `check_head`
/// judges its first bytes (up to 64) before the rest is touched. A file
/// whose size reads as 0 (procfs) or that cannot be mapped is read instead,
/// as [`read_checked`] reads it.
pub fn map_checked(
    path: &Path,
    max: u64,
    what: &str,
    check_head: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Result<FileBytes, InputError> {
    let (f, len) = open_regular(path, max, what)?;
    let version = f.metadata().ok().map(|m| FileVersion::of(&m));
    let read = |f: File, check_head| {
        read_open(f, len, path, max, what, check_head).map(|v| FileBytes {
            inner: Inner::Owned(v),
            version,
        })
    };
    let size = match usize::try_from(len) {
        Ok(size) if size > 0 => size,
        _ => return read(f, check_head),
    };
    let bytes = match map_file(f, size, path, version) {
        Ok(bytes) => bytes,
        Err(f) => return read(f, check_head),
    };
    check_head(&bytes[..size.min(64)]).map_err(|r| InputError::new(path, r))?;
    Ok(bytes)
}

/// A private, read-only mapping of the `size` bytes of the open regular
/// file `f` (named `path` in fault messages); `f` back if it cannot be mapped.
fn map_file(
    f: File,
    size: usize,
    path: &Path,
    version: Option<FileVersion>,
) -> Result<FileBytes, File> {
    use std::os::fd::AsRawFd;
    // SAFETY: a new private read-only mapping of an open regular file; the
    // kernel chooses the address, so nothing else is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    let ptr = match std::ptr::NonNull::new(p.cast::<u8>()) {
        Some(ptr) if p != libc::MAP_FAILED => ptr,
        _ => return Err(f),
    };
    let slot = guard::register(ptr.as_ptr() as usize, size, path);
    Ok(FileBytes {
        inner: Inner::Mapped {
            ptr,
            len: size,
            slot,
            file: f,
        },
        version,
    })
}

/// The bytes of an output this process has written to `file` (named
/// `path`), to read back without copying them: a mapping of the file as it
/// is now, or its bytes read when it cannot be mapped. Not an input.
pub fn map_written(file: &File, path: &Path) -> std::io::Result<FileBytes> {
    let len = file.metadata()?.len();
    let size = usize::try_from(len).map_err(|_| std::io::Error::other("file too large"))?;
    let read = |f: &File| {
        let mut v = vec![0u8; size];
        std::os::unix::fs::FileExt::read_exact_at(f, &mut v, 0)?;
        Ok(FileBytes::from(v))
    };
    if size == 0 {
        return read(file);
    }
    map_file(file.try_clone()?, size, path, None).or_else(|f| read(&f))
}

/// Faults in mapped inputs: the file shrank after it was mapped (pages past
/// its new end raise SIGBUS). The handler names the file and exits 2; a
/// SIGBUS anywhere else goes to the handler that was there before.
mod guard {
    use super::*;

    const SLOTS: usize = 256;
    /// Start and length of each registered mapping (0: free).
    static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    /// Each slot's message, a leaked boxed slice (null: none).
    static MESSAGE: [AtomicPtr<u8>; SLOTS] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
    static MESSAGE_LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    /// The disposition before ours.
    static PREVIOUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();
    static INSTALL: std::sync::Once = std::sync::Once::new();

    /// Guard the mapping `[start, start + len)` of `path`; the slot, or
    /// `None` when all are taken (a fault there is then a plain SIGBUS).
    pub(super) fn register(start: usize, len: usize, path: &Path) -> Option<usize> {
        INSTALL.call_once(install);
        let text = format!(
            "faasfuse: error: {}: changed while being read (truncated or rewritten in place, or no longer readable); replace an input by renaming a new file over it\n",
            crate::error::escape_controls(&path.display().to_string())
        )
        .into_bytes()
        .into_boxed_slice();
        for i in 0..SLOTS {
            if LEN[i]
                .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let n = text.len();
                let old = MESSAGE[i].swap(Box::into_raw(text).cast::<u8>(), Ordering::SeqCst);
                free_message(old, MESSAGE_LEN[i].swap(n, Ordering::SeqCst));
                START[i].store(start, Ordering::SeqCst);
                LEN[i].store(len, Ordering::SeqCst);
                return Some(i);
            }
        }
        None
    }

    /// Stop guarding slot `i` (its mapping is about to go).
    pub(super) fn forget(i: usize) {
        START[i].store(0, Ordering::SeqCst);
        LEN[i].store(0, Ordering::SeqCst);
    }

    fn free_message(p: *mut u8, len: usize) {
        if !p.is_null() {
            // SAFETY: p and len come from Box::into_raw of a boxed slice in
            // `register`, swapped out of its slot so freed once.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) });
        }
    }

    fn install() {
        // SAFETY: installing a handler with a zeroed, then filled
        // sigaction; the previous one is kept for chaining.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_bus
                as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &sa, &mut prev) == 0 {
                let _ = PREVIOUS.set(prev);
            }
        }
    }

    extern "C" fn on_bus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO
        // handler; si_addr is meaningful for faults (si_code > 0).
        let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        for i in 0..SLOTS {
            let (start, len) = (
                START[i].load(Ordering::SeqCst),
                LEN[i].load(Ordering::SeqCst),
            );
            if code > 0 && start != 0 && len != usize::MAX && addr >= start && addr - start < len {
                let msg = MESSAGE[i].load(Ordering::SeqCst);
                let n = MESSAGE_LEN[i].load(Ordering::SeqCst);
                // SAFETY: write(2) and _exit(2) are async-signal-safe; the
                // message lives while its mapping is registered, and the
                // faulting thread is reading that mapping.
                unsafe {
                    if !msg.is_null() {
                        libc::write(2, msg.cast(), n);
                    }
                    libc::_exit(crate::error::EXIT_BAD_INPUT);
                }
            }
        }
        // Not a mapped input: put back the disposition that was there. A
        // fault meets it when the access runs again on return; a signal
        // sent with kill(2) is sent again.
        // SAFETY: sigaction, signal and raise are async-signal-safe;
        // PREVIOUS is set before the handler is installed and never
        // changes.
        unsafe {
            match PREVIOUS.get() {
                Some(prev) => libc::sigaction(sig, prev, std::ptr::null_mut()),
                None => {
                    libc::signal(sig, libc::SIG_DFL);
                    0
                }
            };
            if code <= 0 {
                libc::raise(sig);
            }
        }
        let _ = ctx;
    }
}

/// The rest of [`read_checked`], on a file already opened.
fn read_open(
    f: File,
    len: u64,
    path: &Path,
    max: u64,
    what: &str,
    check_head: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut limited = f.take(max.saturating_add(1));
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        match limited.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(InputError::new(path, io_reason(&e))),
        }
    }
    check_head(&head[..n]).map_err(|r| InputError::new(path, r))?;
    bytes.extend_from_slice(&head[..n]);
    limited
        .read_to_end(&mut bytes)
        .map_err(|e| InputError::new(path, io_reason(&e)))?;
    if bytes.len() as u64 > max {
        return Err(InputError::new(
            path,
            format!("larger than the {max}-byte limit for {what}"),
        ));
    }
    Ok(bytes)
}

/// Read the whole regular file `path` (at most `max` bytes).
pub fn read(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, InputError> {
    read_checked(path, max, what, |_| Ok(()))
}

/// Read `path` as UTF-8 text (at most [`MAX_TEXT_BYTES`]).
pub fn read_text(path: &Path, what: &str) -> Result<String, InputError> {
    utf8(path, read(path, MAX_TEXT_BYTES, what)?, what)
}

/// [`read_text`] of a file an output may replace (not noted as an input).
pub fn read_text_unnoted(path: &Path, what: &str) -> Result<String, InputError> {
    let bytes = read(path, MAX_TEXT_BYTES, what)?;
    if let Ok(m) = std::fs::metadata(path) {
        forget_input(&m);
    }
    utf8(path, bytes, what)
}

/// Forget that `meta` is an input.
pub fn forget_input(meta: &Metadata) {
    if let Ok(mut v) = INPUTS.lock() {
        v.retain(|(d, i, _)| !(*d == meta.dev() && *i == meta.ino()));
    }
}

fn utf8(path: &Path, bytes: Vec<u8>, what: &str) -> Result<String, InputError> {
    String::from_utf8(bytes).map_err(|e| {
        InputError::new(
            path,
            format!(
                "not UTF-8 text (at byte {}), not {what}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes (each its offset's low byte) in a fresh
    /// directory.
    fn file(name: &str, len: usize) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("faasfuse-files-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, (0..len).map(|i| i as u8).collect::<Vec<u8>>()).unwrap();
        p
    }

    #[test]
    fn maps_regular_files_and_refuses_the_rest() {
        let p = file("m.bin", 3 * 4096 + 100);
        let b = map_checked(&p, 1 << 20, "a test file", |h| {
            assert_eq!(h.len(), 64);
            Ok(())
        })
        .unwrap();
        assert!(b.is_mapped());
        assert_eq!(b.len(), 3 * 4096 + 100);
        assert!(b.iter().enumerate().all(|(i, &x)| x == i as u8));
        // Released pages read the same again; copies are whole.
        b.release(0..b.len());
        assert_eq!(b[4096 + 7], (4096 + 7) as u8);
        let mut out = vec![0u8; b.len() - 10];
        b.copy_out(10, &mut out);
        assert!(out.iter().enumerate().all(|(i, &x)| x == (i + 10) as u8));
        assert_eq!(&b[..], &read(&p, 1 << 20, "a test file").unwrap()[..]);

        let err = |r: Result<FileBytes, InputError>| r.unwrap_err().reason;
        assert!(err(map_checked(&p, 100, "a test file", |_| Ok(()))).contains("limit"));
        assert!(
            err(map_checked(&p, 1 << 20, "x", |_| Err("bad magic".into()))).contains("bad magic")
        );
        assert!(
            err(map_checked(p.parent().unwrap(), 1 << 20, "x", |_| Ok(()))).contains("directory")
        );
        // An empty file is read (and judged) as before.
        let e = file("e.bin", 0);
        let mut seen = None;
        let b = map_checked(&e, 1 << 20, "x", |h| {
            seen = Some(h.len());
            Ok(())
        })
        .unwrap();
        assert_eq!((b.len(), seen, b.is_mapped()), (0, Some(0), false));
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
        let _ = std::fs::remove_dir_all(e.parent().unwrap());
    }

    /// Copies into another file are whole: made by the kernel file to file
    /// (same file system), written from the mapping where the kernel
    /// declines (/dev/shm is tmpfs, another file system than the temporary
    /// directory on most machines), written from memory for owned bytes. A
    /// source cut short under the kernel's copy is an error, not a short
    /// copy.
    #[test]
    fn copies_into_other_files_are_whole() {
        let p = file("c.bin", 5 * 4096 + 123);
        let b = map_checked(&p, 1 << 20, "a test file", |_| Ok(())).unwrap();
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "/dev/shm (tmpfs) is needed for this test");
        let other = shm.join(format!("faasfuse-files-{}-c.out", std::process::id()));
        let owned = FileBytes::from(b.to_vec());
        for (src, dst) in [
            (&b, p.with_file_name("c.out")),
            (&b, other.clone()),
            (&owned, p.with_file_name("o.out")),
        ] {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&dst)
                .unwrap();
            src.copy_to(100, src.len() - 107, &f, 4099).unwrap();
            let got = std::fs::read(&dst).unwrap();
            assert_eq!(got.len(), 4099 + src.len() - 107, "{dst:?}");
            assert!(got[..4099].iter().all(|&x| x == 0), "{dst:?}");
            assert_eq!(&got[4099..], &src[100..src.len() - 7], "{dst:?}");
        }
        let _ = std::fs::remove_file(&other);
        // Cut short: the kernel's copy reaches the new end and says so.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let f = std::fs::File::create(p.with_file_name("s.out")).unwrap();
        let e = b.copy_to(0, 3 * 4096, &f, 0).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        drop(b);
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    const CHILD: &str = "FAASFUSE_FILES_TEST_TRUNCATE";

    /// An input cut short while it is mapped ends the process with one line
    /// naming it and exit code 2, not a SIGBUS.
    #[test]
    fn an_input_truncated_while_mapped_is_an_input_error() {
        if let Ok(p) = std::env::var(CHILD) {
            let p = PathBuf::from(p);
            let b = map_checked(&p, 1 << 20, "a test file", |_| Ok(())).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(0)
                .unwrap();
            let x = std::hint::black_box(b[3 * 4096 + 5]);
            panic!("read {x} past the end of the file");
        }
        let p = file("t.bin", 4 * 4096);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "files::tests::an_input_truncated_while_mapped_is_an_input_error",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, &p)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(crate::error::EXIT_BAD_INPUT),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "faasfuse: error: {}: changed while being read",
                p.display()
            )),
            "{stderr}"
        );
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    const RAISE: &str = "FAASFUSE_FILES_TEST_RAISE";

    /// A SIGBUS from elsewhere (here, kill(2)) is no input error: the
    /// process dies of it as without the guard.
    #[test]
    fn other_bus_errors_take_their_course() {
        if let Ok(p) = std::env::var(RAISE) {
            let b = map_checked(Path::new(&p), 1 << 20, "a test file", |_| Ok(())).unwrap();
            assert!(b.is_mapped());
            // Rust's own handler lets the first one pass; the next kills.
            for _ in 0..3 {
                // SAFETY: raising a signal at this process.
                unsafe { libc::raise(libc::SIGBUS) };
            }
            std::process::exit(0);
        }
        let p = file("r.bin", 4096);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "files::tests::other_bus_errors_take_their_course",
                "--test-threads=1",
            ])
            .env(RAISE, &p)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "{:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}
