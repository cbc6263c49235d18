//! x86-64 analysis of function images: decoding with iced-x86, basic
//! blocks, the RPC call sites that fusion rewrites, and the byte sequences
//! that write PKRU ([`gadgets`]). Only code a byte
//! scan cannot rule out is decoded ([`scan`]).

mod cfg;
pub mod gadgets;
pub mod retpoline;
pub mod rpc;
pub mod scan;

pub use rpc::{constant_callees, find_rpc_sites, Callee, RpcSite};

/// Libraries of real compilers' code for unit tests (jump tables, landing
/// pads, retpolines where built so): the system's, and any listed in
/// `FAASFUSE_TEST_LIBS` (colon-separated).
#[cfg(test)]
pub(crate) fn test_libraries() -> Vec<std::path::PathBuf> {
    use std::path::PathBuf;
    let mut v: Vec<PathBuf> = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect();
    if let Ok(extra) = std::env::var("FAASFUSE_TEST_LIBS") {
        v.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    v
}
