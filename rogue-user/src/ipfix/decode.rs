//! IPFIX (RFC 7011), NetFlow v9 (RFC 3954) and NetFlow v5 messages in, as
//! flow records. Messages come from the network, so nothing in them is
//! trusted: every length is checked before it is used, a malformed message
//! is an error naming what is wrong (the caller counts it and goes on), and
//! templates are remembered per exporter, observation domain and template id,
//! so two exporters never confuse each other's records.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    flows::FlowRecord,
    time::{NANOS_PER_SEC, Nanos},
};

/// Why a message was not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes are too short for a message header")]
    Short(usize),
    #[error("version {0} is neither NetFlow 5 or 9 nor IPFIX (10)")]
    Version(u16),
    #[error("the header says {header} bytes, the message has {actual}")]
    Length { header: usize, actual: usize },
    #[error("a set (id {id}) of {length} bytes runs past the message's end or is shorter than its header")]
    Set { id: u16, length: usize },
    #[error("template {id} is cut short or declares no fields")]
    Template { id: u16 },
}

/// The length of the IPFIX message that starts with `head`, as a file
/// (RFC 5655) or a TCP stream frames them: anything else there means the
/// reader is out of step, and nothing after it can be trusted.
pub fn ipfix_message_length(head: [u8; 4]) -> Result<usize, DecodeError> {
    let (version, length) = (u16::from_be_bytes([head[0], head[1]]), u16::from_be_bytes([head[2], head[3]]) as usize);
    if version != 10 {
        return Err(DecodeError::Version(version));
    }
    if length < 16 {
        return Err(DecodeError::Short(length));
    }
    Ok(length)
}

/// What one message gave.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub flows: Vec<FlowRecord>,
    /// Templates learnt from it.
    pub templates: usize,
    /// Records without addresses or with times no flow can have, dropped.
    pub records_unreadable: usize,
    /// Data sets whose template this exporter has not sent (yet): their
    /// records cannot be read, or even counted, and are dropped.
    pub sets_without_template: usize,
    /// The observation domain (IPFIX), source id (v9) or engine (v5).
    pub domain: u32,
}

/// A field of a template: its element id and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    id: u16,
    /// 65535: variable length (IPFIX).
    length: u16,
    /// Enterprise-specific fields are skipped.
    enterprise: bool,
}

const VARIABLE: u16 = 65_535;

/// What the decoder keeps of one exporter and observation domain: its
/// templates by id, the base of its IPFIX uptime stamps
/// (systemInitTimeMilliseconds from its options records), and when it last
/// sent either.
#[derive(Debug)]
struct ExporterState {
    templates: HashMap<u16, Arc<Template>>,
    system_init_ms: Option<i64>,
    last_seen: Instant,
}

/// The decoding, and templates per (exporter, domain, template id).
/// Exporters are whoever sends datagrams (a source address is easily
/// forged), so what is kept of them is bounded: [`MAX_TEMPLATES_PER_EXPORTER`]
/// each, `max_exporters` in all (past it the longest silent is forgotten),
/// and [`Decoder::expire`] forgets the silent ones. Both are counted.
#[derive(Debug)]
pub struct Decoder {
    exporters: HashMap<(SocketAddr, u32), ExporterState>,
    max_exporters: usize,
    /// Exporters forgotten to make room or because they fell silent.
    pub evicted: u64,
    pub expired: u64,
}

#[derive(Debug)]
struct Template {
    fields: Vec<Field>,
    /// An options template: its records describe the exporter, not flows.
    options: bool,
}

/// Most templates remembered per exporter and domain; a flood of template
/// ids cannot grow memory without bound (the exporter's are then cleared).
const MAX_TEMPLATES_PER_EXPORTER: usize = 1_024;

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_limit(usize::MAX)
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder that keeps the state of at most `max_exporters` exporters.
    pub fn with_limit(max_exporters: usize) -> Decoder {
        Decoder { exporters: HashMap::new(), max_exporters: max_exporters.max(1), evicted: 0, expired: 0 }
    }

    /// Exporters (and observation domains) whose state is kept.
    pub fn exporters(&self) -> usize {
        self.exporters.len()
    }

    /// Forgets exporters that sent no template or options record for `idle`.
    pub fn expire(&mut self, idle: Duration) {
        let before = self.exporters.len();
        self.exporters.retain(|_, state| state.last_seen.elapsed() < idle);
        self.expired += (before - self.exporters.len()) as u64;
    }

    /// The state of `exporter` and `domain`, made (room made first) if new.
    fn state(&mut self, exporter: SocketAddr, domain: u32) -> &mut ExporterState {
        let key = (exporter, domain);
        if !self.exporters.contains_key(&key) && self.exporters.len() >= self.max_exporters {
            let oldest = self.exporters.iter().min_by_key(|(_, state)| state.last_seen).map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.exporters.remove(&oldest);
                self.evicted += 1;
            }
        }
        let state = self.exporters.entry(key).or_insert_with(|| ExporterState {
            templates: HashMap::new(),
            system_init_ms: None,
            last_seen: Instant::now(),
        });
        state.last_seen = Instant::now();
        state
    }

    /// Decodes one message (a UDP datagram, or one message of a stream)
    /// from `exporter`. Interface names become `exporter/ifindex`.
    pub fn decode(&mut self, exporter: SocketAddr, message: &[u8]) -> Result<Decoded, DecodeError> {
        let version = u16::from_be_bytes(bytes(message, 0).ok_or(DecodeError::Short(message.len()))?);
        match version {
            5 => decode_v5(exporter, message),
            9 => self.decode_v9(exporter, message),
            10 => self.decode_ipfix(exporter, message),
            other => Err(DecodeError::Version(other)),
        }
    }

    fn decode_ipfix(&mut self, exporter: SocketAddr, message: &[u8]) -> Result<Decoded, DecodeError> {
        let header: [u8; 16] = bytes(message, 0).ok_or(DecodeError::Short(message.len()))?;
        let length = u16::from_be_bytes([header[2], header[3]]) as usize;
        if length < 16 || length > message.len() {
            return Err(DecodeError::Length { header: length, actual: message.len() });
        }
        let domain = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        let export_secs = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as i64;
        let mut decoded = Decoded { domain, ..Decoded::default() };
        for (id, body) in sets(&message[16..length])? {
            // Options records met earlier in the message date the flows after them.
            let init_ms = self.exporters.get(&(exporter, domain)).and_then(|state| state.system_init_ms);
            let clock = Clock { export_ms: export_secs * 1000, uptime: init_ms.map(Uptime::SinceInit) };
            match id {
                2 => decoded.templates += self.learn(exporter, domain, body, Format::Ipfix)?,
                3 => decoded.templates += self.learn(exporter, domain, body, Format::IpfixOptions)?,
                256.. => self.data(exporter, domain, id, body, &clock, true, &mut decoded),
                _ => {}
            }
        }
        Ok(decoded)
    }

    fn decode_v9(&mut self, exporter: SocketAddr, message: &[u8]) -> Result<Decoded, DecodeError> {
        let header: [u8; 20] = bytes(message, 0).ok_or(DecodeError::Short(message.len()))?;
        let uptime_ms = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as i64;
        let export_secs = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as i64;
        let domain = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
        let clock = Clock { export_ms: export_secs * 1000, uptime: Some(Uptime::AtExport(uptime_ms)) };
        let mut decoded = Decoded { domain, ..Decoded::default() };
        // v9 has no message length: the flowsets fill the datagram.
        for (id, body) in sets(&message[20..])? {
            match id {
                0 => decoded.templates += self.learn(exporter, domain, body, Format::V9)?,
                1 => decoded.templates += self.learn(exporter, domain, body, Format::V9Options)?,
                256.. => self.data(exporter, domain, id, body, &clock, false, &mut decoded),
                _ => {}
            }
        }
        Ok(decoded)
    }

    /// Reads a template or options template set; returns how many
    /// templates it held.
    fn learn(&mut self, exporter: SocketAddr, domain: u32, body: &[u8], format: Format) -> Result<usize, DecodeError> {
        let mut at = 0;
        let mut learnt = 0;
        while let Some(head) = bytes::<4>(body, at) {
            let id = u16::from_be_bytes([head[0], head[1]]);
            let number = u16::from_be_bytes([head[2], head[3]]) as usize;
            if id < 256 {
                // Padding at the end of the set.
                break;
            }
            let specs = match format {
                Format::V9 | Format::Ipfix => number,
                // A field count, then the scope field count.
                Format::IpfixOptions => number,
                // Scope and option lengths in bytes, four per field.
                Format::V9Options => {
                    let options = u16::from_be_bytes(bytes(body, at + 4).ok_or(DecodeError::Template { id })?) as usize;
                    (number + options) / 4
                }
            };
            at += if matches!(format, Format::V9 | Format::Ipfix) { 4 } else { 6 };
            if specs == 0 {
                // A template withdrawal (RFC 7011 8.1).
                if let Some(state) = self.exporters.get_mut(&(exporter, domain)) {
                    state.templates.remove(&id);
                }
                continue;
            }
            let mut fields = Vec::with_capacity(specs);
            for _ in 0..specs {
                let spec: [u8; 4] = bytes(body, at).ok_or(DecodeError::Template { id })?;
                let raw_id = u16::from_be_bytes([spec[0], spec[1]]);
                let enterprise = format.is_ipfix() && raw_id & 0x8000 != 0;
                at += if enterprise { 8 } else { 4 };
                if at > body.len() {
                    return Err(DecodeError::Template { id });
                }
                fields.push(Field { id: raw_id & 0x7fff, length: u16::from_be_bytes([spec[2], spec[3]]), enterprise });
            }
            let options = matches!(format, Format::V9Options | Format::IpfixOptions);
            let templates = &mut self.state(exporter, domain).templates;
            if templates.len() >= MAX_TEMPLATES_PER_EXPORTER && !templates.contains_key(&id) {
                templates.clear();
            }
            templates.insert(id, Arc::new(Template { fields, options }));
            learnt += 1;
        }
        Ok(learnt)
    }

    #[allow(clippy::too_many_arguments)]
    fn data(
        &mut self,
        exporter: SocketAddr,
        domain: u32,
        id: u16,
        body: &[u8],
        clock: &Clock,
        ipfix: bool,
        decoded: &mut Decoded,
    ) {
        let template = self.exporters.get(&(exporter, domain)).and_then(|state| state.templates.get(&id)).cloned();
        let Some(template) = template else {
            // Without the template the records cannot even be counted exactly.
            decoded.sets_without_template += 1;
            return;
        };
        let fields = &template.fields;
        let fixed: usize = fields.iter().map(|f| if f.length == VARIABLE { 1 } else { f.length as usize }).sum();
        let mut at = 0;
        let mut names = InterfaceNames::default();
        while fixed > 0 && at + fixed <= body.len() {
            let mut record = RecordFields::default();
            let mut complete = true;
            for field in fields.iter() {
                let length = if ipfix && field.length == VARIABLE {
                    match variable_length(body, &mut at) {
                        Some(length) => length,
                        None => {
                            complete = false;
                            break;
                        }
                    }
                } else {
                    field.length as usize
                };
                let Some(value) = body.get(at..at + length) else {
                    complete = false;
                    break;
                };
                at += length;
                if !field.enterprise {
                    record.set(field.id, value);
                }
            }
            if !complete {
                break;
            }
            if template.options {
                if let Some(init_ms) = record.system_init_ms {
                    self.state(exporter, domain).system_init_ms = Some(init_ms);
                }
                continue;
            }
            match record.flow(clock, exporter, &mut names) {
                Some(flow) => decoded.flows.push(flow),
                None => decoded.records_unreadable += 1,
            }
        }
    }
}

/// Interface names (`exporter/ifindex`) for the records of one set, made
/// once for a run of records on the same interface rather than formatted
/// and allocated per record (it was a tenth of the decoding).
#[derive(Default)]
struct InterfaceNames {
    last: Option<(SocketAddr, u32, Arc<str>)>,
}

impl InterfaceNames {
    fn of(&mut self, exporter: SocketAddr, ifindex: u32) -> Arc<str> {
        match &self.last {
            Some((known, index, name)) if *known == exporter && *index == ifindex => name.clone(),
            _ => {
                let name: Arc<str> = format!("{exporter}/{ifindex}").into();
                self.last = Some((exporter, ifindex, name.clone()));
                name
            }
        }
    }
}

/// The sets (IPFIX) or flowsets (v9) of a message body: (id, contents).
fn sets(mut body: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut sets = Vec::new();
    while body.len() >= 4 {
        let id = u16::from_be_bytes([body[0], body[1]]);
        let length = u16::from_be_bytes([body[2], body[3]]) as usize;
        if length < 4 || length > body.len() {
            return Err(DecodeError::Set { id, length });
        }
        sets.push((id, &body[4..length]));
        body = &body[length..];
    }
    Ok(sets)
}

/// An IPFIX variable-length field's length (RFC 7011 section 7).
fn variable_length(body: &[u8], at: &mut usize) -> Option<usize> {
    let first = *body.get(*at)? as usize;
    *at += 1;
    if first < 255 {
        return Some(first);
    }
    let long: [u8; 2] = bytes(body, *at)?;
    *at += 2;
    Some(u16::from_be_bytes(long) as usize)
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Which kind of template set is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    V9,
    V9Options,
    Ipfix,
    IpfixOptions,
}

impl Format {
    fn is_ipfix(self) -> bool {
        matches!(self, Format::Ipfix | Format::IpfixOptions)
    }
}

/// How a message dates its records: the export time, and what records'
/// uptime stamps (sysUpTime, flowStartSysUpTime) count from.
struct Clock {
    export_ms: i64,
    uptime: Option<Uptime>,
}

enum Uptime {
    /// The exporter's uptime when it exported (v5, v9 headers).
    AtExport(i64),
    /// When the exporter's uptime began (IPFIX systemInitTimeMilliseconds).
    SinceInit(i64),
}

impl Clock {
    /// Milliseconds since the epoch of an uptime stamp.
    fn epoch_ms_of_uptime(&self, stamp_ms: i64) -> Option<i64> {
        match self.uptime.as_ref()? {
            // Uptimes are 32-bit milliseconds that wrap every 49.7 days: the
            // age of a stamp is their difference modulo 2^32.
            Uptime::AtExport(uptime_ms) => {
                let age = (*uptime_ms as u32).wrapping_sub(stamp_ms as u32);
                self.export_ms.checked_sub(age as i64)
            }
            Uptime::SinceInit(init_ms) => init_ms.checked_add(stamp_ms),
        }
    }
}

/// The fields of one data record that make a flow.
#[derive(Default)]
struct RecordFields {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: u16,
    dport: u16,
    icmp_type_code: Option<u16>,
    proto: u8,
    tcp_flags: u8,
    packets: u64,
    bytes: u64,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    start_uptime_ms: Option<i64>,
    end_uptime_ms: Option<i64>,
    ifindex: u32,
    /// A time field held a value no flow can have.
    out_of_range: bool,
    /// systemInitTimeMilliseconds (160), in options records.
    system_init_ms: Option<i64>,
}

/// An unsigned big-endian number of up to eight bytes (reduced-size encoding).
fn unsigned(value: &[u8]) -> u64 {
    value.iter().take(8).fold(0, |n, &b| n << 8 | b as u64)
}

impl RecordFields {
    fn set(&mut self, id: u16, value: &[u8]) {
        let number = || unsigned(value);
        match (id, value.len()) {
            (1, _) => self.bytes = number(),
            (2, _) => self.packets = number(),
            (4, _) => self.proto = number() as u8,
            (6, _) => self.tcp_flags = number() as u8,
            (7, _) => self.sport = number() as u16,
            (8, 4) => self.src = Some(IpAddr::V4(Ipv4Addr::from(unsigned(value) as u32))),
            (10, _) => self.ifindex = number() as u32,
            (11, _) => self.dport = number() as u16,
            (12, 4) => self.dst = Some(IpAddr::V4(Ipv4Addr::from(unsigned(value) as u32))),
            (21, _) => self.end_uptime_ms = Some(number() as i64),
            (22, _) => self.start_uptime_ms = Some(number() as i64),
            (27, 16) => self.src = Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(value).expect("16 bytes")))),
            (28, 16) => self.dst = Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(value).expect("16 bytes")))),
            (32 | 139, _) => self.icmp_type_code = Some(number() as u16),
            (150 | 152 | 154, _) => self.start_ms = Some(self.time_ms(id, number())),
            (151 | 153 | 155, _) => self.end_ms = Some(self.time_ms(id, number())),
            (160, _) => self.system_init_ms = i64::try_from(number()).ok(),
            _ => {}
        }
    }

    /// Milliseconds since the epoch of a flowStart/End Seconds (150, 151),
    /// Milliseconds (152, 153) or Microseconds (154, 155) value; a value out
    /// of range makes the record unreadable.
    fn time_ms(&mut self, id: u16, value: u64) -> i64 {
        let ms = match id {
            150 | 151 => i64::try_from(value).ok().and_then(|s| s.checked_mul(1000)),
            152 | 153 => i64::try_from(value).ok(),
            _ => ntp_ms(value),
        };
        self.out_of_range |= ms.is_none();
        ms.unwrap_or(0)
    }

    /// The flow, or `None` when the record has no addresses or its times
    /// are out of any range a flow can have.
    fn flow(self, clock: &Clock, exporter: SocketAddr, names: &mut InterfaceNames) -> Option<FlowRecord> {
        if self.out_of_range {
            return None;
        }
        let (src, dst) = (self.src?, self.dst?);
        let start = match self.start_ms {
            Some(ms) => ms,
            None => match self.start_uptime_ms {
                Some(stamp) => clock.epoch_ms_of_uptime(stamp)?,
                None => clock.export_ms,
            },
        };
        let end = match self.end_ms {
            Some(ms) => ms,
            None => match self.end_uptime_ms {
                Some(stamp) => clock.epoch_ms_of_uptime(stamp)?,
                None => start,
            },
        };
        let is_icmp = matches!(self.proto, 1 | 58);
        let millis = |ms: i64| -> Option<Nanos> { ms.checked_mul(NANOS_PER_SEC / 1000) };
        let (start, end) = (millis(start)?, millis(end.max(start))?);
        Some(FlowRecord {
            src,
            dst,
            sport: if is_icmp { 0 } else { self.sport },
            dport: match self.icmp_type_code {
                Some(type_code) if is_icmp => type_code,
                _ => self.dport,
            },
            proto: self.proto,
            packets: self.packets,
            bytes: self.bytes,
            start,
            end,
            tcp_flags: self.tcp_flags,
            ifindex: self.ifindex,
            interface: Some(names.of(exporter, self.ifindex)),
        })
    }
}

/// Milliseconds since the Unix epoch of an NTP timestamp (seconds since
/// 1900 and a binary fraction), as dateTimeMicroseconds elements carry them.
fn ntp_ms(ntp: u64) -> Option<i64> {
    const NTP_TO_UNIX_SECS: i64 = 2_208_988_800;
    Some(((ntp >> 32) as i64 - NTP_TO_UNIX_SECS) * 1000 + (((ntp & 0xffff_ffff) * 1000) >> 32) as i64)
}

/// NetFlow v5: a fixed header and fixed 48-byte records.
fn decode_v5(exporter: SocketAddr, message: &[u8]) -> Result<Decoded, DecodeError> {
    let header: [u8; 24] = bytes(message, 0).ok_or(DecodeError::Short(message.len()))?;
    let count = u16::from_be_bytes([header[2], header[3]]) as usize;
    if 24 + count * 48 > message.len() {
        return Err(DecodeError::Length { header: 24 + count * 48, actual: message.len() });
    }
    let uptime_ms = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as i64;
    let secs = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as i64;
    let nanos = u32::from_be_bytes([header[12], header[13], header[14], header[15]]) as i64;
    let clock = Clock { export_ms: secs * 1000 + nanos / 1_000_000, uptime: Some(Uptime::AtExport(uptime_ms)) };
    let mut decoded = Decoded { domain: header[20] as u32 * 256 + header[21] as u32, ..Decoded::default() };
    let mut names = InterfaceNames::default();
    for record in message[24..24 + count * 48].chunks_exact(48) {
        let word = |at: usize| u32::from_be_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]]);
        let half = |at: usize| u16::from_be_bytes([record[at], record[at + 1]]);
        let fields = RecordFields {
            src: Some(IpAddr::V4(Ipv4Addr::from(word(0)))),
            dst: Some(IpAddr::V4(Ipv4Addr::from(word(4)))),
            ifindex: half(12) as u32,
            packets: word(16) as u64,
            bytes: word(20) as u64,
            start_uptime_ms: Some(word(24) as i64),
            end_uptime_ms: Some(word(28) as i64),
            sport: half(32),
            dport: half(34),
            tcp_flags: record[37],
            proto: record[38],
            ..RecordFields::default()
        };
        match fields.flow(&clock, exporter, &mut names) {
            Some(flow) => decoded.flows.push(flow),
            None => decoded.records_unreadable += 1,
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfix::export::{Encoder, STREAM_MESSAGE_BYTES};

    const EXPORTER: &str = "192.0.2.1:4739";

    fn exporter() -> SocketAddr {
        EXPORTER.parse().unwrap()
    }

    #[test]
    fn a_stream_or_file_is_framed_by_ipfix_headers_only() {
        assert_eq!(ipfix_message_length([0, 10, 0x05, 0xdc]), Ok(1_500));
        assert_eq!(ipfix_message_length([0, 10, 0, 16]), Ok(16));
        assert_eq!(ipfix_message_length([0, 10, 0, 15]), Err(DecodeError::Short(15)));
        assert_eq!(ipfix_message_length([0, 9, 0x05, 0xdc]), Err(DecodeError::Version(9)));
    }

    fn flows() -> Vec<FlowRecord> {
        let mut v6 =
            crate::flows::tcp_flow("2001:db8::10", 40_001, "2001:db8::25", 25, 1_700_000_001_000_000_000, 9, 900);
        v6.ifindex = 4;
        let mut icmp =
            crate::flows::tcp_flow("192.0.2.10", 0, "198.51.100.1", 0x0800, 1_700_000_002_000_000_000, 1, 84);
        icmp.proto = 1;
        icmp.tcp_flags = 0;
        vec![
            crate::flows::tcp_flow("192.0.2.10", 40_000, "198.51.100.25", 25, 1_700_000_000_123_000_000, 12, 1_500),
            v6,
            icmp,
        ]
    }

    /// What a record keeps through IPFIX: everything but the interface name.
    fn comparable(flow: &FlowRecord) -> FlowRecord {
        FlowRecord { interface: None, ..flow.clone() }
    }

    #[test]
    fn rogues_own_export_reads_back_exactly() {
        let mut encoder = Encoder::new(9, STREAM_MESSAGE_BYTES);
        let mut decoder = Decoder::new();
        let templates = decoder.decode(exporter(), &encoder.templates(1_700_000_100)).unwrap();
        assert_eq!((templates.templates, templates.domain), (2, 9));
        let mut read = Vec::new();
        for message in encoder.data(&flows(), 1_700_000_100) {
            read.extend(decoder.decode(exporter(), &message).unwrap().flows);
        }
        let mut expected: Vec<FlowRecord> = flows().iter().map(comparable).collect();
        let mut read_back: Vec<FlowRecord> = read.iter().map(comparable).collect();
        expected.sort_by_key(|f| f.start);
        read_back.sort_by_key(|f| f.start);
        assert_eq!(read_back, expected);
        assert_eq!(read[0].interface.as_deref(), Some("192.0.2.1:4739/0"));
    }

    #[test]
    fn data_before_its_template_is_counted_and_another_exporters_template_does_not_apply() {
        let mut encoder = Encoder::new(1, STREAM_MESSAGE_BYTES);
        let mut decoder = Decoder::new();
        let data = encoder.data(&flows()[..1], 0).remove(0);
        let early = decoder.decode(exporter(), &data).unwrap();
        assert_eq!((early.flows.len(), early.sets_without_template), (0, 1));
        decoder.decode("192.0.2.2:4739".parse().unwrap(), &encoder.templates(0)).unwrap();
        assert_eq!(decoder.decode(exporter(), &data).unwrap().sets_without_template, 1, "not its template");
        decoder.decode(exporter(), &encoder.templates(0)).unwrap();
        assert_eq!(decoder.decode(exporter(), &data).unwrap().flows.len(), 1);
    }

    /// However many exporters send templates, the decoder keeps the state
    /// of at most its bound, forgetting the longest silent first, and
    /// forgets those silent too long; both are counted.
    #[test]
    fn what_is_kept_of_exporters_is_bounded_and_expires() {
        let encoder = Encoder::new(1, STREAM_MESSAGE_BYTES);
        let mut decoder = Decoder::with_limit(100);
        let templates = encoder.templates(0);
        for port in 0..1_000u16 {
            let forged = SocketAddr::from(([192, 0, 2, (port % 250) as u8], 10_000 + port));
            decoder.decode(forged, &templates).unwrap();
        }
        assert_eq!(decoder.exporters(), 100);
        assert_eq!(decoder.evicted, 900);
        // The latest still decode; the first were forgotten.
        let mut encoder = Encoder::new(1, STREAM_MESSAGE_BYTES);
        let data = encoder.data(&flows()[..1], 0).remove(0);
        let latest = SocketAddr::from(([192, 0, 2, (999 % 250) as u8], 10_999));
        assert_eq!(decoder.decode(latest, &data).unwrap().flows.len(), 1);
        let first = SocketAddr::from(([192, 0, 2, 0], 10_000));
        assert_eq!(decoder.decode(first, &data).unwrap().sets_without_template, 1);
        decoder.expire(Duration::ZERO);
        assert_eq!((decoder.exporters(), decoder.expired), (0, 100));
    }

    #[test]
    fn netflow_v5_records_are_dated_from_the_exporters_uptime() {
        let mut message = vec![0, 5, 0, 1];
        message.extend(60_000u32.to_be_bytes()); // uptime 60 s
        message.extend(1_700_000_000u32.to_be_bytes());
        message.extend(500_000_000u32.to_be_bytes()); // .5 s
        message.extend([0; 8]); // sequence, engine, sampling
        let mut record = Vec::new();
        record.extend([192, 0, 2, 10, 198, 51, 100, 25, 0, 0, 0, 0]);
        record.extend([0, 3, 0, 4]); // input 3, output 4
        record.extend(10u32.to_be_bytes());
        record.extend(1_000u32.to_be_bytes());
        record.extend(50_000u32.to_be_bytes()); // first: 10 s before export
        record.extend(59_000u32.to_be_bytes());
        record.extend([0x9c, 0x40, 0, 25, 0, 0x1b, 6, 0]);
        record.extend([0; 8]);
        message.extend(record);
        let decoded = Decoder::new().decode(exporter(), &message).unwrap();
        let flow = &decoded.flows[0];
        assert_eq!(
            (flow.src.to_string(), flow.dport, flow.proto, flow.packets, flow.bytes),
            ("192.0.2.10".into(), 25, 6, 10, 1_000)
        );
        assert_eq!(flow.start, 1_699_999_990_500 * 1_000_000);
        assert_eq!(flow.end, 1_699_999_999_500 * 1_000_000);
        assert_eq!((flow.tcp_flags, flow.ifindex), (0x1b, 3));
    }

    #[test]
    fn netflow_v9_templates_and_records_read_with_uptime_times() {
        let mut message = vec![0, 9, 0, 2];
        message.extend(100_000u32.to_be_bytes()); // uptime
        message.extend(1_700_000_000u32.to_be_bytes());
        message.extend([0, 0, 0, 1, 0, 0, 0, 5]); // sequence 1, source id 5
        // Template 300: IPV4_SRC, IPV4_DST, L4 ports, PROTOCOL, IN_PKTS(4), IN_BYTES(4), FIRST, LAST.
        let fields: [(u16, u16); 9] = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (22, 4), (21, 4)];
        let mut template = vec![0, 0, 0, (4 + 4 + 4 * fields.len()) as u8, 1, 44, 0, fields.len() as u8];
        for (id, length) in fields {
            template.extend(id.to_be_bytes());
            template.extend(length.to_be_bytes());
        }
        message.extend(template);
        let mut data = vec![1, 44, 0, 4 + 29 + 3];
        data.extend([192, 0, 2, 77, 203, 0, 113, 5, 0, 25, 0xa0, 0, 6]);
        data.extend(7u32.to_be_bytes());
        data.extend(700u32.to_be_bytes());
        data.extend(99_000u32.to_be_bytes());
        data.extend(99_500u32.to_be_bytes());
        data.extend([0, 0, 0]); // padding
        message.extend(data);
        let decoded = Decoder::new().decode(exporter(), &message).unwrap();
        assert_eq!((decoded.templates, decoded.domain, decoded.flows.len()), (1, 5, 1), "padding is no record");
        let flow = &decoded.flows[0];
        assert_eq!((flow.sport, flow.dport, flow.packets, flow.bytes), (25, 0xa000, 7, 700));
        assert_eq!((flow.start, flow.end), (1_699_999_999_000 * 1_000_000, 1_699_999_999_500 * 1_000_000));
    }

    #[test]
    fn malformed_messages_are_errors_that_say_why() {
        let mut decoder = Decoder::new();
        assert_eq!(decoder.decode(exporter(), &[0]), Err(DecodeError::Short(1)));
        assert_eq!(decoder.decode(exporter(), &[0, 7, 0, 0]), Err(DecodeError::Version(7)));
        let mut templates = Encoder::new(1, STREAM_MESSAGE_BYTES).templates(0);
        templates.truncate(30);
        assert!(matches!(decoder.decode(exporter(), &templates), Err(DecodeError::Length { .. })));
        let mut lying = Encoder::new(1, STREAM_MESSAGE_BYTES).templates(0).to_vec();
        lying[18..20].copy_from_slice(&999u16.to_be_bytes());
        assert!(matches!(decoder.decode(exporter(), &lying), Err(DecodeError::Set { id: 2, length: 999 })));
    }

    /// Found by the test below: a start time near u64::MAX overflowed the
    /// conversion to nanoseconds. Such a record is dropped and counted.
    #[test]
    fn a_record_with_an_impossible_time_is_dropped_and_counted() {
        let mut encoder = Encoder::new(1, STREAM_MESSAGE_BYTES);
        let mut decoder = Decoder::new();
        decoder.decode(exporter(), &encoder.templates(0)).unwrap();
        let mut data = encoder.data(&flows()[..1], 0).remove(0).to_vec();
        // flowStartMilliseconds of the first record: 20 + 31 bytes in.
        data[51..59].copy_from_slice(&[0xff; 8]);
        let decoded = decoder.decode(exporter(), &data).unwrap();
        assert_eq!((decoded.flows.len(), decoded.records_unreadable), (0, 1));
    }

    /// Random and mutated messages: the decoder returns, whatever it is fed.
    #[test]
    fn no_message_makes_the_decoder_panic() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut encoder = Encoder::new(1, STREAM_MESSAGE_BYTES);
        let mut valid = vec![encoder.templates(0).to_vec()];
        valid.extend(encoder.data(&flows(), 0).iter().map(|m| m.to_vec()));
        let mut decoder = Decoder::new();
        for round in 0..200_000 {
            let mut message = valid[round % valid.len()].clone();
            match round % 4 {
                0 => {
                    for _ in 0..rng.random_range(1..8) {
                        let at = rng.random_range(0..message.len());
                        message[at] = rng.random();
                    }
                }
                1 => message.truncate(rng.random_range(0..message.len())),
                2 => message = (0..rng.random_range(0..200)).map(|_| rng.random()).collect(),
                _ => {
                    // A plausible header over random sets.
                    let version = [5u16, 9, 10][rng.random_range(0..3)];
                    message[..2].copy_from_slice(&version.to_be_bytes());
                    for byte in &mut message[16..] {
                        if rng.random_range(0..10) == 0 {
                            *byte = rng.random();
                        }
                    }
                }
            }
            let _ = decoder.decode(exporter(), &message);
        }
    }
}
