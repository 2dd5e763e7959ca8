//! Capture files into the store: metered, profiled, and written in one
//! transaction, so an interrupted ingest leaves nothing behind and a capture
//! is either wholly in the store or not at all. Each file is hashed first; a
//! file whose content is already in the store is refused, naming when it was
//! ingested and as what, so nothing is ever counted twice.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::mpsc,
};

use rogue_common::MeterCounters;
use sha2::{Digest, Sha256};

use super::{FlowSpan, ProfileBatch, Profiler};
use crate::{
    capture::{CaptureError, FileMeter},
    config::{Config, Service},
    flows::{FlowCache, FlowRecord, Nanos, Timeouts},
    ipfix::decode::{Decoder, ipfix_message_length},
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
    #[error("{path}: the IPFIX message at byte {offset} {detail}")]
    Ipfix { path: PathBuf, offset: u64, detail: String },
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the files of an ingest hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Packet captures (pcap, pcapng): metered into flows first.
    Capture,
    /// IPFIX files: flows already.
    Ipfix,
}

impl FileKind {
    /// The kind of source the store records.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Capture => "capture",
            FileKind::Ipfix => "ipfix",
        }
    }
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
///
/// Three things run at once: this thread reads, meters and profiles; a
/// second writes the profiles to the store as they come (at most two
/// batches wait between them, so memory stays bounded); and one thread per
/// file hashes it. A file found already in the store is refused before the
/// transaction commits, so nothing of it stays.
pub fn ingest_captures(
    config: &Config,
    store: &mut Store,
    paths: &[PathBuf],
    kind: FileKind,
    mut on_progress: impl FnMut(u64),
) -> Result<IngestSummary, IngestError> {
    if paths.iter().any(|path| path == Path::new("-")) {
        return Err(IngestError::Stdin);
    }
    let also_sha256 = store.has_sha256_hashes()?;
    let hashing: Vec<_> = paths
        .iter()
        .map(|path| {
            let path = path.clone();
            std::thread::spawn(move || content_hashes(&path, also_sha256))
        })
        .collect();
    let services = config.services.all();
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    std::thread::scope(|scope| {
        let (to_store, messages) = mpsc::sync_channel(2);
        let (source_ids, sources) = mpsc::channel();
        let writer = scope.spawn(|| write_to_store(store, &names, kind, &services, source_ids, messages));
        let Ok(sources) = sources.recv() else {
            return Err(writer.join().expect("the store writer does not panic").unwrap_err());
        };
        let read = match kind {
            FileKind::Capture => read_captures(config, paths, &sources, &to_store, &mut on_progress),
            FileKind::Ipfix => read_ipfix(config, paths, &sources, &to_store, &mut on_progress),
        };
        let finished = read.and_then(|summary| {
            let hashes = paths
                .iter()
                .zip(hashing)
                .map(|(path, hashed)| Ok((path.clone(), hashed.join().expect("hashing does not panic")?)))
                .collect::<Result<Vec<_>, IngestError>>()?;
            Ok((summary, hashes))
        });
        match finished {
            Ok((summary, hashes)) => {
                // A writer that stopped early keeps the error it stopped with.
                let _ = to_store.send(ToStore::Finish { hashes });
                drop(to_store);
                writer.join().expect("the store writer does not panic")?;
                Ok(summary)
            }
            Err(e) => {
                drop(to_store);
                // The writer rolls back; its own error, if it had one first, explains more.
                writer.join().expect("the store writer does not panic")?;
                Err(e)
            }
        }
    })
}

/// What the reading thread hands the store writer.
enum ToStore {
    Profiles {
        source: i64,
        batch: ProfileBatch,
    },
    Extend {
        source: i64,
        span: FlowSpan,
    },
    /// Everything was read: check the hashes, then commit.
    Finish {
        /// Each file's content hashes, the one to store first.
        hashes: Vec<(PathBuf, Vec<String>)>,
    },
}

/// Reads, meters and profiles every file, sending profiles to the writer.
fn read_captures(
    config: &Config,
    paths: &[PathBuf],
    sources: &[i64],
    to_store: &mpsc::SyncSender<ToStore>,
    on_progress: &mut impl FnMut(u64),
) -> Result<IngestSummary, IngestError> {
    let timeouts = Timeouts::from_secs(config.capture.idle_timeout_seconds.0, config.capture.active_timeout_seconds.0);
    let mut meter = FileMeter::new(FlowCache::new(timeouts));
    let mut profiler = Profiler::for_config(config);
    let mut summary = IngestSummary { files: paths.len(), ..IngestSummary::default() };
    let mut read_before = 0;
    let mut send = sender(to_store);
    for (path, &source) in paths.iter().zip(sources) {
        let before = meter.counters;
        let mut flows_read = 0;
        let file = meter.file_with_progress(
            path,
            |flows| {
                flows_read += flows.len() as u64;
                profile(&mut profiler, source, flows, &mut send);
            },
            |bytes| on_progress(read_before + bytes),
        )?;
        read_before += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        on_progress(read_before);
        let packets = meter.counters.since(&before).packets;
        let span = FlowSpan { flows: flows_read, packets, first: file.first, last: file.last };
        summary.add_file(source, span, &mut send);
    }
    // The flows still open at the end belong to the last file.
    if let Some(&source) = sources.last() {
        let mut rest = Vec::new();
        meter.cache.flush(&mut rest);
        summary.flows += rest.len() as u64;
        profile(&mut profiler, source, &rest, &mut send);
        send(ToStore::Profiles { source, batch: profiler.take() });
    }
    summary.counters = meter.counters;
    summary.truncated_files = meter.files_truncated;
    Ok(summary)
}

/// Reads IPFIX files (RFC 5655: messages one after another, such as
/// `rogue flows --write` makes): their flows are complete, so they go
/// straight to the profiles.
fn read_ipfix(
    config: &Config,
    paths: &[PathBuf],
    sources: &[i64],
    to_store: &mpsc::SyncSender<ToStore>,
    on_progress: &mut impl FnMut(u64),
) -> Result<IngestSummary, IngestError> {
    let mut profiler = Profiler::for_config(config);
    let mut summary = IngestSummary { files: paths.len(), ..IngestSummary::default() };
    let mut send = sender(to_store);
    let mut read_before = 0;
    for (path, &source) in paths.iter().zip(sources) {
        let file = std::fs::File::open(path).map_err(|source| IngestError::Read { path: path.clone(), source })?;
        let mut file = std::io::BufReader::with_capacity(1 << 20, file);
        let corrupt = |offset: u64, detail: String| IngestError::Ipfix { path: path.clone(), offset, detail };
        // A file has one exporter; its templates are kept per observation domain.
        let exporter = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let mut decoder = Decoder::new();
        let (mut span, mut offset, mut message) = (FlowSpan::default(), 0u64, Vec::new());
        while let Some(length) = read_ipfix_message(&mut file, &mut message).map_err(|e| corrupt(offset, e))? {
            let decoded = decoder.decode(exporter, &message).map_err(|e| corrupt(offset, e.to_string()))?;
            if decoded.sets_without_template > 0 || decoded.records_unreadable > 0 {
                return Err(corrupt(offset, "holds records without a template before them, or unreadable".into()));
            }
            decoded.flows.iter().for_each(|flow| span.add(flow));
            profile(&mut profiler, source, &decoded.flows, &mut send);
            offset += length as u64;
            on_progress(read_before + offset);
        }
        read_before += offset;
        summary.add_file(source, span, &mut send);
        summary.counters.packets += span.packets;
    }
    if let Some(&source) = sources.last() {
        send(ToStore::Profiles { source, batch: profiler.take() });
    }
    Ok(summary)
}

/// The next message of an IPFIX file into `message`: its length, or None
/// at the end of the file; what is wrong with it otherwise.
fn read_ipfix_message(file: &mut impl Read, message: &mut Vec<u8>) -> Result<Option<usize>, String> {
    let mut head = [0u8; 4];
    match file.read(&mut head[..1]) {
        Ok(0) => return Ok(None),
        Ok(_) => file.read_exact(&mut head[1..]).map_err(|_| "is cut short".to_string())?,
        Err(e) => return Err(format!("cannot be read: {e}")),
    }
    let length = ipfix_message_length(head).map_err(|e| format!("is not IPFIX: {e}"))?;
    message.clear();
    message.extend_from_slice(&head);
    message.resize(length, 0);
    file.read_exact(&mut message[4..]).map_err(|_| "is cut short".to_string())?;
    Ok(Some(length))
}

impl IngestSummary {
    /// Counts a file read: its span goes to its source in the store and
    /// widens the ingest's.
    fn add_file(&mut self, source: i64, span: FlowSpan, send: &mut dyn FnMut(ToStore)) {
        if let (Some(first), Some(last)) = (span.first, span.last) {
            self.first = Some(self.first.map_or(first, |t| t.min(first)));
            self.last = Some(self.last.map_or(last, |t| t.max(last)));
        }
        self.flows += span.flows;
        send(ToStore::Extend { source, span });
    }
}

/// Hands messages to the store writer. A send fails only once the writer
/// has stopped, and the error it stopped with is the one reported.
fn sender(to_store: &mpsc::SyncSender<ToStore>) -> impl FnMut(ToStore) + '_ {
    |message| {
        let _ = to_store.send(message);
    }
}

/// Profiles `flows`, handing the batch to the writer once it is big enough.
fn profile(profiler: &mut Profiler, source: i64, flows: &[FlowRecord], send: &mut dyn FnMut(ToStore)) {
    for flow in flows {
        profiler.add(flow);
    }
    if profiler.batch().size() >= BATCH_ENTRIES {
        send(ToStore::Profiles { source, batch: profiler.take() });
    }
}

/// The store writer: registers the sources (their ids go back on
/// `source_ids`), writes what arrives, and commits only on `Finish` with no
/// file already in the store. Any other end rolls everything back.
fn write_to_store(
    store: &mut Store,
    names: &[String],
    kind: FileKind,
    services: &[Service],
    source_ids: mpsc::Sender<Vec<i64>>,
    messages: mpsc::Receiver<ToStore>,
) -> Result<(), IngestError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let ingest = store.ingest()?;
    let sources: Vec<i64> =
        names.iter().map(|name| ingest.add_source(kind.as_str(), name, now_ms)).collect::<Result<_, _>>()?;
    let _ = source_ids.send(sources.clone());
    for message in messages {
        match message {
            ToStore::Profiles { source, batch } => ingest.write(source, services, &batch)?,
            ToStore::Extend { source, span } => ingest.extend_source_by(source, &span)?,
            ToStore::Finish { hashes } => {
                for ((path, hashes), &source) in hashes.into_iter().zip(&sources) {
                    for hash in &hashes {
                        if let Some(earlier) = ingest.source_by_hash(hash)? {
                            let when = crate::flows::format::rfc3339_millis(earlier.ingested_ms * 1_000_000);
                            return Err(IngestError::AlreadyIngested { path, name: earlier.name, when });
                        }
                    }
                    ingest.set_source_hash(source, &hashes[0])?;
                }
                return Ok(ingest.commit()?);
            }
        }
    }
    Ok(())
}

/// The content hash of the file at `path` as `blake3:HEX`, followed by
/// `sha256:HEX` when `also_sha256` (to compare with captures stored before
/// migration 4).
fn content_hashes(path: &Path, also_sha256: bool) -> Result<Vec<String>, IngestError> {
    let read_error = |source| IngestError::Read { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let (mut blake3, mut sha256) = (blake3::Hasher::new(), also_sha256.then(Sha256::new));
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(read_error)?;
        if read == 0 {
            break;
        }
        blake3.update(&buffer[..read]);
        if let Some(sha256) = &mut sha256 {
            sha256.update(&buffer[..read]);
        }
    }
    let mut hashes = vec![format!("blake3:{}", blake3.finalize().to_hex())];
    if let Some(sha256) = sha256 {
        hashes.push(format!("sha256:{}", sha256.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()));
    }
    Ok(hashes)
}
