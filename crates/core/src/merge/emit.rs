//! Lays out the fused image once ([`layout`]), then writes its bytes ([`write`]).
//!
//! Layout places the inputs' loadable segments as blocks at their displaced
//! addresses, the new code, one new read-only segment and one new writable
//! segment, then the non-allocated sections; write encodes what needed the
//! places (relocations, unwind tables, `.dynamic`) and copies everything.

use anyhow::Result;
use object::elf;

use super::debug::{self, Carried, DebugSummary};
use super::dynamic::{self, Dynamic, InitFini};
use super::dynsym::{DynSymtab, Encoded, StrTab};
use super::eh_frame::EhFrameLayout;
use super::file::{Copy, FusedFile};
use super::header;
use super::input::Part;
use super::layout::{self, Inputs, NewSegments, Placement, Sizes, Slot, TlsBlock};
use super::relocs::{self, Rela, Rewritten};
use super::sections::{self, NonAlloc, OutSection};
use super::segments::{self, Phdr, Segments, PHDR_SIZE};
use super::symtab::symtab_bytes;
use super::table::FusedTable;
use super::text::{Code, CodeSymbol, NewCode};
use super::unwind;
use crate::error::InputError;
use crate::lower::{SitePlan, SiteRecord};

/// What `write` produced (the bytes themselves: [`FusedFile`]).
pub struct Output {
    /// The image's size in bytes.
    pub len: u64,
    /// Where the build-id hash goes, written as zeros.
    pub build_id: u64,
    pub placements: Vec<Placement>,
    pub relocations: usize,
    pub imports: usize,
    /// Every RPC site, with its tier, at its fused address.
    pub sites: Vec<SiteRecord>,
    /// What the debug info holds.
    pub debug: DebugSummary,
    /// Where the new code (thunks, entry stubs) lies, and its functions.
    pub text: Option<Slot>,
    pub code_symbols: Vec<CodeSymbol>,
}

/// Every input and every new content of the fused image, sized and placed.
pub struct Layout<'a> {
    parts: &'a [Part],
    places: Places,
    tables: Tables,
    contents: Contents,
    file: FileSections<'a>,
}

/// Where everything loadable goes.
struct Places {
    inputs: Inputs,
    text: Option<Slot>,
    tls: TlsBlock,
    new: NewSegments,
    phdrs: Vec<Phdr>,
}

/// The dynamic linker's tables.
struct Tables {
    syms: DynSymtab,
    relocs: Rewritten,
    dynstr: StrTab,
    encoded: Encoded,
    dynamic: Dynamic,
    init_fini: InitFini,
    table: FusedTable,
}

/// The new code and what describes it.
struct Contents {
    code: Code,
    sites_json: Vec<u8>,
    eh: EhFrameLayout,
    cet: u32,
}

/// The section headers and the non-allocated sections.
struct FileSections<'a> {
    sections: Vec<OutSection>,
    non_alloc: NonAlloc,
    debug: Carried<'a>,
}

pub use layout::place_inputs;

/// The inputs' loadable bytes at their places in the fused image: what goes
/// into it unchanged.
pub fn input_copies<'a>(parts: &'a [Part], placements: &[Placement]) -> Vec<Copy<'a>> {
    let mut copies = Vec::new();
    for (p, pl) in parts.iter().zip(placements) {
        for (l, off) in p.pieces.iter().zip(&pl.load_offsets) {
            copies.push(Copy {
                data: &p.data,
                from: l.offset as usize,
                len: l.filesz as usize,
                at: off.0,
            });
        }
    }
    copies
}

/// Size and place the fused image of `parts` (root first, runtime last),
/// whose RPC sites `plans` (one list per part) lower, the inputs placed as
/// [`place_inputs`] placed them: displaced blocks, the root at its own
/// addresses; then the new code after them, the inputs' TLS blocks in one.
pub fn layout<'a>(
    parts: &'a [Part],
    mut inputs: Inputs,
    plans: &[Vec<SitePlan>],
    finding: debug::Finding,
) -> Result<Layout<'a>> {
    let new_code = NewCode::new(plans);
    let text = inputs.place_text(new_code.size());
    let tls = inputs.place_tls(parts);
    let placements = &inputs.placements;

    // Contents whose sizes do not depend on where the new segments go.
    let mut sections = sections::input_sections(parts, placements);
    let tables = tables(parts, placements, &sections)?;
    let eh = unwind::collect(parts, placements, text)?;
    let cet = parts.iter().map(|p| p.cet_bits).fold(3, |a, b| a & b);
    let segments = Segments {
        parts,
        inputs: &inputs,
        text,
        tls,
        exec_stack: parts.iter().any(|p| p.exec_stack),
    };

    // The new segments.
    let new = inputs.place_new(&sizes(
        &tables,
        &eh,
        tls,
        |property| segments.count(property) as u64 * PHDR_SIZE,
        cet != 0,
    ));
    let phdrs = segments.program_headers(&new);

    // The new code at its place, then the sections: the new contents', then
    // the non-allocated ones (among them the record of every site and the
    // `.symtab` naming the new code).
    let code = new_code.encode(parts, placements, text)?;
    let sites_json = serde_json::to_vec_pretty(&code.records)?;
    sections::add_new(
        &mut sections,
        &new,
        text,
        tls,
        tables.encoded.verneed_count,
        tables.syms.imports.len(),
    );
    let debug = debug::carry(parts, placements, finding);
    let non_alloc = sections::add_non_alloc(
        &mut sections,
        &debug.sections,
        new.alloc_end,
        sites_json.len() as u64,
        |sections| symtab_bytes(parts, placements, sections, &tables.syms, &code.symbols),
    );
    Ok(Layout {
        parts,
        places: Places {
            inputs,
            text,
            tls,
            new,
            phdrs,
        },
        tables,
        contents: Contents {
            code,
            sites_json,
            eh,
            cet,
        },
        file: FileSections {
            sections,
            non_alloc,
            debug,
        },
    })
}

/// The dynamic tables: the imports the inputs' relocations need, the
/// runtime's entry points and the unique definitions as exports, their
/// strings and versions, the initializers, the fused table.
fn tables(parts: &[Part], placements: &[Placement], sections: &[OutSection]) -> Result<Tables> {
    let mut syms = DynSymtab::default();
    let mut rewritten = Rewritten::default();
    let shared = dynamic::shared_unique(parts);
    for (i, (p, pl)) in parts.iter().zip(placements).enumerate() {
        let own_copy: std::collections::HashSet<&str> = shared
            .iter()
            .filter(|(_, _, other)| *other == i)
            .map(|(name, _, _)| name.as_str())
            .collect();
        relocs::rewrite(
            p,
            pl.disp,
            pl.tls_offset.unwrap_or(0),
            &own_copy,
            &mut syms,
            &mut rewritten,
        )?;
    }
    dynamic::add_exports(&mut syms, parts, placements, sections)?;
    let mut dynstr = StrTab::new();
    let dynamic = Dynamic::new(parts, &mut dynstr);
    let encoded = syms.encode(&mut dynstr);
    let dynamic = dynamic.with_verneed(encoded.verneed_count);
    Ok(Tables {
        syms,
        relocs: rewritten,
        dynstr,
        encoded,
        dynamic,
        init_fini: InitFini::new(parts, placements),
        table: FusedTable::new(parts, placements),
    })
}

/// The sizes of the new segments' contents; `phdrs` sizes the program
/// headers, with a property note or without.
fn sizes(
    t: &Tables,
    eh: &EhFrameLayout,
    tls: TlsBlock,
    phdrs: impl Fn(bool) -> u64,
    property: bool,
) -> Sizes {
    let rela_count = t.relocs.relas.len()
        + t.init_fini.init.len()
        + t.init_fini.fini.len()
        + t.table.relocation_count();
    Sizes {
        phdrs: phdrs(property),
        property,
        gnu_hash: t.encoded.gnu_hash.len() as u64,
        dynsym: t.encoded.dynsym.len() as u64,
        dynstr: t.dynstr.bytes.len() as u64,
        versym: t.encoded.versym.len() as u64,
        verneed: t.encoded.verneed.len() as u64,
        rela: rela_count as u64 * 24,
        eh_frame_hdr: eh.hdr_size(),
        eh_frame: eh.eh_frame_size(),
        dynamic: t.dynamic.size(),
        init_array: t.init_fini.init.len() as u64 * 8,
        fini_array: t.init_fini.fini.len() as u64 * 8,
        table: t.table.size(),
        tls,
    }
}

/// Encode the fused image laid out in `l`.
pub fn write(l: Layout) -> Result<(Output, FusedFile)> {
    let Layout {
        parts,
        places,
        mut tables,
        contents,
        file,
    } = l;
    let (relas, relative_count) = relocations(&mut tables, &places.new);
    // GNU extensions in the dynamic tables (unique symbols, IFUNCs) mark the
    // file as GNU ABI, as the link editor does; readers interpret them then.
    let gnu =
        !tables.syms.unique.is_empty() || relas.iter().any(|r| r.r_type == elf::R_X86_64_IRELATIVE);
    let osabi = if gnu {
        elf::ELFOSABI_GNU
    } else {
        elf::ELFOSABI_SYSV
    };

    // What analysis read of the inputs leaves memory (the kernel copies
    // them; what is read again comes back from the file).
    for p in parts {
        p.data.release(0..p.data.len());
    }
    let placements = &places.inputs.placements;
    let mut out = FusedFile::new(file.non_alloc.total, input_copies(parts, placements));
    let Contents {
        code,
        sites_json,
        eh,
        cet,
    } = contents;
    out.put(file.non_alloc.sites.0, sites_json);
    let patches = tables
        .relocs
        .patches
        .iter()
        .map(|(v, w)| (*v, w.to_le_bytes().to_vec()));
    for (vaddr, bytes) in code.site_patches.into_iter().chain(patches) {
        let off = segments::output_range(&places.phdrs, vaddr, bytes.len() as u64)
            .ok_or_else(|| anyhow::anyhow!("internal error: patch outside the file"))?;
        out.put(off as u64, bytes);
    }
    if let Some(t) = places.text {
        out.put(t.offset.0, code.bytes);
    }
    let imports = tables.syms.imports.len();
    let relocations = relas.len();
    put_new_segments(
        &mut out,
        parts,
        &places,
        tables,
        (relas, relative_count),
        eh,
        cet,
    )?;
    let summary = put_file_sections(&mut out, file, &places, osabi);
    let output = Output {
        len: out.len(),
        build_id: places.new.build_id.offset.0 + header::BUILD_ID_HASH_AT,
        placements: places.inputs.placements,
        relocations,
        imports,
        sites: code.records,
        debug: summary,
        text: places.text,
        code_symbols: code.symbols,
    };
    Ok((output, out))
}

/// The new segments' contents into `out`.
fn put_new_segments(
    out: &mut FusedFile,
    parts: &[Part],
    places: &Places,
    t: Tables,
    (relas, relative_count): (Vec<Rela>, usize),
    eh: EhFrameLayout,
    cet: u32,
) -> Result<()> {
    let new = &places.new;
    let (eh_bytes, hdr_bytes) = eh.emit(new.eh_frame.vaddr.0, new.eh_frame_hdr.vaddr.0)?;
    let dynamic = t.dynamic.entries(new, relative_count);
    out.put(new.phdr.offset.0, segments::encode(&places.phdrs));
    out.put(new.build_id.offset.0, header::build_id_note());
    if let Some(s) = new.property {
        out.put(s.offset.0, header::property_note(cet));
    }
    out.put(new.gnu_hash.offset.0, t.encoded.gnu_hash);
    out.put(new.dynsym.offset.0, t.encoded.dynsym);
    out.put(new.dynstr.offset.0, t.dynstr.bytes);
    out.put(new.versym.offset.0, t.encoded.versym);
    out.put(new.verneed.offset.0, t.encoded.verneed);
    out.put(new.rela.offset.0, relocs::encode(&relas));
    out.put(new.eh_frame_hdr.offset.0, hdr_bytes);
    out.put(new.eh_frame.offset.0, eh_bytes);
    out.put(new.dynamic.offset.0, dynamic::encode(&dynamic));
    let words = |v: &[u64]| v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    out.put(new.init_array.offset.0, words(&t.init_fini.init));
    out.put(new.fini_array.offset.0, words(&t.init_fini.fini));
    out.put(new.table.offset.0, t.table.bytes);
    let placements = &places.inputs.placements;
    out.put(
        new.tdata.offset.0,
        tls_image(parts, placements, places.tls)?,
    );
    Ok(())
}

/// The non-allocated sections, the section headers and the ELF header into
/// `out`; what the debug info holds.
fn put_file_sections<'a>(
    out: &mut FusedFile<'a>,
    file: FileSections<'a>,
    places: &Places,
    osabi: u8,
) -> DebugSummary {
    let FileSections {
        sections,
        non_alloc,
        debug,
    } = file;
    for (d, at) in debug.sections.into_iter().zip(&non_alloc.debug) {
        let mut at = at.0;
        for piece in d.pieces {
            let n = piece.len() as u64;
            out.put(at, piece);
            at += n;
        }
    }
    out.put(non_alloc.symtab.0, non_alloc.symtab_bytes);
    out.put(non_alloc.strtab.0, non_alloc.strtab_bytes);
    out.put(
        sections[non_alloc.shstrndx].offset.0,
        non_alloc.shstrtab.bytes,
    );
    out.put(
        non_alloc.shoff.0,
        sections::encode(&sections, &non_alloc.name_offsets),
    );
    out.put(
        0,
        header::elf_header(
            places.new.phdr.offset,
            places.phdrs.len(),
            non_alloc.shoff,
            sections.len(),
            non_alloc.shstrndx,
            osabi,
        ),
    );
    debug.summary
}

/// The output's relocations, sorted, and how many are relative: the
/// inputs' (completed now that the fused table is placed), the initializer
/// arrays', the fused table's.
fn relocations(t: &mut Tables, new: &NewSegments) -> (Vec<Rela>, usize) {
    t.relocs.resolve(new.table.vaddr.0, &t.syms);
    let mut relas = std::mem::take(&mut t.relocs.relas);
    let words_at = |slot: Slot, v: &[u64]| {
        (0..v.len())
            .map(move |i| slot.vaddr + 8 * i as u64)
            .zip(v.to_vec())
    };
    for (at, v) in words_at(new.init_array, &t.init_fini.init) {
        relas.push(Rela::relative(at.0, v));
    }
    for (at, v) in words_at(new.fini_array, &t.init_fini.fini) {
        relas.push(Rela::relative(at.0, v));
    }
    relas.extend(t.table.relas(new.table.vaddr));
    let relative_count = relocs::sort(&mut relas);
    (relas, relative_count)
}

/// The combined TLS initialization image.
fn tls_image(parts: &[Part], placements: &[Placement], tls: TlsBlock) -> Result<Vec<u8>> {
    let mut tdata = vec![0u8; tls.filesz as usize];
    for (p, pl) in parts.iter().zip(placements) {
        if let (Some(t), Some(x)) = (p.tls, pl.tls_offset) {
            if t.filesz > 0 {
                let src = p
                    .bytes_at(t.vaddr, t.filesz)
                    .ok_or_else(|| InputError::new(&p.path, "TLS image outside the file"))?;
                tdata[x as usize..(x + t.filesz) as usize].copy_from_slice(src);
            }
        }
    }
    Ok(tdata)
}
