//! veth throughput: the live-frames generator drives `gen0` as fast as it
//! can, over 10,240 UDP flows, and `mon0` receives with either a program
//! that only returns XDP_PASS or rogue's meter. Delivered packets per second
//! come from the interface's own counter; with rogue, its counters must
//! equal the interface's (nothing lost). Rounds alternate the two receivers
//! so drift in the machine hits both.

use std::time::Duration;

use aya::programs::{Xdp, XdpMode as AyaXdpMode};
use rogue::capture::{XdpMeter, XdpMode};

use crate::{
    kernel::Testbed,
    measure::{Table, median, millions},
    support::{
        generator::Generator,
        netns::{Netns, in_netns, veth},
        packets::{ethernet, ipv4, udp},
    },
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

fn round(ns: &Netns, rogue: bool) -> Round {
    let before = ns.rx("mon0").0;
    let (sent, seconds, counted) = in_netns(ns, move || {
        // Keep the receiver's program attached while the generator runs.
        let mut testbed = (!rogue).then(Testbed::load);
        if let Some(testbed) = &mut testbed {
            let pass: &mut Xdp = testbed.ebpf.program_mut("testbed_pass").unwrap().try_into().unwrap();
            pass.attach("mon0", AyaXdpMode::Driver).expect("attach XDP_PASS to mon0");
        }
        let mut meter = rogue.then(|| {
            let mut meter = XdpMeter::load(1 << 16).expect("load the meter");
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
    let mut pass_rates = Vec::new();
    let mut rogue_rates = Vec::new();
    let mut losses = (0u64, 0u64);
    for _ in 0..ROUNDS {
        let pass = round(&ns, false);
        pass_rates.push(pass.delivered as f64 / pass.seconds);
        losses.0 += pass.sent - pass.delivered;
        let rogue = round(&ns, true);
        assert_eq!(rogue.counted, Some(rogue.delivered), "rogue counted every delivered frame");
        rogue_rates.push(rogue.delivered as f64 / rogue.seconds);
        losses.1 += rogue.sent - rogue.delivered;
    }
    let (pass, rogue) = (median(pass_rates), median(rogue_rates));
    let mut table = Table::new(&["receiver on mon0", "delivered Mpps", "vs XDP_PASS", "frames lost on the veth"]);
    table.row(&["XDP_PASS only".into(), millions(pass), "1.00".into(), losses.0.to_string()]);
    table.row(&["rogue's meter".into(), millions(rogue), format!("{:.2}", rogue / pass), losses.1.to_string()]);
    format!(
        "{}\n{ROUNDS} alternating rounds of {} s each over {FLOWS} flows, medians; the generator and the receiving \
         NAPI share one CPU, as veth's XDP transmit runs the peer's receive inline. With rogue attached, its \
         packet counter equalled the interface's received count in every round. Target: at least 0.90.\n",
        table.into_string(),
        ROUND.as_secs()
    )
}
