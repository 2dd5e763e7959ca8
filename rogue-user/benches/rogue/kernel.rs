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
//!
//! The runs of all rows interleave, round robin, so that what else the
//! machine does meanwhile weighs on every row alike. With
//! ROGUE_BENCH_BASELINE_METER naming another build of the meter's object
//! (an earlier commit's `target/release/build/rogue-user-*/out/rogue`), its
//! rows are measured in the same rounds: a change to the program is judged
//! against the same noise.

use aya::{
    Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp},
};
use rogue::capture::xdp::METER_OBJECT;
use rogue_common::{
    maps::{DECAPSULATE_GLOBAL, FLOW_MAPS, METER_PROGRAM},
    parse::Decapsulate,
};
use rogue_testkit::TESTBED_OBJECT;

use crate::measure::{Table, median};

const REPEAT: u32 = 2_000_000;
const RUNS: usize = 7;

/// One test run: the kernel's average ns per packet over REPEAT packets.
fn one_run(program: &Xdp, frame: &[u8]) -> f64 {
    let result = program
        .test_run(TestRunOptions { data_in: Some(frame), repeat: REPEAT, ..Default::default() })
        .expect("BPF_PROG_TEST_RUN (needs root)");
    result.duration.as_nanos() as f64
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

/// What a row runs: a reference program, a meter, or a program behind the
/// flow-changing prelude (`testbed_next_port` tail-calling it).
enum Subject {
    Testbed(&'static str),
    Meter(usize),
    Behind(ProgramFd),
}

/// The programs the rows run, loaded once.
struct Programs {
    testbed: Testbed,
    /// The meter with its kernel log off, at debug, and the baseline object's.
    meters: Vec<Ebpf>,
}

impl Programs {
    fn xdp(&mut self, subject: &Subject) -> &Xdp {
        match subject {
            Subject::Testbed(name) => self.testbed.program(name),
            Subject::Meter(index) => self.meters[*index].program(METER_PROGRAM).unwrap().try_into().unwrap(),
            Subject::Behind(fd) => {
                self.testbed.hand_on_to(fd);
                self.testbed.program("testbed_next_port")
            }
        }
    }

    fn meter_fd(&self, index: usize) -> ProgramFd {
        let program: &Xdp = self.meters[index].program(METER_PROGRAM).unwrap().try_into().unwrap();
        program.fd().unwrap().try_clone().unwrap()
    }
}

/// A meter object loaded as XdpMeter loads it (its maps sized, its log
/// level and the tunnels it opens set), any build of it: one from before the
/// kernel log has no level, one from before decapsulation no tunnels.
fn load_meter(object: &[u8], kernel_log: u8, decapsulate: Decapsulate) -> Ebpf {
    let mut loader = EbpfLoader::new();
    for name in FLOW_MAPS {
        loader.map_max_entries(name, 262_144);
    }
    loader.override_global("AYA_LOG_LEVEL", &kernel_log, false);
    loader.override_global(DECAPSULATE_GLOBAL, &decapsulate.0, false);
    let mut ebpf = loader.load(object).expect("load the meter (needs root)");
    let program: &mut Xdp = ebpf.program_mut(METER_PROGRAM).unwrap().try_into().unwrap();
    program.load().expect("the verifier accepts the meter");
    ebpf
}

/// One row of the table: what runs, on which frame, against which floor.
struct Row {
    name: String,
    subject: Subject,
    frame: Vec<u8>,
    floor: Floor,
}

/// The floor a row is set against in the last column.
#[derive(Clone, Copy, PartialEq)]
enum Floor {
    None,
    OneFlow,
    ManyFlows,
}

pub fn run() -> String {
    let ipv4 = ipv4_tcp();
    let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
    v6.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    v6.extend([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25]);
    v6.extend(TCP);
    let hot = [
        ("IPv4 TCP, one hot flow", ipv4.clone()),
        ("IPv6 TCP, one hot flow", frame(0x86dd, &v6, false)),
        ("802.1Q IPv4 TCP, one hot flow", frame(0x0800, &ipv4_packet(), true)),
        ("malformed (IPv4 header cut)", frame(0x0800, &ipv4_packet()[..12], false)),
    ];

    // The meter as rogue loads it, with its kernel log off and at debug
    // (aya-log's level 4); and the baseline's, when one is named.
    let mut meters = vec![
        ("rogue", load_meter(METER_OBJECT, 0, Decapsulate::NONE)),
        ("rogue, kernel log at debug", load_meter(METER_OBJECT, 4, Decapsulate::NONE)),
        ("rogue, decapsulating all", load_meter(METER_OBJECT, 0, Decapsulate::ALL)),
    ];
    const DECAPSULATING: usize = 2;
    let baseline = std::env::var_os("ROGUE_BENCH_BASELINE_METER").map(|path| {
        let object = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.to_string_lossy()));
        meters.push(("baseline", load_meter(&object, 0, Decapsulate::NONE)));
        path.to_string_lossy().into_owned()
    });
    let row =
        |name: &str, subject, frame: &[u8], floor| Row { name: name.into(), subject, frame: frame.to_vec(), floor };
    let mut rows = vec![
        row("XDP_PASS only", Subject::Testbed("testbed_pass"), &ipv4, Floor::None),
        row("one per-CPU hash update (the floor)", Subject::Testbed("testbed_floor"), &ipv4, Floor::OneFlow),
    ];
    for (index, (label, _)) in meters.iter().enumerate() {
        for (name, frame) in &hot {
            rows.push(row(&format!("{label}: {name}"), Subject::Meter(index), frame, Floor::OneFlow));
        }
    }
    // Each tunnel, closed (its outer packet the flow) and opened.
    let tunnels = rogue_testkit::packets::tunnel_cases();
    for name in ["IP-in-IP", "GRE with a key", "ERSPAN type II", "VXLAN carrying IPv6", "Geneve with 8 bytes"] {
        let case = tunnels.iter().find(|c| c.name.starts_with(name)).expect("a tunnel case");
        for (label, index) in [("rogue", 0), ("rogue, decapsulating all", DECAPSULATING)] {
            let name = format!("{label}: {}", case.name);
            rows.push(row(&name, Subject::Meter(index), &case.frame, Floor::OneFlow));
        }
    }
    let testbed = Testbed::load();
    rows.push(row(
        "next flow + tail call + XDP_PASS (the prelude)",
        Subject::Behind(testbed.fd("testbed_pass")),
        &ipv4,
        Floor::None,
    ));
    rows.push(row(
        "prelude + one per-CPU hash update keyed by flow, 65,536 flows (the floor)",
        Subject::Behind(testbed.fd("testbed_floor_keyed")),
        &ipv4,
        Floor::ManyFlows,
    ));
    let mut programs = Programs { testbed, meters: meters.into_iter().map(|(_, ebpf)| ebpf).collect() };
    rows.push(row("prelude + rogue, 65,536 flows", Subject::Behind(programs.meter_fd(0)), &ipv4, Floor::ManyFlows));
    if baseline.is_some() {
        let subject = Subject::Behind(programs.meter_fd(DECAPSULATING + 1));
        rows.push(row("prelude + baseline, 65,536 flows", subject, &ipv4, Floor::ManyFlows));
    }

    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..RUNS {
        for (row, samples) in rows.iter().zip(&mut samples) {
            samples.push(one_run(programs.xdp(&row.subject), &row.frame));
        }
    }
    let ns: Vec<f64> = samples.into_iter().map(median).collect();
    // A floor's own row is the first row set against it.
    let reference = |floor: Floor| match floor {
        Floor::None => None,
        _ => rows.iter().zip(&ns).find(|(row, _)| row.floor == floor).map(|(_, ns)| *ns),
    };
    let pass = ns[0];
    let mut table = Table::new(&["program", "ns/packet", "vs XDP_PASS", "vs one hash update"]);
    for (row, ns) in rows.iter().zip(&ns) {
        let against = reference(row.floor).map(|floor| ratio(*ns, floor)).unwrap_or_default();
        table.row(&[row.name.clone(), format!("{ns:.1}"), ratio(*ns, pass), against]);
    }
    let baseline = baseline.map(|path| format!(" The baseline is the meter object {path}.")).unwrap_or_default();
    format!(
        "{}\n{RUNS} rounds of {REPEAT} packets per row, the rows interleaved; medians. The meter's kernel log is \
         off unless the row says otherwise (at debug, every malformed frame is logged: the ring fills within a run, \
         and each later record costs a failed reservation). The tunnel rows carry one hot flow each, closed (as \
         rogue loads by default) and opened (capture.decapsulate naming every tunnel).{baseline} Targets: within 1.5x of the floor for a hot \
         flow, within 1.2x at 65,536 flows.\n",
        table.into_string()
    )
}

pub fn ratio(value: f64, reference: f64) -> String {
    format!("{:.2}", value / reference)
}
