//! Capture files metered in userspace: the twin of the XDP meter. Frames
//! from `capture::file` are parsed by the same parser as the kernel program,
//! counted into the same counters and fed to a flow cache; frames dated
//! outside the given [`TimeBounds`] are rejected first (counted, never
//! metered).
//!
//! Two threads share the work, as two CPUs do live (the kernel parses, the
//! agent keeps the cache): a reading thread reads and parses frames and
//! hands batches of packets to the caller's thread, which keeps the flow
//! cache and consumes the flows it completes. Packets reach the cache in
//! file order, so the flows are the same as from one thread.

use std::{
    path::Path,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
};

use rogue_common::{
    FlowKey, MeterCounters,
    parse::{Decapsulate, parse},
};

use super::{FlowCache, FlowRecord, Rejected, TimeBounds};
use crate::{
    capture::{
        CaptureError, FileSummary, FlowDelta,
        file::{CapturedFrame, FrameSink, read_frames_tapped},
    },
    time::Nanos,
};

/// Packets a batch holds (64 bytes each: 256 KiB, within a CPU's L2).
const BATCH_PACKETS: usize = 4096;

/// Batches in flight between the threads: enough to ride out a slow
/// moment on either side, few enough to bound memory (1 MiB).
const BATCHES_IN_FLIGHT: usize = 4;

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
    /// The tunnels opened, as the kernel program opens them.
    pub decapsulate: Decapsulate,
}

impl FileMeter {
    pub fn new(cache: FlowCache) -> FileMeter {
        FileMeter {
            cache,
            counters: MeterCounters::default(),
            files_truncated: 0,
            bounds: None,
            decapsulate: Decapsulate::NONE,
        }
    }

    /// Meters a whole file, handing completed flows to `on_flows` as they
    /// complete, so memory stays bounded by active flows, not file size.
    pub fn file(
        &mut self,
        path: &Path,
        on_flows: impl FnMut(&mut Vec<FlowRecord>),
    ) -> Result<MeteredFile, CaptureError> {
        self.file_with(path, on_flows, |_| {}, || false, &mut |_| {})
    }

    /// [`file`](Self::file), telling `on_progress` the bytes read now and
    /// then, stopping (an error) once `stopped` says so, and handing `tap`
    /// every byte of the file (on the reading thread, as it reads).
    pub fn file_with(
        &mut self,
        path: &Path,
        mut on_flows: impl FnMut(&mut Vec<FlowRecord>),
        mut on_progress: impl FnMut(u64),
        stopped: impl Fn() -> bool + Sync,
        tap: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<MeteredFile, CaptureError> {
        let (to_cache, batches) = sync_channel::<Batch>(BATCHES_IN_FLIGHT);
        let (recycle, recycled) = sync_channel::<Batch>(BATCHES_IN_FLIGHT + 1);
        let (bounds, decapsulate) = (self.bounds, self.decapsulate);
        let (read, parsed) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut parser = Parser::new(bounds, decapsulate, to_cache, recycled, &stopped);
                let read = read_frames_tapped(path, &mut parser, tap);
                parser.send();
                (read, parser.parsed)
            });
            let mut out = Vec::new();
            for mut batch in batches {
                self.take(&mut batch, &mut out);
                if !out.is_empty() {
                    on_flows(&mut out);
                    out.clear();
                }
                if let Some(bytes) = batch.read {
                    on_progress(bytes);
                }
                let _ = recycle.try_send(batch);
            }
            reader.join().expect("the reading thread does not panic")
        });
        self.counters.add(&parsed.counters);
        let mut file = read?;
        if file.cut_at.is_some() {
            self.files_truncated += 1;
        }
        if self.bounds.is_some() {
            (file.first, file.last) = (parsed.admitted.first, parsed.admitted.last);
        }
        Ok(MeteredFile { file, rejected: parsed.rejected })
    }

    /// Adds a batch's packets to the cache, in order.
    fn take(&mut self, batch: &mut Batch, out: &mut Vec<FlowRecord>) {
        for (id, name) in batch.interfaces.drain(..) {
            self.cache.name_interface(id, &name);
        }
        for packet in batch.packets.drain(..) {
            let delta = FlowDelta {
                packets: 1,
                bytes: packet.ip_bytes as u64,
                first: packet.time,
                last: packet.time,
                tcp_flags: packet.tcp_flags,
            };
            self.cache.add(&packet.key, delta, out);
        }
    }
}

/// One parsed packet that belongs to a flow.
struct FlowPacket {
    key: FlowKey,
    time: Nanos,
    ip_bytes: u32,
    tcp_flags: u8,
}

/// Packets for the cache, and what came with them.
#[derive(Default)]
struct Batch {
    /// Interfaces the file named before these packets.
    interfaces: Vec<(u32, String)>,
    packets: Vec<FlowPacket>,
    /// Bytes of the file read when the batch was sent, now and then.
    read: Option<u64>,
}

/// What the reading thread counted: every frame, and the times of those
/// admitted.
#[derive(Default)]
struct Parsed {
    counters: MeterCounters,
    admitted: FileSummary,
    rejected: Rejected,
}

/// The reading thread's half: admits, parses and counts frames, and sends
/// the cache its packets in batches.
struct Parser<'s, S> {
    bounds: Option<TimeBounds>,
    decapsulate: Decapsulate,
    parsed: Parsed,
    batch: Batch,
    to_cache: SyncSender<Batch>,
    recycled: Receiver<Batch>,
    stopped: &'s S,
}

impl<'s, S: Fn() -> bool> Parser<'s, S> {
    fn new(
        bounds: Option<TimeBounds>,
        decapsulate: Decapsulate,
        to_cache: SyncSender<Batch>,
        recycled: Receiver<Batch>,
        stopped: &'s S,
    ) -> Self {
        let batch = Batch { packets: Vec::with_capacity(BATCH_PACKETS), ..Batch::default() };
        Parser { bounds, decapsulate, parsed: Parsed::default(), batch, to_cache, recycled, stopped }
    }

    /// Sends the batch being filled (if it holds anything) and starts the next.
    fn send(&mut self) {
        if self.batch.packets.is_empty() && self.batch.interfaces.is_empty() && self.batch.read.is_none() {
            return;
        }
        let next = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Batch { packets: Vec::with_capacity(BATCH_PACKETS), ..Batch::default() });
        let full = std::mem::replace(&mut self.batch, next);
        // The cache's side only ends when this side does.
        let _ = self.to_cache.send(full);
    }
}

impl<S: Fn() -> bool> FrameSink for Parser<'_, S> {
    fn progress(&mut self, bytes: u64) {
        self.batch.read = Some(bytes);
        self.send();
    }

    fn stopped(&self) -> bool {
        (self.stopped)()
    }

    fn interface(&mut self, id: u32, name: &str) {
        // A later section may name the same id again: its packets so far
        // were named by the earlier one.
        self.send();
        self.batch.interfaces.push((id, name.to_string()));
    }

    #[inline]
    fn frame(&mut self, frame: CapturedFrame<'_>) {
        if let Some(bounds) = &self.bounds {
            if !bounds.admits(frame.time) {
                self.parsed.rejected.add(frame.time);
                return;
            }
            self.parsed.admitted.saw(frame.time);
        }
        let packet = parse(frame.data, frame.link, self.decapsulate);
        self.parsed.counters.count(&packet, frame.wire_len as u64);
        if !packet.has_flow() {
            return;
        }
        let mut key = packet.key;
        key.ifindex = frame.interface;
        self.batch.packets.push(FlowPacket {
            key,
            time: frame.time,
            ip_bytes: packet.ip_bytes,
            tcp_flags: packet.tcp_flags,
        });
        if self.batch.packets.len() == BATCH_PACKETS {
            self.send();
        }
    }
}
