//! IPFIX out: rogue's flows exported to nfdump's own collector (nfcapd) on
//! loopback come back from `nfdump` exactly as rogue made them; over TCP and
//! into IPFIX files the messages are framed, numbered and templated as
//! RFC 7011 and RFC 5655 ask.

use std::{io::Read, net::TcpListener, path::Path, process::Command};

use rogue::flows::Timeouts;
use rogue_testkit::{
    Row, assert_same_rows, captures,
    ipfix::{Nfcapd, walk},
    meter_capture,
    process::ROGUE,
};

fn rogue_flows(capture: &Path, extra: &[&str]) -> std::process::Output {
    let output =
        Command::new(ROGUE).args(["flows", "--format", "jsonl", "--pcap"]).arg(capture).args(extra).output().unwrap();
    assert!(output.status.success(), "rogue flows failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

#[test]
fn every_flow_exported_to_nfcapd_comes_back_from_nfdump_as_rogue_made_it() {
    let nfcapd = Nfcapd::start("export");
    let destination = format!("udp://127.0.0.1:{}", nfcapd.port);
    let mut expected = Vec::new();
    for capture in captures() {
        let (flows, _) = meter_capture(&capture, Timeouts::default());
        expected.extend(flows.iter().map(Row::of));
        let output = rogue_flows(&capture, &["--ipfix", &destination]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("# ipfix export errors   0"), "{stderr}");
    }
    let collected = nfcapd.stop_and_read();
    assert!(expected.len() > 1_000 && expected.iter().any(|r| r.src.contains(':')), "IPv4 and IPv6 flows");
    assert_same_rows("nfdump's reading of rogue's IPFIX", &collected, &expected);
}

fn printed_flows(output: &std::process::Output) -> usize {
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[test]
fn over_tcp_the_templates_come_first_and_every_flow_follows_numbered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let capture = captures().into_iter().find(|c| c.to_string_lossy().contains("smtp")).unwrap();
    let output = rogue_flows(&capture, &["--ipfix", &format!("tcp://127.0.0.1:{port}"), "--observation-domain", "42"]);
    let stream = received.join().unwrap();
    assert_eq!(&stream[12..16], &42u32.to_be_bytes(), "the observation domain");
    let (templates, records, sequence_ok) = walk(&stream);
    assert_eq!(templates, [256, 257], "both templates, once, first");
    assert_eq!(records.iter().map(|(_, n)| n).sum::<usize>(), printed_flows(&output));
    assert!(sequence_ok, "each header counts the data records sent before it");
}

#[test]
fn an_ipfix_file_holds_the_templates_and_every_flow() {
    let path = std::env::temp_dir().join(format!("rogue-{}-flows.ipfix", std::process::id()));
    let capture = captures().into_iter().find(|c| c.to_string_lossy().contains("v6")).unwrap();
    let output = rogue_flows(&capture, &["--write", path.to_str().unwrap()]);
    let (templates, records, sequence_ok) = walk(&std::fs::read(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(templates, [256, 257]);
    assert!(records.iter().any(|(template, _)| *template == 257), "IPv6 records: {records:?}");
    assert_eq!(records.iter().map(|(_, n)| n).sum::<usize>(), printed_flows(&output));
    assert!(sequence_ok);
}

/// `rogue flows --listen` on a free loopback port, printing JSON; stopped by SIGINT.
fn rogue_collector() -> (rogue_testkit::process::Running, u16) {
    let port = rogue_testkit::free_port();
    let mut command = Command::new(ROGUE);
    command.args(["-v", "flows", "--format", "jsonl", "--listen", &format!("127.0.0.1:{port}")]);
    let mut collector = rogue_testkit::process::Running::spawn(command);
    collector.wait_for_stderr("collecting IPFIX", 1);
    (collector, port)
}

/// softflowd reading `capture` and exporting it to `destination`. Without a
/// control socket (`-c none`): with one, softflowd waits for commands after
/// the capture ends instead of exiting. Each run has its own pid file.
fn softflowd(capture: &Path, version: &str, transport: &str, destination: &str, options: &[&str]) {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rogue-softflowd-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = rogue_testkit::require("softflowd")
        .args(["-d", "-6", "-r"])
        .arg(capture)
        .args(["-v", version, "-P", transport, "-n", destination])
        .args(options)
        .arg("-p")
        .arg(dir.join("pid"))
        .args(["-c", "none"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "softflowd on {}: {}", capture.display(), String::from_utf8_lossy(&output.stderr));
}

/// What a collector printed, as rows.
fn rows_of(finished: &rogue_testkit::process::Finished) -> Vec<Row> {
    finished.json_lines().iter().map(Row::from_json).collect()
}

/// softflowd exports every capture in `version` through nfcapd (which
/// repeats each datagram to rogue): (nfdump's rows, rogue's rows).
fn softflowd_to_nfcapd_and_rogue(version: &str, options: &[&str]) -> (Vec<Row>, Vec<Row>) {
    let (collector, rogue_port) = rogue_collector();
    let nfcapd = Nfcapd::start_repeating(&format!("softflowd-{version}"), Some(rogue_port));
    let destination = format!("127.0.0.1:{}", nfcapd.port);
    // softflowd cannot read raw-IP captures (link type 228).
    for capture in captures().iter().filter(|c| !c.to_string_lossy().contains("rawip")) {
        softflowd(capture, version, "udp", &destination, options);
    }
    let reference = nfcapd.stop_and_read();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let received = collector.interrupt();
    assert!(received.status.success(), "{}", received.stderr);
    assert_eq!(received.summary_number("malformed messages"), 0, "{}", received.stderr);
    assert_eq!(received.summary_number("sets w/o template"), 0, "{}", received.stderr);
    assert_eq!(received.summary_number("unreadable records"), 0, "{}", received.stderr);
    (reference, rows_of(&received))
}

/// ICMPv6 type and code travel in the destination port; nfdump prints them
/// as 0.0 from NetFlow v9 records (its v9 reader looks for them elsewhere for
/// IPv6, though not its IPFIX reader), so they are checked against rogue's
/// own metering of the captures instead.
fn icmpv6_types_as_metered(rows: &[Row]) -> Vec<Row> {
    let metered: std::collections::BTreeSet<String> = captures()
        .iter()
        .flat_map(|c| meter_capture(c, Timeouts::default()).0)
        .filter(|f| f.proto == 58)
        .map(|f| Row::of(&f).dport)
        .collect();
    rows.iter()
        .map(|r| match r.proto {
            58 => {
                assert!(metered.contains(&r.dport), "ICMPv6 {} was not in the captures: {r}", r.dport);
                Row { dport: "0.0".into(), ..r.clone() }
            }
            _ => r.clone(),
        })
        .collect()
}

#[test]
fn netflow_v9_and_ipfix_from_softflowd_are_received_exactly_as_nfcapd_receives_them() {
    for version in ["9", "10"] {
        // Absolute millisecond times (-A milli), as routers that can send them do.
        let (reference, rows) = softflowd_to_nfcapd_and_rogue(version, &["-A", "milli"]);
        assert!(reference.len() > 1_000 && rows.iter().any(|r| r.src.contains(':')), "{} flows", reference.len());
        let rows = if version == "9" { icmpv6_types_as_metered(&rows) } else { rows };
        assert_same_rows(&format!("rogue's collection of softflowd's v{version}"), &rows, &reference);
    }
}

/// NetFlow v5 dates flows by the exporter's uptime, a 32-bit count of
/// milliseconds. softflowd replaying a capture sends uptimes far from its
/// records', which nfdump and rogue place 2^32 ms apart; everything else
/// must agree.
#[test]
fn netflow_v5_from_softflowd_gives_nfcapds_flows() {
    let (reference, rows) = softflowd_to_nfcapd_and_rogue("5", &[]);
    let without_times = |rows: &[Row]| -> Vec<Row> {
        let mut rows: Vec<Row> =
            rows.iter().map(|r| Row { start: String::new(), end: String::new(), ..r.clone() }).collect();
        rows.sort();
        rows
    };
    assert!(reference.len() > 500, "{} flows", reference.len());
    assert_eq!(without_times(&rows), without_times(&reference));
}

#[test]
fn ipfix_over_tcp_from_softflowd_gives_the_flows_of_its_udp_export() {
    let capture = captures().into_iter().find(|c| c.to_string_lossy().contains("starttls")).unwrap();
    let mut runs = Vec::new();
    for transport in ["udp", "tcp"] {
        let (collector, port) = rogue_collector();
        softflowd(&capture, "10", transport, &format!("127.0.0.1:{port}"), &[]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let received = collector.interrupt();
        assert_eq!(received.summary_number("malformed messages"), 0, "{}", received.stderr);
        // softflowd dates flows by its own clock: compare all but the times.
        let mut flows: Vec<(String, u64, u64)> =
            rows_of(&received).iter().map(|r| (format!("{:?}", r.key()), r.packets, r.bytes)).collect();
        flows.sort();
        runs.push(flows);
    }
    assert!(!runs[0].is_empty());
    assert_eq!(runs[0], runs[1]);
}
