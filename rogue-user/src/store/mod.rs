//! The store: what rogue learns, behind one interface with two backends.
//! Per internal host and time bin: port usage by direction, totals and
//! share-port (mail) totals; the qualifying service flows with role and
//! peer, from which peers and per-day server activity follow; the sources
//! of flows (captures by content hash, so none is counted twice); findings
//! with their state; the verdicts of administrators; and what DNS answered
//! about hosts.
//!
//! - [`sqlite`]: one file on one box, the default (embedded, nothing to run).
//! - [`clickhouse`]: a ClickHouse server or cluster that many collectors and
//!   agents write to and one evaluator reads (`store.backend: clickhouse`).
//!
//! The method's rules live above this layer, in `detect`: a backend only
//! answers the questions the traits below ask (sums, distinct peers, days),
//! so both apply the same rules. Every row of traffic names the source it
//! came from, so retention and removal touch one source's data and no
//! other's; each source says what of it is not evaluated yet, so an
//! evaluation cut short is finished by the next rather than lost. Times are
//! milliseconds (bins seconds) since the epoch, in data time.

use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use crate::{
    config::{Config, Service, StoreBackend},
    profile::{FlowSpan, ProfileBatch},
};

pub mod clickhouse;
mod model;
pub mod sqlite;

pub use model::{
    Acknowledgement, Action, HostActivity, HostNames, LIVE_SQL, Peer, Pending, PortUsageRow, Pruned, RecordTarget,
    RecordedSettings, Source, StoredFinding, Upsert, Verdict, is_live_kind,
};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "no store at {path}: `rogue analyze`, `rogue agent` and `rogue collect` create one (store.path or --db names it)"
    )]
    Missing { path: PathBuf },
    #[error("{path} is not a rogue store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("cannot create the store {path}: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("store {path}: its schema version {found} is newer than this rogue knows ({known}); upgrade rogue")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error(
        "store {path} is damaged ({detail}); restore it from a backup, or move it aside so that rogue starts a \
         new one (`rogue store check` lists what is wrong)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("store {path} cannot be written: {error}")]
    ReadOnly { path: PathBuf, error: rusqlite::Error },
    #[error("store {path}: {error}")]
    Sql { path: PathBuf, error: rusqlite::Error },
    #[error(
        "ClickHouse store {server}: its schema version {found} is newer than this rogue knows ({known}); upgrade rogue"
    )]
    TooNewServer { server: String, found: i64, known: i64 },
    /// The ClickHouse server did not answer, or answered something other
    /// than a result (it is down, restarting, or unreachable).
    #[error("ClickHouse store {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// The ClickHouse server refused a query (its exception, as it said it).
    #[error("ClickHouse store {server}: {detail}")]
    Refused { server: String, detail: String },
}

impl StoreError {
    /// Whether trying again later can succeed (the server is away), as
    /// opposed to an error that will recur.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unreachable { .. })
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How a command opens the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Create it if there is none (in an existing directory): the commands
    /// that gather traffic (analyze, agent, collect).
    Create,
    /// An existing store, read and written (findings ack, whitelist accept).
    ReadWrite,
    /// An existing store, only read (the query commands). An older schema is
    /// still migrated, which writes.
    ReadOnly,
}

/// Opens the store `config` names: the SQLite file at `sqlite_path`
/// (`--db`, else `store.path`), or the ClickHouse server.
pub fn open(config: &Config, sqlite_path: &std::path::Path, access: Access) -> Result<Box<dyn Store>> {
    match config.store.backend {
        StoreBackend::Sqlite => Ok(Box::new(SqliteStore::open(sqlite_path, access)?)),
        StoreBackend::Clickhouse => Ok(Box::new(clickhouse::ClickHouseStore::open(&config.clickhouse(), access)?)),
    }
}

/// Everything rogue asks of a store.
pub trait Store: Traffic + Decisions + Retention + Send {
    /// Where the store is, for messages: its file, or its server and database.
    fn location(&self) -> String;

    /// Starts writing flows; nothing is visible to readers (or kept after a
    /// crash) until [`Ingest::commit`].
    fn ingest(&mut self) -> Result<Box<dyn Ingest + '_>>;

    /// Runs `f` as one unit: on SQLite one transaction (all or nothing); on
    /// ClickHouse, which has none, in order, each write idempotent, so a
    /// unit cut short is completed by running it again.
    fn in_transaction(&mut self, f: &mut dyn FnMut(&mut dyn Store) -> Result<()>) -> Result<()>;

    /// What the backend's own check finds wrong; empty when sound. `full`
    /// checks more (SQLite: every index against its table).
    fn check(&self, full: bool) -> Result<Vec<String>>;

    /// The schema version after migrations.
    fn schema_version(&self) -> Result<i64>;

    /// Rows of traffic or decisions in a table (for tests and diagnostics).
    fn count(&self, table: &str) -> Result<u64>;

    /// Writes committed but not in the store yet: ClickHouse's, waiting in
    /// the spool for the server; none on SQLite.
    fn unsent_writes(&self) -> usize {
        0
    }

    /// Sends the writes waiting for the store, if it takes them now (see
    /// [`unsent_writes`](Store::unsent_writes) for those still waiting).
    fn send_waiting(&mut self) -> Result<()> {
        Ok(())
    }

    /// Writes the store refused to take, again and again, and that were set
    /// aside (kept on disk, for an operator) since this process started.
    fn set_aside_writes(&self) -> u64 {
        0
    }
}

/// Writing flows from one or more sources; dropped without
/// [`commit`](Ingest::commit), nothing of it stays.
pub trait Ingest {
    /// Registers a new source and returns its id.
    fn add_source(&mut self, kind: &str, name: &str, now_ms: i64) -> Result<i64>;

    /// The source of `kind` named `name`, registered if there is none: a
    /// live origin (interfaces, an exporter) keeps one source across
    /// restarts and returns.
    fn source_named(&mut self, kind: &str, name: &str, now_ms: i64) -> Result<i64>;

    /// The source whose content has `hash`, as this write sees it.
    fn source_by_hash(&mut self, hash: &str) -> Result<Option<Source>>;

    fn set_source_hash(&mut self, source: i64, hash: &str) -> Result<()>;

    /// Widens the data time a source covers, adds to its counts and marks
    /// what `span` holds as not evaluated yet.
    fn extend_source(&mut self, source: i64, span: &FlowSpan) -> Result<()>;

    /// Counts records of `source` rejected as dated outside the plausible window.
    fn add_rejected(&mut self, source: i64, records: u64) -> Result<()>;

    /// Adds a batch of profiles from `source`; `services` names the batch's
    /// service indexes.
    fn write(&mut self, source: i64, services: &[Service], batch: &ProfileBatch) -> Result<()>;

    fn commit(self: Box<Self>) -> Result<()>;
}

/// What the method asks of the traffic: hosts' activity, roles, days,
/// shares, peers and port usage in a window, summed over every source; and
/// the sources themselves.
pub trait Traffic {
    /// Whether some capture's hash is SHA-256 (stored before SQLite
    /// migration 4): a new capture must then be hashed that way too.
    fn has_sha256_hashes(&self) -> Result<bool>;
    /// Every source, oldest first.
    fn sources(&self) -> Result<Vec<Source>>;
    fn source(&self, id: i64) -> Result<Option<Source>>;
    /// The source whose content has `hash`.
    fn source_by_hash(&self, hash: &str) -> Result<Option<Source>>;
    /// The span of what file sources (captures, IPFIX files) hold that no
    /// evaluation covered yet, if any.
    fn pending_files(&self) -> Result<Option<(i64, i64)>>;
    /// The newest data time any source reached.
    fn newest_ms(&self) -> Result<Option<i64>>;
    /// What no evaluation has covered yet, if anything: from the earliest
    /// unevaluated flow to the end of the newest source holding one.
    fn pending(&self) -> Result<Option<Pending>>;
    /// The current write sequence number: an evaluation that starts now
    /// covers every write numbered up to it.
    fn write_seq(&self) -> Result<i64>;
    /// Days (since the epoch) on which the store saw traffic.
    fn covered_days(&self) -> Result<std::collections::BTreeSet<i64>>;
    /// The hosts with qualifying flows of `service` starting in the window.
    fn service_host_addresses(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>>;
    /// When the last of `host`'s qualifying flows of `service` starting in
    /// the window ended, if it had any.
    fn service_host_last_ms(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<i64>>;
    /// When `host`'s first qualifying flow of `service` started, if it has any.
    fn service_host_first_ms(&self, service: &str, host: IpAddr) -> Result<Option<i64>>;
    /// One host's activity for `service` in the window, if it had any.
    fn service_host(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<HostActivity>>;
    /// Every host with qualifying flows of `service` starting in the window, by address.
    fn service_hosts(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<HostActivity>>;
    /// Distinct days on which `host` acted as a server of `service`.
    fn server_days(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<u64>;
    /// (bytes on the service's share ports, all bytes) of `host` in the window.
    fn share_bytes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<(u64, u64)>;
    /// Per day (since the epoch) in the window: `host`'s qualifying flows and bytes.
    fn daily_volumes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>>;
    /// (start, peer) of the qualifying flows `host` opened to external
    /// servers in the window, by start (then peer).
    fn opened_to_external_servers(
        &self,
        service: &str,
        host: IpAddr,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, IpAddr)>>;
    /// `host`'s peers for `service` in the window, most bytes first.
    fn peers(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<Peer>>;
    /// [`peers`](Self::peers) and [`daily_volumes`](Self::daily_volumes)
    /// at once (a backend may read the flows once for both).
    #[allow(clippy::type_complexity)]
    fn peers_and_days(
        &self,
        service: &str,
        host: IpAddr,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<Peer>, Vec<(i64, u64, u64)>)> {
        Ok((self.peers(service, host, from_ms, to_ms)?, self.daily_volumes(service, host, from_ms, to_ms)?))
    }
    /// The first and last bin (seconds) with traffic of `host`.
    fn host_span(&self, host: IpAddr) -> Result<Option<(i64, i64)>>;
    /// Per day (since the epoch): all of `host`'s flows and bytes.
    fn host_daily(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>>;
    /// Every internal host with traffic in the window, by address.
    fn active_hosts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>>;
    /// Port usage of `host`, every source's added up, by bin, direction,
    /// protocol and port.
    fn port_usage(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<PortUsageRow>>;
}

/// What rogue concluded and what people decided: findings with their
/// state, the administrators' verdicts, what was last emitted of each
/// finding, what DNS answered about hosts, and the settings the findings
/// were reached with.
pub trait Decisions {
    /// Stores a finding, or updates the one with the same type, service,
    /// host and key. Its state is kept unless `state` overrides it.
    #[allow(clippy::too_many_arguments)]
    fn upsert_finding(
        &mut self,
        kind: &str,
        service: &str,
        host: IpAddr,
        key: &str,
        time_ms: i64,
        details: &serde_json::Value,
        state: Option<&str>,
        now_ms: i64,
    ) -> Result<(i64, Upsert)>;
    /// Marks what `pending` described as evaluated, for every source whose
    /// unevaluated flows lie in it and were written before the evaluation
    /// began (a write that came in meanwhile stays pending for the next).
    fn mark_evaluated(&mut self, pending: Pending) -> Result<usize>;
    /// What was last emitted of each finding emitted so far, by id.
    fn emitted(&self) -> Result<HashMap<i64, String>>;
    fn set_emitted(&mut self, id: i64, evidence: &str) -> Result<()>;
    /// Stored findings, oldest first: those whose time is at or after
    /// `since_ms`, in `state` if given.
    fn findings(&self, since_ms: Option<i64>, state: Option<&str>) -> Result<Vec<StoredFinding>>;
    fn finding(&self, id: i64) -> Result<Option<StoredFinding>>;
    /// Every finding about `host`, oldest first.
    fn findings_for_host(&self, host: IpAddr) -> Result<Vec<StoredFinding>>;
    /// Acknowledges the findings `ids`, all or none: returns the ids there
    /// is no finding of, and then changes nothing.
    fn acknowledge(&mut self, ids: &[i64], ack: &Acknowledgement) -> Result<Vec<i64>>;
    fn set_finding_state(&mut self, id: i64, state: &str, now_ms: i64) -> Result<bool>;
    /// (service, host) of every finding not in `state`.
    fn finding_hosts_not_in(&self, state: &str) -> Result<Vec<(String, IpAddr)>>;
    /// Sets the state of every finding for `host` and `service`.
    fn set_host_findings_state(&mut self, service: &str, host: IpAddr, state: &str, now_ms: i64) -> Result<usize>;
    fn verdict(&self, service: &str, host: IpAddr) -> Result<Option<Verdict>>;
    fn set_verdict(&mut self, service: &str, host: IpAddr, verdict: &Verdict) -> Result<()>;
    fn clear_verdict(&mut self, service: &str, host: IpAddr) -> Result<()>;
    /// Records the settings of an evaluation.
    fn record_settings(&mut self, settings: &RecordedSettings) -> Result<()>;
    /// The settings the store was last evaluated with, if it was.
    fn recorded_settings(&self) -> Result<Option<RecordedSettings>>;
    /// What DNS last answered about each (service, host).
    fn host_names(&self) -> Result<HashMap<(String, IpAddr), HostNames>>;
    /// Keeps what DNS answered (see [`HostNames::over`] for what a lookup
    /// without an answer keeps).
    fn save_host_names(&mut self, answers: &HashMap<(String, IpAddr), HostNames>, now_ms: i64) -> Result<()>;
    /// Adds a decision to the audit trail.
    fn record_action(&mut self, action: &Action) -> Result<()>;
    /// The audit trail, newest first.
    fn actions(&self) -> Result<Vec<Action>>;
}

/// How long the store keeps traffic. Retention is anchored to the wall
/// clock, which no record can move (a packet stamped 2030, a spoofed IPFIX
/// datagram dated 2100), and touches one source's data at a time:
/// - live sources (the agent's interfaces, the collector's exporters) lose
///   their bins and flows older than `retention_days` before now;
/// - file sources (captures, IPFIX files) are kept whole for
///   `retention_days` after they were ingested, then removed whole: a
///   capture of 2008 analysed today is kept as long as one of today.
///
/// An analyst can also remove a source, or everything before a time, by
/// hand (`rogue store prune`). Findings, verdicts and DNS answers are not
/// traffic and stay.
pub trait Retention {
    /// Applies retention as of `now_ms` (the wall clock).
    fn apply_retention(&mut self, retention_days: u64, now_ms: i64) -> Result<Pruned>;
    /// Removes every source's traffic older than `before_ms` (data time).
    fn prune_before(&mut self, before_ms: i64) -> Result<usize>;
    /// Removes everything stored from source `id`, and the source itself;
    /// returns the rows of traffic removed.
    fn remove_source(&mut self, id: i64) -> Result<usize>;
}
