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
use rogue_testkit::packets::{CLIENT_V4, ExpectedFlow, SERVER_V4, cases, ipv4, tcp};

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
    for (link, frame) in [
        (LinkType::LinuxSll, sll),
        (LinkType::LinuxSll2, sll2),
        (LinkType::RawIp, ip.clone()),
        (LinkType::Null, null_little_endian),
        (LinkType::Loop, loop_network_order),
    ] {
        assert_eq!(parse(&frame[..], link), ethernet, "{link:?}");
    }
    assert_eq!(LinkType::from_linktype(105), None, "802.11 is not read");
}
