//! The packet parser in userspace, on crafted frames covering every layer
//! and every way a frame can be cut short. tests/xdp.rs runs the same table
//! through the kernel program.

use rogue::{
    capture::FlowDelta,
    flows::{FlowCache, Timeouts},
};
use rogue_common::{
    MeterCounters,
    parse::{LinkType, parse, parse_ethernet},
};
use rogue_testkit::packets::{CLIENT_V4, CLIENT_V6, ExpectedFlow, SERVER_V4, SERVER_V6, cases, ipv4, ipv6, tcp};

/// What the userspace meter makes of one frame: its flow and counters.
fn meter(frame: &[u8]) -> (Option<ExpectedFlow>, MeterCounters) {
    let packet = parse_ethernet(frame);
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

#[test]
fn frames_shorter_than_an_ethernet_header_are_malformed() {
    for len in 0..14 {
        let packet = parse_ethernet(&[0u8; 13][..len]);
        assert!(packet.is_malformed() && !packet.has_flow(), "{len} bytes");
    }
}

#[test]
fn cooked_raw_and_loopback_link_layers_reach_the_same_ip_packet() {
    let ip = ipv4(CLIENT_V4, SERVER_V4, 6, &[], 0, &tcp(40000, 25, 0x02, &[]));
    let ethernet = parse_ethernet(&rogue_testkit::packets::ethernet(0x0800, &ip)[..]);
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
        assert_eq!(parse(&frame[..], link), ethernet, "{link:?}: {:02x?}", &frame[..4]);
    }
    let ip6 = ipv6(CLIENT_V6, SERVER_V6, &[], 6, &tcp(40000, 25, 0x02, &[]));
    let ethernet6 = parse_ethernet(&rogue_testkit::packets::ethernet(0x86dd, &ip6)[..]);
    assert_eq!(parse(&[&[0xff, 0x03, 0x00, 0x57][..], &ip6].concat()[..], LinkType::Ppp), ethernet6);
    assert_eq!(parse(&[&[0x8f, 0x00, 0x86, 0xdd][..], &ip6].concat()[..], LinkType::CiscoHdlc), ethernet6);
    // LCP is PPP's own control: no flow, and not malformed.
    let lcp = parse(&[0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04][..], LinkType::Ppp);
    assert!(!lcp.has_flow() && !lcp.is_malformed());
    assert!(parse(&[0xff, 0x03][..], LinkType::Ppp).is_malformed(), "cut before the protocol");
    for (value, link) in [(9, LinkType::Ppp), (50, LinkType::PppHdlc), (104, LinkType::CiscoHdlc)] {
        assert_eq!(LinkType::from_linktype(value), Some(link));
    }
    assert_eq!(LinkType::from_linktype(105), None, "802.11 is not read");
}
