use super::*;
use crate::store::{Decisions, HostNames, Pending, RecordTarget, Retention, Traffic, Upsert};
use crate::{config::Service, flows::FlowRecord, profile::Profiler};
use crate::{
    profile::{FlowSpan, Role},
    time::{NANOS_PER_SEC, Nanos, millis},
};

const SEC: Nanos = NANOS_PER_SEC;
const DAY: Nanos = 86_400 * SEC;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rogue-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn temp_store(name: &str) -> (SqliteStore, PathBuf) {
    let path = temp_dir(name).join("rogue.db");
    (SqliteStore::open(&path, Access::Create).unwrap(), path)
}

fn smtp() -> Vec<Service> {
    vec![Service::named("smtp")]
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16, start: Nanos, bytes: u64) -> FlowRecord {
    crate::flows::tcp_flow(src, sport, dst, dport, start, 5, bytes)
}

fn ingest(store: &mut SqliteStore, flows: &[FlowRecord]) -> i64 {
    ingest_as(store, "capture", "test.pcap", 0, flows)
}

/// Writes `flows` as a new source of `kind`, ingested at `now_ms`.
fn ingest_as(store: &mut SqliteStore, kind: &str, name: &str, now_ms: i64, flows: &[FlowRecord]) -> i64 {
    let mut profiler = Profiler::new(vec!["192.0.2.0/24".parse().unwrap()], smtp(), 600);
    let mut span = FlowSpan::default();
    for flow in flows {
        profiler.add(flow);
        span.add(flow);
    }
    let mut ingest = store.ingest().unwrap();
    let source = ingest.add_source(kind, name, now_ms).unwrap();
    ingest.write(source, &smtp(), &profiler.take()).unwrap();
    ingest.extend_source(source, &span).unwrap();
    ingest.commit().unwrap();
    source
}

/// A store at schema `version`, as a rogue of that version made it, with
/// `rows` inserted; its path.
fn old_store(name: &str, version: usize, rows: &str) -> PathBuf {
    let path = temp_dir(name).join("rogue.db");
    let old = rusqlite::Connection::open(&path).unwrap();
    for migration in &schema::MIGRATIONS[..version] {
        old.execute_batch(migration).unwrap();
    }
    old.pragma_update(None, "user_version", version as i64).unwrap();
    old.execute_batch(rows).unwrap();
    path
}

#[test]
fn a_new_store_is_created_and_migrated_once() {
    let (store, path) = temp_store("new");
    assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
    drop(store);
    let again = SqliteStore::open(&path, Access::ReadWrite).unwrap();
    assert_eq!(again.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
    let journal: String = again.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "readable by its owner only");
}

#[test]
fn a_store_of_schema_version_3_keeps_its_capture_hashes_as_sha256() {
    let path = old_store(
        "v3",
        3,
        "INSERT INTO sources (kind, name, sha256, ingested_ms) VALUES ('capture', 'old.pcap', 'ab12', 7)",
    );
    let mut store = SqliteStore::open(&path, Access::ReadOnly).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
    assert!(store.has_sha256_hashes().unwrap());
    let mut ingest = store.ingest().unwrap();
    assert_eq!(ingest.source_by_hash("sha256:ab12").unwrap().map(|s| s.name), Some("old.pcap".to_string()));
}

#[test]
fn a_store_from_a_newer_rogue_is_refused() {
    let (store, path) = temp_store("newer");
    store.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    let error = SqliteStore::open(&path, Access::ReadOnly).err().unwrap().to_string();
    let known = schema::MIGRATIONS.len();
    assert!(error.contains(&format!("schema version 99 is newer than this rogue knows ({known})")), "{error}");
}

#[test]
fn an_uncommitted_ingest_leaves_nothing() {
    let (mut store, _) = temp_store("rollback");
    {
        let mut ingest = store.ingest().unwrap();
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
fn only_the_commands_that_gather_traffic_create_a_store_and_never_its_directory() {
    let dir = temp_dir("create");
    let missing = dir.join("typo.db");
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let error = SqliteStore::open(&missing, access).err().unwrap().to_string();
        assert!(error.starts_with(&format!("no store at {}: ", missing.display())), "{error}");
        assert!(!missing.exists(), "{access:?} created {}", missing.display());
    }
    let nowhere = dir.join("nonexistent/dir/x.db");
    let error = SqliteStore::open(&nowhere, Access::Create).err().unwrap().to_string();
    assert_eq!(
        error,
        format!(
            "cannot create the store {}: the directory {} does not exist",
            nowhere.display(),
            dir.join("nonexistent/dir").display()
        )
    );
    assert!(!dir.join("nonexistent").exists());

    let error = SqliteStore::open(Path::new("/dev/null"), Access::ReadOnly).err().unwrap().to_string();
    assert_eq!(error, "/dev/null is not a rogue store: it is not a regular file");
    assert!(!Path::new("/dev/null-journal").exists() && !Path::new("/dev/null-wal").exists());
    let error = SqliteStore::open(&dir, Access::ReadWrite).err().unwrap().to_string();
    assert_eq!(error, format!("{} is not a rogue store: it is a directory", dir.display()));
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "not a database, but long enough to have a header of one".repeat(100)).unwrap();
    let error = SqliteStore::open(&notes, Access::ReadOnly).err().unwrap().to_string();
    assert_eq!(error, format!("{} is not a rogue store: it is not an SQLite database", notes.display()));
}

/// Pages of random bytes over a store that was closed cleanly: every
/// command that opens it is told, naming the file, instead of reading what
/// is left.
#[test]
fn a_damaged_store_is_an_error_naming_the_file() {
    let (mut store, path) = temp_store("damaged");
    for day in 0..40 {
        let flows: Vec<FlowRecord> = (0..50)
            .map(|i| {
                flow(&format!("198.51.100.{i}"), 40000 + i, "192.0.2.5", 25, (20_000 + day) * DAY + i as i64 * SEC, 900)
            })
            .collect();
        ingest(&mut store, &flows);
    }
    drop(store);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 64 * 1024, "{size}");
    {
        use std::io::{Seek, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for page in [3, 7, 11] {
            file.seek(std::io::SeekFrom::Start(page * 4096)).unwrap();
            let noise: Vec<u8> = (0..4096)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            file.write_all(&noise).unwrap();
        }
    }
    for access in [Access::ReadOnly, Access::ReadWrite, Access::Create] {
        let error = SqliteStore::open(&path, access).err().unwrap();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{access:?}: {error}");
        assert!(error.to_string().starts_with(&format!("store {} is damaged (", path.display())), "{error}");
    }
}

#[test]
fn a_read_only_store_names_its_file_when_written() {
    let (store, path) = temp_store("read-only");
    drop(store);
    let mut store = SqliteStore::open(&path, Access::ReadOnly).unwrap();
    let error = store.set_finding_state(1, "acknowledged", 0).err().unwrap().to_string();
    assert!(error.starts_with(&format!("store {} cannot be written: ", path.display())), "{error}");
}

/// A store of schema version 4 keeps its traffic, under a source of its own.
#[test]
fn traffic_stored_before_version_5_is_kept_under_a_migrated_source() {
    let path = old_store(
        "v4",
        4,
        "INSERT INTO sources (kind, name, content_hash, first_ms, last_ms, ingested_ms)
             VALUES ('capture', 'old.pcap', 'blake3:00', 1728000000000, 1728000600000, 5);
         INSERT INTO host_bins VALUES ('192.0.2.5', 1728000000, 3, 10, 1000);
         INSERT INTO port_usage VALUES ('192.0.2.5', 1728000000, 0, 6, 25, 3, 10, 1000);
         INSERT INTO share_bins VALUES ('smtp', '192.0.2.5', 1728000000, 3, 10, 1000);
         INSERT INTO data_days VALUES (20000, 3);",
    );
    let store = SqliteStore::open(&path, Access::ReadWrite).unwrap();
    let sources = store.sources().unwrap();
    assert_eq!(sources.len(), 2);
    let migrated = &sources[1];
    assert_eq!((migrated.kind.as_str(), migrated.first_ms), ("migrated", Some(1_728_000_000_000)));
    let host: IpAddr = "192.0.2.5".parse().unwrap();
    assert_eq!(store.share_bytes("smtp", host, 1_728_000_000_000, 1_728_000_600_000).unwrap(), (1000, 1000));
    assert_eq!(
        store.port_usage(host, 1_728_000_000_000, 1_728_000_600_000).unwrap(),
        vec![(1_728_000_000, 0, 6, 25, 3, 10, 1000)]
    );
    assert_eq!(store.covered_days().unwrap(), [20_000].into_iter().collect());
    assert_eq!(store.source_by_hash("blake3:00").unwrap().map(|s| s.name), Some("old.pcap".into()));
}

/// Retention runs on the wall clock: a record cannot move it, and it
/// touches one source's traffic at a time.
#[test]
fn retention_ages_live_traffic_by_the_clock_and_keeps_captures_whole_for_the_retention_after_ingest() {
    let (mut store, _) = temp_store("retention");
    let now = 20_500 * DAY;
    let now_ms = millis(now);
    // A capture of long ago, ingested today, with a packet from the future.
    let old = ingest_as(
        &mut store,
        "capture",
        "2008.pcap",
        now_ms,
        &[
            flow("198.51.100.7", 40000, "192.0.2.5", 25, 13_900 * DAY, 1000),
            flow("198.51.100.7", 40001, "192.0.2.5", 25, now + 3000 * DAY, 1000),
        ],
    );
    // Live traffic of 100 days ago and of today.
    let live = ingest_as(
        &mut store,
        "live",
        "gw-in,gw-out",
        now_ms - 100 * millis(DAY),
        &[
            flow("198.51.100.9", 40000, "192.0.2.6", 25, now - 100 * DAY, 500),
            flow("198.51.100.9", 40001, "192.0.2.6", 25, now - DAY, 500),
        ],
    );
    // A capture ingested 91 days ago.
    let expired = ingest_as(
        &mut store,
        "capture",
        "old-ingest.pcap",
        now_ms - 91 * millis(DAY),
        &[flow("198.51.100.8", 40000, "192.0.2.7", 25, now - 95 * DAY, 700)],
    );

    let pruned = store.apply_retention(90, now_ms).unwrap();
    assert_eq!(pruned.sources.iter().map(|s| s.id).collect::<Vec<_>>(), vec![expired]);
    assert!(store.source(expired).unwrap().is_none());
    let flows_of = |store: &SqliteStore, source: i64| -> u64 {
        store
            .run(|c| c.query_row("SELECT count(*) FROM service_flows WHERE source_id = ?", [source], |r| r.get(0)))
            .unwrap()
    };
    assert_eq!(flows_of(&store, old), 2, "the capture is whole, the far past and the far future alike");
    assert_eq!(flows_of(&store, live), 1, "the live flow of 100 days ago is gone, today's stays");
    assert_eq!(flows_of(&store, expired), 0);
    let live_source = store.source(live).unwrap().unwrap();
    assert_eq!(live_source.first_ms, Some(now_ms - 90 * millis(DAY)), "what the source covers narrows with it");
    let hosts: Vec<String> = store.active_hosts(i64::MIN, i64::MAX).unwrap().iter().map(|h| h.to_string()).collect();
    assert_eq!(hosts, ["192.0.2.5", "192.0.2.6"]);

    // By hand: everything before a time, whatever its source.
    let removed = store.prune_before(millis(now - 2 * DAY)).unwrap();
    assert!(removed >= 4, "{removed}");
    assert_eq!((flows_of(&store, old), flows_of(&store, live)), (1, 1));
    assert!(store.remove_source(old).unwrap() > 0);
    assert_eq!(store.sources().unwrap().len(), 1);
}

/// An evaluation marks as evaluated what it covered and what was written
/// before it began, and nothing else.
#[test]
fn what_no_evaluation_covered_stays_pending() {
    let (mut store, _) = temp_store("pending");
    assert_eq!(store.pending().unwrap(), None);
    let base = 20_000 * DAY;
    let first = ingest(&mut store, &[flow("198.51.100.7", 40000, "192.0.2.5", 25, base, 1000)]);
    let pending = store.pending().unwrap().unwrap();
    assert_eq!((pending.from_ms, pending.to_ms), (millis(base), millis(base + SEC)));
    // Written while the evaluation ran: after its sequence number.
    let later = ingest(&mut store, &[flow("198.51.100.7", 40000, "192.0.2.5", 25, base + 60 * SEC, 1000)]);
    assert_eq!(store.mark_evaluated(Pending { to_ms: millis(base + 70 * SEC), ..pending }).unwrap(), 1);
    assert_eq!(store.source(first).unwrap().unwrap().pending_from_ms, None);
    assert_eq!(store.source(later).unwrap().unwrap().pending_from_ms, Some(millis(base + 60 * SEC)));
    let rest = store.pending().unwrap().unwrap();
    assert_eq!(store.mark_evaluated(rest).unwrap(), 1);
    assert_eq!(store.pending().unwrap(), None);
}

#[test]
fn dns_answers_are_kept_and_an_unanswered_lookup_keeps_the_last_answer() {
    let (mut store, _) = temp_store("names");
    let host: IpAddr = "192.0.2.25".parse().unwrap();
    let key = ("smtp".to_string(), host);
    let answered = HostNames {
        ptr: Some("mx1.example.org".into()),
        fcrdns: Some(true),
        name_match: Some(true),
        record_target: Some(true),
        record_targets: vec![RecordTarget {
            domain: "example.org".into(),
            record: "MX".into(),
            target: "mx1.example.org".into(),
            preference: 10,
        }],
        records_unconfigured: false,
    };
    store.save_host_names(&[(key.clone(), answered.clone())].into_iter().collect(), 1).unwrap();
    assert_eq!(store.host_names().unwrap()[&key], answered);
    store.save_host_names(&[(key.clone(), HostNames::default())].into_iter().collect(), 2).unwrap();
    assert_eq!(store.host_names().unwrap()[&key], answered, "a timeout is not news");
    let gone =
        HostNames { fcrdns: Some(false), name_match: Some(false), record_target: Some(false), ..HostNames::default() };
    store.save_host_names(&[(key.clone(), gone.clone())].into_iter().collect(), 3).unwrap();
    assert_eq!(store.host_names().unwrap()[&key], gone, "\"no such name\" is");
}

/// Another program with the store open holds its shared-memory lock; one
/// that died holding it left a WAL and no lock. Only the second is a store
/// not closed cleanly (checked on open, whatever its size, by writers).
#[test]
fn a_store_whose_last_user_died_is_told_from_one_in_use() {
    use std::io::{BufRead, Write};
    let (store, path) = temp_store("unclean");
    drop(store);
    assert!(closed_cleanly(&path));
    let script = "import os, sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE t (a)'); c.commit()\n\
                  print('holding', flush=True); sys.stdin.readline(); os._exit(0)";
    let mut holder = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (cargo xtask setup installs it)");
    let mut said = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "holding");
    assert!(closed_cleanly(&path), "in use by a living program");
    holder.stdin.take().unwrap().write_all(b"\n").unwrap();
    holder.wait().unwrap();
    assert!(!closed_cleanly(&path), "its user died holding it");
    drop(SqliteStore::open(&path, Access::ReadWrite).unwrap());
    assert!(closed_cleanly(&path), "closed by rogue");
}

/// Port usage written in several writes of one source (an agent's drains)
/// adds up per port in its host's bin, and sources add up when read.
#[test]
fn port_usage_of_successive_writes_and_sources_adds_up_per_port() {
    let (mut store, _) = temp_store("ports-merge");
    let base = 1_728_000_000 * SEC;
    let host: IpAddr = "192.0.2.5".parse().unwrap();
    let profiler = || Profiler::new(vec!["192.0.2.0/24".parse().unwrap()], smtp(), 600);
    let write = |store: &mut SqliteStore, source: Option<i64>, flows: &[FlowRecord]| {
        let mut profiler = profiler();
        flows.iter().for_each(|f| profiler.add(f));
        let mut ingest = store.ingest().unwrap();
        let source = source.unwrap_or_else(|| ingest.add_source("live", "gw", 0).unwrap());
        ingest.write(source, &smtp(), &profiler.take()).unwrap();
        ingest.commit().unwrap();
        source
    };
    let inbound = |sport, bytes| flow("198.51.100.7", sport, "192.0.2.5", 25, base + 10 * SEC, bytes);
    let source =
        write(&mut store, None, &[inbound(40_000, 100), flow("192.0.2.5", 51_000, "203.0.113.9", 443, base, 7)]);
    write(&mut store, Some(source), &[inbound(40_001, 200), inbound(40_002, 300)]);
    write(&mut store, None, &[inbound(40_003, 400)]);
    let bin = 1_728_000_000;
    assert_eq!(
        store.port_usage(host, millis(base), millis(base + 600 * SEC)).unwrap(),
        vec![(bin, 0, 6, 25, 4, 20, 1000), (bin, 1, 6, 51_000, 1, 5, 7)]
    );
    let count: i64 = store.conn.query_row("SELECT count(*) FROM host_bins", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 2, "one row per host, bin and source");
}

/// A store of schema version 7 keeps every port's usage, packed into the
/// rows of its host and bin, and one whose host_bins row went missing too.
#[test]
fn port_usage_stored_before_version_8_is_packed_into_its_host_bins() {
    let path = old_store(
        "v7",
        7,
        "INSERT INTO sources (id, kind, name, ingested_ms) VALUES (1, 'live', 'gw', 0), (2, 'capture', 'a.pcap', 0);
         INSERT INTO host_bins VALUES ('192.0.2.5', 1728000000, 1, 3, 10, 1000), ('192.0.2.5', 1728000000, 2, 1, 1, 60);
         INSERT INTO port_usage VALUES ('192.0.2.5', 1728000000, 1, 6, 52000, 1, 1, 2, 100),
                                       ('192.0.2.5', 1728000000, 0, 6, 25, 1, 2, 8, 900),
                                       ('192.0.2.5', 1728000000, 0, 6, 25, 2, 1, 1, 60),
                                       ('192.0.2.6', 1728000600, 0, 17, 53, 2, 1, 1, 80);",
    );
    let store = SqliteStore::open(&path, Access::ReadWrite).unwrap();
    let usage = |host: &str| store.port_usage(host.parse().unwrap(), 1_728_000_000_000, 1_728_001_200_000).unwrap();
    assert_eq!(usage("192.0.2.5"), vec![(1_728_000_000, 0, 6, 25, 3, 9, 960), (1_728_000_000, 1, 6, 52000, 1, 2, 100)]);
    assert_eq!(usage("192.0.2.6"), vec![(1_728_000_600, 0, 17, 53, 1, 1, 80)]);
    let tables: i64 =
        store.conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'port_usage'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 0);
}
