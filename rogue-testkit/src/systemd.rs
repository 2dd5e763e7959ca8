//! systemd's side of the notify protocol (sd_notify(3)), for tests of the
//! agent's and collector's `Type=notify` units where systemd is not PID 1:
//! the datagram socket NOTIFY_SOCKET names, read as systemd reads it.

use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

pub struct NotifySocket {
    dir: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    pub fn bind(name: &str) -> NotifySocket {
        let dir = std::env::temp_dir().join(format!("rogue-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
        NotifySocket { dir, socket }
    }

    /// Points `command` at this socket, with a watchdog of `watchdog` (as
    /// `WatchdogSec=` sets WATCHDOG_USEC).
    pub fn serve(&self, command: &mut Command, watchdog: Duration) {
        command.env("NOTIFY_SOCKET", self.dir.join("notify"));
        command.env("WATCHDOG_USEC", watchdog.as_micros().to_string()).env_remove("WATCHDOG_PID");
    }

    /// The messages that arrive within `wait`, each one datagram's text.
    pub fn messages_within(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut messages = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.socket.set_read_timeout(Some(left)).unwrap();
            let mut buffer = [0u8; 4096];
            match self.socket.recv(&mut buffer) {
                Ok(n) => messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned()),
                Err(_) => break,
            }
        }
        messages
    }

    /// Waits (30 s at most) for a message containing `text`; returns it and
    /// every message before it.
    pub fn wait_for(&self, text: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            self.socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut buffer = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buffer) {
                seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                if seen.last().unwrap().contains(text) {
                    return seen;
                }
            }
        }
        panic!("no notification with {text:?} within 30 s; received: {seen:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
