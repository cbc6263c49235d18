//! perf.data, perf's own file format, read natively: the header, event
//! attributes and build-id table, then the record stream in one pass over
//! a bounded buffer, in time order. Only the records a profile needs are
//! decoded; every other kind is skipped by its size.

pub mod abi;
pub mod attr;
mod cursor;
pub mod event;
pub mod header;
pub mod order;
pub mod reader;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use anyhow::Result;

pub use event::{Branch, Event, FileId, Mmap, Sample};
pub use header::Header;
pub use order::Ordered;
pub use reader::{Reader, Stats};

use crate::error::InputError;

/// A malformed perf.data: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub offset: u64,
    pub reason: String,
}

impl FormatError {
    /// The one-line input error for `path`.
    pub fn at(self, path: &Path) -> InputError {
        InputError::new(path, format!("{} at byte {}", self.reason, self.offset))
    }
}

/// True when `bytes` start like a perf.data file.
pub fn is_perf_data(bytes: &[u8]) -> bool {
    bytes.starts_with(&abi::PERF_MAGIC)
}

/// Open `path` and read its header; events come from the result in time
/// order.
pub fn open(path: &Path, lenient: bool) -> Result<Ordered<File>> {
    let mut f = match crate::files::take_kept(path) {
        Some(f) => f,
        None => crate::files::open_regular(path, u64::MAX, "a perf.data")?.0,
    };
    let len = f
        .metadata()
        .map_err(|e| InputError::new(path, format!("cannot read: {e}")))?
        .len();
    let header = header::read(&mut f, len).map_err(|e| e.at(path))?;
    f.seek(SeekFrom::Start(header.data_offset))
        .map_err(|e| InputError::new(path, format!("cannot read: {e}")))?;
    Ok(Ordered::new(Reader::new(f, header, lenient)))
}

/// Read a whole perf.data held in memory (tests, fuzzing): every event in
/// time order, with the header and stream counts.
pub fn read_all(bytes: &[u8], lenient: bool) -> Result<(Header, Vec<Event>, Stats), FormatError> {
    let mut c = std::io::Cursor::new(bytes);
    let header = header::read(&mut c, bytes.len() as u64)?;
    c.set_position(header.data_offset);
    let mut o = Ordered::new(Reader::new(c, header, lenient));
    let mut events = Vec::new();
    while let Some(e) = o.next_event()? {
        events.push(e);
    }
    Ok((o.reader.header.clone(), events, o.reader.stats.clone()))
}

#[cfg(test)]
mod tests;
