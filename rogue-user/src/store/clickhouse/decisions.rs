//! Findings, verdicts, settings and DNS answers in ClickHouse: each change
//! is a new version of the row (ReplacingMergeTree), read with FINAL. One
//! process evaluates (`detection.evaluate`), so finding ids are numbered
//! by it, in order, as SQLite numbers them.

use std::{collections::HashMap, net::IpAddr};

use serde::Deserialize;

use super::{ClickHouseStore, Count, client::RowBinary, quote};
use crate::store::{
    Acknowledgement, Action, Decisions, HostNames, Pending, RecordedSettings, Result, StoredFinding, Upsert, Verdict,
};

/// A finding's row, every column.
#[derive(Clone, Debug, Deserialize)]
struct FindingRow {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
    service: String,
    host: String,
    key: String,
    state: String,
    time_ms: i64,
    details: String,
    created_ms: i64,
    updated_ms: i64,
    ack_by: Option<String>,
    ack_reason: Option<String>,
    ack_ms: Option<i64>,
    emitted: Option<String>,
}

const FINDING_COLUMNS: &str = "id, type, service, host, key, state, time_ms, details, created_ms, updated_ms, ack_by, ack_reason, ack_ms, emitted";

impl ClickHouseStore {
    fn finding_rows(&self, condition: &str) -> Result<Vec<FindingRow>> {
        self.client
            .select(&format!("SELECT {FINDING_COLUMNS} FROM findings FINAL WHERE {condition} ORDER BY time_ms, id"))
    }

    fn write_findings(&self, rows: &[FindingRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut binary = RowBinary::default();
        for row in rows {
            binary
                .i64(row.id)
                .string(&row.kind)
                .string(&row.service)
                .string(&row.host)
                .string(&row.key)
                .string(&row.state)
                .i64(row.time_ms)
                .string(&row.details)
                .i64(row.created_ms)
                .i64(row.updated_ms)
                .nullable_string(row.ack_by.as_deref())
                .nullable_string(row.ack_reason.as_deref())
                .nullable_i64(row.ack_ms)
                .nullable_string(row.emitted.as_deref())
                .u64(self.version());
        }
        self.insert_now("findings", &format!("{FINDING_COLUMNS}, version"), binary)
    }

    /// Changes the findings where `condition` holds by `change`; returns
    /// how many there were.
    fn update_findings(&self, condition: &str, change: impl Fn(&mut FindingRow)) -> Result<usize> {
        let mut changed = self.finding_rows(condition)?;
        changed.iter_mut().for_each(change);
        self.write_findings(&changed)?;
        Ok(changed.len())
    }

    /// Inserts rows that replace others by key: sent at once (a state
    /// change is made by one command, which reports it failed if it did).
    fn insert_now(&self, table: &str, columns: &str, rows: RowBinary) -> Result<()> {
        let query_id = format!("{}.{table}.{}", self.spool.writer(), self.version());
        self.client.insert(table, columns, &rows.bytes, &query_id)
    }

    fn stored(&self, row: FindingRow) -> Result<StoredFinding> {
        Ok(StoredFinding {
            id: row.id,
            kind: row.kind,
            service: row.service,
            host: self.addr(&row.host)?,
            key: row.key,
            state: row.state,
            time_ms: row.time_ms,
            details: serde_json::from_str(&row.details).unwrap_or(serde_json::Value::Null),
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            acknowledged: row.ack_by.map(|by| Acknowledgement {
                by,
                reason: row.ack_reason,
                at_ms: row.ack_ms.unwrap_or(0),
            }),
        })
    }

    fn stored_all(&self, rows: Vec<FindingRow>) -> Result<Vec<StoredFinding>> {
        rows.into_iter().map(|row| self.stored(row)).collect()
    }
}

#[derive(Deserialize)]
struct VerdictRow {
    verdict: String,
    decided_by: String,
    reason: String,
    at_ms: i64,
}

#[derive(Deserialize)]
struct DnsRow {
    service: String,
    host: String,
    ptr: Option<String>,
    fcrdns: Option<u8>,
    name_match: Option<u8>,
    mx: Option<u8>,
    mx_targets: String,
    mx_unconfigured: u8,
}

impl Decisions for ClickHouseStore {
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
        let details = details.to_string();
        let condition = format!(
            "type = {} AND service = {} AND host = '{host}' AND key = {}",
            quote(kind),
            quote(service),
            quote(key)
        );
        match self.finding_rows(&condition)?.pop() {
            None => {
                let next: Count = self.client.select_one("SELECT max(id) AS n FROM findings")?;
                let row = FindingRow {
                    id: next.n as i64 + 1,
                    kind: kind.into(),
                    service: service.into(),
                    host: host.to_string(),
                    key: key.into(),
                    state: state.unwrap_or("open").into(),
                    time_ms,
                    details,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                    ack_by: None,
                    ack_reason: None,
                    ack_ms: None,
                    emitted: None,
                };
                self.write_findings(std::slice::from_ref(&row))?;
                Ok((row.id, Upsert::New))
            }
            Some(mut row) => {
                let new_state = state.unwrap_or(&row.state).to_string();
                if new_state == row.state && row.time_ms == time_ms && row.details == details {
                    return Ok((row.id, Upsert::Unchanged));
                }
                (row.state, row.time_ms, row.details, row.updated_ms) = (new_state, time_ms, details, now_ms);
                self.write_findings(std::slice::from_ref(&row))?;
                Ok((row.id, Upsert::Changed))
            }
        }
    }

    fn mark_evaluated(&mut self, pending: Pending) -> Result<usize> {
        let covered: Vec<_> = self
            .take_snapshot(pending.seq)
            .into_iter()
            .filter(|w| {
                w.first_ms.is_none_or(|first| first >= pending.from_ms)
                    && w.last_ms.or(w.first_ms).is_none_or(|last| last <= pending.to_ms)
            })
            .collect();
        if covered.is_empty() {
            return Ok(0);
        }
        let mut rows = RowBinary::default();
        for write in &covered {
            rows.u8(write.live).u16(write.day).string(&write.writer).u64(write.batch);
        }
        self.insert_now("evaluated", "live, day, writer, batch", rows)?;
        let sources: std::collections::BTreeSet<i64> = covered.iter().map(|w| w.source_id).collect();
        Ok(sources.len())
    }

    fn emitted(&self) -> Result<HashMap<i64, String>> {
        Ok(self
            .finding_rows("emitted IS NOT NULL")?
            .into_iter()
            .filter_map(|row| Some((row.id, row.emitted?)))
            .collect())
    }

    fn set_emitted(&mut self, id: i64, evidence: &str) -> Result<()> {
        self.update_findings(&format!("id = {id}"), |row| {
            row.emitted = Some(evidence.into());
        })
        .map(drop)
    }

    fn findings(&self, since_ms: Option<i64>, state: Option<&str>) -> Result<Vec<StoredFinding>> {
        let mut condition = format!("time_ms >= {}", since_ms.unwrap_or(i64::MIN));
        if let Some(state) = state {
            condition += &format!(" AND state = {}", quote(state));
        }
        let rows = self.finding_rows(&condition)?;
        self.stored_all(rows)
    }

    fn finding(&self, id: i64) -> Result<Option<StoredFinding>> {
        let rows = self.finding_rows(&format!("id = {id}"))?;
        Ok(self.stored_all(rows)?.pop())
    }

    fn findings_for_host(&self, host: IpAddr) -> Result<Vec<StoredFinding>> {
        let rows = self.finding_rows(&format!("host = '{host}'"))?;
        self.stored_all(rows)
    }

    fn acknowledge(&mut self, ids: &[i64], ack: &Acknowledgement) -> Result<Vec<i64>> {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let found: Vec<i64> = if ids.is_empty() {
            Vec::new()
        } else {
            self.finding_rows(&format!("id IN ({list})"))?.iter().map(|r| r.id).collect()
        };
        let missing: Vec<i64> = ids.iter().copied().filter(|id| !found.contains(id)).collect();
        if !missing.is_empty() || ids.is_empty() {
            return Ok(missing);
        }
        self.update_findings(&format!("id IN ({list})"), |row| {
            row.state = "acknowledged".into();
            (row.ack_by, row.ack_reason, row.ack_ms) = (Some(ack.by.clone()), ack.reason.clone(), Some(ack.at_ms));
            row.updated_ms = ack.at_ms;
        })?;
        Ok(Vec::new())
    }

    fn set_finding_state(&mut self, id: i64, state: &str, now_ms: i64) -> Result<bool> {
        let changed = self.update_findings(&format!("id = {id}"), |row| {
            (row.state, row.updated_ms) = (state.into(), now_ms);
        })?;
        Ok(changed > 0)
    }

    fn finding_hosts_not_in(&self, state: &str) -> Result<Vec<(String, IpAddr)>> {
        let rows = self.finding_rows(&format!("state != {}", quote(state)))?;
        let mut hosts = Vec::new();
        for row in rows {
            let pair = (row.service, self.addr(&row.host)?);
            if !hosts.contains(&pair) {
                hosts.push(pair);
            }
        }
        Ok(hosts)
    }

    fn set_host_findings_state(&mut self, service: &str, host: IpAddr, state: &str, now_ms: i64) -> Result<usize> {
        let condition = format!("service = {} AND host = '{host}' AND state != {}", quote(service), quote(state));
        self.update_findings(&condition, |row| {
            (row.state, row.updated_ms) = (state.into(), now_ms);
        })
    }

    fn verdict(&self, service: &str, host: IpAddr) -> Result<Option<Verdict>> {
        let rows: Vec<VerdictRow> = self.client.select(&format!(
            "SELECT verdict, decided_by, reason, at_ms FROM verdicts FINAL
             WHERE service = {} AND host = '{host}' AND deleted = 0",
            quote(service)
        ))?;
        Ok(rows.into_iter().next().map(|r| Verdict {
            verdict: r.verdict,
            by: r.decided_by,
            reason: r.reason,
            at_ms: r.at_ms,
        }))
    }

    fn set_verdict(&mut self, service: &str, host: IpAddr, verdict: &Verdict) -> Result<()> {
        let mut rows = RowBinary::default();
        rows.string(service)
            .string(&host.to_string())
            .string(&verdict.verdict)
            .string(&verdict.by)
            .string(&verdict.reason)
            .i64(verdict.at_ms)
            .u8(0)
            .u64(self.version());
        self.insert_now("verdicts", VERDICT_COLUMNS, rows)
    }

    fn clear_verdict(&mut self, service: &str, host: IpAddr) -> Result<()> {
        let mut rows = RowBinary::default();
        rows.string(service)
            .string(&host.to_string())
            .string("")
            .string("")
            .string("")
            .i64(0)
            .u8(1)
            .u64(self.version());
        self.insert_now("verdicts", VERDICT_COLUMNS, rows)
    }

    fn record_settings(&mut self, settings: &RecordedSettings) -> Result<()> {
        let current = self.settings_map()?;
        let changed: Vec<(&str, &str)> = settings
            .pairs()
            .into_iter()
            .filter(|(name, value)| current.get(*name).map(String::as_str) != Some(value))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut rows = RowBinary::default();
        for (name, value) in changed {
            rows.string(name).string(value).u64(self.version());
        }
        self.insert_now("settings", "name, value, version", rows)
    }

    fn recorded_settings(&self) -> Result<Option<RecordedSettings>> {
        Ok(RecordedSettings::from_pairs(&self.settings_map()?))
    }

    fn host_names(&self) -> Result<HashMap<(String, IpAddr), HostNames>> {
        let rows: Vec<DnsRow> = self.client.select(
            "SELECT service, host, ptr, fcrdns, name_match, mx, mx_targets, mx_unconfigured FROM dns_names FINAL",
        )?;
        rows.into_iter()
            .map(|row| {
                let names = HostNames {
                    ptr: row.ptr,
                    fcrdns: row.fcrdns.map(|b| b != 0),
                    name_match: row.name_match.map(|b| b != 0),
                    record_target: row.mx.map(|b| b != 0),
                    record_targets: serde_json::from_str(&row.mx_targets).unwrap_or_default(),
                    records_unconfigured: row.mx_unconfigured != 0,
                };
                Ok(((row.service, self.addr(&row.host)?), names))
            })
            .collect()
    }

    fn save_host_names(&mut self, answers: &HashMap<(String, IpAddr), HostNames>, now_ms: i64) -> Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        let known = self.host_names()?;
        let mut rows = RowBinary::default();
        for ((service, host), names) in answers {
            let names = match known.get(&(service.clone(), *host)) {
                Some(older) => names.clone().over(older),
                None => names.clone(),
            };
            rows.string(service)
                .string(&host.to_string())
                .nullable_string(names.ptr.as_deref())
                .nullable_u8(names.fcrdns)
                .nullable_u8(names.name_match)
                .nullable_u8(names.record_target)
                .string(&serde_json::to_string(&names.record_targets).expect("plain data"))
                .u8(names.records_unconfigured as u8)
                .i64(now_ms)
                .u64(self.version());
        }
        self.insert_now(
            "dns_names",
            "service, host, ptr, fcrdns, name_match, mx, mx_targets, mx_unconfigured, looked_up_ms, version",
            rows,
        )
    }

    fn record_action(&mut self, action: &Action) -> Result<()> {
        let mut row = RowBinary::default();
        row.i64(action.at_ms)
            .string(&action.by)
            .string(&action.action)
            .string(&action.service)
            .string(&action.subject)
            .nullable_i64(action.finding)
            .string(&action.reason)
            .string(&action.via);
        self.insert_now("actions", ACTION_COLUMNS, row)
    }

    fn actions(&self) -> Result<Vec<Action>> {
        let rows: Vec<ActionRow> =
            self.client.select(&format!("SELECT {ACTION_COLUMNS} FROM actions ORDER BY at_ms DESC"))?;
        Ok(rows
            .into_iter()
            .map(|r| Action {
                at_ms: r.at_ms,
                by: r.decided_by,
                action: r.action,
                service: r.service,
                subject: r.subject,
                finding: r.finding_id,
                reason: r.reason,
                via: r.via,
            })
            .collect())
    }
}

const ACTION_COLUMNS: &str = "at_ms, decided_by, action, service, subject, finding_id, reason, via";

#[derive(Deserialize)]
struct ActionRow {
    at_ms: i64,
    decided_by: String,
    action: String,
    service: String,
    subject: String,
    finding_id: Option<i64>,
    reason: String,
    via: String,
}

const VERDICT_COLUMNS: &str = "service, host, verdict, decided_by, reason, at_ms, deleted, version";

impl ClickHouseStore {
    fn settings_map(&self) -> Result<HashMap<String, String>> {
        #[derive(Deserialize)]
        struct Setting {
            name: String,
            value: String,
        }
        let rows: Vec<Setting> = self.client.select("SELECT name, value FROM settings FINAL")?;
        Ok(rows.into_iter().map(|s| (s.name, s.value)).collect())
    }
}
