//! IPFIX in tests: nfdump's collector (nfcapd) as a real peer, a walk
//! over IPFIX messages that checks their framing independently of rogue's
//! own parser, and forged exporters, each from its own address.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Row, require};

/// nfdump's collector on a free loopback port, writing into its own directory.
pub struct Nfcapd {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Nfcapd {
    pub fn start(name: &str) -> Nfcapd {
        Nfcapd::start_repeating(name, None)
    }

    /// An nfcapd that also repeats every datagram it receives to `repeat_to`
    /// (its `-R`), so two collectors see the very same messages.
    pub fn start_repeating(name: &str, repeat_to: Option<u16>) -> Nfcapd {
        require("nfcapd");
        let dir = std::env::temp_dir().join(format!("rogue-nfcapd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new("nfcapd");
        command.args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"]).arg(&dir);
        if let Some(repeat_to) = repeat_to {
            command.args(["-R", &format!("127.0.0.1/{repeat_to}")]);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let nfcapd = Nfcapd { child, dir, port };
        // nfcapd opens its current file once it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nfcapd.has_current_file() {
            assert!(Instant::now() < deadline, "nfcapd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        nfcapd
    }

    fn has_current_file(&self) -> bool {
        std::fs::read_dir(&self.dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("current"))
    }

    /// Stops nfcapd (which closes its file) and reads every flow back with nfdump.
    pub fn stop_and_read(mut self) -> Vec<Row> {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
        let output = Command::new("nfdump")
            .env("TZ", "UTC")
            .arg("-R")
            .arg(&self.dir)
            .args(["-6", "-q", "-N", "-o", "fmt:%ts|%te|%pr|%sa|%sp|%da|%dp|%flg|%pkt|%byt|%fl"])
            .output()
            .unwrap();
        assert!(output.status.success(), "nfdump: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Row::parse(l).unwrap_or_else(|| panic!("nfdump printed {l:?}")))
            .collect()
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Walks IPFIX messages: (template ids defined, data records per template,
/// whether each header's sequence number counted the records before it).
pub fn walk(stream: &[u8]) -> (Vec<u16>, Vec<(u16, usize)>, bool) {
    let (mut templates, mut records, mut sequence_ok) = (Vec::new(), Vec::new(), true);
    let mut sent = 0u32;
    let mut at = 0;
    while at < stream.len() {
        let message = &stream[at..];
        assert_eq!(&message[..2], &[0, 10], "an IPFIX message at byte {at}");
        let length = u16::from_be_bytes([message[2], message[3]]) as usize;
        sequence_ok &= u32::from_be_bytes(message[8..12].try_into().unwrap()) == sent;
        let mut set = 16;
        while set < length {
            let id = u16::from_be_bytes([message[set], message[set + 1]]);
            let set_length = u16::from_be_bytes([message[set + 2], message[set + 3]]) as usize;
            if id == 2 {
                let mut record = set + 4;
                while record < set + set_length {
                    templates.push(u16::from_be_bytes([message[record], message[record + 1]]));
                    let fields = u16::from_be_bytes([message[record + 2], message[record + 3]]) as usize;
                    record += 4 + 4 * fields;
                }
            } else {
                let count = (set_length - 4) / if id == 256 { 51 } else { 75 };
                records.push((id, count));
                sent += count as u32;
            }
            set += set_length;
        }
        assert_eq!(set, length, "sets fill the message");
        at += length;
    }
    (templates, records, sequence_ok)
}

impl Row {
    /// A flow as `rogue flows --format json` prints it, as nfdump would.
    pub fn from_json(flow: &serde_json::Value) -> Row {
        let time = |field: &str| {
            let text = flow[field].as_str().unwrap();
            text.trim_end_matches('Z').replace('T', " ")
        };
        let (proto, dport) = (flow["proto"].as_u64().unwrap() as u8, flow["dport"].as_u64().unwrap() as u16);
        Row {
            start: time("start"),
            end: time("end"),
            proto,
            src: flow["src"].as_str().unwrap().into(),
            sport: flow["sport"].as_u64().unwrap() as u16,
            dst: flow["dst"].as_str().unwrap().into(),
            dport: if crate::is_icmp(proto) { format!("{}.{}", dport >> 8, dport & 0xff) } else { dport.to_string() },
            flags: rogue::flows::format::tcp_flags_letters(flow["tcp_flags"].as_u64().unwrap() as u8),
            packets: flow["packets"].as_u64().unwrap(),
            bytes: flow["bytes"].as_u64().unwrap(),
        }
    }
}

/// One TCP flow to port 25 of `seconds` since the epoch, as an exporter
/// sends it.
pub fn flow_at(seconds: i64) -> rogue::flows::FlowRecord {
    rogue::flows::FlowRecord {
        src: "198.51.100.7".parse().unwrap(),
        dst: "192.0.2.99".parse().unwrap(),
        sport: 40_000,
        dport: 25,
        proto: 6,
        packets: 10,
        bytes: 1_000,
        start: seconds * 1_000_000_000,
        end: seconds * 1_000_000_000,
        tcp_flags: 0x1b,
        ifindex: 0,
        interface: None,
    }
}

/// A NetFlow v5 datagram with one flow, stamped as sent at `now`.
pub fn v5_datagram(now: u32) -> Vec<u8> {
    let mut message = vec![0, 5, 0, 1];
    message.extend(60_000u32.to_be_bytes()); // uptime 60 s
    message.extend(now.to_be_bytes());
    message.extend([0; 4]);
    message.extend([0; 8]); // sequence, engine, sampling
    message.extend([198, 51, 100, 7, 192, 0, 2, 99, 0, 0, 0, 0, 0, 1, 0, 2]);
    message.extend(10u32.to_be_bytes());
    message.extend(1_000u32.to_be_bytes());
    message.extend(50_000u32.to_be_bytes());
    message.extend(59_000u32.to_be_bytes());
    message.extend([0x9c, 0x40, 0, 25, 0, 0x1b, 6, 0]);
    message.extend([0; 8]);
    message
}

/// `sources` forged exporters, each from its own address on 127/8, send the
/// collector on loopback `port` one flow of a minute ago: the even ones as
/// NetFlow v5, the odd ones as IPFIX templates and a data record. After
/// every thousand it pauses for `pause`, so the collector's socket keeps up.
pub fn forge_exporters(port: u16, sources: u32, pause: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    let mut encoder = rogue::ipfix::export::Encoder::new(1, rogue::ipfix::export::UDP_MESSAGE_BYTES);
    let templates = encoder.templates(now);
    let data = encoder.data(&[flow_at(now as i64 - 60)], now).remove(0);
    let v5 = v5_datagram(now);
    for i in 0..sources {
        // 250 /24s of 1,024 addresses each: room for 256,000 x 4 sources.
        let address = Ipv4Addr::from(0x7f00_0000 + 2 + (i % 250) * 1_024 + i / 250);
        let socket = UdpSocket::bind((address, 0)).unwrap();
        let collector = ("127.0.0.1", port);
        if i % 2 == 0 {
            socket.send_to(&v5, collector).unwrap();
        } else {
            socket.send_to(&templates, collector).unwrap();
            socket.send_to(&data, collector).unwrap();
        }
        if i % 1_000 == 999 {
            std::thread::sleep(pause);
        }
    }
}
