//! The console's render times: `rogue serve` over the store of the offline
//! section's capture (over 10 million packets, 1.6 million flows), each
//! page fetched over HTTP on loopback as a browser would, timed from the
//! request to the last byte (opening the store, the queries, the plots).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    measure::{Table, median},
    offline,
};
use rogue_testkit::process::ROGUE;

const FETCHES: usize = 21;
/// The hosts whose pages are timed: those with findings (the pages an
/// analyst opens), the busiest MX among them.
const HOSTS: usize = 6;

pub fn run(dir: &std::path::Path) -> String {
    let capture = offline::generate(dir, "offline", "all", offline::OFFLINE_SCALE, offline::OFFLINE_WORKSTATIONS);
    let analyzed = offline::rogue_analyze(dir, &capture.path).status().unwrap();
    assert!(analyzed.success(), "rogue analyze");
    let store = dir.join("offline.db");
    let flows = count_flows(&store);

    let mut server = Command::new(ROGUE)
        .args(["-q", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("offline.yaml"))
        .arg("--db")
        .arg(&store)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let base = line
        .split("the console is at ")
        .nth(1)
        .expect("the console's address")
        .split('/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/");

    let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let fetch = |path: &str| -> (f64, usize) {
        let started = Instant::now();
        let body = http.get(&format!("{base}{path}")).call().unwrap().into_string().unwrap();
        (started.elapsed().as_secs_f64() * 1e3, body.len())
    };
    let time = |path: &str| -> (f64, f64, usize) {
        fetch(path);
        let mut samples: Vec<(f64, usize)> = (0..FETCHES).map(|_| fetch(path)).collect();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let p95 = samples[(samples.len() * 95).div_ceil(100) - 1].0;
        (median(samples.iter().map(|s| s.0).collect()), p95, samples[0].1)
    };

    let mut table = Table::new(&["page", "median (ms)", "95th percentile (ms)", "size (kB)", "target (ms)"]);
    let (findings_median, p95, size) = time("/");
    table.row(&[
        "findings (/)".into(),
        format!("{findings_median:.1}"),
        format!("{p95:.1}"),
        format!("{:.0}", size as f64 / 1e3),
        "100".into(),
    ]);
    let mut worst_host = 0f64;
    for host in hosts_with_findings(&store) {
        let (host_median, p95, size) = time(&format!("/host/{host}"));
        worst_host = worst_host.max(host_median);
        table.row(&[
            format!("host /host/{host}"),
            format!("{host_median:.1}"),
            format!("{p95:.1}"),
            format!("{:.0}", size as f64 / 1e3),
            "300".into(),
        ]);
    }
    let _ = server.kill();
    let _ = server.wait();
    format!(
        "{}\nThe store of the offline section's capture ({flows} flows, {} packets), served read-only by `rogue serve` \
         on loopback; each page fetched {FETCHES} times after one warm-up, timed from the request to its last byte. \
         A host's page draws its three figures as inline SVG for every request. Targets (issue 19): the findings \
         page under 100 ms, a host's page under 300 ms; slowest host page here {worst_host:.1} ms.\n",
        table.into_string(),
        capture.packets
    )
}

/// The flows the store's sources hold.
fn count_flows(store: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(store).unwrap();
    db.query_row("SELECT sum(flows) FROM sources", [], |row| row.get(0)).unwrap()
}

/// The hosts with findings, busiest first.
fn hosts_with_findings(store: &std::path::Path) -> Vec<String> {
    let db = rusqlite::Connection::open(store).unwrap();
    let mut statement = db
        .prepare(&format!(
            "SELECT f.host FROM (SELECT DISTINCT host FROM findings) f LEFT JOIN host_bins h ON h.host = f.host \
             GROUP BY f.host ORDER BY sum(h.flows) DESC LIMIT {HOSTS}"
        ))
        .unwrap();
    statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
}
