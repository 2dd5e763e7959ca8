//! The method's administrative characteristics, from DNS: a host's PTR name,
//! whether that name resolves back to the host (forward-confirmed reverse
//! DNS: an attacker controls its own PTR records, not the forward zone of
//! the name it claims), whether the name follows the service's naming
//! convention, and whether the host is a target of the service's record
//! (MX for mail, NS for DNS) in the organisation's domains.
//!
//! Lookups go through hickory-resolver with a per-query timeout, bounded
//! concurrency and its cache (TTLs honoured between a floor and a ceiling,
//! negative answers cached too). A lookup that fails (timeout, SERVFAIL,
//! refused) leaves the characteristic unknown (`None`), to be retried on the
//! next evaluation; only an answer that there is no such record makes it
//! false.
//!
//! PTR names come from whoever controls the reverse zone, so they are
//! hostile input: rogue checks their length, never interprets them, and
//! keeps them in an escaped form ([`display_name`]) that is safe to print in
//! a terminal, JSON, HTML or SVG.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts},
    net::{NetError, runtime::TokioRuntimeProvider},
    proto::rr::{Name, RData, RecordType},
};
use tokio::sync::Semaphore;

use crate::{
    config::{DnsConfig, DnsRecord, Service},
    detect::DnsFacts,
    store::{HostNames, RecordTarget},
};

/// A lookup that did not get an answer; the characteristic stays unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unanswered(pub String);

type Answer<T> = Result<T, Unanswered>;

/// An address family: a host is confirmed, and found among MX targets, by
/// the records of its own family (A for IPv4, AAAA for IPv6). A server that
/// answers A but fails AAAA (common with names that have only A records)
/// then still settles every IPv4 host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn record_type(self) -> RecordType {
        match self {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        }
    }
}

/// The addresses of the targets of one record type (MX, NS) of the
/// configured domains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordTargets {
    pub targets: HashMap<IpAddr, Vec<RecordTarget>>,
    /// Domains whose lookup got no answer: `record_target` is unknown, not false.
    pub unanswered: Vec<String>,
    /// Domains with a target whose A (IPv4) or AAAA (IPv6) lookup got no
    /// answer: `record_target` is unknown for hosts of that family.
    pub unanswered_v4: Vec<String>,
    pub unanswered_v6: Vec<String>,
    /// No domains are configured, or the service checks no record:
    /// `record_target` is unknown for every host.
    pub unconfigured: bool,
}

impl RecordTargets {
    /// Whether `addr` is a target: known either way only when every lookup
    /// its family needs was answered.
    fn status(&self, addr: IpAddr) -> Option<bool> {
        let family_unanswered = match Family::of(addr) {
            Family::V4 => &self.unanswered_v4,
            Family::V6 => &self.unanswered_v6,
        };
        match self.targets.get(&addr) {
            Some(_) => Some(true),
            None if self.unconfigured || !self.unanswered.is_empty() || !family_unanswered.is_empty() => None,
            None => Some(false),
        }
    }
}

/// Longest name DNS allows in presentation form, and per label.
const MAX_NAME_OCTETS: usize = 255;
const MAX_LABEL_OCTETS: usize = 63;

pub struct Resolver {
    inner: TokioResolver,
    /// Bounds lookups in flight, so thousands of hosts do not flood the server.
    slots: Arc<Semaphore>,
    mx_domains: Vec<String>,
    /// Queries that got no answer, and when: not asked again before
    /// `retry_after` (the cache keeps answers, this keeps failures).
    unanswered: Mutex<HashMap<(Name, RecordType), Instant>>,
    retry_after: Duration,
    /// Until when each answer is cached (its TTL), to count cache hits.
    fresh_until: Mutex<HashMap<(Name, RecordType), Instant>>,
    stats: DnsStats,
}

/// What the resolver did, for the agent's metrics.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Every lookup asked for.
    pub lookups: AtomicU64,
    /// Lookups answered from the cache (the answer's TTL had not run out).
    pub cache_hits: AtomicU64,
    /// Lookups that got no answer (timeout, SERVFAIL, refused), including
    /// those not asked again yet after one.
    pub unanswered: AtomicU64,
}

/// Answers remembered for counting cache hits; the cache itself is bounded
/// by hickory (`cache_size`), this only by being cleared when full.
const FRESHNESS_ENTRIES: usize = 65_536;

impl Resolver {
    /// A resolver for the configured servers (or the system's, when none).
    pub fn new(config: &DnsConfig) -> Result<Resolver, NetError> {
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let servers = config
                .servers
                .iter()
                .map(|server| {
                    let mut connections = vec![ConnectionConfig::udp(), ConnectionConfig::tcp()];
                    for connection in &mut connections {
                        connection.port = server.0.port();
                    }
                    let mut name_server = NameServerConfig::udp_and_tcp(server.0.ip());
                    name_server.connections = connections;
                    name_server
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_millis(config.timeout_ms.0);
        options.attempts = 1;
        options.cache_size = 16_384;
        options.positive_min_ttl = Some(Duration::from_secs(config.min_ttl_seconds.0));
        options.positive_max_ttl = Some(Duration::from_secs(config.max_ttl_seconds.0));
        options.negative_min_ttl = Some(Duration::from_secs(config.min_ttl_seconds.0));
        options.negative_max_ttl = Some(Duration::from_secs(config.negative_ttl_seconds.0));
        // Names are absolute: no search domains appended.
        options.ndots = 0;
        *builder.options_mut() = options;
        Ok(Resolver {
            inner: builder.build()?,
            slots: Arc::new(Semaphore::new(config.concurrency.0 as usize)),
            mx_domains: config.mx_domains.clone(),
            unanswered: Mutex::new(HashMap::new()),
            retry_after: Duration::from_secs(config.min_ttl_seconds.0),
            fresh_until: Mutex::new(HashMap::new()),
            stats: DnsStats::default(),
        })
    }

    /// The PTR names of `addr`; empty when it has none.
    pub async fn ptr(&self, addr: IpAddr) -> Answer<Vec<Name>> {
        let records = self.lookup(&Name::from(addr), RecordType::PTR).await?;
        Ok(records
            .into_iter()
            .filter_map(|data| match data {
                RData::PTR(ptr) => Some(ptr.0),
                _ => None,
            })
            .collect())
    }

    /// The addresses of `name` in `family` (its A or its AAAA records).
    pub async fn addresses(&self, name: &Name, family: Family) -> Answer<Vec<IpAddr>> {
        let records = self.lookup(name, family.record_type()).await?;
        Ok(records
            .into_iter()
            .filter_map(|data| match data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect())
    }

    pub fn stats(&self) -> &DnsStats {
        &self.stats
    }

    async fn lookup(&self, name: &Name, record_type: RecordType) -> Answer<Vec<RData>> {
        let key = (name.clone(), record_type);
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        if let Some(failed) = self.unanswered.lock().expect("not poisoned").get(&key)
            && failed.elapsed() < self.retry_after
        {
            self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
            return Err(Unanswered(format!("{name} {record_type} got no answer {:?} ago", failed.elapsed())));
        }
        if self.fresh_until.lock().expect("not poisoned").get(&key).is_some_and(|until| *until > Instant::now()) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        let _slot = self.slots.acquire().await.expect("never closed");
        let (answer, valid_until) = match self.inner.lookup(name.clone(), record_type).await {
            Ok(lookup) => (Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()), Some(lookup.valid_until())),
            Err(e) => (no_records_or(e), None),
        };
        if answer.is_err() {
            self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(until) = valid_until {
            let mut fresh = self.fresh_until.lock().expect("not poisoned");
            if fresh.len() >= FRESHNESS_ENTRIES {
                fresh.clear();
            }
            fresh.insert(key.clone(), until);
        }
        let mut unanswered = self.unanswered.lock().expect("not poisoned");
        match &answer {
            Ok(_) => unanswered.remove(&key),
            Err(_) => unanswered.insert(key, Instant::now()),
        };
        answer
    }

    /// The addresses of every target of `record` (MX, NS) of the configured
    /// domains, with the records that point at them.
    pub async fn record_targets(&self, record: DnsRecord) -> RecordTargets {
        let record_type = match record {
            DnsRecord::Mx => RecordType::MX,
            DnsRecord::Ns => RecordType::NS,
            DnsRecord::None => return RecordTargets { unconfigured: true, ..RecordTargets::default() },
        };
        let mut set = RecordTargets { unconfigured: self.mx_domains.is_empty(), ..RecordTargets::default() };
        for domain in &self.mx_domains {
            let Ok(name) = Name::from_ascii(format!("{}.", domain.trim_end_matches('.'))) else {
                set.unanswered.push(domain.clone());
                continue;
            };
            let records = match self.lookup(&name, record_type).await {
                Ok(records) => records,
                Err(_) => {
                    set.unanswered.push(domain.clone());
                    continue;
                }
            };
            for record in records {
                let (exchange, preference) = match record {
                    RData::MX(mx) => (mx.exchange, mx.preference),
                    RData::NS(ns) => (ns.0, 0),
                    _ => continue,
                };
                let target = RecordTarget {
                    domain: domain.clone(),
                    record: record_type.to_string(),
                    target: display_name(&exchange),
                    preference,
                };
                let (v4, v6) =
                    tokio::join!(self.addresses(&exchange, Family::V4), self.addresses(&exchange, Family::V6));
                for (answer, unanswered) in [(v4, &mut set.unanswered_v4), (v6, &mut set.unanswered_v6)] {
                    match answer {
                        Ok(addrs) => {
                            for addr in addrs {
                                set.targets.entry(addr).or_default().push(target.clone());
                            }
                        }
                        Err(_) => unanswered.push(domain.clone()),
                    }
                }
            }
        }
        set
    }

    /// The PTR name, forward confirmation, naming convention and record
    /// target status of `addr` for `service` (`targets`: of its record).
    pub async fn host_names(&self, addr: IpAddr, service: &Service, targets: &RecordTargets) -> HostNames {
        let mut names = HostNames {
            record_target: targets.status(addr),
            record_targets: targets.targets.get(&addr).cloned().unwrap_or_default(),
            records_unconfigured: targets.unconfigured,
            ..HostNames::default()
        };
        let ptrs = match self.ptr(addr).await {
            Ok(ptrs) => ptrs,
            Err(_) => return names,
        };
        let ptrs: Vec<Name> = ptrs.into_iter().filter(fits_dns_limits).collect();
        if ptrs.is_empty() {
            names.fcrdns = Some(false);
            names.name_match = Some(false);
            return names;
        }
        // The first name that resolves back to the host, else the first.
        let mut any_unanswered = false;
        let mut confirmed = None;
        for ptr in &ptrs {
            match self.addresses(ptr, Family::of(addr)).await {
                Ok(addrs) if addrs.contains(&addr) => {
                    confirmed = Some(ptr.clone());
                    break;
                }
                Ok(_) => {}
                Err(_) => any_unanswered = true,
            }
        }
        let (name, fcrdns) = match confirmed {
            Some(name) => (name, Some(true)),
            None => (ptrs[0].clone(), if any_unanswered { None } else { Some(false) }),
        };
        names.ptr = Some(display_name(&name));
        names.fcrdns = fcrdns;
        // A name matches only when it is confirmed: the claim is the owner's.
        names.name_match = fcrdns.map(|confirmed| confirmed && matches_convention(&name, service));
        names
    }

    /// [`host_names`](Self::host_names) for many hosts at once.
    pub async fn resolve(&self, hosts: &[(Service, IpAddr)]) -> DnsFacts {
        let mut targets = HashMap::new();
        for record in hosts.iter().map(|(service, _)| service.dns_record) {
            if let std::collections::hash_map::Entry::Vacant(e) = targets.entry(record) {
                e.insert(self.record_targets(record).await);
            }
        }
        let lookups = hosts.iter().map(|(service, addr)| {
            let targets = &targets[&service.dns_record];
            async move { ((service.name.clone(), *addr), self.host_names(*addr, service, targets).await) }
        });
        let hosts = join_all(lookups).await.into_iter().collect();
        DnsFacts { enabled: true, hosts }
    }

    /// PTR names of peers (for lists of external clients and servers).
    pub async fn peer_names(&self, addrs: &[IpAddr]) -> BTreeMap<IpAddr, String> {
        let lookups = addrs.iter().map(|&addr| async move {
            let ptr = self.ptr(addr).await.ok()?.into_iter().find(fits_dns_limits)?;
            Some((addr, display_name(&ptr)))
        });
        join_all(lookups).await.into_iter().flatten().collect()
    }
}

/// A definitive "no such record" is an empty answer; anything else is none.
fn no_records_or<T: Default>(error: NetError) -> Answer<T> {
    if error.is_no_records_found() { Ok(T::default()) } else { Err(Unanswered(error.to_string())) }
}

fn fits_dns_limits(name: &Name) -> bool {
    name.len() <= MAX_NAME_OCTETS && name.iter().all(|label| label.len() <= MAX_LABEL_OCTETS)
}

/// Whether the host label of `name` follows the service's naming
/// convention: the pattern is matched against the label and against each
/// part of it split at `-` (`smtp2`, `mx-out`, `relay-1`).
pub fn matches_convention(name: &Name, service: &Service) -> bool {
    let Some(first) = name.iter().next() else { return false };
    let Ok(label) = std::str::from_utf8(first) else { return false };
    std::iter::once(label).chain(label.split('-')).any(|part| service.name_pattern.is_match(part))
}

/// A name as text that is safe anywhere: letters, digits, `-` and `_` as
/// they are, every other byte of a label as `\DDD` (RFC 1035 escapes), so a
/// hostile PTR can carry no markup, control character or terminal escape.
pub fn display_name(name: &Name) -> String {
    let mut text = String::new();
    for label in name.iter() {
        for &byte in label {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                text.push(byte as char);
            } else {
                text += &format!("\\{byte:03}");
            }
        }
        text.push('.');
    }
    if text.len() > 1 {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests;
