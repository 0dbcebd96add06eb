//! Per-function metrics: counters, gauges and an invocation-duration histogram, rendered as
//! Prometheus text and summarized (percentiles) for `freshet fn status`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Histogram buckets: upper bounds in microseconds, powers of two from 1 µs to ~9 minutes.
const BUCKETS: usize = 30;

#[derive(Default)]
pub struct Metrics {
    pub workers: AtomicI64,
    pub lag: AtomicI64,
    pub invocations: AtomicU64,
    pub errors: AtomicU64,
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub filtered: AtomicU64,
    pub retries: AtomicU64,
    pub dead_letters: AtomicU64,
    pub cold_starts: AtomicU64,
    pub cold_start_us_total: AtomicU64,
    duration: [AtomicU64; BUCKETS],
    duration_us_total: AtomicU64,
    /// Events handed to invocations (with `duration_us_total`: the processing time per event).
    events_invoked: AtomicU64,
    /// The autoscaler's estimate of one event's processing time, in nanoseconds (0: unknown).
    pub event_cost_ns: AtomicU64,
}

fn bucket(us: u64) -> usize {
    (64 - us.max(1).saturating_sub(1).leading_zeros() as usize).min(BUCKETS - 1)
}

fn bound_us(b: usize) -> u64 {
    1u64 << b
}

impl Metrics {
    /// One invocation of `events` events that took `us` microseconds.
    pub fn observe_invocation(&self, us: u64, events: usize, failed: bool) {
        self.invocations.fetch_add(1, Relaxed);
        self.events_invoked.fetch_add(events as u64, Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
        self.duration[bucket(us)].fetch_add(1, Relaxed);
        self.duration_us_total.fetch_add(us, Relaxed);
    }

    pub fn observe_cold_start(&self, us: u64) {
        self.cold_starts.fetch_add(1, Relaxed);
        self.cold_start_us_total.fetch_add(us, Relaxed);
    }

    /// (Total invocation time in µs, events invoked) so far: the autoscaler's processing time.
    pub fn busy(&self) -> (u64, u64) {
        (self.duration_us_total.load(Relaxed), self.events_invoked.load(Relaxed))
    }

    /// The duration (ms) under which a fraction `q` of invocations finished (bucket bound).
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.duration.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return bound_us(b) as f64 / 1000.0;
            }
        }
        bound_us(BUCKETS - 1) as f64 / 1000.0
    }

    /// Prometheus text exposition lines for one function.
    pub fn render(&self, function: &str, out: &mut String) {
        use std::fmt::Write;
        let l = format!("function=\"{}\"", function.replace('\\', "\\\\").replace('"', "\\\""));
        let gauges = [
            ("freshet_function_workers", self.workers.load(Relaxed)),
            ("freshet_function_lag", self.lag.load(Relaxed)),
        ];
        for (name, v) in gauges {
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
        let cost = self.event_cost_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "freshet_function_event_processing_seconds{{{l}}} {cost}");
        let counters = [
            ("freshet_function_invocations_total", &self.invocations),
            ("freshet_function_errors_total", &self.errors),
            ("freshet_function_events_in_total", &self.events_in),
            ("freshet_function_events_out_total", &self.events_out),
            ("freshet_function_events_filtered_total", &self.filtered),
            ("freshet_function_retries_total", &self.retries),
            ("freshet_function_dead_letters_total", &self.dead_letters),
            ("freshet_function_cold_starts_total", &self.cold_starts),
        ];
        for (name, v) in counters {
            let _ = writeln!(out, "{name}{{{l}}} {}", v.load(Relaxed));
        }
        let mut cumulative = 0;
        for (b, c) in self.duration.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = bound_us(b) as f64 / 1e6;
            let _ = writeln!(out, "freshet_function_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "freshet_function_duration_seconds_bucket{{{l},le=\"+Inf\"}} {cumulative}");
        let sum = self.duration_us_total.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "freshet_function_duration_seconds_sum{{{l}}} {sum}");
        let _ = writeln!(out, "freshet_function_duration_seconds_count{{{l}}} {cumulative}");
    }
}

/// The `# HELP`/`# TYPE` header of the metrics [`Metrics::render`] writes.
pub const PROMETHEUS_HEADER: &str = "\
# HELP freshet_function_workers Workers (instances in use) of a function.
# TYPE freshet_function_workers gauge
# HELP freshet_function_lag Records of the trigger topic not yet processed.
# TYPE freshet_function_lag gauge
# HELP freshet_function_event_processing_seconds Recent invocation time per event (the autoscaler's estimate).
# TYPE freshet_function_event_processing_seconds gauge
# TYPE freshet_function_invocations_total counter
# TYPE freshet_function_errors_total counter
# TYPE freshet_function_events_in_total counter
# TYPE freshet_function_events_out_total counter
# TYPE freshet_function_events_filtered_total counter
# TYPE freshet_function_retries_total counter
# TYPE freshet_function_dead_letters_total counter
# TYPE freshet_function_cold_starts_total counter
# HELP freshet_function_duration_seconds Duration of one invocation.
# TYPE freshet_function_duration_seconds histogram
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_buckets() {
        let m = Metrics::default();
        for _ in 0..99 {
            m.observe_invocation(900, 1, false); // bucket ≤ 1024 µs
        }
        m.observe_invocation(100_000, 1, true);
        assert_eq!(m.percentile_ms(0.5), 1.024);
        assert!(m.percentile_ms(1.0) >= 100.0);
        let mut s = String::new();
        m.render("f", &mut s);
        assert!(s.contains("freshet_function_invocations_total{function=\"f\"} 100"));
        assert!(s.contains("freshet_function_errors_total{function=\"f\"} 1"));
        assert!(s.contains("le=\"+Inf\"} 100"));
    }
}
