//! `rogue report`: the page an analyst hands to the network owner.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    process::ExitCode,
    time::Instant,
};

use clap::{ArgGroup, Args};

use super::{
    context::{Context, DnsUse, EngineArgs},
    parse_time,
};
use crate::{
    config::Service,
    detect::Window,
    engine::Engine,
    report::{self, HostPage, IndexEntry, Request},
    store::Access,
};

/// The widest plot bin the command line takes: a year (wider bins would
/// leave a plot of one column; long periods widen bins by themselves).
const MAX_BIN_SECONDS: i64 = 366 * 86_400;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["host", "all"])))]
#[command(after_help = concat!("Examples:\n  rogue report --config rogue.yaml --host 192.0.2.77 --out report-77\n  \
    rogue report --config rogue.yaml --all --out reports --from -7d\n\n\
    Open DIR/index.html in a browser; it needs no network.\n\n", super::time_forms!()))]
pub struct ReportArgs {
    /// The host to report on
    #[arg(long, value_name = "ADDR")]
    pub host: Option<IpAddr>,
    /// Every host with findings, with an index page (a page for each
    /// service it has findings of)
    #[arg(long)]
    pub all: bool,
    /// The service to report on [default: with --host, the first configured
    /// service the host has qualifying flows of; with --all, each service
    /// of each host's findings]
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Start of the period [default: the host's first traffic in the store]
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub from: Option<i64>,
    /// End of the period [default: the host's last traffic]
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub to: Option<i64>,
    /// Time bin of the plots, in seconds (a multiple of the store's bins;
    /// widened for long periods)
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(i64).range(1..=MAX_BIN_SECONDS))]
    pub bin: i64,
    /// Directory to write index.html and the figures into
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Look the host's and its peers' names up in DNS now (otherwise: what
    /// the store holds, and no peer names)
    #[arg(long)]
    pub resolve: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(args: ReportArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut context = args.engine.open(Access::ReadOnly, DnsUse::Stored { resolve: args.resolve })?;
    context.resolve_hosts(Window { from_ms: i64::MIN, to_ms: i64::MAX }, None)?;
    let generated = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string();
    let request = |host| Request { host, from_ms: args.from, to_ms: args.to, bin_seconds: args.bin };
    let written = match args.host {
        Some(host) => {
            let service = match &args.service {
                Some(name) => context.service(name)?,
                None => report::first_service_of(&*context.engine.store, context.engine.config.services.all(), host)?
                    .clone(),
            };
            let page = page(&context, &service, request(host))?;
            report::write_host(&page, &args.out, &generated)?
        }
        None => {
            let wanted = args.service.as_deref().map(|name| context.service(name)).transpose()?;
            let pages: BTreeSet<(IpAddr, String)> = context
                .engine
                .store
                .findings(None, None)?
                .into_iter()
                .filter(|f| wanted.as_ref().is_none_or(|s| s.name == f.service))
                .map(|f| (f.host, f.service))
                .collect();
            let mut files = Vec::new();
            let mut entries = Vec::new();
            for (host, service) in pages {
                // Findings of a service no longer configured have no page:
                // said, not skipped in silence.
                let Ok(service) = context.service(&service) else {
                    eprintln!(
                        "rogue: {host} has findings of {service}, which is no longer configured: no page for them"
                    );
                    continue;
                };
                let page = page(&context, &service, request(host))?;
                let dir = report::host_dir_in(&args.out, host, &service.name)?;
                files.extend(report::write_host(&page, &dir, &generated)?);
                entries.push(index_entry(&page, report::host_dir(host, &service.name)));
            }
            files.push(report::write_index(&entries, &args.out, &generated)?);
            files
        }
    };
    if !quiet {
        eprintln!(
            "rogue: wrote {} files to {} in {:.2} s; open {}",
            written.len(),
            args.out.display(),
            started.elapsed().as_secs_f64(),
            args.out.join("index.html").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A host's page for `service`, with its peers' PTR names.
fn page(context: &Context, service: &Service, request: Request) -> anyhow::Result<HostPage> {
    let detector = context.detector();
    let (config, path) = (&context.engine.config, &context.engine.store_path);
    let mut page = report::gather(&|| Engine::reader(config, path), &detector, service, request)?;
    let peers: Vec<IpAddr> = page.clients.iter().chain(&page.servers).map(|p| p.peer).collect();
    page.peer_names = context.peer_names(&peers)?;
    Ok(page)
}

fn index_entry(page: &HostPage, dir: String) -> IndexEntry {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for finding in &page.findings {
        *kinds.entry(finding.kind.as_str()).or_default() += 1;
    }
    IndexEntry {
        host: page.host,
        ptr: page.ptr.clone(),
        service: page.service.name.clone(),
        verdict: page
            .report
            .as_ref()
            .map_or(format!("no {} activity", page.service.title()), |r| r.verdict().to_string()),
        findings: kinds.iter().map(|(kind, n)| format!("{n} {kind}")).collect::<Vec<_>>().join(", "),
        last_ms: page.findings.iter().map(|f| f.time_ms).max().unwrap_or(0),
        dir,
    }
}
