//! What rogue's integration tests and benchmarks share: the vendored real
//! captures and their oracles, tshark as an independent dissector, metering
//! a capture through rogue's own library, network namespaces and veths,
//! real DNS servers, the scenarios' captures, the `rogue` binary run as a
//! user runs it, and the testbed XDP programs (reference programs and the
//! live-frames traffic generator, which the production binary does not
//! carry).
//!
//! Tests that need root (BPF, namespaces, mounts) start with
//! [`needs_root!`]: without root they say so on one line and stop, unless
//! ROGUE_TESTS_REQUIRE_ROOT is set (`cargo xtask test`, and so CI, sets
//! it), which makes that a failure.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use rogue::{
    flows::{FlowCache, FlowRecord, Timeouts, meter::FileMeter},
    time::rfc3339_millis,
};
use rogue_common::{MeterCounters, parse::Decapsulate};

/// A loopback port free for both TCP and UDP, in the calling thread's
/// network namespace: rogue's collector, NSD and ClickHouse listen on
/// both, and a port checked for one alone may be another test's listener
/// on the other (tests run at once).
///
/// The port lies below the kernel's ephemeral range, which the kernel
/// draws `bind(0)` and every outgoing connection's port from: there, a
/// port found free could be given again to the next test, or become a
/// client's source port before its server binds it, and a client that
/// polls for a server still starting could be connected to itself (TCP
/// simultaneous open) and wait for an answer forever. Each port is handed
/// out once per process, from a place of its own per process.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let span = ephemeral_ports_start().saturating_sub(FIRST).max(1_000);
    let start = std::process::id().wrapping_mul(7_919) % span;
    loop {
        let n = HANDED_OUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < span, "every port from {FIRST} to the ephemeral range was tried; none is free");
        let port = (FIRST + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// The first port of the kernel's ephemeral range (32768 by default).
fn ephemeral_ports_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A TCP connection to 127.0.0.1:`port`, which a reply must reach within
/// `limit` (reads and writes time out): a server that accepts and never
/// answers fails the test instead of holding up the suite.
pub fn connect_local(port: u16, limit: std::time::Duration) -> std::io::Result<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    Ok(stream)
}

/// The real captures (see tests/captures/PROVENANCE.md).
pub fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/captures")
}

/// The real captures of tunnels (tests/captures/tunnels), sorted by name.
pub fn tunnel_captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(captures_dir().join("tunnels"))
        .expect("tests/captures/tunnels exists")
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Every capture file, sorted by name.
pub fn captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(captures_dir())
        .expect("tests/captures exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng")))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "expected the 31 vendored captures, found {}", files.len());
    files
}

/// The records of a classic little-endian pcap file: (header, [record bytes]).
pub fn pcap_records(path: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "a little-endian microsecond pcap");
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        records.push(bytes[at..at + 16 + len].to_vec());
        at += 16 + len;
    }
    (bytes[..24].to_vec(), records)
}

/// The seconds of a pcap record's timestamp.
pub fn record_seconds(record: &[u8]) -> u32 {
    u32::from_le_bytes(record[..4].try_into().unwrap())
}

/// Sets the seconds of a pcap record's timestamp.
pub fn set_record_seconds(record: &mut [u8], seconds: u32) {
    record[..4].copy_from_slice(&seconds.to_le_bytes());
}

pub fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Flows and counters of a capture metered by rogue's library.
pub fn meter_capture(path: &Path, timeouts: Timeouts) -> (Vec<FlowRecord>, MeterCounters) {
    meter_capture_opening(path, timeouts, Decapsulate::NONE)
}

/// [`meter_capture`], opening the tunnels `decapsulate` names.
pub fn meter_capture_opening(
    path: &Path,
    timeouts: Timeouts,
    decapsulate: Decapsulate,
) -> (Vec<FlowRecord>, MeterCounters) {
    let mut meter = FileMeter::new(FlowCache::new(timeouts));
    meter.decapsulate = decapsulate;
    let mut flows = Vec::new();
    meter.file(path, |completed| flows.append(completed)).unwrap_or_else(|e| panic!("{e}"));
    meter.cache.flush(&mut flows);
    (flows, meter.counters)
}

/// A flow as nfdump prints it (`%ts|%te|%pr|%sa|%sp|%da|%dp|%flg|%pkt|%byt`),
/// so rogue's flows and the oracles compare as text rows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Row {
    pub start: String,
    pub end: String,
    pub proto: u8,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    /// For ICMP, `type.code` as nfdump prints it.
    pub dport: String,
    pub flags: String,
    pub packets: u64,
    pub bytes: u64,
}

impl Row {
    pub fn of(flow: &FlowRecord) -> Row {
        let nfdump_time = |t| rfc3339_millis(t).replace('T', " ").trim_end_matches('Z').to_string();
        Row {
            start: nfdump_time(flow.start),
            end: nfdump_time(flow.end),
            proto: flow.proto,
            src: flow.src.to_string(),
            sport: flow.sport,
            dst: flow.dst.to_string(),
            dport: if is_icmp(flow.proto) {
                format!("{}.{}", flow.dport >> 8, flow.dport & 0xff)
            } else {
                flow.dport.to_string()
            },
            flags: rogue::flows::format::tcp_flags_letters(flow.tcp_flags),
            packets: flow.packets,
            bytes: flow.bytes,
        }
    }

    /// A line of nfdump's `-o 'fmt:%ts|%te|%pr|%sa|%sp|%da|%dp|%flg|%pkt|%byt|%fl'`
    /// with the padding around `|` removed.
    pub fn parse(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        if f.len() != 11 {
            return None;
        }
        Some(Row {
            start: f[0].into(),
            end: f[1].into(),
            proto: f[2].parse().ok()?,
            src: f[3].into(),
            sport: f[4].parse().ok()?,
            dst: f[5].into(),
            dport: f[6].into(),
            flags: f[7].into(),
            packets: f[8].parse().ok()?,
            bytes: f[9].parse().ok()?,
        })
    }

    /// (src, dst, proto, sport, dport): which flow, ignoring counts and times.
    pub fn key(&self) -> (String, String, u8, u16, String) {
        (self.src.clone(), self.dst.clone(), self.proto, self.sport, self.dport.clone())
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.start,
            self.end,
            self.proto,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.flags,
            self.packets,
            self.bytes
        )
    }
}

pub fn is_icmp(proto: u8) -> bool {
    proto == 1 || proto == 58
}

/// Section 1 of an oracle file: nfpcapd's flows with default timeouts.
pub struct NfdumpOracle {
    pub flows: Vec<Row>,
    /// Flows printed after a tunnel line: nfpcapd keyed them on the inner header.
    pub tunnelled: Vec<Row>,
}

pub fn nfdump_oracle(capture: &Path) -> NfdumpOracle {
    nfdump_section(capture, 1)
}

/// Section `wanted` (1: flows, 3: the TCP port 25 flows) of an oracle file.
pub fn nfdump_section(capture: &Path, wanted: u32) -> NfdumpOracle {
    let path = captures_dir().join(format!("{}.oracle.txt", stem(capture)));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut section = 0;
    let mut oracle = NfdumpOracle { flows: Vec::new(), tunnelled: Vec::new() };
    let mut after_tunnel_line = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ===== SECTION ") {
            section = rest.split(':').next().unwrap().trim().parse().unwrap();
            continue;
        }
        if section != wanted || line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let row = Row::parse(line).unwrap_or_else(|| panic!("{}: unexpected line {line:?}", path.display()));
        if row.packets == 0 {
            // nfdump's print of a tunnel's outer addresses, not a flow.
            after_tunnel_line = true;
            continue;
        }
        if after_tunnel_line {
            oracle.tunnelled.push(row);
        } else {
            oracle.flows.push(row);
        }
        after_tunnel_line = false;
    }
    oracle
}

/// Multiset difference: rows of `a` not matched in `b`.
pub fn missing_from(a: &[Row], b: &[Row]) -> Vec<Row> {
    let mut counts: BTreeMap<&Row, i64> = BTreeMap::new();
    for row in b {
        *counts.entry(row).or_default() += 1;
    }
    let mut missing = Vec::new();
    for row in a {
        let count = counts.entry(row).or_default();
        if *count > 0 {
            *count -= 1;
        } else {
            missing.push(row.clone());
        }
    }
    missing
}

/// Panics with both differences when the multisets differ.
pub fn assert_same_rows(what: &str, rogue: &[Row], expected: &[Row]) {
    let missing = missing_from(expected, rogue);
    let extra = missing_from(rogue, expected);
    if missing.is_empty() && extra.is_empty() {
        return;
    }
    let mut message = format!("{what}: rogue's flows differ from the expected ones\n");
    for row in &missing {
        message += &format!("  expected, not in rogue: {row}\n");
    }
    for row in &extra {
        message += &format!("  in rogue, not expected: {row}\n");
    }
    panic!("{message}");
}

/// Runs a program the tests need, failing with how to get it.
pub fn require(program: &str) -> Command {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().unwrap();
    assert!(
        found.status.success(),
        "{program} is not installed; `cargo xtask setup` installs the test tools (apt-get install {program})"
    );
    Command::new(program)
}

/// Reference XDP programs and the live-frames traffic generator (see
/// rogue-ebpf/src/bin/testbed.rs), for benchmarks and kernel tests.
pub static TESTBED_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("ROGUE_TESTBED_OBJECT"));

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Stops the test (it passes, saying why on one line) when not run as
/// root, unless ROGUE_TESTS_REQUIRE_ROOT is set: then it fails.
#[macro_export]
macro_rules! needs_root {
    ($why:expr) => {
        if !$crate::is_root() {
            assert!(
                std::env::var_os("ROGUE_TESTS_REQUIRE_ROOT").is_none(),
                "this test needs root ({}), and ROGUE_TESTS_REQUIRE_ROOT is set",
                $why
            );
            $crate::say_skipped($why);
            return;
        }
    };
}

/// One line on the terminal for a test skipped for want of root. Written to
/// stderr directly: libtest captures `eprintln!` and shows it only for
/// failures, and a skip must be seen.
pub fn say_skipped(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let line = format!("{test}: skipped, needs root ({why}); `cargo xtask test` runs it as root\n");
    // One write, so that lines of tests skipping at once do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub mod analysis;
pub mod clickhouse;
pub mod dns;
pub mod generator;
pub mod ipfix;
pub mod mailnet;
pub mod netns;
pub mod packets;
pub mod process;
pub mod servicenet;
pub mod systemd;
pub mod tshark;
