//! What the meter needs to know about the host, from procfs: whether the
//! kernel can run it, whether the BPF JIT is on, which capabilities this
//! process lacks, how much memory its maps may take, which interfaces there
//! are and what one received, and which interfaces this process's XDP
//! links are still attached to.

use std::{collections::HashMap, ffi::CString, io};

use procfs::{Current as _, Meminfo, sys::kernel::Version};

/// The oldest kernel the meter runs on: bpf_ktime_get_coarse_ns (its flow
/// times) and the accounting of BPF maps to memory cgroups instead of
/// RLIMIT_MEMLOCK both came in 5.11; batched map reads (5.6), XDP links
/// (5.9) and ring buffers (5.8, its kernel log) came before.
pub const MIN_KERNEL: (u8, u8) = (5, 11);

/// The running kernel's release when it is older than [`MIN_KERNEL`]; None
/// when it suffices or cannot be read (then loading says what is missing).
pub fn kernel_too_old() -> Option<String> {
    let version = Version::current().ok()?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    (!suffices(version)).then(|| release.trim().to_string())
}

fn suffices(version: Version) -> bool {
    version >= Version::new(MIN_KERNEL.0, MIN_KERNEL.1, 0)
}

/// Whether the BPF JIT is off (net.core.bpf_jit_enable = 0): the meter then
/// runs in the kernel's interpreter, several times slower per packet. A
/// kernel built with the JIT always on shows 1. procfs does not read the
/// net.core sysctls, so this one integer is read directly.
pub fn bpf_jit_off() -> bool {
    std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").is_ok_and(|value| value.trim() == "0")
}

/// The capabilities the meter needs: loading an XDP program takes CAP_BPF
/// and CAP_NET_ADMIN, and its packet-pointer arithmetic passes the verifier
/// only with CAP_PERFMON. Bit numbers from linux/capability.h.
pub const METER_CAPABILITIES: [(&str, u32); 3] = [("CAP_BPF", 39), ("CAP_NET_ADMIN", 12), ("CAP_PERFMON", 38)];

/// Which of [`METER_CAPABILITIES`] this process lacks (its effective set,
/// CapEff in /proc/self/status); none when it cannot be read.
pub fn missing_meter_capabilities() -> Vec<&'static str> {
    let Ok(status) = procfs::process::Process::myself().and_then(|me| me.status()) else { return Vec::new() };
    METER_CAPABILITIES.iter().filter(|(_, bit)| status.capeff & (1 << bit) == 0).map(|(name, _)| *name).collect()
}

/// The network interfaces there are, by name (/sys/class/net), sorted.
pub fn interface_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The first of `wanted` that is not an interface here, said with the
/// ones that are.
pub fn check_interfaces(wanted: &[String]) -> Result<(), String> {
    match wanted.iter().find(|name| if_index(name).is_none()) {
        None => Ok(()),
        Some(name) => Err(no_interface(name)),
    }
}

/// That `name` is no interface here, with the ones that are.
pub fn no_interface(name: &str) -> String {
    format!("no network interface named {name:?} (there are: {})", interface_names().join(", "))
}

/// MemAvailable, in bytes.
pub fn memory_available() -> Option<u64> {
    Meminfo::current().ok()?.mem_available
}

/// Packets `interface` received (its own counter in /proc/net/dev), to set
/// against what the meter counted.
pub fn interface_rx_packets(interface: &str) -> io::Result<u64> {
    let mut devices: HashMap<String, procfs::net::DeviceStatus> =
        procfs::net::dev_status().map_err(io::Error::other)?;
    devices
        .remove(interface)
        .map(|device| device.recv_packets)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{interface} is not in /proc/net/dev")))
}

pub fn if_index(interface: &str) -> Option<u32> {
    let name = CString::new(interface).ok()?;
    // SAFETY: name is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The interfaces this process's XDP links are attached to, from the
/// kernel's description of each link (its fdinfo): an interface that went
/// away leaves its link attached to ifindex 0. Read by hand: procfs reads a
/// descriptor's target but not the fields a BPF link adds to its fdinfo,
/// and aya's link info does not carry the ifindex.
pub fn attached_ifindexes() -> io::Result<Vec<u32>> {
    let mut ifindexes = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else { continue };
        if !info.lines().any(|line| line.split_whitespace().eq(["link_type:", "xdp"])) {
            continue;
        }
        let ifindex =
            info.lines().find_map(|line| line.strip_prefix("ifindex:")).and_then(|v| v.trim().parse::<u32>().ok());
        ifindexes.extend(ifindex);
    }
    Ok(ifindexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_from_5_11_suffice() {
        assert!(!suffices(Version::new(5, 10, 209)));
        assert!(suffices(Version::new(5, 11, 0)));
        assert!(suffices(Version::new(6, 1, 0)));
    }

    #[test]
    fn the_loopback_interface_has_a_receive_counter() {
        assert!(interface_rx_packets("lo").is_ok());
        let error = interface_rx_packets("no-such-if0").unwrap_err();
        assert_eq!(error.to_string(), "no-such-if0 is not in /proc/net/dev");
    }
}
