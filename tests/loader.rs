//! Inputs read as the dynamic linker reads them. ld.so goes by the program
//! headers and the dynamic segment; section headers are optional and it
//! ignores them. Each case here damages a fixture library only where ld.so
//! does not look (or where it refuses the file), and `merge` must then
//! either fuse it into an image that answers as the unfused deployment
//! does, run and compared, or refuse it with exit 2 naming the file.

mod common;
use common::damage;
use common::elf_bytes::*;
use common::*;

use std::path::{Path, PathBuf};

const SHF_ALLOC: u64 = 2;
const SHT_PROGBITS: u32 = 1;
const SHT_NOTE: u32 = 7;

fn dir() -> PathBuf {
    scratch_dir("loader")
}

/// A copy of the hello workflow's `lib` (libfoo.so or libbar.so) with `f`
/// applied, as `out`.
fn damaged(lib: &str, out: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    damage::damaged_copy(&fixtures().join("default").join(lib), &dir(), out, f)
}

/// The hello workflow's inputs, written once for every test here.
fn inputs() -> &'static Path {
    static F: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    F.get_or_init(|| input_file("loader-hello", &generate_inputs(&workflow("hello"), 40, 11)))
}

/// `faasfuse run` of Foo and Bar (either may be damaged).
fn serve_unfused(root: &Path, callee: &Path) -> String {
    serve(
        &[
            format!("Foo={}", root.display()),
            format!("Bar={}", callee.display()),
        ],
        "Foo",
        inputs(),
        false,
    )
}

/// Merge Foo and Bar: the fused image must answer as the undamaged
/// deployment, or the merge must exit 2 naming `bad`.
fn fuses_or_refuses(tag: &str, root: &Path, callee: &Path, bad: &Path) -> &'static str {
    let clean = fixtures().join("default");
    let want = serve_unfused(&clean.join("libfoo.so"), &clean.join("libbar.so"));
    // The damage is invisible to ld.so: the damaged deployment runs alike.
    assert_eq!(serve_unfused(root, callee), want, "{tag}: unfused");
    let out = dir().join(format!("{tag}.fused.so"));
    let _ = std::fs::remove_file(&out);
    let o = faasfuse()
        .arg("merge")
        .arg(format!("Foo={}", root.display()))
        .arg(format!("Bar={}", callee.display()))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        let got = serve(&[format!("Foo={}", out.display())], "Foo", inputs(), false);
        assert_eq!(got, want, "{tag}: the fused image answers otherwise");
        "fused"
    } else {
        assert_eq!(o.status.code(), Some(2), "{tag}: {err}");
        assert!(err.contains(&bad.display().to_string()), "{tag}: {err}");
        assert!(!out.exists(), "{tag}: output left");
        "refused"
    }
}

/// One section header field changed in the root and, separately, in the
/// callee.
fn section_lie(tag: &str, section_name: &str, f: impl Fn(&mut [u8], usize)) -> [&'static str; 2] {
    let clean = fixtures().join("default");
    let apply = |lib: &str, out: &str| {
        damaged(lib, out, |d| {
            let (h, _, _) =
                section(d, section_name).unwrap_or_else(|| panic!("{lib} has no {section_name}"));
            f(d, h)
        })
    };
    let root = apply("libfoo.so", &format!("{tag}-foo.so"));
    let callee = apply("libbar.so", &format!("{tag}-bar.so"));
    [
        fuses_or_refuses(
            &format!("{tag}-root"),
            &root,
            &clean.join("libbar.so"),
            &root,
        ),
        fuses_or_refuses(
            &format!("{tag}-callee"),
            &clean.join("libfoo.so"),
            &callee,
            &callee,
        ),
    ]
}

fn clear_alloc(d: &mut [u8], h: usize) {
    let flags = u64_at(d, h + 8);
    put64(d, h + 8, flags & !SHF_ALLOC);
}

#[test]
fn relocation_sections_without_shf_alloc() {
    // Relocations come from DT_JMPREL and DT_RELA, as ld.so reads them.
    assert_eq!(
        section_lie("rela-plt-noalloc", ".rela.plt", clear_alloc),
        ["fused"; 2]
    );
    assert_eq!(
        section_lie("rela-dyn-noalloc", ".rela.dyn", clear_alloc),
        ["fused"; 2]
    );
}

#[test]
fn relocation_sections_of_another_type() {
    let progbits = |d: &mut [u8], h: usize| put32(d, h + 4, SHT_PROGBITS);
    assert_eq!(
        section_lie("rela-plt-progbits", ".rela.plt", progbits),
        ["fused"; 2]
    );
    assert_eq!(
        section_lie("rela-dyn-progbits", ".rela.dyn", progbits),
        ["fused"; 2]
    );
}

#[test]
fn read_only_data_the_section_headers_misdescribe() {
    // Whatever the headers say of .rodata, its bytes stay in the image.
    for (tag, f) in [
        ("rodata-noalloc", clear_alloc as fn(&mut [u8], usize)),
        ("rodata-note", |d: &mut [u8], h: usize| {
            put32(d, h + 4, SHT_NOTE)
        }),
        ("rodata-addr", |d: &mut [u8], h: usize| {
            let a = u64_at(d, h + 16);
            put64(d, h + 16, a + 0x40)
        }),
    ] {
        assert_eq!(section_lie(tag, ".rodata", f), ["fused"; 2], "{tag}");
    }
}

/// `merge` with `bad` as the callee (Bar) of the hello workflow exits 2
/// naming it and saying `reason`, on one line, and writes nothing.
fn merge_refuses(bad: &Path, reason: &str) {
    damage::merge_refuses(bad, false, reason, &dir());
}

/// Whether the dynamic linker itself loads `lib` (`dlopen` through
/// Python's ctypes, in a process of its own).
fn ld_so_loads(lib: &Path) -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])"])
        .arg(lib)
        .output()
        .expect("python3 (CI installs it)")
        .status
        .success()
}

/// The first `.rela.plt` entry of libbar.so (headers intact here).
fn first_plt_reloc(d: &[u8]) -> usize {
    section(d, ".rela.plt")
        .expect("libbar.so has PLT relocations")
        .1
}

#[test]
fn lazy_binding_slots_ld_so_would_bind_elsewhere_are_refused() {
    // ld.so binds a JUMP_SLOT to its symbol plus the addend.
    let addend = damaged("libbar.so", "jump-slot-addend.so", |d| {
        let r = first_plt_reloc(d);
        put64(d, r + 16, 8);
    });
    merge_refuses(&addend, "JUMP_SLOT) has addend 8");
    let nosym = damaged("libbar.so", "jump-slot-nosym.so", |d| {
        let r = first_plt_reloc(d);
        let info = u64_at(d, r + 8);
        put64(d, r + 8, info & 0xffff_ffff);
    });
    merge_refuses(&nosym, "JUMP_SLOT) names no symbol");
}

#[test]
fn identifications_ld_so_refuses_are_refused() {
    for (tag, at, value, reason) in [
        ("osabi-freebsd", 7, 9u8, "OS ABI 9 (EI_OSABI)"),
        ("abiversion", 8, 1, "EI_ABIVERSION"),
        ("ei-version", 6, 2, "EI_VERSION"),
        ("ei-pad", 12, 1, "EI_PAD"),
    ] {
        let bad = damaged("libbar.so", &format!("{tag}.so"), |d| d[at] = value);
        merge_refuses(&bad, reason);
        // The dynamic linker itself refuses it.
        assert!(!ld_so_loads(&bad), "{tag}: ld.so loaded it");
        assert!(ld_so_loads(&fixtures().join("default/libbar.so")));
    }
}

/// libfoo.so built with compressed debug sections (`-g -gz`), then `f`.
fn compressed_debug(out: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let d = scratch_dir("loader-gz");
    let built = build_example(&d, "foo", &["-g", "-gz=zlib"]);
    let mut bytes = std::fs::read(&built).unwrap();
    f(&mut bytes);
    let p = dir().join(out);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Merge `root` (a damaged libfoo.so) with libbar.so: exit 0 or 2, never a
/// panic; the report.
fn merge_root(root: &Path, out: &str) -> (Option<i32>, String) {
    let out = dir().join(out);
    let o = faasfuse()
        .arg("merge")
        .arg(format!("Foo={}", root.display()))
        .arg(fixtures().join("default/libbar.so"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    (o.status.code(), text)
}

#[test]
fn compressed_debug_sections_shorter_than_their_header_or_too_large_in_all() {
    // A compressed section of 10 bytes: less than its Elf64_Chdr.
    let short = compressed_debug("gz-short.so", |d| {
        let (h, _, _) = section(d, ".debug_info").unwrap();
        put64(d, h + 32, 10);
    });
    merge_root(&short, "gz-short.fused.so");
    // Four compressed sections that each inflate, for real, to 600 MiB of
    // zeros: each is allowed alone, not all together (what is left over is
    // not inflated). Peak memory of the merge stays near one of them.
    let plain = compressed_debug("gz-big-base.so", |_| {});
    let big = dir().join("gz-big.so");
    let script = r#"
import resource, struct, subprocess, sys, zlib
src, dst, ff, libbar, out = sys.argv[1:6]
d = bytearray(open(src, "rb").read())
size = 600 << 20
z = zlib.compressobj()
stream = b"".join(z.compress(bytes(1 << 20)) for _ in range(600)) + z.flush()
shoff, = struct.unpack_from("<Q", d, 40)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 58)
names, = struct.unpack_from("<Q", d, shoff + shstrndx * shentsize + 24)
for i in range(shnum):
    h = shoff + i * shentsize
    n, = struct.unpack_from("<I", d, h)
    name = bytes(d[names + n:d.index(0, names + n)])
    if name in (b".debug_info", b".debug_abbrev", b".debug_line", b".debug_str"):
        at = len(d)
        d += struct.pack("<IIQQ", 1, 0, size, 1) + stream
        struct.pack_into("<QQ", d, h + 24, at, 24 + len(stream))
open(dst, "wb").write(d)
r = subprocess.run([ff, "merge", "Foo=" + dst, libbar, "-o", out], capture_output=True, text=True)
sys.stdout.write(r.stdout + r.stderr)
print("exit", r.returncode, "maxrss_kib", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"#;
    let o = run_ok(
        std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&plain)
            .arg(&big)
            .arg(env!("CARGO_BIN_EXE_faasfuse"))
            .arg(fixtures().join("default/libbar.so"))
            .arg(dir().join("gz-big.fused.so")),
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let last: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
    assert!(matches!(last[1], "0" | "2"), "{text}");
    let rss_kib: u64 = last[3].parse().unwrap();
    assert!(
        rss_kib < 1200 << 10,
        "merge peaked at {} MiB inflating 4 x 600 MiB: {text}",
        rss_kib >> 10
    );
}

/// Without section headers ld.so loads a library, and so does faasfuse: the
/// sections are recovered from the program headers and the dynamic
/// segment, and the fused image answers as the unfused deployment does,
/// whether the root, the callee or both were stripped, by the real tool or
/// by zeroing the header's fields.
#[test]
fn libraries_without_section_headers_fuse_and_answer_as_unfused() {
    let clean = fixtures().join("default");
    let strip = |lib: &str| {
        let out = dir().join(format!("stripped-{lib}"));
        let o = std::process::Command::new("llvm-objcopy-16")
            .arg("--strip-sections")
            .arg(clean.join(lib))
            .arg(&out)
            .output()
            .expect("llvm-objcopy-16 (CI installs llvm-16)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(u64_at(&std::fs::read(&out).unwrap(), 40), 0, "e_shoff");
        out
    };
    let (root, callee) = (strip("libfoo.so"), strip("libbar.so"));
    // e_shoff, e_shnum and e_shstrndx zero: the table is gone, its bytes stay.
    let zeroed = damaged("libbar.so", "zeroed-section-headers.so", |d| {
        put64(d, 40, 0);
        d[60..64].fill(0);
    });
    for lib in [&root, &callee, &zeroed] {
        assert!(ld_so_loads(lib), "ld.so loads {}", lib.display());
    }
    let foo = clean.join("libfoo.so");
    for (tag, r, c) in [
        ("stripped-root", &root, &clean.join("libbar.so")),
        ("stripped-callee", &foo, &callee),
        ("stripped-both", &root, &callee),
        ("zeroed-callee", &foo, &zeroed),
    ] {
        assert_eq!(fuses_or_refuses(tag, r, c, c), "fused", "{tag}");
        // The RPC site was found and lowered to a direct call all the
        // same, as objdump decodes the fused code.
        let out = dir().join(format!("{tag}.fused.so"));
        let o = std::process::Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.lines()
                .any(|l| l.contains("call") && l.contains("<Foo::to_Bar@")),
            "{tag}: no direct call of Bar"
        );
    }
}

/// Every example workflow, C and C++ (exceptions, unique statics, TLS),
/// with every library stripped of its section headers, fuses and answers
/// as the unfused deployment does, with every RPC site lowered as in the
/// unstripped libraries.
#[test]
fn every_workflow_fuses_with_every_library_stripped_of_section_headers() {
    let clean = fixtures().join("default");
    let stripped = dir().join("stripped-all");
    std::fs::create_dir_all(&stripped).unwrap();
    for e in std::fs::read_dir(&clean).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "so") {
            let o = std::process::Command::new("llvm-objcopy-16")
                .arg("--strip-sections")
                .arg(&p)
                .arg(stripped.join(p.file_name().unwrap()))
                .output()
                .expect("llvm-objcopy-16 (CI installs llvm-16)");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    for w in workflows() {
        let inputs = generate_inputs(&w, 200, 0x5ec7);
        let file = input_file(&format!("loader-stripped-{}", w.name), &inputs);
        let unfused = serve(&w.run_args("default"), &w.root, &file, false);
        let tiers = |m: &serde_json::Value| -> Vec<(u64, u64)> {
            m["rpc_sites"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["address"].as_u64().unwrap(), s["tier"].as_u64().unwrap()))
                .collect()
        };
        let want = fuse_workflow(
            &w,
            "default",
            &dir().join(format!("{}-clean.so", w.name)),
            &[],
        );
        let out = dir().join(format!("{}-stripped.so", w.name));
        let got = fuse_workflow_in(&w, &stripped, &out, &[]);
        assert_eq!(tiers(&got), tiers(&want), "{}: sites and tiers", w.name);
        let deploy = vec![format!("{}={}", w.root, out.display())];
        let fused = serve(&deploy, &w.root, &file, false);
        assert_lines_equal(&unfused, &fused, &inputs, &format!("{} stripped", w.name));
    }
}

/// What cannot be recovered without guessing is refused: a dynamic symbol
/// table that overlaps the string table.
#[test]
fn unrecoverable_section_headers_are_refused_with_the_reason() {
    let bad = damaged("libbar.so", "no-sections-overlap.so", |d| {
        let strtab = u64_at(d, dyn_value(d, 5));
        let symtab = dyn_value(d, 6);
        put64(d, symtab, strtab - 8);
        put64(d, 40, 0);
        d[60..64].fill(0);
    });
    merge_refuses(&bad, "cannot be recovered");
}

/// Fuzz findings, kept as regression inputs (tests/data/fuzz): a
/// `.gnu.hash` header whose size reaches over the code (its bytes were
/// dropped and the fused image crashed), code section headers that move
/// the code (merge panicked), and a `.symtab` header marked allocated (the
/// output named it as a symbol table without strings).
#[test]
fn section_header_fuzz_findings_fuse_and_answer_as_unfused() {
    let data = repo().join("tests/data/fuzz");
    let clean = fixtures().join("default");
    let hash = data.join("callee-gnu-hash-oversized.so");
    assert_eq!(
        fuses_or_refuses("fuzz-gnu-hash", &clean.join("libfoo.so"), &hash, &hash),
        "fused"
    );
    // Code section headers that place the code elsewhere: the RPC site
    // found through them does not decode the same in its function, so it
    // is not lowered (lowering it panicked).
    let code = data.join("root-code-headers-misplaced.so");
    assert_eq!(
        fuses_or_refuses("fuzz-code-headers", &code, &clean.join("libbar.so"), &code),
        "fused"
    );
    let out = dir().join("fuzz-symtab.fused.so");
    run_ok(
        faasfuse()
            .arg("merge")
            .arg(clean.join("libfoo.so"))
            .arg(format!(
                "Bar={}",
                data.join("callee-symtab-allocated.so").display()
            ))
            .arg("-o")
            .arg(&out),
    );
    run_ok(faasfuse().arg("verify").arg(&out));
}

/// `verify` and `merge` agree on a damaged input: exit 2 naming it.
#[test]
fn verify_and_merge_both_exit_2_naming_a_damaged_input() {
    let bad = repo().join("tests/data/fuzz/callee-does-not-load.so");
    let o = faasfuse().arg("verify").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("verification failed"),
        "{err}"
    );
    merge_refuses(&bad, "does not load by itself");
}

/// A library whose constructor traps: `run` says so in one line naming it
/// (exit 2) instead of dying of the signal with nothing said.
#[test]
fn run_names_a_library_whose_initializer_crashes() {
    let lib = build_test_lib("trap_ctor.c", &scratch_dir("loader-trap"));
    let o = faasfuse()
        .arg("run")
        .arg(format!("Trap={}", lib.display()))
        .args(["--", "Trap", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&lib.display().to_string()) && err.contains("crashed in its initializers"),
        "{err}"
    );
}
