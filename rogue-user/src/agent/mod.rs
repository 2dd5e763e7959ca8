//! The live monitor: `rogue agent` (the XDP flow meter drained on an
//! interval into the flow cache) and `rogue collect` (flows from exporters'
//! IPFIX and NetFlow) share it. Its stages, each in a module of its own and
//! wired one into the next by [`Agent`]:
//!
//! ```text
//! source (meter | collector) ─► store writer ─► engine (evaluate) ─► emitter ─► sinks
//!                          └──► IPFIX exporters          ▲
//!                                          schedule + DNS ┘
//! ```
//!
//! - [`source`]: where flows come from ([`FlowSource`]);
//! - [`writer`]: flows admitted by their times, profiled per origin and
//!   written at each drain (pending while the store fails, bounded);
//! - the engine: the method applied every `detection.evaluate_seconds`;
//! - [`schedule`]: with DNS, the lookups an evaluation waits for;
//! - [`emit`]: findings to the sinks when they open or change materially.
//!
//! One task owns the stages, so nothing is shared but the metrics; DNS runs
//! beside it and hands its answers back, so a slow resolver never delays a
//! drain. The clock is passed in, so every stage but the sources runs in
//! unit tests as any user.

pub mod alertmanager;
pub mod emit;
pub mod metrics;
pub mod schedule;
pub mod sinks;
pub mod source;
pub mod systemd;
pub mod webhook;
pub mod writer;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{Interval, MissedTickBehavior},
};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config, IpfixDestination, Service},
    detect::{DnsFacts, Window, whitelist::Whitelist},
    dns::Resolver,
    engine::{Engine, Paths, WhitelistFile},
    ipfix::{collect::Batch, export::Exporters},
    store::{Access, StoreError},
    time::{MILLIS_PER_DAY, NANOS_PER_SEC, Nanos, millis, rfc3339_millis},
};
use emit::Emitter;
use metrics::{Metrics, Role};
use schedule::{Schedule, Step};
use sinks::Sinks;
use source::{CollectorSource, FlowSource, MeterSource};
use systemd::ServiceManager;
use writer::StoreWriter;

/// What the command line decides.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub paths: Paths,
    /// Overrides the configuration's `interfaces` when not empty.
    pub interfaces: Vec<String>,
    /// Collect from exporters on this address instead of metering interfaces.
    pub listen: Option<SocketAddr>,
}

/// The time, as the agent reads it: the system's, or a test's.
pub trait Clock {
    fn now(&self) -> Nanos;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        jiff::Timestamp::now().as_nanosecond() as Nanos
    }
}

/// Runs the agent until SIGINT or SIGTERM. Its source comes first (the
/// interfaces checked and the meter attached, or the listener bound), so a
/// wrong interface, a missing capability or a taken port creates no store.
pub fn run(options: AgentOptions) -> anyhow::Result<()> {
    let file = config::locate(options.paths.config.as_deref())?;
    let config = Config::load(&file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let open =
            |config| Engine::with_config(&options.paths, file.clone(), config, Access::Create, WhitelistFile::Existing);
        match options.listen {
            Some(listen) => {
                let source = CollectorSource::listen(listen, &config.collect).await?;
                let engine = open(config)?;
                let metrics = serve_metrics(&engine.config, Role::Collector).await?;
                serve_console(&options.paths, &engine.config).await?;
                metrics.watch_collector(source.stats());
                let what =
                    format!("collector running: IPFIX and NetFlow v5/v9 on udp://{listen}, IPFIX on tcp://{listen}");
                Agent::new(options, engine, source, metrics, Box::new(SystemClock))?.run(&what).await
            }
            None => {
                let interfaces = source::interfaces(&options.interfaces, &config, &file)?;
                let source = MeterSource::attach(&config, &interfaces)?;
                let engine = open(config)?;
                let metrics = serve_metrics(&engine.config, Role::Meter).await?;
                serve_console(&options.paths, &engine.config).await?;
                metrics.set_flow_map_entries(engine.config.capture.flow_map_entries.0);
                let what = format!("agent running: metering {}", source.describe());
                Agent::new(options, engine, source, metrics, Box::new(SystemClock))?.run(&what).await
            }
        }
    })
}

/// The metrics, served at `metrics.listen` (bound now, so a taken port is
/// an error at start).
async fn serve_metrics(config: &Config, role: Role) -> anyhow::Result<Arc<Metrics>> {
    let metrics = Arc::new(Metrics::new(role));
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
        info!(target: crate::LIFECYCLE, "metrics on http://{listen}/metrics");
    }
    Ok(metrics)
}

/// The web console beside the agent, with `serve.with_agent` (bound now,
/// as the metrics are). Its pages open the store as `rogue serve` does.
async fn serve_console(paths: &Paths, config: &Config) -> anyhow::Result<()> {
    if !config.serve.with_agent {
        return Ok(());
    }
    let console = Arc::new(crate::serve::Console::new(Paths { no_dns: false, ..paths.clone() }, config)?);
    let listen = config.serve.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("serve.listen: cannot listen on {listen}"))?;
    tokio::spawn(async move {
        if let Err(e) = crate::serve::serve(listener, console, std::future::pending()).await {
            error!("the console stopped: {e}");
        }
    });
    info!(target: crate::LIFECYCLE, "console on http://{listen}/");
    Ok(())
}

pub struct Agent<S: FlowSource> {
    options: AgentOptions,
    engine: Engine,
    source: S,
    writer: StoreWriter,
    emitter: Emitter,
    /// IPFIX collectors the completed flows also go to (`export.ipfix`).
    exporters: Exporters,
    metrics: Arc<Metrics>,
    resolver: Option<Arc<Resolver>>,
    schedule: Schedule,
    clock: Box<dyn Clock + Send>,
    started: Instant,
}

impl<S: FlowSource> Agent<S> {
    pub fn new(
        options: AgentOptions,
        engine: Engine,
        source: S,
        metrics: Arc<Metrics>,
        clock: Box<dyn Clock + Send>,
    ) -> anyhow::Result<Agent<S>> {
        let config = &engine.config;
        let emitter = Emitter::new(Sinks::open(config, &metrics)?);
        let destinations = export_destinations(config);
        let exporters = Exporters::open(&destinations, config.export.observation_domain)?;
        let names: Vec<String> = destinations.iter().map(ToString::to_string).collect();
        metrics.name_outputs(&emitter.sinks.names(), &names);
        metrics.set_evaluate_interval(config.detection.evaluate_seconds.0);
        let resolver = match engine.dns.enabled {
            true => Some(Arc::new(Resolver::new(&config.dns).context("setting up the DNS resolver")?)),
            false => None,
        };
        let writer = StoreWriter::new(source.kind());
        let (started, schedule) = (Instant::now(), Schedule::default());
        Ok(Agent { options, engine, source, writer, emitter, exporters, metrics, resolver, schedule, clock, started })
    }

    /// The loop that wires the stages: flows as they arrive or at each
    /// drain, evaluations on their interval (after their lookups, with
    /// DNS), SIGHUP to reload, SIGINT and SIGTERM to stop.
    async fn run(&mut self, what: &str) -> anyhow::Result<()> {
        let config = &self.engine.config;
        let evaluating = match config.detection.evaluate {
            true => format!("evaluating every {} s", config.detection.evaluate_seconds.0),
            false => "not evaluating (detection.evaluate: false)".into(),
        };
        info!(
            target: crate::LIFECYCLE,
            "{what}; draining every {} s, {evaluating}; findings to {}; store {}",
            config.capture.drain_seconds.0,
            self.emitter.sinks.names().join(", "),
            self.engine.store.location()
        );
        self.metrics.set_store_waiting_writes(self.engine.store.unsent_writes());
        let mut drain_tick = ticker(config.capture.drain_seconds.0);
        let mut evaluate_tick = ticker(config.detection.evaluate_seconds.0);
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        // Ready only once the signals are caught: a stop right after READY
        // must find the handler, not the default action.
        let systemd = ServiceManager::from_environment();
        systemd.ready(what);
        let mut watchdog_tick = systemd.watchdog_interval().map(tokio::time::interval);
        let (answers, mut answered) = mpsc::channel::<DnsFacts>(1);
        let mut arrivals = self.source.arrivals();
        loop {
            tokio::select! {
                Some(batch) = next_batch(&mut arrivals) => self.take(&batch),
                _ = drain_tick.tick() => self.drain()?,
                _ = evaluate_tick.tick() => {
                    let step = self.schedule.tick(self.resolver.is_some());
                    self.step(step, false, &answers);
                }
                Some(facts) = answered.recv() => {
                    self.take_answers(facts);
                    let unasked = self.unasked_hosts().map(|hosts| !hosts.is_empty()).unwrap_or(false);
                    let step = self.schedule.answered(unasked);
                    self.step(step, true, &answers);
                }
                _ = hangup.recv() => {
                    systemd.reloading();
                    if self.reload() {
                        evaluate_tick = ticker(self.engine.config.detection.evaluate_seconds.0);
                        self.evaluate();
                    }
                    systemd.ready(what);
                }
                // The loop turning is what the watchdog checks: a drain or
                // evaluation that never returns stops the pings.
                _ = next_tick(&mut watchdog_tick) => systemd.ping(),
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        systemd.stopping();
        // What the collector already received is stored too.
        if let Some(arrivals) = &mut arrivals {
            arrivals.close();
            while let Ok(batch) = arrivals.try_recv() {
                self.take(&batch);
            }
        }
        self.stop()
    }

    /// Does what the schedule says: evaluate, or look hosts up beside the
    /// loop (all of the period's, or after answers those still unasked).
    fn step(&mut self, step: Step, after_answers: bool, answers: &mpsc::Sender<DnsFacts>) {
        if !self.engine.config.detection.evaluate {
            return;
        }
        let (Step::LookUp, Some(resolver)) = (step, &self.resolver) else {
            if step == Step::Evaluate {
                self.evaluate();
            }
            return;
        };
        let hosts = match after_answers {
            true => self.unasked_hosts(),
            false => self.hosts_to_resolve(),
        };
        match hosts {
            Ok(hosts) => spawn_lookups(resolver, hosts, answers),
            Err(e) => self.evaluation_failed(&e),
        }
    }

    fn hosts_to_resolve(&self) -> anyhow::Result<Vec<(Service, IpAddr)>> {
        Ok(self.engine.detector().hosts_to_resolve(&*self.engine.store, self.period()?)?)
    }

    /// The period's hosts DNS was not asked about yet.
    fn unasked_hosts(&self) -> anyhow::Result<Vec<(Service, IpAddr)>> {
        let hosts = self.hosts_to_resolve()?;
        Ok(hosts.into_iter().filter(|(s, h)| self.engine.dns.get(&s.name, *h).is_none()).collect())
    }

    /// What an evaluation looks at: from the start of the day before the
    /// newest data (UTC), or from the earliest flow no evaluation covered
    /// yet if that is older (a collector may be sent old flows; a crash may
    /// have come between a write and its evaluation), to the newest data. A
    /// fixed start for a whole day keeps a burst's key the same from one
    /// evaluation to the next.
    fn period(&self) -> Result<Window, StoreError> {
        let store = &*self.engine.store;
        let newest_ms = store.newest_ms()?.unwrap_or_else(|| crate::time::millis(self.clock.now()));
        let day_before = (newest_ms.div_euclid(MILLIS_PER_DAY) - 1) * MILLIS_PER_DAY;
        let from_ms = store.pending()?.map_or(day_before, |pending| pending.from_ms.min(day_before));
        Ok(Window { from_ms, to_ms: newest_ms })
    }

    /// One drain: the source's completed flows into the writer, the writer
    /// into the store, silent origins let go.
    fn drain(&mut self) -> anyhow::Result<()> {
        let now = self.clock.now();
        for batch in self.source.drain(now, &self.metrics)? {
            self.take(&batch);
        }
        self.write();
        if self.source.kind() == "collect" {
            self.writer.forget_silent(&self.engine.config.collect, now, &self.metrics);
        }
        if let Some(resolver) = &self.resolver {
            self.metrics.set_dns(resolver.stats());
        }
        Ok(())
    }

    /// Completed flows from one origin: to the writer, and to the exporters.
    fn take(&mut self, batch: &Batch) {
        if batch.flows.is_empty() {
            return;
        }
        let now = self.clock.now();
        self.writer.take(&self.engine.config, &batch.origin, &batch.flows, now, &self.metrics);
        if self.writer.is_full(&self.engine.config) {
            self.writer.write_early(&mut *self.engine.store, &self.engine.config, now, &self.metrics);
        }
        let failed = [self.exporters.export(&batch.flows), self.exporters.flush()].concat();
        for destination in failed {
            self.metrics.export_failed(&destination);
        }
    }

    fn write(&mut self) {
        let now = self.clock.now();
        self.writer.write(&mut *self.engine.store, &self.engine.config, now, &self.metrics);
        self.metrics.set_store_pending_flows(self.writer.pending_flows());
        let store = &mut self.engine.store;
        if let Err(e) = store.send_waiting() {
            warn!("{e}; {} writes wait on local disk for the store", store.unsent_writes());
        }
        self.metrics.set_store_waiting_writes(store.unsent_writes());
        self.metrics.set_store_set_aside_writes(store.set_aside_writes());
    }

    /// DNS answers: over what was known, and kept in the store (should the
    /// store fail, they still serve this run).
    fn take_answers(&mut self, answers: DnsFacts) {
        let now_ms = crate::time::millis(self.clock.now());
        if let Err(e) = self.engine.store.save_host_names(&answers.hosts, now_ms) {
            warn!("keeping the DNS answers in the store failed (they serve this run): {e}");
        }
        self.engine.dns.take(answers);
    }

    /// Applies the method and emits what changed; a failure (the store
    /// cannot be read or written) is logged, counted and tried again at the
    /// next evaluation: the agent keeps metering.
    fn evaluate(&mut self) {
        if !self.engine.config.detection.evaluate {
            return;
        }
        match self.try_evaluate() {
            Ok(()) => self.metrics.evaluated_at(self.clock.now().div_euclid(NANOS_PER_SEC)),
            Err(e) => self.evaluation_failed(&e),
        }
    }

    fn evaluation_failed(&self, error: &anyhow::Error) {
        self.metrics.evaluation_failed();
        error!("evaluating failed (tried again at the next evaluation): {error:#}");
    }

    /// The period evaluated (see [`Engine::evaluate`]), then what changed emitted.
    fn try_evaluate(&mut self) -> anyhow::Result<()> {
        let now_ms = crate::time::millis(self.clock.now());
        let seq = self.engine.store.write_seq()?;
        let period = self.period()?;
        let evaluated = self.engine.evaluate(period, seq, now_ms)?;
        for source in &evaluated.pruned.sources {
            let ingested = rfc3339_millis(source.ingested_ms * 1_000_000);
            info!("retention: removed {} {} (ingested {ingested})", source.kind, source.name);
        }
        let (now_ms, interval) = (millis(self.clock.now()), self.engine.config.detection.evaluate_seconds.0);
        let services = self.engine.config.services.names();
        let (store, metrics) = (&mut *self.engine.store, &self.metrics);
        self.emitter.emit_changes(store, metrics, &services, now_ms, Duration::from_secs(interval))?;
        Ok(())
    }

    /// Re-reads the configuration, the whitelist and the sinks (SIGHUP).
    /// Counts and flows in progress are kept; on an error the running
    /// configuration stays. Returns whether the new one was taken.
    fn reload(&mut self) -> bool {
        let Some(path) = self.engine.config_file.clone() else { return false };
        let loaded = (|| -> anyhow::Result<(Config, Whitelist, Sinks)> {
            let config = Config::load(&path)?;
            let whitelist = Whitelist::load(&config.whitelist_path(), &config.services.names())?;
            let sinks = Sinks::open(&config, &self.metrics)?;
            Ok((config, whitelist, sinks))
        })();
        let (config, whitelist, sinks) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                error!(target: crate::LIFECYCLE, "reload of {} failed, the running configuration stays: {e:#}", path.display());
                return false;
            }
        };
        self.warn_of_restart_keys(&config, &path);
        if self.resolver.is_some() && format!("{:?}", config.dns) != format!("{:?}", self.engine.config.dns) {
            match Resolver::new(&config.dns) {
                Ok(resolver) => self.resolver = Some(Arc::new(resolver)),
                Err(e) => warn!("the new dns settings do not work, the running resolver stays: {e}"),
            }
        }
        // Profiles pending a store write were made with the old settings;
        // write them out first (kept, should the write fail).
        self.write();
        info!(
            target: crate::LIFECYCLE,
            "reloaded {}: {} whitelist entries; findings to {}",
            path.display(),
            whitelist.entries().len(),
            sinks.names().join(", ")
        );
        self.metrics.name_outputs(&sinks.names(), &[]);
        self.metrics.set_evaluate_interval(config.detection.evaluate_seconds.0);
        self.engine.config = config;
        self.engine.whitelist = whitelist;
        self.emitter.sinks = sinks;
        self.writer.renew_profilers(&self.engine.config, &self.metrics);
        true
    }

    /// Names the keys of the new configuration that only a restart applies.
    fn warn_of_restart_keys(&self, config: &Config, path: &std::path::Path) {
        let running = &self.engine.config;
        let differ = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        for (key, changed) in [
            ("interfaces", config.interfaces != running.interfaces && self.options.interfaces.is_empty()),
            ("capture", differ(&config.capture, &running.capture)),
            ("store", differ(&config.store, &running.store)),
            ("metrics", config.metrics.listen != running.metrics.listen),
            ("export", differ(&config.export, &running.export)),
            ("collect", differ(&config.collect, &running.collect)),
        ] {
            if changed {
                warn!("{}: `{key}` changed; it takes effect when the agent restarts", path.display());
            }
        }
    }

    /// SIGINT or SIGTERM: the last drain, every flow in progress completed
    /// and stored, a last evaluation, then the meter detaches (dropping it
    /// closes its bpf_links).
    fn stop(&mut self) -> anyhow::Result<()> {
        self.drain()?;
        for batch in self.source.finish()? {
            self.take(&batch);
        }
        self.write();
        let unwritten = self.writer.pending_flows();
        if unwritten > 0 {
            bail!("{unwritten} flows could not be written to the store");
        }
        let waiting = self.engine.store.unsent_writes();
        if waiting > 0 {
            warn!(
                target: crate::LIFECYCLE,
                "{waiting} writes wait on local disk for the store {}; the next rogue to open it sends them",
                self.engine.store.location()
            );
        }
        if self.engine.config.detection.evaluate {
            self.try_evaluate()?;
        }
        let (who, seconds) = (if self.source.kind() == "live" { "agent" } else { "collector" }, self.started.elapsed());
        info!(
            target: crate::LIFECYCLE,
            "{who} stopped after {:.0} s: {}, from {} origins; {} flows rejected as implausibly dated, {} dropped \
             for want of a store, {} findings emitted",
            seconds.as_secs_f64(),
            self.source.summary()?,
            self.writer.origins(),
            self.writer.rejected(),
            self.writer.dropped(),
            self.emitter.emitted
        );
        Ok(())
    }
}

/// `export.ipfix`, files relative to the configuration.
fn export_destinations(config: &Config) -> Vec<IpfixDestination> {
    let resolve = |destination: &IpfixDestination| match destination {
        IpfixDestination::File(path) => IpfixDestination::File(config.resolve(path)),
        other => other.clone(),
    };
    config.export.ipfix.iter().map(resolve).collect()
}

/// The collector's next batch, or never (metering, or once it has stopped).
async fn next_batch(batches: &mut Option<mpsc::Receiver<Batch>>) -> Option<Batch> {
    match batches {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Looks `hosts` up beside the agent's task; the answers come back on
/// `answers`.
fn spawn_lookups(resolver: &Arc<Resolver>, hosts: Vec<(Service, IpAddr)>, answers: &mpsc::Sender<DnsFacts>) {
    let (resolver, answers) = (resolver.clone(), answers.clone());
    tokio::spawn(async move {
        let _ = answers.send(resolver.resolve(&hosts).await).await;
    });
}

/// The next tick of `interval`, or never without one.
async fn next_tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn ticker(seconds: u64) -> Interval {
    let period = Duration::from_secs(seconds);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

#[cfg(test)]
mod tests;
