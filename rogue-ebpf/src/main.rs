//! rogue's XDP flow meter: counts every frame into per-CPU flow maps and
//! counters, and always passes the frame on (XDP_PASS). It never drops,
//! redirects or changes traffic; a gateway keeps forwarding if rogue stops.
//!
//! Rare events (a full flow map, a malformed frame, a state that cannot
//! happen) are also logged through aya-log at a level userspace sets at load
//! time (capture.kernel_log). The level is a constant of the loaded program,
//! so with logging off the verifier removes the logging code: the hot path
//! pays nothing. The counters count every event; the log names some of them.
// An XDP program only for bpfel; on the host (clippy and `cargo test` over
// the workspace) an ordinary std program with an empty `main`, since a
// `no_std` binary cannot be built for a target whose core unwinds.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

use aya_ebpf::{
    Global,
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::XdpContext,
};
use aya_log_ebpf::{debug, error, warn};
use rogue_common::{
    FlowKey, FlowStats, MeterCounters, address_bytes,
    maps::{COUNTER_SLOTS, DEFAULT_FLOW_MAP_ENTRIES, counter_slot},
    parse::{Decapsulate, MAX_TUNNELS, Packet, Tunnel, inner_packet, opens_tunnel, parse_ethernet},
};
use rogue_ebpf::XdpFrame;

type FlowMap = PerCpuHashMap<FlowKey, FlowStats>;

// Userspace resizes both flow maps at load time (capture.flow_map_entries).
#[map]
static FLOWS_0: FlowMap = FlowMap::with_max_entries(DEFAULT_FLOW_MAP_ENTRIES, 0);
#[map]
static FLOWS_1: FlowMap = FlowMap::with_max_entries(DEFAULT_FLOW_MAP_ENTRIES, 0);
#[map]
static FLOW_MAP_INDEX: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<MeterCounters> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The tunnels the meter opens (`Decapsulate`'s bits), set by userspace at
/// load time as a constant: the verifier sees its value and drops the code
/// of every tunnel not opened, so decapsulation off costs nothing.
#[unsafe(no_mangle)]
static DECAPSULATE: Global<u8> = Global::new(0);

#[inline(always)]
fn decapsulate() -> Decapsulate {
    Decapsulate(DECAPSULATE.load())
}

/// One slot per CPU that a tunnel's start passes through (see `laundered`).
#[map]
static TUNNEL_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The frame's packet: the outer one, or as the shared parser's
/// `decapsulated` finds it, the one inside its tunnels.
#[inline(always)]
fn packet_of(ctx: &XdpContext) -> Packet {
    let frame = XdpFrame { start: ctx.data(), end: ctx.data_end() };
    let mut packet = parse_ethernet(&frame, Decapsulate::NONE);
    for _ in 0..MAX_TUNNELS {
        if !opens_tunnel(&packet, decapsulate()) {
            break;
        }
        let Some((tunnel, marks)) = laundered(packet.tunnel, packet.marks) else { break };
        let frame = XdpFrame { start: ctx.data(), end: ctx.data_end() };
        packet = inner_packet(&frame, tunnel, marks);
    }
    packet
}

/// `tunnel` and `marks` as values the verifier knows only by their bounds.
/// Each path through the outer headers reaches the inner parse with its own
/// exact offset and marks; the verifier would walk the inner parse once per
/// path (past its million instructions). Through a map value, they are the
/// same unknowns on every path, and the verifier walks it once. An offset
/// past a page is past any frame XDP sees.
#[inline(always)]
fn laundered(tunnel: Tunnel, marks: u8) -> Option<(Tunnel, u8)> {
    let slot = TUNNEL_START.get_ptr_mut(0)?;
    let packed =
        tunnel.offset as u64 | (tunnel.kind as u64) << 16 | (tunnel.ethernet as u64) << 24 | (marks as u64) << 32;
    // SAFETY: this CPU's slot; XDP programs do not nest on one CPU.
    let packed = unsafe {
        core::ptr::write_volatile(slot, packed);
        core::ptr::read_volatile(slot)
    };
    let offset = (packed & 0xffff) as u16;
    if offset > 4096 {
        return None;
    }
    let tunnel = Tunnel { kind: (packed >> 16) as u8, ethernet: (packed >> 24) & 1 == 1, offset };
    Some((tunnel, (packed >> 32) as u8))
}

// Inlined into the section's entry point: past a size (the tunnels' inner
// parse made it), LLVM leaves it a BPF-to-BPF call, 11 ns a packet.
#[xdp]
#[inline(always)]
pub fn rogue_meter(ctx: XdpContext) -> u32 {
    meter(&ctx);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn meter(ctx: &XdpContext) {
    // Taken first: after the parse, the frame's pointers would carry into
    // the rest each path's own checked range (see `laundered`).
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let packet = packet_of(ctx);
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(counters) = COUNTERS.get_ptr_mut(counter_slot(ifindex)) else {
        // Not reachable (the slot is always below the array's size): the
        // frame is in no count, so say so.
        error!(ctx, "no counter slot for ifindex {}: a frame of {} bytes not counted", ifindex, frame_len);
        return;
    };
    // SAFETY: a per-CPU slot; XDP programs do not nest on one CPU.
    let counters = unsafe { &mut *counters };
    counters.count(&packet, frame_len);
    if packet.is_malformed() {
        debug!(
            ctx,
            "malformed frame of {} bytes on ifindex {} (class {}, marks {:x})",
            frame_len,
            ifindex,
            packet.class as u8,
            packet.marks
        );
    }
    if !packet.has_flow() {
        return;
    }
    let mut key = packet.key;
    key.ifindex = ifindex;
    let recorded = match FLOW_MAP_INDEX.get(0) {
        Some(1) => record(&FLOWS_1, &key, &packet),
        _ => record(&FLOWS_0, &key, &packet),
    };
    if !recorded {
        counters.count_insert_failure(packet.ip_bytes);
        let (src, dst) = (address_bytes(&key.src_addr), address_bytes(&key.dst_addr));
        warn!(
            ctx,
            "flow map full: {:i}:{} > {:i}:{} proto {} on ifindex {} counted in no flow ({} bytes)",
            src,
            key.src_port,
            dst,
            key.dst_port,
            key.proto,
            ifindex,
            packet.ip_bytes
        );
    }
}

/// Adds the packet to its flow; false when the map is full.
#[inline(always)]
fn record(flows: &FlowMap, key: &FlowKey, packet: &Packet) -> bool {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(stats) = flows.get_ptr_mut(key) {
        update(stats, packet, now);
        return true;
    }
    let first = FlowStats {
        packets: 1,
        bytes: packet.ip_bytes as u64,
        first_ns: now,
        last_ns: now,
        tcp_flags: packet.tcp_flags,
        _pad: [0; 7],
    };
    if flows.insert(key, first, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    // Either another CPU created the key since our lookup (then it is there
    // now and this CPU's slot is zeroed) or the map is full.
    match flows.get_ptr_mut(key) {
        Some(stats) => {
            update(stats, packet, now);
            true
        }
        None => false,
    }
}

#[inline(always)]
fn update(stats: *mut FlowStats, packet: &Packet, now: u64) {
    // SAFETY: a per-CPU value of a live map entry.
    let stats = unsafe { &mut *stats };
    if stats.packets == 0 {
        stats.first_ns = now;
    }
    stats.packets += 1;
    stats.bytes += packet.ip_bytes as u64;
    stats.last_ns = now;
    stats.tcp_flags |= packet.tcp_flags;
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Never reached: the program has no panicking paths (the verifier would
/// reject them), but a `no_std` binary must name a handler.
#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
