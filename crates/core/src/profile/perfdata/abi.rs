//! The numbers of the perf ABI, under their kernel and perf-tool names:
//! `include/uapi/linux/perf_event.h` (record types, sample and branch bits,
//! `perf_event_attr`) and perf's own file format (`tools/perf/util/header.h`:
//! the file header and feature ids). The reader in this module and the
//! test kit's writer both take them from here.

// ---- struct perf_event_header.type (enum perf_event_type) ----
pub const PERF_RECORD_MMAP: u32 = 1;
pub const PERF_RECORD_LOST: u32 = 2;
pub const PERF_RECORD_COMM: u32 = 3;
pub const PERF_RECORD_EXIT: u32 = 4;
pub const PERF_RECORD_FORK: u32 = 7;
pub const PERF_RECORD_SAMPLE: u32 = 9;
pub const PERF_RECORD_MMAP2: u32 = 10;
pub const PERF_RECORD_LOST_SAMPLES: u32 = 13;
// perf's own user record types (enum perf_user_event_type).
pub const PERF_RECORD_HEADER_ATTR: u32 = 64;
pub const PERF_RECORD_HEADER_BUILD_ID: u32 = 67;
/// An event's name, unit, scale, ... for pipe output (`struct
/// perf_record_event_update`).
pub const PERF_RECORD_EVENT_UPDATE: u32 = 78;
/// `perf_record_event_update.type` of a name.
pub const PERF_EVENT_UPDATE_NAME: u64 = 2;
pub const PERF_RECORD_FINISHED_ROUND: u32 = 68;
/// A header feature in a pipe (`struct perf_record_header_feature`: the
/// feature id, then the section's bytes).
pub const PERF_RECORD_HEADER_FEATURE: u32 = 80;
pub const PERF_RECORD_AUXTRACE: u32 = 71;
/// Tracepoint formats in a pipe (tracepoint events): `size` bytes of
/// payload (a multiple of 8) follow the record.
pub const PERF_RECORD_HEADER_TRACING_DATA: u32 = 66;
pub const PERF_RECORD_COMPRESSED: u32 = 81;
pub const PERF_RECORD_COMPRESSED2: u32 = 83;

// ---- struct perf_event_header.misc ----
pub const PERF_RECORD_MISC_CPUMODE_MASK: u16 = 7;
pub const PERF_RECORD_MISC_KERNEL: u16 = 1;
pub const PERF_RECORD_MISC_USER: u16 = 2;
/// MMAP: a data (non-executable) mapping (`PERF_RECORD_MISC_MMAP_DATA`).
/// COMM: the process exec'd (`PERF_RECORD_MISC_COMM_EXEC`). One bit, two
/// kernel names.
pub const PERF_RECORD_MISC_MMAP_DATA: u16 = 1 << 13;
pub const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
/// MMAP2 carries a build-id instead of device and inode numbers.
pub const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;
/// A build-id record's size byte is valid.
pub const PERF_RECORD_MISC_BUILD_ID_SIZE: u16 = 1 << 15;

// ---- perf_event_attr.sample_type (enum perf_event_sample_format) ----
pub const PERF_SAMPLE_IP: u64 = 1 << 0;
pub const PERF_SAMPLE_TID: u64 = 1 << 1;
pub const PERF_SAMPLE_TIME: u64 = 1 << 2;
pub const PERF_SAMPLE_ADDR: u64 = 1 << 3;
pub const PERF_SAMPLE_READ: u64 = 1 << 4;
pub const PERF_SAMPLE_CALLCHAIN: u64 = 1 << 5;
pub const PERF_SAMPLE_ID: u64 = 1 << 6;
pub const PERF_SAMPLE_CPU: u64 = 1 << 7;
pub const PERF_SAMPLE_PERIOD: u64 = 1 << 8;
pub const PERF_SAMPLE_STREAM_ID: u64 = 1 << 9;
pub const PERF_SAMPLE_RAW: u64 = 1 << 10;
pub const PERF_SAMPLE_BRANCH_STACK: u64 = 1 << 11;
pub const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
pub const PERF_SAMPLE_STACK_USER: u64 = 1 << 13;
pub const PERF_SAMPLE_IDENTIFIER: u64 = 1 << 16;

// ---- perf_event_attr.read_format (enum perf_event_read_format) ----
pub const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1 << 0;
pub const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 1 << 1;
pub const PERF_FORMAT_ID: u64 = 1 << 2;
pub const PERF_FORMAT_GROUP: u64 = 1 << 3;
pub const PERF_FORMAT_LOST: u64 = 1 << 4;

// ---- perf_event_attr.branch_sample_type (enum perf_branch_sample_type) ----
pub const PERF_SAMPLE_BRANCH_USER: u64 = 1 << 0;
pub const PERF_SAMPLE_BRANCH_KERNEL: u64 = 1 << 1;
pub const PERF_SAMPLE_BRANCH_HV: u64 = 1 << 2;
pub const PERF_SAMPLE_BRANCH_ANY: u64 = 1 << 3;
/// The branch stack is the thread's open calls (LBR call-stack mode,
/// `perf record --call-graph lbr`), not its latest taken branches.
pub const PERF_SAMPLE_BRANCH_CALL_STACK: u64 = 1 << 11;
/// Entries carry no flags (mispredict, type...): the word is zero.
pub const PERF_SAMPLE_BRANCH_NO_FLAGS: u64 = 1 << 14;
/// Entries carry no cycle counts.
pub const PERF_SAMPLE_BRANCH_NO_CYCLES: u64 = 1 << 15;
/// Entries carry the branch type in their flags word.
pub const PERF_SAMPLE_BRANCH_TYPE_SAVE: u64 = 1 << 16;
/// Each branch stack starts with a `hw_idx` word.
pub const PERF_SAMPLE_BRANCH_HW_INDEX: u64 = 1 << 17;
/// Entries carry the privilege level in their flags word.
pub const PERF_SAMPLE_BRANCH_PRIV_SAVE: u64 = 1 << 18;
/// Each branch stack ends with one counters word per entry.
pub const PERF_SAMPLE_BRANCH_COUNTERS: u64 = 1 << 19;

// ---- struct perf_branch_entry flags word ----
pub const PERF_BRANCH_MISPRED: u64 = 1 << 0;
pub const PERF_BRANCH_PREDICTED: u64 = 1 << 1;
/// `cycles` (16 bits) starts at this bit.
pub const PERF_BRANCH_CYCLES_SHIFT: u32 = 4;

// ---- perf_event_attr: type, config and the flag bitfield ----
pub const PERF_TYPE_HARDWARE: u32 = 0;
pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_TYPE_TRACEPOINT: u32 = 2;
pub const PERF_TYPE_HW_CACHE: u32 = 3;
pub const PERF_TYPE_RAW: u32 = 4;
pub const PERF_TYPE_BREAKPOINT: u32 = 5;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
pub const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
pub const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
/// Bits of the u64 that holds `disabled:1, inherit:1, …` (offset 40).
pub const ATTR_FLAG_DISABLED: u64 = 1 << 0;
pub const ATTR_FLAG_INHERIT: u64 = 1 << 1;
pub const ATTR_FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
pub const ATTR_FLAG_EXCLUDE_HV: u64 = 1 << 6;
pub const ATTR_FLAG_MMAP: u64 = 1 << 8;
pub const ATTR_FLAG_COMM: u64 = 1 << 9;
/// `sample_period` is a frequency.
pub const ATTR_FLAG_FREQ: u64 = 1 << 10;
pub const ATTR_FLAG_ENABLE_ON_EXEC: u64 = 1 << 12;
/// Non-sample records end with the sample_id fields.
pub const ATTR_FLAG_SAMPLE_ID_ALL: u64 = 1 << 18;
pub const ATTR_FLAG_MMAP2: u64 = 1 << 23;
pub const ATTR_FLAG_COMM_EXEC: u64 = 1 << 24;
/// MMAP2 records carry build-ids.
pub const ATTR_FLAG_BUILD_ID: u64 = 1 << 34;

/// Size of the first published `perf_event_attr`; every later one is larger.
pub const PERF_ATTR_SIZE_VER0: usize = 64;
/// `sizeof(struct perf_event_attr)` up to `sig_data` (what perf 5.13–6.2
/// writes; every later perf reads it).
pub const PERF_ATTR_SIZE_VER7: usize = 128;

// ---- callchain context markers (enum perf_callchain_context) ----
/// Context markers are the top 4095 values.
pub const PERF_CONTEXT_MAX: u64 = (-4095i64) as u64;
pub const PERF_CONTEXT_USER: u64 = (-512i64) as u64;

// ---- mmap prot bits (MMAP2 records carry them) ----
pub const PROT_EXEC: u32 = 4;

// ---- the perf.data file (tools/perf/util/header.h) ----
/// The magic, "PERFILE2", as its 8 bytes.
pub const PERF_MAGIC: [u8; 8] = *b"PERFILE2";
/// `sizeof(struct perf_file_header)`.
pub const PERF_FILE_HEADER_SIZE: u64 = 104;
/// `sizeof(struct perf_pipe_file_header)`.
pub const PERF_PIPE_HEADER_SIZE: u64 = 16;

// Feature ids: bits of the header's feature bitmap (HEADER_*).
pub const HEADER_BUILD_ID: u32 = 2;
pub const HEADER_HOSTNAME: u32 = 3;
pub const HEADER_OSRELEASE: u32 = 4;
pub const HEADER_VERSION: u32 = 5;
pub const HEADER_ARCH: u32 = 6;
pub const HEADER_NRCPUS: u32 = 7;
pub const HEADER_CPUDESC: u32 = 8;
pub const HEADER_CPUID: u32 = 9;
pub const HEADER_TOTAL_MEM: u32 = 10;
pub const HEADER_CMDLINE: u32 = 11;
pub const HEADER_EVENT_DESC: u32 = 12;
pub const HEADER_BRANCH_STACK: u32 = 15;
pub const HEADER_SAMPLE_TIME: u32 = 21;
