//! Flow records as text: an aligned table for people (bytes scaled and ICMP
//! as type.code, as nfdump prints them), and a JSON array, JSON lines and
//! CSV for programs. JSON and CSV use exactly the record's field names and
//! exact numbers; times are RFC 3339 UTC with milliseconds (truncated, as
//! nfdump and IPFIX millisecond fields do), so flows compare directly with
//! other tools.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use super::FlowRecord;
use crate::time::{NANOS_PER_SEC, Nanos, rfc3339_millis, rfc3339_of_millis};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    /// One JSON document: an array of flows.
    Json,
    /// One JSON object per line.
    Jsonl,
    Csv,
    /// Nothing on stdout (when the flows are exported).
    None,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "none" => Ok(Format::None),
            other => Err(format!("{other:?} is not a flow format (table, json, jsonl, csv, none)")),
        }
    }
}

pub const FIELDS: [&str; 11] =
    ["src", "dst", "sport", "dport", "proto", "packets", "bytes", "start", "end", "tcp_flags", "interface"];

/// Writes flow records in one format; the header (table, csv) comes first.
pub enum FlowWriter<W: Write> {
    Table(W),
    /// The output, and whether a flow is in the array yet.
    JsonArray(W, bool),
    JsonLines(W),
    // Boxed: the CSV writer holds its buffer inline.
    Csv(Box<csv::Writer<W>>, CsvFields),
    None,
}

impl<W: Write> FlowWriter<W> {
    pub fn new(format: Format, mut out: W) -> io::Result<FlowWriter<W>> {
        Ok(match format {
            Format::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(FIELDS)?;
                FlowWriter::Csv(Box::new(csv), CsvFields::default())
            }
            Format::Table => {
                writeln!(
                    out,
                    "{:<23} {:>10} {:<5} {:>41} {:>41} {:<8} {:>9} {:>12} interface",
                    "start", "duration", "proto", "src:sport", "dst:dport", "flags", "packets", "bytes"
                )?;
                FlowWriter::Table(out)
            }
            Format::Json => FlowWriter::JsonArray(out, false),
            Format::Jsonl => FlowWriter::JsonLines(out),
            Format::None => FlowWriter::None,
        })
    }

    pub fn write(&mut self, flow: &FlowRecord) -> io::Result<()> {
        match self {
            FlowWriter::JsonLines(out) => {
                serde_json::to_writer(&mut *out, &JsonFlow::of(flow))?;
                out.write_all(b"\n")
            }
            FlowWriter::JsonArray(out, started) => {
                out.write_all(if *started { b",\n" } else { b"[\n" })?;
                *started = true;
                serde_json::to_writer(&mut *out, &JsonFlow::of(flow)).map_err(io::Error::from)
            }
            FlowWriter::Csv(csv, fields) => fields.write(csv, flow),
            FlowWriter::Table(out) => writeln!(
                out,
                "{:<23} {:>10.3} {:<5} {:>41} {:>41} {:<8} {:>9} {:>12} {}",
                rfc3339_millis(flow.start).trim_end_matches('Z').replace('T', " "),
                (flow.end - flow.start) as f64 / NANOS_PER_SEC as f64,
                proto_name(flow.proto),
                endpoint(flow.src, flow.sport.to_string()),
                endpoint(flow.dst, destination_port(flow.proto, flow.dport)),
                tcp_flags_letters(flow.tcp_flags),
                scaled(flow.packets),
                scaled(flow.bytes),
                flow.interface.as_deref().unwrap_or("-"),
            ),
            FlowWriter::None => Ok(()),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            FlowWriter::Csv(csv, _) => csv.flush(),
            FlowWriter::Table(out) | FlowWriter::JsonLines(out) | FlowWriter::JsonArray(out, _) => out.flush(),
            FlowWriter::None => Ok(()),
        }
    }

    /// Closes the JSON array (after the last flow) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if let FlowWriter::JsonArray(out, started) = self {
            out.write_all(if *started { b"\n]\n" } else { b"[]\n" })?;
        }
        self.flush()
    }
}

/// ICMP and ICMPv6 carry no ports: their flows are keyed by type and code
/// in the destination port (type × 256 + code, as NetFlow and IPFIX do),
/// shown as `type.code`, as nfdump shows them.
fn destination_port(proto: u8, port: u16) -> String {
    match proto {
        1 | 58 => format!("{}.{}", port >> 8, port & 0xff),
        _ => port.to_string(),
    }
}

/// A count for the table, as nfdump scales it: exact below a million, else
/// one decimal and a unit of 1000s (`1.5 M`, `2.4 G`). JSON and CSV keep
/// the exact count.
pub fn scaled(count: u64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e12, "T"), (1e9, "G"), (1e6, "M")];
    for (size, unit) in UNITS {
        if count as f64 >= size {
            return format!("{:.1} {unit}", count as f64 / size);
        }
    }
    count.to_string()
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

fn endpoint(addr: std::net::IpAddr, port: String) -> String {
    match addr {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// One field buffer and the date of the last day written, reused from row
/// to row: flows are written by the million, and a String per field and a
/// calendar computation per time cost as much as reading the capture.
#[derive(Default)]
pub struct CsvFields {
    field: String,
    /// The day (since the epoch) and its `YYYY-MM-DDT`.
    date: Option<(i64, String)>,
}

impl CsvFields {
    fn write<W: Write>(&mut self, csv: &mut csv::Writer<W>, flow: &FlowRecord) -> io::Result<()> {
        self.address(csv, flow.src)?;
        self.address(csv, flow.dst)?;
        let mut number = itoa::Buffer::new();
        for value in [flow.sport.into(), flow.dport.into(), flow.proto.into(), flow.packets, flow.bytes] {
            csv.write_field(number.format(value))?;
        }
        self.time(csv, flow.start)?;
        self.time(csv, flow.end)?;
        csv.write_field(number.format(flow.tcp_flags))?;
        csv.write_field(flow.interface.as_deref().unwrap_or(""))?;
        Ok(csv.write_record(None::<&[u8]>)?)
    }

    /// IPv4 by hand (most flows' addresses); IPv6 as the standard library
    /// prints it, for its zero compression.
    fn address<W: Write>(&mut self, csv: &mut csv::Writer<W>, address: std::net::IpAddr) -> io::Result<()> {
        self.field.clear();
        match address {
            std::net::IpAddr::V4(v4) => {
                let mut number = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.field.push('.');
                    }
                    self.field.push_str(number.format(octet));
                }
            }
            std::net::IpAddr::V6(v6) => {
                let _ = write!(self.field, "{v6}");
            }
        }
        Ok(csv.write_field(&self.field)?)
    }

    /// As [`rfc3339_millis`], with the calendar consulted once a day.
    fn time<W: Write>(&mut self, csv: &mut csv::Writer<W>, time: Nanos) -> io::Result<()> {
        const MILLIS_PER_DAY: i64 = 86_400_000;
        let millis = time.div_euclid(1_000_000);
        let (day, of_day) = (millis.div_euclid(MILLIS_PER_DAY), millis.rem_euclid(MILLIS_PER_DAY));
        if self.date.as_ref().is_none_or(|(known, _)| *known != day) {
            // Nanoseconds in an i64 span 1677 to 2262, well inside jiff's calendar.
            let midnight = rfc3339_of_millis(day * MILLIS_PER_DAY).expect("a date jiff can print");
            let date = midnight.strip_suffix("00:00:00.000Z").expect("midnight");
            self.date = Some((day, date.to_string()));
        }
        self.field.clear();
        self.field.push_str(&self.date.as_ref().expect("just set").1);
        let digits = |field: &mut String, value: i64, width: u32| {
            for place in (0..width).rev() {
                field.push(char::from(b'0' + (value / 10i64.pow(place) % 10) as u8));
            }
        };
        digits(&mut self.field, of_day / 3_600_000, 2);
        self.field.push(':');
        digits(&mut self.field, of_day / 60_000 % 60, 2);
        self.field.push(':');
        digits(&mut self.field, of_day / 1_000 % 60, 2);
        self.field.push('.');
        digits(&mut self.field, of_day % 1_000, 3);
        self.field.push('Z');
        Ok(csv.write_field(&self.field)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_times(times: &[Nanos]) -> Vec<String> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        let mut fields = CsvFields::default();
        for &time in times {
            fields.time(&mut csv, time).unwrap();
            csv.write_record(None::<&[u8]>).unwrap();
        }
        String::from_utf8(csv.into_inner().unwrap()).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn table_counts_scale_as_nfdumps_and_icmp_reads_type_dot_code() {
        assert_eq!(scaled(999_999), "999999");
        assert_eq!(scaled(1_000_000), "1.0 M");
        assert_eq!(scaled(1_536_000), "1.5 M");
        assert_eq!(scaled(2_400_000_000), "2.4 G");
        assert_eq!(scaled(3_100_000_000_000), "3.1 T");
        assert_eq!(destination_port(1, 8 << 8), "8.0");
        assert_eq!(destination_port(58, (1 << 8) | 4), "1.4");
        assert_eq!(destination_port(6, 2048), "2048");
    }

    #[test]
    fn csv_times_read_as_the_calendar_says_across_days_and_eras() {
        let day = 86_400 * NANOS_PER_SEC;
        let times = [
            1_202_860_800_123_456_789, // 2008-02-13T00:00:00.123Z
            1_202_947_199_999_999_999, // the last millisecond of that day
            1_202_947_200_000_000_000, // the next day's first
            1_202_860_800_000_000_000 + 3 * day + 45_296_007_000_000,
            0,
            -1,       // 1969-12-31T23:59:59.999Z
            i64::MAX, // 2262
            i64::MIN, // 1677
        ];
        let expected: Vec<String> = times.iter().map(|&t| rfc3339_millis(t)).collect();
        assert_eq!(csv_times(&times), expected);
        assert_eq!(expected[0], "2008-02-13T00:00:00.123Z");
        assert_eq!(expected[1], "2008-02-13T23:59:59.999Z");
        assert_eq!(expected[5], "1969-12-31T23:59:59.999Z");
    }
}
