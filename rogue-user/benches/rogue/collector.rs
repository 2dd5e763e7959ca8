//! The collector on loopback: the flows of a generated capture sent to
//! `rogue collect` by one exporter, as IPFIX over TCP (flow-controlled, so
//! the collector sets the pace) and over UDP from `rogue flows --ipfix` at
//! full speed (what the socket had no room for shows in its drop count).
//! Timed to the last flow received and decoded (the collector's counter),
//! and to the collector's exit with every flow profiled and stored.

use std::{
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    agent::usage,
    measure::{Table, median, mib, millions},
    offline::generate,
};
use rogue_testkit::process::{Finished, ROGUE, Running, scrape_metrics};

const RUNS: usize = 3;
/// The method's cases over 16 times the background: about 3 million packets.
const SCALE: u32 = 16;
const METRICS_PORT: u16 = 19_925;
const COLLECTOR_PORT: u16 = 14_739;

/// One run: seconds to the last flow received, seconds to the collector's
/// exit, flows received, datagrams the socket dropped, peak RSS.
struct Collected {
    received: f64,
    stored: f64,
    flows: u64,
    socket_drops: u64,
    peak_rss: u64,
}

pub fn run(dir: &Path) -> String {
    let capture = generate(dir, "collector", "all", SCALE, SCALE * 50);
    let file = dir.join("collector.ipfix");
    let written: Finished = Command::new(ROGUE)
        .args(["flows", "--format", "none", "--pcap"])
        .arg(&capture.path)
        .arg("--write")
        .arg(&file)
        .output()
        .unwrap()
        .into();
    assert!(written.status.success(), "{}", written.stderr);
    let flows = written.summary_number("flows");

    let mut table = Table::new(&[
        "exporter",
        "flows",
        "received (million flows/s)",
        "into the store (million flows/s)",
        "lost",
        "collector peak RSS (MiB)",
    ]);
    let tcp: Vec<Collected> = (0..RUNS)
        .map(|_| {
            collect(dir, flows, || {
                let mut stream = TcpStream::connect(("127.0.0.1", COLLECTOR_PORT)).unwrap();
                std::io::copy(&mut std::fs::File::open(&file).unwrap(), &mut stream).unwrap();
            })
        })
        .collect();
    row(&mut table, "IPFIX file over TCP", flows, &tcp);
    let udp: Vec<Collected> = (0..RUNS)
        .map(|_| {
            collect(dir, flows, || {
                let status = Command::new(ROGUE)
                    .args(["-q", "flows", "--format", "none", "--pcap"])
                    .arg(&capture.path)
                    .args(["--ipfix", &format!("udp://127.0.0.1:{COLLECTOR_PORT}")])
                    .status()
                    .unwrap();
                assert!(status.success());
            })
        })
        .collect();
    row(&mut table, "rogue flows --ipfix udp:// (full speed)", flows, &udp);
    format!(
        "{}\nThe flows of a capture of {} packets (the method's cases over {SCALE} times the background), sent to \
         `rogue collect --no-dns` on loopback by one exporter; medians of {RUNS} runs. Received: from the first \
         byte sent to the collector's flow counter (its metrics endpoint) reaching every flow. Into the store: to \
         the collector's exit after SIGTERM, every flow profiled, stored and evaluated. Over UDP the exporter is \
         `rogue flows` reading the capture, so the rate is the exporter's; lost counts the flows that did not \
         arrive and, in brackets, the datagrams the kernel dropped for want of room in the collector's socket.\n",
        table.into_string(),
        capture.packets,
    )
}

fn row(table: &mut Table, exporter: &str, flows: u64, runs: &[Collected]) {
    let rate = |seconds: f64| millions(flows as f64 / seconds);
    let lost: Vec<String> =
        runs.iter().map(|r| format!("{} ({})", flows.saturating_sub(r.flows), r.socket_drops)).collect();
    table.row(&[
        exporter.to_string(),
        flows.to_string(),
        rate(median(runs.iter().map(|r| r.received).collect())),
        rate(median(runs.iter().map(|r| r.stored).collect())),
        lost.join(", "),
        mib(runs.iter().map(|r| r.peak_rss).max().unwrap_or(0)),
    ]);
}

/// Starts a collector on a fresh store, runs `export`, and times the flows in.
fn collect(dir: &Path, flows: u64, export: impl FnOnce()) -> Collected {
    let config = dir.join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "internal_networks: [192.0.2.0/24, 10.0.0.0/8]\nstore: {{path: collector.db, retention_days: 36500}}\n\
                 metrics: {{listen: \"127.0.0.1:{METRICS_PORT}\"}}\noutput: {{findings: [collector-findings.jsonl]}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("whitelist.yaml"), "[]\n").unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("collector.db{suffix}")));
    }
    let mut command = Command::new(ROGUE);
    command.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{COLLECTOR_PORT}"), "--config"]);
    command.arg(&config);
    let mut collector = Running::spawn(command);
    collector.wait_for_stderr("collector running", 1);
    let started = Instant::now();
    export();
    let (received, socket_drops) = wait_for_flows(flows);
    let received_at = started.elapsed().as_secs_f64();
    let (_, _, peak_rss) = usage(collector.id());
    collector.signal(libc::SIGTERM);
    let finished = collector.finish();
    let stored_at = started.elapsed().as_secs_f64();
    assert!(finished.status.success(), "the collector failed:\n{}", finished.stderr);
    Collected { received: received_at, stored: stored_at, flows: received, socket_drops, peak_rss }
}

/// Polls the collector's counters until every flow is in, or until they stop
/// growing for a second (a lossy export): the flows and socket drops then.
fn wait_for_flows(flows: u64) -> (u64, u64) {
    let counters = || {
        let metrics = scrape_metrics(METRICS_PORT);
        let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0) as u64;
        (get("rogue_collector_flows_total"), get("rogue_collector_socket_drops_total"))
    };
    let (mut last, mut since) = (counters(), Instant::now());
    while last.0 < flows && since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
        let now = counters();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}
