//! Capture files (pcap and pcapng) as a flow source: frames are parsed by the
//! same parser as the XDP program and counted into the same counters.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use pcap_parser::{Block, PcapBlockOwned, PcapError, create_reader, pcapng::build_ts_resolution};
use rogue_common::{
    MeterCounters,
    parse::{LinkType, parse},
};

use crate::flows::{FlowCache, FlowDelta, FlowRecord, NANOS_PER_SEC, Nanos};

/// Read buffer for capture files; pcap-parser needs a whole record in it.
const READ_BUFFER_BYTES: usize = 4 << 20;

/// One frame of a capture file.
pub struct CapturedFrame<'a> {
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub wire_len: u32,
    pub time: Nanos,
    pub link: LinkType,
    /// pcapng interface id (0 for pcap).
    pub interface: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read {path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: not a pcap or pcapng file ({detail})")]
    Format { path: PathBuf, detail: String },
    #[error(
        "{path}: interface {interface} has link type {linktype}, which rogue cannot read \
         (it reads Ethernet, Linux cooked captures SLL and SLL2, raw IP, and BSD loopback)"
    )]
    LinkType { path: PathBuf, interface: u32, linktype: i32 },
    #[error("{path}: packet {packet} refers to interface {interface}, which the file never described")]
    UnknownInterface { path: PathBuf, packet: u64, interface: u32 },
    #[error("{path}: corrupt record after {packets} packets, at byte {offset}: {detail}")]
    Corrupt { path: PathBuf, packets: u64, offset: u64, detail: String },
}

/// What reading one file found besides its frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub frames: u64,
    /// Earliest and latest frame time (data time the file covers).
    pub first: Option<Nanos>,
    pub last: Option<Nanos>,
    /// The file ends inside a record (an interrupted capture); what came
    /// before was read.
    pub truncated: bool,
}

impl FileSummary {
    fn saw(&mut self, time: Nanos) {
        self.frames += 1;
        self.first = Some(self.first.map_or(time, |t| t.min(time)));
        self.last = Some(self.last.map_or(time, |t| t.max(time)));
    }
}

/// Frames between progress reports.
const PROGRESS_EVERY: u64 = 16_384;

struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    resolution: u64,
    offset_secs: i64,
}

/// Receives what a capture file holds, in file order.
pub trait FrameSink {
    /// A pcapng interface description with an `if_name`.
    fn interface(&mut self, id: u32, name: &str);
    fn frame(&mut self, frame: CapturedFrame<'_>);
    /// Bytes of the file read so far, now and then.
    fn progress(&mut self, _bytes: u64) {}
}

/// Reads the capture at `path` (`-` is stdin) into `sink`.
pub fn read_frames(path: &Path, sink: &mut impl FrameSink) -> Result<FileSummary, CaptureError> {
    let input: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        let file = File::open(path).map_err(|source| CaptureError::Open { path: path.into(), source })?;
        Box::new(file)
    };
    let mut reader = create_reader(READ_BUFFER_BYTES, input).map_err(|e| CaptureError::Format {
        path: path.into(),
        detail: match e {
            PcapError::Eof => "the file is empty".into(),
            other => other.to_string(),
        },
    })?;

    let mut interfaces: HashMap<u32, Interface> = HashMap::new();
    let mut next_interface = 0u32;
    let mut summary = FileSummary::default();
    let mut legacy: Option<Interface> = None;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(header) => {
                        let resolution =
                            if header.is_nanosecond_precision() { NANOS_PER_SEC as u64 } else { 1_000_000 };
                        legacy =
                            Some(Interface { link: link_type(path, 0, header.network.0)?, resolution, offset_secs: 0 });
                    }
                    PcapBlockOwned::Legacy(block) => {
                        let Some(interface) = &legacy else { unreachable!("pcap-parser yields the header first") };
                        let subsec = block.ts_usec as i64 * (NANOS_PER_SEC / interface.resolution as i64);
                        let time = block.ts_sec as i64 * NANOS_PER_SEC + subsec;
                        summary.saw(time);
                        sink.frame(CapturedFrame {
                            data: block.data,
                            wire_len: block.origlen,
                            time,
                            link: interface.link,
                            interface: 0,
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        // Interface ids are per section.
                        interfaces.clear();
                        next_interface = 0;
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let id = next_interface;
                        next_interface += 1;
                        let resolution = build_ts_resolution(idb.if_tsresol).unwrap_or(1_000_000);
                        if let Some(Ok(name)) = idb.if_name() {
                            sink.interface(id, name);
                        }
                        interfaces.insert(
                            id,
                            Interface {
                                link: link_type(path, id, idb.linktype.0)?,
                                resolution,
                                offset_secs: idb.if_tsoffset,
                            },
                        );
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let interface = interfaces.get(&epb.if_id).ok_or_else(|| CaptureError::UnknownInterface {
                            path: path.into(),
                            packet: summary.frames + 1,
                            interface: epb.if_id,
                        })?;
                        let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                        let time = units_to_nanos(units, interface.resolution) + interface.offset_secs * NANOS_PER_SEC;
                        summary.saw(time);
                        sink.frame(CapturedFrame {
                            data: &epb.data[..(epb.caplen as usize).min(epb.data.len())],
                            wire_len: epb.origlen,
                            time,
                            link: interface.link,
                            interface: epb.if_id,
                        });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        // No timestamp, and always interface 0.
                        let interface = interfaces.get(&0).ok_or_else(|| CaptureError::UnknownInterface {
                            path: path.into(),
                            packet: summary.frames + 1,
                            interface: 0,
                        })?;
                        summary.saw(0);
                        sink.frame(CapturedFrame {
                            data: spb.data,
                            wire_len: spb.origlen,
                            time: 0,
                            link: interface.link,
                            interface: 0,
                        });
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
                if summary.frames % PROGRESS_EVERY == 0 {
                    sink.progress(reader.consumed() as u64);
                }
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                let consumed = reader.consumed();
                reader.refill().map_err(|e| corrupt(path, &summary, consumed, e.to_string()))?;
            }
            Err(PcapError::UnexpectedEof) => {
                summary.truncated = true;
                break;
            }
            Err(e) => {
                let detail = e.to_string();
                return Err(corrupt(path, &summary, reader.consumed(), detail));
            }
        }
    }
    Ok(summary)
}

fn corrupt(path: &Path, summary: &FileSummary, offset: usize, detail: String) -> CaptureError {
    CaptureError::Corrupt { path: path.into(), packets: summary.frames, offset: offset as u64, detail }
}

fn link_type(path: &Path, interface: u32, linktype: i32) -> Result<LinkType, CaptureError> {
    u32::try_from(linktype).ok().and_then(LinkType::from_linktype).ok_or_else(|| CaptureError::LinkType {
        path: path.into(),
        interface,
        linktype,
    })
}

fn units_to_nanos(units: u64, resolution: u64) -> Nanos {
    let per_sec = resolution.max(1);
    let secs = units / per_sec;
    let rest = units % per_sec;
    (secs as i64) * NANOS_PER_SEC + ((rest as u128 * NANOS_PER_SEC as u128) / per_sec as u128) as i64
}

/// The userspace twin of the XDP meter: parses captured frames and feeds a
/// flow cache, counting every frame exactly as the kernel program would.
pub struct FileMeter {
    pub cache: FlowCache,
    pub counters: MeterCounters,
    pub files_truncated: u64,
}

impl FileMeter {
    pub fn new(cache: FlowCache) -> FileMeter {
        FileMeter { cache, counters: MeterCounters::default(), files_truncated: 0 }
    }

    /// Meters one frame; completed flows are appended to `out`.
    #[inline]
    pub fn frame(&mut self, frame: &CapturedFrame<'_>, out: &mut Vec<FlowRecord>) {
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
    ) -> Result<FileSummary, CaptureError> {
        self.file_with_progress(path, on_flows, |_| {})
    }

    /// [`file`](Self::file), telling `on_progress` the bytes read now and then.
    pub fn file_with_progress(
        &mut self,
        path: &Path,
        on_flows: impl FnMut(&mut Vec<FlowRecord>),
        on_progress: impl FnMut(u64),
    ) -> Result<FileSummary, CaptureError> {
        let mut sink = MeterSink { meter: self, out: Vec::new(), on_flows, on_progress };
        let summary = read_frames(path, &mut sink)?;
        if summary.truncated {
            self.files_truncated += 1;
        }
        Ok(summary)
    }
}

struct MeterSink<'m, F, P> {
    meter: &'m mut FileMeter,
    out: Vec<FlowRecord>,
    on_flows: F,
    on_progress: P,
}

impl<F: FnMut(&mut Vec<FlowRecord>), P: FnMut(u64)> FrameSink for MeterSink<'_, F, P> {
    fn progress(&mut self, bytes: u64) {
        (self.on_progress)(bytes);
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
