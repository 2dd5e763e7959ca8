//! The meter's kernel log: records the XDP program writes through aya-log
//! (see rogue-ebpf) become rogue's own log lines, under the target
//! `rogue::kernel`, each time the maps are drained. The level is fixed when
//! the program loads, as a constant the verifier sees, so a level of `off`
//! leaves no logging code in the program at all.

use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;

use crate::config::KernelLog;

/// The program's global that holds the level (aya-log-ebpf's AYA_LOG_LEVEL).
const LEVEL_GLOBAL: &str = aya_log::LEVEL;

/// aya-log's levels: 0 logs nothing, then error = 1 up to debug = 4 (and
/// trace = 5, which the meter does not use). The loader borrows the value
/// until it loads, hence statics.
static LEVELS: [u8; 5] = [0, 1, 2, 3, 4];

/// Sets the level the program will log at, before it loads.
pub fn set_level(loader: &mut EbpfLoader<'_>, level: KernelLog) {
    let value = match level {
        KernelLog::Off => &LEVELS[0],
        KernelLog::Error => &LEVELS[1],
        KernelLog::Warn => &LEVELS[2],
        KernelLog::Info => &LEVELS[3],
        KernelLog::Debug => &LEVELS[4],
    };
    loader.override_global(LEVEL_GLOBAL, value, true);
}

/// Reads the program's log ring; holding it keeps the ring open, which the
/// loaded program refers to.
pub struct KernelLogReader(EbpfLogger<Forward>);

impl KernelLogReader {
    pub fn open(ebpf: &mut Ebpf) -> Result<KernelLogReader, aya_log::Error> {
        EbpfLogger::init_with_logger(ebpf, Forward).map(KernelLogReader)
    }

    /// Logs every record waiting in the ring. Records the ring had no room
    /// for are lost to the log, never to the counters.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

/// Hands aya-log's records to tracing, at their own level.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "rogue::kernel", "{message}"),
            log::Level::Warn => tracing::warn!(target: "rogue::kernel", "{message}"),
            log::Level::Info => tracing::info!(target: "rogue::kernel", "{message}"),
            log::Level::Debug => tracing::debug!(target: "rogue::kernel", "{message}"),
            log::Level::Trace => tracing::trace!(target: "rogue::kernel", "{message}"),
        }
    }

    fn flush(&self) {}
}
