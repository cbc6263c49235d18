//! `faasfuse plan` and `faasfuse build`: from a deployment description and
//! a profile to fusion groups (which callees to fuse into which entry
//! functions), and from the plan to fused images and a new deployment.

pub mod config;
pub mod graph;
mod group;
mod render;
pub mod solve;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

pub use config::{Config, FuncEntry};
pub use graph::{RpcGraph, Weights};
pub use group::reentering_edges;
pub use render::{dot, table};
use solve::{Limits, Verdict};

use crate::error::InputError;
use crate::profile::aggregate::{Evidence, RECORDING_ADVICE};
use crate::profile::images::Lib;
use crate::profile::planning::{self, Kind, ProfileArg};

/// Planner settings; the defaults are documented in `faasfuse plan --help`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    /// Cost of one RPC, in microseconds (nightcore's measured nested call).
    pub rpc_cost_us: f64,
    /// Edges called on fewer than this share of their caller's executions
    /// are cold and stay RPCs.
    pub cold_threshold: f64,
    /// A previous group is kept unless the new one removes more than this
    /// share more RPC cost.
    pub hysteresis: f64,
    /// Use the greedy heuristic even where enumeration is possible.
    #[serde(default)]
    pub heuristic_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rpc_cost_us: 39.0,
            cold_threshold: 0.01,
            hysteresis: 0.10,
            heuristic_only: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub root: String,
    /// Root first, then the fused callees by name.
    pub members: Vec<String>,
    pub removed_calls: f64,
    pub removed_cost_us: f64,
    pub image_bytes: u64,
    pub cpu: f64,
    /// Found by enumeration (optimal under the model) or greedily.
    pub exact: bool,
    pub kept_from_previous: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanEdge {
    pub caller: String,
    pub callee: String,
    pub calls: f64,
    pub static_sites: usize,
    /// Calls per execution of the caller (see `cold_threshold`).
    pub share: f64,
    /// `fused` (inside some group), `cold`, `no evidence` (the profile
    /// cannot show the edge: neither hot nor cold), or `rpc`.
    pub status: String,
    /// What the profile can show about the edge (absent when its count was
    /// given outright: a weights file, a platform trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Why an edge has no evidence, and how to record a profile that
    /// shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub root: String,
    pub function: String,
    pub fused: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub options: Options,
    pub functions: Vec<graph::NodeSummary>,
    pub edges: Vec<PlanEdge>,
    pub groups: Vec<Group>,
    pub decisions: Vec<Decision>,
    /// Total removed RPC cost per profile window, microseconds.
    pub objective_us: f64,
}

impl Plan {
    pub fn load(path: &Path) -> Result<Plan> {
        // Not noted as an input: `plan --previous plan.json -o plan.json`
        // updates the plan in force.
        let text = crate::files::read_text_unnoted(path, "a faasfuse plan")?;
        Ok(serde_json::from_str(&text)
            .map_err(|e| InputError::new(path, format!("not a faasfuse plan: {e}")))?)
    }
}

/// Read one planning input, recognised by its content: a profile JSON
/// from `faasfuse profile`, a weights JSON (`calls`, `cpu`, `external`), a
/// platform trace (the `faasfuse run --json` report), a perf.data or a
/// BOLT `.fdata` / pre-aggregated profile (read over the deployment's
/// libraries, loaded into `libs` on first need). Returns the weights and
/// whether its call counts are exact (a trace) rather than sampled.
fn read_weights(
    arg: &Path,
    functions: &[(String, PathBuf)],
    libs: &mut Option<Vec<Lib>>,
) -> Result<(Weights, bool)> {
    let arg = ProfileArg::parse(arg);
    let path = arg.path.as_path();
    let (kind, text) = planning::sniff(path)?;
    if kind != Kind::Json {
        if libs.is_none() {
            *libs = Some(
                functions
                    .iter()
                    .map(|(n, p)| Lib::load(n, p))
                    .collect::<Result<_>>()?,
            );
        }
        let libs = libs.as_deref().unwrap_or_default();
        let p = planning::read_over(&arg, kind, text.as_deref(), libs)?;
        let w = Weights {
            calls: p.calls,
            cpu: p.cpu,
            external: p.external,
            evidence: Some(p.evidence),
        };
        return Ok((w, false));
    }
    if arg.function.is_some() {
        return Err(InputError::new(path, "NAME=FILE is for an .fdata, not a JSON profile").into());
    }
    let text = text.unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| InputError::new(path, format!("not JSON: {e}")))?;
    if v.get("calls").is_none() {
        let why = "neither a profile, a weights file nor a run report";
        return Err(InputError::new(path, why).into());
    }
    let trace = v.get("nested_calls").is_some();
    let w: Weights = serde_json::from_value(v)
        .map_err(|e| InputError::new(path, format!("not a weights file: {e}")))?;
    check_unique_keys(&text).map_err(|why| InputError::new(path, why))?;
    check_weights(&w).map_err(|why| InputError::new(path, why))?;
    Ok((w, trace))
}

/// Most calls an edge may have (so that costs stay finite).
const MAX_CALLS: f64 = 1e15;

/// Counts are finite and non-negative, CPU shares within 0..=1.
fn check_weights(w: &Weights) -> std::result::Result<(), String> {
    for (caller, m) in &w.calls {
        for (callee, &n) in m {
            if !(n.is_finite() && (0.0..=MAX_CALLS).contains(&n)) {
                return Err(format!(
                    "calls {caller} -> {callee} = {n}: not a count between 0 and {MAX_CALLS:e}"
                ));
            }
        }
    }
    for (f, &c) in &w.cpu {
        if !(c.is_finite() && (0.0..=1.0).contains(&c)) {
            return Err(format!("cpu {f} = {c}: not a share between 0 and 1"));
        }
    }
    for (f, &n) in &w.external {
        if !(n.is_finite() && (0.0..=MAX_CALLS).contains(&n)) {
            return Err(format!(
                "external {f} = {n}: not a count between 0 and {MAX_CALLS:e}"
            ));
        }
    }
    Ok(())
}

/// Refuse a JSON object with the same key twice (serde keeps the last).
fn check_unique_keys(text: &str) -> std::result::Result<(), String> {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Any;
    impl<'de> Deserialize<'de> for Any {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Any, D::Error> {
            d.deserialize_any(AnyVisitor)
        }
    }
    struct AnyVisitor;
    impl<'de> Visitor<'de> for AnyVisitor {
        type Value = Any;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Any, E> {
            Ok(Any)
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Any, E> {
            Ok(Any)
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Any, E> {
            Ok(Any)
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Any, E> {
            Ok(Any)
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<Any, E> {
            Ok(Any)
        }
        fn visit_unit<E>(self) -> std::result::Result<Any, E> {
            Ok(Any)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<Any, A::Error> {
            while a.next_element::<Any>()?.is_some() {}
            Ok(Any)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Any, A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            while let Some(k) = a.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                }
                a.next_value::<Any>()?;
            }
            Ok(Any)
        }
    }
    serde_json::from_str::<Any>(text)
        .map(|_| ())
        .map_err(|e| format!("not a weights file: {e}"))
}

/// Combine planning inputs over the deployment's `functions` (name,
/// library). Sampled inputs are summed (CPU shares averaged). Platform
/// traces (summed) then only add what no sample names: an edge the
/// sampled inputs give no count (a callee named at run time, a caller no
/// sample covers) and request counts (`external`); where samples name an
/// edge, its sampled count stays. What a trace adds is first brought to
/// the samples' scale (another window, samples rather than calls): see
/// `trace_scale`.
pub fn load_weights(paths: &[PathBuf], functions: &[(String, PathBuf)]) -> Result<Weights> {
    let mut sampled = Weights::default();
    let mut traced = Weights::default();
    let mut sampled_inputs = 0;
    let mut libs = None;
    // What the inputs together can show: the best any of them shows of an
    // edge; an input whose counts are given outright shows every edge.
    let mut evidence = Some(BTreeMap::new());
    for p in paths {
        let (w, trace) = read_weights(p, functions, &mut libs)?;
        evidence = best_evidence(evidence, w.evidence);
        let into = if trace {
            &mut traced
        } else {
            sampled_inputs += 1;
            &mut sampled
        };
        for (caller, callees) in w.calls {
            let row = into.calls.entry(caller).or_default();
            for (callee, n) in callees {
                *row.entry(callee).or_default() += n;
            }
        }
        for (f, c) in w.cpu {
            *into.cpu.entry(f).or_default() += c;
        }
        for (f, n) in w.external {
            *into.external.entry(f).or_default() += n;
        }
    }
    if sampled_inputs > 1 {
        for c in sampled.cpu.values_mut() {
            *c /= f64::from(sampled_inputs);
        }
    }
    let scale = trace_scale(&sampled, &traced);
    for (caller, callees) in traced.calls {
        let row = sampled.calls.entry(caller).or_default();
        for (callee, n) in callees {
            let mine = row.entry(callee).or_default();
            if *mine <= 0.0 {
                *mine = n * scale;
            }
        }
    }
    for (f, n) in traced.external {
        let mine = sampled.external.entry(f).or_default();
        if *mine <= 0.0 {
            *mine = n * scale;
        }
    }
    sampled.evidence = evidence;
    Ok(sampled)
}

type EvidenceMap = BTreeMap<String, BTreeMap<String, Evidence>>;

/// The evidence of two inputs together: per edge the better; `None` (the
/// counts given outright, every edge seen) when either is.
fn best_evidence(a: Option<EvidenceMap>, b: Option<EvidenceMap>) -> Option<EvidenceMap> {
    let (mut a, b) = (a?, b?);
    for (caller, callees) in b {
        let row = a.entry(caller).or_default();
        for (callee, e) in callees {
            let slot = row.entry(callee).or_insert(e);
            *slot = (*slot).max(e);
        }
    }
    Some(a)
}

/// Why the edge `caller -> callee` has no evidence in a profile that has
/// `evidence` of it, and how to record one that shows it.
fn no_evidence_reason(caller: &str, callee: &str, evidence: Evidence) -> String {
    let what = match evidence {
        Evidence::SamplesOnly => format!(
            "the profile has samples in {callee} but no call chain through {caller}'s RPC sites (frame-pointer chains stop at the first frame of code built without frame pointers)"
        ),
        _ => format!(
            "the profile has no sample in {callee} and no call chain through {caller}'s RPC sites"
        ),
    };
    format!("no evidence: {what}, so how often it runs is unknown, not zero; {RECORDING_ADVICE}")
}

/// The factor that brings a trace's counts to the scale of the sampled
/// ones: the sampled calls of the edges both name over the trace's calls
/// of those edges; 1 when they name no edge in common (no samples, or
/// samples of other callers only).
fn trace_scale(sampled: &Weights, traced: &Weights) -> f64 {
    let (mut s, mut t) = (0.0, 0.0);
    for (caller, callees) in &traced.calls {
        for (callee, &n) in callees {
            let m = sampled
                .calls
                .get(caller)
                .and_then(|r| r.get(callee))
                .copied()
                .unwrap_or(0.0);
            if m > 0.0 && n > 0.0 {
                s += m;
                t += n;
            }
        }
    }
    if s > 0.0 && t > 0.0 {
        s / t
    } else {
        1.0
    }
}

fn limits(entry: &FuncEntry, o: &Options) -> Limits {
    Limits {
        max_image_bytes: entry.max_image_bytes,
        cpu_budget: entry.cpu_budget,
        memory_bytes: entry.max_memory_bytes,
        cold: o.cold_threshold,
    }
}

/// Plan fusion groups for `config` under `weights`.
pub fn plan(
    config: &Config,
    weights: &Weights,
    profile: &Path,
    options: &Options,
    previous: Option<&Plan>,
) -> Result<Plan> {
    let rg = RpcGraph::build(config, weights, profile)?;
    let mut by_node = vec![None; rg.g.node_count()];
    for entry in &config.functions {
        by_node[rg.index[&entry.func_name].index()] = Some(limits(entry, options));
    }
    let by_node: Vec<Limits> = by_node
        .into_iter()
        .map(|l| {
            l.unwrap_or(Limits {
                max_image_bytes: None,
                cpu_budget: None,
                memory_bytes: None,
                cold: options.cold_threshold,
            })
        })
        .collect();
    Ok(plan_graph(&rg, &by_node, options, previous))
}

/// Plan fusion groups on a built graph: one group per entry (in node
/// order), under `limits` (by node index). What `plan` does once the
/// deployment and profile are read; the planning benchmark times it.
pub fn plan_graph(
    rg: &RpcGraph,
    limits: &[Limits],
    options: &Options,
    previous: Option<&Plan>,
) -> Plan {
    let g = &rg.g;
    let roots = RootPlanner {
        rg,
        planner: solve::Planner::new(rg),
        search: solve::Search {
            heuristic: options.heuristic_only,
            ..solve::Search::default()
        },
        // A root's previous group (the first, should a plan name it twice).
        previous: previous
            .map(|p| {
                p.groups
                    .iter()
                    .rev()
                    .map(|x| (x.root.as_str(), x))
                    .collect()
            })
            .unwrap_or_default(),
        limits,
        options,
    };
    let entries: Vec<NodeIndex> = g.node_indices().filter(|&i| g[i].entry).collect();
    let mut groups = Vec::with_capacity(entries.len());
    let mut decisions = Vec::new();
    let mut fused_in: Vec<BTreeSet<NodeIndex>> = Vec::new();
    for planned in in_parallel(&entries, |root| roots.plan(root)) {
        groups.push(planned.group);
        decisions.extend(planned.decisions);
        fused_in.extend(planned.removing);
    }
    let objective_us = groups.iter().map(|g| g.removed_cost_us).sum();
    Plan {
        options: options.clone(),
        functions: rg.summaries(),
        edges: plan_edges(rg, &fused_in, options),
        groups,
        decisions,
        objective_us,
    }
}

/// What planning one root's group needs, shared by every root.
struct RootPlanner<'a> {
    rg: &'a RpcGraph,
    planner: solve::Planner<'a>,
    search: solve::Search,
    previous: BTreeMap<&'a str, &'a Group>,
    limits: &'a [Limits],
    options: &'a Options,
}

/// One root's group and its decisions.
struct PlannedRoot {
    group: Group,
    decisions: Vec<Decision>,
    /// The group's members when it removes calls (for the edges' status).
    removing: Option<BTreeSet<NodeIndex>>,
}

/// The members a root's group gets, and what they remove.
struct Chosen {
    members: BTreeSet<NodeIndex>,
    removed: f64,
    /// The previous plan's group, kept under the hysteresis.
    kept: bool,
}

impl RootPlanner<'_> {
    fn plan(&self, root: NodeIndex) -> PlannedRoot {
        let g = &self.rg.g;
        let root_name = &g[root].name;
        let mut solved = self
            .planner
            .solve(root, &self.limits[root.index()], &self.search);
        let chosen = self.keep_previous(root, &mut solved);
        let mut names: Vec<String> = chosen
            .members
            .iter()
            .filter(|&&m| m != root)
            .map(|&m| g[m].name.clone())
            .collect();
        names.sort();
        names.insert(0, root_name.clone());
        let decisions = self.decisions(root, &solved, &chosen);
        let Chosen {
            members,
            removed,
            kept,
        } = chosen;
        let group = Group {
            root: root_name.clone(),
            image_bytes: members.iter().map(|&m| g[m].image_bytes).sum::<u64>()
                + solve::RUNTIME_BYTES,
            cpu: members.iter().map(|&m| g[m].cpu).sum(),
            members: names,
            removed_calls: removed,
            removed_cost_us: removed * self.options.rpc_cost_us,
            exact: solved.exact,
            kept_from_previous: kept,
        };
        PlannedRoot {
            group,
            decisions,
            removing: (removed > 0.0).then_some(members),
        }
    }

    /// The root's previous group instead of the solved one, when it is
    /// still valid (one trust domain, the root in it) and the new one
    /// removes at most the hysteresis more. The solved group's members
    /// move to the choice when it is chosen.
    fn keep_previous(&self, root: NodeIndex, solved: &mut solve::Solved) -> Chosen {
        let (rg, g) = (self.rg, &self.rg.g);
        let solved_choice = |solved: &mut solve::Solved| Chosen {
            members: std::mem::take(&mut solved.members),
            removed: solved.removed_calls,
            kept: false,
        };
        let Some(p) = self.previous.get(g[root].name.as_str()) else {
            return solved_choice(solved);
        };
        let old: Option<BTreeSet<_>> = p.members.iter().map(|m| rg.index.get(m).copied()).collect();
        let Some(old) = old else {
            return solved_choice(solved);
        };
        let same_domain = old.iter().all(|&m| g[m].domain == g[root].domain);
        let old_removed = solve::removed_calls(rg, root, &old);
        if old != solved.members
            && same_domain
            && old.contains(&root)
            && solved.removed_calls <= old_removed * (1.0 + self.options.hysteresis)
        {
            Chosen {
                members: old,
                removed: old_removed,
                kept: true,
            }
        } else {
            solved_choice(solved)
        }
    }

    /// Why each candidate of `root`'s group is fused or not.
    fn decisions(&self, root: NodeIndex, solved: &solve::Solved, chosen: &Chosen) -> Vec<Decision> {
        let g = &self.rg.g;
        let options = self.options;
        let kept_marginal;
        let marginal = if chosen.kept {
            kept_marginal = solve::marginals(self.rg, root, &chosen.members);
            &kept_marginal
        } else {
            &solved.marginal
        };
        let mut decisions = Vec::with_capacity(solved.verdicts.len());
        // The marginals are by member, in order: read alongside.
        let mut marginals = marginal.iter().peekable();
        for (&c, v) in &solved.verdicts {
            // The solved group's members are its candidates fused.
            let fused = if chosen.kept {
                chosen.members.contains(&c)
            } else {
                matches!(v, Verdict::Fused)
            };
            let reason = if chosen.kept && (fused != (*v == Verdict::Fused)) {
                format!(
                    "kept as in the previous plan: the new grouping would remove at most {:.0}% more RPC cost (hysteresis {:.0}%)",
                    100.0 * (solved.removed_calls / chosen.removed.max(1e-9) - 1.0),
                    100.0 * options.hysteresis
                )
            } else {
                match v {
                    Verdict::Fused => {
                        while marginals.next_if(|m| *m.0 < c).is_some() {}
                        let m = marginals.next_if(|m| *m.0 == c).map_or(0.0, |m| *m.1);
                        format!(
                            "fused: removes RPCs worth {} us per profile window in this group",
                            Whole(m.max(0.0) * options.rpc_cost_us)
                        )
                    }
                    Verdict::Cold { share } => format!(
                        "not fused: the edge to it is cold ({:.2}% of its caller's executions < {:.2}%)",
                        100.0 * share,
                        100.0 * options.cold_threshold
                    ),
                    Verdict::NoEvidence { caller, evidence } => format!(
                        "not fused on this profile: {}",
                        no_evidence_reason(&g[*caller].name, &g[c].name, *evidence)
                    ),
                    Verdict::OtherDomain => format!(
                        "not fused: trust domain {} differs from the root's {}",
                        g[c].domain.as_deref().unwrap_or("(none)"),
                        g[root].domain.as_deref().unwrap_or("(none)")
                    ),
                    Verdict::OverBudget(why) => format!("not fused: over budget: {why}"),
                    Verdict::NoGain => "not fused: removes no more RPC cost in this group".into(),
                    Verdict::Reenters => "not fused: every call to it in this group finds it already running, and the platform never re-enters a busy process, so those calls stay RPCs (declare it \"reentrant\": true to fuse them)".into(),
                }
            };
            decisions.push(Decision {
                root: g[root].name.clone(),
                function: g[c].name.clone(),
                fused,
                reason,
            });
        }
        decisions
    }
}

/// A number as `{:.0}` writes it (rounded half to even), through the
/// integer formatter where that is exact.
struct Whole(f64);

impl std::fmt::Display for Whole {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let x = self.0;
        if x.is_sign_positive() && x < 9.0e15 {
            write!(f, "{}", x.round_ties_even() as u64)
        } else {
            write!(f, "{x:.0}")
        }
    }
}

/// Every edge of the graph with its status: fused when some group that
/// removes calls (`fused_in`) holds both ends, else below the cold
/// threshold no evidence (the profile cannot show it) or cold, else an
/// RPC.
fn plan_edges(rg: &RpcGraph, fused_in: &[BTreeSet<NodeIndex>], options: &Options) -> Vec<PlanEdge> {
    let g = &rg.g;
    // The groups (that remove calls) each function is in.
    let mut groups_of: Vec<Vec<usize>> = vec![Vec::new(); g.node_count()];
    for (k, m) in fused_in.iter().enumerate() {
        for &u in m {
            groups_of[u.index()].push(k);
        }
    }
    let fused_pair = |a: NodeIndex, b: NodeIndex| {
        groups_of[a.index()]
            .iter()
            .any(|&k| fused_in[k].contains(&b))
    };
    let mut edges: Vec<PlanEdge> = g
        .edge_references()
        .map(|e| {
            let (u, v) = (e.source(), e.target());
            let share = e.weight().share;
            let evidence = e.weight().evidence;
            let blind = evidence.filter(|e| !e.sees());
            let status = if fused_pair(u, v) {
                "fused"
            } else if share < options.cold_threshold && blind.is_some() {
                "no evidence"
            } else if share < options.cold_threshold {
                "cold"
            } else {
                "rpc"
            };
            PlanEdge {
                caller: g[u].name.clone(),
                callee: g[v].name.clone(),
                calls: e.weight().calls,
                static_sites: e.weight().static_sites,
                share,
                status: status.into(),
                evidence,
                reason: blind
                    .filter(|_| status == "no evidence")
                    .map(|b| no_evidence_reason(&g[u].name, &g[v].name, b)),
            }
        })
        .collect();
    edges.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
    edges
}

/// `f` of every item, in order, on every core (`FAASFUSE_THREADS=N` to
/// choose, as for profiles) when there are at least 8 items (fewer cost
/// more to start threads for than they save); groups are independent, so
/// the plan is the one a single thread makes.
fn in_parallel<T: Copy + Sync, R: Send>(items: &[T], f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() < 8 {
        return items.iter().map(|&x| f(x)).collect();
    }
    crate::threads::map_ordered(items, |&x| f(x))
}
