//! Buffers of values no later step reads, reused for later steps' outputs: a fresh output
//! buffer is a zeroed allocation (a `memset` over every element: 7–11 % of EfficientViT-B1's
//! time at batch 8 in either executor by `perf record`, BENCHMARKS.md), and the executors free
//! one value for about every one they make. Spares never outnumber the values a pass holds at
//! its peak: every new output takes one if there is one.
//!
//! A spare [`Buffer`] remembers how much of its allocation was ever written, so a value cut
//! short by one output and grown again by a later one is not zeroed again: a `Vec` cut to a
//! shorter length forgets that its tail was written, and growing it back zeroes the tail
//! (4–5 % of B1's integer time at batch 8 by `perf`, all in regrowing recycled buffers; 3.8 %
//! of its fp32 time, whose executor kept its values as `Vec`s until it too kept `Buffer`s).

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

use rayon::prelude::*;

/// Elements past which [`Buffer::concat`] copies on the pool's threads.
const PARALLEL_COPY: usize = 1 << 16;
/// Elements per parallel copy.
const COPY_RUN: usize = 1 << 14;

thread_local! {
    static ZERO_FILLS: Cell<u64> = const { Cell::new(0) };
    static NEW_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// How many times this thread's [`Buffer`]s were replaced by a new zeroed allocation (their
/// own too small): the part of [`zero_fills`] that also costs page faults.
/// `tests/int_scale.rs` checks that a float pass after the first makes none.
pub fn new_allocations() -> u64 {
    NEW_ALLOCATIONS.get()
}

/// How many times this thread's [`Buffer`]s were zeroed to grow (a new allocation, or a tail
/// past what the buffer had written): the `memset`s that reuse avoids. `tests/int_scale.rs`
/// checks that an integer pass after the first makes none.
pub fn zero_fills() -> u64 {
    ZERO_FILLS.get()
}

/// A value's elements: the first `len` of an allocation whose every element up to
/// `written.len()` holds some earlier value (so a caller that writes every element can take
/// it without zeroing).
#[derive(Debug, Clone, Default)]
pub struct Buffer<T> {
    written: Vec<T>,
    len: usize,
}

impl<T: Copy + Default> Buffer<T> {
    /// The buffer of `len` elements holding stale values, for a caller that writes every
    /// element: only what lies past everything ever written is zeroed (an allocation too
    /// small is replaced by a new zeroed one rather than grown, which would copy it).
    pub fn overwrite(&mut self, len: usize) -> &mut [T] {
        if self.written.len() < len {
            ZERO_FILLS.set(ZERO_FILLS.get() + 1);
            if self.written.capacity() < len {
                NEW_ALLOCATIONS.set(NEW_ALLOCATIONS.get() + 1);
                self.written = vec![T::default(); len];
            } else {
                self.written.resize(len, T::default());
            }
        }
        self.len = len;
        &mut self.written[..len]
    }

    /// The buffer of `len` elements, all zero.
    pub fn zeroed(&mut self, len: usize) -> &mut [T] {
        let out = self.overwrite(len);
        out.fill(T::default());
        out
    }

    /// The buffer holding `parts` one after another, copied on the pool's threads when long
    /// (EfficientViT-B1's attention joins its maps so, 0.3–0.6 MB of codes each: serial, the
    /// copies were as slow at batch 1 on two threads as on one, reading what the other core
    /// wrote).
    pub fn concat(&mut self, parts: &[&[T]])
    where
        T: Send + Sync,
    {
        let total = parts.iter().map(|p| p.len()).sum();
        let mut rest = self.overwrite(total);
        let mut places = Vec::with_capacity(parts.len());
        for part in parts {
            let (here, tail) = rest.split_at_mut(part.len());
            places.push((here, *part));
            rest = tail;
        }
        if total >= PARALLEL_COPY {
            places.into_par_iter().for_each(|(here, part)| {
                (here.par_chunks_mut(COPY_RUN).zip(part.par_chunks(COPY_RUN)))
                    .for_each(|(o, p)| o.copy_from_slice(p))
            });
        } else {
            places
                .into_iter()
                .for_each(|(here, part)| here.copy_from_slice(part));
        }
    }

    /// The elements as a `Vec` (what was written past them is dropped).
    pub fn into_vec(mut self) -> Vec<T> {
        self.written.truncate(self.len);
        self.written
    }

    /// Elements the allocation holds that were written at some point.
    fn reusable(&self) -> usize {
        self.written.len()
    }
}

impl<T> From<Vec<T>> for Buffer<T> {
    fn from(values: Vec<T>) -> Self {
        Self {
            len: values.len(),
            written: values,
        }
    }
}

impl<T> Deref for Buffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.written[..self.len]
    }
}

impl<T> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.written[..self.len]
    }
}

/// The spare buffers of one pass.
#[derive(Debug)]
pub struct SpareBuffers<T> {
    buffers: Vec<Buffer<T>>,
}

impl<T> Default for SpareBuffers<T> {
    fn default() -> Self {
        Self {
            buffers: Vec::new(),
        }
    }
}

impl<T: Copy + Default> SpareBuffers<T> {
    /// Keeps a value no later step reads.
    pub fn keep(&mut self, value: impl Into<Buffer<T>>) {
        let value = value.into();
        if value.written.capacity() > 0 {
            self.buffers.push(value);
        }
    }

    /// A buffer `len` long for an output whose every element the caller writes: the spare one
    /// with the fewest written elements that has at least `len` (nothing to zero), else the
    /// smallest allocation that holds `len` (zeroed past what it had written), else a new
    /// zeroed one — the spares, all too small, are left for smaller outputs.
    pub fn take(&mut self, len: usize) -> Buffer<T> {
        let smallest = |fits: &dyn Fn(&Buffer<T>) -> bool, size: &dyn Fn(&Buffer<T>) -> usize| {
            let candidates = self.buffers.iter().enumerate().filter(|(_, b)| fits(b));
            candidates.min_by_key(|(_, b)| size(b)).map(|(i, _)| i)
        };
        let capacity = |b: &Buffer<T>| b.written.capacity();
        let pick = smallest(&|b| b.reusable() >= len, &Buffer::reusable)
            .or_else(|| smallest(&|b| capacity(b) >= len, &capacity));
        let mut buf = pick.map_or_else(Buffer::default, |i| self.buffers.swap_remove(i));
        buf.overwrite(len);
        buf
    }

    /// Keeps every buffer of `other` too.
    pub fn append(&mut self, mut other: SpareBuffers<T>) {
        self.buffers.append(&mut other.buffers);
    }

    /// How many buffers are kept.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }
}

/// Runs `f` on the value this thread keeps in `key`, put back afterwards for the next call:
/// scratch that one job after another on the same thread reuses rather than allocating
/// afresh. A call nested in another on the same thread (a rayon worker running other work while
/// it waits) finds the value taken and starts from a default one; the last to finish is kept.
pub fn with_kept<T: Default + 'static, R>(
    key: &'static std::thread::LocalKey<Cell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut value = key.take();
    let result = f(&mut value);
    key.set(value);
    result
}

/// Makes `buf` `len` long for a caller that writes every element: a recycled buffer keeps its
/// former contents and only what it grows by is zeroed. One whose allocation is too small is
/// replaced by a new zeroed one rather than grown, which would copy its old contents.
pub fn resize_to_overwrite<T: Copy + Default>(buf: &mut Vec<T>, len: usize) {
    if buf.capacity() < len {
        *buf = vec![T::default(); len];
    } else {
        buf.resize(len, T::default());
    }
}

/// The first `len` elements of `buf`, for a caller that writes every one of them: a longer
/// buffer keeps its length, so a scratch buffer that serves products of different sizes in
/// turn is not zeroed again each time it grows back to a length it had (`Vec::resize` zeroes
/// whatever it regrows: 0.6 % of EfficientViT-B1's integer time by `perf`).
pub fn prefix_to_overwrite<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        resize_to_overwrite(buf, len);
    }
    &mut buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_long_enough_is_taken_whole_and_cut_to_length() {
        let mut spare = SpareBuffers::default();
        let mut roomy = Vec::with_capacity(16);
        roomy.extend([1; 10]);
        spare.keep(roomy);
        spare.keep(vec![2; 4]);
        spare.keep(vec![3; 6]);
        // The shortest at least 5 long: nothing zeroed.
        assert_eq!(*spare.take(5), [3; 5]);
        // None at least 20 long or with room for 20: a new buffer, the spares left.
        assert_eq!(*spare.take(20), [0; 20]);
        // None at least 12 long: the one with room for 12, zeroed where it grows.
        let grown = spare.take(12);
        assert_eq!(grown[..10], [1; 10]);
        assert_eq!(grown[10..], [0; 2]);
        assert_eq!(*spare.take(3), [2; 3]);
        assert_eq!(*spare.take(3), [0; 3]);
    }

    #[test]
    fn a_buffer_cut_short_keeps_what_it_had_written() {
        let mut spare = SpareBuffers::default();
        let mut b = Buffer::from(vec![4; 8]);
        b.overwrite(3).copy_from_slice(&[7, 8, 9]);
        assert_eq!(*b, [7, 8, 9]);
        spare.keep(b);
        // Taken back at 8: the elements past the 3 it last held are the ones written before,
        // not zeros (a `Vec` truncated to 3 would have zeroed them).
        assert_eq!(*spare.take(8), [7, 8, 9, 4, 4, 4, 4, 4]);
        let mut b = Buffer::from(vec![5; 4]);
        assert_eq!(b.zeroed(2), [0, 0]);
        b.concat(&[&[1, 2], &[3, 4, 5]]);
        assert_eq!(b.into_vec(), [1, 2, 3, 4, 5]);
        // Long enough to be copied in parallel runs, the parts' lengths not multiples of one.
        let parts: Vec<Vec<u32>> = [
            PARALLEL_COPY / 2 + 7,
            3,
            COPY_RUN * 3 + 1,
            PARALLEL_COPY / 2,
        ]
        .iter()
        .scan(0u32, |next, &len| {
            let part = (*next..*next + len as u32).collect();
            *next += len as u32;
            Some(part)
        })
        .collect();
        let mut long = Buffer::default();
        long.concat(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let total = parts.iter().map(Vec::len).sum::<usize>();
        assert!(total >= PARALLEL_COPY);
        assert!(long.iter().copied().eq(0..total as u32));
    }

    #[test]
    fn a_buffer_too_small_is_replaced_by_a_zeroed_one() {
        let mut buf = vec![7u8; 3];
        resize_to_overwrite(&mut buf, 2);
        assert_eq!(buf, [7, 7]);
        resize_to_overwrite(&mut buf, 3);
        assert_eq!(buf, [7, 7, 0]);
        resize_to_overwrite(&mut buf, 50);
        assert_eq!(buf, [0; 50]);
        let mut b = Buffer::from(vec![7u8; 3]);
        assert_eq!(b.overwrite(50), [0; 50]);
    }

    #[test]
    fn a_prefix_leaves_the_buffer_its_length() {
        let mut buf = Vec::with_capacity(8);
        buf.extend([7u8; 4]);
        prefix_to_overwrite(&mut buf, 2).copy_from_slice(&[1, 2]);
        // Cut to two, a later call for four would have zeroed the last two again.
        assert_eq!(buf, [1, 2, 7, 7]);
        assert_eq!(prefix_to_overwrite(&mut buf, 4), [1, 2, 7, 7]);
        // Longer: grown as `resize_to_overwrite` grows it.
        assert_eq!(prefix_to_overwrite(&mut buf, 6), [1, 2, 7, 7, 0, 0]);
        assert_eq!(prefix_to_overwrite(&mut buf, 9), [0; 9]);
    }
}
