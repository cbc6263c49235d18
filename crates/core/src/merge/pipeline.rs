//! The merge's passes before layout, each a function that takes what it
//! needs and returns what it produced: [`load`] → [`Loaded`], [`analyze`]
//! → [`Analyzed`], [`lower`] → [`Lowered`], [`read_parts`] → [`Parts`];
//! [`manifest`] tells what the merge did.
//!
//! Load parses each input and finds its RPC sites once; analyze finds
//! reachability, edges, re-entry and decisions; lower plans the sites;
//! read_parts takes what the transplant needs from each input.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::emit::Output;
use super::input::{self, Fusion, Part, Role};
use super::{
    runtime, Decision, Edge, Manifest, ManifestInput, ManifestSite, MergeOptions, MAX_FUSED_SPAN,
    RUNTIME_NAME,
};
use crate::analyze::Callee;
use crate::elf::Image;
use crate::error::InputError;
use crate::loaded::Analysed;
use crate::lower::{self, Level, SitePlan};
use crate::spec::FunctionSpec;

/// One input function library, parsed and searched for RPC sites once.
struct Input {
    spec: FunctionSpec,
    image: Arc<Analysed>,
}

/// Every input, loaded and validated, as given (root first).
pub(super) struct Loaded {
    inputs: Vec<Input>,
}

/// Load and validate every input of `specs` (root first).
pub(super) fn load(specs: &[FunctionSpec], opts: &MergeOptions) -> Result<Loaded> {
    crate::spec::check_unique(specs)?;
    opts.check(specs)?;
    let paths: Vec<&Path> = specs.iter().map(|s| s.path.as_path()).collect();
    let mut inputs = Vec::new();
    for (s, image) in specs.iter().zip(crate::loaded::load_all(&paths)?) {
        image.require_entry_points()?;
        inputs.push(Input {
            spec: s.clone(),
            image,
        });
    }
    Ok(Loaded { inputs })
}

impl Loaded {
    fn root(&self) -> &FunctionSpec {
        &self.inputs[0].spec
    }

    /// Start finding the fields of each callee's DWARF, in the background.
    pub(super) fn find_debug_fields(&self) -> super::debug::Finding {
        let mut f = super::debug::Finding::default();
        for input in &self.inputs[1..] {
            if input.image.info.debug_info {
                f.start(&input.spec.name, input.image.data.clone());
            }
        }
        f
    }
}

/// What the merge fuses, in which order, and why.
pub(super) struct Analyzed {
    root: String,
    /// Input indices in fused-table order: the root, then the callees in
    /// the order the root reaches them.
    order: Vec<usize>,
    edges: Vec<Edge>,
    decisions: Vec<Decision>,
}

/// Reachability from the root through RPC sites (a dynamic site can reach
/// any function), the edges and which of them may re-enter, and why each
/// input is fused; an input the root cannot reach is refused.
pub(super) fn analyze(loaded: &Loaded, opts: &MergeOptions) -> Result<Analyzed> {
    let root = loaded.root();
    let (order, mut edges) = reach(&loaded.inputs);
    for (j, input) in loaded.inputs.iter().enumerate() {
        if !order.contains(&j) {
            return Err(InputError::new(
                &input.spec.path,
                format!(
                    "no RPC site of {} or its callees calls {}: nothing to fuse it into",
                    root.name, input.spec.name
                ),
            )
            .into());
        }
    }
    mark_reentry(&mut edges, &root.name, &opts.reentrant);
    let decisions = decisions(&loaded.inputs, &order, &edges);
    Ok(Analyzed {
        root: root.name.clone(),
        order,
        edges,
        decisions,
    })
}

/// The inputs the root reaches, breadth first (the root first), and the
/// edges from each to those its sites name (a dynamic site: all of them).
fn reach(inputs: &[Input]) -> (Vec<usize>, Vec<Edge>) {
    let mut order = vec![0usize];
    let mut queue = VecDeque::from([0usize]);
    let mut edges = Vec::new();
    let mut seen = BTreeSet::from([0usize]);
    while let Some(i) = queue.pop_front() {
        let sites = &inputs[i].image.sites;
        let dynamic = sites.iter().any(|s| s.callee == Callee::Dynamic);
        for (j, input) in inputs.iter().enumerate() {
            let spec = &input.spec;
            let constant = sites
                .iter()
                .filter(|s| matches!(&s.callee, Callee::Constant(n) if *n == spec.name))
                .count();
            if constant == 0 && !dynamic {
                continue;
            }
            edges.push(Edge {
                caller: inputs[i].spec.name.clone(),
                callee: spec.name.clone(),
                sites: if constant > 0 {
                    constant
                } else {
                    sites.iter().filter(|s| s.callee == Callee::Dynamic).count()
                },
                may_reenter: false,
                handling: String::new(),
            });
            if seen.insert(j) {
                order.push(j);
                queue.push_back(j);
            }
        }
    }
    (order, edges)
}

/// Why each input in `order` is fused: the root serves, the others are
/// reached through the callers' sites.
fn decisions(inputs: &[Input], order: &[usize], edges: &[Edge]) -> Vec<Decision> {
    let root = &inputs[0].spec.name;
    let mut decisions = vec![Decision {
        function: root.clone(),
        fused: true,
        reason: "root: the fused image serves it and exports its entry points".into(),
    }];
    for &i in &order[1..] {
        let name = &inputs[i].spec.name;
        let via: Vec<&str> = edges
            .iter()
            .filter(|e| e.callee == *name)
            .map(|e| e.caller.as_str())
            .collect();
        decisions.push(Decision {
            function: name.clone(),
            fused: true,
            reason: format!("reachable from {root} via RPC sites of {}", via.join(", ")),
        });
    }
    decisions
}

/// How each input's RPC sites are lowered.
pub(super) struct Lowered {
    /// One list per input in fused order; the runtime's (none) last.
    pub(super) plans: Vec<Vec<SitePlan>>,
}

/// Plan how each input's RPC sites are lowered at `opts.level`. The sites
/// of a callee isolated with `mpk` stay indirect calls: while it runs, the
/// runtime's state is out of its reach, and only the gate its worker was
/// given as `invoke` lets it in.
pub(super) fn lower(loaded: &Loaded, analyzed: &Analyzed, opts: &MergeOptions) -> Lowered {
    let table: Vec<String> = analyzed
        .order
        .iter()
        .map(|&i| loaded.inputs[i].spec.name.clone())
        .collect();
    let mut plans: Vec<Vec<SitePlan>> = analyzed
        .order
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let Input { image, spec } = &loaded.inputs[i];
            let level = if k > 0 && opts.isolation_of(&spec.name) == super::Isolation::Mpk {
                Level::None
            } else {
                opts.level
            };
            let mut plans = lower::plan(image, &image.sites, &table, level);
            if level != opts.level {
                for p in &mut plans {
                    p.reason =
                        "not lowered: its function is isolated with mpk, and a call out of it \
                                goes through the runtime's gate (an indirect call)"
                            .into();
                }
            }
            plans
        })
        .collect();
    plans.push(Vec::new());
    Lowered { plans }
}

/// Each input as the transplant sees it.
pub(super) struct Parts {
    /// In fused order; the runtime last.
    pub(super) parts: Vec<Part>,
    /// Bytes of the input files.
    input_bytes: u64,
}

/// Read what the transplant needs from each input, in fused order, and
/// from the fusion runtime; refuse what it cannot carry.
pub(super) fn read_parts(
    loaded: Loaded,
    analyzed: &Analyzed,
    opts: &MergeOptions,
) -> Result<Parts> {
    let mut slots: Vec<Option<Input>> = loaded.inputs.into_iter().map(Some).collect();
    let ordered: Vec<(Input, Role)> = analyzed
        .order
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let role = if k == 0 { Role::Root } else { Role::Callee };
            (slots[i].take().expect("each input once"), role)
        })
        .collect();
    // The parts are read in parallel; errors are reported in order.
    let read = crate::threads::map_ordered(&ordered, |(input, role)| {
        input::read_part(&input.image, &input.spec.name, *role)
    });
    let mut parts = Vec::new();
    let mut input_bytes = 0;
    for (k, ((Input { spec, image }, _), part)) in ordered.into_iter().zip(read).enumerate() {
        input_bytes += image.data.len() as u64;
        let mut part = part?;
        part.fusion = Fusion {
            reentrant: opts.reentrant.contains(&spec.name),
            // The root runs on its process's own stack, as unfused.
            isolation: if k == 0 {
                super::Isolation::None
            } else {
                opts.isolation_of(&spec.name)
            },
        };
        input::check_supported(&part)?;
        parts.push(part);
    }
    check_key_count(&parts)?;
    check_span(&parts)?;
    let runtime = Image::parse(Path::new("<fusion runtime>"), runtime::RUNTIME_SO.to_vec())?;
    parts.push(input::read_part(&runtime, RUNTIME_NAME, Role::Runtime)?);
    Ok(Parts { parts, input_bytes })
}

/// Direct calls between images reach ±2 GiB: the images together must fit
/// in that.
fn check_span(parts: &[Part]) -> Result<()> {
    let span: u64 = parts.iter().map(|p| p.span().1 - p.span().0).sum();
    if span <= MAX_FUSED_SPAN {
        return Ok(());
    }
    let big = parts
        .iter()
        .max_by_key(|p| p.span().1 - p.span().0)
        .expect("a root");
    Err(InputError::new(
        &big.path,
        format!(
            "the fused image would span {span:#x} bytes, beyond the {MAX_FUSED_SPAN:#x} that direct calls between its images can reach"
        ),
    )
    .into())
}

/// What the merge did, given the fused image `out` of `output`.
pub(super) fn manifest(
    output: &Path,
    analyzed: Analyzed,
    parts: &Parts,
    out: &Output,
    pkru_sequences: super::PkruScan,
) -> Manifest {
    let Parts { parts, input_bytes } = parts;
    Manifest {
        output: output.display().to_string(),
        root: analyzed.root,
        inputs: parts
            .iter()
            .zip(&out.placements)
            .map(|(p, pl)| ManifestInput {
                name: p.name.clone(),
                path: p.path.display().to_string(),
                role: p.role,
                build_id: p.build_id.clone(),
                displacement: pl.disp,
                tls_offset: pl.tls_offset,
                isolation: p.fusion.isolation,
            })
            .collect(),
        edges: analyzed.edges,
        rpc_sites: manifest_sites(parts, out),
        decisions: analyzed.decisions,
        notes: notes(parts, out),
        debug_info: out.debug.clone(),
        output_bytes: out.len,
        input_bytes: *input_bytes,
        dynamic_relocations: out.relocations,
        imports: out.imports,
        pkru_sequences,
    }
}

/// What the fused image leaves out or changes, and what its reader
/// should know.
fn notes(parts: &[Part], out: &Output) -> Vec<String> {
    let mut notes = Vec::new();
    for l in &out.debug.left_out {
        notes.push(format!("{}: debug info not carried: {}", l.image, l.reason));
    }
    for (image, sec) in &out.debug.dropped_sections {
        notes.push(format!(
            "{image}: {sec} dropped (the fused image cannot keep it correct)"
        ));
    }
    for p in parts {
        if let Some(why) = &p.sections_recovered {
            notes.push(format!(
                "{}: sections recovered from the program headers and the dynamic segment, as the dynamic linker reads it ({why}); its .symtab and debug info are not carried",
                p.name
            ));
        }
    }
    for (name, first, other) in super::dynamic::shared_unique(parts) {
        notes.push(format!(
            "warning: {} and {} both define the unique symbol {name} (STB_GNU_UNIQUE, e.g. a C++ inline static): each keeps its own copy, as in its own process; {}'s copy is exported and shared with other libraries of the process that define {name}, {}'s is not",
            parts[first].name, parts[other].name, parts[first].name, parts[other].name
        ));
    }
    notes
}

/// Every RPC site of the fused image, with what a call there does.
fn manifest_sites(parts: &[Part], out: &Output) -> Vec<ManifestSite> {
    let fused: BTreeSet<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    out.sites
        .iter()
        .map(|r| {
            let reaches = match &r.callee {
                Callee::Constant(n) if fused.contains(n.as_str()) => {
                    format!("in-process call of {n}")
                }
                Callee::Constant(n) => format!("RPC to {n} through the host (not fused)"),
                Callee::Dynamic => {
                    "name looked up at run time: fused callees in-process, others through the host"
                        .into()
                }
            };
            ManifestSite {
                image: r.image.clone(),
                input_address: r.input_address,
                address: r.address,
                function: r.function.clone(),
                callee: r.callee.clone(),
                tier: r.tier,
                thunk: r.thunk,
                handling: format!("{reaches}; tier {}: {}", r.tier, r.reason),
            }
        })
        .collect()
}

/// Mark the edges whose call can find the callee running: into the root
/// (always running), or into a function that reaches the caller (itself
/// included) without passing through the root. The fused image sends such
/// a call to the host, as the platform never re-enters a busy process.
fn mark_reentry(edges: &mut [Edge], root: &str, reentrant: &BTreeSet<String>) {
    // Functions by index, the root first, as the planner's rule numbers them.
    let mut names = vec![root];
    for e in edges.iter() {
        for n in [e.caller.as_str(), e.callee.as_str()] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let at = |n: &str| names.iter().position(|&x| x == n).expect("named above");
    let pairs: Vec<(usize, usize)> = edges
        .iter()
        .map(|e| (at(&e.caller), at(&e.callee)))
        .collect();
    let marks = crate::plan::reentering_edges(names.len(), &pairs);
    for (e, m) in edges.iter_mut().zip(marks) {
        e.may_reenter = m;
        e.handling = match (m, reentrant.contains(&e.callee)) {
            (false, _) => "in-process".into(),
            (true, true) => format!(
                "in-process; when {} is already running, an extra worker of it serves the call (declared re-entrant)",
                e.callee
            ),
            (true, false) => format!(
                "in-process when {0} is idle; when {0} is already running the call stays an RPC through the host (the platform never re-enters a busy process; declare {0} re-entrant to serve it in-process)",
                e.callee
            ),
        };
    }
}

/// Protection keys a fused image's runtime allocates: one per callee
/// isolated with `mpk`, one for the rest of the group. The CPU has 16, key
/// 0 being everyone's.
const MPK_KEYS: usize = 15;

/// Refuse a group whose `mpk` callees need more keys than the CPU has
/// (rather than letting two callees share one).
fn check_key_count(parts: &[Part]) -> Result<()> {
    let mpk = parts
        .iter()
        .filter(|p| p.fusion.isolation == super::Isolation::Mpk)
        .count();
    if mpk + 1 > MPK_KEYS {
        return Err(crate::error::InputError::new(
            &parts[0].path,
            format!(
                "{mpk} callees are isolated with mpk, and a group has keys for at most {}: isolate \
                 the rest with `stack`, or split the group",
                MPK_KEYS - 1
            ),
        )
        .into());
    }
    Ok(())
}
