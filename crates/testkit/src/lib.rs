//! faasfuse's test kit: what the tests and benchmarks need and the product
//! never does. `record` is an LBR recorder for CPUs without LBR (ptrace
//! breakpoints on every branch of the traced images, exact counts) and a
//! perf.data writer; `record::gen` writes large synthetic LBR profiles;
//! `synthetic` makes random deployments for the planner; `pku` runs
//! commands on a machine with memory protection keys (natively, or in a
//! QEMU TCG machine booted once per test binary). The
//! `faasfuse-testkit` binary runs the recorder and the generator.

pub mod nightcore;
pub mod pku;
pub mod record;
pub mod synthetic;
