//! Measuring: medians, commands timed with their peak memory, and the
//! markdown tables BENCHMARKS.md is made of.

use std::{
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The median of `samples` (the upper middle of an even count).
pub fn median(mut samples: Vec<f64>) -> f64 {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A finished command: its wall time and peak resident memory.
pub struct Run {
    pub wall: Duration,
    pub max_rss: u64,
}

/// Runs `command` (its output discarded unless redirected by the caller),
/// timing it and reading its peak RSS from wait4(2); panics if it fails.
pub fn run(command: &mut Command) -> Run {
    let described = format!("{command:?}");
    let started = Instant::now();
    #[expect(clippy::zombie_processes, reason = "reaped by wait4 below, which also reports the peak RSS")]
    let child = command.stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("{described}: {e}"));
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(pid, child.id() as i32, "wait4 {described}");
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "{described} failed: {status}");
    Run { wall, max_rss: usage.ru_maxrss as u64 * 1024 }
}

/// `runs` runs of `command()`: the median wall time and the largest peak RSS.
pub fn median_run(runs: usize, mut command: impl FnMut() -> Command) -> Run {
    let results: Vec<Run> = (0..runs).map(|_| run(&mut command())).collect();
    Run {
        wall: Duration::from_secs_f64(median(results.iter().map(|r| r.wall.as_secs_f64()).collect())),
        max_rss: results.iter().map(|r| r.max_rss).max().unwrap_or(0),
    }
}

/// A markdown table.
pub struct Table {
    text: String,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        let mut text = format!("| {} |\n|", headers.join(" | "));
        for (i, _) in headers.iter().enumerate() {
            text += if i == 0 { " --- |" } else { " ---: |" };
        }
        text.push('\n');
        Table { text }
    }

    pub fn row(&mut self, cells: &[String]) {
        self.text += &format!("| {} |\n", cells.join(" | "));
    }

    pub fn into_string(self) -> String {
        self.text
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

pub fn millions(per_second: f64) -> String {
    format!("{:.2}", per_second / 1e6)
}
