//! The engine: what every command and the agent open the same way (the
//! configuration, the store, the whitelist, the DNS answers the store
//! holds) and the one evaluation step they share: apply the method to a
//! period, store the findings together with the mark that the period's
//! traffic is evaluated (and the settings that evaluated it), then apply
//! retention.
//!
//! Without a configuration file, a store named by `--db` answers with the
//! configuration and whitelist it was last evaluated with: a copy of a
//! gateway's store reads on an analyst's laptop as it did on the gateway.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    config::{self, Config, ConfigError},
    detect::{Detector, DnsFacts, Window, whitelist::Whitelist},
    store::{
        self, Access, HostNames, Pending, Pruned, RecordedSettings, SqliteStore, Store, StoreError, StoredFinding,
        Upsert,
    },
};

/// Where a command finds its files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `-c` or ROGUE_CONFIG; else the first of config::SEARCH_PATH that exists.
    pub config: Option<PathBuf>,
    /// Overrides the configuration's `store.path`.
    pub db: Option<PathBuf>,
    /// `--no-dns` or ROGUE_NO_DNS: no lookups, whatever the configuration says.
    pub no_dns: bool,
}

/// Whether a missing whitelist file is an error or an empty whitelist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhitelistFile {
    /// It must exist (every command that only reads it).
    Existing,
    /// A missing one is started by the first entry (add, accept).
    Started,
}

pub struct Engine {
    pub config: Config,
    /// The configuration's file; None when the store's recorded settings
    /// stand in for it.
    pub config_file: Option<PathBuf>,
    pub store: Box<dyn Store>,
    /// Where the SQLite store is (the ClickHouse store's spool is beside
    /// it), for another connection to it (see [`Engine::reader`]).
    pub store_path: PathBuf,
    pub whitelist: Whitelist,
    /// What DNS answered, as the store holds it (disabled when DNS is off).
    pub dns: DnsFacts,
}

impl Engine {
    pub fn open(paths: &Paths, access: Access, whitelist: WhitelistFile) -> anyhow::Result<Engine> {
        let not_found = match config::locate(paths.config.as_deref()) {
            Ok(file) => {
                let config = Config::load(&file)?;
                return Engine::with_config(paths, file, config, access, whitelist);
            }
            Err(not_found) => not_found,
        };
        match (&paths.db, whitelist, access) {
            (Some(db), WhitelistFile::Existing, Access::ReadOnly | Access::ReadWrite) => {
                let store: Box<dyn Store> = Box::new(SqliteStore::open(db, access)?);
                let (config, whitelist) = recorded(&*store, not_found)?;
                Engine::assemble(paths, config, None, store, whitelist)
            }
            _ => Err(not_found.into()),
        }
    }

    /// Opens the engine of `config`, read from `file`.
    pub fn with_config(
        paths: &Paths,
        file: PathBuf,
        config: Config,
        access: Access,
        whitelist: WhitelistFile,
    ) -> anyhow::Result<Engine> {
        let store = store::open(&config, &store_path(paths, &config), access)?;
        let (path, services) = (config.whitelist_path(), config.services.names());
        let whitelist = match whitelist {
            WhitelistFile::Existing => Whitelist::load(&path, &services)?,
            WhitelistFile::Started => Whitelist::load_or_new(&path, &services)?,
        };
        Engine::assemble(paths, config, Some(file), store, whitelist)
    }

    fn assemble(
        paths: &Paths,
        config: Config,
        config_file: Option<PathBuf>,
        store: Box<dyn Store>,
        whitelist: Whitelist,
    ) -> anyhow::Result<Engine> {
        let dns = match !paths.no_dns && config.dns.enabled {
            true => DnsFacts { enabled: true, hosts: known_host_names(&*store)? },
            false => DnsFacts::disabled(),
        };
        let store_path = store_path(paths, &config);
        Ok(Engine { config, config_file, store, store_path, whitelist, dns })
    }

    /// What an evaluation records of its settings.
    fn settings(&self) -> RecordedSettings {
        let text = |path: &Path| path.display().to_string();
        let config_path = self.config_file.as_deref().map(text).unwrap_or_default();
        RecordedSettings {
            config_path,
            config_text: self.config.text.clone(),
            config_dir: text(&self.config.dir),
            data_dir: text(&self.config.data_dir),
            whitelist_path: text(self.whitelist.path()),
            whitelist_text: self.whitelist.text().to_string(),
        }
    }

    /// Opens another, read-only connection to the engine's store (a page
    /// read on several threads at once).
    pub fn reader(config: &Config, store_path: &Path) -> Result<Box<dyn Store>, StoreError> {
        store::open(config, store_path, Access::ReadOnly)
    }

    pub fn detector(&self) -> Detector<'_> {
        Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns }
    }

    /// Applies the method to `period` and stores the findings, and the mark
    /// that what was written up to write number `seq` in it is evaluated,
    /// in one transaction; then applies retention by the wall clock `now_ms`.
    pub fn evaluate(&mut self, period: Window, seq: i64, now_ms: i64) -> Result<Evaluated, StoreError> {
        let settings = self.settings();
        let Engine { config, store, whitelist, dns, .. } = self;
        let detector = Detector { config, whitelist, dns };
        let findings = detector.evaluate(&**store, period)?;
        let covered = Pending { from_ms: period.from_ms, to_ms: period.to_ms, seq };
        let mut stored = Vec::new();
        store.in_transaction(&mut |store| {
            stored = detector.record(store, &findings, now_ms)?;
            store.mark_evaluated(covered)?;
            store.record_settings(&settings)
        })?;
        let pruned = store.apply_retention(config.store.retention_days.0, now_ms)?;
        Ok(Evaluated { findings: stored, pruned })
    }
}

/// What DNS answered before, as the store holds it; none, said, while a
/// ClickHouse server is away (a collector starting then still collects).
fn known_host_names(
    store: &dyn Store,
) -> Result<std::collections::HashMap<(String, std::net::IpAddr), HostNames>, StoreError> {
    match store.host_names() {
        Err(e) if e.is_transient() => {
            tracing::warn!("{e}; starting without the DNS answers the store holds");
            Ok(Default::default())
        }
        other => other,
    }
}

/// What an evaluation stored and what retention removed after it.
pub struct Evaluated {
    pub findings: Vec<(StoredFinding, Upsert)>,
    pub pruned: Pruned,
}

/// The configuration and whitelist `store` records, for a command that
/// found no configuration file (`not_found` says where it looked).
fn recorded(store: &dyn Store, not_found: ConfigError) -> anyhow::Result<(Config, Whitelist)> {
    let db = store.location();
    let Some(recorded) = store.recorded_settings()? else {
        return Err(anyhow::Error::new(not_found)
            .context(format!("{db} records no configuration either (no evaluation has written it yet)")));
    };
    let origin = PathBuf::from(format!("{} (as recorded in {db})", recorded.config_path));
    let config = Config::parse(&origin, recorded.config_text, recorded.config_dir.into(), recorded.data_dir.into())
        .context("the store's recorded configuration does not read with this rogue; give one with -c FILE")?;
    let whitelist_origin = PathBuf::from(format!("{} (as recorded in {db})", recorded.whitelist_path));
    let whitelist = Whitelist::parse(&whitelist_origin, recorded.whitelist_text, &config.services.names())?;
    tracing::info!("no configuration file: using the one {db} was last evaluated with ({})", recorded.config_path);
    Ok((config, whitelist))
}

/// The store a command uses: `--db`, else the configuration's.
pub fn store_path(paths: &Paths, config: &Config) -> PathBuf {
    paths.db.clone().unwrap_or_else(|| config.store_path())
}
