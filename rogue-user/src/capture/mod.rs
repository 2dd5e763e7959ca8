//! Capture: where packets come from. Live, the XDP flow meter counts them in
//! the kernel and this module loads, attaches and drains it; offline, capture
//! files are parsed in userspace by the same parser. Both end as flow deltas
//! fed to the flow cache (`crate::flows`).

pub mod drain;
pub mod file;
pub mod xdp;

/// Reference XDP programs and the live-frames traffic generator, for
/// benchmarks and kernel tests; rogue never attaches them (see
/// rogue-ebpf/src/bin/testbed.rs).
pub static TESTBED_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rogue-testbed"));

pub use file::{CaptureError, FileMeter, FileSummary};
pub use xdp::{Attachment, MeterError, XdpMeter, XdpMode};
