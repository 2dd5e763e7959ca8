//! Cost of the XDP flow meter per packet, through BPF_PROG_TEST_RUN with
//! `repeat`, against two references run the same way: a program that only
//! returns XDP_PASS, and one that does a single per-CPU hash update on a
//! fixed flow-sized key (the least any flow meter must do). Medians of
//! several runs; the ratios are what to compare across machines.

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use rogue::capture::{TESTBED_OBJECT, XdpMeter};

const REPEAT: u32 = 2_000_000;
const RUNS: usize = 7;

fn median_ns(program: &Xdp, frame: &[u8]) -> f64 {
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| {
            let result = program
                .test_run(TestRunOptions { data_in: Some(frame), repeat: REPEAT, ..Default::default() })
                .expect("BPF_PROG_TEST_RUN (needs root)");
            result.duration.as_nanos() as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[RUNS / 2]
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

fn main() {
    let tcp = [0x9c, 0x40, 0x00, 0x19, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];
    let mut v4 = vec![0x45, 0, 0, 40, 0x12, 0x34, 0, 0, 64, 6, 0, 0, 192, 0, 2, 10, 198, 51, 100, 25];
    v4.extend(tcp);
    let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
    v6.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    v6.extend([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25]);
    v6.extend(tcp);
    let ipv4 = frame(0x0800, &v4, false);
    let malformed = frame(0x0800, &v4[..12], false);

    let mut testbed = Ebpf::load(TESTBED_OBJECT).expect("load the reference programs (needs root)");
    let mut reference = |name: &str| -> f64 {
        let program: &mut Xdp = testbed.program_mut(name).unwrap().try_into().unwrap();
        program.load().unwrap();
        median_ns(program, &ipv4)
    };
    let pass = reference("testbed_pass");
    let floor = reference("testbed_floor");

    let mut meter = XdpMeter::load(262_144).expect("load the meter");
    let program = meter.program().unwrap();
    let cases = [
        ("IPv4 TCP, one hot flow", ipv4.clone()),
        ("IPv6 TCP, one hot flow", frame(0x86dd, &v6, false)),
        ("802.1Q IPv4 TCP, one hot flow", frame(0x0800, &v4, true)),
        ("malformed (IPv4 header cut)", malformed),
    ];
    println!("| program | ns/packet | vs XDP_PASS | vs one hash update |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| XDP_PASS only | {pass:.1} | 1.00 | |");
    println!("| one per-CPU hash update | {floor:.1} | {:.2} | 1.00 |", floor / pass);
    for (name, frame) in cases {
        let ns = median_ns(program, &frame);
        println!("| rogue: {name} | {ns:.1} | {:.2} | {:.2} |", ns / pass, ns / floor);
    }
    println!("\n{RUNS} runs of {REPEAT} packets each, medians; kernel {}", kernel_release());
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}
