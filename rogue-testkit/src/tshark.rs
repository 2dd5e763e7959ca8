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

const FIELDS: [&str; 36] = [
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
}

impl Frame {
    pub fn has_layer(&self, name: &str) -> bool {
        self.layers.iter().any(|l| l == name)
    }
}

/// Every frame of `capture`, dissected by tshark without reassembly.
pub fn frames(capture: &Path) -> Vec<Frame> {
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
        "occurrence=f",
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
    String::from_utf8(output.stdout).unwrap().lines().map(frame).collect()
}

fn frame(line: &str) -> Frame {
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), FIELDS.len(), "tshark line {line:?}");
    let number = |i: usize| -> u64 {
        let text = f[i];
        if text.is_empty() {
            0
        } else if let Some(hex) = text.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).unwrap()
        } else {
            text.parse().unwrap_or_else(|_| panic!("field {} = {text:?}", FIELDS[i]))
        }
    };
    let layers: Vec<String> = f[3].split(':').map(str::to_owned).collect();
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
    };
    let present = |i: usize| !f[i].is_empty();
    let wlan_data_with_body = number(29) == 2 && number(30) & 0x04 == 0;
    frame.encrypted = wlan_data_with_body && f[31] == "1";
    frame.link_control = (present(29) && !wlan_data_with_body)
        || number(32) >= 0x8000
        || [0x8035, 0x2000].contains(&number(33))
        || (present(34) && (number(34) == 0 || number(34) == 1023))
        || number(35) == 0x08;
    let Some(ip_at) = frame.layers.iter().position(|l| l == "ip" || l == "ipv6") else {
        return frame;
    };
    let next_layer = |from: usize| frame.layers.get(from).cloned().unwrap_or_default();
    let mut key = FlowKey::ZERO;
    let (proto, bytes, later_fragment, upper_at);
    if frame.layers[ip_at] == "ip" {
        key.src_addr = key_address(f[4].parse().unwrap());
        let header_dst = if f[28].is_empty() { f[5] } else { f[28] };
        key.dst_addr = key_address(header_dst.parse().unwrap());
        proto = number(6) as u8;
        bytes = number(7);
        later_fragment = number(9) != 0;
        frame.fragment = number(8) != 0 || later_fragment;
        upper_at = ip_at + 1;
    } else {
        key.src_addr = key_address(f[10].parse().unwrap());
        key.dst_addr = key_address(f[11].parse().unwrap());
        bytes = 40 + number(12);
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
        counters.vlan += frame.has_layer("vlan") as u64;
        counters.mpls += frame.has_layer("mpls") as u64;
        counters.pppoe += frame.has_layer("pppoes") as u64;
        counters.fragments += frame.fragment as u64;
    }
    counters
}
