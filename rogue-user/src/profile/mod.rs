//! Profiles: what each completed flow says about the internal hosts at its
//! ends. Per host and time bin: port usage by direction (destination ports of
//! inbound flows, source ports of outbound flows), totals, and the traffic on
//! each service's share ports (mail ports); and the qualifying service flows
//! (SMTP flows) with the host's role and the peer. A [`ProfileBatch`] gathers
//! these in memory until the store writes them.
//!
//! A service flow is TCP with a service port (25) on one side, at least
//! `min_packets` packets and `min_bytes` IP-layer bytes in its own direction,
//! and, on the other side, an ephemeral port (1024 and up) or a service port:
//! a host whose ephemeral port happens to be 25 while it talks to a web
//! server (peer port 443) is not serving mail.
//!
//! Roles, as the method defines them: a host is a *server* in a flow where it
//! sends from, or receives on, the service port; a *client* where it sends to
//! an external service port, or receives the reply from one (the other half
//! of the same conversation). A host sending to an internal service port is
//! submitting mail to its own relay, which gives it no role.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    config::{Config, Service},
    flows::{FastMap, FlowRecord},
    time::{NANOS_PER_SEC, Nanos},
};

const TCP: u8 = 6;
const NANOS_PER_DAY: Nanos = 86_400 * NANOS_PER_SEC;
const FIRST_EPHEMERAL_PORT: u16 = 1024;

/// Relative to the internal host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Towards the host: its destination port is recorded.
    Inbound = 0,
    /// From the host: its source port is recorded.
    Outbound = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// Flows, packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, flow: &FlowRecord) {
        self.flows += 1;
        self.packets += flow.packets;
        self.bytes += flow.bytes;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortUsageKey {
    pub host: IpAddr,
    /// Start of the time bin, in seconds since the epoch.
    pub bin: i64,
    pub direction: Direction,
    pub proto: u8,
    pub port: u16,
}

/// A qualifying service flow seen from one internal host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFlow {
    /// Index into the profiler's services.
    pub service: usize,
    pub host: IpAddr,
    pub role: Role,
    pub peer: IpAddr,
    pub peer_internal: bool,
    pub host_port: u16,
    pub peer_port: u16,
    /// The host sent this flow (false: it received it).
    pub outbound: bool,
    pub start: Nanos,
    pub end: Nanos,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
}

/// Profiles gathered since the store last took them.
#[derive(Debug, Default)]
pub struct ProfileBatch {
    pub port_usage: FastMap<PortUsageKey, Counts>,
    /// (host, bin): all the host's traffic.
    pub host_bins: FastMap<(IpAddr, i64), Counts>,
    /// (service, host, bin): the host's traffic on the service's share ports.
    pub share_bins: FastMap<(usize, IpAddr, i64), Counts>,
    pub service_flows: Vec<ServiceFlow>,
    /// Flows per day (since the epoch, by start): the days with data.
    pub days: FastMap<i64, u64>,
    pub flows: u64,
}

impl ProfileBatch {
    /// Entries held, to decide when to hand the batch to the store.
    pub fn size(&self) -> usize {
        self.port_usage.len() + self.host_bins.len() + self.share_bins.len() + self.service_flows.len()
    }
}

/// What a source gained from some flows, for its row in the store: how
/// many flows and packets, and the data time they span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSpan {
    pub flows: u64,
    pub packets: u64,
    pub first: Option<Nanos>,
    pub last: Option<Nanos>,
}

impl FlowSpan {
    pub fn add(&mut self, flow: &FlowRecord) {
        self.flows += 1;
        self.packets += flow.packets;
        self.first = Some(self.first.map_or(flow.start, |t| t.min(flow.start)));
        self.last = Some(self.last.map_or(flow.end, |t| t.max(flow.end)));
    }
}

pub struct Profiler {
    internal: Vec<IpNet>,
    services: Vec<Service>,
    bin_seconds: i64,
    batch: ProfileBatch,
}

impl Profiler {
    pub fn new(internal: Vec<IpNet>, services: Vec<Service>, bin_seconds: u64) -> Profiler {
        Profiler { internal, services, bin_seconds: bin_seconds as i64, batch: ProfileBatch::default() }
    }

    /// A profiler of the configured internal networks, services and bins.
    pub fn for_config(config: &Config) -> Profiler {
        Profiler::new(config.internal_networks.clone(), config.services.all(), config.detection.bin_seconds.0)
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn batch(&self) -> &ProfileBatch {
        &self.batch
    }

    /// Hands over what was gathered and starts a new batch.
    pub fn take(&mut self) -> ProfileBatch {
        std::mem::take(&mut self.batch)
    }

    fn is_internal(&self, addr: IpAddr) -> bool {
        self.internal.iter().any(|net| net.contains(&addr))
    }

    /// Adds one completed flow to the profiles of its internal ends.
    pub fn add(&mut self, flow: &FlowRecord) {
        let src_internal = self.is_internal(flow.src);
        let dst_internal = self.is_internal(flow.dst);
        if !(src_internal || dst_internal) {
            return;
        }
        self.batch.flows += 1;
        *self.batch.days.entry(flow.start.div_euclid(NANOS_PER_DAY)).or_default() += 1;
        let bin = (flow.start.div_euclid(NANOS_PER_SEC)).div_euclid(self.bin_seconds) * self.bin_seconds;
        if src_internal {
            self.add_side(flow, bin, flow.src, Direction::Outbound, dst_internal);
        }
        if dst_internal {
            self.add_side(flow, bin, flow.dst, Direction::Inbound, src_internal);
        }
    }

    fn add_side(&mut self, flow: &FlowRecord, bin: i64, host: IpAddr, direction: Direction, peer_internal: bool) {
        self.batch.host_bins.entry((host, bin)).or_default().add(flow);
        if has_ports(flow.proto) {
            let port = match direction {
                Direction::Inbound => flow.dport,
                Direction::Outbound => flow.sport,
            };
            let key = PortUsageKey { host, bin, direction, proto: flow.proto, port };
            self.batch.port_usage.entry(key).or_default().add(flow);
        }
        for (index, service) in self.services.iter().enumerate() {
            if has_ports(flow.proto) && (service.is_share_port(flow.sport) || service.is_share_port(flow.dport)) {
                self.batch.share_bins.entry((index, host, bin)).or_default().add(flow);
            }
            if let Some(role) = role(service, flow, direction, peer_internal) {
                let outbound = direction == Direction::Outbound;
                let (peer, host_port, peer_port) =
                    if outbound { (flow.dst, flow.sport, flow.dport) } else { (flow.src, flow.dport, flow.sport) };
                self.batch.service_flows.push(ServiceFlow {
                    service: index,
                    host,
                    role,
                    peer,
                    peer_internal,
                    host_port,
                    peer_port,
                    outbound,
                    start: flow.start,
                    end: flow.end,
                    packets: flow.packets,
                    bytes: flow.bytes,
                    tcp_flags: flow.tcp_flags,
                });
            }
        }
    }
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

/// Whether `flow` is a qualifying flow of `service` (see the module comment).
pub fn qualifies(service: &Service, flow: &FlowRecord) -> bool {
    flow.proto == TCP
        && flow.packets >= service.min_packets
        && flow.bytes >= service.min_bytes
        && (service_side(service, flow.sport, flow.dport) || service_side(service, flow.dport, flow.sport))
}

/// `port` is the service port of the conversation: a service port facing an
/// ephemeral or service port.
fn service_side(service: &Service, port: u16, other: u16) -> bool {
    service.is_service_port(port) && (other >= FIRST_EPHEMERAL_PORT || service.is_service_port(other))
}

/// The role a qualifying flow gives the internal host at one of its ends.
pub fn role(service: &Service, flow: &FlowRecord, direction: Direction, peer_internal: bool) -> Option<Role> {
    if !qualifies(service, flow) {
        return None;
    }
    let (host_port, peer_port) = match direction {
        Direction::Outbound => (flow.sport, flow.dport),
        Direction::Inbound => (flow.dport, flow.sport),
    };
    if service_side(service, host_port, peer_port) {
        Some(Role::Server)
    } else if service_side(service, peer_port, host_port) && !peer_internal {
        Some(Role::Client)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
