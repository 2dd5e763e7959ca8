//! `rogue findings`: the stored findings, and acknowledging one.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{
    TIME_FORMS,
    context::{ConfigArgs, print_findings},
    listing::{FORMAT_HELP, ListFormat, format_or_default},
    parse_time,
};
use crate::store::Access;

#[derive(Debug, Args)]
#[command(after_help = TIME_FORMS)]
pub struct FindingsArgs {
    #[command(subcommand)]
    pub action: Option<FindingsAction>,
    /// Only findings at or after this time
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub since: Option<i64>,
    /// Only findings in this state
    #[arg(long, value_enum)]
    pub state: Option<State>,
    #[arg(long, value_enum, help = FORMAT_HELP)]
    pub format: Option<ListFormat>,
    #[command(flatten)]
    pub config: ConfigArgs,
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
    /// Reported and not yet handled
    Open,
    /// Seen and handled (`rogue findings ack ID`)
    Acknowledged,
    /// The host was whitelisted for the service since
    Whitelisted,
    /// The host was recorded as a rogue (`rogue whitelist reject`)
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

pub fn run(args: FindingsArgs) -> anyhow::Result<ExitCode> {
    let access = if args.action.is_some() { Access::ReadWrite } else { Access::ReadOnly };
    let mut context = args.config.open(access)?;
    match args.action {
        Some(FindingsAction::Ack { id }) => {
            if !context.engine.store.set_finding_state(id, "acknowledged", jiff::Timestamp::now().as_millisecond())? {
                bail!("there is no finding {id} (`rogue findings` lists them)");
            }
            eprintln!("rogue: finding {id} acknowledged");
        }
        None => {
            let findings = context.engine.store.findings(args.since, args.state.map(State::as_str))?;
            print_findings(&findings, format_or_default(args.format))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
