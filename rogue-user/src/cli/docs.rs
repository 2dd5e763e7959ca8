//! `rogue man` and `rogue completions`: the manual pages and the shell
//! completions, generated from the command line itself (clap_mangen,
//! clap_complete), so they never disagree with `--help`. The package ships
//! what these print.

use std::{io, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  rogue man | man -l -\n  rogue man --dir target/man")]
pub struct ManArgs {
    /// Write rogue.1 and a page per command (rogue-agent.1, ...) into this
    /// directory [default: rogue.1 on stdout]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  rogue completions bash > /etc/bash_completion.d/rogue\n  \
    rogue completions zsh > \"${fpath[1]}/_rogue\"\n  rogue completions fish > ~/.config/fish/completions/rogue.fish")]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: ShellName,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShellName {
    /// GNU Bash (/usr/share/bash-completion/completions/rogue)
    Bash,
    /// Z shell (/usr/share/zsh/vendor-completions/_rogue)
    Zsh,
    /// fish (/usr/share/fish/vendor_completions.d/rogue.fish)
    Fish,
    /// Elvish
    Elvish,
    /// PowerShell
    Powershell,
}

impl From<ShellName> for Shell {
    fn from(name: ShellName) -> Shell {
        match name {
            ShellName::Bash => Shell::Bash,
            ShellName::Zsh => Shell::Zsh,
            ShellName::Fish => Shell::Fish,
            ShellName::Elvish => Shell::Elvish,
            ShellName::Powershell => Shell::PowerShell,
        }
    }
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let command = Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing the pages into {}", dir.display()))?
        }
        None => clap_mangen::Man::new(command).render(&mut io::stdout().lock())?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    // Generated in memory: clap_complete panics where a write fails, and a
    // closed pipe is not worth a panic.
    let mut script = Vec::new();
    clap_complete::generate(Shell::from(args.shell), &mut Cli::command(), "rogue", &mut script);
    io::Write::write_all(&mut io::stdout().lock(), &script)?;
    Ok(ExitCode::SUCCESS)
}
