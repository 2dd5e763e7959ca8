//! `rogue flows`: completed flow records from interfaces or capture files.

use std::{
    io::{self, BufWriter, IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use rogue_common::{MeterCounters, maps::DEFAULT_FLOW_MAP_ENTRIES, parse::Decapsulate};
use tracing::{info, warn};

use super::{parse_duration, parse_interval, parse_timeout};
use crate::{
    capture::{
        XdpMeter,
        host::{check_interfaces, interface_rx_packets},
    },
    config::{Encapsulation, IpfixDestination as Destination, KernelLog, XdpMode, check_flow_map_entries},
    flows::{
        FlowCache, FlowCacheStats, FlowRecord, Timeouts,
        format::{FlowWriter, Format},
        meter::FileMeter,
    },
    ipfix::{
        collect::{self, CollectorStats},
        export::Exporters,
    },
};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["iface", "pcap", "listen"])))]
#[command(after_help = "Examples:\n  \
    rogue flows --pcap capture.pcap --format csv\n  \
    rogue flows --iface eth0 --iface eth1 --interval 5s --duration 1m\n\n\
    Flows go to stdout; the meter's counters go to stderr at the end.")]
pub struct FlowsArgs {
    /// Meter this interface with XDP (repeat for more; needs root)
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
    /// Read these capture files (pcap or pcapng; `-` is stdin), in order
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "iface")]
    pub pcap: Vec<PathBuf>,
    /// Collect IPFIX and NetFlow v5/v9 from exporters on this address (UDP, and IPFIX over TCP)
    #[arg(long, value_name = "ADDR:PORT", conflicts_with_all = ["iface", "pcap"])]
    pub listen: Option<std::net::SocketAddr>,
    /// How often to drain the kernel's flow maps (live)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this long (live; default: until Ctrl-C or SIGTERM)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Output format [default: table on a terminal, jsonl when piped]
    #[arg(long, value_parser = super::one_of::<Format>(&[
        ("table", "A line per flow for people: bytes scaled, ICMP as type.code, as nfdump prints them"),
        ("json", "One JSON document: an array of flows"),
        ("jsonl", "One JSON object per line"),
        ("csv", "A header, then a row per flow"),
        ("none", "Nothing on stdout (when the flows are exported)"),
    ]))]
    pub format: Option<Format>,
    /// Also print the counters after every drain (live)
    #[arg(long)]
    pub stats: bool,
    /// A flow with no packet for longer than this is complete (whole seconds)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
    /// A flow that has lasted longer than this is complete and a new one starts (whole seconds)
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_timeout)]
    pub active_timeout: Duration,
    /// How to attach the XDP program
    #[arg(long, default_value = "native", value_parser = super::one_of::<XdpMode>(&[
        ("native", "In the driver, before the kernel allocates anything (fastest)"),
        ("generic", "In the kernel's generic receive path (works on every interface)"),
        ("auto", "Native, falling back to generic with a warning"),
    ]))]
    pub xdp_mode: XdpMode,
    /// Entries in each of the two kernel flow maps (at most 16777216: both are
    /// allocated in full on every CPU)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FLOW_MAP_ENTRIES,
          value_parser = |text: &str| check_flow_map_entries(text.parse::<u64>().map_err(|e| e.to_string())?))]
    pub flow_map_entries: u32,
    /// Log the meter's kernel events from this level up (a full flow map is
    /// `warn`, a malformed frame `debug`); `off` costs the meter nothing
    #[arg(long, value_name = "LEVEL", default_value = "off", value_parser = super::one_of::<KernelLog>(&[
        ("off", "Nothing: the logging code is left out of the loaded program"),
        ("error", "States that cannot happen"),
        ("warn", "And packets a full flow map counted in no flow"),
        ("info", "The same as warn (the meter has no info events)"),
        ("debug", "And every malformed frame"),
    ]))]
    pub kernel_log: KernelLog,
    /// Meter the packets inside these tunnels, for a sensor fed by a mirror
    /// (comma-separated: erspan, gre, vxlan, geneve, ipip); by default a
    /// tunnel's outer packet is the flow
    #[arg(long, value_name = "TUNNELS", value_delimiter = ',')]
    pub decapsulate: Vec<Encapsulation>,
    /// Also export the flows as IPFIX to udp://HOST:PORT or tcp://HOST:PORT (repeat for more)
    #[arg(long, value_name = "DEST")]
    pub ipfix: Vec<Destination>,
    /// Also write the flows to an IPFIX file (RFC 5655)
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// IPFIX observation domain id of the exported flows
    #[arg(long, value_name = "ID", default_value_t = 1)]
    pub observation_domain: u32,
}

/// Runs `rogue flows`; `quiet` leaves out the counters on stderr.
pub fn run(args: FlowsArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let format = args.format.unwrap_or(if io::stdout().is_terminal() { Format::Table } else { Format::Jsonl });
    let timeouts = Timeouts::from_secs(args.idle_timeout.as_secs(), args.active_timeout.as_secs());
    let writer = FlowWriter::new(format, BufWriter::new(io::stdout().lock()))?;
    let mut destinations = args.ipfix.clone();
    destinations.extend(args.write.iter().map(|p| Destination::File(p.clone())));
    let exporters = Exporters::open(&destinations, args.observation_domain)?;
    let mut output = FlowOutput { writer, flows: 0, quiet, exporters };
    let result = if let Some(listen) = args.listen {
        collect(listen, args.duration, &mut output)
    } else if args.pcap.is_empty() {
        live(&args, FlowCache::new(timeouts), &mut output)
    } else {
        files(&args.pcap, FlowCache::new(timeouts), Encapsulation::all(&args.decapsulate), &mut output)
    };
    result.map(|()| ExitCode::SUCCESS)
}

/// Where completed flows go, counted, and whether to print the summary.
struct FlowOutput<W: Write> {
    writer: FlowWriter<W>,
    flows: u64,
    quiet: bool,
    exporters: Exporters,
}

impl<W: Write> FlowOutput<W> {
    fn write(&mut self, flows: &[FlowRecord]) -> io::Result<()> {
        for flow in flows {
            self.writer.write(flow)?;
        }
        self.flows += flows.len() as u64;
        self.exporters.export(flows);
        Ok(())
    }

    /// Flushes stdout and the exporters.
    fn flush(&mut self) -> io::Result<()> {
        self.exporters.flush();
        self.writer.flush()
    }

    /// After the last flow: closes the output (a JSON array) and flushes.
    fn finish(&mut self) -> io::Result<()> {
        self.exporters.flush();
        self.writer.finish()
    }

    /// What was exported where, for the summary.
    fn export_lines(&self) -> Vec<(&'static str, String)> {
        let mut lines: Vec<(&'static str, String)> =
            self.exporters.errors().map(|(d, _)| ("ipfix export", d)).collect();
        if !self.exporters.is_empty() {
            lines.push(("ipfix export errors", self.exporters.errors().map(|(_, n)| n).sum::<u64>().to_string()));
        }
        lines
    }

    /// The counters as `# name value` lines on stderr, after the flows.
    fn summary(&self, lines: &[(&str, String)]) {
        if self.quiet {
            return;
        }
        let mut err = io::stderr().lock();
        for (name, value) in lines {
            let _ = writeln!(err, "# {name:<21} {value}");
        }
    }
}

/// Completed flows in flight from the cache to the output: a few hundred
/// thousand records at most, enough that neither side waits on the other.
const FLOW_BATCHES_IN_FLIGHT: usize = 16;

/// Meters the files on threads of their own (see flows::meter) while this
/// thread writes the flows they complete: formatting costs as much as
/// keeping the cache, so each gets a CPU.
fn files(
    paths: &[PathBuf],
    cache: FlowCache,
    decapsulate: Decapsulate,
    output: &mut FlowOutput<impl Write>,
) -> anyhow::Result<()> {
    let (to_output, completed) = std::sync::mpsc::sync_channel(FLOW_BATCHES_IN_FLIGHT);
    let (meter, written) = std::thread::scope(|scope| {
        let metering = scope.spawn(move || meter_files(paths, cache, decapsulate, to_output));
        let written = completed.iter().try_for_each(|flows: Vec<FlowRecord>| output.write(&flows));
        // A failed output (a closed pipe) stops the metering: it finds no
        // one to hand its flows to.
        drop(completed);
        (metering.join().expect("metering does not panic"), written)
    });
    written?;
    let meter = meter?;
    output.finish()?;
    let mut summary = summary_lines(&meter.counters, &meter.cache.stats(), output.flows);
    summary.extend(output.export_lines());
    if meter.files_truncated > 0 {
        summary.push(("truncated files", meter.files_truncated.to_string()));
    }
    output.summary(&summary);
    Ok(())
}

/// Meters each file in turn, sending the flows it completes to `to_output`
/// until it has no one to send them to.
fn meter_files(
    paths: &[PathBuf],
    cache: FlowCache,
    decapsulate: Decapsulate,
    to_output: std::sync::mpsc::SyncSender<Vec<FlowRecord>>,
) -> anyhow::Result<FileMeter> {
    let mut meter = FileMeter::new(cache);
    meter.decapsulate = decapsulate;
    let output_gone = AtomicBool::new(false);
    let mut send = |flows: &mut Vec<FlowRecord>| {
        if to_output.send(std::mem::take(flows)).is_err() {
            output_gone.store(true, Ordering::Relaxed);
        }
    };
    for path in paths {
        let metered = meter.file_with(path, &mut send, |_| {}, || output_gone.load(Ordering::Relaxed), &mut |_| {});
        if output_gone.load(Ordering::Relaxed) {
            return Ok(meter);
        }
        let summary = metered?.file;
        if let Some(offset) = summary.cut_at {
            warn!(
                "{}: the file ends inside the packet record at byte {offset} (an interrupted capture?); read the {} \
                 frames before it",
                path.display(),
                summary.frames
            );
        }
        info!("{}: {} frames", path.display(), summary.frames);
    }
    let mut rest = Vec::new();
    meter.cache.flush(&mut rest);
    send(&mut rest);
    Ok(meter)
}

/// SIGINT and SIGTERM, caught from the start: a signal that arrives while
/// a drain runs (no select waiting) is kept for the next wait, where a
/// `ctrl_c()` made afresh each time round would miss it.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn catch() -> io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn live(args: &FlowsArgs, mut cache: FlowCache, output: &mut FlowOutput<impl Write>) -> anyhow::Result<()> {
    // Signals are caught before the meter attaches: Ctrl-C the moment it
    // is attached still ends with the summary, not killed mid-way.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut stop = {
        let _in_runtime = runtime.enter();
        StopSignals::catch()?
    };
    check_interfaces(&args.iface).map_err(anyhow::Error::msg)?;
    let mut meter = XdpMeter::load(args.flow_map_entries, args.kernel_log, Encapsulation::all(&args.decapsulate))?;
    let mut rx_at_start = Vec::new();
    for interface in &args.iface {
        let attached = meter.attach(interface, args.xdp_mode)?.clone();
        cache.name_interface(attached.ifindex, &attached.interface);
        rx_at_start.push(interface_rx_packets(interface).unwrap_or(0));
    }
    info!("metering {}; Ctrl-C to stop", args.iface.join(", "));

    runtime.block_on(async {
        let mut ticks = tokio::time::interval(args.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let stop_after = until(args.duration);
        tokio::pin!(stop_after);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    drain_once(&mut meter, &mut cache, output)?;
                    if args.stats {
                        output.summary(&summary_lines(&meter.counters()?, &cache.stats(), output.flows));
                    }
                }
                _ = stop.received() => break,
                _ = &mut stop_after => break,
            }
        }
        anyhow::Ok(())
    })?;

    drain_once(&mut meter, &mut cache, output)?;
    let mut rest = Vec::new();
    cache.flush(&mut rest);
    output.write(&rest)?;
    output.finish()?;

    let counters = meter.counters()?;
    let mut summary = summary_lines(&counters, &cache.stats(), output.flows);
    summary.extend(output.export_lines());
    summary.push(("drains", meter.drains().to_string()));
    for (attachment, start) in meter.attachments().iter().zip(rx_at_start) {
        if let Ok(now) = interface_rx_packets(&attachment.interface) {
            summary.push((
                "interface rx packets",
                format!("{} {} ({})", attachment.interface, now - start, attachment.mode),
            ));
        }
    }
    output.summary(&summary);
    // Dropping the meter closes its bpf_links: nothing stays attached.
    drop(meter);
    Ok(())
}

/// Flows from exporters: they arrive complete (the exporter timed them out).
fn collect(
    listen: std::net::SocketAddr,
    duration: Option<Duration>,
    output: &mut FlowOutput<impl Write>,
) -> anyhow::Result<()> {
    let stats = Arc::new(CollectorStats::default());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (flows, mut received) = tokio::sync::mpsc::channel(64);
        let listener =
            collect::bind(listen).await.with_context(|| format!("cannot listen on {listen} (UDP and TCP)"))?;
        let mut collector = tokio::spawn(collect::serve(listener, flows, stats.clone(), collect::Limits::default()));
        let mut stop = StopSignals::catch()?;
        let stop_after = until(duration);
        tokio::pin!(stop_after);
        loop {
            tokio::select! {
                Some(batch) = received.recv() => {
                    output.write(&batch.flows)?;
                    output.flush()?;
                }
                ended = &mut collector => {
                    ended?.with_context(|| format!("collecting on {listen}"))?;
                    break;
                }
                _ = stop.received() => break,
                _ = &mut stop_after => break,
            }
        }
        // What already arrived is printed too.
        while let Ok(batch) = received.try_recv() {
            output.write(&batch.flows)?;
        }
        anyhow::Ok(())
    })?;
    output.finish()?;
    let mut summary = stats.lines();
    summary.push(("flows", output.flows.to_string()));
    summary.extend(output.export_lines());
    output.summary(&summary);
    Ok(())
}

/// Resolves after `duration`, or never.
async fn until(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

fn drain_once(meter: &mut XdpMeter, cache: &mut FlowCache, output: &mut FlowOutput<impl Write>) -> anyhow::Result<()> {
    let drain = meter.drain()?;
    let mut completed = Vec::new();
    for flow in &drain.flows {
        cache.add(&flow.key, drain.delta(flow), &mut completed);
    }
    cache.advance(drain.at, &mut completed);
    output.write(&completed)?;
    output.flush()?;
    tracing::debug!(entries = drain.flows.len(), took_us = drain.took.as_micros() as u64, "drained");
    Ok(())
}

/// Frames without IP, and of them those of the link's own signalling and
/// those encrypted, where there are any: "12 (link control 5, encrypted 3)".
fn non_ip(counters: &MeterCounters) -> String {
    let kinds: Vec<String> = [("link control", counters.link_control), ("encrypted", counters.encrypted)]
        .into_iter()
        .filter(|&(_, count)| count > 0)
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    match kinds.is_empty() {
        true => counters.non_ip.to_string(),
        false => format!("{} ({})", counters.non_ip, kinds.join(", ")),
    }
}

fn summary_lines(counters: &MeterCounters, cache: &FlowCacheStats, flows: u64) -> Vec<(&'static str, String)> {
    vec![
        ("packets", counters.packets.to_string()),
        ("bytes", format!("{} (frames), {} (IP)", counters.bytes, counters.ipv4_bytes + counters.ipv6_bytes)),
        ("ipv4 packets", counters.ipv4_packets.to_string()),
        ("ipv6 packets", counters.ipv6_packets.to_string()),
        ("flows", flows.to_string()),
        ("non-ip", non_ip(counters)),
        ("vlan", counters.vlan.to_string()),
        ("mpls", counters.mpls.to_string()),
        ("pppoe", counters.pppoe.to_string()),
        ("fragments", counters.fragments.to_string()),
        ("decapsulated", counters.decapsulated.to_string()),
        ("malformed", counters.malformed.to_string()),
        (
            "insert failures",
            format!("{} packets, {} bytes", counters.insert_failed_packets, counters.insert_failed_bytes),
        ),
        ("peak active flows", cache.peak_active.to_string()),
    ]
}
