//! Small statistics the benchmark reports: medians over rounds, spreads of repeated timings, and
//! CPU steal from `/proc/stat`. Pure: no IO.

use std::time::Duration;

/// The median of `values` (the mean of the two middle values for an even count); `None` when
/// empty. NaNs sort last and are never chosen unless nothing else is there.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The `q`-quantile (0..=1) of `values` by the nearest-rank method; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Median, minimum and maximum of repeated timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median.
    pub median: Duration,
    /// Fastest.
    pub min: Duration,
    /// Slowest.
    pub max: Duration,
    /// How many timings.
    pub count: usize,
}

impl Spread {
    /// The spread of `timings`; `None` when empty.
    pub fn of(timings: &[Duration]) -> Option<Self> {
        let secs: Vec<f64> = timings.iter().map(Duration::as_secs_f64).collect();
        Some(Self {
            median: Duration::from_secs_f64(median(&secs)?),
            min: *timings.iter().min()?,
            max: *timings.iter().max()?,
            count: timings.len(),
        })
    }
}

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Ticks in every state (user, nice, system, idle, iowait, irq, softirq, steal); guest time
    /// is already counted in user and nice.
    pub total: u64,
    /// Ticks the hypervisor gave to someone else while this VM wanted to run.
    pub steal: u64,
}

impl CpuTimes {
    /// Parses the aggregate `cpu ` line of `/proc/stat`.
    pub fn parse(proc_stat: &str) -> Option<Self> {
        let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice]
        let first = fields.get(..8)?;
        Some(Self {
            total: first.iter().sum(),
            steal: first[7],
        })
    }

    /// Share of CPU time stolen between `self` (earlier) and `later`, in percent; `None` when no
    /// time passed.
    pub fn steal_percent_until(&self, later: &Self) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let steal = later.steal.checked_sub(self.steal)?;
        (total > 0).then(|| 100.0 * steal as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&values, 1.0), Some(100.0));
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn spread_of_timings() {
        let ms = Duration::from_millis;
        let spread = Spread::of(&[ms(30), ms(10), ms(20), ms(40)]).expect("non-empty");
        assert_eq!(spread.median, ms(25));
        assert_eq!((spread.min, spread.max, spread.count), (ms(10), ms(40), 4));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn steal_comes_from_the_aggregate_cpu_line() {
        let before = "cpu  100 0 50 800 10 5 5 30 0 0\ncpu0 50 0 25 400 5 2 3 15 0 0\n";
        let after = "cpu  200 0 100 1500 10 10 10 70 7 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let a = CpuTimes::parse(before).expect("parses");
        let b = CpuTimes::parse(after).expect("parses");
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                steal: 30
            }
        );
        assert_eq!(b.total, 1900);
        let steal = a.steal_percent_until(&b).expect("time passed");
        assert!((steal - 100.0 * 40.0 / 900.0).abs() < 1e-9, "{steal}");
        assert_eq!(a.steal_percent_until(&a), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 3\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3\n"), None, "too few fields");
    }
}
