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
    /// Run a command on a machine with protection keys: this one if its
    /// CPU has them, else the emulated machine the tests use (booted for
    /// this command); its stdout, stderr and exit status come back.
    PkuRun {
        /// The program and its arguments.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<std::ffi::OsString>,
    },
}

/// `pku-run`: the command's exit status, or 128 + its signal.
fn pku_run(command: &[std::ffi::OsString]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    let machine = faasfuse_testkit::pku::Machine::try_get().map_err(anyhow::Error::msg)?;
    eprintln!("faasfuse-testkit: running on {}", machine.where_());
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    let o = machine.try_run(&mut cmd, faasfuse_testkit::pku::DEFAULT_LIMIT * 6)?;
    std::io::stdout().write_all(&o.stdout)?;
    std::io::stderr().write_all(&o.stderr)?;
    let code = o
        .status
        .code()
        .or_else(|| o.status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn main() -> ExitCode {
    let r = match Cli::parse().command {
        Command::PkuRun { command } => {
            return pku_run(&command).unwrap_or_else(|e| {
                eprintln!("faasfuse-testkit: {e:#}");
                ExitCode::FAILURE
            })
        }
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
