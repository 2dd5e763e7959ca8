//! The XDP flow meter from userspace: load it, attach it, drain it.
//!
//! Draining is lossless and exact. The program writes into one of two flow
//! maps, chosen per packet by an index map. To drain, userspace flips the
//! index, then calls membarrier(MEMBARRIER_CMD_GLOBAL), which returns only
//! after an RCU grace period: every XDP program that could have read the old
//! index has finished (XDP runs inside an RCU read-side section). The old map
//! is then read and cleared with batch syscalls while packets go to the other.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode as AyaXdpMode, xdp::XdpLinkId},
};
use rogue_common::{
    MeterCounters,
    maps::{COUNTER_SLOTS, COUNTERS, DECAPSULATE_GLOBAL, FLOW_MAP_INDEX, FLOW_MAPS, METER_PROGRAM, counter_slot},
    parse::Decapsulate,
};
use tracing::{info, warn};

use super::drain::{BatchDrainer, DrainedFlow};
use super::{
    FlowDelta, host,
    kernel_log::{self, KernelLogReader},
};
use crate::{
    config::{KernelLog, XdpMode},
    time::Nanos,
    with_causes,
};

/// The flow meter's object file, built by build.rs from rogue-ebpf.
pub static METER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rogue"));

/// Kernel memory one entry of one flow map takes: the hash element (its
/// header, the 44-byte key rounded to 8, a per-CPU pointer, a bucket) and
/// the 40-byte value on each possible CPU.
fn flow_map_entry_bytes(cpus: u64) -> u64 {
    48 + 48 + 8 + 16 + 40 * cpus
}

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error(
        "the XDP flow meter needs Linux {}.{} or later, and this kernel is {release}",
        host::MIN_KERNEL.0,
        host::MIN_KERNEL.1
    )]
    KernelTooOld { release: String },
    #[error(
        "the XDP flow meter needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and this process lacks {}: run it as root \
         or grant them (rogue-agent.service does)",
        missing.join(", ")
    )]
    Capabilities { missing: Vec<&'static str> },
    #[error("loading the XDP flow meter failed")]
    // Boxed: aya's errors are hundreds of bytes, and every Result of the
    // meter would carry that size on its happy path too.
    Load(#[source] Box<aya::EbpfError>),
    #[error(
        "flow maps of {entries} entries need about {needed_mib} MiB of kernel memory (two maps on {cpus} CPUs), \
         more than half of the {available_mib} MiB available; lower capture.flow_map_entries (--flow-map-entries)"
    )]
    TooLarge { entries: u32, cpus: u64, needed_mib: u64, available_mib: u64 },
    #[error("the kernel rejected the XDP program")]
    Program(#[source] Box<ProgramError>),
    #[error("{0}")]
    NoInterface(String),
    #[error("attaching to {interface} in {mode} mode failed{hint}")]
    Attach { interface: String, mode: &'static str, source: Box<ProgramError>, hint: &'static str },
    #[error("the BPF map {name} is missing or has the wrong type: {detail}")]
    Map { name: &'static str, detail: String },
    #[error("draining the flow map {name}")]
    Drain { name: &'static str, source: io::Error },
    #[error("waiting for in-flight XDP programs (membarrier)")]
    Barrier(#[source] io::Error),
    #[error("opening the meter's kernel log (its ring buffer AYA_LOGS)")]
    Log(#[source] aya_log::Error),
    #[error("reading which XDP links are attached (/proc/self/fdinfo)")]
    Links(#[source] io::Error),
}

/// An interface the meter is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    pub ifindex: u32,
    /// `native` or `generic`, as attached.
    pub mode: &'static str,
}

/// One drain: the flows counted since the previous one.
pub struct Drain {
    pub flows: Vec<DrainedFlow>,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC when the drain ran, in ns.
    pub wall_offset: Nanos,
    /// Wall-clock time of the drain.
    pub at: Nanos,
    pub took: Duration,
}

impl Drain {
    /// A drained flow's counts with wall-clock times.
    pub fn delta(&self, flow: &DrainedFlow) -> FlowDelta {
        FlowDelta {
            packets: flow.stats.packets,
            bytes: flow.stats.bytes,
            first: flow.stats.first_ns as Nanos + self.wall_offset,
            last: flow.stats.last_ns as Nanos + self.wall_offset,
            tcp_flags: flow.stats.tcp_flags,
        }
    }
}

pub struct XdpMeter {
    ebpf: Ebpf,
    log: KernelLogReader,
    /// Which of FLOW_MAPS the program writes to now.
    writing: usize,
    drainer: BatchDrainer,
    attachments: Vec<Attachment>,
    /// Each attachment's link (None once it was found gone).
    links: Vec<Option<XdpLinkId>>,
    drains: u64,
}

impl XdpMeter {
    /// Loads the program with flow maps of `flow_map_entries` entries each,
    /// logging its kernel events from `kernel_log` up, opening the tunnels
    /// `decapsulate` names.
    pub fn load(
        flow_map_entries: u32,
        kernel_log: KernelLog,
        decapsulate: Decapsulate,
    ) -> Result<XdpMeter, MeterError> {
        if let Some(release) = host::kernel_too_old() {
            return Err(MeterError::KernelTooOld { release });
        }
        if host::bpf_jit_off() {
            warn!(
                "the BPF JIT is off (net.core.bpf_jit_enable = 0): the meter runs interpreted, several times slower \
                 per packet; `sysctl -w net.core.bpf_jit_enable=1` turns it on"
            );
        }
        let missing = host::missing_meter_capabilities();
        if !missing.is_empty() {
            return Err(MeterError::Capabilities { missing });
        }
        check_map_memory(flow_map_entries)?;
        let mut loader = EbpfLoader::new();
        for name in FLOW_MAPS {
            loader.map_max_entries(name, flow_map_entries);
        }
        kernel_log::set_level(&mut loader, kernel_log);
        let decapsulate = decapsulate.0;
        loader.override_global(DECAPSULATE_GLOBAL, &decapsulate, true);
        let mut ebpf = loader.load(METER_OBJECT).map_err(|e| MeterError::Load(Box::new(e)))?;
        let log = KernelLogReader::open(&mut ebpf).map_err(MeterError::Log)?;
        meter_program(&mut ebpf)?.load().map_err(|e| MeterError::Program(Box::new(e)))?;
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| MeterError::Map {
            name: "FLOWS",
            detail: format!("cannot count possible CPUs from {path}: {e}"),
        })?;
        Ok(XdpMeter {
            ebpf,
            log,
            writing: 0,
            drainer: BatchDrainer::new(cpus, flow_map_entries),
            attachments: Vec::new(),
            links: Vec::new(),
            drains: 0,
        })
    }

    /// The loaded program, for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp, MeterError> {
        meter_program(&mut self.ebpf)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Drains done so far.
    pub fn drains(&self) -> u64 {
        self.drains
    }

    /// Attaches to `interface`. The link is a bpf_link owned by this process:
    /// it goes away when the meter is dropped or the process dies, so rogue
    /// never leaves a program attached behind it.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<&Attachment, MeterError> {
        let (attachment, link) = self.attach_link(interface, mode)?;
        self.attachments.push(attachment);
        self.links.push(Some(link));
        Ok(self.attachments.last().expect("just pushed"))
    }

    fn attach_link(&mut self, interface: &str, mode: XdpMode) -> Result<(Attachment, XdpLinkId), MeterError> {
        let ifindex =
            host::if_index(interface).ok_or_else(|| MeterError::NoInterface(host::no_interface(interface)))?;
        let program = meter_program(&mut self.ebpf)?;
        let (attached, link) = match mode {
            XdpMode::Native => attach_in(program, interface, ifindex, AyaXdpMode::Driver)?,
            XdpMode::Generic => attach_in(program, interface, ifindex, AyaXdpMode::Skb)?,
            XdpMode::Auto => match attach_in(program, interface, ifindex, AyaXdpMode::Driver) {
                Ok(attached) => attached,
                Err(e) => {
                    warn!("{}; falling back to generic XDP on {interface}, which is slower", with_causes(&e));
                    attach_in(program, interface, ifindex, AyaXdpMode::Skb)?
                }
            },
        };
        info!(target: crate::LIFECYCLE, interface, ifindex, mode = attached, "XDP flow meter attached");
        if counter_slot(ifindex) == 0 {
            warn!(
                "{interface} has ifindex {ifindex}, past the meter's {COUNTER_SLOTS} counter slots: \
                 its counters are reported together with other such interfaces as `other`"
            );
        }
        Ok((Attachment { interface: interface.to_string(), ifindex, mode: attached }, link))
    }

    /// The attachments whose interface went away since they were attached
    /// (deleted, or moved to another namespace): the kernel detached their
    /// links. Their links are released; [`XdpMeter::reattach`] tries again.
    pub fn detached(&mut self) -> Result<Vec<usize>, MeterError> {
        let attached = host::attached_ifindexes().map_err(MeterError::Links)?;
        let mut gone = Vec::new();
        for (index, attachment) in self.attachments.iter().enumerate() {
            if self.links[index].is_some() && !attached.contains(&attachment.ifindex) {
                gone.push(index);
            }
        }
        for &index in &gone {
            if let Some(link) = self.links[index].take() {
                // The link is defunct; closing it frees it.
                let _ = meter_program(&mut self.ebpf)?.detach(link);
            }
        }
        Ok(gone)
    }

    /// Whether attachment `index` is attached (not found gone).
    pub fn is_attached(&self, index: usize) -> bool {
        self.links[index].is_some()
    }

    /// Attaches attachment `index` again, in the mode it had, once its
    /// interface exists again; None while it does not.
    pub fn reattach(&mut self, index: usize) -> Result<Option<&Attachment>, MeterError> {
        let interface = self.attachments[index].interface.clone();
        if host::if_index(&interface).is_none() {
            return Ok(None);
        }
        let mode = if self.attachments[index].mode == "generic" { XdpMode::Generic } else { XdpMode::Native };
        let (attachment, link) = self.attach_link(&interface, mode)?;
        self.attachments[index] = attachment;
        self.links[index] = Some(link);
        Ok(Some(&self.attachments[index]))
    }

    /// Switches the flow maps and returns everything the old one counted.
    pub fn drain(&mut self) -> Result<Drain, MeterError> {
        let started = Instant::now();
        let draining = self.writing;
        let next = 1 - draining;
        self.index_map()?
            .set(0, next as u32, 0)
            .map_err(|e| MeterError::Map { name: FLOW_MAP_INDEX, detail: e.to_string() })?;
        self.writing = next;
        wait_for_running_programs()?;

        let name = FLOW_MAPS[draining];
        let fd = flow_map_fd(&self.ebpf, name)?;
        let mut flows = Vec::new();
        self.drainer.drain(fd, &mut flows).map_err(|source| MeterError::Drain { name, source })?;
        let (wall_offset, at) = wall_clock_offset();
        self.drains += 1;
        self.log.flush();
        Ok(Drain { flows, wall_offset, at, took: started.elapsed() })
    }

    /// The counters summed over CPUs and interfaces (cumulative since load).
    pub fn counters(&self) -> Result<MeterCounters, MeterError> {
        let mut total = MeterCounters::default();
        for slot in 0..COUNTER_SLOTS {
            total.add(&self.slot_counters(slot)?);
        }
        Ok(total)
    }

    /// The counters of attachment `index`'s ifindex (cumulative since
    /// load); empty for an interface past the counter slots (see
    /// [`XdpMeter::shared_slot_counters`]).
    pub fn attachment_counters(&self, index: usize) -> Result<MeterCounters, MeterError> {
        match counter_slot(self.attachments[index].ifindex) {
            0 => Ok(MeterCounters::default()),
            slot => self.slot_counters(slot),
        }
    }

    /// The counters of the interfaces whose ifindex has no slot of its own,
    /// together (reported as `other`), if they counted anything.
    pub fn shared_slot_counters(&self) -> Result<Option<MeterCounters>, MeterError> {
        let shared = self.slot_counters(0)?;
        Ok((shared.packets > 0).then_some(shared))
    }

    fn slot_counters(&self, slot: u32) -> Result<MeterCounters, MeterError> {
        let map = self.ebpf.map(COUNTERS).ok_or(MeterError::Map { name: COUNTERS, detail: "missing".into() })?;
        let counters = PerCpuArray::<_, MeterCounters>::try_from(map)
            .map_err(|e| MeterError::Map { name: COUNTERS, detail: e.to_string() })?;
        let per_cpu = counters.get(&slot, 0).map_err(|e| MeterError::Map { name: COUNTERS, detail: e.to_string() })?;
        let mut total = MeterCounters::default();
        for cpu in per_cpu.iter() {
            total.add(cpu);
        }
        Ok(total)
    }

    fn index_map(&mut self) -> Result<Array<&mut MapData, u32>, MeterError> {
        let map = self
            .ebpf
            .map_mut(FLOW_MAP_INDEX)
            .ok_or(MeterError::Map { name: FLOW_MAP_INDEX, detail: "missing".into() })?;
        Array::try_from(map).map_err(|e| MeterError::Map { name: FLOW_MAP_INDEX, detail: e.to_string() })
    }
}

fn meter_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, MeterError> {
    let program = ebpf
        .program_mut(METER_PROGRAM)
        .ok_or(MeterError::Map { name: METER_PROGRAM, detail: "program missing from the object".into() })?;
    program.try_into().map_err(|e| MeterError::Program(Box::new(e)))
}

fn attach_in(
    program: &mut Xdp,
    interface: &str,
    ifindex: u32,
    mode: AyaXdpMode,
) -> Result<(&'static str, XdpLinkId), MeterError> {
    let (name, hint) = match mode {
        AyaXdpMode::Skb => ("generic", ""),
        _ => ("native", " (the driver may not support native XDP; --xdp-mode generic or auto works everywhere)"),
    };
    program.attach_to_if_index(ifindex, mode).map(|link| (name, link)).map_err(|source| MeterError::Attach {
        interface: interface.to_string(),
        mode: name,
        source: Box::new(source),
        hint,
    })
}

fn flow_map_fd(ebpf: &Ebpf, name: &'static str) -> Result<RawFd, MeterError> {
    match ebpf.map(name) {
        Some(Map::PerCpuHashMap(data)) => Ok(data.fd().as_fd().as_raw_fd()),
        Some(_) => Err(MeterError::Map { name, detail: "not a per-CPU hash map".into() }),
        None => Err(MeterError::Map { name, detail: "missing".into() }),
    }
}

/// Returns once no XDP program can still be running with a value it read
/// before this call (see the module comment).
fn wait_for_running_programs() -> Result<(), MeterError> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc < 0 {
        return Err(MeterError::Barrier(io::Error::last_os_error()));
    }
    Ok(())
}

/// (CLOCK_REALTIME - CLOCK_MONOTONIC, CLOCK_REALTIME) now, in ns: the first
/// turns the program's bpf_ktime_get_coarse_ns() stamps (the same clock, read at the
/// last tick) into wall-clock time.
pub fn wall_clock_offset() -> (Nanos, Nanos) {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    let before = read(libc::CLOCK_MONOTONIC);
    let wall = read(libc::CLOCK_REALTIME);
    let after = read(libc::CLOCK_MONOTONIC);
    (wall - (before + (after - before) / 2), wall)
}

/// Refuses flow maps that would take more than half the memory available
/// (both are allocated in full on every CPU when the meter loads).
fn check_map_memory(entries: u32) -> Result<(), MeterError> {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
    match host::memory_available() {
        Some(available) => fits_in_memory(entries, cpus, available),
        None => Ok(()),
    }
}

fn fits_in_memory(entries: u32, cpus: u64, available: u64) -> Result<(), MeterError> {
    let needed = 2 * entries as u64 * flow_map_entry_bytes(cpus);
    if needed > available / 2 {
        return Err(MeterError::TooLarge { entries, cpus, needed_mib: needed >> 20, available_mib: available >> 20 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_maps_are_bounded_by_memory() {
        let gib = 1u64 << 30;
        assert!(fits_in_memory(262_144, 2, 8 * gib).is_ok(), "the default on a small gateway");
        let error = fits_in_memory(16_777_216, 64, 32 * gib).unwrap_err().to_string();
        assert_eq!(
            error,
            "flow maps of 16777216 entries need about 85760 MiB of kernel memory (two maps on 64 CPUs), more than \
             half of the 32768 MiB available; lower capture.flow_map_entries (--flow-map-entries)"
        );
    }
}
