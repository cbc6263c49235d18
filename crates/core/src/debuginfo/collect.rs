//! What a walk over the DWARF sections collects: the fields that move
//! with placement. Units, lists and expressions all record into it, and
//! it depends on none of them.

use super::cursor::{Cursor, R};
use super::{Enc, Field, Kind, Sec, Sections};
use crate::hash::FastSet;

/// The fields found so far, by section.
pub struct Collect<'s, 'a> {
    pub s: &'s Sections<'a>,
    /// Fields by section ([`Sec::ALL`] order).
    pub fields: Vec<Vec<Field>>,
    /// `.debug_addr` entries that hold TLS offsets, not addresses.
    pub tls_addr: FastSet<u64>,
}

impl<'s, 'a> Collect<'s, 'a> {
    pub fn new(s: &'s Sections<'a>) -> Collect<'s, 'a> {
        Collect {
            s,
            fields: vec![Vec::new(); Sec::ALL.len()],
            tls_addr: FastSet::default(),
        }
    }

    /// Record a field, if it moves with placement.
    #[inline]
    pub fn push(&mut self, sec: Sec, at: usize, enc: Enc, kind: Kind) {
        let f = Field {
            sec,
            at: at as u64,
            enc,
            kind,
        };
        let moves = match kind {
            Kind::Addr | Kind::Relative { .. } => {
                let Some(v) = self.s.get(sec).and_then(|b| super::read_field(b, &f).ok()) else {
                    // Out of bounds: kept, so the merge refuses it.
                    self.fields[sec as usize].push(f);
                    return;
                };
                match kind {
                    Kind::Relative { base } => {
                        !self.s.inside(base) && self.s.inside(base.wrapping_add(v))
                    }
                    _ => self.s.inside(v),
                }
            }
            Kind::Tls | Kind::Offset(_) => true,
        };
        if moves {
            self.fields[sec as usize].push(f);
        }
    }
}

/// The value of `size` bytes at `at`.
pub fn read_at(bytes: &[u8], at: u64, size: u8) -> R<u64> {
    let mut c = Cursor::new(
        bytes,
        usize::try_from(at).unwrap_or(usize::MAX),
        "an index table",
    );
    c.fixed(size)
}
