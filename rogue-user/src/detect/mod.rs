//! Detection: the method's rules over what the store knows. For each service
//! and each internal host with qualifying flows, the characteristics (days as
//! a server in the look-back, share of bytes on the service's share ports,
//! mail ports for SMTP; DNS ones are
//! filled in by the dns stage), the whitelist and the administrators'
//! verdicts give a host report; from those come the findings:
//! - `rogue_server`: a host with qualifying flows that is not whitelisted;
//! - `fanout_burst`: a host opening qualifying flows to many external
//!   servers within a short window (the method's misconfiguration case);
//! - `volume_spike`: the first day a host's qualifying flows or bytes jump
//!   far above the median of its previous days (the new-servers case).
//!
//! Whitelisted hosts get no findings: a mail relay fanning out is its job.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use serde_json::{Map, Value, json};

use crate::{
    config::{Config, Service},
    profile::Role,
    store::{HostActivity, HostNames, Result, Store, StoredFinding, Upsert, Verdict},
    time::{MILLIS_PER_DAY, rfc3339_millis},
};

pub mod whitelist;

use whitelist::{Whitelist, WhitelistEntry};

/// What DNS said about the hosts an evaluation looks at (the dns stage
/// finds it out; the store keeps it).
#[derive(Clone, Debug, Default)]
pub struct DnsFacts {
    /// False with `--no-dns`: every DNS characteristic is then null.
    pub enabled: bool,
    pub hosts: HashMap<(String, IpAddr), HostNames>,
}

impl DnsFacts {
    pub fn disabled() -> DnsFacts {
        DnsFacts { enabled: false, hosts: HashMap::new() }
    }

    pub fn get(&self, service: &str, host: IpAddr) -> Option<&HostNames> {
        self.hosts.get(&(service.to_string(), host))
    }

    /// Takes new answers over the known ones (see [`HostNames::over`]).
    pub fn take(&mut self, answers: DnsFacts) {
        for (key, names) in answers.hosts {
            let names = match self.hosts.get(&key) {
                Some(older) => names.over(older),
                None => names,
            };
            self.hosts.insert(key, names);
        }
    }
}

/// The look-back over which characteristics are measured, in data time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// What the method looks at for a host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Characteristics {
    /// Days in the look-back on which the host acted as a server.
    pub server_days: u64,
    /// Days in the look-back for which rogue had data.
    pub days_with_data: u64,
    /// Share of the host's bytes on the service's share ports; `None`
    /// without traffic.
    pub share: Option<f64>,
    pub ptr: Option<String>,
    pub name_match: Option<bool>,
    pub fcrdns: Option<bool>,
    pub record_target: Option<bool>,
}

impl Characteristics {
    pub fn to_json(&self) -> Value {
        json!({
            "server_days": self.server_days,
            "share": self.share.map(|s| (s * 1e4).round() / 1e4),
            "ptr": self.ptr,
            "name_match": self.name_match,
            "fcrdns": self.fcrdns,
            "record_target": self.record_target,
        })
    }
}

/// One host's standing for one service.
#[derive(Clone, Debug)]
pub struct HostReport {
    pub service: String,
    pub activity: HostActivity,
    pub characteristics: Characteristics,
    pub whitelisted: Option<WhitelistEntry>,
    pub rejected: Option<Verdict>,
    /// Characteristics consistent with a server of the service.
    pub suggest_whitelist: bool,
    /// One readable sentence on why.
    pub evidence: String,
}

impl HostReport {
    pub fn host(&self) -> IpAddr {
        self.activity.host
    }

    pub fn verdict(&self) -> &'static str {
        if self.whitelisted.is_some() {
            "whitelisted"
        } else if self.rejected.is_some() {
            "confirmed rogue"
        } else if self.suggest_whitelist {
            "rogue (suggested for the whitelist)"
        } else {
            "rogue"
        }
    }

    pub fn roles(&self) -> Vec<&'static str> {
        self.activity.roles.iter().map(|r| r.as_str()).collect()
    }

    /// The host's activity and characteristics as JSON fields, as both
    /// `rogue_server` findings and `rogue hosts` print them.
    pub fn activity_json(&self) -> Map<String, Value> {
        let a = &self.activity;
        let Value::Object(fields) = json!({
            "roles": self.roles(),
            "first_seen": rfc3339_millis(a.first_ms * 1_000_000),
            "last_seen": rfc3339_millis(a.last_ms * 1_000_000),
            "flows": a.flows,
            "packets": a.packets,
            "bytes": a.bytes,
            "external_clients": a.external_clients,
            "external_servers": a.external_servers,
            "characteristics": self.characteristics.to_json(),
            "suggest_whitelist": self.suggest_whitelist,
            "evidence": self.evidence,
        }) else {
            unreachable!("json! of an object")
        };
        fields
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    RogueServer,
    FanoutBurst,
    VolumeSpike,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::RogueServer => "rogue_server",
            FindingKind::FanoutBurst => "fanout_burst",
            FindingKind::VolumeSpike => "volume_spike",
        }
    }
}

/// A finding before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub service: String,
    pub host: IpAddr,
    /// Tells findings of one kind and host apart.
    pub key: String,
    pub time_ms: i64,
    /// The fields particular to the kind.
    pub details: Value,
    /// Set when an administrator's verdict decides the state.
    pub state: Option<&'static str>,
}

pub struct Detector<'a> {
    pub config: &'a Config,
    pub whitelist: &'a Whitelist,
    /// What DNS said about the hosts being evaluated.
    pub dns: &'a DnsFacts,
}

impl Detector<'_> {
    pub fn services(&self) -> &[Service] {
        self.config.services.all()
    }

    /// The look-back window ending at `end_ms`.
    pub fn window(&self, end_ms: i64) -> Window {
        Window { from_ms: end_ms - self.config.detection.history_days.0 as i64 * MILLIS_PER_DAY, to_ms: end_ms }
    }

    /// Every host with qualifying flows of `service` in the store, each
    /// measured over the look-back ending at its last activity.
    pub fn hosts(&self, store: &dyn Store, service: &Service) -> Result<Vec<HostReport>> {
        let covered = store.covered_days()?;
        let mut reports = Vec::new();
        for active in store.service_hosts(&service.name, i64::MIN, i64::MAX)? {
            let (host, last_ms) = (active.host, active.last_ms);
            reports.extend(self.latest_report(store, service, host, last_ms, &covered, || Ok(Some(active)))?);
        }
        Ok(reports)
    }

    /// The report on one host, as [`hosts`](Self::hosts) has it, without
    /// measuring every other host (a console's host page).
    pub fn host(&self, store: &dyn Store, service: &Service, host: IpAddr) -> Result<Option<HostReport>> {
        let Some(last_ms) = store.service_host_last_ms(&service.name, host, i64::MIN, i64::MAX)? else {
            return Ok(None);
        };
        let covered = store.covered_days()?;
        self.latest_report(store, service, host, last_ms, &covered, || {
            store.service_host(&service.name, host, i64::MIN, i64::MAX)
        })
    }

    /// The report on `host` over the look-back ending at `last_ms`, when its
    /// last flow ended; `in_period` gives its activity to fall back on should
    /// the look-back hold none of its flows (one flow longer than it).
    fn latest_report(
        &self,
        store: &dyn Store,
        service: &Service,
        host: IpAddr,
        last_ms: i64,
        covered: &BTreeSet<i64>,
        in_period: impl FnOnce() -> Result<Option<HostActivity>>,
    ) -> Result<Option<HostReport>> {
        let window = self.window(last_ms);
        let activity = match store.service_host(&service.name, host, window.from_ms, window.to_ms)? {
            Some(activity) => Some(activity),
            None => in_period()?,
        };
        activity.map(|activity| self.report(store, service, activity, window, covered)).transpose()
    }

    /// The report on one host's `activity` in the window.
    fn report(
        &self,
        store: &dyn Store,
        service: &Service,
        activity: HostActivity,
        window: Window,
        covered: &BTreeSet<i64>,
    ) -> Result<HostReport> {
        let host = activity.host;
        let days = window.from_ms.div_euclid(MILLIS_PER_DAY)..=window.to_ms.div_euclid(MILLIS_PER_DAY);
        let (share, total) = store.share_bytes(&service.name, host, window.from_ms, window.to_ms)?;
        let looked_up = self.dns.get(&service.name, host).filter(|_| self.dns.enabled);
        let names = looked_up.cloned().unwrap_or_default();
        let characteristics = Characteristics {
            server_days: store.server_days(&service.name, host, window.from_ms, window.to_ms)?,
            days_with_data: covered.range(days).count() as u64,
            share: (total > 0).then(|| share as f64 / total as f64),
            ptr: names.ptr.clone(),
            name_match: names.name_match,
            fcrdns: names.fcrdns,
            record_target: names.record_target,
        };
        let whitelisted = self.whitelist.matching(host, &service.name).cloned();
        let rejected = store.verdict(&service.name, host)?.filter(|v| v.verdict == "rogue");
        let mut report = HostReport {
            service: service.name.clone(),
            activity,
            characteristics,
            whitelisted,
            rejected,
            suggest_whitelist: false,
            evidence: String::new(),
        };
        report.suggest_whitelist = report.whitelisted.is_none()
            && report.rejected.is_none()
            && (self.behaves_like_a_server(service, &report.characteristics)
                || looks_like_a_server(&report.characteristics));
        report.evidence = self.evidence(service, &report, looked_up);
        Ok(report)
    }

    /// The method's behavioural test: a server on several days, with most of
    /// its traffic on the service's share ports.
    fn behaves_like_a_server(&self, service: &Service, c: &Characteristics) -> bool {
        c.server_days >= self.config.detection.suggest_min_server_days.0
            && c.share.is_some_and(|share| share >= service.share_threshold)
    }

    fn evidence(&self, service: &Service, report: &HostReport, names: Option<&HostNames>) -> String {
        let a = &report.activity;
        let c = &report.characteristics;
        let (name, a_name) = (service.title(), service.a_title());
        let mut parts = Vec::new();
        if a.roles.contains(&Role::Server) {
            parts.push(format!(
                "acted as {a_name} server on {} of the {} days with data, talking to {} external clients",
                c.server_days, c.days_with_data, a.external_clients
            ));
        }
        if a.roles.contains(&Role::Client) {
            parts.push(format!("sent {name} to {} external servers", a.external_servers));
        }
        let mut sentence = format!("{} {} in {} qualifying flows", a.host, parts.join(" and "), a.flows);
        match c.share {
            Some(share) => {
                sentence += &format!(
                    "; {:.0}% of its bytes were on {name} ports ({}; threshold {:.0}%)",
                    share * 100.0,
                    port_list(&service.share_ports),
                    service.share_threshold * 100.0
                )
            }
            None => sentence += "; its total traffic is unknown",
        }
        sentence += &self.dns_evidence(service, names);
        sentence += &match (&report.whitelisted, &report.rejected) {
            (Some(entry), _) => format!(
                "; whitelisted as {} ({})",
                entry.address,
                entry.name.as_deref().or(entry.reason.as_deref()).unwrap_or("no name")
            ),
            (None, Some(verdict)) => format!("; confirmed rogue by {}: {}", verdict.by, verdict.reason),
            (None, None) if report.suggest_whitelist => {
                let mut held = Vec::new();
                if self.behaves_like_a_server(service, c) {
                    held.push(format!("behaves like {a_name} server"));
                }
                if c.record_target == Some(true) {
                    held.push(format!("is an {} target", service.dns_record.as_str()));
                }
                if c.name_match == Some(true) {
                    held.push(format!("has a forward-confirmed {name} name"));
                }
                format!("; it {} but is not on the whitelist: verify it, then accept or reject it", held.join(" and "))
            }
            (None, None) => format!("; it is not on the whitelist and does not behave like {a_name} server"),
        };
        sentence + "."
    }

    /// What DNS said, as a clause of the evidence sentence.
    fn dns_evidence(&self, service: &Service, names: Option<&HostNames>) -> String {
        if !self.dns.enabled {
            return "; DNS lookups were off (--no-dns)".into();
        }
        let Some(names) = names else {
            return "; its names were not looked up yet (--resolve looks them up)".into();
        };
        let mut clauses = Vec::new();
        match (&names.ptr, names.fcrdns) {
            (Some(ptr), Some(true)) if names.name_match == Some(true) => clauses.push(format!(
                "its name {ptr} is forward-confirmed and follows the {} naming convention",
                service.title()
            )),
            (Some(ptr), Some(true)) => clauses.push(format!("its name {ptr} is forward-confirmed")),
            (Some(ptr), Some(false)) => clauses.push(format!("its name {ptr} does not resolve back to it")),
            (Some(ptr), None) => clauses.push(format!("its name {ptr} could not be confirmed (DNS did not answer)")),
            (None, Some(false)) => clauses.push("it has no PTR name".into()),
            (None, _) => clauses.push("DNS did not answer for its name (looked up again next time)".into()),
        }
        let record = service.dns_record.as_str();
        match names.record_target {
            Some(true) => {
                let targets: Vec<String> = names
                    .record_targets
                    .iter()
                    .map(|t| match t.record.as_str() {
                        "MX" => format!("{} (MX {} {})", t.domain, t.preference, t.target),
                        other => format!("{} ({other} {})", t.domain, t.target),
                    })
                    .collect();
                clauses.push(format!("it is an {record} target of {}", targets.join(", ")))
            }
            Some(false) => {}
            None if names.records_unconfigured => {}
            None => clauses.push(format!("whether it is an {record} target is unknown (DNS did not answer)")),
        }
        format!("; {}", clauses.join("; "))
    }

    /// The hosts with activity of each service in `period`: those whose DNS
    /// characteristics an evaluation of `period` needs.
    pub fn hosts_to_resolve(&self, store: &dyn Store, period: Window) -> Result<Vec<(Service, IpAddr)>> {
        let mut hosts = Vec::new();
        for service in self.services() {
            for host in store.service_host_addresses(&service.name, period.from_ms, period.to_ms)? {
                hosts.push((service.clone(), host));
            }
        }
        Ok(hosts)
    }

    /// The findings about activity in `period`. Each host is measured over
    /// the look-back ending at its last activity in the period, so a capture
    /// spanning months is judged host by host as it would have been live.
    pub fn evaluate(&self, store: &dyn Store, period: Window) -> Result<Vec<Finding>> {
        let covered = store.covered_days()?;
        let mut findings = Vec::new();
        for service in self.services() {
            for host in store.service_host_addresses(&service.name, period.from_ms, period.to_ms)? {
                // Whitelisted servers, often the busiest hosts, are not measured at all.
                if self.whitelist.matching(host, &service.name).is_some() {
                    continue;
                }
                let Some(last_ms) = store.service_host_last_ms(&service.name, host, period.from_ms, period.to_ms)?
                else {
                    continue;
                };
                let in_period = || store.service_host(&service.name, host, period.from_ms, period.to_ms);
                let Some(report) = self.latest_report(store, service, host, last_ms, &covered, in_period)? else {
                    continue;
                };
                let state = report.rejected.is_some().then_some("confirmed_rogue");
                findings.push(rogue_server(&report, state, self.config, service));
                for mut finding in self
                    .fanout_bursts(store, service, host, period)?
                    .into_iter()
                    .chain(self.volume_spikes(store, service, host, period, &covered)?)
                {
                    finding.state = state;
                    findings.push(finding);
                }
            }
        }
        Ok(findings)
    }

    /// Windows of `window_seconds` in which the host opened qualifying flows
    /// to at least `peers` distinct external servers; one finding per burst.
    fn fanout_bursts(
        &self,
        store: &dyn Store,
        service: &Service,
        host: IpAddr,
        period: Window,
    ) -> Result<Vec<Finding>> {
        let config = &self.config.detection.fanout;
        let width_ms = config.window_seconds.0 as i64 * 1000;
        let opened = store.opened_to_external_servers(&service.name, host, period.from_ms, period.to_ms)?;
        // A burst already found keeps its key when flows of it that completed
        // later move its first flow earlier (live, flows complete out of order).
        let known: Vec<i64> = store
            .findings_for_host(host)?
            .iter()
            .filter(|f| f.kind == FindingKind::FanoutBurst.as_str() && f.service == service.name)
            .filter_map(|f| f.key.parse().ok())
            .collect();
        let mut findings = Vec::new();
        let mut first = 0;
        while first < opened.len() {
            let start = opened[first].0;
            let in_window: Vec<IpAddr> =
                opened[first..].iter().take_while(|(t, _)| t - start <= width_ms).map(|(_, peer)| *peer).collect();
            let distinct = distinct_count(&in_window);
            if distinct >= config.peers.0 as usize {
                let key = known.iter().copied().find(|k| (k - start).abs() <= width_ms).unwrap_or(start);
                let window = &opened[first..first + in_window.len()];
                findings.push(Finding {
                    kind: FindingKind::FanoutBurst,
                    service: service.name.clone(),
                    host,
                    key: key.to_string(),
                    time_ms: key,
                    details: json!({
                        "peers": distinct,
                        "window_seconds": config.window_seconds.0,
                        "at": rfc3339_millis(start * 1_000_000),
                        "servers": first_contacts(window),
                        "rule": {
                            "name": "fanout_burst",
                            "description": "qualifying flows to at least `peers` distinct external servers within `window_seconds`",
                            "peers": config.peers.0,
                            "window_seconds": config.window_seconds.0,
                            "min_packets": service.min_packets,
                            "min_bytes": service.min_bytes,
                        },
                    }),
                    state: None,
                });
                first += in_window.len();
            } else {
                first += 1;
            }
        }
        Ok(findings)
    }

    /// Days whose qualifying flows (or bytes) exceed `factor` times the
    /// median of the host's previous days with data and the minimum, where
    /// the day before did not: the onset of a new level, once.
    fn volume_spikes(
        &self,
        store: &dyn Store,
        service: &Service,
        host: IpAddr,
        period: Window,
        covered: &BTreeSet<i64>,
    ) -> Result<Vec<Finding>> {
        let config = &self.config.detection.volume_spike;
        let history = self.config.detection.history_days.0 as i64;
        let from_ms = period.from_ms - history * MILLIS_PER_DAY;
        let volumes: HashMap<i64, (u64, u64)> = store
            .daily_volumes(&service.name, host, from_ms, period.to_ms)?
            .into_iter()
            .map(|(day, flows, bytes)| (day, (flows, bytes)))
            .collect();
        let is_spike = |day: i64| -> Option<(u64, u64)> {
            let &(flows, bytes) = volumes.get(&day)?;
            let baseline: Vec<(u64, u64)> =
                covered.range(day - history..day).map(|d| volumes.get(d).copied().unwrap_or((0, 0))).collect();
            if baseline.is_empty() {
                return None;
            }
            let (median_flows, median_bytes) =
                (median(baseline.iter().map(|b| b.0)), median(baseline.iter().map(|b| b.1)));
            let flows_jump = flows >= config.min_flows.0 && flows as f64 > config.factor.0 * median_flows;
            let bytes_jump = bytes >= config.min_bytes.0 && bytes as f64 > config.factor.0 * median_bytes;
            (flows_jump || bytes_jump).then_some((median_flows as u64, median_bytes as u64))
        };
        let mut findings = Vec::new();
        let period_days = period.from_ms.div_euclid(MILLIS_PER_DAY)..=period.to_ms.div_euclid(MILLIS_PER_DAY);
        for day in period_days {
            let Some((baseline, baseline_bytes)) = is_spike(day) else { continue };
            if is_spike(day - 1).is_some() {
                continue;
            }
            let (flows, bytes) = volumes[&day];
            let date = jiff::Timestamp::from_millisecond(day * MILLIS_PER_DAY)
                .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date().to_string())
                .unwrap_or_default();
            findings.push(Finding {
                kind: FindingKind::VolumeSpike,
                service: service.name.clone(),
                host,
                key: date.clone(),
                time_ms: day * MILLIS_PER_DAY,
                details: json!({
                    "day": date,
                    "flows": flows,
                    "bytes": bytes,
                    "baseline": baseline,
                    "baseline_bytes": baseline_bytes,
                    "factor": config.factor.0,
                    "rule": {
                        "name": "volume_spike",
                        "description": "a day's qualifying flows or bytes above `factor` times the median of the previous `history_days` and the minimum, the day before not",
                        "factor": config.factor.0,
                        "min_flows": config.min_flows.0,
                        "min_bytes": config.min_bytes.0,
                        "history_days": history,
                    },
                }),
                state: None,
            });
        }
        Ok(findings)
    }

    /// Stores findings (see [`Store::upsert_finding`]); hosts now on the
    /// whitelist get their earlier findings marked `whitelisted`.
    pub fn record(
        &self,
        store: &mut dyn Store,
        findings: &[Finding],
        now_ms: i64,
    ) -> Result<Vec<(StoredFinding, Upsert)>> {
        for (service, host) in store.finding_hosts_not_in("whitelisted")? {
            if self.whitelist.matching(host, &service).is_some() {
                store.set_host_findings_state(&service, host, "whitelisted", now_ms)?;
            }
        }
        let mut stored = Vec::new();
        for finding in findings {
            let (id, change) = store.upsert_finding(
                finding.kind.as_str(),
                &finding.service,
                finding.host,
                &finding.key,
                finding.time_ms,
                &finding.details,
                finding.state,
                now_ms,
            )?;
            stored.push((store.finding(id)?.expect("just stored"), change));
        }
        Ok(stored)
    }
}

/// The host's report as a finding, with the rule that made it one.
fn rogue_server(report: &HostReport, state: Option<&'static str>, config: &Config, service: &Service) -> Finding {
    let mut details = report.activity_json();
    details.insert(
        "rule".into(),
        json!({
            "name": "rogue_server",
            "description": "an internal host not on the whitelist with qualifying flows of the service in one of its roles",
            "min_packets": service.min_packets,
            "min_bytes": service.min_bytes,
            "transport": service.transport,
            "ports": service.ports,
            "share_ports": service.share_ports,
            "share_threshold": service.share_threshold,
            "roles": service.roles,
            "peers": service.peers,
            "dns_record": service.dns_record,
            "history_days": config.detection.history_days.0,
            "suggest_min_server_days": config.detection.suggest_min_server_days.0,
        }),
    );
    Finding {
        kind: FindingKind::RogueServer,
        service: report.service.clone(),
        host: report.host(),
        key: String::new(),
        time_ms: report.activity.last_ms,
        details: Value::Object(details),
        state,
    }
}

/// Each distinct server of a burst with the time it was first contacted,
/// earliest first (`opened` is in time order).
fn first_contacts(opened: &[(i64, IpAddr)]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    opened
        .iter()
        .filter(|(_, server)| seen.insert(*server))
        .map(|(at, server)| json!({"address": server, "first_contact": rfc3339_millis(at * 1_000_000)}))
        .collect()
}

/// The method's administrative test, for a host acting as a server: an MX
/// target of the organisation (MX for mail), or a forward-confirmed name
/// following the service's convention.
fn looks_like_a_server(c: &Characteristics) -> bool {
    c.server_days > 0 && (c.record_target == Some(true) || c.name_match == Some(true))
}

/// `25, 465, 587`
fn port_list(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

fn distinct_count(addrs: &[IpAddr]) -> usize {
    let mut sorted = addrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len()
}

fn median(values: impl Iterator<Item = u64>) -> f64 {
    let mut values: Vec<u64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] as f64 } else { (values[middle - 1] + values[middle]) as f64 / 2.0 }
}

#[cfg(test)]
mod tests;
