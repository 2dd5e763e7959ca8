//! `rogue hosts`: every host with service activity, its characteristics and
//! verdict, optionally with its peers.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::{
    context::{Context, DnsUse, EngineArgs, table_time},
    listing::{FORMAT_HELP, ListFormat, Listing, format_or_default},
};
use crate::{
    detect::{HostReport, Window},
    store::{Access, Peer},
    time::rfc3339_millis,
};

#[derive(Debug, Args)]
pub struct HostsArgs {
    /// List each host's peers too (external clients and servers)
    #[arg(long)]
    pub peers: bool,
    #[arg(long, value_enum, help = FORMAT_HELP)]
    pub format: Option<ListFormat>,
    /// Look the hosts' and peers' names up in DNS now (otherwise: what the
    /// store holds, and no peer names)
    #[arg(long)]
    pub resolve: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// A host's CSV columns; `details` holds the characteristics, whitelist
/// entry, verdict and peers.
pub const HOST_COLUMNS: &[&str] =
    &["service", "host", "verdict", "roles", "flows", "bytes", "external_clients", "external_servers", "details"];

pub fn run(args: HostsArgs) -> anyhow::Result<ExitCode> {
    let mut context = args.engine.open(Access::ReadOnly, DnsUse::Stored { resolve: args.resolve })?;
    context.resolve_hosts(Window { from_ms: i64::MIN, to_ms: i64::MAX }, None)?;
    let header = format!(
        "{:<7} {:<40} {:<13} {:>8} {:>12} {:>7} {:>7} {:>6} {:>6}  verdict",
        "service", "host", "roles", "flows", "bytes", "clients", "servers", "days", "share"
    );
    let mut listing = Listing::stdout(format_or_default(args.format), HOST_COLUMNS, &header)?;
    let detector = context.detector();
    for service in detector.services() {
        for report in detector.hosts(&*context.engine.store, service)? {
            let peers = if args.peers { Some(peers(&context, &report)?) } else { None };
            let names = match &peers {
                Some(peers) => context.peer_names(&peers.iter().map(|p| p.peer).collect::<Vec<_>>())?,
                None => Default::default(),
            };
            let record = host_json(&report, peers.as_deref(), &names);
            listing.record(&record, || {
                let mut lines = row(&report);
                for peer in peers.iter().flatten() {
                    lines.push_str(&format!(
                        "\n    {} {:<40} {:>8} flows {:>12} bytes  {} to {}{}  {}",
                        if peer.role == crate::profile::Role::Server { "client" } else { "server" },
                        peer.peer,
                        peer.flows,
                        peer.bytes,
                        table_time(peer.first_ms),
                        table_time(peer.last_ms),
                        if peer.internal { "  (internal)" } else { "" },
                        names.get(&peer.peer).map(String::as_str).unwrap_or("")
                    ));
                }
                lines
            })?;
        }
    }
    listing.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// The peers in the look-back the report measured.
fn peers(context: &Context, report: &HostReport) -> anyhow::Result<Vec<Peer>> {
    let window = context.detector().window(report.activity.last_ms);
    Ok(context.engine.store.peers(&report.service, report.host(), window.from_ms, window.to_ms)?)
}

/// A host's line in the table.
pub fn row(report: &HostReport) -> String {
    let a = &report.activity;
    let c = &report.characteristics;
    format!(
        "{:<7} {:<40} {:<13} {:>8} {:>12} {:>7} {:>7} {:>6} {:>6}  {}",
        report.service,
        a.host,
        report.roles().join("+"),
        a.flows,
        a.bytes,
        a.external_clients,
        a.external_servers,
        c.server_days,
        c.share.map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
        report.verdict()
    )
}

pub fn host_json(
    report: &HostReport,
    peers: Option<&[Peer]>,
    names: &std::collections::BTreeMap<std::net::IpAddr, String>,
) -> serde_json::Value {
    let mut object = json!({
        "service": report.service,
        "host": report.host(),
        "verdict": report.verdict(),
        "whitelisted": report.whitelisted.as_ref().map(|e| json!({"address": e.address.to_string(), "name": e.name, "reason": e.reason, "verified_by": e.verified_by, "verified_on": e.verified_on})),
        "rejected": report.rejected.as_ref().map(|v| json!({"by": v.by, "reason": v.reason, "at": rfc3339_millis(v.at_ms * 1_000_000)})),
    });
    object.as_object_mut().expect("an object").extend(report.activity_json());
    if let Some(peers) = peers {
        object["peers"] = peers
            .iter()
            .map(|p| {
                json!({
                    "peer": p.peer,
                    "ptr": names.get(&p.peer),
                    "kind": if p.role == crate::profile::Role::Server { "client" } else { "server" },
                    "internal": p.internal,
                    "flows": p.flows,
                    "packets": p.packets,
                    "bytes": p.bytes,
                    "first_seen": rfc3339_millis(p.first_ms * 1_000_000),
                    "last_seen": rfc3339_millis(p.last_ms * 1_000_000),
                })
            })
            .collect();
    }
    object
}
