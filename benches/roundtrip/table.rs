//! The Markdown table the benchmark prints, and the targets its ratios
//! are held to.

use std::time::Duration;

use crate::Settings;
use crate::round_trip::BLOCK;
use crate::stats::{median, median_interval, median_rate};

/// A target on a ratio.
#[derive(Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    pub fn met_by(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(limit) => ratio <= limit,
            Target::AtLeast(limit) => ratio >= limit,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtMost(limit) => write!(f, "≤ {limit:.2}x"),
            Target::AtLeast(limit) => write!(f, "≥ {limit:.2}x"),
        }
    }
}

#[derive(Default)]
pub struct Table {
    rows: Vec<String>,
    notes: Vec<String>,
}

pub fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

impl Table {
    pub fn time_row(
        &mut self,
        name: &str,
        values: &[Duration],
        baseline: Option<(Duration, &str)>,
    ) {
        let mut sorted = values.to_vec();
        sorted.sort();
        let median = median(values);
        let ratio = baseline.map_or(String::new(), |(base, label)| {
            format!("{:.3}x {label}", median.as_secs_f64() / base.as_secs_f64())
        });
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let n = values.len();
        self.rows.push(format!(
            "| {name} | {} | {} | {} | {n} | {ratio} |",
            micros(median),
            micros(min),
            micros(max)
        ));
    }

    pub fn rate_row(&mut self, name: &str, values: &[f64], baseline: Option<f64>) {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = median_rate(values);
        let ratio = baseline.map_or(String::new(), |base| format!("{:.3}x bare", median / base));
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let n = values.len();
        self.rows.push(format!(
            "| {name} | {median:.0} | {min:.0} | {max:.0} | {n} | {ratio} |"
        ));
    }

    /// Ratios of measurements taken back to back in the same round: slow
    /// drift of the machine cancels out of each, so their median is the
    /// verdict on `target` (if any), given with its 95% confidence interval.
    pub fn ratio_row(&mut self, name: &str, ratios: &[f64], target: Option<Target>) {
        let mut sorted = ratios.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let n = ratios.len();
        let (low, high) = median_interval(&sorted);
        let verdict = match target {
            Some(target) if target.met_by(median) => format!("; target {target}: met"),
            Some(target) => format!("; target {target}: NOT met"),
            None => String::new(),
        };
        self.rows.push(format!(
            "| {name} | {median:.3}x | {min:.3}x | {max:.3}x | {n} | paired; 95% CI of median {low:.3}x–{high:.3}x{verdict} |"
        ));
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn print(&self, settings: &Settings) {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("machine: {cores} cores, {cpu}");
        println!(
            "settings: {} round trips per run in blocks of {BLOCK} after a warm-up block, {} runs of {} pipeline messages, {} start-ups",
            settings.messages,
            settings.pipeline_runs,
            settings.pipeline_messages,
            settings.startups
        );
        println!();
        println!("| measurement | median | min | max | runs | ratio |");
        println!("|---|---|---|---|---|---|");
        for row in &self.rows {
            println!("{row}");
        }
        println!();
        for note in &self.notes {
            println!("- {note}");
        }
    }
}
