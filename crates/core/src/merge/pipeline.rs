//! The merge's passes before layout, over one context: load, analyze, lower, read parts.
//!
//! Load parses each input and finds its RPC sites once; analyze finds
//! reachability, edges, re-entry and decisions; lower plans the sites;
//! read_parts takes what the transplant needs from each input.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

use anyhow::Result;

use super::emit::Output;
use super::input::{self, Part, Role};
use super::{
    runtime, Decision, Edge, Manifest, ManifestInput, ManifestSite, MergeOptions, MAX_FUSED_SPAN,
    RUNTIME_NAME,
};
use crate::analyze::Callee;
use crate::elf::Image;
use crate::error::InputError;
use crate::lower::{self, SitePlan};
use crate::spec::FunctionSpec;

/// One input function library, parsed and searched for RPC sites once.
struct Loaded {
    spec: FunctionSpec,
    image: std::sync::Arc<crate::loaded::Analysed>,
}

/// What one merge knows, filled in pass by pass.
pub struct MergeContext<'a> {
    opts: &'a MergeOptions,
    root: &'a FunctionSpec,
    /// The inputs as given (root first); taken by [`MergeContext::read_parts`].
    inputs: Vec<Loaded>,
    /// Input indices in fused-table order: the root, then the callees in
    /// the order the root reaches them.
    order: Vec<usize>,
    edges: Vec<Edge>,
    decisions: Vec<Decision>,
    /// Each input's site plans, in `order`; the runtime's (none) last.
    pub plans: Vec<Vec<SitePlan>>,
    /// Each input as the transplant sees it, in `order`; the runtime last.
    pub parts: Vec<Part>,
    input_bytes: u64,
}

impl<'a> MergeContext<'a> {
    /// Load and validate every input of `specs` (root first).
    pub fn load(specs: &'a [FunctionSpec], opts: &'a MergeOptions) -> Result<MergeContext<'a>> {
        crate::spec::check_unique(specs)?;
        opts.check(specs)?;
        let paths: Vec<&Path> = specs.iter().map(|s| s.path.as_path()).collect();
        let mut inputs = Vec::new();
        for (s, image) in specs.iter().zip(crate::loaded::load_all(&paths)?) {
            image.require_entry_points()?;
            inputs.push(Loaded {
                spec: s.clone(),
                image,
            });
        }
        Ok(MergeContext {
            opts,
            root: &specs[0],
            inputs,
            order: Vec::new(),
            edges: Vec::new(),
            decisions: Vec::new(),
            plans: Vec::new(),
            parts: Vec::new(),
            input_bytes: 0,
        })
    }

    /// Start finding the fields of each callee's DWARF, in the background.
    pub fn find_debug_fields(&self) -> super::debug::Finding {
        let mut f = super::debug::Finding::default();
        for input in &self.inputs[1..] {
            if input.image.info.debug_info {
                f.start(&input.spec.name, input.image.data.clone());
            }
        }
        f
    }

    /// Reachability from the root through RPC sites (a dynamic site can
    /// reach any function), the edges and which of them may re-enter, and
    /// why each input is fused.
    pub fn analyze(&mut self) -> Result<()> {
        let images = &self.inputs;
        let root = self.root;
        let mut order = vec![0usize];
        let mut queue = VecDeque::from([0usize]);
        let mut edges = Vec::new();
        let mut seen = BTreeSet::from([0usize]);
        while let Some(i) = queue.pop_front() {
            let sites = &images[i].image.sites;
            let dynamic = sites.iter().any(|s| s.callee == Callee::Dynamic);
            for (j, input) in images.iter().enumerate() {
                let spec = &input.spec;
                let constant = sites
                    .iter()
                    .filter(|s| matches!(&s.callee, Callee::Constant(n) if *n == spec.name))
                    .count();
                if constant == 0 && !dynamic {
                    continue;
                }
                edges.push(Edge {
                    caller: images[i].spec.name.clone(),
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
        for (j, input) in images.iter().enumerate() {
            let spec = &input.spec;
            if !seen.contains(&j) {
                return Err(InputError::new(
                    &spec.path,
                    format!(
                        "no RPC site of {} or its callees calls {}: nothing to fuse it into",
                        root.name, spec.name
                    ),
                )
                .into());
            }
        }

        mark_reentry(&mut edges, &root.name, &self.opts.reentrant);

        let mut decisions = vec![Decision {
            function: root.name.clone(),
            fused: true,
            reason: "root: the fused image serves it and exports its entry points".into(),
        }];
        for &i in &order[1..] {
            let name = &images[i].spec.name;
            let via: Vec<&str> = edges
                .iter()
                .filter(|e| e.callee == *name)
                .map(|e| e.caller.as_str())
                .collect();
            decisions.push(Decision {
                function: name.clone(),
                fused: true,
                reason: format!(
                    "reachable from {} via RPC sites of {}",
                    root.name,
                    via.join(", ")
                ),
            });
        }
        self.order = order;
        self.edges = edges;
        self.decisions = decisions;
        Ok(())
    }

    /// Plan how each input's RPC sites are lowered.
    pub fn lower(&mut self) {
        let table: Vec<String> = self
            .order
            .iter()
            .map(|&i| self.inputs[i].spec.name.clone())
            .collect();
        self.plans = self
            .order
            .iter()
            .map(|&i| {
                let input = &self.inputs[i];
                lower::plan(&input.image, &input.image.sites, &table, self.opts.level)
            })
            .collect();
        self.plans.push(Vec::new());
    }

    /// Read what the transplant needs from each input, in fused order, and
    /// from the fusion runtime; refuse what it cannot carry.
    pub fn read_parts(&mut self) -> Result<()> {
        let mut slots: Vec<Option<Loaded>> = std::mem::take(&mut self.inputs)
            .into_iter()
            .map(Some)
            .collect();
        let ordered: Vec<Loaded> = self
            .order
            .iter()
            .map(|&i| slots[i].take().expect("each input once"))
            .collect();
        // The inputs' parts are read in parallel; errors are reported in
        // order.
        let roles: Vec<(&Loaded, Role)> = ordered
            .iter()
            .enumerate()
            .map(|(k, l)| (l, if k == 0 { Role::Root } else { Role::Callee }))
            .collect();
        let read = crate::threads::map_ordered(&roles, |(l, role)| {
            input::read_part(&l.image, &l.spec.name, *role)
        });
        for (k, (Loaded { spec, image, .. }, part)) in ordered.into_iter().zip(read).enumerate() {
            self.input_bytes += image.data.len() as u64;
            let mut part = part?;
            part.reentrant = self.opts.reentrant.contains(&spec.name);
            // The root runs on its process's own stack, as unfused.
            part.isolation = if k == 0 {
                super::Isolation::None
            } else {
                self.opts.isolation_of(&spec.name)
            };
            input::check_supported(&part)?;
            self.parts.push(part);
        }
        // Direct calls between images reach ±2 GiB: the images together
        // must fit in that.
        let parts = &self.parts;
        let span: u64 = parts.iter().map(|p| p.span().1 - p.span().0).sum();
        if span > MAX_FUSED_SPAN {
            let big = parts
                .iter()
                .max_by_key(|p| p.span().1 - p.span().0)
                .expect("a root");
            return Err(InputError::new(
                &big.path,
                format!(
                    "the fused image would span {span:#x} bytes, beyond the {MAX_FUSED_SPAN:#x} that direct calls between its images can reach"
                ),
            )
            .into());
        }
        let runtime = Image::parse(Path::new("<fusion runtime>"), runtime::RUNTIME_SO.to_vec())?;
        self.parts
            .push(input::read_part(&runtime, RUNTIME_NAME, Role::Runtime)?);
        Ok(())
    }

    /// What the merge did, given the fused image `out` of `output`.
    pub fn manifest(self, output: &Path, out: &Output) -> Manifest {
        let parts = &self.parts;
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
        let fused: BTreeSet<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        let rpc_sites = out
            .sites
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
            .collect();
        Manifest {
            output: output.display().to_string(),
            root: self.root.name.clone(),
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
                    isolation: p.isolation,
                })
                .collect(),
            edges: self.edges,
            rpc_sites,
            decisions: self.decisions,
            notes,
            debug_info: out.debug.clone(),
            output_bytes: out.len,
            input_bytes: self.input_bytes,
            dynamic_relocations: out.relocations,
            imports: out.imports,
        }
    }
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
