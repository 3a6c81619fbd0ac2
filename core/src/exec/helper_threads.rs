//! Spare pool threads kept looking for work while a batch smaller than the pool runs.
//!
//! A batch of one image runs on one thread; its layers split their rows across the pool, but
//! between those splits (packing, attention, the serial steps) the other threads find nothing
//! and rayon puts them to sleep, so every split begins with a `futex` wake-up and a thread that
//! is late to its share (on EfficientViT-B1 at batch 1, 7 % of the image thread's time was
//! spent waking the other, which was idle 58 % of the time: BENCHMARKS.md). Here the spare
//! threads stay awake for the batch, stealing each split's work as soon as it is pushed.
//!
//! Which thread runs a piece of work never changes its result: every split writes its own
//! rows, so the answers are the same bits with helpers or without.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a helper goes on looking without finding work before it returns to the pool (and
/// sleeps as rayon's threads do). Longer than the serial stretches between one image's splits,
/// short enough that a helper run where it blocks its own thread (see [`help`]) costs little.
const MAX_IDLE: Duration = Duration::from_millis(2);

/// Runs `f`, which keeps `jobs` of the pool's threads busy, with every other thread of the pool
/// looking for work until it returns. With no spare thread, just `f()`.
pub fn with_helper_threads<R: Send>(jobs: usize, f: impl FnOnce() -> R + Send) -> R {
    let spare = rayon::current_num_threads().saturating_sub(jobs.max(1));
    if spare == 0 {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let home = rayon::current_thread_index();
        for _ in 0..spare {
            let done = &done;
            s.spawn(move |_| help(home, done));
        }
        let result = f();
        done.store(true, Ordering::Release);
        result
    })
}

/// Executes the pool's pending work until `done`, or until none has come for [`MAX_IDLE`].
///
/// A helper must not wait for `f` on a thread that `f` itself is waiting on: the thread that
/// runs `f` may pop a helper off its own queue while it waits for stolen work, and a thread
/// that stole part of `f` may steal a helper while waiting in turn. So a helper on `f`'s own
/// thread returns at once, and any other gives up after [`MAX_IDLE`] without work — a bounded
/// delay, never a deadlock.
fn help(home: Option<usize>, done: &AtomicBool) {
    if rayon::current_thread_index() == home {
        return;
    }
    let mut idle_since = Instant::now();
    let mut rounds = 0u32;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = Instant::now();
            continue;
        }
        rounds = rounds.wrapping_add(1);
        // The clock read only every 64 empty rounds.
        if rounds.is_multiple_of(64) && idle_since.elapsed() > MAX_IDLE {
            return;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    use crate::exec::test_pool as pool;

    #[test]
    fn returns_what_f_returns() {
        let got = pool(3).install(|| {
            with_helper_threads(1, || {
                (0..10_000u32)
                    .into_par_iter()
                    .with_max_len(10)
                    .map(u64::from)
                    .sum::<u64>()
            })
        });
        assert_eq!(got, 10_000 * 9_999 / 2);
    }

    #[test]
    fn nested_and_full_pools_finish() {
        // Helpers inside helpers, and inside work that was itself stolen: each finishes.
        let pool = pool(2);
        let got = pool.install(|| {
            (0..8usize)
                .into_par_iter()
                .map(|i| {
                    with_helper_threads(1, || {
                        with_helper_threads(1, || {
                            (0..100usize).into_par_iter().map(|j| i * j).sum::<usize>()
                        })
                    })
                })
                .sum::<usize>()
        });
        assert_eq!(got, (0..8).sum::<usize>() * (0..100).sum::<usize>());
        // A pool as busy as its threads: no helper at all.
        assert_eq!(pool.install(|| with_helper_threads(2, || 7)), 7);
        // Outside any pool (the global one is used).
        assert_eq!(with_helper_threads(1, || 8), 8);
    }

    #[test]
    fn a_helper_without_work_gives_up() {
        // `done` never comes: on another thread the helper returns after `MAX_IDLE`, on its
        // home thread at once.
        let done = AtomicBool::new(false);
        pool(2).install(|| {
            help(None, &done);
            help(rayon::current_thread_index(), &done);
        });
    }
}
