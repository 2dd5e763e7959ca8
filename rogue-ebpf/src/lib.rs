//! Pieces shared by rogue's XDP programs.
#![no_std]

use rogue_common::parse::Frame;

/// An XDP frame as the shared parser reads it: every read is checked against
/// `data_end` in the form the verifier accepts (`start + offset + N <= end`).
pub struct XdpFrame {
    pub start: usize,
    pub end: usize,
}

impl Frame for XdpFrame {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        // SAFETY: `at..at + N` lies inside the packet, checked just above.
        Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }
}
