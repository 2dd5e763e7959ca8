//! How long draining takes: the flow maps filled with 10k, 100k and 1M
//! distinct flows by the meter itself (`testbed_next_flow` tail-calling it
//! in a test run of that many repetitions), then drained as the agent
//! drains: switch maps, wait out in-flight programs, read and clear in
//! batches on two threads.

use aya::programs::{TestRun, TestRunOptions};
use rogue::{capture::XdpMeter, config::KernelLog};
use rogue_common::parse::Decapsulate;

use crate::{
    kernel::{Testbed, ipv4_tcp},
    measure::{Table, median, millions},
};

const SIZES: [u32; 3] = [10_000, 100_000, 1_000_000];
const RUNS: usize = 3;

pub fn run() -> String {
    let mut testbed = Testbed::load();
    let mut meter = XdpMeter::load(1 << 20, KernelLog::Off, Decapsulate::NONE).expect("load the meter");
    let meter_fd = meter.program().unwrap().fd().unwrap().try_clone().unwrap();
    testbed.hand_on_to(&meter_fd);
    let mut table = Table::new(&["flows in the map", "drain time (ms)", "million entries/s", "time per entry (ns)"]);
    for flows in SIZES {
        let seconds = median(
            (0..RUNS)
                .map(|_| {
                    // A fresh frame each time: the flows counted from port 0 up.
                    testbed
                        .program("testbed_next_flow")
                        .test_run(TestRunOptions { data_in: Some(&ipv4_tcp()), repeat: flows, ..Default::default() })
                        .expect("fill the flow map");
                    let drain = meter.drain().expect("drain");
                    assert_eq!(drain.flows.len(), flows as usize, "every flow drained");
                    drain.took.as_secs_f64()
                })
                .collect(),
        );
        table.row(&[
            format!("{flows}"),
            format!("{:.1}", seconds * 1e3),
            millions(flows as f64 / seconds),
            format!("{:.0}", seconds * 1e9 / flows as f64),
        ]);
    }
    format!(
        "{}\nMedians of {RUNS} drains each, on {} CPUs (a per-CPU map holds one value per CPU), each drain on two \
         threads, one per half of the hash buckets; the time includes the map switch and the wait for in-flight \
         programs (membarrier, an RCU grace period: some milliseconds of waiting, not of work, which is most of a \
         small drain). Target (issue 17): at least 2 million entries/s at 1 million flows.\n",
        table.into_string(),
        aya::util::nr_cpus().unwrap_or(0)
    )
}
