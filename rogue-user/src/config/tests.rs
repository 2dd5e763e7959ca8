use super::*;

fn parse(text: &str) -> Result<Config, String> {
    let path = Path::new("/etc/rogue/rogue.yaml");
    Config::parse(path, text.into(), "/etc/rogue".into(), SYSTEM_STATE_DIR.into()).map_err(|e| e.to_string())
}

#[test]
fn paths_rogue_writes_start_in_the_state_directory_and_the_whitelist_beside_the_file() {
    let config = parse("internal_networks: [192.0.2.0/24]\nstore: {path: rogue.db}").unwrap();
    assert_eq!(config.store_path(), Path::new("/var/lib/rogue/rogue.db"));
    assert_eq!(config.whitelist_path(), Path::new("/etc/rogue/whitelist.yaml"));
    assert_eq!(config.resolve(Path::new("/srv/findings.jsonl")), Path::new("/srv/findings.jsonl"));
}

#[test]
fn the_state_directory_is_systemds_else_var_lib_for_etc_else_the_files_own() {
    let etc = Path::new("/etc/rogue");
    assert_eq!(data_dir(etc, None), Path::new("/var/lib/rogue"));
    assert_eq!(data_dir(etc, Some("/var/lib/rogue-test:/var/lib/other".as_ref())), Path::new("/var/lib/rogue-test"));
    assert_eq!(data_dir(Path::new("/home/analyst/case"), None), Path::new("/home/analyst/case"));
    assert_eq!(data_dir(Path::new(""), Some("".as_ref())), Path::new(""));
}

#[test]
fn a_missing_configuration_names_every_place_tried() {
    let explicit = locate(Some(Path::new("/nonexistent/rogue.yaml"))).unwrap();
    assert_eq!(explicit, Path::new("/nonexistent/rogue.yaml"));
    let message = ConfigError::NotFound { tried: SEARCH_PATH.iter().map(PathBuf::from).collect() }.to_string();
    assert!(
        message.starts_with(
            "no configuration file: tried rogue.yaml, /etc/rogue/rogue.yaml; give one with -c FILE or ROGUE_CONFIG"
        ),
        "{message}"
    );
}

#[test]
fn the_example_in_the_repository_is_valid_and_states_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rogue.yaml");
    let example = Config::load(&path).unwrap();
    let minimal = parse("internal_networks: [192.0.2.0/24, 2001:db8::/32]").unwrap();
    assert_eq!(example.internal_networks, minimal.internal_networks);
    assert_eq!(example.services.all(), minimal.services.all());
    assert_eq!(example.store.retention_days, minimal.store.retention_days);
    assert_eq!(example.detection.bin_seconds, minimal.detection.bin_seconds);
    assert_eq!(example.detection.history_days, minimal.detection.history_days);
    assert_eq!(example.detection.volume_spike.min_bytes, minimal.detection.volume_spike.min_bytes);
    assert_eq!(example.capture.idle_timeout_seconds, minimal.capture.idle_timeout_seconds);
    assert_eq!(example.whitelist_path(), path.parent().unwrap().join("whitelist.yaml"));
    assert_eq!(example.detection.evaluate_seconds, minimal.detection.evaluate_seconds);
    assert_eq!(example.capture.flow_cache_entries, minimal.capture.flow_cache_entries);
    assert_eq!(example.capture.kernel_log, minimal.capture.kernel_log);
    assert_eq!(minimal.capture.kernel_log, KernelLog::Off);
    assert_eq!(example.output.findings, minimal.output.findings);
    assert_eq!(example.metrics.listen, minimal.metrics.listen);
    assert_eq!(example.interfaces, minimal.interfaces);
    assert_eq!(example.store.max_future_seconds, minimal.store.max_future_seconds);
    assert_eq!(example.store.max_pending_flows, minimal.store.max_pending_flows);
    assert_eq!(example.store.backend, minimal.store.backend);
    assert_eq!(example.store.clickhouse, minimal.store.clickhouse);
    assert_eq!(example.detection.evaluate, minimal.detection.evaluate);
    assert_eq!(example.dns.enabled, minimal.dns.enabled);
    assert_eq!(format!("{:?}", example.collect), format!("{:?}", minimal.collect));
}

#[test]
fn finding_sinks_are_stdout_syslog_a_syslog_server_or_a_file_each_in_a_format() {
    let config = parse(
        "internal_networks: [192.0.2.0/24]\noutput: {findings: [stdout, syslog, \"syslog://192.0.2.5:514\", \
         findings.jsonl, {to: \"syslog://192.0.2.6:514\", format: cef}, {to: ecs.jsonl, format: ecs}]}\n\
         metrics: {listen: null}",
    )
    .unwrap();
    let jsonl = |to| SinkSpec { to, format: FindingFormat::Jsonl, ca_file: None };
    assert_eq!(
        config.output.findings,
        [
            jsonl(FindingSink::Stdout),
            jsonl(FindingSink::LocalSyslog),
            jsonl(FindingSink::RemoteSyslog("192.0.2.5:514".into())),
            jsonl(FindingSink::File("findings.jsonl".into())),
            SinkSpec {
                to: FindingSink::RemoteSyslog("192.0.2.6:514".into()),
                format: FindingFormat::Cef,
                ca_file: None
            },
            SinkSpec { to: FindingSink::File("ecs.jsonl".into()), format: FindingFormat::Ecs, ca_file: None },
        ]
    );
    let unknown =
        parse("internal_networks: [192.0.2.0/24]\noutput: {findings: [{to: stdout, format: leef}]}").unwrap_err();
    assert!(unknown.contains("unknown variant `leef`, expected one of `jsonl`, `ecs`, `cef`"), "{unknown}");
    let severity = parse("internal_networks: [192.0.2.0/24]\noutput: {severity: {volume_spike: critical}}").unwrap();
    assert_eq!(severity.output.severity.of("volume_spike"), Severity::Critical);
    assert_eq!(severity.output.severity.of("rogue_server"), Severity::High);
    assert_eq!(config.metrics.listen, None);
    let defaults = parse("internal_networks: [192.0.2.0/24]").unwrap();
    assert_eq!(defaults.output.findings, [jsonl(FindingSink::Stdout)]);
    assert_eq!(defaults.output.observer_name(), hostname());
    assert_eq!(defaults.metrics.listen, Some("127.0.0.1:9925".parse().unwrap()));
    assert_eq!(defaults.detection.evaluate_seconds.0, 60);
    let no_port = parse("internal_networks: [192.0.2.0/24]\noutput: {findings: [\"syslog://192.0.2.5\"]}").unwrap_err();
    assert!(
        no_port.contains("output.findings[0]: syslog://192.0.2.5: give the server as syslog://HOST:PORT")
            && no_port.contains("line 2"),
        "{no_port}"
    );
}

#[test]
fn defaults_follow_the_method() {
    let config = parse("internal_networks: [192.0.2.0/24]").unwrap();
    let smtp = &config.services.all()[0];
    assert_eq!(
        (smtp.name.as_str(), smtp.ports.as_slice(), smtp.min_packets, smtp.min_bytes),
        ("smtp", &[25][..], 3, 120)
    );
    assert_eq!(smtp.share_ports, [25, 465, 587, 110, 995, 143, 993]);
    assert_eq!(smtp.share_threshold, 0.85);
    assert_eq!((config.detection.bin_seconds.0, config.detection.history_days.0), (600, 14));
    assert_eq!((config.detection.fanout.peers.0, config.detection.fanout.window_seconds.0), (20, 60));
    assert_eq!(config.store_path(), Path::new("/var/lib/rogue/rogue.db"));
    assert_eq!(config.whitelist_path(), Path::new("/etc/rogue/whitelist.yaml"));
}

#[test]
fn errors_name_the_file_the_key_and_the_line() {
    let unknown = parse("internal_networks: [192.0.2.0/24]\nservices:\n  smtp:\n    min_pakets: 3\n").unwrap_err();
    assert!(unknown.starts_with("/etc/rogue/rogue.yaml: services.smtp: unknown field `min_pakets`"), "{unknown}");
    assert!(unknown.contains("line 4"), "{unknown}");

    let bad = parse("internal_networks: [192.0.2.0/24]\ndetection:\n  bin_seconds: ten\n").unwrap_err();
    assert!(bad.contains("detection.bin_seconds: invalid type: string \"ten\"") && bad.contains("line 3"), "{bad}");

    let zero = parse("internal_networks: [192.0.2.0/24]\ndetection:\n  history_days: 0\n").unwrap_err();
    assert!(zero.contains("detection.history_days: must be at least 1") && zero.contains("line 3"), "{zero}");

    let prefix = parse("internal_networks: [192.0.2.0/33]").unwrap_err();
    assert!(prefix.contains("internal_networks[0]") && prefix.contains("line 1"), "{prefix}");

    let share = parse("internal_networks: [192.0.2.0/24]\nservices: {smtp: {mail_share_threshold: 85}}").unwrap_err();
    assert!(share.contains("services.smtp.mail_share_threshold: 85 is a share, at most 1"), "{share}");
    assert!(share.contains("line 2"), "{share}");
    let share =
        parse("internal_networks: [192.0.2.0/24]\nservices:\n  smtp:\n    mail_share_threshold: 7.5\n").unwrap_err();
    assert!(share.contains("7.5 is a share, at most 1") && share.contains("line 4"), "{share}");

    let missing = parse("store: {path: x.db}").unwrap_err();
    assert!(missing.contains("missing field `internal_networks`"), "{missing}");

    let mode = parse("internal_networks: [192.0.2.0/24]\ncapture: {xdp_mode: turbo}").unwrap_err();
    assert!(mode.contains("capture.xdp_mode: unknown variant `turbo`"), "{mode}");
    let log = parse("internal_networks: [192.0.2.0/24]\ncapture: {kernel_log: loud}").unwrap_err();
    assert!(log.contains("capture.kernel_log: unknown variant `loud`, expected one of `off`, `error`"), "{log}");
    let tunnel = parse("internal_networks: [192.0.2.0/24]\ncapture: {decapsulate: [vxlan, mpls]}").unwrap_err();
    assert!(tunnel.contains("capture.decapsulate[1]: unknown variant `mpls`, expected one of `erspan`"), "{tunnel}");
}

#[test]
fn the_tunnels_named_are_the_tunnels_opened_and_none_by_default() {
    let none = parse("internal_networks: [192.0.2.0/24]").unwrap();
    assert_eq!(none.capture.decapsulate(), Decapsulate::NONE);
    let mirror = parse("internal_networks: [192.0.2.0/24]\ncapture: {decapsulate: [erspan, vxlan]}").unwrap();
    assert_eq!(mirror.capture.decapsulate(), Decapsulate(Decapsulate::ERSPAN | Decapsulate::VXLAN));
    let names = ["erspan", "gre", "vxlan", "geneve", "ipip"];
    let all: Vec<Encapsulation> = names.iter().map(|name| name.parse().unwrap()).collect();
    assert_eq!(Encapsulation::all(&all), Decapsulate::ALL);
    assert!("mpls".parse::<Encapsulation>().unwrap_err().contains("erspan, gre, vxlan, geneve, ipip"));
}

#[test]
fn hosts_are_internal_by_prefix_for_both_families() {
    let config = parse("internal_networks: [192.0.2.0/24, 2001:db8:10::/48]").unwrap();
    assert!(config.is_internal("192.0.2.200".parse().unwrap()));
    assert!(!config.is_internal("198.51.100.1".parse().unwrap()));
    assert!(config.is_internal("2001:db8:10::25".parse().unwrap()));
    assert!(!config.is_internal("2001:db8:11::25".parse().unwrap()));
}

/// A ClickHouse server's settings: a URL that is not HTTP, and names that
/// would have to be quoted in SQL, are refused naming key and line; the
/// password file is found beside the configuration, the spool in the state
/// directory.
#[test]
fn clickhouse_settings_are_checked_and_their_paths_resolved() {
    let bad = parse(
        "internal_networks: [192.0.2.0/24]\nstore:\n  backend: clickhouse\n  clickhouse:\n    url: tcp://db:9000\n    \
         database: \"rogue; DROP\"\n    cluster: \"a b\"\n",
    )
    .unwrap_err();
    assert_eq!(
        bad,
        "/etc/rogue/rogue.yaml: store.clickhouse.url: \"tcp://db:9000\" is not http://HOST:PORT or https://HOST:PORT \
         (ClickHouse's HTTP interface) at line 5\n\
         /etc/rogue/rogue.yaml: store.clickhouse.database: \"rogue; DROP\" is not a database name (letters, digits and _) \
         at line 6\n\
         /etc/rogue/rogue.yaml: store.clickhouse.cluster: \"a b\" is not a cluster name (letters, digits and _) at line 7"
    );
    let good = parse(
        "internal_networks: [192.0.2.0/24]\nstore: {backend: clickhouse, clickhouse: {password_file: secret, cluster: c1}}\n",
    )
    .unwrap();
    let clickhouse = good.clickhouse();
    assert_eq!(good.store.backend, StoreBackend::Clickhouse);
    assert_eq!(clickhouse.password_file, Some(PathBuf::from("/etc/rogue/secret")));
    assert_eq!(clickhouse.spool_dir, Path::new(SYSTEM_STATE_DIR).join("clickhouse-spool"));
    assert_eq!(clickhouse.cluster.as_deref(), Some("c1"));
    assert!(parse("internal_networks: [192.0.2.0/24]\nstore: {backend: postgres}\n").unwrap_err().contains("postgres"));
}

/// Values that must agree with each other are checked once all are read;
/// the error still names the line.
#[test]
fn values_that_contradict_each_other_name_their_line() {
    let ttl =
        parse("internal_networks: [192.0.2.0/24]\ndns:\n  max_ttl_seconds: 60\n  min_ttl_seconds: 600\n").unwrap_err();
    // Every problem is told, each on its line: the raised minimum is also
    // above the default negative TTL.
    assert_eq!(
        ttl,
        "/etc/rogue/rogue.yaml: dns.min_ttl_seconds: 600 is more than dns.max_ttl_seconds (60) at line 4\n\
         /etc/rogue/rogue.yaml: dns.negative_ttl_seconds: 300 is less than dns.min_ttl_seconds (600) at line 2"
    );
    let flow_style =
        parse("internal_networks: [192.0.2.0/24]\ndns: {min_ttl_seconds: 600, max_ttl_seconds: 60}\n").unwrap_err();
    assert!(flow_style.lines().next().unwrap().ends_with("at line 2"), "{flow_style}");
    let timeouts = parse(
        "internal_networks: [192.0.2.0/24]\ncapture:\n  idle_timeout_seconds: 600\n  active_timeout_seconds: 60\n",
    )
    .unwrap_err();
    assert!(
        timeouts.contains("capture.active_timeout_seconds: 60 is less than") && timeouts.ends_with("line 4"),
        "{timeouts}"
    );
    for entries in ["0", "4294967295", "100000000"] {
        let error = parse(&format!("internal_networks: [192.0.2.0/24]\ncapture:\n  flow_map_entries: {entries}\n"))
            .unwrap_err();
        assert!(error.contains("capture.flow_map_entries") && error.contains("line 3"), "{entries}: {error}");
    }
}

#[test]
fn flow_maps_have_a_bound() {
    assert_eq!(check_flow_map_entries(262_144), Ok(262_144));
    assert!(check_flow_map_entries(0).unwrap_err().starts_with("0 is not between 1 and 16777216"));
    assert!(check_flow_map_entries(u32::MAX as u64).is_err());
}

#[test]
fn keys_are_found_on_their_lines() {
    let text =
        "# comment\ndns:\n  servers: []\n  # min_ttl_seconds: 1\n  min_ttl_seconds: 5\nstore:\n  min_ttl_seconds: 7\n";
    assert_eq!(line_of(text, &["dns", "min_ttl_seconds"]), Some(5));
    assert_eq!(line_of(text, &["store", "min_ttl_seconds"]), Some(7));
    assert_eq!(line_of(text, &["capture", "drain_seconds"]), None);
}

#[test]
fn services_are_any_names_over_presets_in_the_files_order() {
    let config = parse(
        "internal_networks: [192.0.2.0/24]\nservices:\n  rdp: {}\n  dns:\n    share_threshold: 0.9\n  smtp:\n  \
         tftp: {transport: [udp], ports: [69]}\n",
    )
    .unwrap();
    assert_eq!(config.services.names(), ["rdp", "dns", "smtp", "tftp"]);
    let [rdp, dns, smtp, tftp] = config.services.all() else { panic!("four services") };
    assert_eq!(
        (rdp.ports.as_slice(), rdp.roles.as_slice(), rdp.peers),
        (&[3389][..], &[Role::Server][..], Peers::External)
    );
    assert_eq!(
        (rdp.transport.as_slice(), rdp.min_packets, rdp.min_bytes),
        (&[Transport::Tcp, Transport::Udp][..], 3, 120)
    );
    assert_eq!((dns.share_ports.as_slice(), dns.share_threshold, dns.dns_record), (&[53, 853][..], 0.9, DnsRecord::Ns));
    assert_eq!(
        (smtp.roles.as_slice(), smtp.peers, smtp.dns_record),
        (&[Role::Server, Role::Client][..], Peers::Any, DnsRecord::Mx)
    );
    // A service rogue does not know: generic defaults for one datagram.
    assert_eq!((tftp.min_packets, tftp.min_bytes, tftp.share_ports.as_slice()), (1, 28, &[69][..]));
    assert!(tftp.name_pattern.is_match("tftp2") && !tftp.name_pattern.is_match("mail"));
    // --print writes every service in full, itself a configuration that reads the same.
    let printed = to_yaml(&config.effective());
    let again = parse(&printed).unwrap();
    assert_eq!(again.services.all(), config.services.all(), "{printed}");
}

#[test]
fn the_keys_of_rogue_0_1_still_read_and_services_are_checked() {
    let old = parse("internal_networks: [192.0.2.0/24]\nservices:\n  smtp:\n    mail_ports: [25, 587]\n    mail_share_threshold: 0.7\n").unwrap();
    let smtp = &old.services.all()[0];
    assert_eq!((smtp.share_ports.as_slice(), smtp.share_threshold), (&[25, 587][..], 0.7));
    let both =
        parse("internal_networks: [192.0.2.0/24]\nservices:\n  smtp:\n    mail_ports: [25]\n    share_ports: [25]\n")
            .unwrap_err();
    assert!(both.contains("duplicate field `share_ports`"), "{both}");

    let unknown = parse("internal_networks: [192.0.2.0/24]\nservices:\n  smtp: {}\n  gopher: {}\n").unwrap_err();
    assert!(
        unknown.contains(
            "services.gopher.ports: list at least one port (rogue knows smtp, dns, ntp, dhcp, ssh, rdp by name"
        ) && unknown.contains("line 4"),
        "{unknown}"
    );
    let none = parse("internal_networks: [192.0.2.0/24]\nservices: {}\n").unwrap_err();
    assert!(none.contains("services: define at least one service"), "{none}");
    let roles = parse("internal_networks: [192.0.2.0/24]\nservices:\n  ssh:\n    roles: []\n").unwrap_err();
    assert!(roles.contains("services.ssh.roles: list server, client or both") && roles.contains("line 4"), "{roles}");
    let clash = parse("internal_networks: [192.0.2.0/24]\nservices:\n  dhcp:\n    client_ports: [67]\n").unwrap_err();
    assert!(clash.contains("services.dhcp.client_ports: 67 is also one of ports"), "{clash}");
    let name = parse("internal_networks: [192.0.2.0/24]\nservices:\n  Web Server: {ports: [80]}\n").unwrap_err();
    assert!(name.contains("a service's name is lower-case letters"), "{name}");
    let transport = parse("internal_networks: [192.0.2.0/24]\nservices:\n  ssh: {transport: [sctp]}\n").unwrap_err();
    assert!(transport.contains("services.ssh.transport[0]: unknown variant `sctp`"), "{transport}");
}

/// The services the example shows commented out are the ones rogue ships:
/// uncommented, each reads as its preset.
#[test]
fn the_examples_commented_services_state_the_presets() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rogue.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("  # ") {
            Some(rest) if rest.starts_with(' ') || rest.split(':').next().is_some_and(|k| PRESETS.contains(&k)) => {
                format!("  {rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let config = Config::parse(&path, uncommented, "/etc/rogue".into(), SYSTEM_STATE_DIR.into()).unwrap();
    assert_eq!(config.services.names(), PRESETS);
    for service in config.services.all() {
        assert_eq!(service, &Service::named(&service.name), "{}", service.name);
    }
}
