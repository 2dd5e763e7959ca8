//! `cargo xtask demo`: rogue on a gateway, for a newcomer without one.
//!
//! Builds a small organisation in network namespaces (tests/support/mailnet.rs):
//! an internal network with its whitelisted MX and a mail server nobody
//! registered, a gateway running `rogue agent` on both of its interfaces,
//! and the Internet with senders and 75 mail servers. Real SMTP sessions
//! (swaks to aiosmtpd) cross the gateway; the findings are printed as the
//! agent emits them; a report is written for the rogue host; everything is
//! removed at the end. It runs as a test target without the test harness, so
//! `cargo xtask test` runs it too and fails if the demo stops finding.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use rogue_testkit::{
    mailnet::{MISCONFIGURED, MX, MailNet, ROGUE_SERVER, SENDER, Side, WORKSTATION, external_servers},
    process::{ROGUE, Running},
};
use serde_json::Value;

const EVALUATE_SECONDS: u64 = 5;

fn main() -> ExitCode {
    if !rogue_testkit::is_root() && std::env::var_os("ROGUE_TESTS_REQUIRE_ROOT").is_none() {
        eprintln!("demo: skipped, needs root (network namespaces and XDP): `cargo xtask demo` runs it as root");
        return ExitCode::SUCCESS;
    }
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("demo: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Clock(Instant);

impl Clock {
    fn say(&self, text: &str) {
        println!("[{:5.1} s] {text}", self.0.elapsed().as_secs_f64());
    }
}

fn demo() -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/demo/live");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    let clock = Clock(Instant::now());
    println!("rogue demo: a gateway between an internal network and the Internet, in network namespaces");
    println!("  internal 192.0.2.0/24: MX {MX} (on the whitelist), {ROGUE_SERVER} (a mail server nobody registered),");
    println!("                         workstation {WORKSTATION}, {MISCONFIGURED} (a host about to misbehave)");
    println!("  Internet: a sender {SENDER}, mail servers 203.0.113.1 to .75");
    println!("  SMTP: aiosmtpd servers, swaks clients; rogue agent on the gateway's gw-in and gw-out\n");
    let net = MailNet::start();
    clock.say("network up, SMTP servers listening");

    write_config(&dir)?;
    let mut command = net.gateway.command(ROGUE);
    command.args(["agent", "--no-dns", "-v", "--config"]).arg(dir.join("rogue.yaml"));
    let mut agent = Running::spawn(command);
    agent.wait_for_stderr("agent running", 1);
    clock.say(&format!(
        "rogue agent running on the gateway (XDP on gw-in and gw-out; evaluates every {EVALUATE_SECONDS} s; \
         findings to {})",
        dir.join("findings.jsonl").display()
    ));

    clock.say(&format!("the Internet delivers mail to the MX {MX}"));
    net.send_mail(Side::External, SENDER, MX);
    clock.say(&format!("the MX {MX} delivers mail to 203.0.113.1"));
    net.send_mail(Side::Internal, MX, "203.0.113.1");
    clock.say(&format!("the Internet delivers mail to {ROGUE_SERVER}, which no one registered"));
    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    net.send_mail(Side::External, SENDER, ROGUE_SERVER);
    clock.say(&format!("{MISCONFIGURED} sends mail straight to 75 mail servers on the Internet"));
    net.send_mail_to_all(Side::Internal, MISCONFIGURED, &external_servers());
    clock.say("waiting for the flows to complete and the agent to evaluate ...");

    let wanted = [("rogue_server", ROGUE_SERVER), ("rogue_server", MISCONFIGURED), ("fanout_burst", MISCONFIGURED)];
    let mut shown = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = events(&dir.join("findings.jsonl"));
        for event in &events[shown..] {
            clock.say(&format!("finding: {}", describe(event)));
        }
        shown = events.len();
        let found = |(kind, host): &(&str, &str)| events.iter().any(|e| e["kind"] == *kind && e["host"] == *host);
        if wanted.iter().all(found) {
            if events.iter().any(|e| e["host"] == MX) {
                return Err(format!("the whitelisted MX {MX} got a finding"));
            }
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not every expected finding came out within 60 s: {events:#?}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    let emitted = events(&dir.join("findings.jsonl"));
    if !emitted.iter().any(|e| e["kind"] == "fanout_burst" && e["peers"] == 75) {
        wait_for_the_whole_burst(&dir, &clock, deadline)?;
    }

    agent.signal(libc::SIGTERM);
    let finished = agent.finish();
    if !finished.status.success() {
        return Err(format!("the agent failed:\n{}", finished.stderr));
    }
    clock.say("agent stopped (flows stored, XDP detached)");
    let report = dir.join(format!("report-{ROGUE_SERVER}"));
    let written = std::process::Command::new(ROGUE)
        .args(["report", "--no-dns", "--host", ROGUE_SERVER, "--config"])
        .arg(dir.join("rogue.yaml"))
        .arg("--out")
        .arg(&report)
        .output()
        .map_err(|e| e.to_string())?;
    if !written.status.success() {
        return Err(format!("rogue report failed:\n{}", String::from_utf8_lossy(&written.stderr)));
    }
    clock.say(&format!("report for {ROGUE_SERVER}: {}", report.join("index.html").display()));
    drop(net);
    clock.say("namespaces removed");
    println!(
        "\nNext: `{ROGUE} findings --config {0}` (or hosts, whitelist suggest);\n\
         on a real gateway: `rogue agent --config /etc/rogue/rogue.yaml --iface eth0 --iface eth1` (see README).",
        dir.join("rogue.yaml").display()
    );
    Ok(())
}

fn write_config(dir: &Path) -> Result<(), String> {
    let config = format!(
        "# Written by the demo (tests/demo.rs).\n\
         internal_networks: [192.0.2.0/24]\n\
         interfaces: [gw-in, gw-out]\n\
         detection: {{evaluate_seconds: {EVALUATE_SECONDS}}}\n\
         capture: {{drain_seconds: 1, idle_timeout_seconds: 2}}\n\
         output: {{findings: [findings.jsonl]}}\n\
         metrics: {{listen: null}}\n"
    );
    let whitelist = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/whitelist.yaml"))
        .map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| -> Result<(), String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("rogue.yaml", &config)?;
    write("whitelist.yaml", &whitelist)?;
    Ok(())
}

/// A burst is emitted once enough sessions have completed; the stored
/// finding goes on counting until every session's flow has: show it then.
fn wait_for_the_whole_burst(dir: &Path, clock: &Clock, deadline: Instant) -> Result<(), String> {
    loop {
        let output = std::process::Command::new(ROGUE)
            .args(["findings", "--format", "jsonl", "--config"])
            .arg(dir.join("rogue.yaml"))
            .output()
            .map_err(|e| e.to_string())?;
        let stored = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|f: &Value| f["kind"] == "fanout_burst" && f["host"] == MISCONFIGURED);
        if let Some(burst) = stored.filter(|b| b["peers"] == 75) {
            clock.say(&format!("stored: {} (counts that grow are stored, not re-emitted)", describe(&burst)));
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the stored fanout_burst never counted all 75 servers".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn describe(event: &Value) -> String {
    let detail = match event["kind"].as_str() {
        Some("rogue_server") => format!(
            "acts as {}; {} external clients, {} external servers",
            event["roles"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" and "))
                .unwrap_or_default(),
            event["external_clients"],
            event["external_servers"]
        ),
        Some("fanout_burst") => {
            format!("{} external mail servers within {} s", event["peers"], event["window_seconds"])
        }
        _ => event.to_string(),
    };
    format!(
        "{} {} ({}): {detail}",
        event["kind"].as_str().unwrap_or("?"),
        event["host"].as_str().unwrap_or("?"),
        event["status"].as_str().unwrap_or("?")
    )
}
