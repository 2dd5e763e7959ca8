//! Capture files (pcap and pcapng) as a flow source: frames are parsed by the
//! same parser as the XDP program and counted into the same counters.
//!
//! A file is hostile input like the network it came from: every record's
//! length is checked against the file and its snapshot length, and a record
//! that cannot be read is an error naming its byte offset, on one line. A
//! file that ends inside a record (an interrupted capture) is read up to the
//! cut and says where it was cut; whoever stores flows refuses it (see
//! ingest), since the whole file would later count its packets twice.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use pcap_parser::{Block, PcapBlockOwned, PcapError, create_reader, pcapng::build_ts_resolution};
use rogue_common::parse::LinkType;

use crate::time::{NANOS_PER_SEC, Nanos};

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
    #[error("{path} is a directory, not a capture file")]
    Directory { path: PathBuf },
    #[error("{path}: not a pcap or pcapng file ({detail})")]
    Format { path: PathBuf, detail: String },
    #[error(
        "{path}: interface {interface} has link type {linktype}, which rogue cannot read \
         (it reads Ethernet, Linux cooked captures SLL and SLL2, raw IP, BSD loopback, PPP, Cisco HDLC, \
         Frame Relay, 802.11 bare or with radiotap, Prism or AVS headers, and PKTAP)"
    )]
    LinkType { path: PathBuf, interface: u32, linktype: i32 },
    #[error("{path}: packet {packet} refers to interface {interface}, which the file never described")]
    UnknownInterface { path: PathBuf, packet: u64, interface: u32 },
    #[error("{path}: corrupt record at byte {offset}, after {packets} packets: {detail}")]
    Corrupt { path: PathBuf, packets: u64, offset: u64, detail: String },
    #[error("{path}: interrupted after {packets} packets")]
    Interrupted { path: PathBuf, packets: u64 },
}

/// What reading one file found besides its frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub frames: u64,
    /// Earliest and latest frame time (data time the file covers).
    pub first: Option<Nanos>,
    pub last: Option<Nanos>,
    /// The file ends inside the record at this byte offset (an interrupted
    /// capture); what came before was read.
    pub cut_at: Option<u64>,
}

impl FileSummary {
    pub fn saw(&mut self, time: Nanos) {
        self.frames += 1;
        self.first = Some(self.first.map_or(time, |t| t.min(time)));
        self.last = Some(self.last.map_or(time, |t| t.max(time)));
    }
}

/// Frames between progress reports (and checks for a request to stop).
const PROGRESS_EVERY: u64 = 16_384;

struct Interface {
    link: LinkType,
    /// Bytes of frame check sequence at the end of each frame it captured
    /// whole, to be cut off (libpcap's FCS rule).
    fcs_bytes: usize,
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
    /// Whether to stop reading (asked now and then; a signal arrived).
    fn stopped(&self) -> bool {
        false
    }
}

/// Reads the capture at `path` (`-` is stdin) into `sink`.
pub fn read_frames(path: &Path, sink: &mut impl FrameSink) -> Result<FileSummary, CaptureError> {
    read_frames_tapped(path, sink, &mut |_| {})
}

/// [`read_frames`], handing `tap` every byte of the file as it is read (to
/// hash it without reading it twice). After a file read whole, `tap` has
/// seen all of it.
pub fn read_frames_tapped(
    path: &Path,
    sink: &mut impl FrameSink,
    tap: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<FileSummary, CaptureError> {
    let file = Tapped { inner: open(path)?, tap };
    let mut reader = create_reader(READ_BUFFER_BYTES, file).map_err(|e| CaptureError::Format {
        path: path.into(),
        detail: match e {
            PcapError::Eof => "the file is empty".into(),
            other => describe(&other),
        },
    })?;
    let mut file = CaptureFile {
        path,
        interfaces: HashMap::new(),
        next_interface: 0,
        legacy: None,
        big_endian: false,
        summary: FileSummary::default(),
    };
    loop {
        let offset = reader.consumed() as u64;
        match reader.next() {
            Ok((length, block)) => {
                file.block(block, offset, sink)?;
                reader.consume(length);
                if file.summary.frames.is_multiple_of(PROGRESS_EVERY) {
                    sink.progress(reader.consumed() as u64);
                    if sink.stopped() {
                        return Err(CaptureError::Interrupted { path: path.into(), packets: file.summary.frames });
                    }
                }
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                reader.refill().map_err(|e| file.corrupt(offset, describe(&e)))?;
            }
            Err(PcapError::UnexpectedEof) => {
                file.cut_short(reader.data(), offset)?;
                break;
            }
            Err(PcapError::BufferTooSmall) => {
                let claimed = file.claimed_length(reader.data()).unwrap_or_default();
                return Err(file.corrupt(offset, format!("its length says {claimed} bytes, more than any packet")));
            }
            Err(e) => return Err(file.corrupt(offset, describe(&e))),
        }
    }
    Ok(file.summary)
}

/// A reader that shows what it reads to its tap.
struct Tapped<'t, R> {
    inner: R,
    tap: &'t mut (dyn FnMut(&[u8]) + Send),
}

impl<R: Read> Read for Tapped<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        (self.tap)(&buffer[..read]);
        Ok(read)
    }
}

/// The file at `path`, or stdin for `-`.
fn open(path: &Path) -> Result<Box<dyn Read + Send>, CaptureError> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin()));
    }
    if path.is_dir() {
        return Err(CaptureError::Directory { path: path.into() });
    }
    let file = File::open(path).map_err(|source| CaptureError::Open { path: path.into(), source })?;
    Ok(Box::new(file))
}

/// A parser error in words, never with the bytes it choked on (they would
/// flood the terminal with a dump of the record).
fn describe<I>(error: &PcapError<I>) -> String {
    match error {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("not a valid block (the parser's check {kind:?} failed)")
        }
        PcapError::HeaderNotRecognized => "the header is neither pcap's nor pcapng's".into(),
        PcapError::ReadError => "the file could not be read".into(),
        PcapError::Eof | PcapError::UnexpectedEof => "the file ends too early".into(),
        PcapError::BufferTooSmall => "a record is longer than any packet".into(),
        PcapError::Incomplete(_) => "a record is incomplete".into(),
    }
}

/// One file being read: its interfaces and what was read so far.
struct CaptureFile<'p> {
    path: &'p Path,
    /// pcapng interfaces of the current section, by id.
    interfaces: HashMap<u32, Interface>,
    next_interface: u32,
    /// A classic pcap's one interface, its byte order and snapshot length.
    legacy: Option<(Interface, bool, u32)>,
    /// The byte order of the current pcapng section.
    big_endian: bool,
    summary: FileSummary,
}

impl CaptureFile<'_> {
    /// Handles one block that starts at byte `offset`.
    fn block(&mut self, block: PcapBlockOwned<'_>, offset: u64, sink: &mut impl FrameSink) -> Result<(), CaptureError> {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                let resolution = if header.is_nanosecond_precision() { NANOS_PER_SEC as u64 } else { 1_000_000 };
                let (link, fcs_bytes) = legacy_link(self.path, header.network.0)?;
                let interface = Interface { link, fcs_bytes, resolution, offset_secs: 0 };
                self.legacy = Some((interface, header.is_bigendian(), header.snaplen));
            }
            PcapBlockOwned::Legacy(block) => {
                let Some((interface, _, snaplen)) = &self.legacy else {
                    unreachable!("pcap-parser yields the header first")
                };
                if *snaplen != 0 && block.caplen > *snaplen {
                    let detail = format!(
                        "its captured length {} is more than the file's snapshot length {snaplen}",
                        block.caplen
                    );
                    return Err(self.corrupt(offset, detail));
                }
                let subsec = block.ts_usec as i64 * (NANOS_PER_SEC / interface.resolution as i64);
                let time = block.ts_sec as i64 * NANOS_PER_SEC + subsec;
                let link = interface.link;
                self.summary.saw(time);
                let (data, wire_len) = without_fcs(block.data, block.origlen, interface.fcs_bytes);
                sink.frame(CapturedFrame { data, wire_len, time, link, interface: 0 });
            }
            PcapBlockOwned::NG(Block::SectionHeader(section)) => {
                // Interface ids and byte order are per section.
                self.big_endian = section.big_endian();
                self.interfaces.clear();
                self.next_interface = 0;
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let id = self.next_interface;
                self.next_interface += 1;
                let resolution = build_ts_resolution(idb.if_tsresol).unwrap_or(1_000_000);
                if let Some(Ok(name)) = idb.if_name() {
                    sink.interface(id, name);
                }
                let link = link_type(self.path, id, idb.linktype.0)?;
                // if_fcslen (option 13): the FCS bytes each frame ends with.
                let fcs_bytes = idb.options.iter().find(|o| o.code.0 == 13).and_then(|o| o.value().first().copied());
                let fcs_bytes = fcs_bytes.unwrap_or(0) as usize;
                self.interfaces.insert(id, Interface { link, fcs_bytes, resolution, offset_secs: idb.if_tsoffset });
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let interface = self.interface(epb.if_id)?;
                let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                let time = pcapng_time(units, interface.resolution, interface.offset_secs);
                let (link, fcs_bytes) = (interface.link, interface.fcs_bytes);
                self.summary.saw(time);
                let captured = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                let (data, wire_len) = without_fcs(captured, epb.origlen, fcs_bytes);
                sink.frame(CapturedFrame { data, wire_len, time, link, interface: epb.if_id });
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                // No timestamp, and always interface 0.
                let interface = self.interface(0)?;
                let (link, fcs_bytes) = (interface.link, interface.fcs_bytes);
                self.summary.saw(0);
                let (data, wire_len) = without_fcs(spb.data, spb.origlen, fcs_bytes);
                sink.frame(CapturedFrame { data, wire_len, time: 0, link, interface: 0 });
            }
            PcapBlockOwned::NG(_) => {}
        }
        Ok(())
    }

    fn interface(&self, id: u32) -> Result<&Interface, CaptureError> {
        self.interfaces.get(&id).ok_or_else(|| CaptureError::UnknownInterface {
            path: self.path.into(),
            packet: self.summary.frames + 1,
            interface: id,
        })
    }

    /// The file ends inside the record at `offset`, whose first bytes are
    /// `rest`: an interrupted capture, unless the record's own length is
    /// impossible or it is the first record (nothing was ever written whole).
    fn cut_short(&mut self, rest: &[u8], offset: u64) -> Result<(), CaptureError> {
        let claimed = self.claimed_length(rest);
        if let (Some((_, _, snaplen)), Some(caplen)) = (&self.legacy, claimed)
            && *snaplen != 0
            && caplen > u64::from(*snaplen)
        {
            let detail = format!("its captured length {caplen} is more than the file's snapshot length {snaplen}");
            return Err(self.corrupt(offset, detail));
        }
        if self.summary.frames == 0 {
            let length = claimed.map_or("its length".to_string(), |n| format!("its length of {n} bytes"));
            let detail = format!("the first record runs past the end of the file ({length}, {} left)", rest.len());
            return Err(self.corrupt(offset, detail));
        }
        self.summary.cut_at = Some(offset);
        Ok(())
    }

    /// The length the record at the start of `rest` says it has: a pcap
    /// record's captured length, or a pcapng block's total length.
    fn claimed_length(&self, rest: &[u8]) -> Option<u64> {
        let word = |at: usize, big_endian: bool| -> Option<u64> {
            let bytes: [u8; 4] = rest.get(at..at + 4)?.try_into().ok()?;
            Some(u64::from(if big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) }))
        };
        match &self.legacy {
            Some((_, big_endian, _)) => word(8, *big_endian),
            None => word(4, self.big_endian),
        }
    }

    fn corrupt(&self, offset: u64, detail: String) -> CaptureError {
        CaptureError::Corrupt { path: self.path.into(), packets: self.summary.frames, offset, detail }
    }
}

/// A classic pcap header's link type and FCS length, as libpcap reads its
/// `network` field: the link type in the low 16 bits, and when bit 26 is
/// set, the FCS length in 16-bit words in the top 4 bits.
fn legacy_link(path: &Path, network: i32) -> Result<(LinkType, usize), CaptureError> {
    let field = network as u32;
    let fcs_bytes = if field & 0x0400_0000 != 0 { (field >> 28) as usize * 2 } else { 0 };
    Ok((link_type(path, 0, (field & 0xffff) as i32)?, fcs_bytes))
}

/// A frame without its trailing FCS, as libpcap hands it on: cut from the
/// captured bytes when they hold the whole frame (a snapshot length that
/// cut the frame short already left the FCS out), and from its length on
/// the wire.
fn without_fcs(data: &[u8], wire_len: u32, fcs_bytes: usize) -> (&[u8], u32) {
    if fcs_bytes == 0 || wire_len as usize <= fcs_bytes {
        return (data, wire_len);
    }
    let data = if data.len() >= wire_len as usize { &data[..data.len() - fcs_bytes] } else { data };
    (data, wire_len - fcs_bytes as u32)
}

fn link_type(path: &Path, interface: u32, linktype: i32) -> Result<LinkType, CaptureError> {
    u32::try_from(linktype).ok().and_then(LinkType::from_linktype).ok_or_else(|| CaptureError::LinkType {
        path: path.into(),
        interface,
        linktype,
    })
}

/// A pcapng timestamp (`units` of 1/`resolution` s, plus the interface's
/// offset in seconds) in nanoseconds. A file can say anything: what no
/// clock can reach saturates (and is then rejected as dated in the future)
/// rather than wrapping into a plausible time.
fn pcapng_time(units: u64, resolution: u64, offset_secs: i64) -> Nanos {
    let per_sec = resolution.max(1);
    let secs = i64::try_from(units / per_sec).unwrap_or(i64::MAX).saturating_add(offset_secs);
    let rest = ((units % per_sec) as u128 * NANOS_PER_SEC as u128 / per_sec as u128) as i64;
    secs.saturating_mul(NANOS_PER_SEC).saturating_add(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_times_saturate_instead_of_wrapping() {
        assert_eq!(pcapng_time(1_700_000_000_123_456, 1_000_000, 0), 1_700_000_000_123_456_000);
        assert_eq!(pcapng_time(1_700_000_000, 1, 3_600), 1_700_003_600 * NANOS_PER_SEC);
        assert_eq!(pcapng_time(u64::MAX, 1, 0), i64::MAX, "no clock reaches it: rejected, not wrapped");
        assert_eq!(pcapng_time(u64::MAX, 1_000_000_000, i64::MAX), i64::MAX);
        assert!(pcapng_time(0, 1, i64::MIN) < 0);
    }

    #[test]
    fn the_fcs_is_read_from_the_link_type_field_and_cut_as_libpcap_cuts_it() {
        let path = Path::new("x.pcap");
        assert_eq!(legacy_link(path, 1).unwrap(), (LinkType::Ethernet, 0));
        // LT_FCS_LENGTH_PRESENT with 2 words of FCS: Ethernet with 4 bytes.
        assert_eq!(legacy_link(path, (0x2000_0000u32 | 0x0400_0000 | 1) as i32).unwrap(), (LinkType::Ethernet, 4));
        assert_eq!(legacy_link(path, (0x0001_0000u32 | 1) as i32).unwrap().0, LinkType::Ethernet, "reserved bits");
        assert_eq!(legacy_link(path, 105).unwrap().0, LinkType::Wlan);
        assert!(legacy_link(path, 6).is_err(), "Token Ring is refused, named");
        let frame = [1u8, 2, 3, 4, 5, 6, 0xfc, 0xfc, 0xfc, 0xfc];
        assert_eq!(without_fcs(&frame, 10, 4), (&frame[..6], 6), "captured whole: the FCS cut off");
        assert_eq!(without_fcs(&frame[..5], 10, 4), (&frame[..5], 6), "cut by the snapshot length: no FCS in it");
        assert_eq!(without_fcs(&frame, 10, 0), (&frame[..], 10));
        assert_eq!(without_fcs(&frame[..3], 3, 4), (&frame[..3], 3), "shorter than an FCS: left alone");
    }
}
