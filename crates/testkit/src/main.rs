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
    /// Serve workflows on real nightcore stacks, unfused and fused side by
    /// side, at several closed-loop concurrencies; one CSV row per run.
    NightcoreBench(faasfuse_testkit::nightcore::bench::BenchArgs),
}

fn main() -> ExitCode {
    let r = match Cli::parse().command {
        Command::RecordLbr(a) => faasfuse_testkit::record::record_main(a),
        Command::GenLbr(a) => faasfuse_testkit::record::gen::gen_main(a),
        Command::NightcoreBench(a) => faasfuse_testkit::nightcore::bench::bench_main(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faasfuse-testkit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
