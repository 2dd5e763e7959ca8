//! Files into the store, the offline pipeline: capture and IPFIX files are
//! read (capture, ipfix), metered (flows), profiled (profile) and written
//! (store) in one transaction, so an interrupted ingest leaves nothing
//! behind and a file is either wholly in the store or not at all. Every row is written under
//! the file's own source. Each file is hashed; a file whose content is
//! already in the store is refused, naming when it was ingested and as what,
//! so nothing is ever counted twice, unless its evaluation never completed
//! (a crash, Ctrl-C during slow DNS): then it is not read again but
//! evaluated, by whoever called (see [`IngestSummary::resumed`]).
//!
//! A capture cut inside a record is refused, nothing of it stored: the
//! whole file, analysed later, would count its packets twice. Frames and
//! records dated outside the plausible window ([`TimeBounds`]) are counted
//! per file and never stored.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use rogue_common::MeterCounters;
use sha2::{Digest, Sha256};

use crate::{
    capture::CaptureError,
    config::{Config, Service},
    flows::{FlowCache, FlowRecord, Rejected, TimeBounds, Timeouts, meter::FileMeter},
    ipfix::decode::{Decoder, ipfix_message_length},
    profile::{FlowSpan, ProfileBatch, Profiler},
    store::{Source, Store, StoreError},
    time::Nanos,
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
    #[error(
        "{path} is cut short: the file ends inside the packet record at byte {offset}, after {packets} packets \
         (an interrupted capture?); nothing of it was stored: the whole file, analysed later, would count these \
         packets twice. Analyse it once the capture is complete (`rogue flows` reads what it holds)"
    )]
    Cut { path: PathBuf, offset: u64, packets: u64 },
    #[error("interrupted while reading {path}: nothing of the {files} file(s) was stored")]
    Interrupted { path: PathBuf, files: usize, signal: i32 },
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

/// How an ingest reads its files.
#[derive(Clone, Copy)]
pub struct IngestOptions<'a> {
    pub kind: FileKind,
    /// Data times a frame or record may carry; others are rejected.
    pub bounds: TimeBounds,
    /// Set (to the signal's number) when the ingest is to stop.
    pub stop: &'a AtomicUsize,
}

/// What an ingest read.
#[derive(Clone, Debug, Default)]
pub struct IngestSummary {
    /// Files read and stored now.
    pub files: usize,
    pub counters: MeterCounters,
    pub flows: u64,
    /// Data time the files read now cover.
    pub first: Option<Nanos>,
    pub last: Option<Nanos>,
    /// Files with frames or records rejected as dated outside the bounds.
    pub rejected: Vec<(PathBuf, Rejected)>,
    /// Files already in the store whose evaluation never completed: not read
    /// again; the caller evaluates them.
    pub resumed: Vec<(PathBuf, Source)>,
    /// UDP flows on a service port whose other direction never came: no
    /// server is made of them (see profile::answers).
    pub udp_unanswered: u64,
}

/// Reads `paths` as one stream into `store`. `on_progress` hears the bytes
/// read so far across all files. The caller evaluates what came in (and
/// what [`IngestSummary::resumed`] names), then applies retention.
///
/// Three things run at once: a thread reads and parses captures, hashing
/// each file's bytes as it reads them (an IPFIX file is hashed on a thread
/// of its own); this thread meters and profiles; a third writes the
/// profiles to the store as they come (at most two batches wait between
/// them, so memory stays bounded). A file found already in the store is
/// refused before the transaction commits, so nothing of it stays.
pub fn ingest_files(
    config: &Config,
    store: &mut dyn Store,
    paths: &[PathBuf],
    options: IngestOptions<'_>,
    mut on_progress: impl FnMut(u64),
) -> Result<IngestSummary, IngestError> {
    if paths.iter().any(|path| path == Path::new("-")) {
        return Err(IngestError::Stdin);
    }
    if let Some(path) = paths.iter().find(|path| path.is_dir()) {
        return Err(CaptureError::Directory { path: path.clone() }.into());
    }
    let also_sha256 = store.has_sha256_hashes()?;
    let (paths, mut hashes, resumed) = if store.pending_files()?.is_some() {
        // Some file was stored but not evaluated: know each file's content
        // before reading it, so such a file is evaluated, not read again.
        resume_or_refuse(store, paths, also_sha256)?
    } else {
        let hashing = paths
            .iter()
            .map(|path| match options.kind {
                // Hashed as they are read, rather than read twice.
                FileKind::Capture => Hashes::WhileReading(Box::new(ContentHasher::new(also_sha256))),
                FileKind::Ipfix => Hashes::start(path.clone(), also_sha256),
            })
            .collect();
        (paths.to_vec(), hashing, Vec::new())
    };
    if paths.is_empty() {
        return Ok(IngestSummary { resumed, ..IngestSummary::default() });
    }
    let services = config.services.all();
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let summary = std::thread::scope(|scope| {
        let (to_store, messages) = mpsc::sync_channel(2);
        let (source_ids, sources) = mpsc::channel();
        let writer = scope.spawn(|| write_to_store(store, &names, options.kind, services, source_ids, messages));
        let Ok(sources) = sources.recv() else {
            return Err(writer.join().expect("the store writer does not panic").unwrap_err());
        };
        let reader = Reader { config, options, sources: &sources, to_store: &to_store };
        let read = match options.kind {
            FileKind::Capture => reader.captures(&paths, &mut hashes, &mut on_progress),
            FileKind::Ipfix => reader.ipfix(&paths, &mut on_progress),
        };
        let finished = read.and_then(|summary| {
            let hashes = paths
                .iter()
                .zip(hashes)
                .map(|(path, hashes)| Ok((path.clone(), hashes.finish()?)))
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
    })?;
    Ok(IngestSummary { resumed, ..summary })
}

/// Each file's content hashes: known already, being computed on a thread
/// of their own, or as the file is read.
enum Hashes {
    Known(Vec<String>),
    Hashing(JoinHandle<Result<Vec<String>, IngestError>>),
    // Boxed: a BLAKE3 hasher holds 2 KiB of state.
    WhileReading(Box<ContentHasher>),
}

impl Hashes {
    fn start(path: PathBuf, also_sha256: bool) -> Hashes {
        Hashes::Hashing(std::thread::spawn(move || content_hashes(&path, also_sha256)))
    }

    fn finish(self) -> Result<Vec<String>, IngestError> {
        match self {
            Hashes::Known(hashes) => Ok(hashes),
            Hashes::Hashing(thread) => thread.join().expect("hashing does not panic"),
            Hashes::WhileReading(hasher) => Ok(hasher.finish()),
        }
    }
}

/// Splits `paths` by content: files stored but not evaluated (resumed),
/// files stored and evaluated (refused), and new files with their hashes.
#[allow(clippy::type_complexity)]
fn resume_or_refuse(
    store: &dyn Store,
    paths: &[PathBuf],
    also_sha256: bool,
) -> Result<(Vec<PathBuf>, Vec<Hashes>, Vec<(PathBuf, Source)>), IngestError> {
    let (mut new, mut hashes, mut resumed) = (Vec::new(), Vec::new(), Vec::new());
    let hashing: Vec<_> = paths.iter().map(|path| Hashes::start(path.clone(), also_sha256)).collect();
    for (path, hashing) in paths.iter().zip(hashing) {
        let file_hashes = hashing.finish()?;
        let mut stored = None;
        for hash in &file_hashes {
            stored = stored.or(store.source_by_hash(hash)?);
        }
        match stored {
            Some(source) if source.pending_from_ms.is_some() => resumed.push((path.clone(), source)),
            Some(source) => return Err(already_ingested(path.clone(), source)),
            None => {
                new.push(path.clone());
                hashes.push(Hashes::Known(file_hashes));
            }
        }
    }
    Ok((new, hashes, resumed))
}

fn already_ingested(path: PathBuf, earlier: Source) -> IngestError {
    let when = crate::time::rfc3339_millis(earlier.ingested_ms * 1_000_000);
    IngestError::AlreadyIngested { path, name: earlier.name, when }
}

/// What the reading thread hands the store writer.
enum ToStore {
    Profiles {
        source: i64,
        batch: ProfileBatch,
    },
    /// A file was read: what it covers, and what of it was rejected.
    File {
        source: i64,
        span: FlowSpan,
        rejected: u64,
    },
    /// Everything was read: check the hashes, then commit.
    Finish {
        /// Each file's content hashes, the one to store first.
        hashes: Vec<(PathBuf, Vec<String>)>,
    },
}

/// The reading side of an ingest.
struct Reader<'a> {
    config: &'a Config,
    options: IngestOptions<'a>,
    sources: &'a [i64],
    to_store: &'a mpsc::SyncSender<ToStore>,
}

impl Reader<'_> {
    /// Reads, meters and profiles every capture, sending profiles to the
    /// writer under each file's source.
    fn captures(
        &self,
        paths: &[PathBuf],
        hashes: &mut [Hashes],
        on_progress: &mut impl FnMut(u64),
    ) -> Result<IngestSummary, IngestError> {
        let capture = &self.config.capture;
        let timeouts = Timeouts::from_secs(capture.idle_timeout_seconds.0, capture.active_timeout_seconds.0);
        let mut meter = FileMeter::new(FlowCache::new(timeouts));
        meter.bounds = Some(self.options.bounds);
        meter.decapsulate = capture.decapsulate();
        let mut profiler = Profiler::for_config(self.config);
        let mut summary = IngestSummary::default();
        let mut read_before = 0;
        let mut send = sender(self.to_store);
        let stop = self.options.stop;
        for ((path, &source), hashes) in paths.iter().zip(self.sources).zip(hashes) {
            let before = meter.counters;
            let mut flows_read = 0;
            let mut tap = |bytes: &[u8]| {
                if let Hashes::WhileReading(hasher) = &mut *hashes {
                    hasher.update(bytes);
                }
            };
            let file = meter
                .file_with(
                    path,
                    |flows| {
                        flows_read += flows.len() as u64;
                        profile(&mut profiler, source, flows, &mut send);
                    },
                    |bytes| on_progress(read_before + bytes),
                    || stop.load(Ordering::Relaxed) != 0,
                    &mut tap,
                )
                .map_err(|e| self.interrupted_or(e, paths.len()))?;
            let rejected = file.rejected;
            let file = file.file;
            if let Some(offset) = file.cut_at {
                return Err(IngestError::Cut { path: path.clone(), offset, packets: file.frames });
            }
            read_before += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            on_progress(read_before);
            // What this file's flows made so far is its own.
            send(ToStore::Profiles { source, batch: profiler.take() });
            let packets = meter.counters.since(&before).packets;
            let span = FlowSpan { flows: flows_read, packets, first: file.first, last: file.last };
            summary.add_file(path, source, span, rejected, &mut send);
        }
        // The flows still open at the end belong to the last file.
        if let Some(&source) = self.sources.last() {
            let mut rest = Vec::new();
            meter.cache.flush(&mut rest);
            summary.flows += rest.len() as u64;
            profile(&mut profiler, source, &rest, &mut send);
            send(ToStore::Profiles { source, batch: profiler.take() });
        }
        summary.counters = meter.counters;
        profiler.finish();
        summary.udp_unanswered = profiler.exchanges().unanswered;
        Ok(summary)
    }

    /// Reads IPFIX files (RFC 5655: messages one after another, such as
    /// `rogue flows --write` makes): their flows are complete, so they go
    /// straight to the profiles.
    fn ipfix(&self, paths: &[PathBuf], on_progress: &mut impl FnMut(u64)) -> Result<IngestSummary, IngestError> {
        let mut profiler = Profiler::for_config(self.config);
        let mut summary = IngestSummary::default();
        let mut send = sender(self.to_store);
        let mut read_before = 0;
        for (path, &source) in paths.iter().zip(self.sources) {
            let file = std::fs::File::open(path).map_err(|source| IngestError::Read { path: path.clone(), source })?;
            let mut file = std::io::BufReader::with_capacity(1 << 20, file);
            let corrupt = |offset: u64, detail: String| IngestError::Ipfix { path: path.clone(), offset, detail };
            // A file has one exporter; its templates are kept per observation domain.
            let exporter = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
            let mut decoder = Decoder::new();
            let (mut span, mut rejected, mut offset, mut message) =
                (FlowSpan::default(), Rejected::default(), 0u64, Vec::new());
            while let Some(length) = read_ipfix_message(&mut file, &mut message).map_err(|e| corrupt(offset, e))? {
                if let signal @ 1.. = self.options.stop.load(Ordering::Relaxed) {
                    return Err(IngestError::Interrupted {
                        path: path.clone(),
                        files: paths.len(),
                        signal: signal as i32,
                    });
                }
                let mut decoded = decoder.decode(exporter, &message).map_err(|e| corrupt(offset, e.to_string()))?;
                if decoded.sets_without_template > 0 || decoded.records_unreadable > 0 {
                    return Err(corrupt(offset, "holds records without a template before them, or unreadable".into()));
                }
                decoded.flows.retain(|flow| {
                    let admitted = self.options.bounds.admits_flow(flow);
                    if !admitted {
                        rejected.add(flow.end.max(flow.start));
                    }
                    admitted
                });
                decoded.flows.iter().for_each(|flow| span.add(flow));
                profile(&mut profiler, source, &decoded.flows, &mut send);
                offset += length as u64;
                on_progress(read_before + offset);
            }
            read_before += offset;
            send(ToStore::Profiles { source, batch: profiler.take() });
            summary.add_file(path, source, span, rejected, &mut send);
            summary.counters.packets += span.packets;
        }
        profiler.finish();
        summary.udp_unanswered = profiler.exchanges().unanswered;
        Ok(summary)
    }

    /// A capture error, or the interruption it stands for.
    fn interrupted_or(&self, error: CaptureError, files: usize) -> IngestError {
        match error {
            CaptureError::Interrupted { path, .. } => {
                IngestError::Interrupted { path, files, signal: self.options.stop.load(Ordering::Relaxed) as i32 }
            }
            other => other.into(),
        }
    }
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
    /// Counts a file read: its span and rejections go to its source in the
    /// store and widen the ingest's.
    fn add_file(
        &mut self,
        path: &Path,
        source: i64,
        span: FlowSpan,
        rejected: Rejected,
        send: &mut dyn FnMut(ToStore),
    ) {
        if let (Some(first), Some(last)) = (span.first, span.last) {
            self.first = Some(self.first.map_or(first, |t| t.min(first)));
            self.last = Some(self.last.map_or(last, |t| t.max(last)));
        }
        self.files += 1;
        self.flows += span.flows;
        if rejected.records > 0 {
            self.rejected.push((path.to_path_buf(), rejected));
        }
        send(ToStore::File { source, span, rejected: rejected.records });
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
    store: &mut dyn Store,
    names: &[String],
    kind: FileKind,
    services: &[Service],
    source_ids: mpsc::Sender<Vec<i64>>,
    messages: mpsc::Receiver<ToStore>,
) -> Result<(), IngestError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut ingest = store.ingest()?;
    let sources: Vec<i64> =
        names.iter().map(|name| ingest.add_source(kind.as_str(), name, now_ms)).collect::<Result<_, _>>()?;
    let _ = source_ids.send(sources.clone());
    for message in messages {
        match message {
            ToStore::Profiles { source, batch } => ingest.write(source, services, &batch)?,
            ToStore::File { source, span, rejected } => {
                ingest.extend_source(source, &span)?;
                ingest.add_rejected(source, rejected)?;
            }
            ToStore::Finish { hashes } => {
                for ((path, hashes), &source) in hashes.into_iter().zip(&sources) {
                    for hash in &hashes {
                        if let Some(earlier) = ingest.source_by_hash(hash)? {
                            return Err(already_ingested(path, earlier));
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
    let mut hasher = ContentHasher::new(also_sha256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(read_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finish())
}

/// A file's content hashes, from its bytes in order.
struct ContentHasher {
    blake3: blake3::Hasher,
    sha256: Option<Sha256>,
}

impl ContentHasher {
    fn new(also_sha256: bool) -> ContentHasher {
        ContentHasher { blake3: blake3::Hasher::new(), sha256: also_sha256.then(Sha256::new) }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.blake3.update(bytes);
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(bytes);
        }
    }

    /// `blake3:HEX`, then `sha256:HEX` if asked for.
    fn finish(self) -> Vec<String> {
        let mut hashes = vec![format!("blake3:{}", self.blake3.finalize().to_hex())];
        if let Some(sha256) = self.sha256 {
            hashes.push(format!("sha256:{}", sha256.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()));
        }
        hashes
    }
}
