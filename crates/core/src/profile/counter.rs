//! What the perf.data reader counts from samples, per image, and how the
//! counts of several reading threads sum into one (`parallel`).

use std::collections::{HashMap, HashSet};

use super::fasthash::{BranchTable, FastMap, TraceTable};
use super::images::{Lib, Loc, Process};
use super::perfdata::abi::{
    PERF_CONTEXT_MAX, PERF_CONTEXT_USER, PERF_RECORD_MISC_USER, PERF_SAMPLE_PERIOD,
};
use super::perfdata::attr::EventClass;
use super::perfdata::{attr, Sample};
use super::traces::began_outside;

/// What is counted for one image while reading.
#[derive(Default)]
pub(crate) struct Acc {
    /// (from, to) -> (count, mispredicted); `to` is None outside the image.
    pub(crate) branches: BranchTable,
    /// Straight-line runs between consecutive branches: (start, end).
    pub(crate) traces: TraceTable,
    /// Self samples by address.
    pub(crate) ips: FastMap<u64, u64>,
    /// Attributed samples by (innermost in-image) address.
    pub(crate) attributed: FastMap<u64, u64>,
    /// Adjacent call-chain frames in this image: (callee address, return
    /// address) -> samples.
    pub(crate) frames: FastMap<(u64, u64), u64>,
    /// Samples whose chain holds this return address.
    pub(crate) returns: FastMap<u64, u64>,
    /// Off-CPU samples of blocked threads whose chain holds this return
    /// address (RPC sites only).
    pub(crate) offcpu: FastMap<u64, u64>,
}

/// What one thread counts from samples: per image accumulators and
/// sample statistics. Counters of several threads sum into one.
pub(crate) struct Counter<'l> {
    pub(crate) acc: Vec<Acc>,
    pub(crate) unmatched: HashMap<Loc, u64>,
    pub(crate) stats: super::aggregate::Stats,
    /// Return addresses of RPC sites per image.
    site_returns: &'l [HashSet<u64>],
    libs: &'l [Lib],
    outside: Vec<bool>,
    chain: Vec<u64>,
    seen: Vec<(usize, u64)>,
    locs: Vec<(Loc, Loc)>,
    /// LBR call stacks: the return address of the call at (image,
    /// address), decoded once.
    call_returns: FastMap<(usize, u64), Option<u64>>,
}

impl<'l> Counter<'l> {
    pub(crate) fn new(libs: &'l [Lib], site_returns: &'l [HashSet<u64>]) -> Self {
        Counter {
            acc: libs.iter().map(|_| Acc::default()).collect(),
            libs,
            outside: Vec::new(),
            unmatched: HashMap::new(),
            stats: Default::default(),
            site_returns,
            chain: Vec::new(),
            seen: Vec::new(),
            locs: Vec::new(),
            call_returns: FastMap::default(),
        }
    }

    /// Samples skipped as malformed while counting (`--lenient`).
    pub(crate) fn merge_bad(&mut self, n: u64) {
        self.stats.bad_records += n;
    }

    /// Add every count of `o`, on up to `threads` threads.
    pub(crate) fn merge(&mut self, o: Counter, threads: usize) {
        // A counting thread's stats hold counts only (records, lost samples
        // and unwind failures are the reader's), so summing all is exact.
        self.stats.add(&o.stats);
        for (k, v) in o.unmatched {
            *self.unmatched.entry(k).or_default() += v;
        }
        for (mine, theirs) in self.acc.iter_mut().zip(o.acc) {
            mine.merge(theirs, threads);
        }
    }

    /// Count a sample resolved in `proc`; `unwound` holds the return
    /// addresses of its unwound user stack, if it has one.
    pub(crate) fn sample(
        &mut self,
        s: &Sample,
        attr: Option<&attr::Attr>,
        proc: &Process,
        unwound: Option<&[u64]>,
    ) {
        match attr.map_or(EventClass::Cpu, attr::Attr::class) {
            EventClass::Cpu => {}
            EventClass::OffCpu => return self.off_cpu(s, proc, unwound),
            EventClass::Other => {
                self.stats.other_samples += 1;
                return;
            }
        }
        self.stats.samples += 1;
        // LBR call stacks: the entries are the open calls, newest first, a
        // call chain of call instructions (not taken branches).
        let call_stack = attr.is_some_and(|a| a.call_stack());
        if call_stack {
            self.stats.lbr_callstack_samples += 1;
        } else if !s.branches.is_empty() {
            self.stats.lbr_samples += 1;
            self.branches(s, attr, proc);
        }
        self.collect_frames(s, call_stack, unwound);
        if unwound.is_some() && !call_stack {
            self.stats.dwarf_samples += 1;
        }
        if self.chain.len() > 1 {
            self.stats.callchain_samples += 1;
        }

        let ip = if s.cpumode == PERF_RECORD_MISC_USER || s.cpumode == 0 || s.cpumode > 3 {
            proc.resolve(s.ip)
        } else {
            Loc::Kernel
        };
        match ip {
            Loc::Lib { lib, vaddr } => {
                self.stats.matched_samples += 1;
                *self.acc[lib].ips.entry(vaddr).or_default() += 1;
            }
            other => *self.unmatched.entry(other).or_default() += 1,
        }
        self.seen.clear();
        let mut attributed = false;
        let mut prev: Option<(usize, u64)> = None;
        for (i, &addr) in self.chain.iter().enumerate() {
            let loc = if i == 0 { ip } else { proc.resolve(addr) };
            let Loc::Lib { lib, mut vaddr } = loc else {
                prev = None;
                continue;
            };
            if i > 0 && call_stack {
                // A call stack holds the call itself: its return address
                // is the frame (not a call: no frame).
                let libs = self.libs;
                let ret = *self
                    .call_returns
                    .entry((lib, vaddr))
                    .or_insert_with(|| call_return(&libs[lib], vaddr));
                let Some(ret) = ret else {
                    prev = None;
                    continue;
                };
                vaddr = ret;
            }
            // A return address lies after its call: look up the call.
            let at = if i == 0 { vaddr } else { vaddr.wrapping_sub(1) };
            if !attributed {
                *self.acc[lib].attributed.entry(at).or_default() += 1;
                attributed = true;
            }
            if i > 0 {
                if let Some((plib, pat)) = prev {
                    if plib == lib {
                        *self.acc[lib].frames.entry((pat, vaddr)).or_default() += 1;
                    }
                }
                if self.site_returns[lib].contains(&vaddr) && !self.seen.contains(&(lib, vaddr)) {
                    self.seen.push((lib, vaddr));
                    *self.acc[lib].returns.entry(vaddr).or_default() += 1;
                }
            }
            prev = Some((lib, at));
        }
    }

    /// The frames of `s` into `self.chain`: the sampled address, then
    /// return addresses (of its unwound user stack, or of the user part of
    /// its call chain), or for an LBR call stack the calls' own addresses.
    fn collect_frames(&mut self, s: &Sample, call_stack: bool, unwound: Option<&[u64]>) {
        self.chain.clear();
        if call_stack {
            self.chain.push(s.ip);
            self.chain.extend(s.branches.iter().map(|b| b.from));
        } else if let Some(unwound) = unwound {
            self.chain.push(s.ip);
            self.chain.extend_from_slice(unwound);
        } else if !s.callchain.is_empty() {
            let mut user = false;
            for &ip in &s.callchain {
                if ip >= PERF_CONTEXT_MAX {
                    user = ip == PERF_CONTEXT_USER;
                    continue;
                }
                if user {
                    self.chain.push(ip);
                }
            }
            if self.chain.is_empty() {
                self.chain.push(s.ip);
            }
        } else {
            self.chain.push(s.ip);
        }
    }

    /// Count an off-CPU sample (a thread leaving its CPU): not CPU time.
    /// When the thread blocked (rather than was preempted) waiting in an
    /// RPC, the RPC site whose return address its stack holds counts one
    /// blocking there. That site must be the innermost frame of any
    /// library on the stack: a thread that blocked inside a library's own
    /// code (a callee served in the caller's thread sleeping or reading a
    /// file, or the caller itself) is not waiting for an RPC, so none of
    /// the sites further out count (else a caller whose in-process callee
    /// blocks would look like one whose callees run elsewhere, and its
    /// other, never-blocking edges would read as cold).
    fn off_cpu(&mut self, s: &Sample, proc: &Process, unwound: Option<&[u64]>) {
        self.stats.offcpu_samples += 1;
        if !s.blocked() {
            return;
        }
        self.stats.offcpu_blocked += 1;
        self.collect_frames(s, false, unwound);
        // The first frame is where the thread stopped (the kernel's switch,
        // or the user address of a frame-pointer chain): no return address.
        for (i, &addr) in self.chain.iter().enumerate() {
            let Loc::Lib { lib, vaddr } = proc.resolve(addr) else {
                continue;
            };
            if i > 0 && self.site_returns[lib].contains(&vaddr) {
                *self.acc[lib].offcpu.entry(vaddr).or_default() += 1;
            }
            break;
        }
    }

    /// Count a branch stack. Stacks of consecutive samples overlap when the
    /// period is below the stack depth: only the newest `period` entries are
    /// new, so only those are counted.
    fn branches(&mut self, s: &Sample, attr: Option<&attr::Attr>, proc: &Process) {
        let period = match attr {
            Some(a) if a.has(PERF_SAMPLE_PERIOD) => s.period,
            Some(a) if !a.freq() => a.sample_period,
            _ => 0,
        };
        let n = if period == 0 {
            s.branches.len()
        } else {
            s.branches
                .len()
                .min(usize::try_from(period).unwrap_or(usize::MAX))
        };
        let mut locs = std::mem::take(&mut self.locs);
        locs.clear();
        locs.extend(
            s.branches
                .iter()
                .map(|b| (proc.resolve(b.from), proc.resolve(b.to))),
        );
        // Entry i+1 is older than entry i: the code between its target and
        // entry i's source ran straight through. Such a trace, in image
        // `lib`, starts at `start` and ends at `end`; `came_from` is the
        // source of the branch that began it, if in the same image.
        let trace = |i: usize| {
            let ((older_from, older_to), (newer_from, _)) = (locs[i + 1], locs[i]);
            match (older_to, newer_from) {
                (
                    Loc::Lib { lib, vaddr: start },
                    Loc::Lib {
                        lib: l2,
                        vaddr: end,
                    },
                ) if lib == l2 => {
                    let came_from = match older_from {
                        Loc::Lib { lib: l3, vaddr } if l3 == lib => Some(vaddr),
                        _ => None,
                    };
                    Some((lib, start, end, came_from))
                }
                _ => None,
            }
        };
        let branch = |&(from, to): &(Loc, Loc)| {
            let Loc::Lib { lib, vaddr: from } = from else {
                return None;
            };
            let to = match to {
                Loc::Lib { lib: l2, vaddr } if l2 == lib => Some(vaddr),
                _ => None,
            };
            Some((lib, from, to))
        };
        let traces = n.min(s.branches.len() - 1);
        // Load every slot first: the cache misses of large tables overlap.
        for (lib, start, end, _) in (0..traces).filter_map(trace) {
            self.acc[lib].traces.prefetch(start, end);
        }
        for (lib, from, to) in locs[..n].iter().filter_map(branch) {
            self.acc[lib].branches.prefetch(from, to);
        }
        // The branches, each with its flag: did it come from outside the
        // function of its target (asked once per distinct branch)?
        let mut outside = std::mem::take(&mut self.outside);
        outside.clear();
        for (b, loc) in s.branches[..n].iter().zip(&locs) {
            self.stats.branches += 1;
            let flag = match branch(loc) {
                Some((lib, from, to)) => {
                    self.acc[lib]
                        .branches
                        .count(from, to, b.mispredicted(), || match to {
                            Some(to) => began_outside(&self.libs[lib], to, Some(from)),
                            None => true,
                        })
                }
                None => true,
            };
            outside.push(flag);
        }
        // The traces, keyed by that flag of the branch that began them
        // (what the fall-through walk needs of it), not by its source.
        for i in 0..traces {
            let Some((lib, start, end, came_from)) = trace(i) else {
                continue;
            };
            let flag = match came_from {
                None => true,
                Some(_) if i + 1 < n => outside[i + 1],
                Some(from) => self.acc[lib]
                    .branches
                    .outside(from, Some(start))
                    .unwrap_or_else(|| began_outside(&self.libs[lib], start, Some(from))),
            };
            self.acc[lib].traces.add(start, end, flag, 1);
        }
        self.outside = outside;
        self.locs = locs;
    }
}

/// The return address of the call instruction at `vaddr` of `lib`; None
/// when no call is there.
fn call_return(lib: &Lib, vaddr: u64) -> Option<u64> {
    use iced_x86::{Decoder, DecoderOptions, FlowControl};
    let bytes = lib
        .image
        .read_vaddr(vaddr, 15)
        .or_else(|| (1..15).rev().find_map(|n| lib.image.read_vaddr(vaddr, n)))?;
    let ins = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE).decode();
    let call = !ins.is_invalid()
        && matches!(
            ins.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        );
    call.then(|| ins.next_ip())
}

impl Acc {
    /// Add every count of `o`, on up to `threads` threads.
    pub(crate) fn merge(&mut self, o: Acc, threads: usize) {
        if self.branches.is_empty() {
            self.branches = o.branches;
        } else {
            self.branches.merge(&o.branches);
        }
        if self.traces.is_empty() {
            self.traces = o.traces;
        } else {
            self.traces.merge(o.traces, threads);
        }
        for (mine, theirs) in [
            (&mut self.ips, o.ips),
            (&mut self.attributed, o.attributed),
            (&mut self.returns, o.returns),
            (&mut self.offcpu, o.offcpu),
        ] {
            for (k, v) in theirs {
                *mine.entry(k).or_default() += v;
            }
        }
        for (k, v) in o.frames {
            *self.frames.entry(k).or_default() += v;
        }
    }
}
