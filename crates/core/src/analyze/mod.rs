//! x86-64 analysis of function images: decoding with iced-x86, basic
//! blocks, and the RPC call sites that fusion rewrites. Only code a byte
//! scan cannot rule out is decoded ([`scan`]).

mod cfg;
pub mod retpoline;
pub mod rpc;
pub mod scan;

pub use rpc::{constant_callees, find_rpc_sites, Callee, RpcSite};
