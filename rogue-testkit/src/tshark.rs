//! tshark as an independent dissector. Each frame's fields are turned into
//! the packet rogue's documented rules make of it (outer header for tunnels,
//! ports 0 for later fragments, ICMP type/code as the destination port,
//! IPv6 extension headers followed). Fed through rogue's flow cache, they
//! give the flows rogue must produce, without using rogue's parser.

use std::path::Path;

use rogue::{
    capture::FlowDelta,
    flows::{FlowCache, FlowRecord, Timeouts, key_address},
    time::Nanos,
};
use rogue_common::{FlowKey, MeterCounters};

use crate::require;

const FIELDS: [&str; 37] = [
    "frame.time_epoch",
    "frame.len",
    "frame.interface_id",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.len",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.plen",
    "ipv6.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.offset",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "udp.srcport",
    "udp.dstport",
    "icmp.type",
    "icmp.code",
    "icmpv6.type",
    "icmpv6.code",
    "frame.cap_len",
    "ip.hdr_len",
    "tcp.hdr_len",
    // With LSRR/SSRR options Wireshark shows the route's final hop as
    // ip.dst; the header's destination (what rogue keys on) is ip.cur_rt.
    "ip.cur_rt",
    // What a frame without IP is: the link's own signalling, or encrypted.
    "wlan.fc.type",
    "wlan.fc.subtype",
    "wlan.fc.protected",
    "ppp.protocol",
    "chdlc.protocol",
    "fr.dlci",
    "fr.nlpid",
    // A jumbogram's length (RFC 2675), its payload length being 0.
    "ipv6.opt.jumbo",
];

/// One frame as tshark dissected it, with the flow rogue should put it in.
#[derive(Clone, Debug)]
pub struct Frame {
    pub time: Nanos,
    pub wire_len: u64,
    pub interface: u32,
    pub layers: Vec<String>,
    /// The flow key, IP bytes and TCP flags; `None` for frames without IP.
    pub packet: Option<(FlowKey, u64, u8)>,
    pub fragment: bool,
    /// The first IP header carries another IP packet (6in4, IP-in-IP).
    pub tunnel: bool,
    /// IPv6 with extension headers before the transport header.
    pub ipv6_extensions: bool,
    /// An untagged Ethernet IPv4 TCP frame cut inside its TCP header (options).
    pub tcp_header_cut: bool,
    /// The link's own signalling: an 802.11 management, control or null
    /// data frame, a PPP control protocol, Cisco SLARP or CDP, Frame Relay LMI.
    pub link_control: bool,
    /// An 802.11 data frame with the Protected Frame bit.
    pub encrypted: bool,
    /// Its packet is the one inside a tunnel ([`frames_opened`]).
    pub decapsulated: bool,
    /// The layers that carry its packet (up to its IP layer; all of them
    /// when it has none): the VLAN, MPLS and PPPoE counted are among them.
    pub carrying: usize,
}

impl Frame {
    pub fn has_layer(&self, name: &str) -> bool {
        self.layers.iter().any(|l| l == name)
    }
}

/// Every frame of `capture`, dissected by tshark without reassembly, its
/// packet the outermost IP packet.
pub fn frames(capture: &Path) -> Vec<Frame> {
    field_lines(capture).iter().map(|line| frame(line, 0)).collect()
}

/// Every frame of `capture` as rogue makes it with every tunnel opened:
/// where tshark finds a tunnel rogue opens (IP in IP, GRE carrying IP,
/// Ethernet or ERSPAN, VXLAN, Geneve) in a packet that is not a fragment,
/// the packet is the first IP packet inside, or none when the tunnel
/// carries no IP.
pub fn frames_opened(capture: &Path) -> Vec<Frame> {
    field_lines(capture)
        .iter()
        .map(|line| {
            let outer = frame(line, 0);
            let Some(inside) = opened_tunnel(&outer) else { return outer };
            Frame { decapsulated: true, ..frame(line, inside) }
        })
        .collect()
}

/// Where the layers inside the tunnel a frame carries begin, if it carries
/// one rogue opens.
fn opened_tunnel(frame: &Frame) -> Option<usize> {
    if frame.packet.is_none() || frame.fragment {
        return None;
    }
    let mut at = frame.carrying + 1;
    while frame.layers.get(at).is_some_and(|l| l.starts_with("ipv6.")) {
        at += 1;
    }
    let layer = |i: usize| frame.layers.get(i).map(String::as_str).unwrap_or_default();
    match (layer(at), layer(at + 1)) {
        ("ip" | "ipv6", _) => Some(at),
        ("gre", "ip" | "ipv6" | "eth" | "erspan") => Some(at + 1),
        ("udp", "vxlan" | "geneve") => Some(at + 1),
        _ => None,
    }
}

/// tshark's fields of each frame, every occurrence of each (comma-separated).
fn field_lines(capture: &Path) -> Vec<String> {
    let mut command = require("tshark");
    command.args(["-n", "-r"]).arg(capture).args([
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
    ]);
    for field in FIELDS {
        command.args(["-e", field]);
    }
    let output = command.output().expect("tshark runs");
    assert!(
        output.status.success(),
        "tshark failed on {}: {}",
        capture.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// One line of tshark's fields, its packet the first IP packet from layer
/// `from` on. A field of a layer that occurs more than once (IP in IP, a
/// tunnel, the packet an ICMP error quotes) is read at that layer's place.
fn frame(line: &str, from: usize) -> Frame {
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), FIELDS.len(), "tshark line {line:?}");
    let layers: Vec<String> = f[3].split(':').map(str::to_owned).collect();
    // Which occurrence of each field is this packet's: as many as there
    // are layers of its kind before the layer that holds it.
    let mut occurrence = [0usize; FIELDS.len()];
    let value = |occurrence: &[usize; FIELDS.len()], i: usize| f[i].split(',').nth(occurrence[i]).unwrap_or_default();
    let number_at = |occurrence: &[usize; FIELDS.len()], i: usize| -> u64 {
        let text = value(occurrence, i);
        if text.is_empty() {
            0
        } else if let Some(hex) = text.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).unwrap()
        } else {
            text.parse().unwrap_or_else(|_| panic!("field {} = {text:?}", FIELDS[i]))
        }
    };
    let number = |i: usize| number_at(&occurrence, i);
    let mut frame = Frame {
        time: epoch_nanos(f[0]),
        wire_len: number(1),
        interface: number(2) as u32,
        layers,
        packet: None,
        fragment: false,
        tunnel: false,
        ipv6_extensions: false,
        tcp_header_cut: false,
        link_control: false,
        encrypted: false,
        decapsulated: false,
        carrying: usize::MAX,
    };
    let present = |i: usize| !f[i].is_empty();
    let wlan_data_with_body = number(29) == 2 && number(30) & 0x04 == 0;
    frame.encrypted = wlan_data_with_body && number(31) == 1;
    frame.link_control = (present(29) && !wlan_data_with_body)
        || number(32) >= 0x8000
        || [0x8035, 0x2000].contains(&number(33))
        || (present(34) && (number(34) == 0 || number(34) == 1023))
        || number(35) == 0x08;
    let Some(ip_at) = frame.layers.iter().skip(from).position(|l| l == "ip" || l == "ipv6").map(|at| at + from) else {
        return frame;
    };
    frame.carrying = ip_at;
    let before = |at: usize, layer: &str| frame.layers[..at].iter().filter(|l| *l == layer).count();
    for i in [4, 5, 6, 7, 8, 9, 26, 28] {
        occurrence[i] = before(ip_at, "ip");
    }
    for i in [10, 11, 12, 13, 36] {
        occurrence[i] = before(ip_at, "ipv6");
    }
    for i in [14, 15] {
        occurrence[i] = before(ip_at, "ipv6.fraghdr");
    }
    let number = |i: usize| number_at(&occurrence, i);
    let f = |i: usize| value(&occurrence, i);
    let next_layer = |from: usize| frame.layers.get(from).cloned().unwrap_or_default();
    let mut key = FlowKey::ZERO;
    let (proto, bytes, later_fragment, upper_at);
    if frame.layers[ip_at] == "ip" {
        key.src_addr = key_address(f(4).parse().unwrap());
        let header_dst = if f(28).is_empty() { f(5) } else { f(28) };
        key.dst_addr = key_address(header_dst.parse().unwrap());
        proto = number(6) as u8;
        bytes = number(7);
        later_fragment = number(9) != 0;
        frame.fragment = number(8) != 0 || later_fragment;
        upper_at = ip_at + 1;
    } else {
        key.src_addr = key_address(f(10).parse().unwrap());
        key.dst_addr = key_address(f(11).parse().unwrap());
        bytes = 40 + if number(12) == 0 && present(36) { number(36) } else { number(12) };
        let mut at = ip_at + 1;
        while next_layer(at).starts_with("ipv6.") {
            frame.ipv6_extensions = true;
            at += 1;
        }
        frame.fragment = frame.layers[ip_at + 1..at].iter().any(|l| l == "ipv6.fraghdr");
        later_fragment = frame.fragment && number(15) != 0;
        proto = if frame.fragment {
            number(14) as u8
        } else if frame.ipv6_extensions {
            match next_layer(at).as_str() {
                "tcp" => 6,
                "udp" => 17,
                "icmpv6" => 58,
                other => panic!("test does not know the number of protocol {other:?} after IPv6 extension headers"),
            }
        } else {
            number(13) as u8
        };
        upper_at = at;
    }
    key.proto = proto;
    frame.tunnel = matches!(next_layer(upper_at).as_str(), "ip" | "ipv6");
    let mut tcp_flags = 0;
    let transport = next_layer(upper_at);
    for i in [16, 17, 18, 19, 20, 21, 22, 23, 24, 27] {
        occurrence[i] = before(upper_at, &transport);
    }
    let number = |i: usize| number_at(&occurrence, i);
    if !later_fragment {
        match proto {
            6 if next_layer(upper_at) == "tcp" => {
                frame.tcp_header_cut =
                    frame.layers[..ip_at] == ["eth", "ethertype"] && number(25) < 14 + number(26) + number(27);
                key.src_port = number(16) as u16;
                key.dst_port = number(17) as u16;
                tcp_flags = number(18) as u8;
            }
            17 if next_layer(upper_at) == "udp" => {
                key.src_port = number(19) as u16;
                key.dst_port = number(20) as u16;
            }
            1 => key.dst_port = ((number(21) << 8) | number(22)) as u16,
            58 => key.dst_port = ((number(23) << 8) | number(24)) as u16,
            _ => {}
        }
    }
    key.ifindex = frame.interface;
    frame.packet = Some((key, bytes, tcp_flags));
    frame
}

/// `1449610262.855497000` as nanoseconds, without going through a float.
fn epoch_nanos(text: &str) -> Nanos {
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let frac = format!("{frac:0<9}");
    secs.parse::<Nanos>().unwrap() * 1_000_000_000 + frac[..9].parse::<Nanos>().unwrap()
}

/// The flows rogue's rules make of these frames, through rogue's flow cache.
pub fn flows(frames: &[Frame], timeouts: Timeouts) -> Vec<FlowRecord> {
    let mut cache = FlowCache::new(timeouts);
    let mut out = Vec::new();
    for frame in frames {
        if let Some((key, bytes, tcp_flags)) = frame.packet {
            let delta = FlowDelta { packets: 1, bytes, first: frame.time, last: frame.time, tcp_flags };
            cache.add(&key, delta, &mut out);
        }
    }
    cache.flush(&mut out);
    out
}

/// The counters rogue's meter must show for these frames.
pub fn counters(frames: &[Frame]) -> MeterCounters {
    let mut counters = MeterCounters::default();
    for frame in frames {
        counters.packets += 1;
        counters.bytes += frame.wire_len;
        match frame.packet {
            None => {
                counters.non_ip += 1;
                counters.link_control += frame.link_control as u64;
                counters.encrypted += frame.encrypted as u64;
            }
            Some((key, bytes, _))
                if rogue_common::address_bytes(&key.src_addr)[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] =>
            {
                counters.ipv4_packets += 1;
                counters.ipv4_bytes += bytes;
            }
            Some((_, bytes, _)) => {
                counters.ipv6_packets += 1;
                counters.ipv6_bytes += bytes;
            }
        }
        let carrying = &frame.layers[..frame.carrying.min(frame.layers.len())];
        let has = |layer: &str| carrying.iter().any(|l| l == layer) as u64;
        counters.vlan += has("vlan");
        counters.mpls += has("mpls");
        counters.pppoe += has("pppoes");
        counters.fragments += frame.fragment as u64;
        counters.decapsulated += frame.decapsulated as u64;
    }
    counters
}
