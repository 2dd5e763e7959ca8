//! What rogue concluded and what people decided: findings with their state,
//! the administrators' verdicts, what was last emitted of each finding,
//! what DNS answered about hosts (kept, so that the query commands show it
//! without asking DNS again), and the settings the findings were reached
//! with.

use std::{collections::HashMap, net::IpAddr};

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, addr};
use crate::store::{
    Acknowledgement, Action, Decisions, HostNames, Pending, RecordedSettings, Result, StoredFinding, Upsert, Verdict,
};

const FINDING_COLUMNS: &str =
    "id, type, service, host, key, state, time_ms, details, created_ms, updated_ms, ack_by, ack_reason, ack_ms";

impl Decisions for SqliteStore {
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
    ) -> Result<(i64, Upsert)> {
        let details_text = details.to_string();
        self.run(|c| {
            let existing = c
                .query_row(
                    "SELECT id, state, time_ms, details FROM findings WHERE type = ? AND service = ? AND host = ? AND key = ?",
                    params![kind, service, host.to_string(), key],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?)),
                )
                .optional()?;
            match existing {
                None => {
                    c.execute(
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
                    Ok((c.last_insert_rowid(), Upsert::New))
                }
                Some((id, old_state, old_time, old_details)) => {
                    let new_state = state.unwrap_or(&old_state);
                    if new_state == old_state && old_time == time_ms && old_details == details_text {
                        return Ok((id, Upsert::Unchanged));
                    }
                    c.execute(
                        "UPDATE findings SET state = ?, time_ms = ?, details = ?, updated_ms = ? WHERE id = ?",
                        params![new_state, time_ms, details_text, now_ms, id],
                    )?;
                    Ok((id, Upsert::Changed))
                }
            }
        })
    }

    fn mark_evaluated(&mut self, pending: Pending) -> Result<usize> {
        self.run(|c| {
            c.execute(
                "UPDATE sources SET pending_from_ms = NULL, pending_seq = NULL
                 WHERE pending_from_ms >= ? AND coalesce(last_ms, pending_from_ms) <= ? AND pending_seq <= ?",
                params![pending.from_ms, pending.to_ms, pending.seq],
            )
        })
    }

    fn emitted(&self) -> Result<HashMap<i64, String>> {
        self.run(|c| {
            let mut statement = c.prepare("SELECT id, emitted FROM findings WHERE emitted IS NOT NULL")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
    }

    fn set_emitted(&mut self, id: i64, evidence: &str) -> Result<()> {
        self.run(|c| c.execute("UPDATE findings SET emitted = ? WHERE id = ?", params![evidence, id]).map(drop))
    }

    fn findings(&self, since_ms: Option<i64>, state: Option<&str>) -> Result<Vec<StoredFinding>> {
        self.run(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {FINDING_COLUMNS} FROM findings WHERE time_ms >= ? AND (? IS NULL OR state = ?) ORDER BY time_ms, id"
            ))?;
            let rows = statement.query_map(params![since_ms.unwrap_or(i64::MIN), state, state], finding_row)?;
            rows.collect()
        })
    }

    fn finding(&self, id: i64) -> Result<Option<StoredFinding>> {
        self.run(|c| {
            c.query_row(&format!("SELECT {FINDING_COLUMNS} FROM findings WHERE id = ?"), [id], finding_row).optional()
        })
    }

    fn findings_for_host(&self, host: IpAddr) -> Result<Vec<StoredFinding>> {
        self.run(|c| {
            let mut statement =
                c.prepare(&format!("SELECT {FINDING_COLUMNS} FROM findings WHERE host = ? ORDER BY time_ms, id"))?;
            let rows = statement.query_map([host.to_string()], finding_row)?;
            rows.collect()
        })
    }

    fn acknowledge(&mut self, ids: &[i64], ack: &Acknowledgement) -> Result<Vec<i64>> {
        let mut missing = Vec::new();
        for &id in ids {
            if self.finding(id)?.is_none() {
                missing.push(id);
            }
        }
        if !missing.is_empty() {
            return Ok(missing);
        }
        self.transaction(|store| {
            for &id in ids {
                store.run(|c| {
                    c.execute(
                        "UPDATE findings SET state = 'acknowledged', ack_by = ?, ack_reason = ?, ack_ms = ?,
                             updated_ms = ? WHERE id = ?",
                        params![ack.by, ack.reason, ack.at_ms, ack.at_ms, id],
                    )
                })?;
            }
            Ok(Vec::new())
        })
    }

    fn set_finding_state(&mut self, id: i64, state: &str, now_ms: i64) -> Result<bool> {
        self.run(|c| {
            c.execute("UPDATE findings SET state = ?, updated_ms = ? WHERE id = ?", params![state, now_ms, id])
                .map(|changed| changed > 0)
        })
    }

    fn finding_hosts_not_in(&self, state: &str) -> Result<Vec<(String, IpAddr)>> {
        self.run(|c| {
            let mut statement = c.prepare("SELECT DISTINCT service, host FROM findings WHERE state != ?")?;
            let rows = statement.query_map([state], |row| Ok((row.get(0)?, addr(row, 1)?)))?;
            rows.collect()
        })
    }

    fn set_host_findings_state(&mut self, service: &str, host: IpAddr, state: &str, now_ms: i64) -> Result<usize> {
        self.run(|c| {
            c.execute(
                "UPDATE findings SET state = ?, updated_ms = ? WHERE service = ? AND host = ? AND state != ?",
                params![state, now_ms, service, host.to_string(), state],
            )
        })
    }

    fn verdict(&self, service: &str, host: IpAddr) -> Result<Option<Verdict>> {
        self.run(|c| {
            c.query_row(
                "SELECT verdict, by, reason, at_ms FROM verdicts WHERE service = ? AND host = ?",
                params![service, host.to_string()],
                |row| Ok(Verdict { verdict: row.get(0)?, by: row.get(1)?, reason: row.get(2)?, at_ms: row.get(3)? }),
            )
            .optional()
        })
    }

    fn set_verdict(&mut self, service: &str, host: IpAddr, verdict: &Verdict) -> Result<()> {
        self.run(|c| {
            c.execute(
                "INSERT INTO verdicts (service, host, verdict, by, reason, at_ms) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (service, host) DO UPDATE SET verdict = excluded.verdict, by = excluded.by,
                     reason = excluded.reason, at_ms = excluded.at_ms",
                params![service, host.to_string(), verdict.verdict, verdict.by, verdict.reason, verdict.at_ms],
            )
            .map(drop)
        })
    }

    fn clear_verdict(&mut self, service: &str, host: IpAddr) -> Result<()> {
        self.run(|c| {
            c.execute("DELETE FROM verdicts WHERE service = ? AND host = ?", params![service, host.to_string()])
                .map(drop)
        })
    }

    fn record_settings(&mut self, settings: &RecordedSettings) -> Result<()> {
        self.run(|c| {
            let mut upsert = c.prepare_cached(
                "INSERT INTO settings (name, value) VALUES (?, ?)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE value != excluded.value",
            )?;
            for (name, value) in settings.pairs() {
                upsert.execute(params![name, value])?;
            }
            Ok(())
        })
    }

    fn recorded_settings(&self) -> Result<Option<RecordedSettings>> {
        let values: HashMap<String, String> = self.run(|c| {
            let mut statement = c.prepare("SELECT name, value FROM settings")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })?;
        Ok(RecordedSettings::from_pairs(&values))
    }

    fn host_names(&self) -> Result<HashMap<(String, IpAddr), HostNames>> {
        self.run(|c| {
            let mut statement = c.prepare(
                "SELECT service, host, ptr, fcrdns, name_match, mx, mx_targets, mx_unconfigured FROM dns_names",
            )?;
            let rows = statement.query_map([], |row| {
                let targets: String = row.get(6)?;
                let names = HostNames {
                    ptr: row.get(2)?,
                    fcrdns: row.get(3)?,
                    name_match: row.get(4)?,
                    record_target: row.get(5)?,
                    record_targets: serde_json::from_str(&targets).unwrap_or_default(),
                    records_unconfigured: row.get(7)?,
                };
                Ok(((row.get(0)?, addr(row, 1)?), names))
            })?;
            rows.collect()
        })
    }

    fn save_host_names(&mut self, answers: &HashMap<(String, IpAddr), HostNames>, now_ms: i64) -> Result<()> {
        let known = self.host_names()?;
        self.transaction(|store| {
            store.run(|c| {
                let mut upsert = c.prepare(
                    "INSERT INTO dns_names (service, host, ptr, fcrdns, name_match, mx, mx_targets, mx_unconfigured,
                         looked_up_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (service, host) DO UPDATE SET ptr = excluded.ptr, fcrdns = excluded.fcrdns,
                         name_match = excluded.name_match, mx = excluded.mx, mx_targets = excluded.mx_targets,
                         mx_unconfigured = excluded.mx_unconfigured, looked_up_ms = excluded.looked_up_ms",
                )?;
                for ((service, host), names) in answers {
                    let key = (service.clone(), *host);
                    let names = match known.get(&key) {
                        Some(older) => names.clone().over(older),
                        None => names.clone(),
                    };
                    upsert.execute(params![
                        service,
                        host.to_string(),
                        names.ptr,
                        names.fcrdns,
                        names.name_match,
                        names.record_target,
                        serde_json::to_string(&names.record_targets).expect("plain data"),
                        names.records_unconfigured,
                        now_ms
                    ])?;
                }
                Ok(())
            })
        })
    }

    fn record_action(&mut self, action: &Action) -> Result<()> {
        self.run(|c| {
            c.execute(
                "INSERT INTO actions (at_ms, by, action, service, subject, finding_id, reason, via)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    action.at_ms,
                    action.by,
                    action.action,
                    action.service,
                    action.subject,
                    action.finding,
                    action.reason,
                    action.via
                ],
            )
            .map(drop)
        })
    }

    fn actions(&self) -> Result<Vec<Action>> {
        self.run(|c| {
            let mut statement = c.prepare_cached(
                "SELECT at_ms, by, action, service, subject, finding_id, reason, via FROM actions
                 ORDER BY at_ms DESC, id DESC",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(Action {
                    at_ms: row.get(0)?,
                    by: row.get(1)?,
                    action: row.get(2)?,
                    service: row.get(3)?,
                    subject: row.get(4)?,
                    finding: row.get(5)?,
                    reason: row.get(6)?,
                    via: row.get(7)?,
                })
            })?;
            rows.collect()
        })
    }
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
        acknowledged: match row.get::<_, Option<String>>(10)? {
            Some(by) => {
                Some(Acknowledgement { by, reason: row.get(11)?, at_ms: row.get::<_, Option<i64>>(12)?.unwrap_or(0) })
            }
            None => None,
        },
    })
}
