//! `faasfuse inspect`: what a user needs to know about a function library
//! before fusing it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::analyze::gadgets::{self, Sequence};
use crate::analyze::{find_rpc_sites, RpcSite};
use crate::elf::{Image, ImageInfo};
use crate::error::InputError;
use crate::lower::{SiteRecord, SITES_SECTION};
use crate::merge::Isolation;

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
    /// In a fused image: its images as the fusion runtime's table lists
    /// them (root first), with how each is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused_images: Option<Vec<FusedImage>>,
    /// Whether `merge` can carry the image's DWARF into a fused image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwarf: Option<DwarfCheck>,
    /// The byte sequences that write PKRU in its executable bytes.
    pub pkru_sequences: PkruReport,
}

/// WRPKRU, XRSTOR and XRSTORS byte sequences at any offset of the bytes
/// the image maps executable (`merge --isolate mpk` refuses code holding
/// one outside the runtime's gates).
#[derive(Debug, Serialize)]
pub struct PkruReport {
    /// In a fused image: the `WRPKRU` instructions of the runtime's gates.
    pub vetted: usize,
    pub unvetted: Vec<PkruFound>,
}

#[derive(Debug, Serialize)]
pub struct PkruFound {
    pub sequence: Sequence,
    pub address: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Inside one instruction, across two, outside the code.
    pub lies: String,
}

/// What `merge` would make of an image's DWARF.
#[derive(Debug, Serialize)]
pub struct DwarfCheck {
    pub carried: bool,
    /// Fields that depend on placement (shifted when the image is displaced).
    pub fields: usize,
    /// Why it would be left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One image of a fused image, read from the table the runtime reads.
#[derive(Debug, Serialize)]
pub struct FusedImage {
    pub name: String,
    pub reentrant: bool,
    pub isolation: Isolation,
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
    let fused_images = match fused_sites {
        Some(_) => Some(fused_images(&image)?),
        None => None,
    };
    let dwarf = image
        .info
        .debug_info
        .then(|| match crate::debuginfo::fields_in_elf(&image.data) {
            Ok(f) => DwarfCheck {
                carried: true,
                fields: f.fields.len(),
                reason: None,
            },
            Err(e) => DwarfCheck {
                carried: false,
                fields: 0,
                reason: Some(e),
            },
        });
    let mut info = image.info.clone();
    info.endbr_functions = image.count_endbr_functions();
    let pkru_sequences = pkru_sequences(&image, fused_images.is_some());
    Ok(InspectReport {
        path: path.display().to_string(),
        info,
        rpc_sites,
        fused_sites,
        fused_images,
        dwarf,
        pkru_sequences,
    })
}

/// The PKRU-writing sequences of `image`; in a `fused` one, the `WRPKRU`
/// instructions of the runtime's gates (by its `.symtab`) are vetted.
fn pkru_sequences(image: &Image, fused: bool) -> PkruReport {
    let runs = gadgets::executable_runs(&image.data, image.loads());
    let gate = format!(
        "{}{}",
        crate::merge::RUNTIME_SYMBOL_PREFIX,
        crate::runtime::PKRU_GATE_PREFIX
    );
    let code = |f: &crate::elf::FunctionSymbol| image.read_vaddr(f.address, f.size as usize);
    let gates: std::collections::BTreeSet<u64> = image
        .info
        .functions
        .iter()
        .filter(|f| fused && f.name.starts_with(&gate) && f.size > 0)
        .filter_map(|f| Some(gadgets::wrpkru_instructions(code(f)?, f.address)))
        .flatten()
        .collect();
    let mut report = PkruReport {
        vetted: 0,
        unvetted: Vec::new(),
    };
    for h in gadgets::scan(&runs) {
        if h.sequence == Sequence::Wrpkru && h.in_segment && gates.contains(&h.address) {
            report.vetted += 1;
            continue;
        }
        let f = image.function_at(h.address).filter(|_| h.in_segment);
        let lies = match f.and_then(|f| Some((f, code(f)?))) {
            _ if !h.in_segment => "outside any code segment, on a page mapped executable".into(),
            Some((f, bytes)) => gadgets::placement(bytes, f.address, h.address).to_string(),
            None => "in no function symbol".into(),
        };
        report.unvetted.push(PkruFound {
            sequence: h.sequence,
            address: h.address,
            function: f.map(|f| f.name.clone()),
            lies,
        });
    }
    report
}

/// The fused table of a fused image: the runtime reaches it through a
/// pointer with an `R_X86_64_RELATIVE` relocation, so it is the target of
/// a relative relocation that holds the table's magic; each entry's name is
/// the target of the relocation at the entry's start.
fn fused_images(image: &Image) -> Result<Vec<FusedImage>> {
    use crate::runtime::*;
    let bad = |e: &str| InputError::new(&image.path, format!("fused table: {e}"));
    let relative: std::collections::BTreeMap<u64, u64> = image
        .dynamic_relocs()
        .iter()
        .filter(|r| r.r_type == object::elf::R_X86_64_RELATIVE && r.addend >= 0)
        .map(|r| (r.offset, r.addend as u64))
        .collect();
    let word = |at: u64| {
        image
            .read_vaddr(at, 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let table = relative
        .values()
        .copied()
        .find(|&t| word(t) == Some(TABLE_MAGIC))
        .ok_or_else(|| bad("not found"))?;
    let count = word(table + 8).ok_or_else(|| bad("truncated"))?;
    if count == 0 || count > 1 << 16 {
        return Err(bad(&format!("{count} images")).into());
    }
    (0..count)
        .map(|k| {
            let entry = table + TABLE_HEADER_SIZE + IMAGE_ENTRY_SIZE * k;
            let name = relative
                .get(&(entry + ENTRY_NAME))
                .and_then(|&at| image.read_cstr(at, 256))
                .ok_or_else(|| bad(&format!("entry {k} has no name")))?;
            let flags = word(entry + ENTRY_FLAGS).ok_or_else(|| bad("truncated"))?;
            Ok(FusedImage {
                name: String::from_utf8_lossy(name).into_owned(),
                reentrant: flags & FLAG_REENTRANT != 0,
                isolation: if flags & FLAG_ISOLATE_MPK != 0 {
                    Isolation::Mpk
                } else if flags & FLAG_ISOLATE_STACK != 0 {
                    Isolation::Stack
                } else {
                    Isolation::None
                },
            })
        })
        .collect()
}

/// The site list `merge` leaves in a fused image, if this is one.
fn fused_sites(image: &Image) -> Result<Option<Vec<SiteRecord>>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(image.data.as_slice())?;
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
    /// The PKRU-writing sequences.
    fn render_pkru(&self, s: &mut String) {
        let p = &self.pkru_sequences;
        let _ = writeln!(
            s,
            "  PKRU writes    {} in the runtime's gates, {} elsewhere (WRPKRU, XRSTOR, XRSTORS bytes at any offset)",
            p.vetted,
            p.unvetted.len()
        );
        for u in &p.unvetted {
            let _ = writeln!(
                s,
                "    {:#010x}  {:<8} {} ({})",
                u.address,
                u.sequence.name(),
                u.function.as_deref().unwrap_or("?"),
                u.lies
            );
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_facts(&mut s);
        self.render_code(&mut s);
        s
    }

    /// The ELF facts and the DWARF verdict.
    fn render_facts(&self, s: &mut String) {
        let i = &self.info;
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
        if let Some(why) = &i.sections_recovered {
            let _ = writeln!(
                s,
                "  sections       recovered from the program headers and the dynamic segment; the section headers were not used: {why}"
            );
        }
        match &self.dwarf {
            Some(DwarfCheck {
                carried: true,
                fields,
                ..
            }) => {
                let _ = writeln!(
                    s,
                    "                 carried when fused ({fields} fields shifted by placement)"
                );
            }
            Some(DwarfCheck {
                reason: Some(r), ..
            }) => {
                let _ = writeln!(s, "                 left out when fused: {r}");
            }
            _ => {}
        }
    }

    /// Functions, RPC sites and, for a fused image, its images and lowered sites.
    fn render_code(&self, s: &mut String) {
        let i = &self.info;
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
        if let Some(images) = &self.fused_images {
            let _ = writeln!(s, "  fused images ({}):", images.len());
            for (k, im) in images.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "    {:<14} {:<7} isolation {}{}",
                    im.name,
                    if k == 0 { "root" } else { "callee" },
                    match im.isolation {
                        Isolation::None => "none",
                        Isolation::Stack => "stack (own stack, faults fail the call)",
                        Isolation::Mpk =>
                            "mpk (own stack and protection key, faults fail the call)",
                    },
                    if im.reentrant { ", re-entrant" } else { "" }
                );
            }
        }
        self.render_pkru(s);
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
    }
}
