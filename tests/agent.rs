//! `rogue agent` live, on a gateway namespace between an internal network
//! with real mail servers (aiosmtpd) and an external one, with real SMTP
//! sessions (swaks): findings in time in every sink, nothing re-emitted
//! across a restart, a whitelist reload without restart, metrics that
//! account for every packet, least privilege, and a million packets a
//! second while it keeps finding.

use std::{
    collections::BTreeMap,
    net::{TcpListener, UdpSocket},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist},
    dns::{Nsd, scenario_zones},
    generator::Generator,
    ipfix::walk,
    mailnet::{MISCONFIGURED, MX, MailNet, ROGUE_SERVER, SENDER, Side, external_servers},
    netns::{Netns, in_netns, veth},
    packets::{ethernet, ipv4, udp},
    process::{Finished, ROGUE, Running, scrape_metrics},
    servicenet::{self, ServiceNet},
};
use serde_json::Value;

const DRAIN_SECONDS: u64 = 1;
const IDLE_SECONDS: u64 = 2;
const EVALUATE_SECONDS: u64 = 3;
/// From the end of a session to its finding: the idle timeout and a second
/// of rounding, a drain, then at most two evaluation intervals.
const FINDING_BUDGET: Duration = Duration::from_secs(IDLE_SECONDS + 1 + DRAIN_SECONDS + 2 * EVALUATE_SECONDS);

/// Where a test's agent sends its findings and metrics.
struct Outputs {
    syslog: SyslogListener,
    metrics_port: u16,
}

fn config(outputs: &Outputs, interfaces: &[&str]) -> String {
    format!(
        "internal_networks: [192.0.2.0/24]\n\
         interfaces: [{}]\n\
         detection: {{evaluate_seconds: {EVALUATE_SECONDS}}}\n\
         capture: {{drain_seconds: {DRAIN_SECONDS}, idle_timeout_seconds: {IDLE_SECONDS}, xdp_mode: native}}\n\
         output: {{findings: [stdout, findings.jsonl, \"syslog://127.0.0.1:{}\"]}}\n\
         metrics: {{listen: \"127.0.0.1:{}\"}}\n\
         export: {{ipfix: [\"file:flows.ipfix\"], observation_domain: 7}}\n",
        interfaces.join(", "),
        outputs.syslog.port,
        outputs.metrics_port
    )
}

impl Outputs {
    /// A syslog listener and a free metrics port on the gateway's loopback.
    fn on(gateway: &Netns) -> Outputs {
        let syslog = SyslogListener::bind_in(gateway);
        let metrics_port = in_netns(gateway, || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
            .join()
            .unwrap();
        Outputs { syslog, metrics_port }
    }
}

/// Starts `rogue agent --no-dns` in `netns` against the workspace's configuration.
fn start_agent(netns: &Netns, workspace: &Workspace) -> Running {
    start_agent_with(netns, workspace, &["--no-dns"])
}

fn start_agent_with(netns: &Netns, workspace: &Workspace, options: &[&str]) -> Running {
    let mut command = netns.command(ROGUE);
    command.arg("agent").args(options).args(["-v", "--config"]).arg(workspace.config());
    let mut agent = Running::spawn(command);
    agent.wait_for_stderr("agent running", 1);
    agent
}

fn stop(agent: Running) -> Finished {
    agent.signal(libc::SIGTERM);
    let finished = agent.finish();
    assert!(finished.status.success(), "the agent failed:\n{}", finished.stderr);
    finished
}

/// The events in the file sink.
fn file_events(workspace: &Workspace) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace.dir.join("findings.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn is(event: &Value, kind: &str, host: &str) -> bool {
    event["kind"] == kind && event["host"] == host
}

/// Waits until the file sink holds an event `accept`s; returns the events.
fn wait_for_event(workspace: &Workspace, within: Duration, accept: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let events = file_events(workspace);
        if events.iter().any(&accept) {
            return events;
        }
        assert!(Instant::now() < deadline, "no such finding within {within:?}; the file sink holds:\n{events:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Syslog over UDP on the gateway's loopback, as a collector would receive it.
struct SyslogListener {
    port: u16,
    messages: Arc<Mutex<Vec<String>>>,
}

impl SyslogListener {
    fn bind_in(netns: &Netns) -> SyslogListener {
        let socket = in_netns(netns, || UdpSocket::bind("127.0.0.1:0").unwrap()).join().unwrap();
        let port = socket.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let received = messages.clone();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_536];
            while let Ok(n) = socket.recv(&mut buffer) {
                received.lock().unwrap().push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        });
        SyslogListener { port, messages }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}

/// The agent's metrics, scraped from inside `netns`.
fn scrape(netns: &Netns, port: u16) -> BTreeMap<String, f64> {
    in_netns(netns, move || scrape_metrics(port)).join().unwrap()
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    *metrics.get(name).unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
}

fn xdp_attached(netns: &Netns, interface: &str) -> bool {
    let output = netns.command("ip").args(["-j", "link", "show", "dev", interface]).output().unwrap();
    let link: Value = serde_json::from_slice(&output.stdout).unwrap();
    link[0].get("xdp").is_some()
}

#[test]
fn real_smtp_sessions_through_the_gateway_become_findings_in_every_sink_in_time() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let net = MailNet::start();
    let outputs = Outputs::on(&net.gateway);
    let workspace = Workspace::new("agent-e2e", &config(&outputs, &["gw-in", "gw-out"]), &example_whitelist());
    let agent = start_agent(&net.gateway, &workspace);
    let rx_at_start = (net.gateway.rx("gw-in").0, net.gateway.rx("gw-out").0);

    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    net.send_mail(Side::External, SENDER, MX);
    net.send_mail(Side::Internal, MX, "203.0.113.1");
    let rogue_sent = Instant::now();
    net.send_mail_to_all(Side::Internal, MISCONFIGURED, &external_servers());
    let burst_sent = Instant::now();

    wait_for_event(&workspace, FINDING_BUDGET, |e| is(e, "rogue_server", ROGUE_SERVER));
    let rogue_after = rogue_sent.elapsed();
    let events = wait_for_event(&workspace, FINDING_BUDGET, |e| is(e, "fanout_burst", MISCONFIGURED));
    let burst_after = burst_sent.elapsed();
    eprintln!("findings after the sessions: rogue_server in {rogue_after:?}, fanout_burst in {burst_after:?}");

    // Emitted as soon as 20 of the sessions had completed; the stored
    // finding goes on to count all 75 (growing counts are not re-emitted).
    let burst = events.iter().find(|e| is(e, "fanout_burst", MISCONFIGURED)).unwrap();
    assert!(burst["peers"].as_u64() >= Some(20), "{burst}");
    assert_eq!(burst["event"], "opened");
    let deadline = Instant::now() + FINDING_BUDGET;
    loop {
        let stored = workspace.json(&["findings", "--format", "jsonl"]);
        let burst = stored.iter().find(|f| is(f, "fanout_burst", MISCONFIGURED)).expect("the burst in the store");
        if burst["peers"] == 75 {
            break;
        }
        assert!(Instant::now() < deadline, "the stored burst never counted all 75 servers: {burst}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rogue = events.iter().find(|e| is(e, "rogue_server", ROGUE_SERVER)).unwrap();
    assert_eq!(rogue["roles"], serde_json::json!(["server"]), "{rogue}");
    assert_eq!(rogue["status"], "open");
    assert!(!events.iter().any(|e| e["host"] == MX), "the whitelisted MX has no finding: {events:#?}");

    // Two more evaluations change nothing: each finding was emitted once.
    std::thread::sleep(Duration::from_secs(2 * EVALUATE_SECONDS + 1));
    let events = file_events(&workspace);
    let mut per_finding: BTreeMap<u64, usize> = BTreeMap::new();
    for event in &events {
        *per_finding.entry(event["id"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(per_finding.values().all(|&n| n == 1), "a finding emitted more than once: {events:#?}");
    let hosts: Vec<(&str, &str)> =
        events.iter().map(|e| (e["kind"].as_str().unwrap(), e["host"].as_str().unwrap())).collect();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    assert!(hosts.contains(&("rogue_server", MISCONFIGURED)), "a client sending mail out is rogue too: {hosts:?}");

    // Syslog got the same findings, as RFC 5424 messages.
    let messages = outputs.syslog.messages();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let rogue_message = messages
        .iter()
        .find(|m| m.contains(&format!("type=\"rogue_server\" host=\"{ROGUE_SERVER}\"")))
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert!(rogue_message.starts_with("<28>1 "), "daemon.warning, version 1: {rogue_message}");
    assert!(rogue_message.contains(" rogue ") && rogue_message.contains(" finding [rogue@32473 event=\"opened\""));

    // The kernel counted exactly what the interfaces received.
    std::thread::sleep(Duration::from_secs(DRAIN_SECONDS + 1));
    let rx_now = (net.gateway.rx("gw-in").0, net.gateway.rx("gw-out").0);
    let metrics = scrape(&net.gateway, outputs.metrics_port);
    for (interface, received) in [("gw-in", rx_now.0 - rx_at_start.0), ("gw-out", rx_now.1 - rx_at_start.1)] {
        let label = format!("{{interface=\"{interface}\"}}");
        let counted = metric(&metrics, &format!("rogue_kernel_packets_total{label}"));
        assert_eq!(counted, metric(&metrics, &format!("rogue_interface_rx_packets_total{label}")), "{interface}");
        assert_eq!(counted as u64, received, "{interface}: the test's own reading of the interface");
        assert_eq!(metric(&metrics, &format!("rogue_coverage_ratio{label}")), 1.0, "{interface}");
        assert_eq!(metric(&metrics, &format!("rogue_kernel_insert_failed_packets_total{label}")), 0.0);
    }
    // 78 sessions of at least 10 packets each way through the gateway.
    assert!(metric(&metrics, "rogue_kernel_packets_total{interface=\"gw-in\"}") > 780.0);
    assert_eq!(metric(&metrics, "rogue_findings_emitted_total"), 3.0);
    assert_eq!(metric(&metrics, "rogue_findings{service=\"smtp\",kind=\"fanout_burst\",status=\"open\"}"), 1.0);
    assert_eq!(metric(&metrics, "rogue_findings{service=\"smtp\",kind=\"rogue_server\",status=\"open\"}"), 2.0);
    assert!(metric(&metrics, "rogue_flows_completed_total") >= 156.0, "two flows per session");
    assert!(metric(&metrics, "rogue_evaluations_total") >= 3.0);
    // What an operator alerts on: the build, the last evaluation (within the
    // two intervals waited), sink counters there before any error, and no
    // collector families on a meter.
    let build = format!("rogue_build_info{{version=\"{}\",commit=\"", env!("CARGO_PKG_VERSION"));
    assert!(metrics.iter().any(|(name, value)| name.starts_with(&build) && *value == 1.0), "{metrics:#?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let last = metric(&metrics, "rogue_last_evaluation_timestamp_seconds");
    assert!(now - last < 3.0 * EVALUATE_SECONDS as f64, "last evaluated {last}, now {now}");
    assert_eq!(metric(&metrics, "rogue_evaluate_interval_seconds"), EVALUATE_SECONDS as f64);
    assert!(metrics.iter().any(|(name, value)| name.starts_with("rogue_sink_errors_total{sink=") && *value == 0.0));
    assert!(!metrics.keys().any(|name| name.starts_with("rogue_collector_")), "{metrics:#?}");

    let finished = stop(agent);
    assert!(finished.stdout.lines().count() == 3, "stdout sink: {}", finished.stdout);
    // Every completed flow also went out as IPFIX (here to a file).
    let completed: usize = finished
        .stderr
        .lines()
        .find_map(|l| l.split_once(" packets metered, ")?.1.split_once(" flows")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no flow count in the agent's last words:\n{}", finished.stderr));
    let ipfix = std::fs::read(workspace.dir.join("flows.ipfix")).unwrap();
    let (templates, records, sequence_ok) = walk(&ipfix);
    assert_eq!(&ipfix[12..16], &7u32.to_be_bytes(), "the configured observation domain");
    assert_eq!((templates, sequence_ok), (vec![256, 257], true));
    assert_eq!(records.iter().map(|(_, n)| n).sum::<usize>(), completed);
    for interface in ["gw-in", "gw-out"] {
        assert!(!xdp_attached(&net.gateway, interface), "{interface} still has an XDP program");
    }
}

#[test]
fn a_restart_continues_the_history_and_a_reloaded_whitelist_takes_the_host_out_of_the_findings() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let net = MailNet::start();
    let outputs = Outputs::on(&net.gateway);
    let workspace = Workspace::new("agent-restart", &config(&outputs, &["gw-in", "gw-out"]), &example_whitelist());
    let agent = start_agent(&net.gateway, &workspace);
    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    wait_for_event(&workspace, FINDING_BUDGET, |e| is(e, "rogue_server", ROGUE_SERVER));
    // A crash: SIGKILL leaves the agent no time to clean up, yet the
    // kernel detaches its program with its last bpf_link.
    agent.signal(libc::SIGKILL);
    agent.finish();
    for interface in ["gw-in", "gw-out"] {
        assert!(!xdp_attached(&net.gateway, interface), "{interface} kept an XDP program after the crash");
    }
    let host = |workspace: &Workspace| -> Value {
        let hosts = workspace.json(&["hosts", "--format", "jsonl"]);
        hosts.into_iter().find(|h| h["host"] == ROGUE_SERVER).expect("the rogue server in `rogue hosts`")
    };
    let before = host(&workspace);

    // A restart: the store carries on, nothing is emitted again.
    let agent = start_agent(&net.gateway, &workspace);
    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    let deadline = Instant::now() + FINDING_BUDGET;
    while host(&workspace)["flows"] == before["flows"] {
        assert!(Instant::now() < deadline, "the second session never reached the store");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(EVALUATE_SECONDS + 1));
    let after = host(&workspace);
    assert_eq!(after["flows"].as_u64(), before["flows"].as_u64().map(|f| f * 2), "both runs' flows");
    assert_eq!(after["first_seen"], before["first_seen"]);
    assert_eq!(after["characteristics"]["server_days"], 1, "{after}");
    assert_eq!(before["characteristics"]["server_days"], 1);
    let events = file_events(&workspace);
    assert_eq!(events.len(), 1, "nothing re-emitted after the restart: {events:#?}");
    let packets_before_reload =
        metric(&scrape(&net.gateway, outputs.metrics_port), "rogue_kernel_packets_total{interface=\"gw-in\"}");

    // The administrators verify the host; SIGHUP, no restart.
    let added = workspace.rogue(&["whitelist", "add", ROGUE_SERVER, "--by", "test", "--reason", "verified relay"]);
    assert!(added.status.success(), "{}", added.stderr);
    agent.signal(libc::SIGHUP);
    let events = wait_for_event(&workspace, Duration::from_secs(5), |e| {
        is(e, "rogue_server", ROGUE_SERVER) && e["event"] == "changed"
    });
    let changed = events.iter().find(|e| e["event"] == "changed").unwrap();
    assert_eq!(changed["status"], "whitelisted", "{changed}");
    let open = workspace.json(&["findings", "--state", "open", "--format", "jsonl"]);
    assert!(!open.iter().any(|f| f["host"] == ROGUE_SERVER), "{open:#?}");
    let metrics = scrape(&net.gateway, outputs.metrics_port);
    assert!(
        metric(&metrics, "rogue_kernel_packets_total{interface=\"gw-in\"}") >= packets_before_reload,
        "counts survive the reload"
    );
    let finished = stop(agent);
    assert!(finished.stderr.contains("reloaded"), "{}", finished.stderr);
}

#[test]
fn dns_answers_arrive_in_the_background_and_fill_in_the_characteristics() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let net = MailNet::start();
    let nsd = Nsd::start_in(&net.gateway, "agent-dns", &scenario_zones());
    let outputs = Outputs::on(&net.gateway);
    let config = format!(
        "{}dns: {{servers: [\"{}\"], mx_domains: [example.org]}}\n",
        config(&outputs, &["gw-in", "gw-out"]),
        nsd.addr
    );
    let workspace = Workspace::new("agent-dns", &config, &example_whitelist());
    let agent = start_agent_with(&net.gateway, &workspace, &[]);
    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    // The evaluation waits for the lookups, so the finding opens with its
    // names (a lookup that timed out would open it with nulls and change it
    // when answered; this waits for the answered one either way).
    let named = |e: &Value| is(e, "rogue_server", ROGUE_SERVER) && !e["characteristics"]["ptr"].is_null();
    let events = wait_for_event(&workspace, FINDING_BUDGET, named);
    let rogue = events.iter().find(|e| named(e)).unwrap();
    let c = &rogue["characteristics"];
    assert_eq!(
        (&c["ptr"], &c["fcrdns"], &c["name_match"], &c["record_target"]),
        (&"smtp-gw.example.org".into(), &true.into(), &true.into(), &false.into()),
        "{rogue}"
    );
    assert_eq!(rogue["suggest_whitelist"], true, "a server with a confirmed mail name: {rogue}");
    // Later evaluations ask again and the cache answers.
    std::thread::sleep(Duration::from_secs(2 * EVALUATE_SECONDS + 1));
    let metrics = scrape(&net.gateway, outputs.metrics_port);
    assert!(metric(&metrics, "rogue_dns_lookups_total") >= 8.0, "{metrics:#?}");
    assert!(metric(&metrics, "rogue_dns_cache_hits_total") >= 4.0, "{metrics:#?}");
    assert_eq!(metric(&metrics, "rogue_dns_unanswered_total"), 0.0);
    assert_eq!(file_events(&workspace).len(), events.len(), "the same answers are not news");
    stop(agent);
}

/// The method beyond mail, live: real servers of DNS (dnsmasq), NTP
/// (chronyd), DHCP (dnsmasq) and SSH (sshd) on the LAN, real clients (dig,
/// chronyd -Q and ssh from the Internet, udhcpc on the LAN). Only the rogue
/// ones become findings, each with its service: not the whitelisted
/// resolver and DHCP server, not a scan of port 53 where nothing listens.
#[test]
fn open_resolvers_ntp_and_ssh_served_outside_and_a_second_dhcp_server_are_found_live() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let net = ServiceNet::start();
    let config = format!(
        "internal_networks: [192.0.2.0/24]\n\
         interfaces: [{}]\n\
         services: {{smtp: {{}}, dns: {{}}, ntp: {{}}, dhcp: {{}}, ssh: {{}}, rdp: {{}}}}\n\
         detection: {{evaluate_seconds: {EVALUATE_SECONDS}}}\n\
         capture: {{drain_seconds: {DRAIN_SECONDS}, idle_timeout_seconds: {IDLE_SECONDS}, xdp_mode: native}}\n\
         output: {{findings: [findings.jsonl]}}\n\
         metrics: {{listen: null}}\n",
        servicenet::METERED.join(", ")
    );
    let whitelist = format!(
        "- {{address: {}, service: dns, name: ns1.example.org}}\n\
         - {{address: {}, service: dhcp, name: dhcp1.example.org}}\n",
        servicenet::RESOLVER,
        servicenet::DHCP_SERVER
    );
    let workspace = Workspace::new("agent-services", &config, &whitelist);
    let agent = start_agent(&net.gateway, &workspace);

    for resolver in [servicenet::RESOLVER, servicenet::OPEN_RESOLVER] {
        assert_eq!(net.query(resolver).as_deref(), Some("192.0.2.80"), "{resolver} answers the Internet");
    }
    assert_eq!(net.query(servicenet::SSH_SERVER), None, "nothing listens on port 53 there: a scan");
    let time = net.ask_time();
    let said = String::from_utf8_lossy(&time.stderr).to_string() + &String::from_utf8_lossy(&time.stdout);
    assert!(time.status.success() && said.contains("System clock wrong by"), "chronyd -Q:\n{said}");
    let ssh = net.try_ssh();
    assert!(String::from_utf8_lossy(&ssh.stderr).contains("Permission denied"), "ssh: {ssh:?}");
    let lease = net.lease();
    let said = String::from_utf8_lossy(&lease.stderr).to_string() + &String::from_utf8_lossy(&lease.stdout);
    assert!(lease.status.success() && said.contains("lease of 192.0.2."), "udhcpc:\n{said}");

    let expected = [
        ("dhcp", servicenet::ROGUE_DHCP_SERVER),
        ("dns", servicenet::OPEN_RESOLVER),
        ("ntp", servicenet::NTP_SERVER),
        ("ssh", servicenet::SSH_SERVER),
    ];
    let found = |events: &[Value]| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["kind"] == "rogue_server")
            .map(|e| (e["service"].as_str().unwrap().to_string(), e["host"].as_str().unwrap().to_string()))
            .collect();
        found.sort();
        found.dedup();
        found
    };
    let all_found = |e: &Value| {
        let _ = e;
        found(&file_events(&workspace)).len() >= expected.len()
    };
    wait_for_event(&workspace, FINDING_BUDGET + Duration::from_secs(EVALUATE_SECONDS), all_found);
    // One more evaluation: nothing else turns up.
    std::thread::sleep(Duration::from_secs(EVALUATE_SECONDS + 1));
    stop(agent);
    let events = file_events(&workspace);
    let expected: Vec<(String, String)> = expected.iter().map(|(s, h)| (s.to_string(), h.to_string())).collect();
    assert_eq!(found(&events), expected, "{events:#?}");
    assert!(events.iter().all(|e| e["kind"] == "rogue_server"), "{events:#?}");
    let ntp = events.iter().find(|e| e["service"] == "ntp").unwrap();
    assert_eq!((ntp["roles"].clone(), ntp["external_clients"].as_u64()), (serde_json::json!(["server"]), Some(1)));
}

/// The capabilities the systemd unit grants, as setpriv(1) names them.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/rogue-agent.service"))
        .unwrap();
    let line = unit.lines().find_map(|l| l.strip_prefix("AmbientCapabilities=")).expect("AmbientCapabilities=");
    let bounding = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("CapabilityBoundingSet=");
    assert_eq!(line, bounding, "the unit grants exactly what it bounds");
    line.split_whitespace().map(|c| c.strip_prefix("CAP_").unwrap().to_ascii_lowercase()).collect()
}

/// `rogue agent` as the user nobody holding only `capabilities`.
fn start_unprivileged(netns: &Netns, workspace: &Workspace, capabilities: &[String]) -> Running {
    let caps = format!("-all{}", capabilities.iter().map(|c| format!(",+{c}")).collect::<String>());
    let mut command = netns.command("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .args(["--", ROGUE, "agent", "--no-dns", "-v", "--config"])
        .arg(workspace.config());
    Running::spawn(command)
}

#[test]
fn the_agent_runs_as_nobody_with_only_the_units_capabilities_and_keeps_its_files_private() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let capabilities = unit_capabilities();
    assert_eq!(capabilities, ["bpf", "net_admin", "perfmon"]);
    let net = MailNet::start();
    let outputs = Outputs::on(&net.gateway);
    let workspace = Workspace::new("agent-caps", &config(&outputs, &["gw-in", "gw-out"]), &example_whitelist());
    // nobody may write the workspace, as a StateDirectory= would let it.
    std::fs::set_permissions(&workspace.dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    // Each of them is needed: without any one the agent stops, saying what it needs.
    for missing in &capabilities {
        let fewer: Vec<String> = capabilities.iter().filter(|c| *c != missing).cloned().collect();
        let refused = start_unprivileged(&net.gateway, &workspace, &fewer).finish();
        assert_eq!(refused.status.code(), Some(1), "without {missing}: {}", refused.stderr);
        // Said once, naming the one that is missing.
        let lacking = format!("this process lacks CAP_{}:", missing.to_ascii_uppercase());
        assert_eq!(refused.stderr.matches("CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON").count(), 1, "{}", refused.stderr);
        assert!(refused.stderr.contains(&lacking), "without {missing}: {}", refused.stderr);
    }

    let mut agent = start_unprivileged(&net.gateway, &workspace, &capabilities);
    agent.wait_for_stderr("agent running", 1);
    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    wait_for_event(&workspace, FINDING_BUDGET, |e| is(e, "rogue_server", ROGUE_SERVER));
    stop(agent);
    for file in ["rogue.db", "findings.jsonl"] {
        let metadata = std::fs::metadata(workspace.dir.join(file)).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{file} is private");
        assert_eq!(metadata.uid(), 65534, "{file} belongs to the agent's user");
    }
}

/// Peak resident memory and CPU seconds (user + system) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (hwm_kib * 1024, ticks / per_second)
}

#[test]
fn a_million_packets_a_second_for_30_seconds_are_all_counted_while_findings_still_come_out() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    const FLOWS: u32 = 10_240;
    const LOAD: Duration = Duration::from_secs(30);
    let net = MailNet::start();
    veth(&net.gateway, "gen0", &net.gateway, "mon0");
    let outputs = Outputs::on(&net.gateway);
    let workspace = Workspace::new("agent-load", &config(&outputs, &["gw-in", "gw-out", "mon0"]), &example_whitelist());
    let agent = start_agent(&net.gateway, &workspace);
    let pid = agent.id();
    let rx_before = net.gateway.rx("mon0").0;

    // An internal host's UDP flows to an external one, to a MAC nobody has:
    // the stack drops them once the meter has passed them on.
    let payload = udp(0, 9000, &[0x5a; 18]);
    let packet = ipv4([192, 0, 2, 200].into(), [198, 51, 100, 9].into(), 17, &[], 0, &payload);
    let packet_len = packet.len() as u64;
    let mut frame = ethernet(0x0800, &packet);
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x0d, 0x0d]);
    let generator = in_netns(&net.gateway, move || {
        let mut generator = Generator::new("gen0", &frame, FLOWS);
        let took = generator.send_for(LOAD, 1_000_000, Duration::from_millis(5));
        (generator.sent, took)
    });
    let (_, cpu_before) = usage(pid);
    std::thread::sleep(Duration::from_secs(10));
    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    let sent = Instant::now();
    wait_for_event(&workspace, FINDING_BUDGET, |e| is(e, "rogue_server", ROGUE_SERVER));
    let found_after = sent.elapsed();
    let (generated, took) = generator.join().unwrap();
    let (peak_memory, cpu_after) = usage(pid);
    std::thread::sleep(Duration::from_secs(DRAIN_SECONDS + 1));
    let received = net.gateway.rx("mon0").0 - rx_before;
    let metrics = scrape(&net.gateway, outputs.metrics_port);
    let rate = generated as f64 / took.as_secs_f64();
    let cpu = (cpu_after - cpu_before) / took.as_secs_f64();
    eprintln!(
        "load: {generated} frames in {took:?} ({:.2} Mpps) over {FLOWS} flows; finding in {found_after:?} under load; \
         agent peak RSS {:.1} MiB, CPU {:.1}% of one core",
        rate / 1e6,
        peak_memory as f64 / (1 << 20) as f64,
        cpu * 100.0
    );
    assert!(rate >= 1e6, "the generator made only {:.2} Mpps", rate / 1e6);
    assert_eq!(received, generated, "the veth delivered every frame");
    assert_eq!(metric(&metrics, "rogue_kernel_packets_total{interface=\"mon0\"}") as u64, generated);
    assert_eq!(metric(&metrics, "rogue_kernel_insert_failed_packets_total{interface=\"mon0\"}"), 0.0);
    assert_eq!(metric(&metrics, "rogue_coverage_ratio{interface=\"mon0\"}"), 1.0);
    assert!(metric(&metrics, "rogue_flow_cache_flows") >= FLOWS as f64, "the load's flows are in progress");
    assert!(peak_memory < 128 << 20, "the agent's peak RSS was {peak_memory} bytes");
    let finished = stop(agent);
    assert!(finished.stderr.contains("agent stopped"), "{}", finished.stderr);
    // At the stop every flow in progress was stored: all of the load's bytes.
    use rogue::store::Traffic;
    let store =
        rogue::store::SqliteStore::open(&workspace.dir.join("rogue.db"), rogue::store::Access::ReadOnly).unwrap();
    let stored: u64 =
        store.host_daily("192.0.2.200".parse().unwrap(), 0, i64::MAX).unwrap().iter().map(|(_, _, bytes)| bytes).sum();
    assert_eq!(stored, generated * packet_len, "the load's IP bytes in the store");
}

/// Frames of one UDP flow sent into `netns` from `from` (the other end of
/// the metered veth), `count` of them.
fn send_udp_frames(netns: &Netns, from: &'static str, count: usize) {
    let frame =
        ethernet(0x0800, &ipv4([192, 0, 2, 1].into(), [192, 0, 2, 2].into(), 17, &[], 0, &udp(4000, 53, &[1; 100])));
    in_netns(netns, move || {
        let ifindex = rogue::capture::host::if_index(from).unwrap();
        rogue_testkit::netns::send_raw(ifindex, &frame, count);
    })
    .join()
    .unwrap();
}

/// Waits until the agent's metrics satisfy `condition` (10 s at most).
fn wait_for_metric(netns: &Netns, port: u16, what: &str, condition: impl Fn(&BTreeMap<String, f64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition(&scrape(netns, port)) {
        assert!(Instant::now() < deadline, "{what}: {:#?}", scrape(netns, port));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A metered interface deleted and made again (a VM's tap, a VPN's tun, a
/// flapping driver): the agent went on with nothing attached, silent, and
/// reported a coverage of 79. It now says so at once, counts it, attaches
/// again when the interface returns, and its counters carry across.
#[test]
fn an_interface_deleted_and_made_again_is_noticed_and_metered_again() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let ns = Netns::new("flap");
    veth(&ns, "mon0", &ns, "peer0");
    let outputs = Outputs::on(&ns);
    let workspace = Workspace::new("agent-flap", &config(&outputs, &["mon0"]), &example_whitelist());
    let mut agent = start_agent(&ns, &workspace);
    let attached = "rogue_interface_attached{interface=\"mon0\"}";
    let packets = "rogue_kernel_packets_total{interface=\"mon0\"}";
    send_udp_frames(&ns, "peer0", 30);
    wait_for_metric(&ns, outputs.metrics_port, "30 frames counted", |m| m.get(packets) == Some(&30.0));

    ns.ip(&["link", "del", "mon0"]);
    agent.wait_for_stderr("mon0 went away (deleted, or moved to another namespace)", 1);
    wait_for_metric(&ns, outputs.metrics_port, "detached", |m| {
        m.get(attached) == Some(&0.0) && m.get("rogue_interface_detaches_total{interface=\"mon0\"}") == Some(&1.0)
    });

    veth(&ns, "mon0", &ns, "peer0");
    agent.wait_for_stderr("mon0 is back", 1);
    assert!(xdp_attached(&ns, "mon0"), "the meter is on the new mon0");
    send_udp_frames(&ns, "peer0", 20);
    wait_for_metric(&ns, outputs.metrics_port, "the new interface's frames counted on", |m| {
        m.get(attached) == Some(&1.0)
            && m.get("rogue_interface_reattaches_total{interface=\"mon0\"}") == Some(&1.0)
            && m.get(packets) == Some(&50.0)
    });
    let metrics = scrape(&ns, outputs.metrics_port);
    assert_eq!(metric(&metrics, "rogue_interface_rx_packets_total{interface=\"mon0\"}"), 50.0);
    assert_eq!(metric(&metrics, "rogue_coverage_ratio{interface=\"mon0\"}"), 1.0);
    let finished = stop(agent);
    assert!(finished.stderr.contains("agent stopped"), "{}", finished.stderr);
}
