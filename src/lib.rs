//! faasfuse: an offline, link-time function fuser for serverless platforms.
//!
//! Pipeline stages, one module each, data flowing one way:
//! `elf` (load input images) → `analyze` (x86 decoding, RPC call sites) →
//! `merge` (fused images) → `verify`; later stages (profile, plan). `host` is the local FaaS
//! platform (`faasfuse run`) that every fused image is compared against.

pub mod analyze;
pub mod build;
pub mod elf;
pub mod error;
pub mod files;
pub mod host;
pub mod inspect;
pub mod lower;
pub mod merge;
pub mod output;
pub mod plan;
pub mod profile;
pub mod verify;
