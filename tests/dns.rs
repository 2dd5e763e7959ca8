//! The DNS characteristics against a real DNS server (NSD on loopback,
//! started by the test with the scenario's zones): PTR names, forward
//! confirmation, the naming convention and MX targets; a server that never
//! answers; hostile names; and `rogue analyze` end to end.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use rogue::{
    config::{Config, DnsConfig, DnsServer, Positive},
    dns::Resolver,
    store::HostNames,
};
use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    dns::{Nsd, Silent, scenario_zones},
};
use serde_json::Value;

fn dns_config(server: SocketAddr, timeout_ms: u64) -> DnsConfig {
    DnsConfig {
        servers: vec![DnsServer(server)],
        timeout_ms: Positive(timeout_ms),
        mx_domains: vec!["example.org".into(), "example.net".into()],
        ..DnsConfig::default()
    }
}

fn yaml(server: SocketAddr, timeout_ms: u64) -> String {
    format!(
        "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\n\
         dns: {{servers: [\"{server}\"], timeout_ms: {timeout_ms}, mx_domains: [example.org, example.net]}}\n"
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn smtp() -> rogue::config::Service {
    Config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rogue.yaml")).unwrap().services.all()
        [0]
    .clone()
}

fn names(resolver: &Resolver, host: &str) -> HostNames {
    let runtime = runtime();
    let mx = runtime.block_on(resolver.record_targets(rogue::config::DnsRecord::Mx));
    runtime.block_on(resolver.host_names(host.parse().unwrap(), &smtp(), &mx))
}

#[test]
fn names_confirmations_and_mx_targets_come_from_a_real_dns_server() {
    let nsd = Nsd::start("names", &scenario_zones());
    let resolver = Resolver::new(&dns_config(nsd.addr, 2_000)).unwrap();

    let mx1 = names(&resolver, "192.0.2.25");
    assert_eq!(mx1.ptr.as_deref(), Some("mx1.example.org"));
    assert_eq!((mx1.fcrdns, mx1.name_match, mx1.record_target), (Some(true), Some(true), Some(true)));
    assert_eq!(mx1.record_targets.len(), 1);
    assert_eq!((mx1.record_targets[0].domain.as_str(), mx1.record_targets[0].preference), ("example.org", 10));

    let mx2 = names(&resolver, "2001:db8:10::25");
    assert_eq!(mx2.ptr.as_deref(), Some("mx2.example.org"));
    assert_eq!((mx2.fcrdns, mx2.record_target), (Some(true), Some(true)), "the IPv6 MX target");
    assert_eq!((mx2.record_targets[0].target.as_str(), mx2.record_targets[0].preference), ("mx2.example.org", 20));

    let relay = names(&resolver, "192.0.2.40");
    assert_eq!(
        (relay.ptr.as_deref(), relay.fcrdns, relay.name_match, relay.record_target),
        (Some("relay1.example.org"), Some(true), Some(true), Some(true))
    );
    assert_eq!(relay.record_targets[0].domain, "example.net");

    let unnamed = names(&resolver, "192.0.2.41");
    assert_eq!(
        unnamed,
        HostNames {
            ptr: None,
            fcrdns: Some(false),
            name_match: Some(false),
            record_target: Some(false),
            ..HostNames::default()
        }
    );
    // Without configured domains, whether a host is an MX target is unknown.
    let unconfigured = Resolver::new(&DnsConfig { mx_domains: vec![], ..dns_config(nsd.addr, 2_000) }).unwrap();
    assert_eq!(names(&unconfigured, "192.0.2.25").record_target, None);

    let spoofed = names(&resolver, "192.0.2.60");
    assert_eq!(spoofed.ptr.as_deref(), Some("mail.example.org"), "reported, but not believed");
    assert_eq!((spoofed.fcrdns, spoofed.name_match, spoofed.record_target), (Some(false), Some(false), Some(false)));

    let gateway = names(&resolver, "192.0.2.77");
    assert_eq!(
        (gateway.ptr.as_deref(), gateway.fcrdns, gateway.name_match),
        (Some("smtp-gw.example.org"), Some(true), Some(true))
    );

    let peers: Vec<IpAddr> =
        ["203.0.113.101", "203.0.113.102", "203.0.113.103"].iter().map(|a| a.parse().unwrap()).collect();
    let peer_names = runtime().block_on(resolver.peer_names(&peers));
    assert_eq!(
        peer_names[&peers[0]], "bad\\007bell\\000nul\\060script\\062alert\\0401\\041\\060\\047script\\062.example.com",
        "control characters and markup escaped"
    );
    assert_eq!(peer_names[&peers[1]], format!("{}.example.com", "x".repeat(63)));
    assert!(!peer_names.contains_key(&peers[2]), "no PTR");
}

#[test]
fn a_dns_server_that_never_answers_leaves_the_characteristics_unknown_until_one_does() {
    let silent = Silent::bind();
    let workspace = Workspace::with_dns("silent", &yaml(silent.addr, 300), &example_whitelist());
    let started = Instant::now();
    let findings = workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    assert!(started.elapsed() < Duration::from_secs(60), "analysis completed despite DNS: {:?}", started.elapsed());
    let finding = findings.iter().find(|f| f["kind"] == "rogue_server").unwrap();
    let c = &finding["characteristics"];
    assert_eq!(
        (&c["ptr"], &c["fcrdns"], &c["name_match"], &c["record_target"]),
        (&Value::Null, &Value::Null, &Value::Null, &Value::Null)
    );
    assert!(finding["message"].as_str().unwrap().contains("DNS did not answer"), "{finding}");
    // Behaviour alone still suggests it.
    assert_eq!(finding["suggest_whitelist"], true);

    // The server answers now: the next run fills the characteristics in.
    let nsd = Nsd::start("later", &scenario_zones());
    std::fs::write(workspace.config(), yaml(nsd.addr, 2_000)).unwrap();
    let later = workspace.analyze(&[&scenario_capture("vpn-failure", 2)]);
    let finding = later.iter().find(|f| f["kind"] == "rogue_server").unwrap();
    let c = &finding["characteristics"];
    assert_eq!(c["ptr"], "smtp-gw.example.org");
    assert_eq!(
        (c["fcrdns"].as_bool(), c["name_match"].as_bool(), c["record_target"].as_bool()),
        (Some(true), Some(true), Some(false))
    );
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("its name smtp-gw.example.org is forward-confirmed and follows the SMTP naming convention")
    );
}

#[test]
fn analyze_gives_each_finding_its_dns_characteristics_and_suggests_exactly_the_mail_like_hosts() {
    let nsd = Nsd::start("analyze", &scenario_zones());
    let workspace = Workspace::with_dns("analyze", &yaml(nsd.addr, 2_000), &example_whitelist());
    let findings = workspace.analyze(&[&scenario_capture("all", 1)]);
    let rogue: Vec<&Value> = findings.iter().filter(|f| f["kind"] == "rogue_server").collect();
    let row = |f: &Value| {
        let c = &f["characteristics"];
        (
            f["host"].as_str().unwrap().to_string(),
            c["ptr"].as_str().map(str::to_string),
            c["fcrdns"].as_bool(),
            c["name_match"].as_bool(),
            c["record_target"].as_bool(),
            f["suggest_whitelist"].as_bool().unwrap(),
        )
    };
    let mut rows: Vec<_> = rogue.iter().map(|f| row(f)).collect();
    rows.sort();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        rows,
        vec![
            ("192.0.2.40".into(), some("relay1.example.org"), Some(true), Some(true), Some(true), true),
            ("192.0.2.41".into(), None, Some(false), Some(false), Some(false), true),
            ("192.0.2.60".into(), some("mail.example.org"), Some(false), Some(false), Some(false), false),
            ("192.0.2.77".into(), some("smtp-gw.example.org"), Some(true), Some(true), Some(false), true),
        ]
    );
    let relay = rogue.iter().find(|f| f["host"] == "192.0.2.40").unwrap();
    let evidence = relay["message"].as_str().unwrap();
    assert!(evidence.contains("it is an MX target of example.net (MX 30 relay1.example.org)"), "{evidence}");
    assert!(
        evidence.contains("behaves like an SMTP server and is an MX target and has a forward-confirmed SMTP name"),
        "{evidence}"
    );
    let spoofed = rogue.iter().find(|f| f["host"] == "192.0.2.60").unwrap();
    assert!(spoofed["message"].as_str().unwrap().contains("its name mail.example.org does not resolve back to it"));

    // The whitelisted MX are seen with their names and as MX targets.
    let hosts = workspace.json(&["hosts", "--format", "jsonl"]);
    let mx = hosts.iter().find(|h| h["host"] == "2001:db8:10::25").unwrap();
    assert_eq!(
        (mx["characteristics"]["ptr"].as_str(), mx["characteristics"]["record_target"].as_bool()),
        (Some("mx2.example.org"), Some(true))
    );
}

#[test]
fn hostile_ptr_names_are_printed_escaped_everywhere() {
    let nsd = Nsd::start("hostile", &scenario_zones());
    let workspace = Workspace::with_dns("hostile", &yaml(nsd.addr, 2_000), &example_whitelist());
    workspace.analyze(&[&scenario_capture("misconfiguration", 1)]);
    // Peers' names are looked up only when asked.
    let table = workspace.rogue(&["hosts", "--peers", "--resolve", "--format", "table"]);
    assert!(table.status.success(), "{}", table.stderr);
    let hostile = "bad\\007bell\\000nul\\060script\\062alert\\0401\\041\\060\\047script\\062.example.com";
    assert!(table.stdout.contains(hostile), "the hostile name is listed, escaped:\n{}", table.stdout);
    let json = workspace.rogue(&["hosts", "--peers", "--resolve", "--format", "jsonl"]);
    for output in [&table.stdout, &json.stdout] {
        assert!(!output.contains("<script>") && !output.contains('\u{7}') && !output.contains('\0'), "{output}");
    }
    let hosts: Vec<Value> = json.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let peer = |addr: &str| -> Value {
        hosts.iter().flat_map(|h| h["peers"].as_array().unwrap()).find(|p| p["peer"] == addr).cloned().unwrap()
    };
    assert_eq!(peer("203.0.113.101")["ptr"], hostile);
    assert_eq!(peer("203.0.113.102")["ptr"], format!("{}.example.com", "x".repeat(63)));
}

#[test]
fn without_dns_the_findings_say_so() {
    let workspace = Workspace::new("no-dns", "internal_networks: [192.0.2.0/24]\n", &example_whitelist());
    let findings = workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    assert_eq!(findings[0]["characteristics"]["ptr"], Value::Null);
    assert!(findings[0]["message"].as_str().unwrap().contains("DNS lookups were off (--no-dns)"));
}

/// Lookups per second against the loopback server, cold and warm cache (a
/// figure for the record, not a pass/fail threshold).
#[test]
fn resolver_throughput_against_the_loopback_server() {
    let nsd = Nsd::start("throughput", &scenario_zones());
    let resolver = Resolver::new(&dns_config(nsd.addr, 2_000)).unwrap();
    let addrs: Vec<IpAddr> = (1..=254).map(|i| IpAddr::from([203, 0, 113, i])).collect();
    let runtime = runtime();
    let cold = Instant::now();
    let first = runtime.block_on(resolver.peer_names(&addrs));
    let cold = cold.elapsed();
    let warm = Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        assert_eq!(runtime.block_on(resolver.peer_names(&addrs)), first);
    }
    let warm = warm.elapsed();
    assert_eq!(first.len(), 2, "203.0.113.101 and .102 have names");
    eprintln!(
        "PTR lookups per second: cold cache {:.0}, warm cache {:.0}",
        addrs.len() as f64 / cold.as_secs_f64(),
        (addrs.len() * rounds) as f64 / warm.as_secs_f64()
    );
}

/// A server that answers A but refuses AAAA (dnsmasq does, for names it has
/// only A records for): forward confirmation and the MX status of IPv4
/// hosts were unknown ("DNS did not answer") though it answered all they
/// need. Each host is settled by the records of its own family.
#[test]
fn ipv4_hosts_are_settled_by_a_answers_when_aaaa_is_refused() {
    let dnsmasq = rogue_testkit::dns::Dnsmasq::start(&[
        "--address=/smtp-gw.example.org/192.0.2.77",
        "--address=/mx1.example.org/192.0.2.25",
        "--ptr-record=77.2.0.192.in-addr.arpa,smtp-gw.example.org",
        "--ptr-record=25.2.0.192.in-addr.arpa,mx1.example.org",
        "--mx-host=example.org,mx1.example.org,10",
    ]);
    let resolver =
        Resolver::new(&DnsConfig { mx_domains: vec!["example.org".into()], ..dns_config(dnsmasq.addr, 2_000) })
            .unwrap();
    let rogue_host = names(&resolver, "192.0.2.77");
    assert_eq!(rogue_host.ptr.as_deref(), Some("smtp-gw.example.org"));
    assert_eq!(
        (rogue_host.fcrdns, rogue_host.name_match, rogue_host.record_target),
        (Some(true), Some(true), Some(false))
    );
    let mx = names(&resolver, "192.0.2.25");
    assert_eq!((mx.fcrdns, mx.record_target), (Some(true), Some(true)));

    let config = format!(
        "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\n\
         dns: {{servers: [\"{}\"], timeout_ms: 2000, mx_domains: [example.org]}}\n",
        dnsmasq.addr
    );
    let workspace = Workspace::with_dns("aaaa-refused", &config, &example_whitelist());
    let findings = workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    let evidence = findings[0]["message"].as_str().unwrap();
    assert!(evidence.contains("its name smtp-gw.example.org is forward-confirmed"), "{evidence}");
    assert!(!evidence.contains("did not answer"), "{evidence}");
    assert_eq!(findings[0]["characteristics"]["record_target"], false);
}

/// Queries the system resolver (a counting listener in the namespace) gets
/// while `rogue ARGS` runs there against `workspace`, with `env` set.
fn queries_during(
    ns: &rogue_testkit::netns::Netns,
    resolver: &rogue_testkit::dns::CountingResolver,
    workspace: &Workspace,
    args: &[&str],
    env: &[(&str, &str)],
) -> u64 {
    let before = resolver.queries();
    let output = ns
        .command(rogue_testkit::process::ROGUE)
        .args(args)
        .arg("--config")
        .arg(workspace.config())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(output.status.success(), "rogue {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    resolver.queries() - before
}

/// DNS is asked only when it is on and the command evaluates, or is asked
/// to (`--resolve`): with `--no-dns`, ROGUE_NO_DNS or `dns.enabled: false`,
/// and for every query command, the machine's resolver hears nothing.
#[test]
fn no_query_reaches_the_resolver_unless_dns_is_asked_for() {
    rogue_testkit::needs_root!("network namespaces");
    let ns = rogue_testkit::netns::Netns::with_resolver("resolver");
    let resolver = rogue_testkit::dns::CountingResolver::start_in(&ns);
    let capture = scenario_capture("misconfiguration", 1);
    let capture = capture.to_str().unwrap();
    let off = Workspace::new(
        "dns-off",
        "internal_networks: [192.0.2.0/24]\ndns: {enabled: false, timeout_ms: 300}\n",
        &example_whitelist(),
    );
    assert_eq!(queries_during(&ns, &resolver, &off, &["analyze", "--pcap", capture], &[]), 0, "dns.enabled: false");
    let flag =
        Workspace::new("dns-flag", "internal_networks: [192.0.2.0/24]\ndns: {timeout_ms: 300}\n", &example_whitelist());
    assert_eq!(queries_during(&ns, &resolver, &flag, &["analyze", "--no-dns", "--pcap", capture], &[]), 0, "--no-dns");
    let env =
        Workspace::new("dns-env", "internal_networks: [192.0.2.0/24]\ndns: {timeout_ms: 300}\n", &example_whitelist());
    let no_dns = [("ROGUE_NO_DNS", "1")];
    assert_eq!(queries_during(&ns, &resolver, &env, &["analyze", "--pcap", capture], &no_dns), 0, "ROGUE_NO_DNS");
    let report = env.dir.join("report");
    for args in [
        &["hosts"][..],
        &["hosts", "--peers"],
        &["findings"],
        &["whitelist", "suggest"],
        &["report", "--host", "192.0.2.60", "--out", report.to_str().unwrap()],
    ] {
        assert_eq!(queries_during(&ns, &resolver, &env, args, &[]), 0, "rogue {args:?} is a query command");
    }
    // The counting is real: asked for, DNS is asked.
    assert!(queries_during(&ns, &resolver, &env, &["hosts", "--peers", "--resolve"], &[]) > 0);
    let on =
        Workspace::new("dns-on", "internal_networks: [192.0.2.0/24]\ndns: {timeout_ms: 300}\n", &example_whitelist());
    assert!(queries_during(&ns, &resolver, &on, &["analyze", "--pcap", capture], &[]) > 0);
}
