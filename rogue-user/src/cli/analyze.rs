//! `rogue analyze`: captures into the store, then the findings about them;
//! and `rogue evaluate`, which finishes what an interrupted analyze (or
//! agent) stored but did not evaluate.
//!
//! Storing and evaluating are two steps, each whole: the files go in in one
//! transaction, and the findings go in, with the mark that their traffic
//! is evaluated, in another. A stop between the two (Ctrl-C during slow
//! DNS, a crash, a full disk) leaves the traffic stored and marked not
//! evaluated; the next analyze (of any files) or `rogue evaluate` evaluates
//! it, and analysing the same files again evaluates them instead of
//! refusing them. SIGINT and SIGTERM stop at the next safe point and say
//! what was and was not stored.

use std::{
    io::{self, IsTerminal},
    path::PathBuf,
    process::ExitCode,
    sync::atomic::AtomicUsize,
    time::Instant,
};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use super::{
    context::{
        Context, DnsUse, EngineArgs, FindingsFormat, Interrupted, catch_stop_signals, print_findings, table_time,
    },
    listing::FORMAT_HELP,
};
use crate::{
    detect::Window,
    flows::{Rejected, TimeBounds},
    ingest::{FileKind, IngestError, IngestOptions, IngestSummary, ingest_files},
    store::{Access, StoredFinding, Upsert},
    time::rfc3339_millis,
};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  rogue analyze --config config/rogue.yaml --pcap monday.pcap tuesday.pcap\n\n\
    Findings go to stdout, a one-line summary to stderr. The exit status is 0 whatever was found; \
    128 + the signal's number when SIGINT or SIGTERM stopped it.")]
#[command(group(clap::ArgGroup::new("input").required(true).args(["pcap", "ipfix"])))]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng), read in order as one stream
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// IPFIX files (RFC 5655, as `rogue flows --write` makes them) instead
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "pcap")]
    pub ipfix: Vec<PathBuf>,
    #[arg(long, value_enum, help = FORMAT_HELP)]
    pub format: Option<FindingsFormat>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Evaluates what is stored but was never evaluated (an analyze or agent stopped \
    between storing traffic and storing its findings) and prints the findings.")]
pub struct EvaluateArgs {
    #[arg(long, value_enum, help = FORMAT_HELP)]
    pub format: Option<FindingsFormat>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(args: AnalyzeArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let stop = catch_stop_signals()?;
    let mut context = args.engine.open(Access::Create, DnsUse::LookUp)?;
    let (files, kind) =
        if args.ipfix.is_empty() { (&args.pcap, FileKind::Capture) } else { (&args.ipfix, FileKind::Ipfix) };
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let bounds = TimeBounds::for_files(now, context.engine.config.store.max_future_seconds.0);
    let summary = ingest(&mut context, files, IngestOptions { kind, bounds, stop: &stop }, quiet)?;
    tell_what_was_read(&summary, kind, &bounds);
    let Some(period) = files_window(&context)? else {
        eprintln!("rogue: the files hold no packets to analyze");
        print_findings(&[], FindingsFormat::or_default(args.format), &context.presentation())?;
        return Ok(ExitCode::SUCCESS);
    };
    let stored = evaluate(&mut context, period, &stop)?;
    if !quiet {
        eprintln!("rogue: {}", summary_line(&summary, period, &stored));
    }
    let found: Vec<_> = stored.iter().map(|(f, _)| f.clone()).collect();
    print_findings(&found, FindingsFormat::or_default(args.format), &context.presentation())?;
    Ok(ExitCode::SUCCESS)
}

/// Reads `files` into the store, with a progress bar; an interruption
/// stores nothing and says so.
fn ingest(
    context: &mut Context,
    files: &[PathBuf],
    options: IngestOptions<'_>,
    quiet: bool,
) -> anyhow::Result<IngestSummary> {
    let total_bytes: u64 = files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let progress = progress_bar(total_bytes, quiet);
    let started = Instant::now();
    let ingested =
        ingest_files(&context.engine.config, &mut *context.engine.store, files, options, |b| progress.set_position(b));
    progress.finish_and_clear();
    let summary = match ingested {
        Err(IngestError::Interrupted { path, files, signal }) => {
            let message =
                format!("interrupted while reading {}: nothing of the {files} file(s) was stored", path.display());
            return Err(Interrupted { signal, message }.into());
        }
        other => other?,
    };
    let waiting = context.engine.store.unsent_writes();
    if waiting > 0 {
        anyhow::bail!(
            "the store {} did not take the files' flows; they wait on local disk ({waiting} writes) and are sent \
             when rogue next opens the store, so the files need not be analysed again",
            context.engine.store.location()
        );
    }
    info!(
        "ingested {} packets, {} flows in {:.2} s",
        summary.counters.packets,
        summary.flows,
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}

/// What of the files was not stored, and what an earlier run left unevaluated.
fn tell_what_was_read(summary: &IngestSummary, kind: FileKind, bounds: &TimeBounds) {
    for (path, rejected) in &summary.rejected {
        eprintln!("rogue: {}: {}", path.display(), rejected_words(rejected, kind, bounds));
    }
    for (path, source) in &summary.resumed {
        eprintln!(
            "rogue: {} was stored at {} but its evaluation did not complete; evaluating it now",
            path.display(),
            table_time(source.ingested_ms)
        );
    }
}

/// `rogue evaluate`: every pending span, whoever stored it.
pub fn run_evaluate(args: EvaluateArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let stop = catch_stop_signals()?;
    let mut context = args.engine.open(Access::ReadWrite, DnsUse::LookUp)?;
    let Some(pending) = context.engine.store.pending()? else {
        if !quiet {
            eprintln!("rogue: everything stored in {} is evaluated", context.engine.store.location());
        }
        print_findings(&[], FindingsFormat::or_default(args.format), &context.presentation())?;
        return Ok(ExitCode::SUCCESS);
    };
    let period = Window { from_ms: pending.from_ms, to_ms: pending.to_ms };
    let stored = evaluate(&mut context, period, &stop)?;
    if !quiet {
        let new = stored.iter().filter(|(_, change)| *change == Upsert::New).count();
        eprintln!(
            "rogue: evaluated {} to {}; {} finding(s) ({new} new)",
            table_time(period.from_ms),
            table_time(period.to_ms),
            stored.len()
        );
    }
    let found: Vec<_> = stored.into_iter().map(|(f, _)| f).collect();
    print_findings(&found, FindingsFormat::or_default(args.format), &context.presentation())?;
    Ok(ExitCode::SUCCESS)
}

/// The span of the files' unevaluated traffic: what this analyze stored,
/// what it resumed, and what an earlier one left unevaluated.
fn files_window(context: &Context) -> anyhow::Result<Option<Window>> {
    let pending = context.engine.store.pending_files()?;
    Ok(pending.map(|(from_ms, to_ms)| Window { from_ms, to_ms }))
}

/// Looks up DNS, then evaluates `period` (see [`crate::engine::Engine::evaluate`]): what
/// was written before the lookups began is marked evaluated.
fn evaluate(context: &mut Context, period: Window, stop: &AtomicUsize) -> anyhow::Result<Vec<(StoredFinding, Upsert)>> {
    let seq = context.engine.store.write_seq()?;
    let started = Instant::now();
    if let Some(signal) = context.resolve_hosts(period, Some(stop))? {
        let message = "interrupted during the DNS lookups: the traffic is stored but not evaluated; `rogue \
                       evaluate` (or analysing the same files again) evaluates it"
            .to_string();
        return Err(Interrupted { signal, message }.into());
    }
    info!("resolved the hosts' DNS characteristics in {:.2} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let evaluated = context.engine.evaluate(period, seq, jiff::Timestamp::now().as_millisecond())?;
    info!("evaluated and stored {} findings in {:.2} s", evaluated.findings.len(), started.elapsed().as_secs_f64());
    for source in &evaluated.pruned.sources {
        info!("retention: removed {} (ingested {})", source.name, table_time(source.ingested_ms));
    }
    Ok(evaluated.findings)
}

/// The one line on stderr after an analyze.
fn summary_line(summary: &IngestSummary, period: Window, stored: &[(StoredFinding, Upsert)]) -> String {
    let new = stored.iter().filter(|(_, change)| *change == Upsert::New).count();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for (finding, _) in stored {
        *kinds.entry(finding.kind.as_str()).or_default() += 1;
    }
    let by_kind: Vec<String> = kinds.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    let mut line = format!(
        "analyzed {} file{}: {} packets, {} flows, {} to {}; {} finding{} ({new} new){}",
        summary.files,
        if summary.files == 1 { "" } else { "s" },
        summary.counters.packets,
        summary.flows,
        table_time(period.from_ms),
        table_time(period.to_ms),
        stored.len(),
        if stored.len() == 1 { "" } else { "s" },
        if by_kind.is_empty() { String::new() } else { format!(": {}", by_kind.join(", ")) },
    );
    let rejected: u64 = summary.rejected.iter().map(|(_, r)| r.records).sum();
    if rejected > 0 {
        line += &format!("; {rejected} rejected as dated in the future");
    }
    if !summary.resumed.is_empty() {
        line += &format!("; {} file(s) stored earlier evaluated now", summary.resumed.len());
    }
    if summary.udp_unanswered > 0 {
        line +=
            &format!("; {} UDP flows to service ports never answered (no server made of them)", summary.udp_unanswered);
    }
    line
}

/// What was rejected of a file, in words.
fn rejected_words(rejected: &Rejected, kind: FileKind, bounds: &TimeBounds) -> String {
    let what = match (kind, rejected.records) {
        (FileKind::Capture, 1) => "packet",
        (FileKind::Capture, _) => "packets",
        (FileKind::Ipfix, 1) => "flow",
        (FileKind::Ipfix, _) => "flows",
    };
    let time = |t: Option<i64>| t.map(rfc3339_millis).unwrap_or_default();
    format!(
        "{} {what} dated {} to {}, after {} (more than store.max_future_seconds ahead of the clock), rejected: \
         not stored",
        rejected.records,
        time(rejected.earliest),
        time(rejected.latest),
        rfc3339_millis(bounds.not_after)
    )
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
