//! Fields inside DWARF expressions.

use gimli::{constants as dw, EndianSlice, LittleEndian, Operation};

use super::collect::Collect as Walk;
use super::cursor::{Cursor, R};
use super::{Enc, Kind, Sec};

/// The operation before a TLS operator, which gives its operand.
#[derive(Clone, Copy)]
enum Prev {
    None,
    /// A constant in the expression's bytes: (position, encoding).
    Const(usize, Enc),
    /// `DW_OP_addr` at this position.
    Addr(usize),
    /// `DW_OP_constx` of this `.debug_addr` index.
    ConstIndex(u64),
    /// A TLS operator with no constant before it: gcc sometimes puts the
    /// constant right after it (the link editor relocates that one).
    TlsFirst(usize),
    Other,
}

/// Record the fields of the expression of `len` bytes at `at` in `sec`.
/// Returns the `.debug_addr` indices that hold TLS offsets.
pub fn scan(
    w: &mut Walk,
    sec: Sec,
    bytes: &[u8],
    at: usize,
    len: usize,
    enc: gimli::Encoding,
) -> R<Vec<u64>> {
    let end = at
        .checked_add(len)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "{}: expression at {at:#x} runs past the section",
                sec.name()
            )
        })?;
    let mut r = EndianSlice::new(&bytes[at..end], LittleEndian);
    let mut tls = Vec::new();
    let mut prev = Prev::None;
    let asize = enc.address_size;
    // A DIE reference's size: the offset size, or the address size in DWARF 2.
    let ref_size = if enc.version <= 2 {
        asize
    } else {
        enc.format.word_size()
    };
    while !r.is_empty() {
        let op_at = end - r.len();
        let op = bytes[op_at];
        let parsed = Operation::parse(&mut r, enc)
            .map_err(|e| format!("{}: expression at {op_at:#x}: {e}", sec.name()))?;
        let op_end = end - r.len();
        if let (Prev::TlsFirst(t), false) = (
            prev,
            matches!(dw::DwOp(op), dw::DW_OP_const4u | dw::DW_OP_const8u),
        ) {
            return Err(tls_of_computed(sec, t));
        }
        let here = match dw::DwOp(op) {
            dw::DW_OP_addr => {
                w.push(sec, op_end - asize as usize, Enc::Fixed(asize), Kind::Addr);
                Prev::Addr(op_end - asize as usize)
            }
            dw::DW_OP_const4u | dw::DW_OP_const8u => {
                let enc = Enc::Fixed((op_end - op_at - 1) as u8);
                if let Prev::TlsFirst(_) = prev {
                    w.push(sec, op_at + 1, enc, Kind::Tls);
                    Prev::Other
                } else {
                    Prev::Const(op_at + 1, enc)
                }
            }
            dw::DW_OP_constu => Prev::Const(op_at + 1, Enc::Uleb((op_end - op_at - 1) as u8)),
            dw::DW_OP_constx | dw::DW_OP_GNU_const_index => {
                Prev::ConstIndex(Cursor::new(bytes, op_at + 1, "an expression").uleb()?)
            }
            dw::DW_OP_form_tls_address | dw::DW_OP_GNU_push_tls_address => {
                match prev {
                    Prev::Const(p, e) => w.push(sec, p, e, Kind::Tls),
                    Prev::Addr(p) => {
                        // Some producers give the offset with DW_OP_addr.
                        let fields = &mut w.fields[sec as usize];
                        if fields.last().is_some_and(|f| f.at == p as u64) {
                            fields.pop();
                        }
                        w.push(sec, p, Enc::Fixed(asize), Kind::Tls);
                    }
                    Prev::ConstIndex(i) => tls.push(i),
                    Prev::None | Prev::Other | Prev::TlsFirst(_) => {
                        prev = Prev::TlsFirst(op_at);
                        continue;
                    }
                }
                Prev::Other
            }
            dw::DW_OP_call_ref | dw::DW_OP_implicit_pointer | dw::DW_OP_GNU_implicit_pointer => {
                w.push(
                    sec,
                    op_at + 1,
                    Enc::Fixed(ref_size),
                    Kind::Offset(Sec::Info),
                );
                Prev::Other
            }
            dw::DW_OP_entry_value | dw::DW_OP_GNU_entry_value => {
                if let Operation::EntryValue { expression } = parsed {
                    let inner = expression.len();
                    tls.extend(scan(w, sec, bytes, op_end - inner, inner, enc)?);
                }
                Prev::Other
            }
            _ => Prev::Other,
        };
        prev = here;
    }
    if let Prev::TlsFirst(t) = prev {
        return Err(tls_of_computed(sec, t));
    }
    Ok(tls)
}

fn tls_of_computed(sec: Sec, at: usize) -> String {
    format!(
        "{}: expression at {at:#x} takes a TLS address of a computed offset",
        sec.name()
    )
}
