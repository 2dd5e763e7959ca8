//! Packets of whole conversations, built with etherparse (correct lengths,
//! sequence numbers and checksums), and the pcap file they are written to.

use std::{
    io::{self, Write},
    net::IpAddr,
};

use etherparse::PacketBuilder;

use crate::time::{NANOS_PER_SEC, Nanos};

/// Every frame is between the same two MAC addresses: rogue keys flows on
/// IP, and the link layer of a capture at a gateway says nothing more.
const SOURCE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
const DESTINATION_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];
const MSS: usize = 1448;

/// One frame and when it was seen.
pub struct Frame {
    pub time: Nanos,
    pub bytes: Vec<u8>,
}

/// Who sends a segment of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    Client,
    Server,
}

/// A TCP conversation: handshake, the payload exchanges in order (each
/// split at the MSS and acknowledged), then both sides close.
pub struct TcpConversation {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    pub start: Nanos,
    pub exchanges: Vec<(From, usize)>,
}

struct Endpoint {
    addr: IpAddr,
    port: u16,
    seq: u32,
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

impl TcpConversation {
    pub fn frames(&self, out: &mut Vec<Frame>) {
        let mut client = Endpoint { addr: self.client, port: self.client_port, seq: 1_000 };
        let mut server = Endpoint { addr: self.server, port: self.server_port, seq: 50_000 };
        let mut time = self.start;
        let step = NANOS_PER_SEC / 200; // 5 ms between segments
        let mut send = |from: &mut Endpoint, to: &mut Endpoint, flags: u8, len: usize, time: &mut Nanos| {
            out.push(Frame { time: *time, bytes: tcp(from, to, flags, len) });
            from.seq = from.seq.wrapping_add(len as u32 + (flags & (TCP_SYN | TCP_FIN) != 0) as u32);
            *time += step;
        };
        send(&mut client, &mut server, TCP_SYN, 0, &mut time);
        send(&mut server, &mut client, TCP_SYN | TCP_ACK, 0, &mut time);
        send(&mut client, &mut server, TCP_ACK, 0, &mut time);
        for &(from, len) in &self.exchanges {
            let (sender, receiver) = match from {
                From::Client => (&mut client, &mut server),
                From::Server => (&mut server, &mut client),
            };
            let mut left = len;
            while left > 0 {
                let segment = left.min(MSS);
                send(sender, receiver, TCP_PSH | TCP_ACK, segment, &mut time);
                left -= segment;
            }
            send(receiver, sender, TCP_ACK, 0, &mut time);
        }
        send(&mut client, &mut server, TCP_FIN | TCP_ACK, 0, &mut time);
        send(&mut server, &mut client, TCP_FIN | TCP_ACK, 0, &mut time);
        send(&mut client, &mut server, TCP_ACK, 0, &mut time);
    }
}

/// A connection attempt refused: a SYN answered by RST (a port scan probe).
pub fn refused(client: IpAddr, client_port: u16, server: IpAddr, server_port: u16, time: Nanos, out: &mut Vec<Frame>) {
    let syn = Endpoint { addr: client, port: client_port, seq: 7 };
    let server = Endpoint { addr: server, port: server_port, seq: 0 };
    out.push(Frame { time, bytes: tcp(&syn, &server, TCP_SYN, 0) });
    // The reset acknowledges the SYN's sequence number plus one.
    let acknowledged = Endpoint { seq: syn.seq + 1, ..syn };
    out.push(Frame { time: time + NANOS_PER_SEC / 1000, bytes: tcp(&server, &acknowledged, TCP_RST | TCP_ACK, 0) });
}

/// A UDP request and its reply (DNS and the like).
pub fn udp_exchange(
    client: IpAddr,
    client_port: u16,
    server: IpAddr,
    server_port: u16,
    time: Nanos,
    sizes: (usize, usize),
    out: &mut Vec<Frame>,
) {
    out.push(Frame { time, bytes: udp(client, client_port, server, server_port, sizes.0) });
    out.push(Frame { time: time + NANOS_PER_SEC / 100, bytes: udp(server, server_port, client, client_port, sizes.1) });
}

fn ethernet() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(SOURCE_MAC, DESTINATION_MAC)
}

fn tcp(from: &Endpoint, to: &Endpoint, flags: u8, len: usize) -> Vec<u8> {
    let ip = ethernet();
    let mut builder = match (from.addr, to.addr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ip.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => ip.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("a conversation is within one address family"),
    }
    .tcp(from.port, to.port, from.seq, 64_240);
    if flags & TCP_SYN != 0 {
        builder = builder.syn();
    }
    if flags & TCP_ACK != 0 {
        builder = builder.ack(to.seq);
    }
    if flags & TCP_FIN != 0 {
        builder = builder.fin();
    }
    if flags & TCP_RST != 0 {
        builder = builder.rst();
    }
    if flags & TCP_PSH != 0 {
        builder = builder.psh();
    }
    let payload = payload(len);
    let mut bytes = Vec::with_capacity(builder.size(len));
    builder.write(&mut bytes, &payload).expect("writing to a Vec");
    bytes
}

pub fn udp(from: IpAddr, from_port: u16, to: IpAddr, to_port: u16, len: usize) -> Vec<u8> {
    let ip = ethernet();
    let builder = match (from, to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ip.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => ip.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("an exchange is within one address family"),
    }
    .udp(from_port, to_port);
    let mut bytes = Vec::with_capacity(builder.size(len));
    builder.write(&mut bytes, &payload(len)).expect("writing to a Vec");
    bytes
}

/// Printable filler, so the packets look like text protocols in a dissector.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"rogue test traffic\r\n"[i % 20]).collect()
}

/// A classic pcap file (microsecond timestamps, Ethernet).
pub struct PcapWriter<W: Write> {
    out: W,
    pub frames: u64,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        const LINKTYPE_ETHERNET: u32 = 1;
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&[0; 8])?; // time zone, accuracy
        out.write_all(&65_535u32.to_le_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(PcapWriter { out, frames: 0 })
    }

    pub fn write(&mut self, frame: &Frame) -> io::Result<()> {
        let seconds = frame.time.div_euclid(NANOS_PER_SEC) as u32;
        let micros = (frame.time.rem_euclid(NANOS_PER_SEC) / 1_000) as u32;
        let len = frame.bytes.len() as u32;
        for field in [seconds, micros, len, len] {
            self.out.write_all(&field.to_le_bytes())?;
        }
        self.out.write_all(&frame.bytes)?;
        self.frames += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
