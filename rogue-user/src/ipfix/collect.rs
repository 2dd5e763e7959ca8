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

use super::decode::{DecodeError, Decoded, Decoder};
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

/// Listens on `listen` (UDP and TCP) until the receiver of `flows` is gone.
pub async fn serve(listen: SocketAddr, flows: mpsc::Sender<Batch>, stats: Arc<CollectorStats>) -> std::io::Result<()> {
    let udp = UdpSocket::bind(listen).await?;
    let tcp = TcpListener::bind(listen).await?;
    info!("collecting IPFIX and NetFlow v5/v9 on udp://{listen}, IPFIX on tcp://{listen}");
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

/// IPFIX messages from one TCP connection, until it closes or lies about a length.
async fn read_stream(mut stream: TcpStream, exporter: SocketAddr, shared: Shared) {
    debug!("{exporter}: IPFIX over TCP connected");
    let mut message = Vec::with_capacity(65_535);
    loop {
        let mut head = [0u8; 4];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let (version, length) =
            (u16::from_be_bytes([head[0], head[1]]), u16::from_be_bytes([head[2], head[3]]) as usize);
        // A stream that is out of step cannot be resynchronised: close it.
        if version != 10 {
            return shared.malformed(exporter, &DecodeError::Version(version));
        }
        if length < 16 {
            return shared.malformed(exporter, &DecodeError::Length { header: length, actual: 4 });
        }
        message.clear();
        message.extend_from_slice(&head);
        message.resize(length, 0);
        if stream.read_exact(&mut message[4..]).await.is_err() || !shared.take(exporter, &message).await {
            return;
        }
    }
}
