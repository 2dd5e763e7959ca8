use std::process::ExitCode;

use clap::Parser;
use rogue::cli::{Cli, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("rogue: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
