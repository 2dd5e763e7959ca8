//! `rogue whitelist`: the hand-verified whitelist and the feedback loop:
//! list, add and remove entries; suggest hosts that behave like servers;
//! accept a suggestion (it joins the whitelist) or reject it (the host is a
//! confirmed rogue and is no longer suggested); the audit trail of those
//! decisions (and acknowledgements), from here and from the console;
//! calibrate the mail-share threshold on the whitelisted servers.

use std::{io, net::IpAddr, process::ExitCode};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{
    context::{Context, DnsUse, EngineArgs, table_time},
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
    store::{Access, Action, Store, StoreError},
    triage::{self, Decider, Via},
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
        /// Who removes it, for the store's audit trail [default: the user running rogue]
        #[arg(long, value_name = "NAME", value_parser = non_empty)]
        by: Option<String>,
        /// Why (recorded beside who and when)
        #[arg(long, value_parser = non_empty)]
        reason: Option<String>,
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
    /// The audit trail: every decision (acknowledge, accept, reject, add, remove), newest first, with who, when, why and how
    History {
        #[arg(long, value_enum, help = FORMAT_HELP)]
        format: Option<ListFormat>,
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
            let (mut whitelist, mut store) = whitelist_and_store(config, true)?;
            let decider = Decider::now(by, Via::Cli);
            let entry = WhitelistEntry {
                address,
                service,
                name,
                reason,
                verified_by: Some(decider.by.clone()),
                verified_on: Some(on.unwrap_or(decider.today)),
                force,
            };
            triage::add_entry(&mut whitelist, store.as_deref_mut().map(|s| s as _), entry, &decider)?;
            eprintln!("rogue: {address} added to {}", whitelist.path().display());
        }
        WhitelistAction::Remove { address, service, by, reason } => {
            let (mut whitelist, mut store) = whitelist_and_store(config, false)?;
            let decider = Decider::now(by.unwrap_or_else(login_name), Via::Cli);
            let reason = reason.unwrap_or_default();
            let removed = triage::remove_entry(
                &mut whitelist,
                store.as_deref_mut().map(|s| s as _),
                address,
                service.as_deref(),
                &decider,
                &reason,
            )?;
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
            let closed = triage::accept(&mut context.engine, host, &service, &Decider::now(by, Via::Cli), &reason)?;
            eprintln!("rogue: {host} whitelisted for {service}; {closed} finding(s) marked whitelisted");
        }
        WhitelistAction::Reject { host, by, reason, service } => {
            let mut engine = config.open_for_whitelisting(DnsUse::Stored { resolve: false })?.engine;
            let marked = triage::reject(&mut engine, host, &service, &Decider::now(by, Via::Cli), &reason)?;
            eprintln!("rogue: {host} recorded as a confirmed rogue {service} server; {marked} finding(s) marked");
        }
        WhitelistAction::History { format } => {
            let context = config.open(Access::ReadOnly, DnsUse::Stored { resolve: false })?;
            history(&context.engine.store.actions()?, format_or_default(format))?
        }
        WhitelistAction::Calibrate { service, format } => {
            let context = config.open(Access::ReadOnly, DnsUse::Stored { resolve: false })?;
            calibrate(&context, &service, format_or_default(format))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The whitelist (started if `create` and missing), and the store its
/// changes are recorded in when there is one yet: an administrator often
/// writes the whitelist before any traffic is stored, and is told the
/// change is then in the file alone.
fn whitelist_and_store(config: &EngineArgs, create: bool) -> anyhow::Result<(Whitelist, Option<Box<dyn Store>>)> {
    let loaded = load_config(config)?;
    let whitelist = whitelist_of(&loaded, create)?;
    let path = crate::engine::store_path(&config.paths(), &loaded);
    match crate::store::open(&loaded, &path, Access::ReadWrite) {
        Ok(store) => Ok((whitelist, Some(store))),
        Err(StoreError::Missing { path }) => {
            eprintln!("rogue: no store at {} yet: the whitelist file alone records this change", path.display());
            Ok((whitelist, None))
        }
        Err(e) => Err(e.into()),
    }
}

/// Who runs rogue: the user sudo was run by, else the login name.
fn login_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// The whitelist alone (list, add, remove need no store); `create` starts
/// one where there is none.
fn load_whitelist(config: &EngineArgs, create: bool) -> anyhow::Result<Whitelist> {
    whitelist_of(&load_config(config)?, create)
}

fn load_config(config: &EngineArgs) -> anyhow::Result<Config> {
    Ok(Config::load(&config::locate(config.files.file.config.as_deref())?)?)
}

/// The whitelist `config` names (started if `create` and missing).
fn whitelist_of(config: &Config, create: bool) -> anyhow::Result<Whitelist> {
    let (path, services) = (config.whitelist_path(), config.services.names());
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

fn history(actions: &[Action], format: ListFormat) -> io::Result<()> {
    const COLUMNS: &[&str] = &["time", "by", "action", "service", "subject", "finding", "reason", "via"];
    let header = format!(
        "{:<20} {:<12} {:<17} {:<7} {:<24} {:>7}  {:<4} reason",
        "time", "by", "action", "service", "on", "finding", "via"
    );
    let mut listing = Listing::stdout(format, COLUMNS, &header)?;
    for a in actions {
        let time = table_time(a.at_ms);
        let record = json!({
            "time": crate::time::rfc3339_millis(a.at_ms * 1_000_000), "by": a.by, "action": a.action,
            "service": a.service, "subject": a.subject, "finding": a.finding, "reason": a.reason, "via": a.via,
        });
        listing.record(&record, || {
            format!(
                "{time:<20} {:<12} {:<17} {:<7} {:<24} {:>7}  {:<4} {}",
                a.by,
                a.action,
                if a.service.is_empty() { "-" } else { &a.service },
                a.subject,
                a.finding.map_or("-".into(), |id| id.to_string()),
                a.via,
                if a.reason.is_empty() { "-" } else { &a.reason }
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
