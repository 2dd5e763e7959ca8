//! How findings read: for machines, one JSON object with the common fields
//! then the kind's own; for people, a few words. Every sink, table and page
//! shows findings through these, so they read the same everywhere.

use serde_json::{Map, Value, json};

use crate::{store::StoredFinding, time::rfc3339_millis};

/// A stored finding as one JSON object: the common fields, then its own.
pub fn finding_json(finding: &StoredFinding) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(finding.id));
    object.insert("type".into(), json!(finding.kind));
    object.insert("service".into(), json!(finding.service));
    object.insert("host".into(), json!(finding.host));
    object.insert("time".into(), json!(rfc3339_millis(finding.time_ms * 1_000_000)));
    object.insert("state".into(), json!(finding.state));
    if let Value::Object(details) = &finding.details {
        object.extend(details.clone());
    }
    Value::Object(object)
}

/// The essentials of a finding in a few words, for tables and reports.
pub fn finding_summary(finding: &StoredFinding) -> String {
    let d = &finding.details;
    let number = |key: &str| d[key].as_u64().unwrap_or(0);
    match finding.kind.as_str() {
        "rogue_server" => {
            let roles: Vec<&str> = d["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
            let share =
                d["characteristics"]["mail_share"].as_f64().map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0));
            format!(
                "{}; {} flows; {} clients, {} servers; {} server days; mail share {share}{}",
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
