//! What the analysis commands share: the configuration, store and whitelist
//! they open, and how they print findings and time.

use std::{
    io::{self, Write},
    path::PathBuf,
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    config::Config,
    detect::{Detector, Window, finding_json, whitelist::Whitelist},
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// The opened configuration, store and whitelist.
pub struct Context {
    pub config: Config,
    pub store: Store,
    pub whitelist: Whitelist,
}

impl ConfigArgs {
    pub fn open(&self) -> anyhow::Result<Context> {
        let config = Config::load(&self.config)?;
        let store_path = self.db.clone().unwrap_or_else(|| config.store_path());
        let store = Store::open(&store_path)?;
        let whitelist = Whitelist::load(&config.whitelist_path())?;
        Ok(Context { config, store, whitelist })
    }
}

impl Context {
    pub fn detector(&self) -> Detector<'_> {
        Detector { config: &self.config, whitelist: &self.whitelist }
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
                    summary(f)
                )?;
            }
        }
    }
    out.flush()
}

/// The essentials of a finding in a few words, for the table.
fn summary(finding: &StoredFinding) -> String {
    let d = &finding.details;
    let number = |key: &str| d[key].as_u64().unwrap_or(0);
    match finding.kind.as_str() {
        "rogue_server" => {
            let roles: Vec<&str> = d["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
            let share =
                d["characteristics"]["mail_share"].as_f64().map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0));
            format!(
                "{}; {} flows; {} clients, {} servers; {} server days; mail share {share}{}",
                roles.join("+"),
                number("flows"),
                number("external_clients"),
                number("external_servers"),
                d["characteristics"]["server_days"].as_u64().unwrap_or(0),
                if d["suggest_whitelist"] == true { "; suggest whitelisting" } else { "" }
            )
        }
        "fanout_burst" => format!("{} external servers within {} s", number("peers"), number("window_seconds")),
        "volume_spike" => format!(
            "{}: {} flows, {} bytes; baseline {} flows, {} bytes",
            d["day"].as_str().unwrap_or("?"),
            number("flows"),
            number("bytes"),
            number("baseline"),
            number("baseline_bytes")
        ),
        _ => d.to_string(),
    }
}
