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

use super::aggregate::{sum_branches, ImageProfile, Profile};
use super::images::{hex_decode, Lib};
use super::ingest::{image_profile, Acc};
use crate::error::InputError;

/// The `.fdata` text of one image's profile (branches when it has any,
/// else sampled addresses in `no_lbr` form); `None` when it has neither.
pub fn write(lib: &Lib, img: &ImageProfile) -> Option<String> {
    let mut out = String::new();
    if !img.branches.is_empty() {
        let all = sum_branches(img.branches.iter().chain(&img.fallthroughs).copied());
        for b in &all {
            let Some(from) = lib.symbols.at(b.from) else {
                continue;
            };
            let to = match b.to.and_then(|t| lib.symbols.at(t).map(|s| (s, t))) {
                Some((s, t)) => format!("1 {} {:x}", s.bolt, t - s.start),
                None => "0 [unknown] 0".to_string(),
            };
            let _ = writeln!(
                out,
                "1 {} {:x} {} {} {}",
                from.bolt,
                b.from - from.start,
                to,
                b.mispred,
                b.count
            );
        }
    } else if !img.addresses.is_empty() {
        out.push_str("no_lbr\n");
        for a in &img.addresses {
            if let Some(s) = lib.symbols.at(a.address) {
                let _ = writeln!(out, "1 {} {:x} {}", s.bolt, a.address - s.start, a.count);
            }
        }
    }
    (!out.is_empty()).then_some(out)
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

/// Read an `.fdata` for `lib` into an accumulator.
pub(crate) fn read_fdata(path: &Path, text: &str, lib: &Lib, acc: &mut Acc) -> Result<()> {
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let f: Vec<&str> = raw.split_whitespace().collect();
        match f.as_slice() {
            [] => {}
            ["no_lbr", ..] | ["boltedcollection"] => {}
            [fk, fname, foff, tk, tname, toff, mispred, count] => {
                let count = dec_u64(path, n, count)?;
                let mispred = dec_u64(path, n, mispred)?;
                let Some(from) = location(path, n, lib, fk, fname, foff)? else {
                    continue;
                };
                let to = location(path, n, lib, tk, tname, toff)?;
                let e = acc.branches.entry((from, to)).or_default();
                e.0 += count;
                e.1 += mispred;
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
                    let e = accs[l].branches.entry((from, to)).or_default();
                    e.0 += count;
                    e.1 += mispred;
                }
            }
            ["T", from, to, _ft_end, count] => {
                let (lf, from) = addr(n, from)?;
                let (lt, to) = addr(n, to)?;
                let count = dec_u64(path, n, count)?;
                if let Some(l) = lf {
                    let to = (lt == Some(l)).then_some(to);
                    accs[l].branches.entry((from, to)).or_default().0 += count;
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

/// Which `--lib` an `.fdata` file describes: the only one, or the one its
/// file stem names (`Foo.fdata`, `libfoo.so.fdata`).
fn lib_for(path: &Path, libs: &[Lib]) -> Result<usize> {
    if libs.len() == 1 {
        return Ok(0);
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    libs.iter()
        .position(|l| {
            l.name == stem
                || l.image.path.file_name().is_some_and(|f| f.to_string_lossy() == stem)
        })
        .ok_or_else(|| {
            InputError::new(
                path,
                "cannot tell which --lib this .fdata describes: name it NAME.fdata or give one --lib",
            )
            .into()
        })
}

/// Read an `.fdata` or pre-aggregated profile over `libs`.
pub fn ingest(path: &Path, text: &str, libs: &[Lib]) -> Result<Profile> {
    let mut accs: Vec<Acc> = libs.iter().map(|_| Acc::default()).collect();
    if is_preaggregated(text) {
        read_preaggregated(path, text, libs, &mut accs)?;
    } else {
        let l = lib_for(path, libs)?;
        read_fdata(path, text, &libs[l], &mut accs[l])?;
    }
    let mut p = Profile::new(vec![path.display().to_string()]);
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
