//! A generator of large LBR `perf.data` files over real libraries, for
//! ingestion benchmarks: every process maps every library (real images,
//! real build-ids, so `perf` and `perf2bolt` resolve them), and each sample
//! carries 32 branches drawn with a skewed distribution from the direct
//! branches and calls the libraries' code really contains.
//!
//! A 1.1 GB profile of four processes over the example functions (about
//! 1.4 million samples, a few seconds):
//!
//! ```text
//! scripts/build-fixtures.sh out/fixtures
//! faasfuse __gen-lbr -o out/bench/big-lbr.data --size-mb 1100 --processes 4 \
//!     --truth out/bench/big-lbr.truth.json out/fixtures/default/lib*.so
//! ```
//!
//! Samples have period 32 and non-overlapping stacks, so counting every
//! entry of every sample gives the truth file's counts exactly.
//!
//! Two shapes of branch stacks:
//!
//! - `--mode toy` (the default): each entry drawn on its own from a steep
//!   distribution over the sites (`u^4`): on the example functions, about a
//!   hundred distinct branches, a table that never grows;
//! - `--mode diverse`: control flow as a program has it. Each stack is a
//!   walk: from a branch's target the next taken branch is the first site
//!   after it (a conditional one is taken with probability 1/2, a call
//!   always), and one entry in eight (or a walk that leaves its function)
//!   restarts at a site drawn from a Zipf law (s = 1) over every site in a
//!   random order. Over a large library (`benches/gen/biglib.py ... branchy`,
//!   about a hundred sites per KiB) this gives millions of distinct
//!   branches and straight-line traces with a skewed, long-tailed hotness.

use std::collections::HashMap;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use faasfuse_core::profile::images::hex;
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, OpKind};
use object::read::elf::ProgramHeader;
use object::{Object, ObjectSection, SectionFlags};

use super::writer::{BranchEntry, Mapping, PerfDataWriter, WriterOptions, MAX_BRANCHES};
use super::{BranchCount, ImageInfo, Truth};

/// `faasfuse __gen-lbr`: write a large synthetic LBR perf.data.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// The perf.data file to write.
    #[arg(short, long, value_name = "OUT.data")]
    pub output: PathBuf,
    /// Stop once the file holds this many MiB of records.
    #[arg(long, default_value_t = 1100, value_name = "MIB")]
    pub size_mb: u64,
    /// Processes (each maps every library at its own addresses).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub processes: u32,
    /// Seed of the deterministic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the exact count of every branch as JSON.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// How branch stacks are drawn: `toy` (independent entries from a
    /// steep distribution) or `diverse` (Zipf-distributed walks).
    #[arg(long, value_enum, default_value_t = Mode::Toy)]
    pub mode: Mode,
    /// The libraries whose code the branches come from.
    #[arg(required = true, value_name = "LIB.so")]
    pub libraries: Vec<PathBuf>,
}

/// How `__gen-lbr` draws branch stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Independent entries from a steep distribution over few sites.
    Toy,
    /// Zipf-distributed walks along the code: millions of distinct branches.
    Diverse,
}

/// A direct branch of a library, as ELF virtual addresses.
struct StaticBranch {
    lib: usize,
    from: u64,
    to: u64,
    /// A conditional branch (taken or not); calls and jumps always are.
    cond: bool,
}

struct Lib {
    path: String,
    build_id: Vec<u8>,
    /// Executable PT_LOADs: (vaddr, memsz, offset).
    exec: Vec<(u64, u64, u64)>,
    span: u64,
}

fn load(path: &Path, lib: usize, out: &mut Vec<StaticBranch>) -> Result<Lib> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{}: not an ELF file", path.display()))?;
    let object::File::Elf64(elf) = &file else {
        bail!("{}: not a 64-bit ELF file", path.display());
    };
    let e = elf.endian();
    let mut exec = Vec::new();
    let mut span = 0;
    for ph in elf.elf_program_headers() {
        if ph.p_type(e) != object::elf::PT_LOAD {
            continue;
        }
        span = span.max(ph.p_vaddr(e) + ph.p_memsz(e));
        if ph.p_flags(e) & object::elf::PF_X != 0 {
            exec.push((ph.p_vaddr(e), ph.p_memsz(e), ph.p_offset(e)));
        }
    }
    for sec in file.sections() {
        let SectionFlags::Elf { sh_flags } = sec.flags() else {
            continue;
        };
        // Function code only (not the PLT stubs' jumps to the PLT header).
        if sh_flags & u64::from(object::elf::SHF_EXECINSTR) == 0
            || !sec.name().unwrap_or("").starts_with(".text")
        {
            continue;
        }
        let code = sec.data()?;
        let mut dec = Decoder::with_ip(64, code, sec.address(), DecoderOptions::NONE);
        let mut insn = Instruction::default();
        while dec.can_decode() {
            dec.decode_out(&mut insn);
            let direct = matches!(
                insn.flow_control(),
                FlowControl::UnconditionalBranch
                    | FlowControl::ConditionalBranch
                    | FlowControl::Call
            ) && insn.op0_kind() == OpKind::NearBranch64;
            if direct {
                out.push(StaticBranch {
                    lib,
                    from: insn.ip(),
                    to: insn.near_branch64(),
                    cond: insn.flow_control() == FlowControl::ConditionalBranch,
                });
            }
        }
    }
    let path = std::fs::canonicalize(path)?.to_string_lossy().into_owned();
    Ok(Lib {
        build_id: file.build_id()?.map(|b| b.to_vec()).unwrap_or_default(),
        path,
        exec,
        span: (span + 0xfff) & !0xfff,
    })
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Run `faasfuse __gen-lbr`.
pub fn gen_main(a: GenArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut branches = Vec::new();
    let libs = a
        .libraries
        .iter()
        .enumerate()
        .map(|(i, p)| load(p, i, &mut branches))
        .collect::<Result<Vec<_>>>()?;
    if branches.is_empty() {
        bail!("the libraries hold no direct branches");
    }
    let mut rng = Rng(a.seed);
    let mut draw = match a.mode {
        Mode::Toy => {
            // Shuffle so the hot end of the skewed draw spreads over all code.
            for i in (1..branches.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                branches.swap(i, j);
            }
            Draw::Toy
        }
        Mode::Diverse => Draw::walks(&mut branches, &mut rng),
    };
    let procs = a.processes.max(1);
    let mut cmdline = vec!["faasfuse-testkit".to_string(), "gen-lbr".to_string()];
    cmdline.extend(a.libraries.iter().map(|p| p.display().to_string()));
    let mut w = PerfDataWriter::create(
        &a.output,
        WriterOptions {
            sample_period: MAX_BRANCHES as u64,
            hw_index: true,
            cmdline,
            call_stack: false,
        },
    )?;
    let mut time = 1_000_000_000u64;
    let mapped = map_libraries(&mut w, &libs, procs, time)?;
    let mut sampler = Sampler {
        branches: &branches,
        bases: &mapped.bases,
        procs,
        // (count, mispredicted) per process and branch, for the truth file.
        counts: if a.truth.is_some() {
            vec![(0u64, 0u64); procs as usize * branches.len()]
        } else {
            Vec::new()
        },
        total: 0,
    };
    let limit = a.size_mb << 20;
    while w.bytes() < limit {
        time += 1000;
        sampler.write_sample(&mut w, &mut draw, &mut rng, time)?;
    }
    let samples = w.samples();
    let size = w.finish()?;
    let total = sampler.total;
    if let Some(t) = &a.truth {
        Truth {
            every: MAX_BRANCHES as u64,
            taken_branches: total,
            samples,
            images: mapped.images,
            branches: sampler.counted(),
        }
        .write(t)?;
    }
    eprintln!(
        "faasfuse: wrote {samples} samples ({total} branches over {} static sites) in {size} bytes to {} in {:.1} s",
        branches.len(),
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where the libraries are mapped in each process.
struct Mapped {
    images: Vec<ImageInfo>,
    /// bases[process][library]
    bases: Vec<Vec<u64>>,
}

/// Start `procs` processes at `time`, each mapping every library's
/// executable segments at its own base.
fn map_libraries<W: Write + Seek>(
    w: &mut PerfDataWriter<W>,
    libs: &[Lib],
    procs: u32,
    time: u64,
) -> Result<Mapped> {
    let mut images = Vec::new();
    let mut bases = Vec::new();
    for p in 0..procs {
        let pid = 100_000 + p;
        w.comm(pid, pid, "faasfuse", time)?;
        let mut base = 0x7f00_0000_0000u64 + u64::from(p) * 0x10_0000_0000;
        let mut row = Vec::new();
        for lib in libs {
            for &(vaddr, memsz, off) in &lib.exec {
                let start = base + (vaddr & !0xfff);
                let end = (base + vaddr + memsz + 0xfff) & !0xfff;
                let m = Mapping {
                    start,
                    len: end - start,
                    pgoff: off & !0xfff,
                    path: lib.path.clone(),
                    build_id: lib.build_id.clone(),
                };
                w.mmap2(pid, pid, &m, time)?;
                images.push(ImageInfo {
                    pid,
                    path: lib.path.clone(),
                    build_id: hex(&lib.build_id),
                    start,
                    end,
                    pgoff: m.pgoff,
                    vaddr: vaddr & !0xfff,
                    traced: true,
                });
            }
            row.push(base);
            base += lib.span + 0x10_0000;
        }
        bases.push(row);
    }
    Ok(Mapped { images, bases })
}

/// Draws branch stacks and counts what it drew.
struct Sampler<'a> {
    branches: &'a [StaticBranch],
    bases: &'a [Vec<u64>],
    procs: u32,
    /// (count, mispredicted) per process and branch; empty when not kept.
    counts: Vec<(u64, u64)>,
    /// Branches drawn.
    total: u64,
}

impl Sampler<'_> {
    /// One sample of a full branch stack, in a random process and thread.
    fn write_sample(
        &mut self,
        w: &mut PerfDataWriter<impl Write + Seek>,
        draw: &mut Draw,
        rng: &mut Rng,
        time: u64,
    ) -> Result<()> {
        let branches = self.branches;
        let p = (rng.next() % u64::from(self.procs)) as u32;
        let pid = 100_000 + p;
        let tid = pid + 0x10000 * (rng.next() % 2) as u32;
        let n = branches.len() as f64;
        let mut stack = Vec::with_capacity(MAX_BRANCHES);
        for _ in 0..MAX_BRANCHES {
            let i = match &mut *draw {
                // Skewed: a few branches are very hot, most are cold.
                Draw::Toy => ((rng.unit().powi(4)) * n) as usize,
                Draw::Walks(w) => w.next(branches, rng),
            };
            let b = &branches[i];
            let base = self.bases[p as usize][b.lib];
            let r = rng.next();
            let e = BranchEntry {
                from: base + b.from,
                to: base + b.to,
                mispred: r & 15 == 0,
                cycles: ((r >> 8) % 64 + 1) as u16,
            };
            if let Some(c) = self.counts.get_mut(p as usize * branches.len() + i) {
                c.0 += 1;
                c.1 += u64::from(e.mispred);
            }
            stack.push(e);
        }
        // Perf writes the newest entry first; walks run oldest first.
        if matches!(draw, Draw::Walks(_)) {
            stack.reverse();
        }
        self.total += MAX_BRANCHES as u64;
        w.sample(pid, tid, stack[0].to, time, MAX_BRANCHES as u64, &stack)
    }

    /// The counts by process and address, merged as a reader would (a
    /// library listed twice).
    fn counted(&self) -> Vec<BranchCount> {
        let branches = self.branches;
        let mut merged: HashMap<(u32, u64, u64), (u64, u64)> = HashMap::new();
        for (k, &(count, mispred)) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let p = (k / branches.len()) as u32;
            let b = &branches[k % branches.len()];
            let base = self.bases[p as usize][b.lib];
            let e = merged
                .entry((100_000 + p, base + b.from, base + b.to))
                .or_default();
            e.0 += count;
            e.1 += mispred;
        }
        BranchCount::sorted(&merged)
    }
}

/// How the entries of a stack are chosen.
enum Draw {
    Toy,
    Walks(Walks),
}

/// Zipf-distributed walks along the code (`--mode diverse`).
struct Walks {
    /// Sites in Zipf rank order (a random permutation of the site indexes).
    rank: Vec<u32>,
    /// The site last taken, if the walk goes on from it.
    at: Option<usize>,
    /// ln(number of sites + 1), for drawing Zipf ranks.
    log_n: f64,
}

impl Draw {
    /// Sort the sites by library and address (so a walk finds the next one
    /// by binary search) and rank them in a random order.
    fn walks(branches: &mut [StaticBranch], rng: &mut Rng) -> Draw {
        branches.sort_by_key(|b| (b.lib, b.from));
        let mut rank: Vec<u32> = (0..branches.len() as u32).collect();
        for i in (1..rank.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            rank.swap(i, j);
        }
        Draw::Walks(Walks {
            log_n: ((rank.len() + 1) as f64).ln(),
            rank,
            at: None,
        })
    }
}

impl Walks {
    /// Longest straight-line run a walk follows before it restarts.
    const MAX_RUN: u64 = 256;

    fn next(&mut self, branches: &[StaticBranch], rng: &mut Rng) -> usize {
        if let Some(prev) = self.at.filter(|_| rng.next() % 8 != 0) {
            let p = &branches[prev];
            // The first site at or after the target, in the same library.
            let mut j = branches.partition_point(|b| (b.lib, b.from) < (p.lib, p.to));
            while j < branches.len()
                && branches[j].lib == p.lib
                && branches[j].from - p.to < Self::MAX_RUN
            {
                if !branches[j].cond || rng.next() & 1 == 0 {
                    self.at = Some(j);
                    return j;
                }
                j += 1;
            }
        }
        // Zipf with s = 1: P(rank < k) = ln(k + 1) / ln(n + 1).
        let r = ((rng.unit() * self.log_n).exp() as usize).saturating_sub(1);
        let i = self.rank[r.min(self.rank.len() - 1)] as usize;
        self.at = Some(i);
        i
    }
}
