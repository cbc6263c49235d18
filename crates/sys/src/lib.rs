//! The operating-system interface of faasfuse, and the one place outside
//! the host where `unsafe` code lives: input files read with bounds,
//! outputs that appear whole or not at all, child processes that cannot
//! outlive the tool, and the errors that name the file at fault. Every
//! `unsafe` block says why it is sound.

pub mod child;
pub mod error;
pub mod files;
pub mod hint;
pub mod output;
pub mod progress;
pub mod threads;
