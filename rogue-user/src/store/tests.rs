use super::*;
use crate::{
    config::{Service, ServiceConfig},
    flows::FlowRecord,
    profile::Profiler,
};

const SEC: Nanos = NANOS_PER_SEC;
const DAY: Nanos = 86_400 * SEC;

fn temp_store(name: &str) -> (Store, PathBuf) {
    let dir = std::env::temp_dir().join(format!("rogue-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("sub/rogue.db");
    (Store::open(&path).unwrap(), path)
}

fn smtp() -> Vec<Service> {
    vec![Service::new("smtp", &ServiceConfig::default())]
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16, start: Nanos, bytes: u64) -> FlowRecord {
    crate::flows::tcp_flow(src, sport, dst, dport, start, 5, bytes)
}

fn ingest(store: &mut Store, flows: &[FlowRecord]) -> i64 {
    let mut profiler = Profiler::new(vec!["192.0.2.0/24".parse().unwrap()], smtp(), 600);
    for flow in flows {
        profiler.add(flow);
    }
    let ingest = store.ingest().unwrap();
    let source = ingest.add_source("capture", "test.pcap", 0).unwrap();
    ingest.write(source, &smtp(), &profiler.take()).unwrap();
    let first = flows.iter().map(|f| f.start).min().unwrap();
    let last = flows.iter().map(|f| f.end).max().unwrap();
    ingest.extend_source(source, first, last, 0, flows.len() as u64).unwrap();
    ingest.commit().unwrap();
    source
}

#[test]
fn a_new_store_is_created_with_its_directory_and_migrated_once() {
    let (store, path) = temp_store("new");
    assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
    drop(store);
    let again = Store::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
    let journal: String = again.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "readable by its owner only");
}

#[test]
fn a_store_of_schema_version_3_keeps_its_capture_hashes_as_sha256() {
    let dir = std::env::temp_dir().join(format!("rogue-store-{}-v3", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rogue.db");
    let old = rusqlite::Connection::open(&path).unwrap();
    for migration in &schema::MIGRATIONS[..3] {
        old.execute_batch(migration).unwrap();
    }
    old.pragma_update(None, "user_version", 3).unwrap();
    old.execute("INSERT INTO sources (kind, name, sha256, ingested_ms) VALUES ('capture', 'old.pcap', 'ab12', 7)", [])
        .unwrap();
    drop(old);
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
    assert!(store.has_sha256_hashes().unwrap());
    let ingest = store.ingest().unwrap();
    assert_eq!(ingest.source_by_hash("sha256:ab12").unwrap().map(|s| s.name), Some("old.pcap".to_string()));
}

#[test]
fn a_store_from_a_newer_rogue_is_refused() {
    let (store, path) = temp_store("newer");
    store.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    let error = Store::open(&path).err().unwrap().to_string();
    let known = schema::MIGRATIONS.len();
    assert!(error.contains(&format!("schema version 99 is newer than this rogue knows ({known})")), "{error}");
}

#[test]
fn an_uncommitted_ingest_leaves_nothing() {
    let (mut store, _) = temp_store("rollback");
    {
        let ingest = store.ingest().unwrap();
        let source = ingest.add_source("capture", "x.pcap", 0).unwrap();
        ingest.set_source_hash(source, "abc").unwrap();
        assert!(ingest.source_by_hash("abc").unwrap().is_some());
    }
    assert_eq!(store.count("sources").unwrap(), 0);
    assert!(store.ingest().unwrap().source_by_hash("abc").unwrap().is_none());
}

#[test]
fn ingests_add_up_and_queries_see_hosts_roles_days_and_shares() {
    let (mut store, _) = temp_store("queries");
    let server = "192.0.2.5";
    let base = 20_000 * DAY;
    ingest(
        &mut store,
        &[
            flow("198.51.100.7", 40000, server, 25, base, 1000),
            flow(server, 25, "198.51.100.7", 40000, base + SEC, 800),
            flow("198.51.100.8", 40001, server, 25, base + DAY, 600),
            flow(server, 51000, "203.0.113.25", 25, base + DAY + 10 * SEC, 500),
            flow(server, 52000, "198.51.100.80", 443, base + DAY, 900),
        ],
    );
    // A second ingest of the same bin adds to it.
    ingest(&mut store, &[flow(server, 52001, "198.51.100.80", 443, base + DAY, 100)]);

    let host: IpAddr = server.parse().unwrap();
    let (from, to) = (millis(base - DAY), millis(base + 2 * DAY));
    let hosts = store.service_hosts("smtp", from, to).unwrap();
    assert_eq!(hosts.len(), 1);
    let activity = &hosts[0];
    assert_eq!(activity.host, host);
    assert_eq!(activity.roles, [Role::Server, Role::Client].into_iter().collect());
    assert_eq!((activity.flows, activity.bytes), (4, 2900));
    assert_eq!((activity.external_clients, activity.external_servers), (2, 1));
    assert_eq!(store.server_days("smtp", host, from, to).unwrap(), 2);
    assert_eq!(store.share_bytes("smtp", host, from, to).unwrap(), (2900, 3900));
    assert_eq!(store.daily_volumes("smtp", host, from, to).unwrap().len(), 2);
    assert_eq!(
        store.opened_to_external_servers("smtp", host, from, to).unwrap(),
        vec![(millis(base + DAY + 10 * SEC), "203.0.113.25".parse().unwrap())]
    );
    let peers = store.peers("smtp", host, from, to).unwrap();
    assert_eq!(peers[0].peer.to_string(), "198.51.100.7");
    assert_eq!((peers[0].role, peers[0].flows, peers[0].bytes), (Role::Server, 2, 1800));
    assert_eq!(store.covered_days().unwrap(), [20_000, 20_001].into_iter().collect());
    let only = store.service_host("smtp", host, from, to).unwrap().unwrap();
    assert_eq!(&only, activity);
    assert!(store.service_host("smtp", "192.0.2.6".parse().unwrap(), from, to).unwrap().is_none());
    let https = store.port_usage(host, from, to).unwrap().into_iter().filter(|u| u.3 == 52000 || u.3 == 52001).count();
    assert_eq!(https, 2);
}

#[test]
fn findings_are_kept_once_per_type_host_and_key_with_their_state() {
    let (mut store, _) = temp_store("findings");
    let host: IpAddr = "192.0.2.5".parse().unwrap();
    let details = serde_json::json!({"flows": 3});
    let (id, first) = store.upsert_finding("rogue_server", "smtp", host, "", 1000, &details, None, 1).unwrap();
    assert_eq!(first, Upsert::New);
    assert_eq!(
        store.upsert_finding("rogue_server", "smtp", host, "", 1000, &details, None, 2).unwrap(),
        (id, Upsert::Unchanged)
    );
    store.set_finding_state(id, "acknowledged", 3).unwrap();
    let more = serde_json::json!({"flows": 9});
    assert_eq!(
        store.upsert_finding("rogue_server", "smtp", host, "", 2000, &more, None, 4).unwrap(),
        (id, Upsert::Changed)
    );
    let stored = store.finding(id).unwrap().unwrap();
    assert_eq!(
        (stored.state.as_str(), stored.time_ms, stored.details["flows"].as_u64()),
        ("acknowledged", 2000, Some(9))
    );
    assert_eq!(store.findings(Some(1500), Some("acknowledged")).unwrap().len(), 1);
    assert_eq!(store.findings(Some(2500), None).unwrap().len(), 0);
    assert_eq!(store.set_host_findings_state("smtp", host, "whitelisted", 5).unwrap(), 1);
    assert_eq!(store.finding(id).unwrap().unwrap().state, "whitelisted");
}

#[test]
fn retention_prunes_bins_and_flows_older_than_the_newest_data() {
    let (mut store, _) = temp_store("prune");
    let base = 20_000 * DAY;
    ingest(&mut store, &[flow("198.51.100.7", 40000, "192.0.2.5", 25, base, 1000)]);
    ingest(&mut store, &[flow("198.51.100.7", 40000, "192.0.2.5", 25, base + 100 * DAY, 1000)]);
    assert_eq!(store.count("service_flows").unwrap(), 2);
    let usage = store.count("port_usage").unwrap();
    let removed = store.prune(90).unwrap();
    assert!(removed >= 3, "{removed}");
    assert_eq!(store.count("service_flows").unwrap(), 1);
    assert_eq!(store.count("host_bins").unwrap(), 1);
    assert_eq!(store.count("port_usage").unwrap(), usage / 2, "the old day's ports go, the new day's stay");
    assert_eq!(store.count("sources").unwrap(), 2, "sources stay, so a capture is never ingested twice");
}
