//! One output convention for every listing command (`flows`, `analyze`,
//! `evaluate`, `hosts`, `findings`, `whitelist list/suggest/calibrate`,
//! `store sources`): `--format table|json|jsonl|csv`, a table on a terminal
//! and JSON lines when piped.
//!
//! A listing's records are JSON objects, so JSON, JSON lines and CSV carry
//! the same fields under the same names; the table is each command's own
//! layout for people. CSV takes the command's columns from each record
//! (arrays and objects as JSON text); a `details` column, where a command
//! names one, holds the fields its other columns do not.

use std::io::{self, IsTerminal, StdoutLock, Write};

use serde_json::{Map, Value};

/// How a listing is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Aligned columns for people
    Table,
    /// One JSON document: an array of objects
    Json,
    /// One JSON object per line
    Jsonl,
    /// A header, then a row per record
    Csv,
}

/// What `--help` says of `--format` on every listing command.
pub const FORMAT_HELP: &str = "Output format [default: table on a terminal, jsonl when piped]";

/// `--format` as given, else the default for where stdout goes.
pub fn format_or_default(format: Option<ListFormat>) -> ListFormat {
    format.unwrap_or(if io::stdout().is_terminal() { ListFormat::Table } else { ListFormat::Jsonl })
}

/// Writes records in one format: the table's header or the CSV header
/// first, and a JSON array closed by [`finish`](Listing::finish).
pub struct Listing<W: Write> {
    format: ListFormat,
    columns: &'static [&'static str],
    out: Output<W>,
    records: usize,
}

enum Output<W: Write> {
    Text(W),
    // Boxed: the CSV writer holds its buffer inline.
    Csv(Box<csv::Writer<W>>),
}

impl Listing<io::BufWriter<StdoutLock<'static>>> {
    /// A listing on stdout, with `columns` for CSV and `header` (if any)
    /// for the table.
    pub fn stdout(format: ListFormat, columns: &'static [&'static str], header: &str) -> io::Result<Self> {
        Listing::new(format, columns, header, io::BufWriter::new(io::stdout().lock()))
    }
}

impl<W: Write> Listing<W> {
    pub fn new(format: ListFormat, columns: &'static [&'static str], header: &str, mut out: W) -> io::Result<Self> {
        let out = match format {
            ListFormat::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(columns)?;
                Output::Csv(Box::new(csv))
            }
            ListFormat::Table => {
                if !header.is_empty() {
                    writeln!(out, "{header}")?;
                }
                Output::Text(out)
            }
            ListFormat::Json | ListFormat::Jsonl => Output::Text(out),
        };
        Ok(Listing { format, columns, out, records: 0 })
    }

    /// Writes one record; `table` gives its line(s) in the table.
    pub fn record(&mut self, record: &Value, table: impl FnOnce() -> String) -> io::Result<()> {
        let first = self.records == 0;
        self.records += 1;
        match (&mut self.out, self.format) {
            (Output::Csv(csv), _) => csv.write_record(csv_fields(self.columns, record))?,
            (Output::Text(out), ListFormat::Table) => writeln!(out, "{}", table())?,
            (Output::Text(out), ListFormat::Json) => {
                out.write_all(if first { b"[\n" } else { b",\n" })?;
                serde_json::to_writer(&mut *out, record)?;
            }
            (Output::Text(out), _) => {
                serde_json::to_writer(&mut *out, record)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Closes the JSON array and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        match &mut self.out {
            Output::Csv(csv) => csv.flush(),
            Output::Text(out) => {
                if self.format == ListFormat::Json {
                    out.write_all(if self.records == 0 { b"[]\n" } else { b"\n]\n" })?;
                }
                out.flush()
            }
        }
    }
}

/// A record's CSV fields: each column's value as text, and for a `details`
/// column the fields no other column takes, as a JSON object.
fn csv_fields(columns: &[&str], record: &Value) -> Vec<String> {
    let empty = Map::new();
    let fields = record.as_object().unwrap_or(&empty);
    columns
        .iter()
        .map(|&column| match fields.get(column) {
            Some(value) => csv_text(value),
            None if column == "details" => {
                let rest: Map<String, Value> = fields
                    .iter()
                    .filter(|(k, _)| !columns.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Value::Object(rest).to_string()
            }
            None => String::new(),
        })
        .collect()
}

fn csv_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn written(format: ListFormat, records: &[Value]) -> String {
        let mut out = Vec::new();
        let mut listing = Listing::new(format, &["id", "host", "details"], "id host", &mut out).unwrap();
        for record in records {
            listing.record(record, || format!("{} {}", record["id"], record["host"])).unwrap();
        }
        listing.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_format_carries_the_same_records() {
        let records = [json!({"id": 1, "host": "192.0.2.25", "roles": ["server"]}), json!({"id": 2, "host": null})];
        assert_eq!(written(ListFormat::Table, &records), "id host\n1 \"192.0.2.25\"\n2 null\n");
        assert_eq!(
            written(ListFormat::Jsonl, &records),
            "{\"id\":1,\"host\":\"192.0.2.25\",\"roles\":[\"server\"]}\n{\"id\":2,\"host\":null}\n"
        );
        let array: Vec<Value> = serde_json::from_str(&written(ListFormat::Json, &records)).unwrap();
        assert_eq!(array, records);
        assert_eq!(
            written(ListFormat::Csv, &records),
            "id,host,details\n1,192.0.2.25,\"{\"\"roles\"\":[\"\"server\"\"]}\"\n2,,{}\n"
        );
    }

    #[test]
    fn an_empty_listing_is_an_empty_array_or_only_the_header() {
        assert_eq!(written(ListFormat::Json, &[]), "[]\n");
        assert_eq!(written(ListFormat::Jsonl, &[]), "");
        assert_eq!(written(ListFormat::Csv, &[]), "id,host,details\n");
        assert_eq!(written(ListFormat::Table, &[]), "id host\n");
    }
}
