//! rogue finds rogue mail servers from network traffic. The library holds
//! every stage of the data flow, one module each; `main.rs` is only the CLI.

pub mod agent;
pub mod capture;
pub mod cli;
pub mod config;
pub mod detect;
pub mod dns;
pub mod flows;
pub mod ipfix;
pub mod profile;
pub mod report;
pub mod scenario;
pub mod store;
