//! Writing flows' profiles to ClickHouse: a write gathers RowBinary rows
//! per table and partition, and its commit makes them one [`Batch`] (each
//! insert with its marker row), kept in the spool and then sent.
//!
//! Source ids are made here, not by the server (it has no sequences): a
//! live origin's id is a hash of its kind and name, so every process and
//! every restart finds the same one; a file's is a hash of this write.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    rc::Rc,
};

use super::{
    ClickHouseStore,
    client::RowBinary,
    read,
    spool::{Batch, Chunk},
};
use crate::{
    config::Service,
    profile::{FlowSpan, ProfileBatch},
    store::{Ingest, Result, Source, is_live_kind},
    time::{MILLIS_PER_DAY, millis},
};

/// A source registered or changed by this write.
struct SourceRow {
    kind: String,
    name: String,
    content_hash: String,
    ingested_ms: i64,
    /// A live origin's row, written with each process's first write of it
    /// (so that no write waits on a query while the server is away): the
    /// row of the earliest `ingested_ms` is the one kept.
    first_wins: bool,
}

impl SourceRow {
    fn new(kind: &str, name: &str, ingested_ms: i64, first_wins: bool) -> SourceRow {
        SourceRow { kind: kind.into(), name: name.into(), content_hash: String::new(), ingested_ms, first_wins }
    }

    /// Its version: the server keeps the row of the highest.
    fn version(&self, store: &ClickHouseStore) -> u64 {
        match self.first_wins {
            true => u64::MAX - self.ingested_ms.max(0) as u64,
            false => store.version(),
        }
    }
}

/// What this write adds to a source's counts and span.
#[derive(Default)]
struct SourceWrite {
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    packets: u64,
    flows: u64,
    rejected: u64,
}

pub struct ClickHouseIngest<'s> {
    store: &'s mut ClickHouseStore,
    /// This write's id in the spool, and its sequence number.
    id: String,
    batch: u64,
    sources: BTreeMap<i64, SourceRow>,
    writes: BTreeMap<i64, SourceWrite>,
    traffic: TrafficRows,
    added: u64,
}

impl<'s> ClickHouseIngest<'s> {
    pub fn new(store: &'s mut ClickHouseStore) -> ClickHouseIngest<'s> {
        let (id, batch) = store.spool.next_id();
        ClickHouseIngest {
            store,
            id,
            batch,
            sources: BTreeMap::new(),
            writes: BTreeMap::new(),
            traffic: TrafficRows::new(INSERT_ROWS),
            added: 0,
        }
    }

    /// Whether `source` is live (its traffic ages bin by bin).
    fn is_live(&self, source: i64) -> Result<bool> {
        if let Some(row) = self.sources.get(&source) {
            return Ok(is_live_kind(&row.kind));
        }
        if let Some(&live) = self.store.known_sources.borrow().get(&source) {
            return Ok(live);
        }
        let found = read::source_rows(&self.store.client, &format!("id = {source}"))?;
        let live = found.first().is_some_and(|s| is_live_kind(&s.kind));
        self.store.known_sources.borrow_mut().insert(source, live);
        Ok(live)
    }

    /// Where the next row of `table` goes, its partition (`live`, `day`)
    /// and the shard its `shard_key` picks written.
    fn rows(&mut self, table: &'static str, live: u8, day: u16, shard_key: u64) -> &mut RowBinary {
        let slot = shard_key % self.store.layout.slots;
        self.traffic.row((table, live, day, slot)).u8(live).u16(day)
    }
}

/// Rows in one insert: below the server's `max_insert_block_size`
/// (1,048,576), so that an insert is one block, written as one part (all
/// or nothing) with its marker row.
const INSERT_ROWS: usize = 500_000;

/// The partition day of a time in ms (Date holds days 0 to 65535).
fn day_of_ms(ms: i64) -> u16 {
    ms.div_euclid(MILLIS_PER_DAY).clamp(0, u16::MAX as i64) as u16
}

fn id_of(parts: &[&[u8]]) -> i64 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    // 47 bits: positive, and short enough to type (`rogue store prune --source`).
    (u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().expect("8 bytes")) >> 17) as i64
}

impl Ingest for ClickHouseIngest<'_> {
    fn add_source(&mut self, kind: &str, name: &str, now_ms: i64) -> Result<i64> {
        self.added += 1;
        let id = id_of(&[b"file", self.id.as_bytes(), &self.added.to_le_bytes(), kind.as_bytes(), name.as_bytes()]);
        self.sources.insert(id, SourceRow::new(kind, name, now_ms, false));
        Ok(id)
    }

    fn source_named(&mut self, kind: &str, name: &str, now_ms: i64) -> Result<i64> {
        let id = id_of(&[b"named", kind.as_bytes(), name.as_bytes()]);
        if !self.sources.contains_key(&id) && !self.store.known_sources.borrow().contains_key(&id) {
            self.sources.insert(id, SourceRow::new(kind, name, now_ms, true));
        }
        Ok(id)
    }

    fn source_by_hash(&mut self, hash: &str) -> Result<Option<Source>> {
        if let Some((&id, row)) = self.sources.iter().find(|(_, row)| row.content_hash == hash) {
            return Ok(Some(Source {
                id,
                kind: row.kind.clone(),
                name: row.name.clone(),
                content_hash: Some(hash.into()),
                first_ms: None,
                last_ms: None,
                packets: 0,
                flows: 0,
                ingested_ms: row.ingested_ms,
                pending_from_ms: None,
                rejected: 0,
            }));
        }
        Ok(read::sources(&self.store.client, &format!("content_hash = {}", super::quote(hash)))?.pop())
    }

    fn set_source_hash(&mut self, source: i64, hash: &str) -> Result<()> {
        if !self.sources.contains_key(&source) {
            let Some(stored) = read::source_rows(&self.store.client, &format!("id = {source}"))?.pop() else {
                return Ok(());
            };
            self.sources.insert(source, SourceRow::new(&stored.kind, &stored.name, stored.ingested_ms, false));
        }
        self.sources.get_mut(&source).expect("just made").content_hash = hash.into();
        Ok(())
    }

    fn extend_source(&mut self, source: i64, span: &FlowSpan) -> Result<()> {
        let (Some(first), Some(last)) = (span.first, span.last) else { return Ok(()) };
        let write = self.writes.entry(source).or_default();
        write.first_ms = Some(write.first_ms.map_or(millis(first), |f| f.min(millis(first))));
        write.last_ms = Some(write.last_ms.map_or(millis(last), |l| l.max(millis(last))));
        write.packets += span.packets;
        write.flows += span.flows;
        Ok(())
    }

    fn add_rejected(&mut self, source: i64, records: u64) -> Result<()> {
        if records > 0 {
            self.writes.entry(source).or_default().rejected += records;
        }
        Ok(())
    }

    fn write(&mut self, source: i64, services: &[Service], batch: &ProfileBatch) -> Result<()> {
        let live = self.is_live(source)? as u8;
        let mut hosts = HostKeys::default();
        for (&(host, bin), counts) in &batch.host_bins {
            let (text, key) = hosts.of(host);
            let day = day_of_ms(bin.saturating_mul(1000));
            self.rows("host_bins", live, day, key)
                .string(&text)
                .i64(bin)
                .i64(source)
                .u64(key)
                .string("")
                .u64(counts.flows)
                .u64(counts.packets)
                .u64(counts.bytes)
                .u64(0);
        }
        for (usage, counts) in &batch.port_usage {
            let (text, key) = hosts.of(usage.host);
            let day = day_of_ms(usage.bin.saturating_mul(1000));
            self.rows("port_usage", live, day, key)
                .string(&text)
                .i64(usage.bin)
                .i64(source)
                .u8(usage.direction as u8)
                .u8(usage.proto)
                .u16(usage.port)
                .u64(key)
                .string("")
                .u64(counts.flows)
                .u64(counts.packets)
                .u64(counts.bytes)
                .u64(0);
        }
        for (&(service, host, bin), counts) in &batch.share_bins {
            let (text, key) = hosts.of(host);
            let day = day_of_ms(bin.saturating_mul(1000));
            self.rows("share_bins", live, day, key)
                .string(&services[service].name)
                .string(&text)
                .i64(bin)
                .i64(source)
                .u64(key)
                .string("")
                .u64(counts.flows)
                .u64(counts.packets)
                .u64(counts.bytes)
                .u64(0);
        }
        let source_key = id_of(&[&source.to_le_bytes()]) as u64;
        for (&day_number, &flows) in &batch.days {
            let day = day_number.clamp(0, u16::MAX as i64) as u16;
            self.rows("data_days", live, day, source_key).i64(source).u64(source_key).string("").u64(flows).u64(0);
        }
        for flow in &batch.raw_flows {
            let ((src, key), (dst, _)) = (hosts.of(flow.src), hosts.of(flow.dst));
            let start_ms = millis(flow.start);
            self.rows("flows", live, day_of_ms(start_ms), key)
                .i64(source)
                .u64(key)
                .string("")
                .string(&src)
                .string(&dst)
                .u16(flow.sport)
                .u16(flow.dport)
                .u8(flow.proto)
                .u64(flow.packets)
                .u64(flow.bytes)
                .i64(start_ms)
                .i64(millis(flow.end))
                .u8(flow.tcp_flags)
                .string(flow.interface.as_deref().unwrap_or_default())
                .u64(0);
        }
        for flow in &batch.service_flows {
            let ((peer, _), (text, key)) = (hosts.of(flow.peer), hosts.of(flow.host));
            let start_ms = millis(flow.start);
            let day = day_of_ms(start_ms);
            self.rows("service_flows", live, day, key)
                .i64(source)
                .u64(key)
                .string("")
                .string(&services[flow.service].name)
                .string(&text)
                .string(flow.role.as_str())
                .string(&peer)
                .u8(flow.peer_internal as u8)
                .u16(flow.host_port)
                .u16(flow.peer_port)
                .u8(flow.outbound as u8)
                .i64(start_ms)
                .i64(millis(flow.end))
                .u64(flow.packets)
                .u64(flow.bytes)
                .u8(flow.tcp_flags)
                .u64(0);
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let live_of =
            self.writes.keys().map(|&source| Ok((source, self.is_live(source)?))).collect::<Result<HashMap<_, _>>>()?;
        let ClickHouseIngest { store, id, batch, sources, writes, traffic, .. } = *self;
        let mut chunks = Vec::new();
        if !sources.is_empty() {
            let mut rows = RowBinary::default();
            for (&source, row) in &sources {
                rows.i64(source)
                    .string(&row.kind)
                    .string(&row.name)
                    .string(&row.content_hash)
                    .i64(row.ingested_ms)
                    .u64(row.version(store));
            }
            chunks.push(chunk("sources", SOURCE_COLUMNS, 0, 0, None, rows));
        }
        chunks.extend(traffic.into_chunks(&id));
        let mut write_rows: BTreeMap<(u8, u16), RowBinary> = BTreeMap::new();
        for (&source, write) in &writes {
            let live = live_of[&source] as u8;
            let day = day_of_ms(write.first_ms.unwrap_or_else(|| jiff::Timestamp::now().as_millisecond()));
            write_rows
                .entry((live, day))
                .or_default()
                .u8(live)
                .u16(day)
                .i64(source)
                .string(store.spool.writer())
                .u64(batch)
                .nullable_i64(write.first_ms)
                .nullable_i64(write.last_ms)
                .u64(write.packets)
                .u64(write.flows)
                .u64(write.rejected);
        }
        for ((live, day), rows) in write_rows {
            chunks.push(chunk("source_writes", SOURCE_WRITE_COLUMNS, live, day, None, rows));
        }
        if chunks.is_empty() {
            return Ok(());
        }
        let registered = sources.iter().map(|(&id, row)| (id, is_live_kind(&row.kind)));
        store.known_sources.borrow_mut().extend(registered);
        store.commit_batch(Batch { id, chunks })
    }
}

/// Rows of traffic by table, partition and shard, in inserts of at most
/// `limit` rows each: each insert is then one part on one server, written
/// whole or not at all, with its marker row.
struct TrafficRows {
    limit: usize,
    inserts: BTreeMap<Destination, Vec<(RowBinary, usize)>>,
}

/// (table, live, day, slot): the slot is the shard key modulo the shards'
/// total weight, which picks the shard (0 on one server).
type Destination = (&'static str, u8, u16, u64);

impl TrafficRows {
    fn new(limit: usize) -> TrafficRows {
        TrafficRows { limit, inserts: BTreeMap::new() }
    }

    /// Where the next row to `destination` goes.
    fn row(&mut self, destination: Destination) -> &mut RowBinary {
        let inserts = self.inserts.entry(destination).or_default();
        if inserts.last().is_none_or(|(_, rows)| *rows >= self.limit) {
            inserts.push((RowBinary::default(), 0));
        }
        let (binary, rows) = inserts.last_mut().expect("just made");
        *rows += 1;
        binary
    }

    /// The inserts of batch `id`, each with its marker row naming it:
    /// `ID#LIVE.DAY.SLOT.PART`, unique in the table.
    fn into_chunks(self, id: &str) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for ((table, live, day, slot), inserts) in self.inserts {
            for (part, (mut rows, _)) in inserts.into_iter().enumerate() {
                let marker = format!("{id}#{live}.{day}.{slot}.{part}");
                marker_row(&mut rows, table, live, day, slot, &marker);
                chunks.push(chunk(table, columns_of(table), live, day, Some(marker), rows));
            }
        }
        chunks
    }
}

const SOURCE_COLUMNS: &str = "id, kind, name, content_hash, ingested_ms, version";
const SOURCE_WRITE_COLUMNS: &str = "live, day, source_id, writer, batch, first_ms, last_ms, packets, flows, rejected";

fn columns_of(table: &str) -> &'static str {
    match table {
        "host_bins" => "live, day, host, bin, source_id, shard_key, marker, flows, packets, bytes, inserts",
        "port_usage" => {
            "live, day, host, bin, source_id, direction, proto, port, shard_key, marker, flows, packets, bytes, inserts"
        }
        "share_bins" => "live, day, service, host, bin, source_id, shard_key, marker, flows, packets, bytes, inserts",
        "data_days" => "live, day, source_id, shard_key, marker, flows, inserts",
        "flows" => {
            "live, day, source_id, shard_key, marker, src, dst, sport, dport, proto, packets, bytes, start_ms, end_ms, \
             tcp_flags, interface, inserts"
        }
        "service_flows" => {
            "live, day, source_id, shard_key, marker, service, host, role, peer, peer_internal, host_port, peer_port, \
             outbound, start_ms, end_ms, packets, bytes, tcp_flags, inserts"
        }
        _ => unreachable!("{table} is not a table of traffic"),
    }
}

/// The row that says this insert landed: no host and no service (no query
/// of the method sees it), nothing counted but `inserts`, and the shard
/// key of the insert's rows' shard (`slot`), so that it is in their part.
fn marker_row(rows: &mut RowBinary, table: &str, live: u8, day: u16, slot: u64, marker: &str) {
    let (bin, start_ms) = (day as i64 * 86_400, day as i64 * MILLIS_PER_DAY);
    rows.u8(live).u16(day);
    match table {
        "host_bins" => rows.string("").i64(bin).i64(0).u64(slot).string(marker).u64(0).u64(0).u64(0).u64(1),
        "port_usage" => {
            rows.string("").i64(bin).i64(0).u8(0).u8(0).u16(0).u64(slot).string(marker).u64(0).u64(0).u64(0).u64(1)
        }
        "share_bins" => rows.string("").string("").i64(bin).i64(0).u64(slot).string(marker).u64(0).u64(0).u64(0).u64(1),
        "data_days" => rows.i64(0).u64(slot).string(marker).u64(0).u64(1),
        "flows" => rows
            .i64(0)
            .u64(slot)
            .string(marker)
            .string("")
            .string("")
            .u16(0)
            .u16(0)
            .u8(0)
            .u64(0)
            .u64(0)
            .i64(start_ms)
            .i64(start_ms)
            .u8(0)
            .string("")
            .u64(1),
        "service_flows" => rows
            .i64(0)
            .u64(slot)
            .string(marker)
            .string("")
            .string("")
            .string("")
            .string("")
            .u8(0)
            .u16(0)
            .u16(0)
            .u8(0)
            .i64(start_ms)
            .i64(start_ms)
            .u64(0)
            .u64(0)
            .u8(0)
            .u64(1),
        _ => unreachable!("{table} is not a table of traffic"),
    };
}

fn chunk(table: &str, columns: &str, live: u8, day: u16, marker: Option<String>, rows: RowBinary) -> Chunk {
    Chunk { table: table.into(), columns: columns.into(), live, day, marker, rows: rows.bytes }
}

/// Addresses as the store writes them (text), with the shard key of a
/// host's rows (a hash of its text: the same on every writer and version),
/// each made once a write.
#[derive(Default)]
struct HostKeys(HashMap<IpAddr, (Rc<str>, u64)>);

impl HostKeys {
    fn of(&mut self, addr: IpAddr) -> (Rc<str>, u64) {
        let (text, key) = self.0.entry(addr).or_insert_with(|| {
            let text: Rc<str> = addr.to_string().into();
            let key = id_of(&[text.as_bytes()]) as u64;
            (text, key)
        });
        (text.clone(), *key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_is_inserted_per_partition_in_parts_of_at_most_the_limit_each_with_its_marker() {
        let mut traffic = TrafficRows::new(2);
        for (day, slot) in [(7, 0), (7, 0), (7, 0), (8, 0), (7, 1)] {
            traffic.row(("data_days", 1, day, slot)).u8(1).u16(day).i64(5).u64(slot).string("").u64(1).u64(0);
        }
        let chunks = traffic.into_chunks("w.3");
        let described: Vec<(u16, Option<&str>, usize)> =
            chunks.iter().map(|c| (c.day, c.marker.as_deref(), c.rows.len())).collect();
        // A row of data_days is 1 + 2 + 8 + 8 + 1 + 8 + 8 = 36 bytes; a marker
        // row names its marker ("w.3#L.D.S.N", 11 bytes) where a row has "".
        assert_eq!(
            described,
            [
                (7, Some("w.3#1.7.0.0"), 3 * 36 + 11),
                (7, Some("w.3#1.7.0.1"), 2 * 36 + 11),
                (7, Some("w.3#1.7.1.0"), 2 * 36 + 11),
                (8, Some("w.3#1.8.0.0"), 2 * 36 + 11)
            ]
        );
    }
}
