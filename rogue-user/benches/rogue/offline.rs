//! Offline speed: one generated capture of over 10 million packets (the
//! method's cases over a scaled background of mail, web, IMAP, submission
//! and DNS between hundreds of hosts) read by `rogue flows`, `rogue
//! analyze` and the other flow tools Debian has that read pcap files, each
//! run on the same file in the same session (scaling.rs has how they grow).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::measure::{Run, Table, median_run, mib, millions};
use rogue_testkit::process::ROGUE;

const RUNS: usize = 3;
/// The offline capture: the method's cases over 56 times the background,
/// just over 10 million packets.
pub const OFFLINE_SCALE: u32 = 56;
/// Workstations per unit of scale, as the scaling bench's base has them.
const WORKSTATIONS_PER_SCALE: u32 = 50;
pub const OFFLINE_WORKSTATIONS: u32 = OFFLINE_SCALE * WORKSTATIONS_PER_SCALE;

pub struct Capture {
    pub path: PathBuf,
    pub packets: u64,
}

/// `rogue generate` into `dir`; the frame count from its report.
pub fn generate(dir: &Path, name: &str, scenario: &str, scale: u32, workstations: u32) -> Capture {
    let path = dir.join(format!("{name}.pcap"));
    let output = Command::new(ROGUE)
        .args(["generate", "--scenario", scenario, "--scale", &scale.to_string()])
        .args(["--workstations", &workstations.to_string(), "--out"])
        .arg(&path)
        .output()
        .expect("rogue generate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = String::from_utf8_lossy(&output.stderr);
    let packets = report
        .split_whitespace()
        .skip_while(|w| *w != "wrote")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in {report:?}"));
    Capture { path, packets }
}

const NETWORKS: &str = "internal_networks: [192.0.2.0/24, 10.0.0.0/8, 2001:db8:10::/48]\n";

fn config(dir: &Path) -> PathBuf {
    config_with(dir, "offline.yaml", "")
}

/// A configuration named `name` in `dir`: the networks, then `more`.
fn config_with(dir: &Path, name: &str, more: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{NETWORKS}{more}")).unwrap();
    std::fs::write(dir.join("whitelist.yaml"), "[]\n").unwrap();
    path
}

fn quiet(mut command: Command) -> Command {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

pub fn rogue_flows(capture: &Path) -> Command {
    let mut command = quiet(Command::new(ROGUE));
    command.args(["-q", "flows", "--format", "csv", "--pcap"]).arg(capture);
    command
}

/// `rogue analyze` into a fresh store each time.
pub fn rogue_analyze(dir: &Path, capture: &Path) -> Command {
    analyze_with(dir, &config(dir), capture)
}

fn analyze_with(dir: &Path, config: &Path, capture: &Path) -> Command {
    let store = dir.join("offline.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let mut command = quiet(Command::new(ROGUE));
    command.args(["-q", "analyze", "--no-dns", "--format", "jsonl", "--config"]).arg(config);
    command.arg("--db").arg(&store).arg("--pcap").arg(capture);
    command
}

/// The flows rogue makes of `capture`, from the summary `rogue flows` prints.
fn flows_of(capture: &Path) -> u64 {
    let output =
        Command::new(ROGUE).args(["flows", "--format", "none", "--pcap"]).arg(capture).output().expect("rogue flows");
    let summary = String::from_utf8_lossy(&output.stderr);
    summary
        .lines()
        .find_map(|line| line.strip_prefix("# flows")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no flow count in {summary:?}"))
}

/// The other tools, each reading the capture into its own flow output.
type Peer = (&'static str, &'static str, Box<dyn Fn() -> Command>);

fn peers(dir: &Path, capture: &Path) -> Vec<Peer> {
    let reading = |program: &str, args: &[&str]| {
        let mut command = quiet(Command::new(program));
        command.args(args).arg(capture);
        command
    };
    let (tshark, nfpcapd, argus, softflowd) = (
        reading("tshark", &["-q", "-z", "conv,tcp", "-r"]),
        reading("nfpcapd", &["-r"]),
        reading("argus", &["-r"]),
        reading("softflowd", &["-r"]),
    );
    let (nfpcapd_out, argus_out) = (dir.join("nfpcapd"), dir.join("offline.argus"));
    vec![
        ("tshark -q -z conv,tcp", "tshark", Box::new(move || clone(&tshark))),
        (
            "nfpcapd -r (nfdump 1.7)",
            "nfpcapd",
            Box::new(move || {
                let _ = std::fs::remove_dir_all(&nfpcapd_out);
                std::fs::create_dir_all(&nfpcapd_out).unwrap();
                let mut command = clone(&nfpcapd);
                command.arg("-w").arg(&nfpcapd_out);
                command
            }),
        ),
        (
            "argus -r",
            "argus",
            Box::new(move || {
                let _ = std::fs::remove_file(&argus_out);
                let mut command = clone(&argus);
                command.arg("-w").arg(&argus_out);
                command
            }),
        ),
        (
            "softflowd -r (NetFlow to a closed port)",
            "softflowd",
            Box::new(move || {
                let mut command = clone(&softflowd);
                command.args(["-n", "127.0.0.1:9"]);
                command
            }),
        ),
    ]
}

/// A fresh command with the program and arguments of `command`.
fn clone(command: &Command) -> Command {
    let mut copy = quiet(Command::new(command.get_program()));
    copy.args(command.get_args());
    copy
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn row(table: &mut Table, name: &str, packets: u64, run: &Run, reference: f64) {
    let rate = packets as f64 / run.wall.as_secs_f64();
    table.row(&[
        name.to_string(),
        format!("{:.2}", run.wall.as_secs_f64()),
        millions(rate),
        format!("{:.2}", rate / reference),
        mib(run.max_rss),
    ]);
}

pub fn run(dir: &Path) -> String {
    let capture = generate(dir, "offline", "all", OFFLINE_SCALE, OFFLINE_SCALE * WORKSTATIONS_PER_SCALE);
    let table = every_tool(dir, &capture, RUNS);
    let size = File::open(&capture.path).unwrap().metadata().unwrap().len();
    format!(
        "{table}\nOne capture of {} packets ({:.2} GB, {} workstations, the method's three cases inside), read from \
         the page cache; medians of {RUNS} runs; peak RSS from wait4(2). Every tool writes its flows (rogue flows \
         as CSV to /dev/null, nfpcapd and argus to files, softflowd to a NetFlow collector address); rogue analyze \
         also profiles, stores and evaluates. Targets: rogue flows faster than every other tool and at least 5 \
         million packets/s; rogue analyze at least half of rogue flows.\n",
        capture.packets,
        size as f64 / 1e9,
        OFFLINE_SCALE * WORKSTATIONS_PER_SCALE
    )
}

/// `rogue flows`, `rogue analyze` and every peer installed on `capture`,
/// side by side, as a table.
fn every_tool(dir: &Path, capture: &Capture, runs: usize) -> String {
    let flows = median_run(runs, || rogue_flows(&capture.path));
    let reference = capture.packets as f64 / flows.wall.as_secs_f64();
    let mut table = Table::new(&["tool", "seconds", "million packets/s", "vs rogue flows", "peak RSS (MiB)"]);
    row(&mut table, "rogue flows --pcap", capture.packets, &flows, reference);
    let analyze = median_run(runs, || rogue_analyze(dir, &capture.path));
    row(&mut table, "rogue analyze --pcap (into SQLite)", capture.packets, &analyze, reference);
    for (name, program, command) in peers(dir, &capture.path) {
        if installed(program) {
            let run = median_run(runs, &command);
            row(&mut table, name, capture.packets, &run, reference);
        } else {
            table.row(&[name.to_string(), "not installed".into(), String::new(), String::new(), String::new()]);
        }
    }
    table.into_string()
}

/// The churn capture: the short flows of a busy gateway, at this scale
/// (`rogue generate --scenario churn`).
const CHURN_SCALE: u32 = 4;
/// Runs of each tool on it: its runs are short (a fraction of a second),
/// so the machine's moments weigh more on each; more of them steady the
/// median.
const CHURN_RUNS: usize = 7;
const CHURN_WORKSTATIONS: u32 = 5_000;

/// Where the work grows with flows rather than packets: many short
/// conversations at once.
pub fn churn(dir: &Path) -> String {
    let capture = generate(dir, "churn", "churn", CHURN_SCALE, CHURN_WORKSTATIONS);
    let flows = flows_of(&capture.path);
    let table = every_tool(dir, &capture, CHURN_RUNS);
    let _ = std::fs::remove_file(&capture.path);
    format!(
        "{table}\nOne capture of {} packets in {flows} flows ({:.1} packets a flow), {CHURN_WORKSTATIONS} \
         workstations making short web requests and DNS queries within ten minutes, so tens of thousands of flows \
         are open at once; medians of {CHURN_RUNS} runs, as above. Targets (issue 17): rogue flows at least 5 million \
         packets/s and 3 times the best other tool.\n",
        capture.packets,
        capture.packets as f64 / flows as f64,
    )
}

/// The `services` capture: the background at this scale, with the rogue
/// DNS, NTP, DHCP, SSH and RDP servers and their traps.
const SERVICES_SCALE: u32 = 24;

/// What defining more services costs: `rogue analyze` of one capture with
/// SMTP alone and with all six services rogue ships, per packet and per
/// flow. The XDP meter knows no service (it counts every flow), so its cost
/// per packet does not change with them.
pub fn services(dir: &Path) -> String {
    let capture = generate(dir, "services", "services", SERVICES_SCALE, SERVICES_SCALE * WORKSTATIONS_PER_SCALE);
    let flows = flows_of(&capture.path);
    let all = "services: {smtp: {}, dns: {}, ntp: {}, dhcp: {}, ssh: {}, rdp: {}}\n";
    let configs =
        [("SMTP alone", config_with(dir, "smtp.yaml", "")), ("six services", config_with(dir, "six.yaml", all))];
    let mut table = Table::new(&[
        "services defined",
        "seconds",
        "million packets/s",
        "ns per packet",
        "ns per flow",
        "vs SMTP alone",
    ]);
    let mut reference = None;
    for (name, config) in &configs {
        let run = median_run(RUNS, || analyze_with(dir, config, &capture.path));
        let seconds = run.wall.as_secs_f64();
        let baseline = *reference.get_or_insert(seconds);
        table.row(&[
            name.to_string(),
            format!("{seconds:.2}"),
            millions(capture.packets as f64 / seconds),
            format!("{:.0}", seconds * 1e9 / capture.packets as f64),
            format!("{:.0}", seconds * 1e9 / flows as f64),
            format!("{:.2}", seconds / baseline),
        ]);
    }
    let _ = std::fs::remove_file(&capture.path);
    format!(
        "{}\nOne capture of {} packets and {flows} flows (`rogue generate --scenario services --scale \
         {SERVICES_SCALE}`), analysed into a fresh store; medians of {RUNS} runs. The XDP meter knows no service: \
         its cost per packet (above) is the same whatever is defined. Target: six services cost at most 1.25 times \
         SMTP alone.\n",
        table.into_string(),
        capture.packets,
    )
}
