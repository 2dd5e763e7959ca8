//! `rogue analyze`: captures into the store, then the findings about them.

use std::{
    io::{self, IsTerminal},
    path::PathBuf,
    process::ExitCode,
    time::Instant,
};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use super::context::{ConfigArgs, OutputFormat, print_findings};
use crate::{
    detect::Window,
    profile::ingest::{FileKind, ingest_captures},
    store::{Upsert, millis},
};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  rogue analyze --config config/rogue.yaml --pcap monday.pcap tuesday.pcap\n\n\
    Findings go to stdout, a one-line summary to stderr. The exit status is 0 whatever was found.")]
#[command(group(clap::ArgGroup::new("input").required(true).args(["pcap", "ipfix"])))]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng), read in order as one stream
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// IPFIX files (RFC 5655, as `rogue flows --write` makes them) instead
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "pcap")]
    pub ipfix: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

pub fn run(config: &ConfigArgs, args: AnalyzeArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut context = config.open()?;
    let (files, kind) =
        if args.ipfix.is_empty() { (&args.pcap, FileKind::Capture) } else { (&args.ipfix, FileKind::Ipfix) };
    let total_bytes: u64 = files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let progress = progress_bar(total_bytes, quiet);
    let started = Instant::now();
    let summary =
        ingest_captures(&context.config, &mut context.store, files, kind, |bytes| progress.set_position(bytes))?;
    progress.finish_and_clear();
    info!(
        "ingested {} packets, {} flows in {:.2} s",
        summary.counters.packets,
        summary.flows,
        started.elapsed().as_secs_f64()
    );

    let (Some(first), Some(last)) = (summary.first, summary.last) else {
        eprintln!("rogue: the captures hold no packets; nothing to analyze");
        return Ok(ExitCode::SUCCESS);
    };
    let period = Window { from_ms: millis(first), to_ms: millis(last) };
    let started = Instant::now();
    context.resolve_hosts(period.from_ms, period.to_ms)?;
    info!("resolved the hosts' DNS characteristics in {:.2} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    // Disjoint borrows: the detector reads config, whitelist and DNS; the store is written.
    let detector =
        crate::detect::Detector { config: &context.config, whitelist: &context.whitelist, dns: &context.dns };
    let findings = detector.evaluate(&context.store, period)?;
    let stored = detector.record(&mut context.store, &findings, jiff::Timestamp::now().as_millisecond())?;
    // Retention counts back from the newest data, so analyze first: findings
    // cover all of the captures even where the store keeps less of them.
    info!("evaluated and stored {} findings in {:.2} s", stored.len(), started.elapsed().as_secs_f64());
    let started = Instant::now();
    context.store.prune(context.config.store.retention_days.0)?;
    info!("pruned the store to its retention in {:.2} s", started.elapsed().as_secs_f64());
    let new = stored.iter().filter(|(_, change)| *change == Upsert::New).count();
    let findings: Vec<_> = stored.into_iter().map(|(finding, _)| finding).collect();
    print_findings(&findings, args.format)?;

    if !quiet {
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        for finding in &findings {
            *kinds.entry(finding.kind.as_str()).or_default() += 1;
        }
        let by_kind: Vec<String> = kinds.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
        eprintln!(
            "rogue: analyzed {} file{}: {} packets, {} flows, {} to {}; {} finding{} ({} new){}{}",
            summary.files,
            if summary.files == 1 { "" } else { "s" },
            summary.counters.packets,
            summary.flows,
            super::context::table_time(period.from_ms),
            super::context::table_time(period.to_ms),
            findings.len(),
            if findings.len() == 1 { "" } else { "s" },
            new,
            if by_kind.is_empty() { String::new() } else { format!(": {}", by_kind.join(", ")) },
            if summary.truncated_files > 0 {
                format!("; {} file(s) cut short", summary.truncated_files)
            } else {
                String::new()
            },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A byte progress bar on a terminal's stderr, hidden otherwise.
fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !io::stderr().is_terminal() || total < 16 << 20 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reading {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {wide_bar}",
        )
        .expect("valid template"),
    );
    bar
}
