//! `rogue agent`: the live gateway monitor.

use std::process::ExitCode;

use clap::Args;

use super::context::ConfigArgs;
use crate::agent::{self, AgentOptions};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    rogue agent --config /etc/rogue/rogue.yaml\n  \
    rogue agent --config rogue.yaml --iface eth0 --iface eth1\n\n\
    Runs until SIGINT or SIGTERM (which store everything and detach); SIGHUP reloads the configuration, \
    the whitelist and the sinks. Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (see packaging/rogue-agent.service).")]
pub struct AgentArgs {
    /// Meter this interface (repeat for more) instead of the configuration's `interfaces`
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
}

pub fn run(config: &ConfigArgs, args: AgentArgs) -> anyhow::Result<ExitCode> {
    agent::run(AgentOptions { paths: config.paths(), interfaces: args.iface, listen: None })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    rogue collect --config /etc/rogue/rogue.yaml --listen 0.0.0.0:4739\n\n\
    Gateways running `rogue agent` with export.ipfix, or routers exporting NetFlow, send here; this one \
    instance profiles, stores and evaluates for all of them. Signals as for `rogue agent`.")]
pub struct CollectArgs {
    /// Receive IPFIX and NetFlow v5/v9 over UDP, and IPFIX over TCP, on this address
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:4739")]
    pub listen: std::net::SocketAddr,
}

pub fn collect(config: &ConfigArgs, args: CollectArgs) -> anyhow::Result<ExitCode> {
    agent::run(AgentOptions { paths: config.paths(), interfaces: Vec::new(), listen: Some(args.listen) })?;
    Ok(ExitCode::SUCCESS)
}
