//! `faasfuse merge`: fuse a root function library and its callees into one
//! shared object by image transplant. The root keeps its addresses, each
//! callee and the fusion runtime are displaced as whole blocks, and new
//! dynamic metadata, unwind tables and initializer arrays describe them all.
//! The runtime exports the four entry points and runs fused callees
//! in-process; every other call still goes to the host.
//!
//! A merge is a pipeline of passes, each a function returning what it
//! produced (`pipeline`): load (each input parsed once, with its RPC
//! sites) → analyze (reachability, re-entry) → lower (site plans) → read
//! parts (what the transplant needs) → `emit::layout` (every input, new
//! content, section and program header placed once) → `emit::write`
//! (bytes) → `gadgets` (no code but the runtime's gates writes PKRU) →
//! verify (`merge_verified`). The output's parts are written by `dynamic`,
//! `dynsym`, `eh_frame`/`unwind`, `header`, `relocs`, `sections`,
//! `segments`, `symtab`, `table` and `text`.

mod debug;
mod dynamic;
mod dynsym;
pub mod eh_frame;
mod emit;
mod file;
mod gadgets;
mod header;
mod input;
mod layout;
mod pipeline;
mod relocs;
mod sections;
mod segments;
mod symtab;
mod table;
mod text;
mod unwind;
pub use faasfuse_runtime as runtime;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::analyze::Callee;
use crate::error::InputError;
use crate::files::FileBytes;
use crate::lower::Level;
use crate::spec::FunctionSpec;
use crate::timing::Phases;
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
    pub isolation: Isolation,
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

pub use crate::spec::Isolation;

/// How to merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    pub level: Level,
    /// Functions declared re-entrant: a call into one while it runs is
    /// served in-process by an extra worker instead of as an RPC.
    pub reentrant: BTreeSet<String>,
    /// Isolation of every fused callee ...
    pub isolate: Isolation,
    /// ... or of the named ones (these win).
    pub isolate_fn: BTreeMap<String, Isolation>,
}

impl MergeOptions {
    /// The isolation `name` gets when fused as a callee.
    pub fn isolation_of(&self, name: &str) -> Isolation {
        self.isolate_fn.get(name).copied().unwrap_or(self.isolate)
    }

    /// Every function declared re-entrant is one of `specs`.
    pub fn check(&self, specs: &[FunctionSpec]) -> Result<()> {
        let unknown = |r: &&String| !specs.iter().any(|s| &s.name == *r);
        if let Some(r) = self.reentrant.iter().find(unknown) {
            return Err(InputError::new(
                r.as_str(),
                "declared re-entrant but not among the libraries to fuse",
            )
            .into());
        }
        if let Some(r) = self.isolate_fn.keys().find(unknown) {
            return Err(InputError::new(
                r.as_str(),
                "given an isolation but not among the libraries to fuse",
            )
            .into());
        }
        Ok(())
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
    /// Whose DWARF the fused image carries, what it left out and why.
    pub debug_info: debug::DebugSummary,
    pub output_bytes: u64,
    pub input_bytes: u64,
    pub dynamic_relocations: usize,
    pub imports: usize,
    /// The byte sequences that write PKRU (WRPKRU, XRSTOR, XRSTORS) in the
    /// executable bytes: the runtime's gates' and any other.
    pub pkru_sequences: PkruScan,
}

pub use gadgets::{PkruScan, PkruSequence};

/// Fuse `specs` (root first) into `output`.
pub fn merge(specs: &[FunctionSpec], output: &Path, opts: &MergeOptions) -> Result<Manifest> {
    let mut staged = crate::output::Staged::create(output, true)?;
    let (manifest, _) = fuse(specs, &mut staged, opts, &mut Phases::start("merge"))?;
    staged.commit()?;
    Ok(manifest)
}

/// Fuse `specs` (root first) into `staged` (its destination names the
/// image): load, analyze, lower, lay out, write. The bytes written, mapped
/// for reading. (Verifying is the caller's.)
fn fuse(
    specs: &[FunctionSpec],
    staged: &mut crate::output::Staged,
    opts: &MergeOptions,
    time: &mut Phases,
) -> Result<(Manifest, FileBytes)> {
    let output = staged.dest().to_path_buf();
    let loaded = pipeline::load(specs, opts)?;
    time.mark("load");
    let finding = loaded.find_debug_fields();
    let analyzed = pipeline::analyze(&loaded, opts)?;
    let lowered = pipeline::lower(&loaded, &analyzed, opts);
    let parts = pipeline::read_parts(loaded, &analyzed, opts)?;
    time.mark("analyze");
    let inputs = emit::place_inputs(&parts.parts)?;
    let copies = emit::input_copies(&parts.parts, &inputs.placements);
    let out_file: &std::fs::File = staged.file();
    // The kernel copies the inputs' bulk while the rest is made.
    let (out, written) = std::thread::scope(|s| {
        let copying = s.spawn(|| file::copy_inputs(&copies, out_file, &output));
        let made = emit::layout(&parts.parts, inputs, &lowered.plans, finding)
            .and_then(emit::write)
            .with_context(|| format!("fusing into {}", output.display()));
        let copied = copying
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (out, fused) = made?;
        copied?;
        time.mark("layout");
        let written = fused.write_to(out_file, &output, out.build_id)?;
        time.mark("write");
        anyhow::Ok((out, written))
    })?;
    let pkru = gadgets::check(&parts.parts, &out, &written, out_file)?;
    time.mark("scan");
    let manifest = pipeline::manifest(&output, analyzed, &parts, &out, pkru);
    Ok((manifest, written))
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
    let staged = crate::output::Staged::create(output, true)?;
    let (manifest, staged) = merge_staged(specs, staged, verify_with, opts)?;
    staged.commit()?;
    Ok(manifest)
}

/// [`merge_verified`] into `staged` (its destination names the image),
/// left uncommitted for the caller to name with other outputs.
pub fn merge_staged(
    specs: &[FunctionSpec],
    mut staged: crate::output::Staged,
    verify_with: Option<&Path>,
    opts: &MergeOptions,
) -> Result<(Manifest, crate::output::Staged)> {
    let mut time = Phases::start("merge");
    let (manifest, written) = fuse(specs, &mut staged, opts, &mut time)?;
    if let Some(exe) = verify_with {
        verify_written(specs, &staged, written, exe)?;
        time.mark("verify");
    }
    Ok((manifest, staged))
}

/// Verify the fused image of `specs` written into `staged` (`written`, its
/// bytes), loading it with `exe`.
fn verify_written(
    specs: &[FunctionSpec],
    staged: &crate::output::Staged,
    written: FileBytes,
    exe: &Path,
) -> Result<()> {
    let output = staged.dest();
    let read_path = staged.read_path();
    // Errors name the fused image by its final path, never the staging one.
    let staged_name = read_path.display().to_string();
    let report = crate::verify::verify_staged(&read_path, written, staged.fd(), Some(exe))
        .map_err(|e| match e.downcast_ref::<InputError>() {
            Some(ie) => anyhow::Error::new(InputError::new(
                output,
                format!(
                    "fused image failed verification: {}",
                    ie.reason
                        .replace(&staged_name, &output.display().to_string())
                ),
            )),
            None => e,
        })?;
    if let Some(c) = report.checks.iter().find(|c| !c.ok) {
        // A fused image that does not load may be an input that does
        // not load either: that input is at fault.
        if c.name == crate::verify::LOAD_TEST {
            for s in specs {
                if let Err(e) = crate::verify::load_test(exe, &s.path, -1) {
                    return Err(InputError::new(
                        &s.path,
                        format!("does not load by itself ({e:#}), so neither can its fused image"),
                    )
                    .into());
                }
            }
        }
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
    Ok(())
}

/// The human summary of a merge.
pub fn render(m: &Manifest) -> String {
    let mut s = format!("{}: root {}\n", m.output, m.root);
    for i in &m.inputs {
        s.push_str(&format!(
            "  {:<8} {:<14} +{:#010x}  {}{}\n",
            serde_json::to_value(i.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            i.name,
            i.displacement,
            i.path,
            match i.isolation {
                Isolation::None => "",
                Isolation::Stack => "  (isolated: own stack)",
                Isolation::Mpk => "  (isolated: own stack and protection key)",
            }
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
    if !m.debug_info.carried.is_empty() {
        s.push_str(&format!(
            "  debug info of {} carried\n",
            m.debug_info.carried.join(", ")
        ));
    }
    for (image, dwo) in &m.debug_info.dwo {
        s.push_str(&format!("  debug info of {image} read from {dwo}\n"));
    }
    for n in &m.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    if let Some(first) = m.pkru_sequences.unvetted.first() {
        s.push_str(&format!(
            "  note: {} byte sequence{} that write{} PKRU outside the runtime's gates (the first: {} at {:#x}, {}'s): `--isolate mpk` refuses this group\n",
            m.pkru_sequences.unvetted.len(),
            if m.pkru_sequences.unvetted.len() == 1 { "" } else { "s" },
            if m.pkru_sequences.unvetted.len() == 1 { "s" } else { "" },
            first.sequence.name(),
            first.address,
            first.holder
        ));
    }
    s.push_str(&format!(
        "  {} bytes from {} input bytes; {} dynamic relocations, {} imports\n",
        m.output_bytes, m.input_bytes, m.dynamic_relocations, m.imports
    ));
    s
}
