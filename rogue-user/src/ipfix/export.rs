//! Completed flows out as IPFIX messages: to collectors over UDP (templates
//! sent again every [`TEMPLATE_REFRESH`], as RFC 7011 section 8.4 asks of
//! unreliable transports) or TCP (templates once per connection), and into
//! IPFIX files (RFC 5655: the messages one after another).
//!
//! Each message is built once and handed to every destination that takes
//! messages of its size, as shared [`Bytes`]: a second collector costs a
//! send, not another encoding.

use bytes::{BufMut, Bytes, BytesMut};
use std::{
    fs::File,
    io::{self, BufWriter, Write},
    net::{IpAddr, TcpStream, ToSocketAddrs, UdpSocket},
    time::{Duration, Instant},
};

use super::{IPV4_TEMPLATE, IPV6_TEMPLATE, MESSAGE_HEADER, SET_HEADER, TEMPLATE_SET, VERSION};
use crate::{config::IpfixDestination as Destination, flows::FlowRecord, time::millis};

/// How often templates are sent again over UDP.
pub const TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
/// Largest message over UDP: fits a 1500-byte path with room for tunnels.
pub const UDP_MESSAGE_BYTES: usize = 1400;
/// Largest message over TCP and in files.
pub const STREAM_MESSAGE_BYTES: usize = 65_000;

/// Builds IPFIX messages for one observation domain, numbering them as
/// RFC 7011 asks: each header carries the count of data records sent in the
/// domain before it.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    sequence: u32,
    max_message: usize,
}

impl Encoder {
    pub fn new(domain: u32, max_message: usize) -> Encoder {
        Encoder { domain, sequence: 0, max_message }
    }

    /// A message holding both templates.
    pub fn templates(&self, export_time: u32) -> Bytes {
        let mut message = self.header(export_time);
        let set_start = message.len();
        message.put_u16(TEMPLATE_SET);
        message.put_u16(0);
        for template in [IPV4_TEMPLATE, IPV6_TEMPLATE] {
            message.put_u16(template.id);
            message.put_u16(template.elements.len() as u16);
            for element in template.elements {
                message.put_u16(element.id);
                message.put_u16(element.length);
            }
        }
        finish_set(&mut message, set_start);
        finish_message(&mut message);
        message.freeze()
    }

    /// `flows` as data messages, each at most the encoder's message size.
    pub fn data(&mut self, flows: &[FlowRecord], export_time: u32) -> Vec<Bytes> {
        let mut messages = Vec::new();
        for (template, family) in [(IPV4_TEMPLATE, true), (IPV6_TEMPLATE, false)] {
            let records = flows.iter().filter(|f| f.src.is_ipv4() == family && f.dst.is_ipv4() == family);
            let per_message = (self.max_message - MESSAGE_HEADER - SET_HEADER) / template.record_length();
            let records: Vec<&FlowRecord> = records.collect();
            for chunk in records.chunks(per_message.max(1)) {
                let mut message = self.header(export_time);
                let set_start = message.len();
                message.put_u16(template.id);
                message.put_u16(0);
                for flow in chunk {
                    write_record(&mut message, flow);
                }
                finish_set(&mut message, set_start);
                finish_message(&mut message);
                self.sequence = self.sequence.wrapping_add(chunk.len() as u32);
                messages.push(message.freeze());
            }
        }
        messages
    }

    fn header(&self, export_time: u32) -> BytesMut {
        let mut message = BytesMut::with_capacity(self.max_message);
        message.put_u16(VERSION);
        message.put_u16(0);
        message.put_u32(export_time);
        message.put_u32(self.sequence);
        message.put_u32(self.domain);
        message
    }
}

/// One data record, its fields in the order both templates list them.
fn write_record(out: &mut BytesMut, flow: &FlowRecord) {
    for address in [flow.src, flow.dst] {
        match address {
            IpAddr::V4(v4) => out.put_slice(&v4.octets()),
            IpAddr::V6(v6) => out.put_slice(&v6.octets()),
        }
    }
    out.put_u16(flow.sport);
    out.put_u16(flow.dport);
    out.put_u8(flow.proto);
    out.put_u16(flow.tcp_flags as u16);
    out.put_u64(flow.packets);
    out.put_u64(flow.bytes);
    out.put_i64(millis(flow.start));
    out.put_i64(millis(flow.end));
    out.put_u32(flow.ifindex);
}

fn finish_set(message: &mut [u8], set_start: usize) {
    let length = (message.len() - set_start) as u16;
    message[set_start + 2..set_start + 4].copy_from_slice(&length.to_be_bytes());
}

fn finish_message(message: &mut [u8]) {
    let length = message.len() as u16;
    message[2..4].copy_from_slice(&length.to_be_bytes());
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("IPFIX export to {destination}")]
    Io { destination: String, source: io::Error },
}

enum Transport {
    Udp(UdpSocket),
    /// Connected lazily, and again after an error.
    Tcp(String, Option<TcpStream>),
    File(BufWriter<File>),
}

/// One destination: its transport, and whether it has the templates.
struct Exporter {
    destination: Destination,
    transport: Transport,
    /// Which of [`Exporters`]' encoders builds this destination's messages.
    encoder: usize,
    /// When templates were last sent (UDP), or whether they were (TCP, file).
    templates_sent: Option<Instant>,
    /// Failed sends and flushes.
    errors: u64,
}

impl Exporter {
    fn open(destination: &Destination) -> Result<(Exporter, usize), ExportError> {
        let error = |source| ExportError::Io { destination: destination.to_string(), source };
        let (transport, max_message) = match destination {
            Destination::Udp(server) => {
                let addr = resolve(server).map_err(error)?;
                let local: std::net::SocketAddr =
                    if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let socket = UdpSocket::bind(local).map_err(error)?;
                socket.connect(addr).map_err(error)?;
                (Transport::Udp(socket), UDP_MESSAGE_BYTES)
            }
            Destination::Tcp(server) => (Transport::Tcp(server.clone(), None), STREAM_MESSAGE_BYTES),
            Destination::File(path) => {
                let file = File::create(path).map_err(error)?;
                (Transport::File(BufWriter::new(file)), STREAM_MESSAGE_BYTES)
            }
        };
        let exporter =
            Exporter { destination: destination.clone(), transport, encoder: 0, templates_sent: None, errors: 0 };
        Ok((exporter, max_message))
    }

    /// Whether the templates must go first: never sent, sent on a TCP
    /// connection the collector has closed since, or due again (UDP).
    fn templates_due(&mut self) -> bool {
        // A collector may close a connection that stayed idle; what was
        // written into it then would be lost. Connect again, templates first.
        if let Transport::Tcp(_, stream @ Some(_)) = &mut self.transport
            && stream.as_ref().is_some_and(closed_by_peer)
        {
            *stream = None;
            self.templates_sent = None;
        }
        match (&self.transport, self.templates_sent) {
            (_, None) => true,
            (Transport::Udp(_), Some(sent)) => sent.elapsed() >= TEMPLATE_REFRESH,
            _ => false,
        }
    }

    /// Sends the data `messages`, after `templates` when they are due.
    fn export(&mut self, templates: &Bytes, messages: &[Bytes]) -> Result<(), ExportError> {
        let due = self.templates_due();
        let result = match due {
            true => self.send(std::iter::once(templates).chain(messages)),
            false => self.send(messages.iter()),
        };
        match result {
            Ok(()) if due => self.templates_sent = Some(Instant::now()),
            Ok(()) => {}
            // A new TCP connection needs the templates again.
            Err(_) => self.templates_sent = None,
        }
        result.map_err(|source| ExportError::Io { destination: self.destination.to_string(), source })
    }

    fn send<'m>(&mut self, mut messages: impl Iterator<Item = &'m Bytes>) -> io::Result<()> {
        match &mut self.transport {
            Transport::Udp(socket) => messages.try_for_each(|m| socket.send(m).map(drop)),
            Transport::File(file) => messages.try_for_each(|m| file.write_all(m)),
            Transport::Tcp(server, stream) => {
                if stream.is_none() {
                    *stream = Some(TcpStream::connect(resolve(server)?)?);
                }
                let connected = stream.as_mut().expect("just connected");
                let sent = messages.try_for_each(|m| connected.write_all(m));
                if sent.is_err() {
                    *stream = None;
                }
                sent
            }
        }
    }

    /// Flushes a file; streams and datagrams are already out.
    fn flush(&mut self) -> Result<(), ExportError> {
        let result = match &mut self.transport {
            Transport::File(file) => file.flush(),
            Transport::Tcp(_, Some(stream)) => stream.flush(),
            _ => Ok(()),
        };
        result.map_err(|source| ExportError::Io { destination: self.destination.to_string(), source })
    }
}

/// Every destination the flows go to: each failure is logged and counted
/// per destination, and the others still get the flows (a collector down
/// costs its own copy, nothing else). Destinations that take messages of
/// one size share an encoder, so they get the same messages, built once;
/// the sequence numbers count the same records for every destination.
pub struct Exporters {
    exporters: Vec<Exporter>,
    /// One per message size among the destinations, with that size.
    encoders: Vec<(usize, Encoder)>,
}

impl Exporters {
    pub fn open(destinations: &[Destination], domain: u32) -> Result<Exporters, ExportError> {
        let mut exporters = Vec::new();
        let mut encoders: Vec<(usize, Encoder)> = Vec::new();
        for destination in destinations {
            let (mut exporter, max_message) = Exporter::open(destination)?;
            exporter.encoder = match encoders.iter().position(|(size, _)| *size == max_message) {
                Some(index) => index,
                None => {
                    encoders.push((max_message, Encoder::new(domain, max_message)));
                    encoders.len() - 1
                }
            };
            exporters.push(exporter);
        }
        Ok(Exporters { exporters, encoders })
    }

    pub fn is_empty(&self) -> bool {
        self.exporters.is_empty()
    }

    /// Sends `flows` everywhere; returns the destinations that failed.
    pub fn export(&mut self, flows: &[FlowRecord]) -> Vec<String> {
        if flows.is_empty() {
            return Vec::new();
        }
        let export_time = jiff::Timestamp::now().as_second() as u32;
        // The templates carry the sequence number of the data that follows them.
        let messages: Vec<(Bytes, Vec<Bytes>)> = self
            .encoders
            .iter_mut()
            .map(|(_, encoder)| (encoder.templates(export_time), encoder.data(flows, export_time)))
            .collect();
        self.each(|exporter| {
            let (templates, data) = &messages[exporter.encoder];
            exporter.export(templates, data)
        })
    }

    /// Flushes everywhere (files; streams); returns the destinations that failed.
    pub fn flush(&mut self) -> Vec<String> {
        self.each(Exporter::flush)
    }

    fn each(&mut self, mut send: impl FnMut(&mut Exporter) -> Result<(), ExportError>) -> Vec<String> {
        let mut failed = Vec::new();
        for exporter in &mut self.exporters {
            if let Err(e) = send(exporter) {
                exporter.errors += 1;
                tracing::warn!("{}: these flows miss it (counted)", crate::with_causes(&e));
                failed.push(exporter.destination.to_string());
            }
        }
        failed
    }

    /// (destination, failures) of each destination.
    pub fn errors(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.exporters.iter().map(|e| (e.destination.to_string(), e.errors))
    }
}

/// Whether the other end closed `stream` (a read would end, or fail).
fn closed_by_peer(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

fn resolve(server: &str) -> io::Result<std::net::SocketAddr> {
    server
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{server} has no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str) -> FlowRecord {
        FlowRecord { ifindex: 3, ..crate::flows::tcp_flow(src, 40_000, dst, 25, 1_700_000_000_123_000_000, 12, 1_500) }
    }

    #[test]
    fn templates_describe_both_families_with_the_standard_elements() {
        let message = Encoder::new(7, UDP_MESSAGE_BYTES).templates(1_700_000_000);
        assert_eq!(&message[0..2], &[0, 10], "version 10");
        assert_eq!(u16::from_be_bytes([message[2], message[3]]) as usize, message.len());
        assert_eq!(&message[12..16], &7u32.to_be_bytes(), "observation domain");
        assert_eq!(&message[16..18], &[0, 2], "a template set");
        // Template 256 with 11 fields, the first sourceIPv4Address (8) of 4 bytes.
        assert_eq!(&message[20..28], &[1, 0, 0, 11, 0, 8, 0, 4]);
        assert_eq!(message.len(), 16 + 4 + 2 * (4 + 11 * 4));
    }

    #[test]
    fn data_records_are_split_by_family_and_size_and_numbered() {
        let mut encoder = Encoder::new(1, UDP_MESSAGE_BYTES);
        let mut flows: Vec<FlowRecord> = (0..30).map(|_| flow("192.0.2.10", "198.51.100.25")).collect();
        flows.push(flow("2001:db8::10", "2001:db8::25"));
        let messages = encoder.data(&flows, 0);
        // 27 IPv4 records fit 1400 bytes, then 3, then the IPv6 one.
        let records: Vec<usize> = messages.iter().map(|m| (m.len() - 20) / if m[17] == 0 { 51 } else { 75 }).collect();
        assert_eq!(records, [27, 3, 1]);
        let sequences: Vec<u32> = messages.iter().map(|m| u32::from_be_bytes([m[8], m[9], m[10], m[11]])).collect();
        assert_eq!(sequences, [0, 27, 30]);
        assert!(messages.iter().all(|m| m.len() <= UDP_MESSAGE_BYTES));
        let record = &messages[0][20..71];
        assert_eq!(&record[..8], &[192, 0, 2, 10, 198, 51, 100, 25]);
        assert_eq!(&record[8..13], &[0x9c, 0x40, 0, 25, 6]);
        assert_eq!(u64::from_be_bytes(record[15..23].try_into().unwrap()), 12);
        assert_eq!(u64::from_be_bytes(record[31..39].try_into().unwrap()), 1_700_000_000_123, "start in ms");
        assert_eq!(&record[47..51], &3u32.to_be_bytes(), "ingressInterface");
    }

    /// Destinations that take messages of one size get the very same
    /// messages; a datagram destination gets its own, smaller ones, with
    /// sequence numbers that count the same records.
    #[test]
    fn every_destination_gets_every_flow_and_those_of_one_size_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("rogue-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let destinations = [
            Destination::File(dir.join("a.ipfix")),
            Destination::Udp(collector.local_addr().unwrap().to_string()),
            Destination::File(dir.join("b.ipfix")),
        ];
        let mut exporters = Exporters::open(&destinations, 5).unwrap();
        let flows: Vec<FlowRecord> = (0..40).map(|_| flow("192.0.2.10", "198.51.100.25")).collect();
        for _ in 0..2 {
            assert!(exporters.export(&flows).is_empty());
        }
        assert!(exporters.flush().is_empty());
        let a = std::fs::read(dir.join("a.ipfix")).unwrap();
        assert_eq!(a, std::fs::read(dir.join("b.ipfix")).unwrap());
        // Templates, then 40 records in one message, twice.
        let mut decoder = super::super::decode::Decoder::new();
        let exporter: std::net::SocketAddr = "192.0.2.1:4739".parse().unwrap();
        let from_file: usize =
            split_messages(&a).iter().map(|m| decoder.decode(exporter, m).unwrap().flows.len()).sum();
        assert_eq!(from_file, 80);
        // Over UDP: templates, 27 + 13 records, twice; sequence numbers by record.
        collector.set_nonblocking(true).unwrap();
        let mut datagram = [0u8; 2_000];
        let mut sequences = Vec::new();
        while let Ok(length) = collector.recv(&mut datagram) {
            sequences.push(u32::from_be_bytes(datagram[8..12].try_into().unwrap()));
            assert!(length <= UDP_MESSAGE_BYTES);
        }
        assert_eq!(sequences, [0, 0, 27, 40, 67]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn split_messages(mut stream: &[u8]) -> Vec<&[u8]> {
        let mut messages = Vec::new();
        while stream.len() >= 4 {
            let length = u16::from_be_bytes([stream[2], stream[3]]) as usize;
            messages.push(&stream[..length]);
            stream = &stream[length..];
        }
        messages
    }

    #[test]
    fn destinations_name_their_transport() {
        assert_eq!("udp://127.0.0.1:4739".parse(), Ok(Destination::Udp("127.0.0.1:4739".into())));
        assert_eq!("tcp://collector:4739".parse(), Ok(Destination::Tcp("collector:4739".into())));
        assert_eq!("file:out.ipfix".parse(), Ok(Destination::File("out.ipfix".into())));
        assert!("udp://127.0.0.1".parse::<Destination>().unwrap_err().contains("udp://HOST:PORT"));
        assert!("collector:4739".parse::<Destination>().is_err());
    }
}
