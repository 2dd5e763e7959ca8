//! What rogue has learnt survives what a hostile tester throws at it: a
//! packet stamped years ahead, old captures beside live traffic, a kill or
//! Ctrl-C between storing and evaluating or while reading, a capture cut
//! short then analysed whole, random bytes over the store, typos in file
//! names and mistakes in the configuration. Nothing is lost, wiped or
//! counted twice, and every refusal names what it refused.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    captures_dir,
    dns::Silent,
    pcap_records,
    process::{Finished, ROGUE, Running},
    record_seconds, set_record_seconds,
};
use serde_json::Value;

/// The scenarios' networks, and the vendored SMTP capture's (10.10.1.4 is
/// the client of its two Exim sessions).
const CONFIG: &str = "internal_networks: [192.0.2.0/24, 2001:db8:10::/48, 10.0.0.0/8]\n";

/// The vendored capture of two SMTP sessions from 10.10.1.4 (2009).
fn smtp_capture() -> PathBuf {
    captures_dir().join("zeek-smtp-two-sessions.pcap")
}

/// When the vendored SMTP capture's last packet was taken (RFC 3339).
fn smtp_capture_last_packet() -> String {
    let (_, records) = pcap_records(&smtp_capture());
    let last = records.iter().map(|r| record_seconds(r)).max().unwrap();
    jiff::Timestamp::from_second(last as i64).unwrap().to_string()
}

/// `capture` rewritten into `dir/name` with `change` applied to its records.
fn rewritten(capture: &Path, dir: &Path, name: &str, change: impl FnOnce(&mut Vec<Vec<u8>>)) -> PathBuf {
    let (header, mut records) = pcap_records(capture);
    change(&mut records);
    let path = dir.join(name);
    std::fs::write(&path, [header, records.concat()].concat()).unwrap();
    path
}

/// (host, flows) of every host `rogue hosts` lists.
fn host_flows(workspace: &Workspace) -> Vec<(String, u64)> {
    workspace
        .json(&["hosts", "--format", "jsonl"])
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_string(), h["flows"].as_u64().unwrap()))
        .collect()
}

/// `rogue store sources --format json`.
fn sources(workspace: &Workspace) -> Vec<Value> {
    workspace.json(&["store", "sources", "--format", "jsonl"])
}

/// (type, host, flows) of findings, sorted: what a rerun must reproduce.
fn summary(findings: &[Value]) -> Vec<(String, String, Value)> {
    let mut summary: Vec<_> = findings
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_string(), f["host"].as_str().unwrap().to_string(), f["flows"].clone()))
        .collect();
    summary.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    summary
}

fn assert_fails_with(finished: &Finished, code: i32, text: &str) {
    assert_eq!(finished.status.code(), Some(code), "{}", finished.stderr);
    assert!(finished.stderr.contains(text), "expected {text:?} in:\n{}", finished.stderr);
}

/// One packet stamped 2030 in a capture: before, retention counted back
/// from it and wiped every host bin and flow in the store. Now the packet
/// is rejected (counted, said, never stored) and nothing else changes.
#[test]
fn a_packet_stamped_in_the_future_is_rejected_and_wipes_nothing() {
    let workspace = Workspace::new("future", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    let before = host_flows(&workspace);
    assert!(before.contains(&("192.0.2.77".into(), 840)), "{before:?}");

    let year_2030 = 1_893_456_000;
    let forged = rewritten(&smtp_capture(), &workspace.dir, "forged.pcap", |records| {
        set_record_seconds(&mut records[5], year_2030)
    });
    let finished = workspace.rogue(&["analyze", "--format", "jsonl", "--pcap", forged.to_str().unwrap()]);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("forged.pcap: 1 packet dated 2030-01-01T00:00:00.")
            && finished.stderr.contains("rejected: not stored"),
        "{}",
        finished.stderr
    );
    assert!(finished.stderr.contains("; 1 rejected as dated in the future"), "{}", finished.stderr);

    let after = host_flows(&workspace);
    assert!(after.contains(&("192.0.2.77".into(), 840)), "the 2008 scenario is whole: {after:?}");
    assert!(after.iter().any(|(host, _)| host == "10.10.1.4"), "the forged capture's other packets are stored");
    let forged_source =
        sources(&workspace).into_iter().find(|s| s["name"].as_str().unwrap().ends_with("forged.pcap")).unwrap();
    assert_eq!(forged_source["rejected"], 1);
    let last_real = smtp_capture_last_packet();
    assert_eq!(
        forged_source["last"].as_str().unwrap()[..19],
        last_real[..19],
        "the source ends with its last real packet"
    );
}

/// An analyst's capture of 2008 analysed into a store of current traffic
/// was pruned as soon as it was written (retention counted back from the
/// newest data). Captures are now kept whole for the retention after they
/// were analysed, whatever their age, beside everything else.
#[test]
fn an_old_capture_is_kept_beside_current_traffic() {
    let workspace = Workspace::new("old-and-new", CONFIG, &example_whitelist());
    let now = jiff::Timestamp::now().as_second() as u32;
    let current = rewritten(&smtp_capture(), &workspace.dir, "yesterday.pcap", |records| {
        let shift = now - 86_400 - record_seconds(&records[0]);
        for record in records.iter_mut() {
            let seconds = record_seconds(record);
            set_record_seconds(record, seconds + shift);
        }
    });
    workspace.analyze(&[&current]);
    workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    let hosts = host_flows(&workspace);
    assert!(hosts.contains(&("192.0.2.77".into(), 840)), "the 2008 capture is kept: {hosts:?}");
    assert!(hosts.iter().any(|(host, _)| host == "10.10.1.4"), "and yesterday's traffic: {hosts:?}");
}

/// `rogue analyze` as a user runs it, with DNS asked of `dns` (a server
/// that never answers: the lookups take their full timeout).
fn analyze_with_silent_dns(workspace: &Workspace, dns: &Silent, capture: &Path) -> Running {
    std::fs::write(workspace.config(), format!("{CONFIG}dns: {{servers: [\"{}\"], timeout_ms: 30000}}\n", dns.addr))
        .unwrap();
    let mut command = Command::new(ROGUE);
    command.args(["-v", "analyze", "--format", "jsonl", "--config"]).arg(workspace.config()).arg("--pcap").arg(capture);
    Running::spawn(command)
}

/// kill -9 after the traffic is stored and before its findings are: the
/// rerun was refused as "already in the store" and the findings were lost
/// for good. Now the rerun evaluates what was stored, reading nothing again.
#[test]
fn a_kill_between_storing_and_evaluating_is_evaluated_by_the_next_run() {
    let capture = scenario_capture("misconfiguration", 1);
    let fresh = Workspace::new("kill-fresh", CONFIG, &example_whitelist());
    let expected = summary(&fresh.analyze(&[&capture]));

    let workspace = Workspace::new("kill", CONFIG, &example_whitelist());
    let dns = Silent::bind();
    let mut analyze = analyze_with_silent_dns(&workspace, &dns, &capture);
    analyze.wait_for_stderr("ingested", 1);
    analyze.signal(libc::SIGKILL);
    analyze.finish();
    let stored = sources(&workspace);
    assert_eq!(stored.len(), 1);
    assert!(!stored[0]["pending_from"].is_null(), "stored, not evaluated: {stored:?}");
    assert!(workspace.json(&["findings", "--format", "jsonl"]).is_empty());

    std::fs::write(workspace.config(), CONFIG).unwrap();
    let rerun = workspace.rogue(&["analyze", "--format", "jsonl", "--pcap", capture.to_str().unwrap()]);
    assert!(rerun.status.success(), "{}", rerun.stderr);
    assert!(rerun.stderr.contains("but its evaluation did not complete; evaluating it now"), "{}", rerun.stderr);
    assert_eq!(summary(&rerun.json_lines()), expected, "the findings a single run gives");
    assert!(sources(&workspace)[0]["pending_from"].is_null());
    assert_eq!(host_flows(&workspace), host_flows(&fresh), "nothing counted twice");

    let third = workspace.rogue(&["analyze", "--pcap", capture.to_str().unwrap()]);
    assert_fails_with(&third, 1, "is already in the store");
}

/// Ctrl-C while DNS is slow: analyze stops at once and says the traffic is
/// stored but not evaluated; `rogue evaluate` finishes the job.
#[test]
fn ctrl_c_during_the_lookups_says_what_was_stored_and_evaluate_finishes() {
    let capture = scenario_capture("vpn-failure", 1);
    let workspace = Workspace::new("interrupt-dns", CONFIG, &example_whitelist());
    let dns = Silent::bind();
    let mut analyze = analyze_with_silent_dns(&workspace, &dns, &capture);
    analyze.wait_for_stderr("ingested", 1);
    let interrupted_at = Instant::now();
    let finished = analyze.interrupt();
    assert!(interrupted_at.elapsed() < Duration::from_secs(5), "it stops at once, not after the 30 s timeout");
    assert_fails_with(
        &finished,
        130,
        "rogue: interrupted during the DNS lookups: the traffic is stored but not evaluated; `rogue evaluate`",
    );
    assert_eq!(sources(&workspace).len(), 1);

    std::fs::write(workspace.config(), CONFIG).unwrap();
    let evaluated = workspace.rogue(&["evaluate", "--format", "jsonl"]);
    assert!(evaluated.status.success(), "{}", evaluated.stderr);
    assert_eq!(summary(&evaluated.json_lines()), [("rogue_server".into(), "192.0.2.77".into(), Value::from(840))]);
    let again = workspace.rogue(&["evaluate"]);
    assert!(again.stderr.contains("is evaluated"), "{}", again.stderr);
}

/// Bytes `pid` has read so far (/proc/PID/io).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Ctrl-C while the capture is read: nothing of it is stored, and it says so.
#[test]
fn ctrl_c_while_reading_stores_nothing() {
    let capture = scenario_capture("all", 1);
    let workspace = Workspace::new("interrupt-read", CONFIG, &example_whitelist());
    let mut command = Command::new(ROGUE);
    command.args(["analyze", "--no-dns", "--config"]).arg(workspace.config()).arg("--pcap").arg(&capture);
    let analyze = Running::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bytes_read(analyze.id()) < 8 << 20 {
        assert!(Instant::now() < deadline, "analyze did not start reading");
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished = analyze.interrupt();
    assert_fails_with(&finished, 130, "rogue: interrupted while reading");
    assert!(finished.stderr.contains("nothing of the 1 file(s) was stored"), "{}", finished.stderr);
    assert!(sources(&workspace).is_empty());
}

/// A capture cut inside a record (an interrupted tcpdump) was stored, and
/// the whole file analysed later counted its packets twice. It is now
/// refused, naming where it is cut, and the whole file counts once.
#[test]
fn a_capture_cut_short_is_refused_and_the_whole_one_counts_once() {
    let capture = scenario_capture("vpn-failure", 1);
    let workspace = Workspace::new("cut", CONFIG, &example_whitelist());
    let bytes = std::fs::read(&capture).unwrap();
    // The record that starts nearest the middle, cut 10 bytes in.
    let mut at = 24;
    while at < bytes.len() / 2 {
        at += 16 + u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    }
    let cut = workspace.dir.join("cut.pcap");
    std::fs::write(&cut, &bytes[..at + 10]).unwrap();
    let refused = workspace.rogue(&["analyze", "--pcap", cut.to_str().unwrap()]);
    assert_fails_with(
        &refused,
        1,
        &format!("cut.pcap is cut short: the file ends inside the packet record at byte {at}"),
    );
    assert!(refused.stderr.contains("nothing of it was stored"), "{}", refused.stderr);
    assert!(sources(&workspace).is_empty());

    let findings = workspace.analyze(&[&capture]);
    assert_eq!(summary(&findings), [("rogue_server".into(), "192.0.2.77".into(), Value::from(840))]);
}

/// Whole pages of random bytes over a store (a failing disk): `rogue hosts`
/// listed 1 of 6 hosts and exited 0. Every command now refuses the store,
/// naming it, and `rogue store check` lists what is wrong.
#[test]
fn a_damaged_store_is_refused_by_every_command_naming_the_file() {
    let workspace = Workspace::new("damaged", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("new-mail-servers", 1)]);
    let store = workspace.dir.join("rogue.db");
    let size = std::fs::metadata(&store).unwrap().len();
    {
        use std::io::{Seek, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&store).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for quarter in 1..4 {
            file.seek(std::io::SeekFrom::Start(size / 4 * quarter / 4096 * 4096)).unwrap();
            let noise: Vec<u8> = (0..4096)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            file.write_all(&noise).unwrap();
        }
    }
    let damaged = format!("store {} is damaged (", store.display());
    let report_dir = workspace.dir.join("report");
    for args in [
        &["hosts"][..],
        &["findings"],
        &["whitelist", "suggest"],
        &["report", "--host", "192.0.2.40", "--out", report_dir.to_str().unwrap()],
        &["evaluate"],
        &["analyze", "--pcap", smtp_capture().to_str().unwrap()],
    ] {
        let finished = workspace.rogue(args);
        assert_fails_with(&finished, 1, &damaged);
        assert!(finished.stdout.is_empty(), "{args:?} printed a partial answer:\n{}", finished.stdout);
    }
    let check = workspace.rogue(&["store", "check", "--full"]);
    assert_eq!(check.status.code(), Some(1), "{}", check.stderr);
}

/// A typo in a store's path gave an empty table (and an empty store);
/// /dev/null got a journal beside it; a missing directory was made.
#[test]
fn only_the_commands_that_gather_traffic_create_a_store() {
    let workspace = Workspace::new("no-store", CONFIG, &example_whitelist());
    let typo = workspace.dir.join("typo.db");
    for args in [
        &["findings"][..],
        &["hosts"],
        &["whitelist", "suggest"],
        &["findings", "ack", "1", "--by", "carol"],
        &["evaluate"],
    ] {
        let mut full = vec!["--db", typo.to_str().unwrap()];
        full.extend_from_slice(args);
        let finished = workspace.rogue(&full);
        assert_fails_with(&finished, 1, &format!("no store at {}", typo.display()));
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    let null = workspace.rogue(&["--db", "/dev/null", "findings"]);
    assert_fails_with(&null, 1, "/dev/null is not a rogue store: it is not a regular file");
    assert!(!Path::new("/dev/null-journal").exists() && !Path::new("/dev/null-wal").exists());

    std::fs::write(workspace.config(), format!("{CONFIG}store: {{path: /nonexistent/dir/x.db}}\n")).unwrap();
    let nowhere = workspace.rogue(&["analyze", "--pcap", smtp_capture().to_str().unwrap()]);
    assert_fails_with(
        &nowhere,
        1,
        "cannot create the store /nonexistent/dir/x.db: the directory /nonexistent/dir does not exist",
    );
    assert!(!Path::new("/nonexistent").exists());
}

/// Mistakes that hid findings silently are errors naming the file, the line
/// and the value; empty names of who decided are bad usage.
#[test]
fn mistakes_in_the_whitelist_and_the_configuration_are_named() {
    let workspace = Workspace::new("mistakes", CONFIG, &example_whitelist());
    let capture = smtp_capture();
    let capture = capture.to_str().unwrap();
    let whitelist = workspace.dir.join("whitelist.yaml");

    std::fs::remove_file(&whitelist).unwrap();
    let missing = workspace.rogue(&["analyze", "--pcap", capture]);
    assert_fails_with(&missing, 1, &format!("the whitelist {} does not exist", whitelist.display()));

    std::fs::write(&whitelist, "- address: 192.0.2.25\n- address: 192.0.2.26\n  service: smpt\n").unwrap();
    let service = workspace.rogue(&["analyze", "--pcap", capture]);
    assert_fails_with(
        &service,
        1,
        &format!("{}: line 2: service \"smpt\" is not a configured service (smtp)", whitelist.display()),
    );

    std::fs::write(&whitelist, "- address: 0.0.0.0/0\n").unwrap();
    let everything = workspace.rogue(&["analyze", "--pcap", capture]);
    assert_fails_with(&everything, 1, "line 1: 0.0.0.0/0 covers every IPv4 address");

    std::fs::write(&whitelist, "").unwrap();
    let add = workspace.rogue(&["whitelist", "add", "::/0", "--by", "alice"]);
    assert_fails_with(&add, 1, "::/0 covers every IPv6 address");
    let forced = workspace.rogue(&["whitelist", "add", "::/0", "--by", "alice", "--force"]);
    assert!(forced.status.success(), "{}", forced.stderr);

    for args in [
        &["whitelist", "add", "192.0.2.5", "--by", ""][..],
        &["whitelist", "reject", "192.0.2.5", "--by", "alice", "--reason", ""],
        &["whitelist", "accept", "192.0.2.5", "--by", " ", "--reason", "checked"],
    ] {
        assert_fails_with(&workspace.rogue(args), 2, "must not be empty");
    }

    std::fs::write(workspace.config(), format!("{CONFIG}services:\n  smtp:\n    mail_share_threshold: 7.5\n")).unwrap();
    let share = workspace.rogue(&["analyze", "--pcap", capture]);
    assert_fails_with(
        &share,
        1,
        "services.smtp.mail_share_threshold: 7.5 is a share, at most 1 (0.85 is 85%) at line 4",
    );
    std::fs::write(workspace.config(), format!("{CONFIG}dns:\n  max_ttl_seconds: 60\n  min_ttl_seconds: 600\n"))
        .unwrap();
    let ttl = workspace.rogue(&["analyze", "--pcap", capture]);
    assert_fails_with(&ttl, 1, "dns.min_ttl_seconds: 600 is more than dns.max_ttl_seconds (60) at line 4");
}
