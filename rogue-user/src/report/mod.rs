//! Reports: what an analyst hands to the network owner. For one host: the
//! verdict and characteristics with the findings, the method's existence
//! plots (destination ports inbound, source ports outbound), the activity
//! history (flows and bytes per day, the service's and all traffic) and the
//! external clients and servers, for one service; as DIR/index.html with the figures as PNG and SVG
//! and their data as JSON. `--all` writes one such directory per host with
//! findings and an index page linking them.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::{
    config::Service,
    detect::{Detector, HostReport},
    profile::{Direction, Role},
    store::{Peer, Store, StoreError, StoredFinding},
    time::{MILLIS_PER_DAY, NANOS_PER_SEC, rfc3339_millis},
};

pub mod advice;
pub mod data;
pub mod html;
pub mod plot;

pub use html::escape;

use data::{DayActivity, ExistencePlot};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the store has no traffic of {0} (only hosts of internal_networks are profiled)")]
    NoData(IpAddr),
    #[error(
        "the period is empty: it must start before it ends; the store has traffic of {host} from {first} to {last}"
    )]
    EmptyPeriod { host: IpAddr, first: String, last: String },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub type Result<T> = std::result::Result<T, ReportError>;

/// What to report on.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub host: IpAddr,
    /// The period in ms; by default all of the host's traffic in the store.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Width of the plots' time bins, in seconds (widened if needed).
    pub bin_seconds: i64,
}

/// Days of the store's data shown before a host's service activity began,
/// where the store has them, so the page shows the change.
pub const DAYS_BEFORE: i64 = 7;

/// Everything one host's page shows.
pub struct HostPage {
    pub host: IpAddr,
    pub service: Service,
    pub ptr: Option<String>,
    pub report: Option<HostReport>,
    pub findings: Vec<StoredFinding>,
    pub inbound: ExistencePlot,
    pub outbound: ExistencePlot,
    /// Every day of the period the store has data of, the host's traffic
    /// on it (none: zeros).
    pub days: Vec<DayActivity>,
    /// The day (since the epoch) the host's qualifying flows of the
    /// service began, if it has any.
    pub service_began: Option<i64>,
    /// External peers, by bytes: clients that connected to the host, and
    /// servers it connected to.
    pub clients: Vec<Peer>,
    pub servers: Vec<Peer>,
    /// PTR names of the peers (escaped), filled in by the caller.
    pub peer_names: BTreeMap<IpAddr, String>,
    /// A whitelisted server of the same service, to compare with: the one
    /// with the most qualifying flows among the whitelist's single addresses.
    pub comparison: Option<HostReport>,
    /// The period shown, seconds: [from, to).
    pub from: i64,
    pub to: i64,
}

/// One line of the `--all` index.
pub struct IndexEntry {
    pub host: IpAddr,
    pub service: String,
    pub ptr: Option<String>,
    pub verdict: String,
    pub findings: String,
    pub last_ms: i64,
    /// The host's directory, relative to the index.
    pub dir: String,
}

/// Opens a connection of its own to the store a page is gathered from.
pub type OpenStore<'a> = dyn Fn() -> std::result::Result<Box<dyn Store>, StoreError> + Sync + 'a;

/// Gathers the page of `request.host` for `service` from the store. The
/// three parts that each read all of the host's qualifying flows (its
/// traffic, its measurement by the method, the whitelisted server it is
/// compared with) run at once, each on a connection from `open`: a busy
/// MX has hundreds of thousands of them.
pub fn gather(open: &OpenStore<'_>, detector: &Detector<'_>, service: &Service, request: Request) -> Result<HostPage> {
    std::thread::scope(|scope| {
        let measured = scope.spawn(|| -> Result<_> { Ok(detector.host(&*open()?, service, request.host)?) });
        let compared = scope.spawn(|| whitelisted_peer(open, detector, service, request.host));
        let traffic = traffic(&*open()?, detector, service, request);
        let report = measured.join().expect("measuring a host does not panic")?;
        let comparison = compared.join().expect("measuring a host does not panic")?;
        let ptr = report.as_ref().and_then(|r| r.characteristics.ptr.clone());
        Ok(HostPage { report, ptr, comparison, ..traffic? })
    })
}

/// The page's traffic: what `gather` reads besides the measurements.
fn traffic(store: &dyn Store, detector: &Detector<'_>, service: &Service, request: Request) -> Result<HostPage> {
    let host = request.host;
    let (first, last) = store.host_span(host)?.ok_or(ReportError::NoData(host))?;
    let stored_bin = detector.config.detection.bin_seconds.0 as i64;
    let service_began = store.service_host_first_ms(&service.name, host)?.map(|ms| ms.div_euclid(MILLIS_PER_DAY));
    let covered = store.covered_days()?;
    let default_from = match (service_began, covered.first()) {
        (Some(began), Some(&first_day)) => first.min((began - DAYS_BEFORE).max(first_day) * 86_400),
        _ => first,
    };
    let from = request.from_ms.map_or(default_from, |ms| ms.div_euclid(1000));
    let to = request.to_ms.map_or(last + stored_bin, |ms| ms.div_euclid(1000));
    if from >= to {
        let time = |seconds: i64| rfc3339_millis(seconds * NANOS_PER_SEC);
        return Err(ReportError::EmptyPeriod { host, first: time(first), last: time(last + stored_bin) });
    }
    let bin = data::bin_width(request.bin_seconds, stored_bin, from, to);
    let (from, to) = (from.div_euclid(bin) * bin, to.div_euclid(bin) * bin + if to % bin == 0 { 0 } else { bin });
    let (from_ms, to_ms) = (from * 1000, to * 1000 - 1);

    let usage = store.port_usage(host, from_ms, to_ms)?;
    let inbound = data::existence(&usage, Direction::Inbound, bin, from, to);
    let outbound = data::existence(&usage, Direction::Outbound, bin, from, to);

    let (peers, service_days) = store.peers_and_days(&service.name, host, from_ms, to_ms)?;
    let smtp: BTreeMap<i64, (u64, u64)> = service_days.into_iter().map(|(d, f, b)| (d, (f, b))).collect();
    let mut all: BTreeMap<i64, (u64, u64)> =
        store.host_daily(host, from_ms, to_ms)?.into_iter().map(|(d, f, b)| (d, (f, b))).collect();
    for &day in covered.range(from_ms.div_euclid(MILLIS_PER_DAY)..=to_ms.div_euclid(MILLIS_PER_DAY)) {
        all.entry(day).or_default();
    }
    let days = all
        .into_iter()
        .map(|(day, (flows, bytes))| {
            let (service_flows, service_bytes) = smtp.get(&day).copied().unwrap_or_default();
            DayActivity { day, service_flows, service_bytes, all_flows: flows, all_bytes: bytes }
        })
        .collect();

    let (clients, servers): (Vec<Peer>, Vec<Peer>) =
        peers.into_iter().filter(|p| !p.internal).partition(|p| p.role == Role::Server);
    let findings = store.findings_for_host(host)?.into_iter().filter(|f| f.service == service.name).collect();
    Ok(HostPage {
        host,
        service: service.clone(),
        ptr: None,
        report: None,
        findings,
        inbound,
        outbound,
        days,
        service_began,
        clients,
        servers,
        peer_names: BTreeMap::new(),
        comparison: None,
        from,
        to,
    })
}

/// Whitelisted single addresses of a service looked at for a comparison,
/// at most: each costs a host's measurement.
const COMPARED_ENTRIES: usize = 32;

/// The whitelisted server of `service` (other than `host`) with the most
/// qualifying flows, among the whitelist's single-address entries.
fn whitelisted_peer(
    open: &OpenStore<'_>,
    detector: &Detector<'_>,
    service: &Service,
    host: IpAddr,
) -> Result<Option<HostReport>> {
    let candidates: Vec<IpAddr> = detector
        .whitelist
        .entries()
        .iter()
        .filter(|e| e.service == service.name && e.address.0.prefix_len() == e.address.0.max_prefix_len())
        .map(|e| e.address.0.addr())
        .filter(|&addr| addr != host)
        .take(COMPARED_ENTRIES)
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let store = open()?;
    let mut best: Option<HostReport> = None;
    for addr in candidates {
        if let Some(report) = detector.host(&*store, service, addr)?
            && best.as_ref().is_none_or(|b| report.activity.flows > b.activity.flows)
        {
            best = Some(report);
        }
    }
    Ok(best)
}

/// The first configured service `host` has qualifying flows of, else the
/// first configured.
pub fn first_service_of<'s>(store: &dyn Store, services: &'s [Service], host: IpAddr) -> Result<&'s Service> {
    for service in services {
        if store.service_host_first_ms(&service.name, host)?.is_some() {
            return Ok(service);
        }
    }
    Ok(&services[0])
}

/// The three figures of a host's page, each with its file stem and size.
fn figures<'a>(page: &'a HostPage) -> (plot::Existence<'a>, plot::Existence<'a>, plot::Activity<'a>) {
    let host = match &page.ptr {
        Some(ptr) => format!("{} ({ptr})", page.host),
        None => page.host.to_string(),
    };
    let period = format!(
        "{} to {}",
        &rfc3339_millis(page.from * NANOS_PER_SEC)[..10],
        &rfc3339_millis((page.to - 1) * NANOS_PER_SEC)[..10]
    );
    let existence = |plot: &'a ExistencePlot, what: &str| plot::Existence {
        plot,
        title: format!("{what}: {host}, {period}, {} s bins", plot.bin_seconds),
        service_ports: &page.service.ports,
    };
    (
        existence(&page.inbound, "Destination ports inbound"),
        existence(&page.outbound, "Source ports outbound"),
        plot::Activity {
            days: &page.days,
            title: format!("Activity of {host}, {period}"),
            service: page.service.title(),
            began: page.service_began,
        },
    )
}

/// Writes the page of one host into `dir`; returns the files written.
pub fn write_host(page: &HostPage, dir: &Path, generated: &str) -> Result<Vec<PathBuf>> {
    make_dir(dir)?;
    let mut files = Vec::new();
    let (inbound, outbound, activity) = figures(page);
    for figure in [&inbound, &outbound] {
        let name = format!("existence-{}", figure.plot.direction);
        files.extend(draw(figure, &dir.join(&name), plot::EXISTENCE_SIZE)?);
        files.push(write_json(&dir.join(format!("{name}.json")), figure.plot)?);
    }
    files.extend(draw(&activity, &dir.join("activity"), plot::ACTIVITY_SIZE)?);
    files.push(write_json(&dir.join("activity.json"), &page.days)?);
    files.push(write_text(&dir.join("index.html"), &html::host_page(page, generated))?);
    Ok(files)
}

/// The page's figures as SVG text, to be shown inline (the console).
pub fn inline_figures(page: &HostPage) -> Result<html::Figures> {
    let (inbound, outbound, activity) = figures(page);
    let drawn = |svg: std::result::Result<String, plot::PlotError>| {
        svg.map_err(|e| ReportError::Draw {
            path: format!("the plots of {}", page.host).into(),
            message: e.to_string(),
        })
    };
    Ok(html::Figures::Inline {
        inbound: drawn(plot::svg(&inbound, plot::EXISTENCE_SIZE))?,
        outbound: drawn(plot::svg(&outbound, plot::EXISTENCE_SIZE))?,
        activity: drawn(plot::svg(&activity, plot::ACTIVITY_SIZE))?,
    })
}

/// Writes the index of every host's report; returns its path.
pub fn write_index(entries: &[IndexEntry], dir: &Path, generated: &str) -> Result<PathBuf> {
    make_dir(dir)?;
    write_text(&dir.join("index.html"), &html::index_page(entries, generated))
}

/// Creates `dir` (and its parents) unless it is there.
fn make_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write { path: dir.into(), source })
}

/// Creates `out/HOST` for a host's report in an `--all` run. Something
/// other than a directory there (a symbolic link, say: the output directory
/// may be shared, and rogue may run as root) is refused, not followed.
pub fn host_dir_in(out: &Path, host: IpAddr, service: &str) -> Result<PathBuf> {
    make_dir(out)?;
    let dir = out.join(host_dir(host, service));
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        other => other.map_err(|source| ReportError::Write { path: dir.clone(), source })?,
    }
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        let source = std::io::Error::other("it is not a directory (a symbolic link?); rogue does not follow it");
        return Err(ReportError::Write { path: dir, source });
    }
    Ok(dir)
}

/// A directory name for a host's report (no `:` from IPv6).
pub fn host_dir(host: IpAddr, service: &str) -> String {
    format!("{}-{service}", host.to_string().replace(':', "_"))
}

fn draw(figure: &impl plot::Figure, stem: &Path, size: (u32, u32)) -> Result<[PathBuf; 2]> {
    let (png, svg) =
        plot::png_and_svg(figure, size).map_err(|e| ReportError::Draw { path: stem.into(), message: e.to_string() })?;
    Ok([write_new(&stem.with_extension("png"), &png)?, write_new(&stem.with_extension("svg"), svg.as_bytes())?])
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(value).expect("plot data serialises");
    write_text(path, &text)
}

fn write_text(path: &Path, text: &str) -> Result<PathBuf> {
    write_new(path, text.as_bytes())
}

/// Writes `bytes` as the file `path` without ever following a link there:
/// into a new file beside it (created exclusively, so not through a link),
/// then renamed over it, which replaces a link rather than its target.
fn write_new(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let write_error = |source| ReportError::Write { path: path.into(), source };
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(bytes).and_then(|()| std::fs::rename(&temporary, path)).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        write_error(e)
    })?;
    Ok(path.into())
}
