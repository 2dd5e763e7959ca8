//! Real captures from public projects (tests/captures, see PROVENANCE.md)
//! through `rogue flows --pcap`'s code path, against two oracles: nfdump's
//! nfpcapd flow tables, and tshark's dissection put through rogue's rules.

use std::collections::{BTreeMap, HashSet};

use rogue::flows::Timeouts;
use rogue_testkit::{Row, assert_same_rows, captures, is_icmp, meter_capture, nfdump_oracle, stem, tshark};

/// nfpcapd 1.7 exports every ICMP packet, and every UDP packet to or from
/// port 53, as a flow of its own; rogue aggregates them like other flows.
fn one_flow_per_packet_in_nfdump(row: &Row) -> bool {
    is_icmp(row.proto) || (row.proto == 17 && (row.sport == 53 || row.dport == "53"))
}

fn rows(flows: &[rogue::flows::FlowRecord]) -> Vec<Row> {
    flows.iter().map(Row::of).collect()
}

/// Every flow and every counter equals what tshark's independent dissection
/// gives under rogue's documented rules: this covers the flows nfdump builds
/// differently (fragments, tunnels, ICMP, IPv6 extension headers, cut TCP
/// headers) and the two captures nfdump cannot read (802.1ad, raw IPv4).
#[test]
fn every_capture_gives_the_flows_and_counters_of_tshark_dissection() {
    for capture in captures() {
        let name = stem(&capture);
        let frames = tshark::frames(&capture);
        let expected = tshark::flows(&frames, Timeouts::default());
        let (flows, counters) = meter_capture(&capture, Timeouts::default());
        assert_same_rows(&name, &rows(&flows), &rows(&expected));

        let mut expected_counters = tshark::counters(&frames);
        // tshark has no notion of these two; none of these captures has a
        // header too cut or invalid to form a flow, nor a full map.
        assert_eq!((counters.malformed, counters.insert_failed_packets), (0, 0), "{name}");
        expected_counters.malformed = 0;
        assert_eq!(counters, expected_counters, "{name}: counters");
    }
}

/// Outside the differences PROVENANCE.md documents (and README states), the
/// flows equal nfpcapd's exactly: same split points, times to the
/// millisecond, packets, IP bytes and TCP flags.
#[test]
fn every_capture_gives_nfdumps_flows_outside_documented_differences() {
    let mut compared = 0;
    for capture in captures() {
        let name = stem(&capture);
        let oracle = nfdump_oracle(&capture);
        let frames = tshark::frames(&capture);
        if oracle.flows.is_empty() && oracle.tunnelled.is_empty() {
            // nfpcapd rejects 802.1ad (0x88a8) and LINKTYPE_IPV4 (228).
            assert!(
                ["arkime-icmp-dot1ad-88a8", "suricata-crafted-ipv4-options-rawip"].contains(&name.as_str()),
                "{name}: the oracle has no flows"
            );
            continue;
        }
        // Flows that hold a frame nfpcapd treats differently, by rogue's key.
        let differs: HashSet<_> = frames
            .iter()
            .filter(|f| f.fragment || f.tunnel || f.ipv6_extensions || f.tcp_header_cut)
            .filter_map(|f| f.packet)
            .map(|(key, _, _)| (key.src_addr, key.dst_addr, key.proto, key.src_port, key.dst_port))
            .collect();
        let (flows, _) = meter_capture(&capture, Timeouts::default());
        let is_documented_difference = |flow: &rogue::flows::FlowRecord| {
            let key = (
                rogue::flows::key_address(flow.src),
                rogue::flows::key_address(flow.dst),
                flow.proto,
                flow.sport,
                flow.dport,
            );
            differs.contains(&key)
        };
        let keys_that_differ: HashSet<_> =
            flows.iter().filter(|f| is_documented_difference(f)).map(|f| Row::of(f).key()).collect();

        let ours: Vec<Row> = flows
            .iter()
            .filter(|f| !is_documented_difference(f))
            .map(Row::of)
            .filter(|r| !one_flow_per_packet_in_nfdump(r))
            .collect();
        let theirs: Vec<Row> = oracle
            .flows
            .iter()
            // 0 and 44: nfpcapd keeps the first IPv6 extension header as the protocol.
            .filter(|r| !one_flow_per_packet_in_nfdump(r) && r.proto != 0 && r.proto != 44)
            .filter(|r| !keys_that_differ.contains(&r.key()))
            .cloned()
            .collect();
        assert_same_rows(&name, &ours, &theirs);

        // Where nfpcapd makes a flow of every packet, the packets and bytes
        // per flow key must still add up to the same.
        let per_key_totals = |rows: Vec<Row>| {
            let mut totals: BTreeMap<_, (u64, u64)> = BTreeMap::new();
            for row in
                rows.into_iter().filter(|r| one_flow_per_packet_in_nfdump(r) && !keys_that_differ.contains(&r.key()))
            {
                let total = totals.entry(row.key()).or_default();
                total.0 += row.packets;
                total.1 += row.bytes;
            }
            totals
        };
        assert_eq!(
            per_key_totals(rows(&flows)),
            per_key_totals(oracle.flows.clone()),
            "{name}: packets and bytes of ICMP and DNS flows"
        );
        compared += 1;
    }
    assert_eq!(compared, 29, "every capture nfpcapd reads was compared");
}

/// The organisation's side of each capture with SMTP, as an analyst would
/// configure it (the private ranges are internal everywhere).
const INTERNAL: &[(&str, &[&str])] = &[
    ("arkime-smtp-port25-and-2525", &["45.0.0.0/16"]),
    ("ndpi-smtp-starttls-ipv4-ipv6-vlan", &["2003:de:2016::/48"]),
    ("zeek-smtp-bdat-pipeline-exim", &["217.146.107.0/24"]),
    ("zeek-smtp-ipv6-gmail", &["2001:470:e5bf::/48"]),
    ("zeek-smtp-multi-addr-cern", &["188.184.0.0/16"]),
    ("zeek-smtp-one-side-only", &["192.150.186.0/23"]),
    ("zeek-smtp-truncated-tcp-header", &["128.3.0.0/16"]),
];
const PRIVATE: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"];

/// Every SMTP host of every capture is found, with its roles and peers as
/// the method's rules give them from nfdump's TCP port 25 flows (oracle
/// section 3), worked out here independently of rogue's code.
#[test]
fn every_smtp_host_of_the_real_captures_is_found_with_its_roles_and_peers() {
    use std::collections::BTreeMap;

    let mut hosts_found = 0;
    for capture in captures() {
        let name = stem(&capture);
        let oracle = rogue_testkit::nfdump_section(&capture, 3);
        let networks: Vec<ipnet::IpNet> = PRIVATE
            .iter()
            .chain(INTERNAL.iter().filter(|(n, _)| *n == name).flat_map(|(_, nets)| nets.iter()))
            .map(|n| n.parse().unwrap())
            .collect();
        let internal = |addr: &str| networks.iter().any(|n| n.contains(&addr.parse::<std::net::IpAddr>().unwrap()));
        // (host, role, peer) -> flows, by the method: TCP, port 25 facing an
        // ephemeral or port 25, >= 3 packets and >= 120 bytes.
        let mut expected: BTreeMap<(String, &str, String), u64> = BTreeMap::new();
        for row in oracle.flows.iter().filter(|r| r.proto == 6 && r.packets >= 3 && r.bytes >= 120) {
            let dport: u16 = row.dport.parse().unwrap();
            let smtp_side = |port: u16, other: u16| port == 25 && (other >= 1024 || other == 25);
            let mut role = |host: &str, role: &'static str, peer: &str| {
                *expected.entry((host.to_string(), role, peer.to_string())).or_default() += 1;
            };
            if internal(&row.src) {
                if smtp_side(row.sport, dport) {
                    role(&row.src, "server", &row.dst);
                } else if smtp_side(dport, row.sport) && !internal(&row.dst) {
                    role(&row.src, "client", &row.dst);
                }
            }
            if internal(&row.dst) {
                if smtp_side(dport, row.sport) {
                    role(&row.dst, "server", &row.src);
                } else if smtp_side(row.sport, dport) && !internal(&row.src) {
                    role(&row.dst, "client", &row.src);
                }
            }
        }

        let config = format!(
            "internal_networks: [{}]\nstore: {{retention_days: 100000}}\n",
            networks.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
        );
        let workspace = rogue_testkit::analysis::Workspace::new(&format!("real-{name}"), &config, "");
        let findings = workspace.analyze(&[&capture]);
        let mut found: BTreeMap<(String, &str, String), u64> = BTreeMap::new();
        for host in workspace.json(&["hosts", "--peers", "--format", "jsonl"]) {
            for peer in host["peers"].as_array().unwrap() {
                // A peer that is a client means the host served it.
                let role = if peer["kind"] == "client" { "server" } else { "client" };
                let key =
                    (host["host"].as_str().unwrap().to_string(), role, peer["peer"].as_str().unwrap().to_string());
                found.insert(key, peer["flows"].as_u64().unwrap());
            }
        }
        assert_eq!(found, expected, "{name}: (host, role, peer) -> flows");
        let hosts: std::collections::BTreeSet<&String> = expected.keys().map(|(host, _, _)| host).collect();
        let reported: std::collections::BTreeSet<&str> =
            findings.iter().filter(|f| f["kind"] == "rogue_server").map(|f| f["host"].as_str().unwrap()).collect();
        assert_eq!(
            reported,
            hosts.iter().map(|h| h.as_str()).collect(),
            "{name}: every SMTP host is a rogue_server finding"
        );
        hosts_found += hosts.len();
    }
    eprintln!("{hosts_found} SMTP hosts found with their roles and peers");
    assert!(hosts_found >= 15, "{hosts_found} SMTP hosts across the captures");
}
