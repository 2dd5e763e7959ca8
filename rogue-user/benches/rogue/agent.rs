//! `rogue agent` under load: the live-frames generator pushes 1 and then
//! 5 million packets a second (one generator per CPU, each into a veth the
//! agent meters) while the agent drains, profiles and evaluates; its CPU
//! time and memory come from /proc, and its counters are checked against
//! what was sent.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    measure::{Table, mib, millions},
    veth::load_frame,
};
use rogue_testkit::{
    generator::Generator,
    netns::{Netns, in_netns, veth},
    process::{ROGUE, Running},
};

const FLOWS: u32 = 10_240;
const LOAD: Duration = Duration::from_secs(20);

/// (CPU seconds, current RSS, peak RSS) of a process.
pub fn usage(pid: u32) -> (f64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks / hz, kib("VmRSS:"), kib("VmHWM:"))
}

/// The packets the agent says it metered when it stopped.
fn metered(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("agent stopped after ")?.1.split_once(": ")?.1.split_once(" packets")?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("the agent did not report what it metered:\n{stderr}"))
}

pub fn run(dir: &Path) -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut table = Table::new(&[
        "target rate (Mpps)",
        "sent (Mpps)",
        "agent CPU (% of one core)",
        "agent RSS (MiB)",
        "agent peak RSS (MiB)",
        "counted = sent",
    ]);
    for target in [1_000_000u64, 5_000_000] {
        let ns = Netns::new("bench-agent");
        let interfaces: Vec<String> = (0..cpus).map(|i| format!("mon{i}")).collect();
        for i in 0..cpus {
            veth(&ns, &format!("gen{i}"), &ns, &format!("mon{i}"));
        }
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "internal_networks: [192.0.2.0/24]\ninterfaces: [{}]\nstore: {{path: agent-{target}.db}}\n\
                 output: {{findings: [agent-findings.jsonl]}}\nmetrics: {{listen: null}}\n\
                 capture: {{drain_seconds: 1, idle_timeout_seconds: 2}}\ndetection: {{evaluate_seconds: 5}}\n",
                interfaces.join(", ")
            ),
        )
        .unwrap();
        std::fs::write(dir.join("whitelist.yaml"), "[]\n").unwrap();
        let _ = std::fs::remove_file(dir.join(format!("agent-{target}.db")));
        let mut command = ns.command(ROGUE);
        command.args(["agent", "--no-dns", "-v", "--config"]).arg(&config);
        let mut agent = Running::spawn(command);
        agent.wait_for_stderr("agent running", 1);
        let pid = agent.id();
        let (cpu_before, _, _) = usage(pid);
        let started = Instant::now();
        let generators: Vec<_> = (0..cpus)
            .map(|cpu| {
                in_netns(&ns, move || {
                    let mut generator = Generator::pinned(cpu, &format!("gen{cpu}"), &load_frame(), FLOWS);
                    generator.send_at(target / cpus as u64, LOAD);
                    generator.sent
                })
            })
            .collect();
        let sent: u64 = generators.into_iter().map(|g| g.join().unwrap()).sum();
        let wall = started.elapsed().as_secs_f64();
        let (cpu_after, rss, peak) = usage(pid);
        std::thread::sleep(Duration::from_secs(2));
        agent.signal(libc::SIGTERM);
        let finished = agent.finish();
        assert!(finished.status.success(), "the agent failed:\n{}", finished.stderr);
        let received: u64 = interfaces.iter().map(|i| ns.rx(i).0).sum();
        let counted = metered(&finished.stderr);
        table.row(&[
            millions(target as f64),
            millions(sent as f64 / wall),
            format!("{:.1}", (cpu_after - cpu_before) / wall * 100.0),
            mib(rss),
            mib(peak),
            if counted == sent && received == sent {
                "yes".into()
            } else {
                format!("no: {counted} counted, {received} received, {sent} sent")
            },
        ]);
    }
    format!(
        "{}\n{} s at each rate over {FLOWS} flows per generator, one generator per CPU ({cpus}), each into its own \
         metered veth; the agent drains every second and evaluates every 5 s. The per-packet work is the XDP program's, in the \
         kernel on the CPU that receives (here the generator's); the agent's own CPU is drains, profiles and \
         evaluations. Where the sent rate falls short of the target, the CPUs could not generate more while also \
         receiving.\n",
        table.into_string(),
        LOAD.as_secs()
    )
}
