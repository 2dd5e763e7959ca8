//! The verdict in plain words, and what the host's owner should do next:
//! the first thing a report says, for a reader who does not know the
//! method. Written from the host's report alone, so every page and every
//! door (files, console) says the same.

use crate::{config::Service, detect::HostReport, profile::Role};

/// What a page tells the owner of a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advice {
    /// What the host does, in a sentence.
    pub finding: String,
    /// What to do about it.
    pub next: String,
}

/// What a reader calls the service's traffic ("mail" for SMTP).
pub fn plain_name(service: &Service) -> String {
    match service.name.as_str() {
        "smtp" => "mail".into(),
        "ntp" => "time (NTP)".into(),
        "ssh" => "remote shell (SSH)".into(),
        "rdp" => "remote desktop (RDP)".into(),
        _ => service.title(),
    }
}

fn ports(service: &Service) -> String {
    let ports: Vec<String> = service.ports.iter().map(u16::to_string).collect();
    format!("port{} {}", if ports.len() == 1 { "" } else { "s" }, ports.join(", "))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn advice(report: &HostReport, service: &Service) -> Advice {
    let what = plain_name(service);
    let a = &report.activity;
    let c = &report.characteristics;
    let mut doing = Vec::new();
    if a.roles.contains(&Role::Server) {
        doing.push(format!(
            "accepting {what} from {} on the Internet ({} of the {} days with data)",
            plural(a.external_clients, "host", "hosts"),
            c.server_days,
            c.days_with_data
        ));
    }
    if a.roles.contains(&Role::Client) {
        doing.push(format!(
            "sending {what} directly to {} on the Internet",
            plural(a.external_servers, &format!("{what} server"), &format!("{what} servers"))
        ));
    }
    let doing = if doing.is_empty() { format!("exchanging {what} within the network") } else { doing.join(" and ") };
    if let Some(entry) = &report.whitelisted {
        return Advice {
            finding: format!(
                "This host is {doing}. It is a registered {what} server (whitelisted as {}).",
                entry.address
            ),
            next: format!(
                "Nothing to do while it should serve {what}. If it no longer should, remove its whitelist entry so \
                 rogue reports it again."
            ),
        };
    }
    if let Some(verdict) = &report.rejected {
        return Advice {
            finding: format!(
                "This host is {doing}. It was confirmed as a rogue {what} server by {}: {}.",
                verdict.by, verdict.reason
            ),
            next: format!(
                "Stop it: turn off what serves {what} on {} (or block it at the gateway), clean the host, and check \
                 the next report shows no more {what} traffic.",
                ports(service)
            ),
        };
    }
    let next = if a.roles.contains(&Role::Server) {
        format!(
            "If it should serve {what}, register it with the team that runs {what}: they verify it and add it to \
             the whitelist. If not, find what listens on {} and turn it off or firewall it.",
            ports(service)
        )
    } else {
        format!(
            "If it should, register it with the team that runs {what}. If not, check its {what} configuration (it \
             should go through the organisation's own servers) and look for malware sending {what}."
        )
    };
    Advice { finding: format!("This host is {doing}, and it is not a registered {what} server."), next }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{
        detect::Characteristics,
        store::{HostActivity, Verdict},
    };

    fn report(roles: &[Role], clients: u64, servers: u64) -> HostReport {
        HostReport {
            service: "smtp".into(),
            activity: HostActivity {
                host: "192.0.2.60".parse().unwrap(),
                roles: roles.iter().copied().collect::<BTreeSet<_>>(),
                flows: 150,
                packets: 1575,
                bytes: 241_125,
                first_ms: 0,
                last_ms: 1,
                external_clients: clients,
                external_servers: servers,
            },
            characteristics: Characteristics { server_days: 3, days_with_data: 15, ..Characteristics::default() },
            whitelisted: None,
            rejected: None,
            suggest_whitelist: false,
            evidence: String::new(),
        }
    }

    #[test]
    fn a_mail_client_is_told_to_register_or_check_its_configuration() {
        let advice = advice(&report(&[Role::Client], 0, 75), &Service::named("smtp"));
        assert_eq!(
            advice.finding,
            "This host is sending mail directly to 75 mail servers on the Internet, and it is not a registered mail \
             server."
        );
        assert!(advice.next.starts_with("If it should, register it with the team that runs mail."), "{}", advice.next);
        assert!(advice.next.contains("check its mail configuration"));
    }

    #[test]
    fn a_server_a_rejected_host_and_a_whitelisted_one_each_get_their_next_step() {
        let smtp = Service::named("smtp");
        let server = advice(&report(&[Role::Server], 1, 0), &smtp);
        assert_eq!(
            server.finding,
            "This host is accepting mail from 1 host on the Internet (3 of the 15 days with data), and it is not a \
             registered mail server."
        );
        assert!(server.next.contains("find what listens on port 25"), "{}", server.next);
        let mut rejected = report(&[Role::Server], 1, 0);
        rejected.rejected =
            Some(Verdict { verdict: "rogue".into(), by: "ana".into(), reason: "no ticket".into(), at_ms: 0 });
        assert!(advice(&rejected, &smtp).finding.ends_with("confirmed as a rogue mail server by ana: no ticket."));
        assert!(advice(&rejected, &smtp).next.starts_with("Stop it"));
        let dns = advice(&report(&[Role::Client], 0, 2), &Service::named("dns"));
        assert!(dns.finding.starts_with("This host is sending DNS directly to 2 DNS servers"), "{}", dns.finding);
    }
}
