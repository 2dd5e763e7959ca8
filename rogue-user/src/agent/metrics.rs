//! The agent's Prometheus endpoint (`metrics.listen`, GET /metrics, in the
//! OpenMetrics text format): what the kernel counted per interface, what the
//! interfaces themselves received (so silent loss shows as coverage below
//! 1), the drains, the flow cache, the store, DNS and the findings; and the
//! process's own CPU, memory and descriptors under the names every
//! Prometheus client library gives them (`process_*`), read from procfs.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};
use rogue_common::MeterCounters;

use crate::{dns::DnsStats, flows::FlowCacheStats, ipfix::collect::CollectorStats};

/// The kinds and statuses of findings, each pair a series of `rogue_findings`.
const FINDING_KINDS: [&str; 3] = ["rogue_server", "fanout_burst", "volume_spike"];
const FINDING_STATUSES: [&str; 4] = ["open", "acknowledged", "whitelisted", "confirmed_rogue"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabel {
    pub interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub service: String,
    pub kind: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    pub origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

type Ratio = Gauge<f64, AtomicU64>;

/// Every metric the agent exports. Cumulative counts read from elsewhere
/// (the kernel's counters, the interface's, the cache's) are stored as they
/// are read, so a counter is never ahead of or behind its source.
pub struct Metrics {
    registry: Registry,
    kernel_packets: Family<InterfaceLabel, Counter>,
    kernel_bytes: Family<InterfaceLabel, Counter>,
    kernel_malformed: Family<InterfaceLabel, Counter>,
    kernel_non_ip: Family<InterfaceLabel, Counter>,
    kernel_decapsulated: Family<InterfaceLabel, Counter>,
    kernel_insert_failed: Family<InterfaceLabel, Counter>,
    interface_rx_packets: Family<InterfaceLabel, Counter>,
    coverage: Family<InterfaceLabel, Ratio>,
    interface_attached: Family<InterfaceLabel, Gauge>,
    interface_detaches: Family<InterfaceLabel, Counter>,
    interface_reattaches: Family<InterfaceLabel, Counter>,
    drains: Counter,
    drained_entries: Counter,
    drain_seconds: Histogram,
    flow_cache_flows: Gauge,
    flows_completed: Counter,
    flow_cache_early_exports: Counter,
    store_write_seconds: Histogram,
    store_write_errors: Counter,
    store_dropped_flows: Counter,
    records_rejected: Family<OriginLabel, Counter>,
    origins: Gauge,
    origins_forgotten: Counter,
    dns_lookups: Counter,
    dns_cache_hits: Counter,
    dns_unanswered: Counter,
    udp_unanswered: Counter,
    udp_evicted: Counter,
    udp_exchanges_open: Gauge,
    findings: Family<FindingLabels, Gauge>,
    findings_emitted: Counter,
    sink_errors: Family<SinkLabel, Counter>,
    sink_delivered: Family<SinkLabel, Counter>,
    sink_refused: Family<SinkLabel, Counter>,
    sink_dropped: Family<SinkLabel, Counter>,
    sink_spooled: Family<SinkLabel, Gauge>,
    export_errors: Family<SinkLabel, Counter>,
    evaluations: Counter,
    evaluation_errors: Counter,
    collector_messages: Counter,
    collector_flows: Counter,
    collector_malformed: Counter,
    collector_sets_without_template: Counter,
    collector_records_unreadable: Counter,
    collector_socket_drops: Counter,
    collector_refused_exporters: Counter,
    collector_exporters: Gauge,
    collector_exporters_forgotten: Family<ReasonLabel, Counter>,
    collector_tcp_connections: Gauge,
    collector_tcp_refused: Counter,
    collector_tcp_accept_errors: Counter,
    collector_tcp_idle_closed: Counter,
    collector_tcp_partial_messages: Counter,
    collector_udp_errors: Counter,
    /// The collector's own counts, read at each scrape: they move with
    /// every message, not with the drain.
    collector: OnceLock<Arc<CollectorStats>>,
    last_evaluation: Gauge,
    evaluate_interval: Gauge,
    store_waiting_writes: Gauge,
    store_pending_flows: Gauge,
    store_set_aside_writes: Counter,
    build_info: Family<BuildLabels, Gauge>,
    flow_map_entries: Gauge,
}

/// Seconds from 100 µs to about 26 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 10)
}

/// What the agent's flows come from, which decides its metric families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Meter,
    Collector,
}

impl Metrics {
    /// The metrics of a meter (`rogue agent`: kernel and interface
    /// families) or a collector (`rogue collect`: collector families); the
    /// rest are common. Neither exports families it never updates.
    pub fn new(role: Role) -> Metrics {
        let mut m = Metrics {
            last_evaluation: Gauge::default(),
            evaluate_interval: Gauge::default(),
            store_waiting_writes: Gauge::default(),
            store_pending_flows: Gauge::default(),
            store_set_aside_writes: Counter::default(),
            flow_map_entries: Gauge::default(),
            build_info: Family::default(),
            registry: Registry::default(),
            kernel_packets: Family::default(),
            kernel_bytes: Family::default(),
            kernel_malformed: Family::default(),
            kernel_non_ip: Family::default(),
            kernel_decapsulated: Family::default(),
            kernel_insert_failed: Family::default(),
            interface_rx_packets: Family::default(),
            coverage: Family::default(),
            interface_attached: Family::default(),
            interface_detaches: Family::default(),
            interface_reattaches: Family::default(),
            drains: Counter::default(),
            drained_entries: Counter::default(),
            drain_seconds: Histogram::new(latency_buckets()),
            flow_cache_flows: Gauge::default(),
            flows_completed: Counter::default(),
            flow_cache_early_exports: Counter::default(),
            store_write_seconds: Histogram::new(latency_buckets()),
            store_write_errors: Counter::default(),
            store_dropped_flows: Counter::default(),
            records_rejected: Family::default(),
            origins: Gauge::default(),
            origins_forgotten: Counter::default(),
            dns_lookups: Counter::default(),
            dns_cache_hits: Counter::default(),
            dns_unanswered: Counter::default(),
            udp_unanswered: Counter::default(),
            udp_evicted: Counter::default(),
            udp_exchanges_open: Gauge::default(),
            findings: Family::default(),
            findings_emitted: Counter::default(),
            sink_errors: Family::default(),
            sink_delivered: Family::default(),
            sink_refused: Family::default(),
            sink_dropped: Family::default(),
            sink_spooled: Family::default(),
            export_errors: Family::default(),
            evaluations: Counter::default(),
            evaluation_errors: Counter::default(),
            collector_messages: Counter::default(),
            collector_flows: Counter::default(),
            collector_malformed: Counter::default(),
            collector_sets_without_template: Counter::default(),
            collector_records_unreadable: Counter::default(),
            collector_socket_drops: Counter::default(),
            collector_refused_exporters: Counter::default(),
            collector_exporters: Gauge::default(),
            collector_exporters_forgotten: Family::default(),
            collector_tcp_connections: Gauge::default(),
            collector_tcp_refused: Counter::default(),
            collector_tcp_accept_errors: Counter::default(),
            collector_tcp_idle_closed: Counter::default(),
            collector_tcp_partial_messages: Counter::default(),
            collector_udp_errors: Counter::default(),
            collector: OnceLock::new(),
        };
        let r = &mut m.registry;
        let rogue = r.sub_registry_with_prefix("rogue");
        if role == Role::Meter {
            rogue.register(
                "flow_map_entries",
                "Entries each kernel flow map holds (capture.flow_map_entries): what a drain's entries fill",
                m.flow_map_entries.clone(),
            );
            rogue.register("drains", "Drains of the kernel flow maps", m.drains.clone());
            rogue.register("drained_entries", "Flow map entries drained", m.drained_entries.clone());
            rogue.register_with_unit("drain", "Time one drain took", Unit::Seconds, m.drain_seconds.clone());
            rogue.register("kernel_packets", "Frames the XDP program counted", m.kernel_packets.clone());
            rogue.register_with_unit(
                "kernel",
                "Frame bytes the XDP program counted",
                Unit::Bytes,
                m.kernel_bytes.clone(),
            );
            rogue.register("kernel_malformed", "Frames with a cut or invalid header", m.kernel_malformed.clone());
            rogue.register("kernel_non_ip", "Frames carrying no IPv4 or IPv6 packet", m.kernel_non_ip.clone());
            rogue.register(
                "kernel_decapsulated",
                "Frames whose packet was taken out of a tunnel (capture.decapsulate)",
                m.kernel_decapsulated.clone(),
            );
            rogue.register(
                "kernel_insert_failed_packets",
                "Packets that found no slot in a full flow map (raise capture.flow_map_entries)",
                m.kernel_insert_failed.clone(),
            );
            rogue.register(
                "interface_rx_packets",
                "Packets the interface received since rogue attached (its own counter)",
                m.interface_rx_packets.clone(),
            );
            rogue.register(
                "coverage_ratio",
                "Frames the XDP program counted over frames the interface received since attach",
                m.coverage.clone(),
            );
            rogue.register(
                "interface_attached",
                "Whether the flow meter is attached to the interface (0 while it is gone)",
                m.interface_attached.clone(),
            );
            rogue.register(
                "interface_detaches",
                "Times the interface went away (deleted or moved) while metered",
                m.interface_detaches.clone(),
            );
            rogue.register(
                "interface_reattaches",
                "Times the flow meter attached again to an interface that came back",
                m.interface_reattaches.clone(),
            );
        }
        rogue.register("flow_cache_flows", "Flows held in the flow cache", m.flow_cache_flows.clone());
        rogue.register("flows_completed", "Flows completed and profiled", m.flows_completed.clone());
        rogue.register(
            "flow_cache_early_exports",
            "Flows completed before their timeouts because the cache was full (capture.flow_cache_entries)",
            m.flow_cache_early_exports.clone(),
        );
        rogue.register_with_unit(
            "store_write",
            "Time one store transaction took",
            Unit::Seconds,
            m.store_write_seconds.clone(),
        );
        rogue.register("store_write_errors", "Store writes that failed (retried)", m.store_write_errors.clone());
        rogue.register(
            "store_dropped_flows",
            "Flows dropped, oldest first, while the store could not be written (store.max_pending_flows)",
            m.store_dropped_flows.clone(),
        );
        rogue.register(
            "records_rejected",
            "Flows dated outside the plausible window (ahead of the clock, or older than the retention), not stored",
            m.records_rejected.clone(),
        );
        rogue.register("origins", "Origins of flows (interfaces, exporters) held in memory", m.origins.clone());
        rogue.register(
            "origins_forgotten",
            "Origins forgotten while silent, to bound memory (their flows are stored)",
            m.origins_forgotten.clone(),
        );
        rogue.register("dns_lookups", "DNS lookups asked for", m.dns_lookups.clone());
        rogue.register("dns_cache_hits", "DNS lookups answered from the cache", m.dns_cache_hits.clone());
        rogue.register("dns_unanswered", "DNS lookups that got no answer", m.dns_unanswered.clone());
        rogue.register(
            "udp_unanswered_flows",
            "UDP flows on a service port whose other direction never came (scans; no server made of them)",
            m.udp_unanswered.clone(),
        );
        rogue.register(
            "udp_exchanges_evicted",
            "UDP exchanges given up on early because capture.flow_cache_entries were waiting for an answer",
            m.udp_evicted.clone(),
        );
        rogue.register(
            "udp_exchanges_open",
            "UDP exchanges on service ports waiting for, or having had, an answer",
            m.udp_exchanges_open.clone(),
        );
        rogue.register("findings", "Stored findings by kind and status", m.findings.clone());
        rogue.register("findings_emitted", "Findings sent to the sinks", m.findings_emitted.clone());
        rogue.register("sink_errors", "Findings a sink failed to take (retried)", m.sink_errors.clone());
        rogue.register("sink_delivered", "Findings a webhook's endpoint took (2xx)", m.sink_delivered.clone());
        rogue.register(
            "sink_refused",
            "Findings a webhook's endpoint refused for good (4xx but 408 and 429; skipped)",
            m.sink_refused.clone(),
        );
        rogue.register(
            "sink_dropped",
            "Findings dropped because a webhook's spool was full (output.spool_max_bytes)",
            m.sink_dropped.clone(),
        );
        rogue.register("sink_spooled", "Findings waiting in a webhook's spool", m.sink_spooled.clone());
        rogue.register("export_errors", "IPFIX exports that failed, by destination", m.export_errors.clone());
        rogue.register("evaluations", "Evaluations of the method", m.evaluations.clone());
        rogue.register(
            "evaluation_errors",
            "Evaluations that failed (the store could not be read or written; retried)",
            m.evaluation_errors.clone(),
        );
        if role == Role::Collector {
            rogue.register("collector_messages", "IPFIX and NetFlow messages received", m.collector_messages.clone());
            rogue.register("collector_flows", "Flows received from exporters", m.collector_flows.clone());
            rogue.register("collector_malformed", "Messages that could not be read", m.collector_malformed.clone());
            rogue.register(
                "collector_sets_without_template",
                "Data sets dropped because their template had not arrived",
                m.collector_sets_without_template.clone(),
            );
            rogue.register(
                "collector_records_unreadable",
                "Records without addresses or with impossible times",
                m.collector_records_unreadable.clone(),
            );
            rogue.register(
                "collector_socket_drops",
                "Datagrams the kernel dropped because the collector's UDP buffer was full",
                m.collector_socket_drops.clone(),
            );
            rogue.register(
                "collector_refused_exporters",
                "Datagrams and connections from addresses not in collect.allowed_exporters",
                m.collector_refused_exporters.clone(),
            );
            rogue.register("collector_exporters", "Exporters whose templates are kept", m.collector_exporters.clone());
            rogue.register(
                "collector_exporters_forgotten",
                "Exporters forgotten: to make room (collect.max_exporters) or silent (collect.exporter_idle_seconds)",
                m.collector_exporters_forgotten.clone(),
            );
            rogue.register(
                "collector_tcp_connections",
                "IPFIX-over-TCP connections open",
                m.collector_tcp_connections.clone(),
            );
            rogue.register(
                "collector_tcp_refused",
                "IPFIX-over-TCP connections refused at the bound (collect.max_tcp_connections, file descriptors)",
                m.collector_tcp_refused.clone(),
            );
            rogue.register(
                "collector_tcp_accept_errors",
                "Failed accepts of IPFIX-over-TCP connections (out of file descriptors, say; retried)",
                m.collector_tcp_accept_errors.clone(),
            );
            rogue.register(
                "collector_tcp_idle_closed",
                "IPFIX-over-TCP connections closed after collect.tcp_idle_seconds of silence",
                m.collector_tcp_idle_closed.clone(),
            );
            rogue.register(
                "collector_tcp_partial_messages",
                "IPFIX-over-TCP connections that ended inside a message",
                m.collector_tcp_partial_messages.clone(),
            );
            rogue.register("collector_udp_errors", "UDP receives that failed", m.collector_udp_errors.clone());
        }
        rogue.register(
            "last_evaluation_timestamp_seconds",
            "When the method was last applied without error (Unix time)",
            m.last_evaluation.clone(),
        );
        rogue.register(
            "evaluate_interval_seconds",
            "How often the method is applied (detection.evaluate_seconds): an alert's unit of lateness",
            m.evaluate_interval.clone(),
        );
        rogue.register(
            "store_pending_flows",
            "Flows received or metered and not yet written to the store (held in memory)",
            m.store_pending_flows.clone(),
        );
        rogue.register(
            "store_set_aside_writes",
            "Writes the store refused again and again, set aside on disk for an operator (since start)",
            m.store_set_aside_writes.clone(),
        );
        rogue.register(
            "store_waiting_writes",
            "Writes kept on local disk until the store takes them (ClickHouse's spool; 0 on SQLite)",
            m.store_waiting_writes.clone(),
        );
        rogue.register(
            "build_info",
            "rogue's version and the commit it was built from (always 1)",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: env!("ROGUE_COMMIT").into(),
            })
            .set(1);
        m.registry.register_collector(Box::new(ProcessMetrics));
        m
    }

    /// The kernel's counters of one interface (cumulative since load).
    pub fn set_kernel(&self, interface: &str, counters: &MeterCounters) {
        let label = InterfaceLabel { interface: interface.to_string() };
        set(&self.kernel_packets.get_or_create(&label), counters.packets);
        set(&self.kernel_bytes.get_or_create(&label), counters.bytes);
        set(&self.kernel_malformed.get_or_create(&label), counters.malformed);
        set(&self.kernel_non_ip.get_or_create(&label), counters.non_ip);
        set(&self.kernel_decapsulated.get_or_create(&label), counters.decapsulated);
        set(&self.kernel_insert_failed.get_or_create(&label), counters.insert_failed_packets);
    }

    /// What the interface received since attach, against what XDP counted:
    /// a ratio in [0, 1] (XDP may see a frame the interface does not count).
    pub fn set_coverage(&self, interface: &str, rx_packets: u64, counted: u64) {
        let label = InterfaceLabel { interface: interface.to_string() };
        set(&self.interface_rx_packets.get_or_create(&label), rx_packets);
        let ratio = if rx_packets == 0 { 1.0 } else { (counted as f64 / rx_packets as f64).clamp(0.0, 1.0) };
        self.coverage.get_or_create(&label).set(ratio);
    }

    /// Whether the meter is attached to `interface`.
    pub fn set_attached(&self, interface: &str, attached: bool) {
        self.interface_attached
            .get_or_create(&InterfaceLabel { interface: interface.to_string() })
            .set(attached as i64);
    }

    pub fn interface_detached(&self, interface: &str) {
        self.interface_detaches.get_or_create(&InterfaceLabel { interface: interface.to_string() }).inc();
        self.set_attached(interface, false);
    }

    pub fn interface_reattached(&self, interface: &str) {
        self.interface_reattaches.get_or_create(&InterfaceLabel { interface: interface.to_string() }).inc();
        self.set_attached(interface, true);
    }

    pub fn store_dropped(&self, flows: u64) {
        self.store_dropped_flows.inc_by(flows);
    }

    pub fn rejected(&self, origin: &str, records: u64) {
        self.records_rejected.get_or_create(&OriginLabel { origin: origin.to_string() }).inc_by(records);
    }

    /// The origins held; `forgotten` were let go (their series go too).
    pub fn set_origins(&self, held: usize, forgotten: &[String]) {
        self.origins.set(held as i64);
        for origin in forgotten {
            self.origins_forgotten.inc();
            self.records_rejected.remove(&OriginLabel { origin: origin.clone() });
        }
    }

    pub fn evaluation_failed(&self) {
        self.evaluation_errors.inc();
    }

    pub fn drained(&self, entries: usize, seconds: f64) {
        self.drains.inc();
        self.drained_entries.inc_by(entries as u64);
        self.drain_seconds.observe(seconds);
    }

    pub fn set_flow_cache(&self, flows: usize, stats: &FlowCacheStats) {
        self.flow_cache_flows.set(flows as i64);
        set(&self.flows_completed, stats.flows_completed);
        set(&self.flow_cache_early_exports, stats.early_exported);
    }

    pub fn store_written(&self, seconds: f64) {
        self.store_write_seconds.observe(seconds);
    }

    pub fn store_write_failed(&self) {
        self.store_write_errors.inc();
    }

    pub fn udp_unanswered(&self, flows: u64, evicted: u64) {
        self.udp_unanswered.inc_by(flows);
        self.udp_evicted.inc_by(evicted);
    }

    pub fn set_udp_exchanges_open(&self, open: usize) {
        self.udp_exchanges_open.set(open as i64);
    }

    pub fn set_dns(&self, stats: &DnsStats) {
        set(&self.dns_lookups, stats.lookups.load(Ordering::Relaxed));
        set(&self.dns_cache_hits, stats.cache_hits.load(Ordering::Relaxed));
        set(&self.dns_unanswered, stats.unanswered.load(Ordering::Relaxed));
    }

    /// The number of stored findings of each service, kind and status;
    /// every one of `services` has every pair, at 0 where there is none
    /// (and a service no longer configured keeps its findings' series).
    pub fn set_findings(&self, services: &[String], counts: impl IntoIterator<Item = ((String, String, String), i64)>) {
        let counts: std::collections::HashMap<(String, String, String), i64> = counts.into_iter().collect();
        let mut services: Vec<String> = services.to_vec();
        services.extend(counts.keys().map(|(service, _, _)| service.clone()));
        services.sort();
        services.dedup();
        self.findings.clear();
        for service in &services {
            for kind in FINDING_KINDS {
                for status in FINDING_STATUSES {
                    let key = (service.clone(), kind.to_string(), status.to_string());
                    let count = counts.get(&key).copied().unwrap_or(0);
                    let (service, kind, status) = key;
                    self.findings.get_or_create(&FindingLabels { service, kind, status }).set(count);
                }
            }
        }
    }

    /// The sinks and IPFIX destinations, each counter at 0 from the start
    /// (an alert on `increase()` needs the series before the first error).
    pub fn name_outputs(&self, sinks: &[&str], exports: &[String]) {
        for sink in sinks {
            let _ = self.sink_errors.get_or_create(&SinkLabel { sink: sink.to_string() });
        }
        for destination in exports {
            let _ = self.export_errors.get_or_create(&SinkLabel { sink: destination.clone() });
        }
    }

    /// A webhook sink: its counters at 0 from the start.
    pub fn name_webhook(&self, url: &str) {
        let label = SinkLabel { sink: url.to_string() };
        let _ = self.sink_errors.get_or_create(&label);
        let _ = self.sink_delivered.get_or_create(&label);
        let _ = self.sink_refused.get_or_create(&label);
        let _ = self.sink_dropped.get_or_create(&label);
        let _ = self.sink_spooled.get_or_create(&label);
    }

    pub fn sink_delivered(&self, sink: &str) {
        self.sink_delivered.get_or_create(&SinkLabel { sink: sink.to_string() }).inc();
    }

    pub fn sink_refused(&self, sink: &str) {
        self.sink_refused.get_or_create(&SinkLabel { sink: sink.to_string() }).inc();
    }

    pub fn sink_dropped(&self, sink: &str) {
        self.sink_dropped.get_or_create(&SinkLabel { sink: sink.to_string() }).inc();
    }

    pub fn set_sink_spooled(&self, sink: &str, findings: u64) {
        self.sink_spooled.get_or_create(&SinkLabel { sink: sink.to_string() }).set(findings as i64);
    }

    /// An evaluation succeeded at `unix_seconds`.
    pub fn evaluated_at(&self, unix_seconds: i64) {
        self.evaluations.inc();
        self.last_evaluation.set(unix_seconds);
    }

    pub fn set_flow_map_entries(&self, entries: u32) {
        self.flow_map_entries.set(entries as i64);
    }

    pub fn set_store_pending_flows(&self, flows: u64) {
        self.store_pending_flows.set(flows as i64);
    }

    /// The store's count of writes set aside, since start.
    pub fn set_store_set_aside_writes(&self, writes: u64) {
        let counted = self.store_set_aside_writes.get();
        if writes > counted {
            self.store_set_aside_writes.inc_by(writes - counted);
        }
    }

    pub fn set_store_waiting_writes(&self, writes: usize) {
        self.store_waiting_writes.set(writes as i64);
    }

    pub fn set_evaluate_interval(&self, seconds: u64) {
        self.evaluate_interval.set(seconds as i64);
    }

    pub fn emitted(&self) {
        self.findings_emitted.inc();
    }

    pub fn sink_failed(&self, sink: &str) {
        self.sink_errors.get_or_create(&SinkLabel { sink: sink.to_string() }).inc();
    }

    pub fn export_failed(&self, destination: &str) {
        self.export_errors.get_or_create(&SinkLabel { sink: destination.to_string() }).inc();
    }

    /// Makes every scrape show `stats` as they are then.
    pub fn watch_collector(&self, stats: Arc<CollectorStats>) {
        let _ = self.collector.set(stats);
    }

    fn set_collector(&self, stats: &CollectorStats) {
        set(&self.collector_messages, stats.messages.load(Ordering::Relaxed));
        set(&self.collector_flows, stats.flows.load(Ordering::Relaxed));
        set(&self.collector_malformed, stats.malformed.load(Ordering::Relaxed));
        set(&self.collector_sets_without_template, stats.sets_without_template.load(Ordering::Relaxed));
        set(&self.collector_records_unreadable, stats.records_unreadable.load(Ordering::Relaxed));
        set(&self.collector_socket_drops, stats.socket_drops.load(Ordering::Relaxed));
        set(&self.collector_refused_exporters, stats.refused_exporters.load(Ordering::Relaxed));
        self.collector_exporters.set(stats.exporters.load(Ordering::Relaxed) as i64);
        for (reason, count) in [("room", &stats.exporters_evicted), ("silent", &stats.exporters_expired)] {
            let label = ReasonLabel { reason: reason.into() };
            set(&self.collector_exporters_forgotten.get_or_create(&label), count.load(Ordering::Relaxed));
        }
        self.collector_tcp_connections.set(stats.tcp_connections.load(Ordering::Relaxed) as i64);
        set(&self.collector_tcp_refused, stats.tcp_refused.load(Ordering::Relaxed));
        set(&self.collector_tcp_accept_errors, stats.tcp_accept_errors.load(Ordering::Relaxed));
        set(&self.collector_tcp_idle_closed, stats.tcp_idle_closed.load(Ordering::Relaxed));
        set(&self.collector_tcp_partial_messages, stats.tcp_partial_messages.load(Ordering::Relaxed));
        set(&self.collector_udp_errors, stats.udp_errors.load(Ordering::Relaxed));
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        if let Some(stats) = self.collector.get() {
            self.set_collector(stats);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// The process's CPU time, memory and descriptors, read at each scrape.
#[derive(Debug)]
struct ProcessMetrics;

/// What /proc/self says of this process, in the units the metrics use.
struct ProcessReading {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: f64,
    open_fds: i64,
    max_fds: Option<i64>,
}

impl ProcessReading {
    fn now() -> procfs::ProcResult<ProcessReading> {
        let me = procfs::process::Process::myself()?;
        let stat = me.stat()?;
        let ticks = procfs::ticks_per_second() as f64;
        let max_fds = match me.limits()?.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(n) => Some(n as i64),
            procfs::process::LimitValue::Unlimited => None,
        };
        Ok(ProcessReading {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: (stat.rss * procfs::page_size()) as i64,
            virtual_bytes: stat.vsize as i64,
            start_time_seconds: procfs::boot_time_secs()? as f64 + stat.starttime as f64 / ticks,
            open_fds: me.fd_count()? as i64,
            max_fds,
        })
    }
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A scrape goes on without these if /proc cannot be read.
        let Ok(reading) = ProcessReading::now() else { return Ok(()) };
        let counter = ConstCounter::new(reading.cpu_seconds);
        let help = "Total user and system CPU time spent";
        counter.encode(encoder.encode_descriptor("process_cpu", help, Some(&Unit::Seconds), MetricType::Counter)?)?;
        let gauges = [
            ("process_resident_memory", "Resident memory size", Some(Unit::Bytes), reading.resident_bytes),
            ("process_virtual_memory", "Virtual memory size", Some(Unit::Bytes), reading.virtual_bytes),
            ("process_open_fds", "Open file descriptors", None, reading.open_fds),
        ];
        for (name, help, unit, value) in gauges
            .into_iter()
            .chain(reading.max_fds.map(|max| ("process_max_fds", "Limit of open file descriptors", None, max)))
        {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                MetricType::Gauge,
            )?)?;
        }
        let start = ConstGauge::new(reading.start_time_seconds);
        let help = "Start time of the process since the Unix epoch";
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            help,
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

fn set(counter: &Counter, value: u64) {
    counter.inner().store(value, Ordering::Relaxed);
}

/// Serves GET /metrics on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(scrape)).with_state(metrics);
    axum::serve(listener, app).await
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_carry_their_source_values_and_coverage_is_a_ratio() {
        let metrics = Metrics::new(Role::Meter);
        let counters =
            MeterCounters { packets: 1_000, bytes: 64_000, malformed: 3, decapsulated: 7, ..MeterCounters::default() };
        metrics.set_kernel("gw-in", &counters);
        metrics.set_coverage("gw-in", 1_000, 1_000);
        metrics.set_coverage("gw-out", 400, 300);
        metrics.set_findings(&["smtp".into()], [(("dns".into(), "rogue_server".into(), "open".into()), 2)]);
        let text = metrics.encode();
        for line in [
            "rogue_kernel_packets_total{interface=\"gw-in\"} 1000",
            "rogue_kernel_bytes_total{interface=\"gw-in\"} 64000",
            "rogue_kernel_malformed_total{interface=\"gw-in\"} 3",
            "rogue_kernel_decapsulated_total{interface=\"gw-in\"} 7",
            "rogue_coverage_ratio{interface=\"gw-in\"} 1.0",
            "rogue_coverage_ratio{interface=\"gw-out\"} 0.75",
            "rogue_findings{service=\"dns\",kind=\"rogue_server\",status=\"open\"} 2",
            "rogue_findings{service=\"smtp\",kind=\"rogue_server\",status=\"open\"} 0",
            "rogue_findings{service=\"smtp\",kind=\"volume_spike\",status=\"confirmed_rogue\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn each_role_exports_its_own_families_and_every_counter_from_the_start() {
        let (meter, collector) = (Metrics::new(Role::Meter), Metrics::new(Role::Collector));
        meter.name_outputs(&["stdout", "syslog"], &["udp://192.0.2.9:4739".into()]);
        meter.set_findings(&["smtp".into()], []);
        let (meter, collector) = (meter.encode(), collector.encode());
        // Families without series print nothing; plain counters print 0.
        assert!(meter.lines().any(|l| l == "rogue_drains_total 0"));
        assert!(!collector.contains("rogue_drains"), "a collector drains no kernel maps");
        assert!(collector.lines().any(|l| l == "rogue_collector_messages_total 0"));
        assert!(!meter.contains("rogue_collector_"), "a meter has no collector families");
        for line in [
            "rogue_sink_errors_total{sink=\"stdout\"} 0",
            "rogue_sink_errors_total{sink=\"syslog\"} 0",
            "rogue_export_errors_total{sink=\"udp://192.0.2.9:4739\"} 0",
            "rogue_findings{service=\"smtp\",kind=\"fanout_burst\",status=\"whitelisted\"} 0",
            "rogue_last_evaluation_timestamp_seconds 0",
        ] {
            assert!(meter.lines().any(|l| l == line), "{line} missing from:\n{meter}");
        }
        let build = format!(
            "rogue_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("ROGUE_COMMIT")
        );
        assert!(meter.lines().any(|l| l == build), "{build}");
        assert!(env!("ROGUE_COMMIT").len() == 12 || env!("ROGUE_COMMIT") == "unknown");
    }

    /// Every metric the shipped alerting rules use is one a meter exports.
    #[test]
    fn the_alerting_rules_use_metrics_that_exist() {
        let rules = include_str!("../../../packaging/prometheus/rogue-alerts.yml");
        let metrics = Metrics::new(Role::Meter);
        metrics.set_kernel("eth0", &MeterCounters::default());
        metrics.set_coverage("eth0", 1, 1);
        metrics.set_attached("eth0", true);
        metrics.name_outputs(&["stdout"], &[]);
        let text = metrics.encode();
        let used = regex::Regex::new(r"rogue_[a-z_]+").unwrap();
        let names: Vec<&str> = used.find_iter(rules).map(|m| m.as_str()).filter(|n| n.len() > "rogue_".len()).collect();
        assert!(names.len() >= 6, "{names:?}");
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
                "{name} is not exported:\n{text}"
            );
        }
    }

    /// The process metrics are this process's, as the kernel and libc give them.
    #[test]
    fn process_metrics_describe_this_process() {
        let text = Metrics::new(Role::Collector).encode();
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in:\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a valid rlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(value("process_max_fds"), limit.rlim_cur as f64);
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as f64;
        assert!((value("process_open_fds") - open).abs() <= 2.0, "about the {open} descriptors open");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap();
        let rss = value("process_resident_memory_bytes");
        assert!(
            rss > 0.0 && (rss / 1024.0 - vm_rss_kib).abs() < vm_rss_kib * 0.5,
            "{rss} bytes against VmRSS {vm_rss_kib} kB"
        );
        assert!(value("process_virtual_memory_bytes") >= rss);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 86_400.0, "started {start}, now {now}");
    }
}
