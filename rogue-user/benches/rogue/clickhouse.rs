//! Flows into ClickHouse beside SQLite, on the same machine and the same
//! export as the collector section: one collector into SQLite, one into a
//! ClickHouse server (Debian's 18.16, started here on loopback), and two
//! collectors at once into that server, each sent half of the flows and
//! neither evaluating, then one evaluation of everything.

use std::{net::TcpStream, path::Path, process::Command, time::Instant};

use crate::{
    collector::{COLLECTOR_PORT, Collected, METRICS_PORT, collect_into, ipfix_file, spawn_collector, wait_for_flows},
    measure::{Table, median, millions},
    offline::generate,
};
use rogue_testkit::{
    clickhouse::ClickHouse,
    process::{Finished, ROGUE},
    require,
};

const RUNS: usize = 3;
/// The collector section's capture: the method's cases over 16 times the background.
const SCALE: u32 = 16;

pub fn run(dir: &Path) -> String {
    let capture = generate(dir, "clickhouse", "all", SCALE, SCALE * 50);
    let file = dir.join("clickhouse.ipfix");
    let flows = ipfix_file(&capture.path, &file);
    let halves = halves(dir, &capture.path);
    let server = ClickHouse::start("bench");
    let mut table =
        Table::new(&["store", "collectors", "flows", "received (million flows/s)", "into the store (million flows/s)"]);

    let sqlite: Vec<Collected> = (0..RUNS)
        .map(|run| {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.join(format!("sqlite-{run}.db{suffix}")));
            }
            let store = format!("{{path: sqlite-{run}.db, retention_days: 36500}}");
            collect_into(dir, &store, flows, || send(&file, COLLECTOR_PORT))
        })
        .collect();
    row(&mut table, "SQLite", 1, flows, &sqlite);
    let one: Vec<Collected> = (0..RUNS)
        .map(|run| {
            let store = clickhouse_store(&server, &format!("bench_one_{run}"), dir);
            collect_into(dir, &store, flows, || send(&file, COLLECTOR_PORT))
        })
        .collect();
    row(&mut table, "ClickHouse", 1, flows, &one);
    let two: Vec<(Collected, f64)> =
        (0..RUNS).map(|run| two_collectors(dir, &server, &format!("bench_two_{run}"), &halves)).collect();
    let half_flows: u64 = halves.iter().map(|(_, flows)| flows).sum();
    row(&mut table, "ClickHouse", 2, half_flows, &two.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>());
    let evaluation = median(two.iter().map(|(_, seconds)| *seconds).collect());
    format!(
        "{}\nThe collector section's export ({} flows of a capture of {} packets) sent as IPFIX over TCP from \
         loopback; medians of {RUNS} runs. ClickHouse is Debian's clickhouse-server {} on this machine, a fresh \
         database each run. Into the store: to the collectors' exit after SIGTERM, every flow written (in \
         ClickHouse, not only in the spool) and, with one collector, evaluated. The two collectors run at once, \
         each sent one half of the capture (cut by editcap; a flow that spans the cut counts in both halves, \
         {half_flows} flows in all), neither evaluating (`detection.evaluate: false`); the one evaluation after \
         them took {evaluation:.2} s.\n",
        table.into_string(),
        flows,
        capture.packets,
        server.answer("SELECT version()"),
    )
}

fn clickhouse_store(server: &ClickHouse, database: &str, dir: &Path) -> String {
    let spool = dir.join(format!("{database}-spool"));
    format!(
        "{{backend: clickhouse, retention_days: 36500, clickhouse: {{url: \"{}\", database: {database}, spool_dir: {}}}}}",
        server.url(),
        spool.display()
    )
}

/// The IPFIX file sent over TCP to the collector on `port`.
fn send(file: &Path, port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::copy(&mut std::fs::File::open(file).unwrap(), &mut stream).unwrap();
}

/// The capture cut in two by packet count (editcap), each half an IPFIX
/// file: (file, flows).
fn halves(dir: &Path, capture: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let packets: Finished = require("capinfos").args(["-c", "-M"]).arg(capture).output().unwrap().into();
    let count: u64 = packets.stdout.lines().find_map(|l| l.split(':').nth(1)?.trim().parse().ok()).unwrap();
    let prefix = dir.join("clickhouse-half.pcap");
    let split =
        require("editcap").args(["-c", &count.div_ceil(2).to_string()]).arg(capture).arg(&prefix).status().unwrap();
    assert!(split.success());
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("clickhouse-half_"))
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 2, "{parts:?}");
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let file = dir.join(format!("clickhouse-half-{i}.ipfix"));
            let flows = ipfix_file(part, &file);
            std::fs::remove_file(part).unwrap();
            (file, flows)
        })
        .collect()
}

/// Two collectors at once into `database`, each sent one half; then one
/// evaluation (`rogue evaluate`): the run, and the evaluation's seconds.
fn two_collectors(
    dir: &Path,
    server: &ClickHouse,
    database: &str,
    halves: &[(std::path::PathBuf, u64)],
) -> (Collected, f64) {
    let store = clickhouse_store(server, database, dir);
    let extra = "detection: {evaluate: false}\n";
    let ports = [(METRICS_PORT, COLLECTOR_PORT), (METRICS_PORT + 1, COLLECTOR_PORT + 1)];
    let collectors: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, &(metrics, port))| spawn_collector(dir, &format!("collector-{i}"), &store, extra, metrics, port))
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for ((file, _), &(_, port)) in halves.iter().zip(&ports) {
            scope.spawn(move || send(file, port));
        }
    });
    let mut received = 0;
    for ((_, flows), &(metrics, _)) in halves.iter().zip(&ports) {
        received += wait_for_flows(metrics, *flows).0;
    }
    let received_at = started.elapsed().as_secs_f64();
    for collector in &collectors {
        collector.signal(libc::SIGTERM);
    }
    for collector in collectors {
        let finished = collector.finish();
        assert!(finished.status.success(), "a collector failed:\n{}", finished.stderr);
    }
    let stored_at = started.elapsed().as_secs_f64();
    let config = dir.join("collector-0.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace("evaluate: false", "evaluate: true");
    std::fs::write(dir.join("evaluator.yaml"), text).unwrap();
    let evaluation = Instant::now();
    let evaluated: Finished = Command::new(ROGUE)
        .args(["-q", "evaluate", "--no-dns", "--format", "jsonl", "--config"])
        .arg(dir.join("evaluator.yaml"))
        .output()
        .unwrap()
        .into();
    assert!(evaluated.status.success(), "{}", evaluated.stderr);
    assert!(!evaluated.json_lines().is_empty(), "the evaluation finds the method's cases");
    let collected =
        Collected { received: received_at, stored: stored_at, flows: received, socket_drops: 0, peak_rss: 0 };
    (collected, evaluation.elapsed().as_secs_f64())
}

fn row(table: &mut Table, store: &str, collectors: usize, flows: u64, runs: &[Collected]) {
    let rate = |seconds: f64| millions(flows as f64 / seconds);
    table.row(&[
        store.to_string(),
        collectors.to_string(),
        flows.to_string(),
        rate(median(runs.iter().map(|r| r.received).collect())),
        rate(median(runs.iter().map(|r| r.stored).collect())),
    ]);
}
