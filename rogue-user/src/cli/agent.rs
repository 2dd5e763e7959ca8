//! `rogue agent`: the live gateway monitor.

use std::process::ExitCode;

use clap::Args;

use super::context::EngineArgs;
use crate::agent::{self, AgentOptions};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    systemctl enable --now rogue-agent          (the package's unit)\n  \
    rogue agent --config rogue.yaml --iface eth0 --iface eth1\n\n\
    Runs until SIGINT or SIGTERM (which store everything and detach); SIGHUP reloads the configuration, \
    the whitelist and the sinks. Under systemd (Type=notify) it says READY once attached, and pings the \
    watchdog. Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (rogue-agent.service grants them).")]
pub struct AgentArgs {
    /// Meter this interface (repeat for more) instead of the configuration's `interfaces`
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    agent::run(AgentOptions { paths: args.engine.paths(), interfaces: args.iface, listen: None })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    systemctl enable --now rogue-collect        (the package's unit)\n  \
    rogue collect --config rogue.yaml --listen 0.0.0.0:4739\n\n\
    Gateways running `rogue agent` with export.ipfix, or routers exporting NetFlow, send here; this one \
    instance profiles, stores and evaluates for all of them. Signals as for `rogue agent`.")]
pub struct CollectArgs {
    /// Receive IPFIX and NetFlow v5/v9 over UDP, and IPFIX over TCP, on this address
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:4739")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn collect(args: CollectArgs) -> anyhow::Result<ExitCode> {
    agent::run(AgentOptions { paths: args.engine.paths(), interfaces: Vec::new(), listen: Some(args.listen) })?;
    Ok(ExitCode::SUCCESS)
}
