//! rogue's integration tests, one test binary: each module a part of rogue
//! as its users meet it (see the README's test table). Tests that need root
//! say so and stop without it (see `rogue_testkit::needs_root!`); `cargo
//! xtask test` runs them all, as root.

mod agent;
mod captures;
mod cli;
mod clickhouse;
mod collect;
mod dns;
mod faults;
mod install;
mod ipfix;
mod live;
mod output;
mod parser;
mod report;
mod scenarios;
mod serve;
mod siem;
mod xdp;
