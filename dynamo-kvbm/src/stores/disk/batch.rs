//! Running the I/O of a batch with a bounded number in flight.

use parking_lot::{Condvar, Mutex};

/// Run `work` on every job, `threads` jobs under way at once: the calling thread and
/// `threads − 1` scoped threads take the next job until none is left. A batch of one job (or a
/// single thread) runs on the calling thread alone. Each job's disk I/O goes through the
/// [`Gate`] it is given, which lets at most `depth` of them in at once; a job's copies to or
/// from a staging buffer stay outside it, so with more threads than `depth` they overlap the
/// I/O of the others instead of leaving the queue short.
pub(super) fn run<J: Send>(
    depth: usize,
    threads: usize,
    jobs: &mut [J],
    work: impl Fn(&mut J, &Gate) + Sync,
) {
    let gate = Gate::new(depth);
    let workers = threads.min(jobs.len());
    if workers <= 1 {
        jobs.iter_mut().for_each(|job| work(job, &gate));
        return;
    }
    let next = Mutex::new(jobs.iter_mut());
    let drain = || {
        loop {
            // The lock is released before the work starts.
            let job = next.lock().next();
            let Some(job) = job else { break };
            work(job, &gate);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(drain);
        }
        drain();
    });
}

/// A counting semaphore for the reads or writes in flight.
pub(super) struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Gate {
    /// A gate that lets `depth` (at least one) through at once.
    pub(super) fn new(depth: usize) -> Self {
        Gate {
            free: Mutex::new(depth.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Run `io` once fewer than `depth` others are inside.
    pub(super) fn io<R>(&self, io: impl FnOnce() -> R) -> R {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
        drop(free);
        // Released on the way out, a panic included, so no other thread waits forever.
        let _permit = Permit(self);
        io()
    }
}

struct Permit<'a>(&'a Gate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_job_runs_once_at_any_depth() {
        for (depth, threads) in [(1, 1), (2, 2), (4, 5), (64, 65)] {
            let mut jobs = vec![0u32; 37];
            run(depth, threads, &mut jobs, |job, gate| gate.io(|| *job += 1));
            assert!(jobs.iter().all(|&runs| runs == 1), "depth {depth}");
        }
    }

    #[test]
    fn the_gate_lets_no_more_than_depth_in() {
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut jobs = vec![(); 200];
        run(2, 6, &mut jobs, |(), gate| {
            gate.io(|| {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::yield_now();
                inside.fetch_sub(1, Ordering::SeqCst);
            });
        });
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} inside at once");
    }
}
