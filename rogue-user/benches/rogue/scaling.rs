//! How time and memory grow with the traffic: the background at 1x, 4x and
//! 16x its volume with the hosts fixed, then at 1x with 10x and 100x the
//! hosts, each through `rogue flows`, `rogue analyze` and the collector
//! (the capture's flows as an IPFIX file over TCP, into the store); a table,
//! and the same figures drawn in scaling.png beside BENCHMARKS.md.

use std::path::Path;

use plotters::{
    coord::{Shift, combinators::LogCoord, ranged1d::ValueFormatter, types::RangedCoordf64},
    prelude::*,
};
use rogue::report::plot::{Figure, png_and_svg};

use crate::{
    collector,
    measure::{Table, median, median_run, mib},
    offline::{self, Capture, generate},
};

/// The figure, written beside the bench's files (and copied beside
/// BENCHMARKS.md when every section ran).
pub const PLOT: &str = "scaling.png";
const RUNS: usize = 3;
/// The base: the background at this scale with this many workstations.
const BASE_SCALE: u32 = 4;
const BASE_WORKSTATIONS: u32 = 200;
const PACKET_FACTORS: [u32; 3] = [1, 4, 16];
const HOST_FACTORS: [u32; 3] = [1, 10, 100];
const TOOLS: [&str; 3] = ["rogue flows", "rogue analyze", "collector"];

/// One capture measured: its size, and per tool the median seconds and
/// the largest peak RSS (bytes).
struct Point {
    packets_factor: u32,
    hosts_factor: u32,
    packets: u64,
    flows: u64,
    tools: [(f64, u64); 3],
}

pub fn run(dir: &Path, plot: &Path) -> String {
    let mut cases: Vec<(u32, u32)> = PACKET_FACTORS.iter().map(|&p| (p, 1)).collect();
    cases.extend(HOST_FACTORS.iter().skip(1).map(|&h| (1, h)));
    let points: Vec<Point> = cases.into_iter().map(|(p, h)| measure(dir, p, h)).collect();
    let mut table = Table::new(&[
        "capture",
        "packets",
        "flows",
        "rogue flows (s)",
        "rogue analyze (s)",
        "collector (s)",
        "rogue flows peak RSS (MiB)",
        "rogue analyze peak RSS (MiB)",
        "collector peak RSS (MiB)",
    ]);
    for point in &points {
        let [flows, analyze, collect] = point.tools;
        table.row(&[
            format!(
                "{}x packets, {}x hosts ({} workstations)",
                point.packets_factor,
                point.hosts_factor,
                point.hosts_factor * BASE_WORKSTATIONS
            ),
            point.packets.to_string(),
            point.flows.to_string(),
            format!("{:.2}", flows.0),
            format!("{:.2}", analyze.0),
            format!("{:.2}", collect.0),
            mib(flows.1),
            mib(analyze.1),
            mib(collect.1),
        ]);
    }
    let (png, _) = png_and_svg(&ScalingFigure { points: &points }, (1500, 500)).expect("draw the scaling plot");
    std::fs::write(plot, png).expect("write the scaling plot");
    let base = &points[0];
    let largest = &points[PACKET_FACTORS.len() - 1];
    let per_packet = |point: &Point, tool: usize| point.tools[tool].0 / point.packets as f64;
    let growth: Vec<String> = TOOLS
        .iter()
        .enumerate()
        .map(|(i, tool)| format!("{tool} {:.2}", per_packet(largest, i) / per_packet(base, i)))
        .collect();
    format!(
        "{}\nThe background alone (`rogue generate --scenario background`) at {:?} times scale {BASE_SCALE} with \
         {BASE_WORKSTATIONS} workstations, then at scale {BASE_SCALE} with {:?} times the workstations; medians of \
         {RUNS} runs, the largest peak RSS of them. The collector is `rogue collect --no-dns` sent the capture's \
         flows as one IPFIX file over TCP, timed to its exit with every flow stored and evaluated. Time per packet \
         at 16x against 1x (1.00 is linear): {}. Peak memory of `rogue flows` is its flow cache; that of analyze \
         and the collector grows with the store until SQLite's page cache (at most 128 MiB) is full, besides at \
         most three batches of 200,000 profile entries (analyze) or `store.max_pending_flows` (500,000) flows' \
         profiles (the collector, which writes once that many wait): bounds of the configuration, not of the \
         capture, and none grows with the hosts. The figures are drawn in [scaling.png](scaling.png).\n\n\
         ![time and peak memory as packets and hosts grow](scaling.png)\n",
        table.into_string(),
        PACKET_FACTORS,
        HOST_FACTORS,
        growth.join(", "),
    )
}

fn measure(dir: &Path, packets_factor: u32, hosts_factor: u32) -> Point {
    let workstations = hosts_factor * BASE_WORKSTATIONS;
    let name = format!("scaling-{packets_factor}-{hosts_factor}");
    let capture = generate(dir, &name, "background", BASE_SCALE * packets_factor, workstations);
    let flows = median_run(RUNS, || offline::rogue_flows(&capture.path));
    let analyze = median_run(RUNS, || offline::rogue_analyze(dir, &capture.path));
    let (flow_count, collected) = collect(dir, &capture);
    let _ = std::fs::remove_file(&capture.path);
    Point {
        packets_factor,
        hosts_factor,
        packets: capture.packets,
        flows: flow_count,
        tools: [(flows.wall.as_secs_f64(), flows.max_rss), (analyze.wall.as_secs_f64(), analyze.max_rss), collected],
    }
}

/// The collector taking the capture's flows: their number, the median
/// seconds to its exit and the largest peak RSS.
fn collect(dir: &Path, capture: &Capture) -> (u64, (f64, u64)) {
    let file = dir.join("scaling.ipfix");
    let flows = collector::ipfix_file(&capture.path, &file);
    let runs: Vec<collector::Collected> = (0..RUNS).map(|_| collector::over_tcp(dir, flows, &file)).collect();
    let _ = std::fs::remove_file(&file);
    for run in &runs {
        assert_eq!(run.flows, flows, "the collector lost flows");
    }
    let seconds = median(runs.iter().map(|r| r.stored).collect());
    (flows, (seconds, runs.iter().map(|r| r.peak_rss).max().unwrap_or(0)))
}

/// Three panels: seconds against packets, peak memory against packets, and
/// peak memory against hosts; a line per tool.
struct ScalingFigure<'a> {
    points: &'a [Point],
}

const COLOURS: [RGBColor; 3] = [RGBColor(70, 130, 180), RGBColor(200, 30, 30), RGBColor(40, 150, 60)];

impl Figure for ScalingFigure<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: DrawingArea<DB, Shift>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 3));
        let by_packets: Vec<&Point> = self.points.iter().filter(|p| p.hosts_factor == 1).collect();
        let by_hosts: Vec<&Point> = self.points.iter().filter(|p| p.packets_factor == 1).collect();
        let packets = |p: &Point| p.packets as f64 / 1e6;
        let hosts = |p: &Point| (p.hosts_factor * BASE_WORKSTATIONS) as f64;
        let seconds = |p: &Point, tool: usize| p.tools[tool].0;
        let memory = |p: &Point, tool: usize| p.tools[tool].1 as f64 / (1 << 20) as f64;
        let log = |lo: f64, hi: f64| -> LogCoord<f64> { (lo / 2.0..hi * 2.0).log_scale().into() };
        let from_zero = |_: f64, hi: f64| RangedCoordf64::from(0.0..hi * 1.2);
        let time = "time as packets grow";
        panel(&panels[0], time, "million packets", "seconds", &by_packets, packets, seconds, log)?;
        let memory_by_packets = "peak memory as packets grow";
        panel(&panels[1], memory_by_packets, "million packets", "MiB", &by_packets, packets, memory, from_zero)?;
        panel(&panels[2], "peak memory as hosts grow", "workstations", "MiB", &by_hosts, hosts, memory, from_zero)?;
        root.present()?;
        Ok(())
    }
}

/// One panel, its x axis logarithmic (the factors are 1, 4, 16 and 1, 10,
/// 100); times on a logarithmic axis too, where growth in proportion to
/// packets is a line of slope one; memory from 0, where flat is flat.
#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend, Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[&Point],
    x: impl Fn(&Point) -> f64,
    y: impl Fn(&Point, usize) -> f64,
    y_axis: impl Fn(f64, f64) -> Y,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    DB::ErrorType: 'static,
{
    let xs = points.iter().map(|p| x(p));
    let ys = points.iter().flat_map(|p| (0..TOOLS.len()).map(|tool| y(p, tool)));
    let (x_min, x_max) = xs.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_min, y_max) = ys.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min / 1.5..x_max * 1.5).log_scale(), y_axis(y_min, y_max))?;
    let number = |v: &f64| if *v >= 10.0 { format!("{v:.0}") } else { format!("{v}") };
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(6)
        .y_labels(8)
        .x_label_formatter(&number)
        .y_label_formatter(&number)
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    for (tool, name) in TOOLS.iter().enumerate() {
        let colour = COLOURS[tool];
        let line = points.iter().map(|p| (x(p), y(p, tool)));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)).point_size(4))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}
