//! Error kinds that decide the process exit code.
//!
//! Bad input (a file that is missing, not an ELF, the wrong architecture, or
//! not a function library) is reported as one line naming the file and the
//! reason, and exits with code 2. An output that cannot be written (a
//! missing directory, no permission, a full disk) names the output and
//! exits with code 3. Every other failure exits with code 1; a panic (a
//! bug in faasfuse) exits with Rust's code 101.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with a file the user gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub path: PathBuf,
    pub reason: String,
}

impl InputError {
    pub fn new(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        InputError {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for InputError {}

/// An output faasfuse could not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputError {
    pub path: PathBuf,
    pub reason: String,
}

impl OutputError {
    /// `cannot write output: ERR` for `path`.
    pub fn write(path: impl AsRef<Path>, err: impl fmt::Display) -> Self {
        OutputError {
            path: path.as_ref().to_path_buf(),
            reason: format!("cannot write output: {err}"),
        }
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for OutputError {}

/// Exit code for bad input.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for an output that could not be written.
pub const EXIT_OUTPUT: i32 = 3;
/// Exit code for any other failure.
pub const EXIT_FAILURE: i32 = 1;

/// The exit code an error chain deserves: 3 if any cause is an
/// [`OutputError`], else 2 if any is an [`InputError`], else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<OutputError>().is_some())
    {
        EXIT_OUTPUT
    } else if err
        .chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
    {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILURE
    }
}

/// Render an error chain on one line: `outer: inner: innermost`.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = escape_controls(&cause.to_string().replace('\n', " "));
        if parts.last().map(|p| p.contains(&s)).unwrap_or(false) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}

/// `s` with control characters (from file names and file contents) shown
/// as escapes, so a message stays one printable line.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push(' '),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out
}
