//! Configuration: where the file is found ([`locate`]), the YAML (see
//! config/rogue.yaml), its defaults and its checks, where its relative paths
//! lead, and the value types of its options (XDP modes, DNS servers, IPFIX
//! destinations): the one leaf every stage reads, reading no stage itself.
//! Every YAML file rogue reads goes through [`read_yaml`], so errors always
//! name the file, the key and the line. Unknown keys are errors: a misspelt
//! threshold must not silently fall back to its default.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use ipnet::IpNet;
use rogue_common::parse::Decapsulate;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// serde_yaml's message names the key path and the line.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// Every value that does not agree with another, each with its line.
    #[error("{}", problems.iter().map(|p| format!("{}: {p}", path.display())).collect::<Vec<_>>().join("\n"))]
    Problems { path: PathBuf, problems: Vec<String> },
    #[error(
        "no configuration file: tried {}; give one with -c FILE or ROGUE_CONFIG (an example is config/rogue.yaml, \
         or /usr/share/doc/rogue/examples/rogue.yaml where the package is installed)",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound { tried: Vec<PathBuf> },
}

/// Where rogue looks for its configuration when neither `-c` nor
/// `ROGUE_CONFIG` names one, in order: the working directory (a checkout,
/// an analyst's case folder), then the system's (the package's).
pub const SEARCH_PATH: [&str; 2] = ["rogue.yaml", "/etc/rogue/rogue.yaml"];

/// The state directory of a configuration under `/etc` when systemd does
/// not name one (`STATE_DIRECTORY`): `/etc` is read-only under the units'
/// `ProtectSystem=strict`, and the FHS puts state here.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/rogue";

/// The configuration file to read: `explicit` (`-c` or `ROGUE_CONFIG`)
/// whether or not it exists (reading it says why not), else the first of
/// [`SEARCH_PATH`] that exists.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let tried: Vec<PathBuf> = SEARCH_PATH.iter().map(PathBuf::from).collect();
    match tried.iter().find(|path| path.exists()) {
        Some(path) => Ok(path.clone()),
        None => Err(ConfigError::NotFound { tried }),
    }
}

/// The directory the paths rogue writes (the store, finding and IPFIX
/// files) are relative to, for a configuration file in `config_dir`:
/// systemd's `STATE_DIRECTORY` (`state_directory`; the first of several),
/// else [`SYSTEM_STATE_DIR`] for a configuration under `/etc`, else the
/// configuration's own directory.
pub fn data_dir(config_dir: &Path, state_directory: Option<&std::ffi::OsStr>) -> PathBuf {
    let systemds = state_directory.and_then(|dirs| dirs.to_str()?.split(':').find(|dir| !dir.is_empty()));
    if let Some(first) = systemds {
        return PathBuf::from(first);
    }
    let absolute = std::path::absolute(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
    if absolute.starts_with("/etc") { PathBuf::from(SYSTEM_STATE_DIR) } else { config_dir.to_path_buf() }
}

/// Parses the YAML file at `path` into `T`.
pub fn read_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse_yaml(path, &text)
}

/// Parses YAML `text` read from `path` (named in errors).
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    serde_yaml::from_str(text).map_err(|e| ConfigError::Invalid { path: path.into(), message: e.to_string() })
}

/// Writes `value` as YAML text (for entries appended to a file).
pub fn to_yaml<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).expect("plain data serialises")
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The networks whose hosts rogue profiles; everything else is external.
    pub internal_networks: Vec<IpNet>,
    #[serde(default)]
    pub store: StoreConfig,
    /// The hand-verified whitelist (relative to the configuration file: it
    /// is configuration, edited by hand beside it).
    #[serde(default = "default_whitelist")]
    pub whitelist: PathBuf,
    #[serde(default)]
    pub detection: DetectionConfig,
    #[serde(default)]
    pub services: ServicesConfig,
    #[serde(default)]
    pub capture: CaptureConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    /// Interfaces `rogue agent` meters (a gateway's internal and external
    /// sides); `--iface` overrides them.
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub export: ExportConfig,
    #[serde(default)]
    pub collect: CollectConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    /// The directory of the configuration file; the whitelist's path
    /// starts here.
    #[serde(skip)]
    pub dir: PathBuf,
    /// Where the relative paths rogue writes start (see [`data_dir`]).
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// The file's text, as read (a store records what it was evaluated with).
    #[serde(skip)]
    pub text: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where rogue keeps what it learns: `sqlite` (the file `path`, on this
    /// box) or `clickhouse` (a server that many collectors and agents write
    /// to and one evaluates; see `clickhouse`).
    pub backend: StoreBackend,
    /// The SQLite file (backend `sqlite`).
    pub path: PathBuf,
    /// The ClickHouse server (backend `clickhouse`).
    pub clickhouse: ClickHouseConfig,
    /// How long traffic is kept, by the wall clock (see store::retention).
    pub retention_days: Positive,
    /// Records dated more than this after the wall clock are rejected (and
    /// counted), never stored: no clock is that far ahead, but a forged
    /// packet or datagram can be.
    pub max_future_seconds: Positive,
    /// Flows the agent holds for the store: as many waiting are written at
    /// once, before the next drain; while the store cannot be written (a
    /// full disk), past it the oldest are dropped, counted and logged.
    pub max_pending_flows: Positive,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            path: "rogue.db".into(),
            clickhouse: ClickHouseConfig::default(),
            retention_days: Positive(90),
            max_future_seconds: Positive(86_400),
            max_pending_flows: Positive(500_000),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sqlite,
    Clickhouse,
}

/// A ClickHouse server's HTTP interface, and the database rogue's tables
/// are in (created, with the tables, by the first rogue to connect).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT` (ClickHouse's HTTP port,
    /// 8123 by default; 8443 with TLS).
    pub url: String,
    pub database: String,
    pub user: String,
    /// A file holding the user's password (its first line), readable by
    /// rogue only; none for a user without one.
    pub password_file: Option<PathBuf>,
    /// Where writes wait on local disk until ClickHouse has them (relative
    /// to the data directory); see store::clickhouse::spool.
    pub spool_dir: PathBuf,
    /// How much may wait there; past it, a write is refused (the agent then
    /// holds its flows, and drops and counts the oldest past
    /// `store.max_pending_flows`).
    pub spool_max_mib: Positive,
    /// A cluster of the server's `remote_servers`: the tables are made ON
    /// CLUSTER (which needs the cluster's ZooKeeper or Keeper) as local
    /// tables on each shard and Distributed tables over them, a host's
    /// traffic on one shard.
    pub cluster: Option<String>,
    /// Whether every flow is kept too (the table `flows`), for analysts'
    /// own questions; the method needs only its profiles.
    pub raw_flows: bool,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "rogue".into(),
            user: "default".into(),
            password_file: None,
            spool_dir: "clickhouse-spool".into(),
            spool_max_mib: Positive(1024),
            cluster: None,
            raw_flows: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Width of a time bin for port usage (and the existence plot).
    pub bin_seconds: Positive,
    /// How far back characteristics (server days, service share) look.
    pub history_days: Positive,
    /// Days as a server, in the look-back, from which a host that also has
    /// the service share of a server of the service is suggested for the whitelist.
    pub suggest_min_server_days: Positive,
    pub fanout: FanoutConfig,
    pub volume_spike: VolumeSpikeConfig,
    /// How often the agent applies the method to what it has stored.
    pub evaluate_seconds: Positive,
    /// Whether this process applies the method. Where many collectors and
    /// agents write to one ClickHouse store, one evaluates (its findings
    /// cover every sensor) and the others set this to false: they meter or
    /// collect and write, and emit nothing.
    pub evaluate: bool,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            bin_seconds: Positive(600),
            history_days: Positive(14),
            suggest_min_server_days: Positive(3),
            fanout: FanoutConfig::default(),
            volume_spike: VolumeSpikeConfig::default(),
            evaluate_seconds: Positive(60),
            evaluate: true,
        }
    }
}

/// `fanout_burst`: qualifying flows to at least `peers` distinct external
/// servers within `window_seconds`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    pub peers: Positive,
    pub window_seconds: Positive,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig { peers: Positive(20), window_seconds: Positive(60) }
    }
}

/// `volume_spike`: a day's qualifying flows (or bytes) above `factor` times
/// the median of the host's previous days, and above the minimum.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeSpikeConfig {
    pub factor: Share,
    pub min_flows: Positive,
    pub min_bytes: Positive,
}

impl Default for VolumeSpikeConfig {
    fn default() -> Self {
        VolumeSpikeConfig { factor: Share(10.0), min_flows: Positive(1000), min_bytes: Positive(10_000_000) }
    }
}

mod services;
pub use services::{
    DATAGRAM, DEFAULT_NAME_PATTERN, DnsRecord, HANDSHAKE, PRESETS, Peers, Role, Service, ServiceSpec, ServicesConfig,
    Transport, preset,
};

/// A naming-convention pattern, compiled when the configuration is read.
#[derive(Clone, Debug)]
pub struct NamePattern(pub regex::Regex);

impl NamePattern {
    pub fn new(pattern: &str) -> Result<NamePattern, regex::Error> {
        regex::RegexBuilder::new(pattern).case_insensitive(true).size_limit(1 << 20).build().map(NamePattern)
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl PartialEq for NamePattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl<'de> Deserialize<'de> for NamePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NamePattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a regular expression")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<NamePattern, E> {
                NamePattern::new(text).map_err(|e| E::custom(format!("not a valid regular expression: {e}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Where and how rogue asks DNS for the administrative characteristics.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Whether rogue asks DNS at all (`--no-dns` and ROGUE_NO_DNS also turn
    /// it off); off, the DNS characteristics are null and findings say why.
    pub enabled: bool,
    /// Servers to ask (`127.0.0.1:5353`, or an address for port 53); empty:
    /// the system's resolv.conf.
    pub servers: Vec<DnsServer>,
    /// How long one query may take before it counts as unanswered.
    pub timeout_ms: Positive,
    /// The organisation's domains: their MX targets are mail servers.
    pub mx_domains: Vec<String>,
    /// Lookups in flight at once.
    pub concurrency: Positive,
    /// Bounds on how long answers are cached, whatever their TTL says.
    pub min_ttl_seconds: Positive,
    pub max_ttl_seconds: Positive,
    /// How long "no such record" is cached at most.
    pub negative_ttl_seconds: Positive,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            servers: Vec::new(),
            timeout_ms: Positive(2_000),
            mx_domains: Vec::new(),
            concurrency: Positive(32),
            min_ttl_seconds: Positive(60),
            max_ttl_seconds: Positive(86_400),
            negative_ttl_seconds: Positive(300),
        }
    }
}

/// A configured DNS server: `127.0.0.1:5353`, or an address for port 53.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsServer(pub SocketAddr);

impl FromStr for DnsServer {
    type Err = String;
    fn from_str(text: &str) -> Result<DnsServer, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(DnsServer(addr));
        }
        text.parse::<IpAddr>()
            .map(|ip| DnsServer(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("{text:?} is not an address or address:port"))
    }
}

impl<'de> Deserialize<'de> for DnsServer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Flow timeouts as nfdump's defaults: a flow silent for a minute, or
/// lasting five, is complete.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_ACTIVE_TIMEOUT_SECS: u64 = 300;

/// The most entries a flow map may have. Both maps are allocated in full
/// when the meter loads, on every CPU, at about 120 + 40 × CPUs bytes an
/// entry each: 2^24 entries already take 6.7 GB on two CPUs, and no
/// gateway has that many flows between two drains.
pub const MAX_FLOW_MAP_ENTRIES: u64 = 1 << 24;

/// A flow map size as the option and the configuration take it.
pub fn check_flow_map_entries(entries: u64) -> Result<u32, String> {
    if entries == 0 || entries > MAX_FLOW_MAP_ENTRIES {
        return Err(format!(
            "{entries} is not between 1 and {MAX_FLOW_MAP_ENTRIES}: both flow maps are allocated in full on every CPU \
             when the meter loads"
        ));
    }
    Ok(entries as u32)
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    pub idle_timeout_seconds: Positive,
    pub active_timeout_seconds: Positive,
    pub flow_map_entries: MapEntries,
    pub drain_seconds: Positive,
    pub xdp_mode: XdpMode,
    /// Flows the agent's flow cache holds at most; past it, the flows idle
    /// longest are completed early (counted), so memory stays bounded.
    pub flow_cache_entries: Positive,
    /// Which of the meter's rare events it logs from the kernel.
    pub kernel_log: KernelLog,
    /// The tunnels whose inner packets are metered (in the kernel and in
    /// captures alike); none by default.
    pub decapsulate: Vec<Encapsulation>,
}

impl CaptureConfig {
    /// `decapsulate` as the parser takes it.
    pub fn decapsulate(&self) -> Decapsulate {
        Encapsulation::all(&self.decapsulate)
    }
}

/// A tunnel rogue can open (`capture.decapsulate`, `--decapsulate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    /// A switch's mirror: ERSPAN types I, II and III, in GRE.
    Erspan,
    /// GRE carrying IP or Ethernet.
    Gre,
    /// VXLAN, UDP port 4789 (cloud traffic mirroring, overlays).
    Vxlan,
    /// Geneve, UDP port 6081 (cloud traffic mirroring, overlays).
    Geneve,
    /// IP in IP: IP-in-IP, 6in4, 4in6, 6in6.
    Ipip,
}

impl FromStr for Encapsulation {
    type Err = String;

    fn from_str(text: &str) -> Result<Encapsulation, String> {
        match text {
            "erspan" => Ok(Encapsulation::Erspan),
            "gre" => Ok(Encapsulation::Gre),
            "vxlan" => Ok(Encapsulation::Vxlan),
            "geneve" => Ok(Encapsulation::Geneve),
            "ipip" => Ok(Encapsulation::Ipip),
            other => Err(format!("{other:?} is not a tunnel rogue opens (erspan, gre, vxlan, geneve, ipip)")),
        }
    }
}

impl Encapsulation {
    /// The parser's set of `tunnels`.
    pub fn all(tunnels: &[Encapsulation]) -> Decapsulate {
        Decapsulate(tunnels.iter().fold(0, |bits, tunnel| {
            bits | match tunnel {
                Encapsulation::Erspan => Decapsulate::ERSPAN,
                Encapsulation::Gre => Decapsulate::GRE,
                Encapsulation::Vxlan => Decapsulate::VXLAN,
                Encapsulation::Geneve => Decapsulate::GENEVE,
                Encapsulation::Ipip => Decapsulate::IPIP,
            }
        }))
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            idle_timeout_seconds: Positive(DEFAULT_IDLE_TIMEOUT_SECS),
            active_timeout_seconds: Positive(DEFAULT_ACTIVE_TIMEOUT_SECS),
            flow_map_entries: MapEntries(rogue_common::maps::DEFAULT_FLOW_MAP_ENTRIES),
            drain_seconds: Positive(5),
            xdp_mode: XdpMode::Native,
            flow_cache_entries: Positive(1_000_000),
            kernel_log: KernelLog::Off,
            decapsulate: Vec::new(),
        }
    }
}

/// How the flow meter is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver, before the kernel allocates anything (fastest).
    Native,
    /// In the kernel's generic receive path (works on every interface).
    Generic,
    /// Native, falling back to generic with a warning.
    Auto,
}

impl XdpMode {
    pub const NAMES: [&'static str; 3] = ["native", "generic", "auto"];
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(text: &str) -> Result<XdpMode, String> {
        match text {
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            "auto" => Ok(XdpMode::Auto),
            other => Err(format!("{other:?} is not an XDP mode ({})", XdpMode::NAMES.join(", "))),
        }
    }
}

/// The least severe of the XDP meter's kernel events that it logs: `error`
/// (a state that cannot happen), `warn` (a flow map full: a packet counted
/// in no flow), `debug` (a malformed frame). Every one of them is counted
/// regardless; the log names them. Off, the logging code costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelLog {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

impl KernelLog {
    pub const NAMES: [&'static str; 5] = ["off", "error", "warn", "info", "debug"];
}

impl FromStr for KernelLog {
    type Err = String;

    fn from_str(text: &str) -> Result<KernelLog, String> {
        match text {
            "off" => Ok(KernelLog::Off),
            "error" => Ok(KernelLog::Error),
            "warn" => Ok(KernelLog::Warn),
            "info" => Ok(KernelLog::Info),
            "debug" => Ok(KernelLog::Debug),
            other => Err(format!("{other:?} is not a kernel log level ({})", KernelLog::NAMES.join(", "))),
        }
    }
}

/// Where the agent sends findings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub findings: Vec<SinkSpec>,
    /// The name of this sensor or collector in every finding (`observer`);
    /// empty: the host name.
    pub observer: String,
    /// The severity of each kind of finding.
    pub severity: SeverityConfig,
    /// A link to a host's report for the Alertmanager's alerts, `{host}`
    /// replaced by the address (empty: none).
    pub report_url: String,
    /// What each webhook sink may hold on disk (under the state directory)
    /// while its endpoint does not take findings; past it the newest are
    /// dropped, counted.
    pub spool_max_bytes: Positive,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            findings: vec![SinkSpec { to: FindingSink::Stdout, format: FindingFormat::Jsonl, ca_file: None }],
            spool_max_bytes: Positive(64 << 20),
            report_url: String::new(),
            observer: String::new(),
            severity: SeverityConfig::default(),
        }
    }
}

impl OutputConfig {
    /// `observer`, else the host name.
    pub fn observer_name(&self) -> String {
        if self.observer.is_empty() { hostname() } else { self.observer.clone() }
    }
}

/// This machine's name (gethostname), printable ASCII, `-` if it has none
/// (as RFC 5424 writes a missing HOSTNAME).
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let name = if rc == 0 { buffer.split(|&b| b == 0).next().unwrap_or_default() } else { &[] };
    let name: String = name.iter().filter(|b| b.is_ascii_graphic()).map(|&b| b as char).collect();
    if name.is_empty() { "-".into() } else { name }
}

/// How loud each kind of finding is. The rule (README, "Findings"): a rogue
/// server is `high` (the method's finding: mail served outside the
/// whitelist), a fan-out burst `medium` (a misconfiguration or a spam bot,
/// seen in a minute), a volume spike `low` (a change worth a look).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityConfig {
    pub rogue_server: Severity,
    pub fanout_burst: Severity,
    pub volume_spike: Severity,
}

impl Default for SeverityConfig {
    fn default() -> Self {
        SeverityConfig { rogue_server: Severity::High, fanout_burst: Severity::Medium, volume_spike: Severity::Low }
    }
}

impl SeverityConfig {
    /// The severity of a finding of `kind`.
    pub fn of(&self, kind: &str) -> Severity {
        match kind {
            "rogue_server" => self.rogue_server,
            "fanout_burst" => self.fanout_burst,
            _ => self.volume_spike,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// On the 0 to 10 scale of CEF and of ECS's `event.severity`.
    pub fn score(self) -> u8 {
        match self {
            Severity::Low => 3,
            Severity::Medium => 5,
            Severity::High => 8,
            Severity::Critical => 10,
        }
    }
}

/// How a sink writes findings.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FindingFormat {
    /// rogue's own schema, a JSON object per line.
    Jsonl,
    /// Elastic Common Schema 8.x, a JSON object per line.
    Ecs,
    /// ArcSight's Common Event Format, a line each.
    Cef,
}

/// One sink of `output.findings`: where to, in what format. Written as the
/// place alone (`stdout`, a path, `syslog`, `syslog://HOST:PORT`: JSON
/// lines) or as `{to: PLACE, format: jsonl|ecs|cef}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SinkSpec {
    pub to: FindingSink,
    pub format: FindingFormat,
    /// For an https webhook: a CA certificate (PEM) to trust besides the
    /// system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for SinkSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WithFormat {
            to: FindingSink,
            #[serde(default = "jsonl")]
            format: FindingFormat,
            #[serde(default)]
            ca_file: Option<PathBuf>,
        }
        fn jsonl() -> FindingFormat {
            FindingFormat::Jsonl
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SinkSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a place (stdout, syslog, syslog://HOST:PORT, a path) or {to: PLACE, format: jsonl|ecs|cef}",
                )
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SinkSpec, E> {
                let to = FindingSink::deserialize(serde::de::value::StrDeserializer::<E>::new(text))?;
                Ok(SinkSpec { to, format: FindingFormat::Jsonl, ca_file: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SinkSpec, A::Error> {
                let WithFormat { to, format, ca_file } =
                    WithFormat::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SinkSpec { to, format, ca_file })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One place findings go: `stdout`, `syslog` (the local socket /dev/log),
/// `syslog://HOST:PORT` (UDP), an `http://` or `https://` URL (a webhook,
/// POSTed), `alertmanager+http(s)://HOST:PORT` (Prometheus Alertmanager's
/// API v2), or anything else as a file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindingSink {
    Stdout,
    LocalSyslog,
    RemoteSyslog(String),
    Webhook(String),
    /// The Alertmanager's base URL (`http://HOST:PORT`).
    Alertmanager(String),
    File(PathBuf),
}

impl<'de> Deserialize<'de> for FindingSink {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "stdout" => FindingSink::Stdout,
            "syslog" => FindingSink::LocalSyslog,
            _ if text.starts_with("alertmanager+http://") || text.starts_with("alertmanager+https://") => {
                let base = text.trim_start_matches("alertmanager+").trim_end_matches('/').to_string();
                if base.split_once("://").is_none_or(|(_, host)| host.is_empty()) {
                    return Err(serde::de::Error::custom(format!(
                        "{text}: name the Alertmanager as alertmanager+http://HOST:PORT"
                    )));
                }
                FindingSink::Alertmanager(base)
            }
            _ if text.starts_with("http://") || text.starts_with("https://") => {
                let host = text.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
                if host.is_empty() || host.starts_with('/') {
                    return Err(serde::de::Error::custom(format!("{text}: a webhook URL names its host")));
                }
                FindingSink::Webhook(text)
            }
            _ => match text.strip_prefix("syslog://") {
                Some(server) => {
                    check_host_port(server).map_err(serde::de::Error::custom)?;
                    FindingSink::RemoteSyslog(server.to_string())
                }
                None if text.is_empty() => return Err(serde::de::Error::custom("an empty path")),
                None => FindingSink::File(text.into()),
            },
        })
    }
}

impl fmt::Display for FindingSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindingSink::Stdout => f.write_str("stdout"),
            FindingSink::LocalSyslog => f.write_str("syslog"),
            FindingSink::RemoteSyslog(server) => write!(f, "syslog://{server}"),
            FindingSink::Webhook(url) => f.write_str(url),
            FindingSink::Alertmanager(base) => write!(f, "alertmanager+{base}"),
            FindingSink::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Display for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// The values written as text in the file are shown as that text
/// (`rogue config check --print`).
macro_rules! serialize_as_text {
    ($($type:ty),*) => {$(
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}
serialize_as_text!(FindingSink, DnsServer, NamePattern, IpfixDestination);

/// `HOST:PORT` with a port, checked without resolving the host.
fn check_host_port(server: &str) -> Result<(), String> {
    match server.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("syslog://{server}: give the server as syslog://HOST:PORT (e.g. syslog://192.0.2.5:514)")),
    }
}

/// Where the agent exports its completed flows as IPFIX.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `udp://HOST:PORT`, `tcp://HOST:PORT` or `file:PATH` (relative to the
    /// state directory).
    pub ipfix: Vec<IpfixDestination>,
    pub observation_domain: u32,
}

/// Where flows are exported: `udp://HOST:PORT`, `tcp://HOST:PORT`, or an
/// IPFIX file (`file:PATH`, or `rogue flows --write PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpfixDestination {
    Udp(String),
    Tcp(String),
    File(PathBuf),
}

impl FromStr for IpfixDestination {
    type Err = String;

    fn from_str(text: &str) -> Result<IpfixDestination, String> {
        let host_port = |rest: &str| -> Result<String, String> {
            match rest.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(rest.to_string()),
                _ => Err(format!("{text}: give the collector as udp://HOST:PORT or tcp://HOST:PORT")),
            }
        };
        if let Some(rest) = text.strip_prefix("udp://") {
            host_port(rest).map(IpfixDestination::Udp)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            host_port(rest).map(IpfixDestination::Tcp)
        } else if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(IpfixDestination::File(path.into()))
        } else {
            Err(format!("{text}: an IPFIX destination is udp://HOST:PORT, tcp://HOST:PORT or file:PATH"))
        }
    }
}

impl fmt::Display for IpfixDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpfixDestination::Udp(server) => write!(f, "udp://{server}"),
            IpfixDestination::Tcp(server) => write!(f, "tcp://{server}"),
            IpfixDestination::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for IpfixDestination {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `rogue collect`: what exporters may hold of its memory and descriptors.
/// Exporters are whoever sends datagrams, so every bound is counted when it
/// bites and logged, never silent.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectConfig {
    /// Exporters (address, port and observation domain) whose templates
    /// and state are kept at once; past it the longest silent is forgotten.
    pub max_exporters: Positive,
    /// An exporter silent this long is forgotten (its templates come again:
    /// exporters over UDP resend them).
    pub exporter_idle_seconds: Positive,
    /// IPFIX-over-TCP connections at once (also bounded by the file
    /// descriptor limit); more are refused and logged.
    pub max_tcp_connections: Positive,
    /// A TCP connection that sends nothing this long is closed.
    pub tcp_idle_seconds: Positive,
    /// Only these exporters' messages are read (empty: any); others are
    /// counted and dropped.
    pub allowed_exporters: Vec<IpNet>,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            max_exporters: Positive(4_096),
            exporter_idle_seconds: Positive(1_800),
            max_tcp_connections: Positive(1_024),
            tcp_idle_seconds: Positive(600),
            allowed_exporters: Vec::new(),
        }
    }
}

/// The agent's Prometheus endpoint; `listen: null` turns it off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: Some(([127, 0, 0, 1], 9925).into()) }
    }
}

/// The web console (`rogue serve`, and `rogue agent` or `rogue collect`
/// with `with_agent`). Read-only unless `allow_actions`; actions need
/// `users_file`, and so does any address but loopback: never open by
/// default, never open to the network.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Analysts may acknowledge findings, accept and reject suggestions,
    /// and add and remove whitelist entries through the console.
    pub allow_actions: bool,
    /// The console's users and their Argon2 password hashes (`rogue serve
    /// --hash-password`), beside the configuration; with it, every page
    /// needs a login.
    pub users_file: Option<PathBuf>,
    /// `rogue agent` and `rogue collect` serve the console too.
    pub with_agent: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig { listen: ([127, 0, 0, 1], 9926).into(), allow_actions: false, users_file: None, with_agent: false }
    }
}

fn default_whitelist() -> PathBuf {
    "whitelist.yaml".into()
}

/// A whole number of at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Positive(pub u64);

/// A positive number: a share (0 to 1 for thresholds) or a factor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Share(pub f64);

/// A whole number, checked by `check` inside the visitor, while serde_yaml
/// still knows which key it is reading, so the error names the key and its
/// line (a check after deserialising would name only the enclosing map).
struct WholeVisitor<T>(&'static str, fn(u64) -> Result<T, String>);

impl<T> serde::de::Visitor<'_> for WholeVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<T, E> {
        (self.1)(value).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<T, E> {
        u64::try_from(value).map_err(|_| E::custom(format!("{value} is negative"))).and_then(|v| self.visit_u64(v))
    }
}

/// A number, checked like [`WholeVisitor`].
struct NumberVisitor<T>(&'static str, fn(f64) -> Result<T, String>);

impl<T> serde::de::Visitor<'_> for NumberVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<T, E> {
        if !(value.is_finite() && value > 0.0) {
            return Err(E::custom(format!("{value} must be a number above 0")));
        }
        (self.1)(value).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<T, E> {
        self.visit_f64(value as f64)
    }
    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<T, E> {
        self.visit_f64(value as f64)
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let check = |value| if value == 0 { Err("must be at least 1".to_string()) } else { Ok(Positive(value)) };
        deserializer.deserialize_u64(WholeVisitor("a whole number of at least 1", check))
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_f64(NumberVisitor("a number above 0", |value| Ok(Share(value))))
    }
}

/// A share of a whole: above 0, at most 1 (0.85 is 85%).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let check = |value| match value > 1.0 {
            true => Err(format!("{value} is a share, at most 1 (0.85 is 85%)")),
            false => Ok(Fraction(value)),
        };
        deserializer.deserialize_f64(NumberVisitor("a share above 0, at most 1", check))
    }
}

/// Entries of each kernel flow map: at least 1, at most
/// [`MAX_FLOW_MAP_ENTRIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MapEntries(pub u32);

impl<'de> Deserialize<'de> for MapEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let check = |value| check_flow_map_entries(value).map(MapEntries);
        deserializer.deserialize_u64(WholeVisitor("a number of entries", check))
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let data_dir = data_dir(&dir, std::env::var_os("STATE_DIRECTORY").as_deref());
        Config::parse(path, text, dir, data_dir)
    }

    /// Checks the configuration `text`, read from `path` (named in errors),
    /// whose relative paths start at `dir` and `data_dir`.
    pub fn parse(path: &Path, text: String, dir: PathBuf, data_dir: PathBuf) -> Result<Config, ConfigError> {
        let mut config: Config = parse_yaml(path, &text)?;
        config.check(path, &text)?;
        (config.dir, config.data_dir, config.text) = (dir, data_dir, text);
        Ok(config)
    }

    /// What serde cannot check key by key: values that must agree. Every
    /// problem is reported, each with its line.
    fn check(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let problems = self.problems(text);
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Problems { path: path.into(), problems })
    }

    fn problems(&self, text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut problem = |keys: &[&str], message: String| {
            // The key itself, else the nearest enclosing one written (a key
            // missing from the file is the problem).
            let line = (1..=keys.len()).rev().find_map(|n| line_of(text, &keys[..n]));
            let line = line.map_or(String::new(), |line| format!(" at line {line}"));
            problems.push(format!("{}: {message}{line}", keys.join(".")));
        };
        if self.internal_networks.is_empty() {
            problem(&["internal_networks"], "list at least one network (rogue profiles the hosts in them)".into());
        }
        for (keys, message) in self.services.problems() {
            problem(&keys.iter().map(String::as_str).collect::<Vec<_>>(), message);
        }
        let clickhouse = &self.store.clickhouse;
        if !(clickhouse.url.starts_with("http://") || clickhouse.url.starts_with("https://")) {
            problem(
                &["store", "clickhouse", "url"],
                format!(
                    "{:?} is not http://HOST:PORT or https://HOST:PORT (ClickHouse's HTTP interface)",
                    clickhouse.url
                ),
            );
        }
        let is_name = |name: &str| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name(&clickhouse.database) {
            problem(
                &["store", "clickhouse", "database"],
                format!("{:?} is not a database name (letters, digits and _)", clickhouse.database),
            );
        }
        if let Some(cluster) = clickhouse.cluster.as_deref().filter(|c| !is_name(c)) {
            problem(
                &["store", "clickhouse", "cluster"],
                format!("{cluster:?} is not a cluster name (letters, digits and _)"),
            );
        }
        let serve = &self.serve;
        if serve.allow_actions && serve.users_file.is_none() {
            problem(
                &["serve", "allow_actions"],
                "needs serve.users_file: actions are never open to whoever reaches the console".into(),
            );
        }
        if !serve.listen.ip().is_loopback() && serve.users_file.is_none() {
            problem(
                &["serve", "listen"],
                format!(
                    "{} is not a loopback address: the console shows the network's hosts, so it needs \
                     serve.users_file there",
                    serve.listen
                ),
            );
        }
        let dns = &self.dns;
        if dns.min_ttl_seconds.0 > dns.max_ttl_seconds.0 {
            problem(
                &["dns", "min_ttl_seconds"],
                format!("{} is more than dns.max_ttl_seconds ({})", dns.min_ttl_seconds.0, dns.max_ttl_seconds.0),
            );
        }
        if dns.negative_ttl_seconds.0 < dns.min_ttl_seconds.0 {
            problem(
                &["dns", "negative_ttl_seconds"],
                format!("{} is less than dns.min_ttl_seconds ({})", dns.negative_ttl_seconds.0, dns.min_ttl_seconds.0),
            );
        }
        let capture = &self.capture;
        if capture.active_timeout_seconds.0 < capture.idle_timeout_seconds.0 {
            problem(
                &["capture", "active_timeout_seconds"],
                format!(
                    "{} is less than capture.idle_timeout_seconds ({}): a flow would end before it could idle",
                    capture.active_timeout_seconds.0, capture.idle_timeout_seconds.0
                ),
            );
        }
        problems
    }

    /// A path rogue writes (the store, a finding or IPFIX file), relative
    /// to the data directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.data_dir.join(path) }
    }

    pub fn store_path(&self) -> PathBuf {
        self.resolve(&self.store.path)
    }

    /// Whether the store keeps every flow besides the profiles (ClickHouse's
    /// `raw_flows`).
    pub fn keeps_raw_flows(&self) -> bool {
        self.store.backend == StoreBackend::Clickhouse && self.store.clickhouse.raw_flows
    }

    /// The ClickHouse server's settings, the password file found beside
    /// the configuration (it is configuration, as the whitelist is).
    pub fn clickhouse(&self) -> ClickHouseConfig {
        let mut clickhouse = self.store.clickhouse.clone();
        clickhouse.password_file = clickhouse.password_file.map(|path| self.resolve_beside(&path));
        clickhouse.spool_dir = self.resolve(&clickhouse.spool_dir);
        clickhouse
    }

    /// This configuration with its relative paths resolved: what
    /// `rogue config check --print` shows, itself a valid configuration.
    pub fn effective(&self) -> Config {
        let mut effective = self.clone();
        effective.store.path = self.store_path();
        effective.store.clickhouse = self.clickhouse();
        effective.whitelist = self.whitelist_path();
        effective.services = self.services.effective();
        effective.serve.users_file = self.serve.users_file.as_deref().map(|path| self.resolve_beside(path));
        for sink in &mut effective.output.findings {
            if let FindingSink::File(path) = &mut sink.to {
                *path = self.resolve(path);
            }
        }
        for destination in &mut effective.export.ipfix {
            if let IpfixDestination::File(path) = destination {
                *path = self.resolve(path);
            }
        }
        effective
    }

    /// A path rogue reads as configuration (the whitelist, a CA file),
    /// relative to the configuration's directory.
    pub fn resolve_beside(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.dir.join(path) }
    }

    /// The whitelist, relative to the configuration's directory.
    pub fn whitelist_path(&self) -> PathBuf {
        self.resolve_beside(&self.whitelist)
    }

    pub fn is_internal(&self, addr: IpAddr) -> bool {
        self.internal_networks.iter().any(|net| net.contains(&addr))
    }
}

/// The line (from 1) where the key at `keys`, a path of mapping keys, is
/// written in the YAML `text`: block style key by key; in a flow-style
/// mapping (`dns: {min_ttl_seconds: 5}`), the line that holds it.
pub fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    let mut open: Vec<usize> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        while open.last().is_some_and(|&outer| indent <= outer) {
            open.pop();
        }
        let Some(key) = keys.get(open.len()) else { continue };
        let Some(rest) = trimmed.strip_prefix(key).and_then(|rest| rest.trim_start().strip_prefix(':')) else {
            continue;
        };
        open.push(indent);
        let inner_keys_here = keys[open.len()..].iter().all(|inner| rest.contains(&format!("{inner}:")));
        if open.len() == keys.len() || inner_keys_here {
            return Some(index + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests;
