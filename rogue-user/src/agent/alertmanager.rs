//! The Alertmanager sink: findings as Prometheus alerts (API v2, `POST
//! /api/v2/alerts`). It is a state, not a stream: at each evaluation every
//! open or confirmed-rogue finding is sent with an `endsAt` three intervals
//! ahead (so it stays firing while rogue runs, and expires if rogue stops
//! saying so), and every finding acknowledged or whitelisted since then is
//! sent with `endsAt` now, which resolves it. A failed request is logged,
//! counted and simply made good by the next evaluation's.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tracing::warn;

use super::metrics::Metrics;
use crate::{
    output::{Presentation, message, verdict},
    store::StoredFinding,
    time::rfc3339_millis,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Alertmanager {
    /// `http://HOST:PORT`, the API under it.
    base: String,
    /// How rogue names the sink (`alertmanager+http://HOST:PORT`).
    name: String,
    client: reqwest::Client,
    presentation: Presentation,
    report_url: String,
    metrics: Arc<Metrics>,
}

impl Alertmanager {
    pub fn new(
        base: &str,
        presentation: Presentation,
        report_url: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Alertmanager, String> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("rogue/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        reqwest::Url::parse(base).map_err(|e| format!("{base}: {e}"))?;
        let name = format!("alertmanager+{base}");
        Ok(Alertmanager { base: base.into(), name, client, presentation, report_url: report_url.into(), metrics })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends the alerts `findings` make at `now_ms`, firing for three
    /// `interval`s, in the background.
    pub fn sync(&self, findings: &[StoredFinding], now_ms: i64, interval: Duration) {
        let alerts = alerts(findings, now_ms, interval, &self.presentation, &self.report_url);
        if alerts.is_empty() {
            return;
        }
        let (client, url) = (self.client.clone(), format!("{}/api/v2/alerts", self.base));
        let (metrics, name) = (self.metrics.clone(), self.name.clone());
        tokio::spawn(async move {
            let body = Value::Array(alerts).to_string();
            let count = body.len();
            let sent =
                client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).send().await;
            match sent {
                Ok(response) if response.status().is_success() => metrics.sink_delivered(&name),
                Ok(response) => {
                    metrics.sink_failed(&name);
                    warn!(
                        "{url} answered {} to {count} bytes of alerts; sent again next evaluation",
                        response.status()
                    );
                }
                Err(e) => {
                    metrics.sink_failed(&name);
                    warn!("{url}: {}; the alerts are sent again next evaluation", crate::with_causes(&e));
                }
            }
        });
    }
}

/// The alerts of `findings`: firing for the open and the confirmed rogues,
/// resolved for those acknowledged or whitelisted within the firing window
/// (older ones expired on their own).
pub fn alerts(
    findings: &[StoredFinding],
    now_ms: i64,
    interval: Duration,
    presentation: &Presentation,
    report_url: &str,
) -> Vec<Value> {
    let window_ms = 3 * interval.as_millis() as i64;
    findings
        .iter()
        .filter_map(|finding| {
            let ends_ms = match finding.state.as_str() {
                "open" | "confirmed_rogue" => now_ms + window_ms,
                _ if finding.updated_ms >= now_ms - window_ms => now_ms,
                _ => return None,
            };
            Some(alert(finding, ends_ms, presentation, report_url))
        })
        .collect()
}

fn alert(finding: &StoredFinding, ends_ms: i64, presentation: &Presentation, report_url: &str) -> Value {
    let alertname = match finding.kind.as_str() {
        "rogue_server" => "RogueServer",
        "fanout_burst" => "RogueFanoutBurst",
        _ => "RogueVolumeSpike",
    };
    let mut annotations = json!({
        "summary": format!("{} {} on {}: {}", finding.kind, finding.host, presentation.observer, verdict(finding)),
        "description": message(finding),
    });
    if !report_url.is_empty() {
        annotations["report"] = json!(report_url.replace("{host}", &finding.host.to_string()));
    }
    json!({
        "labels": {
            "alertname": alertname,
            "kind": finding.kind,
            "host": finding.host.to_string(),
            "service": finding.service,
            "observer": presentation.observer,
            "severity": presentation.severity.of(&finding.kind).as_str(),
            "finding": finding.id.to_string(),
        },
        "annotations": annotations,
        "startsAt": rfc3339_millis(finding.created_ms * 1_000_000),
        "endsAt": rfc3339_millis(ends_ms * 1_000_000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SeverityConfig;

    fn finding(id: i64, state: &str, updated_ms: i64) -> StoredFinding {
        StoredFinding {
            id,
            kind: "fanout_burst".into(),
            service: "smtp".into(),
            host: "192.0.2.60".parse().unwrap(),
            key: String::new(),
            state: state.into(),
            time_ms: 0,
            details: json!({"peers": 75, "window_seconds": 60, "at": "2008-03-10T14:30:00.000Z"}),
            created_ms: 1_000,
            updated_ms,
            acknowledged: None,
        }
    }

    #[test]
    fn open_findings_fire_for_three_intervals_and_recent_acknowledgements_resolve() {
        let presentation = Presentation { observer: "gw-1".into(), severity: SeverityConfig::default() };
        let now = 10_000_000;
        let findings = [
            finding(1, "open", 0),
            finding(2, "acknowledged", now - 1_000),
            finding(3, "whitelisted", now - 1_000_000),
            finding(4, "confirmed_rogue", 0),
        ];
        let sent = alerts(&findings, now, Duration::from_secs(60), &presentation, "https://soc.example.org/r/{host}/");
        let ids: Vec<&str> = sent.iter().map(|a| a["labels"]["finding"].as_str().unwrap()).collect();
        assert_eq!(ids, ["1", "2", "4"], "a resolution older than the window is not sent again");
        assert_eq!(sent[0]["endsAt"], rfc3339_millis((now + 180_000) * 1_000_000));
        assert_eq!(sent[1]["endsAt"], rfc3339_millis(now * 1_000_000));
        assert_eq!(
            sent[0]["labels"],
            json!({"alertname": "RogueFanoutBurst", "kind": "fanout_burst", "host": "192.0.2.60", "service": "smtp",
                   "observer": "gw-1", "severity": "medium", "finding": "1"})
        );
        assert_eq!(sent[0]["annotations"]["report"], "https://soc.example.org/r/192.0.2.60/");
        assert_eq!(sent[0]["startsAt"], "1970-01-01T00:00:01.000Z");
    }
}
