//! The spool: every write to ClickHouse is first a file on local disk, and
//! only then sent, so that nothing is lost while the server is down or
//! when rogue dies mid-write, and nothing is counted twice when it is sent
//! again.
//!
//! A write ([`Batch`]) is a list of inserts ([`Chunk`]), each into one
//! table and one partition (a part the server writes whole or not at all).
//! The inserts into tables whose rows add up carry a marker row naming the
//! batch; before sending again an insert whose fate is unknown, the sender
//! asks the server for its marker. The other tables replace rows by key,
//! so sending them twice changes nothing.
//!
//! Files are written whole (a temporary file, fsync, rename) and end with a
//! BLAKE3 checksum. Each process writes under its own writer name and holds
//! `WRITER.lock` while it runs; the batches of a writer whose lock is free
//! (it died) are sent by the next process to open the store.

use std::{
    fs::File,
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// One insert: RowBinary `rows` of `columns` into `table`, all in one
/// partition; `marker` names the batch in the marker row it includes.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub table: String,
    pub columns: String,
    pub live: u8,
    pub day: u16,
    pub marker: Option<String>,
    pub rows: Vec<u8>,
}

/// One write's inserts, sent in order: sources first, the traffic, then
/// the record of the write (source_writes), so that a reader never sees a
/// write recorded whose traffic is missing.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `WRITER.SEQUENCE`, also the file's name and every marker's text.
    pub id: String,
    pub chunks: Vec<Chunk>,
}

const MAGIC: &[u8] = b"rogue clickhouse batch 1\n";

impl Batch {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for chunk in &self.chunks {
            put(&mut bytes, chunk.table.as_bytes());
            put(&mut bytes, chunk.columns.as_bytes());
            bytes.push(chunk.live);
            bytes.extend_from_slice(&chunk.day.to_le_bytes());
            put(&mut bytes, chunk.marker.as_deref().unwrap_or_default().as_bytes());
            put(&mut bytes, &chunk.rows);
        }
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(checksum.as_bytes());
        bytes
    }

    fn decode(id: String, bytes: &[u8]) -> Option<Batch> {
        let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if blake3::hash(body).as_bytes() != checksum {
            return None;
        }
        let mut rest = body.strip_prefix(MAGIC)?;
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            let text = |rest: &mut &[u8]| String::from_utf8(take(rest)?.to_vec()).ok();
            let table = text(&mut rest)?;
            let columns = text(&mut rest)?;
            let (&live, after) = rest.split_first()?;
            let (day, after) = after.split_at_checked(2)?;
            rest = after;
            let marker = text(&mut rest)?;
            let rows = take(&mut rest)?.to_vec();
            let day = u16::from_le_bytes([day[0], day[1]]);
            chunks.push(Chunk { table, columns, live, day, marker: (!marker.is_empty()).then_some(marker), rows });
        }
        Some(Batch { id, chunks })
    }

    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.rows.len() as u64).sum()
    }
}

fn put(bytes: &mut Vec<u8>, field: &[u8]) {
    bytes.extend_from_slice(&(field.len() as u64).to_le_bytes());
    bytes.extend_from_slice(field);
}

fn take<'b>(rest: &mut &'b [u8]) -> Option<&'b [u8]> {
    let (length, after) = rest.split_at_checked(8)?;
    let length = u64::from_le_bytes(length.try_into().ok()?) as usize;
    let (field, after) = after.split_at_checked(length)?;
    *rest = after;
    Some(field)
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the ClickHouse spool {dir}: {error}")]
    Io { dir: PathBuf, error: std::io::Error },
    #[error(
        "the ClickHouse spool {dir} holds {held} bytes waiting for the server, and a write of {adding} more \
         would pass store.clickhouse.spool_max_mib"
    )]
    Full { dir: PathBuf, held: u64, adding: u64 },
}

/// This process's spool directory, and the batches in it not sent yet.
pub struct Spool {
    dir: PathBuf,
    writer: String,
    max_bytes: u64,
    /// Held for the process's life: its batches are its own to send.
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool in `dir` for `writer`.
    pub fn open(dir: &Path, writer: &str, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io = |error| SpoolError::Io { dir: dir.into(), error };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::create(dir.join(format!("{writer}.lock"))).map_err(io)?;
        if !try_lock(&lock) {
            return Err(io(std::io::Error::other(format!("writer {writer} is taken by another process"))));
        }
        Ok(Spool { dir: dir.into(), writer: writer.into(), max_bytes, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `batch` to disk, whole, before anything of it is sent.
    pub fn keep(&self, batch: &Batch) -> Result<(), SpoolError> {
        let io = |error| SpoolError::Io { dir: self.dir.clone(), error };
        let held = self.held_bytes().map_err(io)?;
        if held > 0 && held + batch.bytes() > self.max_bytes {
            return Err(SpoolError::Full { dir: self.dir.clone(), held, adding: batch.bytes() });
        }
        let path = self.dir.join(format!("{}.batch", batch.id));
        let temporary = self.dir.join(format!("{}.batch.tmp", batch.id));
        let written = File::create(&temporary)
            .and_then(|mut file| file.write_all(&batch.encode()).and_then(|_| file.sync_all()))
            .and_then(|_| std::fs::rename(&temporary, &path));
        if let Err(error) = written {
            // A full disk: nothing of the write stays to fill it further.
            let _ = std::fs::remove_file(&temporary);
            return Err(io(error));
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)
    }

    /// The batch is in ClickHouse: its file goes.
    pub fn sent(&self, batch: &Batch) -> Result<(), SpoolError> {
        std::fs::remove_file(self.dir.join(format!("{}.batch", batch.id)))
            .map_err(|error| SpoolError::Io { dir: self.dir.clone(), error })
    }

    /// A batch the server will not take: kept as `ID.refused` for an
    /// operator, no longer sent; returns where.
    pub fn set_aside(&self, batch: &Batch) -> Result<PathBuf, SpoolError> {
        let path = self.dir.join(format!("{}.batch", batch.id));
        let aside = path.with_extension("refused");
        std::fs::rename(&path, &aside).map_err(|error| SpoolError::Io { dir: self.dir.clone(), error })?;
        Ok(aside)
    }

    /// Bytes of batches waiting, of every writer.
    pub fn held_bytes(&self) -> std::io::Result<u64> {
        let mut held = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".batch") {
                held += entry.metadata()?.len();
            }
        }
        Ok(held)
    }

    /// The batches waiting: this writer's, and those of writers that died
    /// (their lock is taken over, and released once they are sent), oldest
    /// first within a writer. A file that does not read whole (a disk that
    /// lied) is set aside as `.damaged` and named in the result.
    pub fn waiting(&self) -> Result<(Vec<Batch>, Vec<PathBuf>), SpoolError> {
        let io = |error| SpoolError::Io { dir: self.dir.clone(), error };
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io)?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".batch"))
            .collect();
        names.sort_by_key(|name| batch_order(name));
        let (mut batches, mut damaged) = (Vec::new(), Vec::new());
        for name in names {
            let id = name.trim_end_matches(".batch").to_string();
            let writer = id.rsplit_once('.').map_or(id.as_str(), |(writer, _)| writer);
            if writer != self.writer && !self.take_over(writer).map_err(io)? {
                continue;
            }
            let path = self.dir.join(&name);
            let bytes = std::fs::read(&path).map_err(io)?;
            match Batch::decode(id, &bytes) {
                Some(batch) => batches.push(batch),
                None => {
                    let aside = path.with_extension("damaged");
                    std::fs::rename(&path, &aside).map_err(io)?;
                    damaged.push(aside);
                }
            }
        }
        Ok((batches, damaged))
    }

    /// Whether the writer `writer` is dead (its lock free); its lock is then
    /// left locked by this process until it exits.
    fn take_over(&self, writer: &str) -> std::io::Result<bool> {
        let lock = File::create(self.dir.join(format!("{writer}.lock")))?;
        let taken = try_lock(&lock);
        if taken {
            std::mem::forget(lock);
        }
        Ok(taken)
    }
}

/// (writer, sequence): a writer's batches in the order it wrote them.
fn batch_order(name: &str) -> (String, u64) {
    let id = name.trim_end_matches(".batch");
    match id.rsplit_once('.') {
        Some((writer, sequence)) => (writer.to_string(), sequence.parse().unwrap_or(u64::MAX)),
        None => (id.to_string(), u64::MAX),
    }
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on an open descriptor; it only locks.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> Batch {
        let chunk = |table: &str, marker: Option<&str>| Chunk {
            table: table.into(),
            columns: "a, b".into(),
            live: 1,
            day: 20_000,
            marker: marker.map(str::to_string),
            rows: vec![1, 2, 3, 0xff],
        };
        Batch { id: id.into(), chunks: vec![chunk("sources", None), chunk("host_bins", Some(id))] }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rogue-spool-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_batch_reads_back_as_written_and_a_damaged_one_is_set_aside() {
        let dir = temp_dir("roundtrip");
        let spool = Spool::open(&dir, "w1", 1 << 20).unwrap();
        spool.keep(&batch("w1.2")).unwrap();
        spool.keep(&batch("w1.10")).unwrap();
        spool.keep(&batch("w1.3")).unwrap();
        let (waiting, damaged) = spool.waiting().unwrap();
        let ids: Vec<&str> = waiting.iter().map(|b| b.id.as_str()).collect();
        assert_eq!((ids, damaged.len()), (vec!["w1.2", "w1.3", "w1.10"], 0));
        assert_eq!(waiting[0], batch("w1.2"));

        let path = dir.join("w1.3.batch");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (waiting, damaged) = spool.waiting().unwrap();
        assert_eq!((waiting.len(), damaged), (2, vec![dir.join("w1.3.damaged")]));
        spool.sent(&waiting[0]).unwrap();
        assert_eq!(spool.waiting().unwrap().0.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_live_writers_batches_are_its_own_and_a_dead_ones_are_taken_over() {
        let dir = temp_dir("writers");
        let alive = Spool::open(&dir, "alive", 1 << 20).unwrap();
        alive.keep(&batch("alive.1")).unwrap();
        {
            let dead = Spool::open(&dir, "dead", 1 << 20).unwrap();
            dead.keep(&batch("dead.1")).unwrap();
            assert!(Spool::open(&dir, "dead", 1 << 20).is_err(), "one process per writer");
        }
        let other = Spool::open(&dir, "other", 1 << 20).unwrap();
        let ids: Vec<String> = other.waiting().unwrap().0.into_iter().map(|b| b.id).collect();
        assert_eq!(ids, vec!["dead.1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_spool_refuses_a_write_and_says_how_full() {
        let dir = temp_dir("full");
        let spool = Spool::open(&dir, "w", 200).unwrap();
        spool.keep(&batch("w.1")).unwrap();
        spool.keep(&batch("w.2")).unwrap();
        let error = spool.keep(&batch("w.3")).unwrap_err().to_string();
        assert!(error.contains("would pass store.clickhouse.spool_max_mib"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
