//! A directory with a configuration, a whitelist and a store, and `rogue`
//! run against it as an analyst would.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::process::{Finished, ROGUE};

pub struct Workspace {
    pub dir: PathBuf,
    /// Ask DNS (the configuration names a test server); otherwise `--no-dns`,
    /// so no test depends on the machine's resolver.
    pub dns: bool,
}

/// The whitelist of config/whitelist.yaml: the scenario's two MX.
pub fn example_whitelist() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/whitelist.yaml")).unwrap()
}

impl Workspace {
    /// `config` is the YAML of rogue.yaml; `whitelist` of whitelist.yaml.
    pub fn new(name: &str, config: &str, whitelist: &str) -> Workspace {
        let dir = std::env::temp_dir().join(format!("rogue-ws-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rogue.yaml"), config).unwrap();
        std::fs::write(dir.join("whitelist.yaml"), whitelist).unwrap();
        Workspace { dir, dns: false }
    }

    /// A workspace whose configuration names the DNS server to ask.
    pub fn with_dns(name: &str, config: &str, whitelist: &str) -> Workspace {
        let mut workspace = Workspace::new(name, config, whitelist);
        workspace.dns = true;
        workspace
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("rogue.yaml")
    }

    /// Runs `rogue ARGS --config rogue.yaml`, with ROGUE_NO_DNS=1 unless
    /// the workspace has a DNS server (the variable, not `--no-dns`: only the
    /// commands that may ask DNS take the option).
    pub fn rogue(&self, args: &[&str]) -> Finished {
        let mut command = Command::new(ROGUE);
        command.args(args).arg("--config").arg(self.config());
        if !self.dns {
            command.env("ROGUE_NO_DNS", "1");
        }
        crate::process::run(command)
    }

    /// `rogue analyze --format jsonl` on `captures`: the findings printed.
    pub fn analyze(&self, captures: &[&Path]) -> Vec<serde_json::Value> {
        let mut args = vec!["analyze", "--format", "jsonl", "--pcap"];
        let paths: Vec<String> = captures.iter().map(|p| p.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let finished = self.rogue(&args);
        assert!(finished.status.success(), "rogue analyze failed:\n{}", finished.stderr);
        finished.json_lines()
    }

    pub fn json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let finished = self.rogue(args);
        assert!(finished.status.success(), "rogue {args:?} failed:\n{}", finished.stderr);
        finished.json_lines()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Generates each scenario once per build of `rogue`: the captures are kept
/// under cargo's target directory, in a folder named after the binary's
/// build time; folders of older builds are removed.
pub fn scenario_capture(scenario: &str, seed: u64) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let built = std::fs::metadata(ROGUE).and_then(|m| m.modified()).unwrap();
        let stamp = built.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let root = PathBuf::from(env!("ROGUE_TESTS_TMPDIR")).join("scenarios");
        for old in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if old.file_name() != *stamp.to_string() {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        let dir = root.join(stamp.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let path = dir.join(format!("{scenario}-{seed}.pcap"));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap();
    if !path.exists() {
        let partial = path.with_extension("partial");
        let status = Command::new(ROGUE)
            .args(["-q", "generate", "--scenario", scenario, "--seed", &seed.to_string(), "--out"])
            .arg(&partial)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}
