//! One output convention for every listing command: `--format
//! table|json|jsonl|csv` carrying the same records, JSON lines when piped,
//! a closed pipe ending a command quietly, and times as people type them.

use std::{
    io::Read,
    process::{Command, Stdio},
};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    captures_dir,
    process::{Finished, ROGUE},
};
use serde_json::Value;

const CONFIG: &str = "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nmetrics: {listen: null}\n";

/// A workspace holding the analysis of the method's three cases.
fn analysed(name: &str) -> Workspace {
    let workspace = Workspace::new(name, CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("all", 1)]);
    workspace
}

fn listings(capture: &str) -> Vec<Vec<String>> {
    [
        &["hosts", "--peers"][..],
        &["findings"],
        &["whitelist", "list"],
        &["whitelist", "suggest"],
        &["store", "sources"],
        &["evaluate"],
        &["flows", "--pcap", capture],
    ]
    .iter()
    .map(|args| args.iter().map(|a| a.to_string()).collect())
    .collect()
}

fn run(workspace: &Workspace, args: &[String], format: Option<&str>) -> Finished {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(format) = format {
        args.extend(["--format", format]);
    }
    let finished = if args[0] == "flows" {
        Finished::from(Command::new(ROGUE).args(&args).output().unwrap())
    } else {
        workspace.rogue(&args)
    };
    assert!(finished.status.success(), "{args:?}: {}", finished.stderr);
    finished
}

#[test]
fn every_listing_gives_the_same_records_in_json_jsonl_and_csv_and_jsonl_when_piped() {
    let workspace = analysed("formats");
    let capture = scenario_capture("misconfiguration", 1).display().to_string();
    for args in listings(&capture) {
        let piped = run(&workspace, &args, None).stdout;
        let jsonl = run(&workspace, &args, Some("jsonl")).stdout;
        assert_eq!(piped, jsonl, "{args:?}: piped output is JSON lines");
        let records: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let array: Value = serde_json::from_str(&run(&workspace, &args, Some("json")).stdout).unwrap();
        assert_eq!(array, Value::Array(records.clone()), "{args:?}: json is one array of the same records");
        let csv = run(&workspace, &args, Some("csv")).stdout;
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let header = reader.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), records.len(), "{args:?}: a csv row per record");
        // Each column that is a field of the record holds its value.
        for (row, record) in rows.iter().zip(&records) {
            for (column, text) in header.iter().zip(row.iter()) {
                let expected = match &record[column] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if column != "details" {
                    assert_eq!(text, expected, "{args:?}: column {column}");
                }
            }
        }
        let table = run(&workspace, &args, Some("table")).stdout;
        assert!(!table.trim_start().starts_with(['{', '[']), "{args:?}: the table is not JSON");
    }
    // Something was listed by each, or the comparisons above compared nothing.
    assert!(!workspace.rogue(&["findings", "--format", "jsonl"]).stdout.is_empty());
}

/// `rogue ... | head -0`: the reader is gone before rogue writes.
fn into_closed_pipe(command: &mut Command) -> Finished {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = command.stdout(Stdio::from(writer)).stderr(Stdio::piped()).spawn().unwrap();
    let output = child.wait_with_output().unwrap();
    Finished::from(output)
}

#[test]
fn a_closed_pipe_ends_every_command_quietly_with_success() {
    let workspace = analysed("closed-pipe");
    let capture = captures_dir().join("zeek-smtp-two-sessions.pcap").display().to_string();
    let mut commands = listings(&capture);
    commands.extend(
        [
            &["whitelist", "calibrate"][..],
            &["completions", "bash"],
            &["man"],
            &["config", "check", "--print"],
            &["flows", "--pcap", &capture, "--format", "table"],
            &["hosts", "--format", "csv"],
        ]
        .iter()
        .map(|args| args.iter().map(|a| a.to_string()).collect()),
    );
    for args in commands {
        let mut command = Command::new(ROGUE);
        command.args(&args);
        if args[0] != "flows" && !["completions", "man"].contains(&args[0].as_str()) {
            command.arg("--config").arg(workspace.config()).env("ROGUE_NO_DNS", "1");
        }
        let finished = into_closed_pipe(&mut command);
        assert_eq!(finished.status.code(), Some(0), "{args:?}: {}", finished.stderr);
        let complaints: Vec<&str> = finished
            .stderr
            .lines()
            .filter(|l| l.contains("error") || l.contains("panicked") || l.contains("Broken pipe"))
            .collect();
        assert!(complaints.is_empty(), "{args:?} complained: {complaints:?}");
    }
}

#[test]
fn times_are_taken_as_people_type_them() {
    let workspace = analysed("times");
    let all = workspace.json(&["findings", "--format", "jsonl"]);
    assert_eq!(all.len(), 7);
    let count = |since: &str| workspace.json(&["findings", "--since", since, "--format", "jsonl"]).len();
    // The scenarios are of 2008: relative times reach back to them or not.
    assert_eq!(count("2008-03-01"), 2);
    assert_eq!(count("2008-03-01 00:00"), 2);
    assert_eq!(count("2008-03-01T00:00:00+00:00"), 2);
    assert_eq!(count("-7000d"), 7);
    assert_eq!(count("7000d ago"), 7);
    assert_eq!(count("yesterday"), 0);
    assert_eq!(count("today"), 0);
    let wrong = workspace.rogue(&["findings", "--since", "last tuesday"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        wrong.stderr.contains(
            "invalid value 'last tuesday' for '--since <TIME>': \"last tuesday\" is not a time (try 2008-02-20, \
             2008-02-20T13:05:00Z, yesterday or -1h)"
        ),
        "{}",
        wrong.stderr
    );
    let mut help = String::new();
    Command::new(ROGUE)
        .args(["findings", "--help"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
        .stdout
        .unwrap()
        .read_to_string(&mut help)
        .unwrap();
    assert!(help.contains("relative to now (-1h, 2d, 30m ago)"), "{help}");
}
