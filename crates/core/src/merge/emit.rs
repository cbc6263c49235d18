//! Laying out and writing the fused image: every input's loadable segments
//! copied as blocks at their displaced addresses, then one new read-only
//! segment (program headers, notes, dynamic symbols, relocations, unwind
//! tables) and one new writable segment (`.dynamic`, initializer arrays,
//! combined TLS image, the runtime's fused table).

use anyhow::{bail, Result};
use object::elf;

use super::dynsym::{DynSymtab, Export, StrTab};
use super::eh_frame::{EhFrameInput, EhFrameLayout};
use super::input::{Part, Role};
use super::relocs::{self, Rela, Rewritten};
use super::runtime;
use crate::lower::{self, Dest, SitePlan, SiteRecord};

use super::dynamic::initializers;
use super::header::{build_id, write_elf_header};
use super::layout::{
    align_up, congruent, file_offset, output_range, Cursor, OutSection, Phdr, Placement, Slot,
};
use super::symtab::symtab_bytes;

/// What `write` produced.
pub struct Output {
    pub bytes: Vec<u8>,
    pub placements: Vec<Placement>,
    pub relocations: usize,
    pub imports: usize,
    /// Every RPC site, with its tier, at its fused address.
    pub sites: Vec<SiteRecord>,
}

const DYN_ENTRY: u64 = 16;

/// Lay out and encode the fused image of `parts` (root first, runtime last),
/// rewriting the RPC sites `plans` (one list per part) lowers.
pub fn write(parts: &[Part], plans: &[Vec<SitePlan>]) -> Result<Output> {
    let page = parts
        .iter()
        .flat_map(|p| p.loads.iter().map(|l| l.align))
        .max()
        .unwrap_or(0x1000)
        .max(0x1000);

    // 1. Inputs as displaced blocks, root at its own addresses.
    let mut placements = Vec::new();
    let mut vcur = 0u64;
    let mut fcur = 0u64;
    for (i, p) in parts.iter().enumerate() {
        let (lo, hi) = p.span();
        let disp = if i == 0 {
            if lo != 0 {
                bail!(
                    "{}: root image does not start at address 0",
                    p.path.display()
                );
            }
            0
        } else {
            align_up(vcur, page) - lo - lo % page
        };
        let mut load_offsets = Vec::new();
        for (j, l) in p.pieces.iter().enumerate() {
            let off = if i == 0 && j == 0 {
                l.offset
            } else {
                congruent(fcur, l.vaddr + disp, page)
            };
            load_offsets.push(off);
            fcur = fcur.max(off + l.filesz);
        }
        vcur = hi + disp;
        placements.push(Placement {
            disp,
            load_offsets,
            tls_offset: None,
        });
    }

    // 1b. New code: one thunk per lowered site, then the entry stubs of the
    //     images tier-2 sites call.
    let runtime_index = parts.len() - 1;
    let rt_disp = placements[runtime_index].disp;
    let rt_symbol = |name: &str| {
        parts[runtime_index]
            .symbols
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value + rt_disp)
            .ok_or_else(|| anyhow::anyhow!("fusion runtime lacks {name}"))
    };
    let mut stub_images: Vec<usize> = plans
        .iter()
        .flatten()
        .filter_map(|p| match p.lowered.as_ref()?.dest {
            Dest::Image(k) => Some(k),
            Dest::Dispatch => None,
        })
        .collect();
    stub_images.sort_unstable();
    stub_images.dedup();
    let thunks_size: u64 = plans
        .iter()
        .flatten()
        .filter_map(|p| p.lowered.as_ref())
        .map(|l| align_up(l.thunk_size, 16))
        .sum();
    let text_size = thunks_size + lower::STUB_SIZE * stub_images.len() as u64;
    let text = (text_size > 0).then(|| {
        let offset = align_up(fcur, 16);
        let slot = Slot {
            vaddr: align_up(vcur, page) + offset % page,
            offset,
            size: text_size,
        };
        vcur = slot.vaddr + text_size;
        fcur = offset + text_size;
        slot
    });

    // 2. Combined TLS block.
    let mut tls_size = 0u64;
    let mut tls_align = 1u64;
    for (i, p) in parts.iter().enumerate() {
        if let Some(t) = p.tls {
            let x = align_up(tls_size, t.align);
            placements[i].tls_offset = Some(x);
            tls_size = x + t.memsz;
            tls_align = tls_align.max(t.align);
        }
    }
    let tls_filesz = parts
        .iter()
        .zip(&placements)
        .filter_map(|(p, pl)| Some(pl.tls_offset? + p.tls?.filesz))
        .max()
        .unwrap_or(0);

    // 3. Dynamic symbols: imports found by a first rewriting pass, exports
    //    are the runtime's entry points.
    let mut syms = DynSymtab::default();
    let mut probe = Rewritten::default();
    for (p, pl) in parts.iter().zip(&placements) {
        relocs::rewrite(
            p,
            pl.disp,
            pl.tls_offset.unwrap_or(0),
            0,
            &mut syms,
            &mut probe,
        )?;
    }
    let rt = &parts[runtime_index];

    // Section headers of the copied images (indices are final: new
    // sections follow them).
    let mut sections = vec![OutSection::default()];
    for (p, pl) in parts.iter().zip(&placements) {
        for s in &p.sections {
            let name = if p.role == Role::Root {
                s.name.clone()
            } else {
                format!("{}.{}", s.name, p.name)
            };
            let addr = s.addr + pl.disp;
            sections.push(OutSection {
                name,
                sh_type: s.sh_type,
                flags: s.flags,
                addr,
                offset: file_offset(p, pl, s.addr),
                size: s.size,
                align: s.align,
                entsize: s.entsize,
                ..Default::default()
            });
        }
    }
    let section_of = |addr: u64| -> u16 {
        sections
            .iter()
            .position(|s| {
                s.flags & u64::from(elf::SHF_ALLOC) != 0
                    && addr >= s.addr
                    && addr < s.addr + s.size.max(1)
            })
            .unwrap_or(0) as u16
    };
    for (i, name) in crate::elf::ENTRY_POINTS.iter().enumerate() {
        let s = rt
            .dynsyms
            .iter()
            .find(|s| s.defined && s.name == *name)
            .ok_or_else(|| anyhow::anyhow!("fusion runtime lacks {name}"))?;
        let _ = i;
        syms.exports.push(Export {
            name: name.to_string(),
            value: s.value + rt_disp,
            size: s.size,
            shndx: section_of(s.value + rt_disp),
            info: (elf::STB_GLOBAL << 4) | elf::STT_FUNC,
        });
    }
    // STB_GNU_UNIQUE definitions stay exported: the dynamic linker binds
    // every reference to such a name, in any object of the process, to one
    // definition (C++ inline statics and template statics shared with
    // libstdc++ or Boost rely on it). The first image defining a name
    // exports it; every image's references to it stay symbolic.
    for (p, pl) in parts.iter().zip(&placements) {
        for s in p.dynsyms.iter().filter(|s| s.is_unique_definition()) {
            if syms.exports.iter().any(|e| e.name == s.name) {
                continue;
            }
            syms.exports.push(Export {
                name: s.name.clone(),
                value: s.value + pl.disp,
                size: s.size,
                shndx: section_of(s.value + pl.disp),
                info: s.info,
            });
        }
    }
    syms.sort_exports();
    syms.index_unique();

    // Strings of the dynamic section.
    let mut dynstr = StrTab::new();
    let mut needed: Vec<String> = Vec::new();
    for p in parts {
        for n in &p.needed {
            if !needed.contains(n) {
                needed.push(n.clone());
            }
        }
    }
    let mut runpaths: Vec<String> = Vec::new();
    for p in parts {
        if let Some(r) = &p.runpath {
            for d in r.split(':') {
                if !runpaths.iter().any(|x| x == d) {
                    runpaths.push(d.to_string());
                }
            }
        }
    }
    let needed_off: Vec<u32> = needed.iter().map(|n| dynstr.add(n)).collect();
    let soname_off = parts[0].soname.as_ref().map(|s| dynstr.add(s));
    let runpath_off = (!runpaths.is_empty()).then(|| dynstr.add(&runpaths.join(":")));
    let encoded = syms.encode(&mut dynstr);

    // Initializers: runtime, callees deepest first, root; finalizers the
    // reverse (the loader runs a fini array from its end).
    let mut init_entries: Vec<u64> = Vec::new();
    let mut init_order: Vec<usize> = vec![runtime_index];
    init_order.extend((1..runtime_index).rev());
    init_order.push(0);
    for &i in &init_order {
        init_entries.extend(initializers(&parts[i], placements[i].disp, true));
    }
    let mut fini_entries: Vec<u64> = Vec::new();
    for &i in &init_order {
        fini_entries.extend(initializers(&parts[i], placements[i].disp, false));
    }

    // Unwind tables of every image in one .eh_frame.
    let eh_inputs: Vec<EhFrameInput> = parts
        .iter()
        .zip(&placements)
        .filter_map(|(p, pl)| {
            let (addr, size) = p.eh_frame?;
            Some(EhFrameInput {
                bytes: p.bytes_at(addr, size)?,
                vaddr: addr + pl.disp,
            })
        })
        .collect();
    let unwind = text.map(|t| lower::unwind_blob(t.vaddr, t.size));
    let mut eh_inputs = eh_inputs;
    if let Some(b) = &unwind {
        eh_inputs.push(EhFrameInput { bytes: b, vaddr: 0 });
    }
    // A damaged table is the fault of its input: name it.
    for (p, pl) in parts.iter().zip(&placements) {
        let Some((addr, size)) = p.eh_frame else {
            continue;
        };
        let Some(bytes) = p.bytes_at(addr, size) else {
            continue;
        };
        let one = [EhFrameInput {
            bytes,
            vaddr: addr + pl.disp,
        }];
        let layout = EhFrameLayout::parse(&one).map_err(|e| {
            let why = format!("{e:#}").replace(".eh_frame input 0 at", ".eh_frame at");
            crate::error::InputError::new(&p.path, format!("malformed {why}"))
        })?;
        // Every FDE describes code of its own image.
        let (lo, hi) = p.span();
        let (lo, hi) = (lo + pl.disp, hi + pl.disp);
        for (b, e) in layout.fde_ranges(addr + pl.disp) {
            if e != b && (b < lo || e < b || e > hi) {
                return Err(crate::error::InputError::new(
                    &p.path,
                    format!(
                        "malformed .eh_frame: an FDE covers {:#x}..{:#x}, outside the image",
                        b.wrapping_sub(pl.disp),
                        e.wrapping_sub(pl.disp)
                    ),
                )
                .into());
            }
        }
    }
    let eh = EhFrameLayout::parse(&eh_inputs)?;

    let cet = parts.iter().map(|p| p.cet_bits).fold(3, |a, b| a & b);
    let static_tls = parts
        .iter()
        .any(|p| p.static_tls || p.relocs.iter().any(|r| r.r_type == elf::R_X86_64_TPOFF64));
    let relro = parts[0].relro;
    let exec_stack = parts.iter().any(|p| p.exec_stack);

    // Fused table: header, entries, names.
    let n = parts.len() - 1;
    let names_at = runtime::TABLE_HEADER_SIZE + runtime::IMAGE_ENTRY_SIZE * n as u64;
    let names_size: u64 = parts[..n].iter().map(|p| p.name.len() as u64 + 1).sum();
    let table_size = names_at + names_size;

    // Counts that decide sizes.
    let table_relocs: usize = parts[..n]
        .iter()
        .map(|p| {
            5 + if p.role == Role::Callee && p.relro.is_some() {
                2
            } else {
                0
            }
        })
        .sum();
    let rela_count = probe.relas.len() + init_entries.len() + fini_entries.len() + table_relocs;
    let mut phnum = 1 + parts.iter().map(|p| p.pieces.len()).sum::<usize>() + 2 + 1 + 1 + 1 + 1;
    if cet != 0 {
        phnum += 2;
    }
    if text.is_some() {
        phnum += 1;
    }
    if tls_size > 0 {
        phnum += 1;
    }
    if relro.is_some() {
        phnum += 1;
    }
    let mut dyn_count = needed.len() + 17;
    dyn_count += usize::from(soname_off.is_some()) + usize::from(runpath_off.is_some());
    if encoded.verneed_count > 0 {
        dyn_count += 2;
    }

    // 4. New read-only segment.
    // New segments start on a new page in memory but right after the
    // previous bytes in the file (offset and address stay congruent).
    let fcur = align_up(fcur, 8);
    let r_vaddr = align_up(vcur, page) + fcur % page;
    let mut cur = Cursor {
        vaddr: r_vaddr,
        offset: fcur,
    };
    let r_start = Slot {
        vaddr: cur.vaddr,
        offset: cur.offset,
        size: 0,
    };
    let phdr_slot = cur.place(phnum as u64 * 56, 8);
    let build_id_slot = cur.place(36, 4);
    let prop_slot = if cet != 0 {
        Some(cur.place(32, 8))
    } else {
        None
    };
    let hash_slot = cur.place(encoded.gnu_hash.len() as u64, 8);
    let dynsym_slot = cur.place(encoded.dynsym.len() as u64, 8);
    let dynstr_slot = cur.place(dynstr.bytes.len() as u64, 1);
    let versym_slot = cur.place(encoded.versym.len() as u64, 2);
    let verneed_slot = cur.place(encoded.verneed.len() as u64, 4);
    let rela_slot = cur.place(rela_count as u64 * 24, 8);
    let hdr_slot = cur.place(eh.hdr_size(), 4);
    let eh_slot = cur.place(eh.eh_frame_size(), 8);
    let r_end = cur.vaddr;

    // 5. New writable segment.
    let rw_vaddr = align_up(r_end, page) + cur.offset % page;
    let mut cur = Cursor {
        vaddr: rw_vaddr,
        offset: cur.offset,
    };
    let rw_start = Slot {
        vaddr: cur.vaddr,
        offset: cur.offset,
        size: 0,
    };
    let dynamic_slot = cur.place(dyn_count as u64 * DYN_ENTRY, 8);
    let init_slot = cur.place(init_entries.len() as u64 * 8, 8);
    let fini_slot = cur.place(fini_entries.len() as u64 * 8, 8);
    let table_slot = cur.place(table_size, 8);
    let tdata_slot = cur.place(tls_filesz, tls_align);
    let rw_end = cur.vaddr;
    let alloc_end = cur.offset;

    // 6. Relocations for real.
    let mut rw = Rewritten::default();
    let mut syms2 = DynSymtab::default();
    syms2.unique = syms.unique.clone();
    for (p, pl) in parts.iter().zip(&placements) {
        relocs::rewrite(
            p,
            pl.disp,
            pl.tls_offset.unwrap_or(0),
            table_slot.vaddr,
            &mut syms2,
            &mut rw,
        )?;
    }
    debug_assert_eq!(syms2.imports.len(), syms.imports.len());
    let mut relas = rw.relas;
    for (i, v) in init_entries.iter().enumerate() {
        relas.push(Rela::relative(init_slot.vaddr + 8 * i as u64, *v));
    }
    for (i, v) in fini_entries.iter().enumerate() {
        relas.push(Rela::relative(fini_slot.vaddr + 8 * i as u64, *v));
    }
    let mut table = vec![0u8; table_size as usize];
    table[..8].copy_from_slice(&runtime::TABLE_MAGIC.to_le_bytes());
    table[8..16].copy_from_slice(&(n as u64).to_le_bytes());
    let mut name_cursor = names_at;
    for (k, (p, pl)) in parts[..n].iter().zip(&placements).enumerate() {
        let entry =
            table_slot.vaddr + runtime::TABLE_HEADER_SIZE + runtime::IMAGE_ENTRY_SIZE * k as u64;
        let name_addr = table_slot.vaddr + name_cursor;
        if p.reentrant {
            let f = (runtime::TABLE_HEADER_SIZE
                + runtime::IMAGE_ENTRY_SIZE * k as u64
                + runtime::ENTRY_FLAGS) as usize;
            table[f..f + 8].copy_from_slice(&runtime::FLAG_REENTRANT.to_le_bytes());
        }
        let at = name_cursor as usize;
        table[at..at + p.name.len()].copy_from_slice(p.name.as_bytes());
        name_cursor += p.name.len() as u64 + 1;
        relas.push(Rela::relative(entry + runtime::ENTRY_NAME, name_addr));
        for (f, ep) in [
            runtime::ENTRY_INIT,
            runtime::ENTRY_CREATE,
            runtime::ENTRY_DESTROY,
            runtime::ENTRY_CALL,
        ]
        .iter()
        .zip(p.entry)
        {
            relas.push(Rela::relative(entry + f, ep + pl.disp));
        }
        if let (Role::Callee, Some((s, e))) = (p.role, p.relro) {
            relas.push(Rela::relative(
                entry + runtime::ENTRY_RELRO_START,
                s + pl.disp,
            ));
            relas.push(Rela::relative(
                entry + runtime::ENTRY_RELRO_END,
                e + pl.disp,
            ));
        }
    }
    if relas.len() != rela_count {
        bail!("internal error: relocation count changed between passes");
    }
    let relative_count = relocs::sort(&mut relas);
    // GNU extensions in the dynamic tables (unique symbols, IFUNCs) mark the
    // file as GNU ABI, as the link editor does; readers interpret them then.
    let osabi =
        if !syms.unique.is_empty() || relas.iter().any(|r| r.r_type == elf::R_X86_64_IRELATIVE) {
            elf::ELFOSABI_GNU
        } else {
            elf::ELFOSABI_SYSV
        };

    // 7. Encode the new contents: lowered sites first.
    let mut code = Vec::new();
    let mut site_patches = Vec::new();
    let mut code_symbols: Vec<(String, u64, u64)> = Vec::new();
    let mut records = Vec::new();
    let dispatch = if text.is_some() {
        Some((
            rt_symbol("faasfuse_rt_dispatch")?,
            rt_symbol("faasfuse_rt_call_image")?,
        ))
    } else {
        None
    };
    let text_start = text.map_or(0, |t| t.vaddr);
    let mut at = text_start;
    let stub_at = |k: usize| {
        let i = stub_images.iter().position(|&x| x == k).unwrap_or(0) as u64;
        text_start + thunks_size + lower::STUB_SIZE * i
    };
    for ((p, pl), list) in parts.iter().zip(&placements).zip(plans) {
        for plan in list {
            let mut thunk = None;
            if let (Some(l), Some((dispatch, _))) = (&plan.lowered, dispatch) {
                let dest = match l.dest {
                    Dest::Dispatch => dispatch,
                    Dest::Image(k) => stub_at(k),
                };
                let mut b = lower::thunk_bytes(l, pl.disp, at, dispatch, dest)?;
                if b.len() as u64 != l.thunk_size {
                    bail!("internal error: thunk size changed with its address");
                }
                b.resize(align_up(l.thunk_size, 16) as usize, 0xcc);
                code.extend_from_slice(&b);
                site_patches.push(lower::patch_site(l, pl.disp, at)?);
                let to = match l.dest {
                    Dest::Dispatch => "dispatch".to_string(),
                    Dest::Image(k) => format!("to_{}", parts[k].name),
                };
                code_symbols.push((
                    format!("{}::{to}@{:#x}", p.name, plan.site.address),
                    at,
                    l.thunk_size,
                ));
                thunk = Some(at);
                at += b.len() as u64;
            }
            records.push(SiteRecord {
                image: p.name.clone(),
                function: plan.site.function.clone(),
                input_address: plan.site.address,
                address: plan.site.address + pl.disp,
                callee: plan.site.callee.clone(),
                tier: plan.tier(),
                thunk,
                reason: plan.reason.clone(),
            });
        }
    }
    if let Some((_, call_image)) = dispatch {
        for &k in &stub_images {
            let here = stub_at(k);
            code.extend(lower::stub_bytes(k, here, call_image)?);
            code_symbols.push((format!("{}::entry_stub", parts[k].name), here, 10));
        }
    }
    let sites_json = serde_json::to_vec_pretty(&records)?;

    let (eh_bytes, hdr_bytes) = eh.emit(eh_slot.vaddr, hdr_slot.vaddr)?;
    let mut dynamic: Vec<(u32, u64)> = Vec::new();
    for off in &needed_off {
        dynamic.push((elf::DT_NEEDED, u64::from(*off)));
    }
    if let Some(s) = soname_off {
        dynamic.push((elf::DT_SONAME, u64::from(s)));
    }
    if let Some(r) = runpath_off {
        dynamic.push((elf::DT_RUNPATH, u64::from(r)));
    }
    let mut flags = elf::DF_BIND_NOW;
    if static_tls {
        flags |= elf::DF_STATIC_TLS;
    }
    // An input that is never unloaded keeps that promise fused: marked so,
    // or defining a unique symbol (the dynamic linker never unloads an
    // object whose unique definition it bound, since other objects' references
    // may point into it).
    let mut flags_1 = elf::DF_1_NOW;
    if parts
        .iter()
        .any(|p| p.nodelete || p.dynsyms.iter().any(|s| s.is_unique_definition()))
    {
        flags_1 |= elf::DF_1_NODELETE;
    }
    dynamic.extend([
        (elf::DT_INIT_ARRAY, init_slot.vaddr),
        (elf::DT_INIT_ARRAYSZ, init_slot.size),
        (elf::DT_FINI_ARRAY, fini_slot.vaddr),
        (elf::DT_FINI_ARRAYSZ, fini_slot.size),
        (elf::DT_GNU_HASH, hash_slot.vaddr),
        (elf::DT_STRTAB, dynstr_slot.vaddr),
        (elf::DT_SYMTAB, dynsym_slot.vaddr),
        (elf::DT_STRSZ, dynstr_slot.size),
        (elf::DT_SYMENT, 24),
        (elf::DT_RELA, rela_slot.vaddr),
        (elf::DT_RELASZ, rela_slot.size),
        (elf::DT_RELAENT, 24),
        (elf::DT_RELACOUNT, relative_count as u64),
        (elf::DT_FLAGS, u64::from(flags)),
        (elf::DT_FLAGS_1, u64::from(flags_1)),
        (elf::DT_VERSYM, versym_slot.vaddr),
    ]);
    if encoded.verneed_count > 0 {
        dynamic.push((elf::DT_VERNEED, verneed_slot.vaddr));
        dynamic.push((elf::DT_VERNEEDNUM, encoded.verneed_count as u64));
    }
    dynamic.push((elf::DT_NULL, 0));
    if dynamic.len() != dyn_count {
        bail!("internal error: dynamic entry count");
    }

    // 8. Section headers for the new contents.
    let mut add = |name: &str, sh_type: u32, flags: u32, slot: Slot, align: u64, entsize: u64| {
        sections.push(OutSection {
            name: name.into(),
            sh_type,
            flags: u64::from(flags),
            addr: slot.vaddr,
            offset: slot.offset,
            size: slot.size,
            align,
            entsize,
            ..Default::default()
        });
        sections.len() as u32 - 1
    };
    let a = elf::SHF_ALLOC;
    let wa = elf::SHF_ALLOC | elf::SHF_WRITE;
    add(".note.gnu.build-id", elf::SHT_NOTE, a, build_id_slot, 4, 0);
    if let Some(s) = prop_slot {
        add(".note.gnu.property", elf::SHT_NOTE, a, s, 8, 0);
    }
    let hash_idx = add(".gnu.hash", elf::SHT_GNU_HASH, a, hash_slot, 8, 0);
    let dynsym_idx = add(".dynsym", elf::SHT_DYNSYM, a, dynsym_slot, 8, 24);
    let dynstr_idx = add(".dynstr", elf::SHT_STRTAB, a, dynstr_slot, 1, 0);
    let versym_idx = add(".gnu.version", elf::SHT_GNU_VERSYM, a, versym_slot, 2, 2);
    let verneed_idx = (encoded.verneed_count > 0).then(|| {
        add(
            ".gnu.version_r",
            elf::SHT_GNU_VERNEED,
            a,
            verneed_slot,
            4,
            0,
        )
    });
    let rela_idx = add(".rela.dyn", elf::SHT_RELA, a, rela_slot, 8, 24);
    add(".eh_frame_hdr", elf::SHT_PROGBITS, a, hdr_slot, 4, 0);
    add(".eh_frame", elf::SHT_PROGBITS, a, eh_slot, 8, 0);
    if let Some(t) = text {
        add(
            ".text.faasfuse.rpc",
            elf::SHT_PROGBITS,
            elf::SHF_ALLOC | elf::SHF_EXECINSTR,
            t,
            16,
            0,
        );
    }
    let dynamic_idx = add(".dynamic", elf::SHT_DYNAMIC, wa, dynamic_slot, 8, 16);
    add(".init_array", elf::SHT_INIT_ARRAY, wa, init_slot, 8, 8);
    add(".fini_array", elf::SHT_FINI_ARRAY, wa, fini_slot, 8, 8);
    add(
        ".data.rel.ro.faasfuse",
        elf::SHT_PROGBITS,
        wa,
        table_slot,
        8,
        0,
    );
    if tls_size > 0 {
        add(
            ".tdata",
            elf::SHT_PROGBITS,
            wa | elf::SHF_TLS,
            tdata_slot,
            tls_align,
            0,
        );
        if tls_size > tls_filesz {
            let tbss = Slot {
                vaddr: tdata_slot.vaddr + tls_filesz,
                offset: tdata_slot.offset + tls_filesz,
                size: tls_size - tls_filesz,
            };
            let i = add(
                ".tbss",
                elf::SHT_NOBITS,
                wa | elf::SHF_TLS,
                tbss,
                tls_align,
                0,
            );
            let _ = i;
        }
    }
    let dynsym_imports_end = 1 + syms.imports.len() as u32;
    sections[hash_idx as usize].link = dynsym_idx;
    sections[dynsym_idx as usize].link = dynstr_idx;
    sections[dynsym_idx as usize].info = 1.min(dynsym_imports_end);
    sections[versym_idx as usize].link = dynsym_idx;
    if let Some(i) = verneed_idx {
        sections[i as usize].link = dynstr_idx;
        sections[i as usize].info = encoded.verneed_count as u32;
    }
    sections[rela_idx as usize].link = dynsym_idx;
    sections[dynamic_idx as usize].link = dynstr_idx;

    // 9. Non-allocated: root debug info, .symtab, .strtab, .shstrtab.
    let mut fend = alloc_end;
    let mut debug_copies = Vec::new();
    for (name, off, size) in &parts[0].debug_sections {
        fend = align_up(fend, 8);
        debug_copies.push((fend, *off, *size));
        sections.push(OutSection {
            name: name.clone(),
            sh_type: elf::SHT_PROGBITS,
            offset: fend,
            size: *size,
            align: 1,
            ..Default::default()
        });
        fend += size;
    }
    fend = align_up(fend, 8);
    let sites_off = fend;
    sections.push(OutSection {
        name: lower::SITES_SECTION.into(),
        sh_type: elf::SHT_PROGBITS,
        offset: sites_off,
        size: sites_json.len() as u64,
        align: 1,
        ..Default::default()
    });
    fend += sites_json.len() as u64;
    let (symtab, strtab, first_global) =
        symtab_bytes(parts, &placements, &sections, &syms, &code_symbols);
    fend = align_up(fend, 8);
    let symtab_off = fend;
    fend += symtab.len() as u64;
    let strtab_off = fend;
    fend += strtab.len() as u64;
    let symtab_idx = sections.len() as u32;
    sections.push(OutSection {
        name: ".symtab".into(),
        sh_type: elf::SHT_SYMTAB,
        offset: symtab_off,
        size: symtab.len() as u64,
        link: symtab_idx + 1,
        info: first_global,
        align: 8,
        entsize: 24,
        ..Default::default()
    });
    sections.push(OutSection {
        name: ".strtab".into(),
        sh_type: elf::SHT_STRTAB,
        offset: strtab_off,
        size: strtab.len() as u64,
        align: 1,
        ..Default::default()
    });
    let shstrtab_idx = sections.len();
    sections.push(OutSection {
        name: ".shstrtab".into(),
        sh_type: elf::SHT_STRTAB,
        align: 1,
        ..Default::default()
    });
    let mut shstr = StrTab::new();
    let name_offs: Vec<u32> = sections.iter().map(|s| shstr.add(&s.name)).collect();
    sections[shstrtab_idx].offset = fend;
    sections[shstrtab_idx].size = shstr.bytes.len() as u64;
    fend += shstr.bytes.len() as u64;
    let shoff = align_up(fend, 8);
    let total = shoff + 64 * sections.len() as u64;

    // 10. Program headers.
    let mut phdrs = vec![Phdr {
        p_type: elf::PT_PHDR,
        flags: elf::PF_R,
        offset: phdr_slot.offset,
        vaddr: phdr_slot.vaddr,
        filesz: phdr_slot.size,
        memsz: phdr_slot.size,
        align: 8,
    }];
    for (p, pl) in parts.iter().zip(&placements) {
        for (l, off) in p.pieces.iter().zip(&pl.load_offsets) {
            phdrs.push(Phdr {
                p_type: elf::PT_LOAD,
                flags: l.flags,
                offset: *off,
                vaddr: l.vaddr + pl.disp,
                filesz: l.filesz,
                memsz: l.memsz,
                align: page,
            });
        }
    }
    if let Some(t) = text {
        phdrs.push(Phdr {
            p_type: elf::PT_LOAD,
            flags: elf::PF_R | elf::PF_X,
            offset: t.offset,
            vaddr: t.vaddr,
            filesz: t.size,
            memsz: t.size,
            align: page,
        });
    }
    let seg = |p_type, flags, start: Slot, end_vaddr: u64, memsz: u64, align| Phdr {
        p_type,
        flags,
        offset: start.offset,
        vaddr: start.vaddr,
        filesz: end_vaddr - start.vaddr,
        memsz,
        align,
    };
    phdrs.push(seg(
        elf::PT_LOAD,
        elf::PF_R,
        r_start,
        r_end,
        r_end - r_start.vaddr,
        page,
    ));
    phdrs.push(seg(
        elf::PT_LOAD,
        elf::PF_R | elf::PF_W,
        rw_start,
        rw_end,
        rw_end - rw_start.vaddr,
        page,
    ));
    phdrs.push(seg(
        elf::PT_DYNAMIC,
        elf::PF_R | elf::PF_W,
        dynamic_slot,
        dynamic_slot.vaddr + dynamic_slot.size,
        dynamic_slot.size,
        8,
    ));
    phdrs.push(seg(
        elf::PT_NOTE,
        elf::PF_R,
        build_id_slot,
        build_id_slot.vaddr + 36,
        36,
        4,
    ));
    if let Some(s) = prop_slot {
        phdrs.push(seg(elf::PT_NOTE, elf::PF_R, s, s.vaddr + 32, 32, 8));
        phdrs.push(seg(elf::PT_GNU_PROPERTY, elf::PF_R, s, s.vaddr + 32, 32, 8));
    }
    if tls_size > 0 {
        phdrs.push(seg(
            elf::PT_TLS,
            elf::PF_R,
            tdata_slot,
            tdata_slot.vaddr + tls_filesz,
            tls_size,
            tls_align,
        ));
    }
    phdrs.push(seg(
        elf::PT_GNU_EH_FRAME,
        elf::PF_R,
        hdr_slot,
        hdr_slot.vaddr + hdr_slot.size,
        hdr_slot.size,
        4,
    ));
    phdrs.push(Phdr {
        p_type: elf::PT_GNU_STACK,
        flags: elf::PF_R | elf::PF_W | if exec_stack { elf::PF_X } else { 0 },
        offset: 0,
        vaddr: 0,
        filesz: 0,
        memsz: 0,
        align: 16,
    });
    if let Some((s, e)) = relro {
        let off = file_offset(&parts[0], &placements[0], s);
        phdrs.push(Phdr {
            p_type: elf::PT_GNU_RELRO,
            flags: elf::PF_R,
            offset: off,
            vaddr: s,
            filesz: e - s,
            memsz: e - s,
            align: 1,
        });
    }
    if phdrs.len() != phnum {
        bail!("internal error: program header count");
    }

    // 11. Bytes.
    let mut out = vec![0u8; total as usize];
    for (p, pl) in parts.iter().zip(&placements) {
        for (l, off) in p.pieces.iter().zip(&pl.load_offsets) {
            let src = &p.data[l.offset as usize..(l.offset + l.filesz) as usize];
            out[*off as usize..(*off + l.filesz) as usize].copy_from_slice(src);
        }
    }
    for (vaddr, bytes) in &site_patches {
        let off = output_range(&phdrs, *vaddr, bytes.len() as u64)
            .ok_or_else(|| anyhow::anyhow!("internal error: site outside the file"))?;
        out[off..off + bytes.len()].copy_from_slice(bytes);
    }
    if let Some(t) = text {
        out[t.offset as usize..(t.offset + t.size) as usize].copy_from_slice(&code);
    }
    out[sites_off as usize..sites_off as usize + sites_json.len()].copy_from_slice(&sites_json);
    for (vaddr, value) in &rw.patches {
        let off = output_range(&phdrs, *vaddr, 8)
            .ok_or_else(|| anyhow::anyhow!("internal error: patch outside the file"))?;
        out[off..off + 8].copy_from_slice(&value.to_le_bytes());
    }
    let mut put = |slot: Slot, bytes: &[u8]| {
        out[slot.offset as usize..slot.offset as usize + bytes.len()].copy_from_slice(bytes);
    };
    let mut ph = Vec::with_capacity(phdrs.len() * 56);
    for p in &phdrs {
        ph.extend_from_slice(&p.p_type.to_le_bytes());
        ph.extend_from_slice(&p.flags.to_le_bytes());
        for v in [p.offset, p.vaddr, p.vaddr, p.filesz, p.memsz, p.align] {
            ph.extend_from_slice(&v.to_le_bytes());
        }
    }
    put(phdr_slot, &ph);
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&20u32.to_le_bytes());
    note.extend_from_slice(&elf::NT_GNU_BUILD_ID.to_le_bytes());
    note.extend_from_slice(b"GNU\0");
    note.extend_from_slice(&[0; 20]);
    put(build_id_slot, &note);
    if let Some(s) = prop_slot {
        let mut n = Vec::new();
        n.extend_from_slice(&4u32.to_le_bytes());
        n.extend_from_slice(&16u32.to_le_bytes());
        n.extend_from_slice(&elf::NT_GNU_PROPERTY_TYPE_0.to_le_bytes());
        n.extend_from_slice(b"GNU\0");
        n.extend_from_slice(&elf::GNU_PROPERTY_X86_FEATURE_1_AND.to_le_bytes());
        n.extend_from_slice(&4u32.to_le_bytes());
        n.extend_from_slice(&cet.to_le_bytes());
        n.extend_from_slice(&0u32.to_le_bytes());
        put(s, &n);
    }
    put(hash_slot, &encoded.gnu_hash);
    put(dynsym_slot, &encoded.dynsym);
    put(dynstr_slot, &dynstr.bytes);
    put(versym_slot, &encoded.versym);
    put(verneed_slot, &encoded.verneed);
    let mut rb = Vec::with_capacity(relas.len() * 24);
    for r in &relas {
        rb.extend_from_slice(&r.offset.to_le_bytes());
        rb.extend_from_slice(&((u64::from(r.sym) << 32) | u64::from(r.r_type)).to_le_bytes());
        rb.extend_from_slice(&r.addend.to_le_bytes());
    }
    put(rela_slot, &rb);
    put(hdr_slot, &hdr_bytes);
    put(eh_slot, &eh_bytes);
    let mut db = Vec::new();
    for (t, v) in &dynamic {
        db.extend_from_slice(&u64::from(*t).to_le_bytes());
        db.extend_from_slice(&v.to_le_bytes());
    }
    put(dynamic_slot, &db);
    let words = |v: &[u64]| v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    put(init_slot, &words(&init_entries));
    put(fini_slot, &words(&fini_entries));
    put(table_slot, &table);
    let mut tdata = vec![0u8; tls_filesz as usize];
    for (p, pl) in parts.iter().zip(&placements) {
        if let (Some(t), Some(x)) = (p.tls, pl.tls_offset) {
            if t.filesz > 0 {
                let src = p.bytes_at(t.vaddr, t.filesz).ok_or_else(|| {
                    anyhow::anyhow!("{}: TLS image outside the file", p.path.display())
                })?;
                tdata[x as usize..(x + t.filesz) as usize].copy_from_slice(src);
            }
        }
    }
    put(tdata_slot, &tdata);
    for (dst, src_off, size) in &debug_copies {
        let src = &parts[0].data[*src_off as usize..(*src_off + *size) as usize];
        out[*dst as usize..(*dst + *size) as usize].copy_from_slice(src);
    }
    out[symtab_off as usize..symtab_off as usize + symtab.len()].copy_from_slice(&symtab);
    out[strtab_off as usize..strtab_off as usize + strtab.len()].copy_from_slice(&strtab);
    let so = sections[shstrtab_idx].offset as usize;
    out[so..so + shstr.bytes.len()].copy_from_slice(&shstr.bytes);
    let mut sh = Vec::with_capacity(sections.len() * 64);
    for (s, name) in sections.iter().zip(&name_offs) {
        sh.extend_from_slice(&name.to_le_bytes());
        sh.extend_from_slice(&s.sh_type.to_le_bytes());
        sh.extend_from_slice(&s.flags.to_le_bytes());
        sh.extend_from_slice(&s.addr.to_le_bytes());
        sh.extend_from_slice(&s.offset.to_le_bytes());
        sh.extend_from_slice(&s.size.to_le_bytes());
        sh.extend_from_slice(&s.link.to_le_bytes());
        sh.extend_from_slice(&s.info.to_le_bytes());
        sh.extend_from_slice(&s.align.to_le_bytes());
        sh.extend_from_slice(&s.entsize.to_le_bytes());
    }
    out[shoff as usize..].copy_from_slice(&sh);
    write_elf_header(
        &mut out,
        phdr_slot.offset,
        phdrs.len(),
        shoff,
        sections.len(),
        shstrtab_idx,
        osabi,
    );
    let id = build_id(&out);
    let at = build_id_slot.offset as usize + 16;
    out[at..at + 20].copy_from_slice(&id);

    Ok(Output {
        bytes: out,
        placements,
        relocations: relas.len(),
        imports: syms.imports.len(),
        sites: records,
    })
}
