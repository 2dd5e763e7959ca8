//! The XDP program's cost per packet, through BPF_PROG_TEST_RUN with
//! `repeat` (the kernel's own average over the repetitions), against two
//! references run the same way: a program that only returns XDP_PASS, and
//! one that does a single per-CPU hash update on a flow-sized key (the least
//! any flow meter must do).
//!
//! For many flows, `testbed_next_port` moves the test frame to the next of
//! 65,536 flows (a test run repeats on one buffer and keeps its changes) and
//! tail-calls the program measured: rogue's meter, or the floor keyed by the
//! frame's ports. Both pay the same few instructions and the tail call, so
//! their ratio is the meter's against the floor at 65,536 flows.

use aya::{
    Ebpf,
    maps::ProgramArray,
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp},
};
use rogue::capture::XdpMeter;
use rogue_testkit::TESTBED_OBJECT;

use crate::measure::{Table, median};

const REPEAT: u32 = 2_000_000;
const RUNS: usize = 7;

/// The kernel's ns per packet, median of the runs.
pub fn ns_per_packet(program: &Xdp, frame: &[u8]) -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let result = program
                    .test_run(TestRunOptions { data_in: Some(frame), repeat: REPEAT, ..Default::default() })
                    .expect("BPF_PROG_TEST_RUN (needs root)");
                result.duration.as_nanos() as f64
            })
            .collect(),
    )
}

fn frame(ethertype: u16, ip: &[u8], vlan: bool) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa];
    if vlan {
        frame.extend([0x81, 0x00, 0x00, 0x64]);
    }
    frame.extend(ethertype.to_be_bytes());
    frame.extend(ip);
    frame
}

/// An untagged IPv4 TCP frame, 192.0.2.10:40000 to 198.51.100.25:25.
pub fn ipv4_tcp() -> Vec<u8> {
    frame(0x0800, &ipv4_packet(), false)
}

fn ipv4_packet() -> Vec<u8> {
    let mut v4 = vec![0x45, 0, 0, 40, 0x12, 0x34, 0, 0, 64, 6, 0, 0, 192, 0, 2, 10, 198, 51, 100, 25];
    v4.extend(TCP);
    v4
}

const TCP: [u8; 20] = [0x9c, 0x40, 0x00, 0x19, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];

/// The reference programs, loaded.
pub struct Testbed {
    pub ebpf: Ebpf,
}

impl Testbed {
    pub fn load() -> Testbed {
        let mut ebpf = Ebpf::load(TESTBED_OBJECT).expect("load the reference programs (needs root)");
        for name in ["testbed_pass", "testbed_floor", "testbed_floor_keyed", "testbed_next_port", "testbed_next_flow"] {
            let program: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
            program.load().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        Testbed { ebpf }
    }

    pub fn program(&self, name: &str) -> &Xdp {
        self.ebpf.program(name).unwrap().try_into().unwrap()
    }

    pub fn fd(&self, name: &str) -> ProgramFd {
        self.program(name).fd().unwrap().try_clone().unwrap()
    }

    /// Where `testbed_next_*` hand their frames.
    pub fn hand_on_to(&mut self, program: &ProgramFd) {
        let mut next = ProgramArray::try_from(self.ebpf.map_mut("NEXT").unwrap()).unwrap();
        next.set(0, program, 0).unwrap();
    }
}

pub fn run() -> String {
    let ipv4 = ipv4_tcp();
    let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
    v6.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    v6.extend([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25]);
    v6.extend(TCP);
    let malformed = frame(0x0800, &ipv4_packet()[..12], false);

    let mut testbed = Testbed::load();
    let pass = ns_per_packet(testbed.program("testbed_pass"), &ipv4);
    let floor = ns_per_packet(testbed.program("testbed_floor"), &ipv4);
    let mut meter = XdpMeter::load(262_144).expect("load the meter");
    let meter_fd = meter.program().unwrap().fd().unwrap().try_clone().unwrap();

    let mut table = Table::new(&["program", "ns/packet", "vs XDP_PASS", "vs one hash update"]);
    table.row(&["XDP_PASS only".into(), format!("{pass:.1}"), "1.00".into(), String::new()]);
    table.row(&[
        "one per-CPU hash update (the floor)".into(),
        format!("{floor:.1}"),
        ratio(floor, pass),
        "1.00".into(),
    ]);
    let hot = [
        ("IPv4 TCP, one hot flow", ipv4.clone()),
        ("IPv6 TCP, one hot flow", frame(0x86dd, &v6, false)),
        ("802.1Q IPv4 TCP, one hot flow", frame(0x0800, &ipv4_packet(), true)),
        ("malformed (IPv4 header cut)", malformed),
    ];
    for (name, frame) in hot {
        let ns = ns_per_packet(meter.program().unwrap(), &frame);
        table.row(&[format!("rogue: {name}"), format!("{ns:.1}"), ratio(ns, pass), ratio(ns, floor)]);
    }

    // 65,536 flows, each reference behind the same flow-changing prelude.
    let (pass_fd, floor_fd) = (testbed.fd("testbed_pass"), testbed.fd("testbed_floor_keyed"));
    let prelude_pass = many_flows(&mut testbed, &pass_fd, &ipv4);
    let floor_many = many_flows(&mut testbed, &floor_fd, &ipv4);
    let rogue_many = many_flows(&mut testbed, &meter_fd, &ipv4);
    table.row(&[
        "next flow + tail call + XDP_PASS (the prelude)".into(),
        format!("{prelude_pass:.1}"),
        ratio(prelude_pass, pass),
        String::new(),
    ]);
    table.row(&[
        "prelude + one per-CPU hash update keyed by flow, 65,536 flows (the floor)".into(),
        format!("{floor_many:.1}"),
        ratio(floor_many, pass),
        "1.00".into(),
    ]);
    table.row(&[
        "prelude + rogue, 65,536 flows".into(),
        format!("{rogue_many:.1}"),
        ratio(rogue_many, pass),
        ratio(rogue_many, floor_many),
    ]);
    format!(
        "{}\n{RUNS} runs of {REPEAT} packets each, medians. Targets: within 1.5x of the floor for a hot flow, \
         within 1.2x at 65,536 flows.\n",
        table.into_string()
    )
}

/// ns/packet of `target` behind `testbed_next_port` (65,536 flows).
fn many_flows(testbed: &mut Testbed, target: &ProgramFd, frame: &[u8]) -> f64 {
    testbed.hand_on_to(target);
    ns_per_packet(testbed.program("testbed_next_port"), frame)
}

pub fn ratio(value: f64, reference: f64) -> String {
    format!("{:.2}", value / reference)
}
