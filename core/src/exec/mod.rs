//! Executors: run a graph on a batch of images.
//!
//! `float` is the f32 reference every quantized result is measured against; `int` the
//! integer-only executor (its arithmetic so far).

pub mod cpu;
pub mod float;
pub mod helper_threads;
pub mod int;
pub mod matmul;
pub mod peak;
pub mod spare;
pub mod step_time;
pub mod transpose;

/// A pool of `threads` threads, for tests that hold a result the same on any number of them.
#[cfg(test)]
pub(crate) fn test_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a pool")
}
