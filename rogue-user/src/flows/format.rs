//! Flow records as text: an aligned table for people (bytes scaled and ICMP
//! as type.code, as nfdump prints them), and a JSON array, JSON lines and
//! CSV for programs. JSON and CSV use exactly the record's field names and
//! exact numbers; times are RFC 3339 UTC with milliseconds (truncated, as
//! nfdump and IPFIX millisecond fields do), so flows compare directly with
//! other tools.

use std::io::{self, Write};

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
    Csv(W, CsvRow),
    None,
}

impl<W: Write> FlowWriter<W> {
    pub fn new(format: Format, mut out: W) -> io::Result<FlowWriter<W>> {
        Ok(match format {
            Format::Csv => {
                writeln!(out, "{}", FIELDS.join(","))?;
                FlowWriter::Csv(out, CsvRow::default())
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
            FlowWriter::Csv(out, row) => out.write_all(row.of(flow)),
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
            FlowWriter::Csv(out, _)
            | FlowWriter::Table(out)
            | FlowWriter::JsonLines(out)
            | FlowWriter::JsonArray(out, _) => out.flush(),
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

/// One CSV row, built in a buffer reused from row to row, with the date of
/// the last day written: flows are written by the million, and a String per
/// field and a calendar computation per time cost as much as reading the
/// capture. Every field but the interface name is digits, dots, colons and
/// dashes, which never need quotes; the name is quoted as RFC 4180 (and the
/// csv crate) would, so a comma or quote in it cannot shift the columns.
#[derive(Default)]
pub struct CsvRow {
    row: Vec<u8>,
    /// The day (since the epoch) and its `YYYY-MM-DDT`.
    date: Option<(i64, String)>,
}

impl CsvRow {
    /// The row of `flow`, its line end included.
    fn of(&mut self, flow: &FlowRecord) -> &[u8] {
        self.row.clear();
        self.address(flow.src);
        self.address(flow.dst);
        let mut number = itoa::Buffer::new();
        for value in [flow.sport.into(), flow.dport.into(), flow.proto.into(), flow.packets, flow.bytes] {
            self.row.extend_from_slice(number.format(value).as_bytes());
            self.row.push(b',');
        }
        self.time(flow.start);
        self.time(flow.end);
        self.row.extend_from_slice(number.format(flow.tcp_flags).as_bytes());
        self.row.push(b',');
        self.text(flow.interface.as_deref().unwrap_or(""));
        self.row.push(b'\n');
        &self.row
    }

    /// IPv4 by hand (most flows' addresses); IPv6 as the standard library
    /// prints it, for its zero compression.
    fn address(&mut self, address: std::net::IpAddr) {
        match address {
            std::net::IpAddr::V4(v4) => {
                let mut number = itoa::Buffer::new();
                for octet in v4.octets() {
                    self.row.extend_from_slice(number.format(octet).as_bytes());
                    self.row.push(b'.');
                }
                self.row.pop();
            }
            std::net::IpAddr::V6(v6) => {
                let _ = write!(self.row, "{v6}");
            }
        }
        self.row.push(b',');
    }

    /// As [`rfc3339_millis`], with the calendar consulted once a day.
    fn time(&mut self, time: Nanos) {
        const MILLIS_PER_DAY: i64 = 86_400_000;
        let millis = time.div_euclid(1_000_000);
        let (day, of_day) = (millis.div_euclid(MILLIS_PER_DAY), millis.rem_euclid(MILLIS_PER_DAY));
        if self.date.as_ref().is_none_or(|(known, _)| *known != day) {
            // Nanoseconds in an i64 span 1677 to 2262, well inside jiff's calendar.
            let midnight = rfc3339_of_millis(day * MILLIS_PER_DAY).expect("a date jiff can print");
            let date = midnight.strip_suffix("00:00:00.000Z").expect("midnight");
            self.date = Some((day, date.to_string()));
        }
        self.row.extend_from_slice(self.date.as_ref().expect("just set").1.as_bytes());
        let (hours, minutes, seconds) = (of_day / 3_600_000, of_day / 60_000 % 60, of_day / 1_000 % 60);
        let millis = of_day % 1_000;
        let digit = |value: i64| b'0' + value as u8;
        self.row.extend_from_slice(&[
            digit(hours / 10),
            digit(hours % 10),
            b':',
            digit(minutes / 10),
            digit(minutes % 10),
            b':',
            digit(seconds / 10),
            digit(seconds % 10),
            b'.',
            digit(millis / 100),
            digit(millis / 10 % 10),
            digit(millis % 10),
            b'Z',
            b',',
        ]);
    }

    /// Text as one field: in quotes, its quotes doubled, when it holds a
    /// comma, a quote or a line end.
    fn text(&mut self, text: &str) {
        if !text.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
            self.row.extend_from_slice(text.as_bytes());
            return;
        }
        self.row.push(b'"');
        for byte in text.bytes() {
            if byte == b'"' {
                self.row.push(b'"');
            }
            self.row.push(byte);
        }
        self.row.push(b'"');
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
        let mut row = CsvRow::default();
        let mut fields = Vec::new();
        for &time in times {
            row.row.clear();
            row.time(time);
            fields.push(String::from_utf8(row.row.clone()).unwrap().trim_end_matches(',').to_string());
        }
        fields
    }

    /// What a CSV reader makes of the rows: every field as the record has
    /// it, whatever an interface's name holds.
    #[test]
    fn csv_rows_read_back_field_for_field() {
        let names = ["eth0", "", "a,b", "say \"hi\"", "two\nlines", "cr\rhere", ",\""];
        let mut out = FlowWriter::new(Format::Csv, Vec::new()).unwrap();
        let mut flows = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut flow = crate::flows::tcp_flow(
                "192.0.2.1",
                1000 + i as u16,
                "2001:db8::25",
                25,
                1_202_860_800_123_456_789,
                7,
                9000,
            );
            flow.interface = (!name.is_empty()).then(|| std::sync::Arc::from(*name));
            out.write(&flow).unwrap();
            flows.push(flow);
        }
        out.finish().unwrap();
        let FlowWriter::Csv(bytes, _) = out else { unreachable!() };
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), FIELDS);
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), names.len());
        for (row, flow) in rows.iter().zip(&flows) {
            let expected = [
                flow.src.to_string(),
                flow.dst.to_string(),
                flow.sport.to_string(),
                "25".into(),
                "6".into(),
                "7".into(),
                "9000".into(),
                "2008-02-13T00:00:00.123Z".into(),
                "2008-02-13T00:00:01.123Z".into(),
                "27".into(),
                flow.interface.as_deref().unwrap_or("").to_string(),
            ];
            assert_eq!(row.iter().collect::<Vec<_>>(), expected);
        }
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
