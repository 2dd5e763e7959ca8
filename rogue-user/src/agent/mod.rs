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

pub mod metrics;
pub mod sinks;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{Interval, MissedTickBehavior},
};
use tracing::{debug, error, info, warn};

use crate::{
    capture::{
        XdpMeter,
        xdp::{interface_rx_packets, with_causes},
    },
    config::{Config, IpfixDestination, Service},
    detect::{Detector, Window, material_evidence, whitelist::Whitelist},
    dns::{DnsFacts, Resolver},
    flows::{FlowCache, FlowRecord, Timeouts},
    ipfix::{
        collect::{self, Batch, CollectorStats},
        export::{Destination, Exporter},
    },
    profile::{FlowSpan, Profiler},
    store::{MILLIS_PER_DAY, Store},
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
    /// Where stored flows came from, each with its source row and profiles.
    origins: BTreeMap<String, Origin>,
    /// Start of the earliest flow stored since the last evaluation: the next
    /// one looks at least that far back (a collector may be sent old flows).
    unevaluated_from_ms: Option<i64>,
    sinks: Sinks,
    /// IPFIX collectors the completed flows go to (`export.ipfix`).
    exporters: Vec<Exporter>,
    metrics: Arc<Metrics>,
    dns: DnsFacts,
    resolver: Option<Arc<Resolver>>,
    started: Instant,
    emitted: u64,
}

/// Where the flows come from.
enum FlowSource {
    /// The XDP meter on interfaces; flows complete in the agent's cache.
    Meter {
        meter: XdpMeter,
        cache: FlowCache,
        /// Each interface's receive counter when rogue attached.
        rx_at_attach: BTreeMap<String, u64>,
        /// The origin all its flows are stored under.
        origin: String,
    },
    /// Exporters; their flows arrive complete, in batches.
    Collector { stats: Arc<CollectorStats>, batches: Option<mpsc::Receiver<Batch>> },
}

/// One origin's source row, profiles not yet stored, and their counts.
struct Origin {
    source: i64,
    profiler: Profiler,
    /// The flows in the profiler's pending batch, for the source row.
    unwritten: FlowSpan,
}

impl Agent {
    async fn start(options: AgentOptions) -> anyhow::Result<Agent> {
        let config = Config::load(&options.config)?;
        let store_path = options.db.clone().unwrap_or_else(|| config.store_path());
        let store = Store::open(&store_path)?;
        let whitelist = Whitelist::load(&config.whitelist_path())?;
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
        let resolver = if options.no_dns {
            None
        } else {
            Some(Arc::new(Resolver::new(&config.dns).context("setting up the DNS resolver")?))
        };
        let (source, what) = match options.listen {
            Some(listen) => collector(listen).await?,
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
            dns: if options.no_dns { DnsFacts::disabled() } else { DnsFacts { enabled: true, ..DnsFacts::default() } },
            options,
            config,
            whitelist,
            store,
            source,
            origins: BTreeMap::new(),
            unevaluated_from_ms: None,
            sinks,
            exporters,
            metrics,
            resolver,
            started: Instant::now(),
            emitted: 0,
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
                Some(batch) = next_batch(&mut batches) => self.profile(&batch.origin, &batch.flows)?,
                _ = drain_tick.tick() => self.drain()?,
                _ = evaluate_tick.tick() => match &self.resolver {
                    Some(_) if resolving => debug!("the previous lookups are still running; evaluating when they end"),
                    Some(resolver) => {
                        let hosts = self.detector().hosts_to_resolve(&self.store, self.period()?)?;
                        resolving = spawn_lookups(resolver, hosts, &answers);
                    }
                    None => self.evaluate()?,
                },
                Some(facts) = answered.recv() => {
                    self.dns.hosts.extend(facts.hosts);
                    let hosts = self.detector().hosts_to_resolve(&self.store, self.period()?)?;
                    let unasked: Vec<_> =
                        hosts.into_iter().filter(|(s, h)| self.dns.get(&s.name, *h).is_none()).collect();
                    match &self.resolver {
                        Some(resolver) if !unasked.is_empty() && !asked_again => {
                            asked_again = spawn_lookups(resolver, unasked, &answers);
                        }
                        _ => {
                            (resolving, asked_again) = (false, false);
                            self.evaluate()?;
                        }
                    }
                }
                _ = hangup.recv() => {
                    if self.reload() {
                        evaluate_tick = ticker(self.config.detection.evaluate_seconds.0);
                        self.evaluate()?;
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
                self.profile(&batch.origin, &batch.flows)?;
            }
        }
        self.stop()
    }

    fn detector(&self) -> Detector<'_> {
        Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns }
    }

    /// What an evaluation looks at: from the start of the day before the
    /// newest data (UTC), or from the earliest flow stored since the last
    /// evaluation if that is older, to the newest data. A fixed start for a
    /// whole day keeps a burst's key the same from one evaluation to the next.
    fn period(&self) -> anyhow::Result<Window> {
        let newest_ms = self.store.newest_ms()?.unwrap_or_else(|| jiff::Timestamp::now().as_millisecond());
        let day_before = (newest_ms.div_euclid(MILLIS_PER_DAY) - 1) * MILLIS_PER_DAY;
        let from_ms = self.unevaluated_from_ms.map_or(day_before, |from| from.min(day_before));
        Ok(Window { from_ms, to_ms: newest_ms })
    }

    /// One drain: kernel maps into the flow cache and completed flows
    /// profiled (metering), then the profiles into the store, metrics updated.
    fn drain(&mut self) -> anyhow::Result<()> {
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
            self.profile(&origin, &completed)?;
        }
        self.write_store();
        self.update_source_metrics()
    }

    /// Profiles completed flows from `origin` and exports them.
    fn profile(&mut self, origin: &str, flows: &[FlowRecord]) -> anyhow::Result<()> {
        if flows.is_empty() {
            return Ok(());
        }
        if !self.origins.contains_key(origin) {
            let kind = match self.source {
                FlowSource::Meter { .. } => "live",
                FlowSource::Collector { .. } => "collect",
            };
            let ingest = self.store.ingest()?;
            let source = ingest.add_source(kind, origin, jiff::Timestamp::now().as_millisecond())?;
            ingest.commit()?;
            let profiler = Profiler::for_config(&self.config);
            self.origins.insert(origin.to_string(), Origin { source, profiler, unwritten: FlowSpan::default() });
        }
        let entry = self.origins.get_mut(origin).expect("just made");
        for flow in flows {
            entry.profiler.add(flow);
            entry.unwritten.add(flow);
        }
        for exporter in &mut self.exporters {
            if let Err(e) = exporter.export(flows).and_then(|()| exporter.flush()) {
                self.metrics.export_failed(&exporter.destination().to_string());
                warn!("{} (the flows are in the store; the collector misses them)", with_causes(&e));
            }
        }
        Ok(())
    }

    /// Writes every origin's pending profiles in one transaction. On failure
    /// they stay pending and the next drain tries again; the error is logged
    /// and counted.
    fn write_store(&mut self) {
        let pending: u64 = self.origins.values().map(|o| o.unwritten.flows).sum();
        if pending == 0 {
            return;
        }
        let started = Instant::now();
        let services = self.config.services.all();
        let result = (|| -> Result<(), crate::store::StoreError> {
            let ingest = self.store.ingest()?;
            for origin in self.origins.values().filter(|o| o.unwritten.flows > 0) {
                ingest.write(origin.source, &services, origin.profiler.batch())?;
                ingest.extend_source_by(origin.source, &origin.unwritten)?;
            }
            ingest.commit()
        })();
        match result {
            Ok(()) => {
                for origin in self.origins.values_mut() {
                    if let Some(first) = origin.unwritten.first {
                        let first_ms = crate::store::millis(first);
                        self.unevaluated_from_ms = Some(self.unevaluated_from_ms.map_or(first_ms, |t| t.min(first_ms)));
                    }
                    origin.profiler.take();
                    origin.unwritten = FlowSpan::default();
                }
                self.metrics.store_written(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.store_write_failed();
                error!("writing {pending} flows to the store failed (kept, retried next drain): {e}");
            }
        }
    }

    fn update_source_metrics(&self) -> anyhow::Result<()> {
        match &self.source {
            FlowSource::Meter { meter, cache, rx_at_attach, .. } => {
                for (interface, counters) in meter.interface_counters()? {
                    self.metrics.set_kernel(&interface, &counters);
                    if let (Some(at_attach), Ok(now)) = (rx_at_attach.get(&interface), interface_rx_packets(&interface))
                    {
                        self.metrics.set_coverage(&interface, now.saturating_sub(*at_attach), counters.packets);
                    }
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

    /// Applies the method to the period, stores the findings and emits what
    /// is new or changed.
    fn evaluate(&mut self) -> anyhow::Result<()> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let period = self.period()?;
        let detector = Detector { config: &self.config, whitelist: &self.whitelist, dns: &self.dns };
        let findings = detector.evaluate(&self.store, period)?;
        detector.record(&mut self.store, &findings, now_ms)?;
        self.unevaluated_from_ms = None;
        self.store.prune(self.config.store.retention_days.0)?;
        self.emit_changes()?;
        self.metrics.evaluated();
        Ok(())
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
            let whitelist = Whitelist::load(&config.whitelist_path())?;
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
        let stale = self.origins.values().any(|o| o.unwritten.flows > 0);
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
            self.profile(&origin, &rest)?;
        }
        self.write_store();
        let unwritten: u64 = self.origins.values().map(|o| o.unwritten.flows).sum();
        if unwritten > 0 {
            bail!("{unwritten} flows could not be written to the store");
        }
        self.evaluate()?;
        let seconds = self.started.elapsed().as_secs_f64();
        match &self.source {
            FlowSource::Meter { meter, cache, .. } => info!(
                "agent stopped after {seconds:.0} s: {} packets metered, {} flows, {} findings emitted",
                meter.counters()?.packets,
                cache.stats().flows_completed,
                self.emitted
            ),
            FlowSource::Collector { stats, .. } => info!(
                "collector stopped after {seconds:.0} s: {} messages, {} flows from {} origins, {} malformed \
                 messages, {} findings emitted",
                stats.messages.load(Ordering::Relaxed),
                stats.flows.load(Ordering::Relaxed),
                self.origins.len(),
                stats.malformed.load(Ordering::Relaxed),
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
    let entries = u32::try_from(capture.flow_map_entries.0).context("capture.flow_map_entries is too large")?;
    let mut meter = XdpMeter::load(entries)?;
    let timeouts = Timeouts::from_secs(capture.idle_timeout_seconds.0, capture.active_timeout_seconds.0);
    let mut cache = FlowCache::with_limit(timeouts, capture.flow_cache_entries.0 as usize);
    let mut rx_at_attach = BTreeMap::new();
    for interface in &interfaces {
        let attached = meter.attach(interface, capture.xdp_mode)?.clone();
        cache.name_interface(attached.ifindex, &attached.interface);
        rx_at_attach.insert(interface.clone(), interface_rx_packets(interface).unwrap_or(0));
    }
    let modes: Vec<String> = meter.attachments().iter().map(|a| format!("{} ({})", a.interface, a.mode)).collect();
    let what = format!("agent running: metering {}", modes.join(", "));
    Ok((FlowSource::Meter { meter, cache, rx_at_attach, origin: interfaces.join(",") }, what))
}

/// Starts collecting on `listen`.
async fn collector(listen: SocketAddr) -> anyhow::Result<(FlowSource, String)> {
    let stats = Arc::new(CollectorStats::default());
    let (flows, batches) = mpsc::channel(1024);
    // Bound before "running" is said, so a taken port is an error at start
    // and an exporter that connects at once finds the collector listening.
    let listener = collect::bind(listen).await.with_context(|| format!("cannot listen on {listen} (UDP and TCP)"))?;
    let served = stats.clone();
    tokio::spawn(async move {
        if let Err(e) = collect::serve(listener, flows, served).await {
            error!("the collector on {listen} stopped: {e}");
        }
    });
    let what = format!("collector running: IPFIX and NetFlow v5/v9 on udp://{listen}, IPFIX on tcp://{listen}");
    Ok((FlowSource::Collector { stats, batches: Some(batches) }, what))
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
    let exporters = config.export.ipfix.iter().map(|IpfixDestination(destination)| {
        let destination = match destination {
            Destination::File(path) => Destination::File(config.resolve(path)),
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
