//! Build the fusion runtime (faasfuse_rt.c) into
//! `$OUT_DIR/libfaasfuse_rt.so` with the system C compiler; the faasfuse
//! core embeds it (src/lib.rs here) and transplants it into every
//! fused image.
//!
//! The compiler is `$FAASFUSE_RT_CC`, else `$CC`, else `cc`; it must produce
//! x86-64 code (the unit test in src/lib.rs checks). Sources are
//! passed by relative path from the crate root so that the output does not
//! depend on where the crate is checked out.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 7] = [
    "faasfuse_rt.c",
    "faasfuse_stack.c",
    "faasfuse_mpk.c",
    "faasfuse_rt.h",
    "faasfuse_stack.h",
    "faasfuse_mpk.h",
    "../../fixtures/include/faas_worker.h",
];

const FLAGS: &[&str] = &[
    "-std=c11",
    "-shared",
    "-fPIC",
    "-O2",
    // One branch per test of `a || b` on the fused-call path rather than
    // setcc/or chains (fewer instructions when the first test decides).
    "--param=logical-op-non-short-circuit=0",
    // Library calls (cold paths only) through the GOT, without PLT stubs.
    "-fno-plt",
    "-Wall",
    "-Wextra",
    "-fvisibility=hidden",
    "-fcf-protection=full",
    "-fexceptions",
    "-nostartfiles",
    "-Wl,--build-id",
    "-Wl,-z,now",
    "-Wl,-z,relro",
    "-I",
    "../../fixtures/include",
    "-I",
    ".",
];

/// What the probe prints: (Rust constant, C expression of type uint64_t, doc).
const LAYOUT: &[(&str, &str, &str)] = &[
    ("TABLE_MAGIC", "FF_TABLE_MAGIC", "`ff_table.magic`: \"FFTABLE1\" read as a little-endian `u64`."),
    ("TABLE_HEADER_SIZE", "offsetof(struct ff_table, images)", "Size of the table header (`magic`, `count`); entries follow."),
    ("IMAGE_ENTRY_SIZE", "sizeof(struct ff_image)", "Size of one `ff_image` entry."),
    ("ENTRY_NAME", "offsetof(struct ff_image, name)", "Offset in an entry of `name`: the function's name, a NUL-terminated string."),
    ("ENTRY_INIT", "offsetof(struct ff_image, init)", "Offset in an entry of `init`: the image's own `faas_init`."),
    ("ENTRY_CREATE", "offsetof(struct ff_image, create)", "Offset in an entry of `create`: the image's own `faas_create_func_worker`."),
    ("ENTRY_DESTROY", "offsetof(struct ff_image, destroy)", "Offset in an entry of `destroy`: the image's own `faas_destroy_func_worker`."),
    ("ENTRY_CALL", "offsetof(struct ff_image, call)", "Offset in an entry of `call`: the image's own `faas_func_call`."),
    ("ENTRY_RELRO_START", "offsetof(struct ff_image, relro_start)", "Offset in an entry of `relro_start`: start of the image's RELRO range, made read-only by the runtime's constructor (callees only; 0 = none)."),
    ("ENTRY_RELRO_END", "offsetof(struct ff_image, relro_end)", "Offset in an entry of `relro_end`: end (exclusive) of that range."),
    ("ENTRY_SPAN_START", "offsetof(struct ff_image, span_start)", "Offset in an entry of `span_start`: the lowest address of the image's segments (the runtime finds each image's writable segments by its span)."),
    ("ENTRY_SPAN_END", "offsetof(struct ff_image, span_end)", "Offset in an entry of `span_end`: end (exclusive) of the image's segments."),
    ("ENTRY_FLAGS", "offsetof(struct ff_image, flags)", "Offset in an entry of `flags`: [`FLAG_REENTRANT`], [`FLAG_ISOLATE_STACK`], [`FLAG_ISOLATE_MPK`]."),
    ("FLAG_REENTRANT", "FF_IMAGE_REENTRANT", "`ff_image.flags`: the function may be re-entered in one process (an extra worker serves the inner call instead of the host)."),
    ("FLAG_ISOLATE_STACK", "FF_IMAGE_ISOLATE_STACK", "`ff_image.flags`: every call of the function runs on a stack of its worker's own, and a fault in it fails that call (`--isolate stack`)."),
    ("FLAG_ISOLATE_MPK", "FF_IMAGE_ISOLATE_MPK", "`ff_image.flags`: with [`FLAG_ISOLATE_STACK`], the image's writable memory, stack and I/O buffers carry a protection key of its own, PKRU switched on call and return (`--isolate mpk`)."),
];

/// Build and run the layout probe; returns the Rust source it prints.
fn probe_layout(cc: &str, manifest_dir: &std::path::Path, out_dir: &std::path::Path) -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <inttypes.h>\n#include \"faasfuse_rt.h\"\nint main(void) {\n",
    );
    for (name, expr, doc) in LAYOUT {
        let doc = doc.replace('\\', "\\\\").replace('"', "\\\"");
        c.push_str(&format!(
            "    printf(\"/// %s\\npub const {name}: u64 = %#\" PRIx64 \";\\n\", \"{doc}\", (uint64_t)({expr}));\n"
        ));
    }
    c.push_str("    return 0;\n}\n");
    let src = out_dir.join("layout_probe.c");
    let exe = out_dir.join("layout_probe");
    std::fs::write(&src, c).expect("write the layout probe");
    let mut words = cc.split_whitespace();
    let status = Command::new(words.next().expect("non-empty compiler command"))
        .current_dir(manifest_dir)
        .args(words)
        .args(["-std=c11", "-I", "../../fixtures/include", "-I", ".", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("faasfuse: cannot build the runtime layout probe: {e}"));
    assert!(
        status.success(),
        "faasfuse: building the runtime layout probe failed"
    );
    let out = Command::new(&exe)
        .output()
        .unwrap_or_else(|e| panic!("faasfuse: cannot run the runtime layout probe: {e}"));
    assert!(
        out.status.success(),
        "faasfuse: the runtime layout probe failed"
    );
    String::from_utf8(out.stdout).expect("the probe prints ASCII")
}

fn main() {
    for s in SOURCES {
        println!("cargo:rerun-if-changed={s}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FAASFUSE_RT_CC");
    println!("cargo:rerun-if-env-changed=CC");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let output = out_dir.join("libfaasfuse_rt.so");

    // `CC` may carry a wrapper or flags ("ccache gcc", "gcc -m64").
    let cc = env::var("FAASFUSE_RT_CC")
        .or_else(|_| env::var("CC"))
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "cc".to_string());
    let mut words = cc.split_whitespace();
    let program = words.next().expect("non-empty compiler command");

    let mut cmd = Command::new(program);
    cmd.current_dir(&manifest_dir)
        .args(words)
        .args(FLAGS)
        .arg("-o")
        .arg(&output)
        .args(SOURCES.iter().filter(|s| s.ends_with(".c")));
    std::fs::write(
        out_dir.join("layout.rs"),
        probe_layout(&cc, &manifest_dir, &out_dir),
    )
    .expect("write layout.rs");
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "faasfuse: cannot run the C compiler `{cc}` to build the fusion runtime \
             ({SOURCES0}): {e}; install a C compiler or set CC",
            SOURCES0 = SOURCES[0]
        )
    });
    if !status.success() {
        panic!("faasfuse: building the fusion runtime failed: `{cmd:?}` exited with {status}");
    }
}
