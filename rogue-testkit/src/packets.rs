//! Crafted frames with the outcome each must have, written out byte by byte
//! so the test reads as the packet does. One table serves the userspace
//! parser test and the XDP program test, so both are held to the same cases.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 0x25);

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const SYN: u8 = 0x02;
pub const PSH_ACK: u8 = 0x18;

/// The flow a frame must join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub bytes: u64,
    pub tcp_flags: u8,
}

/// What the meter's counters must have gained from the frame, besides
/// packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpectedCounts {
    pub ipv4: u64,
    pub ipv6: u64,
    pub non_ip: u64,
    pub vlan: u64,
    pub mpls: u64,
    pub pppoe: u64,
    pub fragments: u64,
    pub malformed: u64,
    pub decapsulated: u64,
}

impl ExpectedCounts {
    /// The whole counters one frame of `frame_len` bytes must leave behind.
    pub fn counters(&self, frame_len: usize, flow: &Option<ExpectedFlow>) -> rogue_common::MeterCounters {
        let ip_bytes = flow.as_ref().map_or(0, |f| f.bytes);
        rogue_common::MeterCounters {
            packets: 1,
            bytes: frame_len as u64,
            ipv4_packets: self.ipv4,
            ipv4_bytes: self.ipv4 * ip_bytes,
            ipv6_packets: self.ipv6,
            ipv6_bytes: self.ipv6 * ip_bytes,
            non_ip: self.non_ip,
            // Ethernet has neither: they are 802.11's, PPP's, HDLC's.
            link_control: 0,
            encrypted: 0,
            vlan: self.vlan,
            mpls: self.mpls,
            pppoe: self.pppoe,
            fragments: self.fragments,
            decapsulated: self.decapsulated,
            malformed: self.malformed,
            insert_failed_packets: 0,
            insert_failed_bytes: 0,
        }
    }
}

impl ExpectedFlow {
    pub fn of(flow: &rogue::flows::FlowRecord) -> ExpectedFlow {
        ExpectedFlow {
            src: flow.src,
            dst: flow.dst,
            proto: flow.proto,
            sport: flow.sport,
            dport: flow.dport,
            bytes: flow.bytes,
            tcp_flags: flow.tcp_flags,
        }
    }
}

pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub flow: Option<ExpectedFlow>,
    pub counts: ExpectedCounts,
}

/// A frame carrying a tunnel: what it must give with no tunnel opened (the
/// outer packet), and with every tunnel opened.
pub struct TunnelCase {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub outer: (Option<ExpectedFlow>, ExpectedCounts),
    pub opened: (Option<ExpectedFlow>, ExpectedCounts),
}

// ---- building blocks --------------------------------------------------

pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa];
    frame.extend(ethertype.to_be_bytes());
    frame.extend(payload);
    frame
}

/// Inserts tags (TPID, VLAN id) after the MAC addresses, outermost first.
pub fn with_vlans(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for &(tpid, vid) in tags {
        out.extend(tpid.to_be_bytes());
        out.extend(vid.to_be_bytes());
    }
    out.extend(&frame[12..]);
    out
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], fragment: u16, payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let header_len = 20 + options.len();
    let total = (header_len + payload.len()) as u16;
    let mut packet = vec![0x40 | (header_len / 4) as u8, 0];
    packet.extend(total.to_be_bytes());
    packet.extend([0x12, 0x34]); // identification
    packet.extend(fragment.to_be_bytes());
    packet.extend([64, proto, 0, 0]); // TTL, protocol, checksum (unchecked)
    packet.extend(src.octets());
    packet.extend(dst.octets());
    packet.extend(options);
    packet.extend(payload);
    packet
}

/// IPv6 with extension headers given as (header type, next-header-less body):
/// each body is completed with its next-header byte.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, extensions: &[(u8, Vec<u8>)], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, body)) in extensions.iter().enumerate() {
        let next = extensions.get(i + 1).map_or(proto, |(kind, _)| *kind);
        chain.push(next);
        chain.extend(body);
    }
    chain.extend(payload);
    let first = extensions.first().map_or(proto, |(kind, _)| *kind);
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend((chain.len() as u16).to_be_bytes());
    packet.extend([first, 64]);
    packet.extend(src.octets());
    packet.extend(dst.octets());
    packet.extend(chain);
    packet
}

/// An 8-byte option-style extension header body (length field 0).
pub fn ext8() -> Vec<u8> {
    vec![0, 1, 4, 0, 0, 0, 0]
}

pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend(sport.to_be_bytes());
    segment.extend(dport.to_be_bytes());
    segment.extend([0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
    segment.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]); // offset, flags, window, csum, urg
    segment.extend(payload);
    segment
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend(sport.to_be_bytes());
    datagram.extend(dport.to_be_bytes());
    datagram.extend(((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend([0, 0]);
    datagram.extend(payload);
    datagram
}

pub fn icmp(kind: u8, code: u8) -> Vec<u8> {
    vec![kind, code, 0, 0, 0, 1, 0, 1]
}

fn v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    bytes: usize,
    tcp_flags: u8,
) -> Option<ExpectedFlow> {
    Some(ExpectedFlow { src: src.into(), dst: dst.into(), proto, sport, dport, bytes: bytes as u64, tcp_flags })
}

fn v6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    bytes: usize,
    tcp_flags: u8,
) -> Option<ExpectedFlow> {
    Some(ExpectedFlow { src: src.into(), dst: dst.into(), proto, sport, dport, bytes: bytes as u64, tcp_flags })
}

const V4: ExpectedCounts = ExpectedCounts { ipv4: 1, ..ZERO };
const V6: ExpectedCounts = ExpectedCounts { ipv6: 1, ..ZERO };
const ZERO: ExpectedCounts = ExpectedCounts {
    ipv4: 0,
    ipv6: 0,
    non_ip: 0,
    vlan: 0,
    mpls: 0,
    pppoe: 0,
    fragments: 0,
    malformed: 0,
    decapsulated: 0,
};

// ---- the cases --------------------------------------------------------

/// Frames the kernel can be given (BPF_PROG_TEST_RUN needs a whole Ethernet
/// header, as every frame on an interface has).
pub fn cases() -> Vec<Case> {
    let smtp_syn = tcp(40000, 25, SYN, &[]);
    let smtp_data = tcp(40000, 25, PSH_ACK, b"EHLO client.example\r\n");
    let dns = udp(5353, 53, &[0xab; 30]);
    let smtp_v4 = ipv4(CLIENT_V4, SERVER_V4, TCP, &[], 0, &smtp_syn);
    let dns_v4 = ipv4(CLIENT_V4, SERVER_V4, UDP, &[], 0, &dns);
    let smtp_v6 = ipv6(CLIENT_V6, SERVER_V6, &[], TCP, &smtp_data);
    let router_alert = [0x94, 0x04, 0, 0];
    let timestamp_option = [0x44, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    vec![
        Case {
            name: "IPv4 TCP SYN to port 25",
            frame: ethernet(0x0800, &smtp_v4),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 40000, 25, 40, SYN),
            counts: V4,
        },
        Case {
            name: "IPv4 with 16 bytes of options (IHL 9)",
            frame: ethernet(
                0x0800,
                &ipv4(CLIENT_V4, SERVER_V4, UDP, &[&router_alert[..], &timestamp_option].concat(), 0, &dns),
            ),
            flow: v4(CLIENT_V4, SERVER_V4, UDP, 5353, 53, 20 + 16 + 38, 0),
            counts: V4,
        },
        Case {
            name: "802.1Q VLAN 100",
            frame: with_vlans(&ethernet(0x0800, &dns_v4), &[(0x8100, 100)]),
            flow: v4(CLIENT_V4, SERVER_V4, UDP, 5353, 53, 58, 0),
            counts: ExpectedCounts { vlan: 1, ..V4 },
        },
        Case {
            name: "QinQ: 802.1ad outer tag, 802.1Q inner tag",
            frame: with_vlans(&ethernet(0x0800, &smtp_v4), &[(0x88a8, 1525), (0x8100, 30)]),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 40000, 25, 40, SYN),
            counts: ExpectedCounts { vlan: 1, ..V4 },
        },
        Case {
            name: "three VLAN tags: deeper than rogue follows",
            frame: with_vlans(&ethernet(0x0800, &smtp_v4), &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]),
            flow: None,
            counts: ExpectedCounts { vlan: 1, non_ip: 1, ..ZERO },
        },
        Case {
            name: "IPv6 TCP with payload",
            frame: ethernet(0x86dd, &smtp_v6),
            flow: v6(CLIENT_V6, SERVER_V6, TCP, 40000, 25, 40 + 20 + 21, PSH_ACK),
            counts: V6,
        },
        Case {
            name: "IPv6 with hop-by-hop, routing and destination options headers",
            frame: ethernet(
                0x86dd,
                &ipv6(CLIENT_V6, SERVER_V6, &[(0, ext8()), (43, ext8()), (60, ext8())], TCP, &smtp_data),
            ),
            flow: v6(CLIENT_V6, SERVER_V6, TCP, 40000, 25, 40 + 24 + 20 + 21, PSH_ACK),
            counts: V6,
        },
        Case {
            name: "IPv6 with an authentication header (length in 4-byte units)",
            frame: ethernet(
                0x86dd,
                &ipv6(
                    CLIENT_V6,
                    SERVER_V6,
                    &[(51, vec![4, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
                    UDP,
                    &dns,
                ),
            ),
            flow: v6(CLIENT_V6, SERVER_V6, UDP, 5353, 53, 40 + 24 + 38, 0),
            counts: V6,
        },
        Case {
            name: "IPv6 with seven extension headers: the seventh is the protocol",
            frame: ethernet(0x86dd, &ipv6(CLIENT_V6, SERVER_V6, &vec![(60, ext8()); 7], TCP, &smtp_data)),
            flow: v6(CLIENT_V6, SERVER_V6, 60, 0, 0, 40 + 56 + 41, 0),
            counts: V6,
        },
        Case {
            name: "IPv6 first fragment keeps its ports",
            frame: ethernet(0x86dd, &ipv6(CLIENT_V6, SERVER_V6, &[(44, vec![0, 0, 1, 0, 0, 0, 7])], UDP, &dns)),
            flow: v6(CLIENT_V6, SERVER_V6, UDP, 5353, 53, 40 + 8 + 38, 0),
            counts: ExpectedCounts { fragments: 1, ..V6 },
        },
        Case {
            name: "IPv6 later fragment: ports 0",
            frame: ethernet(
                0x86dd,
                &ipv6(CLIENT_V6, SERVER_V6, &[(44, vec![0, 0, 0xb8, 0, 0, 0, 7])], UDP, &[0xcd; 40]),
            ),
            flow: v6(CLIENT_V6, SERVER_V6, UDP, 0, 0, 40 + 8 + 40, 0),
            counts: ExpectedCounts { fragments: 1, ..V6 },
        },
        Case {
            name: "IPv4 first fragment (MF) keeps its ports",
            frame: ethernet(0x0800, &ipv4(CLIENT_V4, SERVER_V4, UDP, &[], 0x2000, &dns)),
            flow: v4(CLIENT_V4, SERVER_V4, UDP, 5353, 53, 58, 0),
            counts: ExpectedCounts { fragments: 1, ..V4 },
        },
        Case {
            name: "IPv4 later fragment: ports 0",
            frame: ethernet(0x0800, &ipv4(CLIENT_V4, SERVER_V4, UDP, &[], 185, &[0xcd; 250])),
            flow: v4(CLIENT_V4, SERVER_V4, UDP, 0, 0, 270, 0),
            counts: ExpectedCounts { fragments: 1, ..V4 },
        },
        Case {
            name: "ICMP echo request: type and code as the destination port",
            frame: ethernet(0x0800, &ipv4(CLIENT_V4, SERVER_V4, ICMP, &[], 0, &icmp(8, 0))),
            flow: v4(CLIENT_V4, SERVER_V4, ICMP, 0, 0x0800, 28, 0),
            counts: V4,
        },
        Case {
            name: "ICMPv6 destination unreachable, code 4",
            frame: ethernet(0x86dd, &ipv6(SERVER_V6, CLIENT_V6, &[], ICMPV6, &icmp(1, 4))),
            flow: v6(SERVER_V6, CLIENT_V6, ICMPV6, 0, 0x0104, 48, 0),
            counts: V6,
        },
        Case {
            name: "ARP is not IP",
            frame: ethernet(
                0x0806,
                &[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0xaa, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2],
            ),
            flow: None,
            counts: ExpectedCounts { non_ip: 1, ..ZERO },
        },
        Case {
            name: "802.3 frame with LLC (spanning tree) is not IP",
            frame: ethernet(38, &[0x42, 0x42, 0x03, 0, 0, 0, 0, 0]),
            flow: None,
            counts: ExpectedCounts { non_ip: 1, ..ZERO },
        },
        Case {
            name: "MPLS label stack of two over IPv4",
            frame: ethernet(0x8847, &[&[0, 0x01, 0xd0, 64, 0, 0x02, 0x01, 64][..], &smtp_v4].concat()),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 40000, 25, 40, SYN),
            counts: ExpectedCounts { mpls: 1, ..V4 },
        },
        Case {
            name: "MPLS over IPv6",
            frame: ethernet(0x8847, &[&[0, 0x01, 0xd1, 64][..], &smtp_v6].concat()),
            flow: v6(CLIENT_V6, SERVER_V6, TCP, 40000, 25, 81, PSH_ACK),
            counts: ExpectedCounts { mpls: 1, ..V6 },
        },
        Case {
            name: "PPPoE session carrying IPv4",
            frame: ethernet(0x8864, &[&[0x11, 0, 0, 7, 0, 60, 0x00, 0x21][..], &dns_v4].concat()),
            flow: v4(CLIENT_V4, SERVER_V4, UDP, 5353, 53, 58, 0),
            counts: ExpectedCounts { pppoe: 1, ..V4 },
        },
        Case {
            name: "PPPoE session in a VLAN carrying IPv6",
            frame: with_vlans(
                &ethernet(0x8864, &[&[0x11, 0, 0, 7, 0, 60, 0x00, 0x57][..], &smtp_v6].concat()),
                &[(0x8100, 7)],
            ),
            flow: v6(CLIENT_V6, SERVER_V6, TCP, 40000, 25, 81, PSH_ACK),
            counts: ExpectedCounts { pppoe: 1, vlan: 1, ..V6 },
        },
        Case {
            name: "truncated: VLAN tag cut",
            frame: ethernet(0x8100, &[0x00]),
            flow: None,
            counts: ExpectedCounts { vlan: 1, malformed: 1, ..ZERO },
        },
        Case {
            name: "truncated: MPLS label cut",
            frame: ethernet(0x8847, &[0, 1]),
            flow: None,
            counts: ExpectedCounts { mpls: 1, malformed: 1, ..ZERO },
        },
        Case {
            name: "truncated: PPPoE header cut",
            frame: ethernet(0x8864, &[0x11, 0, 0, 7]),
            flow: None,
            counts: ExpectedCounts { pppoe: 1, malformed: 1, ..ZERO },
        },
        Case {
            name: "truncated: IPv4 header cut after 19 bytes",
            frame: ethernet(0x0800, &smtp_v4[..19]),
            flow: None,
            counts: ExpectedCounts { malformed: 1, ..ZERO },
        },
        Case {
            name: "truncated: IPv6 header cut after 39 bytes",
            frame: ethernet(0x86dd, &smtp_v6[..39]),
            flow: None,
            counts: ExpectedCounts { malformed: 1, ..ZERO },
        },
        Case {
            name: "truncated: IPv4 options cut: ports unknown",
            frame: ethernet(0x0800, &ipv4(CLIENT_V4, SERVER_V4, TCP, &[1; 40], 0, &smtp_syn)[..30]),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 0, 0, 80, 0),
            counts: ExpectedCounts { malformed: 1, ..V4 },
        },
        Case {
            name: "truncated: TCP cut after 3 bytes: ports unknown",
            frame: ethernet(0x0800, &smtp_v4[..23]),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 0, 0, 40, 0),
            counts: ExpectedCounts { malformed: 1, ..V4 },
        },
        Case {
            name: "truncated: TCP cut after 13 bytes: ports known, flags not",
            frame: ethernet(0x0800, &smtp_v4[..33]),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 40000, 25, 40, 0),
            counts: ExpectedCounts { malformed: 1, ..V4 },
        },
        Case {
            name: "TCP options cut (as a small snaplen leaves it) is not malformed",
            frame: ethernet(
                0x0800,
                &ipv4(CLIENT_V4, SERVER_V4, TCP, &[], 0, &tcp(40000, 25, SYN, &[2, 4, 5, 0xb4, 1, 1]))[..20 + 14],
            ),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 40000, 25, 46, SYN),
            counts: V4,
        },
        Case {
            name: "truncated: UDP header cut",
            frame: ethernet(0x0800, &dns_v4[..22]),
            flow: v4(CLIENT_V4, SERVER_V4, UDP, 0, 0, 58, 0),
            counts: ExpectedCounts { malformed: 1, ..V4 },
        },
        Case {
            name: "truncated: ICMP header missing",
            frame: ethernet(0x0800, &ipv4(CLIENT_V4, SERVER_V4, ICMP, &[], 0, &icmp(8, 0))[..20]),
            flow: v4(CLIENT_V4, SERVER_V4, ICMP, 0, 0, 28, 0),
            counts: ExpectedCounts { malformed: 1, ..V4 },
        },
        Case {
            name: "truncated: IPv6 extension header cut",
            frame: ethernet(0x86dd, &ipv6(CLIENT_V6, SERVER_V6, &[(0, ext8())], TCP, &smtp_data)[..41]),
            flow: v6(CLIENT_V6, SERVER_V6, 0, 0, 0, 40 + 8 + 41, 0),
            counts: ExpectedCounts { malformed: 1, ..V6 },
        },
        Case {
            name: "invalid: IPv4 header length below 20",
            frame: ethernet(0x0800, &[&[0x44][..], &smtp_v4[1..]].concat()),
            flow: None,
            counts: ExpectedCounts { malformed: 1, ..ZERO },
        },
        Case {
            name: "invalid: IPv4 total length below the header length",
            frame: ethernet(0x0800, &[&smtp_v4[..2], &[0, 19], &smtp_v4[4..]].concat()),
            flow: None,
            counts: ExpectedCounts { malformed: 1, ..ZERO },
        },
        Case {
            name: "IPv4 total length 0 (captured before segmentation): the length captured",
            frame: ethernet(0x0800, &[&smtp_v4[..2], &[0, 0], &smtp_v4[4..]].concat()),
            flow: v4(CLIENT_V4, SERVER_V4, TCP, 40000, 25, 40, SYN),
            counts: V4,
        },
        Case {
            name: "IPv6 payload length 0 (a jumbogram or before segmentation): the length captured",
            frame: ethernet(0x86dd, &[&smtp_v6[..4], &[0, 0], &smtp_v6[6..]].concat()),
            flow: v6(CLIENT_V6, SERVER_V6, TCP, 40000, 25, 40 + 20 + 21, PSH_ACK),
            counts: V6,
        },
        Case {
            name: "invalid: IPv6 ethertype with a version-4 header",
            frame: ethernet(0x86dd, &[&smtp_v4[..], &[0; 20]].concat()),
            flow: None,
            counts: ExpectedCounts { malformed: 1, ..ZERO },
        },
    ]
}

// ---- tunnels ------------------------------------------------------------

/// The outer endpoints of every tunnel case.
pub const TUNNEL_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const TUNNEL_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const GRE: u8 = 47;

/// A GRE header: its flags byte, the protocol, and 4 bytes per optional word.
pub fn gre(flags: u8, protocol: u16, payload: &[u8]) -> Vec<u8> {
    let words = [0x80, 0x20, 0x10].iter().filter(|&&bit| flags & bit != 0).count();
    [&[flags, 0][..], &protocol.to_be_bytes(), &vec![0xee; words * 4], payload].concat()
}

/// A VXLAN header (the I flag set, VNI 100) and the frame it carries.
pub fn vxlan(frame: &[u8]) -> Vec<u8> {
    [&[0x08, 0, 0, 0, 0, 0, 100, 0][..], frame].concat()
}

/// `payload` from TUNNEL_A to TUNNEL_B as IPv4 protocol `proto`, in Ethernet.
fn tunnelled(proto: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(0x0800, &ipv4(TUNNEL_A, TUNNEL_B, proto, &[], 0, payload))
}

/// The outer flow of a tunnel case: 20 bytes of IPv4 header and `payload`.
fn outer(proto: u8, sport: u16, dport: u16, payload: usize) -> (Option<ExpectedFlow>, ExpectedCounts) {
    (v4(TUNNEL_A, TUNNEL_B, proto, sport, dport, 20 + payload, 0), V4)
}

/// Frames in every tunnel rogue opens, and some it must not.
pub fn tunnel_cases() -> Vec<TunnelCase> {
    let smtp_v4 = ipv4(CLIENT_V4, SERVER_V4, TCP, &[], 0, &tcp(40000, 25, SYN, &[]));
    let smtp_v6 = ipv6(CLIENT_V6, SERVER_V6, &[], TCP, &tcp(40000, 25, PSH_ACK, b"EHLO client.example\r\n"));
    let inner_v4 = (v4(CLIENT_V4, SERVER_V4, TCP, 40000, 25, 40, SYN), ExpectedCounts { decapsulated: 1, ..V4 });
    let inner_v6 = (v6(CLIENT_V6, SERVER_V6, TCP, 40000, 25, 81, PSH_ACK), ExpectedCounts { decapsulated: 1, ..V6 });
    let mirrored_v4 = ethernet(0x0800, &smtp_v4);
    let erspan_2 = [0x10, 0x64, 0x00, 0x01, 0, 0, 0, 0];
    // Version 2 (III), the O flag set: an 8-byte platform subheader follows.
    let erspan_3 = [0x20, 0x64, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x01];
    let vxlan_v6 = udp(49152, 4789, &vxlan(&ethernet(0x86dd, &smtp_v6)));
    let geneve_options = [&[0x02, 0x00, 0x65, 0x58, 0, 0, 100, 0][..], &[0x01; 8], &mirrored_v4].concat();
    let geneve_ip = [&[0x00, 0x00, 0x08, 0x00, 0, 0, 100, 0][..], &smtp_v4].concat();
    let ipip_twice = ipv4(TUNNEL_B, TUNNEL_A, 4, &[], 0, &ipv4(TUNNEL_A, TUNNEL_B, 4, &[], 0, &smtp_v4));
    let cut_inner = vxlan(&ethernet(0x0800, &smtp_v4[..19]));
    let arp = [&[0, 1, 8, 0, 6, 4, 0, 1][..], &[0; 20]].concat();
    vec![
        TunnelCase {
            name: "IP-in-IP",
            frame: tunnelled(4, &smtp_v4),
            outer: outer(4, 0, 0, 40),
            opened: inner_v4.clone(),
        },
        TunnelCase {
            name: "6in4",
            frame: tunnelled(41, &smtp_v6),
            outer: outer(41, 0, 0, 81),
            opened: inner_v6.clone(),
        },
        TunnelCase {
            name: "GRE with a key carrying IPv4",
            frame: tunnelled(GRE, &gre(0x20, 0x0800, &smtp_v4)),
            outer: outer(GRE, 0, 0, 8 + 40),
            opened: inner_v4.clone(),
        },
        TunnelCase {
            name: "GRE with checksum, key and sequence carrying Ethernet (0x6558) with a VLAN tag",
            frame: tunnelled(GRE, &gre(0xb0, 0x6558, &with_vlans(&mirrored_v4, &[(0x8100, 7)]))),
            outer: outer(GRE, 0, 0, 16 + 18 + 40),
            opened: (inner_v4.0.clone(), ExpectedCounts { vlan: 1, ..inner_v4.1 }),
        },
        TunnelCase {
            name: "ERSPAN type I (GRE 0x88be without a sequence number)",
            frame: tunnelled(GRE, &gre(0, 0x88be, &mirrored_v4)),
            outer: outer(GRE, 0, 0, 4 + 54),
            opened: inner_v4.clone(),
        },
        TunnelCase {
            name: "ERSPAN type II",
            frame: tunnelled(GRE, &gre(0x10, 0x88be, &[&erspan_2[..], &mirrored_v4].concat())),
            outer: outer(GRE, 0, 0, 8 + 8 + 54),
            opened: inner_v4.clone(),
        },
        TunnelCase {
            name: "ERSPAN type III with its platform subheader",
            frame: tunnelled(GRE, &gre(0x10, 0x22eb, &[&erspan_3[..], &[0; 8], &mirrored_v4].concat())),
            outer: outer(GRE, 0, 0, 8 + 20 + 54),
            opened: inner_v4.clone(),
        },
        TunnelCase {
            name: "VXLAN carrying IPv6",
            frame: tunnelled(UDP, &vxlan_v6),
            outer: outer(UDP, 49152, 4789, vxlan_v6.len()),
            opened: inner_v6.clone(),
        },
        TunnelCase {
            name: "Geneve with 8 bytes of options carrying Ethernet",
            frame: tunnelled(UDP, &udp(49152, 6081, &geneve_options)),
            outer: outer(UDP, 49152, 6081, 8 + geneve_options.len()),
            opened: inner_v4.clone(),
        },
        TunnelCase {
            name: "Geneve carrying IPv4",
            frame: tunnelled(UDP, &udp(49152, 6081, &geneve_ip)),
            outer: outer(UDP, 49152, 6081, 8 + geneve_ip.len()),
            opened: inner_v4.clone(),
        },
        TunnelCase {
            name: "VXLAN in GRE: one tunnel is opened, the one inside is traffic",
            frame: tunnelled(GRE, &gre(0, 0x0800, &ipv4(TUNNEL_B, TUNNEL_A, UDP, &[], 0, &vxlan_v6))),
            outer: outer(GRE, 0, 0, 4 + 20 + vxlan_v6.len()),
            opened: (
                v4(TUNNEL_B, TUNNEL_A, UDP, 49152, 4789, 20 + vxlan_v6.len(), 0),
                ExpectedCounts { decapsulated: 1, ..V4 },
            ),
        },
        TunnelCase {
            name: "IP-in-IP in IP-in-IP: one tunnel is opened",
            frame: tunnelled(4, &ipip_twice),
            outer: outer(4, 0, 0, ipip_twice.len()),
            opened: (v4(TUNNEL_B, TUNNEL_A, 4, 0, 0, ipip_twice.len(), 0), ExpectedCounts { decapsulated: 1, ..V4 }),
        },
        TunnelCase {
            name: "a fragment of a GRE packet is not opened",
            frame: ethernet(0x0800, &ipv4(TUNNEL_A, TUNNEL_B, GRE, &[], 0x2000, &gre(0, 0x0800, &smtp_v4))),
            outer: (v4(TUNNEL_A, TUNNEL_B, GRE, 0, 0, 64, 0), ExpectedCounts { fragments: 1, ..V4 }),
            opened: (v4(TUNNEL_A, TUNNEL_B, GRE, 0, 0, 64, 0), ExpectedCounts { fragments: 1, ..V4 }),
        },
        TunnelCase {
            name: "GRE version 1 (PPTP, carrying PPP) is not opened",
            frame: tunnelled(GRE, &[&[0x30, 0x01, 0x88, 0x0b, 0, 4, 0, 1][..], &[0; 8]].concat()),
            outer: outer(GRE, 0, 0, 16),
            opened: outer(GRE, 0, 0, 16),
        },
        TunnelCase {
            name: "UDP to 4789 without VXLAN's I flag is not opened",
            frame: tunnelled(UDP, &udp(49152, 4789, &[0; 30])),
            outer: outer(UDP, 49152, 4789, 38),
            opened: outer(UDP, 49152, 4789, 38),
        },
        TunnelCase {
            name: "VXLAN carrying ARP: the mirrored frame is not IP",
            frame: tunnelled(UDP, &udp(49152, 4789, &vxlan(&ethernet(0x0806, &arp)))),
            outer: outer(UDP, 49152, 4789, 8 + 8 + 14 + 28),
            opened: (None, ExpectedCounts { non_ip: 1, decapsulated: 1, ..ZERO }),
        },
        TunnelCase {
            name: "VXLAN carrying an IPv4 header cut short: malformed",
            frame: tunnelled(UDP, &udp(49152, 4789, &cut_inner)),
            outer: outer(UDP, 49152, 4789, 8 + cut_inner.len()),
            opened: (None, ExpectedCounts { malformed: 1, decapsulated: 1, ..ZERO }),
        },
    ]
}
