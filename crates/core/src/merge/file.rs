//! The fused image's bytes, described instead of held: ranges of the inputs
//! that go into it unchanged, and the bytes made here, written over and
//! between them (zeros elsewhere). The unchanged ranges are copied by the
//! kernel file to file ([`copy_inputs`], while the rest is still being
//! made), so a merge never holds its output in memory and never passes the
//! inputs' bulk through its own.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::OutputError;
use crate::files::FileBytes;

/// Writes shorter than this are gathered with what lies around them into
/// one block and written once: a merge patches many call sites and
/// relocated words, each a few bytes, inside copied ranges.
const BLOCK: u64 = 64 << 10;

/// Bytes hashed at a time when the written image is read back for its
/// build-id (a multiple of the hash's 40-byte row).
const HASH_CHUNK: usize = 40 << 16;

/// An input range that goes into the image unchanged.
pub struct Copy<'a> {
    pub data: &'a FileBytes,
    pub from: usize,
    pub len: usize,
    pub at: u64,
}

/// Copy `copies` into `out` (named `path` in errors), in order.
pub fn copy_inputs(copies: &[Copy], out: &File, path: &Path) -> anyhow::Result<()> {
    for c in copies {
        c.data
            .copy_to(c.from, c.len, out, c.at)
            .map_err(|e| OutputError::write(path, e))?;
    }
    // Their way to the disk starts here, while the rest is made.
    crate::output::start_writeback(out);
    Ok(())
}

/// The fused image's bytes: input ranges copied, then writes over them,
/// in order (a later write wins where two overlap).
pub struct FusedFile<'a> {
    len: u64,
    copies: Vec<Copy<'a>>,
    writes: Vec<(u64, Cow<'a, [u8]>)>,
}

impl<'a> FusedFile<'a> {
    /// An image of `len` bytes: `copies` over zeros.
    pub fn new(len: u64, copies: Vec<Copy<'a>>) -> FusedFile<'a> {
        debug_assert!(copies
            .iter()
            .all(|c| c.at + c.len as u64 <= len && c.from + c.len <= c.data.len()));
        FusedFile {
            len,
            copies,
            writes: Vec::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// `bytes` go to offset `at`, over anything copied or written there.
    pub fn put(&mut self, at: u64, bytes: impl Into<Cow<'a, [u8]>>) {
        let bytes = bytes.into();
        debug_assert!(at + bytes.len() as u64 <= self.len);
        if !bytes.is_empty() {
            self.writes.push((at, bytes));
        }
    }

    /// Write the image into `out` (named `path` in errors), which holds
    /// the copies already ([`copy_inputs`]), then hash what was written into
    /// the build-id hash field at `build_id` (written as zeros). The written
    /// image, mapped for reading.
    pub fn write_to(self, out: &File, path: &Path, build_id: u64) -> anyhow::Result<FileBytes> {
        let cannot = |e: std::io::Error| OutputError::write(path, e);
        out.set_len(self.len).map_err(cannot)?;
        let dirty = self.dirty_blocks();
        for (at, bytes) in self.writes.iter().filter(|(_, b)| b.len() as u64 >= BLOCK) {
            out.write_all_at(bytes, *at).map_err(cannot)?;
        }
        // Blocks last: each holds everything copied and written into it.
        let mut short: Vec<usize> = (0..self.writes.len())
            .filter(|&i| (self.writes[i].1.len() as u64) < BLOCK)
            .collect();
        short.sort_by_key(|&i| self.writes[i].0);
        let mut block = Vec::new();
        for &b in &dirty {
            self.assemble(b, &short, &mut block);
            out.write_all_at(&block, b * BLOCK).map_err(cannot)?;
        }
        crate::output::start_writeback(out);
        let written = crate::files::map_written(out, path).map_err(cannot)?;
        let id = build_id_of(&written);
        out.write_all_at(&id, build_id).map_err(cannot)?;
        Ok(written)
    }

    /// The blocks a short write falls in.
    fn dirty_blocks(&self) -> BTreeSet<u64> {
        self.writes
            .iter()
            .filter(|(_, b)| (b.len() as u64) < BLOCK)
            .flat_map(|(at, b)| at / BLOCK..=(at + b.len() as u64 - 1) / BLOCK)
            .collect()
    }

    /// The final bytes of block `b` into `buf`: zeros, the copies over
    /// them, then the writes, each in its order. `short` indexes the short
    /// writes by offset.
    fn assemble(&self, b: u64, short: &[usize], buf: &mut Vec<u8>) {
        let start = b * BLOCK;
        let end = (start + BLOCK).min(self.len);
        buf.clear();
        buf.resize((end - start) as usize, 0);
        let mut put = |at: u64, bytes: &[u8]| {
            let (lo, hi) = (at.max(start), (at + bytes.len() as u64).min(end));
            if lo < hi {
                buf[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&bytes[(lo - at) as usize..(hi - at) as usize]);
            }
        };
        for c in &self.copies {
            put(c.at, &c.data[c.from..c.from + c.len]);
        }
        // A short write that reaches the block starts less than a block
        // before it; long ones may start anywhere.
        let first = short.partition_point(|&i| self.writes[i].0 + BLOCK <= start);
        let last = short.partition_point(|&i| self.writes[i].0 < end);
        let mut here: Vec<usize> = short[first..last].to_vec();
        here.extend((0..self.writes.len()).filter(|&i| self.writes[i].1.len() as u64 >= BLOCK));
        here.sort_unstable();
        for i in here {
            put(self.writes[i].0, &self.writes[i].1);
        }
    }
}

/// The build-id of the written image `bytes`, read a chunk at a time; each
/// chunk's pages leave memory once hashed.
fn build_id_of(bytes: &FileBytes) -> [u8; 20] {
    let mut h = super::header::BuildIdHash::new();
    let whole = bytes.len() - bytes.len() % HASH_CHUNK;
    for at in (0..whole).step_by(HASH_CHUNK) {
        h.rows(&bytes[at..at + HASH_CHUNK]);
        bytes.release(at..at + HASH_CHUNK);
    }
    h.finish(&bytes[whole..])
}
