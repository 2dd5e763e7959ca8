//! The engine: what every command and the agent open the same way (the
//! configuration, the store, the whitelist, the DNS answers the store
//! holds) and the one evaluation step they share: apply the method to a
//! period, store the findings together with the mark that the period's
//! traffic is evaluated, then apply retention.

use std::path::PathBuf;

use crate::{
    config::Config,
    detect::{Detector, DnsFacts, Window, whitelist::Whitelist},
    store::{Access, Pending, Pruned, Store, StoreError, StoredFinding, Upsert},
};

/// Where a command finds its files.
#[derive(Clone, Debug)]
pub struct Paths {
    pub config: PathBuf,
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
    pub store: Store,
    pub whitelist: Whitelist,
    /// What DNS answered, as the store holds it (disabled when DNS is off).
    pub dns: DnsFacts,
}

impl Engine {
    pub fn open(paths: &Paths, access: Access, whitelist: WhitelistFile) -> anyhow::Result<Engine> {
        let config = Config::load(&paths.config)?;
        let store = Store::open(&store_path(paths, &config), access)?;
        let (file, services) = (config.whitelist_path(), config.services.names());
        let whitelist = match whitelist {
            WhitelistFile::Existing => Whitelist::load(&file, &services)?,
            WhitelistFile::Started => Whitelist::load_or_new(&file, &services)?,
        };
        let dns = match !paths.no_dns && config.dns.enabled {
            true => DnsFacts { enabled: true, hosts: store.host_names()? },
            false => DnsFacts::disabled(),
        };
        Ok(Engine { config, store, whitelist, dns })
    }

    pub fn detector(&self) -> Detector<'_> {
        Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns }
    }

    /// Applies the method to `period` and stores the findings, and the mark
    /// that what was written up to write number `seq` in it is evaluated,
    /// in one transaction; then applies retention by the wall clock `now_ms`.
    pub fn evaluate(&mut self, period: Window, seq: i64, now_ms: i64) -> Result<Evaluated, StoreError> {
        let Engine { config, store, whitelist, dns } = self;
        let detector = Detector { config, whitelist, dns };
        let findings = detector.evaluate(store, period)?;
        let covered = Pending { from_ms: period.from_ms, to_ms: period.to_ms, seq };
        let stored = store.in_transaction(|store| {
            let stored = detector.record(store, &findings, now_ms)?;
            store.mark_evaluated(covered)?;
            Ok(stored)
        })?;
        let pruned = store.apply_retention(config.store.retention_days.0, now_ms)?;
        Ok(Evaluated { findings: stored, pruned })
    }
}

/// What an evaluation stored and what retention removed after it.
pub struct Evaluated {
    pub findings: Vec<(StoredFinding, Upsert)>,
    pub pruned: Pruned,
}

/// The store a command uses: `--db`, else the configuration's.
pub fn store_path(paths: &Paths, config: &Config) -> PathBuf {
    paths.db.clone().unwrap_or_else(|| config.store_path())
}
