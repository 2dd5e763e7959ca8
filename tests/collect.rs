//! `rogue collect`: detection run centrally on flows that sensors export.
//! Two sensors, each exporting its half of the method's scenarios as IPFIX,
//! give one collector the findings that analysing the whole capture gives.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    ipfix::{flow_at, forge_exporters},
    process::{Finished, ROGUE, Running, scrape_metrics},
    require,
};
use serde_json::Value;

/// The scenarios are of 2008, and a collector keeps flows by the wall
/// clock's retention (older ones are rejected, counted): a century's.
const CONFIG: &str =
    "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nmetrics: {listen: null}\nstore: {retention_days: 36500}\n";

/// `capture` cut at `at` (editcap): the packets before, and from it on.
pub(crate) fn halves(capture: &Path, at: &str, dir: &Path) -> (PathBuf, PathBuf) {
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
    start_collector_under(workspace, &[])
}

/// [`start_collector`], run by the command `wrapper` (prlimit, unshare).
fn start_collector_under(workspace: &Workspace, wrapper: &[&str]) -> (Running, u16) {
    let port = free_port();
    let mut collector = match wrapper {
        [program, args @ ..] => {
            let mut command = require(program);
            command.args(args).arg(ROGUE);
            command
        }
        [] => Command::new(ROGUE),
    };
    collector.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{port}"), "--config"]);
    collector.arg(workspace.config());
    let mut collector = Running::spawn(collector);
    collector.wait_for_stderr("collector running", 1);
    (collector, port)
}

pub(crate) use rogue_testkit::free_port;

/// Stops the collector with SIGTERM once what the exporters sent has had
/// time to arrive (its summary then counts it all), checking it exits well.
pub(crate) fn stop_collector(collector: Running) -> Finished {
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
pub(crate) fn by_identity(findings: &[Value]) -> BTreeMap<(String, String, String), Value> {
    findings
        .iter()
        .map(|f| {
            let identity = (f["kind"].as_str().unwrap().into(), f["host"].as_str().unwrap().into(), key(f));
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
    match finding["kind"].as_str().unwrap() {
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
    assert!(stopped.stderr.contains("0 malformed messages, from 2 origins"), "{}", stopped.stderr);
    let origins = stored_smtp_flows_by_origin(&central.dir.join("rogue.db"));
    let names: Vec<&str> = origins.iter().map(|(name, ..)| name.as_str()).collect();
    assert!(
        names.len() == 2 && names[0].ends_with(" domain 1") && names[1].ends_with(" domain 2"),
        "one store source per exporter and observation domain: {origins:?}"
    );
    assert!(origins[0].2 <= origins[1].1, "sensor 1's SMTP flows are all before sensor 2's: {origins:?}");

    let collected = by_identity(&central.json(&["findings", "--format", "jsonl"]));
    assert_eq!(collected.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "the same findings");
    for (identity, details) in &expected {
        assert_eq!(&collected[identity], details, "{identity:?}");
    }
    assert_eq!(expected.len(), 7, "the method's seven findings");
}

/// `rogue flows --write FILE`: the capture's flows as an IPFIX file.
fn write_ipfix(capture: &std::path::Path, file: &std::path::Path) {
    let written = Command::new(ROGUE)
        .args(["-q", "flows", "--format", "none", "--pcap"])
        .arg(capture)
        .arg("--write")
        .arg(file)
        .status()
        .unwrap();
    assert!(written.success());
}

#[test]
fn an_ipfix_file_of_the_capture_gives_the_findings_of_the_capture() {
    let capture = scenario_capture("all", 1);
    let whole = Workspace::new("ipfix-file-whole", CONFIG, &example_whitelist());
    let expected = by_identity(&whole.analyze(&[&capture]));
    let flows = Workspace::new("ipfix-file", CONFIG, &example_whitelist());
    let file = flows.dir.join("scenario.ipfix");
    write_ipfix(&capture, &file);
    let analyzed = flows.rogue(&["analyze", "--format", "jsonl", "--ipfix", file.to_str().unwrap()]);
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
    let findings = central.json(&["findings", "--format", "jsonl"]);
    let mut rogue_servers: Vec<&str> =
        findings.iter().filter(|f| f["kind"] == "rogue_server").map(|f| f["host"].as_str().unwrap()).collect();
    rogue_servers.sort();
    assert_eq!(rogue_servers, ["192.0.2.40", "192.0.2.41", "192.0.2.60", "192.0.2.77"], "{}", stopped.stderr);
    assert!(
        findings.iter().any(|f| f["kind"] == "fanout_burst" && f["host"] == "192.0.2.60" && f["peers"] == 75),
        "{findings:#?}"
    );
}

/// A configuration with the collector's metrics on `port` and `extra` keys.
fn metered_config(port: u16, extra: &str) -> String {
    format!(
        "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nmetrics: {{listen: \"127.0.0.1:{port}\"}}\n\
         detection: {{evaluate_seconds: 1}}\ncapture: {{drain_seconds: 1}}\n{extra}"
    )
}

/// `capture`'s flows sent to the collector on `port` as IPFIX over TCP.
pub(crate) fn export_over_tcp(capture: &Path, port: u16, domain: u32) {
    let mut exporter = Command::new(ROGUE);
    exporter.args(["-q", "flows", "--format", "none", "--pcap"]).arg(capture);
    exporter.args(["--ipfix", &format!("tcp://127.0.0.1:{port}"), "--observation-domain", &domain.to_string()]);
    let exported = rogue_testkit::process::run(exporter);
    assert!(exported.status.success(), "{}", exported.stderr);
}

/// Waits until `condition` holds of the metrics on `port` (10 s at most).
pub(crate) fn wait_for_metrics(
    port: u16,
    what: &str,
    condition: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = scrape_metrics(port);
        if condition(&metrics) {
            return metrics;
        }
        assert!(std::time::Instant::now() < deadline, "{what}; the metrics:\n{metrics:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub(crate) fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

/// One spoofed UDP datagram with a flow dated 2100: before, retention
/// counted back from it and wiped the collector's store. It is rejected,
/// counted per origin in the metrics and the summary, and stored nowhere.
#[test]
fn a_spoofed_datagram_dated_2100_is_rejected_and_wipes_nothing() {
    let metrics_port = free_port();
    let central = Workspace::new(
        "collect-2100",
        &metered_config(metrics_port, "store: {retention_days: 36500}\n"),
        &example_whitelist(),
    );
    let (collector, port) = start_collector(&central);
    export_over_tcp(&scenario_capture("vpn-failure", 1), port, 1);

    let forger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let origin = format!("{} domain 9", forger.local_addr().unwrap());
    let mut encoder = rogue::ipfix::export::Encoder::new(9, rogue::ipfix::export::UDP_MESSAGE_BYTES);
    let year_2100 = 4_102_444_800;
    forger.send_to(&encoder.templates(0), ("127.0.0.1", port)).unwrap();
    for message in encoder.data(&[flow_at(year_2100)], 0) {
        forger.send_to(&message, ("127.0.0.1", port)).unwrap();
    }
    let rejected = format!("rogue_records_rejected_total{{origin=\"{origin}\"}}");
    wait_for_metrics(metrics_port, "the flow of 2100 is rejected", |m| metric(m, &rejected) == 1.0);
    let stopped = stop_collector(collector);
    assert!(stopped.stderr.contains("1 flows rejected as implausibly dated"), "{}", stopped.stderr);
    assert!(stopped.stderr.contains(&format!("{origin}: a flow dated 2100-01-01T00:00:00.000Z")), "{}", stopped.stderr);
    let hosts = central.json(&["hosts", "--format", "jsonl"]);
    let hosts: Vec<(&str, u64)> =
        hosts.iter().map(|h| (h["host"].as_str().unwrap(), h["flows"].as_u64().unwrap())).collect();
    assert!(hosts.contains(&("192.0.2.77", 840)), "the scenario is whole: {hosts:?}");
    assert!(!hosts.iter().any(|(host, _)| *host == "192.0.2.99"), "the forged flow is not stored: {hosts:?}");
}

/// Raises this process's soft limit on open files to its hard limit.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a valid rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// With a low file limit, a few hundred idle IPFIX-over-TCP connections
/// killed the listener for good, silently. Now the connections past the
/// bound are refused (counted, logged), the idle ones are closed after
/// `collect.tcp_idle_seconds`, a connection that ends inside a message is
/// counted, and an exporter that comes afterwards is served.
#[test]
fn idle_connections_past_the_descriptor_limit_do_not_stop_the_tcp_listener() {
    raise_descriptor_limit();
    let metrics_port = free_port();
    let config = metered_config(
        metrics_port,
        "store: {retention_days: 36500}\ncollect: {tcp_idle_seconds: 3, max_tcp_connections: 100000}\n",
    );
    let central = Workspace::new("collect-descriptors", &config, &example_whitelist());
    let (collector, port) = start_collector_under(&central, &["prlimit", "--nofile=200:200", "--"]);
    let idle: Vec<std::net::TcpStream> =
        (0..400).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() >= 300, "{} connections", idle.len());
    let metrics = wait_for_metrics(metrics_port, "the connections past the bound are refused", |m| {
        metric(m, "rogue_collector_tcp_refused_total") >= 200.0
    });
    let open = metric(&metrics, "rogue_collector_tcp_connections");
    assert!(open <= 136.0, "at most the file limit less a reserve of 64: {open}");
    // The process's own descriptors, as the kernel has them, show how near the limit it runs.
    assert_eq!(metric(&metrics, "process_max_fds"), 200.0);
    let descriptors = metric(&metrics, "process_open_fds");
    assert!(descriptors > open && descriptors <= 200.0, "{descriptors} descriptors, {open} connections");

    wait_for_metrics(metrics_port, "the idle connections are closed", |m| {
        metric(m, "rogue_collector_tcp_idle_closed_total") >= open
    });
    // Half a message, then the connection closes.
    {
        use std::io::Write;
        let mut partial = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let templates = rogue::ipfix::export::Encoder::new(3, 65_000).templates(0);
        partial.write_all(&templates[..templates.len() / 2]).unwrap();
    }
    wait_for_metrics(metrics_port, "a connection that ends inside a message is counted", |m| {
        metric(m, "rogue_collector_tcp_partial_messages_total") == 1.0
    });
    drop(idle);
    export_over_tcp(&scenario_capture("vpn-failure", 1), port, 1);
    let stopped = stop_collector(collector);
    assert!(stopped.stderr.contains("connections are open already"), "the bound is logged: {}", stopped.stderr);
    let hosts = central.json(&["hosts", "--format", "jsonl"]);
    let served = hosts.iter().find(|h| h["host"] == "192.0.2.77").unwrap();
    assert_eq!(served["flows"], 840, "the exporter after them was served");
}

/// Exporters are whoever sends: 20,000 forged sources, half NetFlow v5 and
/// half IPFIX with templates. What the collector keeps of them stays within
/// `collect.max_exporters`, the rest forgotten and counted; every flow is
/// stored.
#[test]
fn what_is_kept_of_exporters_is_bounded_however_many_send() {
    let metrics_port = free_port();
    let config = metered_config(metrics_port, "collect: {max_exporters: 500}\n");
    let central = Workspace::new("collect-exporters", &config, &example_whitelist());
    let (collector, port) = start_collector(&central);
    let sources = 20_000u32;
    // Pauses let the collector keep up (its socket buffer is 8 MiB).
    forge_exporters(port, sources, std::time::Duration::from_millis(20));
    let metrics = wait_for_metrics(metrics_port, "every flow arrives", |m| {
        metric(m, "rogue_collector_flows_total") + metric(m, "rogue_collector_socket_drops_total") >= sources as f64
    });
    assert_eq!(metric(&metrics, "rogue_collector_socket_drops_total"), 0.0);
    let metrics = wait_for_metrics(metrics_port, "origins are let go at the next store write", |m| {
        metric(m, "rogue_origins_forgotten_total") >= (sources - 500) as f64
    });
    assert!(metric(&metrics, "rogue_origins") <= 500.0, "{metrics:#?}");
    assert!(metric(&metrics, "rogue_collector_exporters") <= 500.0, "{metrics:#?}");
    assert!(metric(&metrics, "rogue_collector_exporters_forgotten_total{reason=\"room\"}") >= 9_500.0, "{metrics:#?}");
    stop_collector(collector);
    let hosts = central.json(&["hosts", "--format", "jsonl"]);
    assert_eq!(hosts[0]["flows"], sources, "every exporter's flow is stored");
}

/// The disk under the store fills up: the collector keeps receiving and
/// stays up, says why each write fails, keeps the flows it cannot write up
/// to `store.max_pending_flows`, drops and counts the oldest past it, and
/// writes the rest once there is room again: stored and dropped add up to
/// every flow received.
#[test]
fn a_full_disk_keeps_the_collector_up_and_what_it_drops_is_counted() {
    rogue_testkit::needs_root!("mounting a tmpfs");
    let metrics_port = free_port();
    let placeholder = Workspace::new("collect-full-disk", "", &example_whitelist());
    let disk = placeholder.dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let config = metered_config(
        metrics_port,
        &format!("store: {{path: {}/rogue.db, retention_days: 36500, max_pending_flows: 1000}}\n", disk.display()),
    );
    std::fs::write(placeholder.config(), config).unwrap();
    // The store on a tmpfs of 64 MiB, mounted where only the collector sees it.
    let mount = "mount -t tmpfs -o size=64m tmpfs \"$0\" && exec \"$@\"";
    let disk_arg = disk.to_str().unwrap();
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, disk_arg];
    let (collector, port) = start_collector_under(&placeholder, &wrapper);
    let seen = PathBuf::from(format!("/proc/{}/root{}", collector.id(), disk.display()));
    export_over_tcp(&rogue_testkit::captures_dir().join("zeek-smtp-two-sessions.pcap"), port, 1);
    wait_for_metrics(metrics_port, "the first flows are stored", |m| {
        metric(m, "rogue_store_write_seconds_count") >= 1.0
    });

    let filler = seen.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0u8; 64 << 10]).is_ok() {}
    }
    // Two exporters' flows, in two drains: both kept pending while they fit
    // the bound, the older dropped when they do not.
    export_over_tcp(&scenario_capture("vpn-failure", 1), port, 2);
    wait_for_metrics(metrics_port, "writes fail", |m| metric(m, "rogue_store_write_errors_total") >= 1.0);
    export_over_tcp(&scenario_capture("vpn-failure", 1), port, 3);
    let full = wait_for_metrics(metrics_port, "the oldest flows are dropped", |m| {
        metric(m, "rogue_store_dropped_flows_total") > 0.0
    });
    std::fs::remove_file(&filler).unwrap();
    let writes = metric(&full, "rogue_store_write_seconds_count");
    wait_for_metrics(metrics_port, "the rest is written once there is room", |m| {
        metric(m, "rogue_store_write_seconds_count") > writes
    });
    // Flows still on their way when the disk filled are written, or dropped
    // as they arrive past the bound: once every one received is accounted
    // for, the counts stay.
    let stored = || {
        // In the collector's mount namespace, where the store is (SQLite
        // would resolve a /proc/PID/root path to this one's).
        let sources = require("nsenter")
            .args(["--mount", "--target", &collector.id().to_string(), ROGUE, "store", "sources", "--format"])
            .args(["jsonl", "--db"])
            .arg(disk.join("rogue.db"))
            .output()
            .unwrap();
        let sources = Finished::from(sources);
        assert!(sources.status.success(), "{}", sources.stderr);
        sources.json_lines().iter().map(|s| s["flows"].as_f64().unwrap()).sum::<f64>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (received, dropped, stored) = loop {
        let now = scrape_metrics(metrics_port);
        let (received, dropped) =
            (metric(&now, "rogue_collector_flows_total"), metric(&now, "rogue_store_dropped_flows_total"));
        let stored = stored();
        if stored + dropped == received || std::time::Instant::now() > deadline {
            break (received, dropped, stored);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(dropped > 0.0);
    assert_eq!(stored + dropped, received, "every flow received is stored or counted as dropped");
    let stopped = stop_collector(collector);
    assert!(stopped.stderr.contains("database or disk is full"), "the cause is logged: {}", stopped.stderr);
    assert!(stopped.stderr.contains("dropped the oldest"), "{}", stopped.stderr);
}

/// Services beyond mail from flows a router exported: the IPFIX file of the
/// `services` scenario gives the findings of its capture, each service's
/// (UDP answers are paired from the exported flows as from the capture's).
#[test]
fn an_ipfix_file_gives_the_findings_of_every_service_as_the_capture_does() {
    let config = format!("{CONFIG}services: {{smtp: {{}}, dns: {{}}, ntp: {{}}, dhcp: {{}}, ssh: {{}}, rdp: {{}}}}\n");
    let whitelist = format!("{}- {{address: 192.0.2.53, service: dns}}\n", example_whitelist());
    let capture = scenario_capture("services", 1);
    let whole = Workspace::new("ipfix-services-whole", &config, &whitelist);
    let expected = by_identity(&whole.analyze(&[&capture]));
    assert_eq!(expected.len(), 6, "dns, ntp, two dhcp, ssh and rdp: {expected:#?}");
    let flows = Workspace::new("ipfix-services", &config, &whitelist);
    let file = flows.dir.join("services.ipfix");
    write_ipfix(&capture, &file);
    let analyzed = flows.rogue(&["analyze", "--format", "jsonl", "--ipfix", file.to_str().unwrap()]);
    assert!(analyzed.status.success(), "{}", analyzed.stderr);
    assert_eq!(by_identity(&analyzed.json_lines()), expected);
}
