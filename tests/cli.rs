//! `rogue flows` as a user runs it: output formats, errors that name what is
//! at fault, exit codes, several files as one stream, stdin; and live: no
//! program left attached however rogue ends, and the XDP attach modes.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use rogue_testkit::{
    captures_dir,
    netns::{Netns, veth},
    pcap_records,
    process::{Finished, ROGUE, Running},
};

const SMTP: &str = "zeek-smtp-two-sessions.pcap";

fn capture(name: &str) -> PathBuf {
    captures_dir().join(name)
}

fn rogue(args: &[&str]) -> Finished {
    let mut command = Command::new(ROGUE);
    command.args(args);
    rogue_testkit::process::run(command)
}

fn flows_of(path: &Path, format: &str) -> Finished {
    let finished = rogue(&["flows", "--pcap", path.to_str().unwrap(), "--format", format]);
    assert!(finished.status.success(), "{}", finished.stderr);
    finished
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rogue-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn json_lines_have_exactly_the_record_fields_in_order_with_utc_millisecond_times() {
    let finished = flows_of(&capture(SMTP), "jsonl");
    let lines: Vec<&str> = finished.stdout.lines().collect();
    assert_eq!(lines.len(), 16);
    for line in &lines {
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 11, "{line}");
        // Field order as documented, read from the text itself.
        let positions: Vec<usize> = rogue::flows::format::FIELDS
            .iter()
            .map(|f| line.find(&format!("\"{f}\":")).unwrap_or_else(|| panic!("{f} missing in {line}")))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
    }
    // The Exim session of the Wireshark sample, client to server, as nfdump
    // reports it in the oracle.
    let session: serde_json::Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("\"dport\":25")).unwrap()).unwrap();
    assert_eq!(session["src"], "10.10.1.4");
    assert_eq!(session["dst"], "74.53.140.153");
    assert_eq!(session["start"], "2009-10-05T06:06:07.529Z");
    assert_eq!(session["end"], "2009-10-05T06:06:15.106Z");
    assert_eq!((session["packets"].as_u64(), session["bytes"].as_u64()), (Some(28), Some(21673)));
    assert_eq!(session["interface"], serde_json::Value::Null);
}

#[test]
fn csv_has_a_header_of_the_field_names_and_one_row_per_flow() {
    let csv = flows_of(&capture(SMTP), "csv").stdout;
    let json = flows_of(&capture(SMTP), "jsonl").stdout;
    let mut rows = csv.lines();
    assert_eq!(rows.next().unwrap(), "src,dst,sport,dport,proto,packets,bytes,start,end,tcp_flags,interface");
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), json.lines().count());
    for (row, line) in rows.iter().zip(json.lines()) {
        let flow: serde_json::Value = serde_json::from_str(line).unwrap();
        let expected = format!(
            "{},{},{},{},{},{},{},{},{},{},",
            flow["src"].as_str().unwrap(),
            flow["dst"].as_str().unwrap(),
            flow["sport"],
            flow["dport"],
            flow["proto"],
            flow["packets"],
            flow["bytes"],
            flow["start"].as_str().unwrap(),
            flow["end"].as_str().unwrap(),
            flow["tcp_flags"],
        );
        assert_eq!(*row, expected);
    }
}

#[test]
fn the_table_has_a_header_and_one_line_per_flow_with_nfdump_flag_letters() {
    let table = flows_of(&capture("zeek-smtp-multi-addr-cern.pcap"), "table").stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("start") && lines[0].contains("src:sport") && lines[0].contains("flags"));
    assert_eq!(lines.len(), 4);
    assert!(lines[1].contains("188.184.129.157:35119") && lines[1].contains("...AP.S.") && lines[1].contains(" 1277 "));
}

#[test]
fn the_counters_follow_the_flows_on_stderr() {
    let finished = flows_of(&capture("zeek-wikipedia-dns-http-ipv6.pcap"), "jsonl");
    assert_eq!(finished.summary_number("packets"), 136);
    assert_eq!(finished.summary_number("non-ip"), 10, "6 ARP and 4 STP frames");
    assert_eq!(finished.summary_number("flows"), finished.stdout.lines().count() as u64);
    for name in ["fragments", "malformed", "insert failures", "vlan", "mpls", "pppoe", "ipv6 packets"] {
        finished.summary(name);
    }
    let quiet = rogue(&["-q", "flows", "--pcap", capture(SMTP).to_str().unwrap(), "--format", "jsonl"]);
    assert!(quiet.status.success() && quiet.stderr.is_empty(), "{}", quiet.stderr);
}

#[test]
fn files_given_together_are_one_stream() {
    let (header, records) = pcap_records(&capture(SMTP));
    let dir = scratch_dir("split");
    let (first, second) = (dir.join("first.pcap"), dir.join("second.pcap"));
    let half = records.len() / 2;
    std::fs::write(&first, [header.clone(), records[..half].concat()].concat()).unwrap();
    std::fs::write(&second, [header, records[half..].concat()].concat()).unwrap();
    let whole = flows_of(&capture(SMTP), "jsonl").stdout;
    let split = rogue(&["flows", "--pcap", first.to_str().unwrap(), second.to_str().unwrap(), "--format", "jsonl"]);
    assert!(split.status.success(), "{}", split.stderr);
    assert_eq!(split.stdout, whole);
}

#[test]
fn a_capture_on_stdin_gives_the_same_flows() {
    let mut child = Command::new(ROGUE)
        .args(["flows", "--pcap", "-", "--format", "jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(capture(SMTP)).unwrap()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), flows_of(&capture(SMTP), "jsonl").stdout);
}

#[test]
fn a_capture_cut_inside_a_record_is_read_up_to_the_cut_with_a_warning() {
    let bytes = std::fs::read(capture(SMTP)).unwrap();
    let (_, records) = pcap_records(&capture(SMTP));
    let dir = scratch_dir("cut");
    let cut = dir.join("cut.pcap");
    // Cut in the middle of the last record.
    std::fs::write(&cut, &bytes[..bytes.len() - records.last().unwrap().len() / 2]).unwrap();
    let last_record_at = bytes.len() - records.last().unwrap().len();
    let finished = rogue(&["flows", "--pcap", cut.to_str().unwrap(), "--format", "jsonl"]);
    assert!(finished.status.success(), "{}", finished.stderr);
    let warning = format!("cut.pcap: the file ends inside the packet record at byte {last_record_at}");
    assert!(finished.stderr.contains(&warning), "{}", finished.stderr);
    assert_eq!(finished.summary_number("packets"), 124, "all records before the cut");
    assert_eq!(finished.summary_number("truncated files"), 1);
}

#[test]
fn errors_name_the_file_and_what_is_wrong_with_it() {
    let missing = rogue(&["flows", "--pcap", "/nonexistent/capture.pcap"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        missing.stderr.trim(),
        "rogue: error: cannot read /nonexistent/capture.pcap: No such file or directory (os error 2)"
    );

    let dir = scratch_dir("errors");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "these are notes, not packets\n".repeat(10)).unwrap();
    let not_capture = rogue(&["flows", "--pcap", text.to_str().unwrap()]);
    assert_eq!(not_capture.status.code(), Some(1));
    assert!(not_capture.stderr.contains("notes.txt: not a pcap or pcapng file"), "{}", not_capture.stderr);

    // A pcap of Token Ring frames (LINKTYPE_IEEE802_5, 6).
    let (mut header, records) = pcap_records(&capture(SMTP));
    header[20..24].copy_from_slice(&6u32.to_le_bytes());
    let token_ring = dir.join("token-ring.pcap");
    std::fs::write(&token_ring, [header, records[0].clone()].concat()).unwrap();
    let unsupported = rogue(&["flows", "--pcap", token_ring.to_str().unwrap()]);
    assert_eq!(unsupported.status.code(), Some(1));
    assert!(
        unsupported.stderr.contains("token-ring.pcap: interface 0 has link type 6, which rogue cannot read"),
        "{}",
        unsupported.stderr
    );
}

#[test]
fn bad_usage_exits_2_with_a_hint() {
    for args in [
        &["flows"][..],
        &["flows", "--iface", "eth0", "--pcap", "x.pcap"],
        &["flows", "--pcap", "x.pcap", "--idle-timeout", "0.5s"],
        &["flows", "--pcap", "x.pcap", "--format", "xml"],
        &["flows", "--iface", "eth0", "--xdp-mode", "turbo"],
        &["flows", "--iface", "eth0", "--interval", "0s"],
        &["flows", "--iface", "eth0", "--flow-map-entries", "0"],
        &["flows", "--iface", "eth0", "--flow-map-entries", "4294967295"],
        &["flows", "--iface", "eth0", "--flow-map-entries", "100000000"],
        &["report", "--host", "192.0.2.1", "--out", "x", "--bin", "9223372036854775807"],
    ] {
        let finished = rogue(args);
        assert_eq!(finished.status.code(), Some(2), "{args:?}: {}", finished.stderr);
        assert!(finished.stderr.contains("--help"), "{args:?}: {}", finished.stderr);
    }
    let tunnel = rogue(&["flows", "--pcap", "x.pcap", "--decapsulate", "vxlan,mpls"]);
    assert_eq!(tunnel.status.code(), Some(2));
    assert!(
        tunnel.stderr.contains("\"mpls\" is not a tunnel rogue opens (erspan, gre, vxlan, geneve, ipip)"),
        "{}",
        tunnel.stderr
    );
    let entries = rogue(&["flows", "--iface", "eth0", "--flow-map-entries", "100000000"]);
    assert!(
        entries.stderr.contains("100000000 is not between 1 and 16777216: both flow maps are allocated in full"),
        "the bound and why: {}",
        entries.stderr
    );
}

/// Records whose lengths lie are errors at their own offset, on one line;
/// a directory is not a capture.
#[test]
fn records_with_impossible_lengths_are_named_at_their_offset() {
    let dir = scratch_dir("lengths");
    let (header, records) = pcap_records(&capture(SMTP));
    let snaplen = u32::from_le_bytes(header[16..20].try_into().unwrap());
    let check = |name: &str, bytes: Vec<u8>, expected: &str| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let finished = rogue(&["flows", "--pcap", path.to_str().unwrap()]);
        assert_eq!(finished.status.code(), Some(1), "{name}: {}", finished.stderr);
        assert_eq!(finished.stderr.trim(), format!("rogue: error: {}: {expected}", path.display()), "{name}");
    };
    // The first record says it holds more than the file does.
    let mut first = records[0].clone();
    first[8..12].copy_from_slice(&60_000u32.to_le_bytes());
    let left = first.len();
    check(
        "first.pcap",
        [header.clone(), first].concat(),
        &format!(
            "corrupt record at byte 24, after 0 packets: the first record runs past the end of the file (its length \
             of 60000 bytes, {left} left)"
        ),
    );
    // The third says it holds more than the snapshot length.
    let third_at = 24 + records[0].len() + records[1].len();
    let mut over = records.clone();
    over[2][8..12].copy_from_slice(&(snaplen + 1).to_le_bytes());
    check(
        "snaplen.pcap",
        [header.clone(), over.concat()].concat(),
        &format!(
            "corrupt record at byte {third_at}, after 2 packets: its captured length {} is more than the file's \
             snapshot length {snaplen}",
            snaplen + 1
        ),
    );
    // A pcapng block of 7 bytes: one line, none of the block's bytes.
    let pcapng = std::fs::read(capture("zeek-smtp-three-sessions-loopback.pcapng")).unwrap();
    let mut bad = pcapng.clone();
    bad[380 + 4..380 + 8].copy_from_slice(&7u32.to_le_bytes());
    let path = dir.join("bad.pcapng");
    std::fs::write(&path, bad).unwrap();
    let finished = rogue(&["flows", "--pcap", path.to_str().unwrap()]);
    assert_eq!(finished.status.code(), Some(1));
    assert_eq!(finished.stderr.lines().count(), 1, "{}", finished.stderr);
    assert!(
        finished.stderr.contains("corrupt record at byte 380, after 2 packets: not a valid block"),
        "{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains("input ["), "{}", finished.stderr);

    let directory = rogue(&["flows", "--pcap", dir.to_str().unwrap()]);
    assert_eq!(directory.status.code(), Some(1));
    assert_eq!(directory.stderr.trim(), format!("rogue: error: {} is a directory, not a capture file", dir.display()));
}

fn xdp_attached(ns: &Netns, interface: &str) -> bool {
    let output = ns.command("ip").args(["-j", "link", "show", "dev", interface]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    !json[0]["xdp"].is_null()
}

/// Ctrl-C stops live metering whenever it comes, also in the middle of a
/// drain (which waits out an RCU grace period, so a drain every 10 ms is
/// mostly drains): eight runs, each interrupted after a different delay,
/// all end within 5 s with their summary.
#[test]
fn ctrl_c_stops_live_metering_even_in_the_middle_of_a_drain() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let ns = Netns::new("sigint");
    veth(&ns, "a0", &ns, "b0");
    for delay_ms in [50, 71, 97, 113, 139, 151, 173, 199] {
        let mut command = ns.command(ROGUE);
        command.args(["flows", "--iface", "b0", "--xdp-mode", "generic", "--interval", "10ms", "-v"]);
        let mut running = Running::spawn(command);
        running.wait_for_stderr("XDP flow meter attached", 1);
        std::thread::sleep(Duration::from_millis(delay_ms));
        running.signal(libc::SIGINT);
        let finished = running.finish_within(Duration::from_secs(5));
        assert!(finished.status.success(), "{}", finished.stderr);
        assert!(finished.summary_number("drains") > 0, "{}", finished.stderr);
    }
}

#[test]
fn no_program_stays_attached_however_rogue_ends() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let ns = Netns::new("detach");
    veth(&ns, "mon0", &ns, "peer0");
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let mut command = ns.command(ROGUE);
        command.args(["flows", "--iface", "mon0", "--format", "jsonl", "-v"]);
        let mut running = Running::spawn(command);
        running.wait_for_stderr("XDP flow meter attached", 1);
        assert!(xdp_attached(&ns, "mon0"), "attached while running");
        running.signal(signal);
        let finished = running.finish();
        if signal != libc::SIGKILL {
            assert!(finished.status.success(), "signal {signal}: {}", finished.stderr);
            finished.summary("drains");
        }
        // The kernel releases a bpf_link when its last fd closes.
        let released = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !xdp_attached(&ns, "mon0")
        });
        assert!(released, "a program is still attached after signal {signal}");
    }
}

#[test]
fn auto_mode_falls_back_to_generic_xdp_where_the_driver_has_no_native_xdp() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let ns = Netns::new("modes");
    // A bridge has no native XDP.
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "up"]);

    let native = ns.command(ROGUE).args(["flows", "--iface", "br0", "--duration", "1s"]).output().unwrap();
    assert_eq!(native.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&native.stderr);
    assert!(stderr.contains("attaching to br0 in native mode failed"), "{stderr}");
    assert!(stderr.contains("--xdp-mode generic or auto"), "{stderr}");

    let auto = ns
        .command(ROGUE)
        .args(["flows", "--iface", "br0", "--xdp-mode", "auto", "--duration", "1s", "--format", "jsonl", "-v"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{stderr}");
    assert!(stderr.contains("falling back to generic XDP on br0"), "{stderr}");
    assert!(stderr.contains("mode=\"generic\""), "{stderr}");

    let missing = ns.command(ROGUE).args(["flows", "--iface", "nosuch0", "--duration", "1s"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no network interface named \"nosuch0\""));
}

#[test]
fn generic_mode_meters_what_the_interface_receives() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let ns = Netns::new("generic");
    veth(&ns, "send0", &ns, "mon0");
    let mut command = ns.command(ROGUE);
    command.args([
        "flows",
        "--iface",
        "mon0",
        "--xdp-mode",
        "generic",
        "--interval",
        "100ms",
        "--format",
        "jsonl",
        "--stats",
        "-v",
    ]);
    let mut running = Running::spawn(command);
    running.wait_for_stderr("XDP flow meter attached", 1);
    let before = ns.rx("mon0");
    // Raw frames out of send0 (a packet socket), 50 of one UDP flow.
    let frame = rogue_testkit::packets::ethernet(
        0x0800,
        &rogue_testkit::packets::ipv4(
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
            17,
            &[],
            0,
            &rogue_testkit::packets::udp(4000, 25, &[1; 100]),
        ),
    );
    rogue_testkit::netns::in_netns(&ns, move || {
        let ifindex = rogue::capture::host::if_index("send0").unwrap();
        rogue_testkit::netns::send_raw(ifindex, &frame, 50);
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = ns.rx("mon0");
    let finished = running.interrupt();
    assert!(finished.status.success(), "{}", finished.stderr);
    let flows = finished.json_lines();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0]["packets"], 50);
    assert_eq!(flows[0]["bytes"], 50 * 128);
    assert_eq!(after.0 - before.0, 50);
    assert_eq!(finished.summary_number("packets"), 50);
    let reports = finished.stderr.lines().filter(|l| l.starts_with("# packets ")).count();
    assert!(reports > 2, "--stats prints the counters after every drain, not only at the end: {reports}");
}

/// A flow map of two entries and three flows: the third flow's packets are
/// counted in no flow, and the kernel log names each of them, as it names
/// the malformed frame; off, the same traffic logs nothing from the kernel.
#[test]
fn the_kernel_log_names_what_a_full_flow_map_left_out_and_is_silent_when_off() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let ns = Netns::new("klog");
    veth(&ns, "send0", &ns, "mon0");
    let udp = |sport: u16| {
        use rogue_testkit::packets::{ethernet, ipv4, udp};
        ethernet(0x0800, &ipv4([192, 0, 2, 1].into(), [192, 0, 2, 2].into(), 17, &[], 0, &udp(sport, 25, &[1; 100])))
    };
    let malformed = rogue_testkit::packets::cases()
        .into_iter()
        .find(|case| case.name == "truncated: IPv4 header cut after 19 bytes")
        .unwrap()
        .frame;
    let run = |level: &str| {
        let mut command = ns.command(ROGUE);
        // One drain, at the end: the maps do not switch while the frames arrive.
        let args = ["flows", "--iface", "mon0", "--xdp-mode", "generic", "--interval", "1h", "--format", "jsonl"];
        command.args(args).args(["--flow-map-entries", "2", "--kernel-log", level, "-vv"]);
        let mut running = Running::spawn(command);
        running.wait_for_stderr("XDP flow meter attached", 1);
        let frames = [(udp(4000), 5), (udp(4001), 5), (udp(4002), 5), (malformed.clone(), 1)];
        rogue_testkit::netns::in_netns(&ns, move || {
            let ifindex = rogue::capture::host::if_index("send0").unwrap();
            for (frame, count) in &frames {
                rogue_testkit::netns::send_raw(ifindex, frame, *count);
            }
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let finished = running.interrupt();
        assert!(finished.status.success(), "{}", finished.stderr);
        finished
    };

    let logged = run("debug");
    assert_eq!(logged.summary("insert failures"), "5 packets, 640 bytes");
    let full: Vec<&str> = logged.stderr.lines().filter(|l| l.contains("flow map full: ")).collect();
    assert_eq!(full.len(), 5, "{}", logged.stderr);
    let mon0 = rogue_testkit::netns::in_netns(&ns, || rogue::capture::host::if_index("mon0").unwrap()).join().unwrap();
    let expected = format!(
        "flow map full: ::ffff:192.0.2.1:4002 > ::ffff:192.0.2.2:25 proto 17 on ifindex {mon0} counted in no flow \
         (128 bytes)"
    );
    for line in &full {
        assert!(line.contains("WARN") && line.contains("rogue::kernel"), "{line}");
        assert!(line.ends_with(&expected), "{line}");
    }
    let flows = logged.json_lines();
    let ports: Vec<u64> = flows.iter().map(|f| f["sport"].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 2, "{flows:?}");
    assert!(!ports.contains(&4002), "the flow left out is the one logged: {ports:?}");
    let malformed_lines: Vec<&str> =
        logged.stderr.lines().filter(|l| l.contains("malformed frame of 33 bytes")).collect();
    assert_eq!(malformed_lines.len(), 1, "{}", logged.stderr);
    assert_eq!(logged.summary_number("malformed"), 1);

    let silent = run("off");
    assert_eq!(silent.summary("insert failures"), "5 packets, 640 bytes");
    assert!(!silent.stderr.contains("rogue::kernel"), "{}", silent.stderr);
}

/// A capture of one large TCP flow (1,200 packets, 1.7 MB) and ICMP and
/// ICMPv6 echoes, written as a little-endian microsecond pcap.
fn large_flow_and_echoes(path: &Path) {
    use rogue_testkit::packets::{ethernet, icmp, ipv4, ipv6, tcp};
    let (a, b) = ("192.0.2.10".parse().unwrap(), "198.51.100.20".parse().unwrap());
    let mut frames: Vec<Vec<u8>> =
        (0..1_200).map(|_| ethernet(0x0800, &ipv4(a, b, 6, &[], 0, &tcp(40000, 443, 0x18, &[0u8; 1_400])))).collect();
    frames.push(ethernet(0x0800, &ipv4(a, b, 1, &[], 0, &icmp(8, 0))));
    frames.push(ethernet(0x0800, &ipv4(b, a, 1, &[], 0, &icmp(3, 13))));
    let (a6, b6) = ("2001:db8::10".parse().unwrap(), "2001:db8:1::20".parse().unwrap());
    frames.push(ethernet(0x86dd, &ipv6(a6, b6, &[], 58, &icmp(128, 0))));
    let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0];
    for (i, frame) in frames.iter().enumerate() {
        let (seconds, micros) = (1_700_000_000u32 + i as u32 / 1_000, (i as u32 % 1_000) * 1_000);
        for field in [seconds, micros, frame.len() as u32, frame.len() as u32] {
            pcap.extend(field.to_le_bytes());
        }
        pcap.extend(frame);
    }
    std::fs::write(path, pcap).unwrap();
}

/// nfdump's own table of the same capture (nfpcapd, then nfdump without
/// -N): destination, its port (type.code for ICMP), packets and bytes as
/// it prints them.
fn nfdump_rows(capture: &Path, dir: &Path) -> Vec<(String, String, String)> {
    let flows = dir.join("nfcapd");
    std::fs::create_dir_all(&flows).unwrap();
    let status = rogue_testkit::require("nfpcapd").arg("-r").arg(capture).arg("-w").arg(&flows).output().unwrap();
    assert!(status.status.success(), "nfpcapd: {}", String::from_utf8_lossy(&status.stderr));
    let listed = rogue_testkit::require("nfdump")
        .arg("-R")
        .arg(&flows)
        .args(["-6", "-q", "-o", "fmt:%da|%dp|%pkt|%byt"])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(listed.status.success(), "nfdump: {}", String::from_utf8_lossy(&listed.stderr));
    let text = String::from_utf8(listed.stdout).unwrap();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            (format!("{}:{}", fields[0], fields[1]), fields[2].to_string(), fields[3].to_string())
        })
        .collect()
}

#[test]
fn the_table_scales_counts_and_shows_icmp_type_and_code_as_nfdump_does() {
    let dir = scratch_dir("nfdump-table");
    let capture = dir.join("large.pcap");
    large_flow_and_echoes(&capture);
    let table = flows_of(&capture, "table").stdout;
    let rows = nfdump_rows(&capture, &dir);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().any(|(_, _, bytes)| bytes.ends_with(" M")), "nfdump scaled the large flow: {rows:?}");
    for (destination, packets, bytes) in &rows {
        // rogue brackets IPv6 addresses before the port; nfdump does not.
        let destination = match destination.rsplit_once(':') {
            Some((addr, port)) if addr.contains(':') => format!("[{addr}]:{port}"),
            _ => destination.clone(),
        };
        let line = table.lines().find(|l| l.contains(&format!(" {destination} "))).unwrap_or_else(|| {
            panic!("no row to {destination} in:\n{table}");
        });
        assert!(
            line.contains(&format!(" {packets} ")) && line.contains(&format!(" {bytes} ")),
            "{line} vs {packets} {bytes}"
        );
    }
    // Exact counts stay exact where programs read them.
    let json = flows_of(&capture, "jsonl").stdout;
    assert!(json.contains("\"packets\":1200,\"bytes\":1728000"), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--decapsulate` on a capture: the flows are the ones inside the tunnel,
/// and the summary counts the frames opened.
#[test]
fn a_capture_of_a_mirror_is_metered_inside_its_tunnels_when_asked() {
    let capture = captures_dir().join("tunnels/zeek-vxlan-http.pcap");
    let path = capture.to_str().unwrap();
    let closed = rogue(&["flows", "--pcap", path, "--format", "jsonl"]);
    let opened = rogue(&["flows", "--pcap", path, "--format", "jsonl", "--decapsulate", "gre,vxlan"]);
    assert!(closed.status.success() && opened.status.success(), "{}{}", closed.stderr, opened.stderr);
    let ports = |finished: &Finished| -> Vec<(u64, u64)> {
        finished.json_lines().iter().map(|f| (f["sport"].as_u64().unwrap(), f["dport"].as_u64().unwrap())).collect()
    };
    assert!(ports(&closed).iter().all(|&(_, dport)| dport == 4789 || dport == 0), "{:?}", ports(&closed));
    assert!(ports(&opened).iter().any(|&(sport, dport)| sport == 80 || dport == 80), "{:?}", ports(&opened));
    assert_eq!((closed.summary_number("decapsulated"), opened.summary_number("decapsulated")), (0, 12));
    assert_eq!(closed.summary_number("packets"), opened.summary_number("packets"));
}
