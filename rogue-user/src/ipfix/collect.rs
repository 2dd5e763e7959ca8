//! Receiving flows from many exporters on one address: UDP datagrams
//! (IPFIX, NetFlow v9 and v5) and IPFIX over TCP (messages framed by their
//! length field). One decoder serves every exporter, keeping their templates
//! apart. A message that cannot be read is counted, logged (the first from
//! each exporter as a warning) and skipped; nothing an exporter sends can
//! stop the collector.
//!
//! Exporters are whoever sends, so every resource they can take is bounded
//! ([`Limits`]), and every bound that bites is counted and logged: the
//! exporters whose state is kept, the TCP connections (also by the file
//! descriptor limit: running out of descriptors makes the listener wait and
//! retry, never stop), how long a TCP connection may stay silent, and which
//! addresses may send at all. An idle TCP connection holds no buffer.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use ipnet::IpNet;
use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
};
use tracing::{debug, info, warn};

use super::decode::{DecodeError, Decoded, Decoder, ipfix_message_length};
use crate::flows::FlowRecord;

/// Flows from one message, with where they came from: the exporter and its
/// observation domain (IPFIX), source id (v9) or engine (v5).
#[derive(Debug)]
pub struct Batch {
    pub origin: String,
    pub flows: Vec<FlowRecord>,
}

/// What exporters may take of the collector (see `collect` in the
/// configuration for the reasons and defaults).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_exporters: usize,
    pub exporter_idle: Duration,
    pub max_tcp_connections: usize,
    pub tcp_idle: Duration,
    /// Empty: any address may send.
    pub allowed: Vec<IpNet>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_exporters: 4_096,
            exporter_idle: Duration::from_secs(1_800),
            max_tcp_connections: 1_024,
            tcp_idle: Duration::from_secs(600),
            allowed: Vec::new(),
        }
    }
}

impl Limits {
    fn allows(&self, exporter: IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|net| net.contains(&exporter))
    }
}

/// What the collector received, for summaries and metrics.
#[derive(Debug, Default)]
pub struct CollectorStats {
    pub messages: AtomicU64,
    pub flows: AtomicU64,
    /// Messages that could not be read at all.
    pub malformed: AtomicU64,
    /// Data sets dropped because their template had not arrived.
    pub sets_without_template: AtomicU64,
    /// Records without addresses or with impossible times, dropped.
    pub records_unreadable: AtomicU64,
    /// Datagrams the kernel dropped because the UDP socket's buffer was
    /// full: what an exporter's burst costs before the decoder sees it.
    pub socket_drops: AtomicU64,
    /// Datagrams and connections from addresses not in `allowed_exporters`.
    pub refused_exporters: AtomicU64,
    /// Exporters whose state is kept now, and those forgotten (to make
    /// room, or silent too long).
    pub exporters: AtomicU64,
    pub exporters_evicted: AtomicU64,
    pub exporters_expired: AtomicU64,
    /// TCP connections open now; refused at the bound; failed accepts
    /// (descriptors exhausted, say); closed for silence; ended inside a
    /// message (what they had sent of it is lost).
    pub tcp_connections: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub tcp_accept_errors: AtomicU64,
    pub tcp_idle_closed: AtomicU64,
    pub tcp_partial_messages: AtomicU64,
    /// UDP receives that failed.
    pub udp_errors: AtomicU64,
}

impl CollectorStats {
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed).to_string();
        vec![
            ("messages received", get(&self.messages)),
            ("flows received", get(&self.flows)),
            ("malformed messages", get(&self.malformed)),
            ("sets w/o template", get(&self.sets_without_template)),
            ("unreadable records", get(&self.records_unreadable)),
            ("datagrams dropped by the socket", get(&self.socket_drops)),
            ("refused exporters", get(&self.refused_exporters)),
            (
                "exporters forgotten",
                format!("{} (room), {} (silent)", get(&self.exporters_evicted), get(&self.exporters_expired)),
            ),
            ("tcp connections refused", get(&self.tcp_refused)),
            ("tcp accept errors", get(&self.tcp_accept_errors)),
            ("tcp closed idle", get(&self.tcp_idle_closed)),
            ("tcp partial messages", get(&self.tcp_partial_messages)),
        ]
    }
}

/// Exporters warned about a malformed message, at most this many
/// remembered (a flood of forged sources must not grow it).
const WARNED_EXPORTERS: usize = 1_024;

/// The shared state of the collector's tasks.
#[derive(Clone)]
struct Shared {
    decoder: Arc<Mutex<Decoder>>,
    stats: Arc<CollectorStats>,
    flows: mpsc::Sender<Batch>,
    warned: Arc<Mutex<HashSet<SocketAddr>>>,
    limits: Arc<Limits>,
    /// When a bound was last logged, so a flood makes one line a minute.
    logged: Arc<Mutex<Option<Instant>>>,
}

impl Shared {
    /// Decodes one message and hands its flows on; false once nobody listens.
    async fn take(&self, exporter: SocketAddr, message: &[u8]) -> bool {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let decoded = {
            let mut decoder = self.decoder.lock().expect("not poisoned");
            let decoded = decoder.decode(exporter, message);
            self.stats.exporters.store(decoder.exporters() as u64, Ordering::Relaxed);
            self.stats.exporters_evicted.store(decoder.evicted, Ordering::Relaxed);
            decoded
        };
        match decoded {
            Ok(Decoded { flows, sets_without_template, records_unreadable, domain, .. }) => {
                self.stats.sets_without_template.fetch_add(sets_without_template as u64, Ordering::Relaxed);
                self.stats.records_unreadable.fetch_add(records_unreadable as u64, Ordering::Relaxed);
                if flows.is_empty() {
                    return true;
                }
                self.stats.flows.fetch_add(flows.len() as u64, Ordering::Relaxed);
                self.flows.send(Batch { origin: format!("{exporter} domain {domain}"), flows }).await.is_ok()
            }
            Err(e) => {
                self.malformed(exporter, &e);
                true
            }
        }
    }

    fn malformed(&self, exporter: SocketAddr, error: &DecodeError) {
        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        let mut warned = self.warned.lock().expect("not poisoned");
        if warned.len() >= WARNED_EXPORTERS {
            warned.clear();
        }
        if warned.insert(exporter) {
            warn!("{exporter}: a message could not be read ({error}); such messages are counted and skipped");
        } else {
            debug!("{exporter}: a message could not be read ({error})");
        }
    }

    /// Whether `exporter` may send; a refusal is counted (and logged now and then).
    fn admits(&self, exporter: SocketAddr) -> bool {
        if self.limits.allows(exporter.ip()) {
            return true;
        }
        self.stats.refused_exporters.fetch_add(1, Ordering::Relaxed);
        self.now_and_then(|| {
            warn!("{exporter} is not in collect.allowed_exporters: its messages are dropped (counted)")
        });
        false
    }

    /// Runs `log` at most once a minute.
    fn now_and_then(&self, log: impl FnOnce()) {
        let mut logged = self.logged.lock().expect("not poisoned");
        if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *logged = Some(Instant::now());
            log();
        }
    }
}

/// The collector's sockets, bound before anyone is told it is running.
pub struct Listener {
    udp: UdpSocket,
    tcp: TcpListener,
    address: SocketAddr,
}

/// Binds `listen` for UDP and TCP; an error if either is taken.
pub async fn bind(listen: SocketAddr) -> std::io::Result<Listener> {
    let udp = UdpSocket::bind(listen).await?;
    enlarge_receive_buffer(&udp);
    let tcp = TcpListener::bind(listen).await?;
    Ok(Listener { udp, tcp, address: listen })
}

/// Receives on `listener` until the receiver of `flows` is gone.
pub async fn serve(
    listener: Listener,
    flows: mpsc::Sender<Batch>,
    stats: Arc<CollectorStats>,
    limits: Limits,
) -> std::io::Result<()> {
    let Listener { udp, tcp, address } = listener;
    info!(target: crate::LIFECYCLE, "collecting IPFIX and NetFlow v5/v9 on udp://{address}, IPFIX on tcp://{address}");
    let udp = Arc::new(udp);
    tokio::spawn(watch_socket_drops(Arc::downgrade(&udp), stats.clone()));
    let shared = Shared {
        decoder: Arc::new(Mutex::new(Decoder::with_limit(limits.max_exporters))),
        stats,
        flows,
        warned: Arc::new(Mutex::new(HashSet::new())),
        limits: Arc::new(limits),
        logged: Arc::new(Mutex::new(None)),
    };
    tokio::spawn(expire_exporters(shared.clone()));
    tokio::spawn(accept_streams(tcp, shared.clone()));
    let mut datagram = vec![0u8; 65_535];
    loop {
        let (length, exporter) = match udp.recv_from(&mut datagram).await {
            Ok(received) => received,
            Err(e) => {
                shared.stats.udp_errors.fetch_add(1, Ordering::Relaxed);
                shared.now_and_then(|| warn!("receiving a datagram failed ({e}); counted, receiving on"));
                continue;
            }
        };
        if shared.admits(exporter) && !shared.take(exporter, &datagram[..length]).await {
            return Ok(());
        }
    }
}

/// Forgets exporters silent for longer than the limit, once a minute.
async fn expire_exporters(shared: Shared) {
    let every = shared.limits.exporter_idle.min(Duration::from_secs(60)).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let mut decoder = shared.decoder.lock().expect("not poisoned");
        decoder.expire(shared.limits.exporter_idle);
        shared.stats.exporters.store(decoder.exporters() as u64, Ordering::Relaxed);
        shared.stats.exporters_expired.store(decoder.expired, Ordering::Relaxed);
    }
}

/// Accepts IPFIX-over-TCP exporters for as long as the collector runs: at
/// most the connection bound at once, and through any failure to accept
/// (out of descriptors: wait, then try again).
async fn accept_streams(tcp: TcpListener, shared: Shared) {
    let bound = connection_bound(shared.limits.max_tcp_connections);
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, exporter) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                shared.stats.tcp_accept_errors.fetch_add(1, Ordering::Relaxed);
                if is_resource_exhaustion(&e) {
                    shared.now_and_then(|| {
                        warn!(
                            "cannot accept IPFIX-over-TCP exporters: {e}; retrying (raise the file descriptor limit, \
                             or lower collect.max_tcp_connections)"
                        )
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                } else {
                    debug!("accepting an IPFIX-over-TCP connection failed: {e}");
                }
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        if !shared.admits(exporter) {
            continue;
        }
        if shared.stats.tcp_connections.load(Ordering::Relaxed) >= bound as u64 {
            shared.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            shared.now_and_then(|| {
                warn!(
                    "refusing IPFIX-over-TCP exporter {exporter}: {bound} connections are open already \
                     (collect.max_tcp_connections and the file descriptor limit); refusals are counted"
                )
            });
            continue;
        }
        shared.stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            read_stream(stream, exporter, &shared).await;
            shared.stats.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// `configured`, lowered to what the file descriptor limit leaves after a
/// reserve for the store, the metrics endpoint and sinks.
fn connection_bound(configured: usize) -> usize {
    const RESERVE: u64 = 64;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return configured;
    }
    let room = limit.rlim_cur.saturating_sub(RESERVE).max(1);
    if (room as usize) < configured {
        info!(
            target: crate::LIFECYCLE,
            "IPFIX over TCP: at most {room} connections at once, what the file descriptor limit ({}) leaves \
             (collect.max_tcp_connections is {configured})",
            limit.rlim_cur
        );
    }
    configured.min(room as usize)
}

/// Errors that mean the system (or this process) is out of something,
/// which passes: descriptors, buffers, memory.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Exporters send in bursts (a router flushing its cache): a receive buffer
/// of 8 MiB holds thousands of datagrams while the decoder catches up. With
/// CAP_NET_ADMIN the system's limit (net.core.rmem_max) does not apply.
fn enlarge_receive_buffer(socket: &UdpSocket) {
    let _ = set_receive_buffer(socket, libc::SO_RCVBUFFORCE, 8 << 20)
        || set_receive_buffer(socket, libc::SO_RCVBUF, 8 << 20);
}

/// Sets the receive buffer with `option` (SO_RCVBUF or SO_RCVBUFFORCE); false if refused.
fn set_receive_buffer(socket: &impl std::os::fd::AsRawFd, option: libc::c_int, bytes: libc::c_int) -> bool {
    // SAFETY: a valid socket and a c_int option value of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Keeps `stats.socket_drops` current from the kernel's count for the
/// socket, once a second, until the socket is gone.
async fn watch_socket_drops(socket: Weak<UdpSocket>, stats: Arc<CollectorStats>) {
    let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        every_second.tick().await;
        let Some(socket) = socket.upgrade() else { return };
        if let Some(drops) = socket_drops(&*socket) {
            stats.socket_drops.store(drops, Ordering::Relaxed);
        }
    }
}

/// Datagrams the kernel dropped for `socket` (its receive buffer full, or
/// its checksum bad): the sk_drops counter that /proc/net/udp shows in its
/// last column, asked of the socket itself (SO_MEMINFO) rather than found
/// by inode among every UDP socket of the host.
fn socket_drops(socket: &impl std::os::fd::AsRawFd) -> Option<u64> {
    // The counters up to and including the drops, the last one.
    let mut meminfo = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut length = size_of_val(&meminfo) as libc::socklen_t;
    // SAFETY: a valid socket; the kernel writes at most `length` bytes into meminfo.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            meminfo.as_mut_ptr().cast(),
            &mut length,
        )
    };
    (rc == 0 && length as usize == size_of_val(&meminfo)).then(|| meminfo[libc::SK_MEMINFO_DROPS as usize] as u64)
}

/// Bytes read from a connection at a time.
const READ_BYTES: usize = 64 << 10;

/// IPFIX messages from one TCP connection, until it closes, falls silent
/// for the limit, or lies about a length. Messages are cut from the front of
/// one buffer as they complete (no copying down), and the buffer exists only
/// while bytes wait in it.
async fn read_stream(stream: TcpStream, exporter: SocketAddr, shared: &Shared) {
    debug!("{exporter}: IPFIX over TCP connected");
    let mut buffer = BytesMut::new();
    let ended = loop {
        while let Some(head) = buffer.get(..4) {
            // A stream that is out of step cannot be resynchronised: close it.
            let length = match ipfix_message_length(head.try_into().expect("four bytes")) {
                Ok(length) => length,
                Err(e) => {
                    shared.malformed(exporter, &e);
                    return;
                }
            };
            if buffer.len() < length {
                break;
            }
            let message = buffer.split_to(length);
            if !shared.take(exporter, &message).await {
                return;
            }
        }
        if buffer.is_empty() {
            buffer = BytesMut::new();
        }
        match tokio::time::timeout(shared.limits.tcp_idle, stream.readable()).await {
            Err(_) => {
                shared.stats.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
                debug!("{exporter}: IPFIX over TCP silent for {:?}; closed", shared.limits.tcp_idle);
                break "idle";
            }
            Ok(Err(_)) => break "error",
            Ok(Ok(())) => {}
        }
        buffer.reserve(READ_BYTES);
        match stream.try_read_buf(&mut buffer) {
            Ok(0) => break "closed",
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break "error",
        }
    };
    if !buffer.is_empty() {
        shared.stats.tcp_partial_messages.fetch_add(1, Ordering::Relaxed);
        debug!("{exporter}: the connection ended ({ended}) inside a message; its {} bytes are lost", buffer.len());
    }
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, os::fd::AsRawFd};

    use super::*;

    /// The kernel's count, read as the collector reads it, accounts for
    /// every datagram the receiver did not get.
    #[test]
    fn datagrams_the_socket_had_no_room_for_are_counted() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(set_receive_buffer(&receiver, libc::SO_RCVBUF, 1), "the kernel's smallest buffer");
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = 200;
        for _ in 0..sent {
            sender.send_to(&[0; 1_000], receiver.local_addr().unwrap()).unwrap();
        }
        let drops = socket_drops(&receiver).expect("SO_MEMINFO");
        assert_eq!(drops, proc_net_udp_drops(&receiver), "the count /proc/net/udp shows");
        receiver.set_nonblocking(true).unwrap();
        let mut received = 0;
        while receiver.recv(&mut [0; 2_000]).is_ok() {
            received += 1;
        }
        assert!(drops > 0, "a buffer of a few datagrams overflows");
        assert_eq!(received + drops, sent);
    }

    /// The drops column of `socket`'s line in /proc/net/udp (columns: sl
    /// local remote st queues tr retrnsmt uid timeout inode ref pointer
    /// drops), the socket found by the inode its descriptor links to.
    fn proc_net_udp_drops(socket: &UdpSocket) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).unwrap();
        let inode = link.to_str().unwrap().strip_prefix("socket:[").unwrap().strip_suffix(']').unwrap().to_string();
        let table = std::fs::read_to_string("/proc/net/udp").unwrap();
        let line = table.lines().find(|line| line.split_whitespace().nth(9) == Some(&inode)).expect("listed");
        line.split_whitespace().nth(12).unwrap().parse().unwrap()
    }
}
