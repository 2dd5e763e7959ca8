//! The method's three cases, generated deterministically by `rogue
//! generate` over a background of ordinary traffic and its traps, through
//! `rogue analyze`: each case gives exactly its findings, the background
//! none, and the whitelist feedback loop works end to end.

use std::process::Command;

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    process::ROGUE,
};
use serde_json::Value;

const CONFIG: &str = "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\n";

/// (type, host) of each finding, sorted.
fn kinds(findings: &[Value]) -> Vec<(String, String)> {
    let mut kinds: Vec<(String, String)> =
        findings.iter().map(|f| (f["kind"].as_str().unwrap().into(), f["host"].as_str().unwrap().into())).collect();
    kinds.sort();
    kinds
}

fn find<'a>(findings: &'a [Value], kind: &str, host: &str) -> &'a Value {
    findings.iter().find(|f| f["kind"] == kind && f["host"] == host).unwrap_or_else(|| panic!("no {kind} for {host}"))
}

fn analyze(name: &str, scenario: &str) -> (Workspace, Vec<Value>) {
    let workspace = Workspace::new(name, CONFIG, &example_whitelist());
    let findings = workspace.analyze(&[&scenario_capture(scenario, 1)]);
    (workspace, findings)
}

#[test]
fn ordinary_traffic_with_its_traps_gives_no_finding() {
    // Whitelisted MX, port-25 scans under the thresholds, a client whose
    // ephemeral port is 25, a refused SMTP client, mail submission to the
    // relay, IPv6 mail.
    let (workspace, findings) = analyze("background", "background");
    assert_eq!(kinds(&findings), Vec::<(String, String)>::new(), "{findings:#?}");
    // The MX were seen and are whitelisted, not missed.
    let hosts = workspace.json(&["hosts", "--format", "jsonl"]);
    let verdicts: Vec<(&str, &str)> =
        hosts.iter().map(|h| (h["host"].as_str().unwrap(), h["verdict"].as_str().unwrap())).collect();
    assert_eq!(verdicts, [("192.0.2.25", "whitelisted"), ("2001:db8:10::25", "whitelisted")]);
}

#[test]
fn the_vpn_failure_host_is_a_rogue_server_that_behaves_like_a_mail_server() {
    let (_workspace, findings) = analyze("vpn", "vpn-failure");
    assert_eq!(kinds(&findings), [("rogue_server".into(), "192.0.2.77".into())]);
    let finding = &findings[0];
    assert_eq!(finding["roles"], serde_json::json!(["server"]));
    assert_eq!(finding["first_seen"].as_str().unwrap()[..10], *"2008-02-07");
    assert_eq!(finding["last_seen"].as_str().unwrap()[..10], *"2008-02-20");
    assert_eq!(finding["characteristics"]["server_days"], 14, "a server every day of the two weeks");
    assert!(finding["characteristics"]["share"].as_f64().unwrap() >= 0.85);
    assert_eq!(finding["suggest_whitelist"], true);
    assert_eq!(finding["external_servers"], 0);
    let clients = finding["external_clients"].as_u64().unwrap();
    assert!((20..=30).contains(&clients), "the agency's remote sites: {clients}");
    // SMTP flows: the 30 conversations a day on port 25, two flows each (the
    // other mail ports count towards the mail share, not as SMTP).
    assert_eq!(finding["flows"], 14 * 30 * 2, "{finding}");
    assert!(finding["message"].as_str().unwrap().contains("behaves like an SMTP server but is not on the whitelist"));
}

#[test]
fn the_new_mail_servers_jump_from_6_to_14000_flows_a_day() {
    let (_workspace, findings) = analyze("new", "new-mail-servers");
    assert_eq!(
        kinds(&findings),
        [
            ("rogue_server".into(), "192.0.2.40".into()),
            ("rogue_server".into(), "192.0.2.41".into()),
            ("volume_spike".into(), "192.0.2.40".into()),
            ("volume_spike".into(), "192.0.2.41".into()),
        ]
    );
    for host in ["192.0.2.40", "192.0.2.41"] {
        let spike = find(&findings, "volume_spike", host);
        assert_eq!(
            (spike["day"].as_str(), spike["flows"].as_u64(), spike["baseline"].as_u64()),
            (Some("2008-02-23"), Some(14_000), Some(6))
        );
        let server = find(&findings, "rogue_server", host);
        assert_eq!(server["roles"], serde_json::json!(["server", "client"]));
        assert_eq!(server["flows"], 8 * 6 + 2 * 14_000);
        assert_eq!(server["characteristics"]["server_days"], 10);
    }
}

#[test]
fn the_misconfigured_host_opens_smtp_to_75_servers_within_a_minute() {
    let (_workspace, findings) = analyze("misconfiguration", "misconfiguration");
    assert_eq!(
        kinds(&findings),
        [("fanout_burst".into(), "192.0.2.60".into()), ("rogue_server".into(), "192.0.2.60".into())]
    );
    let burst = find(&findings, "fanout_burst", "192.0.2.60");
    assert_eq!(burst["peers"], 75);
    assert_eq!(burst["window_seconds"], 60);
    assert_eq!(burst["at"], "2008-03-10T14:30:00.000Z");
    let rogue = find(&findings, "rogue_server", "192.0.2.60");
    assert_eq!(rogue["roles"], serde_json::json!(["client"]));
    assert_eq!((rogue["external_servers"].as_u64(), rogue["external_clients"].as_u64()), (Some(75), Some(0)));
    assert_eq!(rogue["suggest_whitelist"], false);
    assert_eq!(rogue["characteristics"]["server_days"], 0);
}

#[test]
fn all_three_cases_together_give_exactly_their_findings() {
    let (_workspace, findings) = analyze("all", "all");
    let expected: Vec<(String, String)> = [
        ("fanout_burst", "192.0.2.60"),
        ("rogue_server", "192.0.2.40"),
        ("rogue_server", "192.0.2.41"),
        ("rogue_server", "192.0.2.60"),
        ("rogue_server", "192.0.2.77"),
        ("volume_spike", "192.0.2.40"),
        ("volume_spike", "192.0.2.41"),
    ]
    .iter()
    .map(|(k, h)| (k.to_string(), h.to_string()))
    .collect();
    assert_eq!(kinds(&findings), expected);
}

#[test]
fn analysing_the_same_capture_twice_is_refused() {
    let (workspace, _) = analyze("twice", "misconfiguration");
    let again = workspace.rogue(&["analyze", "--pcap", scenario_capture("misconfiguration", 1).to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        again.stderr.contains("is already in the store") && again.stderr.contains("would count its traffic twice"),
        "{}",
        again.stderr
    );
    // Nothing was counted twice: the finding is as it was.
    let findings = workspace.json(&["findings", "--format", "jsonl"]);
    assert_eq!(find(&findings, "rogue_server", "192.0.2.60")["external_servers"], 75);
}

/// A store from before schema version 4 knows its captures by SHA-256:
/// such a capture is still refused, so an upgrade counts nothing twice.
#[test]
fn a_capture_known_by_its_sha256_from_an_older_store_is_refused() {
    use sha2::{Digest, Sha256};
    let (workspace, _) = analyze("sha256", "misconfiguration");
    let capture = scenario_capture("misconfiguration", 1);
    let sha256: String = Sha256::digest(std::fs::read(&capture).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
    let store = rusqlite::Connection::open(workspace.dir.join("rogue.db")).unwrap();
    let legacy = store.execute("UPDATE sources SET content_hash = ?", [format!("sha256:{sha256}")]).unwrap();
    assert_eq!(legacy, 1, "one capture stored");
    drop(store);
    let again = workspace.rogue(&["analyze", "--pcap", capture.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{}", again.stderr);
    assert!(again.stderr.contains("is already in the store"), "{}", again.stderr);
}

#[test]
fn a_suggestion_accepted_joins_the_whitelist_and_its_host_is_no_longer_a_finding() {
    let (workspace, findings) = analyze("accept", "vpn-failure");
    let id = find(&findings, "rogue_server", "192.0.2.77")["id"].as_u64().unwrap();
    let suggestions = workspace.json(&["whitelist", "suggest", "--format", "jsonl"]);
    assert_eq!(suggestions.len(), 1);
    assert_eq!(suggestions[0]["host"], "192.0.2.77");
    assert!(suggestions[0]["evidence"].as_str().unwrap().contains("acted as an SMTP server on 14 of the"));

    let accepted = workspace.rogue(&[
        "whitelist",
        "accept",
        "192.0.2.77",
        "--by",
        "alice",
        "--reason",
        "the agency's relay, ticket 12",
    ]);
    assert!(accepted.status.success(), "{}", accepted.stderr);
    let whitelist = std::fs::read_to_string(workspace.dir.join("whitelist.yaml")).unwrap();
    assert!(whitelist.starts_with(&example_whitelist()), "the file's comments and entries survive:\n{whitelist}");
    assert!(
        whitelist.contains("- address: 192.0.2.77\n  service: smtp\n")
            && whitelist.contains("verified_by: alice")
            && whitelist.contains("reason: the agency's relay, ticket 12"),
        "{whitelist}"
    );

    let stored = workspace.json(&["findings", "--format", "jsonl"]);
    assert_eq!(stored.iter().find(|f| f["id"] == id).unwrap()["status"], "whitelisted");
    assert!(workspace.json(&["whitelist", "suggest", "--format", "jsonl"]).is_empty());
    // New traffic from the host is no longer a finding.
    let later = workspace.analyze(&[&scenario_capture("vpn-failure", 2)]);
    assert_eq!(kinds(&later), Vec::<(String, String)>::new(), "{later:#?}");
    let hosts = workspace.json(&["hosts", "--format", "jsonl"]);
    assert_eq!(hosts.iter().find(|h| h["host"] == "192.0.2.77").unwrap()["verdict"], "whitelisted");
}

#[test]
fn a_suggestion_rejected_stays_reported_as_a_confirmed_rogue_and_is_not_suggested_again() {
    let (workspace, _) = analyze("reject", "vpn-failure");
    let rejected = workspace.rogue(&["whitelist", "reject", "192.0.2.77", "--by", "bob", "--reason", "no VPN excuse"]);
    assert!(rejected.status.success(), "{}", rejected.stderr);
    assert!(workspace.json(&["whitelist", "suggest", "--format", "jsonl"]).is_empty());
    let later = workspace.analyze(&[&scenario_capture("vpn-failure", 2)]);
    assert_eq!(kinds(&later), [("rogue_server".into(), "192.0.2.77".into())]);
    assert_eq!(later[0]["status"], "confirmed_rogue");
    assert_eq!(later[0]["suggest_whitelist"], false);
    assert!(later[0]["message"].as_str().unwrap().contains("confirmed rogue by bob: no VPN excuse"));
    // A whitelisted host cannot be rejected without removing its entry.
    let mx = workspace.rogue(&["whitelist", "reject", "192.0.2.25", "--by", "bob", "--reason", "x"]);
    assert_eq!(mx.status.code(), Some(1));
    assert!(mx.stderr.contains("is on the whitelist as 192.0.2.25"), "{}", mx.stderr);
}

#[test]
fn calibration_reports_the_mail_share_of_the_whitelisted_servers() {
    let (workspace, _) = analyze("calibrate", "background");
    let calibration = &workspace.json(&["whitelist", "calibrate", "--format", "jsonl"])[0];
    assert_eq!(calibration["hosts"], 2);
    // Independently: the MX's share of bytes on mail ports, from the flows.
    let flows = Command::new(ROGUE)
        .args(["-q", "flows", "--format", "jsonl", "--pcap"])
        .arg(scenario_capture("background", 1))
        .output()
        .unwrap();
    let mail_ports = [25, 465, 587, 110, 995, 143, 993];
    let (mut mail, mut all) = (0u64, 0u64);
    for line in String::from_utf8(flows.stdout).unwrap().lines() {
        let flow: Value = serde_json::from_str(line).unwrap();
        if flow["src"] == "192.0.2.25" || flow["dst"] == "192.0.2.25" {
            let bytes = flow["bytes"].as_u64().unwrap();
            all += bytes;
            if mail_ports.contains(&flow["sport"].as_u64().unwrap())
                || mail_ports.contains(&flow["dport"].as_u64().unwrap())
            {
                mail += bytes;
            }
        }
    }
    let mx = calibration["hosts_shares"].as_array().unwrap().iter().find(|h| h["host"] == "192.0.2.25").unwrap();
    // The store measures the last 14 days; the flows cover the whole capture.
    assert!((mx["share"].as_f64().unwrap() - mail as f64 / all as f64).abs() < 0.01, "{mx} vs {mail}/{all}");
    let min = calibration["min"].as_f64().unwrap();
    assert!(
        min <= calibration["median"].as_f64().unwrap() && calibration["median"].as_f64() <= calibration["max"].as_f64()
    );
    assert_eq!(calibration["threshold_keeping_all"].as_f64().unwrap(), (min * 100.0).floor() / 100.0);
    assert_eq!(calibration["kept_by_configured"], 2);
}

#[test]
fn findings_are_filtered_by_time_and_state_and_acknowledged_by_id() {
    let (workspace, findings) = analyze("ack", "all");
    assert_eq!(findings.len(), 7);
    let burst = find(&findings, "fanout_burst", "192.0.2.60")["id"].as_u64().unwrap().to_string();
    let spike = find(&findings, "volume_spike", "192.0.2.40")["id"].as_u64().unwrap().to_string();
    // Several at once, or none: one unknown id acknowledges nothing.
    let partly = workspace.rogue(&["findings", "ack", &burst, "999", "--by", "carol"]);
    assert_eq!(partly.status.code(), Some(1));
    assert!(partly.stderr.contains("there is no finding 999"), "{}", partly.stderr);
    assert_eq!(workspace.json(&["findings", "--state", "open", "--format", "jsonl"]).len(), 7);
    let acked =
        workspace.rogue(&["findings", "ack", &burst, &spike, "--by", "carol", "--reason", "ticket 7: relay fixed"]);
    assert!(acked.status.success(), "{}", acked.stderr);
    let acknowledged = workspace.json(&["findings", "--state", "acknowledged", "--format", "jsonl"]);
    let mut acknowledged_kinds = kinds(&acknowledged);
    acknowledged_kinds.sort();
    assert_eq!(
        acknowledged_kinds,
        [("fanout_burst".into(), "192.0.2.60".into()), ("volume_spike".into(), "192.0.2.40".into())]
    );
    for finding in &acknowledged {
        assert_eq!(finding["acknowledged"]["by"], "carol");
        assert_eq!(finding["acknowledged"]["reason"], "ticket 7: relay fixed");
    }
    let table = workspace.rogue(&["findings", "--state", "acknowledged", "--format", "table"]).stdout;
    assert!(table.contains("acknowledged by carol: ticket 7: relay fixed"), "{table}");
    assert_eq!(workspace.json(&["findings", "--state", "open", "--format", "jsonl"]).len(), 5);
    // The global options may also come before the command, as on a daemon's command line.
    let options_first = Command::new(ROGUE)
        .arg("--config")
        .arg(workspace.config())
        .args(["--no-dns", "findings", "--state", "open", "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(options_first.status.success(), "{}", String::from_utf8_lossy(&options_first.stderr));
    assert_eq!(String::from_utf8(options_first.stdout).unwrap().lines().count(), 5);
    // Since 2008-03-01: only the misconfiguration's two findings.
    let since = workspace.json(&["findings", "--since", "2008-03-01", "--format", "jsonl"]);
    assert_eq!(
        kinds(&since),
        [("fanout_burst".into(), "192.0.2.60".into()), ("rogue_server".into(), "192.0.2.60".into())]
    );
    let missing = workspace.rogue(&["findings", "ack", "999", "--by", "carol"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stderr.contains("there is no finding 999"), "{}", missing.stderr);
    let bad_time = workspace.rogue(&["findings", "--since", "yesterday-ish"]);
    assert_eq!(bad_time.status.code(), Some(2));
}

#[test]
fn whitelist_entries_are_added_listed_and_removed_by_address() {
    let workspace = Workspace::new("entries", CONFIG, &example_whitelist());
    let added = workspace.rogue(&[
        "whitelist",
        "add",
        "198.51.100.0/28",
        "--by",
        "carol",
        "--name",
        "partner relays",
        "--reason",
        "contract 12",
        "--on",
        "2026-11-20",
    ]);
    assert!(added.status.success(), "{}", added.stderr);
    let listed = workspace.json(&["whitelist", "list", "--format", "jsonl"]);
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["address"], "198.51.100.0/28");
    assert_eq!(
        (listed[2]["verified_by"].as_str(), listed[2]["verified_on"].as_str()),
        (Some("carol"), Some("2026-11-20"))
    );
    let again = workspace.rogue(&["whitelist", "add", "198.51.100.0/28", "--by", "carol"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stderr.contains("198.51.100.0/28 is already whitelisted for smtp"), "{}", again.stderr);
    let bad = workspace.rogue(&["whitelist", "add", "198.51.100.1/28", "--by", "carol"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stderr.contains("has host bits set; did you mean 198.51.100.0/28?"), "{}", bad.stderr);

    let removed = workspace.rogue(&["whitelist", "remove", "198.51.100.0/28"]);
    assert!(removed.status.success(), "{}", removed.stderr);
    let text = std::fs::read_to_string(workspace.dir.join("whitelist.yaml")).unwrap();
    assert_eq!(text, example_whitelist(), "back to the file as it was, comments and all");
    let absent = workspace.rogue(&["whitelist", "remove", "198.51.100.0/28"]);
    assert_eq!(absent.status.code(), Some(1));
}

/// The method beyond mail: with every service rogue ships turned on, the
/// `services` scenario's rogues are found, each with its service, and none
/// of its traps (scans nobody answers, a resolver asking from port 53, NTP
/// and SSH clients, SYN scans) nor its known servers. The same capture with
/// SMTP alone gives nothing: the other services are configuration.
#[test]
fn rogue_dns_ntp_dhcp_ssh_and_rdp_servers_are_found_each_with_its_service() {
    // A look-back longer than the capture, so each finding counts every flow.
    let config = format!(
        "{CONFIG}services: {{smtp: {{}}, dns: {{}}, ntp: {{}}, dhcp: {{}}, ssh: {{}}, rdp: {{}}}}\n\
         detection: {{history_days: 60}}\n"
    );
    let whitelist = format!(
        "{}- {{address: 192.0.2.53, service: dns, name: ns1.example.org}}\n\
         - {{address: 192.0.2.67, service: dhcp, name: dhcp1.example.org}}\n",
        example_whitelist()
    );
    let workspace = Workspace::new("services", &config, &whitelist);
    let capture = scenario_capture("services", 1);
    let analyzed = workspace.rogue(&["analyze", "--format", "jsonl", "--pcap", capture.to_str().unwrap()]);
    assert!(analyzed.status.success(), "{}", analyzed.stderr);
    let findings = analyzed.json_lines();
    // The scans of ports 53 and 123, 10 each a day for 29 days, nobody answered.
    assert!(
        analyzed.stderr.contains("; 580 UDP flows to service ports never answered (no server made of them)"),
        "{}",
        analyzed.stderr
    );
    let mut found: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["service"].as_str().unwrap(), f["host"].as_str().unwrap()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("rogue_server", "dhcp", "192.0.2.68"),
            ("rogue_server", "dns", "192.0.2.54"),
            ("rogue_server", "ntp", "192.0.2.123"),
            ("rogue_server", "rdp", "192.0.2.33"),
            ("rogue_server", "ssh", "192.0.2.53"),
        ],
        "{findings:#?}"
    );
    let finding = |service: &str| findings.iter().find(|f| f["service"] == service).unwrap();
    // Every exchange answered, and only those: 40 queries a day from day 10
    // (2008-02-11) to day 38, two flows each.
    let dns = finding("dns");
    assert_eq!((dns["flows"].as_u64(), dns["roles"].clone()), (Some(29 * 40 * 2), serde_json::json!(["server"])));
    assert_eq!(dns["first_seen"].as_str().unwrap()[..10], *"2008-02-11");
    // NTP: 40 client exchanges and 10 symmetric ones a day.
    assert_eq!(finding("ntp")["flows"], 29 * 50 * 2);
    // DHCP: the rogue's offers to the broadcast address, 5 a day.
    let dhcp = finding("dhcp");
    assert_eq!((dhcp["flows"].as_u64(), dhcp["rule"]["peers"].as_str()), (Some(29 * 5), Some("any")));
    // A host can be a finding for one service and whitelisted for another.
    let hosts = workspace.json(&["hosts", "--format", "jsonl"]);
    let standing = |service: &str, host: &str| {
        hosts
            .iter()
            .find(|h| h["service"] == service && h["host"] == host)
            .map(|h| h["verdict"].as_str().unwrap().to_string())
    };
    assert_eq!(standing("dns", "192.0.2.53").as_deref(), Some("whitelisted"));
    assert_eq!(standing("ssh", "192.0.2.53").as_deref(), Some("rogue"));
    assert_eq!(standing("dns", "192.0.2.55"), None, "asking from port 53 makes a client, which dns does not record");

    let smtp_only = Workspace::new("services-smtp", CONFIG, &example_whitelist());
    assert_eq!(kinds(&smtp_only.analyze(&[&capture])), Vec::<(String, String)>::new());
}
