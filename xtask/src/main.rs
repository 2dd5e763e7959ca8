//! `cargo xtask`: everything a newcomer runs, so that a fresh machine needs
//! nothing beyond the README's two commands.
//!
//! - `setup`: installs what is missing, idempotently, saying what it does:
//!   rust-src for the nightly toolchain and bpf-linker 0.10.4 (to build the
//!   XDP program), and the Debian packages the tests use.
//! - `build`, `run`, `bench` install the toolchain pieces first; `test` all of
//!   `setup`.
//! - `package`: the Debian package (cargo-deb), with the man pages and shell
//!   completions `rogue` writes of itself; `test` builds it first, for the
//!   test that installs and purges it.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// bpf-linker releases after 0.10 need LLVM 23, which the nightly here lacks.
const BPF_LINKER_VERSION: &str = "0.10.4";
/// cargo-deb, pinned so that the package's layout does not change under us.
const CARGO_DEB_VERSION: &str = "3.8.0";
/// What `rogue man` and `rogue completions` write for the package.
const PACKAGE_STAGING: &str = "target/package";
/// The shells the package ships completions for, and each file's name.
const COMPLETIONS: &[(&str, &str)] = &[("bash", "rogue.bash"), ("zsh", "_rogue"), ("fish", "rogue.fish")];
/// Debian packages the test suite runs, with a program that shows each is there.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("tshark", "tshark"),
    ("ip", "iproute2"),
    ("sysctl", "procps"),
    ("setpriv", "util-linux"),
    ("nsd", "nsd"),
    ("nfcapd", "nfdump"),
    ("softflowd", "softflowd"),
    ("chromium", "chromium"),
    ("swaks", "swaks"),
    ("aiosmtpd", "python3-aiosmtpd"),
    ("dnsmasq", "dnsmasq-base"),
    ("python3", "python3"),
    ("man", "man-db"),
    ("systemd-analyze", "systemd"),
    ("promtool", "prometheus"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    ("dig", "bind9-dnsutils"),
    ("chronyd", "chrony"),
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("udhcpc", "udhcpc"),
    ("clickhouse-server", "clickhouse-server"),
    ("/usr/share/zookeeper/bin/zkServer.sh", "zookeeper"),
];
/// The flow tools the offline benchmark compares rogue with.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("tshark", "tshark"),
    ("nfpcapd", "nfdump"),
    ("argus", "argus-server"),
    ("softflowd", "softflowd"),
    ("clickhouse-server", "clickhouse-server"),
];
/// The Node.js package that drives Chromium in the report tests.
const BROWSER_TESTS: &str = "tests/browser";
/// Prefix of the network namespaces tests create (rogue-testkit/src/netns.rs).
const TEST_NETNS_PREFIX: &str = "rogue-t-";

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Set up, build, run, test and benchmark rogue")]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent)
    Setup,
    /// Build rogue in release mode (target/release/rogue)
    Build,
    /// Build and run rogue with these arguments (`cargo xtask run -- flows --pcap FILE`);
    /// without arguments, the offline demo: the method's scenarios generated and analysed
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The live demo: a gateway in network namespaces with real mail servers,
    /// the agent finding the rogue one, a report (needs root)
    Demo,
    /// Build the Debian package: target/debian/rogue_<version>-<rev>_amd64.deb
    Package,
    /// Run every test, the kernel ones and the package's included (needs root)
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run the benchmarks and write BENCHMARKS.md (needs root); with section
    /// names (kernel veth drain offline churn scaling services agent), only those, printed
    Bench { sections: Vec<String> },
}

fn main() -> ExitCode {
    match run(Xtask::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    let root = workspace_root();
    env::set_current_dir(&root)?;
    match task {
        Task::Setup => setup(),
        Task::Build => {
            setup_toolchain()?;
            cargo(&["build", "--release", "--bin", "rogue"])
        }
        Task::Run { args } if args.is_empty() => {
            setup_toolchain()?;
            demo()
        }
        Task::Run { args } => {
            setup_toolchain()?;
            status(rogue().args(args))
        }
        Task::Demo => {
            setup()?;
            require_root("the demo's network namespaces and XDP")?;
            remove_stale_test_namespaces()?;
            cargo(&["test", "--quiet", "--release", "-p", "rogue-user", "--test", "demo"])
        }
        Task::Package => package().map(|deb| eprintln!("xtask: built {}", deb.display())),
        Task::Test { args } => {
            setup()?;
            require_root("the kernel tests (XDP, veth, network namespaces)")?;
            remove_stale_test_namespaces()?;
            lint()?;
            let deb = package()?;
            let mut command = Command::new(env!("CARGO"));
            // Every test runs: one that needs root fails rather than skips.
            command.arg("test").args(args).env("ROGUE_TESTS_REQUIRE_ROOT", "1").env("ROGUE_TEST_PACKAGE", &deb);
            status(&mut command)
        }
        Task::Bench { sections } => {
            setup()?;
            install_packages("the flow tools rogue is compared with", BENCH_PACKAGES)?;
            require_root("the benchmarks (BPF, network namespaces)")?;
            remove_stale_test_namespaces()?;
            let mut args = vec!["bench", "-p", "rogue-user", "--bench", "rogue", "--"];
            args.extend(sections.iter().map(String::as_str));
            cargo(&args)
        }
    }
}

/// Builds the .deb and returns its path: the release binary, its man pages
/// (gzipped, as Debian ships them) and completions staged under
/// target/package, then cargo-deb on what rogue-user's Cargo.toml lists.
fn package() -> anyhow::Result<PathBuf> {
    setup_toolchain()?;
    step(&format!("cargo-deb {CARGO_DEB_VERSION}"), has_cargo_deb, || {
        status(Command::new(env!("CARGO")).args(["install", &format!("cargo-deb@{CARGO_DEB_VERSION}"), "--locked"]))
    })?;
    cargo(&["build", "--release", "--bin", "rogue"])?;
    let staging = workspace_root().join(PACKAGE_STAGING);
    let _ = std::fs::remove_dir_all(&staging);
    let (man, completions) = (staging.join("man"), staging.join("completions"));
    std::fs::create_dir_all(&completions)?;
    let built = workspace_root().join("target/release/rogue");
    status(Command::new(&built).arg("man").arg("--dir").arg(&man))?;
    for page in std::fs::read_dir(&man)? {
        status(Command::new("gzip").args(["-9", "-n"]).arg(page?.path()))?;
    }
    for (shell, file) in COMPLETIONS {
        let script = Command::new(&built).args(["completions", shell]).output()?;
        if !script.status.success() {
            bail!("rogue completions {shell} failed: {}", String::from_utf8_lossy(&script.stderr));
        }
        std::fs::write(completions.join(file), script.stdout)?;
    }
    // cargo deb prints the package's path on stdout; its complaints go to ours.
    let mut cargo_deb = Command::new(env!("CARGO"));
    cargo_deb
        .args(["deb", "-p", "rogue-user", "--no-build", "--strip", "--quiet"])
        .stderr(std::process::Stdio::inherit());
    let deb = output(&mut cargo_deb).context("cargo deb failed")?;
    let deb = PathBuf::from(deb.trim());
    if !deb.is_file() {
        bail!("cargo deb did not say where the package is (it printed {:?})", deb.display());
    }
    Ok(deb)
}

fn has_cargo_deb() -> bool {
    output(Command::new(env!("CARGO")).args(["deb", "--version"])).is_some_and(|v| v.contains(CARGO_DEB_VERSION))
}

/// The lints CI holds the code to: rustfmt's layout and clippy without a
/// warning, on every crate and target (the eBPF crate included).
fn lint() -> anyhow::Result<()> {
    eprintln!("xtask: cargo fmt --check");
    cargo(&["fmt", "--all", "--check"])?;
    eprintln!("xtask: cargo clippy --workspace --all-targets -- -D warnings");
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
}

/// `rogue` from a release build.
fn rogue() -> Command {
    let mut command = Command::new(env!("CARGO"));
    command.args(["run", "--quiet", "--release", "--bin", "rogue", "--"]);
    command
}

/// The method's three cases, generated and analysed into a fresh store.
fn demo() -> anyhow::Result<()> {
    let dir = workspace_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let capture = dir.join("scenario.pcap");
    let store = dir.join("rogue.db");
    for stale in ["rogue.db", "rogue.db-wal", "rogue.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    eprintln!("xtask: demo: generating the method's scenarios into {}", capture.display());
    status(rogue().args(["generate", "--scenario", "all", "--out"]).arg(&capture))?;
    eprintln!(
        "xtask: demo: rogue analyze --no-dns --config config/rogue.yaml --db {} --pcap {}",
        store.display(),
        capture.display()
    );
    status(
        rogue()
            .args(["analyze", "--no-dns", "--config", "config/rogue.yaml", "--db"])
            .arg(&store)
            .arg("--pcap")
            .arg(&capture),
    )?;
    eprintln!(
        "xtask: demo: explore with `target/release/rogue hosts --peers --config config/rogue.yaml --db {}` \
         (or findings, whitelist suggest)",
        store.display()
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Everything building and testing need.
fn setup() -> anyhow::Result<()> {
    setup_toolchain()?;
    install_packages("test tools", TEST_PACKAGES)?;
    let browser = workspace_root().join(BROWSER_TESTS);
    step(
        "playwright-core for the browser tests (npm ci)",
        || browser.join("node_modules").exists(),
        || status(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&browser)),
    )
}

/// Installs the Debian packages of `packages` whose program is missing.
fn install_packages(what: &str, packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing = || -> Vec<&str> {
        packages.iter().filter(|(program, _)| !on_path(program)).map(|(_, package)| *package).collect()
    };
    let names = packages.iter().map(|(_, package)| *package).collect::<Vec<_>>().join(", ");
    step(&format!("{what} ({names})"), || missing().is_empty(), || apt_install(&missing()))
}

/// What building the XDP program needs.
fn setup_toolchain() -> anyhow::Result<()> {
    step("nightly toolchain", has_nightly, || {
        bail!("the nightly toolchain is missing and cannot be fetched here; install it with rustup")
    })?;
    step("rust-src for nightly (to build core for the BPF target)", has_nightly_rust_src, || {
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
    })?;
    step(&format!("bpf-linker {BPF_LINKER_VERSION}"), has_bpf_linker, || {
        status(Command::new(env!("CARGO")).args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"]))
    })
}

/// Runs `install` unless `present` says the piece is already there.
fn step(what: &str, present: impl Fn() -> bool, install: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    if present() {
        eprintln!("xtask: ok: {what}");
        return Ok(());
    }
    eprintln!("xtask: installing: {what}");
    install().with_context(|| format!("installing {what}"))?;
    if !present() {
        bail!("{what} is still missing after installing it");
    }
    Ok(())
}

fn has_nightly() -> bool {
    output(Command::new("rustup").args(["toolchain", "list"])).is_some_and(|list| list.contains("nightly"))
}

fn has_nightly_rust_src() -> bool {
    output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
        .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")))
}

fn has_bpf_linker() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn on_path(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("run as root, or install them yourself: sudo apt-get install {}", packages.join(" "));
    }
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    // Packages of daemons (chrony, ssh) start them on install where no
    // policy says otherwise: the tests run their own, in namespaces, and a
    // chronyd of the machine's would ask the Internet for the time.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\n# cargo xtask: no daemon starts while test tools install\nexit 101\n")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed = status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if own_policy {
        std::fs::remove_file(policy)?;
    }
    installed
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("{what} need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run `sudo -E cargo xtask ...`");
    }
    Ok(())
}

/// Namespaces left by a test run that was killed before its guards ran.
fn remove_stale_test_namespaces() -> anyhow::Result<()> {
    let list = output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(TEST_NETNS_PREFIX)) {
        eprintln!("xtask: removing stale test namespace {name}");
        status(Command::new("ip").args(["netns", "del", name]))?;
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    status(Command::new(env!("CARGO")).args(args))
}

fn status(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn output(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
