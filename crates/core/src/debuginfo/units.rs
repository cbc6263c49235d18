//! Unit headers and DIE attributes of `.debug_info` and `.debug_types`.

use std::collections::BTreeSet;

use crate::hash::FastSet;

use gimli::{constants as dw, AttributeValue, EndianSlice, Format, LittleEndian, UnitHeader};

use super::collect::{read_at, Collect};
use super::cursor::{entry, Cursor, R};
use super::{expr, lists, Enc, Kind, Sec, Sections};

/// The state of one walk over an image's DWARF.
pub struct Walk<'s, 'a> {
    /// The fields found so far.
    pub c: Collect<'s, 'a>,
    pub dwo: Vec<String>,
    /// Macro units referenced by units (imports are followed later).
    pub macro_units: BTreeSet<u64>,
    /// `DW_AT_addr_base` values: where `.debug_addr` contributions start.
    pub addr_bases: BTreeSet<u64>,
    /// Lists already walked: (section, offset).
    lists_seen: FastSet<(Sec, u64)>,
    /// Read only each unit's own DIE (for the names of split-DWARF objects).
    pub unit_dies_only: bool,
}

/// A reference to a list, by offset or by index into the unit's offsets table.
#[derive(Clone, Copy)]
enum ListRef {
    Offset(u64),
    Index(u64),
}

/// A value that may be an index into `.debug_addr` or `.debug_str_offsets`,
/// resolved once the unit's bases are known.
#[derive(Clone, Copy)]
enum Deferred<T> {
    Value(T),
    Index(u64),
}

/// What a unit's DIEs refer to that needs the unit's bases.
#[derive(Default)]
struct UnitState<'a> {
    low_pc: Option<Deferred<u64>>,
    addr_base: Option<u64>,
    str_offsets_base: Option<u64>,
    loclists_base: Option<u64>,
    rnglists_base: Option<u64>,
    locs: Vec<ListRef>,
    ranges: Vec<ListRef>,
    tls_indices: Vec<u64>,
    dwo_name: Option<Deferred<&'a [u8]>>,
    comp_dir: Option<Deferred<&'a [u8]>>,
}

impl<'s, 'a> std::ops::Deref for Walk<'s, 'a> {
    type Target = Collect<'s, 'a>;
    fn deref(&self) -> &Collect<'s, 'a> {
        &self.c
    }
}

impl std::ops::DerefMut for Walk<'_, '_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.c
    }
}

impl<'s, 'a> Walk<'s, 'a> {
    pub fn new(s: &'s Sections<'a>) -> Walk<'s, 'a> {
        Walk {
            c: Collect::new(s),
            dwo: Vec::new(),
            macro_units: BTreeSet::new(),
            addr_bases: BTreeSet::new(),
            lists_seen: FastSet::default(),
            unit_dies_only: false,
        }
    }

    /// Walk every unit of `sec` (`.debug_info` or `.debug_types`).
    pub fn units(&mut self, sec: Sec) -> R<()> {
        let headers = headers(self.s, sec)?;
        self.walk_units(sec, &headers)
    }

    /// Walk the units `headers` of `sec`.
    pub fn walk_units(&mut self, sec: Sec, headers: &[UnitHeader<Slice<'a>>]) -> R<()> {
        if headers.is_empty() {
            return Ok(());
        }
        let bytes = self.s.bytes(sec)?;
        let abbrev = gimli::DebugAbbrev::from(Slice::new(self.s.bytes(Sec::Abbrev)?, LittleEndian));
        for h in headers {
            self.unit(sec, bytes, h, &abbrev)
                .map_err(|e| format!("{} unit at {:#x}: {e}", sec.name(), unit_offset(h)))?;
        }
        Ok(())
    }

    /// The split-DWARF objects the units named, sorted, each once.
    pub fn split_objects(self) -> Vec<String> {
        let dwo: BTreeSet<String> = self.dwo.into_iter().collect();
        dwo.into_iter().collect()
    }

    /// Take in what another walk over the same sections found.
    pub fn absorb(&mut self, other: Walk<'s, 'a>) {
        for (mine, theirs) in self.c.fields.iter_mut().zip(other.c.fields) {
            mine.extend(theirs);
        }
        self.dwo.extend(other.dwo);
        self.macro_units.extend(other.macro_units);
        self.addr_bases.extend(other.addr_bases);
        self.c.tls_addr.extend(other.c.tls_addr);
        self.lists_seen.extend(other.lists_seen);
    }

    fn unit(
        &mut self,
        sec: Sec,
        bytes: &'a [u8],
        h: &UnitHeader<Slice<'a>>,
        abbrev: &gimli::DebugAbbrev<Slice<'a>>,
    ) -> R<()> {
        let enc = h.encoding();
        if !(2..=5).contains(&enc.version) {
            return Err(format!("DWARF version {} is not supported", enc.version));
        }
        let base = unit_offset(h);
        let osize = enc.format.word_size();
        let len_size = if enc.format == Format::Dwarf64 { 12 } else { 4 };
        let abbrev_at = base + len_size + 2 + if enc.version >= 5 { 2 } else { 0 };
        self.push(sec, abbrev_at, Enc::Fixed(osize), Kind::Offset(Sec::Abbrev));

        let abbrevs = h.abbreviations(abbrev).map_err(|e| e.to_string())?;
        let mut entries = h.entries_raw(&abbrevs, None).map_err(|e| e.to_string())?;
        let mut st = UnitState::default();
        let mut first = true;
        let (loc_sec, rng_sec) = if enc.version >= 5 {
            (Sec::LocLists, Sec::RngLists)
        } else {
            (Sec::Loc, Sec::Ranges)
        };
        while !entries.is_empty() {
            let Some(ab) = entries.read_abbreviation().map_err(|e| e.to_string())? else {
                continue;
            };
            for spec in ab.attributes() {
                if spec.form() == dw::DW_FORM_indirect {
                    // The value's position would not be the attribute's.
                    return Err("DW_FORM_indirect is not supported".into());
                }
                let start = base + entries.next_offset().0;
                let attr = entries.read_attribute(*spec).map_err(|e| e.to_string())?;
                let end = base + entries.next_offset().0;
                let width = Enc::Fixed((end - start) as u8);
                let name = attr.name();
                match attr.raw_value() {
                    AttributeValue::Addr(v) => {
                        self.push(sec, start, width, Kind::Addr);
                        if first && name == dw::DW_AT_low_pc {
                            st.low_pc = Some(Deferred::Value(v));
                        }
                    }
                    AttributeValue::DebugAddrIndex(i) if first && name == dw::DW_AT_low_pc => {
                        st.low_pc = Some(Deferred::Index(i.0 as u64));
                    }
                    AttributeValue::DebugStrRef(_) => {
                        self.push(sec, start, width, Kind::Offset(Sec::Str));
                    }
                    AttributeValue::DebugLineStrRef(_) => {
                        self.push(sec, start, width, Kind::Offset(Sec::LineStr));
                    }
                    AttributeValue::DebugInfoRef(_) => {
                        self.push(sec, start, width, Kind::Offset(Sec::Info));
                    }
                    AttributeValue::DebugStrRefSup(_) | AttributeValue::DebugInfoRefSup(_) => {
                        return Err("refers to a supplementary object file (dwz)".into());
                    }
                    AttributeValue::DebugLocListsIndex(i) => {
                        st.locs.push(ListRef::Index(i.0 as u64))
                    }
                    AttributeValue::DebugRngListsIndex(i) => {
                        st.ranges.push(ListRef::Index(i.0 as u64))
                    }
                    AttributeValue::SecOffset(_)
                    | AttributeValue::Data4(_)
                    | AttributeValue::Data8(_) => {
                        let kind = self.offset_kind(&attr, &mut st, (loc_sec, rng_sec))?;
                        if let Some(t) = kind {
                            self.push(sec, start, width, Kind::Offset(t));
                        }
                    }
                    v @ (AttributeValue::Exprloc(_) | AttributeValue::Block(_)) => {
                        // Blocks are expressions only where the attribute
                        // takes one (gimli's reading of the attribute).
                        let is_expr = matches!(v, AttributeValue::Exprloc(_))
                            || matches!(attr.value(), AttributeValue::Exprloc(_));
                        if let (true, Some(e)) = (is_expr, v.exprloc_value()) {
                            let at = e.0.offset_from(Slice::new(bytes, LittleEndian));
                            let tls = expr::scan(&mut self.c, sec, bytes, at, e.0.len(), enc)?;
                            st.tls_indices.extend(tls);
                        }
                    }
                    _ => {}
                }
                if first {
                    let s = match attr.raw_value() {
                        AttributeValue::String(s) => Some(Deferred::Value(s.slice())),
                        AttributeValue::DebugStrRef(o) => {
                            Some(Deferred::Value(cstr_at(self.s.bytes(Sec::Str)?, o.0)?))
                        }
                        AttributeValue::DebugLineStrRef(o) => {
                            Some(Deferred::Value(cstr_at(self.s.bytes(Sec::LineStr)?, o.0)?))
                        }
                        AttributeValue::DebugStrOffsetsIndex(i) => {
                            Some(Deferred::Index(i.0 as u64))
                        }
                        _ => None,
                    };
                    match name {
                        dw::DW_AT_dwo_name | dw::DW_AT_GNU_dwo_name => st.dwo_name = s,
                        dw::DW_AT_comp_dir => st.comp_dir = s,
                        _ => {}
                    }
                }
            }
            first = false;
            if self.unit_dies_only {
                break;
            }
        }
        self.finish_unit(&st, enc)
    }

    /// The section a section-offset attribute points into (`None` for a
    /// constant), noting the bases and lists it names in `st`.
    fn offset_kind(
        &mut self,
        attr: &gimli::Attribute<Slice<'a>>,
        st: &mut UnitState<'a>,
        (loc_sec, rng_sec): (Sec, Sec),
    ) -> R<Option<Sec>> {
        let name = attr.name();
        Ok(match attr.value() {
            AttributeValue::DebugLineRef(_) => Some(Sec::Line),
            AttributeValue::LocationListsRef(o) => {
                st.locs.push(ListRef::Offset(o.0 as u64));
                Some(loc_sec)
            }
            AttributeValue::RangeListsRef(o) => {
                st.ranges.push(ListRef::Offset(o.0 as u64));
                Some(rng_sec)
            }
            AttributeValue::DebugMacinfoRef(_) => Some(Sec::Macinfo),
            AttributeValue::DebugMacroRef(o) => {
                self.macro_units.insert(o.0 as u64);
                Some(Sec::Macro)
            }
            AttributeValue::DebugAddrBase(o) => {
                st.addr_base = Some(o.0 as u64);
                self.addr_bases.insert(o.0 as u64);
                Some(Sec::Addr)
            }
            AttributeValue::DebugStrOffsetsBase(o) => {
                st.str_offsets_base = Some(o.0 as u64);
                Some(Sec::StrOffsets)
            }
            AttributeValue::DebugLocListsBase(o) => {
                st.loclists_base = Some(o.0 as u64);
                Some(Sec::LocLists)
            }
            AttributeValue::DebugRngListsBase(o) => {
                st.rnglists_base = Some(o.0 as u64);
                Some(Sec::RngLists)
            }
            AttributeValue::SecOffset(_) => match name {
                // View numbers next to location lists: offsets
                // only (the lists of numbers hold no address).
                dw::DW_AT_GNU_locviews => Some(loc_sec),
                dw::DW_AT_GNU_ranges_base => Some(Sec::Ranges),
                dw::DW_AT_GNU_macros => {
                    self.macro_units
                        .insert(attr.offset_value().unwrap_or(0) as u64);
                    Some(Sec::Macro)
                }
                _ => return Err(format!("{name} holds a section offset of a kind not known")),
            },
            // A constant.
            _ => None,
        })
    }

    /// Walk the unit's lists and record what its indices name.
    fn finish_unit(&mut self, st: &UnitState<'a>, enc: gimli::Encoding) -> R<()> {
        let asize = enc.address_size;
        let addr_entry = |i: u64| -> R<u64> {
            let b = st
                .addr_base
                .ok_or("an address index without DW_AT_addr_base")?;
            entry(b, i, asize)
        };
        let base = match st.low_pc {
            Some(Deferred::Value(v)) => v,
            Some(Deferred::Index(i)) => read_at(self.s.bytes(Sec::Addr)?, addr_entry(i)?, asize)?,
            None => 0,
        };
        for i in &st.tls_indices {
            let at = addr_entry(*i)?;
            self.tls_addr.insert(at);
        }
        let v5 = enc.version >= 5;
        let lists = if self.unit_dies_only {
            Vec::new()
        } else {
            vec![
                (
                    &st.locs,
                    if v5 { Sec::LocLists } else { Sec::Loc },
                    st.loclists_base,
                ),
                (
                    &st.ranges,
                    if v5 { Sec::RngLists } else { Sec::Ranges },
                    st.rnglists_base,
                ),
            ]
        };
        for (refs, sec, list_base) in lists {
            for r in refs {
                let off = match *r {
                    ListRef::Offset(o) => o,
                    ListRef::Index(i) => {
                        let b = list_base.ok_or("a list index without its base attribute")?;
                        let w = enc.format.word_size();
                        b.checked_add(read_at(self.s.bytes(sec)?, entry(b, i, w)?, w)?)
                            .ok_or("a list offset is out of range")?
                    }
                };
                if !self.lists_seen.insert((sec, off)) {
                    continue;
                }
                let ctx = lists::ListCtx {
                    enc,
                    base,
                    addr_base: st.addr_base,
                };
                match sec {
                    Sec::Loc => lists::v4(&mut self.c, true, off, &ctx)?,
                    Sec::Ranges => lists::v4(&mut self.c, false, off, &ctx)?,
                    Sec::LocLists => lists::v5(&mut self.c, true, off, &ctx)?,
                    _ => lists::v5(&mut self.c, false, off, &ctx)?,
                }
            }
        }
        let resolve = |d: Option<Deferred<&'a [u8]>>| -> R<Option<String>> {
            Ok(match d {
                None => None,
                Some(Deferred::Value(s)) => Some(String::from_utf8_lossy(s).into_owned()),
                Some(Deferred::Index(i)) => {
                    let b = st
                        .str_offsets_base
                        .ok_or("a string index without DW_AT_str_offsets_base")?;
                    let w = enc.format.word_size();
                    let o = read_at(self.s.bytes(Sec::StrOffsets)?, entry(b, i, w)?, w)?;
                    Some(
                        String::from_utf8_lossy(cstr_at(self.s.bytes(Sec::Str)?, o as usize)?)
                            .into_owned(),
                    )
                }
            })
        };
        if let Some(name) = resolve(st.dwo_name)? {
            let path = match resolve(st.comp_dir)? {
                Some(dir) if !name.starts_with('/') => format!("{dir}/{name}"),
                _ => name,
            };
            self.dwo.push(path);
        }
        Ok(())
    }
}

pub type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// The unit headers of `sec` (`.debug_info` or `.debug_types`).
pub fn headers<'a>(s: &Sections<'a>, sec: Sec) -> R<Vec<UnitHeader<Slice<'a>>>> {
    let Some(bytes) = s.get(sec) else {
        return Ok(Vec::new());
    };
    let err = |e: gimli::Error| format!("{}: {e}", sec.name());
    let data = Slice::new(bytes, LittleEndian);
    let mut headers = Vec::new();
    if sec == Sec::Info {
        let mut it = gimli::DebugInfo::from(data).units();
        while let Some(h) = it.next().map_err(err)? {
            headers.push(h);
        }
    } else {
        let mut it = gimli::DebugTypes::from(data).units();
        while let Some(h) = it.next().map_err(err)? {
            headers.push(h);
        }
    }
    Ok(headers)
}

fn unit_offset(h: &UnitHeader<Slice>) -> usize {
    match h.offset() {
        gimli::UnitSectionOffset::DebugInfoOffset(o) => o.0,
        gimli::UnitSectionOffset::DebugTypesOffset(o) => o.0,
    }
}

fn cstr_at(bytes: &[u8], at: usize) -> R<&[u8]> {
    Cursor::new(bytes, at, ".debug_str").cstr()
}
