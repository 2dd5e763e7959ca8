//! `rogue collect`: detection run centrally on flows that sensors export.
//! Two sensors, each exporting its half of the method's scenarios as IPFIX,
//! give one collector the findings that analysing the whole capture gives.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use support::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    process::{Finished, ROGUE, Running},
    require,
};

/// The scenarios are of 2008, and a collector keeps flows by the wall
/// clock's retention (older ones are rejected, counted): a century's.
const CONFIG: &str =
    "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nmetrics: {listen: null}\nstore: {retention_days: 36500}\n";

/// `capture` cut at `at` (editcap): the packets before, and from it on.
fn halves(capture: &Path, at: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let (first, second) = (dir.join("first-half.pcap"), dir.join("second-half.pcap"));
    for (options, out) in [(["-B", at], &first), (["-A", at], &second)] {
        let status = require("editcap").args(options).arg(capture).arg(out).status().unwrap();
        assert!(status.success(), "editcap {options:?}");
    }
    (first, second)
}

/// `rogue collect` on a free loopback port (UDP and TCP), with `workspace`'s
/// configuration and store, once it says it is running.
fn start_collector(workspace: &Workspace) -> (Running, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut collector = Command::new(ROGUE);
    collector.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{port}"), "--config"]);
    collector.arg(workspace.config());
    let mut collector = Running::spawn(collector);
    collector.wait_for_stderr("collector running", 1);
    (collector, port)
}

/// Stops the collector with SIGTERM once what the exporters sent has had
/// time to arrive (its summary then counts it all), checking it exits well.
fn stop_collector(collector: Running) -> Finished {
    std::thread::sleep(std::time::Duration::from_secs(3));
    collector.signal(libc::SIGTERM);
    let stopped = collector.finish();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    stopped
}

/// Where the store's qualifying SMTP flows came from: per source of kind
/// `collect`, its name and the first start and last end of its flows (ms),
/// earliest first.
fn stored_smtp_flows_by_origin(store: &Path) -> Vec<(String, i64, i64)> {
    let store = rusqlite::Connection::open(store).unwrap();
    let mut query = store
        .prepare(
            "SELECT s.name, min(f.start_ms), max(f.end_ms) FROM service_flows f JOIN sources s ON s.id = f.source_id
             WHERE s.kind = 'collect' GROUP BY s.id ORDER BY min(f.start_ms)",
        )
        .unwrap();
    query.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).unwrap().map(Result::unwrap).collect()
}

/// Findings as (type, host, key) with the fields that describe them.
fn by_identity(findings: &[Value]) -> BTreeMap<(String, String, String), Value> {
    findings
        .iter()
        .map(|f| {
            let identity = (f["type"].as_str().unwrap().into(), f["host"].as_str().unwrap().into(), key(f));
            let mut details = f.clone();
            for volatile in ["id", "evidence"] {
                details.as_object_mut().unwrap().remove(volatile);
            }
            (identity, details)
        })
        .collect()
}

/// What tells a finding apart from others of its type and host.
fn key(finding: &Value) -> String {
    match finding["type"].as_str().unwrap() {
        "fanout_burst" => finding["at"].to_string(),
        "volume_spike" => finding["day"].to_string(),
        _ => String::new(),
    }
}

#[test]
fn two_sensors_exporting_halves_give_the_collector_the_findings_of_the_whole_capture() {
    let capture = scenario_capture("all", 1);
    let whole = Workspace::new("collect-whole", CONFIG, &example_whitelist());
    let expected = by_identity(&whole.analyze(&[&capture]));

    let central = Workspace::new("collect-central", CONFIG, &example_whitelist());
    let (collector, port) = start_collector(&central);

    // Two gateways, one before 2008-02-20 and one from then on, exporting
    // over TCP (reliable, so the comparison is of detection, not of loss).
    let (first, second) = halves(&capture, "2008-02-20 00:00:00", &central.dir);
    for (sensor, half) in [(1, &first), (2, &second)] {
        let exported = Command::new(ROGUE)
            .args(["-q", "flows", "--format", "none", "--pcap"])
            .arg(half)
            .args(["--ipfix", &format!("tcp://127.0.0.1:{port}"), "--observation-domain", &sensor.to_string()])
            .output()
            .unwrap();
        assert!(exported.status.success(), "sensor {sensor}: {}", String::from_utf8_lossy(&exported.stderr));
    }
    let stopped = stop_collector(collector);
    assert!(stopped.stderr.contains("from 2 origins, 0 malformed"), "{}", stopped.stderr);
    let origins = stored_smtp_flows_by_origin(&central.dir.join("rogue.db"));
    let names: Vec<&str> = origins.iter().map(|(name, ..)| name.as_str()).collect();
    assert!(
        names.len() == 2 && names[0].ends_with(" domain 1") && names[1].ends_with(" domain 2"),
        "one store source per exporter and observation domain: {origins:?}"
    );
    assert!(origins[0].2 <= origins[1].1, "sensor 1's SMTP flows are all before sensor 2's: {origins:?}");

    let collected = by_identity(&central.json(&["findings", "--format", "json"]));
    assert_eq!(collected.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "the same findings");
    for (identity, details) in &expected {
        assert_eq!(&collected[identity], details, "{identity:?}");
    }
    assert_eq!(expected.len(), 7, "the method's seven findings");
}

#[test]
fn an_ipfix_file_of_the_capture_gives_the_findings_of_the_capture() {
    let capture = scenario_capture("all", 1);
    let whole = Workspace::new("ipfix-file-whole", CONFIG, &example_whitelist());
    let expected = by_identity(&whole.analyze(&[&capture]));
    let flows = Workspace::new("ipfix-file", CONFIG, &example_whitelist());
    let file = flows.dir.join("scenario.ipfix");
    let written = Command::new(ROGUE)
        .args(["-q", "flows", "--format", "none", "--pcap"])
        .arg(&capture)
        .arg("--write")
        .arg(&file)
        .status()
        .unwrap();
    assert!(written.success());
    let analyzed = flows.rogue(&["analyze", "--format", "json", "--ipfix", file.to_str().unwrap()]);
    assert!(analyzed.status.success(), "{}", analyzed.stderr);
    assert_eq!(by_identity(&analyzed.json_lines()), expected);
    let again = flows.rogue(&["analyze", "--ipfix", file.to_str().unwrap()]);
    assert!(again.stderr.contains("is already in the store"), "{}", again.stderr);

    // A file cut inside a message is refused, naming where.
    let cut = flows.dir.join("cut.ipfix");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let refused = flows.rogue(&["analyze", "--ipfix", cut.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stderr.contains("cut.ipfix: the IPFIX message at byte") && refused.stderr.contains("is cut short"),
        "{}",
        refused.stderr
    );
}

/// A router's NetFlow alone: softflowd reads the scenarios' capture and
/// exports NetFlow v9 over UDP to `rogue collect`, as a router would.
#[test]
fn netflow_v9_from_a_router_alone_finds_the_rogue_mail_servers() {
    let capture = scenario_capture("all", 1);
    let central = Workspace::new("collect-router", CONFIG, &example_whitelist());
    let (collector, port) = start_collector(&central);
    let exported = require("softflowd")
        .args(["-d", "-r"])
        .arg(&capture)
        .args(["-v", "9", "-A", "milli", "-n", &format!("127.0.0.1:{port}"), "-c", "none", "-p"])
        .arg(central.dir.join("softflowd.pid"))
        .output()
        .unwrap();
    assert!(exported.status.success(), "softflowd: {}", String::from_utf8_lossy(&exported.stderr));
    let stopped = stop_collector(collector);
    let findings = central.json(&["findings", "--format", "json"]);
    let mut rogue_servers: Vec<&str> =
        findings.iter().filter(|f| f["type"] == "rogue_server").map(|f| f["host"].as_str().unwrap()).collect();
    rogue_servers.sort();
    assert_eq!(rogue_servers, ["192.0.2.40", "192.0.2.41", "192.0.2.60", "192.0.2.77"], "{}", stopped.stderr);
    assert!(
        findings.iter().any(|f| f["type"] == "fanout_burst" && f["host"] == "192.0.2.60" && f["peers"] == 75),
        "{findings:#?}"
    );
}
