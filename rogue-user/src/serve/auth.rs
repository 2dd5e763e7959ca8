//! Who may use the console: the users file (names and Argon2id password
//! hashes, PHC strings), the sessions of those logged in (a random token
//! in an HttpOnly, SameSite=Strict cookie, forgotten after
//! [`SESSION_IDLE`] without a request), and each session's CSRF token,
//! which every form that acts carries and every action checks.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use serde::Deserialize;

use crate::config::{self, ConfigError};

/// A session is forgotten after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// The cookie that carries the session token.
pub const COOKIE: &str = "rogue_session";
/// At most this many sessions are kept; the longest idle goes first.
const MAX_SESSIONS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Read(#[from] ConfigError),
    #[error(
        "{path}: user {name:?}: password_hash is not an Argon2 PHC string ({message}); make one with `rogue serve --hash-password`"
    )]
    Hash { path: PathBuf, name: String, message: String },
    #[error("{path}: user {name:?} is listed twice")]
    Duplicate { path: PathBuf, name: String },
    #[error("{path}: no users: list at least one ({{name, password_hash}})")]
    Empty { path: PathBuf },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
}

/// The users file, read once at start.
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let entries: Vec<UserEntry> = config::read_yaml(path)?;
        if entries.is_empty() {
            return Err(UsersError::Empty { path: path.into() });
        }
        let mut hashes = HashMap::new();
        for UserEntry { name, password_hash } in entries {
            if let Err(e) = PasswordHash::new(&password_hash) {
                return Err(UsersError::Hash { path: path.into(), name, message: e.to_string() });
            }
            if hashes.insert(name.clone(), password_hash).is_some() {
                return Err(UsersError::Duplicate { path: path.into(), name });
            }
        }
        Ok(Users { hashes })
    }

    /// Whether `password` is `name`'s. Takes as long for a name that is
    /// not there, so a failed login does not tell which names exist.
    pub fn check(&self, name: &str, password: &str) -> bool {
        static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let decoy = DECOY.get_or_init(|| hash_password("not a password").expect("hashing works"));
        let (hash, known) = match self.hashes.get(name) {
            Some(hash) => (hash.as_str(), true),
            None => (decoy.as_str(), false),
        };
        let parsed = PasswordHash::new(hash).expect("checked at load");
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && known
    }
}

/// An Argon2id hash of `password` with a random salt, as the users file holds it.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// `N` random bytes from the kernel, as hex.
pub fn random_hex<const N: usize>() -> String {
    random_bytes::<N>().iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` random bytes from the kernel (getrandom(2)).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length stay within `bytes`.
        let got = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), N - filled, 0) };
        assert!(got > 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted, "getrandom");
        filled += got.max(0) as usize;
    }
    bytes
}

/// One logged-in analyst.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    /// The token every form that acts carries.
    pub csrf: String,
    last_seen: Instant,
}

/// The sessions of this process (a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for `user`; returns its token.
    pub fn start(&self, user: &str) -> String {
        let token = random_hex::<32>();
        let session = Session { user: user.into(), csrf: random_hex::<32>(), last_seen: Instant::now() };
        let mut sessions = self.by_token.lock().expect("sessions lock");
        sessions.retain(|_, s| s.last_seen.elapsed() < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.last_seen).map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(token.clone(), session);
        token
    }

    /// The session of `token`, if it is live; its idle time starts again.
    pub fn get(&self, token: &str) -> Option<Session> {
        let mut sessions = self.by_token.lock().expect("sessions lock");
        let session = sessions.get_mut(token)?;
        if session.last_seen.elapsed() >= SESSION_IDLE {
            sessions.remove(token);
            return None;
        }
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    pub fn end(&self, token: &str) {
        self.by_token.lock().expect("sessions lock").remove(token);
    }
}

/// The value of cookie `name` in a Cookie header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_checks_its_password_and_no_other() {
        let dir = std::env::temp_dir().join(format!("rogue-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.yaml");
        let hash = hash_password("correct horse").unwrap();
        std::fs::write(&path, format!("- name: alice\n  password_hash: '{hash}'\n")).unwrap();
        let users = Users::load(&path).unwrap();
        assert!(users.check("alice", "correct horse"));
        assert!(!users.check("alice", "correct horse "));
        assert!(!users.check("bob", "correct horse"));

        std::fs::write(&path, "- name: alice\n  password_hash: hunter2\n").unwrap();
        let error = Users::load(&path).err().unwrap().to_string();
        assert!(error.contains("user \"alice\": password_hash is not an Argon2 PHC string"), "{error}");
        std::fs::write(&path, format!("- name: a\n  password_hash: '{hash}'\n- name: a\n  password_hash: '{hash}'\n"))
            .unwrap();
        assert!(Users::load(&path).err().unwrap().to_string().contains("user \"a\" is listed twice"));
        std::fs::write(&path, "- name: a\n  pasword_hash: x\n").unwrap();
        let error = Users::load(&path).err().unwrap().to_string();
        assert!(error.contains("unknown field `pasword_hash`") && error.contains("line"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sessions_end_and_tokens_are_random() {
        let sessions = Sessions::default();
        let (a, b) = (sessions.start("alice"), sessions.start("alice"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let session = sessions.get(&a).unwrap();
        assert_eq!(session.user, "alice");
        assert_ne!(session.csrf, sessions.get(&b).unwrap().csrf);
        sessions.end(&a);
        assert!(sessions.get(&a).is_none());
        assert!(sessions.get("").is_none());
        assert_eq!(cookie("x=1; rogue_session=abc; y=2", COOKIE), Some("abc"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
