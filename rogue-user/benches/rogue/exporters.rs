//! The collector under what exporters can throw at it: 280,000 forged UDP
//! sources (NetFlow v5 and IPFIX with templates, each from its own address
//! and port on 127/8), then 20,000 idle IPFIX-over-TCP connections. The
//! figure is the collector's resident memory after each, against its memory
//! at start: what it keeps of exporters is bounded (collect.max_exporters),
//! and an idle connection holds no buffer.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    agent::usage,
    measure::{Table, mib},
};
use rogue_testkit::{
    ipfix::forge_exporters,
    process::{ROGUE, Running, scrape_metrics},
};

const METRICS_PORT: u16 = 19_926;
const COLLECTOR_PORT: u16 = 14_740;
const SOURCES: u32 = 280_000;
const CONNECTIONS: usize = 20_000;

pub fn run(dir: &Path) -> String {
    let config = dir.join("exporters.yaml");
    std::fs::write(
        &config,
        format!(
            "internal_networks: [192.0.2.0/24]\nstore: {{path: exporters.db}}\n\
             metrics: {{listen: \"127.0.0.1:{METRICS_PORT}\"}}\noutput: {{findings: [exporters-findings.jsonl]}}\n\
             capture: {{drain_seconds: 1}}\ncollect: {{max_tcp_connections: 30000}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("whitelist.yaml"), "[]\n").unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("exporters.db{suffix}")));
    }
    let mut command = Command::new(ROGUE);
    command.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{COLLECTOR_PORT}"), "--config"]);
    command.arg(&config);
    let mut collector = Running::spawn(command);
    collector.wait_for_stderr("collector running", 1);
    std::thread::sleep(Duration::from_secs(1));
    let rss = |pid: u32| usage(pid).1;
    let at_start = rss(collector.id());

    let started = Instant::now();
    forge_exporters(COLLECTOR_PORT, SOURCES, Duration::from_millis(50));
    let flows = settled("rogue_collector_flows_total");
    let drops = settled("rogue_collector_socket_drops_total");
    // The origins are let go at the next store write.
    std::thread::sleep(Duration::from_secs(2));
    let after_flood = rss(collector.id());
    let flood_seconds = started.elapsed().as_secs_f64();

    // Two helpers hold half the connections each: one process may hold at
    // most the file limit (20,000 here), connections and all.
    let idle: Vec<std::process::Child> = (0..2).map(|half| hold_connections(half, CONNECTIONS / 2)).collect();
    // At most the file limit less a reserve, the rest refused (counted).
    // Connections come slowly once thousands are open (the kernel's
    // accept queue overflows now and then, and a dropped SYN is sent again
    // a second later): give them minutes.
    let deadline = Instant::now() + Duration::from_secs(600);
    while {
        let metrics = scrape_metrics(METRICS_PORT);
        let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
        get("rogue_collector_tcp_connections") + get("rogue_collector_tcp_refused_total") < CONNECTIONS as f64
    } {
        assert!(Instant::now() < deadline, "the connections were neither held nor refused");
        std::thread::sleep(Duration::from_millis(200));
    }
    let open = settled("rogue_collector_tcp_connections");
    let with_connections = rss(collector.id());
    let metrics = scrape_metrics(METRICS_PORT);
    for mut helper in idle {
        let _ = helper.kill();
        let _ = helper.wait();
    }
    collector.signal(libc::SIGTERM);
    let finished = collector.finish();
    assert!(finished.status.success(), "the collector failed:\n{}", finished.stderr);

    let mut table = Table::new(&["the collector", "resident memory (MiB)"]);
    table.row(&["started".into(), mib(at_start)]);
    table.row(&[format!("after {SOURCES} forged exporters"), mib(after_flood)]);
    table.row(&[format!("with {open:.0} idle TCP connections besides"), mib(with_connections)]);
    let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    format!(
        "{}\n{SOURCES} UDP sources on 127/8 (each its own address and port; half send a NetFlow v5 datagram, half \
         IPFIX templates and a data record) in {flood_seconds:.1} s: {flows:.0} flows received, {drops:.0} \
         datagrams dropped by the kernel for want of room in the socket (counted); then \
         {CONNECTIONS} IPFIX-over-TCP connections that send nothing, {open:.0} of them open at once (the file \
         limit, {:.0} refused and counted). With the default bounds: {:.0} exporters' templates kept ({:.0} \
         forgotten to make room), {:.0} origins held ({:.0} let go). \
         Before issue 12 the same flood took the collector from 12 to 875 MB, never released, and a few hundred \
         idle connections under a low file limit stopped its TCP listener.\n",
        table.into_string(),
        get("rogue_collector_tcp_refused_total"),
        get("rogue_collector_exporters"),
        get("rogue_collector_exporters_forgotten_total{reason=\"room\"}"),
        get("rogue_origins"),
        get("rogue_origins_forgotten_total"),
    )
}

/// A helper process (python3) holding `count` idle connections to the
/// collector, from addresses of its own on 127/8, until it is killed.
fn hold_connections(half: usize, count: usize) -> std::process::Child {
    let script = format!(
        "import socket, sys, time\n\
         held = []\n\
         for i in range({count}):\n\
         \twhile True:\n\
         \t\ts = socket.socket(); s.bind(('127.{}.%d.%d' % (i // 250, 2 + i % 250), 0))\n\
         \t\ttry: s.connect(('127.0.0.1', {COLLECTOR_PORT})); break\n\
         \t\texcept ConnectionRefusedError: s.close(); time.sleep(0.01)\n\
         \theld.append(s)\n\
         time.sleep(3600)\n",
        10 + half
    );
    Command::new("python3").args(["-c", &script]).spawn().expect("python3")
}

/// The value of `name` once it stops changing for a second.
fn settled(name: &str) -> f64 {
    let read = || scrape_metrics(METRICS_PORT).get(name).copied().unwrap_or(0.0);
    let (mut last, mut since) = (read(), Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
        let now = read();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}
