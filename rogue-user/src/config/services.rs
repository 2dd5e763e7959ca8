//! `services:`: the services the method watches, by any name. Each is
//! written as a partial definition over a preset (rogue knows smtp, dns,
//! ntp, dhcp, ssh and rdp by name, so `rdp: {}` turns RDP on) or, for any
//! other name, over generic defaults that need at least its ports. The
//! written form is kept for `config check --print`; the engine takes the
//! resolved [`Service`]s, in the order the file gives them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap};

use super::{Fraction, NamePattern, Positive};

/// A host's part in a qualifying flow, as the method defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "server" => Some(Role::Server),
            "client" => Some(Role::Client),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The IP protocol number.
    pub fn protocol(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }
}

/// Which peers give a host a role: `external` ones only (a service the
/// Internet should not get from just any host), or `any` (a service that
/// lives inside the LAN, such as DHCP, or SMTP, where an internal relay
/// serving internal hosts is a rogue too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peers {
    External,
    Any,
}

/// The DNS record of the organisation's domains (`dns.mx_domains`) whose
/// targets are servers of the service: MX for mail, NS for DNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecord {
    Mx,
    Ns,
    None,
}

impl DnsRecord {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecord::Mx => "MX",
            DnsRecord::Ns => "NS",
            DnsRecord::None => "none",
        }
    }
}

/// One service as the file writes it: every key optional, over the preset
/// of its name (see [`preset`]). `mail_ports` and `mail_share_threshold`,
/// the keys of rogue 0.1, are read as `share_ports` and `share_threshold`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Vec<Transport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ports: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_packets: Option<Positive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<Positive>,
    #[serde(alias = "mail_ports", skip_serializing_if = "Option::is_none")]
    pub share_ports: Option<Vec<u16>>,
    #[serde(alias = "mail_share_threshold", skip_serializing_if = "Option::is_none")]
    pub share_threshold: Option<Fraction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_pattern: Option<NamePattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Peers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_record: Option<DnsRecord>,
}

/// The services rogue knows by name.
pub const PRESETS: [&str; 6] = ["smtp", "dns", "ntp", "dhcp", "ssh", "rdp"];

/// Host labels of mail servers: smtp, mail, relay, mx, mta, with optional digits.
pub const DEFAULT_NAME_PATTERN: &str = "^(smtp|mail|relay|mx|mta)[0-9]*$";

/// The least a TCP flow carries, per direction, to be more than a
/// connection attempt or its refusal: a SYN is one packet of 40 to 60 bytes,
/// and so is the reset that refuses it. The method's SMTP thresholds (3
/// packets, 120 IP-layer bytes), a handshake's worth; the profiles hold
/// every TCP service to it, whatever its own thresholds.
pub const HANDSHAKE: (u64, u64) = (3, 120);

/// The least UDP datagram: IPv4 and UDP headers, no payload.
pub const DATAGRAM: (u64, u64) = (1, 28);

/// The definition of a service rogue knows by name. Thresholds per direction
/// of a flow, in IP-layer bytes: a TCP service needs a handshake's worth
/// (3 packets, 120 bytes: a SYN scan is one packet); a UDP exchange is one
/// datagram each way, so the least is one datagram of the protocol's
/// smallest message (NTP: 48 bytes of payload + 28 of headers; BOOTP: 240
/// + 28).
pub fn preset(name: &str) -> Option<ServiceSpec> {
    let spec = |transport: &[Transport], ports: &[u16], min: (u64, u64), share: &[u16], pattern: &str| ServiceSpec {
        transport: Some(transport.to_vec()),
        ports: Some(ports.to_vec()),
        client_ports: Some(Vec::new()),
        min_packets: Some(Positive(min.0)),
        min_bytes: Some(Positive(min.1)),
        share_ports: Some(share.to_vec()),
        share_threshold: Some(Fraction(0.85)),
        name_pattern: Some(NamePattern::new(pattern).expect("a valid preset pattern")),
        roles: Some(vec![Role::Server]),
        peers: Some(Peers::External),
        dns_record: Some(DnsRecord::None),
    };
    use Transport::{Tcp, Udp};
    Some(match name {
        "smtp" => ServiceSpec {
            roles: Some(vec![Role::Server, Role::Client]),
            peers: Some(Peers::Any),
            dns_record: Some(DnsRecord::Mx),
            ..spec(&[Tcp], &[25], HANDSHAKE, &[25, 465, 587, 110, 995, 143, 993], DEFAULT_NAME_PATTERN)
        },
        "dns" => ServiceSpec {
            dns_record: Some(DnsRecord::Ns),
            ..spec(&[Udp, Tcp], &[53], (1, 40), &[53, 853], "^(ns|dns|resolver|cache|named|unbound)[0-9]*$")
        },
        "ntp" => spec(&[Udp], &[123], (1, 76), &[123], "^(ntp|time|clock|chrony)[0-9]*$"),
        "dhcp" => ServiceSpec {
            client_ports: Some(vec![68]),
            peers: Some(Peers::Any),
            ..spec(&[Udp], &[67], (1, 268), &[67, 68], "^(dhcp|dhcpd|kea)[0-9]*$")
        },
        "ssh" => spec(&[Tcp], &[22], HANDSHAKE, &[22], "^(ssh|bastion|jump)[0-9]*$"),
        "rdp" => spec(&[Tcp, Udp], &[3389], HANDSHAKE, &[3389], "^(rdp|rds|ts|terminal)[0-9]*$"),
        _ => return None,
    })
}

/// A service with its name, as the engine uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    pub transport: Vec<Transport>,
    /// Its ports: a flow from or to one of them may be a service flow.
    pub ports: Vec<u16>,
    /// The ports its clients send from, where the protocol fixes them
    /// (DHCP's 68): a flow from a service port to a client port is an
    /// answer by itself, whatever its destination (a broadcast).
    pub client_ports: Vec<u16>,
    /// A service flow has at least this many packets and bytes (IP-layer),
    /// counted in its one direction.
    pub min_packets: u64,
    pub min_bytes: u64,
    /// Ports whose traffic counts towards the service share (the method's
    /// mail share).
    pub share_ports: Vec<u16>,
    /// Share of a host's bytes on `share_ports` at which it behaves like a
    /// server of the service (the method's 85%).
    pub share_threshold: f64,
    /// The naming convention: a regular expression (case-insensitive)
    /// matched against a PTR name's host label and each of its parts split
    /// at `-`.
    pub name_pattern: NamePattern,
    /// The roles that make a host a finding; flows of other roles are not
    /// recorded at all.
    pub roles: Vec<Role>,
    pub peers: Peers,
    pub dns_record: DnsRecord,
}

impl Service {
    /// The service of `name` as its preset defines it (or the generic
    /// defaults, for a name rogue does not know).
    pub fn named(name: &str) -> Service {
        ServiceSpec::default().resolve(name)
    }

    pub fn is_service_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    pub fn is_client_port(&self, port: u16) -> bool {
        self.client_ports.contains(&port)
    }

    pub fn is_share_port(&self, port: u16) -> bool {
        self.share_ports.contains(&port)
    }

    pub fn carries(&self, protocol: u8) -> bool {
        self.transport.iter().any(|t| t.protocol() == protocol)
    }

    pub fn finds(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The name as prose says it: `SMTP`, `DNS`.
    pub fn title(&self) -> String {
        self.name.to_uppercase()
    }

    /// "an SMTP", "a DNS": the article as the name is spoken, letter by letter.
    pub fn a_title(&self) -> String {
        let spoken_with_a_vowel = self.name.chars().next().is_some_and(|c| "aefhilmnorsx".contains(c));
        format!("{} {}", if spoken_with_a_vowel { "an" } else { "a" }, self.title())
    }

    /// Its full definition, as `config check --print` writes it.
    fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            transport: Some(self.transport.clone()),
            ports: Some(self.ports.clone()),
            client_ports: Some(self.client_ports.clone()),
            min_packets: Some(Positive(self.min_packets)),
            min_bytes: Some(Positive(self.min_bytes)),
            share_ports: Some(self.share_ports.clone()),
            share_threshold: Some(Fraction(self.share_threshold)),
            name_pattern: Some(self.name_pattern.clone()),
            roles: Some(self.roles.clone()),
            peers: Some(self.peers),
            dns_record: Some(self.dns_record),
        }
    }
}

impl ServiceSpec {
    /// This definition over the preset of `name`, or over the generic
    /// defaults: TCP, a handshake's thresholds (a datagram's for UDP alone),
    /// the service's own ports as its share ports, 85%, a name pattern of
    /// the service's name, server role, external peers, no DNS record.
    /// What is still missing (ports) is left empty for [`problems`] to name.
    fn resolve(&self, name: &str) -> Service {
        let base = preset(name).unwrap_or_default();
        let transport = self.transport.clone().or(base.transport).unwrap_or_else(|| vec![Transport::Tcp]);
        let ports = self.ports.clone().or(base.ports).unwrap_or_default();
        let least = if transport.contains(&Transport::Tcp) { HANDSHAKE } else { DATAGRAM };
        let generic_name = || NamePattern::new(&format!("^{}[0-9]*$", regex::escape(name))).expect("an escaped name");
        Service {
            name: name.to_string(),
            client_ports: self.client_ports.clone().or(base.client_ports).unwrap_or_default(),
            min_packets: self.min_packets.or(base.min_packets).map_or(least.0, |p| p.0),
            min_bytes: self.min_bytes.or(base.min_bytes).map_or(least.1, |b| b.0),
            share_ports: self.share_ports.clone().or(base.share_ports).unwrap_or_else(|| ports.clone()),
            share_threshold: self.share_threshold.or(base.share_threshold).map_or(0.85, |s| s.0),
            name_pattern: self.name_pattern.clone().or(base.name_pattern).unwrap_or_else(generic_name),
            roles: self.roles.clone().or(base.roles).unwrap_or_else(|| vec![Role::Server]),
            peers: self.peers.or(base.peers).unwrap_or(Peers::External),
            dns_record: self.dns_record.or(base.dns_record).unwrap_or(DnsRecord::None),
            transport,
            ports,
        }
    }
}

/// `services:` as written, in order, and as resolved.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    written: Vec<(String, ServiceSpec)>,
    resolved: Vec<Service>,
}

impl Default for ServicesConfig {
    /// SMTP alone, as the method.
    fn default() -> Self {
        ServicesConfig::new(vec![("smtp".into(), ServiceSpec::default())])
    }
}

impl ServicesConfig {
    fn new(written: Vec<(String, ServiceSpec)>) -> ServicesConfig {
        let resolved = written.iter().map(|(name, spec)| spec.resolve(name)).collect();
        ServicesConfig { written, resolved }
    }

    /// Every configured service, in the file's order.
    pub fn all(&self) -> &[Service] {
        &self.resolved
    }

    pub fn get(&self, name: &str) -> Option<&Service> {
        self.resolved.iter().find(|s| s.name == name)
    }

    /// The names of the configured services.
    pub fn names(&self) -> Vec<String> {
        self.resolved.iter().map(|s| s.name.clone()).collect()
    }

    /// Every service in full: what `config check --print` shows.
    pub fn effective(&self) -> ServicesConfig {
        ServicesConfig::new(self.resolved.iter().map(|s| (s.name.clone(), s.spec())).collect())
    }

    /// What cannot stand, as (key path, message).
    pub fn problems(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.resolved.is_empty() {
            problems.push((vec!["services".into()], "define at least one service (smtp: {} is the method's)".into()));
        }
        for (service, (_, spec)) in self.resolved.iter().zip(&self.written) {
            let mut problem = |key: &str, message: String| {
                let keys = ["services", service.name.as_str(), key];
                problems.push((keys.iter().filter(|k| !k.is_empty()).map(|k| k.to_string()).collect(), message));
            };
            let name_ok = service.name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && service.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !name_ok {
                problem("", format!("{:?}: a service's name is lower-case letters, digits, _ and -", service.name));
            }
            if service.ports.is_empty() {
                let known = match spec.ports.is_none() && preset(&service.name).is_none() {
                    true => format!(" (rogue knows {} by name; any other needs its ports)", PRESETS.join(", ")),
                    false => String::new(),
                };
                problem("ports", format!("list at least one port{known}"));
            }
            if service.transport.is_empty() {
                problem("transport", "list tcp, udp or both".into());
            }
            if service.roles.is_empty() {
                problem("roles", "list server, client or both: the roles that make a host a finding".into());
            }
            if let Some(port) = service.client_ports.iter().find(|p| service.is_service_port(**p)) {
                problem("client_ports", format!("{port} is also one of ports: a port is the server's or the client's"));
            }
        }
        problems
    }
}

impl<'de> Deserialize<'de> for ServicesConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ServicesConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of service names to their definitions, e.g. {smtp: {}, rdp: {}}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ServicesConfig, A::Error> {
                let mut written: Vec<(String, ServiceSpec)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    // `rdp:` with nothing after it: the preset as it is.
                    let spec = map.next_value::<Option<ServiceSpec>>()?.unwrap_or_default();
                    if written.iter().any(|(known, _)| *known == name) {
                        return Err(serde::de::Error::custom(format!("service {name:?} is defined twice")));
                    }
                    written.push((name, spec));
                }
                Ok(ServicesConfig::new(written))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl Serialize for ServicesConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.written.len()))?;
        for (name, spec) in &self.written {
            map.serialize_entry(name, spec)?;
        }
        map.end()
    }
}
