//! `rogue flows --iface` on veth interfaces in namespaces these tests create:
//! a real TCP session routed through a gateway namespace, and millions of
//! frames from the XDP live-frames generator while rogue drains, counted to
//! the packet and byte.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    time::Duration,
};

use rogue_testkit::{
    generator::Generator,
    netns::{CLIENT_ADDR, Gateway, Netns, SERVER_ADDR, in_netns, veth},
    packets::{ethernet, ipv4, udp},
    process::{Finished, ROGUE, Running},
};

fn json_fields(flow: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = flow.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    names
}

/// (packets, bytes) of the flows printed from `src` to `dst` on `interface`.
fn totals(flows: &[serde_json::Value], src: &str, dst: &str, interface: &str) -> (u64, u64, u64) {
    flows.iter().filter(|f| f["src"] == src && f["dst"] == dst && f["interface"] == interface).fold(
        (0, 0, 0),
        |(p, b, flags), f| {
            (
                p + f["packets"].as_u64().unwrap(),
                b + f["bytes"].as_u64().unwrap(),
                flags | f["tcp_flags"].as_u64().unwrap(),
            )
        },
    )
}

#[test]
fn a_tcp_session_through_a_gateway_is_metered_on_both_of_its_interfaces() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let net = Gateway::create();
    let mut command = net.gateway.command(ROGUE);
    command.args(["flows", "--iface", "gw-in", "--iface", "gw-out", "--interval", "200ms", "--format", "jsonl", "-v"]);
    let mut rogue = Running::spawn(command);
    rogue.wait_for_stderr("XDP flow meter attached", 2);
    let (in_before, out_before) = (net.gateway.rx("gw-in"), net.gateway.rx("gw-out"));
    let session_start = jiff::Timestamp::now();

    // A real TCP session: the client sends 200 kB to port 25, the server
    // sends it back, both close.
    let listener = in_netns(&net.server, || TcpListener::bind((SERVER_ADDR, 25)).unwrap()).join().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        stream.write_all(&received).unwrap();
        received.len()
    });
    let client = in_netns(&net.client, || {
        let mut stream = TcpStream::connect((SERVER_ADDR, 25)).unwrap();
        stream.write_all(&vec![b'x'; 200_000]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).unwrap();
        echoed.len()
    });
    assert_eq!((client.join().unwrap(), server.join().unwrap()), (200_000, 200_000));
    std::thread::sleep(Duration::from_millis(500));
    let (in_after, out_after) = (net.gateway.rx("gw-in"), net.gateway.rx("gw-out"));
    let session_end = jiff::Timestamp::now();
    let finished = rogue.interrupt();
    assert!(finished.status.success(), "rogue failed:\n{}", finished.stderr);

    let flows = finished.json_lines();
    assert!(!flows.is_empty());
    for flow in &flows {
        assert_eq!(
            json_fields(flow),
            ["bytes", "dport", "dst", "end", "interface", "packets", "proto", "sport", "src", "start", "tcp_flags"]
        );
        assert_eq!(flow["proto"], 6, "only the session's packets are on the wire: {flow}");
        // Kernel timestamps come out as wall-clock time of the session, to
        // the coarse clock's resolution: one tick (10 ms at most, HZ >= 100).
        let time = |field: &str| flow[field].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
        let window = session_start - jiff::SignedDuration::from_millis(10)..=session_end;
        assert!(window.contains(&time("start")) && window.contains(&time("end")), "{flow} outside {window:?}");
    }
    // Every frame the kernel delivered on each interface is in a flow, by
    // the interfaces' own counters (veth counts rx bytes from the IP header).
    let delivered = |before: (u64, u64), after: (u64, u64)| (after.0 - before.0, after.1 - before.1);
    let (to_server, to_server_bytes, to_server_flags) = totals(&flows, CLIENT_ADDR, SERVER_ADDR, "gw-in");
    let (to_client, to_client_bytes, to_client_flags) = totals(&flows, SERVER_ADDR, CLIENT_ADDR, "gw-out");
    assert_eq!((to_server, to_server_bytes), delivered(in_before, in_after), "client to server on gw-in");
    assert_eq!((to_client, to_client_bytes), delivered(out_before, out_after), "server to client on gw-out");
    assert!(to_server > 10 && to_client > 10, "{to_server} and {to_client} packets");
    assert!(to_server_bytes > 200_000 && to_client_bytes > 200_000);
    // SYN, ACK and FIN both ways.
    assert_eq!(to_server_flags & 0x13, 0x13);
    assert_eq!(to_client_flags & 0x13, 0x13);
    assert!(flows.iter().all(|f| f["dport"] == 25 || f["sport"] == 25));

    assert_eq!(finished.summary_number("packets"), to_server + to_client);
    assert_eq!(finished.summary_number("insert failures"), 0);
    assert_eq!(finished.summary_number("malformed"), 0);
}

/// Drives `frames` copies of `frame` out of `interface` in `chunks`, over
/// `flows` UDP flows, pausing between chunks so drains interleave.
fn generate(interface: &str, frame: &[u8], frames: u32, flows: u32, chunks: u32) {
    assert_eq!(frames % chunks, 0);
    let mut generator = Generator::new(interface, frame, flows);
    for _ in 0..chunks {
        generator.send(frames / chunks);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn draining_under_millions_of_packets_loses_nothing_and_counts_nothing_twice() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    const FLOWS: u32 = 10_240;
    const PER_FLOW: u64 = 500;
    const FRAMES: u32 = FLOWS * PER_FLOW as u32; // 5,120,000
    let ns = Netns::new("drain");
    veth(&ns, "gen0", &ns, "mon0");

    let mut command = ns.command(ROGUE);
    command.args(["flows", "--iface", "mon0", "--interval", "50ms", "--format", "jsonl", "-v"]);
    let mut rogue = Running::spawn(command);
    rogue.wait_for_stderr("XDP flow meter attached", 1);
    let rx_before = ns.rx("mon0");

    // 203.0.113.0/24 to 198.51.100.0/24, to a MAC nobody has, so the stack
    // drops the frames as soon as the meter has passed them on.
    let payload = udp(0, 9000, &[0x5a; 18]);
    let packet = ipv4([203, 0, 113, 7].into(), [198, 51, 100, 9].into(), 17, &[], 0, &payload);
    let ip_len = packet.len() as u64;
    let mut frame = ethernet(0x0800, &packet);
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x0d, 0x0d]);
    let started = std::time::Instant::now();
    in_netns(&ns, move || generate("gen0", &frame, FRAMES, FLOWS, 40)).join().unwrap();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let rx_after = ns.rx("mon0");
    let finished: Finished = rogue.interrupt();
    assert!(finished.status.success(), "rogue failed:\n{}", finished.stderr);

    assert_eq!(rx_after.0 - rx_before.0, FRAMES as u64, "the veth delivered every generated frame");
    let mut per_flow: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    for flow in finished.json_lines() {
        let entry = per_flow.entry((flow["sport"].as_u64().unwrap(), flow["dport"].as_u64().unwrap())).or_default();
        entry.0 += flow["packets"].as_u64().unwrap();
        entry.1 += flow["bytes"].as_u64().unwrap();
    }
    assert_eq!(per_flow.len(), FLOWS as usize, "distinct flows");
    let wrong: Vec<_> =
        per_flow.iter().filter(|(_, counts)| **counts != (PER_FLOW, PER_FLOW * ip_len)).take(5).collect();
    assert!(wrong.is_empty(), "flows with other than {PER_FLOW} packets: {wrong:?}");
    assert_eq!(finished.summary_number("packets"), FRAMES as u64);
    assert_eq!(finished.summary_number("insert failures"), 0);
    let drains = finished.summary_number("drains");
    assert!(drains >= 20, "only {drains} drains during the run");
    eprintln!(
        "lossless drain: {FRAMES} frames in {took:?} ({:.2} Mpps) over {FLOWS} flows, {drains} drains, all counted once",
        FRAMES as f64 / took.as_secs_f64() / 1e6
    );
}

/// A cloud's traffic mirroring, as a sensor receives it: a namespace sends
/// its traffic through the kernel's own VXLAN device to the sensor's veth.
/// With `--decapsulate vxlan` the XDP program meters the flows inside;
/// without, the same traffic is one UDP flow to port 4789.
#[test]
fn vxlan_mirrored_to_a_sensor_is_metered_inside_by_the_kernel() {
    rogue_testkit::needs_root!("the XDP flow meter and network namespaces");
    let (mirror, sensor) = (Netns::new("mirror"), Netns::new("sensor"));
    veth(&mirror, "mirror0", &sensor, "sensor0");
    sensor.ip(&["link", "set", "sensor0", "address", "02:00:00:00:00:02"]);
    mirror.ip(&["addr", "add", "203.0.113.1/24", "dev", "mirror0"]);
    sensor.ip(&["addr", "add", "203.0.113.2/24", "dev", "sensor0"]);
    mirror.ip(&[
        "neigh",
        "replace",
        "203.0.113.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "mirror0",
        "nud",
        "permanent",
    ]);
    let vxlan = ["type", "vxlan", "id", "100", "local", "203.0.113.1", "remote", "203.0.113.2", "dstport", "4789"];
    mirror.ip(&[&["link", "add", "vxlan100"][..], &vxlan].concat());
    mirror.ip(&["addr", "add", "192.0.2.10/24", "dev", "vxlan100"]);
    mirror.ip(&["link", "set", "vxlan100", "up"]);
    mirror.ip(&[
        "neigh",
        "replace",
        "192.0.2.25",
        "lladdr",
        "02:00:00:00:00:25",
        "dev",
        "vxlan100",
        "nud",
        "permanent",
    ]);

    const DATAGRAMS: u64 = 50;
    for decapsulate in [true, false] {
        let mut command = sensor.command(ROGUE);
        command.args(["flows", "--iface", "sensor0", "--interval", "200ms", "--format", "jsonl", "-v"]);
        if decapsulate {
            command.args(["--decapsulate", "vxlan"]);
        }
        let mut rogue = Running::spawn(command);
        rogue.wait_for_stderr("XDP flow meter attached", 1);
        in_netns(&mirror, || {
            let socket = std::net::UdpSocket::bind("192.0.2.10:40000").unwrap();
            for _ in 0..DATAGRAMS {
                socket.send_to(&[0x5a; 100], "192.0.2.25:53").unwrap();
            }
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let finished = rogue.interrupt();
        assert!(finished.status.success(), "rogue failed:\n{}", finished.stderr);
        let flows = finished.json_lines();
        let of = |src: &str, dst: &str| flows.iter().filter(|f| f["src"] == src && f["dst"] == dst).collect::<Vec<_>>();
        if decapsulate {
            let inner = of("192.0.2.10", "192.0.2.25");
            assert_eq!(inner.len(), 1, "{flows:#?}");
            let flow = inner[0];
            assert_eq!((&flow["proto"], &flow["sport"], &flow["dport"]), (&17.into(), &40000.into(), &53.into()));
            assert_eq!((flow["packets"].as_u64(), flow["bytes"].as_u64()), (Some(DATAGRAMS), Some(DATAGRAMS * 128)));
            assert!(of("203.0.113.1", "203.0.113.2").is_empty(), "the tunnel is not a flow of its own");
            assert_eq!(finished.summary_number("decapsulated"), DATAGRAMS);
        } else {
            let outer = of("203.0.113.1", "203.0.113.2");
            assert!(outer.iter().all(|f| f["proto"] == 17 && f["dport"] == 4789), "{outer:#?}");
            let packets: u64 = outer.iter().map(|f| f["packets"].as_u64().unwrap()).sum();
            // Each datagram in 20 + 8 + 8 bytes of VXLAN and 14 of Ethernet.
            let bytes: u64 = outer.iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
            assert_eq!((packets, bytes), (DATAGRAMS, DATAGRAMS * (128 + 50)));
            assert!(of("192.0.2.10", "192.0.2.25").is_empty());
            assert_eq!(finished.summary_number("decapsulated"), 0);
        }
    }
}
