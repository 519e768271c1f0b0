//! A criterion measurement of the benchmark thread's CPU time instead of wall-clock time.
//!
//! The benchmarks run on shared machines where other processes take the cores for a while;
//! wall-clock time then counts the time the thread waited for a core. The thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) does not, so runs on a busy machine agree far better. Caches and
//! memory bandwidth are still shared, which is why figures are given against a baseline
//! measured in the same run.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// The calling thread's CPU time.
pub(crate) struct ThreadCpuTime;

fn now() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// Its values are durations, formatted as criterion formats wall-clock times.
static FORMAT: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        now()
    }

    fn end(&self, start: Duration) -> Duration {
        now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        FORMAT.formatter()
    }
}
