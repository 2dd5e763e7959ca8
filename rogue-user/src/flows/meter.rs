//! Capture files metered in userspace: the twin of the XDP meter. Frames
//! from `capture::file` are parsed by the same parser as the kernel program,
//! counted into the same counters and fed to a flow cache; frames dated
//! outside the given [`TimeBounds`] are rejected first (counted, never
//! metered).

use std::path::Path;

use rogue_common::{MeterCounters, parse::parse};

use super::{FlowCache, FlowRecord, Rejected, TimeBounds};
use crate::capture::{
    CaptureError, FileSummary, FlowDelta,
    file::{CapturedFrame, FrameSink, read_frames},
};

/// What metering one file found: the file (its times those of the frames
/// admitted, with bounds), and the frames rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeteredFile {
    pub file: FileSummary,
    pub rejected: Rejected,
}

/// The userspace twin of the XDP meter: parses captured frames and feeds a
/// flow cache, counting every frame exactly as the kernel program would.
/// With [`bounds`](FileMeter::bounds), frames dated outside them are
/// rejected (counted, never metered).
pub struct FileMeter {
    pub cache: FlowCache,
    pub counters: MeterCounters,
    pub files_truncated: u64,
    pub bounds: Option<TimeBounds>,
    /// The current file's admitted frames' times and rejected frames.
    admitted: MeteredFile,
}

impl FileMeter {
    pub fn new(cache: FlowCache) -> FileMeter {
        FileMeter {
            cache,
            counters: MeterCounters::default(),
            files_truncated: 0,
            bounds: None,
            admitted: MeteredFile::default(),
        }
    }

    /// Meters one frame; completed flows are appended to `out`.
    #[inline]
    pub fn frame(&mut self, frame: &CapturedFrame<'_>, out: &mut Vec<FlowRecord>) {
        if let Some(bounds) = &self.bounds {
            if !bounds.admits(frame.time) {
                self.admitted.rejected.add(frame.time);
                return;
            }
            self.admitted.file.saw(frame.time);
        }
        let packet = parse(frame.data, frame.link);
        self.counters.count(&packet, frame.wire_len as u64);
        if !packet.has_flow() {
            return;
        }
        let mut key = packet.key;
        key.ifindex = frame.interface;
        let delta = FlowDelta {
            packets: 1,
            bytes: packet.ip_bytes as u64,
            first: frame.time,
            last: frame.time,
            tcp_flags: packet.tcp_flags,
        };
        self.cache.add(&key, delta, out);
    }

    /// Meters a whole file, handing completed flows to `on_flows` as they
    /// complete, so memory stays bounded by active flows, not file size.
    pub fn file(
        &mut self,
        path: &Path,
        on_flows: impl FnMut(&mut Vec<FlowRecord>),
    ) -> Result<MeteredFile, CaptureError> {
        self.file_with(path, on_flows, |_| {}, || false)
    }

    /// [`file`](Self::file), telling `on_progress` the bytes read now and
    /// then, and stopping (an error) once `stopped` says so.
    pub fn file_with(
        &mut self,
        path: &Path,
        on_flows: impl FnMut(&mut Vec<FlowRecord>),
        on_progress: impl FnMut(u64),
        stopped: impl Fn() -> bool,
    ) -> Result<MeteredFile, CaptureError> {
        self.admitted = MeteredFile::default();
        let mut sink = MeterSink { meter: self, out: Vec::new(), on_flows, on_progress, stopped };
        let mut file = read_frames(path, &mut sink)?;
        if file.cut_at.is_some() {
            self.files_truncated += 1;
        }
        let admitted = std::mem::take(&mut self.admitted);
        if self.bounds.is_some() {
            (file.first, file.last) = (admitted.file.first, admitted.file.last);
        }
        Ok(MeteredFile { file, rejected: admitted.rejected })
    }
}

struct MeterSink<'m, F, P, S> {
    meter: &'m mut FileMeter,
    out: Vec<FlowRecord>,
    on_flows: F,
    on_progress: P,
    stopped: S,
}

impl<F: FnMut(&mut Vec<FlowRecord>), P: FnMut(u64), S: Fn() -> bool> FrameSink for MeterSink<'_, F, P, S> {
    fn progress(&mut self, bytes: u64) {
        (self.on_progress)(bytes);
    }

    fn stopped(&self) -> bool {
        (self.stopped)()
    }

    fn interface(&mut self, id: u32, name: &str) {
        self.meter.cache.name_interface(id, name);
    }

    fn frame(&mut self, frame: CapturedFrame<'_>) {
        self.meter.frame(&frame, &mut self.out);
        if !self.out.is_empty() {
            (self.on_flows)(&mut self.out);
            self.out.clear();
        }
    }
}
