//! IPFIX out: rogue's flows exported to nfdump's own collector (nfcapd) on
//! loopback come back from `nfdump` exactly as rogue made them; over TCP and
//! into IPFIX files the messages are framed, numbered and templated as
//! RFC 7011 and RFC 5655 ask.

mod support;

use std::{io::Read, net::TcpListener, path::Path, process::Command};

use rogue::flows::Timeouts;
use support::{
    Row, assert_same_rows, captures,
    ipfix::{Nfcapd, walk},
    meter_capture,
    process::ROGUE,
};

fn rogue_flows(capture: &Path, extra: &[&str]) -> std::process::Output {
    let output =
        Command::new(ROGUE).args(["flows", "--format", "json", "--pcap"]).arg(capture).args(extra).output().unwrap();
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
