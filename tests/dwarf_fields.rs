//! The DWARF fields faasfuse shifts when it carries an image's debug info
//! are exactly the fields the link editor relocated: libraries linked with
//! `--emit-relocs` keep their `.rela.debug_*`, an oracle that shares nothing
//! with faasfuse's walk of units, DIEs, expressions, lists and tables.
//!
//! A relocation against another debug section is an offset into it; a
//! `R_X86_64_DTPOFF*` one is a TLS offset; any other is an address. Every
//! relocation must be a field of that kind, and every field that would
//! move (an offset, a TLS offset, an address inside the image, a list entry
//! whose base is not an address) must be a relocation.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use faasfuse_core::debuginfo::{fields_in_elf, Kind, Sec};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget};

/// What a relocation says the field at its offset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Says {
    Addr,
    Tls,
    Offset(Sec),
}

/// (section, offset) → what each `.rela.debug_*` relocation says.
fn relocations(data: &[u8]) -> BTreeMap<(Sec, u64), Says> {
    let file = object::File::parse(data).unwrap();
    let mut out = BTreeMap::new();
    for s in file.sections() {
        let Some(sec) = s.name().ok().and_then(Sec::from_name) else {
            continue;
        };
        for (off, r) in s.relocations() {
            let RelocationFlags::Elf { r_type } = r.flags() else {
                panic!("not ELF")
            };
            let target = match r.target() {
                RelocationTarget::Symbol(i) => {
                    let sym = file.symbol_by_index(i).unwrap();
                    sym.section_index()
                        .and_then(|x| file.section_by_index(x).ok())
                        .and_then(|t| t.name().ok().map(str::to_string))
                }
                _ => None,
            };
            let says = match (r_type, target.as_deref().and_then(Sec::from_name)) {
                (object::elf::R_X86_64_DTPOFF32 | object::elf::R_X86_64_DTPOFF64, _) => Says::Tls,
                (_, Some(t)) => Says::Offset(t),
                _ => Says::Addr,
            };
            out.insert((sec, off), says);
        }
    }
    out
}

/// The image's allocated address range, for "inside the image".
fn span(data: &[u8]) -> (u64, u64) {
    let file = object::File::parse(data).unwrap();
    let alloc: Vec<(u64, u64)> = file
        .sections()
        .filter(|s| {
            matches!(s.flags(), object::SectionFlags::Elf { sh_flags } if sh_flags & u64::from(object::elf::SHF_ALLOC) != 0)
                && s.size() > 0
        })
        .map(|s| (s.address(), s.address() + s.size()))
        .collect();
    let lo = alloc.iter().map(|a| a.0).min().unwrap();
    let hi = alloc.iter().map(|a| a.1).max().unwrap();
    (lo, hi)
}

fn check(lib: &Path) -> usize {
    let data = std::fs::read(lib).unwrap();
    let relocs = relocations(&data);
    assert!(
        relocs.len() > 20,
        "{}: only {} debug relocations: not linked with --emit-relocs?",
        lib.display(),
        relocs.len()
    );
    let found = fields_in_elf(&data).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    let (lo, hi) = span(&data);
    let inside = |a: u64| a >= lo && a <= hi;
    let secs: BTreeMap<Sec, Vec<u8>> = {
        let file = object::File::parse(&*data).unwrap();
        file.sections()
            .filter_map(|s| {
                let sec = Sec::from_name(s.name().ok()?)?;
                Some((sec, s.uncompressed_data().ok()?.into_owned()))
            })
            .collect()
    };
    let mut fields = BTreeMap::new();
    let mut problems = Vec::new();
    for f in &found.fields {
        let value = faasfuse_core::debuginfo::read_field(&secs[&f.sec], f).unwrap();
        fields.insert((f.sec, f.at), (f.kind, value));
        let moves = match f.kind {
            Kind::Offset(_) | Kind::Tls => true,
            Kind::Addr => inside(value),
            Kind::Relative { base } => !inside(base) && inside(base.wrapping_add(value)),
        };
        if moves && !relocs.contains_key(&(f.sec, f.at)) {
            problems.push(format!(
                "field {:?} at {}+{:#x} (value {value:#x}) has no relocation",
                f.kind,
                f.sec.name(),
                f.at
            ));
        }
    }
    for ((sec, at), says) in &relocs {
        let ok = match (fields.get(&(*sec, *at)), says) {
            (Some((Kind::Offset(t), _)), Says::Offset(u)) => t == u,
            (Some((Kind::Tls, _)), Says::Tls) => true,
            (Some((Kind::Addr | Kind::Relative { .. }, _)), Says::Addr) => true,
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "relocation at {}+{at:#x} ({says:?}) is field {:?}",
                sec.name(),
                fields.get(&(*sec, *at))
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}: {} of {} relocations/fields disagree:\n{}",
        lib.display(),
        problems.len(),
        relocs.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    relocs.len()
}

/// Build every example function with `cc flags -Wl,--emit-relocs` and
/// check each library's fields against its relocations.
fn check_variant(name: &str, cc: &str, cxx: &str, flags: &[&str]) {
    let dir = scratch_dir(&format!("dwarf-fields-{name}"));
    let src = repo().join("fixtures/functions");
    let mut total = 0;
    let mut sources: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sources.push(repo().join("tests/data/tracecallee.cc"));
    sources.sort();
    for s in sources {
        let stem = s.file_stem().unwrap().to_string_lossy().into_owned();
        let out = dir.join(format!("lib{stem}.so"));
        let compiler = if s.extension().unwrap() == "cc" {
            cxx
        } else {
            cc
        };
        let mut cmd = Command::new(compiler);
        cmd.args(["-shared", "-fPIC", "-Wl,--emit-relocs"])
            .arg(format!("-I{}", repo().join("fixtures/include").display()))
            .arg(format!("-I{}", repo().join("tests/data").display()))
            .args(flags)
            .arg(&s)
            .arg("-o")
            .arg(&out);
        if stem == "store" {
            cmd.arg("-lz");
        }
        let o = cmd
            .output()
            .unwrap_or_else(|e| panic!("{compiler} is not installed (Debian): {e}"));
        assert!(
            o.status.success(),
            "{compiler} {}: {}",
            s.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        total += check(&out);
    }
    assert!(total > 1000, "{name}: only {total} relocations checked");
}

#[test]
fn gcc_dwarf5_fields_are_its_relocations() {
    check_variant("gcc-5", "gcc", "g++", &["-O2", "-g", "-gdwarf-5"]);
}

#[test]
fn gcc_dwarf4_g3_type_units_fields_are_its_relocations() {
    check_variant(
        "gcc-4",
        "gcc",
        "g++",
        &["-O2", "-g3", "-gdwarf-4", "-fdebug-types-section"],
    );
}

#[test]
fn gcc_o0_fields_are_its_relocations() {
    check_variant("gcc-O0", "gcc", "g++", &["-O0", "-g"]);
}

#[test]
fn clang_fields_are_its_relocations() {
    require_tool("clang-16", &["--version"], "clang-16");
    let lld = "--ld-path=/usr/bin/ld.lld-16";
    check_variant(
        "clang-5",
        "clang-16",
        "clang++-16",
        &["-O2", "-g", "-fuse-ld=lld", lld],
    );
    check_variant(
        "clang-4",
        "clang-16",
        "clang++-16",
        &[
            "-O2",
            "-g",
            "-gdwarf-4",
            "-fdebug-types-section",
            "-fuse-ld=lld",
            lld,
        ],
    );
}

/// Damaged DWARF in a callee is read to an error or to fields, never to a
/// panic, and the merge still succeeds: the image's DWARF is then left out,
/// with the reason in the manifest, or carried.
#[test]
fn damaged_dwarf_of_a_callee_is_left_out_not_a_crash() {
    let dir = scratch_dir("dwarf-fields-damaged");
    let foo = build_example(&dir, "foo", &["-g", "-gdwarf-5"]);
    let bar = build_example(&dir, "bar", &["-g", "-gdwarf-5"]);
    let data = std::fs::read(&bar).unwrap();
    let ranges: Vec<(usize, usize)> = {
        let file = object::File::parse(&*data).unwrap();
        file.sections()
            .filter(|s| s.name().is_ok_and(|n| Sec::from_name(n).is_some()))
            .filter_map(|s| s.file_range())
            .map(|(o, n)| (o as usize, n as usize))
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    let mut rng = Rng::new(0xd3a2f);
    let (mut errors, mut merged, mut left_out) = (0, 0, 0);
    for round in 0..400 {
        let mut bad = data.clone();
        for _ in 0..1 + rng.below(4) {
            let (o, n) = ranges[rng.below(ranges.len())];
            bad[o + rng.below(n)] = rng.next() as u8;
        }
        if fields_in_elf(&bad).is_err() {
            errors += 1;
        }
        if round % 20 == 0 {
            let lib = dir.join("libbar-damaged.so");
            std::fs::write(&lib, &bad).unwrap();
            let m = merge_with_manifest(
                [spec("Foo", &foo), spec("Bar", &lib)],
                &dir.join("fused.so"),
                &[],
            );
            let info = &m["debug_info"];
            let carried = info["carried"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "Bar");
            let out_reason = info["left_out"].as_array().unwrap().iter().any(|l| {
                l["image"] == "Bar" && l["reason"].as_str().is_some_and(|r| !r.is_empty())
            });
            assert!(carried != out_reason, "round {round}: {info}");
            // `inspect` says the same before any merge.
            let report: serde_json::Value = serde_json::from_str(&run_stdout(
                faasfuse().arg("inspect").arg("--json").arg(&lib),
            ))
            .unwrap();
            assert_eq!(
                report["dwarf"]["carried"], carried,
                "round {round}: {report}"
            );
            if out_reason {
                let reason = info["left_out"][0]["reason"].clone();
                assert_eq!(report["dwarf"]["reason"], reason, "round {round}");
            }
            merged += 1;
            left_out += usize::from(out_reason);
        }
    }
    assert!(
        errors > 20,
        "only {errors} of 400 damaged copies were refused"
    );
    assert!(
        merged == 20 && left_out > 0,
        "{merged} merged, {left_out} left out"
    );
}

/// A compression header that asks for a terabyte is refused with its
/// reason, before anything is allocated: the callee's DWARF is left out,
/// and `inspect` says why.
#[test]
fn a_compressed_section_claiming_a_terabyte_is_left_out() {
    let dir = scratch_dir("dwarf-fields-bomb");
    let foo = build_example(&dir, "foo", &["-g"]);
    let bar = build_example(&dir, "bar", &["-g", "-gz=zlib"]);
    let mut data = std::fs::read(&bar).unwrap();
    let (offset, _) = {
        let file = object::File::parse(&*data).unwrap();
        let s = file.section_by_name(".debug_info").unwrap();
        s.file_range().unwrap()
    };
    // Elf64_Chdr: ch_type, ch_reserved, then ch_size.
    let at = offset as usize + 8;
    data[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let bomb = dir.join("libbar-bomb.so");
    std::fs::write(&bomb, &data).unwrap();

    let report: serde_json::Value = serde_json::from_str(&run_stdout(
        faasfuse().arg("inspect").arg("--json").arg(&bomb),
    ))
    .unwrap();
    assert_eq!(report["dwarf"]["carried"], false, "{}", report["dwarf"]);
    let reason = report["dwarf"]["reason"].as_str().unwrap();
    assert!(reason.contains("too large"), "{reason}");

    let m = merge_with_manifest(
        [spec("Foo", &foo), spec("Bar", &bomb)],
        &dir.join("fused.so"),
        &[],
    );
    let left = &m["debug_info"]["left_out"];
    assert_eq!(left[0]["image"], "Bar", "{left}");
    assert!(
        left[0]["reason"].as_str().unwrap().contains("too large"),
        "{left}"
    );
    assert_eq!(m["debug_info"]["carried"][0], "Foo");
}
