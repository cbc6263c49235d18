//! A streaming writer of `perf.data` files (perf's own format, as
//! `perf record` writes it) holding one event with LBR branch stacks.
//!
//! Layout written:
//!
//! ```text
//! perf_file_header   magic PERFILE2, attrs/data sections, feature bitmap
//! attrs              one perf_event_attr (PERF_ATTR_SIZE_VER7) + empty ids
//! data               COMM, MMAP2 (with build-id), SAMPLE, FINISHED_ROUND …
//! feature index      one perf_file_section per feature bit set
//! feature data       BUILD_ID, HOSTNAME, OSRELEASE, VERSION, ARCH, NRCPUS,
//!                    CPUDESC, CPUID, TOTAL_MEM, CMDLINE, EVENT_DESC,
//!                    BRANCH_STACK, SAMPLE_TIME
//! ```
//!
//! The event is `cycles:u` (`PERF_TYPE_HARDWARE`, user space only) with
//! `sample_type = IP | TID | TIME | PERIOD | BRANCH_STACK`,
//! `branch_sample_type = ANY | USER` (plus `HW_INDEX` unless disabled) and
//! `sample_id_all`, so every non-sample record ends with `pid, tid, time`.
//!
//! With [`WriterOptions::call_stack`] the event is what `perf record
//! --call-graph lbr` opens instead: `sample_type` adds `CALLCHAIN` (each
//! sample's chain is `PERF_CONTEXT_USER, ip`: perf replaces what follows
//! the marker with the LBR entries), `branch_sample_type = USER |
//! CALL_STACK | NO_CYCLES | NO_FLAGS` (plus `HW_INDEX`), as perf 6.1's
//! `evsel__config_callchain` sets it, and `sample_max_stack` 127; each
//! stack holds the thread's open calls, newest first, with zero flags.
//! Records are written as they come (bounded memory: only the build-id
//! table is kept); [`PerfDataWriter::finish`] appends the feature sections
//! and rewrites the header. Timestamps must not decrease: the writer clamps
//! a time below the previous one to the previous one, and writes a
//! `FINISHED_ROUND` every [`ROUND_RECORDS`] records so perf's event sorting
//! stays bounded too.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use faasfuse_core::profile::perfdata::abi::*;

/// Records between two `PERF_RECORD_FINISHED_ROUND`s.
pub const ROUND_RECORDS: u64 = 65_536;
/// Most entries a branch stack holds (the LBR depth of current CPUs).
pub const MAX_BRANCHES: usize = 32;

/// perf's `NAME_ALIGN`: header strings and build-id file names are padded
/// to a multiple of it.
const NAME_ALIGN: usize = 64;

/// One entry of a branch stack (`struct perf_branch_entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BranchEntry {
    pub from: u64,
    pub to: u64,
    pub mispred: bool,
    /// Cycles since the previous branch (16 bits; 0 = unknown).
    pub cycles: u16,
}

impl BranchEntry {
    /// The `flags` word: mispred (bit 0), predicted (bit 1), cycles (bits 4–19).
    pub fn flags(&self) -> u64 {
        let pred = if self.mispred {
            PERF_BRANCH_MISPRED
        } else {
            PERF_BRANCH_PREDICTED
        };
        pred | (u64::from(self.cycles) << PERF_BRANCH_CYCLES_SHIFT)
    }
}

/// One executable mapping of an image, for a `PERF_RECORD_MMAP2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub len: u64,
    /// File offset of `start`.
    pub pgoff: u64,
    pub path: String,
    /// The image's GNU build-id (up to 20 bytes; empty when it has none).
    pub build_id: Vec<u8>,
}

/// What the header and feature sections say about the recording.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// `attr.sample_period`: taken branches per sample (see the module docs
    /// of `profile::record` for what it means to a reader).
    pub sample_period: u64,
    /// Add `PERF_SAMPLE_BRANCH_HW_INDEX` (each stack then carries `hw_idx`),
    /// as `perf record -b` does on kernels that have it.
    pub hw_index: bool,
    /// HEADER_CMDLINE.
    pub cmdline: Vec<String>,
    /// LBR call stacks (`--call-graph lbr`): stacks are open calls.
    pub call_stack: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            sample_period: 1,
            hw_index: true,
            cmdline: vec!["faasfuse".into()],
            call_stack: false,
        }
    }
}

/// Writes one `perf.data` file record by record.
pub struct PerfDataWriter<W: Write + Seek> {
    out: W,
    opts: WriterOptions,
    /// Bytes of the data section written so far.
    data_size: u64,
    data_offset: u64,
    records: u64,
    last_time: u64,
    first_sample_time: Option<u64>,
    last_sample_time: u64,
    samples: u64,
    /// (path, build-id) of every image mapped, for HEADER_BUILD_ID.
    build_ids: BTreeMap<String, Vec<u8>>,
    buf: Vec<u8>,
}

fn u16s(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn u32s(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn u64s(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn pad8(v: &mut Vec<u8>) {
    while v.len() % 8 != 0 {
        v.push(0);
    }
}
/// A NUL-terminated string padded with zeros to a multiple of `align`.
fn padded_str(v: &mut Vec<u8>, s: &str, align: usize) {
    let start = v.len();
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    while (v.len() - start) % align != 0 {
        v.push(0);
    }
}
/// perf's `do_write_string`: u32 length (NUL and padding included), bytes.
fn header_string(v: &mut Vec<u8>, s: &str) {
    let len = (s.len() + 1).div_ceil(NAME_ALIGN) * NAME_ALIGN;
    u32s(v, len as u32);
    padded_str(v, s, NAME_ALIGN);
}

impl PerfDataWriter<BufWriter<File>> {
    /// Create (truncate) `path` and start writing.
    pub fn create(path: &Path, opts: WriterOptions) -> Result<Self> {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        PerfDataWriter::new(BufWriter::with_capacity(1 << 20, f), opts)
    }
}

impl<W: Write + Seek> PerfDataWriter<W> {
    pub fn new(mut out: W, opts: WriterOptions) -> Result<Self> {
        if opts.sample_period == 0 {
            bail!("sample period must be at least 1");
        }
        out.seek(SeekFrom::Start(0))?;
        // Header placeholder, then the attribute, then the data section.
        out.write_all(&[0u8; PERF_FILE_HEADER_SIZE as usize])?;
        let mut w = PerfDataWriter {
            out,
            opts,
            data_size: 0,
            data_offset: 0,
            records: 0,
            last_time: 0,
            first_sample_time: None,
            last_sample_time: 0,
            samples: 0,
            build_ids: BTreeMap::new(),
            buf: Vec::with_capacity(1024),
        };
        let attr = w.attr_bytes();
        w.out.write_all(&attr)?;
        // ids section of the attr: empty.
        w.out.write_all(&[0u8; 16])?;
        w.data_offset = PERF_FILE_HEADER_SIZE + attr.len() as u64 + 16;
        Ok(w)
    }

    fn branch_sample_type(&self) -> u64 {
        let mut t = if self.opts.call_stack {
            PERF_SAMPLE_BRANCH_USER
                | PERF_SAMPLE_BRANCH_CALL_STACK
                | PERF_SAMPLE_BRANCH_NO_CYCLES
                | PERF_SAMPLE_BRANCH_NO_FLAGS
        } else {
            PERF_SAMPLE_BRANCH_ANY | PERF_SAMPLE_BRANCH_USER
        };
        if self.opts.hw_index {
            t |= PERF_SAMPLE_BRANCH_HW_INDEX;
        }
        t
    }

    /// The event's `perf_event_attr` (PERF_ATTR_SIZE_VER7 bytes).
    fn attr_bytes(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(PERF_ATTR_SIZE_VER7);
        u32s(&mut a, PERF_TYPE_HARDWARE);
        u32s(&mut a, PERF_ATTR_SIZE_VER7 as u32);
        u64s(&mut a, PERF_COUNT_HW_CPU_CYCLES);
        u64s(&mut a, self.opts.sample_period);
        u64s(&mut a, self.sample_type());
        u64s(&mut a, 0); // read_format
        u64s(
            &mut a,
            ATTR_FLAG_DISABLED
                | ATTR_FLAG_INHERIT
                | ATTR_FLAG_EXCLUDE_KERNEL
                | ATTR_FLAG_EXCLUDE_HV
                | ATTR_FLAG_MMAP
                | ATTR_FLAG_COMM
                | ATTR_FLAG_ENABLE_ON_EXEC
                | ATTR_FLAG_SAMPLE_ID_ALL
                | ATTR_FLAG_MMAP2
                | ATTR_FLAG_COMM_EXEC
                | ATTR_FLAG_BUILD_ID,
        );
        u32s(&mut a, 0); // wakeup_events
        u32s(&mut a, 0); // bp_type
        u64s(&mut a, 0); // config1
        u64s(&mut a, 0); // config2
        u64s(&mut a, self.branch_sample_type());
        a.resize(PERF_ATTR_SIZE_VER7, 0);
        if self.opts.call_stack {
            // sample_max_stack: perf's default (kernel.perf_event_max_stack).
            a[108..110].copy_from_slice(&127u16.to_le_bytes());
        }
        a
    }

    fn sample_type(&self) -> u64 {
        let chain = if self.opts.call_stack {
            PERF_SAMPLE_CALLCHAIN
        } else {
            0
        };
        PERF_SAMPLE_IP
            | PERF_SAMPLE_TID
            | PERF_SAMPLE_TIME
            | PERF_SAMPLE_PERIOD
            | chain
            | PERF_SAMPLE_BRANCH_STACK
    }

    /// Append the record in `self.buf` (header included) to the data section.
    fn emit(&mut self) -> Result<()> {
        debug_assert!(self.buf.len() % 8 == 0 && self.buf.len() <= u16::MAX as usize);
        self.out.write_all(&self.buf)?;
        self.data_size += self.buf.len() as u64;
        self.records += 1;
        if self.records % ROUND_RECORDS == 0 {
            self.out.write_all(&finished_round())?;
            self.data_size += 8;
        }
        Ok(())
    }

    fn start(&mut self, kind: u32, misc: u16) {
        self.buf.clear();
        u32s(&mut self.buf, kind);
        u16s(&mut self.buf, misc);
        u16s(&mut self.buf, 0); // size, set by finish_record
    }

    fn finish_record(&mut self) -> Result<()> {
        pad8(&mut self.buf);
        let size = self.buf.len();
        if size > u16::MAX as usize {
            bail!("perf record of {size} bytes is too large");
        }
        self.buf[6..8].copy_from_slice(&(size as u16).to_le_bytes());
        self.emit()
    }

    fn clamp_time(&mut self, time: u64) -> u64 {
        self.last_time = self.last_time.max(time);
        self.last_time
    }

    /// sample_id_all trailer for TID | TIME.
    fn sample_id(&mut self, pid: u32, tid: u32, time: u64) {
        u32s(&mut self.buf, pid);
        u32s(&mut self.buf, tid);
        u64s(&mut self.buf, time);
    }

    /// `PERF_RECORD_COMM`: thread `tid` of process `pid` is named `comm`.
    pub fn comm(&mut self, pid: u32, tid: u32, comm: &str, time: u64) -> Result<()> {
        let time = self.clamp_time(time);
        self.start(PERF_RECORD_COMM, PERF_RECORD_MISC_USER);
        u32s(&mut self.buf, pid);
        u32s(&mut self.buf, tid);
        let name: String = comm.chars().take(15).collect();
        padded_str(&mut self.buf, &name, 8);
        self.sample_id(pid, tid, time);
        self.finish_record()
    }

    /// `PERF_RECORD_MMAP2` of an executable mapping, with its build-id
    /// (`PERF_RECORD_MISC_MMAP_BUILD_ID`) when it has one.
    pub fn mmap2(&mut self, pid: u32, tid: u32, m: &Mapping, time: u64) -> Result<()> {
        let time = self.clamp_time(time);
        let with_id = !m.build_id.is_empty() && m.build_id.len() <= 20;
        let misc = PERF_RECORD_MISC_USER
            | if with_id {
                PERF_RECORD_MISC_MMAP_BUILD_ID
            } else {
                0
            };
        self.start(PERF_RECORD_MMAP2, misc);
        u32s(&mut self.buf, pid);
        u32s(&mut self.buf, tid);
        u64s(&mut self.buf, m.start);
        u64s(&mut self.buf, m.len);
        u64s(&mut self.buf, m.pgoff);
        if with_id {
            self.buf.push(m.build_id.len() as u8);
            self.buf.extend_from_slice(&[0u8; 3]);
            let mut id = [0u8; 20];
            id[..m.build_id.len()].copy_from_slice(&m.build_id);
            self.buf.extend_from_slice(&id);
        } else {
            // maj, min, ino, ino_generation: unknown.
            self.buf.extend_from_slice(&[0u8; 24]);
        }
        u32s(&mut self.buf, (libc::PROT_READ | libc::PROT_EXEC) as u32);
        u32s(&mut self.buf, libc::MAP_PRIVATE as u32);
        padded_str(&mut self.buf, &m.path, 8);
        self.sample_id(pid, tid, time);
        if !m.build_id.is_empty() {
            self.build_ids
                .entry(m.path.clone())
                .or_insert_with(|| m.build_id.clone());
        }
        self.finish_record()
    }

    /// `PERF_RECORD_SAMPLE` at `ip` with a branch stack, newest entry first.
    /// `period` is the number of taken branches this sample stands for. A
    /// call-stack writer gives the sample the chain `PERF_CONTEXT_USER, ip`
    /// and its entries (open calls: `from` the call, `to` the callee) zero
    /// flags.
    pub fn sample(
        &mut self,
        pid: u32,
        tid: u32,
        ip: u64,
        time: u64,
        period: u64,
        stack: &[BranchEntry],
    ) -> Result<()> {
        if stack.len() > MAX_BRANCHES {
            bail!(
                "branch stack of {} entries (at most {MAX_BRANCHES})",
                stack.len()
            );
        }
        let time = self.clamp_time(time);
        self.start(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_USER);
        u64s(&mut self.buf, ip);
        u32s(&mut self.buf, pid);
        u32s(&mut self.buf, tid);
        u64s(&mut self.buf, time);
        u64s(&mut self.buf, period);
        if self.opts.call_stack {
            u64s(&mut self.buf, 2);
            u64s(&mut self.buf, PERF_CONTEXT_USER);
            u64s(&mut self.buf, ip);
        }
        u64s(&mut self.buf, stack.len() as u64);
        if self.opts.hw_index {
            // hw_idx -1: the stack is not a snapshot of a hardware ring
            // (perf then never tries LBR stitching on it).
            u64s(&mut self.buf, u64::MAX);
        }
        for b in stack {
            u64s(&mut self.buf, b.from);
            u64s(&mut self.buf, b.to);
            u64s(
                &mut self.buf,
                if self.opts.call_stack { 0 } else { b.flags() },
            );
        }
        self.first_sample_time.get_or_insert(time);
        self.last_sample_time = time;
        self.samples += 1;
        self.finish_record()
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Bytes written so far (header, attribute and data).
    pub fn bytes(&self) -> u64 {
        self.data_offset + self.data_size
    }

    /// Write the feature sections and the final header; returns the file size.
    pub fn finish(self) -> Result<u64> {
        self.finish_into().map(|(size, _)| size)
    }

    /// [`finish`](Self::finish), and give back the output.
    pub fn finish_into(mut self) -> Result<(u64, W)> {
        self.out.write_all(&finished_round())?;
        self.data_size += 8;
        let features = self.feature_data();
        let index_offset = self.data_offset + self.data_size;
        let mut offset = index_offset + 16 * features.len() as u64;
        let mut index = Vec::new();
        for (_, body) in &features {
            u64s(&mut index, offset);
            u64s(&mut index, body.len() as u64);
            offset += body.len() as u64;
        }
        self.out.write_all(&index)?;
        for (_, body) in &features {
            self.out.write_all(body)?;
        }
        let mut bitmap = [0u64; 4];
        for (bit, _) in &features {
            bitmap[*bit as usize / 64] |= 1 << (bit % 64);
        }
        let attr_len = PERF_ATTR_SIZE_VER7 as u64 + 16;
        let mut h = Vec::with_capacity(PERF_FILE_HEADER_SIZE as usize);
        h.extend_from_slice(&PERF_MAGIC);
        u64s(&mut h, PERF_FILE_HEADER_SIZE);
        u64s(&mut h, attr_len); // attr_size: attr + ids section
        u64s(&mut h, PERF_FILE_HEADER_SIZE); // attrs.offset
        u64s(&mut h, attr_len); // attrs.size
        u64s(&mut h, self.data_offset);
        u64s(&mut h, self.data_size);
        u64s(&mut h, 0); // event_types (unused)
        u64s(&mut h, 0);
        for w in bitmap {
            u64s(&mut h, w);
        }
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&h)?;
        self.out.flush()?;
        Ok((offset, self.out))
    }

    /// Each feature section's bit and bytes, in bit order.
    fn feature_data(&self) -> Vec<(u32, Vec<u8>)> {
        let uts = uname();
        let mut f = Vec::new();
        // HEADER_BUILD_ID: one build_id_event per image.
        let mut b = Vec::new();
        for (path, id) in &self.build_ids {
            let start = b.len();
            u32s(&mut b, 0); // type (unused)
            u16s(
                &mut b,
                PERF_RECORD_MISC_USER | PERF_RECORD_MISC_BUILD_ID_SIZE,
            );
            u16s(&mut b, 0); // size, below
            u32s(&mut b, u32::MAX); // pid -1: the host machine
            let mut raw = [0u8; 20];
            let n = id.len().min(20);
            raw[..n].copy_from_slice(&id[..n]);
            b.extend_from_slice(&raw);
            b.push(n as u8);
            b.extend_from_slice(&[0u8; 3]);
            padded_str(&mut b, path, NAME_ALIGN);
            let size = (b.len() - start) as u16;
            b[start + 6..start + 8].copy_from_slice(&size.to_le_bytes());
        }
        f.push((HEADER_BUILD_ID, b));
        let s = |text: &str| {
            let mut v = Vec::new();
            header_string(&mut v, text);
            v
        };
        f.push((HEADER_HOSTNAME, s(&uts.0)));
        f.push((HEADER_OSRELEASE, s(&uts.1)));
        f.push((
            HEADER_VERSION,
            s(concat!("faasfuse ", env!("CARGO_PKG_VERSION"))),
        ));
        f.push((HEADER_ARCH, s("x86_64")));
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let mut n = Vec::new();
        u32s(&mut n, cpus); // nr_cpus_available
        u32s(&mut n, cpus); // nr_cpus_online
        f.push((HEADER_NRCPUS, n));
        f.push((HEADER_CPUDESC, s(&cpu_desc())));
        f.push((HEADER_CPUID, s("AuthenticAMD,0,0,0")));
        let mut m = Vec::new();
        u64s(&mut m, total_mem_kb());
        f.push((HEADER_TOTAL_MEM, m));
        let mut c = Vec::new();
        u32s(&mut c, self.opts.cmdline.len() as u32);
        for a in &self.opts.cmdline {
            header_string(&mut c, a);
        }
        f.push((HEADER_CMDLINE, c));
        let mut e = Vec::new();
        u32s(&mut e, 1); // nr events
        u32s(&mut e, PERF_ATTR_SIZE_VER7 as u32);
        e.extend_from_slice(&self.attr_bytes());
        u32s(&mut e, 0); // nr_ids
        header_string(&mut e, "cycles:u");
        f.push((HEADER_EVENT_DESC, e));
        f.push((HEADER_BRANCH_STACK, Vec::new()));
        let mut t = Vec::new();
        u64s(&mut t, self.first_sample_time.unwrap_or(0));
        u64s(&mut t, self.last_sample_time);
        f.push((HEADER_SAMPLE_TIME, t));
        f
    }
}

fn finished_round() -> [u8; 8] {
    let mut r = [0u8; 8];
    r[..4].copy_from_slice(&PERF_RECORD_FINISHED_ROUND.to_le_bytes());
    r[6..8].copy_from_slice(&8u16.to_le_bytes());
    r
}

/// (hostname, release) of this machine.
fn uname() -> (String, String) {
    // SAFETY: utsname is plain old data filled in by the kernel.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return ("localhost".into(), "unknown".into());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.nodename), field(&u.release))
}

fn cpu_desc() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "x86_64".into())
}

fn total_mem_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn header_attr_records_and_features() {
        let mut w = PerfDataWriter::new(Cursor::new(Vec::new()), WriterOptions::default()).unwrap();
        w.comm(7, 7, "x", 5).unwrap();
        let m = Mapping {
            start: 0x7000_0000,
            len: 0x1000,
            pgoff: 0x1000,
            path: "/lib/libx.so".into(),
            build_id: vec![0xab; 20],
        };
        w.mmap2(7, 7, &m, 6).unwrap();
        let e = BranchEntry {
            from: 0x7000_0010,
            to: 0x7000_0020,
            mispred: true,
            cycles: 3,
        };
        // A time below the previous one is clamped.
        w.sample(7, 8, 0x7000_0020, 1, 1, &[e]).unwrap();
        let (size, out) = w.finish_into().unwrap();
        let b = out.into_inner();
        assert_eq!(size as usize, b.len());
        assert_eq!(&b[..8], b"PERFILE2");
        assert_eq!(u64_at(&b, 8), PERF_FILE_HEADER_SIZE);
        let attr_size = u64_at(&b, 16);
        assert_eq!(attr_size, PERF_ATTR_SIZE_VER7 as u64 + 16);
        let (attrs, data, data_size) = (u64_at(&b, 24), u64_at(&b, 40), u64_at(&b, 48));
        assert_eq!(attrs, PERF_FILE_HEADER_SIZE);
        assert_eq!(data, PERF_FILE_HEADER_SIZE + attr_size);
        // attr: size, sample_type, branch_sample_type.
        let a = attrs as usize;
        assert_eq!(u32::from_le_bytes(b[a + 4..a + 8].try_into().unwrap()), 128);
        assert_eq!(u64_at(&b, a + 24), 0x907);
        assert_eq!(u64_at(&b, a + 72), 1 | 8 | 1 << 17);
        // Records: COMM, MMAP2, SAMPLE, FINISHED_ROUND.
        let mut at = data as usize;
        let mut kinds = Vec::new();
        while at < (data + data_size) as usize {
            let kind = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let len = u16::from_le_bytes(b[at + 6..at + 8].try_into().unwrap()) as usize;
            if kind == PERF_RECORD_SAMPLE {
                // ip, pid/tid, time (clamped to 6), period, nr, hw_idx, entry.
                assert_eq!(u64_at(&b, at + 8), 0x7000_0020);
                assert_eq!(u64_at(&b, at + 24), 6);
                assert_eq!(u64_at(&b, at + 40), 1);
                assert_eq!(u64_at(&b, at + 48), u64::MAX);
                assert_eq!(u64_at(&b, at + 56), 0x7000_0010);
                assert_eq!(u64_at(&b, at + 72), 1 | 3 << 4);
                assert_eq!(len, 80);
            }
            kinds.push(kind);
            at += len;
        }
        assert_eq!(
            kinds,
            [
                PERF_RECORD_COMM,
                PERF_RECORD_MMAP2,
                PERF_RECORD_SAMPLE,
                PERF_RECORD_FINISHED_ROUND
            ]
        );
        // Feature bitmap and the first feature (BUILD_ID) right after data.
        let bits = u64_at(&b, 72);
        for f in [
            HEADER_BUILD_ID,
            HEADER_ARCH,
            HEADER_EVENT_DESC,
            HEADER_BRANCH_STACK,
        ] {
            assert!(bits & 1 << f != 0, "feature {f}");
        }
        let index = (data + data_size) as usize;
        let first = u64_at(&b, index) as usize;
        assert_eq!(&b[first + 12..first + 32], &[0xab; 20]);
        assert!(b[first + 36..].starts_with(b"/lib/libx.so\0"));
    }

    #[test]
    fn call_stack_attr_and_samples_are_perfs_lbr_call_graph() {
        let opts = WriterOptions {
            call_stack: true,
            ..WriterOptions::default()
        };
        let mut w = PerfDataWriter::new(Cursor::new(Vec::new()), opts).unwrap();
        let e = BranchEntry {
            from: 0x7000_0010,
            to: 0x7000_0100,
            mispred: true,
            cycles: 3,
        };
        w.sample(7, 7, 0x7000_0123, 1, 4, &[e]).unwrap();
        let (_, out) = w.finish_into().unwrap();
        let b = out.into_inner();
        let a = PERF_FILE_HEADER_SIZE as usize;
        // IP | TID | TIME | CALLCHAIN | PERIOD | BRANCH_STACK.
        assert_eq!(u64_at(&b, a + 24), 0x927);
        // USER | CALL_STACK | NO_FLAGS | NO_CYCLES | HW_INDEX.
        assert_eq!(
            u64_at(&b, a + 72),
            1 | 1 << 11 | 1 << 14 | 1 << 15 | 1 << 17
        );
        assert_eq!(u16::from_le_bytes([b[a + 108], b[a + 109]]), 127);
        // ip, pid/tid, time, period, chain (2: user marker, ip), nr,
        // hw_idx, the entry with zero flags.
        let at = u64_at(&b, 40) as usize + 8;
        assert_eq!(u64_at(&b, at + 24), 4);
        assert_eq!(u64_at(&b, at + 32), 2);
        assert_eq!(u64_at(&b, at + 40), PERF_CONTEXT_USER);
        assert_eq!(u64_at(&b, at + 48), 0x7000_0123);
        assert_eq!(u64_at(&b, at + 56), 1);
        assert_eq!(u64_at(&b, at + 64), u64::MAX);
        assert_eq!(u64_at(&b, at + 72), 0x7000_0010);
        assert_eq!(u64_at(&b, at + 80), 0x7000_0100);
        assert_eq!(u64_at(&b, at + 88), 0);
    }

    #[test]
    fn flags_word() {
        let e = BranchEntry {
            from: 0,
            to: 0,
            mispred: false,
            cycles: 0xffff,
        };
        assert_eq!(e.flags(), 2 | 0xffff << 4);
    }
}
