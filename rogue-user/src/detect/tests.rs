use std::path::PathBuf;

use super::*;
use crate::{
    config::Config,
    flows::FlowRecord,
    profile::Profiler,
    time::{NANOS_PER_SEC, Nanos},
};

const SEC: Nanos = NANOS_PER_SEC;
const DAY: Nanos = 86_400 * SEC;
const BASE: Nanos = 13_900 * DAY; // 2008-01-22

struct Fixture {
    dir: PathBuf,
    store: Box<dyn Store>,
    config: Config,
    whitelist: Whitelist,
    dns: crate::detect::DnsFacts,
}

fn fixture(name: &str, whitelist: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("rogue-detect-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rogue.yaml"), "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\n").unwrap();
    std::fs::write(dir.join("whitelist.yaml"), whitelist).unwrap();
    let config = Config::load(&dir.join("rogue.yaml")).unwrap();
    let whitelist = Whitelist::load(&config.whitelist_path(), &config.services.names()).unwrap();
    let store = crate::store::open(&config, &config.store_path(), crate::store::Access::Create).unwrap();
    Fixture { dir, store, config, whitelist, dns: crate::detect::DnsFacts::disabled() }
}

impl Fixture {
    fn ingest(&mut self, flows: &[FlowRecord]) {
        let services = self.config.services.all().to_vec();
        let mut profiler = Profiler::new(self.config.internal_networks.clone(), services.clone(), 600);
        let mut span = crate::profile::FlowSpan::default();
        for flow in flows {
            profiler.add(flow);
            span.add(flow);
        }
        let mut ingest = self.store.ingest().unwrap();
        let source = ingest.add_source("capture", "test", 0).unwrap();
        ingest.write(source, &services, &profiler.take()).unwrap();
        ingest.extend_source(source, &span).unwrap();
        ingest.commit().unwrap();
    }

    fn detector(&self) -> Detector<'_> {
        Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns }
    }

    fn findings(&self) -> Vec<Finding> {
        let end = self.store.newest_ms().unwrap().unwrap();
        let detector = self.detector();
        detector.evaluate(&*self.store, detector.window(end)).unwrap()
    }

    fn record(&mut self, findings: &[Finding], now_ms: i64) -> Vec<(StoredFinding, Upsert)> {
        Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns }
            .record(&mut *self.store, findings, now_ms)
            .unwrap()
    }

    fn reports(&self) -> Vec<HostReport> {
        let detector = self.detector();
        detector.hosts(&*self.store, &detector.services()[0]).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16, start: Nanos, bytes: u64) -> FlowRecord {
    crate::flows::tcp_flow(src, sport, dst, dport, start, 6, bytes)
}

/// Both halves of an SMTP conversation from `client` to `server`:25.
fn smtp(client: &str, server: &str, start: Nanos, port: u16) -> [FlowRecord; 2] {
    [flow(client, port, server, 25, start, 2_000), flow(server, 25, client, port, start, 600)]
}

fn kinds(findings: &[Finding]) -> Vec<(FindingKind, String)> {
    let mut kinds: Vec<_> = findings.iter().map(|f| (f.kind, f.host)).collect();
    kinds.sort();
    kinds.into_iter().map(|(kind, host)| (kind, host.to_string())).collect()
}

const WHITELIST: &str = "# verified by hand\n- address: 192.0.2.16/28\n  service: smtp\n  name: relays\n";

#[test]
fn every_host_with_smtp_that_is_not_whitelisted_is_a_rogue_server() {
    let mut f = fixture("rogue", WHITELIST);
    let mut flows = Vec::new();
    flows.extend(smtp("198.51.100.7", "192.0.2.20", BASE, 40000)); // whitelisted by prefix
    flows.extend(smtp("198.51.100.7", "192.0.2.77", BASE, 40001)); // rogue server
    flows.extend(smtp("192.0.2.100", "203.0.113.25", BASE, 50000)); // rogue client
    flows.extend(smtp("2001:db8:ff::7", "2001:db8:10::5", BASE, 40002)); // IPv6 rogue server
    f.ingest(&flows);
    let findings = f.findings();
    assert_eq!(
        kinds(&findings),
        vec![
            (FindingKind::RogueServer, "192.0.2.77".into()),
            (FindingKind::RogueServer, "192.0.2.100".into()),
            (FindingKind::RogueServer, "2001:db8:10::5".into()),
        ]
    );
    let client = findings.iter().find(|f| f.host.to_string() == "192.0.2.100").unwrap();
    assert_eq!(client.details["roles"], json!(["client"]));
    assert_eq!((client.details["external_servers"].as_u64(), client.details["flows"].as_u64()), (Some(1), Some(2)));
    assert_eq!(client.details["characteristics"]["ptr"], Value::Null);
    let server = findings.iter().find(|f| f.host.to_string() == "192.0.2.77").unwrap();
    assert_eq!(server.details["roles"], json!(["server"]));
    assert_eq!(server.details["external_clients"], 1);
    assert_eq!(server.details["characteristics"]["server_days"], 1);
}

#[test]
fn a_host_is_suggested_when_it_serves_on_several_days_with_a_mail_share_at_the_threshold() {
    let mut f = fixture("share", "");
    let mut flows = Vec::new();
    for day in 0..3 {
        // 2,600 bytes of SMTP a day, and other traffic to land on a share.
        flows.extend(smtp("198.51.100.7", "192.0.2.77", BASE + day * DAY, 40000));
        flows.extend(smtp("198.51.100.7", "192.0.2.78", BASE + day * DAY, 40000));
    }
    // 85% exactly: 7,800 mail bytes and 1,376 + 0.47 other... use round numbers:
    // 192.0.2.77: 7,800 mail / 9,176 total = 0.85004; 192.0.2.78: 7,800 / 9,180 = 0.8497.
    flows.push(flow("192.0.2.77", 51000, "198.51.100.80", 443, BASE, 1_376));
    flows.push(flow("192.0.2.78", 51000, "198.51.100.80", 443, BASE, 1_380));
    f.ingest(&flows);
    let reports = f.reports();
    let at = reports.iter().find(|r| r.host().to_string() == "192.0.2.77").unwrap();
    let below = reports.iter().find(|r| r.host().to_string() == "192.0.2.78").unwrap();
    assert_eq!(at.characteristics.server_days, 3);
    assert!(at.characteristics.share.unwrap() >= 0.85 && at.suggest_whitelist, "{:?}", at.characteristics);
    assert!(below.characteristics.share.unwrap() < 0.85 && !below.suggest_whitelist);
    assert!(at.evidence.contains("acted as an SMTP server on 3 of the 3 days with data"), "{}", at.evidence);
    assert!(
        at.evidence.contains("85% of its bytes were on SMTP ports (25, 465, 587, 110, 995, 143, 993; threshold 85%)"),
        "{}",
        at.evidence
    );
    assert!(at.evidence.contains("behaves like an SMTP server but is not on the whitelist"), "{}", at.evidence);
    assert!(below.evidence.contains("does not behave like an SMTP server"), "{}", below.evidence);
}

#[test]
fn a_server_on_fewer_days_than_required_is_not_suggested() {
    let mut f = fixture("days", "");
    let mut flows = Vec::new();
    for day in 0..2 {
        flows.extend(smtp("198.51.100.7", "192.0.2.77", BASE + day * DAY, 40000));
    }
    f.ingest(&flows);
    let report = &f.reports()[0];
    assert_eq!(report.characteristics.share, Some(1.0));
    assert_eq!(report.characteristics.server_days, 2);
    assert!(!report.suggest_whitelist);
}

fn fanout(host: &str, peers: usize, spread: Nanos, start: Nanos) -> Vec<FlowRecord> {
    (0..peers)
        .flat_map(|i| {
            let at = start + spread * i as Nanos / peers.max(2) as Nanos;
            smtp(host, &format!("203.0.113.{}", i + 1), at, 50000 + i as u16)
        })
        .collect()
}

#[test]
fn twenty_external_servers_within_a_minute_is_a_fanout_burst() {
    let mut f = fixture("fanout", "");
    let mut flows = fanout("192.0.2.60", 20, 59 * SEC, BASE);
    flows.extend(fanout("192.0.2.61", 19, 30 * SEC, BASE));
    // 20 servers, but the first and last 61 s apart.
    let mut slow = fanout("192.0.2.62", 19, 30 * SEC, BASE);
    slow.extend(smtp("192.0.2.62", "203.0.113.99", BASE + 61 * SEC, 60000));
    flows.extend(slow);
    f.ingest(&flows);
    let findings = f.findings();
    let bursts: Vec<&Finding> = findings.iter().filter(|f| f.kind == FindingKind::FanoutBurst).collect();
    assert_eq!(bursts.len(), 1, "{bursts:?}");
    assert_eq!(bursts[0].host.to_string(), "192.0.2.60");
    assert_eq!(
        (bursts[0].details["peers"].as_u64(), bursts[0].details["window_seconds"].as_u64()),
        (Some(20), Some(60))
    );
    assert_eq!(bursts[0].time_ms, crate::time::millis(BASE));
}

fn daily(host: &str, day: i64, flows_per_day: usize) -> Vec<FlowRecord> {
    (0..flows_per_day / 2)
        .flat_map(|i| {
            smtp(
                &format!("198.51.100.{}", i % 200 + 1),
                host,
                BASE + day * DAY + i as Nanos * SEC,
                40000 + (i % 20000) as u16,
            )
        })
        .collect()
}

#[test]
fn a_jump_from_5_to_thousands_of_flows_a_day_is_one_volume_spike_at_its_onset() {
    let mut f = fixture("spike", "");
    let mut flows = Vec::new();
    for day in 0..7 {
        flows.extend(daily("192.0.2.40", day, 6));
    }
    for day in 7..10 {
        flows.extend(daily("192.0.2.40", day, 2_000));
    }
    // No SMTP at all on the days with data, then thousands: a jump from 0.
    for day in 7..10 {
        flows.extend(daily("192.0.2.41", day, 2_000));
    }
    // Busy, but under the minimum of 1,000 flows.
    for day in 7..10 {
        flows.extend(daily("192.0.2.42", day, 900));
    }
    f.ingest(&flows);
    let findings = f.findings();
    let spikes: Vec<(String, &str, u64, u64)> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::VolumeSpike)
        .map(|f| {
            let d = &f.details;
            (
                f.host.to_string(),
                d["day"].as_str().unwrap(),
                d["flows"].as_u64().unwrap(),
                d["baseline"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        spikes,
        vec![("192.0.2.40".into(), "2008-01-29", 2_000, 6), ("192.0.2.41".into(), "2008-01-29", 2_000, 0)]
    );
}

#[test]
fn without_earlier_data_there_is_no_baseline_and_no_spike() {
    let mut f = fixture("no-baseline", "");
    let mut flows = Vec::new();
    for day in 0..3 {
        flows.extend(daily("192.0.2.40", day, 2_000));
    }
    f.ingest(&flows);
    assert!(f.findings().iter().all(|f| f.kind != FindingKind::VolumeSpike));
}

#[test]
fn verdicts_and_the_whitelist_set_the_state_of_stored_findings() {
    let mut f = fixture("states", "");
    let mut flows = Vec::new();
    flows.extend(smtp("198.51.100.7", "192.0.2.77", BASE, 40000));
    flows.extend(smtp("198.51.100.7", "192.0.2.78", BASE, 40000));
    f.ingest(&flows);
    let verdict = Verdict { verdict: "rogue".into(), by: "bob".into(), reason: "open relay".into(), at_ms: 0 };
    f.store.set_verdict("smtp", "192.0.2.78".parse().unwrap(), &verdict).unwrap();
    let window = f.detector().window(f.store.newest_ms().unwrap().unwrap());
    let findings = f.findings();
    let stored = f.record(&findings, 1);
    let states: Vec<(String, String)> = stored.iter().map(|(s, _)| (s.host.to_string(), s.state.clone())).collect();
    assert_eq!(states, vec![("192.0.2.77".into(), "open".into()), ("192.0.2.78".into(), "confirmed_rogue".into())]);
    // Recording the same findings again changes nothing.
    let again = f.record(&findings, 2);
    assert!(again.iter().all(|(_, change)| *change == Upsert::Unchanged));
    // Whitelisting 192.0.2.77 closes its finding and stops new ones.
    std::fs::write(f.config.whitelist_path(), "- address: 192.0.2.77\n").unwrap();
    let whitelist = Whitelist::load(&f.config.whitelist_path(), &f.config.services.names()).unwrap();
    let detector = Detector { config: &f.config, whitelist: &whitelist, dns: &f.dns };
    let findings = detector.evaluate(&*f.store, window).unwrap();
    assert_eq!(kinds(&findings), vec![(FindingKind::RogueServer, "192.0.2.78".into())]);
    detector.record(&mut *f.store, &findings, 3).unwrap();
    assert_eq!(f.store.findings(None, Some("whitelisted")).unwrap()[0].host.to_string(), "192.0.2.77");
}

#[test]
fn a_burst_keeps_its_key_when_an_earlier_flow_of_it_completes_later() {
    let mut f = fixture("fanout-late", "");
    // Live, 25 flows of a burst complete first; one that began 5 s before
    // them completes later.
    f.ingest(&fanout("192.0.2.60", 25, 20 * SEC, BASE + 5 * SEC));
    let first = f.findings();
    let stored = f.record(&first, 0);
    f.ingest(&smtp("192.0.2.60", "203.0.113.200", BASE, 61000));
    let again = f.findings();
    let stored_again = f.record(&again, 1);
    let bursts = |stored: &[(StoredFinding, Upsert)]| -> Vec<(i64, String, u64)> {
        stored
            .iter()
            .filter(|(f, _)| f.kind == "fanout_burst")
            .map(|(f, _)| (f.id, f.key.clone(), f.details["peers"].as_u64().unwrap()))
            .collect()
    };
    let (before, after) = (bursts(&stored), bursts(&stored_again));
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(after.len(), 1, "one burst, not two: {after:?}");
    assert_eq!((after[0].0, &after[0].1), (before[0].0, &before[0].1), "same finding, same key");
    assert_eq!((before[0].2, after[0].2), (25, 26));
}
