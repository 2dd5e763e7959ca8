//! What rogue's XDP program and its userspace must agree on, byte for byte:
//! the flow map's key and value, the meter's counters, the map names, and the
//! packet parser itself. The parser lives here, generic over how bytes are
//! read, so the kernel and the capture reader run the same code and cannot
//! drift apart; a parity test feeds real captures through both to prove it.
#![no_std]

pub mod counters;
pub mod flow;
pub mod maps;
pub mod parse;

pub use counters::MeterCounters;
pub use flow::{Address, FlowKey, FlowStats, address_bytes, address_from_bytes};
