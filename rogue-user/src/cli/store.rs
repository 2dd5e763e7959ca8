//! `rogue store`: the store itself. `check` runs SQLite's integrity check,
//! `sources` lists where its traffic came from, and `prune` removes traffic
//! by hand: one source, everything before a time, or what retention would
//! remove now.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{
    context::{ConfigArgs, table_time},
    listing::{FORMAT_HELP, ListFormat, Listing, format_or_default},
    parse_time, time_forms,
};
use crate::{
    config::{self, Config},
    store::{self, Access, Source, SqliteStore, Store},
};

#[derive(Debug, Args)]
#[command(after_help = concat!("The store is --db PATH, else the configuration's store.path.\n\n", time_forms!()))]
pub struct StoreArgs {
    #[command(subcommand)]
    pub action: StoreAction,
    #[command(flatten)]
    pub config: ConfigArgs,
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
        #[arg(long, value_enum, help = FORMAT_HELP)]
        format: Option<ListFormat>,
    },
    /// Remove stored traffic by hand (findings, verdicts and DNS answers stay)
    #[command(group(clap::ArgGroup::new("what").required(true).args(["source", "before", "retention"])))]
    Prune {
        /// Remove everything one source brought (its id from `rogue store sources`)
        #[arg(long, value_name = "ID")]
        source: Option<i64>,
        /// Remove every source's traffic dated before this time
        #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
        before: Option<i64>,
        /// Apply store.retention_days now, as the agent and analyze do after evaluating
        #[arg(long)]
        retention: bool,
    },
}

pub fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let config = &args.config;
    // `--db` names an SQLite file; else the configuration names the store.
    let open = |access| -> anyhow::Result<(Box<dyn Store>, String)> {
        let store = match &config.db {
            Some(path) => Box::new(SqliteStore::open(path, access)?) as Box<dyn Store>,
            None => {
                let loaded = Config::load(&config::locate(config.file.config.as_deref())?)?;
                store::open(&loaded, &loaded.store_path(), access)?
            }
        };
        let location = store.location();
        Ok((store, location))
    };
    match args.action {
        StoreAction::Check { full } => {
            // Opening checks the structure already when it is cheap; a
            // damaged store is reported whichever check finds it.
            let (store, location) = open(Access::ReadOnly)?;
            let problems = store.check(full)?;
            if problems.is_empty() {
                writeln!(io::stdout(), "{location}: ok")?;
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &problems {
                writeln!(io::stdout(), "{location}: {problem}")?;
            }
            bail!("store {location} is damaged: {} problem(s) found", problems.len());
        }
        StoreAction::Sources { format } => {
            let (store, _) = open(Access::ReadOnly)?;
            print_sources(&store.sources()?, format_or_default(format))?;
        }
        StoreAction::Prune { source, before, retention: true } if source.is_none() && before.is_none() => {
            // The configuration's retention, or the one the store records.
            let mut engine = config.open(Access::ReadWrite)?.engine;
            let days = engine.config.store.retention_days.0;
            let pruned = engine.store.apply_retention(days, jiff::Timestamp::now().as_millisecond())?;
            eprintln!(
                "rogue: retention of {days} days: removed {} rows and {} file source(s)",
                pruned.rows,
                pruned.sources.len()
            );
        }
        StoreAction::Prune { source, before, .. } => {
            let (mut store, location) = open(Access::ReadWrite)?;
            if let Some(id) = source {
                let Some(found) = store.source(id)? else {
                    bail!("{location} has no source {id} (`rogue store sources` lists them)");
                };
                let rows = store.remove_source(id)?;
                eprintln!("rogue: removed source {id} ({} {}): {rows} rows", found.kind, found.name);
            } else if let Some(before_ms) = before {
                let rows = store.prune_before(before_ms)?;
                eprintln!("rogue: removed {rows} rows of traffic dated before {}", table_time(before_ms));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_sources(sources: &[Source], format: ListFormat) -> io::Result<()> {
    let time = |ms: Option<i64>| ms.map_or("-".to_string(), table_time);
    let header = format!(
        "{:>5}  {:<8} {:<19}  {:<19}  {:<19}  {:>10} {:>9} {:>8}  {:<9} name",
        "id", "kind", "ingested", "first", "last", "packets", "flows", "rejected", "evaluated"
    );
    const COLUMNS: &[&str] = &[
        "id",
        "kind",
        "name",
        "content_hash",
        "ingested",
        "first",
        "last",
        "packets",
        "flows",
        "rejected",
        "pending_from",
    ];
    let mut listing = Listing::stdout(format, COLUMNS, &header)?;
    for s in sources {
        let to_time = |ms: Option<i64>| ms.map(|ms| crate::time::rfc3339_millis(ms * 1_000_000));
        let record = json!({
            "id": s.id, "kind": s.kind, "name": s.name, "content_hash": s.content_hash,
            "ingested": to_time(Some(s.ingested_ms)), "first": to_time(s.first_ms), "last": to_time(s.last_ms),
            "packets": s.packets, "flows": s.flows, "rejected": s.rejected,
            "pending_from": to_time(s.pending_from_ms),
        });
        listing.record(&record, || {
            format!(
                "{:>5}  {:<8} {:<19}  {:<19}  {:<19}  {:>10} {:>9} {:>8}  {:<9} {}",
                s.id,
                s.kind,
                table_time(s.ingested_ms),
                time(s.first_ms),
                time(s.last_ms),
                s.packets,
                s.flows,
                s.rejected,
                if s.pending_from_ms.is_some() { "no" } else { "yes" },
                s.name
            )
        })?;
    }
    listing.finish()
}
