//! The store: SQLite (WAL) holding what rogue learns. Per internal host and
//! time bin: port usage by direction, totals and share-port (mail) totals;
//! the qualifying service flows with role and peer, from which peers and
//! per-day server activity are views; the sources ingested (captures by
//! content hash, so none is counted twice); findings with their state; and
//! the verdicts of administrators. The schema is versioned (`user_version`)
//! and migrated on open. Times are milliseconds (bins seconds) since the
//! epoch, in data time.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{
    config::Service,
    flows::{NANOS_PER_SEC, Nanos},
    profile::{FlowSpan, ProfileBatch, Role},
};

mod schema;

pub const MILLIS_PER_DAY: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("store {path}: its schema version {found} is newer than this rogue knows ({known}); upgrade rogue")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("store query failed")]
    Sql(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A source of flows already in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub id: i64,
    pub kind: String,
    pub name: String,
    /// `blake3:HEX` (or `sha256:HEX` for captures stored before migration 4).
    pub content_hash: Option<String>,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub ingested_ms: i64,
}

/// One host's activity for one service in a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostActivity {
    pub host: IpAddr,
    pub roles: BTreeSet<Role>,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub external_clients: u64,
    pub external_servers: u64,
}

/// One peer of a host for one service in a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub peer: IpAddr,
    pub internal: bool,
    /// The host's role towards this peer.
    pub role: Role,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// A finding as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFinding {
    pub id: i64,
    pub kind: String,
    pub service: String,
    pub host: IpAddr,
    /// Tells findings of one type and host apart (a burst's start, a day).
    pub key: String,
    pub state: String,
    pub time_ms: i64,
    pub details: serde_json::Value,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What storing a finding changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    New,
    Changed,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub verdict: String,
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let open_error = |source| StoreError::Open { path: path.into(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                open_error(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create {}: {e}", dir.display())),
                ))
            })?;
        }
        create_private(path).map_err(|e| {
            open_error(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create {}: {e}", path.display())),
            ))
        })?;
        let conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_error)?;
        // A page cache of 128 MiB (SQLite's default is 2 MiB): an ingest's B-tree
        // pages stay in memory rather than spilling to the WAL and being read back.
        conn.pragma_update(None, "cache_size", -131_072).map_err(open_error)?;
        let mut store = Store { conn, path: path.into() };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<()> {
        let found: i64 = self.conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let known = schema::MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew { path: self.path.clone(), found, known });
        }
        let tx = self.conn.transaction()?;
        for (version, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The schema version after migrations.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    /// Starts writing flows from a new source; nothing is visible to readers
    /// (or kept after a crash) until [`Ingest::commit`].
    pub fn ingest(&mut self) -> Result<Ingest<'_>> {
        Ok(Ingest { tx: self.conn.transaction()? })
    }

    /// Whether some capture's hash is SHA-256 (stored before migration 4):
    /// a new capture must then be hashed that way too to be compared.
    pub fn has_sha256_hashes(&self) -> Result<bool> {
        let query = "SELECT EXISTS (SELECT 1 FROM sources WHERE content_hash LIKE 'sha256:%')";
        Ok(self.conn.query_row(query, [], |row| row.get(0))?)
    }

    /// The newest data time any source reached.
    pub fn newest_ms(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row("SELECT max(last_ms) FROM sources", [], |row| row.get(0))?)
    }

    /// Days (since the epoch) on which the store saw traffic.
    pub fn covered_days(&self) -> Result<BTreeSet<i64>> {
        let mut statement = self.conn.prepare_cached("SELECT day FROM data_days")?;
        let days = statement.query_map([], |row| row.get(0))?;
        Ok(days.collect::<rusqlite::Result<_>>()?)
    }

    /// The hosts with qualifying flows of `service` starting in the window,
    /// from the index alone (cheap beside their activity).
    pub fn service_host_addresses(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT host FROM service_flows WHERE service = ? AND start_ms BETWEEN ? AND ? ORDER BY host",
        )?;
        let rows = statement.query_map(params![service, from_ms, to_ms], |row| addr(row, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the last of `host`'s qualifying flows of `service` starting in
    /// the window ended, if it had any.
    pub fn service_host_last_ms(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<i64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT max(end_ms) FROM service_flows WHERE service = ? AND host = ? AND start_ms BETWEEN ? AND ?",
        )?;
        Ok(statement.query_row(params![service, host.to_string(), from_ms, to_ms], |row| row.get(0))?)
    }

    /// One host's activity for `service` in the window, if it had any.
    pub fn service_host(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<HostActivity>> {
        // A statement of its own: one that also served every host could
        // not use the index on the host.
        let sql = format!("{HOST_ACTIVITY} AND host = ?4 GROUP BY host");
        let host = host.to_string();
        Ok(self.host_activities(&sql, params![service, from_ms, to_ms, host])?.pop())
    }

    /// Every host with qualifying flows of `service` starting in the window.
    pub fn service_hosts(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<HostActivity>> {
        let sql = format!("{HOST_ACTIVITY} GROUP BY host ORDER BY host");
        self.host_activities(&sql, params![service, from_ms, to_ms])
    }

    fn host_activities(&self, sql: &str, parameters: &[&dyn rusqlite::ToSql]) -> Result<Vec<HostActivity>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map(parameters, |row| {
            let roles: String = row.get(1)?;
            Ok(HostActivity {
                host: addr(row, 0)?,
                roles: roles.split(',').filter_map(Role::parse).collect(),
                flows: row.get(2)?,
                packets: row.get(3)?,
                bytes: row.get(4)?,
                first_ms: row.get(5)?,
                last_ms: row.get(6)?,
                external_clients: row.get(7)?,
                external_servers: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Distinct days on which `host` acted as a server of `service`.
    pub fn server_days(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(DISTINCT start_ms / 86400000) FROM service_flows
             WHERE service = ? AND host = ? AND role = 'server' AND start_ms BETWEEN ? AND ?",
            )?
            .query_row(params![service, host.to_string(), from_ms, to_ms], |row| row.get(0))?)
    }

    /// (bytes on the service's share ports, all bytes) of `host` in the window.
    pub fn share_bytes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<(u64, u64)> {
        let host = host.to_string();
        let (from, to) = (from_ms.div_euclid(1000), to_ms.div_euclid(1000));
        let share = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(bytes), 0) FROM share_bins WHERE service = ? AND host = ? AND bin BETWEEN ? AND ?",
            )?
            .query_row(params![service, host, from, to], |row| row.get(0))?;
        let total = self
            .conn
            .prepare_cached("SELECT coalesce(sum(bytes), 0) FROM host_bins WHERE host = ? AND bin BETWEEN ? AND ?")?
            .query_row(params![host, from, to], |row| row.get(0))?;
        Ok((share, total))
    }

    /// Per day (since the epoch) in the window: `host`'s qualifying flows and bytes.
    pub fn daily_volumes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT start_ms / 86400000 AS day, count(*), sum(bytes) FROM service_flows
             WHERE service = ? AND host = ? AND start_ms BETWEEN ? AND ? GROUP BY day ORDER BY day",
        )?;
        let rows = statement.query_map(params![service, host.to_string(), from_ms, to_ms], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// (start, peer) of the qualifying flows `host` opened to external
    /// servers in the window, by start.
    pub fn opened_to_external_servers(
        &self,
        service: &str,
        host: IpAddr,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, IpAddr)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT start_ms, peer FROM service_flows
             WHERE service = ? AND host = ? AND role = 'client' AND outbound AND NOT peer_internal
               AND start_ms BETWEEN ? AND ? ORDER BY start_ms",
        )?;
        let rows = statement
            .query_map(params![service, host.to_string(), from_ms, to_ms], |row| Ok((row.get(0)?, addr(row, 1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `host`'s peers for `service` in the window, most bytes first.
    pub fn peers(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<Peer>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT peer, peer_internal, role, count(*), sum(packets), sum(bytes), min(start_ms), max(end_ms)
             FROM service_flows WHERE service = ? AND host = ? AND start_ms BETWEEN ? AND ?
             GROUP BY peer, role ORDER BY sum(bytes) DESC, peer",
        )?;
        let rows = statement.query_map(params![service, host.to_string(), from_ms, to_ms], |row| {
            Ok(Peer {
                peer: addr(row, 0)?,
                internal: row.get(1)?,
                role: Role::parse(row.get_ref(2)?.as_str()?).unwrap_or(Role::Client),
                flows: row.get(3)?,
                packets: row.get(4)?,
                bytes: row.get(5)?,
                first_ms: row.get(6)?,
                last_ms: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores a finding, or updates the one with the same type, service,
    /// host and key. Its state is kept unless `state` overrides it.
    pub fn upsert_finding(
        &mut self,
        kind: &str,
        service: &str,
        host: IpAddr,
        key: &str,
        time_ms: i64,
        details: &serde_json::Value,
        state: Option<&str>,
        now_ms: i64,
    ) -> Result<(i64, Upsert)> {
        let existing = self
            .conn
            .query_row(
                "SELECT id, state, time_ms, details FROM findings WHERE type = ? AND service = ? AND host = ? AND key = ?",
                params![kind, service, host.to_string(), key],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?)),
            )
            .optional()?;
        let details_text = details.to_string();
        match existing {
            None => {
                self.conn.execute(
                    "INSERT INTO findings (type, service, host, key, state, time_ms, details, created_ms, updated_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    params![
                        kind,
                        service,
                        host.to_string(),
                        key,
                        state.unwrap_or("open"),
                        time_ms,
                        details_text,
                        now_ms,
                        now_ms
                    ],
                )?;
                Ok((self.conn.last_insert_rowid(), Upsert::New))
            }
            Some((id, old_state, old_time, old_details)) => {
                let new_state = state.unwrap_or(&old_state);
                if new_state == old_state && old_time == time_ms && old_details == details_text {
                    return Ok((id, Upsert::Unchanged));
                }
                self.conn.execute(
                    "UPDATE findings SET state = ?, time_ms = ?, details = ?, updated_ms = ? WHERE id = ?",
                    params![new_state, time_ms, details_text, now_ms, id],
                )?;
                Ok((id, Upsert::Changed))
            }
        }
    }

    /// What was last emitted of each finding emitted so far, by id.
    pub fn emitted(&self) -> Result<HashMap<i64, String>> {
        let mut statement = self.conn.prepare("SELECT id, emitted FROM findings WHERE emitted IS NOT NULL")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_emitted(&mut self, id: i64, evidence: &str) -> Result<()> {
        self.conn.execute("UPDATE findings SET emitted = ? WHERE id = ?", params![evidence, id])?;
        Ok(())
    }

    /// Stored findings, oldest first: those whose time is at or after
    /// `since_ms`, in `state` if given.
    pub fn findings(&self, since_ms: Option<i64>, state: Option<&str>) -> Result<Vec<StoredFinding>> {
        let mut statement = self.conn.prepare(
            "SELECT id, type, service, host, key, state, time_ms, details, created_ms, updated_ms FROM findings
             WHERE time_ms >= ? AND (? IS NULL OR state = ?) ORDER BY time_ms, id",
        )?;
        let rows = statement.query_map(params![since_ms.unwrap_or(i64::MIN), state, state], finding_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn finding(&self, id: i64) -> Result<Option<StoredFinding>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, type, service, host, key, state, time_ms, details, created_ms, updated_ms FROM findings WHERE id = ?",
                [id],
                finding_row,
            )
            .optional()?)
    }

    pub fn set_finding_state(&mut self, id: i64, state: &str, now_ms: i64) -> Result<bool> {
        let changed = self
            .conn
            .execute("UPDATE findings SET state = ?, updated_ms = ? WHERE id = ?", params![state, now_ms, id])?;
        Ok(changed > 0)
    }

    /// (service, host) of every finding not in `state`.
    pub fn finding_hosts_not_in(&self, state: &str) -> Result<Vec<(String, IpAddr)>> {
        let mut statement = self.conn.prepare("SELECT DISTINCT service, host FROM findings WHERE state != ?")?;
        let rows = statement.query_map([state], |row| Ok((row.get(0)?, addr(row, 1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets the state of every finding for `host` and `service`.
    pub fn set_host_findings_state(&mut self, service: &str, host: IpAddr, state: &str, now_ms: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE findings SET state = ?, updated_ms = ? WHERE service = ? AND host = ? AND state != ?",
            params![state, now_ms, service, host.to_string(), state],
        )?)
    }

    pub fn verdict(&self, service: &str, host: IpAddr) -> Result<Option<Verdict>> {
        Ok(self
            .conn
            .query_row(
                "SELECT verdict, by, reason, at_ms FROM verdicts WHERE service = ? AND host = ?",
                params![service, host.to_string()],
                |row| Ok(Verdict { verdict: row.get(0)?, by: row.get(1)?, reason: row.get(2)?, at_ms: row.get(3)? }),
            )
            .optional()?)
    }

    pub fn set_verdict(&mut self, service: &str, host: IpAddr, verdict: &Verdict) -> Result<()> {
        self.conn.execute(
            "INSERT INTO verdicts (service, host, verdict, by, reason, at_ms) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (service, host) DO UPDATE SET verdict = excluded.verdict, by = excluded.by,
                 reason = excluded.reason, at_ms = excluded.at_ms",
            params![service, host.to_string(), verdict.verdict, verdict.by, verdict.reason, verdict.at_ms],
        )?;
        Ok(())
    }

    pub fn clear_verdict(&mut self, service: &str, host: IpAddr) -> Result<()> {
        self.conn.execute("DELETE FROM verdicts WHERE service = ? AND host = ?", params![service, host.to_string()])?;
        Ok(())
    }

    /// The first and last bin (seconds) with traffic of `host`.
    pub fn host_span(&self, host: IpAddr) -> Result<Option<(i64, i64)>> {
        Ok(self.conn.query_row(
            "SELECT min(bin), max(bin) FROM host_bins WHERE host = ?",
            [host.to_string()],
            |row| Ok(row.get::<_, Option<i64>>(0)?.zip(row.get::<_, Option<i64>>(1)?)),
        )?)
    }

    /// Per day (since the epoch): all of `host`'s flows and bytes.
    pub fn host_daily(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>> {
        let mut statement = self.conn.prepare(
            "SELECT bin / 86400 AS day, sum(flows), sum(bytes) FROM host_bins
             WHERE host = ? AND bin BETWEEN ? AND ? GROUP BY day ORDER BY day",
        )?;
        let rows = statement
            .query_map(params![host.to_string(), from_ms.div_euclid(1000), to_ms.div_euclid(1000)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every finding about `host`, oldest first.
    pub fn findings_for_host(&self, host: IpAddr) -> Result<Vec<StoredFinding>> {
        let mut statement = self.conn.prepare(
            "SELECT id, type, service, host, key, state, time_ms, details, created_ms, updated_ms FROM findings
             WHERE host = ? ORDER BY time_ms, id",
        )?;
        let rows = statement.query_map([host.to_string()], finding_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every internal host with traffic in the window.
    pub fn active_hosts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>> {
        let mut statement =
            self.conn.prepare("SELECT DISTINCT host FROM host_bins WHERE bin BETWEEN ? AND ? ORDER BY host")?;
        let rows =
            statement.query_map(params![from_ms.div_euclid(1000), to_ms.div_euclid(1000)], |row| addr(row, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes bins and flows older than `retention_days` before the newest
    /// data; returns the rows removed.
    pub fn prune(&mut self, retention_days: u64) -> Result<usize> {
        let Some(newest) = self.newest_ms()? else { return Ok(0) };
        let cutoff_ms = newest - retention_days as i64 * MILLIS_PER_DAY;
        let cutoff_bin = cutoff_ms.div_euclid(1000);
        let tx = self.conn.transaction()?;
        let mut removed = 0;
        {
            // port_usage has no index on bin (it would double the cost of
            // every write); its key starts with the host, so go host by host.
            let hosts: Vec<String> = tx
                .prepare("SELECT DISTINCT host FROM host_bins WHERE bin < ?")?
                .query_map([cutoff_bin], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut usage = tx.prepare("DELETE FROM port_usage WHERE host = ? AND bin < ?")?;
            for host in &hosts {
                removed += usage.execute(params![host, cutoff_bin])?;
            }
        }
        removed += tx.execute("DELETE FROM host_bins WHERE bin < ?", [cutoff_bin])?;
        removed += tx.execute("DELETE FROM share_bins WHERE bin < ?", [cutoff_bin])?;
        removed += tx.execute("DELETE FROM service_flows WHERE start_ms < ?", [cutoff_ms])?;
        tx.commit()?;
        Ok(removed)
    }

    /// Rows in a table (for tests and diagnostics).
    pub fn count(&self, table: &str) -> Result<u64> {
        assert!(table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "table name");
        Ok(self.conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))?)
    }

    /// Port usage of `host`: (bin, direction, proto, port, flows, packets, bytes).
    pub fn port_usage(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u8, u8, u16, u64, u64, u64)>> {
        let mut statement = self.conn.prepare(
            "SELECT bin, direction, proto, port, flows, packets, bytes FROM port_usage
             WHERE host = ? AND bin BETWEEN ? AND ? ORDER BY bin, direction, proto, port",
        )?;
        let rows = statement
            .query_map(params![host.to_string(), from_ms.div_euclid(1000), to_ms.div_euclid(1000)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Writing one source's flows; dropped without [`commit`](Ingest::commit),
/// nothing of it stays.
pub struct Ingest<'s> {
    tx: Transaction<'s>,
}

impl Ingest<'_> {
    /// Registers a source and returns its id.
    pub fn add_source(&self, kind: &str, name: &str, now_ms: i64) -> Result<i64> {
        self.tx
            .execute("INSERT INTO sources (kind, name, ingested_ms) VALUES (?, ?, ?)", params![kind, name, now_ms])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// The source whose content has `hash`, as this transaction sees it.
    pub fn source_by_hash(&self, hash: &str) -> Result<Option<Source>> {
        Ok(self.tx.query_row(SOURCE_BY_HASH, [hash], source_row).optional()?)
    }

    pub fn set_source_hash(&self, source: i64, hash: &str) -> Result<()> {
        self.tx.execute("UPDATE sources SET content_hash = ? WHERE id = ?", params![hash, source])?;
        Ok(())
    }

    /// Widens the data time a source covers and adds to its counts.
    pub fn extend_source(&self, source: i64, first: Nanos, last: Nanos, packets: u64, flows: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE sources SET first_ms = min(coalesce(first_ms, ?1), ?1), last_ms = max(coalesce(last_ms, ?2), ?2),
                 packets = packets + ?3, flows = flows + ?4 WHERE id = ?5",
            params![millis(first), millis(last), packets, flows, source],
        )?;
        Ok(())
    }

    /// [`Ingest::extend_source`] by what `span` holds, if it holds flows.
    pub fn extend_source_by(&self, source: i64, span: &FlowSpan) -> Result<()> {
        match (span.first, span.last) {
            (Some(first), Some(last)) => self.extend_source(source, first, last, span.packets, span.flows),
            _ => Ok(()),
        }
    }

    /// Adds a batch of profiles from `source`; `services` names the batch's
    /// service indexes.
    pub fn write(&self, source: i64, services: &[Service], batch: &ProfileBatch) -> Result<()> {
        let mut text = AddressText::default();
        let mut usage = self.tx.prepare_cached(
            "INSERT INTO port_usage (host, bin, direction, proto, port, flows, packets, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (host, bin, direction, proto, port) DO UPDATE SET flows = flows + excluded.flows,
                 packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
        )?;
        // In key order, so the B-tree is walked forward rather than at random.
        let mut port_usage: Vec<_> = batch.port_usage.iter().collect();
        port_usage.sort_unstable_by_key(|(key, _)| **key);
        for (key, counts) in port_usage {
            usage.execute(params![
                text.of(key.host),
                key.bin,
                key.direction as u8,
                key.proto,
                key.port,
                counts.flows,
                counts.packets,
                counts.bytes
            ])?;
        }
        let mut host_bins = self.tx.prepare_cached(
            "INSERT INTO host_bins (host, bin, flows, packets, bytes) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (host, bin) DO UPDATE SET flows = flows + excluded.flows,
                 packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
        )?;
        let mut bins: Vec<_> = batch.host_bins.iter().collect();
        bins.sort_unstable_by_key(|(key, _)| **key);
        for ((host, bin), counts) in bins {
            host_bins.execute(params![text.of(*host), bin, counts.flows, counts.packets, counts.bytes])?;
        }
        let mut share_bins = self.tx.prepare_cached(
            "INSERT INTO share_bins (service, host, bin, flows, packets, bytes) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (service, host, bin) DO UPDATE SET flows = flows + excluded.flows,
                 packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
        )?;
        for ((service, host, bin), counts) in &batch.share_bins {
            share_bins.execute(params![
                services[*service].name,
                text.of(*host),
                bin,
                counts.flows,
                counts.packets,
                counts.bytes
            ])?;
        }
        let mut days = self.tx.prepare_cached(
            "INSERT INTO data_days (day, flows) VALUES (?, ?) ON CONFLICT (day) DO UPDATE SET flows = flows + excluded.flows",
        )?;
        for (day, flows) in &batch.days {
            days.execute(params![day, flows])?;
        }
        let mut flows = self.tx.prepare_cached(
            "INSERT INTO service_flows (source_id, service, host, role, peer, peer_internal, host_port, peer_port,
                 outbound, start_ms, end_ms, packets, bytes, tcp_flags)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for flow in &batch.service_flows {
            flows.execute(params![
                source,
                services[flow.service].name,
                text.of(flow.host),
                flow.role.as_str(),
                text.of(flow.peer),
                flow.peer_internal,
                flow.host_port,
                flow.peer_port,
                flow.outbound,
                millis(flow.start),
                millis(flow.end),
                flow.packets,
                flow.bytes,
                flow.tcp_flags
            ])?;
        }
        Ok(())
    }

    pub fn commit(self) -> Result<()> {
        Ok(self.tx.commit()?)
    }
}

/// Creates the store's file readable by its owner only (it records who
/// talked to whom); SQLite gives its WAL and shared-memory files the same
/// permissions. An existing file keeps its permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Addresses as the store writes them (text), each formatted once a batch.
#[derive(Default)]
struct AddressText(crate::flows::FastMap<IpAddr, std::rc::Rc<str>>);

impl AddressText {
    fn of(&mut self, addr: IpAddr) -> std::rc::Rc<str> {
        self.0.entry(addr).or_insert_with(|| addr.to_string().into()).clone()
    }
}

/// Hosts' activity from their qualifying flows of service ?1 starting
/// between ?2 and ?3 (ms), to be grouped by host.
const HOST_ACTIVITY: &str =
    "SELECT host, group_concat(DISTINCT role), count(*), sum(packets), sum(bytes), min(start_ms), max(end_ms),
            count(DISTINCT CASE WHEN role = 'server' AND NOT peer_internal THEN peer END),
            count(DISTINCT CASE WHEN role = 'client' AND NOT peer_internal THEN peer END)
     FROM service_flows WHERE service = ?1 AND start_ms BETWEEN ?2 AND ?3";

const SOURCE_BY_HASH: &str =
    "SELECT id, kind, name, content_hash, first_ms, last_ms, ingested_ms FROM sources WHERE content_hash = ?";

pub fn millis(time: Nanos) -> i64 {
    time.div_euclid(NANOS_PER_SEC / 1000)
}

/// The address in column `index`.
fn addr(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<IpAddr> {
    let text: String = row.get(index)?;
    text.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

fn source_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        id: row.get(0)?,
        kind: row.get(1)?,
        name: row.get(2)?,
        content_hash: row.get(3)?,
        first_ms: row.get(4)?,
        last_ms: row.get(5)?,
        ingested_ms: row.get(6)?,
    })
}

fn finding_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredFinding> {
    let details: String = row.get(7)?;
    Ok(StoredFinding {
        id: row.get(0)?,
        kind: row.get(1)?,
        service: row.get(2)?,
        host: addr(row, 3)?,
        key: row.get(4)?,
        state: row.get(5)?,
        time_ms: row.get(6)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        created_ms: row.get(8)?,
        updated_ms: row.get(9)?,
    })
}

#[cfg(test)]
mod tests;
