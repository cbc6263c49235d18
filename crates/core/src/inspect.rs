//! `faasfuse inspect`: what a user needs to know about a function library
//! before fusing it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::analyze::{find_rpc_sites, RpcSite};
use crate::elf::{Image, ImageInfo};
use crate::error::InputError;
use crate::lower::{SiteRecord, SITES_SECTION};

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub path: String,
    #[serde(flatten)]
    pub info: ImageInfo,
    /// Indirect RPC call sites found in the code.
    pub rpc_sites: Vec<RpcSite>,
    /// In a fused image: every RPC site of its input images with its tier
    /// (what `merge` recorded; lowered sites are direct calls now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused_sites: Option<Vec<SiteRecord>>,
}

pub fn inspect(path: &Path) -> Result<InspectReport> {
    let image = Image::load(path)?;
    let mut rpc_sites = find_rpc_sites(&image);
    let fused_sites = fused_sites(&image)?;
    if fused_sites.is_some() {
        // The fusion runtime's own calls (its exported entry points call the
        // images', its dispatcher calls the host's invoke) are not RPC sites
        // of the fused functions.
        rpc_sites.retain(|s| {
            !s.function.as_deref().is_some_and(|f| {
                f.starts_with(crate::merge::RUNTIME_SYMBOL_PREFIX)
                    || crate::elf::ENTRY_POINTS.contains(&f)
            })
        });
    }
    Ok(InspectReport {
        path: path.display().to_string(),
        info: image.info.clone(),
        rpc_sites,
        fused_sites,
    })
}

/// The site list `merge` leaves in a fused image, if this is one.
fn fused_sites(image: &Image) -> Result<Option<Vec<SiteRecord>>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(&*image.data)?;
    let Some(section) = file.section_by_name(SITES_SECTION) else {
        return Ok(None);
    };
    let bad = |e: String| InputError::new(&image.path, format!("{SITES_SECTION}: {e}"));
    let data = section.data().map_err(|e| bad(e.to_string()))?;
    let sites = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
    Ok(Some(sites))
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

impl InspectReport {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let i = &self.info;
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.path);
        let _ = writeln!(
            s,
            "  architecture   {} ELF{} {}",
            i.machine, i.class, i.elf_type
        );
        let _ = writeln!(s, "  PIC            {}", yes(i.pic));
        let _ = writeln!(
            s,
            "  build-id       {}",
            i.build_id.as_deref().unwrap_or("none")
        );
        let _ = writeln!(
            s,
            "  soname         {}",
            i.soname.as_deref().unwrap_or("none")
        );
        let _ = writeln!(s, "  DT_NEEDED      {}", list(&i.needed));
        let _ = writeln!(s, "  ABI entry points:");
        for e in &i.entry_points {
            match e.address {
                Some(a) => {
                    let _ = writeln!(s, "    {:<26} {:#x}", e.name, a);
                }
                None => {
                    let _ = writeln!(s, "    {:<26} MISSING", e.name);
                }
            }
        }
        let tls = match &i.tls {
            Some(t) => format!(
                "{} bytes ({} initialised), align {}",
                t.memsz, t.filesz, t.align
            ),
            None => "none".into(),
        };
        let _ = writeln!(s, "  TLS            {tls}");
        let _ = writeln!(
            s,
            "  IFUNC          {} symbol(s), {} IRELATIVE reloc(s)",
            i.ifuncs.len(),
            i.irelative_relocs
        );
        let needed_versions: Vec<String> = i
            .versions
            .needed
            .iter()
            .map(|n| format!("{} ({})", n.file, n.versions.join(" ")))
            .collect();
        let _ = writeln!(s, "  versions       needs {}", list(&needed_versions));
        if !i.versions.defined.is_empty() {
            let _ = writeln!(
                s,
                "                 defines {}",
                i.versions.defined.join(", ")
            );
        }
        let relro = match &i.relro {
            Some(r) => format!("{:#x}..{:#x}", r.start, r.end),
            None => "none".into(),
        };
        let _ = writeln!(s, "  RELRO          {relro}, BIND_NOW {}", yes(i.bind_now));
        let _ = writeln!(
            s,
            "  CET            IBT {}, SHSTK {} (marking); {} of {} functions start with endbr64",
            yes(i.cet.ibt),
            yes(i.cet.shstk),
            i.endbr_functions,
            i.functions.len()
        );
        let _ = writeln!(s, "  DT_RELR        {}", yes(i.relr));
        let _ = writeln!(s, "  emit-relocs    {}", yes(i.emit_relocs));
        let _ = writeln!(s, "  debug info     {}", yes(i.debug_info));
        let _ = writeln!(s, "  functions ({}):", i.functions.len());
        for f in &i.functions {
            let _ = writeln!(
                s,
                "    {:#010x} {:>6}  {}{}",
                f.address,
                f.size,
                f.name,
                if f.exported { "  [exported]" } else { "" }
            );
        }
        let _ = writeln!(s, "  RPC call sites ({}):", self.rpc_sites.len());
        for r in &self.rpc_sites {
            let _ = writeln!(
                s,
                "    {:#010x}  {:<10} in {}  ({})",
                r.address,
                r.callee.to_string(),
                r.function.as_deref().unwrap_or("?"),
                r.instruction
            );
        }
        if let Some(sites) = &self.fused_sites {
            let _ = writeln!(s, "  fused RPC sites ({}):", sites.len());
            for r in sites {
                let _ = writeln!(
                    s,
                    "    {:#010x}  tier {}  {:<10} in {}::{}  ({})",
                    r.address,
                    r.tier,
                    r.callee.to_string(),
                    r.image,
                    r.function.as_deref().unwrap_or("?"),
                    r.reason
                );
            }
        }
        s
    }
}
