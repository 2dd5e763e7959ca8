//! `rogue store`: the store itself. `check` runs SQLite's integrity check,
//! `sources` lists where its traffic came from, and `prune` removes traffic
//! by hand: one source, everything before a time, or what retention would
//! remove now.

use std::{
    io::{self, Write},
    process::ExitCode,
};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{
    context::{ConfigArgs, OutputFormat, table_time},
    findings::parse_time,
};
use crate::{
    config::Config,
    store::{Access, Source, Store},
};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub action: StoreAction,
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Check the store for damage (exit 1 if it is damaged)
    Check {
        /// Also compare every index with its table (slower)
        #[arg(long)]
        full: bool,
    },
    /// Where the stored traffic came from: each source with what it covers
    Sources {
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Remove stored traffic by hand (findings, verdicts and DNS answers stay)
    #[command(group(clap::ArgGroup::new("what").required(true).args(["source", "before", "retention"])))]
    Prune {
        /// Remove everything one source brought (its id from `rogue store sources`)
        #[arg(long, value_name = "ID")]
        source: Option<i64>,
        /// Remove every source's traffic dated before this time
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        before: Option<i64>,
        /// Apply store.retention_days now, as the agent and analyze do after evaluating
        #[arg(long)]
        retention: bool,
    },
}

pub fn run(config: &ConfigArgs, args: StoreArgs) -> anyhow::Result<ExitCode> {
    let path = match &config.db {
        Some(path) => path.clone(),
        None => Config::load(&config.config)?.store_path(),
    };
    match args.action {
        StoreAction::Check { full } => {
            // Opening checks the structure already when it is cheap; a
            // damaged store is reported whichever check finds it.
            let store = Store::open(&path, Access::ReadOnly)?;
            let problems = store.check(full)?;
            if problems.is_empty() {
                println!("{}: ok", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &problems {
                println!("{}: {problem}", path.display());
            }
            bail!("store {} is damaged: {} problem(s) found", path.display(), problems.len());
        }
        StoreAction::Sources { format } => {
            let store = Store::open(&path, Access::ReadOnly)?;
            print_sources(&store.sources()?, format)?;
        }
        StoreAction::Prune { source, before, retention } => {
            let mut store = Store::open(&path, Access::ReadWrite)?;
            let now_ms = jiff::Timestamp::now().as_millisecond();
            if let Some(id) = source {
                let Some(found) = store.source(id)? else {
                    bail!("{} has no source {id} (`rogue store sources` lists them)", path.display());
                };
                let rows = store.remove_source(id)?;
                eprintln!("rogue: removed source {id} ({} {}): {rows} rows", found.kind, found.name);
            } else if let Some(before_ms) = before {
                let rows = store.prune_before(before_ms)?;
                eprintln!("rogue: removed {rows} rows of traffic dated before {}", table_time(before_ms));
            } else if retention {
                let days = Config::load(&config.config)?.store.retention_days.0;
                let pruned = store.apply_retention(days, now_ms)?;
                eprintln!(
                    "rogue: retention of {days} days: removed {} rows and {} file source(s)",
                    pruned.rows,
                    pruned.sources.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_sources(sources: &[Source], format: OutputFormat) -> io::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let time = |ms: Option<i64>| ms.map_or("-".to_string(), table_time);
    if format == OutputFormat::Table {
        writeln!(
            out,
            "{:>5}  {:<8} {:<19}  {:<19}  {:<19}  {:>10} {:>9} {:>8}  {:<9} name",
            "id", "kind", "ingested", "first", "last", "packets", "flows", "rejected", "evaluated"
        )?;
    }
    for s in sources {
        let evaluated = if s.pending_from_ms.is_some() { "no" } else { "yes" };
        match format {
            OutputFormat::Table => writeln!(
                out,
                "{:>5}  {:<8} {:<19}  {:<19}  {:<19}  {:>10} {:>9} {:>8}  {:<9} {}",
                s.id,
                s.kind,
                table_time(s.ingested_ms),
                time(s.first_ms),
                time(s.last_ms),
                s.packets,
                s.flows,
                s.rejected,
                evaluated,
                s.name
            )?,
            OutputFormat::Json => {
                let to_time = |ms: Option<i64>| ms.map(|ms| crate::time::rfc3339_millis(ms * 1_000_000));
                let line = json!({
                    "id": s.id, "kind": s.kind, "name": s.name, "content_hash": s.content_hash,
                    "ingested": to_time(Some(s.ingested_ms)), "first": to_time(s.first_ms), "last": to_time(s.last_ms),
                    "packets": s.packets, "flows": s.flows, "rejected": s.rejected,
                    "pending_from": to_time(s.pending_from_ms),
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()
}
