//! Receiving flows from many exporters on one address: UDP datagrams
//! (IPFIX, NetFlow v9 and v5) and IPFIX over TCP (messages framed by their
//! length field). One decoder serves every exporter, keeping their templates
//! apart. A message that cannot be read is counted, logged (the first from
//! each exporter as a warning) and skipped; nothing an exporter sends can
//! stop the collector.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::AsyncReadExt,
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
        ]
    }
}

/// The shared state of the collector's tasks.
#[derive(Clone)]
struct Shared {
    decoder: Arc<Mutex<Decoder>>,
    stats: Arc<CollectorStats>,
    flows: mpsc::Sender<Batch>,
    /// Exporters already warned about a malformed message.
    warned: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl Shared {
    /// Decodes one message and hands its flows on; false once nobody listens.
    async fn take(&self, exporter: SocketAddr, message: &[u8]) -> bool {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let decoded = self.decoder.lock().expect("not poisoned").decode(exporter, message);
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
        if self.warned.lock().expect("not poisoned").insert(exporter) {
            warn!("{exporter}: a message could not be read ({error}); such messages are counted and skipped");
        } else {
            debug!("{exporter}: a message could not be read ({error})");
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
pub async fn serve(listener: Listener, flows: mpsc::Sender<Batch>, stats: Arc<CollectorStats>) -> std::io::Result<()> {
    let Listener { udp, tcp, address } = listener;
    info!("collecting IPFIX and NetFlow v5/v9 on udp://{address}, IPFIX on tcp://{address}");
    if let Some(inode) = socket_inode(&udp) {
        tokio::spawn(watch_socket_drops(inode, stats.clone()));
    }
    let shared = Shared {
        decoder: Arc::new(Mutex::new(Decoder::new())),
        stats,
        flows,
        warned: Arc::new(Mutex::new(HashSet::new())),
    };
    let streams = shared.clone();
    tokio::spawn(async move {
        while let Ok((stream, exporter)) = tcp.accept().await {
            let shared = streams.clone();
            tokio::spawn(async move { read_stream(stream, exporter, shared).await });
        }
    });
    let mut datagram = vec![0u8; 65_535];
    loop {
        let (length, exporter) = udp.recv_from(&mut datagram).await?;
        if !shared.take(exporter, &datagram[..length]).await {
            return Ok(());
        }
    }
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

/// The inode of `socket`, which names it in /proc/net/udp.
fn socket_inode(socket: &impl std::os::fd::AsRawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Keeps `stats.socket_drops` current from the kernel's count for the
/// socket (the last column of /proc/net/udp and udp6), once a second.
async fn watch_socket_drops(inode: u64, stats: Arc<CollectorStats>) {
    let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        every_second.tick().await;
        let drops = ["/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .filter_map(|table| std::fs::read_to_string(table).ok())
            .find_map(|table| socket_drops(&table, inode));
        if let Some(drops) = drops {
            stats.socket_drops.store(drops, Ordering::Relaxed);
        }
    }
}

/// The drops of the socket with `inode` in a /proc/net/udp table, whose
/// columns are: sl local remote st queues tr retrnsmt uid timeout inode ref
/// pointer drops.
fn socket_drops(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        (columns.get(9)?.parse::<u64>().ok()? == inode).then(|| columns.get(12)?.parse().ok()).flatten()
    })
}

/// IPFIX messages from one TCP connection, until it closes or lies about a length.
async fn read_stream(stream: TcpStream, exporter: SocketAddr, shared: Shared) {
    debug!("{exporter}: IPFIX over TCP connected");
    // Two reads a message (header, body) from a buffer, not two system calls.
    let mut stream = tokio::io::BufReader::with_capacity(1 << 18, stream);
    let mut message = Vec::with_capacity(65_535);
    loop {
        let mut head = [0u8; 4];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        // A stream that is out of step cannot be resynchronised: close it.
        let length = match ipfix_message_length(head) {
            Ok(length) => length,
            Err(e) => return shared.malformed(exporter, &e),
        };
        message.clear();
        message.extend_from_slice(&head);
        message.resize(length, 0);
        if stream.read_exact(&mut message[4..]).await.is_err() || !shared.take(exporter, &message).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

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
        let table = std::fs::read_to_string("/proc/net/udp").unwrap();
        let drops = socket_drops(&table, socket_inode(&receiver).unwrap()).expect("the socket is listed");
        receiver.set_nonblocking(true).unwrap();
        let mut received = 0;
        while receiver.recv(&mut [0; 2_000]).is_ok() {
            received += 1;
        }
        assert!(drops > 0, "a buffer of a few datagrams overflows");
        assert_eq!(received + drops, sent);
    }
}
