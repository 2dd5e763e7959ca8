//! Real captures from public projects (tests/captures, see PROVENANCE.md)
//! through `rogue flows --pcap`'s code path, against two oracles: nfdump's
//! nfpcapd flow tables, and tshark's dissection put through rogue's rules.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
};

use rogue::flows::Timeouts;
use rogue_common::{MeterCounters, parse::Decapsulate};
use rogue_testkit::{
    Row, assert_same_rows, captures, captures_dir, is_icmp, meter_capture, meter_capture_opening, nfdump_oracle,
    pcap_records, stem, tshark, tunnel_captures,
};

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

/// The real captures of link types other than Ethernet
/// (tests/captures/link-layers, see PROVENANCE.md), with the LINKTYPE each
/// must declare: every flow and counter equals tshark's dissection, the
/// frames skipped counted by kind.
#[test]
fn every_link_type_capture_gives_the_flows_and_counters_of_tshark_dissection() {
    let captures = [
        ("tcpdump-ppp-mpls-traceroute", 9),
        ("zeek-ppp-quic-ipv4-ipv6", 9),
        ("tcpdump-cisco-hdlc-icmp-slarp-cdp", 104),
        ("zeek-wlan-dns-mdns", 105),
        ("tcpdump-frame-relay-ospfv3", 107),
        ("zeek-radiotap-dns-mdns", 127),
        ("tcpdump-radiotap-qos-htc-dhcp", 127),
        ("tcpdump-radiotap-management", 127),
        ("tcpdump-radiotap-protected", 127),
        ("tcpdump-pktap-ethernet", 258),
    ];
    let mut total = MeterCounters::default();
    for (name, linktype) in captures {
        let capture = captures_dir().join("link-layers").join(format!("{name}.pcap"));
        let (header, _) = pcap_records(&capture);
        assert_eq!(u32::from_le_bytes(header[20..24].try_into().unwrap()), linktype, "{name}: its link type");
        let frames = tshark::frames(&capture);
        let (flows, counters) = meter_capture(&capture, Timeouts::default());
        assert_same_rows(name, &rows(&flows), &rows(&tshark::flows(&frames, Timeouts::default())));
        assert_eq!(counters.malformed, 0, "{name}");
        assert_eq!(counters, tshark::counters(&frames), "{name}: counters");
        total.add(&counters);
    }
    // What the set holds, so that no kind goes untested: 28 SLARP and CDP
    // frames and 26 802.11 management, control and null-data frames, 3
    // encrypted data frames, and IP in every file but those (18 of PPP's
    // IPv4 packets in MPLS).
    assert_eq!((total.link_control, total.encrypted), (28 + 26, 3));
    assert_eq!((total.ipv4_packets, total.ipv6_packets), (18 + 22 + 10 + 2 + 2 + 1 + 1, 4 + 1 + 86 + 1));
}

/// A frame made from an original Ethernet frame; None leaves it out.
type Framing = Box<dyn Fn(&[u8]) -> Option<Vec<u8>>>;

/// `records` (each a pcap record: its 16-byte header, then its frame) as a
/// pcap of link type `linktype`, each frame made by `framing`.
fn reframed(out: &Path, linktype: u32, records: &[Vec<u8>], framing: &Framing) {
    let mut file = [&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0][..], &[0; 8], &262_144u32.to_le_bytes()].concat();
    file.extend(linktype.to_le_bytes());
    for record in records {
        let (header, original) = record.split_at(16);
        let Some(data) = framing(original) else { continue };
        // On the wire, the frame grew or shrank as the captured bytes did.
        let wire = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize + data.len() - original.len();
        file.extend(&header[..8]);
        file.extend((data.len() as u32).to_le_bytes());
        file.extend((wire as u32).to_le_bytes());
        file.extend(&data);
    }
    std::fs::write(out, file).unwrap();
}

/// The IP packet of an untagged Ethernet frame, and whether it is IPv6.
fn ip_of(ethernet: &[u8]) -> Option<(&[u8], bool)> {
    match ethernet.get(12..14)? {
        [0x08, 0x00] => Some((&ethernet[14..], false)),
        [0x86, 0xdd] => Some((&ethernet[14..], true)),
        _ => None,
    }
}

/// A framing of the Ethernet frame's IP packet (`f` is given it and
/// whether it is IPv6).
fn over_ip(f: impl Fn(&[u8], bool) -> Vec<u8> + 'static) -> Framing {
    Box::new(move |frame| ip_of(frame).map(|(ip, v6)| f(ip, v6)))
}

fn ethertype(v6: bool) -> [u8; 2] {
    if v6 { [0x86, 0xdd] } else { [0x08, 0x00] }
}

/// An 802.11 data frame to the AP (24-byte MAC header) with LLC/SNAP.
fn wlan_data(ip: &[u8], v6: bool) -> Vec<u8> {
    [&[0x08, 0x01, 0, 0][..], &[0x02; 18], &[0x10, 0x00], &[0xaa, 0xaa, 0x03, 0, 0, 0], &ethertype(v6), ip].concat()
}

/// The IP packets of real Ethernet captures, framed as each link type rogue
/// reads frames them (the header bytes each standard gives): rogue makes
/// the same flows of them as of the Ethernet original, and tshark, which
/// dissects them on its own, agrees frame by frame.
#[test]
fn the_same_ip_packets_in_every_link_type_give_the_same_flows() {
    let ppp = |v6: bool| if v6 { 0x57 } else { 0x21 };
    let nlpid = |v6: bool| if v6 { 0x8e } else { 0xcc };
    let framings: Vec<(&str, u32, Framing)> = vec![
        ("ppp", 9, over_ip(move |ip, v6| [&[0xff, 0x03, 0x00, ppp(v6)][..], ip].concat())),
        ("ppp-compressed", 9, over_ip(move |ip, v6| [&[ppp(v6)][..], ip].concat())),
        ("ppp-hdlc", 50, over_ip(move |ip, v6| [&[0xff, 0x03, 0x00, ppp(v6)][..], ip].concat())),
        ("cisco-hdlc", 104, over_ip(|ip, v6| [&[0x0f, 0x00][..], &ethertype(v6), ip].concat())),
        ("frame-relay-nlpid", 107, over_ip(move |ip, v6| [&[0x18, 0x41, 0x03, nlpid(v6)][..], ip].concat())),
        (
            "frame-relay-3-byte-address",
            107,
            over_ip(move |ip, v6| [&[0x18, 0x40, 0x05, 0x03, nlpid(v6)][..], ip].concat()),
        ),
        (
            "frame-relay-snap",
            107,
            over_ip(|ip, v6| [&[0x18, 0x41, 0x03, 0x00, 0x80, 0, 0, 0][..], &ethertype(v6), ip].concat()),
        ),
        ("frame-relay-cisco", 107, over_ip(|ip, v6| [&[0x18, 0x41][..], &ethertype(v6), ip].concat())),
        ("wlan", 105, over_ip(wlan_data)),
        (
            "wlan-qos-4-addresses",
            105,
            over_ip(|ip, v6| {
                let data = wlan_data(ip, v6);
                [&[0x88, 0x03][..], &data[2..24], &[0x04; 6], &[0x00, 0x00], &data[24..]].concat()
            }),
        ),
        ("radiotap", 127, over_ip(|ip, v6| [&[0, 0, 8, 0, 0, 0, 0, 0][..], &wlan_data(ip, v6)].concat())),
        (
            "prism",
            119,
            over_ip(|ip, v6| {
                [&0x41u32.to_le_bytes()[..], &144u32.to_le_bytes(), &[0; 136], &wlan_data(ip, v6)].concat()
            }),
        ),
        (
            "avs",
            163,
            over_ip(|ip, v6| {
                [&[0x80, 0x21, 0x10, 0x01][..], &64u32.to_be_bytes(), &[0; 56], &wlan_data(ip, v6)].concat()
            }),
        ),
        ("raw", 101, over_ip(|ip, _| ip.to_vec())),
        (
            "pktap",
            258,
            Box::new(|frame| {
                Some([&108u32.to_le_bytes()[..], &1u32.to_le_bytes(), &1u32.to_le_bytes(), &[0; 96], frame].concat())
            }),
        ),
    ];
    let dir = std::env::temp_dir().join(format!("rogue-reframed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for original in ["zeek-smtp-two-sessions", "zeek-smtp-ipv6-gmail", "suricata-lan-mixed-ipopts-ipv6-icmp"] {
        let (_, records) = pcap_records(&captures_dir().join(format!("{original}.pcap")));
        let untagged: Vec<_> = records.into_iter().filter(|record| ip_of(&record[16..]).is_some()).collect();
        let ethernet = dir.join(format!("{original}.pcap"));
        reframed(&ethernet, 1, &untagged, &(Box::new(|frame: &[u8]| Some(frame.to_vec())) as Framing));
        let (expected, on_ethernet) = meter_capture(&ethernet, Timeouts::default());
        assert!(!expected.is_empty(), "{original}");
        for (name, linktype, framing) in &framings {
            let capture = dir.join(format!("{original}-{name}.pcap"));
            reframed(&capture, *linktype, &untagged, framing);
            let what = format!("{original} as {name}");
            let (flows, counters) = meter_capture(&capture, Timeouts::default());
            assert_same_rows(&what, &rows(&flows), &rows(&expected));
            let by_tshark = tshark::flows(&tshark::frames(&capture), Timeouts::default());
            assert_same_rows(&format!("{what}, by tshark"), &rows(&flows), &rows(&by_tshark));
            let ip_counts = |c: &MeterCounters| (c.ipv4_packets, c.ipv6_packets, c.ipv4_bytes, c.ipv6_bytes, c.non_ip);
            assert_eq!(ip_counts(&counters), ip_counts(&on_ethernet), "{what}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real captures of every tunnel rogue opens (tests/captures/tunnels,
/// see PROVENANCE.md). Closed, each frame's outer packet is its flow;
/// opened, the packet inside (or none, when the tunnel carries no IP);
/// each as tshark dissects the frame, counters included.
#[test]
fn every_tunnel_capture_gives_tsharks_outer_flows_closed_and_inner_flows_opened() {
    let mut opened_frames = BTreeMap::new();
    for capture in tunnel_captures() {
        let name = stem(&capture);
        for (decapsulate, frames, state) in [
            (Decapsulate::NONE, tshark::frames(&capture), "closed"),
            (Decapsulate::ALL, tshark::frames_opened(&capture), "opened"),
        ] {
            let what = format!("{name} ({state})");
            let (flows, counters) = meter_capture_opening(&capture, Timeouts::default(), decapsulate);
            assert_same_rows(&what, &rows(&flows), &rows(&tshark::flows(&frames, Timeouts::default())));
            assert_eq!(counters.malformed, 0, "{what}");
            assert_eq!(counters, tshark::counters(&frames), "{what}: counters");
            if decapsulate == Decapsulate::ALL {
                opened_frames.insert(name.clone(), counters.decapsulated);
            }
        }
    }
    // Every file of a tunnel has frames opened; the BIG TCP ones (a zero
    // length taken from the capture) have none to open.
    for (name, opened) in &opened_frames {
        assert_eq!(*opened == 0, name.starts_with("tcpdump-bigtcp"), "{name}: {opened} frames opened");
    }
    assert_eq!(opened_frames.len(), 19);
}
