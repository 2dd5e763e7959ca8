use super::*;
use crate::config::{Service, ServiceConfig};

const SEC: Nanos = NANOS_PER_SEC;

fn smtp() -> Service {
    Service::new("smtp", &ServiceConfig::default())
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16, packets: u64, bytes: u64) -> FlowRecord {
    crate::flows::tcp_flow(src, sport, dst, dport, 1_000 * SEC, packets, bytes)
}

fn profiler() -> Profiler {
    Profiler::new(vec!["192.0.2.0/24".parse().unwrap(), "2001:db8:10::/48".parse().unwrap()], vec![smtp()], 600)
}

/// (host, role, peer) of every service flow a flow gives.
fn roles(flow: &FlowRecord) -> Vec<(String, Role, String)> {
    let mut profiler = profiler();
    profiler.add(flow);
    profiler.take().service_flows.iter().map(|f| (f.host.to_string(), f.role, f.peer.to_string())).collect()
}

fn server(host: &str, peer: &str) -> (String, Role, String) {
    (host.into(), Role::Server, peer.into())
}

fn client(host: &str, peer: &str) -> (String, Role, String) {
    (host.into(), Role::Client, peer.into())
}

#[test]
fn the_thresholds_are_at_least_3_packets_and_120_bytes_in_one_direction() {
    let inbound = |packets, bytes| roles(&flow("198.51.100.7", 40000, "192.0.2.5", 25, packets, bytes));
    assert_eq!(inbound(2, 5000), vec![], "2 packets");
    assert_eq!(inbound(50, 119), vec![], "119 bytes");
    assert_eq!(inbound(3, 120), vec![server("192.0.2.5", "198.51.100.7")], "exactly 3 packets and 120 bytes");
    let mut udp = flow("198.51.100.7", 40000, "192.0.2.5", 25, 10, 1000);
    udp.proto = 17;
    assert_eq!(roles(&udp), vec![], "UDP is not SMTP");
}

#[test]
fn a_server_sends_from_or_receives_on_port_25() {
    assert_eq!(roles(&flow("198.51.100.7", 40000, "192.0.2.5", 25, 5, 400)), vec![server("192.0.2.5", "198.51.100.7")]);
    assert_eq!(roles(&flow("192.0.2.5", 25, "198.51.100.7", 40000, 5, 400)), vec![server("192.0.2.5", "198.51.100.7")]);
}

#[test]
fn a_client_sends_to_an_external_port_25_or_receives_its_reply() {
    assert_eq!(roles(&flow("192.0.2.9", 51000, "203.0.113.25", 25, 5, 400)), vec![client("192.0.2.9", "203.0.113.25")]);
    assert_eq!(roles(&flow("203.0.113.25", 25, "192.0.2.9", 51000, 5, 400)), vec![client("192.0.2.9", "203.0.113.25")]);
}

#[test]
fn submitting_to_an_internal_relay_gives_the_sender_no_role_and_the_relay_the_server_role() {
    assert_eq!(roles(&flow("192.0.2.9", 51000, "192.0.2.25", 25, 5, 400)), vec![server("192.0.2.25", "192.0.2.9")]);
    assert_eq!(roles(&flow("192.0.2.25", 25, "192.0.2.9", 51000, 5, 400)), vec![server("192.0.2.25", "192.0.2.9")]);
}

#[test]
fn source_port_25_towards_a_non_mail_service_port_is_not_smtp() {
    assert_eq!(roles(&flow("192.0.2.9", 25, "198.51.100.80", 443, 20, 5000)), vec![]);
    assert_eq!(roles(&flow("198.51.100.80", 443, "192.0.2.9", 25, 20, 5000)), vec![]);
    // Port 25 on both ends is still SMTP (MTAs that bind port 25).
    assert_eq!(roles(&flow("198.51.100.7", 25, "192.0.2.5", 25, 5, 400)), vec![server("192.0.2.5", "198.51.100.7")]);
}

#[test]
fn ipv6_hosts_are_profiled_alike() {
    assert_eq!(
        roles(&flow("2001:db8:ff::7", 40000, "2001:db8:10::5", 25, 3, 120)),
        vec![server("2001:db8:10::5", "2001:db8:ff::7")]
    );
    assert_eq!(roles(&flow("2001:db8:ff::7", 40000, "2001:db8:11::5", 25, 3, 120)), vec![], "not internal");
}

#[test]
fn port_usage_records_destination_ports_inbound_and_source_ports_outbound_per_bin() {
    let mut profiler = profiler();
    let mut request = flow("198.51.100.7", 40000, "192.0.2.5", 25, 5, 400);
    request.start = 1_199 * SEC;
    let mut reply = flow("192.0.2.5", 25, "198.51.100.7", 40000, 4, 300);
    reply.start = 1_200 * SEC;
    let web = flow("192.0.2.5", 51515, "198.51.100.80", 443, 10, 2000);
    profiler.add(&request);
    profiler.add(&reply);
    profiler.add(&web);
    let batch = profiler.take();
    let host: IpAddr = "192.0.2.5".parse().unwrap();
    let usage =
        |bin, direction, port| batch.port_usage.get(&PortUsageKey { host, bin, direction, proto: 6, port }).copied();
    assert_eq!(usage(600, Direction::Inbound, 25), Some(Counts { flows: 1, packets: 5, bytes: 400 }));
    assert_eq!(usage(1200, Direction::Outbound, 25), Some(Counts { flows: 1, packets: 4, bytes: 300 }));
    assert_eq!(usage(600, Direction::Outbound, 51515), Some(Counts { flows: 1, packets: 10, bytes: 2000 }));
    assert_eq!(batch.port_usage.len(), 3, "external hosts are not profiled");
    assert_eq!(batch.host_bins[&(host, 600)], Counts { flows: 2, packets: 15, bytes: 2400 });
    assert_eq!(batch.share_bins[&(0, host, 600)], Counts { flows: 1, packets: 5, bytes: 400 }, "mail ports only");
    assert_eq!(batch.flows, 3);
}
