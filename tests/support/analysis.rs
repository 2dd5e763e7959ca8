//! A directory with a configuration, a whitelist and a store, and `rogue`
//! run against it as an analyst would.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::process::{Finished, ROGUE};

pub struct Workspace {
    pub dir: PathBuf,
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
        Workspace { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("rogue.yaml")
    }

    /// Runs `rogue ARGS --config rogue.yaml`.
    pub fn rogue(&self, args: &[&str]) -> Finished {
        let output = Command::new(ROGUE).args(args).arg("--config").arg(self.config()).output().unwrap();
        Finished {
            status: output.status,
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// `rogue analyze --format json` on `captures`: the findings printed.
    pub fn analyze(&self, captures: &[&Path]) -> Vec<serde_json::Value> {
        let mut args = vec!["analyze", "--format", "json", "--pcap"];
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
