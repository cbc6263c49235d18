//! One pass over a perf.data: every event updates the address spaces (and
//! unwinders), every sample adds to hash-map accumulators whose size is
//! bounded by distinct addresses; symbols and RPC sites are attached once
//! at the end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::Result;
use iced_x86::{Decoder, DecoderOptions, FlowControl};

use super::aggregate::{
    AddressCount, BranchCount, CallCount, FunctionCount, ImageProfile, Profile, SiteCount,
};
use super::counter::{Acc, Counter};
use super::fasthash::FastMap;
use super::images::{AddressSpaces, Lib, Loc};
use super::perfdata::abi::{PERF_SAMPLE_REGS_USER, PERF_SAMPLE_STACK_USER};
use super::perfdata::{self, attr, Event};
use super::unwind::Unwinders;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip malformed records instead of failing.
    pub lenient: bool,
    /// Report reading progress (see [`crate::progress`]).
    pub progress: bool,
}

struct Ingest<'l> {
    libs: &'l [Lib],
    spaces: AddressSpaces<'l>,
    unwinders: Option<Unwinders>,
    counter: Counter<'l>,
    unwound: Vec<u64>,
}

/// An executable file a perf.data maps that is none of the libraries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherImage {
    pub path: String,
    /// Hex build-id, when the profile records one.
    pub build_id: Option<String>,
}

/// Read a perf.data and aggregate it over `libs`.
pub fn ingest_perf(path: &Path, libs: &[Lib], opts: Options) -> Result<Profile> {
    ingest_perf_seen(path, libs, opts).map(|(p, _)| p)
}

/// Return addresses of the RPC sites of each library.
fn site_returns(libs: &[Lib]) -> Vec<HashSet<u64>> {
    libs.iter()
        .map(|l| {
            l.sites
                .iter()
                .map(|s| s.address + s.length as u64)
                .collect()
        })
        .collect()
}

use crate::threads::worker_threads;

/// [`ingest_perf`], also returning the executable files the profile maps
/// that are none of `libs` (what a profile of other builds does contain).
pub fn ingest_perf_seen(
    path: &Path,
    libs: &[Lib],
    opts: Options,
) -> Result<(Profile, Vec<OtherImage>)> {
    ingest_perf_threads(path, libs, opts, worker_threads())
}

/// [`ingest_perf_seen`] with `threads` threads counting samples. Profiles
/// of DWARF stacks (and pipe-mode files) are read in one thread: unwinding
/// follows the address spaces as they change.
pub fn ingest_perf_threads(
    path: &Path,
    libs: &[Lib],
    opts: Options,
    threads: usize,
) -> Result<(Profile, Vec<OtherImage>)> {
    let mut events = perfdata::open(path, opts.lenient)?;
    let header = events.reader.header.clone();
    let dwarf = header.pipe
        || header
            .attrs
            .iter()
            .any(|a| a.has(PERF_SAMPLE_REGS_USER) && a.has(PERF_SAMPLE_STACK_USER));
    let returns = site_returns(libs);
    let mut ing = Ingest {
        libs,
        spaces: AddressSpaces::new(libs, &header.build_ids),
        unwinders: dwarf.then(|| Unwinders::new(libs, &header.build_ids)),
        counter: Counter::new(libs, &returns),
        unwound: Vec::new(),
    };
    let total = if header.pipe {
        0
    } else {
        header.data_end - header.data_offset
    };
    let bar = opts
        .progress
        .then(|| crate::progress::bytes(&path.display().to_string(), total))
        .flatten();
    let t0 = std::time::Instant::now();
    if dwarf {
        let mut n = 0u64;
        loop {
            let ev = events.next_event().map_err(|e| e.at(path))?;
            let Some(ev) = ev else { break };
            n += 1;
            if n % 65536 == 0 {
                if let Some(b) = &bar {
                    b.set(events.reader.position() - header.data_offset);
                }
            }
            ing.event(ev, events.reader.attrs());
        }
    } else {
        let mut reader = events.reader;
        super::parallel::run(
            &mut reader,
            &mut ing.spaces,
            &mut ing.counter,
            &super::parallel::Setup {
                libs,
                returns: &returns,
                threads,
                lenient: opts.lenient,
                progress: bar.as_deref(),
            },
        )
        .map_err(|e| e.at(path))?;
        events.reader = reader;
    }
    if let Some(b) = bar {
        b.finish();
    }
    if let Some(reason) = ing
        .spaces
        .unproven(events.reader.header.hostname.as_deref())
    {
        return Err(crate::error::InputError::new(path, reason).into());
    }
    let rs = &events.reader.stats;
    ing.counter.stats.records = rs.records;
    ing.counter.stats.bad_records += rs.bad_records;
    ing.counter.stats.lost_samples = rs.lost_samples;
    let others = ing
        .spaces
        .dsos
        .iter()
        .zip(&ing.spaces.dso_build_ids)
        .map(|(p, id)| OtherImage {
            path: p.clone(),
            build_id: id.as_deref().map(super::images::hex),
        })
        .collect();
    let t1 = std::time::Instant::now();
    let distinct: (usize, usize) = ing.counter.acc.iter().fold((0, 0), |(b, t), a| {
        (b + a.branches.len(), t + a.traces.len())
    });
    let p = ing.finish(vec![path.display().to_string()]);
    if std::env::var_os("FAASFUSE_TIMING").is_some() {
        let read = (t1 - t0).as_secs_f64();
        eprintln!(
            "faasfuse: read and counted {} bytes in {read:.2} s ({:.0} MB/s, {threads} threads): {} distinct branches, {} distinct traces; profile built in {:.2} s",
            total,
            total as f64 / 1e6 / read.max(1e-9),
            distinct.0,
            distinct.1,
            t1.elapsed().as_secs_f64()
        );
    }
    Ok((p, others))
}

impl Ingest<'_> {
    fn event(&mut self, ev: Event, attrs: &[attr::Attr]) {
        match ev {
            Event::Sample(s) => {
                let attr = attrs.get(s.attr);
                // Samples of events that are not read need no unwinding.
                let read = attr.map_or(true, |a| a.class() != attr::EventClass::Other);
                let unwound = if read && !s.regs.is_empty() && !s.stack.is_empty() {
                    if let Some(u) = &mut self.unwinders {
                        u.unwind(&s, &mut self.unwound);
                    }
                    Some(&self.unwound[..])
                } else {
                    None
                };
                let proc = self.spaces.process(s.pid);
                self.counter.sample(&s, attr, &proc, unwound)
            }
            Event::Mmap(m) => {
                let lib = self.spaces.mmap(&m);
                if let Some(u) = &mut self.unwinders {
                    u.mmap(&m, lib);
                }
            }
            Event::Comm {
                pid,
                tid,
                exec: true,
                ..
            } if pid == tid => self.clear(pid),
            // Mappings outlive EXIT: the last samples of a process may
            // carry the same time.
            Event::Fork { pid, ppid } => {
                self.spaces.fork(pid, ppid);
                if let Some(u) = &mut self.unwinders {
                    u.fork(pid, ppid);
                }
            }
            Event::BuildId { build_id, filename } => {
                if let Some(u) = &mut self.unwinders {
                    u.add_build_id(build_id.clone(), filename.clone());
                }
                self.spaces.add_build_id(build_id, filename);
            }
            _ => {}
        }
    }

    fn clear(&mut self, pid: u32) {
        self.spaces.clear(pid);
        if let Some(u) = &mut self.unwinders {
            u.clear(pid);
        }
    }

    fn finish(self, sources: Vec<String>) -> Profile {
        let mut p = Profile::new(sources);
        let c = self.counter;
        p.stats = c.stats;
        if let Some(u) = &self.unwinders {
            p.stats.unwind_failures = u.failed;
        }
        for (loc, n) in &c.unmatched {
            let name = match loc {
                Loc::Dso(d) => self.spaces.dsos[*d].clone(),
                Loc::Kernel => "[kernel]".into(),
                _ => "[unknown]".into(),
            };
            *p.unmatched.entry(name).or_default() += n;
        }
        for (i, (lib, acc)) in self.libs.iter().zip(c.acc).enumerate() {
            let mut img = image_profile(lib, acc);
            img.mapped_as = self.spaces.matched_paths[i].clone();
            img.mapped_as.sort();
            img.other_builds = self.spaces.other_builds[i].clone();
            img.other_builds.sort();
            p.images.insert(lib.name.clone(), img);
        }
        p.derive();
        p
    }
}

/// Name of the function holding `vaddr`, or its address.
pub fn symbol_name(lib: &Lib, vaddr: u64) -> String {
    lib.symbol_at(vaddr)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{vaddr:#x}"))
}

/// A function by its symbol's start, or an address outside every symbol:
/// what [`symbol_name`] names, without building the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NameKey {
    Symbol(u64),
    Address(u64),
}

fn name_key(lib: &Lib, vaddr: u64) -> NameKey {
    match lib.symbols.at(vaddr) {
        Some(s) => NameKey::Symbol(s.start),
        None => NameKey::Address(vaddr),
    }
}

impl NameKey {
    fn name(self, lib: &Lib) -> String {
        match self {
            NameKey::Symbol(start) => symbol_name(lib, start),
            NameKey::Address(a) => format!("{a:#x}"),
        }
    }
}

/// What the sources of `branches` (sorted by source) tell, on up to
/// `threads` threads: the taken branches out of each RPC site, and calls
/// by (caller, callee) function name. Each source instruction is decoded
/// once; calls are summed by function before they are named.
fn branch_sources(
    lib: &Lib,
    branches: &[BranchCount],
    threads: usize,
) -> (HashMap<u64, u64>, BTreeMap<(String, String), u64>) {
    let site_at: HashSet<u64> = lib.sites.iter().map(|s| s.address).collect();
    let part = |branches: &[BranchCount]| {
        let mut outgoing: HashMap<u64, u64> = HashMap::new();
        let mut call_edges: FastMap<(NameKey, Option<NameKey>), u64> = FastMap::default();
        let mut last: Option<(u64, u64, bool)> = None;
        for b in branches {
            let (len, call) = match last {
                Some((from, len, call)) if from == b.from => (len, call),
                _ => {
                    let (len, call) = match lib.image.read_vaddr(b.from, 15) {
                        Some(c) => {
                            let ins =
                                Decoder::with_ip(64, c, b.from, DecoderOptions::NONE).decode();
                            let call = !ins.is_invalid()
                                && matches!(
                                    ins.flow_control(),
                                    FlowControl::Call | FlowControl::IndirectCall
                                );
                            (ins.len() as u64, call)
                        }
                        None => (0, is_call(lib, b.from)),
                    };
                    last = Some((b.from, len, call));
                    (len, call)
                }
            };
            // A call never branches to its next instruction: such an edge
            // is a fall-through read from an .fdata.
            if b.to != Some(b.from + len) && site_at.contains(&b.from) {
                *outgoing.entry(b.from).or_default() += b.count;
            }
            if call {
                let callee = b.to.map(|t| name_key(lib, t));
                *call_edges
                    .entry((name_key(lib, b.from), callee))
                    .or_default() += b.count;
            }
        }
        let mut named: Vec<((String, String), u64)> = call_edges
            .into_iter()
            .map(|((caller, callee), n)| {
                let callee = callee.map_or_else(|| "[external]".to_string(), |k| k.name(lib));
                ((caller.name(lib), callee), n)
            })
            .collect();
        named.sort_unstable();
        (outgoing, named)
    };
    // Parts end between sources.
    let parts = super::traces::split_between(branches, threads, |b| b.from);
    let results = super::traces::map_parts(&parts, part);
    let mut outgoing = HashMap::new();
    let mut named = Vec::new();
    for (o, n) in results {
        outgoing.extend(o);
        named.extend(n);
    }
    if parts.len() > 1 {
        named.sort_unstable();
    }
    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (k, n) in named {
        *calls.entry(k).or_default() += n;
    }
    (outgoing, calls)
}

/// Whether the instruction at `vaddr` is a call.
fn is_call(lib: &Lib, vaddr: u64) -> bool {
    let Some(bytes) = lib
        .image
        .read_vaddr(vaddr, 15)
        .or_else(|| lib.image.read_vaddr(vaddr, 1))
    else {
        return false;
    };
    let mut d = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
    let ins = d.decode();
    !ins.is_invalid()
        && matches!(
            ins.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        )
}

pub(crate) fn image_profile(lib: &Lib, mut acc: Acc) -> ImageProfile {
    // Summed by function before naming: one name per function, not per
    // address.
    let mut by_key: FastMap<NameKey, FunctionCount> = FastMap::default();
    for (va, n) in &acc.ips {
        by_key.entry(name_key(lib, *va)).or_default().samples += n;
    }
    for (va, n) in &acc.attributed {
        by_key.entry(name_key(lib, *va)).or_default().attributed += n;
    }
    let mut functions: BTreeMap<String, FunctionCount> = BTreeMap::new();
    for (k, f) in by_key {
        let e = functions.entry(k.name(lib)).or_default();
        e.samples += f.samples;
        e.attributed += f.attributed;
    }
    let mut branches: Vec<BranchCount> = acc
        .branches
        .iter()
        .map(|((from, to), (count, mispred))| BranchCount {
            from,
            to,
            count,
            mispred,
        })
        .collect();
    // (from, to) is unique: the same order as sorting by every field.
    let threads = worker_threads();
    super::traces::par_sort_by_key(&mut branches, threads, |b| (b.from, b.to));
    let (ft, _mismatched) =
        super::traces::fallthroughs(lib, std::mem::take(&mut acc.traces), threads);
    let fallthroughs = ft
        .into_iter()
        .map(|((from, to), count)| BranchCount {
            from,
            to: Some(to),
            count,
            mispred: 0,
        })
        .collect();
    let (outgoing, calls) = branch_sources(lib, &branches, threads);
    let rpc_sites = lib
        .sites
        .iter()
        .map(|s| SiteCount {
            address: s.address,
            function: s.function.clone(),
            callee: s.callee.to_string(),
            branch_count: outgoing.get(&s.address).copied().unwrap_or(0),
            sample_count: acc
                .returns
                .get(&(s.address + s.length as u64))
                .copied()
                .unwrap_or(0),
            offcpu_count: acc
                .offcpu
                .get(&(s.address + s.length as u64))
                .copied()
                .unwrap_or(0),
        })
        .collect();
    let mut addresses: Vec<AddressCount> = acc
        .ips
        .iter()
        .map(|(&address, &count)| AddressCount { address, count })
        .collect();
    addresses.sort();
    ImageProfile {
        addresses,
        fallthroughs,
        path: lib.image.path.display().to_string(),
        build_id: lib.build_id_hex(),
        mapped_as: Vec::new(),
        other_builds: Vec::new(),
        samples: acc.ips.values().sum(),
        attributed_samples: acc.attributed.values().sum(),
        functions,
        branches,
        calls: CallCount::list(calls),
        rpc_sites,
    }
}
