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
use super::header;
use super::input::Part;
use super::layout::{self, Inputs, NewSegments, Placement, Sizes, Slot, TlsBlock};
use super::relocs::{self, Rela, Rewritten};
use super::sections::{self, NonAlloc, OutSection};
use super::segments::{self, Phdr, Segments, PHDR_SIZE};
use super::symtab::symtab_bytes;
use super::table::FusedTable;
use super::text::{Code, NewCode};
use super::unwind;
use crate::error::InputError;
use crate::lower::{SitePlan, SiteRecord};

/// What `write` produced.
pub struct Output {
    pub bytes: Vec<u8>,
    pub placements: Vec<Placement>,
    pub relocations: usize,
    pub imports: usize,
    /// Every RPC site, with its tier, at its fused address.
    pub sites: Vec<SiteRecord>,
    /// What the debug info holds.
    pub debug: DebugSummary,
}

/// Every input and every new content of the fused image, sized and placed.
pub struct Layout<'a> {
    parts: &'a [Part],
    inputs: Inputs,
    text: Option<Slot>,
    code: Code,
    sites_json: Vec<u8>,
    tls: TlsBlock,
    syms: DynSymtab,
    relocs: Rewritten,
    dynstr: StrTab,
    encoded: Encoded,
    dynamic: Dynamic,
    init_fini: InitFini,
    eh: EhFrameLayout,
    table: FusedTable,
    cet: u32,
    new: NewSegments,
    sections: Vec<OutSection>,
    phdrs: Vec<Phdr>,
    non_alloc: NonAlloc,
    debug: Carried<'a>,
}

/// Size and place the fused image of `parts` (root first, runtime last),
/// whose RPC sites `plans` (one list per part) lower.
pub fn layout<'a>(
    parts: &'a [Part],
    plans: &[Vec<SitePlan>],
    finding: debug::Finding,
) -> Result<Layout<'a>> {
    // Inputs as displaced blocks, root at its own addresses; the new code
    // after them; the inputs' TLS blocks in one.
    let mut inputs = layout::place_inputs(parts)?;
    let new_code = NewCode::new(plans);
    let text = inputs.place_text(new_code.size());
    let tls = inputs.place_tls(parts);
    let placements = &inputs.placements;

    // Contents whose sizes do not depend on where the new segments go.
    // Dynamic symbols: the imports the inputs' relocations need, and the
    // runtime's entry points and unique definitions as exports.
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
    let mut sections = sections::input_sections(parts, placements);
    dynamic::add_exports(&mut syms, parts, placements, &sections)?;
    let mut dynstr = StrTab::new();
    let dynamic = Dynamic::new(parts, &mut dynstr);
    let encoded = syms.encode(&mut dynstr);
    let dynamic = dynamic.with_verneed(encoded.verneed_count);
    let init_fini = InitFini::new(parts, placements);
    let eh = unwind::collect(parts, placements, text)?;
    let cet = parts.iter().map(|p| p.cet_bits).fold(3, |a, b| a & b);
    let table = FusedTable::new(parts, placements);
    let rela_count = rewritten.relas.len()
        + init_fini.init.len()
        + init_fini.fini.len()
        + table.relocation_count();
    let segments = Segments {
        parts,
        inputs: &inputs,
        text,
        tls,
        exec_stack: parts.iter().any(|p| p.exec_stack),
    };

    // The new segments.
    let new = inputs.place_new(&Sizes {
        phdrs: segments.count(cet != 0) as u64 * PHDR_SIZE,
        property: cet != 0,
        gnu_hash: encoded.gnu_hash.len() as u64,
        dynsym: encoded.dynsym.len() as u64,
        dynstr: dynstr.bytes.len() as u64,
        versym: encoded.versym.len() as u64,
        verneed: encoded.verneed.len() as u64,
        rela: rela_count as u64 * 24,
        eh_frame_hdr: eh.hdr_size(),
        eh_frame: eh.eh_frame_size(),
        dynamic: dynamic.size(),
        init_array: init_fini.init.len() as u64 * 8,
        fini_array: init_fini.fini.len() as u64 * 8,
        table: table.size(),
        tls,
    });
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
        encoded.verneed_count,
        syms.imports.len(),
    );
    let debug = debug::carry(parts, placements, finding);
    let non_alloc = sections::add_non_alloc(
        &mut sections,
        &debug.sections,
        new.alloc_end,
        sites_json.len() as u64,
        |sections| symtab_bytes(parts, placements, sections, &syms, &code.symbols),
    );
    Ok(Layout {
        parts,
        inputs,
        text,
        code,
        sites_json,
        tls,
        syms,
        relocs: rewritten,
        dynstr,
        encoded,
        dynamic,
        init_fini,
        eh,
        table,
        cet,
        new,
        sections,
        phdrs,
        non_alloc,
        debug,
    })
}

/// Encode the fused image laid out in `l`.
pub fn write(l: Layout) -> Result<Output> {
    let Layout {
        parts,
        inputs,
        text,
        code,
        sites_json,
        tls,
        syms,
        relocs: mut rewritten,
        dynstr,
        encoded,
        dynamic,
        init_fini,
        eh,
        table,
        cet,
        new,
        sections,
        phdrs,
        non_alloc,
        debug,
    } = l;
    let placements = &inputs.placements;

    let (relas, relative_count) = relocations(&mut rewritten, &syms, &new, &init_fini, &table);
    // GNU extensions in the dynamic tables (unique symbols, IFUNCs) mark the
    // file as GNU ABI, as the link editor does; readers interpret them then.
    let osabi =
        if !syms.unique.is_empty() || relas.iter().any(|r| r.r_type == elf::R_X86_64_IRELATIVE) {
            elf::ELFOSABI_GNU
        } else {
            elf::ELFOSABI_SYSV
        };
    let (eh_bytes, hdr_bytes) = eh.emit(new.eh_frame.vaddr.0, new.eh_frame_hdr.vaddr.0)?;
    let dynamic = dynamic.entries(&new, relative_count);

    // Bytes: the inputs, with their lowered sites patched, and the new code.
    // A mapped input's pages leave memory as they are copied, and so do
    // those read before (what is read again comes back from the file).
    let mut out = vec![0u8; non_alloc.total as usize];
    for (p, pl) in parts.iter().zip(placements) {
        p.data.release(0..p.data.len());
        for (l, off) in p.pieces.iter().zip(&pl.load_offsets) {
            p.data.copy_out(
                l.offset as usize,
                &mut out[off.at()..off.at() + l.filesz as usize],
            );
        }
    }
    for (vaddr, bytes) in &code.site_patches {
        let off = segments::output_range(&phdrs, *vaddr, bytes.len() as u64)
            .ok_or_else(|| anyhow::anyhow!("internal error: site outside the file"))?;
        out[off..off + bytes.len()].copy_from_slice(bytes);
    }
    if let Some(t) = text {
        out[t.offset.at()..t.offset.at() + t.size as usize].copy_from_slice(&code.bytes);
    }
    let sites = non_alloc.sites.at();
    out[sites..sites + sites_json.len()].copy_from_slice(&sites_json);
    for (vaddr, value) in &rewritten.patches {
        let off = segments::output_range(&phdrs, *vaddr, 8)
            .ok_or_else(|| anyhow::anyhow!("internal error: patch outside the file"))?;
        out[off..off + 8].copy_from_slice(&value.to_le_bytes());
    }

    // The new segments.
    let mut put = |slot: Slot, bytes: &[u8]| {
        out[slot.offset.at()..slot.offset.at() + bytes.len()].copy_from_slice(bytes);
    };
    put(new.phdr, &segments::encode(&phdrs));
    put(new.build_id, &header::build_id_note());
    if let Some(s) = new.property {
        put(s, &header::property_note(cet));
    }
    put(new.gnu_hash, &encoded.gnu_hash);
    put(new.dynsym, &encoded.dynsym);
    put(new.dynstr, &dynstr.bytes);
    put(new.versym, &encoded.versym);
    put(new.verneed, &encoded.verneed);
    put(new.rela, &relocs::encode(&relas));
    put(new.eh_frame_hdr, &hdr_bytes);
    put(new.eh_frame, &eh_bytes);
    put(new.dynamic, &dynamic::encode(&dynamic));
    let words = |v: &[u64]| v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    put(new.init_array, &words(&init_fini.init));
    put(new.fini_array, &words(&init_fini.fini));
    put(new.table, &table.bytes);
    put(new.tdata, &tls_image(parts, placements, tls)?);

    // Non-allocated sections, section headers, ELF header, build-id.
    for (d, at) in debug.sections.iter().zip(&non_alloc.debug) {
        let mut at = at.at();
        for piece in &d.pieces {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
    }
    for (at, bytes) in [
        (non_alloc.symtab, &non_alloc.symtab_bytes),
        (non_alloc.strtab, &non_alloc.strtab_bytes),
        (
            sections[non_alloc.shstrndx].offset,
            &non_alloc.shstrtab.bytes,
        ),
    ] {
        out[at.at()..at.at() + bytes.len()].copy_from_slice(bytes);
    }
    let shoff = non_alloc.shoff.at();
    out[shoff..].copy_from_slice(&sections::encode(&sections, &non_alloc.name_offsets));
    header::write_elf_header(
        &mut out,
        new.phdr.offset,
        phdrs.len(),
        non_alloc.shoff,
        sections.len(),
        non_alloc.shstrndx,
        osabi,
    );
    header::fill_build_id(&mut out, new.build_id.offset);

    Ok(Output {
        bytes: out,
        placements: inputs.placements,
        relocations: relas.len(),
        imports: syms.imports.len(),
        sites: code.records,
        debug: debug.summary,
    })
}

/// The output's relocations, sorted, and how many are relative: the
/// inputs' (completed now that the fused table is placed), the initializer
/// arrays', the fused table's.
fn relocations(
    rewritten: &mut Rewritten,
    syms: &DynSymtab,
    new: &NewSegments,
    init_fini: &InitFini,
    table: &FusedTable,
) -> (Vec<Rela>, usize) {
    rewritten.resolve(new.table.vaddr.0, syms);
    let mut relas = std::mem::take(&mut rewritten.relas);
    let words_at = |slot: Slot, v: &[u64]| {
        (0..v.len())
            .map(move |i| slot.vaddr + 8 * i as u64)
            .zip(v.to_vec())
    };
    for (at, v) in words_at(new.init_array, &init_fini.init) {
        relas.push(Rela::relative(at.0, v));
    }
    for (at, v) in words_at(new.fini_array, &init_fini.fini) {
        relas.push(Rela::relative(at.0, v));
    }
    relas.extend(table.relas(new.table.vaddr));
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
