//! What the report's plots show, computed from the store before anything is
//! drawn, so tests can check the numbers rather than the pixels.
//!
//! The existence plot (the method's): one cell per time bin and port in
//! which the host used the port (destination ports of inbound flows, source
//! ports of outbound flows, every protocol with ports), its volume the bytes
//! of those flows. Volumes fall in three classes split at the first and
//! third quartiles of all cells of the plot, by the nearest-rank method
//! (the ceil(p*n)-th smallest volume): up to Q1, above Q1 up to Q3, above Q3.
//!
//! Binning rule: cells are summed into bins of `--bin` seconds, a multiple of
//! the store's bins; a period that would need more than [`MAX_COLUMNS`] bins
//! gets its bin widened to the smallest multiple of the store's bin that
//! fits, so months of traffic stay one readable picture.

use std::collections::BTreeMap;

use crate::profile::Direction;

/// Most time bins across a plot.
pub const MAX_COLUMNS: i64 = 1_500;

/// One mark of the existence plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Cell {
    /// Start of the bin, seconds since the epoch.
    pub bin: i64,
    pub port: u16,
    pub bytes: u64,
    /// 1: up to Q1, 2: up to Q3, 3: above Q3.
    pub class: u8,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExistencePlot {
    pub direction: &'static str,
    pub bin_seconds: i64,
    /// The period shown, seconds since the epoch: [from, to).
    pub from: i64,
    pub to: i64,
    pub cells: Vec<Cell>,
    pub min: u64,
    pub q1: u64,
    pub q3: u64,
    pub max: u64,
}

impl ExistencePlot {
    /// The legend's three ranges of bytes, as the method printed them
    /// ("1 - 327 bytes"), with thousands separated; a range of one value
    /// says it once ("440 bytes"), and the middle class is empty when the
    /// quartiles are equal.
    pub fn legend(&self) -> [String; 3] {
        let range = |low: u64, high: u64| match low == high {
            true => format!("{} bytes", thousands(low)),
            false => format!("{} - {} bytes", thousands(low), thousands(high)),
        };
        let middle = if self.q3 > self.q1 { range(self.q1 + 1, self.q3) } else { "none (Q1 = Q3)".to_string() };
        [range(self.min, self.q1), middle, format!("> {} bytes", thousands(self.q3))]
    }

    /// The ports labelled: reserved ports (below 1024) and the service's
    /// own ports (RDP's 3389), each where it has a mark.
    pub fn labelled_ports(&self, service_ports: &[u16]) -> Vec<u16> {
        let labelled = |port: u16| port < 1024 || service_ports.contains(&port);
        let mut ports: Vec<u16> = self.cells.iter().map(|c| c.port).filter(|&p| labelled(p)).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// `n` with its thousands separated by commas: 1,234,567.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The bin width for a period: `wanted`, widened to a multiple of `stored`
/// that keeps the number of bins at most [`MAX_COLUMNS`].
pub fn bin_width(wanted: i64, stored: i64, from: i64, to: i64) -> i64 {
    let span = (to - from).max(1);
    let mut width = wanted.max(stored);
    if width % stored != 0 {
        width += stored - width % stored;
    }
    if div_ceil(span, width) > MAX_COLUMNS {
        width = div_ceil(div_ceil(span, MAX_COLUMNS), stored) * stored;
    }
    width
}

/// `a / b` rounded up, for positive numbers (i64::div_ceil is unstable).
fn div_ceil(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// The existence plot of one direction from the store's port usage rows
/// (bin, direction, proto, port, flows, packets, bytes).
pub fn existence(
    usage: &[(i64, u8, u8, u16, u64, u64, u64)],
    direction: Direction,
    bin_seconds: i64,
    from: i64,
    to: i64,
) -> ExistencePlot {
    let mut volumes: BTreeMap<(i64, u16), u64> = BTreeMap::new();
    for &(bin, dir, _proto, port, _flows, _packets, bytes) in usage {
        if dir == direction as u8 && bin >= from && bin < to {
            *volumes.entry((bin.div_euclid(bin_seconds) * bin_seconds, port)).or_default() += bytes;
        }
    }
    let mut sorted: Vec<u64> = volumes.values().copied().collect();
    sorted.sort_unstable();
    let (q1, q3) = (nearest_rank(&sorted, 0.25), nearest_rank(&sorted, 0.75));
    let cells = volumes
        .into_iter()
        .map(|((bin, port), bytes)| Cell { bin, port, bytes, class: class(bytes, q1, q3) })
        .collect();
    ExistencePlot {
        direction: match direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        },
        bin_seconds,
        from,
        to,
        cells,
        min: sorted.first().copied().unwrap_or(0),
        q1,
        q3,
        max: sorted.last().copied().unwrap_or(0),
    }
}

/// The ceil(p*n)-th smallest of `sorted` (0 when empty).
pub fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn class(bytes: u64, q1: u64, q3: u64) -> u8 {
    if bytes <= q1 {
        1
    } else if bytes <= q3 {
        2
    } else {
        3
    }
}

/// The y position of a port on the plot's scale: 0-1023 one unit each (the
/// reserved ports stay readable), 1024-65535 compressed into the next 1024.
pub fn port_scale(port: u16) -> f64 {
    if port < 1024 { port as f64 } else { 1024.0 + (port as f64 - 1024.0) * 1024.0 / 64_512.0 }
}

/// One day of a host's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DayActivity {
    /// Days since the epoch.
    pub day: i64,
    /// The host's qualifying flows of the page's service, and their bytes.
    pub service_flows: u64,
    pub service_bytes: u64,
    pub all_flows: u64,
    pub all_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_are_nearest_rank_and_classes_split_at_them() {
        let sorted = [10, 20, 30, 40, 50, 60, 70, 80];
        assert_eq!((nearest_rank(&sorted, 0.25), nearest_rank(&sorted, 0.75)), (20, 60));
        assert_eq!(nearest_rank(&[5], 0.25), 5);
        assert_eq!(nearest_rank(&[], 0.75), 0);
        assert_eq!([class(20, 20, 60), class(21, 20, 60), class(60, 20, 60), class(61, 20, 60)], [1, 2, 2, 3]);
    }

    #[test]
    fn cells_sum_bins_and_ports_of_one_direction() {
        let usage = [
            (600, 0, 6, 25, 1, 5, 100),
            (1200, 0, 6, 25, 1, 5, 300),
            (1800, 0, 17, 53, 1, 1, 50),
            (600, 1, 6, 25, 1, 5, 999),
            (3600, 0, 6, 25, 1, 5, 7),
        ];
        let plot = existence(&usage, Direction::Inbound, 1200, 0, 3600);
        assert_eq!(
            plot.cells.iter().map(|c| (c.bin, c.port, c.bytes)).collect::<Vec<_>>(),
            [(0, 25, 100), (1200, 25, 300), (1200, 53, 50)],
            "outbound rows and rows after the period are left out"
        );
        assert_eq!((plot.min, plot.q1, plot.q3, plot.max), (50, 50, 300, 300));
        assert_eq!(plot.legend(), ["50 bytes", "51 - 300 bytes", "> 300 bytes"]);
        assert_eq!(plot.labelled_ports(&[]), [25, 53]);
        assert_eq!(
            existence(&[(600, 0, 6, 3389, 1, 5, 9)], Direction::Inbound, 600, 0, 1200).labelled_ports(&[3389]),
            [3389]
        );
        let one_volume = existence(&usage[..1], Direction::Inbound, 1200, 0, 3600);
        assert_eq!(one_volume.legend(), ["100 bytes", "none (Q1 = Q3)", "> 100 bytes"]);
        assert_eq!(
            [thousands(0), thousands(999), thousands(4_501), thousands(10_325_000)],
            ["0", "999", "4,501", "10,325,000"]
        );
    }

    #[test]
    fn long_periods_widen_the_bins_to_fit() {
        let day = 86_400;
        assert_eq!(bin_width(600, 600, 0, 14 * day), 1_200, "2,016 bins of 600 s are too many");
        assert_eq!(bin_width(600, 600, 0, day), 600);
        assert_eq!(bin_width(900, 600, 0, day), 1_200, "a multiple of the store's bins");
        assert!((1..=365).all(|d| div_ceil(d * day, bin_width(600, 600, 0, d * day)) <= MAX_COLUMNS));
    }

    #[test]
    fn the_port_scale_keeps_reserved_ports_apart_and_compresses_the_rest() {
        assert_eq!(port_scale(25), 25.0);
        assert_eq!(port_scale(1023), 1023.0);
        assert_eq!(port_scale(1024), 1024.0);
        assert_eq!(port_scale(65535), 2047.984126984127);
        assert!(port_scale(40000) > port_scale(1024));
    }
}
