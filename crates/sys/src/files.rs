//! Reading input files safely: only regular files (a FIFO or device never
//! blocks or streams forever), sizes checked before reading, magic checked
//! before the bulk of a file is read. Every file read is remembered so that
//! an output never replaces one of the command's own inputs.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
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
    let mut bytes = Vec::with_capacity(len as usize);
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
