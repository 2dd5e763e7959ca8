//! `rogue whitelist`: the hand-verified whitelist and the feedback loop:
//! list, add and remove entries; suggest hosts that behave like servers;
//! accept a suggestion (it joins the whitelist) or reject it (the host is a
//! confirmed rogue and is no longer suggested); calibrate the mail-share
//! threshold on the whitelisted servers.

use std::{io, net::IpAddr, process::ExitCode};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{
    context::{Context, DnsUse, EngineArgs},
    hosts::{HOST_COLUMNS, host_json},
    listing::{FORMAT_HELP, ListFormat, Listing, format_or_default},
    non_empty,
};
use crate::{
    config::{self, Config},
    detect::{
        HostReport, Window,
        whitelist::{Prefix, Whitelist, WhitelistEntry},
    },
    store::{Access, Verdict},
};

#[derive(Debug, Args)]
#[command(after_help = "The whitelist is the file the configuration's `whitelist` names (whitelist.yaml beside it \
    by default). Entries are added by hand after verifying a server (add), or from rogue's suggestions (suggest, \
    then accept or reject).")]
pub struct WhitelistArgs {
    #[command(subcommand)]
    pub action: WhitelistAction,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum WhitelistAction {
    /// Print the entries
    List {
        #[arg(long, value_enum, help = FORMAT_HELP)]
        format: Option<ListFormat>,
    },
    /// Add an entry you verified
    Add {
        /// An address or prefix (192.0.2.25, 192.0.2.16/28, 2001:db8::25)
        address: Prefix,
        /// Who verified it
        #[arg(long, value_name = "NAME", value_parser = non_empty)]
        by: String,
        /// The service it is verified to serve (a name under `services:` in the configuration)
        #[arg(long, default_value = "smtp")]
        service: String,
        /// The server's name
        #[arg(long)]
        name: Option<String>,
        /// Why it is a legitimate server (a ticket, its role)
        #[arg(long)]
        reason: Option<String>,
        /// When it was verified [default: today]
        #[arg(long, value_name = "DATE")]
        on: Option<jiff::civil::Date>,
        /// Take a prefix that covers every address of its family (0.0.0.0/0, ::/0)
        #[arg(long)]
        force: bool,
    },
    /// Remove the entries for an address or prefix
    Remove {
        /// The address or prefix, as the entry has it
        address: Prefix,
        /// Only the entry for this service
        #[arg(long)]
        service: Option<String>,
    },
    /// Hosts not on the whitelist whose characteristics are a server's, with evidence
    Suggest {
        #[arg(long, value_enum, help = FORMAT_HELP)]
        format: Option<ListFormat>,
        /// Look the hosts' names up in DNS now (otherwise: what the store holds)
        #[arg(long)]
        resolve: bool,
    },
    /// Whitelist a host you verified as a server (usually a suggestion)
    Accept {
        /// The host's address (as `rogue whitelist suggest` lists it)
        host: IpAddr,
        /// Who verified it
        #[arg(long, value_name = "NAME", value_parser = non_empty)]
        by: String,
        /// Why you verified it as a server (a ticket, its role): recorded in
        /// the whitelist entry beside who and when
        #[arg(long, value_parser = non_empty)]
        reason: String,
        /// The service it is whitelisted for
        #[arg(long, default_value = "smtp")]
        service: String,
        /// Look the host's names up in DNS now (otherwise: what the store holds)
        #[arg(long)]
        resolve: bool,
    },
    /// Record a host as a confirmed rogue: it stays reported and is no longer suggested
    Reject {
        /// The host's address
        host: IpAddr,
        /// Who decided
        #[arg(long, value_name = "NAME", value_parser = non_empty)]
        by: String,
        /// Why it is a rogue (what was found on it)
        #[arg(long, value_parser = non_empty)]
        reason: String,
        /// The service it serves as a rogue
        #[arg(long, default_value = "smtp")]
        service: String,
    },
    /// The service share of the whitelisted servers (their bytes on its share ports), to choose the threshold
    Calibrate {
        /// The service whose threshold to calibrate
        #[arg(long, default_value = "smtp")]
        service: String,
        #[arg(long, value_enum, help = FORMAT_HELP)]
        format: Option<ListFormat>,
    },
}

pub fn run(args: WhitelistArgs) -> anyhow::Result<ExitCode> {
    let config = &args.engine;
    let today = jiff::ZonedDateTime::now().date();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let all_time = Window { from_ms: i64::MIN, to_ms: i64::MAX };
    match args.action {
        WhitelistAction::List { format } => {
            let whitelist = match config::locate(config.files.file.config.as_deref()) {
                Ok(_) => load_whitelist(config, false)?,
                // No configuration file: the whitelist the store records.
                Err(_) if config.files.db.is_some() => {
                    config.open(Access::ReadOnly, DnsUse::Stored { resolve: false })?.engine.whitelist
                }
                Err(not_found) => return Err(not_found.into()),
            };
            list(&whitelist, format_or_default(format))?
        }
        WhitelistAction::Add { address, by, service, name, reason, on, force } => {
            let mut whitelist = load_whitelist(config, true)?;
            let entry = WhitelistEntry {
                address,
                service,
                name,
                reason,
                verified_by: Some(by),
                verified_on: Some(on.unwrap_or(today)),
                force,
            };
            whitelist.add(entry)?;
            eprintln!("rogue: {address} added to {}", whitelist.path().display());
        }
        WhitelistAction::Remove { address, service } => {
            let mut whitelist = load_whitelist(config, false)?;
            let removed = whitelist.remove(address, service.as_deref())?;
            if removed == 0 {
                bail!("{address} is not in {}", whitelist.path().display());
            }
            eprintln!("rogue: removed {removed} entr{} for {address}", if removed == 1 { "y" } else { "ies" });
        }
        WhitelistAction::Suggest { format, resolve } => {
            let mut context = config.open(Access::ReadOnly, DnsUse::Stored { resolve })?;
            context.resolve_hosts(all_time, None)?;
            let suggestions: Vec<HostReport> =
                reports(&context, None)?.into_iter().filter(|r| r.suggest_whitelist).collect();
            print_reports(&suggestions, format_or_default(format))?;
        }
        WhitelistAction::Accept { host, by, reason, service, resolve } => {
            let mut context = config.open_for_whitelisting(DnsUse::Stored { resolve })?;
            context.resolve_hosts(all_time, None)?;
            let report = reports(&context, Some(&service))?.into_iter().find(|r| r.host() == host);
            let name = report.as_ref().and_then(|r| r.characteristics.ptr.clone());
            let entry = WhitelistEntry {
                address: Prefix(host.into()),
                service: service.clone(),
                name,
                reason: Some(reason),
                verified_by: Some(by),
                verified_on: Some(today),
                force: false,
            };
            context.engine.whitelist.add(entry)?;
            context.engine.store.clear_verdict(&service, host)?;
            let closed = context.engine.store.set_host_findings_state(&service, host, "whitelisted", now_ms)?;
            eprintln!("rogue: {host} whitelisted for {service}; {closed} finding(s) marked whitelisted");
        }
        WhitelistAction::Reject { host, by, reason, service } => {
            let mut context = config.open_for_whitelisting(DnsUse::Stored { resolve: false })?;
            if let Some(entry) = context.engine.whitelist.matching(host, &service) {
                bail!(
                    "{host} is on the whitelist as {} ({}); remove that entry first (`rogue whitelist remove {}`)",
                    entry.address,
                    context.engine.whitelist.path().display(),
                    entry.address
                );
            }
            let verdict = Verdict { verdict: "rogue".into(), by, reason, at_ms: now_ms };
            context.engine.store.set_verdict(&service, host, &verdict)?;
            let marked = context.engine.store.set_host_findings_state(&service, host, "confirmed_rogue", now_ms)?;
            eprintln!("rogue: {host} recorded as a confirmed rogue {service} server; {marked} finding(s) marked");
        }
        WhitelistAction::Calibrate { service, format } => {
            let context = config.open(Access::ReadOnly, DnsUse::Stored { resolve: false })?;
            calibrate(&context, &service, format_or_default(format))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The whitelist alone (list, add, remove need no store); `create` starts
/// one where there is none.
fn load_whitelist(config: &EngineArgs, create: bool) -> anyhow::Result<Whitelist> {
    let loaded = Config::load(&config::locate(config.files.file.config.as_deref())?)?;
    let (path, services) = (loaded.whitelist_path(), loaded.services.names());
    Ok(if create { Whitelist::load_or_new(&path, &services)? } else { Whitelist::load(&path, &services)? })
}

fn list(whitelist: &Whitelist, format: ListFormat) -> io::Result<()> {
    let header =
        format!("{:<24} {:<7} {:<28} {:<12} {:<10}  reason", "address", "service", "name", "verified_by", "on");
    const COLUMNS: &[&str] = &["address", "service", "name", "reason", "verified_by", "verified_on", "force"];
    let mut listing = Listing::stdout(format, COLUMNS, &header)?;
    for entry in whitelist.entries() {
        let record = serde_json::to_value(entry).map_err(io::Error::other)?;
        listing.record(&record, || {
            format!(
                "{:<24} {:<7} {:<28} {:<12} {:<10}  {}",
                entry.address.to_string(),
                entry.service,
                entry.name.as_deref().unwrap_or("-"),
                entry.verified_by.as_deref().unwrap_or("-"),
                entry.verified_on.map(|d| d.to_string()).unwrap_or("-".into()),
                entry.reason.as_deref().unwrap_or("-"),
            )
        })?;
    }
    listing.finish()
}

/// Host reports of every service (or one).
fn reports(context: &Context, service: Option<&str>) -> anyhow::Result<Vec<HostReport>> {
    let detector = context.detector();
    let mut reports = Vec::new();
    for s in detector.services().iter().filter(|s| service.is_none_or(|name| s.name == name)) {
        reports.extend(detector.hosts(&*context.engine.store, s)?);
    }
    Ok(reports)
}

fn print_reports(reports: &[HostReport], format: ListFormat) -> io::Result<()> {
    let mut listing = Listing::stdout(format, HOST_COLUMNS, "")?;
    for report in reports {
        let record = host_json(report, None, &Default::default());
        listing.record(&record, || format!("{} ({}): {}", report.host(), report.service, report.evidence))?;
    }
    listing.finish()
}

/// The service share of every host with traffic that the whitelist covers.
fn calibrate(context: &Context, service: &str, format: ListFormat) -> anyhow::Result<()> {
    let service = context.service(service)?;
    let Some(window) = context.latest_window()? else { bail!("the store is empty; analyze some traffic first") };
    let mut shares = Vec::new();
    for host in context.engine.store.active_hosts(window.from_ms, window.to_ms)? {
        if context.engine.whitelist.matching(host, &service.name).is_none() {
            continue;
        }
        let (share, total) = context.engine.store.share_bytes(&service.name, host, window.from_ms, window.to_ms)?;
        if total > 0 {
            shares.push((host, share as f64 / total as f64));
        }
    }
    if shares.is_empty() {
        bail!(
            "no whitelisted {} host has traffic in the last {} days",
            service.name,
            context.engine.config.detection.history_days.0
        );
    }
    let mut values: Vec<f64> = shares.iter().map(|(_, s)| *s).collect();
    values.sort_by(f64::total_cmp);
    let (min, max) = (values[0], values[values.len() - 1]);
    let kept = values.iter().filter(|&&s| s >= service.share_threshold).count();
    // The highest two-decimal threshold that keeps them all.
    let keeps_all = (min * 100.0).floor() / 100.0;
    let record = json!({
        "service": service.name, "hosts": values.len(), "min": min, "q1": quantile(&values, 0.25),
        "median": quantile(&values, 0.5), "q3": quantile(&values, 0.75), "max": max,
        "threshold_keeping_all": keeps_all, "configured_threshold": service.share_threshold,
        "kept_by_configured": kept,
        "hosts_shares": shares.iter().map(|(h, s)| json!({"host": h, "share": s})).collect::<Vec<_>>(),
    });
    const COLUMNS: &[&str] = &[
        "service",
        "hosts",
        "min",
        "q1",
        "median",
        "q3",
        "max",
        "threshold_keeping_all",
        "configured_threshold",
        "kept_by_configured",
        "hosts_shares",
    ];
    let mut listing = Listing::stdout(format, COLUMNS, "")?;
    listing.record(&record, || {
        format!(
            "share of the {} whitelisted {} hosts with traffic in the last {} days on the service's share ports:\n  \
             min {:.3}  1st quartile {:.3}  median {:.3}  3rd quartile {:.3}  max {:.3}\n\
             a threshold of {keeps_all:.2} or lower keeps all of them; the configured {:.2} keeps {kept} of {}",
            values.len(),
            service.name,
            context.engine.config.detection.history_days.0,
            min,
            quantile(&values, 0.25),
            quantile(&values, 0.5),
            quantile(&values, 0.75),
            max,
            service.share_threshold,
            values.len()
        )
    })?;
    listing.finish()?;
    Ok(())
}

/// Linear interpolation between closest ranks (as R's default and numpy).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}
