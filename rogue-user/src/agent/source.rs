//! Where the agent's flows come from, each behind one small trait: the XDP
//! meter on interfaces (drained at each tick into a flow cache), the
//! collector (exporters' flows, as they arrive), and, in tests, flows a test
//! hands over. Each owns its state and counters; the agent only asks for
//! flows.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context as _, bail};
use rogue_common::MeterCounters;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::metrics::Metrics;
use crate::{
    capture::{
        XdpMeter,
        host::{check_interfaces, interface_rx_packets},
    },
    config::{CollectConfig, Config},
    flows::{FlowCache, Timeouts},
    ipfix::collect::{self, Batch, CollectorStats, Limits},
    time::Nanos,
    with_causes,
};

pub trait FlowSource {
    /// The kind of store source its origins are: `live` (interfaces) or
    /// `collect` (exporters).
    fn kind(&self) -> &'static str;

    /// Flows that arrive on their own (the collector's), handed to the
    /// agent's loop once; None for sources the agent drains.
    fn arrivals(&mut self) -> Option<mpsc::Receiver<Batch>> {
        None
    }

    /// At a drain tick (`now` by the clock): the flows completed by then.
    fn drain(&mut self, now: Nanos, metrics: &Metrics) -> anyhow::Result<Vec<Batch>>;

    /// At the stop: every flow still in progress.
    fn finish(&mut self) -> anyhow::Result<Vec<Batch>> {
        Ok(Vec::new())
    }

    /// What it did, for the line the agent logs when it stops.
    fn summary(&self) -> anyhow::Result<String>;
}

/// The XDP flow meter on interfaces, and the flow cache its drains feed.
pub struct MeterSource {
    meter: XdpMeter,
    cache: FlowCache,
    /// Each attachment's counts across its comings and goings.
    counts: Vec<InterfaceCounts>,
    /// The origin every flow is stored under (the interfaces' names).
    origin: String,
}

impl MeterSource {
    /// Loads the meter and attaches it to `interfaces`.
    pub fn attach(config: &Config, interfaces: &[String]) -> anyhow::Result<MeterSource> {
        let capture = &config.capture;
        let mut meter = XdpMeter::load(capture.flow_map_entries.0, capture.kernel_log, capture.decapsulate())?;
        let timeouts = Timeouts::from_secs(capture.idle_timeout_seconds.0, capture.active_timeout_seconds.0);
        let mut cache = FlowCache::with_limit(timeouts, capture.flow_cache_entries.0 as usize);
        let mut counts = Vec::new();
        for (index, interface) in interfaces.iter().enumerate() {
            let attached = meter.attach(interface, capture.xdp_mode)?.clone();
            cache.name_interface(attached.ifindex, &attached.interface);
            let rx = interface_rx_packets(interface).unwrap_or(0);
            counts.push(InterfaceCounts::attached(meter.attachment_counters(index)?, rx));
        }
        Ok(MeterSource { meter, cache, counts, origin: interfaces.join(",") })
    }

    /// `interface (mode)` of each attachment.
    pub fn describe(&self) -> String {
        let modes: Vec<String> =
            self.meter.attachments().iter().map(|a| format!("{} ({})", a.interface, a.mode)).collect();
        modes.join(", ")
    }

    /// Notices metered interfaces that went away (deleted, or moved to
    /// another namespace: the kernel drops their XDP links) and attaches
    /// again to those that came back.
    fn follow_interfaces(&mut self, metrics: &Metrics) -> anyhow::Result<()> {
        for index in self.meter.detached()? {
            let interface = self.meter.attachments()[index].interface.clone();
            warn!(
                "{interface} went away (deleted, or moved to another namespace): it is not metered until it \
                 returns; rogue attaches to it again as soon as it does"
            );
            self.counts[index].close(&self.meter.attachment_counters(index)?);
            metrics.interface_detached(&interface);
        }
        let gone: Vec<usize> =
            (0..self.meter.attachments().len()).filter(|&index| !self.meter.is_attached(index)).collect();
        for index in gone {
            match self.meter.reattach(index) {
                Ok(Some(attachment)) => {
                    let (interface, ifindex) = (attachment.interface.clone(), attachment.ifindex);
                    warn!("{interface} is back (ifindex {ifindex}): metering it again");
                    self.cache.name_interface(ifindex, &interface);
                    let rx = interface_rx_packets(&interface).unwrap_or(0);
                    self.counts[index].reopen(self.meter.attachment_counters(index)?, rx);
                    metrics.interface_reattached(&interface);
                }
                Ok(None) => {}
                Err(e) => debug!("attaching again failed (retried at the next drain): {}", with_causes(&e)),
            }
        }
        Ok(())
    }

    /// The kernel's and the interfaces' counts into the metrics; the
    /// receive counters are remembered, for when an interface goes away.
    fn update_metrics(&mut self, metrics: &Metrics) -> anyhow::Result<()> {
        for (index, attachment) in self.meter.attachments().iter().enumerate() {
            let counts = &mut self.counts[index];
            let attached = self.meter.is_attached(index);
            if attached && let Ok(rx) = interface_rx_packets(&attachment.interface) {
                counts.rx_last = rx;
            }
            let (kernel, received) = match attached {
                true => counts.totals(&self.meter.attachment_counters(index)?),
                false => (counts.carried, counts.carried_rx),
            };
            metrics.set_kernel(&attachment.interface, &kernel);
            metrics.set_coverage(&attachment.interface, received, kernel.packets);
            metrics.set_attached(&attachment.interface, attached);
        }
        if let Some(shared) = self.meter.shared_slot_counters()? {
            metrics.set_kernel("other", &shared);
        }
        metrics.set_flow_cache(self.cache.len(), &self.cache.stats());
        Ok(())
    }
}

impl FlowSource for MeterSource {
    fn kind(&self) -> &'static str {
        "live"
    }

    /// Follows the interfaces, drains the kernel maps into the cache, and
    /// completes what timed out.
    fn drain(&mut self, _now: Nanos, metrics: &Metrics) -> anyhow::Result<Vec<Batch>> {
        self.follow_interfaces(metrics)?;
        let drain = self.meter.drain()?;
        let mut completed = Vec::new();
        for flow in &drain.flows {
            self.cache.add(&flow.key, drain.delta(flow), &mut completed);
        }
        // Sweep at every drain rather than on nfpcapd's 10 s schedule (kept
        // for parity on captures): flows complete within a drain of their
        // timeout, so findings come out that much sooner. The drain's own
        // time, from the kernel's clock, is the flows' time.
        self.cache.sweep(drain.at, &mut completed);
        metrics.drained(drain.flows.len(), drain.took.as_secs_f64());
        debug!(entries = drain.flows.len(), completed = completed.len(), "drained");
        self.update_metrics(metrics)?;
        Ok(vec![Batch { origin: self.origin.clone(), flows: completed }])
    }

    fn finish(&mut self) -> anyhow::Result<Vec<Batch>> {
        let mut rest = Vec::new();
        self.cache.flush(&mut rest);
        Ok(vec![Batch { origin: self.origin.clone(), flows: rest }])
    }

    fn summary(&self) -> anyhow::Result<String> {
        Ok(format!("{} packets metered, {} flows", self.meter.counters()?.packets, self.cache.stats().flows_completed))
    }
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

/// Exporters' flows, received by `ipfix::collect` on their own tasks and
/// handed over as they arrive.
pub struct CollectorSource {
    stats: Arc<CollectorStats>,
    arrivals: Option<mpsc::Receiver<Batch>>,
}

impl CollectorSource {
    /// Binds `listen` (an error now, rather than a collector that never
    /// receives) and starts receiving. The file descriptor limit is raised
    /// to its ceiling first: each IPFIX-over-TCP exporter holds one.
    pub async fn listen(listen: SocketAddr, collect: &CollectConfig) -> anyhow::Result<CollectorSource> {
        raise_descriptor_limit();
        let stats = Arc::new(CollectorStats::default());
        let (flows, arrivals) = mpsc::channel(1024);
        let listener =
            collect::bind(listen).await.with_context(|| format!("cannot listen on {listen} (UDP and TCP)"))?;
        let (served, limits) = (stats.clone(), limits(collect));
        tokio::spawn(async move {
            if let Err(e) = collect::serve(listener, flows, served, limits).await {
                error!("the collector on {listen} stopped: {e}");
            }
        });
        Ok(CollectorSource { stats, arrivals: Some(arrivals) })
    }

    pub fn stats(&self) -> Arc<CollectorStats> {
        self.stats.clone()
    }
}

impl FlowSource for CollectorSource {
    fn kind(&self) -> &'static str {
        "collect"
    }

    fn arrivals(&mut self) -> Option<mpsc::Receiver<Batch>> {
        self.arrivals.take()
    }

    /// Exporters' flows come on their own; the collector's counts are read
    /// at each scrape.
    fn drain(&mut self, _now: Nanos, _metrics: &Metrics) -> anyhow::Result<Vec<Batch>> {
        Ok(Vec::new())
    }

    fn summary(&self) -> anyhow::Result<String> {
        let stats = &self.stats;
        Ok(format!(
            "{} messages, {} flows, {} malformed messages",
            stats.messages.load(Ordering::Relaxed),
            stats.flows.load(Ordering::Relaxed),
            stats.malformed.load(Ordering::Relaxed)
        ))
    }
}

/// The collector's limits from the configuration.
fn limits(collect: &CollectConfig) -> Limits {
    Limits {
        max_exporters: collect.max_exporters.0 as usize,
        exporter_idle: std::time::Duration::from_secs(collect.exporter_idle_seconds.0),
        max_tcp_connections: collect.max_tcp_connections.0 as usize,
        tcp_idle: std::time::Duration::from_secs(collect.tcp_idle_seconds.0),
        allowed: collect.allowed_exporters.clone(),
    }
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

/// The interfaces to meter: the options', else the configuration's.
pub fn interfaces(options: &[String], config: &Config, config_path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let interfaces = if options.is_empty() { config.interfaces.clone() } else { options.to_vec() };
    if interfaces.is_empty() {
        bail!(
            "no interfaces to meter: list them under `interfaces` in {} or pass --iface (a gateway needs both \
             its internal and its external side)",
            config_path.display()
        );
    }
    check_interfaces(&interfaces).map_err(anyhow::Error::msg)?;
    Ok(interfaces)
}

/// Flows a test hands over, one drain's worth at a time.
#[cfg(test)]
#[derive(Default)]
pub struct MemorySource {
    pub drains: std::collections::VecDeque<Vec<Batch>>,
    pub kind: &'static str,
}

#[cfg(test)]
impl FlowSource for MemorySource {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn drain(&mut self, _now: Nanos, _metrics: &Metrics) -> anyhow::Result<Vec<Batch>> {
        Ok(self.drains.pop_front().unwrap_or_default())
    }

    fn summary(&self) -> anyhow::Result<String> {
        Ok(format!("{} drains left", self.drains.len()))
    }
}
