//! The flow cache every source feeds (live XDP drains, capture files) and the
//! completed flow record it produces: unidirectional flows keyed by the
//! 5-tuple and interface, ended by idle and active timeouts.
//!
//! Timeouts run on data time (packet timestamps), never the wall clock, so a
//! capture from last month is cut exactly as it would have been live. Like
//! every production flow meter (nfpcapd, softflowd, YAF) the cache checks
//! timeouts in periodic sweeps rather than per packet, and it uses nfdump's
//! nfpcapd schedule to the second, so that rogue's flows from a capture equal
//! nfdump's flow for flow and analysts can check one tool against the other:
//! - time is counted in whole seconds;
//! - after a packet is added, if its second is more than 1 past the last
//!   check, a check runs; a check more than [`SWEEP_INTERVAL_SECS`] after the
//!   last sweep sweeps;
//! - a sweep completes every flow whose last packet's second is more than
//!   the idle timeout before it, or whose first packet's second is more than
//!   the active timeout before it.
//!
//! A second either way on a 60 s timeout changes nothing for the method.
//! Live, each drain advances data time to the drain's wall-clock time, so idle
//! flows complete even when no packet arrives.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use rogue_common::{Address, FlowKey, address_bytes, address_from_bytes};

use crate::{
    capture::FlowDelta,
    config,
    time::{NANOS_PER_SEC, Nanos},
};

pub mod format;
pub mod meter;
mod table;

use table::{FlowTable, Slot};

/// How often (in seconds of data time) the cache looks for flows to complete.
pub const SWEEP_INTERVAL_SECS: i64 = 10;

/// A completed unidirectional flow: what every later stage consumes.
/// Field names follow the `rogue flows` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub packets: u64,
    /// IP-layer octets.
    pub bytes: u64,
    pub start: Nanos,
    pub end: Nanos,
    /// OR of the TCP flags of all packets.
    pub tcp_flags: u8,
    /// Interface index (live) or the capture's interface id (files).
    pub ifindex: u32,
    /// Interface name, where the source knows it.
    pub interface: Option<Arc<str>>,
}

#[derive(Clone, Copy, Debug)]
struct ActiveFlow {
    packets: u64,
    bytes: u64,
    first: Nanos,
    last: Nanos,
    tcp_flags: u8,
}

/// Counts that show what the cache did, for `--stats` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCacheStats {
    pub flows_completed: u64,
    pub idle_expired: u64,
    pub active_expired: u64,
    pub flushed: u64,
    /// Completed before their timeouts because the cache was full.
    pub early_exported: u64,
    /// Largest number of flows held at once.
    pub peak_active: u64,
}

/// Flow keys come from the network, so the hash is seeded per process
/// (foldhash): fast, and an attacker cannot aim packets at one bucket.
type FastHasher = foldhash::fast::RandomState;

/// A map keyed by what the network sends (addresses, ports): see [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastHasher>;

/// Idle and active timeouts, in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub idle: i64,
    pub active: i64,
}

impl Timeouts {
    pub fn from_secs(idle: u64, active: u64) -> Timeouts {
        Timeouts { idle: idle.min(i64::MAX as u64) as i64, active: active.min(i64::MAX as u64) as i64 }
    }
}

impl Timeouts {
    /// The second after which `flow` is due: idle past the idle timeout, or
    /// open past the active timeout.
    fn deadline(self, flow: &ActiveFlow) -> i64 {
        second(flow.last).saturating_add(self.idle).min(second(flow.first).saturating_add(self.active))
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from_secs(config::DEFAULT_IDLE_TIMEOUT_SECS, config::DEFAULT_ACTIVE_TIMEOUT_SECS)
    }
}

/// The data times a record may plausibly carry, by the wall clock at
/// ingest. Records outside are rejected before the profiles, counted and
/// never stored: a packet stamped 2030 in a capture, or a spoofed IPFIX
/// datagram dated 2100, must not reach the store (see store::retention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBounds {
    pub not_before: Option<Nanos>,
    pub not_after: Nanos,
}

impl TimeBounds {
    /// For files, whose traffic may be of any age: nothing dated more than
    /// `max_future_secs` after `now`.
    pub fn for_files(now: Nanos, max_future_secs: u64) -> TimeBounds {
        TimeBounds { not_before: None, not_after: now.saturating_add(secs(max_future_secs)) }
    }

    /// For live sources: also nothing older than the retention, which would
    /// be removed at once.
    pub fn for_live(now: Nanos, max_future_secs: u64, retention_days: u64) -> TimeBounds {
        let not_before = now.saturating_sub(secs(retention_days.saturating_mul(86_400)));
        TimeBounds { not_before: Some(not_before), ..TimeBounds::for_files(now, max_future_secs) }
    }

    pub fn admits(&self, time: Nanos) -> bool {
        time <= self.not_after && self.not_before.is_none_or(|first| time >= first)
    }

    /// Whether the flow's start and end both are plausible.
    pub fn admits_flow(&self, flow: &FlowRecord) -> bool {
        self.admits(flow.start) && self.admits(flow.end)
    }
}

fn secs(seconds: u64) -> Nanos {
    (seconds.min(i64::MAX as u64 / NANOS_PER_SEC as u64) as Nanos) * NANOS_PER_SEC
}

/// Records rejected by [`TimeBounds`], and the span of their times (for the
/// message that says so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    pub records: u64,
    pub earliest: Option<Nanos>,
    pub latest: Option<Nanos>,
}

impl Rejected {
    pub fn add(&mut self, time: Nanos) {
        self.records += 1;
        self.earliest = Some(self.earliest.map_or(time, |t| t.min(time)));
        self.latest = Some(self.latest.map_or(time, |t| t.max(time)));
    }
}

pub struct FlowCache {
    table: FlowTable,
    timeouts: Timeouts,
    /// Flows held at most (see [`FlowCache::with_limit`]).
    limit: usize,
    interfaces: HashMap<u32, Arc<str>>,
    /// Latest data time seen; `None` before the first packet.
    now: Option<Nanos>,
    /// The second of data time of the last check, and of the last sweep
    /// (`None` until the first check).
    last_check: i64,
    last_sweep: Option<i64>,
    stats: FlowCacheStats,
    /// Slots being completed, with their flows' starts (reused).
    completing: Vec<(Nanos, u32)>,
}

impl FlowCache {
    pub fn new(timeouts: Timeouts) -> FlowCache {
        FlowCache::with_limit(timeouts, usize::MAX)
    }

    /// A cache holding at most `limit` flows: a new flow arriving when it is
    /// full first completes the eighth of its flows idle longest, counted as
    /// early exports (as nfpcapd and softflowd do when their caches fill).
    pub fn with_limit(timeouts: Timeouts, limit: usize) -> FlowCache {
        FlowCache {
            table: FlowTable::default(),
            timeouts,
            limit: limit.max(1),
            interfaces: HashMap::new(),
            now: None,
            last_check: 0,
            last_sweep: None,
            stats: FlowCacheStats::default(),
            completing: Vec::new(),
        }
    }

    /// Names the interface `ifindex` in the records of its flows.
    pub fn name_interface(&mut self, ifindex: u32, name: &str) {
        self.interfaces.insert(ifindex, Arc::from(name));
    }

    pub fn stats(&self) -> FlowCacheStats {
        self.stats
    }

    /// Flows currently held (not yet completed).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Adds packets of one flow, then sweeps if data time has moved on enough.
    /// Completed flows are appended to `out`.
    pub fn add(&mut self, key: &FlowKey, delta: FlowDelta, out: &mut Vec<FlowRecord>) {
        let hash = self.table.hash(key);
        match self.table.find(hash, key) {
            Some(slot) => {
                let flow = self.table.flow_mut(slot);
                flow.packets += delta.packets;
                flow.bytes += delta.bytes;
                flow.first = flow.first.min(delta.first);
                flow.last = flow.last.max(delta.last);
                flow.tcp_flags |= delta.tcp_flags;
                let deadline = self.timeouts.deadline(flow);
                self.table.set_deadline(slot, deadline);
            }
            None => {
                if self.table.len() >= self.limit {
                    self.export_idlest(out);
                }
                let flow = ActiveFlow {
                    packets: delta.packets,
                    bytes: delta.bytes,
                    first: delta.first,
                    last: delta.last,
                    tcp_flags: delta.tcp_flags,
                };
                self.table.insert(hash, *key, flow, self.timeouts.deadline(&flow));
                self.stats.peak_active = self.stats.peak_active.max(self.table.len() as u64);
            }
        }
        self.advance(delta.last, out);
    }

    /// Moves data time to `now` (if later) and sweeps when a sweep is due.
    /// Live sources call it after each drain with the drain's time, so idle
    /// flows complete even when no packet arrives.
    pub fn advance(&mut self, now: Nanos, out: &mut Vec<FlowRecord>) {
        let now = self.now.map_or(now, |previous| previous.max(now));
        self.now = Some(now);
        let second = second(now);
        if second - self.last_check <= 1 {
            return;
        }
        self.last_check = second;
        match self.last_sweep {
            None => self.last_sweep = Some(second),
            Some(last) if second - last > SWEEP_INTERVAL_SECS => self.sweep(now, out),
            Some(_) => {}
        }
    }

    /// Completes every flow whose timeout has passed at `now`.
    pub fn sweep(&mut self, now: Nanos, out: &mut Vec<FlowRecord>) {
        let now = second(now);
        self.last_sweep = Some(now);
        let mut due = std::mem::take(&mut self.completing);
        due.extend(self.table.due(now).map(|slot| (self.table.slot(slot).flow.first, slot)));
        let idle_expired = due.iter().filter(|&&(_, slot)| self.is_idle(slot, now)).count() as u64;
        let active_expired = due.len() as u64 - idle_expired;
        self.complete(due, out);
        self.stats.idle_expired += idle_expired;
        self.stats.active_expired += active_expired;
        self.stats.flows_completed += idle_expired + active_expired;
    }

    fn is_idle(&self, slot: u32, now: i64) -> bool {
        now - second(self.table.slot(slot).flow.last) > self.timeouts.idle
    }

    /// Completes the eighth of the flows (at least one) idle longest.
    fn export_idlest(&mut self, out: &mut Vec<FlowRecord>) {
        let count = (self.table.len() / 8).max(1);
        let mut lasts: Vec<Nanos> = self.table.open().map(|slot| self.table.slot(slot).flow.last).collect();
        let (_, &mut cutoff, _) = lasts.select_nth_unstable(count - 1);
        let mut idlest = std::mem::take(&mut self.completing);
        let open = self.table.open().map(|slot| (self.table.slot(slot).flow, slot));
        idlest.extend(open.filter(|(flow, _)| flow.last <= cutoff).take(count).map(|(flow, slot)| (flow.first, slot)));
        self.complete(idlest, out);
        self.stats.early_exported += count as u64;
        self.stats.flows_completed += count as u64;
    }

    /// Completes every flow (end of input, or shutdown).
    pub fn flush(&mut self, out: &mut Vec<FlowRecord>) {
        let mut all = std::mem::take(&mut self.completing);
        all.extend(self.table.open().map(|slot| (self.table.slot(slot).flow.first, slot)));
        let flushed = all.len() as u64;
        self.complete(all, out);
        self.table.clear();
        self.stats.flushed += flushed;
        self.stats.flows_completed += flushed;
    }

    /// Closes the flows of `slots` (each with its start), appending their
    /// records to `out` in start order (hash order is random), then keeps
    /// the emptied vector for the next time.
    fn complete(&mut self, mut slots: Vec<(Nanos, u32)>, out: &mut Vec<FlowRecord>) {
        // Starts differ almost always: the records' full order is
        // computed only for ties.
        let table = &self.table;
        slots.sort_unstable_by(|&(a_start, a), &(b_start, b)| {
            a_start.cmp(&b_start).then_with(|| order(&table.slot(a).key).cmp(&order(&table.slot(b).key)))
        });
        out.reserve(slots.len());
        for &(_, slot) in &slots {
            let Slot { key, flow } = self.table.remove(slot);
            out.push(record(&key, &flow, &self.interfaces));
        }
        slots.clear();
        self.completing = slots;
    }
}

fn second(time: Nanos) -> i64 {
    time.div_euclid(NANOS_PER_SEC)
}

/// The order of flows with the same start: as their records'.
fn order(key: &FlowKey) -> (IpAddr, IpAddr, u16, u16, u8) {
    (address(&key.src_addr), address(&key.dst_addr), key.src_port, key.dst_port, key.proto)
}

fn record(key: &FlowKey, flow: &ActiveFlow, interfaces: &HashMap<u32, Arc<str>>) -> FlowRecord {
    FlowRecord {
        src: address(&key.src_addr),
        dst: address(&key.dst_addr),
        sport: key.src_port,
        dport: key.dst_port,
        proto: key.proto,
        packets: flow.packets,
        bytes: flow.bytes,
        start: flow.first,
        end: flow.last,
        tcp_flags: flow.tcp_flags,
        ifindex: key.ifindex,
        interface: interfaces.get(&key.ifindex).cloned(),
    }
}

/// The address a flow key holds: IPv4-mapped addresses are IPv4.
pub fn address(address: &Address) -> IpAddr {
    let v6 = Ipv6Addr::from(address_bytes(address));
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The address a flow key holds for `addr` (IPv4 as IPv4-mapped).
pub fn key_address(addr: IpAddr) -> Address {
    match addr {
        IpAddr::V4(v4) => address_from_bytes(v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => address_from_bytes(v6.octets()),
    }
}

/// An IPv4 address as a flow key holds it.
#[cfg(test)]
pub(crate) fn key_ipv4(addr: std::net::Ipv4Addr) -> Address {
    key_address(IpAddr::V4(addr))
}

/// A TCP flow record for unit tests.
#[cfg(test)]
pub(crate) fn tcp_flow(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    start: Nanos,
    packets: u64,
    bytes: u64,
) -> FlowRecord {
    FlowRecord {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport,
        dport,
        proto: 6,
        packets,
        bytes,
        start,
        end: start + NANOS_PER_SEC,
        tcp_flags: 0x1b,
        ifindex: 0,
        interface: None,
    }
}

#[cfg(test)]
mod tests;
