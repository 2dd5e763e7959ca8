//! Names and sizes of the maps the XDP program declares; userspace finds
//! them by these names and resizes the flow maps at load time.

/// The two flow maps. The program writes to the one the index map names;
/// userspace switches the index, waits out in-flight programs, then drains
/// the other one, so no packet is lost or counted twice.
pub const FLOW_MAPS: [&str; 2] = ["FLOWS_0", "FLOWS_1"];
/// `Array<u32>` with one entry: which of `FLOW_MAPS` the program writes to.
pub const FLOW_MAP_INDEX: &str = "FLOW_MAP_INDEX";
/// `PerCpuArray<MeterCounters>` with [`COUNTER_SLOTS`] entries: the
/// counters of the interface with ifindex `i` are at index `i`; interfaces
/// with an ifindex of [`COUNTER_SLOTS`] or more share index 0 (no interface
/// has ifindex 0). An array indexed directly costs the program nothing over
/// one global slot, where a hash keyed by ifindex would cost a lookup.
pub const COUNTERS: &str = "COUNTERS";
pub const COUNTER_SLOTS: u32 = 256;

/// The index of an interface's counters in [`COUNTERS`].
#[inline(always)]
pub fn counter_slot(ifindex: u32) -> u32 {
    if ifindex < COUNTER_SLOTS { ifindex } else { 0 }
}

/// The program's global holding the tunnels it opens (a `Decapsulate`'s
/// bits), a constant set at load time.
pub const DECAPSULATE_GLOBAL: &str = "DECAPSULATE";

/// Entries per flow map when configuration says nothing.
pub const DEFAULT_FLOW_MAP_ENTRIES: u32 = 262_144;

/// The XDP program's name in the object file.
pub const METER_PROGRAM: &str = "rogue_meter";
