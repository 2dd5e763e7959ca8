//! The live monitor: `rogue agent` (the XDP flow meter drained on an
//! interval into the flow cache) and `rogue collect` (flows from exporters'
//! IPFIX and NetFlow) share it. Completed flows are profiled into the store,
//! one source row per origin (the interfaces, or each exporter and its
//! observation domain), the method is applied every
//! `detection.evaluate_seconds`, findings are emitted to the sinks when they
//! open or change materially, metrics are served.
//!
//! One task owns the meter, cache, profiler and store, so nothing is shared
//! but the metrics; DNS runs beside it and hands its answers back, so a slow
//! resolver never delays a drain. A finding is emitted at least once: the
//! store remembers what was last emitted of each (see
//! [`material_evidence`]), so a restart re-emits nothing, and a finding that
//! a sink failed to take is offered again at the next evaluation.
//!
//! It keeps running through what a gateway meets: an interface deleted and
//! made again (noticed at the next drain, attached again when it returns),
//! a store that cannot be written (profiles kept, up to
//! `store.max_pending_flows`, then the oldest dropped, counted), flows dated
//! outside the plausible window (rejected, counted per origin), and
//! exporters without number (origins bounded and forgotten when silent).

pub mod metrics;
pub mod sinks;

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rogue_common::MeterCounters;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{Interval, MissedTickBehavior},
};
use tracing::{debug, error, info, warn};

use crate::{
    capture::{XdpMeter, xdp::interface_rx_packets},
    config::{CollectConfig, Config, IpfixDestination, Service},
    detect::{Detector, DnsFacts, Window, material_evidence, whitelist::Whitelist},
    dns::Resolver,
    flows::{FlowCache, FlowRecord, TimeBounds, Timeouts},
    ipfix::{
        collect::{self, Batch, CollectorStats, Limits},
        export::Exporter,
    },
    profile::{FlowSpan, ProfileBatch, Profiler},
    store::{Access, Pending, Store, StoreError},
    time::{MILLIS_PER_DAY, rfc3339_millis},
    with_causes,
};
use metrics::Metrics;
use sinks::{Event, Sinks};

/// What the command line decides.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub config: PathBuf,
    pub db: Option<PathBuf>,
    /// Overrides the configuration's `interfaces` when not empty.
    pub interfaces: Vec<String>,
    /// Collect from exporters on this address instead of metering interfaces.
    pub listen: Option<SocketAddr>,
    pub no_dns: bool,
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(options: AgentOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let mut agent = Agent::start(options).await?;
        agent.run().await
    })
}

struct Agent {
    options: AgentOptions,
    config: Config,
    whitelist: Whitelist,
    store: Store,
    source: FlowSource,
    /// Where stored flows came from, each with its profiles not yet handed
    /// to the store.
    origins: BTreeMap<String, Origin>,
    /// Profiles that store writes could not take yet, oldest first.
    backlog: VecDeque<Unwritten>,
    sinks: Sinks,
    /// IPFIX collectors the completed flows go to (`export.ipfix`).
    exporters: Vec<Exporter>,
    metrics: Arc<Metrics>,
    dns: DnsFacts,
    resolver: Option<Arc<Resolver>>,
    started: Instant,
    emitted: u64,
    dropped_flows: u64,
}

/// Where the flows come from.
enum FlowSource {
    /// The XDP meter on interfaces; flows complete in the agent's cache.
    Meter {
        meter: XdpMeter,
        cache: FlowCache,
        /// Each attachment's counts across its comings and goings.
        counts: Vec<InterfaceCounts>,
        /// The origin all its flows are stored under.
        origin: String,
    },
    /// Exporters; their flows arrive complete, in batches.
    Collector { stats: Arc<CollectorStats>, batches: Option<mpsc::Receiver<Batch>> },
}

impl FlowSource {
    fn kind(&self) -> &'static str {
        match self {
            FlowSource::Meter { .. } => "live",
            FlowSource::Collector { .. } => "collect",
        }
    }
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
    last_flow: Instant,
}

/// A batch of profiles waiting for the store.
struct Unwritten {
    origin: String,
    batch: ProfileBatch,
    span: FlowSpan,
    rejected: u64,
}

/// One metered interface's kernel and receive counts, carried across the
/// times it went away and came back (each attachment counts in a slot of
/// its own ifindex, and a new interface's receive counter starts at 0), so
/// the exported counters only grow and coverage stays a ratio.
#[derive(Clone, Debug, Default)]
struct InterfaceCounts {
    /// The slot's counts and the interface's receive counter when attached.
    slot_base: MeterCounters,
    rx_base: u64,
    /// The latest receive counter read.
    rx_last: u64,
    /// What earlier attachments counted.
    carried: MeterCounters,
    carried_rx: u64,
}

impl InterfaceCounts {
    fn attached(slot: MeterCounters, rx: u64) -> InterfaceCounts {
        InterfaceCounts { slot_base: slot, rx_base: rx, rx_last: rx, ..InterfaceCounts::default() }
    }

    /// (kernel counts, received packets) over every attachment.
    fn totals(&self, slot_now: &MeterCounters) -> (MeterCounters, u64) {
        let mut kernel = self.carried;
        kernel.add(&slot_now.since(&self.slot_base));
        (kernel, self.carried_rx + self.rx_last.saturating_sub(self.rx_base))
    }

    /// The interface went away: keep what it counted.
    fn close(&mut self, slot_now: &MeterCounters) {
        (self.carried, self.carried_rx) = self.totals(slot_now);
    }

    /// Attached again.
    fn reopen(&mut self, slot: MeterCounters, rx: u64) {
        (self.slot_base, self.rx_base, self.rx_last) = (slot, rx, rx);
    }
}

impl Agent {
    async fn start(options: AgentOptions) -> anyhow::Result<Agent> {
        let config = Config::load(&options.config)?;
        let store_path = options.db.clone().unwrap_or_else(|| config.store_path());
        let store = Store::open(&store_path, Access::Create)?;
        let whitelist = Whitelist::load(&config.whitelist_path(), &config.services.names())?;
        let sinks = Sinks::open(&config)?;
        let exporters = open_exporters(&config)?;
        let metrics = Arc::new(Metrics::new());
        if let Some(listen) = config.metrics.listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("metrics.listen: cannot listen on {listen}"))?;
            let served = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(listener, served).await {
                    error!("the metrics endpoint stopped: {e}");
                }
            });
            info!("metrics on http://{listen}/metrics");
        }
        let dns_enabled = !options.no_dns && config.dns.enabled;
        let resolver = if dns_enabled {
            Some(Arc::new(Resolver::new(&config.dns).context("setting up the DNS resolver")?))
        } else {
            None
        };
        let dns = match dns_enabled {
            true => DnsFacts { enabled: true, hosts: store.host_names()? },
            false => DnsFacts::disabled(),
        };
        let (source, what) = match options.listen {
            Some(listen) => collector(listen, limits(&config.collect)).await?,
            None => meter(&options, &config)?,
        };
        if let FlowSource::Collector { stats, .. } = &source {
            metrics.watch_collector(stats.clone());
        }
        info!(
            "{what}; draining every {} s, evaluating every {} s; findings to {}; store {}",
            config.capture.drain_seconds.0,
            config.detection.evaluate_seconds.0,
            sinks.names().join(", "),
            store_path.display()
        );
        Ok(Agent {
            options,
            config,
            whitelist,
            store,
            source,
            origins: BTreeMap::new(),
            backlog: VecDeque::new(),
            sinks,
            exporters,
            metrics,
            dns,
            resolver,
            started: Instant::now(),
            emitted: 0,
            dropped_flows: 0,
        })
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut drain_tick = ticker(self.config.capture.drain_seconds.0);
        let mut evaluate_tick = ticker(self.config.detection.evaluate_seconds.0);
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (answers, mut answered) = mpsc::channel::<DnsFacts>(1);
        // With DNS, an evaluation runs when the lookups for its hosts are
        // answered; hosts first seen while they ran are looked up once more
        // before it, so no finding comes out with DNS not yet asked.
        let mut resolving = false;
        let mut asked_again = false;
        let mut batches = match &mut self.source {
            FlowSource::Collector { batches, .. } => batches.take(),
            FlowSource::Meter { .. } => None,
        };
        loop {
            tokio::select! {
                Some(batch) = next_batch(&mut batches) => self.profile(&batch.origin, &batch.flows),
                _ = drain_tick.tick() => self.drain()?,
                _ = evaluate_tick.tick() => match self.resolver.clone() {
                    Some(_) if resolving => debug!("the previous lookups are still running; evaluating when they end"),
                    Some(resolver) => match self.hosts_to_resolve() {
                        Ok(hosts) => resolving = spawn_lookups(&resolver, hosts, &answers),
                        Err(e) => self.evaluation_failed(&e),
                    },
                    None => self.evaluate(),
                },
                Some(facts) = answered.recv() => {
                    self.take_answers(facts);
                    let unasked = self.hosts_to_resolve().map(|hosts| {
                        hosts.into_iter().filter(|(s, h)| self.dns.get(&s.name, *h).is_none()).collect::<Vec<_>>()
                    });
                    match (&self.resolver, unasked) {
                        (Some(resolver), Ok(unasked)) if !unasked.is_empty() && !asked_again => {
                            asked_again = spawn_lookups(resolver, unasked, &answers);
                        }
                        _ => {
                            (resolving, asked_again) = (false, false);
                            self.evaluate();
                        }
                    }
                }
                _ = hangup.recv() => {
                    if self.reload() {
                        evaluate_tick = ticker(self.config.detection.evaluate_seconds.0);
                        self.evaluate();
                    }
                }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        // What the collector already received is stored too.
        if let Some(batches) = &mut batches {
            batches.close();
            while let Ok(batch) = batches.try_recv() {
                self.profile(&batch.origin, &batch.flows);
            }
        }
        self.stop()
    }

    fn detector(&self) -> Detector<'_> {
        Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns }
    }

    fn hosts_to_resolve(&self) -> anyhow::Result<Vec<(Service, IpAddr)>> {
        Ok(self.detector().hosts_to_resolve(&self.store, self.period()?)?)
    }

    /// What an evaluation looks at: from the start of the day before the
    /// newest data (UTC), or from the earliest flow no evaluation covered
    /// yet if that is older (a collector may be sent old flows; a crash may
    /// have come between a write and its evaluation), to the newest data. A
    /// fixed start for a whole day keeps a burst's key the same from one
    /// evaluation to the next.
    fn period(&self) -> Result<Window, StoreError> {
        let newest_ms = self.store.newest_ms()?.unwrap_or_else(|| jiff::Timestamp::now().as_millisecond());
        let day_before = (newest_ms.div_euclid(MILLIS_PER_DAY) - 1) * MILLIS_PER_DAY;
        let from_ms = self.store.pending()?.map_or(day_before, |pending| pending.from_ms.min(day_before));
        Ok(Window { from_ms, to_ms: newest_ms })
    }

    /// One drain: kernel maps into the flow cache and completed flows
    /// profiled (metering), then the profiles into the store, metrics updated.
    fn drain(&mut self) -> anyhow::Result<()> {
        self.follow_interfaces()?;
        if let FlowSource::Meter { meter, cache, origin, .. } = &mut self.source {
            let drain = meter.drain()?;
            let mut completed = Vec::new();
            for flow in &drain.flows {
                cache.add(&flow.key, drain.delta(flow), &mut completed);
            }
            // Sweep at every drain rather than on nfpcapd's 10 s schedule (kept
            // for parity on captures): flows complete within a drain of their
            // timeout, so findings come out that much sooner.
            cache.sweep(drain.at, &mut completed);
            self.metrics.drained(drain.flows.len(), drain.took.as_secs_f64());
            debug!(entries = drain.flows.len(), completed = completed.len(), "drained");
            let origin = origin.clone();
            self.profile(&origin, &completed);
        }
        self.write_store();
        self.forget_silent_origins();
        self.update_source_metrics()
    }

    /// Notices metered interfaces that went away (deleted, or moved to
    /// another namespace: the kernel drops their XDP links) and attaches
    /// again to those that came back.
    fn follow_interfaces(&mut self) -> anyhow::Result<()> {
        let FlowSource::Meter { meter, cache, counts, .. } = &mut self.source else { return Ok(()) };
        for index in meter.detached()? {
            let interface = meter.attachments()[index].interface.clone();
            warn!(
                "{interface} went away (deleted, or moved to another namespace): it is not metered until it \
                 returns; rogue attaches to it again as soon as it does"
            );
            counts[index].close(&meter.attachment_counters(index)?);
            self.metrics.interface_detached(&interface);
        }
        let gone: Vec<usize> = (0..meter.attachments().len()).filter(|&index| !meter.is_attached(index)).collect();
        for index in gone {
            match meter.reattach(index) {
                Ok(Some(attachment)) => {
                    let (interface, ifindex) = (attachment.interface.clone(), attachment.ifindex);
                    warn!("{interface} is back (ifindex {ifindex}): metering it again");
                    cache.name_interface(ifindex, &interface);
                    let rx = interface_rx_packets(&interface).unwrap_or(0);
                    counts[index].reopen(meter.attachment_counters(index)?, rx);
                    self.metrics.interface_reattached(&interface);
                }
                Ok(None) => {}
                Err(e) => debug!("attaching again failed (retried at the next drain): {}", with_causes(&e)),
            }
        }
        Ok(())
    }

    /// Profiles completed flows from `origin` and exports them. Flows dated
    /// outside the plausible window are rejected (counted per origin).
    fn profile(&mut self, origin: &str, flows: &[FlowRecord]) {
        if flows.is_empty() {
            return;
        }
        let store = &self.config.store;
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let bounds = TimeBounds::for_live(now, store.max_future_seconds.0, store.retention_days.0);
        let entry = self.origins.entry(origin.to_string()).or_insert_with(|| Origin {
            source: None,
            profiler: Profiler::for_config(&self.config),
            unwritten: FlowSpan::default(),
            rejected: 0,
            rejected_total: 0,
            last_flow: Instant::now(),
        });
        entry.last_flow = Instant::now();
        let mut rejected = 0;
        for flow in flows {
            if !bounds.admits_flow(flow) {
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
                continue;
            }
            entry.profiler.add(flow);
            entry.unwritten.add(flow);
        }
        entry.rejected += rejected;
        entry.rejected_total += rejected;
        if rejected > 0 {
            self.metrics.rejected(origin, rejected);
        }
        for exporter in &mut self.exporters {
            if let Err(e) = exporter.export(flows).and_then(|()| exporter.flush()) {
                self.metrics.export_failed(&exporter.destination().to_string());
                warn!("{} (the flows are in the store; the collector misses them)", with_causes(&e));
            }
        }
    }

    /// Writes every pending profile in one transaction. On failure they
    /// stay pending and the next drain tries again, the error and its cause
    /// logged and counted; past `store.max_pending_flows` the oldest are
    /// dropped, counted.
    fn write_store(&mut self) {
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
        if self.backlog.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.write_backlog() {
            Ok(sources) => {
                for (name, source) in sources {
                    if let Some(origin) = self.origins.get_mut(&name) {
                        origin.source = Some(source);
                    }
                }
                self.backlog.clear();
                self.metrics.store_written(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.store_write_failed();
                let pending: u64 = self.backlog.iter().map(|u| u.span.flows).sum();
                error!("writing {pending} flows to the store failed (kept, retried next drain): {e}");
                self.trim_backlog();
            }
        }
    }

    /// The backlog in one transaction; returns each origin's source row.
    fn write_backlog(&mut self) -> Result<BTreeMap<String, i64>, StoreError> {
        let services = self.config.services.all();
        let kind = self.source.kind();
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let mut sources = BTreeMap::new();
        let ingest = self.store.ingest()?;
        for unwritten in &self.backlog {
            let known = self.origins.get(&unwritten.origin).and_then(|o| o.source);
            let source = match (known, sources.get(&unwritten.origin)) {
                (Some(source), _) | (None, Some(&source)) => source,
                (None, None) => ingest.source_named(kind, &unwritten.origin, now_ms)?,
            };
            sources.insert(unwritten.origin.clone(), source);
            ingest.write(source, &services, &unwritten.batch)?;
            ingest.extend_source(source, &unwritten.span)?;
            ingest.add_rejected(source, unwritten.rejected)?;
        }
        ingest.commit()?;
        Ok(sources)
    }

    /// Drops the oldest pending profiles past `store.max_pending_flows`. A
    /// batch is one drain's flows of one origin, dropped whole; the newest
    /// is always kept, whatever its size, for the next try.
    fn trim_backlog(&mut self) {
        let bound = self.config.store.max_pending_flows.0;
        let mut pending: u64 = self.backlog.iter().map(|u| u.span.flows).sum();
        let mut dropped = 0;
        while pending > bound && self.backlog.len() > 1 {
            let Some(oldest) = self.backlog.pop_front() else { break };
            pending -= oldest.span.flows;
            dropped += oldest.span.flows;
        }
        if dropped > 0 {
            self.dropped_flows += dropped;
            self.metrics.store_dropped(dropped);
            error!(
                "the store still cannot be written: dropped the oldest {dropped} flows ({} so far) to keep at most \
                 store.max_pending_flows ({bound}) waiting",
                self.dropped_flows
            );
        }
    }

    /// Lets go of origins (exporters) silent for `collect.exporter_idle_seconds`
    /// with nothing pending, and, past `collect.max_exporters`, of the
    /// longest silent: their flows are in the store, their source row stays
    /// and serves them again should they return.
    fn forget_silent_origins(&mut self) {
        let FlowSource::Collector { .. } = &self.source else { return };
        let collect = &self.config.collect;
        let idle = Duration::from_secs(collect.exporter_idle_seconds.0);
        let quiet = |o: &Origin| o.unwritten.flows == 0 && o.rejected == 0;
        let mut forgotten: Vec<String> = self
            .origins
            .iter()
            .filter(|(_, o)| quiet(o) && o.last_flow.elapsed() >= idle)
            .map(|(n, _)| n.clone())
            .collect();
        let excess = (self.origins.len() - forgotten.len()).saturating_sub(collect.max_exporters.0 as usize);
        if excess > 0 {
            let mut by_silence: Vec<(&String, Instant)> = self
                .origins
                .iter()
                .filter(|(n, o)| quiet(o) && !forgotten.contains(n))
                .map(|(n, o)| (n, o.last_flow))
                .collect();
            by_silence.sort_by_key(|(_, last)| *last);
            forgotten.extend(by_silence.into_iter().take(excess).map(|(n, _)| n.clone()));
        }
        for name in &forgotten {
            self.origins.remove(name);
        }
        self.metrics.set_origins(self.origins.len(), &forgotten);
    }

    /// The kernel's and the interfaces' counts into the metrics; the
    /// receive counters are remembered, for when an interface goes away.
    fn update_source_metrics(&mut self) -> anyhow::Result<()> {
        match &mut self.source {
            FlowSource::Meter { meter, cache, counts, .. } => {
                for (index, attachment) in meter.attachments().iter().enumerate() {
                    let counts = &mut counts[index];
                    if meter.is_attached(index)
                        && let Ok(rx) = interface_rx_packets(&attachment.interface)
                    {
                        counts.rx_last = rx;
                    }
                    let (kernel, received) = if meter.is_attached(index) {
                        counts.totals(&meter.attachment_counters(index)?)
                    } else {
                        (counts.carried, counts.carried_rx)
                    };
                    self.metrics.set_kernel(&attachment.interface, &kernel);
                    self.metrics.set_coverage(&attachment.interface, received, kernel.packets);
                    self.metrics.set_attached(&attachment.interface, meter.is_attached(index));
                }
                if let Some(shared) = meter.shared_slot_counters()? {
                    self.metrics.set_kernel("other", &shared);
                }
                self.metrics.set_flow_cache(cache.len(), &cache.stats());
            }
            // Read at each scrape.
            FlowSource::Collector { .. } => {}
        }
        if let Some(resolver) = &self.resolver {
            self.metrics.set_dns(resolver.stats());
        }
        Ok(())
    }

    /// DNS answers: over what was known, and kept in the store (should the
    /// store fail, they still serve this run).
    fn take_answers(&mut self, facts: DnsFacts) {
        for (key, names) in &facts.hosts {
            let names = match self.dns.hosts.get(key) {
                Some(older) => names.clone().over(older),
                None => names.clone(),
            };
            self.dns.hosts.insert(key.clone(), names);
        }
        if let Err(e) = self.store.save_host_names(&facts.hosts, jiff::Timestamp::now().as_millisecond()) {
            warn!("keeping the DNS answers in the store failed (they serve this run): {e}");
        }
    }

    /// Applies the method and emits what changed; a failure (the store
    /// cannot be read or written) is logged, counted and tried again at the
    /// next evaluation: the agent keeps metering.
    fn evaluate(&mut self) {
        match self.try_evaluate() {
            Ok(()) => self.metrics.evaluated(),
            Err(e) => self.evaluation_failed(&e),
        }
    }

    fn evaluation_failed(&self, error: &anyhow::Error) {
        self.metrics.evaluation_failed();
        error!("evaluating failed (tried again at the next evaluation): {error:#}");
    }

    /// Applies the method to the period, stores the findings together with
    /// the mark that the period is evaluated, and emits what is new or
    /// changed.
    fn try_evaluate(&mut self) -> anyhow::Result<()> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let seq = self.store.write_seq()?;
        let period = self.period()?;
        let detector = Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns };
        let findings = detector.evaluate(&self.store, period)?;
        let covered = Pending { from_ms: period.from_ms, to_ms: period.to_ms, seq };
        self.store.in_transaction(|store| {
            detector.record(store, &findings, now_ms)?;
            store.mark_evaluated(covered).map(drop)
        })?;
        let pruned = self.store.apply_retention(self.config.store.retention_days.0, now_ms)?;
        for source in &pruned.sources {
            info!(
                "retention: removed {} {} (ingested {})",
                source.kind,
                source.name,
                rfc3339_millis(source.ingested_ms * 1_000_000)
            );
        }
        self.emit_changes()
    }

    /// Emits every stored finding whose material evidence differs from what
    /// was last emitted of it (whatever changed it: an evaluation, a
    /// whitelist reload, `rogue findings ack` from a shell).
    fn emit_changes(&mut self) -> anyhow::Result<()> {
        let emitted = self.store.emitted()?;
        let findings = self.store.findings(None, None)?;
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        for finding in &findings {
            *counts.entry((finding.kind.clone(), finding.state.clone())).or_default() += 1;
            let evidence = material_evidence(finding);
            let event = match emitted.get(&finding.id) {
                Some(last) if *last == evidence => continue,
                Some(_) => Event::Changed,
                None => Event::Opened,
            };
            let failed = self.sinks.emit(event, finding);
            for (sink, e) in &failed {
                self.metrics.sink_failed(sink);
                warn!("{sink}: could not take finding {} (offered again next evaluation): {e}", finding.id);
            }
            if failed.is_empty() {
                self.store.set_emitted(finding.id, &evidence)?;
                self.metrics.emitted();
                self.emitted += 1;
                info!(
                    "finding {} {}: {} {} ({})",
                    finding.id,
                    event.as_str(),
                    finding.kind,
                    finding.host,
                    finding.state
                );
            }
        }
        self.metrics.set_findings(counts);
        Ok(())
    }

    /// Re-reads the configuration, the whitelist and the sinks (SIGHUP).
    /// Counts and flows in progress are kept; on an error the running
    /// configuration stays. Returns whether the new one was taken.
    fn reload(&mut self) -> bool {
        let path = self.options.config.clone();
        let loaded = (|| -> anyhow::Result<(Config, Whitelist, Sinks)> {
            let config = Config::load(&path)?;
            let whitelist = Whitelist::load(&config.whitelist_path(), &config.services.names())?;
            let sinks = Sinks::open(&config)?;
            Ok((config, whitelist, sinks))
        })();
        let (config, whitelist, sinks) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                error!("reload of {} failed, the running configuration stays: {e:#}", path.display());
                return false;
            }
        };
        for (key, changed) in [
            ("interfaces", config.interfaces != self.config.interfaces && self.options.interfaces.is_empty()),
            ("capture", format!("{:?}", config.capture) != format!("{:?}", self.config.capture)),
            ("store", format!("{:?}", config.store) != format!("{:?}", self.config.store)),
            ("metrics", config.metrics.listen != self.config.metrics.listen),
            ("export", format!("{:?}", config.export) != format!("{:?}", self.config.export)),
            ("collect", format!("{:?}", config.collect) != format!("{:?}", self.config.collect)),
        ] {
            if changed {
                warn!("{}: `{key}` changed; it takes effect when the agent restarts", path.display());
            }
        }
        if self.resolver.is_some() && format!("{:?}", config.dns) != format!("{:?}", self.config.dns) {
            match Resolver::new(&config.dns) {
                Ok(resolver) => self.resolver = Some(Arc::new(resolver)),
                Err(e) => warn!("the new dns settings do not work, the running resolver stays: {e}"),
            }
        }
        // Profiles pending a store write were made with the old settings;
        // write them out first (write_store keeps them on failure).
        self.write_store();
        let stale = !self.backlog.is_empty();
        info!(
            "reloaded {}: {} whitelist entries; findings to {}",
            path.display(),
            whitelist.entries().len(),
            sinks.names().join(", ")
        );
        self.config = config;
        self.whitelist = whitelist;
        self.sinks = sinks;
        if !stale {
            for origin in self.origins.values_mut() {
                origin.profiler = Profiler::for_config(&self.config);
            }
        }
        true
    }

    /// SIGINT or SIGTERM: the last drain, every flow in progress completed
    /// and stored, a last evaluation, then the meter detaches (dropping it
    /// closes its bpf_links).
    fn stop(&mut self) -> anyhow::Result<()> {
        self.drain()?;
        if let FlowSource::Meter { cache, origin, .. } = &mut self.source {
            let mut rest = Vec::new();
            cache.flush(&mut rest);
            let origin = origin.clone();
            self.profile(&origin, &rest);
        }
        self.write_store();
        let unwritten: u64 = self.backlog.iter().map(|u| u.span.flows).sum();
        if unwritten > 0 {
            bail!("{unwritten} flows could not be written to the store");
        }
        self.try_evaluate()?;
        let seconds = self.started.elapsed().as_secs_f64();
        let rejected: u64 = self.origins.values().map(|o| o.rejected_total).sum();
        match &self.source {
            FlowSource::Meter { meter, cache, .. } => info!(
                "agent stopped after {seconds:.0} s: {} packets metered, {} flows, {rejected} rejected as \
                 implausibly dated, {} dropped for want of a store, {} findings emitted",
                meter.counters()?.packets,
                cache.stats().flows_completed,
                self.dropped_flows,
                self.emitted
            ),
            FlowSource::Collector { stats, .. } => info!(
                "collector stopped after {seconds:.0} s: {} messages, {} flows from {} origins, {} malformed \
                 messages, {rejected} flows rejected as implausibly dated, {} dropped for want of a store, \
                 {} findings emitted",
                stats.messages.load(Ordering::Relaxed),
                stats.flows.load(Ordering::Relaxed),
                self.origins.len(),
                stats.malformed.load(Ordering::Relaxed),
                self.dropped_flows,
                self.emitted
            ),
        }
        Ok(())
    }
}

/// Loads the meter and attaches it to the interfaces (the options', else
/// the configuration's).
fn meter(options: &AgentOptions, config: &Config) -> anyhow::Result<(FlowSource, String)> {
    let interfaces = if options.interfaces.is_empty() { config.interfaces.clone() } else { options.interfaces.clone() };
    if interfaces.is_empty() {
        bail!(
            "no interfaces to meter: list them under `interfaces` in {} or pass --iface (a gateway needs both \
             its internal and its external side)",
            options.config.display()
        );
    }
    let capture = &config.capture;
    let mut meter = XdpMeter::load(capture.flow_map_entries.0)?;
    let timeouts = Timeouts::from_secs(capture.idle_timeout_seconds.0, capture.active_timeout_seconds.0);
    let mut cache = FlowCache::with_limit(timeouts, capture.flow_cache_entries.0 as usize);
    let mut counts = Vec::new();
    for (index, interface) in interfaces.iter().enumerate() {
        let attached = meter.attach(interface, capture.xdp_mode)?.clone();
        cache.name_interface(attached.ifindex, &attached.interface);
        let rx = interface_rx_packets(interface).unwrap_or(0);
        counts.push(InterfaceCounts::attached(meter.attachment_counters(index)?, rx));
    }
    let modes: Vec<String> = meter.attachments().iter().map(|a| format!("{} ({})", a.interface, a.mode)).collect();
    let what = format!("agent running: metering {}", modes.join(", "));
    Ok((FlowSource::Meter { meter, cache, counts, origin: interfaces.join(",") }, what))
}

/// The collector's limits from the configuration.
fn limits(collect: &CollectConfig) -> Limits {
    Limits {
        max_exporters: collect.max_exporters.0 as usize,
        exporter_idle: Duration::from_secs(collect.exporter_idle_seconds.0),
        max_tcp_connections: collect.max_tcp_connections.0 as usize,
        tcp_idle: Duration::from_secs(collect.tcp_idle_seconds.0),
        allowed: collect.allowed_exporters.clone(),
    }
}

/// Starts collecting on `listen`. The file descriptor limit is raised to
/// its ceiling first: each IPFIX-over-TCP exporter holds one.
async fn collector(listen: SocketAddr, limits: Limits) -> anyhow::Result<(FlowSource, String)> {
    raise_descriptor_limit();
    let stats = Arc::new(CollectorStats::default());
    let (flows, batches) = mpsc::channel(1024);
    // Bound before "running" is said, so a taken port is an error at start
    // and an exporter that connects at once finds the collector listening.
    let listener = collect::bind(listen).await.with_context(|| format!("cannot listen on {listen} (UDP and TCP)"))?;
    let served = stats.clone();
    tokio::spawn(async move {
        if let Err(e) = collect::serve(listener, flows, served, limits).await {
            error!("the collector on {listen} stopped: {e}");
        }
    });
    let what = format!("collector running: IPFIX and NetFlow v5/v9 on udp://{listen}, IPFIX on tcp://{listen}");
    Ok((FlowSource::Collector { stats, batches: Some(batches) }, what))
}

/// Raises the soft limit on open files to the hard one, as servers that
/// hold a descriptor per client do.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The collector's next batch, or never (metering, or once it has stopped).
async fn next_batch(batches: &mut Option<mpsc::Receiver<Batch>>) -> Option<Batch> {
    match batches {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The IPFIX exporters of `export.ipfix`.
fn open_exporters(config: &Config) -> anyhow::Result<Vec<Exporter>> {
    let exporters = config.export.ipfix.iter().map(|destination| {
        let destination = match destination {
            IpfixDestination::File(path) => IpfixDestination::File(config.resolve(path)),
            other => other.clone(),
        };
        Exporter::open(&destination, config.export.observation_domain)
    });
    Ok(exporters.collect::<Result<_, _>>()?)
}

/// Looks `hosts` up beside the agent's task; the answers come back on
/// `answers`. Returns true (lookups are running).
fn spawn_lookups(resolver: &Arc<Resolver>, hosts: Vec<(Service, IpAddr)>, answers: &mpsc::Sender<DnsFacts>) -> bool {
    let (resolver, answers) = (resolver.clone(), answers.clone());
    tokio::spawn(async move {
        let _ = answers.send(resolver.resolve(&hosts).await).await;
    });
    true
}

fn ticker(seconds: u64) -> Interval {
    let period = Duration::from_secs(seconds);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}
