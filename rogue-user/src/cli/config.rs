//! `rogue config check`: the configuration and the whitelist it names,
//! checked as the agent would read them (as `nginx -t` and `promtool check
//! config` do), every problem with its file and line; `--print` shows the
//! effective settings, defaults filled in and paths resolved.

use std::{io::Write as _, path::Path, process::ExitCode};

use clap::{Args, Subcommand};

use super::context::ConfigFile;
use crate::{
    capture::host::check_interfaces,
    config::{self, Config, StoreBackend, to_yaml},
    detect::whitelist::Whitelist,
};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
    #[command(flatten)]
    pub file: ConfigFile,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check the configuration and its whitelist: exit 0 if both are sound, 1 if not
    #[command(after_help = "Checks the YAML and every value, that the whitelist reads, that the store's \
        directory exists and that the configured interfaces exist here. Problems go to stderr, each with \
        its file and line.")]
    Check {
        /// Print the effective settings (defaults filled in, paths resolved) as YAML on stdout
        #[arg(long)]
        print: bool,
    },
}

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let ConfigAction::Check { print } = args.action;
    let path = config::locate(args.file.config.as_deref())?;
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let problems = problems(&config);
    for problem in &problems {
        eprintln!("{problem}");
    }
    if print {
        let mut out = std::io::stdout().lock();
        writeln!(out, "# rogue's effective configuration: {}, defaults filled in, paths resolved", path.display())?;
        write!(out, "{}", to_yaml(&config.effective()))?;
    }
    if !problems.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    let store = match config.store.backend {
        StoreBackend::Sqlite => config.store_path().display().to_string(),
        StoreBackend::Clickhouse => {
            let clickhouse = config.clickhouse();
            format!("ClickHouse {} database {}", clickhouse.url, clickhouse.database)
        }
    };
    eprintln!("{}: ok (whitelist {}, store {store})", path.display(), config.whitelist_path().display());
    Ok(ExitCode::SUCCESS)
}

/// What would stop the agent with this configuration on this machine.
fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(error) = Whitelist::load(&config.whitelist_path(), &config.services.names()) {
        problems.push(error.to_string());
    }
    let store = config.store_path();
    let directory = store.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !directory.is_dir() {
        problems.push(format!(
            "store.path: the store's directory {} does not exist (rogue makes the store, not its directory)",
            directory.display()
        ));
    }
    if let Err(problem) = check_interfaces(&config.interfaces) {
        problems.push(format!("interfaces: {problem}"));
    }
    problems
}
