//! The PKRU scan of a fused image: protection keys hold only while no
//! code the callee can jump to writes PKRU but the runtime's gates. After
//! the image is written, every byte it maps executable (the final bytes:
//! lowered calls, thunks and rewritten words included) is scanned at every
//! offset for WRPKRU, XRSTOR and XRSTORS sequences
//! ([`crate::analyze::gadgets`]). A sequence is vetted only when it is one
//! of the `WRPKRU` instructions of the runtime's `ff_pkru_gate*` functions,
//! as decoded; every other one is attributed to the input whose bytes hold
//! it, or to faasfuse's own code. With an image isolated with `mpk`, any
//! unvetted sequence refuses the merge; without, the manifest counts them.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::ElfFile64;
use serde::Serialize;

use super::emit::Output;
use super::input::{Part, Role};
use super::layout::Placement;
use super::runtime::PKRU_GATE_PREFIX;
use super::Isolation;
use crate::analyze::gadgets::{self, Hit, Run, Sequence, SEQUENCE_LEN};
use crate::error::InputError;

/// Who holds the PKRU-writing byte sequences of a fused image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PkruScan {
    /// `WRPKRU` instructions of the runtime's gates.
    pub vetted: usize,
    /// Every other sequence.
    pub unvetted: Vec<PkruSequence>,
}

/// A sequence outside the runtime's gates.
#[derive(Debug, Clone, Serialize)]
pub struct PkruSequence {
    pub sequence: Sequence,
    /// In the fused image.
    pub address: u64,
    /// The input whose bytes hold it, or `faasfuse` (its runtime, its new
    /// code and tables).
    pub holder: String,
    /// In the holder's own file, when it is an input.
    pub input_address: Option<u64>,
    /// Where it lies: inside one instruction, across two, outside the code.
    pub lies: String,
    #[serde(skip)]
    part: Option<usize>,
}

/// Scan the fused image `written` of `parts` (root first, runtime last)
/// laid out as `out`, its code read back from `written_file` (so that it
/// does not stay resident); refuse it when an image is isolated with `mpk` and a
/// sequence lies outside the gates.
pub(super) fn check(
    parts: &[Part],
    out: &Output,
    written: &[u8],
    written_file: &std::fs::File,
) -> Result<PkruScan> {
    let file = ElfFile64::<object::LittleEndian>::parse(written)
        .context("internal error: the fused image does not parse")?;
    let loads = crate::elf::load_segments(&file);
    let runs = gadgets::executable_runs(written, &loads);
    let gates = gate_wrpkrus(parts, &out.placements, &runs);
    let mut scan = PkruScan::default();
    let hits =
        gadgets::scan_with(&runs, Some(written_file)).context("reading the fused image back")?;
    for h in hits {
        if h.sequence == Sequence::Wrpkru && h.in_segment && gates.contains(&h.address) {
            scan.vetted += 1;
        } else {
            scan.unvetted.push(attribute(parts, out, &runs, h));
        }
    }
    // The decoder and the byte scan agree on the gates' own.
    anyhow::ensure!(
        scan.vetted == gates.len(),
        "internal error: the runtime's gates hold {} WRPKRU instructions, the scan found {}",
        gates.len(),
        scan.vetted
    );
    refuse(parts, &scan)?;
    Ok(scan)
}

/// The address of each `WRPKRU` instruction of the runtime's gates in the
/// fused image, decoded from the gates' starts.
fn gate_wrpkrus(parts: &[Part], placements: &[Placement], runs: &[Run]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for (p, pl) in parts.iter().zip(placements) {
        if p.role != Role::Runtime {
            continue;
        }
        for s in &p.symbols {
            if !s.name.starts_with(PKRU_GATE_PREFIX) || s.info & 0xf != elf::STT_FUNC || s.size == 0
            {
                continue;
            }
            let start = s.value + pl.disp;
            if let Some(code) = bytes_at(runs, start, s.size) {
                out.extend(gadgets::wrpkru_instructions(code, start));
            }
        }
    }
    out
}

/// The executable bytes `[start, start + len)`, if one run holds them all.
fn bytes_at<'a>(runs: &[Run<'a>], start: u64, len: u64) -> Option<&'a [u8]> {
    let r = runs
        .iter()
        .find(|r| start >= r.vaddr && start + len <= r.vaddr + r.bytes.len() as u64)?;
    let at = (start - r.vaddr) as usize;
    Some(&r.bytes[at..at + len as usize])
}

/// Who holds `h`, found by its file offset (the bytes at a page's edge
/// may be another part's): an input's loads, the new code, or the rest.
fn attribute(parts: &[Part], out: &Output, runs: &[Run], h: Hit) -> PkruSequence {
    let mut seq = PkruSequence {
        sequence: h.sequence,
        address: h.address,
        holder: "faasfuse".into(),
        input_address: None,
        lies: String::new(),
        part: None,
    };
    let outside = "outside any code segment, on a page mapped executable with code";
    for (k, (p, pl)) in parts.iter().zip(&out.placements).enumerate() {
        for (l, off) in p.pieces.iter().zip(&pl.load_offsets) {
            if h.offset < off.0 || h.offset >= off.0 + l.filesz {
                continue;
            }
            let vaddr = l.vaddr + (h.offset - off.0);
            if p.role != Role::Runtime {
                seq.holder = p.name.clone();
                seq.part = Some(k);
            }
            seq.input_address = (p.role != Role::Runtime).then_some(vaddr);
            seq.lies = if h.in_segment {
                in_image_code(p, pl, runs, h, vaddr)
            } else {
                format!("{outside}: {}'s bytes at {vaddr:#x}", p.name)
            };
            return seq;
        }
    }
    seq.lies = match out.text {
        Some(t) if h.offset >= t.offset.0 && h.offset < t.offset.0 + t.size => {
            let f = out
                .code_symbols
                .iter()
                .find(|c| h.address >= c.addr.0 && h.address < c.addr.0 + c.size);
            match f.and_then(|c| Some((c, bytes_at(runs, c.addr.0, c.size)?))) {
                Some((c, code)) => format!(
                    "{}, in faasfuse's new code {}",
                    gadgets::placement(code, c.addr.0, h.address),
                    c.name
                ),
                None => "in faasfuse's new code".into(),
            }
        }
        _ => format!("{outside}: faasfuse's tables"),
    };
    seq
}

/// Where `h`, at `vaddr` of part `p`'s code, lies: among the instructions
/// of its function, as written in the fused image (with whether faasfuse
/// wrote those bytes).
fn in_image_code(p: &Part, pl: &Placement, runs: &[Run], h: Hit, vaddr: u64) -> String {
    let f = p
        .symbols
        .iter()
        .filter(|s| s.info & 0xf == elf::STT_FUNC && s.size > 0)
        .find(|s| vaddr >= s.value && vaddr < s.value + s.size);
    let mut lies = match f.and_then(|s| Some((s, bytes_at(runs, s.value + pl.disp, s.size)?))) {
        Some((s, code)) => format!(
            "{}, in {}",
            gadgets::placement(code, s.value + pl.disp, h.address),
            s.name
        ),
        None => "in no function symbol".into(),
    };
    let now = bytes_at(runs, h.address, SEQUENCE_LEN as u64);
    if now.is_some() && p.bytes_at(vaddr, SEQUENCE_LEN as u64) != now {
        lies.push_str(", in bytes faasfuse wrote there");
    }
    if p.role == Role::Runtime {
        lies.push_str(" of faasfuse's fusion runtime");
    }
    lies
}

/// With an image isolated with `mpk`, the first unvetted sequence (one in
/// an `mpk` image first) refuses the merge: every executable byte of the
/// fused object is one jump away from the callee.
fn refuse(parts: &[Part], scan: &PkruScan) -> Result<()> {
    let mpk = |k: usize| parts[k].fusion.isolation == Isolation::Mpk;
    let Some(first_mpk) = (0..parts.len()).find(|&k| mpk(k)) else {
        return Ok(());
    };
    let own = scan.unvetted.iter().find(|s| s.part.is_some_and(mpk));
    let Some(s) = own.or(scan.unvetted.first()) else {
        return Ok(());
    };
    let n = scan.unvetted.len();
    let more = if n > 1 {
        format!(" ({n} such sequences in all)")
    } else {
        String::new()
    };
    let name = match s.sequence {
        Sequence::Wrpkru => "a WRPKRU",
        Sequence::Xrstor => "an XRSTOR",
        Sequence::Xrstors => "an XRSTORS",
    };
    let at = match s.input_address {
        Some(a) => format!("{a:#x} ({}; {:#x} in the fused image)", s.lies, s.address),
        None => format!("{:#x} ({})", s.address, s.lies),
    };
    let err = match s.part {
        Some(k) if mpk(k) => InputError::new(
            &parts[k].path,
            format!(
                "`--isolate mpk` refused for {}: its code holds {name} byte sequence at {at}: \
                 it could reopen the protection keys{more}",
                parts[k].name
            ),
        ),
        holder => {
            let victim = &parts[first_mpk];
            let whose = match holder {
                Some(k) => format!("{}'s code", parts[k].name),
                None => "faasfuse's own code".into(),
            };
            InputError::new(
                &parts[holder.unwrap_or(first_mpk)].path,
                format!(
                    "`--isolate mpk` refused for {}: {whose} holds {name} byte sequence at \
                     {at}, which {} could jump to and reopen the protection keys{more}",
                    victim.name, victim.name
                ),
            )
        }
    };
    Err(err.into())
}
