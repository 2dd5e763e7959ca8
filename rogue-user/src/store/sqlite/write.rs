//! Writing flows' profiles: one transaction per [`Ingest`], every row under
//! the source it came from, each write numbered so that evaluations know
//! what they have seen.

use std::{net::IpAddr, path::Path, rc::Rc};

use rusqlite::{OptionalExtension, Transaction, params};

use super::{
    SqliteStore, error_at, ports,
    read::{SOURCES, source_row},
};
use crate::{
    config::Service,
    flows::FastMap,
    profile::{FlowSpan, ProfileBatch},
    store::{Ingest, Result, Source},
    time::millis,
};

impl SqliteStore {
    /// Starts writing flows, in one transaction.
    pub(super) fn begin_ingest(&mut self) -> Result<SqliteIngest<'_>> {
        let SqliteStore { conn, path } = self;
        let tx = conn.transaction().map_err(|e| error_at(path, e))?;
        let seq = (|| {
            tx.execute("UPDATE write_sequence SET value = value + 1", [])?;
            tx.query_row("SELECT value FROM write_sequence", [], |row| row.get(0))
        })()
        .map_err(|e| error_at(path, e))?;
        Ok(SqliteIngest { tx, path, seq })
    }
}

/// Writing flows in one transaction; dropped without commit, nothing of it stays.
pub struct SqliteIngest<'s> {
    tx: Transaction<'s>,
    path: &'s Path,
    /// This write's number (see [`Store::pending`]).
    seq: i64,
}

impl SqliteIngest<'_> {
    fn run<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.tx).map_err(|e| error_at(self.path, e))
    }
}

impl Ingest for SqliteIngest<'_> {
    fn add_source(&mut self, kind: &str, name: &str, now_ms: i64) -> Result<i64> {
        self.run(|tx| {
            tx.execute("INSERT INTO sources (kind, name, ingested_ms) VALUES (?, ?, ?)", params![kind, name, now_ms])?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn source_named(&mut self, kind: &str, name: &str, now_ms: i64) -> Result<i64> {
        let existing = self.run(|tx| {
            tx.query_row("SELECT max(id) FROM sources WHERE kind = ? AND name = ?", params![kind, name], |row| {
                row.get::<_, Option<i64>>(0)
            })
        })?;
        match existing {
            Some(id) => Ok(id),
            None => self.add_source(kind, name, now_ms),
        }
    }

    fn source_by_hash(&mut self, hash: &str) -> Result<Option<Source>> {
        self.run(|tx| tx.query_row(&format!("{SOURCES} WHERE content_hash = ?"), [hash], source_row).optional())
    }

    fn set_source_hash(&mut self, source: i64, hash: &str) -> Result<()> {
        self.run(|tx| tx.execute("UPDATE sources SET content_hash = ? WHERE id = ?", params![hash, source]).map(drop))
    }

    fn extend_source(&mut self, source: i64, span: &FlowSpan) -> Result<()> {
        let (Some(first), Some(last)) = (span.first, span.last) else { return Ok(()) };
        self.run(|tx| {
            tx.execute(
                "UPDATE sources SET first_ms = min(coalesce(first_ms, ?1), ?1), last_ms = max(coalesce(last_ms, ?2), ?2),
                     packets = packets + ?3, flows = flows + ?4,
                     pending_from_ms = min(coalesce(pending_from_ms, ?1), ?1), pending_seq = ?6 WHERE id = ?5",
                params![millis(first), millis(last), span.packets, span.flows, source, self.seq],
            )
            .map(drop)
        })
    }

    fn add_rejected(&mut self, source: i64, records: u64) -> Result<()> {
        if records == 0 {
            return Ok(());
        }
        self.run(|tx| {
            tx.execute("UPDATE sources SET rejected = rejected + ? WHERE id = ?", params![records, source]).map(drop)
        })
    }

    fn write(&mut self, source: i64, services: &[Service], batch: &ProfileBatch) -> Result<()> {
        self.run(|tx| write_batch(tx, source, services, batch))
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let path = self.path;
        self.tx.commit().map_err(|e| error_at(path, e))
    }
}

fn write_batch(tx: &Transaction<'_>, source: i64, services: &[Service], batch: &ProfileBatch) -> rusqlite::Result<()> {
    let mut text = AddressText::default();
    let mut host_bins = tx.prepare_cached(
        "INSERT INTO host_bins (host, bin, source_id, flows, packets, bytes, ports) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (host, bin, source_id) DO UPDATE SET flows = flows + excluded.flows,
             packets = packets + excluded.packets, bytes = bytes + excluded.bytes,
             ports = rogue_merge_ports(ports, excluded.ports)",
    )?;
    let mut ports = packed_ports(batch);
    // In key order, so the B-tree is walked forward rather than at random.
    let mut bins: Vec<_> = batch.host_bins.iter().collect();
    bins.sort_unstable_by_key(|(key, _)| **key);
    for ((host, bin), counts) in bins {
        let packed = ports.remove(&(*host, *bin));
        host_bins.execute(params![text.of(*host), bin, source, counts.flows, counts.packets, counts.bytes, packed])?;
    }
    let mut share_bins = tx.prepare_cached(
        "INSERT INTO share_bins (service, host, bin, source_id, flows, packets, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (service, host, bin, source_id) DO UPDATE SET flows = flows + excluded.flows,
             packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
    )?;
    for ((service, host, bin), counts) in &batch.share_bins {
        share_bins.execute(params![
            services[*service].name,
            text.of(*host),
            bin,
            source,
            counts.flows,
            counts.packets,
            counts.bytes
        ])?;
    }
    let mut days = tx.prepare_cached(
        "INSERT INTO data_days (day, source_id, flows) VALUES (?, ?, ?)
         ON CONFLICT (day, source_id) DO UPDATE SET flows = flows + excluded.flows",
    )?;
    for (day, flows) in &batch.days {
        days.execute(params![day, source, flows])?;
    }
    let mut flows = tx.prepare_cached(
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

/// The batch's port usage packed per host and bin (store::ports).
fn packed_ports(batch: &ProfileBatch) -> FastMap<(IpAddr, i64), Vec<u8>> {
    let mut usage: Vec<_> = batch.port_usage.iter().collect();
    usage.sort_unstable_by_key(|(key, _)| **key);
    let mut packed = FastMap::default();
    for run in usage.chunk_by(|(a, _), (b, _)| (a.host, a.bin) == (b.host, b.bin)) {
        let entries = run.iter().map(|(key, counts)| {
            ((key.direction as u8, key.proto, key.port), [counts.flows, counts.packets, counts.bytes])
        });
        packed.insert((run[0].0.host, run[0].0.bin), ports::pack(entries));
    }
    packed
}

/// Addresses as the store writes them (text), each formatted once a batch.
#[derive(Default)]
struct AddressText(FastMap<IpAddr, Rc<str>>);

impl AddressText {
    fn of(&mut self, addr: IpAddr) -> Rc<str> {
        self.0.entry(addr).or_insert_with(|| addr.to_string().into()).clone()
    }
}
