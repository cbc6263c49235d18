//! BOLT's profile formats. `.fdata` names each address as a function
//! symbol and an offset into it, as perf2bolt writes it:
//!
//! ```text
//! 1 <from sym> <hex off> 1 <to sym> <hex off> <mispredicts> <count>
//! ```
//!
//! with `0 [unknown] 0` for a target outside the image, or, without branch
//! stacks (`no_lbr` header), `1 <sym> <hex off> <count>` per sampled
//! address. The pre-aggregated format (`llvm-bolt -pa`) gives addresses:
//! `B <from> <to> <count> <mispredicts>` for branches, `S <addr> <count>`
//! for samples, `F`/`f`/`r` fall-through ranges (not needed here), `T`
//! traces, each address plain hex or `<build-id>:<hex address>`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::aggregate::{sum_sorted_branches, BranchCount, ImageProfile, Profile};
use super::counter::Acc;
use super::images::{hex_decode, Lib};
use super::ingest::image_profile;
use crate::error::InputError;

/// The `.fdata` text of one image's profile (branches when it has any,
/// else sampled addresses in `no_lbr` form); `None` when it has neither.
/// The text comes in consecutive parts (formatted on several cores), to be
/// written one after another without joining them.
pub fn write(lib: &Lib, img: &ImageProfile) -> Option<Vec<String>> {
    let mut out = String::new();
    if !img.branches.is_empty() {
        let all = sum_sorted_branches(&img.branches, &img.fallthroughs);
        // Lines are formatted in parts on every core and joined in order.
        let threads = crate::threads::worker_threads().min(all.len() / 65536 + 1);
        let parts: Vec<&[BranchCount]> = all.chunks(all.len().div_ceil(threads)).collect();
        let texts = super::traces::map_parts(&parts, |p| branch_lines(lib, p));
        return texts.iter().any(|t| !t.is_empty()).then_some(texts);
    } else if !img.addresses.is_empty() {
        out.push_str("no_lbr\n");
        for a in &img.addresses {
            if let Some(s) = lib.symbols.at(a.address) {
                let _ = writeln!(out, "1 {} {:x} {}", s.bolt, a.address - s.start, a.count);
            }
        }
    }
    (!out.is_empty()).then(|| vec![out])
}

/// The `.fdata` lines of `branches` (sorted by source).
fn branch_lines(lib: &Lib, branches: &[BranchCount]) -> String {
    let mut out = String::with_capacity(branches.len() * 48);
    let (mut from_hint, mut to_hint) = (0, 0);
    for b in branches {
        let Some(from) = lib.symbols.at_hinted(b.from, &mut from_hint) else {
            continue;
        };
        let _ = write!(out, "1 {} {:x} ", from.bolt, b.from - from.start);
        match b
            .to
            .and_then(|t| lib.symbols.at_hinted(t, &mut to_hint).map(|s| (s, t)))
        {
            Some((s, t)) => {
                let _ = write!(out, "1 {} {:x}", s.bolt, t - s.start);
            }
            None => out.push_str("0 [unknown] 0"),
        }
        let _ = writeln!(out, " {} {}", b.mispred, b.count);
    }
    out
}

fn bad(path: &Path, line: usize, what: impl std::fmt::Display) -> anyhow::Error {
    InputError::new(path, format!("line {line}: {what}")).into()
}

fn hex_u64(path: &Path, line: usize, s: &str) -> Result<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| bad(path, line, format!("{s:?} is not a hexadecimal number")))
}

fn dec_u64(path: &Path, line: usize, s: &str) -> Result<u64> {
    s.parse()
        .map_err(|_| bad(path, line, format!("{s:?} is not a count")))
}

/// A `<is_sym> <name> <offset>` location as an address of `lib`; `None`
/// for `[unknown]` or a symbol the image does not have.
fn location(
    path: &Path,
    line: usize,
    lib: &Lib,
    kind: &str,
    name: &str,
    off: &str,
) -> Result<Option<u64>> {
    let off = hex_u64(path, line, off)?;
    match kind {
        "1" => Ok(lib.symbols.by_bolt_name(name).map(|s| s.start + off)),
        // Outside every symbol: BOLT writes `0 [unknown] 0`.
        "0" | "2" | "3" | "4" => Ok(None),
        _ => Err(bad(path, line, format!("unknown location kind {kind:?}"))),
    }
}

/// Read an `.fdata` for `lib` into an accumulator. A malformed record is
/// an error naming its line, or with `lenient` skipped and counted (the
/// count is returned).
pub(crate) fn read_fdata(
    path: &Path,
    text: &str,
    lib: &Lib,
    acc: &mut Acc,
    lenient: bool,
) -> Result<u64> {
    let mut skipped = 0;
    for (i, raw) in text.lines().enumerate() {
        match read_record(path, i + 1, raw, lib, acc) {
            Ok(()) => {}
            Err(_) if lenient => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(skipped)
}

/// One `.fdata` line; nothing is added to `acc` unless the whole record
/// reads.
fn read_record(path: &Path, n: usize, raw: &str, lib: &Lib, acc: &mut Acc) -> Result<()> {
    let f: Vec<&str> = raw.split_whitespace().collect();
    match f.as_slice() {
        [] => {}
        ["no_lbr", ..] | ["boltedcollection"] => {}
        [fk, fname, foff, tk, tname, toff, mispred, count] => {
            let count = dec_u64(path, n, count)?;
            let mispred = dec_u64(path, n, mispred)?;
            let from = location(path, n, lib, fk, fname, foff)?;
            let to = location(path, n, lib, tk, tname, toff)?;
            if let Some(from) = from {
                acc.branches.add(from, to, count, mispred);
            }
        }
        [k, name, off, count] => {
            let count = dec_u64(path, n, count)?;
            if let Some(at) = location(path, n, lib, k, name, off)? {
                *acc.ips.entry(at).or_default() += count;
            }
        }
        // Memory access records (`3`/`4` kinds with 7 fields) are not used.
        [_, _, _, _, _, _, _] => {}
        _ => return Err(bad(path, n, "not an fdata record")),
    }
    Ok(())
}

/// Read BOLT's pre-aggregated format, choosing the image of each address
/// by its build-id prefix (or the only image).
pub(crate) fn read_preaggregated(
    path: &Path,
    text: &str,
    libs: &[Lib],
    accs: &mut [Acc],
) -> Result<()> {
    let addr = |n: usize, s: &str| -> Result<(Option<usize>, u64)> {
        match s.split_once(':') {
            Some((id, a)) => {
                let id = hex_decode(id)
                    .ok_or_else(|| bad(path, n, format!("{id:?} is not a build-id")))?;
                let lib = libs
                    .iter()
                    .position(|l| l.build_id.as_deref() == Some(&id[..]));
                Ok((lib, hex_u64(path, n, a)?))
            }
            None if libs.len() == 1 => Ok((Some(0), hex_u64(path, n, s)?)),
            None => Err(bad(
                path,
                n,
                "plain addresses need exactly one --lib (or build-id:address locations)",
            )),
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let f: Vec<&str> = raw.split_whitespace().collect();
        match f.as_slice() {
            [] => {}
            ["E", ..] => {}
            ["B", from, to, count, mispred] => {
                let (lf, from) = addr(n, from)?;
                let (lt, to) = addr(n, to)?;
                let (count, mispred) = (dec_u64(path, n, count)?, dec_u64(path, n, mispred)?);
                if let Some(l) = lf {
                    let to = (lt == Some(l)).then_some(to);
                    accs[l].branches.add(from, to, count, mispred);
                }
            }
            ["T", from, to, _ft_end, count] => {
                let (lf, from) = addr(n, from)?;
                let (lt, to) = addr(n, to)?;
                let count = dec_u64(path, n, count)?;
                if let Some(l) = lf {
                    let to = (lt == Some(l)).then_some(to);
                    accs[l].branches.add(from, to, count, 0);
                }
            }
            ["S", at, count] => {
                let (l, at) = addr(n, at)?;
                let count = dec_u64(path, n, count)?;
                if let Some(l) = l {
                    *accs[l].ips.entry(at).or_default() += count;
                }
            }
            ["F" | "f" | "r", _, _, count] => {
                dec_u64(path, n, count)?;
            }
            _ => return Err(bad(path, n, "not a pre-aggregated record")),
        }
    }
    Ok(())
}

/// Which kind of profile text `bytes` hold.
pub fn is_preaggregated(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| {
            matches!(
                l.split_whitespace().next(),
                Some("B" | "F" | "f" | "S" | "T" | "E" | "r")
            )
        })
}

/// Which library an `.fdata` file describes. An `.fdata` names no image
/// (perf2bolt writes one per binary, by symbol name and offset), so: the
/// only library; else the one its file stem names (`Foo.fdata`,
/// `libfoo.so.fdata`, as `faasfuse profile --fdata-dir` writes them); else
/// the only library in which every location of the file is an instruction
/// of the named function (function libraries share names such as
/// `faas_func_call`, not their code).
fn lib_for(path: &Path, text: &str, libs: &[Lib]) -> Result<usize> {
    if libs.len() == 1 {
        return Ok(0);
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(i) = libs.iter().position(|l| {
        l.name == stem
            || l.image
                .path
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == stem)
    }) {
        return Ok(i);
    }
    let fits: Vec<Fit> = libs.iter().map(|l| fit(text, l)).collect();
    let whole: Vec<usize> = (0..libs.len()).filter(|&i| fits[i].whole()).collect();
    let names = |ix: &[usize]| -> String {
        ix.iter()
            .map(|&i| libs[i].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = match whole.as_slice() {
        [one] => return Ok(*one),
        [] => {
            let best = (0..libs.len()).max_by_key(|&i| fits[i].ok);
            match best {
                Some(b) if fits[b].all > 0 => format!(
                    "matches none of the libraries ({} fits {} of {} records)",
                    libs[b].name, fits[b].ok, fits[b].all
                ),
                _ => "names no function location".to_string(),
            }
        }
        many => format!("fits several libraries ({})", names(many)),
    };
    Err(InputError::new(
        path,
        format!("cannot tell which library this .fdata describes: it {why}; name it NAME.fdata or give it as NAME=FILE"),
    )
    .into())
}

/// How many of the first records of an `.fdata` name only instruction
/// boundaries inside functions of `lib` (PLT entries aside).
fn fit<'a>(text: &'a str, lib: &Lib) -> Fit {
    const CHECKED: usize = 4096;
    let mut starts: std::collections::HashMap<&'a str, Option<std::collections::HashSet<u64>>> =
        Default::default();
    let mut fits = |name: &'a str, off: &str| -> bool {
        let Ok(off) = u64::from_str_radix(off.trim_start_matches("0x"), 16) else {
            return false;
        };
        let set = starts.entry(name).or_insert_with(|| {
            let s = lib.symbols.by_bolt_name(name)?;
            let code = lib.image.read_vaddr(s.start, s.size as usize)?;
            let mut d = iced_x86::Decoder::with_ip(64, code, 0, iced_x86::DecoderOptions::NONE);
            let mut set = std::collections::HashSet::new();
            while d.can_decode() {
                set.insert(d.decode().ip());
            }
            Some(set)
        });
        set.as_ref().is_some_and(|s| s.contains(&off))
    };
    let (mut ok, mut all, mut ok_count, mut all_count) = (0, 0, 0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let mut locs: Vec<(&'a str, &'a str)> = match f.as_slice() {
            ["1", a, ao, "1", b, bo, _, _] => vec![(a, ao), (b, bo)],
            ["1", a, ao, _, _, _, _, _] | ["1", a, ao, _] => vec![(a, ao)],
            _ => continue,
        };
        // Every library has PLT entries at offset 0: no evidence.
        locs.retain(|(n, _)| !n.ends_with("@PLT"));
        if locs.is_empty() {
            continue;
        }
        let count = f.last().and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        all += 1;
        all_count += count;
        if locs.iter().all(|&(n, o)| fits(n, o)) {
            ok += 1;
            ok_count += count;
        }
        if all == CHECKED {
            break;
        }
    }
    Fit {
        ok,
        all,
        ok_count,
        all_count,
    }
}

/// How well an `.fdata` fits a library: records (and their counts) whose
/// locations are all instructions of the named functions, of all records.
#[derive(Debug, Clone, Copy)]
struct Fit {
    ok: usize,
    all: usize,
    ok_count: u64,
    all_count: u64,
}

impl Fit {
    fn whole(&self) -> bool {
        self.all > 0 && self.ok == self.all
    }
}

/// Read an `.fdata` or pre-aggregated profile over `libs`.
pub fn ingest(path: &Path, text: &str, libs: &[Lib], lenient: bool) -> Result<Profile> {
    ingest_for(path, text, libs, None, lenient)
}

/// [`ingest`], with the library an `.fdata` describes given (an index
/// into `libs`) or found by [`lib_for`].
pub fn ingest_for(
    path: &Path,
    text: &str,
    libs: &[Lib],
    lib: Option<usize>,
    lenient: bool,
) -> Result<Profile> {
    let mut skipped = 0;
    let mut accs: Vec<Acc> = libs.iter().map(|_| Acc::default()).collect();
    if is_preaggregated(text) {
        // Plain addresses belong to the library given, if one is.
        let r = lib.map_or(0..libs.len(), |l| l..l + 1);
        read_preaggregated(path, text, &libs[r.clone()], &mut accs[r])?;
    } else {
        let l = match lib {
            Some(l) => {
                // A profile of another library, or of another build of it:
                // most of its counts, or all of another library's, elsewhere.
                let f = fit(text, &libs[l]);
                let other =
                    (0..libs.len()).find(|&o| o != l && !f.whole() && fit(text, &libs[o]).whole());
                if f.ok_count * 2 < f.all_count || other.is_some() {
                    let fits_other = other
                        .map(|o| format!(" (all fit {})", libs[o].name))
                        .unwrap_or_default();
                    return Err(InputError::new(
                        path,
                        format!(
                            "given as {}'s profile, but only {} of its {} records name instructions of {}{fits_other}",
                            libs[l].name,
                            f.ok,
                            f.all,
                            libs[l].image.path.display()
                        ),
                    )
                    .into());
                }
                l
            }
            None => lib_for(path, text, libs)?,
        };
        skipped = read_fdata(path, text, &libs[l], &mut accs[l], lenient)?;
    }
    let mut p = Profile::new(vec![path.display().to_string()]);
    p.stats.bad_records += skipped;
    for (lib, mut acc) in libs.iter().zip(accs) {
        let n: u64 = acc.ips.values().sum();
        p.stats.samples += n;
        p.stats.matched_samples += n;
        p.stats.branches += acc.branches.values().map(|v| v.0).sum::<u64>();
        acc.attributed = acc.ips.clone();
        p.images.insert(lib.name.clone(), image_profile(lib, acc));
    }
    p.derive();
    Ok(p)
}
