//! Findings where a SOC looks: rogue's own schema, Elastic Common Schema
//! checked against ECS 8.17's field definitions (tests/ecs), and ArcSight
//! CEF read back by a parser of the spec's grammar, hostile names included.

use std::{collections::HashMap, net::IpAddr};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    dns::{Nsd, scenario_zones},
};
use serde_json::Value;

const CONFIG: &str = "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nmetrics: {listen: null}\n\
    output: {observer: \"sensor|1=a\\\\b\", severity: {volume_spike: critical}}\n";

/// The observer CONFIG names: what CEF escapes in its header and extension.
const OBSERVER: &str = "sensor|1=a\\b";

/// ECS's fields and their types, from the vendored definitions.
fn ecs_fields() -> HashMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ecs/fields-8.17.0.csv");
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader.records().map(Result::unwrap).map(|row| (row[3].to_string(), row[4].to_string())).collect()
}

/// ECS's allowed values: (field, value) -> the event types a category expects.
fn ecs_allowed() -> HashMap<(String, String), Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ecs/allowed-values-8.17.0.csv");
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .map(Result::unwrap)
        .map(|row| ((row[0].to_string(), row[1].to_string()), row[2].split_whitespace().map(String::from).collect()))
        .collect()
}

/// `value`'s leaves by dotted name; arrays of scalars stay one value.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(fields) => {
            for (key, inner) in fields {
                let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&name, inner, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

/// Whether `value` (or each element, for an array) is of ECS type `kind`.
fn of_ecs_type(kind: &str, value: &Value) -> bool {
    if let Value::Array(items) = value {
        return items.iter().all(|item| of_ecs_type(kind, item));
    }
    match kind {
        "keyword" | "constant_keyword" | "wildcard" | "text" | "match_only_text" => value.is_string(),
        "ip" => value.as_str().is_some_and(|text| text.parse::<IpAddr>().is_ok()),
        "long" | "integer" | "short" | "byte" | "unsigned_long" => value.is_i64() || value.is_u64(),
        "float" | "double" | "scaled_float" | "half_float" => value.is_number(),
        "date" => value.as_str().is_some_and(|text| text.parse::<jiff::Timestamp>().is_ok()),
        "boolean" => value.is_boolean(),
        _ => false,
    }
}

#[test]
fn ecs_findings_use_ecs_fields_with_their_types_and_allowed_values_and_carry_rogues_schema() {
    let workspace = Workspace::new("ecs", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("all", 1)]);
    let (fields, allowed) = (ecs_fields(), ecs_allowed());
    let own = workspace.json(&["findings", "--format", "jsonl"]);
    let ecs = workspace.json(&["findings", "--format", "ecs"]);
    assert_eq!(ecs.len(), 7);
    for (alert, finding) in ecs.iter().zip(&own) {
        assert_eq!(&alert["rogue"], finding, "rogue's schema under `rogue`");
        let mut leaves = Vec::new();
        flatten("", alert, &mut leaves);
        for (name, value) in leaves.iter().filter(|(name, _)| !name.starts_with("rogue.")) {
            let kind = fields.get(name).unwrap_or_else(|| panic!("{name} is not an ECS 8.17 field"));
            assert!(of_ecs_type(kind, value), "{name} = {value} is not of ECS type {kind}");
        }
        assert_eq!(alert["ecs"]["version"], "8.17.0");
        let kind = alert["event"]["kind"].as_str().unwrap();
        assert!(allowed.contains_key(&("event.kind".into(), kind.into())), "event.kind {kind}");
        for category in alert["event"]["category"].as_array().unwrap() {
            let expected = &allowed[&("event.category".into(), category.as_str().unwrap().into())];
            for kind in alert["event"]["type"].as_array().unwrap() {
                assert!(expected.contains(&kind.as_str().unwrap().to_string()), "{category} does not expect {kind}");
            }
        }
        assert_eq!(alert["observer"]["name"], OBSERVER);
        assert_eq!(alert["host"]["ip"][0], finding["host"]);
        assert_eq!(alert["message"], finding["message"]);
        let expected_severity = match finding["kind"].as_str().unwrap() {
            "rogue_server" => 8,
            "fanout_burst" => 5,
            _ => 10,
        };
        assert_eq!(alert["event"]["severity"], expected_severity, "{finding}");
    }
    // A fan-out names every server it reached, each with its first contact.
    let burst = own.iter().find(|f| f["kind"] == "fanout_burst").unwrap();
    let servers = burst["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 75);
    let first: Vec<&str> = servers.iter().map(|s| s["first_contact"].as_str().unwrap()).collect();
    assert!(first.windows(2).all(|w| w[0] <= w[1]), "in order of first contact");
    assert_eq!(first[0], burst["at"]);
    assert_eq!(burst["rule"]["peers"], 20);
    assert_eq!(burst["verdict"], "anomaly");
    assert_eq!(burst["schema_version"], 3);
}

/// A CEF line's header fields and extension, read by the spec's grammar:
/// `|` ends a header field unless escaped; in the extension a key is a word
/// before an unescaped `=` at the start or after a space, and its value
/// runs to the space before the next key (`=` in values is escaped).
fn parse_cef(line: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while header.len() < 7 {
        match chars.next().expect("seven header fields") {
            '\\' => field.push(chars.next().unwrap()),
            '|' => header.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    // Each character of the extension with whether it was escaped.
    let mut items: Vec<(char, bool)> = Vec::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let escaped = chars.next().expect("an escape is followed by its character");
            items.push((
                match escaped {
                    'n' => '\n',
                    'r' => '\r',
                    other => other,
                },
                true,
            ));
        } else {
            items.push((c, false));
        }
    }
    let key_at = |i: usize| -> Option<usize> {
        if i > 0 && items[i - 1] != (' ', false) {
            return None;
        }
        let word = items[i..].iter().take_while(|(c, escaped)| !escaped && (c.is_ascii_alphanumeric() || *c == '_'));
        let equals = i + word.count();
        (equals > i && items.get(equals) == Some(&('=', false))).then_some(equals)
    };
    let keys: Vec<(usize, usize)> = (0..items.len()).filter_map(|i| key_at(i).map(|equals| (i, equals))).collect();
    let text = |range: &[(char, bool)]| range.iter().map(|(c, _)| c).collect::<String>();
    let mut values = HashMap::new();
    for (n, &(start, equals)) in keys.iter().enumerate() {
        let end = keys.get(n + 1).map_or(items.len(), |&(next, _)| next - 1);
        values.insert(text(&items[start..equals]), text(&items[equals + 1..end]));
    }
    (header, values)
}

#[test]
fn cef_lines_escape_hostile_names_and_read_back_as_the_findings() {
    // The rogue host's PTR name holds what CEF must escape: | = \ and a bell.
    let hostile = "smtp\\|gw\\=x\\\\y\\007z.example.org.";
    let zones: Vec<(&str, String)> = scenario_zones()
        .into_iter()
        .map(|(zone, text)| (zone, text.replace("77 IN PTR smtp-gw.example.org.", &format!("77 IN PTR {hostile}"))))
        .collect();
    let nsd = Nsd::start("cef", &zones);
    let config = format!("{CONFIG}dns: {{servers: [\"{}\"], timeout_ms: 2000, mx_domains: [example.org]}}\n", nsd.addr);
    let workspace = Workspace::with_dns("cef", &config, &example_whitelist());
    workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    let own = workspace.json(&["findings", "--format", "jsonl"]);
    let cef = workspace.rogue(&["findings", "--format", "cef"]);
    assert!(cef.status.success(), "{}", cef.stderr);
    let lines: Vec<&str> = cef.stdout.lines().collect();
    assert_eq!(lines.len(), own.len());
    for (line, finding) in lines.iter().zip(&own) {
        let (header, extension) = parse_cef(line);
        assert_eq!(header[0], "CEF:0");
        assert_eq!((header[1].as_str(), header[2].as_str()), ("rogue", "rogue"));
        assert_eq!(header[4], finding["kind"].as_str().unwrap());
        assert_eq!(extension["externalId"], finding["id"].to_string());
        assert_eq!(extension["src"], finding["host"].as_str().unwrap());
        assert_eq!(extension["cs1"], finding["status"].as_str().unwrap());
        assert_eq!(extension["cs2"], finding["verdict"].as_str().unwrap());
        assert_eq!(extension["dvchost"], OBSERVER);
        assert_eq!(extension["msg"], finding["message"].as_str().unwrap());
        if let Some(ptr) = finding["characteristics"]["ptr"].as_str() {
            assert_eq!(extension["shost"], ptr, "{line}");
            // rogue prints the name's | = \\ and bell as \\DDD: backslashes, which CEF escapes.
            assert_eq!(ptr, "smtp\\124gw\\061x\\092y\\007z.example.org");
        }
    }
    assert!(own.iter().any(|f| f["characteristics"]["ptr"].is_string()), "a finding with the hostile name");
}

/// The shipped alerting rules: valid, and each alert fires on the series
/// that should fire it and not before its `for` (promtool's own tests).
#[test]
fn the_alerting_rules_check_and_fire_as_their_tests_say() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let checked = rogue_testkit::require("promtool")
        .args(["check", "rules", "packaging/prometheus/rogue-alerts.yml"])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{stdout}{}", String::from_utf8_lossy(&checked.stderr));
    assert!(stdout.contains("SUCCESS: 6 rules found"), "{stdout}");
    let tested = rogue_testkit::require("promtool")
        .args(["test", "rules", "rogue-alerts.test.yml"])
        .current_dir(format!("{root}/tests/prometheus"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(tested.status.success(), "{stdout}{}", String::from_utf8_lossy(&tested.stderr));
    assert!(stdout.contains("SUCCESS"), "{stdout}");
}

/// An HTTP server (Python's http.server; HTTPS with a certificate and key
/// after the directory) that answers each POST with the status in
/// `DIR/status` and writes each request to `DIR/requests` as a JSON line:
/// status, Content-Type, Idempotency-Key, body.
const RECEIVER: &str = r#"
import http.server, json, os, sys
directory = sys.argv[2]
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        status = int(open(os.path.join(directory, "status")).read())
        with open(os.path.join(directory, "requests"), "a") as log:
            log.write(json.dumps({"status": status, "type": self.headers["Content-Type"],
                                  "key": self.headers["Idempotency-Key"], "body": body}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver)
if len(sys.argv) > 3:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// The receiver running, stopped when dropped (also when a test fails).
struct Receiver(std::process::Child);

impl Receiver {
    fn start(port: u16, dir: &std::path::Path, tls: &[&std::path::Path]) -> Receiver {
        let mut command = std::process::Command::new("python3");
        command.args(["-c", RECEIVER, &port.to_string()]).arg(dir).args(tls);
        let receiver = Receiver(command.spawn().unwrap());
        wait_until("the receiver listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        receiver
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn requests(dir: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("requests")).unwrap_or_default();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// Waits (60 s at most) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what} did not happen within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `rogue flows` (started by `rogue`) exporting a scenario's flows as IPFIX
/// over TCP to the collector on `port`.
fn export_scenario(mut rogue: std::process::Command, scenario: &str, port: u16) {
    let exported = rogue
        .args(["-q", "flows", "--format", "none", "--pcap"])
        .arg(scenario_capture(scenario, 1))
        .args(["--ipfix", &format!("tcp://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
}

fn start_collector(workspace: &Workspace, port: u16) -> rogue_testkit::process::Running {
    let mut command = std::process::Command::new(rogue_testkit::process::ROGUE);
    command.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{port}"), "--config"]);
    command.arg(workspace.config());
    let mut collector = rogue_testkit::process::Running::spawn(command);
    collector.wait_for_stderr("collector running", 1);
    collector
}

/// The receiver is down while the findings come, then answers 500, then
/// 200; the collector is restarted in between: each finding arrives once,
/// in order, and the spool ends empty.
#[test]
fn a_webhook_gets_every_finding_exactly_once_through_a_dead_endpoint_500s_and_a_restart() {
    let (hook_port, collect_port, metrics_port) =
        (rogue_testkit::free_port(), rogue_testkit::free_port(), rogue_testkit::free_port());
    let url = format!("http://127.0.0.1:{hook_port}/findings");
    let config = format!(
        "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nstore: {{retention_days: 36500}}\n\
         metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\noutput: {{findings: [\"{url}\"], observer: central}}\n"
    );
    let workspace = Workspace::new("webhook", &config, &example_whitelist());
    let receiver_dir = workspace.dir.join("receiver");
    std::fs::create_dir_all(&receiver_dir).unwrap();

    // Down: the findings of the method's cases go to the spool.
    let collector = start_collector(&workspace, collect_port);
    export_scenario(std::process::Command::new(rogue_testkit::process::ROGUE), "all", collect_port);
    std::thread::sleep(std::time::Duration::from_secs(3));
    collector.signal(libc::SIGTERM);
    let stopped = collector.finish();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(stopped.stderr.contains(&format!("{url} does not take findings")), "{}", stopped.stderr);
    let spool = std::fs::read_dir(workspace.dir.join("spool")).unwrap().next().unwrap().unwrap().path();
    let spooled = std::fs::read_to_string(spool.join("queue")).unwrap();
    assert_eq!(spooled.lines().count(), 7, "the seven findings wait on disk:\n{spooled}");

    // 500s, across a restart.
    std::fs::write(receiver_dir.join("status"), "500").unwrap();
    let receiver = Receiver::start(hook_port, &receiver_dir, &[]);
    let collector = start_collector(&workspace, collect_port);
    wait_until("two requests answered 500", || requests(&receiver_dir).len() >= 2);
    // Then the endpoint takes them.
    std::fs::write(receiver_dir.join("status"), "200").unwrap();
    wait_until("seven findings taken", || requests(&receiver_dir).iter().filter(|r| r["status"] == 200).count() >= 7);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let metrics = rogue_testkit::process::scrape_metrics(metrics_port);
    collector.signal(libc::SIGTERM);
    let stopped = collector.finish();
    drop(receiver);
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let all = requests(&receiver_dir);
    let failed = all.iter().filter(|r| r["status"] == 500).count();
    let taken: Vec<&Value> = all.iter().filter(|r| r["status"] == 200).collect();
    assert!(failed >= 2, "{all:#?}");
    assert_eq!(taken.len(), 7, "each finding once: {taken:#?}");
    let bodies: Vec<Value> = taken.iter().map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap()).collect();
    let spooled: Vec<Value> = spooled.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(bodies, spooled, "in the order they were spooled");
    for (request, body) in taken.iter().zip(&bodies) {
        assert_eq!(request["type"], "application/json");
        assert_eq!((body["event"].as_str(), body["observer"].as_str()), (Some("opened"), Some("central")));
    }
    let keys: std::collections::BTreeSet<&str> = taken.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 7, "an idempotency key each");
    let label = format!("{{sink=\"{url}\"}}");
    assert_eq!(metrics[&format!("rogue_sink_delivered_total{label}")], 7.0);
    assert_eq!(metrics[&format!("rogue_sink_spooled{label}")], 0.0);
    assert_eq!(metrics[&format!("rogue_sink_dropped_total{label}")], 0.0);
    assert!(metrics[&format!("rogue_sink_errors_total{label}")] >= failed as f64 - 1.0);
    assert_eq!(std::fs::metadata(spool.join("queue")).unwrap().len(), 0, "the delivered spool is emptied");
}

/// GET `path` from 127.0.0.1:`port`: the body of a 200 answer, else None.
/// HTTP/1.0, so that the body comes whole, not in chunks.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = rogue_testkit::connect_local(port, std::time::Duration::from_secs(30)).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_string())
}

/// Debian's prometheus-alertmanager on loopback, with no receiver and no
/// cluster; stopped when dropped.
struct AlertmanagerServer {
    child: std::process::Child,
    port: u16,
}

impl AlertmanagerServer {
    fn start(dir: &std::path::Path) -> AlertmanagerServer {
        let port = rogue_testkit::free_port();
        std::fs::write(dir.join("alertmanager.yml"), "route: {receiver: none}\nreceivers: [{name: none}]\n").unwrap();
        let child = rogue_testkit::require("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("alertmanager").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = AlertmanagerServer { child, port };
        wait_until("the Alertmanager is ready", || http_get(port, "/-/ready").is_some());
        server
    }

    /// The alerts it holds active, by their `finding` label.
    fn active(&self) -> std::collections::BTreeMap<String, Value> {
        let body = http_get(self.port, "/api/v2/alerts?active=true&silenced=false&inhibited=false").unwrap_or_default();
        let alerts: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        alerts.into_iter().map(|a| (a["labels"]["finding"].as_str().unwrap_or_default().to_string(), a)).collect()
    }
}

impl Drop for AlertmanagerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every open finding is an alert in a real Alertmanager within an
/// evaluation, with its labels and annotations; acknowledging one and
/// whitelisting a host resolve theirs.
#[test]
fn findings_are_alerts_in_alertmanager_and_resolve_when_acknowledged_or_whitelisted() {
    let workspace = Workspace::new("alertmanager", "internal_networks: [192.0.2.0/24]\n", &example_whitelist());
    let alertmanager = AlertmanagerServer::start(&workspace.dir);
    let config = format!(
        "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nstore: {{retention_days: 36500}}\nmetrics: {{listen: null}}\n\
         detection: {{evaluate_seconds: 1}}\noutput: {{findings: [\"alertmanager+http://127.0.0.1:{}\"], observer: central, \
         report_url: \"https://soc.example.org/rogue/{{host}}/\"}}\n",
        alertmanager.port
    );
    std::fs::write(workspace.config(), config).unwrap();
    let collect_port = rogue_testkit::free_port();
    let collector = start_collector(&workspace, collect_port);
    export_scenario(std::process::Command::new(rogue_testkit::process::ROGUE), "all", collect_port);
    wait_until("seven alerts", || alertmanager.active().len() == 7);

    let findings = workspace.json(&["findings", "--format", "jsonl"]);
    let alerts = alertmanager.active();
    for finding in &findings {
        let alert = &alerts[&finding["id"].to_string()];
        let labels = &alert["labels"];
        assert_eq!(labels["kind"], finding["kind"]);
        assert_eq!(labels["host"], finding["host"]);
        assert_eq!((labels["service"].as_str(), labels["observer"].as_str()), (Some("smtp"), Some("central")));
        assert_eq!(labels["severity"], finding["severity"]);
        assert_eq!(alert["annotations"]["description"], finding["message"]);
        let report = format!("https://soc.example.org/rogue/{}/", finding["host"].as_str().unwrap());
        assert_eq!(alert["annotations"]["report"], report.as_str());
        assert_eq!(alert["status"]["state"], "active");
    }

    let burst = findings.iter().find(|f| f["kind"] == "fanout_burst").unwrap()["id"].to_string();
    let acked = workspace.rogue(&["findings", "ack", &burst, "--by", "carol"]);
    assert!(acked.status.success(), "{}", acked.stderr);
    wait_until("the acknowledged burst resolved", || !alertmanager.active().contains_key(&burst));
    let accepted = workspace.rogue(&["whitelist", "accept", "192.0.2.77", "--by", "alice", "--reason", "ticket 12"]);
    assert!(accepted.status.success(), "{}", accepted.stderr);
    collector.signal(libc::SIGHUP);
    wait_until("the whitelisted host's alert resolved", || {
        alertmanager.active().values().all(|a| a["labels"]["host"] != "192.0.2.77")
    });
    let left = alertmanager.active();
    assert_eq!(left.len(), 5, "{left:#?}");
    collector.signal(libc::SIGTERM);
    assert!(collector.finish().status.success());
}

/// `text` as a URL query value: everything but unreserved characters
/// percent-encoded.
fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel of the shipped Grafana dashboard is valid PromQL that returns
/// data: Debian's Prometheus scrapes a running agent (metering a veth with
/// traffic) and a running collector (fed a capture's flows), and evaluates
/// each panel's expression through its HTTP API.
#[test]
fn every_dashboard_panel_is_valid_promql_with_data_from_a_real_prometheus() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    use rogue_testkit::netns::{Netns, in_netns, veth};
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/grafana/rogue-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let (gateway, peer) = (Netns::new("grafana-gw"), Netns::new("grafana-peer"));
    veth(&gateway, "gw0", &peer, "peer0");
    let (agent_metrics, collect_metrics, collect_port, prometheus_port) = (19925, 19926, 14739, 19090);
    let agent_workspace = Workspace::new(
        "grafana-agent",
        &format!(
            "internal_networks: [192.0.2.0/24]\ninterfaces: [gw0]\nmetrics: {{listen: \"127.0.0.1:{agent_metrics}\"}}\n\
             capture: {{drain_seconds: 1}}\ndetection: {{evaluate_seconds: 1}}\n"
        ),
        &example_whitelist(),
    );
    let collect_workspace = Workspace::new(
        "grafana-collect",
        &format!(
            "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nstore: {{retention_days: 36500}}\n\
             metrics: {{listen: \"127.0.0.1:{collect_metrics}\"}}\ndetection: {{evaluate_seconds: 1}}\n"
        ),
        &example_whitelist(),
    );
    let mut agent = gateway.command(rogue_testkit::process::ROGUE);
    agent.args(["agent", "--no-dns", "--config"]).arg(agent_workspace.config());
    let mut agent = rogue_testkit::process::Running::spawn(agent);
    agent.wait_for_stderr("agent running", 1);
    let mut collector = gateway.command(rogue_testkit::process::ROGUE);
    collector.args(["collect", "--no-dns", "--listen", &format!("127.0.0.1:{collect_port}"), "--config"]);
    collector.arg(collect_workspace.config());
    let mut collector = rogue_testkit::process::Running::spawn(collector);
    collector.wait_for_stderr("collector running", 1);

    let prometheus_dir = agent_workspace.dir.join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    std::fs::write(
        prometheus_dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  \
             - job_name: rogue-agent\n    static_configs: [{{targets: [\"127.0.0.1:{agent_metrics}\"]}}]\n  \
             - job_name: rogue-collect\n    static_configs: [{{targets: [\"127.0.0.1:{collect_metrics}\"]}}]\n"
        ),
    )
    .unwrap();
    let mut prometheus = gateway
        .command("prometheus")
        .arg(format!("--config.file={}", prometheus_dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", prometheus_dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Traffic through the meter, and a capture's flows into the collector.
    use rogue_testkit::packets::{ethernet, ipv4, udp};
    let frame =
        ethernet(0x0800, &ipv4([192, 0, 2, 2].into(), [192, 0, 2, 1].into(), 17, &[], 0, &udp(4000, 53, &[1; 100])));
    let sending = in_netns(&peer, move || {
        let ifindex = rogue::capture::host::if_index("peer0").unwrap();
        for _ in 0..20 {
            rogue_testkit::netns::send_raw(ifindex, &frame, 50);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    });
    export_scenario(gateway.command(rogue_testkit::process::ROGUE), "misconfiguration", collect_port);

    sending.join().unwrap();
    let expressions: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_string();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect();
    assert!(expressions.len() >= 14, "{expressions:?}");
    let answers = in_netns(&gateway, move || {
        let query = |expr: &str| -> Option<Value> {
            let body = http_get(prometheus_port, &format!("/api/v1/query?query={}", query_value(expr)))?;
            serde_json::from_str(&body).ok()
        };
        // Until every expression has data (a rate needs two scrapes in its
        // range), 60 s at most; then what each gave.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let answers: Vec<(String, String, Option<Value>)> =
                expressions.iter().map(|(title, expr)| (title.clone(), expr.clone(), query(expr))).collect();
            let empty =
                |a: &Option<Value>| a.as_ref().is_none_or(|a| a["data"]["result"].as_array().is_none_or(Vec::is_empty));
            if answers.iter().all(|(_, _, a)| !empty(a)) || std::time::Instant::now() > deadline {
                return answers;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    })
    .join()
    .unwrap();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    for (title, expr, answer) in &answers {
        let answer = answer.as_ref().unwrap_or_else(|| panic!("{title}: Prometheus did not answer {expr}"));
        assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
        assert!(!answer["data"]["result"].as_array().unwrap().is_empty(), "{title}: {expr} returned no data");
    }
    agent.signal(libc::SIGTERM);
    collector.signal(libc::SIGTERM);
    assert!(agent.finish().status.success());
    assert!(collector.finish().status.success());
}

/// An https webhook whose certificate no system root vouches for: refused
/// (the findings wait), and taken once the sink names the CA file.
#[test]
fn an_https_webhook_is_trusted_through_its_ca_file_and_only_then() {
    let workspace = Workspace::new("webhook-tls", "internal_networks: [192.0.2.0/24]\n", &example_whitelist());
    let dir = &workspace.dir;
    // A CA, and a server certificate it signed for 127.0.0.1 (rustls takes
    // no self-signed leaf: a CA certificate is no end entity).
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rogue-test-ca -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out cert.pem",
    ] {
        let made = rogue_testkit::require("openssl").args(args.split(' ')).current_dir(dir).output().unwrap();
        assert!(made.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&made.stderr));
    }
    let (hook_port, collect_port) = (rogue_testkit::free_port(), rogue_testkit::free_port());
    std::fs::write(dir.join("status"), "200").unwrap();
    let receiver = Receiver::start(hook_port, dir, &[&dir.join("cert.pem"), &dir.join("key.pem")]);
    let url = format!("https://127.0.0.1:{hook_port}/findings");
    let configure = |ca: &str| {
        let config = format!(
            "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nstore: {{retention_days: 36500}}\nmetrics: {{listen: null}}\n\
             detection: {{evaluate_seconds: 1}}\noutput: {{findings: [{{to: \"{url}\", format: ecs{ca}}}]}}\n"
        );
        std::fs::write(workspace.config(), config).unwrap();
    };
    configure("");
    let mut collector = start_collector(&workspace, collect_port);
    export_scenario(std::process::Command::new(rogue_testkit::process::ROGUE), "misconfiguration", collect_port);
    let url_refused = format!("{url} does not take findings");
    collector.wait_for_stderr(&url_refused, 1);
    assert!(requests(dir).is_empty(), "no finding reaches an endpoint rogue does not trust");
    // Trusting the CA: SIGHUP.
    configure(", ca_file: ca.pem");
    collector.signal(libc::SIGHUP);
    wait_until("the two findings taken over TLS", || requests(dir).len() >= 2);
    std::thread::sleep(std::time::Duration::from_secs(2));
    collector.signal(libc::SIGTERM);
    let stopped = collector.finish();
    drop(receiver);
    let refusal = stopped.stderr.lines().find(|l| l.contains(&url_refused)).unwrap_or_default().to_lowercase();
    assert!(refusal.contains("certificate"), "the refusal says why: {refusal}");
    let taken = requests(dir);
    assert_eq!(taken.len(), 2, "{taken:#?}");
    for request in &taken {
        let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["event"]["kind"], "alert", "the sink's format: ECS");
    }
}
