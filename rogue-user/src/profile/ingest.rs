//! Capture files into the store: metered, profiled, and written in one
//! transaction, so an interrupted ingest leaves nothing behind and a capture
//! is either wholly in the store or not at all. Each file is hashed first; a
//! file whose content is already in the store is refused, naming when it was
//! ingested and as what, so nothing is ever counted twice.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use rogue_common::MeterCounters;
use sha2::{Digest, Sha256};

use super::Profiler;
use crate::{
    capture::{CaptureError, FileMeter},
    config::Config,
    flows::{FlowCache, FlowRecord, Nanos, Timeouts},
    store::{Store, StoreError},
};

/// Profile entries held in memory before they are written out.
const BATCH_ENTRIES: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is already in the store: its content was ingested as {name} at {when}; \
         ingesting it again would count its traffic twice"
    )]
    AlreadyIngested { path: PathBuf, name: String, when: String },
    #[error(
        "analyze reads capture files (it hashes each to refuse one ingested before); save standard input to a file"
    )]
    Stdin,
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an ingest read.
#[derive(Clone, Debug, Default)]
pub struct IngestSummary {
    pub files: usize,
    pub counters: MeterCounters,
    pub flows: u64,
    /// Data time the files cover.
    pub first: Option<Nanos>,
    pub last: Option<Nanos>,
    pub truncated_files: u64,
}

/// Reads `paths` as one stream of packets into `store`. `on_progress` hears
/// the bytes read so far across all files. The caller prunes old data
/// ([`Store::prune`]) once it has evaluated what came in.
pub fn ingest_captures(
    config: &Config,
    store: &mut Store,
    paths: &[PathBuf],
    mut on_progress: impl FnMut(u64),
) -> Result<IngestSummary, IngestError> {
    let mut hashes = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            return Err(IngestError::Stdin);
        }
        let hash = sha256_of(path)?;
        if let Some(source) = store.source_by_hash(&hash)? {
            let when = crate::flows::format::rfc3339_millis(source.ingested_ms * 1_000_000);
            return Err(IngestError::AlreadyIngested { path: path.clone(), name: source.name, when });
        }
        hashes.push(hash);
    }

    let timeouts = Timeouts::from_secs(config.capture.idle_timeout_seconds.0, config.capture.active_timeout_seconds.0);
    let mut meter = FileMeter::new(FlowCache::new(timeouts));
    let services = config.services.all();
    let mut profiler =
        Profiler::new(config.internal_networks.clone(), services.clone(), config.detection.bin_seconds.0);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let ingest = store.ingest()?;
    let mut summary = IngestSummary { files: paths.len(), ..IngestSummary::default() };
    let mut read_before = 0;
    let mut write_error = None;
    let mut write = |profiler: &mut Profiler, source: i64, flows: &[FlowRecord]| {
        for flow in flows {
            profiler.add(flow);
        }
        if profiler.batch().size() >= BATCH_ENTRIES && write_error.is_none() {
            write_error = ingest.write(source, &services, &profiler.take()).err();
        }
    };
    let mut last_source = None;
    for (path, hash) in paths.iter().zip(&hashes) {
        let source = ingest.add_source("capture", &path.display().to_string(), Some(hash), now_ms)?;
        let before = meter.counters;
        let mut flows_read = 0;
        let file = meter.file_with_progress(
            path,
            |flows| {
                flows_read += flows.len() as u64;
                write(&mut profiler, source, flows);
            },
            |bytes| on_progress(read_before + bytes),
        )?;
        read_before += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        on_progress(read_before);
        if let (Some(first), Some(last)) = (file.first, file.last) {
            ingest.extend_source(source, first, last, meter.counters.since(&before).packets, flows_read)?;
            summary.first = Some(summary.first.map_or(first, |t| t.min(first)));
            summary.last = Some(summary.last.map_or(last, |t| t.max(last)));
        }
        summary.flows += flows_read;
        last_source = Some(source);
    }
    // The flows still open at the end belong to the last file.
    if let Some(source) = last_source {
        let mut rest = Vec::new();
        meter.cache.flush(&mut rest);
        summary.flows += rest.len() as u64;
        write(&mut profiler, source, &rest);
        if let Some(e) = write_error {
            return Err(e.into());
        }
        ingest.write(source, &services, &profiler.take())?;
    }
    ingest.commit()?;
    summary.counters = meter.counters;
    summary.truncated_files = meter.files_truncated;
    Ok(summary)
}

fn sha256_of(path: &Path) -> Result<String, IngestError> {
    let read_error = |source| IngestError::Read { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(read_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
