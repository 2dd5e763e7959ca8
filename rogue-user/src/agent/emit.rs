//! The agent's emitter: stored findings out to the sinks when they open
//! and again only when they change materially, at least once. The store
//! remembers what was last emitted of each, so a restart re-emits nothing;
//! a finding a sink failed to take is offered again at the next evaluation.

use std::collections::BTreeMap;

use serde_json::json;
use tracing::{info, warn};

use super::{
    metrics::Metrics,
    sinks::{Event, Sinks},
};
use crate::store::{Store, StoreError, StoredFinding};

pub struct Emitter {
    pub sinks: Sinks,
    /// Findings emitted since the start.
    pub emitted: u64,
}

impl Emitter {
    pub fn new(sinks: Sinks) -> Emitter {
        Emitter { sinks, emitted: 0 }
    }

    /// Emits every stored finding whose material evidence differs from what
    /// was last emitted of it (whatever changed it: an evaluation, a
    /// whitelist reload, `rogue findings ack` from a shell); and tells the
    /// Alertmanagers the state of them all, at `now_ms`, for the next
    /// `interval`s. `services` are the configured ones, whose counts of
    /// findings are metrics even at 0.
    pub fn emit_changes(
        &mut self,
        store: &mut dyn Store,
        metrics: &Metrics,
        services: &[String],
        now_ms: i64,
        interval: std::time::Duration,
    ) -> Result<(), StoreError> {
        let emitted = store.emitted()?;
        let findings = store.findings(None, None)?;
        let mut counts: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        for finding in &findings {
            *counts.entry((finding.service.clone(), finding.kind.clone(), finding.state.clone())).or_default() += 1;
            let evidence = material_evidence(finding);
            let event = match emitted.get(&finding.id) {
                Some(last) if *last == evidence => continue,
                Some(_) => Event::Changed,
                None => Event::Opened,
            };
            let failed = self.sinks.emit(event, finding);
            for (sink, e) in &failed {
                metrics.sink_failed(sink);
                warn!("{sink}: could not take finding {} (offered again next evaluation): {e}", finding.id);
            }
            if failed.is_empty() {
                store.set_emitted(finding.id, &evidence)?;
                metrics.emitted();
                self.emitted += 1;
                let (id, what, kind, host, state) =
                    (finding.id, event.as_str(), &finding.kind, finding.host, &finding.state);
                info!("finding {id} {what}: {kind} {host} ({state})");
            }
        }
        metrics.set_findings(services, counts);
        self.sinks.sync_alerts(&findings, now_ms, interval);
        Ok(())
    }
}

/// What of a finding is news to whoever reads the agent's sinks: its state
/// and, for `rogue_server`, the roles, the DNS characteristics and the
/// whitelist suggestion. Counts that grow while a host keeps serving, and
/// its server days, are not: a finding is emitted when it opens and again
/// only when this changes.
pub fn material_evidence(finding: &StoredFinding) -> String {
    let d = &finding.details;
    let c = &d["characteristics"];
    let evidence = match finding.kind.as_str() {
        "rogue_server" => json!({
            "state": finding.state,
            "roles": d["roles"],
            "ptr": c["ptr"],
            "name_match": c["name_match"],
            "fcrdns": c["fcrdns"],
            "record_target": c["record_target"],
            "suggest_whitelist": d["suggest_whitelist"],
        }),
        _ => json!({ "state": finding.state }),
    };
    evidence.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn growing_counts_are_not_news_but_a_new_state_role_or_name_is() {
        let finding = |state: &str, flows: u64, roles: Value, ptr: Value| StoredFinding {
            id: 1,
            kind: "rogue_server".into(),
            service: "smtp".into(),
            host: "192.0.2.77".parse().unwrap(),
            key: String::new(),
            state: state.into(),
            time_ms: flows as i64,
            details: json!({
                "roles": roles, "flows": flows, "suggest_whitelist": false,
                "characteristics": {"server_days": flows, "ptr": ptr, "name_match": null, "fcrdns": null, "record_target": null},
            }),
            created_ms: 0,
            updated_ms: 0,
            acknowledged: None,
        };
        let first = material_evidence(&finding("open", 1, json!(["server"]), Value::Null));
        assert_eq!(first, material_evidence(&finding("open", 900, json!(["server"]), Value::Null)));
        for changed in [
            finding("whitelisted", 1, json!(["server"]), Value::Null),
            finding("open", 1, json!(["client", "server"]), Value::Null),
            finding("open", 1, json!(["server"]), json!("mail.example.org")),
        ] {
            assert_ne!(first, material_evidence(&changed), "{changed:?}");
        }
    }
}
