//! `perf_event_attr`: which fields each sample carries, in what order.

use super::abi::*;
use super::cursor::{u64_at, Cursor};

/// The fields of one event's `perf_event_attr` that decide how its records
/// are laid out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attr {
    pub kind: u32,
    pub config: u64,
    /// The sampling period, or frequency when [`Attr::freq`].
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    /// Sample ids the kernel gave this event (one per CPU or thread).
    pub ids: Vec<u64>,
    /// The event's name as perf gave it (`sched:sched_switch`), from the
    /// HEADER_EVENT_DESC feature or, in a pipe, an EVENT_UPDATE record.
    pub name: Option<String>,
}

/// What an event's samples measure, for counting them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// Time or work on a CPU (hardware events, `cpu-clock`, `task-clock`,
    /// raw and cache events, other PMUs' events): samples of CPU time.
    Cpu,
    /// `sched:sched_switch`: one sample each time a thread leaves a CPU,
    /// with the stack of the thread that leaves.
    OffCpu,
    /// Anything else (other tracepoints and software events, breakpoints,
    /// perf's `--off-cpu` BPF output): not CPU time, not read.
    Other,
}

/// The tracepoint whose samples are off-CPU stacks.
pub const SCHED_SWITCH: &str = "sched:sched_switch";

impl Attr {
    /// Parse an attr; `bytes` holds at least `attr.size` bytes. Fields past
    /// the attr's own size read as zero (older perf versions wrote less).
    pub fn parse(bytes: &[u8]) -> Result<Attr, String> {
        let mut c = Cursor::new(bytes);
        let kind = c.u32().ok_or("event attribute too short")?;
        let size = c.u32().ok_or("event attribute too short")? as usize;
        if size < PERF_ATTR_SIZE_VER0 {
            return Err(format!("event attribute size {size} is below 64"));
        }
        if size > bytes.len() {
            return Err(format!(
                "event attribute size {size} exceeds its {} bytes",
                bytes.len()
            ));
        }
        let own = &bytes[..size];
        let field = |at: usize| u64_at(own, at).unwrap_or(0);
        let attr = Attr {
            kind,
            config: field(8),
            sample_period: field(16),
            sample_type: field(24),
            read_format: field(32),
            flags: field(40),
            branch_sample_type: field(72),
            sample_regs_user: field(80),
            sample_stack_user: field(88) as u32,
            ids: Vec::new(),
            name: None,
        };
        attr.check_call_stack()?;
        Ok(attr)
    }

    /// Its branch stacks are LBR call stacks (`perf record --call-graph
    /// lbr`): each sample's entries are the thread's open calls, newest
    /// first (`from` the call instruction, `to` the callee), not taken
    /// branches.
    pub fn call_stack(&self) -> bool {
        self.has(PERF_SAMPLE_BRANCH_STACK)
            && self.branch_sample_type & PERF_SAMPLE_BRANCH_CALL_STACK != 0
    }

    /// Fail closed: call stacks asked for together with branch filter bits
    /// whose meaning with them is not known here are refused, not read
    /// as call stacks (or as taken branches).
    fn check_call_stack(&self) -> Result<(), String> {
        if !self.call_stack() {
            return Ok(());
        }
        let unknown = self.branch_sample_type & !CALL_STACK_UNDERSTOOD;
        if unknown != 0 {
            return Err(format!(
                "event attribute asks for LBR call stacks with branch sample type {:#x}, whose bits {unknown:#x} faasfuse does not understand with call stacks",
                self.branch_sample_type
            ));
        }
        Ok(())
    }

    /// What this event's samples measure. A tracepoint is known by its
    /// name only: without one (a perf.data without HEADER_EVENT_DESC) it
    /// is [`EventClass::Other`].
    pub fn class(&self) -> EventClass {
        match self.kind {
            PERF_TYPE_HARDWARE | PERF_TYPE_HW_CACHE | PERF_TYPE_RAW => EventClass::Cpu,
            PERF_TYPE_SOFTWARE => match self.config {
                PERF_COUNT_SW_CPU_CLOCK | PERF_COUNT_SW_TASK_CLOCK => EventClass::Cpu,
                _ => EventClass::Other,
            },
            PERF_TYPE_TRACEPOINT if self.name.as_deref() == Some(SCHED_SWITCH) => {
                EventClass::OffCpu
            }
            PERF_TYPE_TRACEPOINT | PERF_TYPE_BREAKPOINT => EventClass::Other,
            // Dynamic PMUs (cpu_core, cpu_atom on hybrid CPUs, ...).
            _ => EventClass::Cpu,
        }
    }

    pub fn attr_size(bytes: &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?) as usize)
    }

    pub fn sample_id_all(&self) -> bool {
        self.flags & ATTR_FLAG_SAMPLE_ID_ALL != 0
    }

    pub fn freq(&self) -> bool {
        self.flags & ATTR_FLAG_FREQ != 0
    }

    pub fn has(&self, bit: u64) -> bool {
        self.sample_type & bit != 0
    }

    /// Index (in u64 words) of the sample id in a PERF_RECORD_SAMPLE body.
    pub fn sample_id_word(&self) -> Option<usize> {
        if self.has(PERF_SAMPLE_IDENTIFIER) {
            return Some(0);
        }
        if !self.has(PERF_SAMPLE_ID) {
            return None;
        }
        Some(
            [
                PERF_SAMPLE_IP,
                PERF_SAMPLE_TID,
                PERF_SAMPLE_TIME,
                PERF_SAMPLE_ADDR,
            ]
            .iter()
            .filter(|&&b| self.has(b))
            .count(),
        )
    }

    /// Size of the sample_id trailer of non-sample records and, counted
    /// back from the record's end, where its time and id words are.
    pub fn trailer(&self) -> Trailer {
        if !self.sample_id_all() {
            return Trailer::default();
        }
        // Order: tid, time, id, stream_id, cpu, identifier.
        let fields = [
            PERF_SAMPLE_TID,
            PERF_SAMPLE_TIME,
            PERF_SAMPLE_ID,
            PERF_SAMPLE_STREAM_ID,
            PERF_SAMPLE_CPU,
            PERF_SAMPLE_IDENTIFIER,
        ];
        let present: Vec<u64> = fields.into_iter().filter(|&b| self.has(b)).collect();
        let words = present.len();
        let from_end = |bit: u64| {
            present
                .iter()
                .position(|&b| b == bit)
                .map(|i| (words - i) * 8)
        };
        Trailer {
            size: words * 8,
            time_from_end: from_end(PERF_SAMPLE_TIME),
            id_from_end: from_end(PERF_SAMPLE_IDENTIFIER).or_else(|| from_end(PERF_SAMPLE_ID)),
        }
    }

    /// Number of registers a REGS_USER block carries.
    pub fn user_reg_count(&self) -> usize {
        self.sample_regs_user.count_ones() as usize
    }
}

/// The branch sample bits a call-stack attribute may carry: the privilege
/// filters, the call-stack mode, and what perf's `--call-graph lbr` adds
/// (no flags, no cycles, `hw_idx`), or the flag words it may fill.
const CALL_STACK_UNDERSTOOD: u64 = PERF_SAMPLE_BRANCH_USER
    | PERF_SAMPLE_BRANCH_KERNEL
    | PERF_SAMPLE_BRANCH_HV
    | PERF_SAMPLE_BRANCH_CALL_STACK
    | PERF_SAMPLE_BRANCH_NO_FLAGS
    | PERF_SAMPLE_BRANCH_NO_CYCLES
    | PERF_SAMPLE_BRANCH_TYPE_SAVE
    | PERF_SAMPLE_BRANCH_HW_INDEX
    | PERF_SAMPLE_BRANCH_PRIV_SAVE;

/// Where the sample_id fields sit at the end of a non-sample record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trailer {
    pub size: usize,
    pub time_from_end: Option<usize>,
    pub id_from_end: Option<usize>,
}

/// Bytes of a PERF_SAMPLE_READ block for `read_format`.
pub fn read_block(c: &mut Cursor, read_format: u64) -> Option<()> {
    let per_value = 1
        + (read_format & PERF_FORMAT_ID != 0) as usize
        + (read_format & PERF_FORMAT_LOST != 0) as usize;
    let times = (read_format & PERF_FORMAT_TOTAL_TIME_ENABLED != 0) as usize
        + (read_format & PERF_FORMAT_TOTAL_TIME_RUNNING != 0) as usize;
    if read_format & PERF_FORMAT_GROUP != 0 {
        let nr = c.u64()? as usize;
        c.skip(times * 8)?;
        c.skip(nr.checked_mul(per_value * 8)?)
    } else {
        c.skip((per_value + times) * 8)
    }
}
