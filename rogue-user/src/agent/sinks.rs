//! Where the agent's findings go: JSON lines on stdout, JSON lines appended
//! to a file (synced to disk after each, so a reader tailing it never sees a
//! finding that a crash could take back), and syslog in RFC 5424 form, to the
//! local socket or over UDP (RFC 5426) to a collector.

use std::{
    fs::File,
    io::{self, Write},
    net::{ToSocketAddrs, UdpSocket},
    os::unix::{fs::OpenOptionsExt, net::UnixDatagram},
    path::PathBuf,
};

use serde_json::{Value, json};

use crate::{
    config::{Config, FindingSink},
    output::finding_json,
    store::StoredFinding,
    time::rfc3339_millis,
};

/// The local syslog socket.
const LOCAL_SYSLOG: &str = "/dev/log";
/// Facility `daemon` (3), as syslog(3) numbers it.
const FACILITY_DAEMON: u8 = 3;
const SEVERITY_WARNING: u8 = 4;
const SEVERITY_NOTICE: u8 = 5;
/// The documentation enterprise number (RFC 5612) names rogue's SD-ID.
const SD_ID: &str = "rogue@32473";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("output.findings: cannot open {path} for appending")]
    File { path: PathBuf, source: io::Error },
    #[error(
        "output.findings: cannot reach the local syslog at {LOCAL_SYSLOG} (is a syslog daemon or journald running?)"
    )]
    LocalSyslog(#[source] io::Error),
    #[error("output.findings: cannot reach the syslog server {server}")]
    RemoteSyslog { server: String, source: io::Error },
}

/// Why a finding is emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// First emitted: it just opened (or the agent never emitted it).
    Opened,
    /// Its state or evidence changed materially since it was last emitted.
    Changed,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "opened",
            Event::Changed => "changed",
        }
    }
}

/// The JSON line of an emitted finding: `event`, then the finding's fields.
pub fn event_json(event: Event, finding: &StoredFinding) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("event".into(), json!(event.as_str()));
    if let Value::Object(fields) = finding_json(finding) {
        object.extend(fields);
    }
    Value::Object(object)
}

enum Sink {
    Stdout,
    File(File),
    Syslog(Syslog),
}

/// The sinks of `output.findings`, each with the name it is configured by.
pub struct Sinks {
    sinks: Vec<(String, Sink)>,
}

impl Sinks {
    /// Opens every configured sink; fails naming the first that cannot be.
    pub fn open(config: &Config) -> Result<Sinks, SinkError> {
        let mut sinks = Vec::new();
        for spec in &config.output.findings {
            let (name, sink) = match spec {
                FindingSink::Stdout => ("stdout".to_string(), Sink::Stdout),
                FindingSink::File(path) => {
                    let path = config.resolve(path);
                    let file = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|source| SinkError::File { path: path.clone(), source })?;
                    (path.display().to_string(), Sink::File(file))
                }
                FindingSink::LocalSyslog => ("syslog".to_string(), Sink::Syslog(Syslog::local()?)),
                FindingSink::RemoteSyslog(server) => (format!("syslog://{server}"), Sink::Syslog(Syslog::udp(server)?)),
            };
            sinks.push((name, sink));
        }
        Ok(Sinks { sinks })
    }

    pub fn names(&self) -> Vec<&str> {
        self.sinks.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Sends one finding to every sink; returns the sinks that failed.
    pub fn emit(&mut self, event: Event, finding: &StoredFinding) -> Vec<(String, io::Error)> {
        let line = event_json(event, finding).to_string();
        let mut failed = Vec::new();
        for (name, sink) in &mut self.sinks {
            let result = match sink {
                Sink::Stdout => {
                    let mut out = io::stdout().lock();
                    writeln!(out, "{line}").and_then(|()| out.flush())
                }
                Sink::File(file) => writeln!(file, "{line}").and_then(|()| file.sync_data()),
                Sink::Syslog(syslog) => syslog.send(event, finding, &line),
            };
            if let Err(e) = result {
                failed.push((name.clone(), e));
            }
        }
        failed
    }
}

struct Syslog {
    socket: SyslogSocket,
    hostname: String,
}

enum SyslogSocket {
    Local(UnixDatagram),
    Udp(UdpSocket),
}

impl Syslog {
    fn local() -> Result<Syslog, SinkError> {
        let socket = UnixDatagram::unbound().map_err(SinkError::LocalSyslog)?;
        socket.connect(LOCAL_SYSLOG).map_err(SinkError::LocalSyslog)?;
        Ok(Syslog { socket: SyslogSocket::Local(socket), hostname: hostname() })
    }

    fn udp(server: &str) -> Result<Syslog, SinkError> {
        let error = |source| SinkError::RemoteSyslog { server: server.to_string(), source };
        let addr = server
            .to_socket_addrs()
            .map_err(error)?
            .next()
            .ok_or_else(|| error(io::Error::new(io::ErrorKind::NotFound, "the name has no address")))?;
        let local: std::net::SocketAddr =
            if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = UdpSocket::bind(local).map_err(error)?;
        socket.connect(addr).map_err(error)?;
        Ok(Syslog { socket: SyslogSocket::Udp(socket), hostname: hostname() })
    }

    fn send(&self, event: Event, finding: &StoredFinding, line: &str) -> io::Result<()> {
        let now = rfc3339_millis(jiff::Timestamp::now().as_nanosecond() as i64);
        let message = rfc5424(&self.hostname, &now, event, finding, line);
        match &self.socket {
            SyslogSocket::Local(socket) => socket.send(message.as_bytes()),
            SyslogSocket::Udp(socket) => socket.send(message.as_bytes()),
        }
        .map(drop)
    }
}

/// One RFC 5424 message: the finding's identity as structured data (for
/// collectors that index it), its JSON line as the message.
fn rfc5424(hostname: &str, timestamp: &str, event: Event, finding: &StoredFinding, line: &str) -> String {
    let severity =
        if finding.state == "open" || finding.state == "confirmed_rogue" { SEVERITY_WARNING } else { SEVERITY_NOTICE };
    let priority = FACILITY_DAEMON * 8 + severity;
    format!(
        "<{priority}>1 {timestamp} {hostname} rogue {} finding [{SD_ID} event=\"{}\" id=\"{}\" type=\"{}\" \
         host=\"{}\" state=\"{}\"] {line}",
        std::process::id(),
        event.as_str(),
        finding.id,
        sd_escape(&finding.kind),
        finding.host,
        sd_escape(&finding.state),
    )
}

/// A structured-data parameter value: `"`, `\` and `]` escaped (RFC 5424 6.3.3).
fn sd_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// This machine's name for the HOSTNAME field (`-` when it has none).
fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let name = if rc == 0 { buffer.split(|&b| b == 0).next().unwrap_or_default() } else { &[] };
    // HOSTNAME is printable US-ASCII without spaces, at most 255 octets.
    let name: String = name.iter().filter(|b| b.is_ascii_graphic()).map(|&b| b as char).collect();
    if name.is_empty() { "-".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(state: &str) -> StoredFinding {
        StoredFinding {
            id: 7,
            kind: "rogue_server".into(),
            service: "smtp".into(),
            host: "192.0.2.77".parse().unwrap(),
            key: String::new(),
            state: state.into(),
            time_ms: 0,
            details: json!({"roles": ["server"]}),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn messages_follow_rfc_5424_with_the_finding_as_structured_data() {
        let open = finding("open");
        let line = event_json(Event::Opened, &open).to_string();
        let message = rfc5424("gw1", "2026-11-26T10:00:00.000Z", Event::Opened, &open, &line);
        let expected_head = format!(
            "<28>1 2026-11-26T10:00:00.000Z gw1 rogue {} finding [rogue@32473 event=\"opened\" id=\"7\" \
             type=\"rogue_server\" host=\"192.0.2.77\" state=\"open\"] {{\"event\":\"opened\",\"id\":7,",
            std::process::id()
        );
        assert!(message.starts_with(&expected_head), "{message}");
        let whitelisted = rfc5424("gw1", "-", Event::Changed, &finding("whitelisted"), "{}");
        assert!(whitelisted.starts_with("<29>1 "), "notice for a finding that is no longer open: {whitelisted}");
        assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    }
}
