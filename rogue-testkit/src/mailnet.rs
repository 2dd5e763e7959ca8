//! A small organisation with real mail servers, for the agent's live tests
//! and the demo: three namespaces joined by veths.
//!
//! - `internal` (192.0.2.0/24 behind 192.0.2.1): the whitelisted MX
//!   192.0.2.25 and the rogue mail server 192.0.2.77, both aiosmtpd; a
//!   misconfigured host 192.0.2.60 and a workstation 192.0.2.10.
//! - `gateway`: routes between `gw-in` (192.0.2.1) and `gw-out`
//!   (198.51.100.1); the agent meters both.
//! - `external` (198.51.100.2, default route via the gateway): a sender
//!   198.51.100.10 and 75 mail servers 203.0.113.1 to .75, all answered by
//!   one aiosmtpd listening on every address.
//!
//! SMTP sessions are made by swaks, a real SMTP client. Dropping the net
//! stops the servers; the namespaces' guards remove the rest.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    netns::{Netns, in_netns, veth},
    require,
};

pub const MX: &str = "192.0.2.25";
pub const ROGUE_SERVER: &str = "192.0.2.77";
pub const MISCONFIGURED: &str = "192.0.2.60";
pub const WORKSTATION: &str = "192.0.2.10";
pub const SENDER: &str = "198.51.100.10";
/// The external mail servers the misconfigured host fans out to.
pub fn external_servers() -> Vec<String> {
    (1..=75).map(|n| format!("203.0.113.{n}")).collect()
}

/// Debian's interpreter, which python3-aiosmtpd installs into (a PATH
/// python3 may be another one).
const PYTHON: &str = "/usr/bin/python3";

pub struct MailNet {
    pub internal: Netns,
    pub gateway: Netns,
    pub external: Netns,
    servers: Vec<Child>,
}

impl MailNet {
    pub fn start() -> MailNet {
        require("swaks");
        let aiosmtpd = Command::new(PYTHON).args(["-c", "import aiosmtpd"]).output();
        assert!(
            aiosmtpd.is_ok_and(|o| o.status.success()),
            "aiosmtpd is not installed; `cargo xtask setup` installs it (apt-get install python3-aiosmtpd)"
        );
        let internal = Netns::new("int");
        let gateway = Netns::new("gw");
        let external = Netns::new("ext");
        veth(&internal, "eth0", &gateway, "gw-in");
        veth(&external, "eth0", &gateway, "gw-out");
        gateway.sysctl("net.ipv4.ip_forward", "1");
        gateway.ip(&["addr", "add", "192.0.2.1/24", "dev", "gw-in"]);
        gateway.ip(&["addr", "add", "198.51.100.1/24", "dev", "gw-out"]);
        gateway.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
        for addr in ["192.0.2.2", WORKSTATION, MX, MISCONFIGURED, ROGUE_SERVER] {
            internal.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        }
        internal.ip(&["route", "add", "default", "via", "192.0.2.1", "src", "192.0.2.2"]);
        for addr in ["198.51.100.2", SENDER] {
            external.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        }
        for server in external_servers() {
            external.ip(&["addr", "add", &format!("{server}/32"), "dev", "eth0"]);
        }
        external.ip(&["route", "add", "default", "via", "198.51.100.1", "src", "198.51.100.2"]);
        let mut net = MailNet { internal, gateway, external, servers: Vec::new() };
        net.start_smtp_server(Side::Internal, MX);
        net.start_smtp_server(Side::Internal, ROGUE_SERVER);
        net.start_smtp_server(Side::External, "0.0.0.0");
        net
    }

    fn netns(&self, side: Side) -> &Netns {
        match side {
            Side::Internal => &self.internal,
            Side::External => &self.external,
        }
    }

    /// aiosmtpd on `addr`:25, accepting and discarding every message.
    fn start_smtp_server(&mut self, side: Side, addr: &str) {
        let child = self
            .netns(side)
            .command(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", &format!("{addr}:25")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("aiosmtpd: {e} (apt-get install python3-aiosmtpd)"));
        self.servers.push(child);
        let probe = if addr == "0.0.0.0" { "203.0.113.1" } else { addr };
        wait_for_port(self.netns(side), probe);
    }

    /// One SMTP session with swaks from `from` (an address of `side`) to
    /// `to`: EHLO, MAIL, RCPT, DATA with a short message, QUIT.
    pub fn send_mail(&self, side: Side, from: &str, to: &str) {
        let output = self
            .netns(side)
            .command("swaks")
            .args(["--server", to, "--port", "25", "--local-interface", from, "--timeout", "10"])
            .args(["--from", "alice@example.net", "--to", "postmaster@example.org", "--helo", "client.example.net"])
            .args(["--header", "Subject: rogue test", "--body", "A message of a few lines.\nNothing more.\n"])
            .output()
            .expect("swaks");
        assert!(
            output.status.success(),
            "swaks from {from} to {to} failed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    /// SMTP sessions from `from` to every address of `to` at once.
    pub fn send_mail_to_all(&self, side: Side, from: &str, to: &[String]) {
        std::thread::scope(|scope| {
            for server in to {
                scope.spawn(move || self.send_mail(side, from, server));
            }
        });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Internal,
    External,
}

impl Drop for MailNet {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn wait_for_port(netns: &Netns, addr: &str) {
    let target: SocketAddr = format!("{addr}:25").parse().unwrap();
    let ready = in_netns(netns, move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    assert!(ready.join().unwrap(), "no SMTP server answered on {target}");
}
