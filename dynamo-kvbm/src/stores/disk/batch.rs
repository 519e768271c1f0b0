//! Running the I/O of a batch with a bounded number in flight.

use parking_lot::Mutex;

/// Run `work` on every job, with up to `depth` jobs under way at once: the calling thread and
/// `depth − 1` scoped threads take the next job until none is left. A batch of one job (or a
/// depth of one) runs on the calling thread alone.
pub(super) fn run<J: Send>(depth: usize, jobs: &mut [J], work: impl Fn(&mut J) + Sync) {
    let workers = depth.min(jobs.len());
    if workers <= 1 {
        jobs.iter_mut().for_each(work);
        return;
    }
    let next = Mutex::new(jobs.iter_mut());
    let drain = || {
        loop {
            // The lock is released before the work starts.
            let job = next.lock().next();
            let Some(job) = job else { break };
            work(job);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(drain);
        }
        drain();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_at_any_depth() {
        for depth in [1, 2, 4, 64] {
            let mut jobs = vec![0u32; 37];
            run(depth, &mut jobs, |job| *job += 1);
            assert!(jobs.iter().all(|&runs| runs == 1), "depth {depth}");
        }
    }
}
