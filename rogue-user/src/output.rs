//! How findings read, in every format a SOC ingests: rogue's own schema
//! (versioned; one JSON object: the common fields, then the kind's own),
//! Elastic Common Schema 8.x, ArcSight CEF, and a few words for people.
//! Every sink, table and page shows findings through these, so they read
//! the same everywhere.

use serde_json::{Map, Value, json};

use crate::{
    config::{FindingFormat, OutputConfig, SeverityConfig},
    store::StoredFinding,
    time::rfc3339_millis,
};

/// The version of the finding schema (README, "Findings"). 3: the
/// characteristics of any service, `share` and `record_target` (2 had
/// `mail_share` and `mx`); 2: `kind`, `status`, `verdict`, `severity`,
/// `observer`, `rule`, `message`, `acknowledged`, and a fan-out's `servers`
/// (1 had `type` and `state`).
pub const FINDING_SCHEMA_VERSION: u32 = 3;

/// The ECS version the `ecs` format follows.
pub const ECS_VERSION: &str = "8.17.0";

/// What the configuration adds to a finding as it goes out: who observed
/// it and how severe its kind is.
#[derive(Clone, Debug)]
pub struct Presentation {
    pub observer: String,
    pub severity: SeverityConfig,
}

impl Presentation {
    pub fn of(output: &OutputConfig) -> Presentation {
        Presentation { observer: output.observer_name(), severity: output.severity.clone() }
    }
}

/// rogue's judgement of a finding, a fixed value: `rogue` (serving the
/// service outside the whitelist), `suggest_whitelist` (doing so with the
/// characteristics of a real server), `anomaly` (a burst or spike),
/// `whitelisted` and `confirmed_rogue` (an administrator decided).
pub fn verdict(finding: &StoredFinding) -> &'static str {
    match (finding.state.as_str(), finding.kind.as_str()) {
        ("whitelisted", _) => "whitelisted",
        ("confirmed_rogue", _) => "confirmed_rogue",
        (_, "rogue_server") if finding.details["suggest_whitelist"] == true => "suggest_whitelist",
        (_, "rogue_server") => "rogue",
        _ => "anomaly",
    }
}

/// The finding in one sentence for people.
pub fn message(finding: &StoredFinding) -> String {
    let d = &finding.details;
    let number = |key: &str| d[key].as_u64().unwrap_or(0);
    match finding.kind.as_str() {
        "rogue_server" => d["evidence"].as_str().unwrap_or_default().to_string(),
        "fanout_burst" => format!(
            "{} opened {} to {} external servers within {} s from {}.",
            finding.host,
            finding.service.to_uppercase(),
            number("peers"),
            number("window_seconds"),
            d["at"].as_str().unwrap_or("?")
        ),
        "volume_spike" => format!(
            "{}'s {} on {}: {} flows and {} bytes, against a baseline of {} flows and {} bytes a day.",
            finding.host,
            finding.service.to_uppercase(),
            d["day"].as_str().unwrap_or("?"),
            number("flows"),
            number("bytes"),
            number("baseline"),
            number("baseline_bytes")
        ),
        _ => d.to_string(),
    }
}

/// A stored finding in rogue's schema: the common fields, then its own.
pub fn finding_json(finding: &StoredFinding, presentation: &Presentation) -> Value {
    let mut object = Map::new();
    object.insert("schema_version".into(), json!(FINDING_SCHEMA_VERSION));
    object.insert("id".into(), json!(finding.id));
    object.insert("kind".into(), json!(finding.kind));
    object.insert("service".into(), json!(finding.service));
    object.insert("host".into(), json!(finding.host));
    object.insert("time".into(), json!(rfc3339_millis(finding.time_ms * 1_000_000)));
    object.insert("status".into(), json!(finding.state));
    object.insert("verdict".into(), json!(verdict(finding)));
    object.insert("severity".into(), json!(presentation.severity.of(&finding.kind).as_str()));
    object.insert("observer".into(), json!(presentation.observer));
    object.insert("rule".into(), finding.details.get("rule").cloned().unwrap_or(Value::Null));
    object.insert("message".into(), json!(message(finding)));
    object.insert(
        "acknowledged".into(),
        match &finding.acknowledged {
            Some(ack) => json!({"by": ack.by, "reason": ack.reason, "at": rfc3339_millis(ack.at_ms * 1_000_000)}),
            None => Value::Null,
        },
    );
    if let Value::Object(details) = &finding.details {
        for (key, value) in details {
            // The sentence is `message`; the rule is above.
            if key != "evidence" && key != "rule" {
                object.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(object)
}

/// The finding as an Elastic Common Schema 8.x alert: ECS fields where ECS
/// has them, and rogue's whole schema under `rogue`.
pub fn finding_ecs(finding: &StoredFinding, presentation: &Presentation) -> Value {
    let severity = presentation.severity.of(&finding.kind);
    // The internal host is the finding's subject; a fan-out's flows leave
    // from it, so it is also their source.
    let mut ecs = json!({
        "@timestamp": rfc3339_millis(finding.time_ms * 1_000_000),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "alert",
            "category": ["network"],
            "type": ["info"],
            "module": "rogue",
            "dataset": "rogue.finding",
            "id": finding.id.to_string(),
            "severity": severity.score(),
            "created": rfc3339_millis(finding.created_ms * 1_000_000),
        },
        "rule": {
            "name": finding.kind,
            "ruleset": "US-CERT/NetSA rogue email server detection",
            "category": finding.service,
        },
        "message": message(finding),
        "host": {"ip": [finding.host.to_string()]},
        "network": {"protocol": finding.service},
        "observer": {"name": presentation.observer, "type": "sensor", "vendor": "rogue", "product": "rogue"},
        "rogue": finding_json(finding, presentation),
    });
    if finding.kind == "fanout_burst" {
        ecs["source"] = json!({"ip": finding.host.to_string()});
    }
    if let Some(ptr) = finding.details["characteristics"]["ptr"].as_str() {
        ecs["host"]["hostname"] = json!(ptr);
    }
    ecs
}

/// The finding as one ArcSight CEF line (CEF 25: `|` and `\` escaped in the
/// header, `\`, `=` and line breaks in the extension).
pub fn finding_cef(finding: &StoredFinding, presentation: &Presentation, event: &str) -> String {
    let severity = presentation.severity.of(&finding.kind);
    let service = finding.service.to_uppercase();
    let name = match finding.kind.as_str() {
        "rogue_server" => format!("Rogue {service} server"),
        "fanout_burst" => format!("Fan-out to external {service} servers"),
        "volume_spike" => format!("{service} volume spike"),
        other => other.to_string(),
    };
    let address = match finding.host {
        std::net::IpAddr::V4(v4) => format!("src={v4}"),
        std::net::IpAddr::V6(v6) => format!("c6a2={v6} c6a2Label=Source IPv6 Address"),
    };
    let mut extension = vec![
        format!("rt={}", finding.time_ms),
        address,
        format!("dvchost={}", cef_value(&presentation.observer)),
        format!("app={}", cef_value(&finding.service)),
        format!("externalId={}", finding.id),
        format!("cs1={} cs1Label=status", cef_value(&finding.state)),
        format!("cs2={} cs2Label=verdict", verdict(finding)),
        format!("cs3={} cs3Label=event", cef_value(event)),
    ];
    if let Some(ptr) = finding.details["characteristics"]["ptr"].as_str() {
        extension.push(format!("shost={}", cef_value(ptr)));
    }
    if let Some(ack) = &finding.acknowledged {
        extension.push(format!("suser={}", cef_value(&ack.by)));
    }
    extension.push(format!("msg={}", cef_value(&message(finding))));
    format!(
        "CEF:0|rogue|rogue|{}|{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&finding.kind),
        cef_header(&name),
        severity.score(),
        extension.join(" ")
    )
}

/// A CEF header field: `\` and `|` escaped.
pub fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|")
}

/// A CEF extension value: `\` and `=` escaped, line breaks as `\n` and `\r`.
pub fn cef_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

/// One line of a finding in `format`; `event` says why it goes out
/// (`opened`, `changed`) where a sink sends it, and is None in listings.
pub fn finding_line(
    finding: &StoredFinding,
    presentation: &Presentation,
    format: FindingFormat,
    event: Option<&str>,
) -> String {
    match format {
        FindingFormat::Jsonl => {
            let mut object = Map::new();
            if let Some(event) = event {
                object.insert("event".into(), json!(event));
            }
            if let Value::Object(fields) = finding_json(finding, presentation) {
                object.extend(fields);
            }
            Value::Object(object).to_string()
        }
        FindingFormat::Ecs => {
            let mut ecs = finding_ecs(finding, presentation);
            if let Some(event) = event {
                ecs["event"]["action"] = json!(event);
            }
            ecs.to_string()
        }
        FindingFormat::Cef => finding_cef(finding, presentation, event.unwrap_or("listed")),
    }
}

/// The essentials of a finding in a few words, for tables and reports.
pub fn finding_summary(finding: &StoredFinding) -> String {
    let d = &finding.details;
    let number = |key: &str| d[key].as_u64().unwrap_or(0);
    match finding.kind.as_str() {
        "rogue_server" => {
            let roles: Vec<&str> = d["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
            let share =
                d["characteristics"]["share"].as_f64().map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0));
            format!(
                "{}; {} flows; {} clients, {} servers; {} server days; share {share}{}",
                roles.join("+"),
                number("flows"),
                number("external_clients"),
                number("external_servers"),
                d["characteristics"]["server_days"].as_u64().unwrap_or(0),
                if d["suggest_whitelist"] == true { "; suggest whitelisting" } else { "" }
            )
        }
        "fanout_burst" => format!("{} external servers within {} s", number("peers"), number("window_seconds")),
        "volume_spike" => format!(
            "{}: {} flows, {} bytes; baseline {} flows, {} bytes",
            d["day"].as_str().unwrap_or("?"),
            number("flows"),
            number("bytes"),
            number("baseline"),
            number("baseline_bytes")
        ),
        _ => d.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Acknowledgement;

    fn finding(kind: &str, details: Value) -> StoredFinding {
        StoredFinding {
            id: 7,
            kind: kind.into(),
            service: "smtp".into(),
            host: "192.0.2.77".parse().unwrap(),
            key: String::new(),
            state: "open".into(),
            time_ms: 1_204_012_800_000,
            details,
            created_ms: 1_204_012_900_000,
            updated_ms: 1_204_012_900_000,
            acknowledged: None,
        }
    }

    fn presentation() -> Presentation {
        Presentation { observer: "gw|1=a".into(), severity: SeverityConfig::default() }
    }

    #[test]
    fn verdicts_are_fixed_values_from_the_status_and_the_evidence() {
        let mut rogue = finding("rogue_server", json!({"suggest_whitelist": false}));
        assert_eq!(verdict(&rogue), "rogue");
        rogue.details["suggest_whitelist"] = json!(true);
        assert_eq!(verdict(&rogue), "suggest_whitelist");
        rogue.state = "confirmed_rogue".into();
        assert_eq!(verdict(&rogue), "confirmed_rogue");
        let mut burst = finding("fanout_burst", json!({}));
        assert_eq!(verdict(&burst), "anomaly");
        burst.state = "whitelisted".into();
        assert_eq!(verdict(&burst), "whitelisted");
    }

    #[test]
    fn the_schema_has_its_common_fields_then_the_kinds_own() {
        let mut burst = finding(
            "fanout_burst",
            json!({"peers": 2, "window_seconds": 60, "at": "2008-02-26T08:00:00.000Z",
                   "rule": {"name": "fanout_burst"}, "servers": [{"address": "198.51.100.1"}]}),
        );
        burst.acknowledged = Some(Acknowledgement { by: "alice".into(), reason: Some("ticket 4".into()), at_ms: 0 });
        let json = finding_json(&burst, &presentation());
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "schema_version",
                "id",
                "kind",
                "service",
                "host",
                "time",
                "status",
                "verdict",
                "severity",
                "observer",
                "rule",
                "message",
                "acknowledged",
                "peers",
                "window_seconds",
                "at",
                "servers"
            ]
        );
        assert_eq!(json["severity"], "medium");
        assert_eq!(
            json["message"],
            "192.0.2.77 opened SMTP to 2 external servers within 60 s from 2008-02-26T08:00:00.000Z."
        );
        assert_eq!(
            json["acknowledged"],
            json!({"by": "alice", "reason": "ticket 4", "at": "1970-01-01T00:00:00.000Z"})
        );
    }

    #[test]
    fn cef_escapes_its_header_and_extension_as_the_spec_says() {
        let hostile = "bad|name\\with=equals\nand\rbreaks";
        assert_eq!(cef_header(hostile), "bad\\|name\\\\with=equals\nand\rbreaks");
        assert_eq!(cef_value(hostile), "bad|name\\\\with\\=equals\\nand\\rbreaks");
        let rogue = finding(
            "rogue_server",
            json!({"evidence": "serves = mail", "characteristics": {"ptr": hostile}, "suggest_whitelist": false}),
        );
        let line = finding_cef(&rogue, &presentation(), "opened");
        assert_eq!(
            line,
            format!(
                "CEF:0|rogue|rogue|{}|rogue_server|Rogue SMTP server|8|rt=1204012800000 src=192.0.2.77 \
                 dvchost=gw|1\\=a app=smtp externalId=7 cs1=open cs1Label=status cs2=rogue cs2Label=verdict \
                 cs3=opened cs3Label=event shost=bad|name\\\\with\\=equals\\nand\\rbreaks msg=serves \\= mail",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(!line.contains('\n') && !line.contains('\r'));
    }
}
