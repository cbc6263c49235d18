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

const SOURCES: [&str; 5] = [
    "faasfuse_rt.c",
    "faasfuse_stack.c",
    "faasfuse_rt.h",
    "faasfuse_stack.h",
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
