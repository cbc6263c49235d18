//! Carries every input's DWARF into the fused image.
//!
//! Each output `.debug_*` section is the inputs' sections of that name one
//! after another, root first. Every field [`crate::debuginfo`] finds is
//! shifted by a constant of its image: addresses by the displacement, TLS
//! offsets by the image's place in the combined TLS block, offsets into
//! other debug sections by where the image's piece of that section starts.
//! The root keeps its addresses and comes first everywhere, so its DWARF
//! needs no change. An image whose DWARF cannot be read completely is left
//! out (the manifest says why); index sections (`.debug_names`) and any
//! section not understood are dropped, never left stale.

use std::borrow::Cow;
use std::collections::BTreeMap;

use object::elf;
use serde::Serialize;

use super::input::{DebugSection, Part};
use super::layout::Placement;
use crate::debuginfo::{self, Field, Kind, Sec};

/// One output debug section: its images' pieces, one after another.
pub struct DebugOut<'p> {
    pub(super) name: String,
    pub(super) flags: u64,
    pub(super) align: u64,
    pub(super) entsize: u64,
    pub(super) pieces: Vec<Cow<'p, [u8]>>,
}

impl DebugOut<'_> {
    pub fn size(&self) -> u64 {
        self.pieces.iter().map(|p| p.len() as u64).sum()
    }
}

/// What the fused image's debug info holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DebugSummary {
    /// Images whose DWARF the fused image carries.
    pub carried: Vec<String>,
    /// Images whose DWARF it does not carry, and why.
    pub left_out: Vec<LeftOut>,
    /// Sections dropped: (image, section).
    pub dropped_sections: Vec<(String, String)>,
    /// Split-DWARF objects the carried skeleton units name: gdb reads them
    /// from these paths.
    pub dwo: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeftOut {
    pub image: String,
    pub reason: String,
}

pub struct Carried<'p> {
    pub(super) sections: Vec<DebugOut<'p>>,
    pub(super) summary: DebugSummary,
}

/// The fields of the callees' DWARF, found in the background while the
/// merge analyses and lowers (finding needs no placement).
#[derive(Default)]
pub struct Finding {
    running: Vec<(
        String,
        std::thread::JoinHandle<Result<debuginfo::Found, String>>,
    )>,
}

impl Finding {
    /// Start finding the fields of `data`, the ELF file of image `name`.
    pub fn start(&mut self, name: &str, data: std::sync::Arc<crate::files::FileBytes>) {
        let handle = std::thread::spawn(move || debuginfo::fields_in_elf(&data));
        self.running.push((name.to_string(), handle));
    }

    /// What was found for image `name`, if it was started.
    fn take(&mut self, name: &str) -> Option<Result<debuginfo::Found, String>> {
        let at = self.running.iter().position(|(n, _)| n == name)?;
        let (_, handle) = self.running.swap_remove(at);
        Some(
            handle
                .join()
                .unwrap_or_else(|_| Err("reading its DWARF failed".into())),
        )
    }
}

/// Build the fused image's debug sections from `parts` placed at `placements`.
pub fn carry<'p>(parts: &'p [Part], placements: &[Placement], mut found: Finding) -> Carried<'p> {
    let mut summary = DebugSummary::default();
    // Only the root has debug info: its sections as they are (compressed
    // ones stay compressed).
    if parts[1..].iter().all(|p| p.debug_sections.is_empty()) {
        let root = &parts[0];
        let sections = root
            .debug_sections
            .iter()
            .filter_map(|d| {
                Some(DebugOut {
                    name: d.name.clone(),
                    flags: d.flags,
                    align: d.align,
                    entsize: d.entsize,
                    pieces: vec![Cow::Borrowed(raw(root, d)?)],
                })
            })
            .collect::<Vec<_>>();
        if !sections.is_empty() {
            summary.carried.push(root.name.clone());
            let mut budget = debuginfo::InflateBudget::default();
            let inflated: Vec<(Sec, Cow<[u8]>)> = root
                .debug_sections
                .iter()
                .filter_map(|d| {
                    Some((
                        Sec::from_name(&d.name)?,
                        inflate(root, d, &mut budget).ok()?,
                    ))
                })
                .collect();
            summary.dwo = split_objects(root, inflated.iter().map(|(s, b)| (*s, &**b)));
        }
        return Carried { sections, summary };
    }

    let mut out: BTreeMap<Sec, DebugOut> = BTreeMap::new();
    // `.debug_frame` holds only its own offsets and addresses: carried for
    // the root, whose addresses do not move.
    let mut frame: Option<DebugOut> = None;
    for (i, (p, pl)) in parts.iter().zip(placements).enumerate() {
        if p.debug_sections.is_empty() {
            continue;
        }
        match carry_part(p, pl, i == 0, found.take(&p.name), &out, &mut summary) {
            Ok(pieces) => {
                for (sec, d, bytes) in pieces {
                    if let Some(sec) = sec {
                        let o = out.entry(sec).or_insert_with(|| DebugOut {
                            name: sec.name().into(),
                            flags: d.flags & u64::from(elf::SHF_MERGE | elf::SHF_STRINGS),
                            align: 1,
                            entsize: d.entsize,
                            pieces: Vec::new(),
                        });
                        o.pieces.push(bytes);
                    } else {
                        frame = Some(DebugOut {
                            name: d.name.clone(),
                            flags: 0,
                            align: d.align,
                            entsize: 0,
                            pieces: vec![bytes],
                        });
                    }
                }
                summary.carried.push(p.name.clone());
            }
            Err(reason) => summary.left_out.push(LeftOut {
                image: p.name.clone(),
                reason,
            }),
        }
    }
    let mut sections: Vec<DebugOut> = out.into_values().collect();
    sections.extend(frame);
    Carried { sections, summary }
}

type Piece<'p> = (Option<Sec>, &'p DebugSection, Cow<'p, [u8]>);

/// One image's pieces, shifted to follow what `out` holds so far.
fn carry_part<'p>(
    p: &'p Part,
    pl: &Placement,
    root: bool,
    found: Option<Result<debuginfo::Found, String>>,
    out: &BTreeMap<Sec, DebugOut>,
    summary: &mut DebugSummary,
) -> Result<Vec<Piece<'p>>, String> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut budget = debuginfo::InflateBudget::default();
    for d in &p.debug_sections {
        let sec = Sec::from_name(&d.name);
        if sec.is_none() && !(root && d.name == ".debug_frame") {
            summary
                .dropped_sections
                .push((p.name.clone(), d.name.clone()));
            continue;
        }
        if pieces.iter().any(|(s, x, _)| *s == sec && x.name == d.name) {
            return Err(format!("two {} sections", d.name));
        }
        pieces.push((sec, d, inflate(p, d, &mut budget)?));
    }
    // The same span the background walk reads from the file.
    let span = debuginfo::Span::of_elf(&p.data)?;
    let mut secs = debuginfo::Sections::new(span);
    for (sec, _, bytes) in &pieces {
        if let Some(s) = sec {
            secs.set(*s, bytes);
        }
    }
    if root {
        // The root's DWARF is right where it is: only the names of its
        // split-DWARF objects are needed.
        summary.dwo = split_objects(p, pieces.iter().filter_map(|(s, _, b)| Some(((*s)?, &**b))));
        return Ok(pieces);
    }
    let found = match found {
        Some(f) => f?,
        None => debuginfo::find_fields(&secs)?,
    };
    for dwo in &found.dwo {
        summary.dwo.push((p.name.clone(), dwo.clone()));
    }
    let start = |s: Sec| out.get(&s).map_or(0, DebugOut::size);
    let inside = |a: u64| span.inside(a);
    let present: Vec<Sec> = pieces.iter().filter_map(|(x, _, _)| *x).collect();
    let has = |s: Sec| present.contains(&s);
    let by_sec: BTreeMap<Sec, &[Field]> = found
        .fields
        .chunk_by(|a, b| a.sec == b.sec)
        .map(|run| (run[0].sec, run))
        .collect();
    for (sec, _, bytes) in pieces.iter_mut() {
        let Some(sec) = *sec else { continue };
        let Some(fields) = by_sec.get(&sec) else {
            continue;
        };
        let bytes = bytes.to_mut();
        for f in fields.iter() {
            let v = debuginfo::read_field(bytes, f)?;
            let new = match f.kind {
                Kind::Addr if inside(v) => v.checked_add(pl.disp),
                Kind::Addr => Some(v),
                Kind::Tls => v.checked_add(pl.tls_offset.unwrap_or(0)),
                Kind::Offset(t) if has(t) => v.checked_add(start(t)),
                Kind::Offset(t) => {
                    return Err(format!(
                        "{} at {:#x} refers to {}, which the image does not have",
                        sec.name(),
                        f.at,
                        t.name()
                    ))
                }
                Kind::Relative { base } if !inside(base) && inside(base.wrapping_add(v)) => {
                    v.checked_add(pl.disp)
                }
                Kind::Relative { .. } => Some(v),
            }
            .ok_or_else(|| format!("{} at {:#x}: {v:#x} overflows", sec.name(), f.at))?;
            if new != v {
                debuginfo::write_field(bytes, f, new)?;
            }
        }
    }
    Ok(pieces)
}

/// The split-DWARF objects the skeleton units in `sections` of `p` name.
fn split_objects<'b>(
    p: &Part,
    sections: impl Iterator<Item = (Sec, &'b [u8])>,
) -> Vec<(String, String)> {
    // Only the units' own DIEs are read: no field is kept, so no span.
    let mut secs = debuginfo::Sections::new(debuginfo::Span::EMPTY);
    for (sec, bytes) in sections {
        secs.set(sec, bytes);
    }
    debuginfo::split_objects(&secs)
        .unwrap_or_default()
        .into_iter()
        .map(|d| (p.name.clone(), d))
        .collect()
}

/// The section's bytes in the input file.
fn raw<'p>(p: &'p Part, d: &DebugSection) -> Option<&'p [u8]> {
    let end = d.offset.checked_add(d.size)?;
    p.data.get(d.offset as usize..end as usize)
}

/// The section's bytes, uncompressed, within what is left of the image's
/// `budget`.
fn inflate<'p>(
    p: &'p Part,
    d: &DebugSection,
    budget: &mut debuginfo::InflateBudget,
) -> Result<Cow<'p, [u8]>, String> {
    let bytes = raw(p, d).ok_or_else(|| format!("{} lies outside the file", d.name))?;
    if d.flags & u64::from(elf::SHF_COMPRESSED) == 0 {
        return Ok(Cow::Borrowed(bytes));
    }
    let bad = || format!("{}: bad compression header", d.name);
    let word = |at: usize, n: usize| -> Result<u64, String> {
        let b = bytes.get(at..at + n).ok_or_else(bad)?;
        Ok(b.iter().rev().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
    };
    let format = match word(0, 4)? as u32 {
        elf::ELFCOMPRESS_ZLIB => object::CompressionFormat::Zlib,
        elf::ELFCOMPRESS_ZSTD => object::CompressionFormat::Zstandard,
        t => return Err(format!("{}: compression type {t} is not known", d.name)),
    };
    let size = word(8, 8)?;
    // The header (Elf64_Chdr) is 24 bytes; the stream follows it.
    let stream = bytes.get(24..).ok_or_else(bad)?;
    budget.take(&d.name, size)?;
    let data = object::CompressedData {
        format,
        data: stream,
        uncompressed_size: size,
    };
    data.decompress()
        .map_err(|e| format!("{}: cannot decompress: {e}", d.name))
}
