//! veth throughput: the live-frames generator drives `gen0` as fast as it
//! can, over 10,240 UDP flows, and `mon0` receives with either a program
//! that only returns XDP_PASS or rogue's meter. Delivered packets per second
//! come from the interface's own counter; with rogue, its counters must
//! equal the interface's (nothing lost). Rounds alternate the two receivers
//! so drift in the machine hits both.

use std::time::Duration;

use aya::programs::{Xdp, XdpMode as AyaXdpMode};
use rogue::{
    capture::XdpMeter,
    config::{KernelLog, XdpMode},
};
use rogue_common::parse::Decapsulate;

use crate::{
    kernel::Testbed,
    measure::{Table, median, millions},
};
use rogue_testkit::{
    generator::Generator,
    netns::{Netns, in_netns, veth},
    packets::{ethernet, ipv4, udp},
};

const FLOWS: u32 = 10_240;
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(5);

/// An internal host's UDP frames to a MAC nobody has: the stack drops them
/// right after XDP passes them.
pub fn load_frame() -> Vec<u8> {
    let payload = udp(0, 9000, &[0x5a; 18]);
    let packet = ipv4([192, 0, 2, 200].into(), [198, 51, 100, 9].into(), 17, &[], 0, &payload);
    let mut frame = ethernet(0x0800, &packet);
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x0d, 0x0d]);
    frame
}

struct Round {
    sent: u64,
    delivered: u64,
    counted: Option<u64>,
    seconds: f64,
}

/// What receives on mon0: a testbed program by name, or rogue's meter.
#[derive(Clone, Copy)]
enum Receiver {
    Testbed(&'static str),
    Rogue,
}

fn round(ns: &Netns, receiver: Receiver) -> Round {
    let before = ns.rx("mon0").0;
    let (sent, seconds, counted) = in_netns(ns, move || {
        // Keep the receiver's program attached while the generator runs.
        let mut testbed = None;
        if let Receiver::Testbed(name) = receiver {
            let loaded = testbed.insert(Testbed::load());
            let program: &mut Xdp = loaded.ebpf.program_mut(name).unwrap().try_into().unwrap();
            program.attach("mon0", AyaXdpMode::Driver).unwrap_or_else(|e| panic!("attach {name} to mon0: {e}"));
        }
        let rogue = matches!(receiver, Receiver::Rogue);
        let mut meter = rogue.then(|| {
            let mut meter = XdpMeter::load(1 << 16, KernelLog::Off, Decapsulate::NONE).expect("load the meter");
            meter.attach("mon0", XdpMode::Native).expect("attach the meter");
            meter
        });
        let mut generator = Generator::new("gen0", &load_frame(), FLOWS);
        let took = generator.send_for(ROUND, 1_000_000, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(200));
        let counted = meter.as_mut().map(|m| m.counters().expect("counters").packets);
        (generator.sent, took.as_secs_f64(), counted)
    })
    .join()
    .unwrap();
    Round { sent, delivered: ns.rx("mon0").0 - before, counted, seconds }
}

pub fn run() -> String {
    let ns = Netns::new("bench-veth");
    veth(&ns, "gen0", &ns, "mon0");
    let receivers = [
        ("XDP_PASS only", Receiver::Testbed("testbed_pass")),
        ("one per-CPU hash update keyed by flow (the floor)", Receiver::Testbed("testbed_floor_keyed")),
        ("rogue's meter", Receiver::Rogue),
    ];
    let mut rates = vec![Vec::new(); receivers.len()];
    let mut lost = vec![0u64; receivers.len()];
    for _ in 0..ROUNDS {
        for (i, (_, receiver)) in receivers.iter().enumerate() {
            let round = round(&ns, *receiver);
            if let Some(counted) = round.counted {
                assert_eq!(counted, round.delivered, "rogue counted every delivered frame");
            }
            rates[i].push(round.delivered as f64 / round.seconds);
            lost[i] += round.sent - round.delivered;
        }
    }
    let rates: Vec<f64> = rates.into_iter().map(median).collect();
    let mut table = Table::new(&["receiver on mon0", "delivered Mpps", "vs XDP_PASS", "vs the floor", "frames lost"]);
    for (i, (name, _)) in receivers.iter().enumerate() {
        table.row(&[
            name.to_string(),
            millions(rates[i]),
            format!("{:.2}", rates[i] / rates[0]),
            format!("{:.2}", rates[i] / rates[1]),
            lost[i].to_string(),
        ]);
    }
    format!(
        "{}\n{ROUNDS} rounds of {} s each per receiver, in turn, over {FLOWS} flows, medians; the generator and the \
         receiving NAPI share one CPU, as veth's XDP transmit runs the peer's receive inline. With rogue attached, its \
         packet counter equalled the interface's received count in every round. Target: at least 0.90 of XDP_PASS.\n",
        table.into_string(),
        ROUND.as_secs()
    )
}
