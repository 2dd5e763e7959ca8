//! The ClickHouse backend: one database that any number of collectors and
//! agents write to, and one evaluator reads (`detection.evaluate`).
//!
//! Writes go through the local [`spool`] (on disk first, then sent, each
//! insert idempotent), so a server that is down or restarting loses
//! nothing and doubles nothing. Reads are the same questions the SQLite
//! backend answers, in ClickHouse's SQL (see `read`). ClickHouse has no
//! transactions: a unit of work ([`Store::in_transaction`]) runs in order,
//! each of its writes replacing rows by key, so one cut short is completed
//! by the next run. The oldest server supported is 18.16 (Debian's).

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
};

use crate::{
    config::ClickHouseConfig,
    store::{Access, Ingest, Result, Store, StoreError},
};

mod client;
mod decisions;
mod read;
mod retention;
mod schema;
pub mod spool;
mod write;

use client::{Client, RowBinary, quote};
use spool::{Batch, Spool, SpoolError};

pub struct ClickHouseStore {
    client: Client,
    layout: Layout,
    /// The spool, under this process's writer name (see [`writer_name`]).
    spool: Spool,
    /// The ids of the batches kept in the spool and not yet in ClickHouse,
    /// oldest first; `true` where an attempt to send it was made (its
    /// inserts' fate is then asked before they are sent again).
    outbox: VecDeque<(String, bool)>,
    /// The writes an evaluation saw as pending, by the token it was given
    /// for them (see `read::pending`).
    snapshots: RefCell<HashMap<i64, Vec<read::PendingWrite>>>,
    next_snapshot: Cell<i64>,
    /// The last version given to a replaced row (nanoseconds of the wall
    /// clock, kept increasing).
    last_version: Cell<u64>,
    /// Sources known to exist, with whether they are live.
    known_sources: RefCell<HashMap<i64, bool>>,
    /// Times in a row the server refused the oldest write.
    refusals: u32,
    /// Writes set aside as refused, since this process started.
    set_aside: u64,
}

impl ClickHouseStore {
    /// Connects, creates the database and tables if `access` allows,
    /// migrates them, and sends what the spool holds.
    pub fn open(config: &ClickHouseConfig, access: Access) -> Result<ClickHouseStore> {
        let mut client = Client::new(config)?;
        let server = client.location();
        let layout = match connect(&mut client, config, access) {
            Ok(layout) => {
                layout.remember(&config.spool_dir);
                layout
            }
            // A collector or agent (re)started while the server is away
            // writes into the spool, as one running would: the server was
            // known before, and its layout kept beside the spool.
            Err(e) if e.is_transient() && access == Access::Create => {
                let Some(layout) = Layout::remembered(&config.spool_dir, config) else { return Err(e) };
                tracing::warn!("{e}; writing into the spool {} until it answers", config.spool_dir.display());
                client.enter_database();
                layout
            }
            Err(e) => return Err(e),
        };
        let max_bytes = config.spool_max_mib.0.saturating_mul(1 << 20);
        let spool = Spool::open(&config.spool_dir, &writer_name(), max_bytes).map_err(|e| spool_error(&server, e))?;
        let mut store = ClickHouseStore {
            client,
            layout,
            spool,
            outbox: VecDeque::new(),
            snapshots: RefCell::default(),
            next_snapshot: Cell::new(1),
            last_version: Cell::new(0),
            known_sources: RefCell::default(),
            refusals: 0,
            set_aside: 0,
        };
        if access != Access::ReadOnly {
            let waiting = store.spool.waiting().map_err(|e| spool_error(&server, e))?;
            store.outbox.extend(waiting.into_iter().map(|id| (id, true)));
            if let Err(e) = store.send_outbox() {
                tracing::warn!("{e}; {} writes wait in {}", store.outbox.len(), store.spool.dir().display());
            }
        }
        Ok(store)
    }

    /// A version for a replaced row, above every one this process gave.
    fn version(&self) -> u64 {
        let now = jiff::Timestamp::now().as_nanosecond() as u64;
        let version = now.max(self.last_version.get() + 1);
        self.last_version.set(version);
        version
    }

    /// Keeps `batch` in the spool, then sends it with any before it. Once
    /// kept, the write is done for the caller whatever the server says: the
    /// batch is sent later if not now (the caller must not write its flows
    /// again, or they would count twice).
    fn commit_batch(&mut self, batch: Batch) -> Result<()> {
        self.spool.keep(&batch).map_err(|e| spool_error(&self.client.location(), e))?;
        self.outbox.push_back((batch.id, false));
        if let Err(e) = self.send_outbox() {
            let waiting = format!("{} writes wait in {}", self.outbox.len(), self.spool.dir().display());
            match e.is_transient() {
                true => tracing::warn!("{e}; {waiting}"),
                false => tracing::error!("{e}; {waiting}, tried again at the next write"),
            }
        }
        Ok(())
    }

    /// Sends the outbox, oldest first, until it is empty or an insert fails.
    /// A write the server refuses [`REFUSALS`] times in a row (it cannot
    /// read it: a damaged file, a table changed under it) is set aside in
    /// the spool as `.refused`, logged and counted, so that it does not
    /// hold up every write after it.
    fn send_outbox(&mut self) -> Result<()> {
        let server = self.client.location();
        while let Some((id, attempted)) = self.outbox.front() {
            let batch = match self.spool.read(id).map_err(|e| spool_error(&server, e))? {
                Ok(batch) => batch,
                Err(aside) => {
                    tracing::error!(
                        "{server}: a write in the spool does not read whole; set aside as {}",
                        aside.display()
                    );
                    self.outbox.pop_front();
                    self.set_aside += 1;
                    continue;
                }
            };
            match send(&self.client, &batch, *attempted) {
                Ok(()) => {
                    self.spool.sent(id).map_err(|e| spool_error(&server, e))?;
                    self.outbox.pop_front();
                    self.refusals = 0;
                }
                Err(e) if !e.is_transient() && self.refusals + 1 >= REFUSALS => {
                    let aside = self.spool.set_aside(id).map_err(|e| spool_error(&server, e))?;
                    tracing::error!(
                        "{e}; the write was refused {REFUSALS} times and is set aside as {}",
                        aside.display()
                    );
                    self.outbox.pop_front();
                    self.refusals = 0;
                    self.set_aside += 1;
                }
                Err(e) => {
                    self.refusals += (!e.is_transient()) as u32;
                    self.outbox.front_mut().expect("the front").1 = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Refusals in a row after which a write is set aside.
const REFUSALS: u32 = 3;

impl Store for ClickHouseStore {
    fn location(&self) -> String {
        self.client.location()
    }

    fn ingest(&mut self) -> Result<Box<dyn Ingest + '_>> {
        Ok(Box::new(write::ClickHouseIngest::new(self)))
    }

    fn in_transaction(&mut self, f: &mut dyn FnMut(&mut dyn Store) -> Result<()>) -> Result<()> {
        f(self)
    }

    fn check(&self, _full: bool) -> Result<Vec<String>> {
        // The server checks its parts itself; what rogue can see is that
        // every table is there.
        let tables: Vec<Named> = self
            .client
            .select(&format!("SELECT name FROM system.tables WHERE database = {}", quote(self.client.database())))?;
        let present: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        Ok(schema::MIGRATIONS
            .iter()
            .flat_map(|tables| tables.iter())
            .filter(|table| !present.contains(&table.name))
            .map(|table| format!("table {} is missing", table.name))
            .collect())
    }

    fn schema_version(&self) -> Result<i64> {
        schema_version(&self.client)
    }

    fn count(&self, table: &str) -> Result<u64> {
        assert!(table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "table name");
        let rows = match TRAFFIC.contains(&table) {
            true => format!("SELECT count() AS n FROM {table} WHERE inserts = 0"),
            false => format!("SELECT count() AS n FROM {table} FINAL"),
        };
        Ok(self.client.select_one::<Count>(&rows)?.n)
    }

    fn unsent_writes(&self) -> usize {
        self.outbox.len()
    }

    fn send_waiting(&mut self) -> Result<()> {
        self.send_outbox()
    }

    fn set_aside_writes(&self) -> u64 {
        self.set_aside
    }
}

/// Inserts sent at once: a part is mostly the server's file work, which
/// overlaps well (a write of a capture spanning 39 days is 195 inserts).
const SENDERS: usize = 4;

/// Sends a batch's inserts: the sources first and the record of the write
/// (source_writes) last, in order, so a reader never sees a write recorded
/// without its traffic; the traffic between, [`SENDERS`] at a time. Where
/// an earlier attempt was made, or this one failed, an insert with a marker
/// is sent only if the server has no marker of it.
fn send(client: &Client, batch: &Batch, attempted: bool) -> Result<()> {
    let chunks: Vec<(usize, &spool::Chunk)> = batch.chunks.iter().enumerate().collect();
    let leading = chunks.iter().take_while(|(_, c)| c.marker.is_none()).count();
    let trailing = chunks[leading..].iter().rev().take_while(|(_, c)| c.marker.is_none()).count();
    let (head, rest) = chunks.split_at(leading);
    let (traffic, tail) = rest.split_at(rest.len() - trailing);
    let one = |&(index, chunk): &(usize, &spool::Chunk)| send_chunk(client, &batch.id, index, chunk, attempted);
    head.iter().try_for_each(one)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures: Vec<StoreError> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..SENDERS.min(traffic.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut failed = None;
                    loop {
                        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = traffic.get(at) else { return failed };
                        if let Err(e) = one(chunk) {
                            failed.get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().filter_map(|worker| worker.join().expect("a sender panicked")).collect()
    });
    if let Some(failure) = failures.into_iter().next() {
        return Err(failure);
    }
    tail.iter().try_for_each(one)
}

fn send_chunk(client: &Client, batch: &str, index: usize, chunk: &spool::Chunk, attempted: bool) -> Result<()> {
    if attempted && landed(client, chunk)? {
        return Ok(());
    }
    // An insert with a marker keeps its query id whoever sends it (a batch
    // adopted from a writer that died): the server refuses a second query
    // of an id while the first still runs. (A marker names one insert of a
    // write into each table it has rows for.)
    let query_id = match &chunk.marker {
        Some(marker) => format!("{marker}@{}", chunk.table),
        None => format!("{batch}.{index}"),
    };
    match client.insert(&chunk.table, &chunk.columns, &chunk.rows, &query_id) {
        Err(_) if landed(client, chunk).unwrap_or(false) => Ok(()),
        other => other,
    }
}

/// Whether an insert with a marker is in its table.
fn landed(client: &Client, chunk: &spool::Chunk) -> Result<bool> {
    let Some(marker) = &chunk.marker else { return Ok(false) };
    let found: Count = client.select_one(&format!(
        "SELECT count() AS n FROM {} WHERE live = {} AND day = {} AND marker = {}",
        chunk.table,
        chunk.live,
        date(chunk.day),
        quote(marker)
    ))?;
    Ok(found.n > 0)
}

/// Makes sure of the database (creating it if `access` allows) and its
/// tables, and learns the layout.
fn connect(client: &mut Client, config: &ClickHouseConfig, access: Access) -> Result<Layout> {
    let exists: Vec<Named> =
        client.select(&format!("SELECT name FROM system.databases WHERE name = {}", quote(client.database())))?;
    if exists.is_empty() {
        if access != Access::Create {
            return Err(StoreError::Refused {
                server: client.location(),
                detail: "no such database: `rogue analyze`, `rogue agent` and `rogue collect` create it".into(),
            });
        }
        let on_cluster = config.cluster.as_ref().map_or(String::new(), |c| format!(" ON CLUSTER {c}"));
        client.execute(&format!("CREATE DATABASE IF NOT EXISTS {}{on_cluster}", client.database()))?;
    }
    client.enter_database();
    let layout = Layout::of(client, config.cluster.clone())?;
    migrate(client, layout.cluster.as_deref())?;
    Ok(layout)
}

/// Where the tables are: one server, or a cluster's shards.
pub struct Layout {
    /// `store.clickhouse.cluster`.
    pub cluster: Option<String>,
    pub database: String,
    /// The shards' total weight: a row goes to the shard of its
    /// `shard_key` modulo it (1 on one server).
    pub slots: u64,
}

impl Layout {
    fn of(client: &Client, cluster: Option<String>) -> Result<Layout> {
        let database = client.database().to_string();
        let Some(name) = cluster else { return Ok(Layout { cluster: None, database, slots: 1 }) };
        let weight: Count = client.select_one(&format!(
            "SELECT sum(shard_weight) AS n FROM (SELECT any(shard_weight) AS shard_weight FROM system.clusters
             WHERE cluster = {} GROUP BY shard_num)",
            quote(&name)
        ))?;
        if weight.n == 0 {
            return Err(StoreError::Refused {
                server: client.location(),
                detail: format!("store.clickhouse.cluster: the server has no cluster {name:?} in its remote_servers"),
            });
        }
        Ok(Layout { cluster: Some(name), database, slots: weight.n })
    }

    /// Keeps the layout beside the spool, for a start while the server is
    /// away (a failure to is only logged: the next start tries again).
    fn remember(&self, spool_dir: &std::path::Path) {
        let text = format!("{}\n{}\n{}\n", self.database, self.cluster.as_deref().unwrap_or(""), self.slots);
        if let Err(e) = std::fs::create_dir_all(spool_dir).and_then(|_| std::fs::write(spool_dir.join("layout"), text))
        {
            tracing::warn!("cannot keep the ClickHouse layout in {}: {e}", spool_dir.display());
        }
    }

    /// The layout kept beside the spool, if it is the configuration's.
    fn remembered(spool_dir: &std::path::Path, config: &ClickHouseConfig) -> Option<Layout> {
        let text = std::fs::read_to_string(spool_dir.join("layout")).ok()?;
        let mut lines = text.lines();
        let (database, cluster, slots) = (lines.next()?, lines.next()?, lines.next()?.parse().ok()?);
        let cluster = (!cluster.is_empty()).then(|| cluster.to_string());
        (database == config.database && cluster == config.cluster && slots > 0).then(|| Layout {
            cluster,
            database: database.into(),
            slots,
        })
    }

    /// The table a statement that changes rows in place (ALTER) names: the
    /// shards' local tables, on every server of the cluster.
    pub fn local(&self, table: &str) -> String {
        match &self.cluster {
            Some(cluster) => format!("{}.{table}_local ON CLUSTER {cluster}", self.database),
            None => table.to_string(),
        }
    }
}

/// The tables of traffic (rows with markers; see schema).
const TRAFFIC: &[&str] = &["host_bins", "port_usage", "share_bins", "data_days", "service_flows", "flows"];

fn migrate(client: &Client, cluster: Option<&str>) -> Result<()> {
    let create = |table: &schema::Table| {
        table.create(client.database(), cluster).iter().try_for_each(|statement| client.execute(statement))
    };
    create(&schema::VERSIONS)?;
    let found = schema_version(client)?;
    let known = schema::MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNewServer { server: client.location(), found, known });
    }
    for (version, tables) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
        tables.iter().try_for_each(create)?;
        let mut row = RowBinary::default();
        row.u32(version as u32 + 1).i64(jiff::Timestamp::now().as_millisecond());
        client.insert("schema_versions", "version, applied_ms", &row.bytes, &format!("migration-{}", version + 1))?;
    }
    Ok(())
}

fn schema_version(client: &Client) -> Result<i64> {
    Ok(client.select_one::<Count>("SELECT max(version) AS n FROM schema_versions")?.n as i64)
}

/// This connection as a writer: unique among the processes writing to one
/// server (host name, process id, start time) and among the connections
/// of one process (a console page reads on several at once), and a file
/// name.
fn writer_name() -> String {
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let started = jiff::Timestamp::now().as_millisecond();
    let connection = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{host}-{}-{started}-{connection}", std::process::id())
}

fn spool_error(server: &str, error: SpoolError) -> StoreError {
    StoreError::Refused { server: server.into(), detail: error.to_string() }
}

/// A `Date` literal for `days` since the epoch.
fn date(days: u16) -> String {
    let date = jiff::civil::date(1970, 1, 1) + jiff::Span::new().days(days as i64);
    format!("toDate('{date}')")
}

#[derive(serde::Deserialize)]
struct Count {
    n: u64,
}

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}
