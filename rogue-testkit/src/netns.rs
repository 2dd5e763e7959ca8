//! Network namespaces and veth pairs that tests create and always remove:
//! every namespace is deleted when its guard drops, also when the test
//! panics, and deleting a namespace deletes the veth ends inside it. Names
//! start with `rogue-t-` so `cargo xtask test` can sweep up after a test
//! that was killed outright.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

pub const PREFIX: &str = "rogue-t-";

/// A network namespace, deleted on drop (and its resolv.conf, if it has one).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        // Silent by default: no IPv6 router solicitations or neighbour
        // discovery, so every frame on a test link is the test's own.
        netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        netns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        netns
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        run(self.command("sysctl").args(["-qw", &format!("{key}={value}")]));
    }

    /// Moves the calling thread into the namespace (for sockets and
    /// BPF_PROG_TEST_RUN live frames, which act in the caller's namespace).
    pub fn enter(&self) {
        enter(&self.name);
    }

    /// Receive counters of `interface`: (packets, bytes incl. Ethernet header).
    pub fn rx(&self, interface: &str) -> (u64, u64) {
        let output = run(Command::new("ip").args(["-n", &self.name, "-j", "-s", "link", "show", "dev", interface]));
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let rx = &json[0]["stats64"]["rx"];
        (rx["packets"].as_u64().unwrap(), rx["bytes"].as_u64().unwrap())
    }
}

impl Netns {
    /// A namespace whose programs' resolver is 127.0.0.1 (inside it):
    /// `ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
    pub fn with_resolver(role: &str) -> Netns {
        let netns = Netns::new(role);
        let dir = netns.etc_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        netns
    }

    fn etc_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Creates a veth pair with one end in each namespace, both up.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    ip(&["link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name, "netns", &b.name]);
    a.ip(&["link", "set", a_name, "up"]);
    b.ip(&["link", "set", b_name, "up"]);
}

/// A client and a server on two subnets, joined by a gateway namespace that
/// routes between its interfaces `gw-in` (client side) and `gw-out`. IPv4
/// with static neighbours, so every frame on the wire is test traffic.
pub struct Gateway {
    pub client: Netns,
    pub gateway: Netns,
    pub server: Netns,
}

pub const CLIENT_ADDR: &str = "192.0.2.10";
pub const SERVER_ADDR: &str = "198.51.100.25";

impl Gateway {
    pub fn create() -> Gateway {
        let client = Netns::new("client");
        let gateway = Netns::new("gw");
        let server = Netns::new("server");
        veth(&client, "eth0", &gateway, "gw-in");
        veth(&server, "eth0", &gateway, "gw-out");
        gateway.sysctl("net.ipv4.ip_forward", "1");
        client.ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"]);
        gateway.ip(&["addr", "add", "192.0.2.1/24", "dev", "gw-in"]);
        gateway.ip(&["addr", "add", "198.51.100.1/24", "dev", "gw-out"]);
        server.ip(&["addr", "add", &format!("{SERVER_ADDR}/24"), "dev", "eth0"]);
        client.ip(&["route", "add", "default", "via", "192.0.2.1"]);
        server.ip(&["route", "add", "default", "via", "198.51.100.1"]);
        let mac = |ns: &Netns, dev: &str| -> String {
            let output = run(Command::new("ip").args(["-n", &ns.name, "-j", "link", "show", "dev", dev]));
            let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            json[0]["address"].as_str().unwrap().to_string()
        };
        let permanent = |ns: &Netns, addr: &str, lladdr: &str, dev: &str| {
            ns.ip(&["neigh", "replace", addr, "lladdr", lladdr, "dev", dev, "nud", "permanent"]);
        };
        permanent(&client, "192.0.2.1", &mac(&gateway, "gw-in"), "eth0");
        permanent(&gateway, CLIENT_ADDR, &mac(&client, "eth0"), "gw-in");
        permanent(&gateway, SERVER_ADDR, &mac(&server, "eth0"), "gw-out");
        permanent(&server, "198.51.100.1", &mac(&gateway, "gw-out"), "eth0");
        Gateway { client, gateway, server }
    }
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn enter(name: &str) {
    let file = File::open(format!("/run/netns/{name}")).expect("namespace file");
    // SAFETY: a valid namespace fd; setns moves only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a new thread inside `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let name = netns.name.clone();
    std::thread::spawn(move || {
        enter(&name);
        f()
    })
}

/// Sends `frame` `count` times out of interface `ifindex` on an AF_PACKET socket.
pub fn send_raw(ifindex: u32, frame: &[u8], count: usize) {
    // SAFETY: plain socket calls with valid, initialised arguments.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for _ in 0..count {
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(sent, frame.len() as isize, "{}", std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
}
