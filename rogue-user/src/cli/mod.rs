//! The command line: argument parsing, logging set-up and the commands.
//! Errors go to stderr with their context; exit codes are 0 (success),
//! 1 (the command failed) and 2 (bad usage, from clap).

use std::{process::ExitCode, time::Duration};

use clap::{ArgAction, Parser, Subcommand};

pub mod agent;
pub mod analyze;
pub mod context;
pub mod findings;
pub mod flows;
pub mod generate;
pub mod hosts;
pub mod report;
pub mod store;
pub mod whitelist;

#[derive(Debug, Parser)]
#[command(
    name = "rogue",
    version,
    about = "Find rogue mail servers from network traffic",
    long_about = "Find rogue mail servers from network traffic.\n\n\
        rogue meters every flow on a gateway with an XDP program (or reads capture \
        files), profiles each internal host and applies the US-CERT/NetSA rogue \
        email server method."
)]
pub struct Cli {
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(flatten)]
    pub config: context::ConfigArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print completed flow records from interfaces (XDP) or capture files
    Flows(flows::FlowsArgs),
    /// Ingest capture files and print the findings about them
    Analyze(analyze::AnalyzeArgs),
    /// Evaluate what is stored but was not evaluated (an interrupted analyze or agent)
    Evaluate(analyze::EvaluateArgs),
    /// Every host with SMTP activity, its characteristics and verdict
    Hosts(hosts::HostsArgs),
    /// The stored findings; `findings ack ID` acknowledges one
    Findings(findings::FindingsArgs),
    /// The hand-verified whitelist: list, add, remove, suggest, accept, reject, calibrate
    Whitelist(whitelist::WhitelistArgs),
    /// Write a host's report (existence plots, activity, peers) as HTML, PNG and SVG
    Report(report::ReportArgs),
    /// Write a deterministic capture of the method's scenarios
    Generate(generate::GenerateArgs),
    /// Run the live gateway monitor: meter, store, evaluate and emit findings continuously
    Agent(agent::AgentArgs),
    /// Run the engine on flows from exporters (IPFIX, NetFlow): many gateways or routers, one detector
    Collect(agent::CollectArgs),
    /// The store: check it for damage, list its sources, prune it by hand
    Store(store::StoreArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(cli.verbose, cli.quiet);
    match cli.command {
        Command::Flows(args) => flows::run(args, cli.quiet),
        Command::Analyze(args) => analyze::run(&cli.config, args, cli.quiet),
        Command::Evaluate(args) => analyze::run_evaluate(&cli.config, args, cli.quiet),
        Command::Hosts(args) => hosts::run(&cli.config, args),
        Command::Findings(args) => findings::run(&cli.config, args),
        Command::Whitelist(args) => whitelist::run(&cli.config, args),
        Command::Report(args) => report::run(&cli.config, args, cli.quiet),
        Command::Generate(args) => generate::run(args, cli.quiet),
        Command::Agent(args) => agent::run(&cli.config, args),
        Command::Collect(args) => agent::collect(&cli.config, args),
        Command::Store(args) => store::run(&cli.config, args),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROGUE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A duration on the command line: `5s`, `500ms`, `1m30s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let parsed: jiff::SignedDuration =
        text.parse().map_err(|_| format!("{text:?} is not a duration (try 5s, 500ms, 2m or a number of seconds)"))?;
    Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

/// A parser for an option whose values are the names `T` reads (each with
/// its help line): the command line owns what `--help` says of them, the
/// lower layer only what the names mean.
pub fn one_of<T>(values: &[(&'static str, &'static str)]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser as _;
    let possible = values.iter().map(|&(name, help)| clap::builder::PossibleValue::new(name).help(help));
    clap::builder::PossibleValuesParser::new(possible)
        .map(|name| name.parse::<T>().expect("a possible value reads as its type"))
}

/// A value that must say something (who verified, why): not empty.
pub fn non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(text.to_string())
}

/// An interval on the command line: a duration of at least 10 ms (a drain
/// takes about that long; 0 would be a busy loop).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_millis(10) {
        return Err(format!("{text:?} is too short: an interval is at least 10ms"));
    }
    Ok(duration)
}

/// A timeout on the command line: a duration of whole seconds, at least 1 s
/// (flow timeouts are counted in whole seconds, as nfdump counts them).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.as_secs() == 0 || duration.subsec_nanos() != 0 {
        return Err(format!("{text:?} is not a whole number of seconds, at least 1 (try 60s or 5m)"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\" is not a duration"));
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn intervals_are_at_least_ten_milliseconds() {
        assert_eq!(parse_interval("10ms"), Ok(Duration::from_millis(10)));
        assert!(parse_interval("0s").unwrap_err().contains("\"0s\" is too short"));
        assert!(parse_interval("0").is_err());
    }

    #[test]
    fn timeouts_are_whole_seconds() {
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_timeout("500ms").unwrap_err().contains("whole number of seconds"));
        assert!(parse_timeout("1.5s").is_err());
        assert!(parse_timeout("0").is_err());
    }
}
