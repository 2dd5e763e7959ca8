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
//! BLAKE3 checksum; only the one being sent is in memory. Each process
//! writes under its own writer name and holds `WRITER.lock` while it runs.
//! The next process to open the spool adopts the batches of a writer whose
//! lock is free (it died): it renames them into its own name, which only
//! one process can do to a file, so no batch is sent by two.

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
    /// The sequence number of this writer's next batch.
    next: u64,
    /// Held for the process's life: its batches are its own to send.
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool in `dir` for `writer`, adopting the
    /// batches of writers that died, oldest first.
    pub fn open(dir: &Path, writer: &str, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io = |error| SpoolError::Io { dir: dir.into(), error };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::create(dir.join(format!("{writer}.lock"))).map_err(io)?;
        if !try_lock(&lock) {
            return Err(io(std::io::Error::other(format!("writer {writer} is taken by another process"))));
        }
        let mut spool = Spool { dir: dir.into(), writer: writer.into(), max_bytes, next: 1, _lock: lock };
        spool.adopt().map_err(io)?;
        Ok(spool)
    }

    /// Renames the batches of every writer whose lock is free into this
    /// writer's, in their order, then removes the dead writer's lock.
    fn adopt(&mut self) -> std::io::Result<()> {
        let names = self.names()?;
        let mut dead: Vec<&str> = names.iter().filter_map(|n| n.strip_suffix(".lock")).collect();
        dead.retain(|writer| *writer != self.writer);
        for writer in dead {
            // Opened, not created: a lock another adopter removed stays gone.
            let Ok(lock) = std::fs::OpenOptions::new().write(true).open(self.dir.join(format!("{writer}.lock"))) else {
                continue;
            };
            if !try_lock(&lock) {
                continue;
            }
            let mut batches: Vec<&String> =
                names.iter().filter(|n| n.ends_with(".batch") && batch_order(n).0 == writer).collect();
            batches.sort_by_key(|n| batch_order(n));
            for name in batches {
                let (id, _) = self.next_id();
                match std::fs::rename(self.dir.join(name), self.dir.join(format!("{id}.batch"))) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    other => other?,
                }
            }
            std::fs::remove_file(self.dir.join(format!("{writer}.lock")))?;
        }
        File::open(&self.dir)?.sync_all()
    }

    fn names(&self) -> std::io::Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir)?;
        Ok(entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect())
    }

    /// The id of this writer's next batch, `WRITER.SEQUENCE`, and its
    /// sequence number.
    pub fn next_id(&mut self) -> (String, u64) {
        let sequence = self.next;
        self.next += 1;
        (format!("{}.{sequence}", self.writer), sequence)
    }

    /// This process's name in batch ids and markers.
    pub fn writer(&self) -> &str {
        &self.writer
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
        let path = self.path(&batch.id);
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

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.batch"))
    }

    /// This writer's batches, oldest first (the adopted ones among them).
    pub fn waiting(&self) -> Result<Vec<String>, SpoolError> {
        let names = self.names().map_err(|error| SpoolError::Io { dir: self.dir.clone(), error })?;
        let mut own: Vec<&String> =
            names.iter().filter(|n| n.ends_with(".batch") && batch_order(n).0 == self.writer).collect();
        own.sort_by_key(|n| batch_order(n));
        Ok(own.iter().map(|n| n.trim_end_matches(".batch").to_string()).collect())
    }

    /// The batch `id`, read whole; Err(path) where the file does not read
    /// whole (a disk that lied), which is then set aside as `.damaged`.
    pub fn read(&self, id: &str) -> Result<Result<Batch, PathBuf>, SpoolError> {
        let io = |error| SpoolError::Io { dir: self.dir.clone(), error };
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(io)?;
        match Batch::decode(id.to_string(), &bytes) {
            Some(batch) => Ok(Ok(batch)),
            None => {
                let aside = path.with_extension("damaged");
                std::fs::rename(&path, &aside).map_err(io)?;
                Ok(Err(aside))
            }
        }
    }

    /// The batch is in ClickHouse: its file goes.
    pub fn sent(&self, id: &str) -> Result<(), SpoolError> {
        std::fs::remove_file(self.path(id)).map_err(|error| SpoolError::Io { dir: self.dir.clone(), error })
    }

    /// A batch the server will not take: kept as `ID.refused` for an
    /// operator, no longer sent; returns where.
    pub fn set_aside(&self, id: &str) -> Result<PathBuf, SpoolError> {
        let aside = self.path(id).with_extension("refused");
        std::fs::rename(self.path(id), &aside).map_err(|error| SpoolError::Io { dir: self.dir.clone(), error })?;
        Ok(aside)
    }

    /// Bytes of batches waiting, of every writer.
    fn held_bytes(&self) -> std::io::Result<u64> {
        let mut held = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".batch") {
                held += entry.metadata()?.len();
            }
        }
        Ok(held)
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
        for id in ["w1.2", "w1.10", "w1.3"] {
            spool.keep(&batch(id)).unwrap();
        }
        assert_eq!(spool.waiting().unwrap(), ["w1.2", "w1.3", "w1.10"]);
        assert_eq!(spool.read("w1.2").unwrap().unwrap(), batch("w1.2"));

        let path = dir.join("w1.3.batch");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(spool.read("w1.3").unwrap().unwrap_err(), dir.join("w1.3.damaged"));
        spool.sent("w1.2").unwrap();
        assert_eq!(spool.waiting().unwrap(), ["w1.10"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_live_writers_batches_are_its_own_and_a_dead_ones_are_adopted_in_order_once() {
        let dir = temp_dir("writers");
        let mut alive = Spool::open(&dir, "alive", 1 << 20).unwrap();
        let (id, _) = alive.next_id();
        alive.keep(&batch(&id)).unwrap();
        {
            let mut dead = Spool::open(&dir, "dead", 1 << 20).unwrap();
            for _ in 0..3 {
                let (id, _) = dead.next_id();
                dead.keep(&batch(&id)).unwrap();
            }
            assert!(Spool::open(&dir, "dead", 1 << 20).is_err(), "one process per writer");
        }
        let mut adopter = Spool::open(&dir, "adopter", 1 << 20).unwrap();
        let adopted = adopter.waiting().unwrap();
        assert_eq!(adopted, ["adopter.1", "adopter.2", "adopter.3"]);
        // In the dead writer's order: its third batch is now the third.
        assert_eq!(adopter.read("adopter.3").unwrap().unwrap().chunks, batch("dead.3").chunks);
        assert_eq!(adopter.next_id(), ("adopter.4".to_string(), 4));
        assert!(!dir.join("dead.lock").exists(), "the dead writer's lock goes with its batches");
        let other = Spool::open(&dir, "other", 1 << 20).unwrap();
        assert!(other.waiting().unwrap().is_empty(), "an adopted batch is not adopted again");
        assert_eq!(alive.waiting().unwrap(), ["alive.1"]);
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
