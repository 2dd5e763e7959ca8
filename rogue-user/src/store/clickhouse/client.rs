//! ClickHouse's HTTP interface, as rogue speaks it: queries in the request
//! body, results as JSONEachRow (64-bit integers as numbers), inserts as
//! RowBinary. Plain HTTP with a blocking client (ureq): the store is called
//! from the agent's tasks as SQLite is, and ClickHouse 18.16, the oldest
//! server rogue supports, has no query parameters, so values are written
//! into queries as literals by [`quote`].

use std::{io::Read, time::Duration};

use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::{
    config::ClickHouseConfig,
    store::{Result, StoreError},
};

/// How long a query may take before the server counts as unreachable.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long (s) the server may wait for a shard to take an insert: less
/// than [`QUERY_TIMEOUT`].
const DISTRIBUTED_TIMEOUT: &str = "100";

pub struct Client {
    agent: ureq::Agent,
    url: String,
    database: String,
    authorization: String,
    /// Whether queries run in the database (it exists): until then they
    /// run in the server's default one.
    in_database: bool,
    /// Settings of every insert: on a cluster, that it returns once every
    /// shard has its rows (`insert_distributed_sync`), not once queued.
    insert_settings: Vec<(&'static str, &'static str)>,
}

impl Client {
    pub fn new(config: &ClickHouseConfig) -> Result<Client> {
        let server = config.url.trim_end_matches('/').to_string();
        let password = match &config.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| StoreError::Refused {
                    server: server.clone(),
                    detail: format!("cannot read store.clickhouse.password_file {}: {e}", path.display()),
                })?;
                text.lines().next().unwrap_or_default().to_string()
            }
            None => String::new(),
        };
        let agent = ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).timeout(QUERY_TIMEOUT).build();
        let credentials = format!("{}:{password}", config.user);
        let authorization = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials));
        // The server gives up a shard that does not answer before rogue
        // gives up the server (its own default is never): an insert left
        // running there would refuse every retry of its query id.
        let insert_settings = match config.cluster {
            Some(_) => vec![("insert_distributed_sync", "1"), ("insert_distributed_timeout", DISTRIBUTED_TIMEOUT)],
            None => Vec::new(),
        };
        Ok(Client {
            agent,
            url: server,
            database: config.database.clone(),
            authorization,
            in_database: false,
            insert_settings,
        })
    }

    /// The server and database, for messages.
    pub fn location(&self) -> String {
        format!("{} database {}", self.url, self.database)
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// From now on, queries run in the database, which exists.
    pub fn enter_database(&mut self) {
        self.in_database = true;
    }

    /// Runs a statement that returns nothing (DDL, ALTER, OPTIMIZE).
    pub fn execute(&self, sql: &str) -> Result<()> {
        self.post(&[], sql.as_bytes()).map(drop)
    }

    /// Runs a query and reads its rows as `T` (by column name).
    pub fn select<T: DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>> {
        let body = self.post(
            &[("output_format_json_quote_64bit_integers", "0")],
            format!("{sql} FORMAT JSONEachRow").as_bytes(),
        )?;
        body.lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|e| self.refused(format!("a row of `{}` does not read: {e}: {line}", first_line(sql))))
            })
            .collect()
    }

    /// Runs a query expected to return one row.
    pub fn select_one<T: DeserializeOwned>(&self, sql: &str) -> Result<T> {
        self.select(sql)?.pop().ok_or_else(|| self.refused(format!("`{}` returned no row", first_line(sql))))
    }

    /// Inserts RowBinary `rows` into `table` as query `query_id`: the server
    /// refuses a second query of that id while the first still runs, so a
    /// retry never overlaps the attempt it repeats.
    pub fn insert(&self, table: &str, columns: &str, rows: &[u8], query_id: &str) -> Result<()> {
        let query = format!("INSERT INTO {table} ({columns}) FORMAT RowBinary");
        let mut params = vec![("query", query.as_str()), ("query_id", query_id)];
        params.extend(self.insert_settings.iter().copied());
        self.post(&params, rows).map(drop)
    }

    fn post(&self, params: &[(&str, &str)], body: &[u8]) -> Result<String> {
        let mut request = self.agent.post(&format!("{}/", self.url)).set("Authorization", &self.authorization);
        if self.in_database {
            request = request.query("database", &self.database);
        }
        for (name, value) in params {
            request = request.query(name, value);
        }
        match request.send_bytes(body) {
            Ok(response) => {
                let mut text = String::new();
                response.into_reader().read_to_string(&mut text).map_err(|e| self.unreachable(e.to_string()))?;
                Ok(text)
            }
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                let detail = exception(&text).unwrap_or_else(|| format!("HTTP {status}"));
                // 5xx other than a query's own exception: the server is
                // there but not serving (starting, overloaded).
                match (status >= 500 && !text.starts_with("Code:")) || passing(&text) {
                    true => Err(self.unreachable(detail)),
                    false => Err(self.refused(detail)),
                }
            }
            Err(ureq::Error::Transport(transport)) => Err(self.unreachable(transport.to_string())),
        }
    }

    fn refused(&self, detail: String) -> StoreError {
        StoreError::Refused { server: self.location(), detail }
    }

    fn unreachable(&self, detail: String) -> StoreError {
        StoreError::Unreachable { server: self.location(), detail }
    }
}

/// The server's exception, without its stack trace: "Code: 60, ... Table
/// rogue.x doesn't exist".
fn exception(text: &str) -> Option<String> {
    let line = text.lines().next()?.trim();
    let line = line.split(", e.what()").next().unwrap_or(line);
    (!line.is_empty()).then(|| line.to_string())
}

/// Whether the server's exception says it cannot take a query now rather
/// than never: too many parts or queries, memory, timeouts, the network, a
/// query of the same id still running (a retry beside its first attempt),
/// ZooKeeper away, an insert whose fate it does not know.
fn passing(text: &str) -> bool {
    const PASSING: &[u32] =
        &[159, 160, 202, 203, 209, 210, 216, 225, 236, 241, 242, 252, 279, 285, 286, 319, 394, 425, 999];
    let code = text.strip_prefix("Code: ").and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next());
    code.and_then(|code| code.parse().ok()).is_some_and(|code| PASSING.contains(&code))
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// `text` as a ClickHouse string literal.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("\\'"),
            '\0' => quoted.push_str("\\0"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// Rows in ClickHouse's RowBinary format: little-endian integers, strings
/// as a LEB128 length and their bytes, Nullable as a null flag byte first,
/// Date as days since the epoch.
#[derive(Default)]
pub struct RowBinary {
    pub bytes: Vec<u8>,
}

impl RowBinary {
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn string(&mut self, value: &str) -> &mut Self {
        let mut length = value.len();
        loop {
            let byte = (length & 0x7f) as u8;
            length >>= 7;
            if length == 0 {
                self.bytes.push(byte);
                break;
            }
            self.bytes.push(byte | 0x80);
        }
        self.bytes.extend_from_slice(value.as_bytes());
        self
    }

    pub fn nullable_string(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.u8(0).string(value),
            None => self.u8(1),
        }
    }

    pub fn nullable_i64(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(value) => self.u8(0).i64(value),
            None => self.u8(1),
        }
    }

    pub fn nullable_u8(&mut self, value: Option<bool>) -> &mut Self {
        match value {
            Some(value) => self.u8(0).u8(value as u8),
            None => self.u8(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exceptions_that_pass_are_told_from_those_that_recur() {
        assert!(passing("Code: 252, e.displayText() = DB::Exception: Too many parts (300)"));
        assert!(passing("Code: 216, e.displayText() = DB::Exception: Query with id = w.1.3 is already running."));
        assert!(!passing("Code: 33, e.displayText() = DB::Exception: Cannot read all data."));
        assert!(!passing("Code: 60, e.displayText() = DB::Exception: Table rogue.x doesn't exist."));
        assert!(!passing("HTTP 400"));
    }

    #[test]
    fn literals_escape_what_would_end_or_bend_them() {
        assert_eq!(quote(r"it's a \ path"), r"'it\'s a \\ path'");
    }
}
