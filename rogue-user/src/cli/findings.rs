//! `rogue findings`: the stored findings, and acknowledging one.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::context::{ConfigArgs, DnsUse, OutputFormat, print_findings};
use crate::store::Access;

#[derive(Debug, Args)]
pub struct FindingsArgs {
    #[command(subcommand)]
    pub action: Option<FindingsAction>,
    /// Only findings at or after this time (2008-02-20 or 2008-02-20T13:00:00Z)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only findings in this state
    #[arg(long, value_enum)]
    pub state: Option<State>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum FindingsAction {
    /// Mark a finding as seen and handled (state `acknowledged`)
    Ack {
        /// The finding's id (the `id` column)
        id: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum State {
    Open,
    Acknowledged,
    Whitelisted,
    ConfirmedRogue,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acknowledged => "acknowledged",
            State::Whitelisted => "whitelisted",
            State::ConfirmedRogue => "confirmed_rogue",
        }
    }
}

pub fn run(config: &ConfigArgs, args: FindingsArgs) -> anyhow::Result<ExitCode> {
    let access = if args.action.is_some() { Access::ReadWrite } else { Access::ReadOnly };
    let mut context = config.open(access, DnsUse::Stored { resolve: false })?;
    match args.action {
        Some(FindingsAction::Ack { id }) => {
            if !context.engine.store.set_finding_state(id, "acknowledged", jiff::Timestamp::now().as_millisecond())? {
                bail!("there is no finding {id} (`rogue findings` lists them)");
            }
            eprintln!("rogue: finding {id} acknowledged");
        }
        None => {
            let findings = context.engine.store.findings(args.since, args.state.map(State::as_str))?;
            print_findings(&findings, args.format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A time on the command line: an RFC 3339 timestamp or a date (UTC midnight).
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    let date: jiff::civil::Date =
        text.parse().map_err(|_| format!("{text:?} is not a time (try 2008-02-20 or 2008-02-20T13:00:00Z)"))?;
    date.to_zoned_datetime(jiff::tz::TimeZone::UTC).map(|z| z.timestamp().as_millisecond()).map_err(|e| e.to_string())
}
