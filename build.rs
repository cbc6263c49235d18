//! Export the host's entry points for fused images from the `faasfuse`
//! binary (crates/host library.rs: `faasfuse_host_invoke`,
//! `faasfuse_host_depth`, `faasfuse_host_invoke_at`): the fusion runtime
//! finds them by name to count nesting depth across host RPCs and fused
//! calls.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for name in [
        "faasfuse_host_invoke",
        "faasfuse_host_depth",
        "faasfuse_host_invoke_at",
    ] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={name}");
    }
}
