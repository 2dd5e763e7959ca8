//! rogue finds rogue mail servers from network traffic. The library holds
//! every stage of the data flow, one module each; `main.rs` is only the CLI.

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
pub mod store;
pub mod time;

/// An error and its chain of causes on one line, as the CLI prints errors.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text += &format!(": {inner}");
        cause = inner.source();
    }
    text
}
