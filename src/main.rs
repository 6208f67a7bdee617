//! The `cortex` command line: parse flags, call the crates, print.

mod cli;
mod commands;
mod output;
mod write;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let _ = output::error_line(&format!("{err:#}"));
            ExitCode::from(1)
        }
    }
}
