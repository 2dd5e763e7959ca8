//! Retention on SQLite (the rule is [`Retention`]'s): rows deleted by
//! source, and the sources' spans narrowed to what is left.

use rusqlite::Transaction;

use super::{
    SqliteStore, error_at,
    read::{SOURCES, source_row},
};
use crate::{
    store::{LIVE_SQL, Pruned, Result, Retention, Source},
    time::MILLIS_PER_DAY,
};

impl Retention for SqliteStore {
    fn apply_retention(&mut self, retention_days: u64, now_ms: i64) -> Result<Pruned> {
        let cutoff_ms = now_ms.saturating_sub(retention_days as i64 * MILLIS_PER_DAY);
        // Only live sources with data before the cutoff have any to lose:
        // asking the rest would scan every old row of every capture.
        let aging = format!("{LIVE_SQL} AND first_ms < {cutoff_ms}");
        let any_aging = self.run(|c| {
            c.query_row(&format!("SELECT EXISTS (SELECT 1 FROM sources WHERE {aging})"), [], |row| row.get(0))
        })?;
        let rows = match any_aging {
            true => self.remove_before(cutoff_ms, &format!("source_id IN (SELECT id FROM sources WHERE {aging})"))?,
            false => 0,
        };
        let mut pruned = Pruned { rows, sources: Vec::new() };
        let expired = self.run(|c| {
            let mut statement =
                c.prepare(&format!("{SOURCES} WHERE NOT {LIVE_SQL} AND ingested_ms < ? ORDER BY id"))?;
            let rows = statement.query_map([cutoff_ms], source_row)?;
            rows.collect::<rusqlite::Result<Vec<Source>>>()
        })?;
        for source in expired {
            pruned.rows += self.remove_source(source.id)?;
            pruned.sources.push(source);
        }
        Ok(pruned)
    }

    fn prune_before(&mut self, before_ms: i64) -> Result<usize> {
        self.remove_before(before_ms, "1")
    }

    fn remove_source(&mut self, id: i64) -> Result<usize> {
        self.write_transaction(|tx| {
            let mut removed = 0;
            for table in ["host_bins", "share_bins", "data_days", "service_flows"] {
                removed += tx.execute(&format!("DELETE FROM {table} WHERE source_id = ?"), [id])?;
            }
            tx.execute("DELETE FROM sources WHERE id = ?", [id])?;
            Ok(removed)
        })
    }
}

impl SqliteStore {
    /// Removes the traffic older than `cutoff_ms` of the sources `which`
    /// (an SQL condition on `source_id`), and narrows what their rows say
    /// they cover.
    fn remove_before(&mut self, cutoff_ms: i64, which: &str) -> Result<usize> {
        let cutoff_bin = cutoff_ms.div_euclid(1000);
        let cutoff_day = cutoff_ms.div_euclid(MILLIS_PER_DAY);
        self.write_transaction(|tx| {
            let mut removed = 0;
            for (table, column, cutoff) in [
                ("host_bins", "bin", cutoff_bin),
                ("share_bins", "bin", cutoff_bin),
                ("data_days", "day", cutoff_day),
                ("service_flows", "start_ms", cutoff_ms),
            ] {
                removed += tx.execute(&format!("DELETE FROM {table} WHERE {column} < ? AND {which}"), [cutoff])?;
            }
            if removed > 0 {
                let narrowed = which.replace("source_id", "id");
                tx.execute(
                    &format!(
                        "UPDATE sources SET
                             first_ms = CASE WHEN last_ms < ?1 THEN NULL ELSE max(first_ms, ?1) END,
                             last_ms = CASE WHEN last_ms < ?1 THEN NULL ELSE last_ms END,
                             pending_from_ms = CASE WHEN last_ms < ?1 THEN NULL ELSE max(pending_from_ms, ?1) END
                         WHERE first_ms < ?1 AND {narrowed}"
                    ),
                    [cutoff_ms],
                )?;
            }
            Ok(removed)
        })
    }

    /// Runs `f` in a transaction of its own, committed if it succeeds.
    fn write_transaction<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let SqliteStore { conn, path } = self;
        let tx = conn.transaction().map_err(|e| error_at(path, e))?;
        let value = f(&tx).map_err(|e| error_at(path, e))?;
        tx.commit().map_err(|e| error_at(path, e))?;
        Ok(value)
    }
}
