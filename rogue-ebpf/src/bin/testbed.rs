//! Programs that measure and drive the meter, never attached in production:
//! - `testbed_pass`: returns XDP_PASS and nothing else (the cost baseline);
//! - `testbed_floor`: one per-CPU hash update on a fixed flow-sized key, the
//!   least any flow meter must do per packet;
//! - `testbed_generate`: for BPF_PROG_TEST_RUN live frames, puts each frame
//!   in the next of `GENERATOR[0]` flows, round robin, and transmits it
//!   (XDP_TX). Only ports change, so addresses stay the test's own;
//! - `testbed_next_port`, `testbed_next_flow`: move a test-run frame to the
//!   next flow and tail-call `NEXT[0]` (the meter, or `testbed_floor_keyed`,
//!   one hash update keyed by the ports), to measure many distinct flows.
// An XDP program only for bpfel; on the host (clippy and `cargo test` over
// the workspace) an ordinary std program with an empty `main`, since a
// `no_std` binary cannot be built for a target whose core unwinds.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, PerCpuHashMap, ProgramArray},
    programs::XdpContext,
};
use rogue_common::{FlowKey, FlowStats};

#[map]
static FLOOR: PerCpuHashMap<FlowKey, FlowStats> = PerCpuHashMap::with_max_entries(1, 0);
/// `[0]`: how many distinct flows the generator cycles through.
#[map]
static GENERATOR: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static GENERATED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where the generator writes the flow number in an untagged Ethernet frame
/// with a 20-byte IPv4 header: the low 16 bits as the UDP source port, the
/// rest added to the UDP destination port 9000.
const UDP_SRC_PORT: usize = 14 + 20;
const UDP_DST_PORT: usize = 14 + 22;
const FIRST_DST_PORT: u64 = 9000;

#[xdp]
pub fn testbed_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn testbed_floor(_ctx: XdpContext) -> u32 {
    let key = FlowKey::ZERO;
    match FLOOR.get_ptr_mut(key) {
        // SAFETY: per-CPU value of a live entry.
        Some(stats) => unsafe { (*stats).packets += 1 },
        None => {
            let first = FlowStats { packets: 1, ..FlowStats::default() };
            let _ = FLOOR.insert(key, first, 0);
        }
    }
    xdp_action::XDP_PASS
}

#[xdp]
pub fn testbed_generate(ctx: XdpContext) -> u32 {
    let flows = GENERATOR.get(0).map_or(1, |&n| n as u64);
    let Some(seq) = GENERATED.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU slot; live-frames test runs do not nest.
    let flow = unsafe {
        let n = *seq;
        *seq = n + 1;
        // No `%`: its divide-by-zero panic path is code the verifier rejects.
        n.checked_rem(flows).unwrap_or(0)
    };
    let start = ctx.data();
    if start + UDP_DST_PORT + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let dst_port = (FIRST_DST_PORT + (flow >> 16)) as u16;
    // SAFETY: both writes are inside the frame, checked above.
    unsafe {
        core::ptr::write_unaligned((start + UDP_SRC_PORT) as *mut [u8; 2], (flow as u16).to_be_bytes());
        core::ptr::write_unaligned((start + UDP_DST_PORT) as *mut [u8; 2], dst_port.to_be_bytes());
    }
    xdp_action::XDP_TX
}

/// `[0]`: where `testbed_next_port` and `testbed_next_flow` hand each
/// packet on: rogue's meter, or `testbed_floor_keyed`.
#[map]
static NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
static FLOOR_KEYED: PerCpuHashMap<FlowKey, FlowStats> = PerCpuHashMap::with_max_entries(1 << 17, 0);

/// The TCP or UDP ports of an untagged Ethernet frame with a 20-byte IPv4 header.
const PORTS: usize = 14 + 20;

/// For BPF_PROG_TEST_RUN with `repeat`, which reruns the program on one
/// buffer whose changes persist: moves the frame to the next of 65,536
/// flows (the destination port counts up and wraps), then hands it on.
#[xdp]
pub fn testbed_next_port(ctx: XdpContext) -> u32 {
    let at = ctx.data() + PORTS + 2;
    if at + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: inside the frame, checked above.
    unsafe {
        let port = u16::from_be_bytes(core::ptr::read_unaligned(at as *const [u8; 2]));
        core::ptr::write_unaligned(at as *mut [u8; 2], port.wrapping_add(1).to_be_bytes());
    }
    hand_on(&ctx)
}

/// As `testbed_next_port`, over 2^32 flows: both ports count up as one number.
#[xdp]
pub fn testbed_next_flow(ctx: XdpContext) -> u32 {
    let at = ctx.data() + PORTS;
    if at + 4 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: inside the frame, checked above.
    unsafe {
        let ports = u32::from_be_bytes(core::ptr::read_unaligned(at as *const [u8; 4]));
        core::ptr::write_unaligned(at as *mut [u8; 4], ports.wrapping_add(1).to_be_bytes());
    }
    hand_on(&ctx)
}

#[inline(always)]
fn hand_on(ctx: &XdpContext) -> u32 {
    // SAFETY: NEXT holds XDP programs only; a failed tail call falls through.
    unsafe { NEXT.tail_call(ctx, 0) };
    xdp_action::XDP_ABORTED
}

/// The floor for many flows: one per-CPU hash update keyed by the frame's ports.
#[xdp]
pub fn testbed_floor_keyed(ctx: XdpContext) -> u32 {
    let at = ctx.data() + PORTS;
    if at + 4 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: inside the frame, checked above.
    let ports = unsafe { core::ptr::read_unaligned(at as *const [u8; 4]) };
    let key = FlowKey {
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        ..FlowKey::ZERO
    };
    match FLOOR_KEYED.get_ptr_mut(key) {
        // SAFETY: per-CPU value of a live entry.
        Some(stats) => unsafe { (*stats).packets += 1 },
        None => {
            let first = FlowStats { packets: 1, ..FlowStats::default() };
            let _ = FLOOR_KEYED.insert(key, first, 0);
        }
    }
    xdp_action::XDP_PASS
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
