use super::*;
use crate::config::Service;

const SEC: Nanos = NANOS_PER_SEC;

fn smtp() -> Service {
    Service::named("smtp")
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

/// A profiler of `services` by name, as their presets define them.
fn profiler_of(services: &[&str]) -> Profiler {
    let services = services.iter().map(|name| Service::named(name)).collect();
    Profiler::new(vec!["192.0.2.0/24".parse().unwrap()], services, 600)
}

/// A UDP flow of one datagram of `bytes`, starting at `at` seconds.
fn datagram(src: &str, sport: u16, dst: &str, dport: u16, at: i64, bytes: u64) -> FlowRecord {
    let mut flow = crate::flows::tcp_flow(src, sport, dst, dport, at * SEC, 1, bytes);
    flow.proto = 17;
    flow
}

/// (service, host, role, peer) of the service flows `flows` give, in order.
fn udp_roles(profiler: &mut Profiler, flows: &[FlowRecord]) -> Vec<(String, String, Role, String)> {
    for flow in flows {
        profiler.add(flow);
    }
    let batch = profiler.take();
    let names: Vec<String> = profiler.services().iter().map(|s| s.name.clone()).collect();
    batch
        .service_flows
        .iter()
        .map(|f| (names[f.service].clone(), f.host.to_string(), f.role, f.peer.to_string()))
        .collect()
}

#[test]
fn a_udp_server_is_one_that_answers_from_the_service_port() {
    let mut dns = profiler_of(&["dns"]);
    let query = datagram("198.51.100.7", 40000, "192.0.2.53", 53, 1_000, 60);
    let answer = datagram("192.0.2.53", 53, "198.51.100.7", 40000, 1_001, 120);
    assert_eq!(udp_roles(&mut dns, std::slice::from_ref(&query)), vec![], "a query alone waits for its answer");
    let served = vec![("dns".to_string(), "192.0.2.53".to_string(), Role::Server, "198.51.100.7".to_string()); 2];
    assert_eq!(udp_roles(&mut dns, std::slice::from_ref(&answer)), served, "the answer settles both directions");

    // In the other order (the answer's flow completed first), the same.
    let mut dns = profiler_of(&["dns"]);
    assert_eq!(udp_roles(&mut dns, &[answer, query]), served);
}

#[test]
fn a_scan_nobody_answers_makes_no_server_and_is_counted_unanswered() {
    let mut dns = profiler_of(&["dns"]);
    let probes: Vec<FlowRecord> =
        (0..3).map(|i| datagram("198.51.100.66", 50000 + i, "192.0.2.30", 53, 1_000 + i as i64, 60)).collect();
    assert_eq!(udp_roles(&mut dns, &probes), vec![]);
    // Past the horizon (idle + active timeouts) they are given up on.
    let later = datagram("198.51.100.66", 50100, "192.0.2.31", 53, 1_000 + 400, 80);
    assert_eq!(udp_roles(&mut dns, &[later]), vec![]);
    assert_eq!((dns.exchanges().unanswered, dns.exchanges().waiting()), (3, 1));
    let batch_traffic = dns.take();
    assert_eq!(batch_traffic.service_flows, vec![]);
}

#[test]
fn a_client_asking_from_the_service_port_is_still_the_client() {
    // An old resolver querying from port 53: it asked first, the external
    // server answered; with `roles: [server]` nothing is recorded for it.
    let ask = datagram("192.0.2.10", 53, "203.0.113.53", 53, 1_000, 60);
    let reply = datagram("203.0.113.53", 53, "192.0.2.10", 53, 1_001, 200);
    assert_eq!(udp_roles(&mut profiler_of(&["dns"]), &[reply.clone(), ask.clone()]), vec![]);
    // A service that finds clients too sees the host as one.
    let mut both = Service::named("dns");
    both.roles = vec![Role::Server, Role::Client];
    let mut profiler = Profiler::new(vec!["192.0.2.0/24".parse().unwrap()], vec![both], 600);
    let client = ("dns".to_string(), "192.0.2.10".to_string(), Role::Client, "203.0.113.53".to_string());
    assert_eq!(udp_roles(&mut profiler, &[reply, ask]), vec![client.clone(), client]);
}

#[test]
fn answering_from_another_port_than_the_service_is_no_service() {
    // The host sent first from port 53 to a high port and got a reply: it
    // asked, and its peer's port is not DNS.
    let first = datagram("192.0.2.10", 53, "198.51.100.7", 40000, 1_000, 60);
    let reply = datagram("198.51.100.7", 40000, "192.0.2.10", 53, 1_001, 60);
    assert_eq!(udp_roles(&mut profiler_of(&["dns"]), &[first, reply]), vec![]);
}

#[test]
fn a_dhcp_server_is_the_host_answering_from_port_67_whatever_the_destination() {
    let mut dhcp = profiler_of(&["dhcp"]);
    let discover = datagram("0.0.0.0", 68, "255.255.255.255", 67, 1_000, 328);
    let offer = datagram("192.0.2.67", 67, "255.255.255.255", 68, 1_001, 328);
    let unicast_ack = datagram("192.0.2.67", 67, "192.0.2.150", 68, 1_002, 328);
    let renew = datagram("192.0.2.150", 68, "192.0.2.67", 67, 1_003, 328);
    let short = datagram("192.0.2.68", 67, "192.0.2.150", 68, 1_004, 200);
    let server = |peer: &str| ("dhcp".to_string(), "192.0.2.67".to_string(), Role::Server, peer.to_string());
    assert_eq!(
        udp_roles(&mut dhcp, &[discover, offer, unicast_ack, renew, short]),
        vec![server("255.255.255.255"), server("192.0.2.150")],
        "the broadcast offer and the unicast ack, with internal peers (peers: any); a request proves nothing; \
         a datagram shorter than a BOOTP header is not DHCP"
    );
    assert_eq!(dhcp.exchanges().waiting(), 0, "nothing waits for an answer");
}

#[test]
fn peers_external_leaves_out_internal_peers_and_services_are_told_apart() {
    let mut profiler = profiler_of(&["ssh", "ntp", "rdp"]);
    let inside = crate::flows::tcp_flow("192.0.2.9", 50000, "192.0.2.22", 22, 1_000 * SEC, 10, 2_000);
    let outside = crate::flows::tcp_flow("198.51.100.7", 50000, "192.0.2.22", 22, 1_000 * SEC, 10, 2_000);
    let ntp_ask = datagram("198.51.100.8", 123, "192.0.2.123", 123, 1_000, 76);
    let ntp_answer = datagram("192.0.2.123", 123, "198.51.100.8", 123, 1_001, 76);
    let rdp = crate::flows::tcp_flow("192.0.2.33", 3389, "198.51.100.9", 61000, 1_000 * SEC, 12, 3_000);
    assert_eq!(
        udp_roles(&mut profiler, &[inside, outside, ntp_ask, ntp_answer, rdp]),
        vec![
            ("ssh".into(), "192.0.2.22".into(), Role::Server, "198.51.100.7".into()),
            ("ntp".into(), "192.0.2.123".into(), Role::Server, "198.51.100.8".into()),
            ("ntp".into(), "192.0.2.123".into(), Role::Server, "198.51.100.8".into()),
            ("rdp".into(), "192.0.2.33".into(), Role::Server, "198.51.100.9".into()),
        ]
    );
}

#[test]
fn open_exchanges_are_bounded_and_the_evicted_counted() {
    let mut profiler = profiler_of(&["dns"]);
    profiler.exchanges = Exchanges::new(DEFAULT_ANSWER_HORIZON, 2);
    let probes: Vec<FlowRecord> =
        (0..5).map(|i| datagram("198.51.100.66", 50000 + i, "192.0.2.30", 53, 1_000, 60)).collect();
    udp_roles(&mut profiler, &probes);
    let exchanges = profiler.exchanges();
    assert_eq!((exchanges.open(), exchanges.evicted, exchanges.unanswered), (2, 3, 3));
    profiler.exchanges_mut().shrink_to(1);
    assert_eq!((profiler.exchanges().open(), profiler.exchanges().evicted, profiler.exchanges().unanswered), (1, 4, 4));
    profiler.finish();
    assert_eq!((profiler.exchanges().open(), profiler.exchanges().unanswered), (0, 5));
}

#[test]
fn a_question_and_its_answer_in_one_clock_tick_are_told_apart_by_their_ports() {
    // The kernel's coarse clock gives both directions the same start.
    let query = datagram("198.51.100.7", 40000, "192.0.2.53", 53, 1_000, 60);
    let answer = datagram("192.0.2.53", 53, "198.51.100.7", 40000, 1_000, 120);
    let served = vec![("dns".to_string(), "192.0.2.53".to_string(), Role::Server, "198.51.100.7".to_string()); 2];
    assert_eq!(udp_roles(&mut profiler_of(&["dns"]), &[answer, query]), served);
}

#[test]
fn a_tcp_syn_or_the_reset_refusing_it_serves_nothing_whatever_the_services_thresholds() {
    // DNS counts one packet of 40 bytes, a UDP datagram's worth; over TCP
    // that is a bare SYN, or the reset a closed port answers with.
    let mut dns = profiler_of(&["dns"]);
    let syn = crate::flows::tcp_flow("203.0.113.66", 40000, "192.0.2.30", 53, 1_000 * SEC, 1, 60);
    let reset = crate::flows::tcp_flow("192.0.2.30", 53, "203.0.113.66", 40000, 1_000 * SEC, 1, 40);
    assert_eq!(udp_roles(&mut dns, &[syn, reset]), vec![]);
    // A query over TCP: five packets each way.
    let query = crate::flows::tcp_flow("203.0.113.7", 40001, "192.0.2.53", 53, 1_000 * SEC, 5, 260);
    let answer = crate::flows::tcp_flow("192.0.2.53", 53, "203.0.113.7", 40001, 1_000 * SEC, 4, 300);
    let served = vec![("dns".to_string(), "192.0.2.53".to_string(), Role::Server, "203.0.113.7".to_string()); 2];
    assert_eq!(udp_roles(&mut dns, &[query, answer]), served);
}
