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
pub const METRICS_PORT: u16 = 19_925;
pub const COLLECTOR_PORT: u16 = 14_739;

/// One run: seconds to the last flow received, seconds to the collector's
/// exit, flows received, datagrams the socket dropped, peak RSS.
#[derive(Clone)]
pub struct Collected {
    pub received: f64,
    pub stored: f64,
    pub flows: u64,
    pub socket_drops: u64,
    pub peak_rss: u64,
}

pub fn run(dir: &Path) -> String {
    let capture = generate(dir, "collector", "all", SCALE, SCALE * 50);
    let file = dir.join("collector.ipfix");
    let flows = ipfix_file(&capture.path, &file);

    let mut table = Table::new(&[
        "exporter",
        "flows",
        "received (million flows/s)",
        "into the store (million flows/s)",
        "lost",
        "collector peak RSS (MiB)",
    ]);
    let tcp: Vec<Collected> = (0..RUNS).map(|_| over_tcp(dir, flows, &file)).collect();
    row(&mut table, "IPFIX file over TCP", flows, &tcp);
    let messages = ipfix_messages(&file);
    let _buffers = ReceiveBuffers::allow(UDP_BUFFER_BYTES);
    for rate in [None, Some(PACED_FLOWS_PER_SEC)] {
        let pace = Pace { messages: &messages, flows, rate };
        let rogue: Vec<Collected> = (0..RUNS).map(|_| collect(dir, flows, || pace.replay(COLLECTOR_PORT))).collect();
        row(&mut table, &format!("IPFIX file replayed over UDP {pace}"), flows, &rogue);
        let nfcapd: Vec<Collected> = (0..RUNS).map(|_| nfcapd(dir, &pace)).collect();
        row(&mut table, &format!("nfcapd (nfdump 1.7), the same replay {pace}, into its file"), flows, &nfcapd);
    }
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
         the collector's exit after SIGTERM, every flow profiled, stored and evaluated. The replays send the \
         IPFIX file's {} messages (about {} flows each) as datagrams, at full speed or paced; both collectors get \
         an {} MiB socket buffer, and nfcapd is stopped once its socket has nothing left queued, its time the \
         same to the last flow in its file (it keeps no counter rogue could read sooner, and no count of the \
         datagrams its socket dropped). From `rogue flows --ipfix` the rate is the exporter's. Lost counts the \
         flows that did not arrive and, in brackets, the datagrams the kernel dropped for want of room in \
         rogue's socket. Target (issue 17): into the store at 1 M flows/s or more, none lost.\n",
        table.into_string(),
        capture.packets,
        messages.len(),
        flows / messages.len().max(1) as u64,
        UDP_BUFFER_BYTES >> 20,
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

/// The flows of `capture` written to the IPFIX file `file` by `rogue
/// flows --write`; returns how many.
pub fn ipfix_file(capture: &Path, file: &Path) -> u64 {
    let written: Finished = Command::new(ROGUE)
        .args(["flows", "--format", "none", "--pcap"])
        .arg(capture)
        .arg("--write")
        .arg(file)
        .output()
        .unwrap()
        .into();
    assert!(written.status.success(), "{}", written.stderr);
    written.summary_number("flows")
}

/// The collector sent the IPFIX file `file` over TCP.
pub fn over_tcp(dir: &Path, flows: u64, file: &Path) -> Collected {
    collect(dir, flows, || {
        let mut stream = TcpStream::connect(("127.0.0.1", COLLECTOR_PORT)).unwrap();
        std::io::copy(&mut std::fs::File::open(file).unwrap(), &mut stream).unwrap();
    })
}

/// The receive buffer both collectors get for the replay over UDP (rogue
/// asks for 8 MiB; nfcapd's -B is bounded by net.core.rmem_max).
const UDP_BUFFER_BYTES: u64 = 8 << 20;
const NFCAPD_PORT: u16 = 14_740;

/// The messages of an IPFIX file (RFC 5655), each to be one datagram.
fn ipfix_messages(file: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(file).unwrap();
    let mut messages = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 4 {
        let length = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        assert!(length >= 16 && length <= rest.len(), "an IPFIX message of {length} bytes");
        messages.push(rest[..length].to_vec());
        rest = &rest[length..];
    }
    messages
}

/// The rate the paced replay keeps: the collector's target (issue 17).
const PACED_FLOWS_PER_SEC: f64 = 1e6;

/// A replay of IPFIX messages over UDP, one datagram each, at full speed or
/// paced to `rate` flows a second (spread by bytes: records are alike).
struct Pace<'m> {
    messages: &'m [Vec<u8>],
    flows: u64,
    rate: Option<f64>,
}

impl Pace<'_> {
    fn replay(&self, port: u16) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total: usize = self.messages.iter().map(Vec::len).sum();
        let seconds_per_byte = self.rate.map(|rate| self.flows as f64 / rate / total as f64);
        let started = Instant::now();
        let mut sent = 0;
        for message in self.messages {
            if let Some(per_byte) = seconds_per_byte {
                let due = Duration::from_secs_f64(sent as f64 * per_byte);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            socket.send_to(message, ("127.0.0.1", port)).unwrap();
            sent += message.len();
        }
    }
}

impl std::fmt::Display for Pace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rate {
            None => write!(f, "at full speed"),
            Some(rate) => write!(f, "at {} M flows/s", rate / 1e6),
        }
    }
}

/// net.core.rmem_max raised for the replay, and put back after.
struct ReceiveBuffers {
    before: String,
}

const RMEM_MAX: &str = "/proc/sys/net/core/rmem_max";

impl ReceiveBuffers {
    fn allow(bytes: u64) -> ReceiveBuffers {
        let before = std::fs::read_to_string(RMEM_MAX).unwrap();
        if before.trim().parse::<u64>().unwrap_or(0) < bytes {
            std::fs::write(RMEM_MAX, bytes.to_string()).unwrap();
        }
        ReceiveBuffers { before }
    }
}

impl Drop for ReceiveBuffers {
    fn drop(&mut self) {
        let _ = std::fs::write(RMEM_MAX, self.before.trim());
    }
}

/// nfdump's collector taking the same datagrams: timed from the first sent
/// to its exit after SIGTERM, with every flow it received written to its
/// file; the flows counted by nfdump from that file.
fn nfcapd(dir: &Path, pace: &Pace<'_>) -> Collected {
    let out = dir.join("nfcapd");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mut command = Command::new("nfcapd");
    command.args(["-b", "127.0.0.1", "-p", &NFCAPD_PORT.to_string(), "-B", &UDP_BUFFER_BYTES.to_string(), "-w"]);
    command.arg(&out);
    let collector = Running::spawn(command);
    wait_for_udp_listener(NFCAPD_PORT);
    let started = Instant::now();
    pace.replay(NFCAPD_PORT);
    wait_for_udp_drained(NFCAPD_PORT);
    let (_, _, peak_rss) = usage(collector.id());
    collector.signal(libc::SIGTERM);
    let finished = collector.finish();
    let stored = started.elapsed().as_secs_f64();
    assert!(finished.status.success(), "nfcapd failed:\n{}", finished.stderr);
    let flows = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nfcapd.")))
        .map(|path| nfdump_flows(&path))
        .sum();
    let _ = std::fs::remove_dir_all(&out);
    Collected { received: stored, stored, flows, socket_drops: 0, peak_rss }
}

/// The flows in an nfcapd file, as `nfdump -I` counts them.
fn nfdump_flows(file: &Path) -> u64 {
    let output = Command::new("nfdump").arg("-I").arg("-r").arg(file).output().expect("nfdump");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Flows:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no flow count from nfdump -I: {text}"))
}

/// Waits until the socket on UDP `port` has read every datagram queued for
/// it (its receive queue in /proc/net/udp is empty), so a signal then
/// loses none.
fn wait_for_udp_drained(port: u16) {
    let needle = format!(":{port:04X} ");
    loop {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        let queued = table
            .lines()
            .find(|line| line.split_whitespace().nth(1).is_some_and(|local| format!("{local} ").contains(&needle)))
            .and_then(|line| line.split_whitespace().nth(4))
            .and_then(|queues| queues.split(':').nth(1))
            .and_then(|rx| u64::from_str_radix(rx, 16).ok());
        if queued.is_none_or(|bytes| bytes == 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until something listens on UDP `port` on loopback.
fn wait_for_udp_listener(port: u16) {
    let needle = format!(":{port:04X} ");
    for _ in 0..500 {
        if std::fs::read_to_string("/proc/net/udp").unwrap_or_default().contains(&needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on udp port {port}");
}

/// Starts a collector on a fresh store, runs `export`, and times the flows in.
fn collect(dir: &Path, flows: u64, export: impl FnOnce()) -> Collected {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("collector.db{suffix}")));
    }
    collect_into(dir, "{path: collector.db, retention_days: 36500}", flows, export)
}

/// One collector storing into `store` (the YAML of `store:`) sent `flows`
/// by `export`: to the last flow received, and to its exit.
pub fn collect_into(dir: &Path, store: &str, flows: u64, export: impl FnOnce()) -> Collected {
    let collector = spawn_collector(dir, "collector", store, "", METRICS_PORT, COLLECTOR_PORT);
    let started = Instant::now();
    export();
    let (received, socket_drops) = wait_for_flows(METRICS_PORT, flows);
    let received_at = started.elapsed().as_secs_f64();
    let (_, _, peak_rss) = usage(collector.id());
    collector.signal(libc::SIGTERM);
    let finished = collector.finish();
    let stored_at = started.elapsed().as_secs_f64();
    assert!(finished.status.success(), "the collector failed:\n{}", finished.stderr);
    Collected { received: received_at, stored: stored_at, flows: received, socket_drops, peak_rss }
}

/// `rogue collect` named `name` in `dir`, storing into `store`, `extra`
/// configuration added, once it runs.
pub fn spawn_collector(dir: &Path, name: &str, store: &str, extra: &str, metrics_port: u16, port: u16) -> Running {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "internal_networks: [192.0.2.0/24, 10.0.0.0/8]\nstore: {store}\n\
             metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\noutput: {{findings: [{name}-findings.jsonl]}}\n{extra}"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("whitelist.yaml"), "[]\n").unwrap();
    let mut command = Command::new(ROGUE);
    command.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{port}"), "--config"]);
    command.arg(&config);
    let mut collector = Running::spawn(command);
    collector.wait_for_stderr("collector running", 1);
    collector
}

/// Polls the collector's counters until every flow is in, or until they stop
/// growing for a second (a lossy export): the flows and socket drops then.
pub fn wait_for_flows(metrics_port: u16, flows: u64) -> (u64, u64) {
    let counters = || {
        let metrics = scrape_metrics(metrics_port);
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
