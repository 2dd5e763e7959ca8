//! The SQLite backend: one file in WAL mode on one box, the default.
//!
//! The schema is versioned (`user_version`) and migrated on open. Only the
//! commands that gather traffic create a store ([`Access::Create`]); every
//! other opens an existing one, and every error names the store's file.

use std::{
    net::IpAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OpenFlags};

mod findings;
pub mod ports;
mod read;
mod retention;
mod schema;
mod write;

use super::{Access, Ingest, Result, Store, StoreError};

/// Stores at most this large are checked (`PRAGMA quick_check`) every time
/// they are opened: about 80 ms at the 400 MB/s the check runs at. Larger
/// ones are checked when their last user did not close them.
const CHECK_ON_OPEN_BYTES: u64 = 32 << 20;

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the store at `path` as `access` allows, checks it when that is
    /// cheap or its last user died holding it, and migrates it.
    pub fn open(path: &Path, access: Access) -> Result<SqliteStore> {
        let created = match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => return Err(not_a_store(path, "it is a directory")),
            Ok(metadata) if !metadata.is_file() => return Err(not_a_store(path, "it is not a regular file")),
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && access == Access::Create => {
                create_private(path)?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path: path.into() });
            }
            Err(e) => return Err(not_a_store(path, &format!("cannot read it: {e}"))),
        };
        let closed_cleanly = closed_cleanly(path);
        let mut store = SqliteStore::connect(path, access)?;
        if created {
            store.conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| store.error(e))?;
        }
        store.check_header()?;
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let writes = access != Access::ReadOnly;
        if size <= CHECK_ON_OPEN_BYTES || (!closed_cleanly && writes) {
            store.quick_check()?;
        } else if !closed_cleanly {
            tracing::warn!(
                "store {}: the last program using it ended without closing it; `rogue store check` verifies it",
                path.display()
            );
        }
        if store.needs_migration()? && access == Access::ReadOnly {
            store = SqliteStore::connect(path, Access::ReadWrite)?;
        }
        store.migrate()?;
        Ok(store)
    }

    fn connect(path: &Path, access: Access) -> Result<SqliteStore> {
        let flags = match access {
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            Access::Create | Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| error_at(path, e))?;
        let store = SqliteStore { conn, path: path.into() };
        store.run(ports::define_functions)?;
        store.run(|c| {
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "foreign_keys", "ON")?;
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            // A page cache of 128 MiB (SQLite's default is 2 MiB): an ingest's
            // B-tree pages stay in memory rather than spilling to the WAL and
            // being read back.
            c.pragma_update(None, "cache_size", -131_072)
        })?;
        if access == Access::ReadOnly {
            // A reader (a console page, a query command) maps the file
            // rather than copying its pages into a cache of its own: pages
            // open several at once, each reading the same host's flows.
            // rogue never shrinks the file (no VACUUM), which is what makes
            // a mapping unsafe.
            store.run(|c| c.pragma_update(None, "mmap_size", 1i64 << 40))?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection; an error names the store's file.
    fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn).map_err(|e| self.error(e))
    }

    fn error(&self, error: rusqlite::Error) -> StoreError {
        error_at(&self.path, error)
    }

    /// Reading the header tells an SQLite database from any other file.
    fn check_header(&self) -> Result<()> {
        self.run(|c| c.query_row("PRAGMA schema_version", [], |row| row.get::<_, i64>(0))).map(drop)
    }

    /// `PRAGMA quick_check`: the B-trees' structure, page by page (not
    /// whether indexes match their tables; `check(true)` does that too).
    fn quick_check(&self) -> Result<()> {
        let problems = self.check(false)?;
        if problems.is_empty() {
            return Ok(());
        }
        Err(StoreError::Corrupt { path: self.path.clone(), detail: summarise_problems(&problems) })
    }

    fn needs_migration(&self) -> Result<bool> {
        Ok(self.schema_version()? < schema::MIGRATIONS.len() as i64)
    }

    fn migrate(&mut self) -> Result<()> {
        let found = self.schema_version()?;
        let known = schema::MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew { path: self.path.clone(), found, known });
        }
        if found == known {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| error_at(&path, e))?;
        for (version, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(|e| error_at(&path, e))?;
            tx.pragma_update(None, "user_version", version as i64 + 1).map_err(|e| error_at(&path, e))?;
        }
        tx.commit().map_err(|e| error_at(&path, e))
    }

    /// Runs `f` in one transaction: everything it wrote is kept if it
    /// returns Ok, nothing otherwise.
    fn transaction<T>(&mut self, f: impl FnOnce(&mut SqliteStore) -> Result<T>) -> Result<T> {
        // Inside another (in_transaction), a step joins it: the outer one
        // commits or rolls back the whole.
        if !self.conn.is_autocommit() {
            return f(self);
        }
        self.run(|c| c.execute_batch("BEGIN IMMEDIATE"))?;
        match f(self) {
            Ok(value) => {
                self.run(|c| c.execute_batch("COMMIT"))?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn ingest(&mut self) -> Result<Box<dyn Ingest + '_>> {
        Ok(Box::new(self.begin_ingest()?))
    }

    fn in_transaction(&mut self, f: &mut dyn FnMut(&mut dyn Store) -> Result<()>) -> Result<()> {
        self.transaction(|store| f(store))
    }

    /// What SQLite's integrity check finds wrong; empty when the store is
    /// sound. `full` also compares every index with its table.
    fn check(&self, full: bool) -> Result<Vec<String>> {
        let pragma = if full { "PRAGMA integrity_check" } else { "PRAGMA quick_check" };
        let checked = self.run(|c| {
            let mut statement = c.prepare(pragma)?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        });
        match checked {
            Ok(lines) if lines == ["ok"] => Ok(Vec::new()),
            Ok(lines) => Ok(lines.iter().flat_map(|l| l.lines()).map(str::to_string).collect()),
            Err(StoreError::Corrupt { detail, .. }) => Ok(vec![detail]),
            Err(e) => Err(e),
        }
    }

    /// The schema version after migrations.
    fn schema_version(&self) -> Result<i64> {
        self.run(|c| c.pragma_query_value(None, "user_version", |row| row.get(0)))
    }

    /// Rows in a table (for tests and diagnostics).
    fn count(&self, table: &str) -> Result<u64> {
        assert!(table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "table name");
        self.run(|c| c.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)))
    }
}

/// An SQLite error as a store error naming `path`: damage and a read-only
/// file or file system get their own wording.
fn error_at(path: &Path, error: rusqlite::Error) -> StoreError {
    match sqlite_code(&error) {
        Some(rusqlite::ErrorCode::NotADatabase) if !has_sqlite_header(path) => {
            not_a_store(path, "it is not an SQLite database")
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            StoreError::Corrupt { path: path.into(), detail: error.to_string() }
        }
        Some(rusqlite::ErrorCode::ReadOnly) => StoreError::ReadOnly { path: path.into(), error },
        _ => StoreError::Sql { path: path.into(), error },
    }
}

fn sqlite_code(error: &rusqlite::Error) -> Option<rusqlite::ErrorCode> {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
        _ => None,
    }
}

/// Whether the file at `path` starts as every SQLite database does.
fn has_sqlite_header(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut header)).is_ok()
        && &header == b"SQLite format 3\0"
}

fn not_a_store(path: &Path, reason: &str) -> StoreError {
    StoreError::NotAStore { path: path.into(), reason: reason.into() }
}

/// The first problems an integrity check listed, on one line.
fn summarise_problems(problems: &[String]) -> String {
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    let more = problems.len().saturating_sub(shown.len());
    let mut text = shown.join("; ");
    if more > 0 {
        text += &format!("; and {more} more");
    }
    text
}

/// Creates the store's file readable by its owner only (it records who
/// talked to whom); SQLite gives its WAL and shared-memory files the same
/// permissions. The directory must exist: rogue does not guess where a
/// store belongs (a packaged install has /var/lib/rogue).
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let create_error = |reason: String| StoreError::Create { path: path.into(), reason };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(create_error(format!("the directory {} does not exist", dir.display())));
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(create_error(e.to_string())),
        _ => Ok(()),
    }
}

/// Whether the store's last user closed it. SQLite removes the WAL when the
/// last connection closes, and every open connection holds a read lock on
/// byte 128 of the shared-memory file (its "dead man switch"): a WAL with
/// content and no such lock means a program died holding the store. Its
/// committed transactions are safe (the WAL replays them); the check after
/// it is a precaution against a disk that lied about what it wrote.
fn closed_cleanly(path: &Path) -> bool {
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    if std::fs::metadata(with_suffix("-wal")).map_or(true, |m| m.len() == 0) {
        return true;
    }
    let Ok(shm) = std::fs::File::open(with_suffix("-shm")) else { return false };
    const DEAD_MAN_SWITCH: libc::off_t = 128;
    let mut lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: DEAD_MAN_SWITCH,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: F_GETLK on an open file with a valid flock; it only reports.
    let rc = unsafe { libc::fcntl(shm.as_raw_fd(), libc::F_GETLK, &mut lock) };
    rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short
}

/// The address in column `index`.
fn addr(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<IpAddr> {
    let text: String = row.get(index)?;
    text.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

#[cfg(test)]
mod tests;
