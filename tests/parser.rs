//! The packet parser in userspace, on crafted frames covering every layer
//! and every way a frame can be cut short. tests/xdp.rs runs the same table
//! through the kernel program.

use rogue::{
    capture::FlowDelta,
    flows::{FlowCache, Timeouts},
};
use rogue_common::{
    MeterCounters,
    parse::{Decapsulate, LinkType, NotIp, parse, parse_ethernet},
};
use rogue_testkit::packets::{
    CLIENT_V4, CLIENT_V6, ExpectedFlow, SERVER_V4, SERVER_V6, cases, ipv4, ipv6, tcp, tunnel_cases,
};

/// What the userspace meter makes of one frame: its flow and counters.
fn meter(frame: &[u8]) -> (Option<ExpectedFlow>, MeterCounters) {
    meter_opening(frame, Decapsulate::NONE)
}

/// [`meter`], opening the tunnels `decapsulate` names.
fn meter_opening(frame: &[u8], decapsulate: Decapsulate) -> (Option<ExpectedFlow>, MeterCounters) {
    let packet = parse_ethernet(frame, decapsulate);
    let mut counters = MeterCounters::default();
    counters.count(&packet, frame.len() as u64);
    if !packet.has_flow() {
        return (None, counters);
    }
    let mut cache = FlowCache::new(Timeouts::default());
    let mut flows = Vec::new();
    let delta = FlowDelta { packets: 1, bytes: packet.ip_bytes as u64, first: 0, last: 0, tcp_flags: packet.tcp_flags };
    cache.add(&packet.key, delta, &mut flows);
    cache.flush(&mut flows);
    assert_eq!(flows.len(), 1);
    (Some(ExpectedFlow::of(&flows[0])), counters)
}

#[test]
fn every_crafted_frame_gives_its_flow_and_counters() {
    for case in cases() {
        let (flow, counters) = meter(&case.frame);
        assert_eq!(flow, case.flow, "{}: flow", case.name);
        assert_eq!(counters, case.counts.counters(case.frame.len(), &case.flow), "{}: counters", case.name);
    }
}

/// Closed, a tunnel is its outer packet's flow; opened, its inner packet's,
/// as deep as rogue goes. Each tunnel opens by its own name only.
#[test]
fn every_tunnel_gives_its_outer_flow_closed_and_its_inner_flow_opened() {
    for case in tunnel_cases() {
        for (decapsulate, (flow, counts), state) in
            [(Decapsulate::NONE, &case.outer, "closed"), (Decapsulate::ALL, &case.opened, "opened")]
        {
            let (got, counters) = meter_opening(&case.frame, decapsulate);
            assert_eq!(got, *flow, "{} ({state}): flow", case.name);
            assert_eq!(counters, counts.counters(case.frame.len(), flow), "{} ({state}): counters", case.name);
        }
    }
    let by_name = |name: &str| tunnel_cases().into_iter().find(|c| c.name.starts_with(name)).unwrap();
    for (name, opens, others) in [
        ("IP-in-IP", Decapsulate::IPIP, Decapsulate::GRE | Decapsulate::VXLAN),
        ("GRE with a key", Decapsulate::GRE, Decapsulate::ERSPAN | Decapsulate::IPIP),
        ("ERSPAN type II", Decapsulate::ERSPAN, Decapsulate::GRE),
        ("VXLAN carrying IPv6", Decapsulate::VXLAN, Decapsulate::GENEVE),
        ("Geneve carrying IPv4", Decapsulate::GENEVE, Decapsulate::VXLAN),
    ] {
        let case = by_name(name);
        assert_eq!(meter_opening(&case.frame, Decapsulate(opens)).0, case.opened.0, "{name} opened by its name");
        assert_eq!(meter_opening(&case.frame, Decapsulate(others)).0, case.outer.0, "{name} closed to the others");
    }
    // The outer layers a mirror's frame came in stay counted.
    let vxlan = by_name("VXLAN carrying IPv6");
    let tagged = rogue_testkit::packets::with_vlans(&vxlan.frame, &[(0x8100, 42)]);
    assert_eq!(meter_opening(&tagged, Decapsulate::ALL).1.vlan, 1);
}

#[test]
fn frames_shorter_than_an_ethernet_header_are_malformed() {
    for len in 0..14 {
        let packet = parse_ethernet(&[0u8; 13][..len], Decapsulate::NONE);
        assert!(packet.is_malformed() && !packet.has_flow(), "{len} bytes");
    }
}

#[test]
fn cooked_raw_and_loopback_link_layers_reach_the_same_ip_packet() {
    let ip = ipv4(CLIENT_V4, SERVER_V4, 6, &[], 0, &tcp(40000, 25, 0x02, &[]));
    let ethernet = parse_ethernet(&rogue_testkit::packets::ethernet(0x0800, &ip)[..], Decapsulate::NONE);
    let sll = [&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 0xaa, 0, 0, 0x08, 0x00][..], &ip].concat();
    let sll2 = [&[0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 0xaa, 0, 0][..], &ip].concat();
    let null_little_endian = [&[2, 0, 0, 0][..], &ip].concat();
    let loop_network_order = [&[0, 0, 0, 2][..], &ip].concat();
    let ppp_framed = [&[0xff, 0x03, 0x00, 0x21][..], &ip].concat();
    let ppp_bare = [&[0x00, 0x21][..], &ip].concat();
    let ppp_compressed = [&[0x21][..], &ip].concat();
    let cisco_hdlc = [&[0x0f, 0x00, 0x08, 0x00][..], &ip].concat();
    for (link, frame) in [
        (LinkType::LinuxSll, sll),
        (LinkType::LinuxSll2, sll2),
        (LinkType::RawIp, ip.clone()),
        (LinkType::Null, null_little_endian),
        (LinkType::Loop, loop_network_order),
        (LinkType::Ppp, ppp_framed.clone()),
        (LinkType::Ppp, ppp_bare),
        (LinkType::Ppp, ppp_compressed),
        (LinkType::PppHdlc, ppp_framed),
        (LinkType::PppHdlc, cisco_hdlc.clone()),
        (LinkType::CiscoHdlc, cisco_hdlc),
    ] {
        assert_eq!(parse(&frame[..], link, Decapsulate::NONE), ethernet, "{link:?}: {:02x?}", &frame[..4]);
    }
    let ip6 = ipv6(CLIENT_V6, SERVER_V6, &[], 6, &tcp(40000, 25, 0x02, &[]));
    let ethernet6 = parse_ethernet(&rogue_testkit::packets::ethernet(0x86dd, &ip6)[..], Decapsulate::NONE);
    assert_eq!(parse(&[&[0xff, 0x03, 0x00, 0x57][..], &ip6].concat()[..], LinkType::Ppp, Decapsulate::NONE), ethernet6);
    assert_eq!(
        parse(&[&[0x8f, 0x00, 0x86, 0xdd][..], &ip6].concat()[..], LinkType::CiscoHdlc, Decapsulate::NONE),
        ethernet6
    );
    // LCP is PPP's own control: no flow, and not malformed.
    let lcp = parse(&[0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04][..], LinkType::Ppp, Decapsulate::NONE);
    assert!(!lcp.has_flow() && !lcp.is_malformed());
    assert!(parse(&[0xff, 0x03][..], LinkType::Ppp, Decapsulate::NONE).is_malformed(), "cut before the protocol");
    for (value, link) in [(9, LinkType::Ppp), (50, LinkType::PppHdlc), (104, LinkType::CiscoHdlc)] {
        assert_eq!(LinkType::from_linktype(value), Some(link));
    }
}

/// An 802.11 MAC header: frame control, duration, three addresses and the
/// sequence control (24 bytes), and `extra` (a fourth address, QoS, HT).
fn wlan_header(control: u8, flags: u8, extra: &[u8]) -> Vec<u8> {
    [&[control, flags, 0, 0][..], &[0x02; 18], &[0x10, 0x00], extra].concat()
}

#[test]
fn frame_relay_802_11_and_pktap_reach_the_same_ip_packet_and_name_what_they_skip() {
    let ip = ipv4(CLIENT_V4, SERVER_V4, 6, &[], 0, &tcp(40000, 25, 0x02, &[]));
    let ethernet_frame = rogue_testkit::packets::ethernet(0x0800, &ip);
    let ethernet = parse_ethernet(&ethernet_frame[..], Decapsulate::NONE);
    let snap_ipv4 = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00];
    let data = [wlan_header(0x08, 0x01, &[]), snap_ipv4.to_vec(), ip.clone()].concat();
    let qos_data = [wlan_header(0x88, 0x01, &[0x00, 0x00]), snap_ipv4.to_vec(), ip.clone()].concat();
    let qos_ht = [wlan_header(0x88, 0x81, &[0, 0, 0, 0, 0, 0]), snap_ipv4.to_vec(), ip.clone()].concat();
    let four_addresses = [wlan_header(0x08, 0x03, &[0x04; 6]), snap_ipv4.to_vec(), ip.clone()].concat();
    let radiotap = [&[0, 0, 8, 0, 0, 0, 0, 0][..], &data].concat();
    let prism = [&0x41u32.to_le_bytes()[..], &144u32.to_le_bytes(), &[0; 136], &data].concat();
    let avs = [&[0x80, 0x21, 0x10, 0x01][..], &64u32.to_be_bytes(), &[0; 56], &data].concat();
    let pktap =
        [&108u32.to_le_bytes()[..], &1u32.to_le_bytes(), &1u32.to_le_bytes(), &[0; 96], &ethernet_frame].concat();
    // DLCI 100 as a two-byte Q.922 address.
    let dlci = [0x18, 0x41];
    let fr_nlpid = [&dlci[..], &[0x03, 0xcc], &ip].concat();
    let fr_snap = [&dlci[..], &[0x03, 0x00, 0x80, 0x00, 0x00, 0x00, 0x08, 0x00], &ip].concat();
    let fr_cisco = [&dlci[..], &[0x08, 0x00], &ip].concat();
    for (link, frame) in [
        (LinkType::Wlan, data.clone()),
        (LinkType::Wlan, qos_data),
        (LinkType::Wlan, qos_ht),
        (LinkType::Wlan, four_addresses),
        (LinkType::WlanRadiotap, radiotap),
        (LinkType::WlanPrism, prism),
        (LinkType::WlanPrism, avs.clone()),
        (LinkType::WlanAvs, avs),
        (LinkType::Pktap, pktap),
        (LinkType::FrameRelay, fr_nlpid),
        (LinkType::FrameRelay, fr_snap),
        (LinkType::FrameRelay, fr_cisco),
    ] {
        assert_eq!(parse(&frame[..], link, Decapsulate::NONE), ethernet, "{link:?}: {:02x?}", &frame[..8]);
    }
    let ip6 = ipv6(CLIENT_V6, SERVER_V6, &[], 6, &tcp(40000, 25, 0x02, &[]));
    let ethernet6 = parse_ethernet(&rogue_testkit::packets::ethernet(0x86dd, &ip6)[..], Decapsulate::NONE);
    assert_eq!(
        parse(&[&dlci[..], &[0x03, 0x8e], &ip6].concat()[..], LinkType::FrameRelay, Decapsulate::NONE),
        ethernet6
    );

    // What is skipped, and as what.
    let beacon = wlan_header(0x80, 0x00, &[0; 12]);
    let protected = [wlan_header(0x88, 0x41, &[0, 0]), vec![0x5a; 40]].concat();
    let null_data = wlan_header(0x48, 0x01, &[]);
    let lmi = [0x00, 0x01, 0x03, 0x08, 0x00, 0x75, 0x95];
    let slarp = [0x8f, 0x00, 0x80, 0x35, 0, 0, 0, 2];
    let lcp = [0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04];
    let arp_over_wlan =
        [wlan_header(0x08, 0x01, &[]), vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x06], vec![0; 28]].concat();
    let mut counters = MeterCounters::default();
    for (link, frame, kind) in [
        (LinkType::Wlan, beacon, NotIp::LinkControl),
        (LinkType::Wlan, null_data, NotIp::LinkControl),
        (LinkType::Wlan, protected, NotIp::Encrypted),
        (LinkType::Wlan, arp_over_wlan, NotIp::OtherProtocol),
        (LinkType::FrameRelay, lmi.to_vec(), NotIp::LinkControl),
        (LinkType::CiscoHdlc, slarp.to_vec(), NotIp::LinkControl),
        (LinkType::Ppp, lcp.to_vec(), NotIp::LinkControl),
    ] {
        let packet = parse(&frame[..], link, Decapsulate::NONE);
        assert!(!packet.has_flow() && !packet.is_malformed(), "{link:?} {kind:?}");
        assert_eq!(packet.not_ip, kind, "{link:?}: {:02x?}", &frame[..4]);
        counters.count(&packet, frame.len() as u64);
    }
    assert_eq!((counters.non_ip, counters.link_control, counters.encrypted), (7, 5, 1));

    // Cut short or lying: malformed, never read past the frame.
    assert!(parse(&data[..20], LinkType::Wlan, Decapsulate::NONE).is_malformed(), "cut inside the MAC header");
    assert!(
        parse(&[0, 0, 0xff, 0xff, 0, 0, 0, 0][..], LinkType::WlanRadiotap, Decapsulate::NONE).is_malformed(),
        "it_len past the end"
    );
    assert!(parse(&[0x09, 0x01][..], LinkType::Wlan, Decapsulate::NONE).is_malformed(), "protocol version 1");
    assert!(parse(&[0x18][..], LinkType::FrameRelay, Decapsulate::NONE).is_malformed(), "cut inside the address");
    assert!(
        parse(&[&u32::MAX.to_le_bytes()[..], &[0; 8]].concat()[..], LinkType::Pktap, Decapsulate::NONE).is_malformed()
    );

    for (value, link) in [
        (105, LinkType::Wlan),
        (107, LinkType::FrameRelay),
        (119, LinkType::WlanPrism),
        (127, LinkType::WlanRadiotap),
        (163, LinkType::WlanAvs),
        (258, LinkType::Pktap),
    ] {
        assert_eq!(LinkType::from_linktype(value), Some(link));
    }
    assert_eq!(LinkType::from_linktype(6), None, "Token Ring is not read");
}
