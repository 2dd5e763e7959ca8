//! rogue as a system tool: the Debian package installed and purged, the
//! configuration found where the FHS puts it, a store alone answering the
//! query commands, `rogue config check`, and what a service tells systemd
//! (the notify protocol) and the journal.

use std::{
    collections::BTreeSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    netns::{Netns, veth},
    process::{Finished, ROGUE, Running},
    require,
    systemd::NotifySocket,
};

/// Held by the tests that need /etc/rogue/rogue.yaml absent, and by the one
/// that installs the package (which puts it there for a while).
static SYSTEM_CONFIG: Mutex<()> = Mutex::new(());

const SYSTEM_CONFIG_FILE: &str = "/etc/rogue/rogue.yaml";

const CONFIG: &str = "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\nmetrics: {listen: null}\n";

/// `rogue ARGS` run in `dir` with no configuration named (no -c, no
/// ROGUE_CONFIG) and no DNS.
fn rogue_in(dir: &Path, args: &[&str]) -> Finished {
    let mut command = Command::new(ROGUE);
    command.args(args).current_dir(dir).env_remove("ROGUE_CONFIG").env("ROGUE_NO_DNS", "1");
    command.output().unwrap().into()
}

fn lock_system_config() -> std::sync::MutexGuard<'static, ()> {
    let guard = SYSTEM_CONFIG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(
        !Path::new(SYSTEM_CONFIG_FILE).exists(),
        "{SYSTEM_CONFIG_FILE} exists on this machine: this test needs a machine without rogue installed"
    );
    guard
}

/// A directory of the test's own, removed when it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rogue-install-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn without_a_configuration_rogue_names_every_place_it_looked_and_finds_the_one_here() {
    let _lock = lock_system_config();
    let empty = Scratch::new("no-config");
    let missing = rogue_in(&empty.0, &["hosts"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        missing.stderr,
        "rogue: error: no configuration file: tried rogue.yaml, /etc/rogue/rogue.yaml; give one with -c FILE or \
         ROGUE_CONFIG (an example is config/rogue.yaml, or /usr/share/doc/rogue/examples/rogue.yaml where the \
         package is installed)\n"
    );

    // ./rogue.yaml is found, and its relative store path is beside it.
    let workspace = Workspace::new("config-here", CONFIG, &example_whitelist());
    let capture = scenario_capture("misconfiguration", 1);
    let analyzed = rogue_in(&workspace.dir, &["analyze", "--format", "jsonl", "--pcap", capture.to_str().unwrap()]);
    assert!(analyzed.status.success(), "{}", analyzed.stderr);
    assert!(workspace.dir.join("rogue.db").is_file());
    let here = rogue_in(&workspace.dir, &["findings", "--format", "jsonl"]);
    assert_eq!(here.stdout.lines().count(), 2, "{}", here.stdout);
    // ROGUE_CONFIG names it from anywhere, and -c wins over it.
    let mut by_variable = Command::new(ROGUE);
    by_variable.args(["findings", "--format", "jsonl"]).current_dir(&empty.0).env("ROGUE_CONFIG", workspace.config());
    let by_variable = Finished::from(by_variable.output().unwrap());
    assert!(by_variable.status.success(), "{}", by_variable.stderr);
    assert_eq!(by_variable.stdout, here.stdout);
    let mut explicit = Command::new(ROGUE);
    explicit.args(["findings", "-c"]).arg(workspace.config()).env("ROGUE_CONFIG", "/nonexistent/rogue.yaml");
    assert!(explicit.output().unwrap().status.success());
    let mut wrong = Command::new(ROGUE);
    wrong.args(["findings"]).env("ROGUE_CONFIG", "/nonexistent/rogue.yaml");
    let wrong = Finished::from(wrong.output().unwrap());
    assert_eq!(
        wrong.stderr,
        "rogue: error: cannot read /nonexistent/rogue.yaml: No such file or directory (os error 2)\n"
    );
}

/// A gateway's store copied to a laptop: `--db` alone answers as the
/// gateway would, with the settings the store was evaluated with.
#[test]
fn a_store_alone_answers_every_query_command_as_it_was_evaluated() {
    let _lock = lock_system_config();
    let workspace = Workspace::new("db-alone", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("all", 1)]);
    let laptop = Scratch::new("laptop");
    let store = laptop.0.join("gateway.db");
    std::fs::copy(workspace.dir.join("rogue.db"), &store).unwrap();
    let db = store.to_str().unwrap();
    for query in [
        &["hosts", "--peers", "--format", "jsonl"][..],
        &["findings", "--format", "jsonl"],
        &["whitelist", "list", "--format", "jsonl"],
        &["whitelist", "suggest", "--format", "jsonl"],
        &["whitelist", "calibrate", "--format", "jsonl"],
        &["store", "sources", "--format", "jsonl"],
    ] {
        let with_config = workspace.rogue(query);
        assert!(with_config.status.success(), "{query:?}: {}", with_config.stderr);
        let mut alone = query.to_vec();
        alone.extend(["--db", db]);
        let alone = rogue_in(&laptop.0, &alone);
        assert!(alone.status.success(), "{query:?} --db alone: {}", alone.stderr);
        let stores_path = |text: &str| text.replace(db, &workspace.dir.join("rogue.db").display().to_string());
        assert_eq!(stores_path(&alone.stdout), with_config.stdout, "{query:?}");
        assert!(!with_config.stdout.is_empty(), "{query:?} printed nothing to compare");
    }
    let findings = workspace.json(&["findings", "--format", "jsonl"]);
    let host = findings[0]["host"].as_str().unwrap();
    let report = rogue_in(&laptop.0, &["report", "--host", host, "--out", "report", "--db", db]);
    assert!(report.status.success(), "{}", report.stderr);
    assert!(laptop.0.join("report/index.html").is_file());
    let check = rogue_in(&laptop.0, &["store", "check", "--db", db]);
    assert_eq!(check.stdout, format!("{db}: ok\n"));

    // Changing the whitelist needs the file the configuration names.
    let add = rogue_in(&laptop.0, &["whitelist", "add", "192.0.2.9", "--by", "bob", "--db", db]);
    assert_eq!(add.status.code(), Some(1));
    assert!(add.stderr.starts_with("rogue: error: no configuration file: tried rogue.yaml"), "{}", add.stderr);

    // A store no evaluation wrote records no settings, and says so.
    let empty_capture = laptop.0.join("empty.pcap");
    let (header, _) = rogue_testkit::pcap_records(&scenario_capture("misconfiguration", 1));
    std::fs::write(&empty_capture, header).unwrap();
    let unevaluated = workspace.dir.join("unevaluated.db");
    let created =
        workspace.rogue(&["analyze", "--db", unevaluated.to_str().unwrap(), "--pcap", empty_capture.to_str().unwrap()]);
    assert!(created.status.success(), "{}", created.stderr);
    let nothing = rogue_in(&laptop.0, &["hosts", "--db", unevaluated.to_str().unwrap()]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        nothing.stderr.starts_with(&format!(
            "rogue: error: {} records no configuration either (no evaluation has written it yet): no configuration \
             file: tried rogue.yaml, /etc/rogue/rogue.yaml",
            unevaluated.display()
        )),
        "{}",
        nothing.stderr
    );
}

#[test]
fn config_check_names_every_problem_with_its_line_and_prints_what_takes_effect() {
    let workspace = Workspace::new("config-check", CONFIG, &example_whitelist());
    let ok = workspace.rogue(&["config", "check"]);
    assert_eq!(ok.status.code(), Some(0), "{}", ok.stderr);
    let dir = workspace.dir.display();
    assert_eq!(ok.stderr, format!("{dir}/rogue.yaml: ok (whitelist {dir}/whitelist.yaml, store {dir}/rogue.db)\n"));

    // --print: the effective settings, themselves a configuration that checks.
    let printed = workspace.rogue(&["config", "check", "--print"]);
    assert!(printed.stdout.contains(&format!("  path: {dir}/rogue.db\n")), "{}", printed.stdout);
    assert!(printed.stdout.contains("    share_threshold: 0.85\n"), "defaults filled in: {}", printed.stdout);
    let elsewhere = Scratch::new("printed");
    std::fs::write(elsewhere.0.join("printed.yaml"), &printed.stdout).unwrap();
    let again = rogue_in(&elsewhere.0, &["config", "check", "--print", "-c", "printed.yaml"]);
    assert_eq!(again.status.code(), Some(0), "{}", again.stderr);
    let body = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again.stdout), body(&printed.stdout), "the printed settings read back the same");

    let broken = "internal_networks: [192.0.2.0/24]\ninterfaces: [nosuch0]\nstore: {path: /nonexistent/dir/x.db}\n\
        dns:\n  max_ttl_seconds: 60\n  min_ttl_seconds: 600\ncapture:\n  idle_timeout_seconds: 600\n  \
        active_timeout_seconds: 60\n";
    std::fs::write(workspace.config(), broken).unwrap();
    std::fs::write(
        workspace.dir.join("whitelist.yaml"),
        "- address: 192.0.2.25\n  service: smpt\n- address: 192.0.2.26\n- address: 0.0.0.0/0\n",
    )
    .unwrap();
    let problems = workspace.rogue(&["config", "check"]);
    assert_eq!(problems.status.code(), Some(1));
    let config = workspace.config();
    let whitelist = workspace.dir.join("whitelist.yaml");
    let expected = [
        format!("{}: dns.min_ttl_seconds: 600 is more than dns.max_ttl_seconds (60) at line 6", config.display()),
        format!("{}: dns.negative_ttl_seconds: 300 is less than dns.min_ttl_seconds (600) at line 4", config.display()),
        format!(
            "{}: capture.active_timeout_seconds: 60 is less than capture.idle_timeout_seconds (600): a flow would \
             end before it could idle at line 9",
            config.display()
        ),
    ];
    let lines: Vec<&str> = problems.stderr.lines().collect();
    assert_eq!(lines, expected, "values that contradict stop the reading, each named");
    // Once the values agree, what the machine lacks is named too.
    let agreeing = broken
        .replace("min_ttl_seconds: 600", "min_ttl_seconds: 5")
        .replace("idle_timeout_seconds: 600", "idle_timeout_seconds: 6");
    std::fs::write(workspace.config(), agreeing).unwrap();
    let problems = workspace.rogue(&["config", "check"]);
    assert_eq!(problems.status.code(), Some(1));
    let lines: Vec<&str> = problems.stderr.lines().collect();
    assert_eq!(
        lines[0],
        format!("{}: line 1: service \"smpt\" is not a configured service (smtp)", whitelist.display())
    );
    assert!(lines[1].starts_with(&format!("{}: line 4: 0.0.0.0/0 covers every IPv4 address", whitelist.display())));
    assert_eq!(
        lines[2],
        "store.path: the store's directory /nonexistent/dir does not exist (rogue makes the store, not its directory)"
    );
    assert!(lines[3].starts_with("interfaces: no network interface named \"nosuch0\" (there are: "), "{}", lines[3]);
    assert!(lines[3].contains("lo"), "the interfaces there are: {}", lines[3]);
    assert_eq!(lines.len(), 4, "{}", problems.stderr);

    std::fs::write(workspace.config(), "internal_networks: [192.0.2.0/24]\ndetection:\n  bin_seconds: -5\n").unwrap();
    let syntax = workspace.rogue(&["config", "check"]);
    assert_eq!(syntax.status.code(), Some(1));
    assert!(syntax.stderr.contains("detection.bin_seconds") && syntax.stderr.contains("line 3"), "{}", syntax.stderr);
}

/// The collector as `Type=notify` with `WatchdogSec=` runs it: READY once
/// bound, pings, RELOADING and READY around SIGHUP, STOPPING; and at the
/// default verbosity only its start, reload and stop on stderr (the journal).
#[test]
fn the_collector_tells_systemd_its_state_and_the_journal_its_lifecycle() {
    let workspace = Workspace::new("notify", CONFIG, &example_whitelist());
    let notify = NotifySocket::bind("collector");
    let port = rogue_testkit::free_port();
    let mut command = Command::new(ROGUE);
    command.args(["collect", "--no-dns", "--listen", &format!("127.0.0.1:{port}"), "--config"]);
    command.arg(workspace.config());
    notify.serve(&mut command, Duration::from_secs(1));
    let mut collector = Running::spawn(command);

    let ready = notify.wait_for("READY=1");
    assert_eq!(
        ready.last().unwrap(),
        &format!(
            "READY=1\nSTATUS=collector running: IPFIX and NetFlow v5/v9 on udp://127.0.0.1:{port}, IPFIX on \
             tcp://127.0.0.1:{port}\n"
        )
    );
    collector.wait_for_stderr("collector running", 1);
    // Half the watchdog's second: two pings or more in 1.5 s.
    let pings = notify.messages_within(Duration::from_millis(1_500));
    assert!(pings.iter().filter(|m| *m == "WATCHDOG=1\n").count() >= 2, "{pings:?}");

    collector.signal(libc::SIGHUP);
    let reload = notify.wait_for("RELOADING=1");
    assert!(reload.last().unwrap().contains("MONOTONIC_USEC="), "systemd 253 wants the time: {reload:?}");
    notify.wait_for("READY=1");
    collector.wait_for_stderr("reloaded", 1);

    collector.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1");
    let stopped = collector.finish();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let lines: Vec<&str> = stopped.stderr.lines().collect();
    for want in ["collector running", "collecting IPFIX", "reloaded", "collector stopped"] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want:?} is not in the journal:\n{}", stopped.stderr);
    }
    assert!(lines.iter().all(|l| l.contains("rogue::lifecycle")), "only the lifecycle by default:\n{}", stopped.stderr);
}

#[test]
fn a_wrong_interface_lists_those_there_are_and_creates_nothing() {
    let workspace = Workspace::new("wrong-iface", CONFIG, &example_whitelist());
    let agent = workspace.rogue(&["agent", "--iface", "nosuch0"]);
    assert_eq!(agent.status.code(), Some(1));
    assert!(
        agent.stderr.starts_with("rogue: error: no network interface named \"nosuch0\" (there are: "),
        "{}",
        agent.stderr
    );
    assert!(agent.stderr.contains("lo"), "{}", agent.stderr);
    assert!(!workspace.dir.join("rogue.db").exists(), "the agent created its store before finding its interface");
    let flows = Finished::from(Command::new(ROGUE).args(["flows", "--iface", "nosuch0"]).output().unwrap());
    assert_eq!(flows.status.code(), Some(1));
    assert!(
        flows.stderr.starts_with("rogue: error: no network interface named \"nosuch0\" (there are: "),
        "{}",
        flows.stderr
    );
}

/// The agent says READY only once the meter is attached, and its start
/// names the interfaces and the XDP mode at the default verbosity.
#[test]
fn the_agent_is_ready_once_attached_and_says_where_at_the_default_verbosity() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let (gateway, peer) = (Netns::new("notify-gw"), Netns::new("notify-peer"));
    veth(&gateway, "gw0", &peer, "peer0");
    let workspace = Workspace::new(
        "agent-notify",
        &format!("{CONFIG}interfaces: [gw0]\ncapture: {{xdp_mode: native}}\n"),
        &example_whitelist(),
    );
    let notify = NotifySocket::bind("agent");
    let mut command = gateway.command(ROGUE);
    command.args(["agent", "--no-dns", "--config"]).arg(workspace.config());
    notify.serve(&mut command, Duration::from_secs(2));
    let mut agent = Running::spawn(command);
    let ready = notify.wait_for("READY=1");
    assert_eq!(ready.last().unwrap(), "READY=1\nSTATUS=agent running: metering gw0 (native)\n");
    agent.wait_for_stderr("agent running: metering gw0 (native)", 1);
    agent.wait_for_stderr("XDP flow meter attached", 1);
    agent.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1");
    let stopped = agent.finish();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(stopped.stderr.contains("agent stopped after"), "{}", stopped.stderr);
}

/// Runs `command`, which must succeed; its output.
fn run(command: &mut Command) -> Finished {
    let finished = Finished::from(command.output().unwrap());
    assert!(finished.status.success(), "{command:?}: {}", finished.stderr);
    finished
}

/// Purges the package when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "rogue"]).output();
    }
}

/// The package `cargo xtask test` built (ROGUE_TEST_PACKAGE).
fn built_package() -> Option<PathBuf> {
    match std::env::var_os("ROGUE_TEST_PACKAGE") {
        Some(deb) => Some(PathBuf::from(deb)),
        None => {
            assert!(
                std::env::var_os("ROGUE_TESTS_REQUIRE_ROOT").is_none(),
                "ROGUE_TEST_PACKAGE is not set: `cargo xtask test` builds the package and sets it"
            );
            rogue_testkit::say_skipped(
                "and the package: `cargo xtask package`, then ROGUE_TEST_PACKAGE=target/debian/…",
            );
            None
        }
    }
}

/// The files the package must hold: the binary, the units, the conffiles,
/// a man page per command, the completions, the documentation.
fn expected_files() -> BTreeSet<String> {
    let pages = Scratch::new("man-pages");
    run(Command::new(ROGUE).arg("man").arg("--dir").arg(&pages.0));
    let mut files: BTreeSet<String> = std::fs::read_dir(&pages.0)
        .unwrap()
        .map(|page| format!("/usr/share/man/man1/{}.gz", page.unwrap().file_name().to_str().unwrap()))
        .collect();
    assert!(files.len() > 20, "a page per command: {files:?}");
    files.extend(
        [
            "/usr/bin/rogue",
            "/usr/lib/systemd/system/rogue-agent.service",
            "/usr/lib/systemd/system/rogue-collect.service",
            "/etc/rogue/rogue.yaml",
            "/etc/rogue/whitelist.yaml",
            "/usr/share/bash-completion/completions/rogue",
            "/usr/share/zsh/vendor-completions/_rogue",
            "/usr/share/fish/vendor_completions.d/rogue.fish",
            "/usr/share/doc/rogue/README.md",
            "/usr/share/doc/rogue/copyright",
            "/usr/share/doc/rogue/LICENSE-MIT",
            "/usr/share/doc/rogue/LICENSE-APACHE",
            "/usr/share/doc/rogue/examples/rogue.yaml",
            "/usr/share/doc/rogue/examples/whitelist.yaml",
            "/usr/share/doc/rogue/examples/prometheus/rogue-alerts.yml",
            "/usr/share/doc/rogue/examples/grafana/rogue-dashboard.json",
        ]
        .map(String::from),
    );
    files
}

#[test]
fn the_package_installs_its_files_starts_nothing_runs_as_its_user_and_purges_leaving_nothing() {
    rogue_testkit::needs_root!("dpkg installs into the system");
    let Some(deb) = built_package() else { return };
    let _lock = lock_system_config();
    let status = Command::new("dpkg").args(["-s", "rogue"]).output().unwrap();
    assert!(!status.status.success(), "the package rogue is installed already; this test installs and purges it");
    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").arg(&deb));

    // Its files, owned by root, and nothing else.
    let listed = run(Command::new("dpkg").args(["-L", "rogue"])).stdout;
    let files: BTreeSet<String> = listed.lines().filter(|p| Path::new(p).is_file()).map(String::from).collect();
    assert_eq!(files, expected_files());
    for file in &files {
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{file} is root's");
        let mode = meta.permissions().mode() & 0o7777;
        assert_eq!(mode, if file == "/usr/bin/rogue" { 0o755 } else { 0o644 }, "{file}: {mode:o}");
    }
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "rogue"])).stdout;
    let conffiles: Vec<&str> = conffiles.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(conffiles, ["/etc/rogue/rogue.yaml", "/etc/rogue/whitelist.yaml"]);

    // The user and state directory the maintainer scripts make.
    let user = run(Command::new("getent").args(["passwd", "rogue"])).stdout;
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "a system user: {user}");
    assert_eq!((fields[5], fields[6]), ("/var/lib/rogue", "/usr/sbin/nologin"), "{user}");
    let state = std::fs::metadata("/var/lib/rogue").unwrap();
    assert_eq!((state.uid().to_string(), state.permissions().mode() & 0o7777), (fields[2].to_string(), 0o750));
    // Nothing started or enabled by itself.
    let running = Command::new("pgrep").args(["-u", "rogue"]).output().unwrap();
    assert!(!running.status.success(), "a process of rogue's is running: {}", String::from_utf8_lossy(&running.stdout));
    for unit in ["rogue-agent.service", "rogue-collect.service"] {
        assert!(!Path::new("/etc/systemd/system/multi-user.target.wants").join(unit).exists(), "{unit} enabled");
    }

    // What the administrator runs next.
    let version = run(Command::new("/usr/bin/rogue").arg("--version")).stdout;
    assert_eq!(version, format!("rogue {}\n", env!("CARGO_PKG_VERSION")));
    let anywhere = Scratch::new("admin");
    let mut check = Command::new("/usr/bin/rogue");
    check.args(["config", "check"]).current_dir(&anywhere.0).env_remove("ROGUE_CONFIG");
    let check = run(&mut check);
    assert_eq!(
        check.stderr,
        "/etc/rogue/rogue.yaml: ok (whitelist /etc/rogue/whitelist.yaml, store /var/lib/rogue/rogue.db)\n"
    );
    for page in ["rogue", "rogue-agent", "rogue-collect"] {
        let found = run(require("man").args(["-w", page])).stdout;
        assert_eq!(found, format!("/usr/share/man/man1/{page}.1.gz\n"));
    }
    for unit in ["rogue-agent.service", "rogue-collect.service"] {
        let verified =
            require("systemd-analyze").arg("verify").arg(format!("/usr/lib/systemd/system/{unit}")).output().unwrap();
        let verified = Finished::from(verified);
        assert!(verified.status.success() && verified.stderr.is_empty(), "{unit}: {}", verified.stderr);
    }
    let bash = run(Command::new("/usr/bin/rogue").args(["completions", "bash"])).stdout;
    assert_eq!(std::fs::read_to_string("/usr/share/bash-completion/completions/rogue").unwrap(), bash);

    // As the unit runs it: the rogue user, /etc read-only (ProtectSystem=strict):
    // the store goes to the state directory.
    let capture = scenario_capture("misconfiguration", 1);
    let readable = anywhere.0.join("capture.pcap");
    std::fs::copy(&capture, &readable).unwrap();
    std::fs::set_permissions(&anywhere.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_the_unit = format!(
        "mount --bind /etc /etc && mount -o remount,bind,ro /etc && cd / && runuser -u rogue -- env \
         STATE_DIRECTORY=/var/lib/rogue /usr/bin/rogue analyze --no-dns --format jsonl --pcap {}",
        readable.display()
    );
    let analyzed = run(require("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &as_the_unit]));
    assert_eq!(analyzed.stdout.lines().count(), 2, "the misconfiguration's two findings: {}", analyzed.stdout);
    let store = std::fs::metadata("/var/lib/rogue/rogue.db").unwrap();
    assert_eq!(store.uid().to_string(), fields[2], "the store is the rogue user's");

    // Purged: not a file of it left, nor its user, state or configuration.
    run(Command::new("dpkg").args(["-P", "rogue"]));
    let left: Vec<&String> = files.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for directory in ["/etc/rogue", "/var/lib/rogue", "/usr/share/doc/rogue"] {
        assert!(!Path::new(directory).exists(), "{directory} is left behind");
    }
    assert!(!Command::new("getent").args(["passwd", "rogue"]).output().unwrap().status.success(), "the user is left");
    assert!(!Command::new("getent").args(["group", "rogue"]).output().unwrap().status.success(), "the group is left");
    assert!(!Command::new("dpkg").args(["-s", "rogue"]).output().unwrap().status.success());
}
