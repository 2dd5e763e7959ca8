//! The XDP program itself, through BPF_PROG_TEST_RUN: the verifier accepts
//! it on this kernel, crafted frames give the flows and counters the table
//! in support/packets.rs requires (the same table the userspace parser
//! passes), and every frame of every real capture gives the same flows and
//! counters in the kernel as in userspace (parity).

use std::collections::BTreeMap;

use aya::programs::{TestRun, TestRunOptions};
use rogue::{
    capture::{
        XdpMeter,
        file::{CapturedFrame, FrameSink, read_frames},
    },
    config::KernelLog,
};
use rogue_common::{
    FlowKey, MeterCounters,
    parse::{Decapsulate, LinkType, parse},
};
use rogue_testkit::packets::{ExpectedFlow, cases, tunnel_cases};

const XDP_PASS: u32 = 2;

fn run(meter: &mut XdpMeter, frame: &[u8]) {
    let result = meter
        .program()
        .unwrap()
        .test_run(TestRunOptions { data_in: Some(frame), ..Default::default() })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN with a {}-byte frame: {e}", frame.len()));
    assert_eq!(result.return_value, XDP_PASS, "the meter must pass every frame");
}

#[test]
fn the_verifier_accepts_the_meter_and_it_passes_every_frame() {
    rogue_testkit::needs_root!("loading BPF programs");
    let mut meter =
        XdpMeter::load(1024, KernelLog::Off, Decapsulate::NONE).expect("load and verify the XDP program (needs root)");
    run(&mut meter, &rogue_testkit::packets::cases()[0].frame);
}

#[test]
fn every_crafted_frame_gives_its_flow_and_counters_in_the_kernel() {
    rogue_testkit::needs_root!("loading BPF programs");
    let mut meter = XdpMeter::load(1024, KernelLog::Off, Decapsulate::NONE).unwrap();
    for case in cases() {
        let (flow, counts) = kernel_outcome(&mut meter, &case.frame);
        assert_eq!(flow, case.flow, "{}: flow", case.name);
        assert_eq!(counts, case.counts.counters(case.frame.len(), &case.flow), "{}: counters", case.name);
    }
}

/// The kernel opens every tunnel the userspace parser does, as deep, when
/// loaded to, and none when not.
#[test]
fn every_tunnel_gives_its_outer_flow_closed_and_its_inner_flow_opened_in_the_kernel() {
    rogue_testkit::needs_root!("loading BPF programs");
    let mut closed = XdpMeter::load(1024, KernelLog::Off, Decapsulate::NONE).unwrap();
    let mut opened = XdpMeter::load(1024, KernelLog::Off, Decapsulate::ALL).unwrap();
    for case in tunnel_cases() {
        for (meter, (flow, counts), state) in
            [(&mut closed, &case.outer, "closed"), (&mut opened, &case.opened, "opened")]
        {
            let (got, counters) = kernel_outcome(meter, &case.frame);
            assert_eq!(got, *flow, "{} ({state}): flow", case.name);
            assert_eq!(counters, counts.counters(case.frame.len(), flow), "{} ({state}): counters", case.name);
        }
    }
}

/// The flow (at most one) and the counters one frame leaves in the kernel.
fn kernel_outcome(meter: &mut XdpMeter, frame: &[u8]) -> (Option<ExpectedFlow>, MeterCounters) {
    let before = meter.counters().unwrap();
    run(meter, frame);
    let drain = meter.drain().unwrap();
    assert!(drain.flows.len() <= 1, "one frame, one flow at most");
    let flow = drain.flows.first().map(|f| {
        assert_eq!(f.stats.packets, 1);
        assert!(f.stats.first_ns > 0 && f.stats.first_ns == f.stats.last_ns);
        ExpectedFlow {
            src: rogue::flows::address(&f.key.src_addr),
            dst: rogue::flows::address(&f.key.dst_addr),
            proto: f.key.proto,
            sport: f.key.src_port,
            dport: f.key.dst_port,
            bytes: f.stats.bytes,
            tcp_flags: f.stats.tcp_flags,
        }
    });
    (flow, meter.counters().unwrap().since(&before))
}

#[test]
fn a_full_flow_map_counts_the_packets_and_bytes_that_found_no_slot() {
    rogue_testkit::needs_root!("loading BPF programs");
    let mut meter = XdpMeter::load(16, KernelLog::Off, Decapsulate::NONE).unwrap();
    let frame = |port: u16| {
        rogue_testkit::packets::ethernet(
            0x0800,
            &rogue_testkit::packets::ipv4(
                rogue_testkit::packets::CLIENT_V4,
                rogue_testkit::packets::SERVER_V4,
                17,
                &[],
                0,
                &rogue_testkit::packets::udp(port, 53, &[0; 12]),
            ),
        )
    };
    for port in 1000..1020 {
        run(&mut meter, &frame(port));
    }
    // A packet of a flow already in the full map still finds its slot.
    run(&mut meter, &frame(1000));
    let drained = meter.drain().unwrap();
    assert_eq!(drained.flows.len(), 16);
    assert_eq!(drained.flows.iter().map(|f| f.stats.packets).sum::<u64>(), 17);
    let counters = meter.counters().unwrap();
    assert_eq!((counters.insert_failed_packets, counters.insert_failed_bytes), (4, 4 * 40));
    assert_eq!(counters.packets, 21, "every packet is still counted");
    // Drained, the map has room again.
    run(&mut meter, &frame(1019));
    assert_eq!(meter.drain().unwrap().flows.len(), 1);
}

/// A drain reads the map's two halves of buckets on two threads: every
/// flow comes out once, wherever its bucket, and the map is left empty.
#[test]
fn a_drain_takes_every_flow_once_and_leaves_the_map_empty() {
    rogue_testkit::needs_root!("loading BPF programs");
    let mut meter = XdpMeter::load(4096, KernelLog::Off, Decapsulate::NONE).unwrap();
    let frame = |port: u16| {
        use rogue_testkit::packets::{CLIENT_V4, SERVER_V4, ethernet, ipv4, udp};
        ethernet(0x0800, &ipv4(CLIENT_V4, SERVER_V4, 17, &[], 0, &udp(port, 53, &[0; 12])))
    };
    let ports = 10_000..13_000u16;
    for port in ports.clone() {
        run(&mut meter, &frame(port));
    }
    run(&mut meter, &frame(10_000));
    let drained = meter.drain().unwrap();
    let mut seen: Vec<u16> = drained.flows.iter().map(|f| f.key.src_port).collect();
    seen.sort_unstable();
    assert_eq!(seen, ports.collect::<Vec<_>>(), "each flow once");
    assert_eq!(drained.flows.iter().map(|f| f.stats.packets).sum::<u64>(), 3001);
    assert_eq!(meter.counters().unwrap().insert_failed_packets, 0);
    // The next drain reads the other map; the one after, this one again.
    assert_eq!(meter.drain().unwrap().flows.len(), 0);
    assert_eq!(meter.drain().unwrap().flows.len(), 0, "the drained map was left empty");
}

/// Per flow key: packets, IP bytes, TCP flags.
type FlowTable = BTreeMap<FlowKey, (u64, u64, u8)>;

/// Collects every frame of a capture as the kernel would see it on an
/// Ethernet interface.
struct EthernetFrames(Vec<Vec<u8>>);

impl FrameSink for EthernetFrames {
    fn interface(&mut self, _: u32, _: &str) {}

    fn frame(&mut self, frame: CapturedFrame<'_>) {
        let ethernet = match frame.link {
            LinkType::Ethernet => frame.data.to_vec(),
            // Raw IP captures: give the packet the Ethernet header an
            // interface would have carried it in.
            LinkType::RawIp => {
                let ethertype: u16 = if frame.data.first().is_some_and(|b| b >> 4 == 6) { 0x86dd } else { 0x0800 };
                rogue_testkit::packets::ethernet(ethertype, frame.data)
            }
            other => panic!("no capture here has link type {other:?}"),
        };
        self.0.push(ethernet);
    }
}

#[test]
fn every_capture_gives_the_same_flows_and_counters_in_kernel_and_userspace() {
    rogue_testkit::needs_root!("loading BPF programs");
    let frames = same_in_kernel_and_userspace(&rogue_testkit::captures(), Decapsulate::NONE);
    assert!(frames > 7000, "compared {frames} frames");
}

/// The captures of tunnels, every tunnel opened: the kernel program and
/// the capture reader find the same packets inside.
#[test]
fn every_tunnel_capture_gives_the_same_inner_flows_in_kernel_and_userspace() {
    rogue_testkit::needs_root!("loading BPF programs");
    let frames = same_in_kernel_and_userspace(&rogue_testkit::tunnel_captures(), Decapsulate::ALL);
    assert!(frames >= 440, "compared {frames} frames");
}

/// Checks that every frame of `captures` gives the same flows and counters
/// through the kernel program and through the userspace parser, both
/// opening `decapsulate`; returns the frames compared.
fn same_in_kernel_and_userspace(captures: &[std::path::PathBuf], decapsulate: Decapsulate) -> usize {
    // The kernel takes at most a page per test frame; the flow depends only
    // on headers, so larger frames are cut to this, in both parsers alike.
    const MAX_TEST_FRAME: usize = 3000;
    let mut meter = XdpMeter::load(65536, KernelLog::Off, decapsulate).unwrap();
    let mut frames_compared = 0;
    for capture in captures {
        let mut sink = EthernetFrames(Vec::new());
        read_frames(capture, &mut sink).unwrap();

        let mut userspace = FlowTable::new();
        let mut userspace_counters = MeterCounters::default();
        let before = meter.counters().unwrap();
        for frame in &sink.0 {
            let frame = &frame[..frame.len().min(MAX_TEST_FRAME)];
            let packet = parse(frame, LinkType::Ethernet, decapsulate);
            userspace_counters.count(&packet, frame.len() as u64);
            if packet.has_flow() {
                // test_run delivers frames as if from the loopback device.
                let key = FlowKey { ifindex: 1, ..packet.key };
                let entry = userspace.entry(key).or_default();
                entry.0 += 1;
                entry.1 += packet.ip_bytes as u64;
                entry.2 |= packet.tcp_flags;
            }
            run(&mut meter, frame);
        }
        let kernel: FlowTable = meter
            .drain()
            .unwrap()
            .flows
            .iter()
            .map(|f| (f.key, (f.stats.packets, f.stats.bytes, f.stats.tcp_flags)))
            .collect();
        let name = rogue_testkit::stem(capture);
        assert_eq!(kernel, userspace, "{name}: flows");
        assert_eq!(meter.counters().unwrap().since(&before), userspace_counters, "{name}: counters");
        frames_compared += sink.0.len();
    }
    frames_compared
}
