//! `rogue generate`: a deterministic capture of one of the method's
//! scenarios (see the scenario module), for demos, tests and benchmarks.

use std::{fs::File, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Args;

use crate::scenario::{Case, Size, generate};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  rogue generate --scenario all --out scenario.pcap\n  \
    rogue analyze --config config/rogue.yaml --pcap scenario.pcap")]
pub struct GenerateArgs {
    /// Which traffic: the background alone, one of the method's cases over it, all three, or the
    /// method beyond mail
    #[arg(long, default_value = "all", value_parser = super::one_of::<Case>(&[
        ("background", "Ordinary traffic only: no finding is right"),
        ("vpn-failure", "A host serving mail for two weeks after a VPN failure"),
        ("new-mail-servers", "Two hosts going from a few SMTP flows a day to thousands"),
        ("misconfiguration", "A host opening SMTP to 75 external servers within a minute"),
        ("all", "The three cases over the background"),
        ("services", "Rogue DNS, NTP, DHCP, SSH and RDP servers, and their traps, over the background"),
        ("churn", "Many short conversations at once, as on a busy gateway (for benchmarks)"),
    ]))]
    pub scenario: Case,
    /// Where to write the pcap
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Seed of the pseudo-random choices: the same seed gives the same bytes
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Multiply the background traffic (and workstations) by this
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub scale: u32,
    /// Workstations in the background [default: 50 per unit of --scale; past 100 they are in 10.0.0.0/8]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workstations: Option<u32>,
}

pub fn run(args: GenerateArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut size = Size::scaled(args.scale);
    if let Some(workstations) = args.workstations {
        size.workstations = workstations;
    }
    let file = File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let generated =
        generate(args.scenario, args.seed, size, file).with_context(|| format!("writing {}", args.out.display()))?;
    if !quiet {
        eprintln!("rogue: wrote {} frames to {}", generated.frames, args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
