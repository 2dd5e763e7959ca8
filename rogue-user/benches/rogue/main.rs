//! `cargo xtask bench`: every benchmark of issue 7 in one run, written to
//! BENCHMARKS.md with the machine it ran on. Figures are medians of several
//! runs; every comparison is a ratio measured side by side in this run.
//! Needs root (BPF, network namespaces). `cargo bench --bench rogue -- kernel
//! drain` runs only the sections named and writes nothing.

mod agent;
mod clickhouse;
mod collector;
mod console;
mod drain;
mod exporters;
mod kernel;
mod measure;
mod offline;
mod scaling;
mod veth;

use std::path::{Path, PathBuf};

const SECTIONS: [(&str, &str); 12] = [
    ("kernel", "Kernel program cost per packet"),
    ("veth", "veth throughput"),
    ("drain", "Draining the flow maps"),
    ("offline", "Offline: one 10-million-packet capture, every tool"),
    ("churn", "Short flows: a busy gateway's churn, every tool"),
    ("scaling", "Scaling: time and memory as packets and hosts grow"),
    ("services", "Services beyond mail: one defined against six"),
    ("agent", "The agent under load"),
    ("collector", "The collector on loopback"),
    ("exporters", "The collector under a flood of exporters"),
    ("clickhouse", "Flows into ClickHouse beside SQLite"),
    ("console", "The console: page render times"),
];

fn main() {
    let chosen: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    for name in &chosen {
        assert!(SECTIONS.iter().any(|(s, _)| s == name), "no section {name:?}; the sections are {SECTIONS:?}");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    if let [name] = chosen.as_slice()
        && std::env::var_os(CHILD).is_some()
    {
        print!("{}", section(name, &dir));
        return;
    }
    let mut document = format!("# rogue benchmarks\n\n{}\n", machine());
    for (name, title) in SECTIONS {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == name) {
            continue;
        }
        eprintln!("bench: {title} ...");
        let text = in_child(name);
        println!("## {title}\n\n{text}");
        document += &format!("\n## {title}\n\n{text}");
    }
    if chosen.is_empty() {
        let path: PathBuf = root.join("BENCHMARKS.md");
        std::fs::write(&path, document).unwrap();
        std::fs::copy(dir.join(scaling::PLOT), root.join(scaling::PLOT)).unwrap();
        eprintln!("bench: wrote {}", path.display());
    }
}

/// Set in the environment of the process that runs one section.
const CHILD: &str = "ROGUE_BENCH_SECTION";

/// Runs one section in a fresh process of this benchmark: what one section
/// leaves behind (memory, maps, namespaces) cannot weigh on the next, and
/// the peak memory wait4(2) reports for a tool it starts is the tool's (a
/// child's peak starts at its parent's size when it forks).
fn in_child(name: &str) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(name)
        .env(CHILD, "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "the {name} section failed");
    String::from_utf8(output.stdout).unwrap()
}

fn section(name: &str, dir: &Path) -> String {
    match name {
        "kernel" => kernel::run(),
        "veth" => veth::run(),
        "drain" => drain::run(),
        "offline" => offline::run(dir),
        "churn" => offline::churn(dir),
        "scaling" => scaling::run(dir, &dir.join(scaling::PLOT)),
        "services" => offline::services(dir),
        "agent" => agent::run(dir),
        "collector" => collector::run(dir),
        "exporters" => exporters::run(dir),
        "clickhouse" => clickhouse::run(dir),
        "console" => console::run(dir),
        _ => unreachable!("checked in main"),
    }
}

/// The machine, kernel and date, so a reader can compare like with like.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib / (1 << 20) as f64));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "| machine | |\n| --- | --- |\n| CPU | {} x {} |\n| memory | {memory} |\n| kernel | {} |\n| date | {} |\n\
         | rogue | {} ({}) |\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        model.unwrap_or("?"),
        kernel.trim(),
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        env!("CARGO_PKG_VERSION"),
        git_revision()
    )
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown revision".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}
