//! Where the agent's findings go: lines on stdout, lines appended to a file
//! (synced to disk after each, so a reader tailing it never sees a finding
//! that a crash could take back), and syslog in RFC 5424 form, to the local
//! socket or over UDP (RFC 5426) to a collector; and webhooks, POSTed
//! without loss (see [`super::webhook`]). Each sink writes its format:
//! rogue's JSON, ECS JSON or CEF (see [`crate::output`]).

use std::{
    fs::File,
    io::{self, Write},
    net::{ToSocketAddrs, UdpSocket},
    os::unix::{fs::OpenOptionsExt, net::UnixDatagram},
    path::PathBuf,
    sync::Arc,
};

use super::{
    alertmanager::Alertmanager,
    metrics::Metrics,
    webhook::{Webhook, WebhookError},
};
use crate::{
    config::{Config, FindingFormat, FindingSink, hostname},
    output::{Presentation, finding_line},
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
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("output.findings: alertmanager+{base}: {reason}")]
    Alertmanager { base: String, reason: String },
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

enum Sink {
    Stdout,
    File(File),
    Syslog(Syslog),
    Webhook(Webhook),
    Alertmanager(Alertmanager),
}

/// The sinks of `output.findings`, each with the name it is configured by
/// and its format.
pub struct Sinks {
    sinks: Vec<(String, Sink, FindingFormat)>,
    presentation: Presentation,
}

impl Sinks {
    /// Opens every configured sink; fails naming the first that cannot be.
    /// Webhooks start delivering their spools (in the current tokio runtime).
    pub fn open(config: &Config, metrics: &Arc<Metrics>) -> Result<Sinks, SinkError> {
        let mut sinks = Vec::new();
        for spec in &config.output.findings {
            let (name, sink) = match &spec.to {
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
                FindingSink::Webhook(url) => {
                    metrics.name_webhook(url);
                    let content_type = match spec.format {
                        FindingFormat::Cef => "text/plain; charset=utf-8",
                        FindingFormat::Jsonl | FindingFormat::Ecs => "application/json",
                    };
                    let spool = config.resolve(&spool_dir(url));
                    let ca_file = spec.ca_file.as_ref().map(|path| config.resolve_beside(path));
                    let max = config.output.spool_max_bytes.0;
                    let webhook = Webhook::open(url, content_type, ca_file.as_deref(), spool, max, metrics.clone())?;
                    (url.clone(), Sink::Webhook(webhook))
                }
                FindingSink::Alertmanager(base) => {
                    let presentation = Presentation::of(&config.output);
                    let alertmanager =
                        Alertmanager::new(base, presentation, &config.output.report_url, metrics.clone())
                            .map_err(|reason| SinkError::Alertmanager { base: base.clone(), reason })?;
                    (alertmanager.name().to_string(), Sink::Alertmanager(alertmanager))
                }
            };
            sinks.push((name, sink, spec.format));
        }
        Ok(Sinks { sinks, presentation: Presentation::of(&config.output) })
    }

    pub fn names(&self) -> Vec<&str> {
        self.sinks.iter().map(|(name, _, _)| name.as_str()).collect()
    }

    /// Sends one finding to every sink; returns the sinks that failed.
    pub fn emit(&mut self, event: Event, finding: &StoredFinding) -> Vec<(String, io::Error)> {
        let mut failed = Vec::new();
        for (name, sink, format) in &mut self.sinks {
            let line = finding_line(finding, &self.presentation, *format, Some(event.as_str()));
            let result = match sink {
                Sink::Stdout => {
                    let mut out = io::stdout().lock();
                    writeln!(out, "{line}").and_then(|()| out.flush())
                }
                Sink::File(file) => writeln!(file, "{line}").and_then(|()| file.sync_data()),
                Sink::Syslog(syslog) => syslog.send(event, finding, &line),
                // A full spool drops the finding (counted there); it is not
                // offered again, or the other sinks would take it twice.
                Sink::Webhook(webhook) => webhook.send(&line).map(drop),
                // A state, sent whole at each evaluation (sync_alerts).
                Sink::Alertmanager(_) => Ok(()),
            };
            if let Err(e) = result {
                failed.push((name.clone(), e));
            }
        }
        failed
    }
}

impl Sinks {
    /// Tells each Alertmanager the state of every finding.
    pub fn sync_alerts(&self, findings: &[StoredFinding], now_ms: i64, interval: std::time::Duration) {
        for (_, sink, _) in &self.sinks {
            if let Sink::Alertmanager(alertmanager) = sink {
                alertmanager.sync(findings, now_ms, interval);
            }
        }
    }
}

/// A webhook's spool, under the state directory: one per URL.
fn spool_dir(url: &str) -> PathBuf {
    PathBuf::from("spool").join(&blake3::hash(url.as_bytes()).to_hex()[..16])
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

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    use crate::config::SeverityConfig;

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
            acknowledged: None,
        }
    }

    #[test]
    fn messages_follow_rfc_5424_with_the_finding_as_structured_data() {
        let open = finding("open");
        let presentation = Presentation { observer: "gw1".into(), severity: SeverityConfig::default() };
        let line = finding_line(&open, &presentation, FindingFormat::Jsonl, Some("opened"));
        let message = rfc5424("gw1", "2026-11-26T10:00:00.000Z", Event::Opened, &open, &line);
        let expected_head = format!(
            "<28>1 2026-11-26T10:00:00.000Z gw1 rogue {} finding [rogue@32473 event=\"opened\" id=\"7\" \
             type=\"rogue_server\" host=\"192.0.2.77\" state=\"open\"] {{\"event\":\"opened\",\"schema_version\":3,\"id\":7,",
            std::process::id()
        );
        assert!(message.starts_with(&expected_head), "{message}");
        let whitelisted = rfc5424("gw1", "-", Event::Changed, &finding("whitelisted"), "{}");
        assert!(whitelisted.starts_with("<29>1 "), "notice for a finding that is no longer open: {whitelisted}");
        assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    }
}
