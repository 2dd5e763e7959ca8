//! Capture: where packets come from. Live, the XDP flow meter counts them in
//! the kernel and this module loads, attaches and drains it; offline, capture
//! files are read frame by frame, for the same parser. Both end as
//! [`FlowDelta`]s, what the flow cache (`crate::flows`) takes.

pub mod drain;
pub mod file;
pub mod host;
pub mod kernel_log;
pub mod xdp;

use crate::time::Nanos;

pub use file::{CaptureError, FileSummary};
pub use xdp::{Attachment, MeterError, XdpMeter};

/// Packets of one flow seen together: one packet from a capture, or one
/// flow's counts from a drain of the kernel maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowDelta {
    pub packets: u64,
    pub bytes: u64,
    pub first: Nanos,
    pub last: Nanos,
    pub tcp_flags: u8,
}
