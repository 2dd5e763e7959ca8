//! Profiles: what each completed flow says about the internal hosts at its
//! ends. Per host and time bin: port usage by direction (destination ports of
//! inbound flows, source ports of outbound flows), totals, and the traffic on
//! each service's share ports (mail ports for SMTP); and the qualifying
//! service flows with the host's role and the peer. A [`ProfileBatch`]
//! gathers these in memory until the store writes them.
//!
//! A service flow is of one of the service's transports, with a service
//! port on one side and at least `min_packets` packets and `min_bytes`
//! IP-layer bytes in its own direction (for TCP, at least a [`HANDSHAKE`]).
//! Who serves depends on the transport:
//! - TCP: the other side has an ephemeral port (1024 and up) or a service
//!   port, since a host whose ephemeral port happens to be 25 while it talks
//!   to a web server (peer port 443) is not serving mail. A host is a
//!   *server* in a flow where it sends from, or receives on, the service
//!   port; a *client* where it sends to an external service port, or
//!   receives the reply from one.
//! - UDP: only an answered exchange counts ([`answers`]): the side that
//!   answered from a service port is the server, the side that asked its
//!   client; a datagram nobody answered (a scan) makes no one a server, and a
//!   client asking from a service port (a resolver querying from port 53) is
//!   still the client. Where the protocol fixes the clients' port (DHCP's
//!   68, `client_ports`), a flow from a service port to a client port is an
//!   answer by itself, whatever its destination (a broadcast).
//!
//! A host asking an internal server is using its own network's service,
//! which gives it no role. With `peers: external`, only flows with an
//! external peer give roles; and only the roles a service finds (`roles`)
//! are recorded.

mod answers;

pub use answers::{Answered, Exchanges};
use std::net::IpAddr;

use ipnet::IpNet;

pub use crate::config::Role;
use crate::{
    config::{Config, DATAGRAM, HANDSHAKE, Peers, Service},
    flows::{FastMap, FlowRecord},
    time::{NANOS_PER_SEC, Nanos},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
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
    /// Every flow, where the store keeps them (see `Config::keeps_raw_flows`).
    pub raw_flows: Vec<FlowRecord>,
    /// Flows per day (since the epoch, by start): the days with data.
    pub days: FastMap<i64, u64>,
    pub flows: u64,
}

impl ProfileBatch {
    /// Entries held, to decide when to hand the batch to the store.
    pub fn size(&self) -> usize {
        self.port_usage.len()
            + self.host_bins.len()
            + self.share_bins.len()
            + self.service_flows.len()
            + self.raw_flows.len()
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
    exchanges: Exchanges,
    /// Keep every flow in the batch too.
    keep_flows: bool,
}

/// How long, in data time, a UDP flow waits for its other direction by
/// default: a meter's idle and active timeouts (nfdump's), the furthest
/// apart two directions of one exchange complete.
const DEFAULT_ANSWER_HORIZON: Nanos =
    (crate::config::DEFAULT_IDLE_TIMEOUT_SECS + crate::config::DEFAULT_ACTIVE_TIMEOUT_SECS) as Nanos * NANOS_PER_SEC;
const DEFAULT_OPEN_EXCHANGES: usize = 1_000_000;

impl Profiler {
    pub fn new(internal: Vec<IpNet>, services: Vec<Service>, bin_seconds: u64) -> Profiler {
        let exchanges = Exchanges::new(DEFAULT_ANSWER_HORIZON, DEFAULT_OPEN_EXCHANGES);
        Profiler::with_exchanges(internal, services, bin_seconds, exchanges)
    }

    fn with_exchanges(
        internal: Vec<IpNet>,
        services: Vec<Service>,
        bin_seconds: u64,
        exchanges: Exchanges,
    ) -> Profiler {
        let batch = ProfileBatch::default();
        Profiler { internal, services, bin_seconds: bin_seconds as i64, batch, exchanges, keep_flows: false }
    }

    /// A profiler of the configured internal networks, services and bins;
    /// UDP flows wait for their answer as long as the meter's timeouts, and
    /// as many exchanges are open as the flow cache holds flows.
    pub fn for_config(config: &Config) -> Profiler {
        let capture = &config.capture;
        let horizon = (capture.idle_timeout_seconds.0 + capture.active_timeout_seconds.0) as Nanos * NANOS_PER_SEC;
        let exchanges = Exchanges::new(horizon, capture.flow_cache_entries.0 as usize);
        let (internal, services) = (config.internal_networks.clone(), config.services.all().to_vec());
        let mut profiler = Profiler::with_exchanges(internal, services, config.detection.bin_seconds.0, exchanges);
        profiler.keep_flows = config.keeps_raw_flows();
        profiler
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn batch(&self) -> &ProfileBatch {
        &self.batch
    }

    /// The UDP exchanges waiting for an answer, and those never answered.
    pub fn exchanges(&self) -> &Exchanges {
        &self.exchanges
    }

    pub fn exchanges_mut(&mut self) -> &mut Exchanges {
        &mut self.exchanges
    }

    /// Hands over what was gathered and starts a new batch.
    pub fn take(&mut self) -> ProfileBatch {
        std::mem::take(&mut self.batch)
    }

    /// The end of the input: UDP flows still waiting were never answered.
    pub fn finish(&mut self) {
        self.exchanges.finish();
    }

    fn is_internal(&self, addr: IpAddr) -> bool {
        self.internal.iter().any(|net| net.contains(&addr))
    }

    /// Adds one completed flow to the profiles of its internal ends.
    pub fn add(&mut self, flow: &FlowRecord) {
        if self.keep_flows {
            self.batch.raw_flows.push(flow.clone());
        }
        let src_internal = self.is_internal(flow.src);
        let dst_internal = self.is_internal(flow.dst);
        if src_internal || dst_internal {
            self.batch.flows += 1;
            *self.batch.days.entry(flow.start.div_euclid(NANOS_PER_DAY)).or_default() += 1;
            let bin = self.bin_of(flow);
            for (host, direction, internal) in
                [(flow.src, Direction::Outbound, src_internal), (flow.dst, Direction::Inbound, dst_internal)]
            {
                if internal {
                    self.add_traffic(flow, bin, host, direction);
                }
            }
            self.add_service_flows(flow, src_internal, dst_internal);
        }
    }

    fn bin_of(&self, flow: &FlowRecord) -> i64 {
        (flow.start.div_euclid(NANOS_PER_SEC)).div_euclid(self.bin_seconds) * self.bin_seconds
    }

    /// Port usage, totals and share-port traffic of one internal end.
    fn add_traffic(&mut self, flow: &FlowRecord, bin: i64, host: IpAddr, direction: Direction) {
        self.batch.host_bins.entry((host, bin)).or_default().add(flow);
        if !has_ports(flow.proto) {
            return;
        }
        let port = match direction {
            Direction::Inbound => flow.dport,
            Direction::Outbound => flow.sport,
        };
        let key = PortUsageKey { host, bin, direction, proto: flow.proto, port };
        self.batch.port_usage.entry(key).or_default().add(flow);
        for (index, service) in self.services.iter().enumerate() {
            if service.is_share_port(flow.sport) || service.is_share_port(flow.dport) {
                self.batch.share_bins.entry((index, host, bin)).or_default().add(flow);
            }
        }
    }

    /// The service flows `flow` gives, now or (UDP) once its exchange is
    /// answered.
    fn add_service_flows(&mut self, flow: &FlowRecord, src_internal: bool, dst_internal: bool) {
        let internal = [src_internal, dst_internal];
        let mut waits_for_answer = false;
        for index in 0..self.services.len() {
            let service = &self.services[index];
            if !service.carries(flow.proto) {
                continue;
            }
            match flow.proto {
                TCP if qualifies(service, flow) => self.add_tcp_roles(index, flow, internal),
                UDP => match udp_kind(service, flow) {
                    UdpKind::Answer if qualifies(service, flow) => {
                        self.record(index, flow, internal, [Role::Server, Role::Client])
                    }
                    // Between two internal hosts only `peers: any` gives a
                    // role: no other service waits for such an answer.
                    UdpKind::Exchange => {
                        waits_for_answer |= service.peers == Peers::Any || !(src_internal && dst_internal)
                    }
                    UdpKind::Answer | UdpKind::Request | UdpKind::Other => {}
                },
                _ => {}
            }
        }
        if !waits_for_answer {
            return;
        }
        for answered in self.exchanges.offer(flow) {
            self.add_answered(&answered);
        }
    }

    /// The service flows of a UDP flow whose exchange is known: the side
    /// that answered from a service port serves, the side that asked is its
    /// client.
    fn add_answered(&mut self, answered: &Answered) {
        let flow = &answered.flow;
        let internal = [self.is_internal(flow.src), self.is_internal(flow.dst)];
        let answerer_port = if answered.sender_asked { flow.dport } else { flow.sport };
        let roles = if answered.sender_asked { [Role::Client, Role::Server] } else { [Role::Server, Role::Client] };
        for index in 0..self.services.len() {
            let service = &self.services[index];
            let settles = service.carries(UDP)
                && udp_kind(service, flow) == UdpKind::Exchange
                && service.is_service_port(answerer_port)
                && qualifies(service, flow);
            if settles {
                self.record(index, flow, internal, roles);
            }
        }
    }

    fn add_tcp_roles(&mut self, index: usize, flow: &FlowRecord, internal: [bool; 2]) {
        let service = &self.services[index];
        let side_role = |host_port, peer_port| {
            if service_side(service, host_port, peer_port) {
                Some(Role::Server)
            } else if service_side(service, peer_port, host_port) {
                Some(Role::Client)
            } else {
                None
            }
        };
        let (Some(src_role), Some(dst_role)) = (side_role(flow.sport, flow.dport), side_role(flow.dport, flow.sport))
        else {
            return;
        };
        self.record(index, flow, internal, [src_role, dst_role]);
    }

    /// Records `flow` for each internal end with its role (`roles`: the
    /// sender's, the receiver's), where the service finds that role and the
    /// peer is one that gives it.
    fn record(&mut self, index: usize, flow: &FlowRecord, internal: [bool; 2], roles: [Role; 2]) {
        let service = &self.services[index];
        for (outbound, host_internal, peer_internal, role) in
            [(true, internal[0], internal[1], roles[0]), (false, internal[1], internal[0], roles[1])]
        {
            let peer_gives_role = match role {
                // Using the LAN's own server is no part in the service.
                Role::Client => !peer_internal,
                Role::Server => service.peers == Peers::Any || !peer_internal,
            };
            if !host_internal || !peer_gives_role || !service.finds(role) {
                continue;
            }
            let (host, peer, host_port, peer_port) = if outbound {
                (flow.src, flow.dst, flow.sport, flow.dport)
            } else {
                (flow.dst, flow.src, flow.dport, flow.sport)
            };
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

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

/// Whether `flow` is big enough, and of a transport and ports, to be a
/// flow of `service` (see the module comment). A TCP flow needs at least
/// a [`HANDSHAKE`] whatever the service's thresholds (DNS's 1 packet is a
/// UDP datagram's): less is a SYN or the reset refusing it.
pub fn qualifies(service: &Service, flow: &FlowRecord) -> bool {
    let (ports, least) = match flow.proto {
        TCP => {
            (service_side(service, flow.sport, flow.dport) || service_side(service, flow.dport, flow.sport), HANDSHAKE)
        }
        UDP => (service.is_service_port(flow.sport) || service.is_service_port(flow.dport), DATAGRAM),
        _ => return false,
    };
    ports
        && service.carries(flow.proto)
        && flow.packets >= service.min_packets.max(least.0)
        && flow.bytes >= service.min_bytes.max(least.1)
}

/// `port` is the service port of a TCP conversation: a service port facing
/// an ephemeral or service port.
fn service_side(service: &Service, port: u16, other: u16) -> bool {
    service.is_service_port(port) && (other >= FIRST_EPHEMERAL_PORT || service.is_service_port(other))
}

/// What a UDP flow is to a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UdpKind {
    /// From a service port to a client port: an answer by itself.
    Answer,
    /// From a client port to a service port: asks, proves nothing.
    Request,
    /// Touches a service port: waits for its other direction.
    Exchange,
    Other,
}

fn udp_kind(service: &Service, flow: &FlowRecord) -> UdpKind {
    if service.is_service_port(flow.sport) && service.is_client_port(flow.dport) {
        UdpKind::Answer
    } else if service.is_client_port(flow.sport) && service.is_service_port(flow.dport) {
        UdpKind::Request
    } else if service.is_service_port(flow.sport) || service.is_service_port(flow.dport) {
        UdpKind::Exchange
    } else {
        UdpKind::Other
    }
}

#[cfg(test)]
mod tests;
