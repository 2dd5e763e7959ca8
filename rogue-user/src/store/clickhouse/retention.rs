//! Retention on ClickHouse (the rule is [`Retention`]'s). A live source's
//! traffic ages by whole days: partitions (live, day) before the cutoff's
//! day are dropped, which the server does at once and cheaply, so a day is
//! kept until all of it is older than `retention_days` (up to a day longer
//! than on SQLite, which deletes by bin). A file source is removed by a
//! mutation (ALTER TABLE DELETE) waited for until done.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{ClickHouseStore, Count, TRAFFIC, quote, read};
use crate::{
    store::{Pruned, Result, Retention, StoreError},
    time::MILLIS_PER_DAY,
};

/// Tables partitioned by (live, day).
const PARTITIONED: &[&str] =
    &["host_bins", "port_usage", "share_bins", "data_days", "service_flows", "source_writes", "evaluated"];

/// How long a removal may take before rogue reports it unfinished.
const MUTATION_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Deserialize)]
struct Part {
    table: String,
    partition_id: String,
    rows: u64,
}

impl ClickHouseStore {
    /// Drops the partitions of `live` (1: live sources; None: both) whose
    /// day is before `before_day`; returns the rows of traffic they held.
    fn drop_days_before(&self, before_day: i64, live: Option<u8>) -> Result<usize> {
        let parts: Vec<Part> = self.client.select(&format!(
            "SELECT table, partition_id, sum(rows) AS rows FROM system.parts
             WHERE database = {} AND active AND table IN ({}) GROUP BY table, partition_id",
            quote(self.client.database()),
            PARTITIONED.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")
        ))?;
        let mut removed = 0;
        for part in
            parts.iter().filter(|part| partition_day(&part.partition_id, live).is_some_and(|day| day < before_day))
        {
            self.client.execute(&format!(
                "ALTER TABLE {} DROP PARTITION ID {}",
                part.table,
                quote(&part.partition_id)
            ))?;
            if TRAFFIC.contains(&part.table.as_str()) {
                removed += part.rows as usize;
            }
        }
        Ok(removed)
    }

    /// Deletes the rows of `tables` where `condition` holds, and waits
    /// until the server has.
    fn delete_where(&self, tables: &[&str], condition: &str) -> Result<()> {
        for table in tables {
            self.client.execute(&format!("ALTER TABLE {table} DELETE WHERE {condition}"))?;
        }
        let started = Instant::now();
        loop {
            let running: Count = self.client.select_one(&format!(
                "SELECT count() AS n FROM system.mutations WHERE database = {} AND NOT is_done",
                quote(self.client.database())
            ))?;
            if running.n == 0 {
                return Ok(());
            }
            if started.elapsed() > MUTATION_TIMEOUT {
                return Err(StoreError::Refused {
                    server: self.client.location(),
                    detail: format!("a removal ({condition}) is still running after {MUTATION_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn traffic_rows(&self, condition: &str) -> Result<usize> {
        let mut rows = 0;
        for table in TRAFFIC {
            let count: Count = self
                .client
                .select_one(&format!("SELECT count() AS n FROM {table} WHERE inserts = 0 AND {condition}"))?;
            rows += count.n as usize;
        }
        Ok(rows)
    }
}

impl Retention for ClickHouseStore {
    fn apply_retention(&mut self, retention_days: u64, now_ms: i64) -> Result<Pruned> {
        let cutoff_ms = now_ms.saturating_sub(retention_days as i64 * MILLIS_PER_DAY);
        let rows = self.drop_days_before(cutoff_ms.div_euclid(MILLIS_PER_DAY), Some(1))?;
        let mut pruned = Pruned { rows, sources: Vec::new() };
        let expired: Vec<i64> =
            read::source_rows(&self.client, &format!("kind NOT IN ('live', 'collect') AND ingested_ms < {cutoff_ms}"))?
                .iter()
                .map(|s| s.id)
                .collect();
        for id in expired {
            if let Some(source) = self.source_for_removal(id)? {
                pruned.rows += self.remove_source(id)?;
                pruned.sources.push(source);
            }
        }
        Ok(pruned)
    }

    fn prune_before(&mut self, before_ms: i64) -> Result<usize> {
        let before_day = before_ms.div_euclid(MILLIS_PER_DAY);
        let mut removed = self.drop_days_before(before_day, None)?;
        // What is left before `before_ms` lies in its own day.
        let bin = before_ms.div_euclid(1000);
        let conditions = [
            ("host_bins", format!("bin < {bin}")),
            ("port_usage", format!("bin < {bin}")),
            ("share_bins", format!("bin < {bin}")),
            ("service_flows", format!("start_ms < {before_ms} AND service != ''")),
        ];
        for (table, condition) in &conditions {
            let count: Count = self
                .client
                .select_one(&format!("SELECT count() AS n FROM {table} WHERE inserts = 0 AND {condition}"))?;
            if count.n > 0 {
                removed += count.n as usize;
                self.delete_where(&[table], &format!("inserts = 0 AND {condition}"))?;
            }
        }
        Ok(removed)
    }

    fn remove_source(&mut self, id: i64) -> Result<usize> {
        let removed = self.traffic_rows(&format!("source_id = {id}"))?;
        self.delete_where(TRAFFIC, &format!("source_id = {id}"))?;
        self.delete_where(&["source_writes"], &format!("source_id = {id}"))?;
        self.delete_where(&["sources"], &format!("id = {id}"))?;
        self.known_sources.borrow_mut().remove(&id);
        Ok(removed)
    }
}

/// The day (since the epoch) of a partition "LIVE-YYYYMMDD", if it is of
/// `live` (or `live` is None).
fn partition_day(partition_id: &str, live: Option<u8>) -> Option<i64> {
    let (of, date) = partition_id.split_once('-')?;
    if live.is_some_and(|live| of != live.to_string()) {
        return None;
    }
    let date = jiff::civil::Date::strptime("%Y%m%d", date).ok()?;
    Some((date - jiff::civil::date(1970, 1, 1)).get_days() as i64)
}

impl ClickHouseStore {
    fn source_for_removal(&self, id: i64) -> Result<Option<crate::store::Source>> {
        Ok(read::sources(&self.client, &format!("id = {id}"))?.pop())
    }
}
