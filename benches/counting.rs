//! What counting alone costs: as many table updates as the *diverse*
//! profile makes (`scripts/bench-profile.sh`: 1.4 M branch stacks of 32
//! entries, 45 M branch and 45 M trace updates), replayed into faasfuse's
//! own branch and trace tables a stack at a time, each stack's slots
//! prefetched first as the counter does, with nothing read or decoded.
//! Branch keys are drawn log-uniformly over 1.1 M ranks (Zipf with s = 1);
//! trace keys half so over 8.4 M ranks and half uniformly, which gives
//! about as many distinct traces as the profile has (6.7 M of its 8.4 M).
//! Only the counting is timed: what the table layout alone leaves of an
//! ingestion budget on this machine.
//!
//! Run: `cargo bench --bench counting` (median of 3 runs, one core);
//! writes out/bench/counting.csv.

use std::time::Instant;

use faasfuse_core::profile::fasthash::{BranchTable, TraceTable};

const STACKS: usize = 1_400_000;
const DEPTH: usize = 32;
const BRANCHES: u64 = 1_100_000;
const TRACES: u64 = 8_400_000;
/// Bytes of the profile these updates come from.
const FILE_BYTES: f64 = 1.153e9;

/// splitmix64: the n-th pseudo-random word.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A rank in 0..n, log-uniform (P(rank < r) = ln r / ln n).
fn rank(n: u64, r: u64) -> u64 {
    let u = (r >> 11) as f64 / (1u64 << 53) as f64;
    ((n as f64).powf(u) as u64).saturating_sub(1).min(n - 1)
}

/// Addresses inside an 11 MB library, 16-byte aligned.
fn addr(k: u64) -> u64 {
    (0x1000 + mix(k) % 11_000_000) & !0xf
}

/// Stacks generated, then counted (only counting is timed).
const CHUNK: usize = 16_384;

fn run(seed: u64) -> (f64, usize, usize) {
    let (mut branches, mut traces) = (BranchTable::default(), TraceTable::default());
    let mut stacks = vec![[(0u64, 0u64, 0u64, 0u64); DEPTH]; CHUNK];
    let mut secs = 0.0;
    for first in (0..STACKS).step_by(CHUNK) {
        for (s, stack) in stacks.iter_mut().enumerate() {
            for (i, e) in stack.iter_mut().enumerate() {
                let n = ((first + s) * DEPTH + i) as u64;
                let r = mix(seed ^ n << 1);
                let b = rank(BRANCHES, r);
                // Half the traces uniform: as many distinct as the profile.
                let tr = if r & 1 == 0 {
                    rank(TRACES, mix(r))
                } else {
                    mix(r) % TRACES
                };
                let start = addr(tr << 1);
                *e = (addr(b), addr(b | 1 << 40), start, start + (mix(tr) & 0x1f0));
            }
        }
        let t = Instant::now();
        for stack in &stacks {
            for &(from, to, start, end) in stack {
                branches.prefetch(from, Some(to));
                traces.prefetch(start, end);
            }
            for &(from, to, start, end) in stack {
                let flag = branches.count(from, Some(to), false, || false);
                traces.add(start, end, flag, 1);
            }
        }
        secs += t.elapsed().as_secs_f64();
    }
    (secs, branches.len(), traces.len())
}

fn main() {
    std::fs::create_dir_all("out/bench").expect("out/bench");
    let runs: Vec<(f64, usize, usize)> = (0..3).map(run).collect();
    let mut times: Vec<f64> = runs.iter().map(|r| r.0).collect();
    times.sort_by(f64::total_cmp);
    let secs = times[1];
    let updates = (STACKS * DEPTH * 2) as f64;
    let ns = secs * 1e9 / updates;
    let budget = FILE_BYTES / 1e9;
    println!(
        "counting alone: {secs:.2} s ({:.2}-{:.2} s, median of 3) for {updates:.0} updates over \
         {} distinct branches and {} distinct traces: {ns:.1} ns each, {:.0}% of the {budget:.2} s \
         a core reading at 1 GB/s has for the whole file",
        times[0],
        times[2],
        runs[0].1,
        runs[0].2,
        100.0 * secs / budget
    );
    std::fs::write(
        "out/bench/counting.csv",
        format!(
            "updates,distinct_branches,distinct_traces,median_s,min_s,max_s,ns_per_update\n\
             {updates:.0},{},{},{secs:.3},{:.3},{:.3},{ns:.2}\n",
            runs[0].1, runs[0].2, times[0], times[2]
        ),
    )
    .expect("out/bench/counting.csv");
}
