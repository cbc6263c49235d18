//! The faasfuse command line: parses arguments, calls pipeline stages,
//! prints. No logic of its own.

mod cli;
mod commands;
mod progress;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command, ProfileCommand};
use faasfuse_core::error::{exit_code, one_line};

fn main() -> ExitCode {
    faasfuse_core::output::install_signal_cleanup();
    faasfuse_core::progress::install(Box::new(progress::Terminal));
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "faasfuse: internal error: {}{at}",
            faasfuse_core::error::escape_controls(&what.replace('\n', " "))
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, without its "error: " prefix.
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            eprintln!(
                "faasfuse: error: {} (see faasfuse --help)",
                faasfuse_core::error::escape_controls(&first)
            );
            return ExitCode::from(2);
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faasfuse: error: {}", one_line(&e));
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(a) => commands::inspect(a),
        Command::Run(a) => commands::run(a),
        Command::Merge(a) => commands::merge(a),
        Command::Plan(a) => commands::plan(a),
        Command::Build(a) => commands::build(a),
        Command::Profile(a) => match a.command {
            Some(ProfileCommand::Merge {
                inputs,
                output,
                json,
            }) => faasfuse_core::profile::command::merge_files(&inputs, &output, json),
            None => faasfuse_core::profile::command::run(a.into()),
        },
        Command::Verify(a) => commands::verify(a),
        Command::Load { library } => faasfuse_host::load::load_in_this_process(&library),
        Command::Worker { fd, name, library } => {
            faasfuse_host::ipc::worker_main(fd, &name, &library)
        }
    }
}
