//! The webhook sink: each finding POSTed to an `http://` or `https://` URL,
//! without loss. Emitting a finding appends it to a spool on disk (under
//! the state directory, synced); a task beside the agent delivers the spool
//! in order, one finding per request, and moves its cursor (also on disk)
//! past a finding only once the endpoint answered 2xx. While the endpoint
//! is down, or answers 5xx or 429, the task retries with exponential
//! backoff (1 s doubling to 60 s) and findings wait in the spool, also
//! across a restart. Each request carries an `Idempotency-Key` (the spool
//! entry's position and content hash), so a receiver can drop the one
//! duplicate a crash between its 2xx and the cursor's write can cause.
//!
//! The spool is bounded (`output.spool_max_bytes`): past it the newest
//! findings are dropped, counted and logged. A 4xx other than 408 and 429
//! means the endpoint will never take that finding: it is skipped, counted
//! and logged, so one bad finding cannot hold up the rest.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Seek, SeekFrom, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tracing::{error, info, warn};

use super::metrics::Metrics;

/// The first retry waits this long; each failure doubles it up to the most.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MOST_BACKOFF: Duration = Duration::from_secs(60);
/// One request may take this long before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("output.findings: cannot use the spool {dir} of {url}")]
    Spool { url: String, dir: PathBuf, source: io::Error },
    #[error("output.findings: {url}: cannot read the CA file {path}")]
    CaFile { url: String, path: PathBuf, source: io::Error },
    #[error("output.findings: {url}: {reason}")]
    Client { url: String, reason: String },
}

/// A webhook sink's spool, shared by the emitter (which appends) and the
/// delivery task (which reads and compacts it).
struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Held while appending or compacting, so a compaction never drops a
    /// line written beside it.
    writing: Mutex<()>,
    /// Findings waiting: counted in the file once when the spool opens,
    /// then kept as they are appended and passed.
    pending: AtomicU64,
}

pub struct Webhook {
    spool: Arc<Spool>,
    /// Wakes the delivery task when a finding is spooled.
    spooled: Arc<tokio::sync::Notify>,
    delivery: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    url: String,
}

impl Webhook {
    /// Opens the spool of `url` in `spool_dir` and starts delivering it
    /// (in the current tokio runtime).
    pub fn open(
        url: &str,
        content_type: &'static str,
        ca_file: Option<&Path>,
        spool_dir: PathBuf,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Webhook, WebhookError> {
        let spool_error = |source| WebhookError::Spool { url: url.into(), dir: spool_dir.clone(), source };
        std::fs::create_dir_all(&spool_dir).map_err(spool_error)?;
        let lock = OpenOptions::new().create(true).append(true).mode(0o600).open(spool_dir.join("lock"));
        let lock = lock.map_err(spool_error)?;
        let client = client(url, ca_file)?;
        let spool = Arc::new(Spool::open(spool_dir.clone(), max_bytes).map_err(spool_error)?);
        let spooled = Arc::new(tokio::sync::Notify::new());
        let delivery = tokio::spawn(deliver(
            spool.clone(),
            lock,
            client,
            url.to_string(),
            content_type,
            spooled.clone(),
            metrics.clone(),
        ));
        Ok(Webhook { spool, spooled, delivery, metrics, url: url.to_string() })
    }

    /// Spools one finding's line for delivery; false if the spool is full
    /// (the finding is dropped, counted).
    pub fn send(&self, line: &str) -> io::Result<bool> {
        let kept = self.spool.append(line)?;
        if kept {
            self.spooled.notify_one();
        } else {
            self.metrics.sink_dropped(&self.url);
            warn!(
                "{}: the spool holds {} bytes already (output.spool_max_bytes): a finding is dropped",
                self.url, self.spool.max_bytes
            );
        }
        Ok(kept)
    }
}

impl Drop for Webhook {
    /// Stops delivering: the spool stays for whoever opens it next (a
    /// reload's new sink, or the next run).
    fn drop(&mut self) {
        self.delivery.abort();
    }
}

fn client(url: &str, ca_file: Option<&Path>) -> Result<reqwest::Client, WebhookError> {
    let mut builder =
        reqwest::Client::builder().timeout(REQUEST_TIMEOUT).user_agent(concat!("rogue/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| WebhookError::CaFile {
            url: url.into(),
            path: path.into(),
            source,
        })?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| WebhookError::Client { url: url.into(), reason: format!("{}: {e}", path.display()) })?;
        builder = builder.add_root_certificate(certificate);
    }
    reqwest::Url::parse(url).map_err(|e| WebhookError::Client { url: url.into(), reason: e.to_string() })?;
    builder.build().map_err(|e| WebhookError::Client { url: url.into(), reason: e.to_string() })
}

impl Spool {
    fn open(dir: PathBuf, max_bytes: u64) -> io::Result<Spool> {
        let spool = Spool { dir, max_bytes, writing: Mutex::new(()), pending: AtomicU64::new(0) };
        spool.pending.store(spool.count_pending()?, Ordering::Relaxed);
        Ok(spool)
    }

    fn queue(&self) -> PathBuf {
        self.dir.join("queue")
    }

    fn queue_len(&self) -> io::Result<u64> {
        match std::fs::metadata(self.queue()) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Where delivery stands: the bytes of the queue already delivered.
    fn cursor(&self) -> io::Result<u64> {
        match std::fs::read_to_string(self.dir.join("cursor")) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a cursor that is no number")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The cursor, written whole (a temporary file renamed over it).
    fn set_cursor(&self, at: u64) -> io::Result<()> {
        let temporary = self.dir.join("cursor.new");
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&temporary)?;
        write!(file, "{at}")?;
        file.sync_data()?;
        std::fs::rename(temporary, self.dir.join("cursor"))
    }

    fn append(&self, line: &str) -> io::Result<bool> {
        let _writing = self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let pending = self.queue_len()?.saturating_sub(self.cursor()?);
        if pending + line.len() as u64 + 1 > self.max_bytes {
            return Ok(false);
        }
        let mut queue = OpenOptions::new().create(true).append(true).mode(0o600).open(self.queue())?;
        queue.write_all(format!("{line}\n").as_bytes())?;
        queue.sync_data()?;
        self.pending.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The first whole line from the cursor on: its text and the cursor
    /// past it.
    fn next(&self) -> io::Result<Option<(String, u64)>> {
        let at = self.cursor()?;
        let mut queue = match File::open(self.queue()) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        queue.seek(SeekFrom::Start(at))?;
        let mut line = String::new();
        BufReader::new(queue).read_line(&mut line)?;
        if !line.ends_with('\n') {
            return Ok(None);
        }
        let next = at + line.len() as u64;
        line.pop();
        Ok(Some((line, next)))
    }

    /// Once everything is delivered, starts the queue afresh.
    fn compact(&self) -> io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let length = self.queue_len()?;
        if length > 0 && self.cursor()? == length {
            File::create(self.queue())?.sync_all()?;
            self.set_cursor(0)?;
        }
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Moves the cursor past the finding that ended at `past`.
    fn pass(&self, past: u64) -> io::Result<()> {
        self.set_cursor(past)?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// The whole lines from the cursor on, counted in the file.
    fn count_pending(&self) -> io::Result<u64> {
        let at = self.cursor()?;
        let mut queue = match File::open(self.queue()) {
            Ok(file) => BufReader::new(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        queue.seek(SeekFrom::Start(at))?;
        let (mut whole, mut line) = (0, Vec::new());
        while queue.read_until(b'\n', &mut line)? > 0 {
            // A piece with no line break is a write a crash cut short.
            whole += u64::from(line.ends_with(b"\n"));
            line.clear();
        }
        Ok(whole)
    }
}

/// What one request came to.
enum Outcome {
    Delivered,
    /// The endpoint will never take it (a 4xx other than 408 and 429).
    Refused(reqwest::StatusCode),
    /// Try again later: the endpoint is down, slow, or answered 5xx.
    Failed(String),
}

async fn post(client: &reqwest::Client, url: &str, content_type: &str, line: &str, key: &str) -> Outcome {
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header("Idempotency-Key", key)
        .body(line.to_string())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(response) => {
            let status = response.status();
            let retried = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
            if retried { Outcome::Failed(format!("it answered {status}")) } else { Outcome::Refused(status) }
        }
        Err(e) => Outcome::Failed(crate::with_causes(&e)),
    }
}

/// Delivers the spool, in order, for as long as the sink lives.
async fn deliver(
    spool: Arc<Spool>,
    lock: File,
    client: reqwest::Client,
    url: String,
    content_type: &'static str,
    spooled: Arc<tokio::sync::Notify>,
    metrics: Arc<Metrics>,
) {
    // One deliverer per spool: a reload's new sink waits for the old one's
    // task to end (its lock goes with it).
    // SAFETY: flock on a descriptor this function owns.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        metrics.set_sink_spooled(&url, spool.pending());
        let next = match spool.next() {
            Ok(next) => next,
            Err(e) => {
                error!("{url}: reading the spool {} failed: {e}; retrying", spool.dir.display());
                tokio::time::sleep(MOST_BACKOFF).await;
                continue;
            }
        };
        let Some((line, past)) = next else {
            if let Err(e) = spool.compact() {
                warn!("{url}: compacting the spool {} failed: {e}", spool.dir.display());
            }
            // Woken by the next finding, or a second later in case it was
            // written by a sink that came before this task.
            let _ = tokio::time::timeout(Duration::from_secs(1), spooled.notified()).await;
            continue;
        };
        let key = format!("{}-{}", past - line.len() as u64 - 1, &blake3::hash(line.as_bytes()).to_hex()[..16]);
        match post(&client, &url, content_type, &line, &key).await {
            Outcome::Delivered => {
                if failing {
                    info!(target: crate::LIFECYCLE, "{url} takes findings again; delivering the spool");
                    failing = false;
                }
                backoff = FIRST_BACKOFF;
                metrics.sink_delivered(&url);
            }
            Outcome::Refused(status) => {
                error!("{url} refused a finding ({status}); it is skipped, the rest delivered: {line}");
                metrics.sink_refused(&url);
            }
            Outcome::Failed(why) => {
                metrics.sink_failed(&url);
                if !failing {
                    warn!("{url} does not take findings ({why}); they wait in the spool and are retried");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MOST_BACKOFF);
                continue;
            }
        }
        if let Err(e) = spool.pass(past) {
            error!("{url}: moving the spool's cursor failed: {e}; the finding may be sent again");
            tokio::time::sleep(backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(name: &str, max_bytes: u64) -> Spool {
        let dir = std::env::temp_dir().join(format!("rogue-spool-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Spool::open(dir, max_bytes).unwrap()
    }

    #[test]
    fn the_spool_keeps_its_bound_delivers_in_order_and_starts_afresh_once_delivered() {
        let spool = spool("bound", 20);
        assert!(spool.append("finding-1").unwrap(), "10 bytes");
        assert!(spool.append("finding-2").unwrap(), "20 bytes: at the bound");
        assert!(!spool.append("finding-3").unwrap(), "past the bound: dropped");
        assert_eq!(spool.pending(), 2);
        let (first, past) = spool.next().unwrap().unwrap();
        assert_eq!((first.as_str(), past), ("finding-1", 10));
        spool.pass(past).unwrap();
        assert!(spool.append("finding-4").unwrap(), "room again once one is delivered");
        let (second, past) = spool.next().unwrap().unwrap();
        assert_eq!(second, "finding-2");
        spool.pass(past).unwrap();
        spool.compact().unwrap();
        assert_eq!(spool.queue_len().unwrap(), 30, "not compacted while one waits");
        let (third, past) = spool.next().unwrap().unwrap();
        assert_eq!(third, "finding-4");
        spool.pass(past).unwrap();
        spool.compact().unwrap();
        assert_eq!((spool.queue_len().unwrap(), spool.cursor().unwrap(), spool.pending()), (0, 0, 0));
        // A line cut by a crash mid-write waits for its end, and counts
        // once it has one, also for a spool opened afresh.
        std::fs::write(spool.queue(), "finding-5\nhalf a find").unwrap();
        let reopened = Spool::open(spool.dir.clone(), 20).unwrap();
        assert_eq!(reopened.pending(), 1);
        assert_eq!(reopened.next().unwrap().unwrap().0, "finding-5");
        reopened.pass(10).unwrap();
        assert!(reopened.next().unwrap().is_none());
        let _ = std::fs::remove_dir_all(&spool.dir);
    }
}
