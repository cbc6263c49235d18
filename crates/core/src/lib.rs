//! faasfuse's core: everything the tool decides and writes, as plain data
//! flowing one way, with no `unsafe` code (the operating-system calls it
//! needs live in `faasfuse-sys`):
//!
//! `elf` (load and validate input images) → `analyze` (x86 decoding, RPC
//! call sites, CFGs) → `profile` (perf.data, `.fdata`, traces → edge counts)
//! → `plan` (fusion groups under budgets) → `lower` (RPC sites → direct
//! calls) → `merge` (one fused ELF image per group) → `verify` (structural
//! checks and a load test). `build` runs the whole pipeline over a
//! deployment; `inspect` reads fused images back.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod build;
pub mod debuginfo;
pub mod elf;
pub mod hash;
pub mod inspect;
pub mod loaded;
pub mod lower;
pub mod merge;
pub mod plan;
pub mod profile;
pub mod spec;
pub mod timing;
pub mod verify;

pub use faasfuse_runtime as runtime;
pub use faasfuse_sys::{error, files, output, progress, threads};
