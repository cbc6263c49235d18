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

mod collect;
mod cursor;
mod expr;
mod lists;
mod tables;
mod units;

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

/// The addresses an image's allocated sections cover, ends included:
/// addresses outside (0, tombstones) never move with the image.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    lo: u64,
    hi: u64,
}

impl Span {
    /// Covers nothing.
    pub const EMPTY: Span = Span {
        lo: u64::MAX,
        hi: 0,
    };

    /// The span of the allocated, non-empty sections of the ELF file `data`.
    pub fn of_elf(data: &[u8]) -> Result<Span, String> {
        let file = object::File::parse(data).map_err(|e| e.to_string())?;
        Ok(Span::of_file(&file))
    }

    fn of_file(file: &object::File) -> Span {
        use object::{Object, ObjectSection};
        let mut span = Span::EMPTY;
        for s in file.sections() {
            let alloc = matches!(s.flags(), object::SectionFlags::Elf { sh_flags }
                if sh_flags & u64::from(object::elf::SHF_ALLOC) != 0);
            if alloc && s.size() > 0 {
                span.lo = span.lo.min(s.address());
                span.hi = span.hi.max(s.address() + s.size());
            }
        }
        span
    }

    /// Whether `a` is an address in the image (an end address included).
    pub fn inside(self, a: u64) -> bool {
        a >= self.lo && a <= self.hi
    }
}

/// An image's debug sections, uncompressed, by [`Sec`], and its [`Span`].
pub struct Sections<'a> {
    data: [Option<&'a [u8]>; 19],
    span: Span,
}

impl<'a> Sections<'a> {
    /// No sections yet, of an image that covers `span`.
    pub fn new(span: Span) -> Sections<'a> {
        Sections {
            data: [None; 19],
            span,
        }
    }

    pub fn inside(&self, a: u64) -> bool {
        self.span.inside(a)
    }

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

/// Every field of one image's DWARF that moves with placement (addresses
/// inside the image, list entries relative to a base outside it, TLS
/// offsets, offsets into debug sections), and the split-DWARF objects its
/// skeleton units name.
#[derive(Debug, Default)]
pub struct Found {
    /// Sorted by section and position, each position once.
    pub fields: Vec<Field>,
    /// `.dwo` files the skeleton units name, as `comp_dir/dwo_name`.
    pub dwo: Vec<String>,
}

/// The value of field `f` in its section's `bytes`.
#[inline]
pub fn read_field(bytes: &[u8], f: &Field) -> Result<u64, String> {
    let at = f.at as usize;
    match f.enc {
        Enc::Fixed(8) => {
            if let Some(b) = bytes.get(at..at + 8) {
                return Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")));
            }
        }
        Enc::Fixed(4) => {
            if let Some(b) = bytes.get(at..at + 4) {
                return Ok(u64::from(u32::from_le_bytes(
                    b.try_into().expect("4 bytes"),
                )));
            }
        }
        _ => {}
    }
    let mut c = cursor::Cursor::new(bytes, at, f.sec.name());
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
    // Two walks side by side: half the units (and the type units), and the
    // other half with the sections walked from their start; then the
    // sections that need what the units said.
    let info = units::headers(s, Sec::Info)?;
    let (first, second) = info.split_at(info.len() / 2);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| -> Result<units::Walk, String> {
            let mut w = units::Walk::new(s);
            w.walk_units(Sec::Info, first)?;
            w.units(Sec::Types)?;
            Ok(w)
        });
        let mut w = units::Walk::new(s);
        let b = (|| -> Result<(), String> {
            w.walk_units(Sec::Info, second)?;
            tables::line(&mut w)?;
            tables::aranges(&mut w)?;
            tables::str_offsets(&mut w)?;
            for sec in [
                Sec::Pubnames,
                Sec::Pubtypes,
                Sec::GnuPubnames,
                Sec::GnuPubtypes,
            ] {
                tables::name_table(&mut w, sec)?;
            }
            Ok(())
        })();
        let a = a.join().expect("a walk does not panic");
        (a, b.map(|_| w))
    });
    let mut w = a?;
    w.absorb(b?);
    tables::addr(&mut w)?;
    tables::macros(&mut w)?;
    let mut out: Vec<Field> = Vec::with_capacity(w.fields.iter().map(Vec::len).sum());
    for mut fields in std::mem::take(&mut w.fields) {
        // Most sections are walked in order; lists follow their references.
        if !fields.windows(2).all(|w| w[0].at <= w[1].at) {
            fields.sort_unstable_by_key(|f| f.at);
        }
        let first = out.len();
        for f in fields {
            match out[first..].last() {
                Some(l) if l.at == f.at => {
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
                Some(l) if l.at + u64::from(l.enc.size()) > f.at => {
                    return Err(format!("{} at {:#x}: fields overlap", f.sec.name(), f.at));
                }
                _ => out.push(f),
            }
        }
    }
    Ok(Found {
        fields: out,
        dwo: w.split_objects(),
    })
}

/// The split-DWARF objects the skeleton units of `s` name (reads only each
/// unit's own DIE).
pub fn split_objects(s: &Sections) -> Result<Vec<String>, String> {
    let mut w = units::Walk::new(s);
    w.unit_dies_only = true;
    w.units(Sec::Info)?;
    Ok(w.split_objects())
}

/// Largest debug section accepted uncompressed from a compressed one (a
/// compression header can ask for any size).
pub const MAX_INFLATED: u64 = 1 << 30;

/// Most bytes all of one image's compressed debug sections may inflate to
/// together: each header may ask for up to [`MAX_INFLATED`], so the bound
/// is on their sum, not per section.
pub const MAX_INFLATED_TOTAL: u64 = 1 << 30;

/// What is left of one image's inflation allowance.
pub struct InflateBudget(u64);

impl Default for InflateBudget {
    fn default() -> InflateBudget {
        InflateBudget(MAX_INFLATED_TOTAL)
    }
}

impl InflateBudget {
    /// Take `size` bytes for section `name`, or say why not.
    pub fn take(&mut self, name: &str, size: u64) -> Result<(), String> {
        if size > MAX_INFLATED || size > self.0 {
            return Err(format!(
                "{name}: {size} bytes uncompressed is too large (the image's compressed debug sections may inflate to {MAX_INFLATED_TOTAL} bytes in all)"
            ));
        }
        self.0 -= size;
        Ok(())
    }
}

/// The fields of the DWARF in the ELF file `data` (its debug sections
/// uncompressed first).
pub fn fields_in_elf(data: &[u8]) -> Result<Found, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let mut owned: Vec<(Sec, std::borrow::Cow<[u8]>)> = Vec::new();
    let mut budget = InflateBudget::default();
    for s in file.sections() {
        let Some(sec) = s.name().ok().and_then(Sec::from_name) else {
            continue;
        };
        let compressed = s
            .compressed_data()
            .map_err(|e| format!("{}: {e}", sec.name()))?;
        if compressed.format != object::CompressionFormat::None {
            budget.take(sec.name(), compressed.uncompressed_size)?;
        }
        let bytes = compressed
            .decompress()
            .map_err(|e| format!("{}: {e}", sec.name()))?;
        owned.push((sec, bytes));
    }
    let mut secs = Sections::new(Span::of_file(&file));
    for (sec, bytes) in &owned {
        secs.set(*sec, bytes);
    }
    find_fields(&secs)
}
