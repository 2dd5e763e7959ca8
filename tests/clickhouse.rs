//! The ClickHouse store (`store.backend: clickhouse`) against a real server,
//! Debian's clickhouse-server 18.16, on loopback: the scenarios and the
//! shared captures give exactly the findings SQLite gives; analysts'
//! actions read back the same; and a collector writing through an outage,
//! killed in the middle of it, loses nothing and doubles nothing.

use std::path::{Path, PathBuf};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    captures,
    clickhouse::{ClickHouse, ZooKeeper},
    process::{ROGUE, Running},
};
use serde_json::Value;

use crate::collect::{by_identity, export_over_tcp, free_port, halves, metric, stop_collector, wait_for_metrics};

/// The internal networks of every test here: the scenarios' and the shared
/// captures' (private and documentation ranges).
const NETWORKS: &str = "[192.0.2.0/24, 2001:db8::/32, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7]";

fn sqlite_config(extra: &str) -> String {
    format!("internal_networks: {NETWORKS}\nstore: {{retention_days: 36500}}\n{extra}")
}

/// A configuration whose store is `database` on `server`, spooling in the
/// workspace; `extra` adds keys.
fn clickhouse_config(server: &ClickHouse, database: &str, extra: &str) -> String {
    format!(
        "internal_networks: {NETWORKS}\nstore: {{backend: clickhouse, retention_days: 36500, \
         clickhouse: {{url: \"{}\", database: {database}}}}}\n{extra}",
        server.url()
    )
}

/// What the query commands print, for comparing two stores.
fn queries(workspace: &Workspace) -> Vec<(String, Vec<Value>)> {
    [
        vec!["findings", "--format", "jsonl"],
        vec!["hosts", "--peers", "--format", "jsonl"],
        vec!["whitelist", "suggest", "--format", "jsonl"],
    ]
    .into_iter()
    .map(|args| (args.join(" "), workspace.json(&args)))
    .collect()
}

/// `found` equals `expected`; if not, the first difference, not the whole.
fn assert_same(found: &[Value], expected: &[Value], what: &str) {
    if found == expected {
        return;
    }
    let lines = |values: &[Value]| -> Vec<String> {
        values
            .iter()
            .flat_map(|v| serde_json::to_string_pretty(v).unwrap().lines().map(String::from).collect::<Vec<_>>())
            .collect()
    };
    let (found_lines, expected_lines) = (lines(found), lines(expected));
    let at = found_lines
        .iter()
        .zip(&expected_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(found_lines.len().min(expected_lines.len()));
    let context = |lines: &[String]| lines[at.saturating_sub(8)..(at + 3).min(lines.len())].join("\n");
    panic!(
        "{what}: {} records where {} were expected; the first difference, at line {at}:\n--- found\n{}\n--- expected\n{}",
        found.len(),
        expected.len(),
        context(&found_lines),
        context(&expected_lines)
    );
}

/// Every insert of traffic landed once: each marker row counts one insert
/// (SummingMergeTree adds them up, so a part inserted twice shows as 2).
fn assert_nothing_doubled(server: &ClickHouse, database: &str) {
    for table in ["host_bins", "port_usage", "share_bins", "data_days", "service_flows", "flows"] {
        let twice = server.answer(&format!(
            "SELECT count() FROM (SELECT marker, sum(inserts) AS n FROM {database}.{table} WHERE marker != '' \
             GROUP BY marker, live, day HAVING n != 1)"
        ));
        assert_eq!(twice, "0", "{database}.{table}: inserts landed other than once");
    }
}

#[test]
fn the_scenarios_and_the_shared_captures_give_the_findings_sqlite_gives_in_the_same_detail() {
    let server = ClickHouse::start("parity");
    let mut cases = vec![scenario_capture("all", 1), scenario_capture("services", 1)];
    cases.extend(captures());
    let (mut findings, mut records) = (0, 0);
    for (index, capture) in cases.iter().enumerate() {
        let name = rogue_testkit::stem(capture);
        let database = format!("parity_{index}");
        let sqlite = Workspace::new(&format!("parity-sqlite-{index}"), &sqlite_config(""), &example_whitelist());
        let clickhouse = Workspace::new(
            &format!("parity-ch-{index}"),
            &clickhouse_config(&server, &database, ""),
            &example_whitelist(),
        );
        let expected = sqlite.analyze(&[capture]);
        assert_same(&clickhouse.analyze(&[capture]), &expected, &format!("{name}: the findings of analyze"));
        for ((command, expected), (_, found)) in queries(&sqlite).into_iter().zip(queries(&clickhouse)) {
            assert_same(&found, &expected, &format!("{name}: rogue {command}"));
            records += expected.len();
        }
        findings += expected.len();
        assert_nothing_doubled(&server, &database);
    }
    eprintln!("{} captures: {findings} findings and {records} records of the query commands the same", cases.len());
    // The scenarios' 8 and the services' 8 findings, and those of the shared captures' SMTP hosts.
    assert!(findings >= 18 && records >= 40, "{findings} findings, {records} records compared");
}

/// Removes the wall-clock times of analysts' actions, which differ between
/// two runs; everything else must not.
fn without_action_times(mut values: Vec<Value>) -> Vec<Value> {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("at");
                map.remove("verified_on");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    values.iter_mut().for_each(strip);
    values
}

#[test]
fn acknowledging_rejecting_and_accepting_read_back_the_same_on_both_backends() {
    let server = ClickHouse::start("actions");
    let capture = scenario_capture("all", 1);
    let sqlite = Workspace::new("actions-sqlite", &sqlite_config(""), &example_whitelist());
    // As a user with a password (the test server's `rogue`), from a file
    // beside the configuration.
    let as_rogue = clickhouse_config(&server, "actions", "")
        .replace("database: actions}", "database: actions, user: rogue, password_file: password}");
    let clickhouse = Workspace::new("actions-ch", &as_rogue, &example_whitelist());
    let refused = clickhouse.rogue(&["hosts"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stderr.contains("cannot read store.clickhouse.password_file"), "{}", refused.stderr);
    std::fs::write(clickhouse.dir.join("password"), "wrong\n").unwrap();
    let refused = clickhouse.rogue(&["analyze", "--pcap", capture.to_str().unwrap()]);
    assert!(
        refused.stderr.contains(&format!("ClickHouse store {} database actions", server.url()))
            && refused.stderr.contains("Wrong password for user rogue"),
        "{}",
        refused.stderr
    );
    std::fs::write(clickhouse.dir.join("password"), "s3cret\n").unwrap();
    for workspace in [&sqlite, &clickhouse] {
        workspace.analyze(&[&capture]);
        for args in [
            vec!["findings", "ack", "3", "--by", "alice", "--reason", "a test run"],
            vec!["whitelist", "reject", "192.0.2.60", "--by", "bob", "--reason", "spam"],
            vec!["whitelist", "accept", "192.0.2.77", "--by", "carol", "--reason", "the relay"],
            vec!["whitelist", "add", "198.51.100.0/28", "--by", "dan", "--reason", "partner relays"],
            vec!["whitelist", "remove", "198.51.100.0/28", "--by", "dan", "--reason", "contract over"],
            vec!["evaluate"],
        ] {
            let done = workspace.rogue(&args);
            assert!(done.status.success(), "rogue {args:?}: {}", done.stderr);
        }
    }
    // The audit trail, the same on both, newest first.
    let trail = |workspace: &Workspace| -> Vec<Vec<Value>> {
        let keys = ["by", "action", "service", "subject", "finding", "reason", "via"];
        let history = workspace.json(&["whitelist", "history", "--format", "jsonl"]);
        history.iter().map(|a| keys.iter().map(|k| a[*k].clone()).collect()).collect()
    };
    let expected: Vec<Vec<Value>> = [
        ["dan", "whitelist_remove", "", "198.51.100.0/28", "null", "contract over", "cli"],
        ["dan", "whitelist_add", "smtp", "198.51.100.0/28", "null", "partner relays", "cli"],
        ["carol", "accept", "smtp", "192.0.2.77", "null", "the relay", "cli"],
        ["bob", "reject", "smtp", "192.0.2.60", "null", "spam", "cli"],
    ]
    .iter()
    .map(|row| row.iter().map(|v| serde_json::from_str(v).unwrap_or_else(|_| Value::from(*v))).collect())
    .chain(std::iter::once({
        let findings = sqlite.json(&["findings", "--format", "jsonl"]);
        let third = findings.iter().find(|f| f["id"] == 3).unwrap();
        let (service, host) = (third["service"].clone(), third["host"].clone());
        vec!["alice".into(), "acknowledge".into(), service, host, 3.into(), "a test run".into(), "cli".into()]
    }))
    .collect();
    assert_eq!(trail(&sqlite), expected);
    assert_eq!(trail(&clickhouse), expected);
    for ((command, expected), (_, found)) in queries(&sqlite).into_iter().zip(queries(&clickhouse)) {
        assert_same(&without_action_times(found), &without_action_times(expected), &format!("rogue {command}"));
    }
    let findings = clickhouse.json(&["findings", "--format", "jsonl"]);
    let acknowledged = findings.iter().find(|f| f["id"] == 3).unwrap();
    assert_eq!(
        (&acknowledged["status"], &acknowledged["acknowledged"]["by"]),
        (&Value::from("acknowledged"), &Value::from("alice"))
    );
    assert!(findings.iter().all(|f| f["host"] != "192.0.2.77" || f["status"] == "whitelisted"), "{findings:#?}");
}

/// `rogue collect` on `port`, once it says it runs.
fn start_collector(workspace: &Workspace, port: u16) -> Running {
    let mut command = std::process::Command::new(ROGUE);
    command.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{port}"), "--config"]);
    command.arg(workspace.config());
    let mut collector = Running::spawn(command);
    collector.wait_for_stderr("collector running", 1);
    collector
}

/// Waits until the flows sent have all arrived (their count still for a
/// second and a half) and none waits in memory for the store.
fn all_written(metrics_port: u16) -> std::collections::BTreeMap<String, f64> {
    let mut last = -1.0;
    loop {
        let metrics = wait_for_metrics(metrics_port, "every flow received is written", |m| {
            metric(m, "rogue_store_pending_flows") == 0.0
        });
        let received = metric(&metrics, "rogue_collector_flows_total");
        if received == last {
            return metrics;
        }
        last = received;
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
}

fn stored_flows(workspace: &Workspace) -> u64 {
    workspace.json(&["store", "sources", "--format", "jsonl"]).iter().map(|s| s["flows"].as_u64().unwrap()).sum()
}

fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".batch")).count())
}

/// ClickHouse killed while a collector writes: the collector keeps its
/// writes on disk (counted in its metrics). The collector is then killed
/// too (kill -9, between two writes), and a new one started while the
/// server is still away: it collects into the spool too, and once the
/// server is back sends its writes and the dead one's. Every flow is stored
/// once: the store holds what an SQLite collector that saw no outage holds,
/// with the same findings.
#[test]
fn a_collector_through_a_clickhouse_outage_and_a_kill_loses_nothing_and_doubles_nothing() {
    let mut server = ClickHouse::start("outage");
    let (metrics_port, port) = (free_port(), free_port());
    let extra = format!(
        "metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\ncapture: {{drain_seconds: 1}}\n\
         detection: {{evaluate_seconds: 3600}}\n"
    );
    let workspace = Workspace::new("outage", &clickhouse_config(&server, "outage", &extra), &example_whitelist());
    let spool = workspace.dir.join("clickhouse-spool");
    let captures: Vec<PathBuf> =
        ["vpn-failure", "new-mail-servers", "misconfiguration"].iter().map(|s| scenario_capture(s, 1)).collect();

    let collector = start_collector(&workspace, port);
    export_over_tcp(&captures[0], port, 1);
    wait_for_metrics(metrics_port, "the first flows are written", |m| {
        metric(m, "rogue_store_write_seconds_count") >= 1.0 && metric(m, "rogue_store_waiting_writes") == 0.0
    });
    server.kill();
    export_over_tcp(&captures[1], port, 2);
    let down = all_written(metrics_port);
    assert!(metric(&down, "rogue_store_waiting_writes") >= 1.0, "writes wait on disk: {down:#?}");
    let received = metric(&down, "rogue_collector_flows_total");
    assert!(spooled(&spool) >= 1, "the writes are files in {}", spool.display());
    collector.signal(libc::SIGKILL);
    let killed = collector.finish();
    assert!(!killed.status.success());

    // A collector started while the server is still away: it collects into
    // the spool, the dead one's writes adopted beside its own.
    let collector = start_collector(&workspace, port);
    export_over_tcp(&captures[2], port, 3);
    let still_down = all_written(metrics_port);
    assert!(metric(&still_down, "rogue_store_waiting_writes") >= 2.0, "{still_down:#?}");
    server.resume();
    wait_for_metrics(metrics_port, "every write is sent once the server is back", |m| {
        metric(m, "rogue_store_waiting_writes") == 0.0
    });
    assert_eq!(spooled(&spool), 0, "the spool is empty once the server has everything");
    collector.signal(libc::SIGTERM);
    let stopped = collector.finish();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(stopped.stderr.contains("writing into the spool"), "{}", stopped.stderr);
    let last = stopped.stderr.lines().find(|l| l.contains("collector stopped")).unwrap_or_default().to_string();

    // The same three exports into SQLite, without an outage.
    let (oracle_metrics, oracle_port) = (free_port(), free_port());
    let oracle_extra = format!("metrics: {{listen: \"127.0.0.1:{oracle_metrics}\"}}\ncapture: {{drain_seconds: 1}}\n");
    let oracle = Workspace::new("outage-oracle", &sqlite_config(&oracle_extra), &example_whitelist());
    let reference = start_collector(&oracle, oracle_port);
    for (domain, capture) in captures.iter().enumerate() {
        export_over_tcp(capture, oracle_port, domain as u32 + 1);
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    reference.signal(libc::SIGTERM);
    assert!(reference.finish().status.success());

    let expected_flows = stored_flows(&oracle);
    assert_eq!(stored_flows(&workspace), expected_flows, "every flow stored once ({received} before the kill; {last})");
    assert_nothing_doubled(&server, "outage");
    let findings = by_identity(&workspace.json(&["findings", "--format", "jsonl"]));
    let expected = by_identity(&oracle.json(&["findings", "--format", "jsonl"]));
    assert_eq!(findings, expected, "the findings of the collector that saw no outage");
    assert!(!expected.is_empty());
}

/// Two shards (two servers, a cluster in their `remote_servers`, the tables
/// made ON CLUSTER through ZooKeeper): two collectors, one per server, each
/// given half of the scenarios' flows and neither evaluating, then one
/// evaluation: the findings of the whole capture analysed into SQLite. Each
/// host's rows are on one shard, and both shards hold some.
#[test]
fn two_collectors_into_two_shards_give_the_findings_of_one_store() {
    let zookeeper = ZooKeeper::start("shards");
    let shards = ClickHouse::cluster("shards", "rogue_test", 2, &zookeeper);
    let capture = scenario_capture("all", 1);
    let whole = Workspace::new("shards-whole", &sqlite_config(""), &example_whitelist());
    let expected = by_identity(&whole.analyze(&[&capture]));

    let sensor_config = |shard: &ClickHouse, evaluate: bool| {
        let extra = format!("detection: {{evaluate: {evaluate}}}\nmetrics: {{listen: null}}\n");
        let config = clickhouse_config(shard, "sharded", &extra);
        config.replace("database: sharded}", "database: sharded, cluster: rogue_test}")
    };
    let sensors: Vec<Workspace> = shards
        .iter()
        .enumerate()
        .map(|(i, shard)| {
            Workspace::new(&format!("shards-sensor-{i}"), &sensor_config(shard, false), &example_whitelist())
        })
        .collect();
    let (first, second) = halves(&capture, "2008-02-20 00:00:00", &sensors[0].dir);
    for (domain, (sensor, half)) in sensors.iter().zip([&first, &second]).enumerate() {
        let port = free_port();
        let collector = start_collector(sensor, port);
        export_over_tcp(half, port, domain as u32 + 1);
        let stopped = stop_collector(collector);
        assert!(
            stopped.stderr.contains("not evaluating") && stopped.stderr.contains(", 0 findings emitted"),
            "a collector that does not evaluate says so, and emits nothing: {}",
            stopped.stderr
        );
    }
    let evaluator = Workspace::new("shards-evaluator", &sensor_config(&shards[1], true), &example_whitelist());
    let evaluated = evaluator.rogue(&["evaluate", "--format", "jsonl"]);
    assert!(evaluated.status.success(), "{}", evaluated.stderr);
    assert_eq!(by_identity(&evaluated.json_lines()), expected, "the findings of the whole capture");

    let hosts_of = |shard: &ClickHouse| -> std::collections::BTreeSet<String> {
        let answer = shard.answer("SELECT DISTINCT host FROM sharded.host_bins_local WHERE host != '' FORMAT TSV");
        answer.lines().map(String::from).collect()
    };
    let (on_first, on_second) = (hosts_of(&shards[0]), hosts_of(&shards[1]));
    assert!(!on_first.is_empty() && !on_second.is_empty(), "both shards hold hosts: {on_first:?} {on_second:?}");
    assert!(
        on_first.is_disjoint(&on_second),
        "a host's rows are on one shard: {:?}",
        on_first.intersection(&on_second)
    );
    for shard in &shards {
        assert_nothing_doubled(shard, "sharded");
    }
}

/// `text` with each `$__timeFilter(...)` (Grafana's macro) made true.
fn without_grafana_macros(text: &str) -> String {
    let mut rest = text;
    let mut out = String::new();
    while let Some(at) = rest.find("$__timeFilter(") {
        out += &rest[..at];
        let mut depth = 0;
        let end = rest[at..]
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 1 => return Some(at + i + 1),
                    ')' => depth -= 1,
                    _ => {}
                }
                None
            })
            .unwrap();
        out += "1";
        rest = &rest[end..];
    }
    out + rest
}

/// The SQL of the README's "Querying rogue's tables", statement by statement.
fn readme_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = readme.split("#### Querying rogue's tables").nth(1).unwrap();
    let section = section.split("\n### ").next().unwrap();
    section
        .split("```sql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .flat_map(|block| {
            block.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>()
        })
        .collect()
}

/// The README's queries run on ClickHouse 18.16 and answer what rogue
/// answers: on 2008-03-10 (the README's `yesterday()`) the misconfigured
/// host talked SMTP to its 75 servers; a host's top peers are its peers in
/// `rogue hosts --peers`. With `raw_flows`, every flow analyze counted is
/// in `flows`. And `rogue report --all` writes the same files, byte for
/// byte, from either backend.
#[test]
fn the_readmes_queries_and_the_reports_answer_as_rogue_does() {
    let server = ClickHouse::start("readme");
    let capture = scenario_capture("all", 1);
    let sqlite = Workspace::new("readme-sqlite", &sqlite_config(""), &example_whitelist());
    let every_flow =
        clickhouse_config(&server, "rogue", "").replace("database: rogue}", "database: rogue, raw_flows: true}");
    let clickhouse = Workspace::new("readme-ch", &every_flow, &example_whitelist());
    sqlite.analyze(&[&capture]);
    let analyzed = clickhouse.rogue(&["analyze", "--pcap", capture.to_str().unwrap()]);
    assert!(analyzed.status.success(), "{}", analyzed.stderr);
    // "analyzed 1 file: P packets, F flows, ...": every one of them kept.
    let flows = analyzed.stderr.split(" packets, ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap();
    assert_eq!(server.answer("SELECT count() FROM rogue.flows WHERE inserts = 0"), flows, "{}", analyzed.stderr);
    let checked = clickhouse.rogue(&["config", "check"]);
    assert!(
        checked.stderr.ends_with(&format!("store ClickHouse {} database rogue)\n", server.url())),
        "{}",
        checked.stderr
    );

    let queries = readme_queries();
    assert_eq!(queries.len(), 6, "{queries:#?}");
    let answers: Vec<String> = queries
        .iter()
        .map(|query| {
            let query = without_grafana_macros(&query.replace("yesterday()", "toDate('2008-03-10')"));
            server.query(&query).unwrap_or_else(|e| panic!("the README's query fails:\n{query}\n{e}"))
        })
        .collect();
    let fields = |line: &str| line.split('\t').map(String::from).collect::<Vec<_>>();
    let servers: Vec<Vec<String>> = answers[0].lines().map(fields).collect();
    assert!(servers.iter().any(|row| row[0] == "192.0.2.60" && row[1] == "75"), "{servers:?}");

    let hosts = clickhouse.json(&["hosts", "--peers", "--format", "jsonl"]);
    let host = hosts.iter().find(|h| h["host"] == "192.0.2.77").unwrap();
    let peers = host["peers"].as_array().unwrap();
    let top: Vec<Vec<String>> = answers[1].lines().map(fields).collect();
    assert_eq!(top.len(), peers.len().min(20));
    for row in &top {
        // The host's role towards the peer; `hosts` says what the peer is.
        let kind = if row[1] == "server" { "client" } else { "server" };
        let peer = peers.iter().find(|p| p["peer"] == row[0].as_str() && p["kind"] == kind).unwrap();
        assert_eq!((peer["flows"].to_string(), peer["bytes"].to_string()), (row[2].clone(), row[3].clone()), "{row:?}");
    }
    assert!(top.windows(2).all(|w| w[0][3].parse::<u64>().unwrap() >= w[1][3].parse::<u64>().unwrap()));
    for (query, answer) in queries.iter().zip(&answers).skip(2) {
        assert!(!answer.trim().is_empty(), "no answer to the README's\n{query}");
    }

    let reports: Vec<PathBuf> = [&sqlite, &clickhouse]
        .iter()
        .map(|workspace| {
            let out = workspace.dir.join("reports");
            let written = workspace.rogue(&["report", "--all", "--out", out.to_str().unwrap()]);
            assert!(written.status.success(), "{}", written.stderr);
            out
        })
        .collect();
    let files = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(next) = dirs.pop() {
            for entry in std::fs::read_dir(&next).unwrap().flatten() {
                let path = entry.path();
                match path.is_dir() {
                    true => dirs.push(path),
                    false => {
                        let bytes = std::fs::read(&path).unwrap();
                        // The minute each page was made in may differ.
                        let text = String::from_utf8_lossy(&bytes);
                        let bytes = match text.find("generated ") {
                            Some(at) => text[..at].as_bytes().to_vec(),
                            None => bytes,
                        };
                        files.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
                    }
                }
            }
        }
        files.sort();
        files
    };
    let (expected, found) = (files(&reports[0]), files(&reports[1]));
    assert!(expected.len() >= 20, "{} files", expected.len());
    assert_eq!(found.iter().map(|f| &f.0).collect::<Vec<_>>(), expected.iter().map(|f| &f.0).collect::<Vec<_>>());
    for ((path, found), (_, expected)) in found.iter().zip(&expected) {
        assert!(found == expected, "{} differs between the backends", path.display());
    }
}

/// (host, flows) of `rogue hosts`, in its order.
fn host_flows(workspace: &Workspace) -> Vec<(String, u64)> {
    let hosts = workspace.json(&["hosts", "--format", "jsonl"]);
    hosts.iter().map(|h| (h["host"].as_str().unwrap().to_string(), h["flows"].as_u64().unwrap())).collect()
}

fn rogue_ok(workspace: &Workspace, args: &[&str]) {
    let done = workspace.rogue(args);
    assert!(done.status.success(), "rogue {args:?}: {}", done.stderr);
}

/// Removal by hand and retention leave the same traffic on both backends:
/// one capture's source removed (its hosts go, the other's stay); every
/// source's traffic before a time removed; and a collector's live traffic
/// of 60 hours ago dropped by `store.retention_days: 1` while that of an
/// hour ago stays (ClickHouse drops whole days; SQLite deletes by bin).
#[test]
fn removal_and_retention_leave_the_same_traffic_on_both_backends() {
    let server = ClickHouse::start("retention");
    let sqlite = Workspace::new("retention-sqlite", &sqlite_config(""), &example_whitelist());
    let clickhouse = Workspace::new("retention-ch", &clickhouse_config(&server, "retention", ""), &example_whitelist());
    let captures = [scenario_capture("vpn-failure", 1), scenario_capture("misconfiguration", 1)];
    for workspace in [&sqlite, &clickhouse] {
        workspace.analyze(&[&captures[0], &captures[1]]);
        let sources = workspace.json(&["store", "sources", "--format", "jsonl"]);
        let first = sources.iter().find(|s| s["name"].as_str().unwrap().ends_with("vpn-failure-1.pcap")).unwrap();
        rogue_ok(workspace, &["store", "prune", "--source", &first["id"].to_string()]);
    }
    let after_removal = host_flows(&sqlite);
    assert!(!after_removal.iter().any(|(host, _)| host == "192.0.2.77"), "{after_removal:?}");
    assert!(after_removal.iter().any(|(host, _)| host == "192.0.2.60"), "{after_removal:?}");
    assert_eq!(host_flows(&clickhouse), after_removal, "after removing a source");
    for workspace in [&sqlite, &clickhouse] {
        rogue_ok(workspace, &["store", "prune", "--before", "2008-03-01"]);
    }
    let after_prune = host_flows(&sqlite);
    assert_ne!(after_prune, after_removal);
    assert_eq!(host_flows(&clickhouse), after_prune, "after pruning before 2008-03-01");

    // Live traffic: a collector given a flow of 60 hours ago and one of an
    // hour ago, then retention of one day applied.
    let now = jiff::Timestamp::now().as_second();
    let old = rogue::flows::FlowRecord {
        dst: "192.0.2.98".parse().unwrap(),
        ..rogue_testkit::ipfix::flow_at(now - 60 * 3600)
    };
    let recent = rogue_testkit::ipfix::flow_at(now - 3600);
    let live = |name: &str, config: String| {
        let workspace = Workspace::new(name, &config, &example_whitelist());
        let port = free_port();
        let collector = start_collector(&workspace, port);
        let mut encoder = rogue::ipfix::export::Encoder::new(1, rogue::ipfix::export::UDP_MESSAGE_BYTES);
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::Write;
        stream.write_all(&encoder.templates(0)).unwrap();
        for message in encoder.data(&[old.clone(), recent.clone()], 0) {
            stream.write_all(&message).unwrap();
        }
        drop(stream);
        stop_collector(collector);
        workspace
    };
    let sqlite_live = live(
        "retention-live-sqlite",
        sqlite_config("metrics: {listen: null}\n").replace("retention_days: 36500", "retention_days: 3"),
    );
    let clickhouse_live = live(
        "retention-live-ch",
        clickhouse_config(&server, "retention_live", "metrics: {listen: null}\n")
            .replace("retention_days: 36500", "retention_days: 3"),
    );
    for workspace in [&sqlite_live, &clickhouse_live] {
        let hosts: Vec<String> = host_flows(workspace).into_iter().map(|(host, _)| host).collect();
        assert_eq!(hosts, ["192.0.2.98", "192.0.2.99"], "both flows stored");
        let config =
            std::fs::read_to_string(workspace.config()).unwrap().replace("retention_days: 3", "retention_days: 1");
        std::fs::write(workspace.config(), config).unwrap();
        rogue_ok(workspace, &["store", "prune", "--retention"]);
        assert_eq!(host_flows(workspace), [("192.0.2.99".to_string(), 1)], "the old day dropped, the recent kept");
    }
}

/// A write in the spool the server cannot read (rows that do not match
/// their columns, as a damaged disk or an old rogue might leave): the
/// collector that adopts it is refused three times, sets it aside as
/// `.refused`, counts it, and stores what it collects after it.
#[test]
fn a_write_the_server_cannot_read_is_set_aside_counted_and_holds_nothing_up() {
    use rogue::store::clickhouse::spool::{Batch, Chunk, Spool};
    let server = ClickHouse::start("refused");
    let metrics_port = free_port();
    let extra = format!("metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\ncapture: {{drain_seconds: 1}}\n");
    let workspace = Workspace::new("refused", &clickhouse_config(&server, "refused", &extra), &example_whitelist());
    let spool = workspace.dir.join("clickhouse-spool");
    // A collector first, so the database and its tables exist.
    let port = free_port();
    stop_collector(start_collector(&workspace, port));
    {
        let mut dead = Spool::open(&spool, "dead", 1 << 20).unwrap();
        let (id, _) = dead.next_id();
        let chunk = Chunk {
            table: "host_bins".into(),
            columns: "live, day, host".into(),
            live: 1,
            day: 20_000,
            marker: Some(format!("{id}#1.20000.0.0")),
            rows: vec![1, 0x20, 0x4e, 200],
        };
        dead.keep(&Batch { id, chunks: vec![chunk] }).unwrap();
    }
    let collector = start_collector(&workspace, port);
    wait_for_metrics(metrics_port, "the unreadable write is set aside", |m| {
        metric(m, "rogue_store_set_aside_writes_total") == 1.0 && metric(m, "rogue_store_waiting_writes") == 0.0
    });
    let refused: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".refused"))
        .collect();
    assert_eq!(refused.len(), 1, "kept for an operator: {refused:?}");
    export_over_tcp(&scenario_capture("vpn-failure", 1), port, 1);
    let stopped = stop_collector(collector);
    assert!(stopped.stderr.contains("is set aside as"), "{}", stopped.stderr);
    let hosts = host_flows(&workspace);
    assert!(hosts.contains(&("192.0.2.77".to_string(), 840)), "what came after is stored: {hosts:?}");
}
