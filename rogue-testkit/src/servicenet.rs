//! A small organisation serving DNS, NTP, DHCP and SSH with real servers,
//! for the agent's live tests of services beyond mail. Namespaces, joined
//! by a bridge in the gateway:
//!
//! - `lan` (192.0.2.2, default route via 192.0.2.1): the organisation's
//!   resolver 192.0.2.53 and an open resolver 192.0.2.54 (dnsmasq, each
//!   answering for example.org from its own data, forwarding nowhere), an
//!   NTP server 192.0.2.123 (chronyd, serving its own clock, never setting
//!   it) and an SSH server 192.0.2.22 (sshd).
//! - `dhcp` (192.0.2.67) and `rogue-dhcp` (192.0.2.68): a DHCP server each
//!   (dnsmasq), on the LAN's segment.
//! - `dhcpc`: a DHCP client (busybox udhcpc, leasing without configuring
//!   anything).
//! - `gateway`: the bridge `br0` (192.0.2.1) over the ports `gw-lan`,
//!   `gw-dhcp`, `gw-rogue` and `gw-dhcpc`, routing to `gw-out`
//!   (198.51.100.1). The agent meters the internal ports and `gw-out`.
//! - `external` (198.51.100.2): the Internet's clients: dig, chronyd -Q, ssh.
//!
//! Dropping the net stops the servers; the namespaces' guards remove the rest.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{
    netns::{Netns, veth},
    require,
};

pub const RESOLVER: &str = "192.0.2.53";
pub const OPEN_RESOLVER: &str = "192.0.2.54";
pub const NTP_SERVER: &str = "192.0.2.123";
pub const SSH_SERVER: &str = "192.0.2.22";
pub const DHCP_SERVER: &str = "192.0.2.67";
pub const ROGUE_DHCP_SERVER: &str = "192.0.2.68";
pub const EXTERNAL_CLIENT: &str = "198.51.100.2";
/// The interfaces the agent meters: what the internal hosts send, and what
/// the Internet sends.
pub const METERED: [&str; 4] = ["gw-lan", "gw-dhcp", "gw-rogue", "gw-out"];

pub struct ServiceNet {
    pub lan: Netns,
    pub dhcp: Netns,
    pub rogue_dhcp: Netns,
    pub dhcp_client: Netns,
    pub gateway: Netns,
    pub external: Netns,
    dir: PathBuf,
    servers: Vec<Child>,
}

impl ServiceNet {
    pub fn start() -> ServiceNet {
        for program in ["dnsmasq", "chronyd", "udhcpc", "dig", "ssh", "ssh-keygen"] {
            require(program);
        }
        let lan = Netns::new("lan");
        let dhcp = Netns::new("dhcp");
        let rogue_dhcp = Netns::new("rdhcp");
        let dhcp_client = Netns::new("dhcpc");
        let gateway = Netns::new("gw");
        let external = Netns::new("ext");
        gateway.ip(&["link", "add", "br0", "type", "bridge"]);
        for (netns, port) in
            [(&lan, "gw-lan"), (&dhcp, "gw-dhcp"), (&rogue_dhcp, "gw-rogue"), (&dhcp_client, "gw-dhcpc")]
        {
            veth(netns, "eth0", &gateway, port);
            gateway.ip(&["link", "set", port, "master", "br0"]);
        }
        veth(&external, "eth0", &gateway, "gw-out");
        gateway.ip(&["link", "set", "br0", "up"]);
        gateway.sysctl("net.ipv4.ip_forward", "1");
        gateway.ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"]);
        gateway.ip(&["addr", "add", "198.51.100.1/24", "dev", "gw-out"]);
        for addr in ["192.0.2.2", RESOLVER, OPEN_RESOLVER, NTP_SERVER, SSH_SERVER] {
            lan.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        }
        lan.ip(&["route", "add", "default", "via", "192.0.2.1", "src", "192.0.2.2"]);
        dhcp.ip(&["addr", "add", &format!("{DHCP_SERVER}/24"), "dev", "eth0"]);
        rogue_dhcp.ip(&["addr", "add", &format!("{ROGUE_DHCP_SERVER}/24"), "dev", "eth0"]);
        external.ip(&["addr", "add", &format!("{EXTERNAL_CLIENT}/24"), "dev", "eth0"]);
        external.ip(&["route", "add", "default", "via", "198.51.100.1"]);
        let dir = std::env::temp_dir().join(format!("rogue-servicenet-{}-{}", std::process::id(), lan.name));
        std::fs::create_dir_all(&dir).unwrap();
        let mut net = ServiceNet { lan, dhcp, rogue_dhcp, dhcp_client, gateway, external, dir, servers: Vec::new() };
        net.start_servers();
        net
    }

    fn start_servers(&mut self) {
        for resolver in [RESOLVER, OPEN_RESOLVER] {
            let mut command = self.lan.command("dnsmasq");
            command.args([
                "-k",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
            ]);
            command.args([&format!("--listen-address={resolver}"), "--address=/example.org/192.0.2.80"]);
            self.spawn(command);
        }
        let dhcp_servers = [(&self.dhcp, "192.0.2.150,192.0.2.169"), (&self.rogue_dhcp, "192.0.2.170,192.0.2.189")];
        let dhcp_servers: Vec<Command> = dhcp_servers
            .into_iter()
            .map(|(netns, range)| {
                let mut command = netns.command("dnsmasq");
                command.args([
                    "-k",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--pid-file=",
                    "--interface=eth0",
                    "--no-ping",
                ]);
                command.arg(format!("--dhcp-range={range},255.255.255.0,1h"));
                command.arg(format!("--dhcp-leasefile={}", self.dir.join(format!("{}.leases", netns.name)).display()));
                command
            })
            .collect();
        for command in dhcp_servers {
            self.spawn(command);
        }
        let chrony = self.dir.join("chrony.conf");
        let pid = self.dir.join("chronyd.pid");
        std::fs::write(
            &chrony,
            format!(
                "bindaddress {NTP_SERVER}\nport 123\ncmdport 0\nallow all\nlocal stratum 8\npidfile {}\n",
                pid.display()
            ),
        )
        .unwrap();
        // -x: the machine's clock is never touched.
        let mut command = self.lan.command("chronyd");
        command.args(["-d", "-x", "-u", "root", "-f"]).arg(&chrony);
        self.spawn(command);
        let key = self.dir.join("ssh_host_ed25519_key");
        let keygen = require("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
        assert!(keygen.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&keygen.stderr));
        // sshd insists on its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut command = self.lan.command("/usr/sbin/sshd");
        command.args(["-D", "-e", "-f", "/dev/null", "-h"]).arg(&key);
        command.args(["-o", &format!("ListenAddress={SSH_SERVER}"), "-o", "PidFile=none", "-o", "UsePAM=no"]);
        self.spawn(command);
        self.wait_until_serving();
    }

    fn spawn(&mut self, mut command: Command) {
        let child =
            command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("{command:?}: {e}"));
        self.servers.push(child);
    }

    /// Until both resolvers answer and sshd accepts (the others answer UDP
    /// whenever they are up, and their clients retry).
    fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for resolver in [RESOLVER, OPEN_RESOLVER] {
            while self.query(resolver).is_none() {
                assert!(Instant::now() < deadline, "dnsmasq on {resolver} does not answer");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let ssh = format!("{SSH_SERVER}:22").parse().unwrap();
        let probe = crate::netns::in_netns(&self.external, move || {
            while std::net::TcpStream::connect_timeout(&ssh, Duration::from_millis(200)).is_err() {
                assert!(Instant::now() < deadline, "sshd on {SSH_SERVER} does not accept");
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        probe.join().unwrap();
    }

    /// `dig @server www.example.org` from the Internet: the answer, if any.
    pub fn query(&self, server: &str) -> Option<String> {
        let output = self
            .external
            .command("dig")
            .args([&format!("@{server}"), "+tries=1", "+time=1", "+short", "www.example.org"])
            .output()
            .expect("dig");
        let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
        (output.status.success() && !answer.is_empty()).then_some(answer)
    }

    /// chronyd -Q from the Internet: measures the NTP server's offset (four
    /// exchanges), sets nothing. The output names the offset.
    pub fn ask_time(&self) -> Output {
        let conf = self.dir.join("client.conf");
        let pid = self.dir.join("client.pid");
        std::fs::write(&conf, format!("server {NTP_SERVER} iburst\ncmdport 0\npidfile {}\n", pid.display())).unwrap();
        self.external
            .command("chronyd")
            .args(["-Q", "-t", "15", "-u", "root", "-f"])
            .arg(&conf)
            .output()
            .expect("chronyd")
    }

    /// An SSH session from the Internet: key exchange, then a refused login.
    pub fn try_ssh(&self) -> Output {
        self.external
            .command("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5"])
            .arg(format!("nobody@{SSH_SERVER}"))
            .arg("true")
            .output()
            .expect("ssh")
    }

    /// udhcpc on the LAN: discovers, takes the first offer, and quits,
    /// configuring nothing. Returns its output, which names the lease.
    pub fn lease(&self) -> Output {
        self.dhcp_client
            .command("udhcpc")
            .args(["-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", "/bin/true"])
            .output()
            .expect("udhcpc")
    }
}

impl Drop for ServiceNet {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
