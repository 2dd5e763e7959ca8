use super::*;

const SEC: Nanos = NANOS_PER_SEC;

fn key(src_port: u16) -> FlowKey {
    FlowKey {
        src_addr: key_ipv4([192, 0, 2, 1].into()),
        dst_addr: key_ipv4([198, 51, 100, 7].into()),
        src_port,
        dst_port: 25,
        proto: 6,
        ..FlowKey::ZERO
    }
}

fn packet(at: Nanos, bytes: u64) -> FlowDelta {
    FlowDelta { packets: 1, bytes, first: at, last: at, tcp_flags: 0x10 }
}

#[test]
fn packets_of_one_flow_add_up_until_flushed() {
    let mut cache = FlowCache::new(Timeouts::default());
    let mut out = Vec::new();
    cache.add(&key(1000), FlowDelta { tcp_flags: 0x02, ..packet(SEC, 60) }, &mut out);
    cache.add(&key(1000), packet(2 * SEC, 52), &mut out);
    cache.add(&key(1000), FlowDelta { tcp_flags: 0x01, ..packet(3 * SEC, 52) }, &mut out);
    assert!(out.is_empty());
    cache.flush(&mut out);
    assert_eq!(out.len(), 1);
    let flow = &out[0];
    assert_eq!((flow.packets, flow.bytes, flow.start, flow.end, flow.tcp_flags), (3, 164, SEC, 3 * SEC, 0x13));
    assert_eq!(flow.src.to_string(), "192.0.2.1");
    assert_eq!((flow.sport, flow.dport, flow.proto), (1000, 25, 6));
    assert_eq!(cache.stats().flushed, 1);
}

#[test]
fn an_idle_flow_completes_at_the_first_sweep_after_its_timeout() {
    let mut cache = FlowCache::new(Timeouts::from_secs(60, 300));
    let mut out = Vec::new();
    cache.add(&key(1), packet(0, 100), &mut out);
    cache.add(&key(2), packet(0, 100), &mut out);
    // Key 2 stays busy; key 1 falls silent.
    for t in (5..=60).step_by(5) {
        cache.add(&key(2), packet(t * SEC, 100), &mut out);
    }
    assert!(out.is_empty(), "60 s of silence is not more than the idle timeout");
    cache.add(&key(2), packet(61 * SEC, 100), &mut out);
    cache.add(&key(2), packet(72 * SEC, 100), &mut out);
    assert_eq!(out.len(), 1, "a sweep after 61 s completes key 1 only");
    assert_eq!((out[0].sport, out[0].packets), (1, 1));
    assert_eq!(cache.stats().idle_expired, 1);
}

#[test]
fn a_packet_after_the_idle_timeout_starts_a_new_flow() {
    let mut cache = FlowCache::new(Timeouts::from_secs(60, 300));
    let mut out = Vec::new();
    cache.add(&key(1), packet(0, 100), &mut out);
    cache.add(&key(1), packet(100 * SEC, 40), &mut out);
    // The sweep that packet triggered ran after it was added: the first
    // flow had gone idle but the packet had refreshed it, as nfpcapd does.
    // A second packet of another flow later proves the split point.
    cache.add(&key(9), packet(161 * SEC + 1, 40), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].packets, out[0].start, out[0].end), (2, 0, 100 * SEC));
}

#[test]
fn a_long_flow_is_cut_by_the_active_timeout() {
    let mut cache = FlowCache::new(Timeouts::from_secs(60, 300));
    let mut out = Vec::new();
    for t in (0..=400).step_by(10) {
        cache.add(&key(1), packet(t * SEC, 10), &mut out);
    }
    cache.flush(&mut out);
    assert_eq!(out.len(), 2);
    assert!(out[0].end - out[0].start > 300 * SEC && out[0].end - out[0].start <= 311 * SEC);
    assert_eq!(out[0].packets + out[1].packets, 41);
    assert_eq!(out[0].end + 10 * SEC, out[1].start, "no packet lost between the pieces");
    assert_eq!(cache.stats().active_expired, 1);
}

#[test]
fn drained_deltas_merge_and_idle_flows_complete_on_advance_alone() {
    let mut cache = FlowCache::new(Timeouts::from_secs(60, 300));
    let mut out = Vec::new();
    let drained = FlowDelta { packets: 10, bytes: 1000, first: SEC, last: 4 * SEC, tcp_flags: 0x18 };
    cache.add(&key(7), drained, &mut out);
    cache.add(&key(7), FlowDelta { first: 5 * SEC, last: 9 * SEC, ..drained }, &mut out);
    cache.advance(30 * SEC, &mut out);
    assert!(out.is_empty());
    cache.advance(70 * SEC, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].packets, out[0].bytes, out[0].start, out[0].end), (20, 2000, SEC, 9 * SEC));
}

#[test]
fn interfaces_are_named_in_records() {
    let mut cache = FlowCache::new(Timeouts::default());
    cache.name_interface(3, "eth1");
    let mut out = Vec::new();
    cache.add(&FlowKey { ifindex: 3, ..key(1) }, packet(0, 1), &mut out);
    cache.add(&FlowKey { ifindex: 4, ..key(1) }, packet(0, 1), &mut out);
    cache.flush(&mut out);
    let mut names: Vec<_> = out.iter().map(|f| f.interface.as_deref().map(str::to_owned)).collect();
    names.sort();
    assert_eq!(names, vec![None, Some("eth1".to_owned())]);
}

#[test]
fn ipv4_mapped_keys_print_as_ipv4_and_others_as_ipv6() {
    assert_eq!(address(&key_ipv4([203, 0, 113, 5].into())).to_string(), "203.0.113.5");
    let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(address(&address_from_bytes(v6.octets())).to_string(), "2001:db8::1");
}

#[test]
fn a_full_cache_completes_its_idlest_flows_early_and_counts_them() {
    let mut cache = FlowCache::with_limit(Timeouts::default(), 16);
    let mut out = Vec::new();
    // 16 flows, flow n last seen at n ms; flow 3 refreshed last of all.
    for port in 0..16u16 {
        cache.add(&key(port), packet(port as Nanos * 1_000_000, 100), &mut out);
    }
    cache.add(&key(3), packet(20_000_000, 100), &mut out);
    assert!(out.is_empty());
    cache.add(&key(100), packet(21_000_000, 100), &mut out);
    let exported: Vec<u16> = out.iter().map(|f| f.sport).collect();
    assert_eq!(exported, [0, 1], "an eighth of 16, idlest first; flow 3 was refreshed");
    assert_eq!((cache.len(), cache.stats().early_exported), (15, 2));
    let mut rest = Vec::new();
    cache.flush(&mut rest);
    let total: u64 = out.iter().chain(&rest).map(|f| f.packets).sum();
    assert_eq!(total, 18, "no packet lost to an early export");
}

#[test]
fn plausible_times_are_bounded_by_the_clock_for_files_and_by_the_retention_too_when_live() {
    let now = 1_800_000_000 * SEC;
    let files = TimeBounds::for_files(now, 86_400);
    assert!(files.admits(0) && files.admits(now + 86_400 * SEC));
    assert!(!files.admits(now + 86_401 * SEC) && !files.admits(i64::MAX));
    let live = TimeBounds::for_live(now, 86_400, 90);
    assert!(live.admits(now - 90 * 86_400 * SEC) && !live.admits(now - 90 * 86_400 * SEC - 1));
    let flow = crate::flows::tcp_flow("192.0.2.1", 40_000, "198.51.100.7", 25, now + 86_400 * SEC, 3, 200);
    assert!(!live.admits_flow(&flow), "its end is a second too late");
    assert_eq!(TimeBounds::for_live(now, u64::MAX, u64::MAX).not_after, i64::MAX, "saturates, never wraps");
    let mut rejected = Rejected::default();
    rejected.add(now + 10 * SEC);
    rejected.add(now + 5 * SEC);
    assert_eq!((rejected.records, rejected.earliest, rejected.latest), (2, Some(now + 5 * SEC), Some(now + 10 * SEC)));
}

/// The slab table against the rule it implements, kept as plainly as it
/// can be said (every open flow looked at, at every sweep): over a long
/// run of packets on thousands of keys, partly out of order, with flows
/// coming and going so slots are freed and reused, both complete the same
/// flows at the same sweeps, in the same order.
#[test]
fn the_table_completes_exactly_the_flows_a_plain_sweep_over_every_flow_does() {
    use std::collections::BTreeMap;

    use rand::{RngExt, SeedableRng};

    let timeouts = Timeouts::from_secs(30, 120);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut cache = FlowCache::new(timeouts);
    let mut plain = PlainCache { timeouts, open: BTreeMap::new(), now: 0, last_check: 0, last_sweep: None };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut now = 1_000 * SEC;
    for _ in 0..200_000 {
        now += rng.random_range(0..20_000_000);
        // Late packets too: up to two seconds behind.
        let at = now - rng.random_range(0..2 * SEC);
        let port = rng.random_range(0..3_000u16);
        let delta = FlowDelta { tcp_flags: rng.random_range(0..=255u8), ..packet(at, rng.random_range(40..1500)) };
        cache.add(&key(port), delta, &mut ours);
        plain.add(key(port), delta, &mut theirs);
        assert_eq!(ours.len(), theirs.len(), "the same flows complete at the same sweep");
    }
    cache.flush(&mut ours);
    let mut rest: Vec<FlowRecord> = plain.open.iter().map(|(key, flow)| record(key, flow, &HashMap::new())).collect();
    rest.sort_by_key(|f| (f.start, f.sport));
    theirs.extend(rest);
    assert!(ours.len() > 10_000, "flows come and go: {}", ours.len());
    assert_eq!(ours, theirs);
    let stats = cache.stats();
    assert_eq!(stats.idle_expired + stats.active_expired + stats.flushed, ours.len() as u64);
    assert!(stats.active_expired > 0 && stats.idle_expired > 0);
}

/// The sweep as the module comment says it, over a sorted map.
struct PlainCache {
    timeouts: Timeouts,
    open: std::collections::BTreeMap<FlowKey, ActiveFlow>,
    /// The latest data time seen.
    now: Nanos,
    last_check: i64,
    last_sweep: Option<i64>,
}

impl PlainCache {
    fn add(&mut self, key: FlowKey, delta: FlowDelta, out: &mut Vec<FlowRecord>) {
        let flow = self.open.entry(key).or_insert(ActiveFlow {
            packets: 0,
            bytes: 0,
            first: delta.first,
            last: delta.last,
            tcp_flags: 0,
        });
        flow.packets += delta.packets;
        flow.bytes += delta.bytes;
        flow.first = flow.first.min(delta.first);
        flow.last = flow.last.max(delta.last);
        flow.tcp_flags |= delta.tcp_flags;
        self.now = self.now.max(delta.last);
        let now = self.now.div_euclid(SEC);
        if now - self.last_check <= 1 {
            return;
        }
        self.last_check = now;
        match self.last_sweep {
            None => self.last_sweep = Some(now),
            Some(last) if now - last > SWEEP_INTERVAL_SECS => {
                self.last_sweep = Some(now);
                let Timeouts { idle, active } = self.timeouts;
                let due =
                    |f: &ActiveFlow| now - f.last.div_euclid(SEC) > idle || now - f.first.div_euclid(SEC) > active;
                let mut completed: Vec<FlowRecord> =
                    self.open.iter().filter(|(_, f)| due(f)).map(|(k, f)| record(k, f, &HashMap::new())).collect();
                self.open.retain(|_, f| !due(f));
                completed.sort_by_key(|f| (f.start, f.sport));
                out.extend(completed);
            }
            Some(_) => {}
        }
    }
}
