use std::process::ExitCode;

use clap::Parser;
use rogue::cli::{Cli, context::Interrupted, is_broken_pipe, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<Interrupted>() {
            Some(interrupted) => {
                eprintln!("rogue: {interrupted}");
                ExitCode::from((128 + interrupted.signal).clamp(0, 255) as u8)
            }
            None => {
                eprintln!("rogue: error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}
