//! Writes the fused table the runtime reads: header, one entry per fused image, names.

use super::input::{Part, Role};
use super::layout::{InAddr, OutAddr, Placement};
use super::relocs::Rela;
use super::runtime;

/// What a pointer in the table points at.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// An offset in the table itself (a name).
    Table(u64),
    /// An address in the fused image.
    Image(OutAddr),
}

/// The table's bytes and the pointers in it, which relative relocations
/// fill in wherever the table goes.
pub struct FusedTable {
    pub(super) bytes: Vec<u8>,
    /// (offset in the table, what it points at)
    pointers: Vec<(u64, Target)>,
}

impl FusedTable {
    /// The table of the fused images (every part but the runtime, last).
    pub fn new(parts: &[Part], placements: &[Placement]) -> FusedTable {
        let n = parts.len() - 1;
        let names_at = runtime::TABLE_HEADER_SIZE + runtime::IMAGE_ENTRY_SIZE * n as u64;
        let names_size: u64 = parts[..n].iter().map(|p| p.name.len() as u64 + 1).sum();
        let mut table = vec![0u8; (names_at + names_size) as usize];
        let mut pointers = Vec::new();
        table[..8].copy_from_slice(&runtime::TABLE_MAGIC.to_le_bytes());
        table[8..16].copy_from_slice(&(n as u64).to_le_bytes());
        let mut name_cursor = names_at;
        for (k, (p, pl)) in parts[..n].iter().zip(placements).enumerate() {
            let entry = runtime::TABLE_HEADER_SIZE + runtime::IMAGE_ENTRY_SIZE * k as u64;
            let flags = if p.fusion.reentrant {
                runtime::FLAG_REENTRANT
            } else {
                0
            } | match p.fusion.isolation {
                super::Isolation::None => 0,
                super::Isolation::Stack => runtime::FLAG_ISOLATE_STACK,
                super::Isolation::Mpk => runtime::FLAG_ISOLATE_STACK | runtime::FLAG_ISOLATE_MPK,
            };
            let f = (entry + runtime::ENTRY_FLAGS) as usize;
            table[f..f + 8].copy_from_slice(&flags.to_le_bytes());
            let at = name_cursor as usize;
            table[at..at + p.name.len()].copy_from_slice(p.name.as_bytes());
            pointers.push((entry + runtime::ENTRY_NAME, Target::Table(name_cursor)));
            name_cursor += p.name.len() as u64 + 1;
            for (f, ep) in [
                runtime::ENTRY_INIT,
                runtime::ENTRY_CREATE,
                runtime::ENTRY_DESTROY,
                runtime::ENTRY_CALL,
            ]
            .iter()
            .zip(p.entry)
            {
                pointers.push((entry + f, Target::Image(pl.out(InAddr(ep)))));
            }
            // Where the image lies: the runtime finds each image's writable
            // segments by it, to give them their protection key.
            let (lo, hi) = p.span();
            pointers.push((
                entry + runtime::ENTRY_SPAN_START,
                Target::Image(pl.out(InAddr(lo))),
            ));
            pointers.push((
                entry + runtime::ENTRY_SPAN_END,
                Target::Image(pl.out(InAddr(hi))),
            ));
            if let (Role::Callee, Some((s, e))) = (p.role, p.relro) {
                pointers.push((
                    entry + runtime::ENTRY_RELRO_START,
                    Target::Image(pl.out(InAddr(s))),
                ));
                pointers.push((
                    entry + runtime::ENTRY_RELRO_END,
                    Target::Image(pl.out(InAddr(e))),
                ));
            }
        }
        FusedTable {
            bytes: table,
            pointers,
        }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Relocations filling in the pointers of the table placed at `at`.
    pub fn relas(&self, at: OutAddr) -> impl Iterator<Item = Rela> + '_ {
        self.pointers.iter().map(move |&(off, target)| {
            let to = match target {
                Target::Table(o) => at + o,
                Target::Image(a) => a,
            };
            Rela::relative((at + off).0, to.0)
        })
    }

    pub fn relocation_count(&self) -> usize {
        self.pointers.len()
    }
}
