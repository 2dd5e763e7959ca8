//! A real DNS server for tests: NSD (Debian's nsd) on a free loopback port,
//! serving zones the test writes, stopped and removed on drop; and a "DNS
//! server" that never answers, for timeouts.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    netns::{Netns, in_netns},
    require,
};

pub struct Nsd {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Nsd {
    /// Serves `zones` (origin, zone file text) on 127.0.0.1.
    pub fn start(name: &str, zones: &[(&str, String)]) -> Nsd {
        Nsd::launch(name, zones, None)
    }

    /// Serves `zones` on the loopback of `netns` (for a program running there).
    pub fn start_in(netns: &Netns, name: &str, zones: &[(&str, String)]) -> Nsd {
        Nsd::launch(name, zones, Some(netns))
    }

    fn launch(name: &str, zones: &[(&str, String)], netns: Option<&Netns>) -> Nsd {
        require("nsd");
        let dir = std::env::temp_dir().join(format!("rogue-nsd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // NSD listens on the port over UDP and TCP.
        let free_port = crate::free_port;
        let port = match netns {
            Some(netns) => in_netns(netns, free_port).join().unwrap(),
            None => free_port(),
        };
        let mut conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
             zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
             zonelistfile: \"{d}/zone.list\"\n  database: \"{d}/nsd.db\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 1\n\
             remote-control:\n  control-enable: no\n",
            d = dir.display()
        );
        for (i, (origin, text)) in zones.iter().enumerate() {
            std::fs::write(dir.join(format!("zone{i}")), text).unwrap();
            conf += &format!("zone:\n  name: {origin}\n  zonefile: zone{i}\n");
        }
        std::fs::write(dir.join("nsd.conf"), conf).unwrap();
        let mut command = match netns {
            Some(netns) => netns.command("nsd"),
            None => Command::new("nsd"),
        };
        let child = command
            .args(["-d", "-c"])
            .arg(dir.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let nsd = Nsd { addr, dir, child };
        let origin = zones[0].0.to_string();
        let answered = match netns {
            Some(netns) => in_netns(netns, move || answers(addr, &origin)).join().unwrap(),
            None => answers(addr, &origin),
        };
        assert!(answered, "nsd did not answer on {addr}");
        let log = std::fs::read_to_string(nsd.dir.join("nsd.log")).unwrap_or_default();
        assert!(!log.contains("error"), "nsd did not load every zone:\n{log}");
        nsd
    }
}

/// Whether a DNS server at `addr` answers an SOA query within 10 s.
fn answers(addr: SocketAddr, origin: &str) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let query = soa_query(origin);
    let mut reply = [0u8; 512];
    while Instant::now() < deadline {
        socket.send_to(&query, addr).unwrap();
        if socket.recv(&mut reply).is_ok() {
            return true;
        }
    }
    false
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A DNS query for the SOA of `origin`, by hand (the readiness probe).
fn soa_query(origin: &str) -> Vec<u8> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in origin.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend(label.as_bytes());
    }
    query.extend([0, 0, 6, 0, 1]);
    query
}

/// A UDP socket that receives queries and never replies.
pub struct Silent {
    pub addr: SocketAddr,
    _socket: UdpSocket,
}

impl Silent {
    pub fn bind() -> Silent {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        Silent { addr: socket.local_addr().unwrap(), _socket: socket }
    }
}

const SOA: &str = "@ IN SOA ns.example.org. hostmaster.example.org. 1 3600 600 86400 60\n@ IN NS ns.example.org.\n";

/// The zones of the test network (the scenario's hosts, see the scenario
/// module): the MX of example.org (mx1 on IPv4, mx2 on IPv6) and of
/// example.net (relay1 = 192.0.2.40); forward-confirmed mail names for .25,
/// .40 and .77; no PTR for .41; a spoofed PTR for .60 (mail.example.org,
/// whose A record is .25); and hostile PTR names for two external servers.
pub fn scenario_zones() -> Vec<(&'static str, String)> {
    vec![
        (
            "example.org",
            format!(
                "$ORIGIN example.org.\n$TTL 300\n{SOA}@ IN MX 10 mx1\n@ IN MX 20 mx2\nns IN A 127.0.0.1\n\
                 mx1 IN A 192.0.2.25\nmx2 IN AAAA 2001:db8:10::25\nmail IN A 192.0.2.25\n\
                 relay1 IN A 192.0.2.40\nsmtp-gw IN A 192.0.2.77\n"
            ),
        ),
        ("example.net", format!("$ORIGIN example.net.\n$TTL 300\n{SOA}@ IN MX 30 relay1.example.org.\n")),
        (
            "2.0.192.in-addr.arpa",
            format!(
                "$ORIGIN 2.0.192.in-addr.arpa.\n$TTL 300\n{SOA}25 IN PTR mx1.example.org.\n\
                 40 IN PTR relay1.example.org.\n60 IN PTR mail.example.org.\n77 IN PTR smtp-gw.example.org.\n"
            ),
        ),
        (
            "113.0.203.in-addr.arpa",
            format!(
                "$ORIGIN 113.0.203.in-addr.arpa.\n$TTL 300\n{SOA}\
                 101 IN PTR bad\\007bell\\000nul\\060script\\062alert\\0401\\041\\060/script\\062.example.com.\n\
                 102 IN PTR {}.example.com.\n",
                "x".repeat(63)
            ),
        ),
        (
            "0.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            format!(
                "$ORIGIN 0.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa.\n$TTL 300\n{SOA}\
                 5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 IN PTR mx2.example.org.\n"
            ),
        ),
    ]
}

/// dnsmasq (Debian's dnsmasq-base) on a free loopback port, answering from
/// `records` (its --address, --ptr-record, --mx-host options) and, with no
/// upstream server, refusing everything else: AAAA queries for names it
/// knows only A records for among them, as such servers do.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    child: Child,
}

impl Dnsmasq {
    pub fn start(records: &[&str]) -> Dnsmasq {
        require("dnsmasq");
        // dnsmasq listens on TCP too.
        let port = crate::free_port();
        let child = Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--no-daemon", "--bind-interfaces", "--listen-address=127.0.0.1"])
            .args(["--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--user=root", "--pid-file="])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dnsmasq = Dnsmasq { addr, child };
        assert!(answers(addr, "example.org"), "dnsmasq did not answer on {addr}");
        dnsmasq
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The system resolver of a network namespace (its /etc/resolv.conf names
/// 127.0.0.1) as a listener on port 53 that counts the queries it gets
/// over UDP and TCP and refuses each at once.
pub struct CountingResolver {
    queries: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingResolver {
    /// Starts in `netns`, which [`Netns::with_resolver`] made.
    pub fn start_in(netns: &Netns) -> CountingResolver {
        use std::sync::{Arc, atomic::AtomicU64};
        let queries = Arc::new(AtomicU64::new(0));
        let (udp, tcp) = in_netns(netns, || {
            (UdpSocket::bind("127.0.0.1:53").unwrap(), std::net::TcpListener::bind("127.0.0.1:53").unwrap())
        })
        .join()
        .unwrap();
        let counted = queries.clone();
        std::thread::spawn(move || {
            let mut query = [0u8; 512];
            while let Ok((length, from)) = udp.recv_from(&mut query) {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = udp.send_to(&refused(&query[..length]), from);
            }
        });
        let counted = queries.clone();
        std::thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(stream);
            }
        });
        CountingResolver { queries }
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A REFUSED answer to `query` (its id and question, the QR bit, RCODE 5).
fn refused(query: &[u8]) -> Vec<u8> {
    let mut answer = query.to_vec();
    if answer.len() >= 4 {
        answer[2] |= 0x80;
        answer[3] = (answer[3] & 0xf0) | 5;
    }
    answer
}
