//! `rogue findings`: the stored findings, and acknowledging one.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{
    TIME_FORMS,
    context::{ConfigArgs, FindingsFormat, print_findings},
    listing::FORMAT_HELP,
    non_empty, parse_time,
};
use crate::{
    store::Access,
    triage::{self, Decider, Via},
};

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
    pub format: Option<FindingsFormat>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum FindingsAction {
    /// Mark findings as seen and handled (status `acknowledged`), saying who and why
    Ack {
        /// The findings' ids (the `id` column): all are acknowledged, or none
        #[arg(required = true, num_args = 1..)]
        ids: Vec<i64>,
        /// Who acknowledges them
        #[arg(long, value_name = "NAME", value_parser = non_empty)]
        by: String,
        /// Why (a ticket, what was done)
        #[arg(long, value_name = "TEXT", value_parser = non_empty)]
        reason: Option<String>,
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
        Some(FindingsAction::Ack { ids, by, reason }) => {
            let decider = Decider::now(by, Via::Cli);
            triage::acknowledge(&mut context.engine, &ids, &decider, reason.as_deref())?;
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            eprintln!(
                "rogue: finding{} {} acknowledged by {}",
                if ids.len() == 1 { "" } else { "s" },
                ids.join(", "),
                decider.by
            );
        }
        None => {
            let findings = context.engine.store.findings(args.since, args.state.map(State::as_str))?;
            print_findings(&findings, FindingsFormat::or_default(args.format), &context.presentation())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
