//! The agent's store writer: completed flows in, per origin (the agent's
//! interfaces, or each exporter and observation domain), admitted by their
//! times, profiled, and written to the store at each drain in one
//! transaction, every origin under its own source row.
//!
//! What a write cannot store (a full disk) stays pending, oldest first, up
//! to `store.max_pending_flows`; past it the oldest drain's flows are
//! dropped, counted and logged, so stored and dropped add up to every flow.
//! Flows arriving faster than drains come round are written as soon as
//! that many wait, so memory is bounded whatever the rate.
//! Origins silent for `collect.exporter_idle_seconds`, and past
//! `collect.max_exporters` the longest silent, are let go: exporters are
//! whoever sends, and memory must not grow with them.

use std::collections::{BTreeMap, VecDeque};

use tracing::{error, warn};

use super::metrics::Metrics;
use crate::{
    config::{CollectConfig, Config},
    flows::{FlowRecord, TimeBounds},
    profile::{FlowSpan, ProfileBatch, Profiler},
    store::{Store, StoreError},
    time::{NANOS_PER_SEC, Nanos, rfc3339_millis},
};

pub struct StoreWriter {
    /// The kind of source its origins are stored as (`live`, `collect`).
    kind: &'static str,
    origins: BTreeMap<String, Origin>,
    /// Profiles that store writes could not take yet, oldest first.
    backlog: VecDeque<Unwritten>,
    /// Flows waiting for the store, in the origins' profilers and the
    /// backlog: kept as a total, since it is asked at every batch and a
    /// collector may hold thousands of origins.
    pending: u64,
    dropped: u64,
    /// UDP exchanges open across the origins' profilers.
    udp_open: usize,
}

/// What one origin gave since its profiles last went to the store.
struct Origin {
    /// Its source row, once a write made it.
    source: Option<i64>,
    profiler: Profiler,
    /// The flows in the profiler's pending batch, for the source row.
    unwritten: FlowSpan,
    /// Flows rejected since the last write, and in all.
    rejected: u64,
    rejected_total: u64,
    /// When (by the clock) its last flow arrived.
    last_flow: Nanos,
}

/// What of a profiler's UDP exchanges the metrics show: those open, and the
/// flows found unanswered and given up so far. The difference across a
/// change to the profiler is what the metrics gain.
#[derive(Clone, Copy)]
struct UdpState {
    open: usize,
    unanswered: u64,
    evicted: u64,
}

impl UdpState {
    fn of(profiler: &Profiler) -> UdpState {
        let exchanges = profiler.exchanges();
        UdpState { open: exchanges.open(), unanswered: exchanges.unanswered, evicted: exchanges.evicted }
    }

    /// Counts what changed since `before`.
    fn count_since(self, before: UdpState, metrics: &Metrics) {
        metrics.udp_unanswered(self.unanswered - before.unanswered, self.evicted - before.evicted);
    }
}

impl Origin {
    /// Its profiler ends: what still waits for an answer never got one.
    /// Returns the exchanges it had open.
    fn retire_profiler(&mut self, metrics: &Metrics) -> usize {
        let before = UdpState::of(&self.profiler);
        self.profiler.finish();
        UdpState::of(&self.profiler).count_since(before, metrics);
        before.open
    }
}

/// A batch of profiles waiting for the store.
struct Unwritten {
    origin: String,
    batch: ProfileBatch,
    span: FlowSpan,
    rejected: u64,
}

impl StoreWriter {
    pub fn new(kind: &'static str) -> StoreWriter {
        StoreWriter { kind, origins: BTreeMap::new(), backlog: VecDeque::new(), pending: 0, dropped: 0, udp_open: 0 }
    }

    /// Origins held in memory.
    pub fn origins(&self) -> usize {
        self.origins.len()
    }

    /// Flows waiting for the store.
    pub fn pending_flows(&self) -> u64 {
        self.pending
    }

    /// Flows dropped, and rejected, so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn rejected(&self) -> u64 {
        self.origins.values().map(|o| o.rejected_total).sum()
    }

    /// Profiles `flows` from `origin`. Flows dated outside the plausible
    /// window at `now` (the clock) are rejected: counted per origin, logged
    /// the first time, never stored.
    pub fn take(&mut self, config: &Config, origin: &str, flows: &[FlowRecord], now: Nanos, metrics: &Metrics) {
        let store = &config.store;
        let bounds = TimeBounds::for_live(now, store.max_future_seconds.0, store.retention_days.0);
        let entry = self.origins.entry(origin.to_string()).or_insert_with(|| Origin {
            source: None,
            profiler: Profiler::for_config(config),
            unwritten: FlowSpan::default(),
            rejected: 0,
            rejected_total: 0,
            last_flow: now,
        });
        entry.last_flow = now;
        let before = UdpState::of(&entry.profiler);
        let mut rejected = 0;
        for flow in flows {
            if bounds.admits_flow(flow) {
                entry.profiler.add(flow);
                entry.unwritten.add(flow);
                self.pending += 1;
                continue;
            }
            if entry.rejected_total + rejected == 0 {
                warn!(
                    "{origin}: a flow dated {} to {} is outside the plausible window ({} to {}, by the clock): \
                     rejected; such flows are counted (rogue_records_rejected_total), never stored",
                    rfc3339_millis(flow.start),
                    rfc3339_millis(flow.end),
                    bounds.not_before.map(rfc3339_millis).unwrap_or_default(),
                    rfc3339_millis(bounds.not_after)
                );
            }
            rejected += 1;
        }
        entry.rejected += rejected;
        entry.rejected_total += rejected;
        if rejected > 0 {
            metrics.rejected(origin, rejected);
        }
        // The UDP exchanges open across every origin stay within the flow
        // cache's bound (each profiler keeps its own within it too): past it
        // the origin just fed gives up its oldest, counted. An exporter can
        // send any number of unanswered flows, but not hold more memory
        // than the flow cache would. The total is kept, not summed, as a
        // collector may hold thousands of origins.
        let bound = config.capture.flow_cache_entries.0 as usize;
        let others = self.udp_open - before.open;
        if others + entry.profiler.exchanges().open() > bound {
            entry.profiler.exchanges_mut().shrink_to(bound.saturating_sub(others));
        }
        let after = UdpState::of(&entry.profiler);
        after.count_since(before, metrics);
        self.udp_open = others + after.open;
        metrics.set_udp_exchanges_open(self.udp_open);
    }

    /// Writes every pending profile in one transaction. On failure they
    /// stay pending for the next write, the error and its cause logged and
    /// counted, and the oldest past `store.max_pending_flows` are dropped.
    pub fn write(&mut self, store: &mut dyn Store, config: &Config, now: Nanos, metrics: &Metrics) {
        self.queue_profiles();
        if self.backlog.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        match self.write_backlog(store, config, now) {
            Ok(sources) => {
                for (name, source) in sources {
                    if let Some(origin) = self.origins.get_mut(&name) {
                        origin.source = Some(source);
                    }
                }
                // Every origin's profiles went to the backlog first.
                self.backlog.clear();
                self.pending = 0;
                metrics.store_written(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                metrics.store_write_failed();
                error!("writing {} flows to the store failed (kept, retried next drain): {e}", self.pending_flows());
                self.trim_backlog(config.store.max_pending_flows.0, metrics);
            }
        }
    }

    /// Whether the flows waiting for the store have reached
    /// `store.max_pending_flows`: flows can arrive faster than drains come
    /// round (a collector taking a million a second), and memory must not
    /// grow with the rate.
    pub fn is_full(&self, config: &Config) -> bool {
        self.pending_flows() >= config.store.max_pending_flows.0
    }

    /// For a writer that [is full](Self::is_full): writes now, rather than
    /// at the next drain; or, while the store is failing (the drains retry
    /// it), drops the oldest pending flows past the bound, counted.
    pub fn write_early(&mut self, store: &mut dyn Store, config: &Config, now: Nanos, metrics: &Metrics) {
        if self.backlog.is_empty() {
            self.write(store, config, now, metrics);
        } else {
            self.queue_profiles();
            self.trim_backlog(config.store.max_pending_flows.0, metrics);
        }
    }

    /// Every origin's profiles so far, to the end of the backlog.
    fn queue_profiles(&mut self) {
        for (name, origin) in &mut self.origins {
            if origin.unwritten.flows > 0 || origin.rejected > 0 {
                self.backlog.push_back(Unwritten {
                    origin: name.clone(),
                    batch: origin.profiler.take(),
                    span: std::mem::take(&mut origin.unwritten),
                    rejected: std::mem::take(&mut origin.rejected),
                });
            }
        }
    }

    /// The backlog in one transaction; returns each origin's source row.
    fn write_backlog(
        &self,
        store: &mut dyn Store,
        config: &Config,
        now: Nanos,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let services = config.services.all();
        let now_ms = crate::time::millis(now);
        let mut sources = BTreeMap::new();
        let mut ingest = store.ingest()?;
        for unwritten in &self.backlog {
            let known = self.origins.get(&unwritten.origin).and_then(|o| o.source);
            let source = match (known, sources.get(&unwritten.origin)) {
                (Some(source), _) | (None, Some(&source)) => source,
                (None, None) => ingest.source_named(self.kind, &unwritten.origin, now_ms)?,
            };
            sources.insert(unwritten.origin.clone(), source);
            ingest.write(source, services, &unwritten.batch)?;
            ingest.extend_source(source, &unwritten.span)?;
            ingest.add_rejected(source, unwritten.rejected)?;
        }
        ingest.commit()?;
        Ok(sources)
    }

    /// Drops the oldest pending profiles past `bound` flows. A batch is one
    /// drain's flows of one origin, dropped whole; the newest is always
    /// kept, whatever its size, for the next try.
    fn trim_backlog(&mut self, bound: u64, metrics: &Metrics) {
        let mut dropped = 0;
        while self.pending > bound && self.backlog.len() > 1 {
            let Some(oldest) = self.backlog.pop_front() else { break };
            self.pending -= oldest.span.flows;
            dropped += oldest.span.flows;
        }
        if dropped > 0 {
            self.dropped += dropped;
            metrics.store_dropped(dropped);
            error!(
                "the store still cannot be written: dropped the oldest {dropped} flows ({} so far) to keep at most \
                 store.max_pending_flows ({bound}) waiting",
                self.dropped
            );
        }
    }

    /// Lets go of origins silent for `collect.exporter_idle_seconds` with
    /// nothing pending, and, past `collect.max_exporters`, of the longest
    /// silent: their flows are in the store, their source row stays and
    /// serves them again should they return.
    pub fn forget_silent(&mut self, collect: &CollectConfig, now: Nanos, metrics: &Metrics) {
        let idle = collect.exporter_idle_seconds.0 as i64 * NANOS_PER_SEC;
        let quiet = |o: &Origin| o.unwritten.flows == 0 && o.rejected == 0;
        let mut silent: Vec<(&String, Nanos)> =
            self.origins.iter().filter(|(_, o)| quiet(o)).map(|(name, o)| (name, o.last_flow)).collect();
        silent.sort_by_key(|(_, last)| *last);
        let idle_ones = silent.iter().take_while(|(_, last)| now - last >= idle).count();
        let excess = self.origins.len().saturating_sub(collect.max_exporters.0 as usize);
        let forgotten: Vec<String> =
            silent.iter().take(idle_ones.max(excess)).map(|(name, _)| (*name).clone()).collect();
        for name in &forgotten {
            if let Some(mut origin) = self.origins.remove(name) {
                self.udp_open -= origin.retire_profiler(metrics);
            }
        }
        metrics.set_udp_exchanges_open(self.udp_open);
        metrics.set_origins(self.origins.len(), &forgotten);
    }

    /// New profilers, once nothing is pending: profiles made under an older
    /// configuration are written under it.
    pub fn renew_profilers(&mut self, config: &Config, metrics: &Metrics) {
        if !self.backlog.is_empty() || self.origins.values().any(|o| o.unwritten.flows > 0) {
            return;
        }
        for origin in self.origins.values_mut() {
            self.udp_open -= origin.retire_profiler(metrics);
            origin.profiler = Profiler::for_config(config);
        }
        metrics.set_udp_exchanges_open(self.udp_open);
    }
}
