//! Round trips through a minimal perf.data writer, and the guarantee that
//! no input makes the reader panic.

use proptest::prelude::*;

use super::abi::*;
use super::event::*;
use super::*;

const ATTR_SIZE: usize = PERF_ATTR_SIZE_VER7;

fn attr(sample_type: u64, branch_sample_type: u64, regs: u64, stack: u32) -> Vec<u8> {
    let mut a = vec![0u8; ATTR_SIZE];
    a[4..8].copy_from_slice(&(ATTR_SIZE as u32).to_le_bytes());
    a[16..24].copy_from_slice(&1000u64.to_le_bytes());
    a[24..32].copy_from_slice(&sample_type.to_le_bytes());
    let flags: u64 = ATTR_FLAG_SAMPLE_ID_ALL;
    a[40..48].copy_from_slice(&flags.to_le_bytes());
    a[72..80].copy_from_slice(&branch_sample_type.to_le_bytes());
    a[80..88].copy_from_slice(&regs.to_le_bytes());
    a[88..92].copy_from_slice(&stack.to_le_bytes());
    a
}

fn record(kind: u32, misc: u16, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while (body.len() + 8) % 8 != 0 {
        body.push(0);
    }
    let mut r = Vec::new();
    r.extend_from_slice(&kind.to_le_bytes());
    r.extend_from_slice(&misc.to_le_bytes());
    r.extend_from_slice(&((body.len() + 8) as u16).to_le_bytes());
    r.extend_from_slice(&body);
    r
}

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A perf.data with one attribute, `data` as its records and a build-id
/// table of `(id, file)`.
fn file(attr: &[u8], data: &[u8], build_ids: &[(&[u8], &str)]) -> Vec<u8> {
    let attrs_off = PERF_FILE_HEADER_SIZE;
    let attr_size = (attr.len() + 16) as u64;
    let data_off = attrs_off + attr_size;
    let mut f = Vec::new();
    f.extend_from_slice(&PERF_MAGIC);
    f.extend_from_slice(&u64s(&[
        PERF_FILE_HEADER_SIZE,
        attr_size,
        attrs_off,
        attr_size,
        data_off,
        data.len() as u64,
        0,
        0,
    ]));
    let features: u64 = if build_ids.is_empty() {
        0
    } else {
        1 << HEADER_BUILD_ID
    };
    f.extend_from_slice(&u64s(&[features, 0, 0, 0]));
    f.extend_from_slice(attr);
    f.extend_from_slice(&u64s(&[0, 0]));
    f.extend_from_slice(data);
    if !build_ids.is_empty() {
        let mut table = Vec::new();
        for (id, name) in build_ids {
            let mut body = vec![0u8; 4];
            let mut idb = [0u8; 24];
            idb[..id.len()].copy_from_slice(id);
            idb[20] = id.len() as u8;
            body.extend_from_slice(&idb);
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            table.extend(record(
                PERF_RECORD_HEADER_BUILD_ID,
                PERF_RECORD_MISC_BUILD_ID_SIZE,
                &body,
            ));
        }
        let sec = f.len() as u64 + 16;
        f.extend_from_slice(&u64s(&[sec, table.len() as u64]));
        f.extend_from_slice(&table);
    }
    f
}

fn mmap2(
    pid: u32,
    addr: u64,
    len: u64,
    pgoff: u64,
    build_id: Option<&[u8]>,
    name: &str,
    time: u64,
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&pid.to_le_bytes());
    b.extend_from_slice(&pid.to_le_bytes());
    b.extend_from_slice(&u64s(&[addr, len, pgoff]));
    let mut id = [0u8; 24];
    if let Some(bid) = build_id {
        id[0] = bid.len() as u8;
        id[4..4 + bid.len()].copy_from_slice(bid);
    }
    b.extend_from_slice(&id);
    b.extend_from_slice(&5u32.to_le_bytes()); // PROT_READ|PROT_EXEC
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    while b.len() % 8 != 0 {
        b.push(0);
    }
    // sample_id trailer: tid, time.
    b.extend_from_slice(&pid.to_le_bytes());
    b.extend_from_slice(&pid.to_le_bytes());
    b.extend_from_slice(&time.to_le_bytes());
    let misc = if build_id.is_some() {
        PERF_RECORD_MISC_USER | PERF_RECORD_MISC_MMAP_BUILD_ID
    } else {
        PERF_RECORD_MISC_USER
    };
    record(PERF_RECORD_MMAP2, misc, &b)
}

const LBR: u64 = PERF_SAMPLE_IP
    | PERF_SAMPLE_TID
    | PERF_SAMPLE_TIME
    | PERF_SAMPLE_PERIOD
    | PERF_SAMPLE_BRANCH_STACK;

fn lbr_sample(pid: u32, time: u64, hw_index: bool, branches: &[(u64, u64, bool)]) -> Vec<u8> {
    let mut b = u64s(&[branches.first().map_or(0, |x| x.0)]);
    b.extend_from_slice(&pid.to_le_bytes());
    b.extend_from_slice(&pid.to_le_bytes());
    b.extend_from_slice(&u64s(&[time, 32, branches.len() as u64]));
    if hw_index {
        b.extend_from_slice(&u64s(&[7]));
    }
    for &(from, to, mispred) in branches {
        b.extend_from_slice(&u64s(&[from, to, if mispred { 1 } else { 2 }]));
    }
    record(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_USER, &b)
}

fn sample_file(hw_index: bool) -> Vec<u8> {
    let bst = if hw_index {
        PERF_SAMPLE_BRANCH_HW_INDEX | 1
    } else {
        1
    };
    let mut data = mmap2(
        7,
        0x7000_0000,
        0x1000,
        0x1000,
        Some(&[0xab; 20]),
        "/lib/libx.so",
        10,
    );
    data.extend(lbr_sample(
        7,
        20,
        hw_index,
        &[
            (0x7000_0010, 0x7000_0020, true),
            (0x7000_0030, 0x7000_0040, false),
        ],
    ));
    data.extend(record(PERF_RECORD_FINISHED_ROUND, 0, &[]));
    file(
        &attr(LBR, bst, 0, 0),
        &data,
        &[(&[0xab; 20], "/lib/libx.so")],
    )
}

#[test]
fn decodes_branch_stacks_with_and_without_hw_index() {
    for hw in [false, true] {
        let (h, events, stats) = read_all(&sample_file(hw), false).unwrap();
        assert_eq!(
            h.build_ids,
            vec![(vec![0xab; 20], "/lib/libx.so".to_string())]
        );
        assert_eq!(stats.samples, 1);
        let Event::Mmap(m) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!((m.addr, m.pgoff, m.exec), (0x7000_0000, 0x1000, true));
        assert_eq!(m.build_id.as_deref(), Some(&[0xab; 20][..]));
        let Event::Sample(s) = &events[1] else {
            panic!()
        };
        assert_eq!(s.hw_index, hw.then_some(7));
        assert_eq!(s.period, 32);
        assert_eq!(s.branches.len(), 2);
        assert_eq!(
            (s.branches[0].from, s.branches[0].to),
            (0x7000_0010, 0x7000_0020)
        );
        assert!(s.branches[0].mispredicted() && !s.branches[1].mispredicted());
    }
}

/// What `perf record --call-graph lbr` (perf 6.1) asks for.
const PERF_LBR_CALL_STACK: u64 = PERF_SAMPLE_BRANCH_USER
    | PERF_SAMPLE_BRANCH_CALL_STACK
    | PERF_SAMPLE_BRANCH_NO_CYCLES
    | PERF_SAMPLE_BRANCH_NO_FLAGS
    | PERF_SAMPLE_BRANCH_HW_INDEX;

#[test]
fn lbr_call_stack_attributes_are_told_apart_and_strange_ones_refused() {
    let with_chain = LBR | PERF_SAMPLE_CALLCHAIN;
    let a = attr::Attr::parse(&attr(with_chain, PERF_LBR_CALL_STACK, 0, 0)).unwrap();
    assert!(a.call_stack());
    // Taken branches (`-b`, `-j any,u`), and the bit without branch stacks.
    for (st, bst) in [
        (LBR, PERF_SAMPLE_BRANCH_ANY | PERF_SAMPLE_BRANCH_USER),
        (LBR, PERF_SAMPLE_BRANCH_HW_INDEX | 1),
        (PERF_SAMPLE_IP, PERF_SAMPLE_BRANCH_CALL_STACK | 1 << 3),
    ] {
        assert!(!attr::Attr::parse(&attr(st, bst, 0, 0))
            .unwrap()
            .call_stack());
    }
    // Samples of a call-stack file decode as any branch stack does.
    let mut body = u64s(&[0x7000_0050]);
    body.extend_from_slice(&7u32.to_le_bytes());
    body.extend_from_slice(&7u32.to_le_bytes());
    body.extend_from_slice(&u64s(&[20, 5]));
    body.extend_from_slice(&u64s(&[2, PERF_CONTEXT_USER, 0x7000_0050]));
    body.extend_from_slice(&u64s(&[2, u64::MAX]));
    body.extend_from_slice(&u64s(&[0x7000_0010, 0x7000_0040, 0]));
    body.extend_from_slice(&u64s(&[0x7000_0030, 0x7000_0000, 0]));
    let data = record(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_USER, &body);
    let f = file(&attr(with_chain, PERF_LBR_CALL_STACK, 0, 0), &data, &[]);
    let (h, events, _) = read_all(&f, false).unwrap();
    assert!(h.attrs[0].call_stack());
    let Event::Sample(s) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(s.callchain, [PERF_CONTEXT_USER, 0x7000_0050]);
    assert_eq!(
        s.branches
            .iter()
            .map(|b| (b.from, b.to))
            .collect::<Vec<_>>(),
        [(0x7000_0010, 0x7000_0040), (0x7000_0030, 0x7000_0000)]
    );
    // Call stacks filtered by branch kind, with per-entry counters, or
    // with bits of later kernels: refused, at the attribute.
    for extra in [
        PERF_SAMPLE_BRANCH_ANY,
        1 << 13, // PERF_SAMPLE_BRANCH_CALL
        PERF_SAMPLE_BRANCH_COUNTERS,
        1 << 40,
    ] {
        let f = file(
            &attr(with_chain, PERF_LBR_CALL_STACK | extra, 0, 0),
            &[],
            &[],
        );
        let e = read_all(&f, false).unwrap_err();
        assert_eq!(e.offset, PERF_FILE_HEADER_SIZE, "{e:?}");
        assert!(
            e.reason.contains("LBR call stacks") && e.reason.contains(&format!("{extra:#x}")),
            "{e:?}"
        );
        assert!(!e.reason.contains('\n'));
    }
}

#[test]
fn orders_events_by_time_within_rounds() {
    // The sample is written before the MMAP it needs (another CPU's buffer).
    let mut data = lbr_sample(7, 20, false, &[(0x7000_0010, 0x7000_0020, false)]);
    data.extend(mmap2(7, 0x7000_0000, 0x1000, 0, None, "/lib/libx.so", 10));
    data.extend(record(PERF_RECORD_FINISHED_ROUND, 0, &[]));
    let (_, events, _) = read_all(&file(&attr(LBR, 1, 0, 0), &data, &[]), false).unwrap();
    assert!(matches!(events[0], Event::Mmap(_)), "{events:?}");
    assert!(matches!(events[1], Event::Sample(_)));
}

#[test]
fn expands_zstd_compressed_records() {
    let mut inner = mmap2(7, 0x7000_0000, 0x1000, 0, None, "/lib/libx.so", 10);
    inner.extend(lbr_sample(7, 20, false, &[(1, 2, false)]));
    // Split across two compressed records, one stream.
    let z = zstd::bulk::compress(&inner, 3).unwrap();
    let (a, b) = z.split_at(z.len() / 2);
    // COMPRESSED2 gives the data size, so the record can be padded.
    let mut data = Vec::new();
    for part in [a, b] {
        let mut body = u64s(&[part.len() as u64]);
        body.extend_from_slice(part);
        data.extend(record(PERF_RECORD_COMPRESSED2, 0, &body));
    }
    let (_, events, stats) = read_all(&file(&attr(LBR, 1, 0, 0), &data, &[]), false).unwrap();
    assert_eq!(stats.compressed_records, 2);
    assert_eq!(events.len(), 2, "{events:?}");
}

#[test]
fn reads_callchains_registers_and_stacks() {
    let st = PERF_SAMPLE_IP
        | PERF_SAMPLE_TID
        | PERF_SAMPLE_TIME
        | PERF_SAMPLE_CALLCHAIN
        | PERF_SAMPLE_REGS_USER
        | PERF_SAMPLE_STACK_USER;
    let regs_mask = (1 << 6) | (1 << 7) | (1 << 8);
    let mut b = u64s(&[0x1234]);
    b.extend_from_slice(&[3, 0, 0, 0, 3, 0, 0, 0]);
    b.extend_from_slice(&u64s(&[5, 3, PERF_CONTEXT_USER, 0x1234, 0x5678]));
    b.extend_from_slice(&u64s(&[2, 0xb0, 0x5000, 0x1234])); // abi, bp, sp, ip
    b.extend_from_slice(&u64s(&[16, 0x1111, 0x2222, 8])); // size, data, dyn_size
    let data = record(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_USER, &b);
    let (_, events, _) = read_all(&file(&attr(st, 0, regs_mask, 16), &data, &[]), false).unwrap();
    let Event::Sample(s) = &events[0] else {
        panic!()
    };
    assert_eq!(s.callchain, vec![PERF_CONTEXT_USER, 0x1234, 0x5678]);
    assert_eq!(
        (s.reg(6), s.reg(7), s.reg(8)),
        (Some(0xb0), Some(0x5000), Some(0x1234))
    );
    assert_eq!(s.stack, 0x1111u64.to_le_bytes().to_vec());
}

#[test]
fn truncated_and_corrupt_files_name_the_byte_offset() {
    let f = sample_file(true);
    let cut = f.len() - 40;
    // The header still claims the full data section.
    let e = read_all(&f[..cut], false).unwrap_err();
    assert!(e.reason.contains("truncated"), "{e:?}");
    // A record cut off at the end of a stream (perf killed mid-write).
    let mut data = lbr_sample(7, 20, false, &[(1, 2, false)]);
    data.truncate(data.len() - 8);
    let e = read_all(&file(&attr(LBR, 1, 0, 0), &data, &[]), false).unwrap_err();
    assert_eq!(e.offset, PERF_FILE_HEADER_SIZE + ATTR_SIZE as u64 + 16);
    assert!(e.reason.contains("cut off"), "{e:?}");
    let mut bad = f.clone();
    let data_off = PERF_FILE_HEADER_SIZE as usize + ATTR_SIZE + 16;
    let second = data_off + u16::from_le_bytes([bad[data_off + 6], bad[data_off + 7]]) as usize;
    bad[second + 6] = 3; // record size 3
    let e = read_all(&bad, false).unwrap_err();
    assert_eq!(e.offset, second as u64);
    assert!(e.reason.contains("below 8"), "{e:?}");
    let (_, events, stats) = read_all(&bad, true).unwrap();
    assert_eq!(stats.bad_records, 1);
    assert_eq!(stats.truncated_at, Some(second as u64));
    assert_eq!(events.len(), 1);
    assert!(read_all(b"PERFILE2", false).is_err());
    assert!(read_all(&[0u8; 200], false)
        .unwrap_err()
        .reason
        .contains("not a perf.data"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// No mutation or truncation of a valid file panics the reader.
    #[test]
    fn never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
                    cut in any::<usize>(), hw in any::<bool>(), lenient in any::<bool>()) {
        let mut f = sample_file(hw);
        for (at, v) in flips {
            let n = f.len();
            f[at % n] = v;
        }
        let keep = cut % (f.len() + 1);
        let _ = read_all(&f[..keep], lenient);
    }
}

/// A perf.data with `attrs` (no sample ids), no records, and the
/// HEADER_EVENT_DESC feature naming them `names`.
fn named_file(attrs: &[Vec<u8>], names: &[&str]) -> Vec<u8> {
    let attr_size = (ATTR_SIZE + 16) as u64;
    let attrs_off = PERF_FILE_HEADER_SIZE;
    let data_off = attrs_off + attr_size * attrs.len() as u64;
    let mut f = Vec::new();
    f.extend_from_slice(&PERF_MAGIC);
    f.extend_from_slice(&u64s(&[
        PERF_FILE_HEADER_SIZE,
        attr_size,
        attrs_off,
        attr_size * attrs.len() as u64,
        data_off,
        0,
        0,
        0,
    ]));
    f.extend_from_slice(&u64s(&[1 << HEADER_EVENT_DESC, 0, 0, 0]));
    for a in attrs {
        f.extend_from_slice(a);
        f.extend_from_slice(&u64s(&[0, 0]));
    }
    // The table: count, attr size, then per event attr, ids, name, ids.
    let mut desc = Vec::new();
    desc.extend_from_slice(&(attrs.len() as u32).to_le_bytes());
    desc.extend_from_slice(&(ATTR_SIZE as u32).to_le_bytes());
    for (a, name) in attrs.iter().zip(names) {
        desc.extend_from_slice(a);
        desc.extend_from_slice(&1u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        while n.len() % 8 != 0 {
            n.push(0);
        }
        desc.extend_from_slice(&(n.len() as u32).to_le_bytes());
        desc.extend_from_slice(&n);
        desc.extend_from_slice(&u64s(&[77]));
    }
    let sec = f.len() as u64 + 16;
    f.extend_from_slice(&u64s(&[sec, desc.len() as u64]));
    f.extend_from_slice(&desc);
    f
}

fn typed(kind: u32, config: u64, sample_type: u64) -> Vec<u8> {
    let mut a = attr(sample_type, 0, 0, 0);
    a[0..4].copy_from_slice(&kind.to_le_bytes());
    a[8..16].copy_from_slice(&config.to_le_bytes());
    a
}

#[test]
fn events_are_classed_by_type_and_by_the_names_perf_gives_them() {
    use super::attr::EventClass;
    const TP: u64 = PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_RAW;
    let attrs = [
        typed(PERF_TYPE_TRACEPOINT, 0x174, TP),
        typed(PERF_TYPE_TRACEPOINT, 0x175, TP),
        typed(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, TP),
        typed(PERF_TYPE_SOFTWARE, 9, TP),
        typed(PERF_TYPE_HARDWARE, 0, TP),
    ];
    let names = [
        "sched:sched_switch",
        "sched:sched_wakeup",
        "cpu-clock",
        "dummy:HG",
        "cycles",
    ];
    let (h, _, _) = read_all(&named_file(&attrs, &names), false).unwrap();
    let got: Vec<(Option<&str>, EventClass)> = h
        .attrs
        .iter()
        .map(|a| (a.name.as_deref(), a.class()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("sched:sched_switch"), EventClass::OffCpu),
            (Some("sched:sched_wakeup"), EventClass::Other),
            (Some("cpu-clock"), EventClass::Cpu),
            (Some("dummy:HG"), EventClass::Other),
            (Some("cycles"), EventClass::Cpu),
        ]
    );
    // Without the feature a tracepoint is not known: not CPU time either.
    let a = super::attr::Attr::parse(&attrs[0]).unwrap();
    assert_eq!(a.class(), EventClass::Other);
    // Named by a shared sample id when attrs have ids.
    let mut by_id = [a.clone(), a];
    by_id[0].ids = vec![5, 6];
    by_id[1].ids = vec![7];
    let desc = vec![
        ("sched:sched_wakeup".to_string(), vec![7]),
        ("sched:sched_switch".to_string(), vec![6]),
    ];
    header::name_events(&mut by_id, &desc);
    assert_eq!(by_id[0].class(), EventClass::OffCpu);
    assert_eq!(by_id[1].name.as_deref(), Some("sched:sched_wakeup"));
    // A table cut short names what it holds and stops.
    let full = named_file(&attrs, &names);
    assert!(header::event_desc(&full[full.len() - 40..]).len() <= 1);
}

#[test]
fn sched_switch_raw_data_tells_a_blocked_thread_from_a_preempted_one() {
    const TP: u64 = PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_RAW;
    let a = super::attr::Attr::parse(&typed(PERF_TYPE_TRACEPOINT, 0x174, TP)).unwrap();
    // The record: common fields, prev_comm, prev_pid, prev_prio,
    // prev_state, next_comm, next_pid, next_prio (64 bytes, then 4 pad).
    let body = |tid: u32, state: u64| {
        let mut raw = vec![0u8; 68];
        raw[8..16].copy_from_slice(b"Frontend");
        raw[24..28].copy_from_slice(&tid.to_le_bytes());
        raw[28..32].copy_from_slice(&120u32.to_le_bytes());
        raw[32..40].copy_from_slice(&state.to_le_bytes());
        let mut b = u64s(&[0xffff_ffff_8100_0000]);
        b.extend_from_slice(&tid.to_le_bytes());
        b.extend_from_slice(&tid.to_le_bytes());
        b.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        b.extend_from_slice(&raw);
        b
    };
    let blocked = |tid: u32, state: u64| {
        let s = sample(&a, 0, 0, &body(tid, state)).unwrap();
        assert_eq!(s.raw.len(), 68);
        s.blocked()
    };
    assert!(blocked(42, 1), "S: sleeping");
    assert!(blocked(42, 2), "D: uninterruptible");
    assert!(!blocked(42, 0), "R: runnable, switched out");
    assert!(!blocked(42, 0x100), "R+: preempted");
    // A record of another layout (its prev_pid is not the sample's thread)
    // counts as blocked.
    let mut other = sample(&a, 0, 0, &body(42, 0)).unwrap();
    other.tid = 43;
    assert!(other.blocked());
}

#[test]
fn a_pipe_names_its_events_and_its_tracing_data_is_skipped() {
    use super::attr::EventClass;
    const TP: u64 = PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_RAW;
    let mut f = PERF_MAGIC.to_vec();
    f.extend_from_slice(&u64s(&[PERF_PIPE_HEADER_SIZE]));
    // The attr with its sample id, then its name by that id.
    let mut a = typed(PERF_TYPE_TRACEPOINT, 0x174, TP);
    a.extend_from_slice(&u64s(&[7879]));
    f.extend(record(PERF_RECORD_HEADER_ATTR, 0, &a));
    let mut name = u64s(&[PERF_EVENT_UPDATE_NAME, 7879]);
    name.extend_from_slice(b"sched:sched_switch\0");
    f.extend(record(PERF_RECORD_EVENT_UPDATE, 0, &name));
    // Tracepoint formats: a record giving the size of the payload after it.
    f.extend(record(
        PERF_RECORD_HEADER_TRACING_DATA,
        0,
        &24u32.to_le_bytes(),
    ));
    f.extend_from_slice(&[0xee; 24]);
    let mut s = u64s(&[0xffff_ffff_8100_0000]);
    s.extend_from_slice(&42u32.to_le_bytes());
    s.extend_from_slice(&42u32.to_le_bytes());
    s.extend_from_slice(&4u32.to_le_bytes());
    s.extend_from_slice(&[1, 2, 3, 4]);
    f.extend(record(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_KERNEL, &s));
    let (h, events, _) = read_all(&f, false).unwrap();
    assert!(h.pipe);
    assert_eq!(h.attrs[0].name.as_deref(), Some("sched:sched_switch"));
    assert_eq!(h.attrs[0].class(), EventClass::OffCpu);
    let samples: Vec<&Sample> = events
        .iter()
        .filter_map(|e| match e {
            Event::Sample(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(samples.len(), 1);
    assert_eq!(
        (samples[0].tid, &samples[0].raw[..]),
        (42, &[1, 2, 3, 4][..])
    );
}
