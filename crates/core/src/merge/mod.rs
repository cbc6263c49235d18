//! `faasfuse merge`: fuse a root function library and its callees into one
//! shared object by image transplant. The root keeps its addresses, each
//! callee and the fusion runtime are displaced as whole blocks, and new
//! dynamic metadata, unwind tables and initializer arrays describe them all.
//! The runtime exports the four entry points and runs fused callees
//! in-process; every other call still goes to the host.

mod dynamic;
mod dynsym;
pub mod eh_frame;
mod emit;
mod header;
mod input;
mod layout;
mod relocs;
mod sections;
mod segments;
mod symtab;
mod table;
mod text;
mod unwind;
pub use faasfuse_runtime as runtime;

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::analyze::{find_rpc_sites, Callee, RpcSite};
use crate::elf::Image;
use crate::error::InputError;
use crate::lower::{self, Level, SitePlan};
use crate::spec::FunctionSpec;
use input::Role;

pub use input::decode_relr;

/// Largest sum of the input images' spans: what stays within the reach of
/// a `call rel32`, with room for page alignment and the runtime.
const MAX_FUSED_SPAN: u64 = (1 << 31) - (64 << 20);

/// Name the runtime's symbols carry in the output's `.symtab`.
const RUNTIME_NAME: &str = "faasfuse";

/// Prefix of the runtime's function names in a fused image's `.symtab`.
pub const RUNTIME_SYMBOL_PREFIX: &str = "faasfuse::";

#[derive(Debug, Clone, Serialize)]
pub struct ManifestInput {
    pub name: String,
    pub path: String,
    pub role: Role,
    pub build_id: Option<String>,
    pub displacement: u64,
    pub tls_offset: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestSite {
    /// The function library the site is in.
    pub image: String,
    /// Address in the input image.
    pub input_address: u64,
    /// Address in the fused image.
    pub address: u64,
    pub function: Option<String>,
    pub callee: Callee,
    /// 0: indirect call through the runtime; 1: direct call of the
    /// runtime's dispatcher; 2: direct call of the callee's entry stub.
    pub tier: u8,
    /// The site's thunk in the fused image, when lowered.
    pub thunk: Option<u64>,
    /// What the call does in the fused image, and why it has its tier.
    pub handling: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub caller: String,
    pub callee: String,
    pub sites: usize,
    /// The callee can already be running when the caller calls it (the edge
    /// closes a cycle). Such a call stays an RPC through the host, as the
    /// platform sends it to another process, unless the callee is declared
    /// re-entrant.
    pub may_reenter: bool,
    /// What a call on this edge does in the fused image.
    pub handling: String,
}

/// How to merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    pub level: Level,
    /// Functions declared re-entrant: a call into one while it runs is
    /// served in-process by an extra worker instead of as an RPC.
    pub reentrant: BTreeSet<String>,
}

impl MergeOptions {
    /// Every function declared re-entrant is one of `specs`.
    pub fn check(&self, specs: &[FunctionSpec]) -> Result<()> {
        match self
            .reentrant
            .iter()
            .find(|r| !specs.iter().any(|s| &s.name == *r))
        {
            Some(r) => Err(InputError::new(
                r.as_str(),
                "declared re-entrant but not among the libraries to fuse",
            )
            .into()),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub function: String,
    pub fused: bool,
    pub reason: String,
}

/// What `merge` did, for `--manifest` and for CI logs.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub output: String,
    pub root: String,
    pub inputs: Vec<ManifestInput>,
    pub edges: Vec<Edge>,
    pub rpc_sites: Vec<ManifestSite>,
    pub decisions: Vec<Decision>,
    pub notes: Vec<String>,
    pub output_bytes: u64,
    pub input_bytes: u64,
    pub dynamic_relocations: usize,
    pub imports: usize,
}

/// Fuse `specs` (root first) into `output`.
pub fn merge(specs: &[FunctionSpec], output: &Path, opts: &MergeOptions) -> Result<Manifest> {
    let (manifest, bytes) = fuse(specs, output, opts)?;
    crate::output::write_atomically(output, &bytes, true)?;
    Ok(manifest)
}

/// Fuse `specs` (root first) into the bytes of the image `output` names.
fn fuse(specs: &[FunctionSpec], output: &Path, opts: &MergeOptions) -> Result<(Manifest, Vec<u8>)> {
    crate::spec::check_unique(specs)?;
    let level = opts.level;
    opts.check(specs)?;
    let root = &specs[0];
    let mut images = Vec::new();
    for s in specs {
        let image = Image::load(&s.path)?;
        image.require_entry_points()?;
        let sites = find_rpc_sites(&image);
        images.push((s.clone(), image, sites));
    }

    // Reachability from the root through RPC sites; a dynamic site can
    // reach any function.
    let mut order = vec![0usize];
    let mut queue = VecDeque::from([0usize]);
    let mut edges = Vec::new();
    let mut seen = BTreeSet::from([0usize]);
    while let Some(i) = queue.pop_front() {
        let sites = &images[i].2;
        let dynamic = sites.iter().any(|s| s.callee == Callee::Dynamic);
        for (j, (spec, _, _)) in images.iter().enumerate() {
            let constant = sites
                .iter()
                .filter(|s| matches!(&s.callee, Callee::Constant(n) if *n == spec.name))
                .count();
            if constant == 0 && !dynamic {
                continue;
            }
            edges.push(Edge {
                caller: images[i].0.name.clone(),
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
    for (j, (spec, _, _)) in images.iter().enumerate() {
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

    mark_reentry(&mut edges, &root.name, &opts.reentrant);

    let mut decisions = vec![Decision {
        function: root.name.clone(),
        fused: true,
        reason: "root: the fused image serves it and exports its entry points".into(),
    }];
    let mut parts = Vec::new();
    let mut plans: Vec<Vec<SitePlan>> = Vec::new();
    let table: Vec<String> = order.iter().map(|&i| images[i].0.name.clone()).collect();
    let mut input_bytes = 0;
    let mut slots: Vec<Option<(FunctionSpec, Image, Vec<RpcSite>)>> =
        images.into_iter().map(Some).collect();
    for (k, &i) in order.iter().enumerate() {
        let (spec, image, sites) = slots[i].take().expect("each input once");
        input_bytes += image.data.len() as u64;
        if k > 0 {
            let via: Vec<&str> = edges
                .iter()
                .filter(|e| e.callee == spec.name)
                .map(|e| e.caller.as_str())
                .collect();
            decisions.push(Decision {
                function: spec.name.clone(),
                fused: true,
                reason: format!(
                    "reachable from {} via RPC sites of {}",
                    root.name,
                    via.join(", ")
                ),
            });
        }
        plans.push(lower::plan(&image, &sites, &table, level));
        let role = if k == 0 { Role::Root } else { Role::Callee };
        let mut part = input::read_part(image, &spec.name, role)?;
        part.reentrant = opts.reentrant.contains(&spec.name);
        input::check_supported(&part)?;
        parts.push(part);
    }
    // Direct calls between images reach ±2 GiB: the images together must
    // fit in that.
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
    parts.push(input::read_part(runtime, RUNTIME_NAME, Role::Runtime)?);
    plans.push(Vec::new());

    let mut notes = Vec::new();
    for p in &parts[1..] {
        if !p.debug_sections.is_empty() {
            notes.push(format!(
                "{}: debug info of a displaced image is not carried (the root's is)",
                p.name
            ));
        }
    }

    let out = emit::layout(&parts, &plans)
        .and_then(emit::write)
        .with_context(|| format!("fusing into {}", output.display()))?;
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
    let manifest = Manifest {
        output: output.display().to_string(),
        root: root.name.clone(),
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
            })
            .collect(),
        edges,
        rpc_sites,
        decisions,
        notes,
        output_bytes: out.bytes.len() as u64,
        input_bytes,
        dynamic_relocations: out.relocations,
        imports: out.imports,
    };
    Ok((manifest, out.bytes))
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

/// Merge into an unnamed temporary file, verify it, then give it its name:
/// on any failure, or when killed, no output appears.
pub fn merge_verified(
    specs: &[FunctionSpec],
    output: &Path,
    verify_with: Option<&Path>,
    opts: &MergeOptions,
) -> Result<Manifest> {
    crate::output::check_destination(output)?;
    let (manifest, bytes) = fuse(specs, output, opts)?;
    let mut staged = crate::output::Staged::create(output, true)?;
    {
        use std::io::Write;
        staged
            .file()
            .write_all(&bytes)
            .map_err(|e| InputError::new(output, format!("cannot write output: {e}")))?;
        staged
            .file()
            .flush()
            .map_err(|e| InputError::new(output, format!("cannot write output: {e}")))?;
    }
    if let Some(exe) = verify_with {
        let read_path = staged.read_path();
        // Errors name the fused image by its final path, never the staging one.
        let staged_name = read_path.display().to_string();
        let report =
            crate::verify::verify_staged(&read_path, staged.fd(), Some(exe)).map_err(|e| {
                match e.downcast_ref::<InputError>() {
                    Some(ie) => anyhow::Error::new(InputError::new(
                        output,
                        format!(
                            "fused image failed verification: {}",
                            ie.reason
                                .replace(&staged_name, &output.display().to_string())
                        ),
                    )),
                    None => e,
                }
            })?;
        if let Some(c) = report.checks.iter().find(|c| !c.ok) {
            let detail = c.detail.replace(
                &read_path.display().to_string(),
                &output.display().to_string(),
            );
            anyhow::bail!(
                "fused image {} failed verification: {}: {detail}",
                output.display(),
                c.name,
            );
        }
    }
    staged.commit()?;
    Ok(manifest)
}

/// The human summary of a merge.
pub fn render(m: &Manifest) -> String {
    let mut s = format!("{}: root {}\n", m.output, m.root);
    for i in &m.inputs {
        s.push_str(&format!(
            "  {:<8} {:<14} +{:#010x}  {}\n",
            serde_json::to_value(i.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            i.name,
            i.displacement,
            i.path
        ));
    }
    for site in &m.rpc_sites {
        s.push_str(&format!(
            "  site {:#010x} in {}::{}: {}\n",
            site.address,
            site.image,
            site.function.as_deref().unwrap_or("?"),
            site.handling
        ));
    }
    for e in m.edges.iter().filter(|e| e.may_reenter) {
        s.push_str(&format!(
            "  edge {} -> {}: {}\n",
            e.caller, e.callee, e.handling
        ));
    }
    for n in &m.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    s.push_str(&format!(
        "  {} bytes from {} input bytes; {} dynamic relocations, {} imports\n",
        m.output_bytes, m.input_bytes, m.dynamic_relocations, m.imports
    ));
    s
}
