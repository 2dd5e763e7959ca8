//! The meter's counters: what every frame was counted as.

use crate::parse::{Class, MARK_DECAPSULATED, MARK_FRAGMENT, MARK_MPLS, MARK_PPPOE, MARK_VLAN, NotIp, Packet};

/// Cumulative counters, one copy per CPU in the kernel; userspace sums them.
/// A capture reader keeps one copy and counts with the same [`count`] method,
/// so the two sources report the same numbers for the same frames.
///
/// [`count`]: MeterCounters::count
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterCounters {
    /// Every frame the meter saw.
    pub packets: u64,
    /// Their frame bytes (link layer included).
    pub bytes: u64,
    pub ipv4_packets: u64,
    /// IP-layer octets of IPv4 packets.
    pub ipv4_bytes: u64,
    pub ipv6_packets: u64,
    pub ipv6_bytes: u64,
    /// Frames that carry no IPv4/IPv6 packet rogue opens.
    pub non_ip: u64,
    /// Of those, the link's own signalling (see [`NotIp::LinkControl`]).
    pub link_control: u64,
    /// Of those, 802.11 data frames whose body is encrypted.
    pub encrypted: u64,
    /// Frames with at least one VLAN tag.
    pub vlan: u64,
    pub mpls: u64,
    pub pppoe: u64,
    /// IPv4 and IPv6 fragments, first and later.
    pub fragments: u64,
    /// Frames whose packet was taken out of a tunnel (capture.decapsulate).
    pub decapsulated: u64,
    /// Frames with a cut or invalid header (see the parser's module comment).
    pub malformed: u64,
    /// Packets (and their IP bytes) that found no slot in a full flow map.
    pub insert_failed_packets: u64,
    pub insert_failed_bytes: u64,
}

impl MeterCounters {
    /// Counts one parsed frame of `frame_len` bytes.
    #[inline(always)]
    pub fn count(&mut self, packet: &Packet, frame_len: u64) {
        self.packets += 1;
        self.bytes += frame_len;
        match packet.class {
            Class::NonIp => {
                self.non_ip += 1;
                match packet.not_ip {
                    NotIp::OtherProtocol => {}
                    NotIp::LinkControl => self.link_control += 1,
                    NotIp::Encrypted => self.encrypted += 1,
                }
            }
            Class::Malformed => {}
            Class::Ipv4 => {
                self.ipv4_packets += 1;
                self.ipv4_bytes += packet.ip_bytes as u64;
            }
            Class::Ipv6 => {
                self.ipv6_packets += 1;
                self.ipv6_bytes += packet.ip_bytes as u64;
            }
        }
        if packet.is_malformed() {
            self.malformed += 1;
        }
        let marks = packet.marks;
        // Most frames have no marks: one test skips four read-modify-writes.
        if marks != 0 {
            self.vlan += (marks & MARK_VLAN != 0) as u64;
            self.mpls += (marks & MARK_MPLS != 0) as u64;
            self.pppoe += (marks & MARK_PPPOE != 0) as u64;
            self.fragments += (marks & MARK_FRAGMENT != 0) as u64;
            self.decapsulated += (marks & MARK_DECAPSULATED != 0) as u64;
        }
    }

    /// Counts a packet that found no slot in the flow map.
    #[inline(always)]
    pub fn count_insert_failure(&mut self, ip_bytes: u32) {
        self.insert_failed_packets += 1;
        self.insert_failed_bytes += ip_bytes as u64;
    }

    /// Adds `other` field by field (summing per-CPU copies, or interfaces).
    pub fn add(&mut self, other: &MeterCounters) {
        *self = self.combine(other, u64::wrapping_add);
    }

    /// What was counted since `earlier` (an earlier reading of the same counters).
    pub fn since(&self, earlier: &MeterCounters) -> MeterCounters {
        self.combine(earlier, u64::wrapping_sub)
    }

    fn combine(&self, other: &MeterCounters, f: fn(u64, u64) -> u64) -> MeterCounters {
        MeterCounters {
            packets: f(self.packets, other.packets),
            bytes: f(self.bytes, other.bytes),
            ipv4_packets: f(self.ipv4_packets, other.ipv4_packets),
            ipv4_bytes: f(self.ipv4_bytes, other.ipv4_bytes),
            ipv6_packets: f(self.ipv6_packets, other.ipv6_packets),
            ipv6_bytes: f(self.ipv6_bytes, other.ipv6_bytes),
            non_ip: f(self.non_ip, other.non_ip),
            link_control: f(self.link_control, other.link_control),
            encrypted: f(self.encrypted, other.encrypted),
            vlan: f(self.vlan, other.vlan),
            mpls: f(self.mpls, other.mpls),
            pppoe: f(self.pppoe, other.pppoe),
            fragments: f(self.fragments, other.fragments),
            decapsulated: f(self.decapsulated, other.decapsulated),
            malformed: f(self.malformed, other.malformed),
            insert_failed_packets: f(self.insert_failed_packets, other.insert_failed_packets),
            insert_failed_bytes: f(self.insert_failed_bytes, other.insert_failed_bytes),
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u64 fields.
unsafe impl aya::Pod for MeterCounters {}
