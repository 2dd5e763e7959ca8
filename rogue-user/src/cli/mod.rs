//! The command line: argument parsing, logging set-up and the commands.
//! Errors go to stderr with their context; exit codes are 0 (success),
//! 1 (the command failed) and 2 (bad usage, from clap).

use std::{io, process::ExitCode, time::Duration};

use clap::{ArgAction, Parser, Subcommand};

pub mod agent;
pub mod analyze;
pub mod config;
pub mod context;
pub mod docs;
pub mod findings;
pub mod flows;
pub mod generate;
pub mod hosts;
pub mod listing;
pub mod report;
pub mod serve;
pub mod store;
pub mod whitelist;

use context::GLOBAL;

#[derive(Debug, Parser)]
#[command(
    name = "rogue",
    version,
    about = "Find rogue mail servers from network traffic",
    long_about = "Find rogue mail servers from network traffic.\n\n\
        rogue meters every flow on a gateway with an XDP program (or reads capture \
        files and IPFIX or NetFlow), profiles each internal host and applies the \
        US-CERT/NetSA rogue email server method.",
    after_help = "The configuration is -c FILE, else $ROGUE_CONFIG, else ./rogue.yaml, else \
        /etc/rogue/rogue.yaml. `rogue COMMAND --help` tells more of each command.",
    subcommand_help_heading = "Commands"
)]
pub struct Cli {
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace)
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    #[command(flatten)]
    pub before_command: OptionsBeforeCommand,
    #[command(subcommand)]
    pub command: Command,
}

/// `-c`, `--db` and `--no-dns` given before the command (`rogue -c FILE
/// hosts`, as daemons' command lines often put them): taken as if given
/// after it (`--no-dns` by a command that never asks DNS: it does not), and
/// refused for a command they do nothing for. Hidden: help shows them on
/// the commands they are for.
#[derive(Debug, clap::Args)]
pub struct OptionsBeforeCommand {
    #[arg(short = 'c', long = "config", value_name = "FILE", hide = true)]
    config: Option<std::path::PathBuf>,
    #[arg(long = "db", value_name = "PATH", hide = true)]
    db: Option<std::path::PathBuf>,
    #[arg(long = "no-dns", hide = true)]
    no_dns: bool,
}

impl OptionsBeforeCommand {
    fn is_empty(&self) -> bool {
        self.config.is_none() && self.db.is_none() && !self.no_dns
    }

    /// Puts the options into the command's own, where it did not give them.
    fn into_command(self, command: &mut Command) -> anyhow::Result<()> {
        let engine = match command {
            Command::Analyze(args) => &mut args.engine,
            Command::Evaluate(args) => &mut args.engine,
            Command::Hosts(args) => &mut args.engine,
            Command::Whitelist(args) => &mut args.engine,
            Command::Report(args) => &mut args.engine,
            Command::Agent(args) => &mut args.engine,
            Command::Collect(args) => &mut args.engine,
            Command::Findings(args) => return self.into_files(&mut args.config),
            Command::Store(args) => return self.into_files(&mut args.config),
            Command::Serve(args) => return self.into_files(&mut args.config),
            Command::Config(args) if self.db.is_none() => {
                args.file.config = args.file.config.take().or(self.config);
                return Ok(());
            }
            _ if self.is_empty() => return Ok(()),
            _ => {
                anyhow::bail!("-c, --db and --no-dns are for the commands that read a configuration (see their --help)")
            }
        };
        engine.no_dns |= self.no_dns;
        self.into_files(&mut engine.files)
    }

    fn into_files(self, files: &mut context::ConfigArgs) -> anyhow::Result<()> {
        files.file.config = files.file.config.take().or(self.config);
        files.db = files.db.take().or(self.db);
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print completed flow records from interfaces (XDP), capture files or exporters
    Flows(flows::FlowsArgs),
    /// Ingest capture or IPFIX files and print the findings about them
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
    /// The web console: findings, hosts, whitelist and suggestions in a browser
    Serve(serve::ServeArgs),
    /// Write a deterministic capture of the method's scenarios
    Generate(generate::GenerateArgs),
    /// Run the live gateway monitor: meter, store, evaluate and emit findings continuously
    Agent(agent::AgentArgs),
    /// Run the engine on flows from exporters (IPFIX, NetFlow): many gateways or routers, one detector
    Collect(agent::CollectArgs),
    /// The store: check it for damage, list its sources, prune it by hand
    Store(store::StoreArgs),
    /// The configuration: check it and the whitelist it names, print the effective settings
    Config(config::ConfigArgs),
    /// Write the manual pages (rogue.1 and one per command)
    Man(docs::ManArgs),
    /// Print the shell completions for bash, zsh, fish, elvish or PowerShell
    Completions(docs::CompletionsArgs),
}

/// Runs the parsed command line.
pub fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(cli.verbose, cli.quiet, &cli.command);
    cli.before_command.into_command(&mut cli.command)?;
    match cli.command {
        Command::Flows(args) => flows::run(args, cli.quiet),
        Command::Analyze(args) => analyze::run(args, cli.quiet),
        Command::Evaluate(args) => analyze::run_evaluate(args, cli.quiet),
        Command::Hosts(args) => hosts::run(args),
        Command::Findings(args) => findings::run(args),
        Command::Whitelist(args) => whitelist::run(args),
        Command::Report(args) => report::run(args, cli.quiet),
        Command::Serve(args) => serve::run(args),
        Command::Generate(args) => generate::run(args, cli.quiet),
        Command::Agent(args) => agent::run(args),
        Command::Collect(args) => agent::collect(args),
        Command::Store(args) => store::run(args),
        Command::Config(args) => config::run(args),
        Command::Man(args) => docs::man(args),
        Command::Completions(args) => docs::completions(args),
    }
}

/// Whether `error` is a write to a closed pipe (`rogue hosts | head`):
/// the reader has what it wanted, so the command ends quietly with 0.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

/// The log level on stderr: warnings by default, `-v` more, `-q` only
/// errors, ROGUE_LOG (an EnvFilter) anything. The agent and the collector
/// also say at the default level what the journal should show: start
/// (interfaces, XDP mode, listener), reloads and stop (target
/// `rogue::lifecycle`).
fn init_logging(verbose: u8, quiet: bool, command: &Command) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let daemon = matches!(command, Command::Agent(_) | Command::Collect(_));
    let default = match (daemon, quiet || verbose > 0) {
        (true, false) => format!("{level},{}=info", crate::LIFECYCLE),
        _ => level.to_string(),
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

/// What `--help` says of a TIME (a macro, for `concat!` in help texts).
macro_rules! time_forms {
    () => {
        "TIME is RFC 3339 (2008-02-20T13:05:00Z), a date or date and time in UTC (2008-02-20, \
         2008-02-20 13:05), today, yesterday, now, or relative to now (-1h, 2d, 30m ago)."
    };
}
pub(crate) use time_forms;
pub const TIME_FORMS: &str = time_forms!();

/// A time on the command line, in ms since the epoch (see [`TIME_FORMS`]).
pub fn parse_time(text: &str) -> Result<i64, String> {
    parse_time_at(text, jiff::Timestamp::now())
}

/// [`parse_time`] with the clock passed in. Calendar forms are UTC, as every
/// table rogue prints; relative forms count back from `now` (a leading `+`
/// counts forward), as journalctl's do.
pub fn parse_time_at(text: &str, now: jiff::Timestamp) -> Result<i64, String> {
    let text = text.trim();
    let utc = jiff::tz::TimeZone::UTC;
    let midnight = |days_back: i64| -> Result<i64, String> {
        let today = now.to_zoned_datetime(utc.clone()).date();
        let day = today.checked_sub(jiff::Span::new().days(days_back)).map_err(|e| e.to_string())?;
        Ok(day.to_zoned_datetime(utc.clone()).map_err(|e| e.to_string())?.timestamp().as_millisecond())
    };
    match text {
        "now" => return Ok(now.as_millisecond()),
        "today" => return midnight(0),
        "yesterday" => return midnight(1),
        _ => {}
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(civil) = text.parse::<jiff::civil::DateTime>() {
        return civil.to_zoned_datetime(utc).map(|z| z.timestamp().as_millisecond()).map_err(|e| e.to_string());
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return date.to_zoned_datetime(utc).map(|z| z.timestamp().as_millisecond()).map_err(|e| e.to_string());
    }
    let (forward, amount) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('-').unwrap_or(text).trim_end_matches(" ago").trim()),
    };
    let offset_ms = span_ms(amount)
        .ok_or_else(|| format!("{text:?} is not a time (try 2008-02-20, 2008-02-20T13:05:00Z, yesterday or -1h)"))?;
    let moved =
        if forward { now.as_millisecond().checked_add(offset_ms) } else { now.as_millisecond().checked_sub(offset_ms) };
    moved.ok_or_else(|| format!("{text:?} is too far from now"))
}

/// `2d`, `1h30m`, `90s` in ms, days of 24 hours.
fn span_ms(text: &str) -> Option<i64> {
    let span: jiff::Span = text.parse().ok()?;
    let relative = jiff::SpanRelativeTo::days_are_24_hours();
    let ms = span.total((jiff::Unit::Millisecond, relative)).ok()?;
    (ms >= 0.0 && ms < i64::MAX as f64).then_some(ms as i64)
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
    use clap::CommandFactory;

    use super::*;

    /// Every command, with its path (`rogue whitelist add`).
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(path: String, command: &clap::Command, all: &mut Vec<(String, clap::Command)>) {
            for sub in command.get_subcommands() {
                walk(format!("{path} {}", sub.get_name()), sub, all);
            }
            all.push((path, command.clone()));
        }
        let mut command = Cli::command();
        command.build();
        let mut all = Vec::new();
        walk("rogue".into(), &command, &mut all);
        all
    }

    #[test]
    fn every_option_and_value_says_what_it_is() {
        Cli::command().debug_assert();
        for (path, command) in commands() {
            assert!(command.get_about().is_some() || path == "rogue", "{path} has no help line");
            for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
                let name = arg.get_id().as_str();
                if ["help", "version"].contains(&name) {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path}: {name} has no help");
                for value in arg.get_possible_values().iter().filter(|v| !v.is_hide_set()) {
                    assert!(value.get_help().is_some(), "{path}: {name} {} has no help", value.get_name());
                }
            }
        }
    }

    #[test]
    fn global_options_are_under_their_heading_and_only_where_they_do_something() {
        let options = |command: &clap::Command| -> Vec<(String, Option<String>)> {
            let shown = command.get_arguments().filter(|a| !a.is_hide_set());
            shown.map(|a| (a.get_id().to_string(), a.get_help_heading().map(str::to_string))).collect()
        };
        let engine = ["analyze", "evaluate", "hosts", "whitelist", "report", "agent", "collect"];
        for (path, command) in commands().into_iter().filter(|(path, _)| !path.split(' ').any(|w| w == "help")) {
            let name = path.split(' ').nth(1).unwrap_or("");
            let options = options(&command);
            for global in ["verbose", "quiet", "config", "db", "no_dns"] {
                if let Some((_, heading)) = options.iter().find(|(id, _)| id == global) {
                    assert_eq!(heading.as_deref(), Some("Global options"), "{path}: {global}");
                }
            }
            let has = |id: &str| options.iter().any(|(option, _)| option == id);
            assert_eq!(has("no_dns"), engine.contains(&name), "{path}: --no-dns");
            let reads_config = engine.contains(&name) || ["findings", "store", "config", "serve"].contains(&name);
            assert_eq!(has("config"), reads_config, "{path}: -c");
            assert_eq!(has("db"), reads_config && name != "config", "{path}: --db");
            assert_eq!(has("verbose") && has("quiet"), path != "rogue" || has("verbose"), "{path}: -v -q");
        }
    }

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
    fn times_are_taken_as_people_type_them() {
        let now: jiff::Timestamp = "2026-11-29T20:40:00Z".parse().unwrap();
        let at = |text: &str| parse_time_at(text, now).map(rogue_time);
        assert_eq!(at("2008-02-20T13:05:11Z").unwrap(), "2008-02-20T13:05:11.000Z");
        assert_eq!(at("2008-02-20T14:05:11+01:00").unwrap(), "2008-02-20T13:05:11.000Z");
        assert_eq!(at("2008-02-20").unwrap(), "2008-02-20T00:00:00.000Z");
        assert_eq!(at("2008-02-20 13:05").unwrap(), "2008-02-20T13:05:00.000Z");
        assert_eq!(at("today").unwrap(), "2026-11-29T00:00:00.000Z");
        assert_eq!(at("yesterday").unwrap(), "2026-11-28T00:00:00.000Z");
        assert_eq!(at("now").unwrap(), "2026-11-29T20:40:00.000Z");
        assert_eq!(at("-1h").unwrap(), "2026-11-29T19:40:00.000Z");
        assert_eq!(at("2d").unwrap(), "2026-11-27T20:40:00.000Z");
        assert_eq!(at("30m ago").unwrap(), "2026-11-29T20:10:00.000Z");
        assert_eq!(at("+1h").unwrap(), "2026-11-29T21:40:00.000Z");
        let wrong = at("last tuesday").unwrap_err();
        assert_eq!(wrong, "\"last tuesday\" is not a time (try 2008-02-20, 2008-02-20T13:05:00Z, yesterday or -1h)");
    }

    fn rogue_time(ms: i64) -> String {
        crate::time::rfc3339_millis(ms * 1_000_000)
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
