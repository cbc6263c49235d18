//! Rewriting each input's dynamic relocations for its place in the fused
//! image: every image binds the symbols it defines to its own (displaced)
//! definitions, imports stay symbolic, TLS offsets move by the image's
//! offset in the combined TLS block.

use std::collections::HashSet;

use anyhow::{bail, Result};
use object::elf;

use super::dynsym::DynSymtab;
use super::input::{Part, Role};
use super::layout::OutAddr;
use super::runtime::TABLE_SYMBOL;
use crate::error::InputError;

/// One output relocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rela {
    pub(super) offset: u64,
    pub(super) r_type: u32,
    pub(super) sym: u32,
    pub(super) addend: i64,
}

impl Rela {
    pub fn relative(offset: u64, target: u64) -> Rela {
        Rela {
            offset,
            r_type: elf::R_X86_64_RELATIVE,
            sym: 0,
            addend: target as i64,
        }
    }
}

/// Result of rewriting: relocations and words to change in the copied
/// image bytes (address in the output, new value).
#[derive(Default)]
pub struct Rewritten {
    pub(super) relas: Vec<Rela>,
    pub(super) patches: Vec<(OutAddr, u64)>,
    /// Relocations relative to the fused table, whose address the layout
    /// decides later (the runtime's one import the merger defines).
    at_table: Vec<usize>,
    /// Relocations against unique exports, whose `.dynsym` index is known
    /// once every import is.
    unique: Vec<(usize, String)>,
}

impl Rewritten {
    /// Fill in what the rewriting left open: the fused table's address and
    /// the indices of unique exports in the final `syms`.
    pub fn resolve(&mut self, table: u64, syms: &DynSymtab) {
        for &i in &self.at_table {
            self.relas[i].addend += table as i64;
        }
        for (i, name) in &self.unique {
            self.relas[*i].sym = syms.unique_index(name);
        }
    }
}

/// Rewrite `part`'s relocations. `disp` is its displacement, `tls_x` its
/// block's offset in the combined TLS block; `own_copy` the unique names it
/// defines that an earlier image exports (it keeps its own copy of each).
pub fn rewrite(
    part: &Part,
    disp: u64,
    tls_x: u64,
    own_copy: &std::collections::HashSet<&str>,
    syms: &mut DynSymtab,
    out: &mut Rewritten,
) -> Result<()> {
    let d = disp as i64;
    let x = tls_x as i64;
    let reloc_at: HashSet<u64> = part.relocs.iter().map(|r| r.offset).collect();
    for r in &part.relocs {
        let offset = r.offset + disp;
        let sym = (r.sym != 0).then(|| &part.dynsyms[r.sym as usize]);
        let own = sym.filter(|s| s.defined);
        let push = |out: &mut Rewritten, r_type, sym, addend| {
            out.relas.push(Rela {
                offset,
                r_type,
                sym,
                addend,
            })
        };
        match r.r_type {
            elf::R_X86_64_NONE => {}
            elf::R_X86_64_RELATIVE | elf::R_X86_64_IRELATIVE => {
                push(out, r.r_type, 0, r.addend + d)
            }
            elf::R_X86_64_64 | elf::R_X86_64_GLOB_DAT | elf::R_X86_64_JUMP_SLOT => match (sym, own)
            {
                (None, _) => push(out, elf::R_X86_64_64, 0, r.addend),
                (Some(s), _) if part.role == Role::Runtime && s.name == TABLE_SYMBOL => {
                    out.at_table.push(out.relas.len());
                    out.relas.push(Rela::relative(offset, r.addend as u64))
                }
                (_, Some(s)) if s.abs => push(out, elf::R_X86_64_64, 0, s.value as i64 + r.addend),
                (_, Some(s)) if s.is_unique_definition() && own_copy.contains(s.name.as_str()) => {
                    push(
                        out,
                        elf::R_X86_64_RELATIVE,
                        0,
                        s.value as i64 + d + r.addend,
                    )
                }
                (_, Some(s)) if s.is_unique_definition() => {
                    let t = if r.r_type == elf::R_X86_64_JUMP_SLOT {
                        elf::R_X86_64_GLOB_DAT
                    } else {
                        r.r_type
                    };
                    out.unique.push((out.relas.len(), s.name.clone()));
                    push(out, t, 0, r.addend)
                }
                (_, Some(s)) if s.st_type() == elf::STT_GNU_IFUNC => {
                    if r.addend != 0 {
                        bail!(InputError::new(
                            &part.path,
                            format!("IFUNC relocation with addend at {:#x}", r.offset)
                        ));
                    }
                    push(out, elf::R_X86_64_IRELATIVE, 0, s.value as i64 + d)
                }
                (_, Some(s)) if s.st_type() == elf::STT_TLS => bail!(InputError::new(
                    &part.path,
                    format!("address relocation against TLS symbol {}", s.name)
                )),
                (_, Some(s)) => push(
                    out,
                    elf::R_X86_64_RELATIVE,
                    0,
                    s.value as i64 + d + r.addend,
                ),
                (Some(s), None) => {
                    let i = syms.import(s);
                    let t = if r.r_type == elf::R_X86_64_JUMP_SLOT {
                        elf::R_X86_64_GLOB_DAT
                    } else {
                        r.r_type
                    };
                    push(out, t, i, r.addend)
                }
            },
            elf::R_X86_64_DTPMOD64 => match (sym, own) {
                (Some(s), None) => {
                    let i = syms.import(s);
                    push(out, r.r_type, i, r.addend)
                }
                (None, _) => {
                    push(out, r.r_type, 0, 0);
                    if !reloc_at.contains(&(r.offset + 8)) {
                        out.patches
                            .push(module_local_offset(part, r.offset, disp, tls_x)?);
                    }
                }
                (_, Some(_)) => push(out, r.r_type, 0, 0),
            },
            elf::R_X86_64_DTPOFF64 | elf::R_X86_64_TPOFF64 => match (sym, own) {
                (Some(s), None) => {
                    let i = syms.import(s);
                    push(out, r.r_type, i, r.addend)
                }
                (None, _) => push(out, r.r_type, 0, r.addend + x),
                (_, Some(s)) => push(out, r.r_type, 0, s.value as i64 + x + r.addend),
            },
            t => bail!(InputError::new(
                &part.path,
                format!("unsupported relocation type {t} at {:#x}", r.offset)
            )),
        }
    }
    Ok(())
}

/// The patch of the word after a symbol-less `R_X86_64_DTPMOD64` at
/// `offset`: the module-local TLS offset, moved by the image's block's
/// offset `tls_x` in the combined TLS block. The word must be in the file.
fn module_local_offset(part: &Part, offset: u64, disp: u64, tls_x: u64) -> Result<(OutAddr, u64)> {
    let next = offset + 8;
    let Some(word) = part.word_at(next) else {
        bail!(InputError::new(
            &part.path,
            format!(
                "R_X86_64_DTPMOD64 at {offset:#x} has no symbol, so its TLS offset word at {next:#x} must be in the file, and it is not"
            ),
        ));
    };
    Ok((OutAddr(next + disp), word.wrapping_add(tls_x)))
}

/// Order for `.rela.dyn`: relative first (counted by `DT_RELACOUNT`),
/// symbolic next, IFUNC relocations last so resolvers see a relocated image.
pub fn sort(relas: &mut [Rela]) -> usize {
    let rank = |r: &Rela| match r.r_type {
        elf::R_X86_64_RELATIVE => 0,
        elf::R_X86_64_IRELATIVE => 2,
        _ => 1,
    };
    relas.sort_by_key(|r| (rank(r), r.offset));
    relas
        .iter()
        .filter(|r| r.r_type == elf::R_X86_64_RELATIVE)
        .count()
}

/// `.rela.dyn`'s bytes.
pub fn encode(relas: &[Rela]) -> Vec<u8> {
    let mut rb = Vec::with_capacity(relas.len() * 24);
    for r in relas {
        rb.extend_from_slice(&r.offset.to_le_bytes());
        rb.extend_from_slice(&((u64::from(r.sym) << 32) | u64::from(r.r_type)).to_le_bytes());
        rb.extend_from_slice(&r.addend.to_le_bytes());
    }
    rb
}
