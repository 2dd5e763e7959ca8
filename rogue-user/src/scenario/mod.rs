//! Scenarios: deterministic synthetic captures of the method's three cases
//! and of the ordinary traffic around them, for tests, benchmarks and demos.
//! The same seed gives the same bytes.
//!
//! The network is the documentation ranges: internal 192.0.2.0/24 and
//! 2001:db8:10::/48 (as config/rogue.yaml), external 198.51.100.0/24,
//! 203.0.113.0/24 and 2001:db8:ff::/48. The time line is the method's:
//! 2008-02-01 to 2008-03-10.
//!
//! - background, every day: the whitelisted MX (192.0.2.25 and
//!   2001:db8:10::25) receiving and delivering mail and serving IMAP and
//!   submission to workstations; workstations on the web and DNS; a scanner
//!   probing port 25 (one packet each way, under the thresholds); a client
//!   whose ephemeral port happens to be 25 towards a web server; a
//!   workstation refused by an external port 25.
//! - `vpn-failure`: 192.0.2.77, not a known mail server, answers mail on
//!   port 25 and other low mail ports from 2008-02-07 to 2008-02-20.
//! - `new-mail-servers`: 192.0.2.40 and 192.0.2.41 carry 6 SMTP flows a day,
//!   then 14,000 a day from 2008-02-23.
//! - `misconfiguration`: 192.0.2.60 opens SMTP to 75 external mail servers
//!   within a minute on 2008-03-10, after a burst to 12 on 2008-02-08.
//! - `services` (not part of `all`): the method beyond mail, every day from
//!   2008-02-11 (day 10). Rogues: an open resolver (192.0.2.54) answering
//!   the Internet's queries, an NTP server (192.0.2.123) answering external
//!   clients, a second DHCP server (192.0.2.68) answering the LAN's
//!   broadcasts, SSH on the resolver 192.0.2.53 (whitelisted for DNS, not
//!   for SSH) and RDP (192.0.2.33) reached from outside. Known: 192.0.2.53
//!   answering the Internet for the organisation's zones and the DHCP server
//!   192.0.2.67. Traps: a scan of port 53 and 123 nobody answers, a resolver
//!   asking from source port 53 (192.0.2.55), workstations asking external
//!   NTP servers, a SYN scan of ports 22, 53 and 3389, and workstations using SSH
//!   and RDP outside.

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::time::{NANOS_PER_SEC, Nanos};

pub mod packets;

use packets::{Frame, From, PcapWriter, TcpConversation, refused, udp_exchange};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// Ordinary traffic only: no finding is right
    Background,
    VpnFailure,
    NewMailServers,
    Misconfiguration,
    /// The three cases over the background
    All,
    /// Rogue DNS, NTP, DHCP, SSH and RDP servers over the background
    Services,
    /// Many short conversations at once, as on a busy gateway: for the
    /// benchmarks of per-flow work
    Churn,
}

impl std::str::FromStr for Case {
    type Err = String;

    fn from_str(text: &str) -> Result<Case, String> {
        match text {
            "background" => Ok(Case::Background),
            "vpn-failure" => Ok(Case::VpnFailure),
            "new-mail-servers" => Ok(Case::NewMailServers),
            "misconfiguration" => Ok(Case::Misconfiguration),
            "all" => Ok(Case::All),
            "services" => Ok(Case::Services),
            "churn" => Ok(Case::Churn),
            other => Err(format!("{other:?} is not a scenario")),
        }
    }
}

impl Case {
    fn has(self, case: Case) -> bool {
        self == case || (self == Case::All && !matches!(case, Case::Background | Case::Services | Case::Churn))
    }
}

pub const FIRST_DAY: (i16, i8, i8) = (2008, 2, 1);
pub const DAYS: i64 = 39;

pub const MX: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
pub const MX_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x25);
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
pub const VPN_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
pub const NEW_SERVERS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 40), Ipv4Addr::new(192, 0, 2, 41)];
pub const MISCONFIGURED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 60);
pub const PORT_25_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 120);
pub const REFUSED_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);
pub const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
pub const WEB_SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
pub const OPEN_RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 54);
pub const PORT_53_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 55);
pub const NTP_SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 123);
pub const DHCP_SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 67);
pub const ROGUE_DHCP_SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 68);
pub const RDP_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 33);
/// The first day of the `services` scenario's servers.
pub const SERVICES_FROM_DAY: i64 = 10;

/// The day (0 = 2008-02-01) the VPN failure starts, and how long it lasts.
pub const VPN_DAYS: std::ops::Range<i64> = 6..20;
/// Days of low traffic on the new servers, then the day they take off.
pub const NEW_SERVERS_QUIET: std::ops::Range<i64> = 14..22;
pub const NEW_SERVERS_BUSY: std::ops::Range<i64> = 22..24;
/// 14,000 flows a day: 7,000 conversations of two flows.
pub const BUSY_CONVERSATIONS: usize = 7_000;
pub const MISCONFIGURATION_DAY: i64 = 38;
pub const MISCONFIGURATION_PEERS: u8 = 75;
pub const EARLIER_BURST_DAY: i64 = 7;
pub const EARLIER_BURST_PEERS: u8 = 12;

const DAY: Nanos = 86_400 * NANOS_PER_SEC;
/// Linux's default ephemeral port range.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32_768..=60_999;

/// What a generated capture holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    pub frames: u64,
}

/// Midnight UTC of day `day` of the time line, in ns.
pub fn day_start(day: i64) -> Nanos {
    let (y, m, d) = FIRST_DAY;
    let first = jiff::civil::date(y, m, d)
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .expect("a valid date")
        .timestamp()
        .as_nanosecond() as Nanos;
    first + day * DAY
}

/// How much background traffic, for benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Multiplies every kind of background conversation.
    pub scale: u32,
    /// Workstations the background's clients are drawn from: up to 100 in
    /// 192.0.2.140-239, more in 10.0.0.0/8.
    pub workstations: u32,
}

impl Size {
    /// `scale` times the background, with 50 workstations per unit of scale.
    pub fn scaled(scale: u32) -> Size {
        let scale = scale.max(1);
        Size { scale, workstations: 50 * scale }
    }
}

/// Writes the scenario `case` as a pcap to `out`.
pub fn generate(case: Case, seed: u64, size: Size, out: impl Write) -> io::Result<Generated> {
    let mut writer = PcapWriter::new(io::BufWriter::with_capacity(1 << 20, out))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match case {
        Case::Churn => churn(&mut writer, &mut rng, size)?,
        _ => days(case, &mut writer, &mut rng, size)?,
    }
    let frames = writer.frames;
    writer.finish()?;
    Ok(Generated { frames })
}

/// The method's time line, day by day: the background and the cases.
fn days(case: Case, writer: &mut PcapWriter<impl Write>, rng: &mut ChaCha8Rng, size: Size) -> io::Result<()> {
    let mut frames = Vec::new();
    for day in 0..DAYS {
        frames.clear();
        // Each day's ports start anywhere, as a host's do: a 5-tuple repeated
        // day after day would make one flow of many days for a flow meter
        // whose timeouts are expired by wall-clock time (softflowd -r).
        let next_port = rng.random_range(EPHEMERAL_PORTS);
        let mut today =
            Day { start: day_start(day), rng, frames: &mut frames, next_port, workstations: size.workstations.max(1) };
        today.background(size.scale.max(1));
        if case.has(Case::VpnFailure) && VPN_DAYS.contains(&day) {
            today.vpn_failure();
        }
        if case.has(Case::NewMailServers) {
            today.new_mail_servers(day);
        }
        if case.has(Case::Misconfiguration) {
            today.misconfiguration(day);
        }
        if case.has(Case::Services) && day >= SERVICES_FROM_DAY {
            today.services();
        }
        write_in_time_order(writer, &mut frames)?;
    }
    Ok(())
}

fn write_in_time_order(writer: &mut PcapWriter<impl Write>, frames: &mut [Frame]) -> io::Result<()> {
    frames.sort_by_key(|f| f.time);
    frames.iter().try_for_each(|frame| writer.write(frame))
}

/// Short conversations per unit of scale in the `churn` capture, over
/// [`CHURN_SECONDS`]: web requests of ten packets (at most six a flow) and
/// DNS exchanges of one packet each way.
pub const CHURN_CONVERSATIONS: u32 = 60_000;
pub const CHURN_EXCHANGES: u32 = 30_000;
pub const CHURN_SECONDS: i64 = 600;

/// The `churn` capture: `size.scale` times [`CHURN_CONVERSATIONS`] and
/// [`CHURN_EXCHANGES`] between `size.workstations` clients and 40,000
/// servers within ten minutes of the first day, so tens of thousands of
/// flows are open at once and most of the work is per flow.
fn churn(writer: &mut PcapWriter<impl Write>, rng: &mut ChaCha8Rng, size: Size) -> io::Result<()> {
    let mut frames = Vec::new();
    let mut today = Day {
        start: day_start(0),
        rng,
        frames: &mut frames,
        next_port: *EPHEMERAL_PORTS.start(),
        workstations: size.workstations.max(1),
    };
    let within = CHURN_SECONDS * NANOS_PER_SEC;
    let scale = size.scale.max(1);
    for _ in 0..CHURN_CONVERSATIONS * scale {
        let (client, at) = (today.workstation(), today.start + today.rng.random_range(0..within));
        let server = v4(198, 51, 100 + today.rng.random_range(0..2u8) * 103, today.rng.random_range(1..=200));
        today.request(client, server, 443, at, (100, 300));
    }
    for _ in 0..CHURN_EXCHANGES * scale {
        let (client, at, port) =
            (today.workstation(), today.start + today.rng.random_range(0..within), today.ephemeral_port());
        let resolver = v4(203, 0, 113, today.rng.random_range(1..=200));
        udp_exchange(client, port, resolver, 53, at, (40, 120), today.frames);
    }
    write_in_time_order(writer, &mut frames)
}

/// One day of traffic being built.
struct Day<'a> {
    start: Nanos,
    rng: &'a mut ChaCha8Rng,
    frames: &'a mut Vec<Frame>,
    next_port: u16,
    workstations: u32,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

impl Day<'_> {
    /// A moment of the day, uniformly.
    fn any_time(&mut self) -> Nanos {
        self.start + self.rng.random_range(0..DAY - 60 * NANOS_PER_SEC)
    }

    fn ephemeral_port(&mut self) -> u16 {
        self.next_port =
            if self.next_port >= *EPHEMERAL_PORTS.end() { *EPHEMERAL_PORTS.start() } else { self.next_port + 1 };
        self.next_port
    }

    fn conversation(
        &mut self,
        client: IpAddr,
        server: IpAddr,
        server_port: u16,
        start: Nanos,
        exchanges: Vec<(From, usize)>,
    ) {
        let client_port = self.ephemeral_port();
        TcpConversation { client, client_port, server, server_port, start, exchanges }.frames(self.frames);
    }

    /// An SMTP delivery: banner, EHLO, pipelined envelope, message, QUIT.
    fn smtp(&mut self, client: IpAddr, server: IpAddr, start: Nanos, message: usize) {
        let exchanges = vec![
            (From::Server, 70),
            (From::Client, 25),
            (From::Server, 120),
            (From::Client, 90),
            (From::Server, 40),
            (From::Client, message),
            (From::Server, 30),
        ];
        self.conversation(client, server, 25, start, exchanges);
    }

    fn request(&mut self, client: IpAddr, server: IpAddr, port: u16, start: Nanos, sizes: (usize, usize)) {
        self.conversation(client, server, port, start, vec![(From::Client, sizes.0), (From::Server, sizes.1)]);
    }

    fn workstation(&mut self) -> IpAddr {
        let count = self.workstations;
        let n = self.rng.random_range(0..count);
        if count <= 100 {
            v4(192, 0, 2, 140 + (n as u8 % 100))
        } else {
            v4(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)
        }
    }

    fn external_mta(&mut self) -> IpAddr {
        v4(203, 0, 113, self.rng.random_range(1..=200))
    }

    fn background(&mut self, scale: u32) {
        for _ in 0..60 * scale {
            let (from, at, size) = (self.external_mta(), self.any_time(), self.rng.random_range(300..6_000));
            self.smtp(from, MX.into(), at, size);
        }
        for _ in 0..40 * scale {
            let (to, at, size) = (self.external_mta(), self.any_time(), self.rng.random_range(300..6_000));
            self.smtp(MX.into(), to, at, size);
        }
        for _ in 0..10 * scale {
            let from = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, self.rng.random_range(1..50)));
            let (at, size) = (self.any_time(), self.rng.random_range(300..6_000));
            self.smtp(from, MX_V6.into(), at, size);
        }
        for _ in 0..30 * scale {
            let (client, at) = (self.workstation(), self.any_time());
            self.request(client, MX.into(), 993, at, (300, 6_000));
        }
        for _ in 0..20 * scale {
            let (client, at, size) = (self.workstation(), self.any_time(), self.rng.random_range(500..5_000));
            self.conversation(
                client,
                MX.into(),
                587,
                at,
                vec![(From::Server, 70), (From::Client, size), (From::Server, 30)],
            );
        }
        for _ in 0..100 * scale {
            let (client, at) = (self.workstation(), self.any_time());
            self.request(client, WEB_SERVER.into(), 443, at, (400, 4_000));
        }
        for _ in 0..100 * scale {
            let (client, at) = (self.workstation(), self.any_time());
            let port = self.ephemeral_port();
            udp_exchange(client, port, RESOLVER.into(), 53, at, (40, 120), self.frames);
        }
        for _ in 0..10 {
            let (target, at) = (v4(192, 0, 2, self.rng.random_range(1..=254)), self.any_time());
            let port = self.ephemeral_port();
            refused(SCANNER.into(), port, target, 25, at, self.frames);
        }
        // Port 25 as an ephemeral port towards a web server, twice a day.
        for _ in 0..2 {
            let at = self.any_time();
            TcpConversation {
                client: PORT_25_CLIENT.into(),
                client_port: 25,
                server: WEB_SERVER.into(),
                server_port: 443,
                start: at,
                exchanges: vec![(From::Client, 500), (From::Server, 4_000)],
            }
            .frames(self.frames);
        }
        let (at, port) = (self.any_time(), self.ephemeral_port());
        refused(REFUSED_CLIENT.into(), port, v4(203, 0, 113, 200), 25, at, self.frames);
    }

    fn vpn_failure(&mut self) {
        for (port, count) in [(25, 30), (110, 5), (143, 5), (993, 5), (995, 3), (465, 2), (587, 2)] {
            for _ in 0..count {
                let (site, at) = (v4(198, 51, 100, self.rng.random_range(10..40)), self.any_time());
                if port == 25 {
                    let size = self.rng.random_range(1_000..8_000);
                    self.smtp(site, VPN_HOST.into(), at, size);
                } else {
                    self.request(site, VPN_HOST.into(), port, at, (200, 4_000));
                }
            }
        }
    }

    fn new_mail_servers(&mut self, day: i64) {
        let conversations = if NEW_SERVERS_QUIET.contains(&day) {
            3
        } else if NEW_SERVERS_BUSY.contains(&day) {
            BUSY_CONVERSATIONS
        } else {
            return;
        };
        for server in NEW_SERVERS {
            for i in 0..conversations {
                let (peer, at) = (self.external_mta(), self.any_time());
                // Half received, half delivered: the server role both ways.
                if i % 2 == 0 {
                    self.smtp(peer, server.into(), at, 300)
                } else {
                    self.smtp(server.into(), peer, at, 300)
                }
            }
        }
    }

    fn misconfiguration(&mut self, day: i64) {
        let (peers, first) = match day {
            MISCONFIGURATION_DAY => (MISCONFIGURATION_PEERS, 101),
            EARLIER_BURST_DAY => (EARLIER_BURST_PEERS, 180),
            _ => return,
        };
        let burst = burst_start(day);
        for i in 0..peers {
            let at = burst + i as Nanos * 50 * NANOS_PER_SEC / MISCONFIGURATION_PEERS as Nanos;
            self.smtp(MISCONFIGURED.into(), v4(203, 0, 113, first + i), at, 2_000);
        }
    }
}

impl Day<'_> {
    fn internet_host(&mut self) -> IpAddr {
        v4(198, 51, 100, self.rng.random_range(100..200))
    }

    /// A day of the `services` scenario (see the module comment).
    fn services(&mut self) {
        for _ in 0..40 {
            // The organisation's authoritative server, and the open resolver.
            for resolver in [RESOLVER, OPEN_RESOLVER] {
                let (asker, at, port) = (self.internet_host(), self.any_time(), self.ephemeral_port());
                udp_exchange(asker, port, resolver.into(), 53, at, (45, 160), self.frames);
            }
            let (client, at, port) = (self.internet_host(), self.any_time(), self.ephemeral_port());
            udp_exchange(client, port, NTP_SERVER.into(), 123, at, (48, 48), self.frames);
            let (workstation, at, port) = (self.workstation(), self.any_time(), self.ephemeral_port());
            udp_exchange(workstation, port, v4(203, 0, 113, 123), 123, at, (48, 48), self.frames);
        }
        for _ in 0..10 {
            // Symmetric NTP (port 123 both ends) answered by the rogue.
            let (peer, at) = (self.internet_host(), self.any_time());
            udp_exchange(peer, 123, NTP_SERVER.into(), 123, at, (48, 48), self.frames);
            // A resolver asking from port 53, answered: it is the client.
            let at = self.any_time();
            udp_exchange(PORT_53_CLIENT.into(), 53, v4(203, 0, 113, 53), 53, at, (45, 200), self.frames);
            // Scans of 53 and 123 nobody answers.
            for port in [53, 123] {
                let (target, at, from) =
                    (v4(192, 0, 2, self.rng.random_range(1..=254)), self.any_time(), self.ephemeral_port());
                self.frames
                    .push(packets::Frame { time: at, bytes: packets::udp(SCANNER.into(), from, target, port, 40) });
            }
        }
        for _ in 0..5 {
            // DHCP: a broadcast discover, answered by both servers.
            let at = self.any_time();
            let broadcast = IpAddr::V4(Ipv4Addr::BROADCAST);
            self.frames.push(packets::Frame {
                time: at,
                bytes: packets::udp(Ipv4Addr::UNSPECIFIED.into(), 68, broadcast, 67, 300),
            });
            for (server, delay) in [(DHCP_SERVER, 1), (ROGUE_DHCP_SERVER, 2)] {
                let time = at + delay * NANOS_PER_SEC / 100;
                self.frames.push(packets::Frame { time, bytes: packets::udp(server.into(), 67, broadcast, 68, 300) });
            }
        }
        for _ in 0..8 {
            let ssh = vec![(From::Server, 40), (From::Client, 1_200), (From::Server, 1_500), (From::Client, 600)];
            let (peer, at) = (self.internet_host(), self.any_time());
            self.conversation(peer, RESOLVER.into(), 22, at, ssh.clone());
            let (peer, at) = (self.internet_host(), self.any_time());
            self.request(peer, RDP_HOST.into(), 3389, at, (1_500, 9_000));
            // Workstations using SSH and RDP outside, and SYN scans of both.
            let (workstation, server, at) = (self.workstation(), self.internet_host(), self.any_time());
            self.conversation(workstation, server, 22, at, ssh);
            let (workstation, at) = (self.workstation(), self.any_time());
            self.request(workstation, v4(203, 0, 113, 89), 3389, at, (1_500, 9_000));
            for port in [22, 53, 3389] {
                let (target, at, from) =
                    (v4(192, 0, 2, self.rng.random_range(1..=254)), self.any_time(), self.ephemeral_port());
                refused(SCANNER.into(), from, target, port, at, self.frames);
            }
        }
    }
}

/// When the misconfigured host's burst starts on `day`.
pub fn burst_start(day: i64) -> Nanos {
    day_start(day) + (14 * 3_600 + 30 * 60) * NANOS_PER_SEC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_capture_and_another_seed_another() {
        let make = |seed| {
            let mut bytes = Vec::new();
            generate(Case::Background, seed, Size::scaled(1), &mut bytes).unwrap();
            bytes
        };
        let first = make(7);
        assert_eq!(first, make(7));
        assert_ne!(first, make(8));
        assert!(first.len() > 1_000_000);
    }

    #[test]
    fn the_churn_capture_is_short_conversations_within_ten_minutes() {
        let mut bytes = Vec::new();
        let generated = generate(Case::Churn, 1, Size { scale: 1, workstations: 1_000 }, &mut bytes).unwrap();
        // Ten packets a web request (six from the client), two a DNS exchange.
        let expected = CHURN_CONVERSATIONS as u64 * 10 + CHURN_EXCHANGES as u64 * 2;
        assert_eq!(generated.frames, expected);
        let mut times = Vec::new();
        let mut reader = pcap_parser::LegacyPcapReader::new(1 << 16, bytes.as_slice()).unwrap();
        loop {
            use pcap_parser::traits::PcapReaderIterator;
            match reader.next() {
                Ok((offset, pcap_parser::PcapBlockOwned::Legacy(frame))) => {
                    times.push(frame.ts_sec as i64);
                    reader.consume(offset);
                }
                Ok((offset, _)) => reader.consume(offset),
                Err(pcap_parser::PcapError::Eof) => break,
                Err(pcap_parser::PcapError::Incomplete(_)) => reader.refill().unwrap(),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(times.len() as u64, expected);
        let first = day_start(0) / NANOS_PER_SEC;
        assert!(times.iter().all(|t| (first..first + CHURN_SECONDS + 1).contains(t)), "within ten minutes");
    }

    #[test]
    fn the_time_line_starts_on_the_first_of_february_2008() {
        assert_eq!(crate::time::rfc3339_millis(day_start(0)), "2008-02-01T00:00:00.000Z");
        assert_eq!(crate::time::rfc3339_millis(burst_start(MISCONFIGURATION_DAY)), "2008-03-10T14:30:00.000Z");
    }
}
