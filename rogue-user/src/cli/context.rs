//! What the analysis commands share: the configuration, store and whitelist
//! they open, and how they print findings and time.

use std::{
    io::{self, Write},
    path::PathBuf,
};

use std::{cell::OnceCell, collections::BTreeMap, net::IpAddr};

use anyhow::Context as _;
use clap::Args;

use crate::{
    config::Config,
    detect::{Detector, Window, finding_json, finding_summary, whitelist::Whitelist},
    dns::{DnsFacts, Resolver},
    flows::format::rfc3339_millis,
    store::{Store, StoredFinding},
};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file (see config/rogue.yaml)
    #[arg(short, long, value_name = "FILE", env = "ROGUE_CONFIG", default_value = "rogue.yaml", global = true)]
    pub config: PathBuf,
    /// Use this store instead of the configuration's store.path
    #[arg(long, value_name = "PATH", global = true)]
    pub db: Option<PathBuf>,
    /// Do not ask DNS (the DNS characteristics are then null, and findings say why)
    #[arg(long, global = true)]
    pub no_dns: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// The opened configuration, store and whitelist, and what DNS said.
pub struct Context {
    pub config: Config,
    pub store: Store,
    pub whitelist: Whitelist,
    pub dns: DnsFacts,
    no_dns: bool,
    /// One resolver for the whole command, so its cache serves every host.
    resolver: OnceCell<(tokio::runtime::Runtime, Resolver)>,
}

impl ConfigArgs {
    pub fn open(&self) -> anyhow::Result<Context> {
        let config = Config::load(&self.config)?;
        let store_path = self.db.clone().unwrap_or_else(|| config.store_path());
        let store = Store::open(&store_path)?;
        let whitelist = Whitelist::load(&config.whitelist_path())?;
        let dns = if self.no_dns { DnsFacts::disabled() } else { DnsFacts { enabled: true, ..DnsFacts::default() } };
        Ok(Context { config, store, whitelist, dns, no_dns: self.no_dns, resolver: OnceCell::new() })
    }
}

impl Context {
    pub fn detector(&self) -> Detector<'_> {
        Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns }
    }

    /// Looks up the DNS characteristics of the hosts with activity of each
    /// service between `from_ms` and `to_ms` (unless `--no-dns`).
    pub fn resolve_hosts(&mut self, from_ms: i64, to_ms: i64) -> anyhow::Result<()> {
        if self.no_dns {
            return Ok(());
        }
        let hosts = self.detector().hosts_to_resolve(&self.store, Window { from_ms, to_ms })?;
        let (runtime, resolver) = self.resolver()?;
        self.dns = runtime.block_on(resolver.resolve(&hosts));
        Ok(())
    }

    fn resolver(&self) -> anyhow::Result<&(tokio::runtime::Runtime, Resolver)> {
        if let Some(resolver) = self.resolver.get() {
            return Ok(resolver);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let resolver = {
            let _entered = runtime.enter();
            Resolver::new(&self.config.dns).context("setting up the DNS resolver")?
        };
        Ok(self.resolver.get_or_init(|| (runtime, resolver)))
    }

    /// PTR names of `addrs`; empty with `--no-dns`.
    pub fn peer_names(&self, addrs: &[IpAddr]) -> anyhow::Result<BTreeMap<IpAddr, String>> {
        if self.no_dns {
            return Ok(BTreeMap::new());
        }
        let (runtime, resolver) = self.resolver()?;
        Ok(runtime.block_on(resolver.peer_names(addrs)))
    }

    /// The look-back window ending at the newest data in the store.
    pub fn latest_window(&self) -> anyhow::Result<Option<Window>> {
        let newest = self.store.newest_ms().context("reading the store")?;
        Ok(newest.map(|end| self.detector().window(end)))
    }
}

/// `2008-02-20 13:05:11` (UTC, seconds) for tables.
pub fn table_time(ms: i64) -> String {
    let text = rfc3339_millis(ms * 1_000_000);
    text.get(..19).unwrap_or(&text).replace('T', " ")
}

/// Prints findings as JSON lines or as a table.
pub fn print_findings(findings: &[StoredFinding], format: OutputFormat) -> io::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    match format {
        OutputFormat::Json => {
            for finding in findings {
                serde_json::to_writer(&mut out, &finding_json(finding))?;
                out.write_all(b"\n")?;
            }
        }
        OutputFormat::Table => {
            writeln!(
                out,
                "{:>5}  {:<13} {:<7} {:<40} {:<19}  {:<16} details",
                "id", "type", "service", "host", "time", "state"
            )?;
            for f in findings {
                writeln!(
                    out,
                    "{:>5}  {:<13} {:<7} {:<40} {:<19}  {:<16} {}",
                    f.id,
                    f.kind,
                    f.service,
                    f.host,
                    table_time(f.time_ms),
                    f.state,
                    finding_summary(f)
                )?;
            }
        }
    }
    out.flush()
}
