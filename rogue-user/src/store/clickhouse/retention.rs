//! Retention on ClickHouse (the rule is [`Retention`]'s). A live source's
//! traffic ages by whole days: partitions (live, day) before the cutoff's
//! day are dropped, which the server does at once and cheaply, so a day is
//! kept until all of it is older than `retention_days` (up to a day longer
//! than on SQLite, which deletes by bin). A file source is removed by a
//! mutation (ALTER TABLE DELETE) waited for until done.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{ClickHouseStore, Count, TRAFFIC, date, quote, read};
use crate::{
    store::{LIVE_SQL, Pruned, Result, Retention, StoreError},
    time::MILLIS_PER_DAY,
};

/// Tables partitioned by (live, day) besides those of traffic: the record
/// of each write, and of what evaluations covered.
const WRITE_RECORDS: &[&str] = &["source_writes", "evaluated"];

/// How long a removal may take before rogue reports it unfinished.
const MUTATION_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Deserialize)]
struct Partition {
    live: u8,
    /// YYYY-MM-DD.
    date: String,
    rows: u64,
}

impl ClickHouseStore {
    /// Drops the partitions of `live` (1: live sources; None: both) whose
    /// day is before `before_day`; returns the rows of traffic they held.
    /// The partitions are found from the rows (on a cluster, every shard's).
    fn drop_days_before(&self, before_day: i64, live: Option<u8>) -> Result<usize> {
        let before = date(before_day.clamp(0, u16::MAX as i64) as u16);
        let live_condition = live.map_or(String::new(), |live| format!(" AND live = {live}"));
        let mut removed = 0;
        for table in TRAFFIC.iter().chain(WRITE_RECORDS) {
            let data_rows = if TRAFFIC.contains(table) { "countIf(inserts = 0)" } else { "count()" };
            let partitions: Vec<Partition> = self.client.select(&format!(
                "SELECT live, toString(day) AS date, {data_rows} AS rows FROM {table}
                 WHERE day < {before}{live_condition} GROUP BY live, day"
            ))?;
            for partition in &partitions {
                let id = format!("{}-{}", partition.live, partition.date.replace('-', ""));
                self.client.execute(&format!(
                    "ALTER TABLE {} DROP PARTITION ID {}",
                    self.layout.local(table),
                    quote(&id)
                ))?;
                if TRAFFIC.contains(table) {
                    removed += partition.rows as usize;
                }
            }
        }
        Ok(removed)
    }

    /// Deletes the rows of `tables` where `condition` holds, and waits
    /// until the server (every shard) has.
    fn delete_where(&self, tables: &[&str], condition: &str) -> Result<()> {
        for table in tables {
            self.client.execute(&format!("ALTER TABLE {} DELETE WHERE {condition}", self.layout.local(table)))?;
        }
        let started = Instant::now();
        for table in tables {
            loop {
                let left: Count =
                    self.client.select_one(&format!("SELECT count() AS n FROM {table} WHERE {condition}"))?;
                if left.n == 0 {
                    break;
                }
                if started.elapsed() > MUTATION_TIMEOUT {
                    return Err(StoreError::Refused {
                        server: self.client.location(),
                        detail: format!(
                            "a removal from {table} ({condition}) is still running after {MUTATION_TIMEOUT:?}"
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
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
            read::source_rows(&self.client, &format!("NOT {LIVE_SQL} AND ingested_ms < {cutoff_ms}"))?
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
            ("flows", format!("start_ms < {before_ms}")),
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

impl ClickHouseStore {
    fn source_for_removal(&self, id: i64) -> Result<Option<crate::store::Source>> {
        Ok(read::sources(&self.client, &format!("id = {id}"))?.pop())
    }
}
