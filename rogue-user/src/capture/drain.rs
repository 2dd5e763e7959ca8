//! Reading and clearing a per-CPU flow map in batches, on two threads.
//!
//! aya 0.14 has no batch map operations, so this calls
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` directly: one syscall moves thousands of
//! entries, where element-by-element iteration would need three per entry.

use std::{io, mem::size_of, os::fd::RawFd};

use rogue_common::{FlowKey, FlowStats};

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// Entries asked for per syscall; grown if one hash bucket holds more.
const INITIAL_BATCH: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One flow's counts summed over CPUs; times are kernel monotonic ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainedFlow {
    pub key: FlowKey,
    pub stats: FlowStats,
}

/// Reads and clears a flow map on two threads, each from its half of the
/// hash buckets: the kernel's work (a bucket lock and a delete per entry)
/// is nearly all of a drain, and it divides between CPUs. A batch call's
/// position is the index of the next bucket to read (kernel/bpf/hashtab.c),
/// so the upper half starts at `buckets / 2` and the lower half stops once
/// past it. Deletes make the halves safe to overlap: an entry is taken by
/// whichever thread reaches its bucket first, and only once. A last pass
/// from the start then proves the map empty, whatever a future kernel makes
/// of positions (a first-key lookup, lock-free, that costs a walk of the
/// empty buckets).
pub struct BatchDrainer {
    /// The first bucket of the upper half.
    half: u32,
    lower: Batches,
    upper: Batches,
}

impl BatchDrainer {
    /// For a per-CPU hash map of `max_entries` on `cpus` possible CPUs.
    pub fn new(cpus: usize, max_entries: u32) -> BatchDrainer {
        // The kernel gives a hash map a power of two of buckets.
        let buckets = max_entries.max(1).checked_next_power_of_two().unwrap_or(1 << 31);
        BatchDrainer { half: buckets / 2, lower: Batches::new(cpus), upper: Batches::new(cpus) }
    }

    /// Moves every entry of the map `fd` into `out`, leaving the map empty.
    /// The caller guarantees that no program writes to the map meanwhile.
    pub fn drain(&mut self, fd: RawFd, out: &mut Vec<DrainedFlow>) -> io::Result<()> {
        let mut upper_flows = Vec::new();
        let BatchDrainer { half, lower, upper } = self;
        let (lower_read, upper_read) = std::thread::scope(|scope| {
            let upper_read = scope.spawn(|| upper.drain(fd, Some(*half), None, &mut upper_flows));
            let lower_read = lower.drain(fd, None, Some(*half), out);
            (lower_read, upper_read.join().expect("draining does not panic"))
        });
        lower_read?;
        upper_read?;
        out.append(&mut upper_flows);
        if is_empty(fd)? {
            return Ok(());
        }
        self.lower.drain(fd, None, None, out)
    }
}

/// Whether the map `fd` holds no entry: its first key, asked for without
/// taking the buckets' locks as a batch call does.
fn is_empty(fd: RawFd) -> io::Result<bool> {
    /// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    let mut next = FlowKey::ZERO;
    let attr = ElemAttr { map_fd: fd as u32, key: 0, next_key: &mut next as *mut FlowKey as u64, flags: 0 };
    // SAFETY: a null key asks for the first key, written to a FlowKey,
    // the map's key type.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_GET_NEXT_KEY, &attr as *const ElemAttr, size_of::<ElemAttr>() as u32)
    };
    match io::Error::last_os_error() {
        _ if rc == 0 => Ok(false),
        e if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
        e => Err(e),
    }
}

/// Buffers for batch calls, reused from one drain to the next.
struct Batches {
    cpus: usize,
    keys: Vec<FlowKey>,
    values: Vec<FlowStats>,
}

impl Batches {
    fn new(cpus: usize) -> Batches {
        let mut batches = Batches { cpus, keys: Vec::new(), values: Vec::new() };
        batches.resize(INITIAL_BATCH);
        batches
    }

    fn resize(&mut self, entries: usize) {
        self.keys.resize(entries, FlowKey::ZERO);
        // A per-CPU map returns one value per possible CPU, each rounded up to
        // 8 bytes; FlowStats is already a multiple of 8.
        self.values.resize(entries * self.cpus, FlowStats::default());
    }

    /// Moves the entries of the map `fd` into `out`, from bucket `from` (or
    /// the first) to the end, or until past bucket `until`.
    fn drain(
        &mut self,
        fd: RawFd,
        from: Option<u32>,
        until: Option<u32>,
        out: &mut Vec<DrainedFlow>,
    ) -> io::Result<()> {
        const _: () = assert!(size_of::<FlowStats>().is_multiple_of(8));
        let mut token: u32 = from.unwrap_or(0);
        let mut first = from.is_none();
        loop {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &token as *const u32 as u64 },
                out_batch: &mut token as *mut u32 as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: self.keys.len() as u32,
                map_fd: fd as u32,
                ..BatchAttr::default()
            };
            // SAFETY: attr points at buffers sized for `count` keys and
            // `count * cpus` values, as the kernel expects for a per-CPU map.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                    &mut attr as *mut BatchAttr,
                    size_of::<BatchAttr>() as u32,
                )
            };
            let error = (rc < 0).then(io::Error::last_os_error);
            self.collect(attr.count as usize, out);
            match error {
                None if until.is_some_and(|until| token >= until) => return Ok(()),
                None => first = false,
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.count == 0 => {
                    // One bucket holds more entries than fit: ask for more.
                    let bigger = self.keys.len() * 2;
                    self.resize(bigger);
                }
                Some(e) => return Err(e),
            }
        }
    }

    fn collect(&self, count: usize, out: &mut Vec<DrainedFlow>) {
        for (i, key) in self.keys[..count].iter().enumerate() {
            let per_cpu = &self.values[i * self.cpus..(i + 1) * self.cpus];
            out.push(DrainedFlow { key: *key, stats: sum_cpus(per_cpu) });
        }
    }
}

/// One flow's per-CPU values as one: counts add up, flags OR, the first and
/// last times are the earliest and latest of the CPUs that saw packets.
pub fn sum_cpus(per_cpu: &[FlowStats]) -> FlowStats {
    let mut total = FlowStats { first_ns: u64::MAX, ..FlowStats::default() };
    for stats in per_cpu.iter().filter(|s| s.packets > 0) {
        total.packets += stats.packets;
        total.bytes += stats.bytes;
        total.first_ns = total.first_ns.min(stats.first_ns);
        total.last_ns = total.last_ns.max(stats.last_ns);
        total.tcp_flags |= stats.tcp_flags;
    }
    if total.packets == 0 {
        total.first_ns = 0;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_combine_into_one_flow() {
        let cpu = |packets, bytes, first_ns, last_ns, tcp_flags| FlowStats {
            packets,
            bytes,
            first_ns,
            last_ns,
            tcp_flags,
            _pad: [0; 7],
        };
        let summed = sum_cpus(&[cpu(2, 120, 50, 90, 0x02), cpu(0, 0, 0, 0, 0), cpu(1, 40, 10, 20, 0x10)]);
        assert_eq!(summed, cpu(3, 160, 10, 90, 0x12));
        assert_eq!(sum_cpus(&[cpu(0, 0, 0, 0, 0)]), FlowStats::default());
    }
}
