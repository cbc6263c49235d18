//! Where an image's DWARF depends on where things are.
//!
//! A fused image keeps every input's code where that input put it, moved by
//! one displacement, and every input's TLS block at one offset in the
//! combined block. So each input's DWARF stays valid if every field that
//! holds an address, a TLS offset or an offset into another debug section is
//! shifted by a constant: the displacement, the TLS block's offset, or where
//! the input's piece of the target section starts in the output's. This
//! module finds those fields ([`find_fields`]); the merge shifts them.
//!
//! It walks what the fields hang from, as a consumer would: unit headers and
//! every DIE's attributes (by form and by attribute), location expressions
//! (`DW_OP_addr`, TLS constants, DIE references, entry values), the range
//! and location lists DIEs reference, line programs, `.debug_addr`,
//! `.debug_str_offsets`, `.debug_aranges`, the name tables and macro units.
//! Anything it cannot read is an error with the reason, never "no fields":
//! the caller then leaves that image's DWARF out.

mod cursor;
mod expr;
mod lists;
mod tables;
mod units;

use std::collections::BTreeSet;

use serde::Serialize;

/// The debug sections faasfuse can carry, in the order an output lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Sec {
    Info,
    Types,
    Abbrev,
    Line,
    LineStr,
    Str,
    StrOffsets,
    Addr,
    Aranges,
    Ranges,
    RngLists,
    Loc,
    LocLists,
    Macro,
    Macinfo,
    Pubnames,
    Pubtypes,
    GnuPubnames,
    GnuPubtypes,
}

impl Sec {
    pub const ALL: [Sec; 19] = [
        Sec::Info,
        Sec::Types,
        Sec::Abbrev,
        Sec::Line,
        Sec::LineStr,
        Sec::Str,
        Sec::StrOffsets,
        Sec::Addr,
        Sec::Aranges,
        Sec::Ranges,
        Sec::RngLists,
        Sec::Loc,
        Sec::LocLists,
        Sec::Macro,
        Sec::Macinfo,
        Sec::Pubnames,
        Sec::Pubtypes,
        Sec::GnuPubnames,
        Sec::GnuPubtypes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sec::Info => ".debug_info",
            Sec::Types => ".debug_types",
            Sec::Abbrev => ".debug_abbrev",
            Sec::Line => ".debug_line",
            Sec::LineStr => ".debug_line_str",
            Sec::Str => ".debug_str",
            Sec::StrOffsets => ".debug_str_offsets",
            Sec::Addr => ".debug_addr",
            Sec::Aranges => ".debug_aranges",
            Sec::Ranges => ".debug_ranges",
            Sec::RngLists => ".debug_rnglists",
            Sec::Loc => ".debug_loc",
            Sec::LocLists => ".debug_loclists",
            Sec::Macro => ".debug_macro",
            Sec::Macinfo => ".debug_macinfo",
            Sec::Pubnames => ".debug_pubnames",
            Sec::Pubtypes => ".debug_pubtypes",
            Sec::GnuPubnames => ".debug_gnu_pubnames",
            Sec::GnuPubtypes => ".debug_gnu_pubtypes",
        }
    }

    pub fn from_name(name: &str) -> Option<Sec> {
        Sec::ALL.into_iter().find(|s| s.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a field holds, so what shifts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// An address in the image (tombstones and other values outside the
    /// image's sections stay as they are).
    Addr,
    /// An offset in the image's TLS block (`DW_OP_form_tls_address`).
    Tls,
    /// An offset into the image's piece of another debug section.
    Offset(Sec),
    /// An address relative to a list's base address: it moves only when
    /// the base does not (a unit whose base is 0 lists absolute addresses).
    Relative { base: u64 },
}

/// How a field is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Enc {
    /// Little-endian, this many bytes.
    Fixed(u8),
    /// ULEB128 in this many bytes (a new value is padded to the same length).
    Uleb(u8),
}

impl Enc {
    pub fn size(self) -> u8 {
        match self {
            Enc::Fixed(n) | Enc::Uleb(n) => n,
        }
    }
}

/// One field: in section `sec` at byte `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Field {
    pub sec: Sec,
    pub at: u64,
    pub enc: Enc,
    pub kind: Kind,
}

/// An image's debug sections, uncompressed, by [`Sec`].
#[derive(Default)]
pub struct Sections<'a> {
    data: [Option<&'a [u8]>; 19],
}

impl<'a> Sections<'a> {
    pub fn set(&mut self, sec: Sec, bytes: &'a [u8]) {
        self.data[sec.index()] = Some(bytes);
    }
    pub fn get(&self, sec: Sec) -> Option<&'a [u8]> {
        self.data[sec.index()]
    }
    fn bytes(&self, sec: Sec) -> Result<&'a [u8], String> {
        self.get(sec)
            .ok_or_else(|| format!("refers to {}, which it does not have", sec.name()))
    }
}

/// Every shiftable field of one image's DWARF, and the split-DWARF objects
/// its skeleton units name.
#[derive(Debug, Default)]
pub struct Found {
    /// Sorted by section and position, each position once.
    pub fields: Vec<Field>,
    /// `.dwo` files the skeleton units name, as `comp_dir/dwo_name`.
    pub dwo: Vec<String>,
}

/// The value of field `f` in its section's `bytes`.
pub fn read_field(bytes: &[u8], f: &Field) -> Result<u64, String> {
    let mut c = cursor::Cursor::new(bytes, f.at as usize, f.sec.name());
    match f.enc {
        Enc::Fixed(n) if n <= 8 => c.fixed(n),
        Enc::Fixed(n) => Err(format!("{} at {:#x}: a {n}-byte field", f.sec.name(), f.at)),
        Enc::Uleb(_) => c.uleb(),
    }
}

/// Store `v` in field `f`, in the field's own size.
pub fn write_field(bytes: &mut [u8], f: &Field, v: u64) -> Result<(), String> {
    let too_big = || {
        format!(
            "{} at {:#x}: {v:#x} does not fit the field",
            f.sec.name(),
            f.at
        )
    };
    let enc = match f.enc {
        Enc::Fixed(n) if n >= 8 => v.to_le_bytes().to_vec(),
        Enc::Fixed(n) if v >> (8 * u32::from(n)) == 0 => v.to_le_bytes()[..n as usize].to_vec(),
        Enc::Fixed(_) => return Err(too_big()),
        Enc::Uleb(n) => cursor::uleb_padded(v, n).ok_or_else(too_big)?,
    };
    let at = f.at as usize;
    bytes
        .get_mut(at..at + enc.len())
        .ok_or_else(too_big)?
        .copy_from_slice(&enc);
    Ok(())
}

/// Find the fields of `s`; an error says what could not be read.
pub fn find_fields(s: &Sections) -> Result<Found, String> {
    let mut w = units::Walk::new(s);
    w.units(Sec::Info)?;
    w.units(Sec::Types)?;
    tables::line(&mut w)?;
    tables::aranges(&mut w)?;
    tables::str_offsets(&mut w)?;
    tables::addr(&mut w)?;
    for sec in [
        Sec::Pubnames,
        Sec::Pubtypes,
        Sec::GnuPubnames,
        Sec::GnuPubtypes,
    ] {
        tables::name_table(&mut w, sec)?;
    }
    tables::macros(&mut w)?;
    let mut fields = std::mem::take(&mut w.fields);
    fields.sort_by_key(|f| (f.sec, f.at));
    let mut out: Vec<Field> = Vec::with_capacity(fields.len());
    for f in fields {
        match out.last() {
            Some(l) if l.sec == f.sec && l.at == f.at => {
                if *l != f {
                    return Err(format!(
                        "{} at {:#x} is read two ways ({:?} and {:?})",
                        f.sec.name(),
                        f.at,
                        l.kind,
                        f.kind
                    ));
                }
            }
            Some(l) if l.sec == f.sec && l.at + u64::from(l.enc.size()) > f.at => {
                return Err(format!("{} at {:#x}: fields overlap", f.sec.name(), f.at));
            }
            _ => out.push(f),
        }
    }
    let dwo: BTreeSet<String> = w.dwo.into_iter().collect();
    Ok(Found {
        fields: out,
        dwo: dwo.into_iter().collect(),
    })
}

/// The fields of the DWARF in the ELF file `data` (its debug sections
/// uncompressed first).
pub fn fields_in_elf(data: &[u8]) -> Result<Found, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let mut owned: Vec<(Sec, std::borrow::Cow<[u8]>)> = Vec::new();
    for s in file.sections() {
        let Some(sec) = s.name().ok().and_then(Sec::from_name) else {
            continue;
        };
        let bytes = s
            .uncompressed_data()
            .map_err(|e| format!("{}: {e}", sec.name()))?;
        owned.push((sec, bytes));
    }
    let mut secs = Sections::default();
    for (sec, bytes) in &owned {
        secs.set(*sec, bytes);
    }
    find_fields(&secs)
}
