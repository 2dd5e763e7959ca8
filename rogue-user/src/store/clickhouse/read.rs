//! The method's questions in ClickHouse's SQL: the same answers as the
//! SQLite backend's (the parity tests hold them to it), summed over every
//! source and every writer. Rows of traffic are read without FINAL (sums
//! do not care whether the server merged them yet); marker rows have no
//! host and no service, so no question about a host or service sees them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::Deserialize;

use super::{ClickHouseStore, Count, client::Client, quote};
use crate::{
    profile::Role,
    store::{HostActivity, LIVE_SQL, Peer, Pending, PortUsageRow, Result, Source, StoreError, Traffic},
};

/// A write not evaluated yet: the snapshot an evaluation takes of them
/// is what it marks evaluated when it is done (see [`Traffic::pending`]).
#[derive(Clone, Debug, Deserialize)]
pub struct PendingWrite {
    pub live: u8,
    /// The partition's day, in days since the epoch (as Date holds it).
    pub day: u16,
    pub writer: String,
    pub batch: u64,
    pub source_id: i64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

#[derive(Deserialize)]
pub struct SourceRow {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub content_hash: String,
    pub ingested_ms: i64,
}

/// The sources' own rows where `condition` holds.
pub fn source_rows(client: &Client, condition: &str) -> Result<Vec<SourceRow>> {
    client.select(&format!(
        "SELECT id, kind, name, content_hash, ingested_ms FROM sources FINAL WHERE {condition} ORDER BY id"
    ))
}

#[derive(Deserialize)]
struct SourceTotals {
    source_id: i64,
    first: Option<i64>,
    last: Option<i64>,
    packet_count: u64,
    flow_count: u64,
    rejected_count: u64,
    /// Of no meaning when `pending_writes` is 0 (-If of nothing is 0 on 18.16).
    pending_from: Option<i64>,
    pending_writes: u64,
}

/// The sources where `condition` holds, with what their writes add up to.
pub fn sources(client: &Client, condition: &str) -> Result<Vec<Source>> {
    let rows = source_rows(client, condition)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|row| row.id.to_string()).collect();
    let totals: Vec<SourceTotals> = client.select(&format!(
        "SELECT source_id, min(first_ms) AS first, max(last_ms) AS last, sum(packets) AS packet_count,
                sum(flows) AS flow_count, sum(rejected) AS rejected_count,
                minIf(first_ms, NOT evaluated AND first_ms IS NOT NULL) AS pending_from,
                countIf(NOT evaluated AND first_ms IS NOT NULL) AS pending_writes
         FROM (SELECT *, (writer, batch) GLOBAL IN (SELECT writer, batch FROM evaluated) AS evaluated
               FROM source_writes FINAL WHERE source_id IN ({}))
         GROUP BY source_id",
        ids.join(", ")
    ))?;
    let totals: BTreeMap<i64, SourceTotals> = totals.into_iter().map(|t| (t.source_id, t)).collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let total = totals.get(&row.id);
            Source {
                id: row.id,
                kind: row.kind,
                name: row.name,
                content_hash: (!row.content_hash.is_empty()).then_some(row.content_hash),
                first_ms: total.and_then(|t| t.first),
                last_ms: total.and_then(|t| t.last),
                packets: total.map_or(0, |t| t.packet_count),
                flows: total.map_or(0, |t| t.flow_count),
                ingested_ms: row.ingested_ms,
                pending_from_ms: total.filter(|t| t.pending_writes > 0).and_then(|t| t.pending_from),
                rejected: total.map_or(0, |t| t.rejected_count),
            }
        })
        .collect())
}

impl ClickHouseStore {
    /// The writes no evaluation covered yet.
    fn pending_writes(&self) -> Result<Vec<PendingWrite>> {
        self.client.select(
            "SELECT live, toUInt16(day) AS day, writer, batch, source_id, first_ms, last_ms FROM source_writes FINAL
             WHERE (writer, batch) GLOBAL NOT IN (SELECT writer, batch FROM evaluated) AND first_ms IS NOT NULL",
        )
    }

    /// Keeps `writes` under a new token, for `mark_evaluated`.
    fn snapshot(&self, writes: Vec<PendingWrite>) -> i64 {
        let token = self.next_snapshot.get();
        self.next_snapshot.set(token + 1);
        self.snapshots.borrow_mut().insert(token, writes);
        token
    }

    /// The writes an evaluation given `token` saw as pending.
    pub(super) fn take_snapshot(&self, token: i64) -> Vec<PendingWrite> {
        self.snapshots.borrow_mut().remove(&token).unwrap_or_default()
    }

    fn host_activities(&self, condition: &str) -> Result<Vec<HostActivity>> {
        #[derive(Deserialize)]
        struct Row {
            host: String,
            roles: String,
            flows: u64,
            packets: u64,
            bytes: u64,
            first_ms: i64,
            last_ms: i64,
            external_clients: u64,
            external_servers: u64,
        }
        let rows: Vec<Row> = self.client.select(&format!(
            "SELECT host, arrayStringConcat(arraySort(groupUniqArray(role)), ',') AS roles, count() AS flows,
                    sum(packets) AS packets, sum(bytes) AS bytes, min(start_ms) AS first_ms, max(end_ms) AS last_ms,
                    uniqExactIf(peer, role = 'server' AND NOT peer_internal) AS external_clients,
                    uniqExactIf(peer, role = 'client' AND NOT peer_internal) AS external_servers
             FROM service_flows WHERE {condition} GROUP BY host"
        ))?;
        let mut activities = rows
            .into_iter()
            .map(|row| {
                Ok(HostActivity {
                    host: self.addr(&row.host)?,
                    roles: row.roles.split(',').filter_map(Role::parse).collect(),
                    flows: row.flows,
                    packets: row.packets,
                    bytes: row.bytes,
                    first_ms: row.first_ms,
                    last_ms: row.last_ms,
                    external_clients: row.external_clients,
                    external_servers: row.external_servers,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // By the address's text, as SQLite orders them.
        activities.sort_by_cached_key(|a| a.host.to_string());
        Ok(activities)
    }

    pub(super) fn addr(&self, text: &str) -> Result<IpAddr> {
        text.parse().map_err(|_| StoreError::Refused {
            server: self.client.location(),
            detail: format!("{text:?} in the store is not an address"),
        })
    }

    fn addrs(&self, rows: Vec<Host>) -> Result<Vec<IpAddr>> {
        let mut rows = rows;
        rows.sort_by(|a, b| a.host.cmp(&b.host));
        rows.iter().map(|row| self.addr(&row.host)).collect()
    }
}

#[derive(Deserialize)]
struct Host {
    host: String,
}

/// The condition on service flows of `service` starting in the window.
fn service_window(service: &str, from_ms: i64, to_ms: i64) -> String {
    format!("service = {} AND start_ms BETWEEN {from_ms} AND {to_ms}", quote(service))
}

fn host_service_window(service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> String {
    format!("{} AND host = '{host}'", service_window(service, from_ms, to_ms))
}

/// The condition on bins of `host` in the window (bins are seconds).
fn host_bin_window(host: IpAddr, from_ms: i64, to_ms: i64) -> String {
    format!("host = '{host}' AND bin BETWEEN {} AND {}", from_ms.div_euclid(1000), to_ms.div_euclid(1000))
}

#[derive(Deserialize)]
struct Daily {
    day: i64,
    flows: u64,
    bytes: u64,
}

impl Traffic for ClickHouseStore {
    fn has_sha256_hashes(&self) -> Result<bool> {
        // Only SQLite stores made before its migration 4 hold SHA-256 hashes.
        Ok(false)
    }

    fn sources(&self) -> Result<Vec<Source>> {
        sources(&self.client, "1")
    }

    fn source(&self, id: i64) -> Result<Option<Source>> {
        Ok(sources(&self.client, &format!("id = {id}"))?.pop())
    }

    fn source_by_hash(&self, hash: &str) -> Result<Option<Source>> {
        Ok(sources(&self.client, &format!("content_hash = {}", quote(hash)))?.pop())
    }

    fn pending_files(&self) -> Result<Option<(i64, i64)>> {
        let files: BTreeSet<i64> =
            source_rows(&self.client, &format!("NOT {LIVE_SQL}"))?.iter().map(|s| s.id).collect();
        let writes = self.pending_writes()?;
        let pending: Vec<&PendingWrite> = writes.iter().filter(|w| files.contains(&w.source_id)).collect();
        let from = pending.iter().filter_map(|w| w.first_ms).min();
        let to = pending.iter().filter_map(|w| w.last_ms).max();
        Ok(from.zip(to))
    }

    fn newest_ms(&self) -> Result<Option<i64>> {
        #[derive(Deserialize)]
        struct Newest {
            newest: Option<i64>,
        }
        Ok(self.client.select_one::<Newest>("SELECT max(last_ms) AS newest FROM source_writes FINAL")?.newest)
    }

    fn pending(&self) -> Result<Option<Pending>> {
        let writes = self.pending_writes()?;
        let from = writes.iter().filter_map(|w| w.first_ms).min();
        // To the end of the newest source holding a pending write, as on
        // SQLite (where a source's pending span ends at its last flow).
        let holding: BTreeSet<i64> = writes.iter().map(|w| w.source_id).collect();
        let ends = match holding.is_empty() {
            true => Vec::new(),
            false => sources(
                &self.client,
                &format!("id IN ({})", holding.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
            )?,
        };
        let to = ends.iter().filter_map(|s| s.last_ms).max();
        let seq = self.snapshot(writes);
        Ok(from.zip(to).map(|(from_ms, to_ms)| Pending { from_ms, to_ms, seq }))
    }

    fn write_seq(&self) -> Result<i64> {
        let writes = self.pending_writes()?;
        Ok(self.snapshot(writes))
    }

    fn covered_days(&self) -> Result<BTreeSet<i64>> {
        #[derive(Deserialize)]
        struct Day {
            day: i64,
        }
        let days: Vec<Day> =
            self.client.select("SELECT DISTINCT toInt64(toUInt16(day)) AS day FROM data_days WHERE inserts = 0")?;
        Ok(days.into_iter().map(|d| d.day).collect())
    }

    fn service_host_addresses(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>> {
        let rows = self.client.select(&format!(
            "SELECT DISTINCT host FROM service_flows WHERE {}",
            service_window(service, from_ms, to_ms)
        ))?;
        self.addrs(rows)
    }

    fn service_host_first_ms(&self, service: &str, host: IpAddr) -> Result<Option<i64>> {
        #[derive(Deserialize)]
        struct First {
            flows: u64,
            first_ms: i64,
        }
        let first: First = self.client.select_one(&format!(
            "SELECT count() AS flows, min(start_ms) AS first_ms FROM service_flows WHERE {}",
            host_service_window(service, host, i64::MIN, i64::MAX)
        ))?;
        Ok((first.flows > 0).then_some(first.first_ms))
    }

    fn service_host_last_ms(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<i64>> {
        #[derive(Deserialize)]
        struct Last {
            flows: u64,
            last_ms: i64,
        }
        let last: Last = self.client.select_one(&format!(
            "SELECT count() AS flows, max(end_ms) AS last_ms FROM service_flows WHERE {}",
            host_service_window(service, host, from_ms, to_ms)
        ))?;
        Ok((last.flows > 0).then_some(last.last_ms))
    }

    fn service_host(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<HostActivity>> {
        Ok(self.host_activities(&host_service_window(service, host, from_ms, to_ms))?.pop())
    }

    fn service_hosts(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<HostActivity>> {
        self.host_activities(&service_window(service, from_ms, to_ms))
    }

    fn server_days(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<u64> {
        let days: Count = self.client.select_one(&format!(
            "SELECT uniqExact(intDiv(start_ms, 86400000)) AS n FROM service_flows WHERE {} AND role = 'server'",
            host_service_window(service, host, from_ms, to_ms)
        ))?;
        Ok(days.n)
    }

    fn share_bytes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<(u64, u64)> {
        let window = host_bin_window(host, from_ms, to_ms);
        let share: Count = self.client.select_one(&format!(
            "SELECT sum(bytes) AS n FROM share_bins WHERE service = {} AND {window}",
            quote(service)
        ))?;
        let total: Count = self.client.select_one(&format!("SELECT sum(bytes) AS n FROM host_bins WHERE {window}"))?;
        Ok((share.n, total.n))
    }

    fn daily_volumes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>> {
        let rows: Vec<Daily> = self.client.select(&format!(
            "SELECT intDiv(start_ms, 86400000) AS day, count() AS flows, sum(bytes) AS bytes FROM service_flows
             WHERE {} GROUP BY day ORDER BY day",
            host_service_window(service, host, from_ms, to_ms)
        ))?;
        Ok(rows.into_iter().map(|d| (d.day, d.flows, d.bytes)).collect())
    }

    fn opened_to_external_servers(
        &self,
        service: &str,
        host: IpAddr,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, IpAddr)>> {
        #[derive(Deserialize)]
        struct Opened {
            start_ms: i64,
            peer: String,
        }
        let rows: Vec<Opened> = self.client.select(&format!(
            "SELECT start_ms, peer FROM service_flows
             WHERE {} AND role = 'client' AND outbound = 1 AND peer_internal = 0",
            host_service_window(service, host, from_ms, to_ms)
        ))?;
        let mut opened =
            rows.into_iter().map(|row| Ok((row.start_ms, self.addr(&row.peer)?))).collect::<Result<Vec<_>>>()?;
        opened.sort();
        Ok(opened)
    }

    fn peers(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<Peer>> {
        #[derive(Deserialize)]
        struct Row {
            peer: String,
            internal: u8,
            role: String,
            flows: u64,
            packets: u64,
            bytes: u64,
            first_ms: i64,
            last_ms: i64,
        }
        let rows: Vec<Row> = self.client.select(&format!(
            "SELECT peer, any(peer_internal) AS internal, role, count() AS flows, sum(packets) AS packets,
                    sum(bytes) AS bytes, min(start_ms) AS first_ms, max(end_ms) AS last_ms
             FROM service_flows WHERE {} GROUP BY peer, role",
            host_service_window(service, host, from_ms, to_ms)
        ))?;
        let mut peers = rows
            .into_iter()
            .map(|row| {
                Ok(Peer {
                    peer: self.addr(&row.peer)?,
                    internal: row.internal != 0,
                    role: Role::parse(&row.role).unwrap_or(Role::Client),
                    flows: row.flows,
                    packets: row.packets,
                    bytes: row.bytes,
                    first_ms: row.first_ms,
                    last_ms: row.last_ms,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // As SQLite orders them: most bytes first, then by the peer's text, then by role.
        peers.sort_by_cached_key(|p| (std::cmp::Reverse(p.bytes), p.peer.to_string(), p.role.as_str()));
        Ok(peers)
    }

    fn host_span(&self, host: IpAddr) -> Result<Option<(i64, i64)>> {
        #[derive(Deserialize)]
        struct Span {
            bins: u64,
            first: i64,
            last: i64,
        }
        let span: Span = self.client.select_one(&format!(
            "SELECT count() AS bins, min(bin) AS first, max(bin) AS last FROM host_bins WHERE host = '{host}'"
        ))?;
        Ok((span.bins > 0).then_some((span.first, span.last)))
    }

    fn host_daily(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>> {
        let rows: Vec<Daily> = self.client.select(&format!(
            "SELECT intDiv(bin, 86400) AS day, sum(flows) AS flows, sum(bytes) AS bytes FROM host_bins
             WHERE {} GROUP BY day ORDER BY day",
            host_bin_window(host, from_ms, to_ms)
        ))?;
        Ok(rows.into_iter().map(|d| (d.day, d.flows, d.bytes)).collect())
    }

    fn active_hosts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>> {
        let rows = self.client.select(&format!(
            "SELECT DISTINCT host FROM host_bins WHERE host != '' AND bin BETWEEN {} AND {}",
            from_ms.div_euclid(1000),
            to_ms.div_euclid(1000)
        ))?;
        self.addrs(rows)
    }

    fn port_usage(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<PortUsageRow>> {
        #[derive(Deserialize)]
        struct Row {
            bin: i64,
            direction: u8,
            proto: u8,
            port: u16,
            flows: u64,
            packets: u64,
            bytes: u64,
        }
        let rows: Vec<Row> = self.client.select(&format!(
            "SELECT bin, direction, proto, port, sum(flows) AS flows, sum(packets) AS packets, sum(bytes) AS bytes
             FROM port_usage WHERE {} GROUP BY bin, direction, proto, port ORDER BY bin, direction, proto, port",
            host_bin_window(host, from_ms, to_ms)
        ))?;
        Ok(rows.into_iter().map(|r| (r.bin, r.direction, r.proto, r.port, r.flows, r.packets, r.bytes)).collect())
    }
}
