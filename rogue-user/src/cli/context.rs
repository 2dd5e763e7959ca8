//! What the analysis commands share: the configuration, store, whitelist and
//! DNS answers they open, how they stop on a signal, and how they print
//! findings and time.
//!
//! DNS is asked only when it is on (`dns.enabled`, no `--no-dns`, no
//! ROGUE_NO_DNS) and the command is one that evaluates (analyze, evaluate);
//! the query commands show what the store holds and ask DNS only with
//! `--resolve`, never keeping what it says (they do not write the store).

use std::{
    cell::OnceCell,
    collections::BTreeMap,
    io::{self, Write as _},
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use super::listing::{ListFormat, Listing, format_or_default};
use crate::{
    config::{FindingFormat, Service},
    detect::{Detector, Window},
    dns::Resolver,
    engine::{Engine, Paths, WhitelistFile},
    output::{Presentation, finding_json, finding_line, finding_summary},
    store::{Access, StoredFinding},
    time::rfc3339_millis,
};

/// The heading of the options every command that has them shares. They
/// are on the commands they do something for, and nowhere else; given to
/// a command with subcommands, they go before or after the subcommand.
pub const GLOBAL: &str = "Global options";

/// `-c`: the configuration file.
#[derive(Debug, Args)]
pub struct ConfigFile {
    /// Configuration file [default: ./rogue.yaml, else /etc/rogue/rogue.yaml]
    #[arg(short, long, value_name = "FILE", env = "ROGUE_CONFIG", global = true, help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
}

/// Where a command finds its configuration and store.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub file: ConfigFile,
    /// Use this store instead of the configuration's store.path; without a
    /// configuration file, the settings the store was last evaluated with
    #[arg(long, value_name = "PATH", global = true, help_heading = GLOBAL)]
    pub db: Option<PathBuf>,
}

/// [`ConfigArgs`] and DNS, for the commands that may ask it.
#[derive(Debug, Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub files: ConfigArgs,
    /// Do not ask DNS (also ROGUE_NO_DNS=1, or dns.enabled: false): the DNS
    /// characteristics are then null, and findings say why
    #[arg(long, env = "ROGUE_NO_DNS", value_parser = clap::builder::FalseyValueParser::new(), global = true,
          help_heading = GLOBAL)]
    pub no_dns: bool,
}

/// What a command does with DNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsUse {
    /// Look the hosts up and keep the answers (the commands that evaluate).
    LookUp,
    /// Show the answers the store holds; with `resolve`, ask DNS too, for
    /// this command only.
    Stored { resolve: bool },
}

/// The engine a command opened, and how it may use DNS.
pub struct Context {
    pub engine: Engine,
    /// Whether this command may ask DNS.
    asks_dns: bool,
    keeps_answers: bool,
    /// One resolver for the whole command, so its cache serves every host.
    resolver: OnceCell<(tokio::runtime::Runtime, Resolver)>,
}

impl ConfigArgs {
    pub fn paths(&self, no_dns: bool) -> Paths {
        Paths { config: self.file.config.clone(), db: self.db.clone(), no_dns }
    }

    /// Opens the engine of a command that never asks DNS.
    pub fn open(&self, access: Access) -> anyhow::Result<Context> {
        let engine = Engine::open(&self.paths(true), access, WhitelistFile::Existing)?;
        Ok(Context::new(engine, DnsUse::Stored { resolve: false }))
    }
}

impl EngineArgs {
    pub fn paths(&self) -> Paths {
        self.files.paths(self.no_dns)
    }

    /// Opens what a command needs: the store as `access` allows (only the
    /// commands that gather traffic create one), the whitelist (it must
    /// exist), and DNS as `dns` says.
    pub fn open(&self, access: Access, dns: DnsUse) -> anyhow::Result<Context> {
        Ok(Context::new(Engine::open(&self.paths(), access, WhitelistFile::Existing)?, dns))
    }

    /// Like [`open`](Self::open), for the commands that add to the
    /// whitelist: a whitelist file that does not exist yet is started.
    pub fn open_for_whitelisting(&self, dns: DnsUse) -> anyhow::Result<Context> {
        Ok(Context::new(Engine::open(&self.paths(), Access::ReadWrite, WhitelistFile::Started)?, dns))
    }
}

impl Context {
    fn new(engine: Engine, dns: DnsUse) -> Context {
        let enabled = engine.dns.enabled;
        let (asks_dns, keeps_answers) = match dns {
            DnsUse::LookUp => (enabled, true),
            DnsUse::Stored { resolve } => (enabled && resolve, false),
        };
        Context { engine, asks_dns, keeps_answers, resolver: OnceCell::new() }
    }

    /// The configured service `name`, or an error listing those there are.
    pub fn service(&self, name: &str) -> anyhow::Result<Service> {
        let services = &self.engine.config.services;
        match services.get(name) {
            Some(service) => Ok(service.clone()),
            None => anyhow::bail!("no service {name:?} in the configuration ({})", services.names().join(", ")),
        }
    }

    pub fn detector(&self) -> Detector<'_> {
        self.engine.detector()
    }

    /// Who observed the findings and how severe each kind is.
    pub fn presentation(&self) -> Presentation {
        Presentation::of(&self.engine.config.output)
    }

    /// Asks DNS about the hosts with activity in `window`, where this
    /// command asks DNS: the answers go over what the store holds (and into
    /// the store, for the commands that evaluate). Returns the signal that
    /// stopped the lookups, if one did.
    pub fn resolve_hosts(&mut self, window: Window, stop: Option<&AtomicUsize>) -> anyhow::Result<Option<i32>> {
        if !self.asks_dns {
            return Ok(None);
        }
        let hosts = self.detector().hosts_to_resolve(&*self.engine.store, window)?;
        let (runtime, resolver) = self.resolver()?;
        let answers = runtime.block_on(async {
            tokio::select! {
                answers = resolver.resolve(&hosts) => Ok(answers),
                signal = stopped(stop) => Err(signal),
            }
        });
        let answers = match answers {
            Ok(answers) => answers,
            Err(signal) => return Ok(Some(signal)),
        };
        let engine = &mut self.engine;
        if self.keeps_answers {
            engine.store.save_host_names(&answers.hosts, jiff::Timestamp::now().as_millisecond())?;
        }
        engine.dns.take(answers);
        Ok(None)
    }

    fn resolver(&self) -> anyhow::Result<&(tokio::runtime::Runtime, Resolver)> {
        if let Some(resolver) = self.resolver.get() {
            return Ok(resolver);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let resolver = {
            let _entered = runtime.enter();
            Resolver::new(&self.engine.config.dns).context("setting up the DNS resolver")?
        };
        Ok(self.resolver.get_or_init(|| (runtime, resolver)))
    }

    /// PTR names of `addrs`, where this command asks DNS; empty otherwise.
    pub fn peer_names(&self, addrs: &[IpAddr]) -> anyhow::Result<BTreeMap<IpAddr, String>> {
        if !self.asks_dns {
            return Ok(BTreeMap::new());
        }
        let (runtime, resolver) = self.resolver()?;
        Ok(runtime.block_on(resolver.peer_names(addrs)))
    }

    /// The look-back window ending at the newest data in the store.
    pub fn latest_window(&self) -> anyhow::Result<Option<Window>> {
        let newest = self.engine.store.newest_ms().context("reading the store")?;
        Ok(newest.map(|end| self.detector().window(end)))
    }
}

/// Resolves once `stop` holds a signal's number (never without one).
async fn stopped(stop: Option<&AtomicUsize>) -> i32 {
    let Some(stop) = stop else { return std::future::pending().await };
    loop {
        match stop.load(Ordering::Relaxed) {
            0 => tokio::time::sleep(Duration::from_millis(50)).await,
            signal => return signal as i32,
        }
    }
}

/// SIGINT and SIGTERM, caught: the returned number becomes the signal's
/// once one arrives, so a long command can stop where it is safe to and
/// say what it did and did not do. A second one ends the process at once.
pub fn catch_stop_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    let stop = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Handlers run in this order: the first signal only arms the exit.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, armed.clone())
            .and_then(|_| signal_hook::flag::register(signal, armed.clone()))
            .and_then(|_| signal_hook::flag::register_usize(signal, stop.clone(), signal as usize))
            .context("installing the signal handlers")?;
    }
    Ok(stop)
}

/// A command stopped by a signal: the message says what it did and did not
/// do; the exit status is 128 + the signal's number, as shells report it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    pub signal: i32,
    pub message: String,
}

/// `2008-02-20 13:05:11` (UTC, seconds) for tables.
pub fn table_time(ms: i64) -> String {
    let text = rfc3339_millis(ms * 1_000_000);
    text.get(..19).unwrap_or(&text).replace('T', " ")
}

/// How the commands that list findings print them: the listing formats,
/// and the two a SIEM ingests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FindingsFormat {
    /// Aligned columns for people
    Table,
    /// One JSON document: an array of findings (rogue's schema)
    Json,
    /// One finding per line (rogue's schema)
    Jsonl,
    /// A header, then a row per finding
    Csv,
    /// Elastic Common Schema 8.x alerts, one per line
    Ecs,
    /// ArcSight Common Event Format, one per line
    Cef,
}

impl FindingsFormat {
    /// `--format` as given, else the listing default for where stdout goes.
    pub fn or_default(format: Option<FindingsFormat>) -> FindingsFormat {
        format.unwrap_or(match format_or_default(None) {
            ListFormat::Table => FindingsFormat::Table,
            _ => FindingsFormat::Jsonl,
        })
    }
}

/// Prints findings in `format`.
pub fn print_findings(
    findings: &[StoredFinding],
    format: FindingsFormat,
    presentation: &Presentation,
) -> io::Result<()> {
    let list_format = match format {
        FindingsFormat::Table => ListFormat::Table,
        FindingsFormat::Json => ListFormat::Json,
        FindingsFormat::Jsonl => ListFormat::Jsonl,
        FindingsFormat::Csv => ListFormat::Csv,
        FindingsFormat::Ecs | FindingsFormat::Cef => {
            let siem = if format == FindingsFormat::Ecs { FindingFormat::Ecs } else { FindingFormat::Cef };
            let mut out = io::BufWriter::new(io::stdout().lock());
            for finding in findings {
                writeln!(out, "{}", finding_line(finding, presentation, siem, None))?;
            }
            return out.flush();
        }
    };
    let header =
        format!("{:>5}  {:<13} {:<7} {:<40} {:<19}  {:<16} details", "id", "kind", "service", "host", "time", "status");
    let mut listing = Listing::stdout(list_format, FINDING_COLUMNS, &header)?;
    for f in findings {
        listing.record(&finding_json(f, presentation), || {
            let mut line = format!(
                "{:>5}  {:<13} {:<7} {:<40} {:<19}  {:<16} {}",
                f.id,
                f.kind,
                f.service,
                f.host,
                table_time(f.time_ms),
                f.state,
                finding_summary(f)
            );
            if let Some(ack) = &f.acknowledged {
                line.push_str(&format!(
                    "; acknowledged by {}{}",
                    ack.by,
                    ack.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
                ));
            }
            line
        })?;
    }
    listing.finish()
}

/// A finding's CSV columns: the common fields, then the kind's own as JSON.
const FINDING_COLUMNS: &[&str] =
    &["id", "kind", "service", "host", "time", "status", "verdict", "severity", "observer", "message", "details"];
