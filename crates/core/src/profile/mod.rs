//! Profile ingestion: reading `perf.data` (LBR branch stacks and call
//! chains) and BOLT `.fdata`, mapping samples to function images by
//! build-id, and aggregating branch, call and RPC-site counts per image.

pub mod aggregate;
pub mod command;
mod counter;
pub mod fasthash;
pub mod fdata;
pub mod images;
pub mod ingest;
mod parallel;
pub mod perfdata;
pub mod planning;
pub mod symbols;
pub mod traces;
pub mod unwind;
