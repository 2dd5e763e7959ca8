//! The agent's stages wired together, as any user: flows handed over by a
//! test source, the time given by a test clock, a store in a temporary
//! directory and a file sink.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicI64, Ordering},
};

use super::{source::MemorySource, *};
use crate::{flows::FlowRecord, time::NANOS_PER_SEC};

/// 2026-09-21 10:40 UTC.
const NOW: Nanos = 1_790_073_600 * NANOS_PER_SEC;
const HOUR: Nanos = 3_600 * NANOS_PER_SEC;
const DAY: Nanos = 24 * HOUR;

/// A clock the test moves.
struct TestClock(Arc<AtomicI64>);

impl Clock for TestClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::Relaxed)
    }
}

fn clock() -> (Box<dyn Clock + Send>, Arc<AtomicI64>) {
    let time = Arc::new(AtomicI64::new(NOW));
    (Box::new(TestClock(time.clone())), time)
}

/// A directory with a configuration (findings to `findings.jsonl`, `extra`
/// keys besides) and a whitelist of 192.0.2.25.
fn workspace(name: &str, extra: &str) -> (PathBuf, Paths) {
    let dir = std::env::temp_dir().join(format!("rogue-agent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "internal_networks: [192.0.2.0/24]\nmetrics: {{listen: null}}\noutput: {{findings: [findings.jsonl]}}\n{extra}"
    );
    std::fs::write(dir.join("rogue.yaml"), config).unwrap();
    std::fs::write(dir.join("whitelist.yaml"), "- address: 192.0.2.25\n").unwrap();
    let paths = Paths { config: Some(dir.join("rogue.yaml")), db: None, no_dns: true };
    (dir, paths)
}

fn agent(paths: &Paths, access: Access, source: MemorySource, clock: Box<dyn Clock + Send>) -> Agent<MemorySource> {
    let engine = Engine::open(paths, access, WhitelistFile::Existing).unwrap();
    let options = AgentOptions { paths: paths.clone(), interfaces: Vec::new(), listen: None };
    Agent::new(options, engine, source, Arc::new(Metrics::new(metrics::Role::Meter)), clock).unwrap()
}

/// `count` SMTP sessions to `server` from external clients, `at` on.
fn smtp_to(server: &str, at: Nanos, count: u16) -> Vec<FlowRecord> {
    (0..count)
        .map(|i| {
            let client = format!("198.51.100.{}", i % 250 + 1);
            crate::flows::tcp_flow(&client, 40_000 + i, server, 25, at + i as i64 * NANOS_PER_SEC, 10, 1_500)
        })
        .collect()
}

fn batch(origin: &str, flows: Vec<FlowRecord>) -> Batch {
    Batch { origin: origin.into(), flows }
}

fn source(kind: &'static str, drains: Vec<Vec<Batch>>) -> MemorySource {
    MemorySource { drains: drains.into(), kind }
}

/// The events in the file sink: (event, kind, host).
fn events(dir: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir.join("findings.jsonl")).unwrap_or_default();
    text.lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |key: &str| event[key].as_str().unwrap().to_string();
            (field("event"), field("kind"), field("host"))
        })
        .collect()
}

#[test]
fn flows_become_one_emitted_finding_that_a_restart_does_not_emit_again() {
    let (dir, paths) = workspace("emit", "");
    let (time, _) = clock();
    let flows = [smtp_to("192.0.2.77", NOW - HOUR, 5), smtp_to("192.0.2.25", NOW - HOUR, 5)].concat();
    let mut live = agent(&paths, Access::Create, source("live", vec![vec![batch("gw-in,gw-out", flows)]]), time);
    live.drain().unwrap();
    live.evaluate();
    live.evaluate();
    let opened = [("opened".to_string(), "rogue_server".to_string(), "192.0.2.77".to_string())];
    assert_eq!(events(&dir), opened, "once, and none for the whitelisted MX");
    drop(live);

    let (time, _) = clock();
    let mut restarted = agent(&paths, Access::Create, source("live", Vec::new()), time);
    restarted.evaluate();
    assert_eq!(events(&dir), opened, "a restart continues from what the store says was emitted");
}

#[test]
fn flows_dated_outside_the_plausible_window_are_rejected_and_counted_per_origin() {
    let (_dir, paths) = workspace("bounds", "");
    let (time, _) = clock();
    let flows = [smtp_to("192.0.2.77", NOW + 2 * DAY, 2), smtp_to("192.0.2.77", NOW - 100 * DAY, 1)].concat();
    let mut live =
        agent(&paths, Access::Create, source("collect", vec![vec![batch("192.0.2.9:4739 domain 1", flows)]]), time);
    live.drain().unwrap();
    let metrics = live.metrics.encode();
    assert!(metrics.contains("rogue_records_rejected_total{origin=\"192.0.2.9:4739 domain 1\"} 3"), "{metrics}");
    let sources = live.engine.store.sources().unwrap();
    assert_eq!((sources.len(), sources[0].rejected, sources[0].flows), (1, 3, 0), "counted, nothing stored");
    assert_eq!(live.engine.store.count("service_flows").unwrap(), 0);
}

#[test]
fn a_store_that_cannot_be_written_keeps_its_flows_then_drops_the_oldest_counted() {
    let (_dir, paths) = workspace("unwritable", "store: {max_pending_flows: 5}\n");
    drop(Engine::open(&paths, Access::Create, WhitelistFile::Existing).unwrap());
    let (time, _) = clock();
    let drains = (0..3).map(|i| vec![batch("gw", smtp_to("192.0.2.77", NOW - HOUR + i * HOUR / 4, 3))]).collect();
    // Read-only, every write fails, as on a full disk.
    let mut live = agent(&paths, Access::ReadOnly, source("live", drains), time);
    live.drain().unwrap();
    assert_eq!((live.writer.pending_flows(), live.writer.dropped()), (3, 0), "kept while within the bound");
    live.drain().unwrap();
    assert_eq!((live.writer.pending_flows(), live.writer.dropped()), (3, 3), "the oldest drain's dropped");
    live.drain().unwrap();
    assert_eq!((live.writer.pending_flows(), live.writer.dropped()), (3, 6));
    let metrics = live.metrics.encode();
    assert!(metrics.contains("rogue_store_dropped_flows_total 6"), "{metrics}");
    assert!(metrics.contains("rogue_store_write_errors_total 3"), "{metrics}");
}

/// Flows arriving faster than drains come round wait for the store up to
/// `store.max_pending_flows`, then are written at once; while the store
/// fails, the oldest past the bound are dropped, counted: memory does not
/// grow with the rate.
#[test]
fn flows_past_the_pending_bound_are_written_before_the_drain_or_dropped_counted() {
    let (_dir, paths) = workspace("pending-bound", "store: {max_pending_flows: 5}\n");
    let (time, _) = clock();
    let mut collector = agent(&paths, Access::Create, source("collect", Vec::new()), time);
    let exporter = "192.0.2.9:4739 domain 0";
    collector.take(&batch(exporter, smtp_to("192.0.2.77", NOW - HOUR, 3)));
    assert_eq!((collector.writer.pending_flows(), collector.engine.store.count("service_flows").unwrap()), (3, 0));
    collector.take(&batch(exporter, smtp_to("192.0.2.77", NOW - HOUR / 2, 3)));
    assert_eq!(
        (collector.writer.pending_flows(), collector.engine.store.count("service_flows").unwrap()),
        (0, 6),
        "written at the bound, with no drain"
    );
    drop(collector);

    let (time, _) = clock();
    // Read-only, every write fails, as on a full disk.
    let mut failing = agent(&paths, Access::ReadOnly, source("collect", Vec::new()), time);
    for i in 0..4 {
        failing.take(&batch(&format!("192.0.2.{}:4739 domain 0", i + 10), smtp_to("192.0.2.77", NOW - HOUR, 3)));
    }
    assert_eq!((failing.writer.pending_flows(), failing.writer.dropped()), (3, 9), "the newest kept, the rest counted");
    assert!(failing.metrics.encode().contains("rogue_store_dropped_flows_total 9"));
}

#[test]
fn silent_exporters_are_let_go_and_never_more_than_the_bound_are_held() {
    let (_dir, paths) = workspace("origins", "collect: {max_exporters: 2, exporter_idle_seconds: 60}\n");
    let (time, now) = clock();
    let exporters = (1..=5).map(|i| batch(&format!("192.0.2.{i}:4739 domain 0"), smtp_to("192.0.2.77", NOW - HOUR, 1)));
    let mut collector = agent(&paths, Access::Create, source("collect", vec![exporters.collect()]), time);
    collector.drain().unwrap();
    assert_eq!(collector.writer.origins(), 2, "the longest silent beyond the bound are let go");
    assert_eq!(collector.engine.store.sources().unwrap().len(), 5, "after every flow was stored");
    now.fetch_add(61 * NANOS_PER_SEC, Ordering::Relaxed);
    collector.drain().unwrap();
    assert_eq!(collector.writer.origins(), 0, "silent for longer than exporter_idle_seconds");
    assert!(collector.metrics.encode().contains("rogue_origins_forgotten_total 5"));
}

#[test]
fn each_sink_writes_its_format_of_the_same_findings() {
    let sinks = "output: {findings: [findings.jsonl, {to: findings.ecs, format: ecs}, {to: findings.cef, format: cef}], \
                 observer: gw-7}\n";
    let (dir, paths) = workspace("formats", "");
    let config = std::fs::read_to_string(dir.join("rogue.yaml"))
        .unwrap()
        .replace("output: {findings: [findings.jsonl]}\n", sinks);
    std::fs::write(dir.join("rogue.yaml"), config).unwrap();
    let (time, _) = clock();
    let flows = smtp_to("192.0.2.77", NOW - HOUR, 5);
    let mut live = agent(&paths, Access::Create, source("live", vec![vec![batch("gw", flows)]]), time);
    live.drain().unwrap();
    live.evaluate();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let own: serde_json::Value = serde_json::from_str(read("findings.jsonl").trim()).unwrap();
    let ecs: serde_json::Value = serde_json::from_str(read("findings.ecs").trim()).unwrap();
    let cef = read("findings.cef");
    assert_eq!(
        (own["event"].as_str(), own["observer"].as_str(), own["kind"].as_str()),
        (Some("opened"), Some("gw-7"), Some("rogue_server"))
    );
    assert_eq!((ecs["event"]["action"].as_str(), ecs["event"]["kind"].as_str()), (Some("opened"), Some("alert")));
    assert_eq!(ecs["rogue"]["id"], own["id"]);
    assert_eq!(cef.lines().count(), 1);
    assert!(cef.starts_with("CEF:0|rogue|rogue|") && cef.contains("|rogue_server|Rogue SMTP server|8|"), "{cef}");
    assert!(cef.contains(" src=192.0.2.77 dvchost=gw-7 ") && cef.contains(" cs3=opened cs3Label=event"), "{cef}");
}

/// Exporters sending queries nobody answers hold at most the flow cache's
/// bound of UDP exchanges between them; what they are made to give up is
/// counted, and what a forgotten exporter still waited for too.
#[test]
fn unanswered_udp_from_many_exporters_stays_within_one_bound_and_is_counted() {
    let extra = "services: {smtp: {}, dns: {}}\ncapture: {flow_cache_entries: 10}\ncollect: {max_exporters: 2}\n";
    let (_dir, paths) = workspace("udp-bound", extra);
    let (time, _) = clock();
    let probes = |exporter: u16| -> Vec<FlowRecord> {
        (0..8)
            .map(|i| {
                let mut flow = crate::flows::tcp_flow("198.51.100.66", 50_000 + i, "192.0.2.53", 53, NOW - HOUR, 1, 60);
                flow.proto = 17;
                flow.sport += exporter * 100;
                flow
            })
            .collect()
    };
    let exporters = (1..=3).map(|i| batch(&format!("192.0.2.{i}:4739 domain 0"), probes(i)));
    let mut collector = agent(&paths, Access::Create, source("collect", vec![exporters.collect()]), time);
    collector.drain().unwrap();
    let metrics = collector.metrics.encode();
    // 24 probes: 8 + 8 fit 10 open (6 given up), then 8 more (8 given up);
    // the first exporter, let go past max_exporters, takes its 8 along.
    assert!(metrics.contains("rogue_udp_exchanges_evicted_total 14"), "{metrics}");
    let open = metric_value(&metrics, "rogue_udp_exchanges_open");
    let unanswered = metric_value(&metrics, "rogue_udp_unanswered_flows_total");
    assert_eq!((open, unanswered), (2.0, 22.0), "every probe open or counted, once: {metrics}");
}

fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}
