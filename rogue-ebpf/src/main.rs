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
    parse::{Packet, parse_ethernet},
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

#[xdp]
pub fn rogue_meter(ctx: XdpContext) -> u32 {
    meter(&ctx);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn meter(ctx: &XdpContext) {
    let frame = XdpFrame { start: ctx.data(), end: ctx.data_end() };
    let packet = parse_ethernet(&frame);
    let ifindex = ctx.ingress_ifindex() as u32;
    let frame_len = (frame.end - frame.start) as u64;
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
