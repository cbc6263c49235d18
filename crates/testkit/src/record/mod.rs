//! Test data for profile ingestion: LBR `perf.data` files written from
//! real executions, on machines without LBR hardware.
//!
//! - [`writer`]: a streaming writer of perf's file format (one `cycles:u`
//!   event with `PERF_SAMPLE_BRANCH_STACK`, `COMM`, `MMAP2` with build-ids,
//!   samples, and the feature sections `perf script`, `perf report`,
//!   `perf buildid-list` and `perf2bolt` read).
//! - [`ptrace`]: a recorder that runs commands under `ptrace` and records
//!   every taken branch of their function libraries, with the ground truth
//!   (exact count per branch) as JSON (`faasfuse __record-lbr`).
//! - [`gen`]: a generator of arbitrarily large LBR profiles over real
//!   libraries, for ingestion benchmarks (`faasfuse __gen-lbr`).
//!
//! # Sample semantics: exact branch counts
//!
//! Each sample of a thread carries a branch stack of that thread's latest
//! taken branches, newest first, at most 32 deep, as an LBR does; the
//! sample's `period` is the number of taken branches since the thread's
//! previous sample (the attribute's `sample_period` is the nominal value,
//! `--every K`). So **the newest `min(period, nr)` entries of a sample are
//! exactly the branches no earlier sample of that thread saw**, and summing
//! those over all samples counts every recorded branch exactly once:
//!
//! - `--every 1` (default): consecutive stacks overlap by 31 entries;
//!   count only the newest entry of each sample.
//! - `--every 32`: stacks do not overlap; count every entry (what
//!   `perf2bolt` does, so its `.fdata` counts are exact too).
//! - `--every K` with K > 32: sampling, as on real hardware; branches
//!   between stacks are lost, the truth file still counts them.
//!
//! A thread's last sample (at its exit) carries only the `period < K`
//! branches not yet sampled. The rule also holds for real `perf record -b`
//! data, whose period (cycles) is far above 32: count every entry.
//!
//! # LBR call stacks (`--call-stack`)
//!
//! `record-lbr --call-stack` writes what `perf record --call-graph lbr`
//! does instead: each sample's stack holds the thread's open calls, newest
//! first, at most 32 (`from` the call instruction, `to` the callee), in an
//! event perf reads as LBR call stacks (see [`writer`] and [`ptrace`]);
//! samples still come every `--every K` taken branches, and the truth file
//! still counts every taken branch.
//!
//! The truth file ([`Truth`]) lists, per process, every mapped image and
//! every taken branch with its exact count and how many times the
//! recorder's predictor model mispredicted it (the entries' `mispred`
//! flags).

pub mod gen;
pub mod ptrace;
pub mod writer;

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use faasfuse_host::TRACE_STOP_ENV;

/// One executable mapping of a recorded process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageInfo {
    pub pid: u32,
    pub path: String,
    /// GNU build-id, lowercase hex ("" if none).
    pub build_id: String,
    pub start: u64,
    pub end: u64,
    /// File offset mapped at `start`.
    pub pgoff: u64,
    /// ELF virtual address mapped at `start` (runtime address − start +
    /// vaddr is the address in the image).
    pub vaddr: u64,
    /// Its branches were recorded.
    pub traced: bool,
}

/// A taken branch of one process and how often it was taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BranchCount {
    pub pid: u32,
    pub from: u64,
    pub to: u64,
    pub count: u64,
    /// How many of those were marked mispredicted.
    pub mispred: u64,
}

impl BranchCount {
    /// Counts keyed by (pid, from, to) as a list sorted by that key.
    pub fn sorted<'a>(
        counts: impl IntoIterator<Item = (&'a (u32, u64, u64), &'a (u64, u64))>,
    ) -> Vec<BranchCount> {
        let mut list: Vec<BranchCount> = counts
            .into_iter()
            .map(|(&(pid, from, to), &(count, mispred))| BranchCount {
                pid,
                from,
                to,
                count,
                mispred,
            })
            .collect();
        list.sort_by_key(|b| (b.pid, b.from, b.to));
        list
    }
}

/// Ground truth of a recording (`--truth FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truth {
    /// `--every K` (the nominal sample period).
    pub every: u64,
    pub taken_branches: u64,
    pub samples: u64,
    pub images: Vec<ImageInfo>,
    /// Sorted by (pid, from, to); runtime addresses.
    pub branches: Vec<BranchCount>,
}

impl Truth {
    /// The mapping of process `pid` holding runtime address `addr`.
    pub fn image_of(&self, pid: u32, addr: u64) -> Option<&ImageInfo> {
        self.images
            .iter()
            .find(|i| i.pid == pid && addr >= i.start && addr < i.end)
    }

    /// `addr` as an address of its image (ELF virtual address).
    pub fn image_address(&self, pid: u32, addr: u64) -> Option<(&ImageInfo, u64)> {
        self.image_of(pid, addr)
            .map(|i| (i, addr - i.start + i.vaddr))
    }

    pub fn read(path: &std::path::Path) -> Result<Truth> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a truth file", path.display()))
    }

    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        faasfuse_sys::output::write_atomically(path, format!("{text}\n").as_bytes(), false)
    }
}

/// `faasfuse __record-lbr`: record taken branches of commands as an LBR
/// `perf.data`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The perf.data file to write.
    #[arg(short, long, value_name = "OUT.data")]
    pub output: PathBuf,
    /// Emit a sample every K taken branches of a thread (1: every branch is
    /// the newest entry of exactly one sample; 32: stacks do not overlap).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub every: u64,
    /// Write the exact count of every taken branch as JSON.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Record the images whose path contains STR (repeatable; default:
    /// shared objects outside the system library directories).
    #[arg(long = "image", value_name = "STR")]
    pub images: Vec<String>,
    /// Do not pin the tracer and the commands to one CPU.
    #[arg(long)]
    pub no_pin: bool,
    /// Single-step every instruction (a trap each, slow: a few requests
    /// only) to also record branches into the images from untraced code.
    #[arg(long)]
    pub single_step: bool,
    /// Leave PERF_SAMPLE_BRANCH_HW_INDEX out of the branch sample type.
    #[arg(long)]
    pub no_hw_index: bool,
    /// Write LBR call stacks, as `perf record --call-graph lbr` does: each
    /// sample carries the thread's open calls (newest first, at most 32),
    /// not its latest taken branches.
    #[arg(long)]
    pub call_stack: bool,
    /// The commands, run at once; separate several commands with `:::`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Run `faasfuse __record-lbr`.
pub fn record_main(a: RecordArgs) -> Result<()> {
    let commands: Vec<Vec<String>> = a
        .command
        .split(|s| s == ":::")
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect();
    let mut cmdline = vec!["faasfuse-testkit".to_string(), "record-lbr".to_string()];
    cmdline.extend(a.command.iter().cloned());
    let opts = writer::WriterOptions {
        sample_period: a.every.max(1),
        hw_index: !a.no_hw_index,
        cmdline,
        call_stack: a.call_stack,
    };
    let mut w = writer::PerfDataWriter::create(&a.output, opts)?;
    let ropts = ptrace::RecordOptions {
        every: a.every,
        images: if a.images.is_empty() {
            ptrace::ImageFilter::Default
        } else {
            ptrace::ImageFilter::Matching(a.images.clone())
        },
        pin_cpu: !a.no_pin,
        single_step: a.single_step,
        call_stack: a.call_stack,
    };
    let truth = ptrace::record(&commands, &ropts, &mut w);
    let size = w.finish()?;
    let truth = truth?;
    if let Some(t) = &a.truth {
        truth.write(t)?;
    }
    eprintln!(
        "faasfuse: recorded {} taken branches ({} distinct) in {} samples, {} bytes: {}",
        truth.taken_branches,
        truth.branches.len(),
        truth.samples,
        size,
        a.output.display()
    );
    Ok(())
}
