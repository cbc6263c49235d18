//! `faasfuse-testkit`: the test kit's recorder and generator, for tests and
//! benchmarks.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "faasfuse-testkit",
    about = "Test data for faasfuse: LBR perf.data recorded under ptrace on any CPU, and large synthetic LBR profiles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record the taken branches of commands under ptrace as an LBR
    /// perf.data, with exact counts.
    RecordLbr(faasfuse_testkit::record::RecordArgs),
    /// Write a large synthetic LBR perf.data.
    GenLbr(faasfuse_testkit::record::gen::GenArgs),
}

fn main() -> ExitCode {
    let r = match Cli::parse().command {
        Command::RecordLbr(a) => faasfuse_testkit::record::record_main(a),
        Command::GenLbr(a) => faasfuse_testkit::record::gen::gen_main(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faasfuse-testkit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
