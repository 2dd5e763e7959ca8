//! Flow records as text: an aligned table for people, JSON lines and CSV for
//! programs. JSON and CSV use exactly the record's field names; times are
//! RFC 3339 UTC with milliseconds (truncated, as nfdump and IPFIX
//! millisecond fields do), so flows compare directly with other tools.

use std::io::{self, Write};

use super::{FlowRecord, NANOS_PER_SEC, Nanos};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    /// Nothing on stdout (when the flows are exported).
    None,
}

pub const FIELDS: [&str; 11] =
    ["src", "dst", "sport", "dport", "proto", "packets", "bytes", "start", "end", "tcp_flags", "interface"];

/// Writes flow records in one format; the header (table, csv) comes first.
pub enum FlowWriter<W: Write> {
    Table(W),
    Json(W),
    Csv(csv::Writer<W>),
    None,
}

impl<W: Write> FlowWriter<W> {
    pub fn new(format: Format, mut out: W) -> io::Result<FlowWriter<W>> {
        Ok(match format {
            Format::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(FIELDS)?;
                FlowWriter::Csv(csv)
            }
            Format::Table => {
                writeln!(
                    out,
                    "{:<23} {:>10} {:<5} {:>41} {:>41} {:<8} {:>9} {:>12} interface",
                    "start", "duration", "proto", "src:sport", "dst:dport", "flags", "packets", "bytes"
                )?;
                FlowWriter::Table(out)
            }
            Format::Json => FlowWriter::Json(out),
            Format::None => FlowWriter::None,
        })
    }

    pub fn write(&mut self, flow: &FlowRecord) -> io::Result<()> {
        match self {
            FlowWriter::Json(out) => {
                serde_json::to_writer(&mut *out, &JsonFlow::of(flow))?;
                out.write_all(b"\n")
            }
            FlowWriter::Csv(csv) => {
                csv.write_record([
                    flow.src.to_string(),
                    flow.dst.to_string(),
                    flow.sport.to_string(),
                    flow.dport.to_string(),
                    flow.proto.to_string(),
                    flow.packets.to_string(),
                    flow.bytes.to_string(),
                    rfc3339_millis(flow.start),
                    rfc3339_millis(flow.end),
                    flow.tcp_flags.to_string(),
                    flow.interface.as_deref().unwrap_or("").to_string(),
                ])?;
                Ok(())
            }
            FlowWriter::Table(out) => writeln!(
                out,
                "{:<23} {:>10.3} {:<5} {:>41} {:>41} {:<8} {:>9} {:>12} {}",
                rfc3339_millis(flow.start).trim_end_matches('Z').replace('T', " "),
                (flow.end - flow.start) as f64 / NANOS_PER_SEC as f64,
                proto_name(flow.proto),
                endpoint(flow.src, flow.sport),
                endpoint(flow.dst, flow.dport),
                tcp_flags_letters(flow.tcp_flags),
                flow.packets,
                flow.bytes,
                flow.interface.as_deref().unwrap_or("-"),
            ),
            FlowWriter::None => Ok(()),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            FlowWriter::Csv(csv) => csv.flush(),
            FlowWriter::Table(out) | FlowWriter::Json(out) => out.flush(),
            FlowWriter::None => Ok(()),
        }
    }
}

/// A flow as one JSON object, fields in record order.
#[derive(serde::Serialize)]
struct JsonFlow<'a> {
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    packets: u64,
    bytes: u64,
    start: String,
    end: String,
    tcp_flags: u8,
    interface: Option<&'a str>,
}

impl<'a> JsonFlow<'a> {
    fn of(flow: &'a FlowRecord) -> JsonFlow<'a> {
        JsonFlow {
            src: flow.src,
            dst: flow.dst,
            sport: flow.sport,
            dport: flow.dport,
            proto: flow.proto,
            packets: flow.packets,
            bytes: flow.bytes,
            start: rfc3339_millis(flow.start),
            end: rfc3339_millis(flow.end),
            tcp_flags: flow.tcp_flags,
            interface: flow.interface.as_deref(),
        }
    }
}

fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    match addr {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// `2015-12-08T21:31:02.855Z`: UTC, milliseconds truncated.
pub fn rfc3339_millis(time: Nanos) -> String {
    let millis = time.div_euclid(1_000_000);
    match jiff::Timestamp::from_millisecond(millis) {
        // jiff's RFC 3339 printer (a third the cost of strftime's interpreter).
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => format!("@{time}ns"),
    }
}

/// TCP flags as nfdump prints them: `CEUAPRSF`, `.` where unset.
pub fn tcp_flags_letters(flags: u8) -> String {
    const LETTERS: [char; 8] = ['C', 'E', 'U', 'A', 'P', 'R', 'S', 'F'];
    LETTERS.iter().enumerate().map(|(i, &letter)| if flags & (0x80 >> i) != 0 { letter } else { '.' }).collect()
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        41 => "ipv6".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmp6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}
