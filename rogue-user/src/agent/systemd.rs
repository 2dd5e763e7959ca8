//! The agent's side of systemd's service protocol (sd_notify(3)), for the
//! units' `Type=notify` and `WatchdogSec=`: READY once the meter is attached
//! or the listener bound, RELOADING and READY around a SIGHUP, STOPPING,
//! and watchdog pings from the main loop, so an agent whose loop is stuck
//! is restarted. Outside systemd (no NOTIFY_SOCKET) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

pub struct ServiceManager {
    /// How often to ping the watchdog: half its timeout, as sd_watchdog_enabled(3) advises.
    watchdog: Option<Duration>,
}

impl ServiceManager {
    /// The service manager this process was started by, if any.
    pub fn from_environment() -> ServiceManager {
        // At least a millisecond: a WATCHDOG_USEC of 1 would make a zero
        // period, which no timer takes.
        let ping_every = |timeout: Duration| (timeout / 2).max(Duration::from_millis(1));
        ServiceManager { watchdog: sd_notify::watchdog_enabled().map(ping_every) }
    }

    /// How often [`ping`](Self::ping) must be called, if a watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn ready(&self, status: &str) {
        notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Before a reload; systemd 253 and later want the monotonic time with it.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
        states.extend(NotifyState::monotonic_usec_now().ok());
        notify(&states);
    }

    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping: storing and evaluating what is in flight")]);
    }

    pub fn ping(&self) {
        notify(&[NotifyState::Watchdog]);
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("telling systemd {:?} failed: {e}", states.first().map(ToString::to_string).unwrap_or_default());
    }
}
