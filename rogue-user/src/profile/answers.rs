//! UDP exchanges: which side asked and which answered. UDP has no
//! handshake, so a datagram to a service port says nothing about the host
//! it was sent to (a scan is exactly that); a host serves a UDP service when
//! it answers, from the service port, a peer that sent to it. Flows are
//! unidirectional and complete one at a time, so each UDP flow on a service
//! port waits here for the flow of the other direction; when both are seen,
//! the side whose first flow started first asked. A flow whose other
//! direction does not complete within the horizon (in data time) was never
//! answered, and is counted as such. When both directions start in the same
//! clock tick, the end with the higher port asked (clients ask from
//! ephemeral ports).

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use crate::{flows::FlowRecord, time::Nanos};

/// One end of an exchange.
type End = (IpAddr, u16);

/// The ends of an exchange, lower first, whichever way a flow goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ExchangeKey(End, End);

impl ExchangeKey {
    /// The key of `flow`'s exchange, and whether `flow` goes from the lower
    /// end to the higher.
    fn of(flow: &FlowRecord) -> (ExchangeKey, usize) {
        let (src, dst) = ((flow.src, flow.sport), (flow.dst, flow.dport));
        if src <= dst { (ExchangeKey(src, dst), 0) } else { (ExchangeKey(dst, src), 1) }
    }
}

#[derive(Debug, Default)]
struct Exchange {
    /// When the first flow of each direction started (0: lower to higher).
    first_start: [Option<Nanos>; 2],
    /// Flows seen before the other direction was.
    waiting: Vec<FlowRecord>,
    /// When it is forgotten: the horizon past its latest flow's end.
    expires: Nanos,
}

/// A UDP flow whose exchange is known, with whether its sender asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    pub flow: FlowRecord,
    pub sender_asked: bool,
}

/// The exchanges whose flows are waiting for, or have had, an answer.
#[derive(Debug)]
pub struct Exchanges {
    open: HashMap<ExchangeKey, Exchange>,
    /// Keys in the order their expiry was last set; an entry whose expiry
    /// moved later is queued again when its old turn comes.
    expiry: VecDeque<(Nanos, ExchangeKey)>,
    /// The latest flow end seen: data time.
    now: Nanos,
    horizon: Nanos,
    max_open: usize,
    /// Flows whose other direction never came (scans, unanswered queries).
    pub unanswered: u64,
    /// Exchanges forgotten early because `max_open` were open (their
    /// waiting flows are counted unanswered too).
    pub evicted: u64,
}

impl Exchanges {
    pub fn new(horizon: Nanos, max_open: usize) -> Exchanges {
        Exchanges {
            open: HashMap::new(),
            expiry: VecDeque::new(),
            now: Nanos::MIN,
            horizon,
            max_open,
            unanswered: 0,
            evicted: 0,
        }
    }

    /// Exchanges open now.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Flows waiting for their other direction.
    pub fn waiting(&self) -> usize {
        self.open.values().map(|e| e.waiting.len()).sum()
    }

    /// Takes `flow`: the flows it settles (itself and those that waited for
    /// it), or none while its exchange has only its direction.
    pub fn offer(&mut self, flow: &FlowRecord) -> Vec<Answered> {
        self.now = self.now.max(flow.end);
        self.expire();
        let (key, direction) = ExchangeKey::of(flow);
        if !self.open.contains_key(&key) && self.open.len() >= self.max_open {
            self.evict_oldest();
        }
        let expires = flow.end.saturating_add(self.horizon);
        let exchange = self.open.entry(key).or_default();
        let first = &mut exchange.first_start[direction];
        *first = Some(first.map_or(flow.start, |t| t.min(flow.start)));
        if expires > exchange.expires {
            exchange.expires = expires;
            self.expiry.push_back((expires, key));
        }
        let [Some(lower), Some(higher)] = exchange.first_start else {
            exchange.waiting.push(flow.clone());
            return Vec::new();
        };
        let asker = match higher.cmp(&lower) {
            std::cmp::Ordering::Less => 1,
            std::cmp::Ordering::Greater => 0,
            // One tick of a coarse clock (the kernel's, 4 to 10 ms) holds a
            // question and its answer: the asker is then the end with the
            // higher port, as clients ask from ephemeral ports.
            std::cmp::Ordering::Equal => usize::from(key.1.1 > key.0.1),
        };
        let mut settled = std::mem::take(&mut exchange.waiting);
        settled.push(flow.clone());
        settled
            .into_iter()
            .map(|flow| {
                let sender_asked = ExchangeKey::of(&flow).1 == asker;
                Answered { flow, sender_asked }
            })
            .collect()
    }

    /// Forgets the exchanges whose horizon has passed.
    fn expire(&mut self) {
        while let Some(&(at, key)) = self.expiry.front() {
            if at >= self.now {
                break;
            }
            self.expiry.pop_front();
            if self.open.get(&key).is_some_and(|e| e.expires == at) {
                self.forget(&key);
            }
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((at, key)) = self.expiry.pop_front() {
            if self.open.get(&key).is_some_and(|e| e.expires == at) {
                self.forget(&key);
                self.evicted += 1;
                return;
            }
        }
    }

    /// Gives up on the oldest exchanges until at most `open` are open (a
    /// bound shared with other profilers: the collector's exporters).
    pub fn shrink_to(&mut self, open: usize) {
        while self.open.len() > open {
            self.evict_oldest();
        }
    }

    fn forget(&mut self, key: &ExchangeKey) {
        if let Some(exchange) = self.open.remove(key) {
            self.unanswered += exchange.waiting.len() as u64;
        }
    }

    /// The end of the input: what still waits was never answered.
    pub fn finish(&mut self) {
        self.unanswered += self.waiting() as u64;
        self.open.clear();
        self.expiry.clear();
    }
}
