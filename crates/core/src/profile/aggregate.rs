//! The profile: per image branch, call, function and RPC-site counts, and
//! the planner's view of it (calls per RPC edge, CPU share per function).
//! Deterministic (sorted maps) and mergeable by summing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Written as `format` so readers can tell a profile from other JSON.
pub const FORMAT: &str = "faasfuse-profile";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: String,
    pub version: u32,
    /// The inputs summed into this profile.
    pub sources: Vec<String>,
    pub stats: Stats,
    /// `caller -> callee -> calls`: the executions of the caller's RPC sites
    /// with a constant callee name (branch counts from LBR profiles, sample
    /// counts from call-chain profiles).
    pub calls: BTreeMap<String, BTreeMap<String, f64>>,
    /// Share of all samples (0..1) attributed to each function's image: the
    /// innermost frame of a sample that lies in a given image.
    pub cpu: BTreeMap<String, f64>,
    /// Requests from outside the deployment (not measured by profiles).
    #[serde(default)]
    pub external: BTreeMap<String, f64>,
    pub images: BTreeMap<String, ImageProfile>,
    /// `caller -> callee -> evidence`: what the profile can show about each
    /// RPC edge with a constant callee name (see [`Evidence`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, BTreeMap<String, Evidence>>,
    /// Samples whose instruction pointer lies outside every image, by
    /// mapped file (`[kernel]`, `[unknown]` for unmapped addresses).
    pub unmatched: BTreeMap<String, u64>,
}

impl Stats {
    /// Add every count of `o`.
    pub fn add(&mut self, o: &Stats) {
        self.samples += o.samples;
        self.lbr_samples += o.lbr_samples;
        self.lbr_callstack_samples += o.lbr_callstack_samples;
        self.callchain_samples += o.callchain_samples;
        self.dwarf_samples += o.dwarf_samples;
        self.branches += o.branches;
        self.matched_samples += o.matched_samples;
        self.lost_samples += o.lost_samples;
        self.records += o.records;
        self.bad_records += o.bad_records;
        self.unwind_failures += o.unwind_failures;
        self.offcpu_samples += o.offcpu_samples;
        self.offcpu_blocked += o.offcpu_blocked;
        self.other_samples += o.other_samples;
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Samples of CPU time (of on-CPU events: hardware events,
    /// `cpu-clock`, `task-clock`, ...): what CPU shares are shares of.
    pub samples: u64,
    /// Samples with a branch stack of taken branches.
    pub lbr_samples: u64,
    /// Samples of an LBR call-stack event (`--call-graph lbr`): their
    /// branch stacks are open calls, counted as call chains, not branches.
    #[serde(default)]
    pub lbr_callstack_samples: u64,
    /// Samples with a call chain (frame pointers, a DWARF-unwound stack
    /// or an LBR call stack).
    pub callchain_samples: u64,
    /// Samples with a copied user stack (`--call-graph dwarf`), unwound
    /// with the images' `.eh_frame`.
    #[serde(default)]
    pub dwarf_samples: u64,
    /// Branch-stack entries counted.
    pub branches: u64,
    /// Samples whose instruction pointer lies in an image.
    pub matched_samples: u64,
    pub lost_samples: u64,
    pub records: u64,
    /// Records skipped as malformed (`--lenient`).
    pub bad_records: u64,
    /// DWARF stacks that could not be walked past their first frame.
    pub unwind_failures: u64,
    /// Off-CPU samples (`sched:sched_switch`: a thread leaving its CPU),
    /// not counted in `samples` or anywhere CPU time is.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offcpu_samples: u64,
    /// Of `offcpu_samples`, those of a thread that blocked (sleeping, S or
    /// D) rather than was preempted: what RPC sites' `offcpu_count` count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offcpu_blocked: u64,
    /// Samples of other events that measure no CPU time (other
    /// tracepoints and software events): counted here only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_samples: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageProfile {
    pub path: String,
    pub build_id: Option<String>,
    /// The file names this image was mapped as in the profile.
    #[serde(default)]
    pub mapped_as: Vec<String>,
    /// Files mapped under this image's name but with another build-id:
    /// another build, whose samples are not counted here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_builds: Vec<String>,
    /// Samples whose instruction pointer lies in this image.
    pub samples: u64,
    /// Samples whose innermost frame in any image lies in this one.
    pub attributed_samples: u64,
    /// Self samples by address (for BOLT's no-LBR `.fdata`).
    #[serde(default)]
    pub addresses: Vec<AddressCount>,
    /// Per function symbol: self and attributed samples.
    pub functions: BTreeMap<String, FunctionCount>,
    /// Taken branches from this image, by ELF virtual address; `to` is
    /// null for a branch into another image.
    pub branches: Vec<BranchCount>,
    /// Fall-through edges between basic blocks on the paths between
    /// branches (from a block's last instruction to the next block).
    #[serde(default)]
    pub fallthroughs: Vec<BranchCount>,
    /// Function calls inside the image (LBR calls and adjacent frames of
    /// call chains).
    pub calls: Vec<CallCount>,
    pub rpc_sites: Vec<SiteCount>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCount {
    pub samples: u64,
    pub attributed: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddressCount {
    pub address: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BranchCount {
    pub from: u64,
    pub to: Option<u64>,
    pub count: u64,
    pub mispred: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallCount {
    pub caller: String,
    pub callee: String,
    pub count: u64,
}

impl CallCount {
    /// Counts keyed by (caller, callee), as a list in that order.
    pub fn list(calls: BTreeMap<(String, String), u64>) -> Vec<CallCount> {
        calls
            .into_iter()
            .map(|((caller, callee), count)| CallCount {
                caller,
                callee,
                count,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteCount {
    /// Address of the call instruction.
    pub address: u64,
    pub function: Option<String>,
    /// The callee's constant name, or `dynamic`.
    pub callee: String,
    /// Executions counted from branch stacks (branches leaving the call).
    pub branch_count: u64,
    /// Samples whose call chain passes through the call.
    pub sample_count: u64,
    /// Off-CPU samples (`sched:sched_switch`) of a thread blocked with the
    /// call on its stack: each one blocking of one execution, a count of
    /// calls when the callee runs elsewhere (another process).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offcpu_count: u64,
}

impl SiteCount {
    pub fn is_dynamic(&self) -> bool {
        self.callee == "dynamic"
    }
}

/// What a profile can show about an RPC edge `Caller -> Callee`, weakest
/// first. Only the last four see the edge: its count, zero included, is
/// a measurement; the first two are no evidence either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// No sample in the callee and no call chain through the caller's RPC
    /// sites.
    Nothing,
    /// Samples in the callee, but no call chain through the caller's RPC
    /// sites (frame-pointer chains stop at the first frame of code built
    /// without frame pointers; a profile without call chains has none).
    SamplesOnly,
    /// Frame-pointer call chains that reach the caller's RPC sites.
    FramePointerChains,
    /// Call chains unwound from copied user stacks (`--call-graph dwarf`).
    DwarfChains,
    /// LBR call stacks (`--call-graph lbr`): the hardware's record of the
    /// open calls, with or without frame pointers.
    LbrCallStacks,
    /// Off-CPU stacks (`-e sched:sched_switch` with call chains) of the
    /// caller blocked in its RPC sites: its calls run elsewhere (another
    /// process) and each blocking counts one.
    OffCpuChains,
    /// Branch stacks (LBR): each execution of a site is a branch.
    BranchStacks,
}

impl Evidence {
    /// Whether the edge's count is a measurement (zero meaning cold).
    pub fn sees(self) -> bool {
        self >= Evidence::FramePointerChains
    }

    /// In words, for tables and reasons.
    pub fn describe(self) -> &'static str {
        match self {
            Evidence::Nothing => "nothing",
            Evidence::SamplesOnly => "samples only",
            Evidence::FramePointerChains => "frame-pointer chains",
            Evidence::DwarfChains => "DWARF chains",
            Evidence::LbrCallStacks => "LBR call stacks",
            Evidence::OffCpuChains => "off-CPU chains",
            Evidence::BranchStacks => "branch stacks",
        }
    }
}

/// How to record a profile that shows RPC edges, for reasons that say an
/// edge has no evidence.
pub const RECORDING_ADVICE: &str = "record the profile with `perf record --call-graph dwarf` (DWARF-unwound user stacks), or with LBR (`perf record --call-graph lbr` call stacks or `-b` branch stacks) where the CPU has it, or build the platform's worker (its invoke callback and its path to the callee) with -fno-omit-frame-pointer so that `perf record -g` chains pass through the RPC sites; where callers block while their callees run in other processes (nightcore, `faasfuse run --ipc`), record their off-CPU stacks with `perf record -a -e sched:sched_switch --call-graph dwarf`";

impl Profile {
    pub fn new(sources: Vec<String>) -> Profile {
        Profile {
            format: FORMAT.into(),
            version: VERSION,
            sources,
            ..Profile::default()
        }
    }

    /// Branch counts measure RPC executions when the profile has any.
    fn by_branches(&self) -> bool {
        self.stats.lbr_samples > 0
            || self
                .images
                .values()
                .any(|i| i.rpc_sites.iter().any(|s| s.branch_count > 0))
    }

    /// Whether `img` blocks in its RPC sites: some off-CPU stack of a
    /// blocked thread holds the return address of one of them. Its calls
    /// then run in another process (a callee in the caller's own thread
    /// never makes it block there), so the blockings count its calls.
    fn blocks_in_calls(img: &ImageProfile) -> bool {
        img.rpc_sites.iter().any(|s| s.offcpu_count > 0)
    }

    /// Recompute `calls` and `cpu` from the per-image counts: per caller
    /// its sites' branch counts when the profile has branch stacks, else
    /// their blockings when it blocks in its calls, else their samples.
    pub fn derive(&mut self) {
        let by_branches = self.by_branches();
        self.calls.clear();
        self.cpu.clear();
        for (name, img) in &self.images {
            let off_cpu = !by_branches && Self::blocks_in_calls(img);
            for s in img.rpc_sites.iter().filter(|s| !s.is_dynamic()) {
                let n = if by_branches {
                    s.branch_count
                } else if off_cpu {
                    s.offcpu_count
                } else {
                    s.sample_count
                };
                if n > 0 {
                    *self
                        .calls
                        .entry(name.clone())
                        .or_default()
                        .entry(s.callee.clone())
                        .or_default() += n as f64;
                }
            }
            let share = if self.stats.samples > 0 {
                img.attributed_samples as f64 / self.stats.samples as f64
            } else {
                0.0
            };
            self.cpu.insert(name.clone(), share);
        }
        self.evidence = self.edge_evidence();
    }

    /// What this profile can show about each RPC edge with a constant
    /// callee name: branch stacks see every edge; off-CPU chains see the
    /// edges of a caller that blocks in its RPC sites (some off-CPU stack
    /// of a blocked thread holds one of their return addresses: its
    /// callees run elsewhere, and every call blocks it); LBR call stacks
    /// and DWARF chains see every other edge (of every image, as they
    /// follow code built with or without frame pointers); frame-pointer
    /// chains see the edges of a caller when some chain holds the return
    /// address of one of its RPC sites. Else the edge is seen by nothing,
    /// or by its callee's samples only. Off-CPU samples of a caller that
    /// never blocks in its calls show nothing of them (a callee in the
    /// caller's thread does not make it block), so such a caller falls to
    /// the other rules.
    fn edge_evidence(&self) -> BTreeMap<String, BTreeMap<String, Evidence>> {
        let all = if self.by_branches() || self.stats.branches > 0 {
            Some(Evidence::BranchStacks)
        } else if self.stats.lbr_callstack_samples > 0 {
            Some(Evidence::LbrCallStacks)
        } else if self.stats.dwarf_samples > 0 {
            Some(Evidence::DwarfChains)
        } else {
            None
        };
        let mut out: BTreeMap<String, BTreeMap<String, Evidence>> = BTreeMap::new();
        for (name, img) in &self.images {
            let reached = img.rpc_sites.iter().any(|s| s.sample_count > 0);
            let all = match all {
                Some(Evidence::BranchStacks) => all,
                _ if Self::blocks_in_calls(img) => Some(Evidence::OffCpuChains),
                _ => all,
            };
            for s in img.rpc_sites.iter().filter(|s| !s.is_dynamic()) {
                let e = all.unwrap_or(if reached {
                    Evidence::FramePointerChains
                } else if self.images.get(&s.callee).is_some_and(|c| c.samples > 0) {
                    Evidence::SamplesOnly
                } else {
                    Evidence::Nothing
                });
                let slot = out
                    .entry(name.clone())
                    .or_default()
                    .entry(s.callee.clone())
                    .or_insert(e);
                *slot = (*slot).max(e);
            }
        }
        out
    }

    /// Add `other` to this profile. Associative and commutative, to the
    /// byte: counts are sums, lists are kept sorted, and where the two
    /// name an image differently (its path on two hosts) the smaller name
    /// stays, so any grouping and order of many hosts' profiles gives the
    /// same profile.
    pub fn merge(&mut self, other: Profile) -> Result<(), String> {
        self.merge_counts(other)?;
        self.derive();
        Ok(())
    }

    /// [`Profile::merge`] without deriving `calls`, `cpu` and `evidence`
    /// (call [`Profile::derive`] after the last): for summing many.
    pub fn merge_counts(&mut self, other: Profile) -> Result<(), String> {
        self.sources.extend(other.sources);
        self.sources.sort();
        self.stats.add(&other.stats);
        for (k, v) in other.unmatched {
            *self.unmatched.entry(k).or_default() += v;
        }
        for (k, v) in other.external {
            *self.external.entry(k).or_default() += v;
        }
        for (name, img) in other.images {
            match self.images.get_mut(&name) {
                None => {
                    self.images.insert(name, img);
                }
                Some(mine) => {
                    if mine.build_id.is_some()
                        && img.build_id.is_some()
                        && mine.build_id != img.build_id
                    {
                        return Err(format!(
                            "{name} is build {} in one profile and {} in another",
                            mine.build_id.as_deref().unwrap_or("-"),
                            img.build_id.as_deref().unwrap_or("-")
                        ));
                    }
                    mine.merge(img);
                }
            }
        }
        Ok(())
    }
}

impl ImageProfile {
    fn merge(&mut self, o: ImageProfile) {
        if o.path < self.path {
            self.path = o.path.clone();
        }
        if self.build_id.is_none() {
            self.build_id = o.build_id.clone();
        }
        for m in o.mapped_as {
            if !self.mapped_as.contains(&m) {
                self.mapped_as.push(m);
            }
        }
        for m in o.other_builds {
            if !self.other_builds.contains(&m) {
                self.other_builds.push(m);
            }
        }
        self.other_builds.sort();
        self.mapped_as.sort();
        self.samples += o.samples;
        self.attributed_samples += o.attributed_samples;
        for (k, v) in o.functions {
            let f = self.functions.entry(k).or_default();
            f.samples += v.samples;
            f.attributed += v.attributed;
        }
        let mut at: BTreeMap<u64, u64> = BTreeMap::new();
        for a in self.addresses.drain(..).chain(o.addresses) {
            *at.entry(a.address).or_default() += a.count;
        }
        self.addresses = at
            .into_iter()
            .map(|(address, count)| AddressCount { address, count })
            .collect();
        self.branches = sum_sorted_branches(&self.branches, &o.branches);
        self.fallthroughs = sum_sorted_branches(&self.fallthroughs, &o.fallthroughs);
        let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
        for c in self.calls.drain(..).chain(o.calls) {
            *calls.entry((c.caller, c.callee)).or_default() += c.count;
        }
        self.calls = CallCount::list(calls);
        let mut sites: BTreeMap<u64, SiteCount> = BTreeMap::new();
        for s in self.rpc_sites.drain(..).chain(o.rpc_sites) {
            match sites.get_mut(&s.address) {
                Some(m) => {
                    m.branch_count += s.branch_count;
                    m.sample_count += s.sample_count;
                    m.offcpu_count += s.offcpu_count;
                }
                None => {
                    sites.insert(s.address, s);
                }
            }
        }
        self.rpc_sites = sites.into_values().collect();
    }
}

/// Branch counts summed by (from, to), sorted.
pub fn sum_branches(all: impl Iterator<Item = BranchCount>) -> Vec<BranchCount> {
    // Sort and merge runs: millions of branches sum faster, and in less
    // memory, than through an ordered map.
    let mut v: Vec<BranchCount> = all.collect();
    v.sort_unstable_by_key(|b| (b.from, b.to));
    let mut out: Vec<BranchCount> = Vec::with_capacity(v.len());
    for b in v {
        match out.last_mut() {
            Some(l) if (l.from, l.to) == (b.from, b.to) => {
                l.count += b.count;
                l.mispred += b.mispred;
            }
            _ => out.push(b),
        }
    }
    out
}

/// [`sum_branches`] of two lists that each come sorted by (from, to), as
/// it gives them: merged in one pass instead of sorted again (sorted anew
/// when either is not).
pub fn sum_sorted_branches(a: &[BranchCount], b: &[BranchCount]) -> Vec<BranchCount> {
    let key = |x: &BranchCount| (x.from, x.to);
    let sorted = |v: &[BranchCount]| v.windows(2).all(|w| key(&w[0]) <= key(&w[1]));
    if !sorted(a) || !sorted(b) {
        return sum_branches(a.iter().chain(b).copied());
    }
    let mut out: Vec<BranchCount> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let x = if j == b.len() || (i < a.len() && key(&a[i]) <= key(&b[j])) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        match out.last_mut() {
            Some(l) if key(l) == key(&x) => {
                l.count += x.count;
                l.mispred += x.mispred;
            }
            _ => out.push(x),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(address: u64, callee: &str, sample_count: u64, branch_count: u64) -> SiteCount {
        SiteCount {
            address,
            function: Some("faas_func_call".into()),
            callee: callee.into(),
            branch_count,
            sample_count,
            offcpu_count: 0,
        }
    }

    /// The fan-out shape: Frontend's sites to Inventory (`inv` samples
    /// through it, branch count `br`) and Recommend (none), a dynamic
    /// site; Inventory with `callee_samples` samples, Recommend none.
    fn profile(stats: Stats, inv: u64, br: u64, callee_samples: u64) -> Profile {
        let mut p = Profile::new(vec![]);
        p.stats = stats;
        let image = |samples, rpc_sites| ImageProfile {
            samples,
            attributed_samples: samples,
            rpc_sites,
            ..ImageProfile::default()
        };
        let sites = vec![
            site(0x1180, "Inventory", inv, br),
            site(0x1230, "Recommend", 0, 0),
            site(0x12e0, "dynamic", 0, 0),
        ];
        p.images.insert("Frontend".into(), image(10, sites));
        p.images
            .insert("Inventory".into(), image(callee_samples, vec![]));
        p.images.insert("Recommend".into(), image(0, vec![]));
        p.derive();
        p
    }

    fn of(p: &Profile, callee: &str) -> Evidence {
        p.evidence["Frontend"][callee]
    }

    #[test]
    fn each_kind_of_recording_shows_what_it_can() {
        let chains = Stats {
            samples: 100,
            callchain_samples: 60,
            ..Stats::default()
        };
        // Frame-pointer chains through one of Frontend's sites: all of its
        // edges are seen, the one no chain passed through as zero.
        let p = profile(chains.clone(), 7, 0, 5);
        assert_eq!(of(&p, "Inventory"), Evidence::FramePointerChains);
        assert_eq!(of(&p, "Recommend"), Evidence::FramePointerChains);
        assert!(!p.evidence["Frontend"].contains_key("dynamic"));
        // No chain through any of its sites: the callee's samples only, or
        // nothing.
        let p = profile(chains.clone(), 0, 0, 5);
        assert_eq!(of(&p, "Inventory"), Evidence::SamplesOnly);
        assert_eq!(of(&p, "Recommend"), Evidence::Nothing);
        assert!(!of(&p, "Inventory").sees() && !of(&p, "Recommend").sees());
        // DWARF stacks and branch stacks see every edge.
        let dwarf = Stats {
            dwarf_samples: 60,
            ..chains
        };
        assert_eq!(
            of(&profile(dwarf, 0, 0, 0), "Inventory"),
            Evidence::DwarfChains
        );
        let lbr = Stats {
            samples: 100,
            lbr_samples: 100,
            branches: 3200,
            ..Stats::default()
        };
        let p = profile(lbr, 0, 9, 0);
        assert_eq!(of(&p, "Recommend"), Evidence::BranchStacks);
        assert_eq!(p.calls["Frontend"]["Inventory"], 9.0);
    }

    /// [`profile`] with Frontend's sites blocked in `offcpu` times (to
    /// Inventory, Recommend, dynamic).
    fn blocking(stats: Stats, inv: u64, br: u64, offcpu: [u64; 3]) -> Profile {
        let mut p = profile(stats, inv, br, 5);
        let img = p.images.get_mut("Frontend").unwrap();
        for (s, n) in img.rpc_sites.iter_mut().zip(offcpu) {
            s.offcpu_count = n;
        }
        p.derive();
        p
    }

    #[test]
    fn off_cpu_chains_count_the_calls_of_a_caller_that_blocks_in_them() {
        let offcpu = Stats {
            offcpu_samples: 900,
            offcpu_blocked: 600,
            ..Stats::default()
        };
        // Blocked at its Inventory site: every edge of Frontend is seen,
        // counted by blockings, the one never blocked in as zero (cold).
        let p = blocking(offcpu.clone(), 0, 0, [40, 0, 7]);
        assert_eq!(of(&p, "Inventory"), Evidence::OffCpuChains);
        assert_eq!(of(&p, "Recommend"), Evidence::OffCpuChains);
        assert!(of(&p, "Recommend").sees());
        assert_eq!(p.calls["Frontend"]["Inventory"], 40.0);
        assert!(!p.calls["Frontend"].contains_key("Recommend"));
        assert!(!p.calls["Frontend"].contains_key("dynamic"));
        // Off-CPU samples are no CPU time: shares are of on-CPU samples.
        assert_eq!(p.cpu["Frontend"], 0.0);
        // Blockings count the calls of a blocking caller, not its on-CPU
        // samples (which, of a caller whose callee runs elsewhere, are its
        // time in the call's own code), DWARF chains or not.
        let dwarf = Stats {
            samples: 100,
            callchain_samples: 60,
            dwarf_samples: 60,
            ..offcpu.clone()
        };
        let p = blocking(dwarf.clone(), 3, 0, [40, 0, 0]);
        assert_eq!(of(&p, "Inventory"), Evidence::OffCpuChains);
        assert_eq!(p.calls["Frontend"]["Inventory"], 40.0);
        assert_eq!(p.cpu["Frontend"], 0.1);
        // A caller never blocked in its sites gets nothing from off-CPU
        // samples (an in-process callee never blocks its caller, so their
        // zero means nothing): the other rules decide, and without on-CPU
        // chains nothing sees its edges, none is cold.
        let p = blocking(offcpu.clone(), 0, 0, [0, 0, 0]);
        assert_eq!(of(&p, "Inventory"), Evidence::SamplesOnly);
        assert_eq!(of(&p, "Recommend"), Evidence::Nothing);
        assert!(p.calls.is_empty());
        let p = blocking(dwarf, 3, 0, [0, 0, 0]);
        assert_eq!(of(&p, "Recommend"), Evidence::DwarfChains);
        assert_eq!(p.calls["Frontend"]["Inventory"], 3.0);
        // Branch stacks count every execution: they win.
        let lbr = Stats {
            samples: 100,
            lbr_samples: 100,
            branches: 3200,
            ..offcpu
        };
        let p = blocking(lbr, 0, 9, [40, 0, 0]);
        assert_eq!(of(&p, "Inventory"), Evidence::BranchStacks);
        assert_eq!(p.calls["Frontend"]["Inventory"], 9.0);
    }

    #[test]
    fn off_cpu_counts_merge_by_summing_and_old_profiles_keep_their_bytes() {
        let offcpu = Stats {
            offcpu_samples: 10,
            offcpu_blocked: 8,
            ..Stats::default()
        };
        let mut a = blocking(offcpu.clone(), 0, 0, [4, 0, 0]);
        let b = blocking(offcpu.clone(), 0, 0, [6, 1, 0]);
        a.merge(b).unwrap();
        assert_eq!(a.stats.offcpu_samples, 20);
        assert_eq!(a.stats.offcpu_blocked, 16);
        assert_eq!(a.calls["Frontend"]["Inventory"], 10.0);
        assert_eq!(a.calls["Frontend"]["Recommend"], 1.0);
        // A profile without off-CPU samples writes none of the new fields,
        // and reads back equal.
        let p = profile(Stats::default(), 3, 0, 5);
        let text = serde_json::to_string(&p).unwrap();
        for field in ["offcpu", "other_samples", "off_cpu"] {
            assert!(!text.contains(field), "{field} in {text}");
        }
        let back: Profile = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        let text = serde_json::to_string(&a).unwrap();
        assert!(text.contains("\"offcpu_count\":10"), "{text}");
        assert!(text.contains("\"off_cpu_chains\""), "{text}");
    }

    #[test]
    fn lbr_call_stacks_see_every_edge_by_samples_not_branches() {
        // Call-stack samples: Frontend's site to Inventory on 7 stacks,
        // none to Recommend, in no branch count.
        let stacks = Stats {
            samples: 100,
            callchain_samples: 80,
            lbr_callstack_samples: 100,
            ..Stats::default()
        };
        let p = profile(stacks.clone(), 7, 0, 5);
        assert_eq!(of(&p, "Inventory"), Evidence::LbrCallStacks);
        assert_eq!(of(&p, "Recommend"), Evidence::LbrCallStacks);
        assert!(of(&p, "Recommend").sees());
        assert_eq!(p.calls["Frontend"]["Inventory"], 7.0);
        assert!(!p.calls["Frontend"].contains_key("Recommend"));
        assert_eq!(Evidence::LbrCallStacks.describe(), "LBR call stacks");
        assert_eq!(
            serde_json::to_value(Evidence::LbrCallStacks).unwrap(),
            "lbr_call_stacks"
        );
        // Even with no site on any stack: every edge is seen, as zero.
        let p = profile(stacks.clone(), 0, 0, 0);
        assert_eq!(of(&p, "Inventory"), Evidence::LbrCallStacks);
        // With DWARF chains of another host, the call stacks name it.
        let mut both = profile(stacks, 7, 0, 5);
        let dwarf = Stats {
            samples: 10,
            dwarf_samples: 10,
            ..Stats::default()
        };
        both.merge(profile(dwarf, 1, 0, 1)).unwrap();
        assert_eq!(of(&both, "Recommend"), Evidence::LbrCallStacks);
        assert_eq!(both.calls["Frontend"]["Inventory"], 8.0);
        // A profile written before the counter existed still reads.
        let old = r#"{"samples":1,"lbr_samples":0,"callchain_samples":0,"branches":0,
            "matched_samples":0,"lost_samples":0,"records":0,"bad_records":0,"unwind_failures":0}"#;
        let st: Stats = serde_json::from_str(old).unwrap();
        assert_eq!(st.lbr_callstack_samples, 0);
    }

    #[test]
    fn merged_profiles_see_what_either_saw() {
        let chains = Stats {
            samples: 100,
            callchain_samples: 60,
            ..Stats::default()
        };
        let mut fp = profile(chains.clone(), 0, 0, 5);
        let dwarf = profile(
            Stats {
                dwarf_samples: 60,
                ..chains
            },
            4,
            0,
            5,
        );
        fp.merge(dwarf).unwrap();
        assert_eq!(of(&fp, "Recommend"), Evidence::DwarfChains);
    }
}
