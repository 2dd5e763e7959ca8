//! The XDP live-frames traffic generator (rogue-ebpf's `testbed_generate`
//! run with BPF_PROG_TEST_RUN): millions of frames a second out of a veth,
//! cycling through a number of UDP flows, so the peer's XDP program meters
//! real received traffic. The peer must have an XDP program attached.

use std::time::{Duration, Instant};

use aya::{
    Ebpf,
    maps::Array,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use rogue::capture::host::if_index;

use crate::TESTBED_OBJECT;

pub struct Generator {
    ebpf: Ebpf,
    frame: Vec<u8>,
    /// struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    context: Vec<u8>,
    pub sent: u64,
}

impl Generator {
    /// A generator of copies of `frame` out of `interface` over `flows`
    /// flows. Acts in the calling thread's network namespace, and pins the
    /// thread to CPU 0 so the generator's per-CPU flow counter is one.
    pub fn new(interface: &str, frame: &[u8], flows: u32) -> Generator {
        Generator::pinned(0, interface, frame, flows)
    }

    /// As [`Generator::new`], on CPU `cpu` (one generator per CPU).
    pub fn pinned(cpu: usize, interface: &str, frame: &[u8], flows: u32) -> Generator {
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread.
        unsafe {
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
        }
        let mut ebpf = Ebpf::load(TESTBED_OBJECT).unwrap();
        Array::<_, u32>::try_from(ebpf.map_mut("GENERATOR").unwrap()).unwrap().set(0, flows, 0).unwrap();
        let program: &mut Xdp = ebpf.program_mut("testbed_generate").unwrap().try_into().unwrap();
        program.load().unwrap();
        let ifindex = if_index(interface).unwrap();
        let context = [0, frame.len() as u32, 0, ifindex, 0, 0].iter().flat_map(|field| field.to_ne_bytes()).collect();
        Generator { ebpf, frame: frame.to_vec(), context, sent: 0 }
    }

    /// Sends `frames` frames.
    pub fn send(&mut self, frames: u32) {
        let program: &mut Xdp = self.ebpf.program_mut("testbed_generate").unwrap().try_into().unwrap();
        program
            .test_run(TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(&self.context),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            })
            .expect("live frames test run");
        self.sent += frames as u64;
    }

    /// Sends `rate` frames a second (as near as one CPU can) for `duration`,
    /// in slices of 100 ms (a test run has a fixed cost, so each sends many);
    /// returns the time it took.
    pub fn send_at(&mut self, rate: u64, duration: Duration) -> Duration {
        let slice = Duration::from_millis(100);
        let per_slice = (rate / 10).max(1) as u32;
        let started = Instant::now();
        let mut next = started;
        while started.elapsed() < duration {
            self.send(per_slice);
            next += slice;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        started.elapsed()
    }

    /// Sends in chunks of `chunk` frames, pausing `pause` between them, for
    /// at least `duration`; returns the time it took.
    pub fn send_for(&mut self, duration: Duration, chunk: u32, pause: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < duration {
            self.send(chunk);
            std::thread::sleep(pause);
        }
        started.elapsed()
    }
}
