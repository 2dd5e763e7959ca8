//! The flow map's key and value.

/// A unidirectional flow: the 5-tuple plus the interface it arrived on.
///
/// Addresses are 16 bytes in network order; IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so one key type serves both families. Ports are in host
/// order. For ICMP and ICMPv6 `src_port` is 0 and `dst_port` is
/// `type << 8 | code`, as NetFlow and IPFIX report them. Every byte is
/// initialised (the padding explicitly) because the kernel hashes the raw bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// Kernel interface index (live) or capture interface id (files).
    pub ifindex: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    pub const ZERO: FlowKey =
        FlowKey { src_addr: [0; 16], dst_addr: [0; 16], ifindex: 0, src_port: 0, dst_port: 0, proto: 0, _pad: [0; 3] };

    /// Writes `addr` as an IPv4-mapped IPv6 address.
    #[inline(always)]
    pub fn map_ipv4(out: &mut [u8; 16], addr: [u8; 4]) {
        *out = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3]];
    }
}

/// Counts for one flow on one CPU (the kernel map is per-CPU; userspace sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    /// IP-layer octets: IPv4 total length, or 40 + IPv6 payload length.
    pub bytes: u64,
    /// Kernel `CLOCK_MONOTONIC` nanoseconds (live) of the first and last packet.
    pub first_ns: u64,
    pub last_ns: u64,
    /// OR of the TCP flags of every packet (CWR ECE URG ACK PSH RST SYN FIN).
    pub tcp_flags: u8,
    pub _pad: [u8; 7],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are repr(C), contain only integers and explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 4 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<FlowStats>(), 8 * 4 + 1 + 7);
    }
}
