//! How long the store keeps traffic. Retention is anchored to the wall
//! clock, which no record can move (a packet stamped 2030, a spoofed IPFIX
//! datagram dated 2100), and touches one source's data at a time:
//! - live sources (the agent's interfaces, the collector's exporters) lose
//!   their bins and flows older than `retention_days` before now;
//! - file sources (captures, IPFIX files, rows migrated from before sources
//!   were kept per row) are kept whole for `retention_days` after they were
//!   ingested, then removed whole: a capture of 2008 analysed today is kept
//!   as long as one of today.
//!
//! An analyst can also remove a source, or everything before a time, by
//! hand (`rogue store prune`). Findings, verdicts and DNS answers are not
//! traffic and stay.

use rusqlite::{Transaction, params};

use super::{MILLIS_PER_DAY, Result, Source, Store, error_at};

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows of traffic (bins, port usage, flows, days).
    pub rows: usize,
    /// File sources removed whole.
    pub sources: Vec<Source>,
}

impl Store {
    /// Applies retention as of `now_ms` (the wall clock).
    pub fn apply_retention(&mut self, retention_days: u64, now_ms: i64) -> Result<Pruned> {
        let cutoff_ms = now_ms.saturating_sub(retention_days as i64 * MILLIS_PER_DAY);
        let sources = self.sources()?;
        let live: Vec<i64> = sources.iter().filter(|s| !s.is_file()).map(|s| s.id).collect();
        let expired: Vec<Source> = sources.into_iter().filter(|s| s.is_file() && s.ingested_ms < cutoff_ms).collect();
        let mut pruned = Pruned { rows: self.remove_before(cutoff_ms, &live)?, sources: Vec::new() };
        for source in expired {
            pruned.rows += self.remove_source(source.id)?;
            pruned.sources.push(source);
        }
        Ok(pruned)
    }

    /// Removes every source's traffic older than `before_ms` (data time).
    pub fn prune_before(&mut self, before_ms: i64) -> Result<usize> {
        let all: Vec<i64> = self.sources()?.iter().map(|s| s.id).collect();
        self.remove_before(before_ms, &all)
    }

    /// Removes everything stored from source `id`, and the source itself;
    /// returns the rows of traffic removed.
    pub fn remove_source(&mut self, id: i64) -> Result<usize> {
        self.write_transaction(|tx| {
            let hosts = distinct_hosts(tx, "SELECT DISTINCT host FROM host_bins WHERE source_id = ?", params![id])?;
            let mut removed = 0;
            let mut usage = tx.prepare("DELETE FROM port_usage WHERE host = ? AND source_id = ?")?;
            for host in &hosts {
                removed += usage.execute(params![host, id])?;
            }
            for table in ["host_bins", "share_bins", "data_days", "service_flows"] {
                removed += tx.execute(&format!("DELETE FROM {table} WHERE source_id = ?"), [id])?;
            }
            tx.execute("DELETE FROM sources WHERE id = ?", [id])?;
            Ok(removed)
        })
    }

    /// Removes the traffic of `sources` older than `cutoff_ms`, and narrows
    /// what their rows say they cover.
    fn remove_before(&mut self, cutoff_ms: i64, sources: &[i64]) -> Result<usize> {
        if sources.is_empty() {
            return Ok(0);
        }
        let ids = sources.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let cutoff_bin = cutoff_ms.div_euclid(1000);
        let cutoff_day = cutoff_ms.div_euclid(MILLIS_PER_DAY);
        self.write_transaction(|tx| {
            let mut removed = 0;
            // port_usage has no index on bin (it would double the cost of
            // every write); its key starts with the host, so go host by host.
            let hosts = distinct_hosts(
                tx,
                &format!("SELECT DISTINCT host FROM host_bins WHERE bin < ? AND source_id IN ({ids})"),
                params![cutoff_bin],
            )?;
            let mut usage =
                tx.prepare(&format!("DELETE FROM port_usage WHERE host = ? AND bin < ? AND source_id IN ({ids})"))?;
            for host in &hosts {
                removed += usage.execute(params![host, cutoff_bin])?;
            }
            for (table, column, cutoff) in [
                ("host_bins", "bin", cutoff_bin),
                ("share_bins", "bin", cutoff_bin),
                ("data_days", "day", cutoff_day),
                ("service_flows", "start_ms", cutoff_ms),
            ] {
                removed +=
                    tx.execute(&format!("DELETE FROM {table} WHERE {column} < ? AND source_id IN ({ids})"), [cutoff])?;
            }
            if removed > 0 {
                tx.execute(
                    &format!(
                        "UPDATE sources SET
                             first_ms = CASE WHEN last_ms < ?1 THEN NULL ELSE max(first_ms, ?1) END,
                             last_ms = CASE WHEN last_ms < ?1 THEN NULL ELSE last_ms END,
                             pending_from_ms = CASE WHEN last_ms < ?1 THEN NULL ELSE max(pending_from_ms, ?1) END
                         WHERE first_ms < ?1 AND id IN ({ids})"
                    ),
                    [cutoff_ms],
                )?;
            }
            Ok(removed)
        })
    }

    /// Runs `f` in a transaction of its own, committed if it succeeds.
    fn write_transaction<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let Store { conn, path } = self;
        let tx = conn.transaction().map_err(|e| error_at(path, e))?;
        let value = f(&tx).map_err(|e| error_at(path, e))?;
        tx.commit().map_err(|e| error_at(path, e))?;
        Ok(value)
    }
}

fn distinct_hosts(
    tx: &Transaction<'_>,
    sql: &str,
    parameters: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<String>> {
    let mut statement = tx.prepare(sql)?;
    let rows = statement.query_map(parameters, |row| row.get(0))?;
    rows.collect()
}
