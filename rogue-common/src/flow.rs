//! The flow map's key and value.

/// A 16-byte address in network order, held as four words so that the BPF
/// program moves it in four loads and stores rather than sixteen (LLVM keeps
/// byte arrays as one value per byte, and spills them all at every branch).
/// Each word holds its four bytes in memory order, so the key's bytes are the
/// address's bytes.
pub type Address = [u32; 4];

/// The address whose bytes in network order are `bytes`.
#[inline(always)]
pub fn address_from_bytes(bytes: [u8; 16]) -> Address {
    let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

/// The bytes of `address` in network order.
pub fn address_bytes(address: &Address) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(address) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    bytes
}

/// A unidirectional flow: the 5-tuple plus the interface it arrived on.
///
/// Addresses are IPv6 in network order; IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so one key type serves both families. Ports are in host
/// order. For ICMP and ICMPv6 `src_port` is 0 and `dst_port` is
/// `type << 8 | code`, as NetFlow and IPFIX report them. Every byte is
/// initialised (the padding explicitly) because the kernel hashes the raw bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src_addr: Address,
    pub dst_addr: Address,
    /// Kernel interface index (live) or capture interface id (files).
    pub ifindex: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    pub const ZERO: FlowKey =
        FlowKey { src_addr: [0; 4], dst_addr: [0; 4], ifindex: 0, src_port: 0, dst_port: 0, proto: 0, _pad: [0; 3] };

    /// Writes `addr` (its four bytes as one word in memory order) as an
    /// IPv4-mapped IPv6 address.
    #[inline(always)]
    pub fn map_ipv4(out: &mut Address, addr: u32) {
        *out = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr];
    }
}

/// Counts for one flow on one CPU (the kernel map is per-CPU; userspace sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    /// IP-layer octets: IPv4 total length, or 40 + IPv6 payload length.
    pub bytes: u64,
    /// Kernel `CLOCK_MONOTONIC_COARSE` nanoseconds (live) of the first and
    /// last packet: the clock of the last timer tick (4 ms steps at HZ=250).
    /// Reading it costs the program a few ns where the precise clock costs
    /// ~20 (see BENCHMARKS.md); a tick is far below anything flows are
    /// judged by (timeouts and time bins of seconds and minutes).
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

    #[test]
    fn addresses_keep_their_bytes_in_network_order() {
        let bytes = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25];
        let address = address_from_bytes(bytes);
        assert_eq!(address_bytes(&address), bytes);
        let mut mapped = [0; 4];
        FlowKey::map_ipv4(&mut mapped, u32::from_ne_bytes([192, 0, 2, 10]));
        assert_eq!(address_bytes(&mapped), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 10]);
    }
}
