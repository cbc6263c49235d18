//! The records faasfuse uses, decoded into owned values: address-space
//! changes (MMAP/MMAP2, COMM, FORK, EXIT) and samples.

use super::abi::*;
use super::attr::{read_block, Attr};
use super::cursor::{c_string, Cursor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mmap {
    pub pid: u32,
    pub tid: u32,
    pub addr: u64,
    pub len: u64,
    pub pgoff: u64,
    pub exec: bool,
    pub build_id: Option<Vec<u8>>,
    /// The mapped file's device (major, minor) and inode, which an MMAP2
    /// record without a build-id carries instead: the file itself on the
    /// recording host, whatever path a container showed it under.
    pub file_id: Option<FileId>,
    pub filename: String,
}

/// A file on one host: device (major, minor) and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    pub from: u64,
    pub to: u64,
    pub flags: u64,
}

impl Branch {
    pub fn mispredicted(&self) -> bool {
        self.flags & PERF_BRANCH_MISPRED != 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub attr: usize,
    pub cpumode: u16,
    pub ip: u64,
    pub pid: u32,
    pub tid: u32,
    pub time: u64,
    pub addr: u64,
    pub id: u64,
    pub cpu: u32,
    pub period: u64,
    /// Raw PERF_SAMPLE_CALLCHAIN entries, context markers included.
    pub callchain: Vec<u64>,
    pub hw_index: Option<u64>,
    pub branches: Vec<Branch>,
    /// REGS_USER values in mask order (empty when the sample has none).
    pub regs: Vec<u64>,
    pub regs_mask: u64,
    /// The copied user stack, starting at the sampled stack pointer.
    pub stack: Vec<u8>,
    /// PERF_SAMPLE_RAW data (a tracepoint's record), empty when none.
    pub raw: Vec<u8>,
}

impl Sample {
    /// Of a `sched:sched_switch` sample: whether the thread it switched out was
    /// blocked (its `prev_state` has S or D, the two sleeping states) rather
    /// than preempted while runnable. The record's layout (eight bytes of
    /// common fields, `prev_comm[16]`, `prev_pid`, `prev_prio`, then the
    /// `long prev_state`) is checked by its `prev_pid`, which must be the
    /// sample's thread; a record that does not match counts as blocked.
    pub fn blocked(&self) -> bool {
        const PREV_PID: usize = 24;
        const PREV_STATE: usize = 32;
        let word = |at: usize, n: usize| self.raw.get(at..at + n);
        match (word(PREV_PID, 4), word(PREV_STATE, 8)) {
            (Some(pid), Some(state))
                if u32::from_le_bytes(pid.try_into().unwrap_or_default()) == self.tid =>
            {
                u64::from_le_bytes(state.try_into().unwrap_or_default()) & 3 != 0
            }
            _ => true,
        }
    }

    /// Value of the user register with perf's x86 index `reg` (0 = AX,
    /// 6 = BP, 7 = SP, 8 = IP).
    pub fn reg(&self, reg: u32) -> Option<u64> {
        if self.regs_mask & (1 << reg) == 0 {
            return None;
        }
        let index = (self.regs_mask & ((1u64 << reg) - 1)).count_ones() as usize;
        self.regs.get(index).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Mmap(Mmap),
    Comm {
        pid: u32,
        tid: u32,
        exec: bool,
        comm: String,
    },
    Fork {
        pid: u32,
        ppid: u32,
    },
    Exit {
        pid: u32,
        tid: u32,
    },
    Sample(Sample),
    /// A build-id for a file name (pipe mode puts these in the stream).
    BuildId {
        build_id: Vec<u8>,
        filename: String,
    },
    Lost(u64),
    /// PERF_RECORD_FINISHED_ROUND: everything before is safe to sort.
    FinishedRound,
}

pub type Decoded = Result<Option<Event>, String>;

/// Decode an MMAP or MMAP2 body.
pub fn mmap(kind: u32, misc: u16, body: &[u8]) -> Decoded {
    let mut c = Cursor::new(body);
    let short = || "truncated MMAP record".to_string();
    let pid = c.u32().ok_or_else(short)?;
    let tid = c.u32().ok_or_else(short)?;
    let addr = c.u64().ok_or_else(short)?;
    let len = c.u64().ok_or_else(short)?;
    let pgoff = c.u64().ok_or_else(short)?;
    let (exec, build_id, file_id) = if kind == PERF_RECORD_MMAP2 {
        let id = c.bytes(24).ok_or_else(short)?;
        let prot = c.u32().ok_or_else(short)?;
        let _flags = c.u32().ok_or_else(short)?;
        let word = |at: usize| u32::from_le_bytes([id[at], id[at + 1], id[at + 2], id[at + 3]]);
        if misc & PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
            let n = (id[0] as usize).min(20);
            (prot & PROT_EXEC != 0, Some(id[4..4 + n].to_vec()), None)
        } else {
            let file = FileId {
                major: word(0),
                minor: word(4),
                inode: u64::from(word(8)) | u64::from(word(12)) << 32,
            };
            // Anonymous memory and [vdso] have inode 0.
            (
                prot & PROT_EXEC != 0,
                None,
                (file.inode != 0).then_some(file),
            )
        }
    } else {
        (misc & PERF_RECORD_MISC_MMAP_DATA == 0, None, None)
    };
    Ok(Some(Event::Mmap(Mmap {
        pid,
        tid,
        addr,
        len,
        pgoff,
        exec,
        build_id,
        file_id,
        filename: c_string(c.rest()),
    })))
}

pub fn comm(misc: u16, body: &[u8]) -> Decoded {
    let mut c = Cursor::new(body);
    let pid = c.u32().ok_or("truncated COMM record")?;
    let tid = c.u32().ok_or("truncated COMM record")?;
    Ok(Some(Event::Comm {
        pid,
        tid,
        exec: misc & PERF_RECORD_MISC_COMM_EXEC != 0,
        comm: c_string(c.rest()),
    }))
}

/// FORK and EXIT share a layout: pid, ppid, tid, ptid, time.
pub fn fork_exit(kind: u32, body: &[u8]) -> Decoded {
    let mut c = Cursor::new(body);
    let pid = c.u32().ok_or("truncated FORK/EXIT record")?;
    let ppid = c.u32().ok_or("truncated FORK/EXIT record")?;
    let tid = c.u32().ok_or("truncated FORK/EXIT record")?;
    Ok(Some(if kind == PERF_RECORD_FORK {
        Event::Fork { pid, ppid }
    } else {
        Event::Exit { pid, tid }
    }))
}

/// A build-id record: pid, 20 id bytes, size byte, padding, file name.
pub fn build_id(misc: u16, body: &[u8]) -> Result<(Vec<u8>, String), String> {
    let mut c = Cursor::new(body);
    let short = || "truncated build-id record".to_string();
    let _pid = c.u32().ok_or_else(short)?;
    let id = c.bytes(24).ok_or_else(short)?;
    let mut n = if misc & PERF_RECORD_MISC_BUILD_ID_SIZE != 0 {
        (id[20] as usize).min(20)
    } else {
        20
    };
    if misc & PERF_RECORD_MISC_BUILD_ID_SIZE == 0 {
        // Old perf padded short ids (e.g. 16-byte MD5 ones) with zeros.
        while n > 0 && id[n - 1] == 0 {
            n -= 1;
        }
    }
    Ok((id[..n].to_vec(), c_string(c.rest())))
}

/// Decode a PERF_RECORD_SAMPLE body laid out by `attr`.
pub fn sample(attr: &Attr, index: usize, misc: u16, body: &[u8]) -> Result<Sample, String> {
    let mut s = Sample::default();
    sample_into(attr, index, misc, body, &mut s)?;
    Ok(s)
}

/// [`sample`] into `s`, reusing its vectors (no allocation per sample once
/// they are large enough). On an error `s` holds part of the sample.
pub fn sample_into(
    attr: &Attr,
    index: usize,
    misc: u16,
    body: &[u8],
    s: &mut Sample,
) -> Result<(), String> {
    let mut c = Cursor::new(body);
    let mut callchain = std::mem::take(&mut s.callchain);
    let mut branches = std::mem::take(&mut s.branches);
    let mut regs = std::mem::take(&mut s.regs);
    let mut stack = std::mem::take(&mut s.stack);
    let mut raw = std::mem::take(&mut s.raw);
    callchain.clear();
    branches.clear();
    regs.clear();
    stack.clear();
    raw.clear();
    *s = Sample {
        attr: index,
        cpumode: misc & PERF_RECORD_MISC_CPUMODE_MASK,
        callchain,
        branches,
        regs,
        stack,
        raw,
        ..Sample::default()
    };
    let short = |what: &str| format!("sample ends inside its {what}");
    if attr.has(PERF_SAMPLE_IDENTIFIER) {
        s.id = c.u64().ok_or_else(|| short("identifier"))?;
    }
    if attr.has(PERF_SAMPLE_IP) {
        s.ip = c.u64().ok_or_else(|| short("ip"))?;
    }
    if attr.has(PERF_SAMPLE_TID) {
        s.pid = c.u32().ok_or_else(|| short("pid"))?;
        s.tid = c.u32().ok_or_else(|| short("tid"))?;
    }
    if attr.has(PERF_SAMPLE_TIME) {
        s.time = c.u64().ok_or_else(|| short("time"))?;
    }
    if attr.has(PERF_SAMPLE_ADDR) {
        s.addr = c.u64().ok_or_else(|| short("addr"))?;
    }
    if attr.has(PERF_SAMPLE_ID) {
        s.id = c.u64().ok_or_else(|| short("id"))?;
    }
    if attr.has(PERF_SAMPLE_STREAM_ID) {
        c.u64().ok_or_else(|| short("stream id"))?;
    }
    if attr.has(PERF_SAMPLE_CPU) {
        s.cpu = c.u32().ok_or_else(|| short("cpu"))?;
        c.u32().ok_or_else(|| short("cpu"))?;
    }
    if attr.has(PERF_SAMPLE_PERIOD) {
        s.period = c.u64().ok_or_else(|| short("period"))?;
    }
    if attr.has(PERF_SAMPLE_READ) {
        read_block(&mut c, attr.read_format).ok_or_else(|| short("read values"))?;
    }
    if attr.has(PERF_SAMPLE_CALLCHAIN) {
        let nr = c.u64().ok_or_else(|| short("callchain"))?;
        let words = checked_words(&c, nr).ok_or_else(|| short("callchain"))?;
        let bytes = c.bytes(words * 8).ok_or_else(|| short("callchain"))?;
        extend_words(&mut s.callchain, bytes);
    }
    if attr.has(PERF_SAMPLE_RAW) {
        let size = c.u32().ok_or_else(|| short("raw data"))?;
        let data = c.bytes(size as usize).ok_or_else(|| short("raw data"))?;
        s.raw.extend_from_slice(data);
    }
    if attr.has(PERF_SAMPLE_BRANCH_STACK) {
        let nr = c.u64().ok_or_else(|| short("branch stack"))?;
        if attr.branch_sample_type & PERF_SAMPLE_BRANCH_HW_INDEX != 0 {
            s.hw_index = Some(c.u64().ok_or_else(|| short("branch stack"))?);
        }
        let words = checked_words(&c, nr.saturating_mul(3)).ok_or_else(|| short("branch stack"))?;
        let bytes = c.bytes(words * 8).ok_or_else(|| short("branch stack"))?;
        s.branches.extend(bytes.chunks_exact(24).map(|e| Branch {
            from: u64::from_le_bytes(e[0..8].try_into().unwrap_or_default()),
            to: u64::from_le_bytes(e[8..16].try_into().unwrap_or_default()),
            flags: u64::from_le_bytes(e[16..24].try_into().unwrap_or_default()),
        }));
        if attr.branch_sample_type & PERF_SAMPLE_BRANCH_COUNTERS != 0 {
            c.skip(nr as usize * 8)
                .ok_or_else(|| short("branch counters"))?;
        }
    }
    if attr.has(PERF_SAMPLE_REGS_USER) {
        let abi = c.u64().ok_or_else(|| short("user registers"))?;
        if abi != 0 {
            let n = attr.user_reg_count();
            let bytes = c.bytes(n * 8).ok_or_else(|| short("user registers"))?;
            extend_words(&mut s.regs, bytes);
            s.regs_mask = attr.sample_regs_user;
        }
    }
    if attr.has(PERF_SAMPLE_STACK_USER) {
        let size = c.u64().ok_or_else(|| short("user stack"))?;
        if size != 0 {
            let size = usize::try_from(size).map_err(|_| short("user stack"))?;
            let data = c.bytes(size).ok_or_else(|| short("user stack"))?;
            let dyn_size = c.u64().ok_or_else(|| short("user stack"))?;
            let used = (dyn_size as usize).min(data.len());
            s.stack.extend_from_slice(&data[..used]);
        }
    }
    // Later fields (weight, data_src, ...) are not used.
    Ok(())
}

/// `nr` u64 words, if that many fit in what is left.
fn checked_words(c: &Cursor, nr: u64) -> Option<usize> {
    let nr = usize::try_from(nr).ok()?;
    (nr <= c.remaining() / 8).then_some(nr)
}

fn extend_words(v: &mut Vec<u64>, bytes: &[u8]) {
    v.extend(
        bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default())),
    );
}
