//! What the store holds and answers, as the rest of rogue sees it, whatever
//! the backend: sources, activity, peers, findings, verdicts, DNS answers.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use crate::profile::Role;

/// A source of flows in the store: a capture or IPFIX file, the agent's
/// interfaces, or an exporter of the collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub id: i64,
    /// `capture`, `ipfix`, `live`, `collect`, or `migrated` (rows stored
    /// before sources were recorded per row).
    pub kind: String,
    pub name: String,
    /// `blake3:HEX` (or `sha256:HEX` for captures stored before migration 4).
    pub content_hash: Option<String>,
    /// Data time the source's stored flows cover.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub packets: u64,
    pub flows: u64,
    /// Wall clock of the ingest (of the first flow, for live sources).
    pub ingested_ms: i64,
    /// Data time from which the source's flows are not evaluated yet.
    pub pending_from_ms: Option<i64>,
    /// Records rejected as dated outside the plausible window.
    pub rejected: u64,
}

impl Source {
    /// Whether its data is kept or dropped whole (files), rather than bin
    /// by bin as it ages (live sources).
    pub fn is_file(&self) -> bool {
        !is_live_kind(&self.kind)
    }
}

/// Whether a source of `kind` is live: the agent's interfaces (`live`) or
/// an exporter of the collector (`collect`).
pub fn is_live_kind(kind: &str) -> bool {
    matches!(kind, "live" | "collect")
}

/// The SQL condition on a source's `kind` that [`is_live_kind`] states.
pub const LIVE_SQL: &str = "kind IN ('live', 'collect')";

/// What is stored but not evaluated yet: the data time it spans, and the
/// write sequence number an evaluation of it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub from_ms: i64,
    pub to_ms: i64,
    pub seq: i64,
}

/// One host's activity for one service in a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostActivity {
    pub host: IpAddr,
    pub roles: BTreeSet<Role>,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub external_clients: u64,
    pub external_servers: u64,
}

/// One peer of a host for one service in a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub peer: IpAddr,
    pub internal: bool,
    /// The host's role towards this peer.
    pub role: Role,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Port usage of a host in one bin: (bin, direction, proto, port, flows, packets, bytes).
pub type PortUsageRow = (i64, u8, u8, u16, u64, u64, u64);

/// The configuration and whitelist an evaluation used, as their files
/// read then: `--db PATH` without a configuration file reads them back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedSettings {
    pub config_path: String,
    pub config_text: String,
    pub config_dir: String,
    pub data_dir: String,
    pub whitelist_path: String,
    pub whitelist_text: String,
}

impl RecordedSettings {
    /// As the store keeps them: (name, value).
    pub fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("config_path", &self.config_path),
            ("config_text", &self.config_text),
            ("config_dir", &self.config_dir),
            ("data_dir", &self.data_dir),
            ("whitelist_path", &self.whitelist_path),
            ("whitelist_text", &self.whitelist_text),
        ]
    }

    /// From the store's (name, value) pairs; None where no evaluation
    /// recorded any.
    pub fn from_pairs(values: &HashMap<String, String>) -> Option<RecordedSettings> {
        let config_text = values.get("config_text")?;
        let value = |name: &str| values.get(name).cloned().unwrap_or_default();
        Some(RecordedSettings {
            config_path: value("config_path"),
            config_text: config_text.clone(),
            config_dir: value("config_dir"),
            data_dir: value("data_dir"),
            whitelist_path: value("whitelist_path"),
            whitelist_text: value("whitelist_text"),
        })
    }
}

/// A finding as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFinding {
    pub id: i64,
    pub kind: String,
    pub service: String,
    pub host: IpAddr,
    /// Tells findings of one type and host apart (a burst's start, a day).
    pub key: String,
    pub state: String,
    pub time_ms: i64,
    pub details: serde_json::Value,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Who acknowledged it, if anyone did.
    pub acknowledged: Option<Acknowledgement>,
}

/// An analyst's acknowledgement of a finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Acknowledgement {
    pub by: String,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// What storing a finding changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    New,
    Changed,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub verdict: String,
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

/// One decision an analyst made (the audit trail): who, when, what, on
/// what, why, and through which door (`cli` or `web`). Never changed or
/// removed once written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    /// Wall clock, ms.
    pub at_ms: i64,
    pub by: String,
    /// `acknowledge`, `accept`, `reject`, `whitelist_add`, `whitelist_remove`.
    pub action: String,
    /// The service; empty for an acknowledgement of findings of several.
    pub service: String,
    /// The host address or whitelist prefix acted on.
    pub subject: String,
    /// The finding acted on, for an acknowledgement.
    pub finding: Option<i64>,
    pub reason: String,
    /// `cli` or `web`.
    pub via: String,
}

/// One record (MX, NS) of an organisation's domain pointing at an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RecordTarget {
    pub domain: String,
    /// The record type; stores written before services other than SMTP
    /// hold only MX records, without it.
    #[serde(default = "mx")]
    pub record: String,
    pub target: String,
    pub preference: u16,
}

/// What DNS said about one host (for one service): `None` where no answer
/// came; see the dns module.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNames {
    /// The PTR name (escaped, see `dns::display_name`); `None` when there
    /// is none or the lookup failed.
    pub ptr: Option<String>,
    pub fcrdns: Option<bool>,
    pub name_match: Option<bool>,
    pub record_target: Option<bool>,
    pub record_targets: Vec<RecordTarget>,
    /// No `dns.mx_domains` configured, or no record checked for the
    /// service: `record_target` unknown.
    pub records_unconfigured: bool,
}

fn mx() -> String {
    "MX".into()
}

impl HostNames {
    /// These answers over `older` ones: what this lookup left unknown (it
    /// got no answer) keeps the earlier answer.
    pub fn over(self, older: &HostNames) -> HostNames {
        // No answer about the name, or the same name with no answer about
        // its forward records: what was known of it stands.
        let unanswered = self.fcrdns.is_none() && (self.ptr.is_none() || self.ptr == older.ptr);
        let (ptr, fcrdns, name_match) = if unanswered {
            (older.ptr.clone(), older.fcrdns, older.name_match)
        } else {
            (self.ptr, self.fcrdns, self.name_match)
        };
        let (record_target, record_targets) = match self.record_target {
            Some(_) => (self.record_target, self.record_targets),
            None if self.records_unconfigured => (None, Vec::new()),
            None => (older.record_target, older.record_targets.clone()),
        };
        HostNames {
            ptr,
            fcrdns,
            name_match,
            record_target,
            record_targets,
            records_unconfigured: self.records_unconfigured,
        }
    }
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows of traffic (bins, port usage, flows, days).
    pub rows: usize,
    /// File sources removed whole.
    pub sources: Vec<Source>,
}
