//! rogue finds rogue mail servers from network traffic. The library holds
//! every stage of the data flow, one module each; `main.rs` is only the CLI.
//!
//! The modules in [`LAYERS`] order, each importing only from those before
//! it: a packet's way from the NIC to a finding reads top to bottom, and a
//! stage changes without touching those above it.
//!
//! - `time`, `config`: leaves (times and their units; the configuration
//!   file and the option types every stage shares);
//! - `capture`: where packets come from (the XDP meter, capture files), as
//!   flow deltas;
//! - `flows`: the flow cache, completing flows from deltas; flow formats;
//! - `ipfix`: flow records to and from IPFIX and NetFlow;
//! - `profile`: completed flows into per-host profiles;
//! - `store`: profiles, sources, findings and DNS answers in SQLite;
//! - `detect`: the method's rules and the whitelist, over the store;
//! - `dns`: the administrative characteristics, looked up;
//! - `output`, `report`: findings as JSON and text; reports with plots;
//! - `engine`: what commands and the agent open alike, and evaluation;
//! - `triage`: the analyst's decisions (acknowledge, accept, reject,
//!   whitelist entries) with their audit trail, from the CLI or the console;
//! - `ingest`: files (captures, IPFIX) through flows and profiles to the store;
//! - `serve`: the web console over the store (pages, and the decisions of
//!   `triage` behind authentication);
//! - `agent`: the daemon, its stages wired source -> flow cache -> store
//!   writer -> engine -> emitter;
//! - `cli`: the commands.
//!
//! `scenario`, the generator of the method's cases, stands apart on `time`.

pub mod agent;
pub mod capture;
pub mod cli;
pub mod config;
pub mod detect;
pub mod dns;
pub mod engine;
pub mod flows;
pub mod ingest;
pub mod ipfix;
pub mod output;
pub mod profile;
pub mod report;
pub mod scenario;
pub mod serve;
pub mod store;
pub mod time;
pub mod triage;

/// The modules, lowest first: each may import only from modules before it
/// (a test reads the sources to hold them to it).
pub const LAYERS: [&str; 19] = [
    "time", "config", "scenario", "capture", "flows", "ipfix", "profile", "store", "detect", "dns", "output", "report",
    "engine", "triage", "ingest", "serve", "agent", "cli", "main",
];

/// An error and its chain of causes on one line, as the CLI prints errors.
/// The tracing target of what the journal shows at the default verbosity
/// of `rogue agent` and `rogue collect`: start (interfaces, XDP mode,
/// listener), reloads and stop. Per-evaluation detail stays at `-v`.
pub const LIFECYCLE: &str = "rogue::lifecycle";

pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text += &format!(": {inner}");
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod layering {
    use std::path::Path;

    use super::LAYERS;

    /// The modules a source file imports from (`crate::NAME`), in code that
    /// is not a test.
    fn imports(source: &str) -> Vec<&'static str> {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String =
            code.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let mut found = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `crate::{a::X, b, c::{..}}`: the first name of each path at the top level.
                Some(group) => top_level_paths(group),
                None => vec![rest],
            };
            for name in names {
                let name = name.trim_start().split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("");
                found.extend(LAYERS.iter().find(|layer| **layer == name));
            }
        }
        found
    }

    /// The paths of a `{...}` use group, up to its closing brace.
    fn top_level_paths(group: &str) -> Vec<&str> {
        let (mut depth, mut start, mut paths) = (0, 0, Vec::new());
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    paths.push(&group[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    paths.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        paths
    }

    fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                sources(&entry.unwrap().path(), out);
            }
        } else if path.is_file()
            && path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path.to_path_buf());
        }
    }

    #[test]
    fn every_module_imports_only_from_the_layers_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut upward = Vec::new();
        for (rank, layer) in LAYERS.iter().enumerate() {
            let mut files = Vec::new();
            sources(&src.join(layer), &mut files);
            sources(&src.join(format!("{layer}.rs")), &mut files);
            assert!(!files.is_empty(), "no sources for {layer}");
            for file in files {
                for import in imports(&std::fs::read_to_string(&file).unwrap()) {
                    let below = LAYERS.iter().position(|l| *l == import).unwrap() < rank;
                    if import != *layer && !below {
                        upward.push(format!("{} imports {import}", file.display()));
                    }
                }
            }
        }
        assert!(upward.is_empty(), "imports against the layering:\n{}", upward.join("\n"));
    }

    #[test]
    fn imports_are_found_in_paths_and_groups() {
        let source = "use crate::{\n    config::{Config, X},\n    flows::Y,\n};\nfn f() { crate::time::millis(0); }\n// crate::cli\n";
        assert_eq!(imports(source), ["config", "flows", "time"]);
    }
}
