//! The packet parser, one copy for the kernel and for captures.
//!
//! It reads only through [`Frame::bytes`], which bounds-checks every access:
//! in the XDP program that check is the `ptr + len <= data_end` comparison the
//! verifier needs, in userspace it is a slice lookup. Every header length that
//! moves the offset is bounded (IHL <= 60, an IPv6 extension header <= 2048,
//! a fixed number of VLAN tags, labels and extension headers) so the verifier
//! can follow it. Style after xdp-tools' parsing helpers: small functions, one
//! header each, that give up cleanly at the first byte that is not there.
//!
//! What is counted as what:
//! - a frame shorter than its link header, or an IP header that is cut or
//!   invalid (version, IHL < 5, total length < header length) is
//!   [`Class::Malformed`] and joins no flow;
//! - an IP packet whose transport header is cut keeps its addresses and
//!   protocol, gets ports 0, and is marked [`MARK_TRUNCATED`] (also counted as
//!   malformed, so nothing is lost silently);
//! - later IPv4/IPv6 fragments carry no transport header: ports 0, marked
//!   [`MARK_FRAGMENT`] (first fragments are marked too and keep their ports);
//! - anything that is not IPv4 or IPv6 after at most two VLAN tags, an MPLS
//!   label stack of up to [`MAX_MPLS_LABELS`] or a PPPoE session header is
//!   [`Class::NonIp`], said to be the link's own signalling, encrypted, or
//!   another protocol ([`NotIp`]);
//! - a tunnel (IP in IP, GRE, ERSPAN, VXLAN, Geneve) is noted where it
//!   starts, and opened only when [`Decapsulate`] names it: by default the
//!   outer header is the flow, which is what crosses the gateway.
//!
//! The kernel sees Ethernet only ([`parse_ethernet`]); the other link types
//! are those of capture files, each a few header bytes before the same
//! network-layer code.

use crate::flow::{FlowKey, address_from_bytes};

/// Bounds-checked read access to one frame's bytes.
pub trait Frame {
    /// The `N` bytes at `offset`, or `None` when the frame ends before them.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// The frame's length in bytes (what was captured of it).
    fn frame_len(&self) -> usize;
}

impl Frame for [u8] {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let slice = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Some(out)
    }
}

/// How the meter classifies a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    /// No IPv4/IPv6 packet that rogue opens (ARP, STP, LLDP, deeper stacks).
    NonIp = 0,
    /// A link or IP header is cut or invalid; no flow can be formed.
    Malformed = 1,
    Ipv4 = 2,
    Ipv6 = 3,
}

/// At least one VLAN tag (802.1Q or 802.1ad) was removed.
pub const MARK_VLAN: u8 = 1 << 0;
/// An MPLS label stack was removed.
pub const MARK_MPLS: u8 = 1 << 1;
/// A PPPoE session header was removed.
pub const MARK_PPPOE: u8 = 1 << 2;
/// An IPv4 or IPv6 fragment (first or later).
pub const MARK_FRAGMENT: u8 = 1 << 3;
/// The transport header (or an IPv6 extension header) is cut short.
pub const MARK_TRUNCATED: u8 = 1 << 4;
/// The packet was taken out of a tunnel ([`Decapsulate`]).
pub const MARK_DECAPSULATED: u8 = 1 << 5;

/// The tunnels whose inner packet is the flow, a bit each (config
/// `capture.decapsulate`). None by default: on a gateway a tunnel is
/// traffic like any other, and its outer header is what crosses. A sensor
/// fed by a mirror (ERSPAN from a switch, VXLAN or Geneve from a cloud's
/// traffic mirroring) wants the traffic inside.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Decapsulate(pub u8);

impl Decapsulate {
    pub const NONE: Decapsulate = Decapsulate(0);
    pub const ALL: Decapsulate = Decapsulate(Self::IPIP | Self::GRE | Self::ERSPAN | Self::VXLAN | Self::GENEVE);
    /// IPv4 or IPv6 straight in IPv4 or IPv6 (protocols 4 and 41: IP-in-IP,
    /// 6in4, 4in6, 6in6).
    pub const IPIP: u8 = 1 << 0;
    /// GRE (version 0) carrying IPv4, IPv6 or Ethernet (0x6558).
    pub const GRE: u8 = 1 << 1;
    /// ERSPAN in GRE: type I and II (0x88be), type III (0x22eb).
    pub const ERSPAN: u8 = 1 << 2;
    /// VXLAN, UDP to port 4789 (RFC 7348).
    pub const VXLAN: u8 = 1 << 3;
    /// Geneve, UDP to port 6081 (RFC 8926).
    pub const GENEVE: u8 = 1 << 4;

    #[inline(always)]
    fn opens(self, tunnel: u8) -> bool {
        self.0 & tunnel != 0
    }
}

/// Most tunnels opened one inside another: past it, the innermost packet
/// opened is the flow. One: a mirror's encapsulation is opened, and the
/// mirrored traffic's own tunnels are traffic, as on a gateway. (Two is
/// more than the verifier can follow: each way through the first inner
/// packet's headers would walk the second one again.)
pub const MAX_TUNNELS: usize = 1;

/// A tunnel the parser found in a packet: its [`Decapsulate`] bit (0: none),
/// and where the packet inside starts, with an Ethernet header or with IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: u8,
    pub ethernet: bool,
    pub offset: u16,
}

impl Tunnel {
    const NONE: Tunnel = Tunnel { kind: 0, ethernet: false, offset: 0 };
}

/// Most VLAN tags followed (802.1Q, QinQ).
pub const MAX_VLAN_TAGS: usize = 2;
/// Most MPLS labels followed before giving up on the stack.
pub const MAX_MPLS_LABELS: usize = 4;
/// Most IPv6 extension headers followed.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
pub const ETHERTYPE_MPLS: u16 = 0x8847;
pub const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;
pub const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
const PPP_MPLS_UNICAST: u16 = 0x0281;
const PPP_MPLS_MULTICAST: u16 = 0x0283;
const CISCO_SLARP: u16 = 0x8035;
const CISCO_CDP: u16 = 0x2000;
/// Frame Relay's unnumbered-information control byte, and the NLPIDs
/// after it (ISO/IEC TR 9577).
const FR_UI: u8 = 0x03;
const NLPID_IPV4: u8 = 0xcc;
const NLPID_IPV6: u8 = 0x8e;
const NLPID_SNAP: u8 = 0x80;
const NLPID_Q933: u8 = 0x08;
/// 802.11 frame control: the data type, the subtype bits for QoS and for
/// no body (null data), and the flags for protected and ordered frames.
const WLAN_DATA: u8 = 2;
const WLAN_QOS: u8 = 0x08;
const WLAN_NO_BODY: u8 = 0x04;
const WLAN_PROTECTED: u8 = 0x40;
const WLAN_ORDER: u8 = 0x80;
/// AVS's magic, its version in the low nibble.
const AVS_MAGIC: u32 = 0x8021_1000;
/// The longest capture header (Prism, AVS, PKTAP) believed, in bytes.
const MAX_CAPTURE_HEADER: u32 = 1024;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6_IN_IP: u8 = 41;
const PROTO_GRE: u8 = 47;
const VXLAN_PORT: u16 = 4789;
const GENEVE_PORT: u16 = 6081;
/// VXLAN's I flag: the VNI is valid (RFC 7348, 5).
const VXLAN_VALID_VNI: u8 = 0x08;
const ETHERTYPE_TRANSPARENT_BRIDGING: u16 = 0x6558;
const GRE_CHECKSUM: u8 = 0x80;
const GRE_ROUTING: u8 = 0x40;
const GRE_KEY: u8 = 0x20;
const GRE_SEQUENCE: u8 = 0x10;
const GRE_ERSPAN_2: u16 = 0x88be;
const GRE_ERSPAN_3: u16 = 0x22eb;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
const IPV6_MOBILITY: u8 = 135;
const IPV6_HIP: u8 = 139;
const IPV6_SHIM6: u8 = 140;
const IPV6_NO_NEXT_HEADER: u8 = 59;

/// What one frame contributes to the meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Valid when `class` is `Ipv4` or `Ipv6`; `ifindex` is left 0 for the caller.
    pub key: FlowKey,
    /// IP-layer octets: IPv4 total length, or 40 + IPv6 payload length.
    pub ip_bytes: u32,
    pub tcp_flags: u8,
    pub class: Class,
    /// `MARK_*` bits.
    pub marks: u8,
    /// For a [`Class::NonIp`] frame, what kind of frame it is.
    pub not_ip: NotIp,
    /// A tunnel this packet carries, opened or not.
    pub tunnel: Tunnel,
}

/// What a frame without an IP packet is, so that the counters say what
/// was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NotIp {
    /// Another protocol in the link's payload (ARP, LLDP, IS-IS, an
    /// ethertype or PPP protocol rogue does not open, a deeper stack).
    OtherProtocol = 0,
    /// The link's own signalling, which carries no user traffic: 802.11
    /// management, control and null-data frames, PPP's control protocols
    /// (LCP, IPCP, CHAP...), Cisco's SLARP and CDP, Frame Relay LMI.
    LinkControl = 1,
    /// 802.11 data frames whose body is encrypted (the Protected Frame
    /// bit): the IP packet inside cannot be read.
    Encrypted = 2,
}

impl Packet {
    const fn empty() -> Packet {
        Packet {
            key: FlowKey::ZERO,
            ip_bytes: 0,
            tcp_flags: 0,
            class: Class::NonIp,
            marks: 0,
            not_ip: NotIp::OtherProtocol,
            tunnel: Tunnel::NONE,
        }
    }

    /// Whether the packet belongs to a flow (it has IP addresses).
    #[inline(always)]
    pub fn has_flow(&self) -> bool {
        matches!(self.class, Class::Ipv4 | Class::Ipv6)
    }

    /// Whether the meter counts it as malformed (no flow, or a cut header).
    #[inline(always)]
    pub fn is_malformed(&self) -> bool {
        self.class == Class::Malformed || self.marks & MARK_TRUNCATED != 0
    }
}

/// The link layer a capture starts with (pcap LINKTYPE_* values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113), "Linux cooked capture" v1.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276).
    LinuxSll2,
    /// LINKTYPE_RAW (101), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229): the IP header first.
    RawIp,
    /// LINKTYPE_NULL (0): 4-byte address family in the capturing host's byte order.
    Null,
    /// LINKTYPE_LOOP (108): 4-byte address family in network byte order.
    Loop,
    /// LINKTYPE_PPP (9): the PPP protocol field first, after 0xff 0x03 when
    /// the capture kept HDLC-like framing.
    Ppp,
    /// LINKTYPE_PPP_HDLC (50): PPP in HDLC-like framing (0xff 0x03, RFC
    /// 1662), or Cisco PPP with HDLC framing (0x0f or 0x8f, RFC 1547).
    PppHdlc,
    /// LINKTYPE_C_HDLC (104): Cisco HDLC, an ethertype after address and control.
    CiscoHdlc,
    /// LINKTYPE_FRELAY (107): a Q.922 address, then RFC 2427's NLPID or
    /// SNAP encapsulation, or Cisco's ethertype.
    FrameRelay,
    /// LINKTYPE_IEEE802_11 (105): 802.11 frames; IP is in data frames,
    /// after LLC/SNAP.
    Wlan,
    /// LINKTYPE_IEEE802_11_RADIOTAP (127): a radiotap header, then 802.11.
    WlanRadiotap,
    /// LINKTYPE_IEEE802_11_PRISM (119): a Prism (or AVS) header, then 802.11.
    WlanPrism,
    /// LINKTYPE_IEEE802_11_AVS (163): an AVS header, then 802.11.
    WlanAvs,
    /// LINKTYPE_PKTAP (258): Apple's per-packet header naming the packet's
    /// own link type (macOS `tcpdump -k`, `-i pktap`).
    Pktap,
}

impl LinkType {
    /// The link type for a pcap/pcapng LINKTYPE value, if rogue reads it.
    pub fn from_linktype(value: u32) -> Option<LinkType> {
        Some(match value {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            // 12 and 14 are DLT_RAW as some platforms write it.
            12 | 14 | 101 | 228 | 229 => LinkType::RawIp,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            9 => LinkType::Ppp,
            50 => LinkType::PppHdlc,
            104 => LinkType::CiscoHdlc,
            107 => LinkType::FrameRelay,
            105 => LinkType::Wlan,
            127 => LinkType::WlanRadiotap,
            119 => LinkType::WlanPrism,
            163 => LinkType::WlanAvs,
            258 => LinkType::Pktap,
            _ => return None,
        })
    }
}

/// Parses one frame that starts with `link`, opening the tunnels `decapsulate` names.
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(frame: &F, link: LinkType, decapsulate: Decapsulate) -> Packet {
    let mut packet = Packet::empty();
    match link {
        LinkType::Pktap => pktap(frame, &mut packet),
        _ => link_layer(frame, link, 0, &mut packet),
    }
    decapsulated(frame, packet, decapsulate)
}

/// The packet inside `outer`'s tunnel, and inside its tunnel in turn, as
/// far as `decapsulate` opens them and [`MAX_TUNNELS`] deep. (The kernel
/// program runs the same two steps, [`opens_tunnel`] and [`inner_packet`],
/// in a loop of its own that the verifier can follow.)
#[inline(always)]
fn decapsulated<F: Frame + ?Sized>(frame: &F, outer: Packet, decapsulate: Decapsulate) -> Packet {
    let mut packet = outer;
    for _ in 0..MAX_TUNNELS {
        if !opens_tunnel(&packet, decapsulate) {
            break;
        }
        packet = inner_packet(frame, packet.tunnel, packet.marks);
    }
    packet
}

/// Whether `packet` carries a tunnel `decapsulate` opens. A fragment of a
/// tunnel packet is never opened (the inner packet is cut across
/// fragments): it counts as its outer packet.
#[inline(always)]
pub fn opens_tunnel(packet: &Packet, decapsulate: Decapsulate) -> bool {
    decapsulate.opens(packet.tunnel.kind) && packet.marks & MARK_FRAGMENT == 0
}

/// The packet a tunnel carries, given the marks of the packet outside it.
/// The inner packet stands for the frame whatever it is (not IP, cut
/// short): on a mirror, it is what was mirrored. The frame's own layers
/// (VLAN, MPLS, PPPoE) stay counted.
#[inline(always)]
pub fn inner_packet<F: Frame + ?Sized>(frame: &F, tunnel: Tunnel, outer_marks: u8) -> Packet {
    let mut inner = Packet::empty();
    inner.marks = (outer_marks & (MARK_VLAN | MARK_MPLS | MARK_PPPOE)) | MARK_DECAPSULATED;
    let at = tunnel.offset as usize;
    match tunnel.ethernet {
        true => ethernet(frame, at, &mut inner),
        false => ip_by_version(frame, at, &mut inner),
    }
    inner
}

/// The link header `link` at `offset`, and what it carries.
#[inline(always)]
fn link_layer<F: Frame + ?Sized>(frame: &F, link: LinkType, offset: usize, packet: &mut Packet) {
    match link {
        LinkType::Ethernet => ethernet(frame, offset, packet),
        LinkType::LinuxSll => ethertype_at(frame, offset + 14, offset + 16, packet),
        LinkType::LinuxSll2 => ethertype_at(frame, offset, offset + 20, packet),
        LinkType::RawIp => ip_by_version(frame, offset, packet),
        LinkType::Null | LinkType::Loop => null_family(frame, link, offset, packet),
        LinkType::Ppp => ppp(frame, offset, packet),
        LinkType::PppHdlc => match frame.bytes::<1>(offset) {
            Some([0xff]) => ppp(frame, offset, packet),
            _ => cisco_hdlc(frame, offset, packet),
        },
        LinkType::CiscoHdlc => cisco_hdlc(frame, offset, packet),
        LinkType::FrameRelay => frame_relay(frame, offset, packet),
        LinkType::Wlan => wlan(frame, offset, packet),
        LinkType::WlanRadiotap => match frame.bytes::<2>(offset + 2) {
            // it_len, little-endian, counts the whole radiotap header.
            Some(length) => wlan(frame, offset + u16::from_le_bytes(length) as usize, packet),
            None => packet.class = Class::Malformed,
        },
        LinkType::WlanPrism | LinkType::WlanAvs => wlan_capture_header(frame, offset, packet),
        // A PKTAP header inside a PKTAP header is not a capture.
        LinkType::Pktap => packet.class = Class::Malformed,
    }
}

/// Cisco HDLC: address, control, then an ethertype. SLARP (keepalives and
/// address requests) and CDP are the link's own signalling.
#[inline(always)]
fn cisco_hdlc<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    match frame.bytes::<2>(offset + 2).map(u16::from_be_bytes) {
        Some(CISCO_SLARP | CISCO_CDP) => packet.not_ip = NotIp::LinkControl,
        _ => ethertype_at(frame, offset + 2, offset + 4, packet),
    }
}

/// Frame Relay (RFC 2427): a Q.922 address of two to four bytes (the last
/// has its EA bit set); then either RFC 2427's UI control byte (0x03), an
/// optional pad, and an NLPID (IPv4, IPv6, or SNAP with an ethertype), or
/// Cisco's encapsulation, an ethertype straight after the address. DLCI 0
/// and 1023 carry the link management (LMI), as does Q.933's NLPID.
#[inline(always)]
fn frame_relay<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    let Some([high, low]) = frame.bytes::<2>(offset) else {
        packet.class = Class::Malformed;
        return;
    };
    // Six bits of the DLCI in the first byte, four in the second; a
    // longer address adds seven from a middle byte, six from the last.
    let mut dlci = ((high as u32 >> 2) << 4) | (low as u32 >> 4);
    let mut at = offset + 2;
    let mut last = low;
    for _ in 0..2 {
        if last & 1 == 1 {
            break;
        }
        let Some([next]) = frame.bytes::<1>(at) else {
            packet.class = Class::Malformed;
            return;
        };
        dlci = if next & 1 == 1 { (dlci << 6) | (next as u32 >> 2) } else { (dlci << 7) | (next as u32 >> 1) };
        last = next;
        at += 1;
    }
    if last & 1 == 0 || high & 1 == 1 {
        packet.class = Class::Malformed;
        return;
    }
    // LMI: DLCI 0 (ANSI T1.617 Annex D, ITU Q.933 Annex A), or 1023 (Cisco's).
    if dlci == 0 || (at == offset + 2 && dlci == 1023) {
        packet.not_ip = NotIp::LinkControl;
        return;
    }
    let Some([control, next]) = frame.bytes::<2>(at) else {
        packet.class = Class::Malformed;
        return;
    };
    if control != FR_UI {
        return ethertype_at(frame, at, at + 2, packet);
    }
    let nlpid_at = if next == 0 { at + 2 } else { at + 1 };
    let Some([nlpid]) = frame.bytes::<1>(nlpid_at) else {
        packet.class = Class::Malformed;
        return;
    };
    match nlpid {
        NLPID_IPV4 => ipv4(frame, nlpid_at + 1, packet),
        NLPID_IPV6 => ipv6(frame, nlpid_at + 1, packet),
        // SNAP: an OUI, then an ethertype.
        NLPID_SNAP => ethertype_at(frame, nlpid_at + 4, nlpid_at + 6, packet),
        NLPID_Q933 => packet.not_ip = NotIp::LinkControl,
        _ => {}
    }
}

/// The header a Prism or AVS (wlan-ng) driver puts before 802.11: AVS
/// starts with its magic and gives its length big-endian; Prism gives its
/// length (144 bytes) in the capturing host's byte order. Captures of link
/// type 119 hold either, as libpcap and Wireshark read them.
#[inline(always)]
fn wlan_capture_header<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    let (Some(magic), Some(length)) = (frame.bytes::<4>(offset), frame.bytes::<4>(offset + 4)) else {
        packet.class = Class::Malformed;
        return;
    };
    let length = if u32::from_be_bytes(magic) & 0xffff_fff0 == AVS_MAGIC {
        u32::from_be_bytes(length)
    } else {
        match u32::from_le_bytes(length) {
            little if little <= MAX_CAPTURE_HEADER => little,
            _ => u32::from_be_bytes(length),
        }
    };
    if !(8..=MAX_CAPTURE_HEADER).contains(&length) {
        packet.class = Class::Malformed;
        return;
    }
    wlan(frame, offset + length as usize, packet)
}

/// An 802.11 frame (IEEE 802.11-2020, 9.2): only data frames with a body
/// carry IP, after an LLC/SNAP header. The MAC header is 24 bytes, 30 with
/// a fourth address (to and from the distribution system), 2 more with QoS
/// and 4 more with HT control. A-MSDU aggregates are not opened.
#[inline(always)]
fn wlan<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    let Some([control, flags]) = frame.bytes::<2>(offset) else {
        packet.class = Class::Malformed;
        return;
    };
    if control & 0x03 != 0 {
        // Protocol version 0 is the only one.
        packet.class = Class::Malformed;
        return;
    }
    let kind = (control >> 2) & 0x03;
    let subtype = control >> 4;
    // Management, control, extension; and data subtypes without a body.
    if kind != WLAN_DATA || subtype & WLAN_NO_BODY != 0 {
        packet.not_ip = NotIp::LinkControl;
        return;
    }
    if flags & WLAN_PROTECTED != 0 {
        packet.not_ip = NotIp::Encrypted;
        return;
    }
    let mut header = 24;
    if flags & 0x03 == 0x03 {
        header += 6;
    }
    if subtype & WLAN_QOS != 0 {
        header += 2;
        if flags & WLAN_ORDER != 0 {
            header += 4;
        }
    }
    let Some(llc) = frame.bytes::<3>(offset + header) else {
        packet.class = Class::Malformed;
        return;
    };
    if llc == [0xaa, 0xaa, 0x03] {
        ethertype_at(frame, offset + header + 6, offset + header + 8, packet)
    }
}

/// PKTAP: its header's length (at 0) and the link type of the packet after
/// it (at 8), both in the capturing host's byte order, little-endian on
/// every Mac since the PowerPC.
#[inline(always)]
fn pktap<F: Frame + ?Sized>(frame: &F, packet: &mut Packet) {
    let (Some(length), Some(dlt)) = (frame.bytes::<4>(0), frame.bytes::<4>(8)) else {
        packet.class = Class::Malformed;
        return;
    };
    let length = u32::from_le_bytes(length);
    if !(12..=MAX_CAPTURE_HEADER).contains(&length) {
        packet.class = Class::Malformed;
        return;
    }
    if let Some(inner) = LinkType::from_linktype(u32::from_le_bytes(dlt)) {
        link_layer(frame, inner, length as usize, packet)
    }
}

/// PPP from `offset`: HDLC-like address and control (0xff 0x03) if
/// present, then the protocol field, one byte when compressed (RFC 1661:
/// an odd first byte), two otherwise. IPv4 and IPv6 have flows; LCP and
/// the other control protocols are not IP.
#[inline(always)]
fn ppp<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    let offset = match frame.bytes::<2>(offset) {
        Some([0xff, 0x03]) => offset + 2,
        _ => offset,
    };
    let Some([first]) = frame.bytes::<1>(offset) else {
        packet.class = Class::Malformed;
        return;
    };
    let (protocol, payload) = if first & 1 == 1 {
        (first as u16, offset + 1)
    } else {
        let Some(field) = frame.bytes::<2>(offset) else {
            packet.class = Class::Malformed;
            return;
        };
        (u16::from_be_bytes(field), offset + 2)
    };
    ppp_payload(frame, protocol, payload, packet)
}

/// What a PPP protocol field announces, from `offset`: IPv4, IPv6, an MPLS
/// label stack (RFC 3032), or one of PPP's control protocols.
#[inline(always)]
fn ppp_payload<F: Frame + ?Sized>(frame: &F, protocol: u16, offset: usize, packet: &mut Packet) {
    match protocol {
        PPP_IPV4 => ipv4(frame, offset, packet),
        PPP_IPV6 => ipv6(frame, offset, packet),
        PPP_MPLS_UNICAST | PPP_MPLS_MULTICAST => mpls(frame, offset, packet),
        // Network and link control protocols (RFC 1661, 2: 8xxx and cxxx).
        0x8000.. => packet.not_ip = NotIp::LinkControl,
        _ => {}
    }
}

/// Parses an Ethernet frame: what the XDP program sees.
#[inline(always)]
pub fn parse_ethernet<F: Frame + ?Sized>(frame: &F, decapsulate: Decapsulate) -> Packet {
    let mut packet = Packet::empty();
    ethernet(frame, 0, &mut packet);
    decapsulated(frame, packet, decapsulate)
}

/// An Ethernet header at `offset` (the frame's, or a tunnel's inner one).
#[inline(always)]
fn ethernet<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    ethertype_at(frame, offset + 12, offset + ETH_HLEN, packet)
}

/// Reads the ethertype at `type_offset` and parses what follows from `payload`.
#[inline(always)]
fn ethertype_at<F: Frame + ?Sized>(frame: &F, type_offset: usize, payload: usize, packet: &mut Packet) {
    let Some(ethertype) = frame.bytes::<2>(type_offset) else {
        packet.class = Class::Malformed;
        return;
    };
    network(frame, u16::from_be_bytes(ethertype), payload, packet)
}

#[inline(always)]
fn null_family<F: Frame + ?Sized>(frame: &F, link: LinkType, offset: usize, packet: &mut Packet) {
    let Some(family) = frame.bytes::<4>(offset) else {
        packet.class = Class::Malformed;
        return;
    };
    // The family is written by the capturing host; only the low byte matters
    // for the values below, so look for it at either end.
    let family = if link == LinkType::Loop || (family[0] == 0 && family[1] == 0) { family[3] } else { family[0] };
    match family {
        2 => ipv4(frame, offset + 4, packet),
        // AF_INET6 is 10 on Linux, 24, 28 or 30 on the BSDs and macOS.
        10 | 24 | 28 | 30 => ipv6(frame, offset + 4, packet),
        _ => {}
    }
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ || ethertype == ETHERTYPE_QINQ_OLD
}

#[inline(always)]
fn network<F: Frame + ?Sized>(frame: &F, ethertype: u16, offset: usize, packet: &mut Packet) {
    let mut ethertype = ethertype;
    let mut offset = offset;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        packet.marks |= MARK_VLAN;
        let Some(inner) = frame.bytes::<2>(offset + 2) else {
            packet.class = Class::Malformed;
            return;
        };
        ethertype = u16::from_be_bytes(inner);
        offset += 4;
    }
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(frame, offset, packet),
        ETHERTYPE_IPV6 => ipv6(frame, offset, packet),
        ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => mpls(frame, offset, packet),
        ETHERTYPE_PPPOE_SESSION => pppoe(frame, offset, packet),
        _ => {}
    }
}

/// An MPLS label stack, then IPv4 or IPv6 guessed from the version nibble
/// (as nfdump and Zeek do; pseudowires are not followed).
#[inline(always)]
fn mpls<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    packet.marks |= MARK_MPLS;
    let mut offset = offset;
    for _ in 0..MAX_MPLS_LABELS {
        let Some(label) = frame.bytes::<4>(offset) else {
            packet.class = Class::Malformed;
            return;
        };
        offset += 4;
        if label[2] & 1 != 0 {
            return ip_by_version(frame, offset, packet);
        }
    }
}

/// A PPPoE session header (6 bytes) and the PPP protocol field (2 bytes).
#[inline(always)]
fn pppoe<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    packet.marks |= MARK_PPPOE;
    let Some(protocol) = frame.bytes::<2>(offset + 6) else {
        packet.class = Class::Malformed;
        return;
    };
    ppp_payload(frame, u16::from_be_bytes(protocol), offset + 8, packet)
}

#[inline(always)]
fn ip_by_version<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    // Two bytes, though the version is in the first: a one-byte check at an
    // offset the verifier cannot know compiles to `ptr >= end`, which it
    // does not take as a bound. No IP header is shorter, so nothing changes.
    let Some([first, _]) = frame.bytes::<2>(offset) else {
        packet.class = Class::Malformed;
        return;
    };
    match first >> 4 {
        4 => ipv4(frame, offset, packet),
        6 => ipv6(frame, offset, packet),
        _ => {}
    }
}

#[inline(always)]
fn ipv4<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    let Some(header) = frame.bytes::<20>(offset) else {
        packet.class = Class::Malformed;
        return;
    };
    let header_len = ((header[0] & 0x0f) as usize) * 4;
    let total_len = match u16::from_be_bytes([header[2], header[3]]) {
        // A packet captured before the NIC segments it (GSO/TSO), or one
        // over 64 KiB (BIG TCP), has no length here: it is what the
        // capture holds, as libpcap's and Wireshark's dissectors take it.
        0 => frame.frame_len().saturating_sub(offset),
        length => length as usize,
    };
    if header[0] >> 4 != 4 || header_len < 20 || total_len < header_len {
        packet.class = Class::Malformed;
        return;
    }
    packet.class = Class::Ipv4;
    packet.ip_bytes = total_len as u32;
    let word = |at: usize| u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    FlowKey::map_ipv4(&mut packet.key.src_addr, word(12));
    FlowKey::map_ipv4(&mut packet.key.dst_addr, word(16));
    let proto = header[9];
    packet.key.proto = proto;

    let fragment = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = fragment & 0x2000 != 0;
    let fragment_offset = fragment & 0x1fff;
    if more_fragments || fragment_offset != 0 {
        packet.marks |= MARK_FRAGMENT;
    }
    if fragment_offset == 0 {
        transport(frame, offset + header_len, proto, packet);
    }
}

#[inline(always)]
fn ipv6<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    // The whole header in one read: the verifier then knows every byte of
    // it from one bounds check, wherever a tunnel put it.
    let Some(header) = frame.bytes::<40>(offset) else {
        packet.class = Class::Malformed;
        return;
    };
    if header[0] >> 4 != 6 {
        packet.class = Class::Malformed;
        return;
    }
    packet.class = Class::Ipv6;
    packet.ip_bytes = match u16::from_be_bytes([header[4], header[5]]) {
        // A jumbogram (RFC 2675: its length in a hop-by-hop option) or a
        // packet captured before segmentation, as for IPv4 above; a packet
        // with no next header may truly be empty.
        0 if header[6] != IPV6_NO_NEXT_HEADER => frame.frame_len().saturating_sub(offset) as u32,
        payload => 40 + payload as u32,
    };
    packet.key.src_addr = address_from_bytes(core::array::from_fn(|i| header[8 + i]));
    packet.key.dst_addr = address_from_bytes(core::array::from_fn(|i| header[24 + i]));

    let mut next = header[6];
    let mut offset = offset + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let header_len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_MOBILITY | IPV6_HIP | IPV6_SHIM6 => 8,
            IPV6_AUTH => 4,
            IPV6_FRAGMENT => 0,
            _ => break,
        };
        let Some(ext) = frame.bytes::<4>(offset) else {
            packet.key.proto = next;
            packet.marks |= MARK_TRUNCATED;
            return;
        };
        if header_len == 0 {
            packet.marks |= MARK_FRAGMENT;
            packet.key.proto = ext[0];
            if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                // A later fragment: its first bytes are payload, not a header.
                return;
            }
            offset += 8;
        } else if header_len == 4 {
            offset += (ext[1] as usize + 2) * 4;
        } else {
            offset += (ext[1] as usize + 1) * 8;
        }
        next = ext[0];
    }
    packet.key.proto = next;
    transport(frame, offset, next, packet);
}

#[inline(always)]
fn transport<F: Frame + ?Sized>(frame: &F, offset: usize, proto: u8, packet: &mut Packet) {
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let Some(ports) = frame.bytes::<4>(offset) else {
                packet.marks |= MARK_TRUNCATED;
                return;
            };
            packet.key.src_port = u16::from_be_bytes([ports[0], ports[1]]);
            packet.key.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
            if proto == PROTO_UDP {
                udp_tunnel(frame, offset + 8, packet);
            } else {
                // With the byte before, as one two-byte read (see ip_by_version).
                let Some([_, flags]) = frame.bytes::<2>(offset + 12) else {
                    packet.marks |= MARK_TRUNCATED;
                    return;
                };
                packet.tcp_flags = flags;
            }
        }
        PROTO_IPIP | PROTO_IPV6_IN_IP => packet.tunnel = tunnel(Decapsulate::IPIP, false, offset),
        PROTO_GRE => gre(frame, offset, packet),
        PROTO_ICMP | PROTO_ICMPV6 => {
            let Some(type_code) = frame.bytes::<2>(offset) else {
                packet.marks |= MARK_TRUNCATED;
                return;
            };
            packet.key.dst_port = u16::from_be_bytes(type_code);
        }
        _ => {}
    }
}

#[inline(always)]
fn tunnel(kind: u8, ethernet: bool, offset: usize) -> Tunnel {
    // An offset past 64 KiB is past any frame: such a tunnel opens onto nothing.
    Tunnel { kind, ethernet, offset: offset.min(u16::MAX as usize) as u16 }
}

/// VXLAN (its I flag set) or Geneve (version 0) after the UDP header at
/// `offset`, by the destination port; Geneve's options are skipped.
#[inline(always)]
fn udp_tunnel<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    match packet.key.dst_port {
        VXLAN_PORT => {
            if let Some([flags, ..]) = frame.bytes::<8>(offset)
                && flags & VXLAN_VALID_VNI != 0
            {
                packet.tunnel = tunnel(Decapsulate::VXLAN, true, offset + 8);
            }
        }
        GENEVE_PORT => {
            let Some([first, _, high, low]) = frame.bytes::<4>(offset) else { return };
            if first >> 6 != 0 {
                return;
            }
            let inner = offset + 8 + (first & 0x3f) as usize * 4;
            match u16::from_be_bytes([high, low]) {
                ETHERTYPE_TRANSPARENT_BRIDGING => packet.tunnel = tunnel(Decapsulate::GENEVE, true, inner),
                ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => packet.tunnel = tunnel(Decapsulate::GENEVE, false, inner),
                _ => {}
            }
        }
        _ => {}
    }
}

/// GRE version 0 (RFC 2784, 2890) at `offset`: its optional checksum, key
/// and sequence number skipped, then IP, Ethernet (transparent bridging)
/// or ERSPAN. ERSPAN type I has no header of its own (no sequence number),
/// type II an 8-byte one, type III 12 bytes and an 8-byte platform
/// subheader when its O flag says so. Version 1 (PPTP's) carries PPP, and
/// source routing (the R flag) is obsolete: neither is opened.
#[inline(always)]
fn gre<F: Frame + ?Sized>(frame: &F, offset: usize, packet: &mut Packet) {
    let Some([flags, version, high, low]) = frame.bytes::<4>(offset) else { return };
    if version & 0x07 != 0 || flags & GRE_ROUTING != 0 {
        return;
    }
    let sequenced = flags & GRE_SEQUENCE != 0;
    let optional_words = (flags & GRE_CHECKSUM != 0) as usize + (flags & GRE_KEY != 0) as usize + sequenced as usize;
    let inner = offset + 4 + optional_words * 4;
    packet.tunnel = match u16::from_be_bytes([high, low]) {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => tunnel(Decapsulate::GRE, false, inner),
        ETHERTYPE_TRANSPARENT_BRIDGING => tunnel(Decapsulate::GRE, true, inner),
        GRE_ERSPAN_2 if !sequenced => tunnel(Decapsulate::ERSPAN, true, inner),
        GRE_ERSPAN_2 => tunnel(Decapsulate::ERSPAN, true, inner + 8),
        GRE_ERSPAN_3 => {
            let Some(header) = frame.bytes::<12>(inner) else { return };
            tunnel(Decapsulate::ERSPAN, true, inner + 12 + (header[11] & 1) as usize * 8)
        }
        _ => return,
    };
}
