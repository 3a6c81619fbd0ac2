//! Buffers of values no later step reads, reused for later steps' outputs: a fresh output
//! buffer is a zeroed allocation (a `memset` over every element: 7–11 % of EfficientViT-B1's
//! time at batch 8 in either executor by `perf record`, BENCHMARKS.md), and the executors free
//! one value for about every one they make. Spares never outnumber the values a pass holds at
//! its peak: every new output takes one if there is one.

/// The spare buffers of one pass.
#[derive(Debug)]
pub struct SpareBuffers<T> {
    buffers: Vec<Vec<T>>,
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
    pub fn keep(&mut self, value: Vec<T>) {
        if value.capacity() > 0 {
            self.buffers.push(value);
        }
    }

    /// A buffer `len` long for an output whose every element the caller writes: the shortest
    /// spare one at least that long (nothing to zero), else the smallest allocation that
    /// holds `len` (zeroed where it grows; see [`resize_to_overwrite`]), else a new zeroed
    /// one — the spares, all too small, are left for smaller outputs.
    pub fn take(&mut self, len: usize) -> Vec<T> {
        let smallest = |fits: &dyn Fn(&Vec<T>) -> bool, size: &dyn Fn(&Vec<T>) -> usize| {
            let candidates = self.buffers.iter().enumerate().filter(|(_, b)| fits(b));
            candidates.min_by_key(|(_, b)| size(b)).map(|(i, _)| i)
        };
        let pick = smallest(&|b| b.len() >= len, &Vec::len)
            .or_else(|| smallest(&|b| b.capacity() >= len, &Vec::capacity));
        let mut buf = pick.map_or_else(Vec::new, |i| self.buffers.swap_remove(i));
        resize_to_overwrite(&mut buf, len);
        buf
    }

    /// A buffer whose length the caller sets itself (the longest spare one).
    pub fn take_any(&mut self) -> Vec<T> {
        let longest = (0..self.buffers.len()).max_by_key(|&i| self.buffers[i].len());
        longest.map_or_else(Vec::new, |i| self.buffers.swap_remove(i))
    }
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
        assert_eq!(spare.take(5), [3; 5]);
        // None at least 20 long or with room for 20: a new buffer, the spares left.
        assert_eq!(spare.take(20), [0; 20]);
        // None at least 12 long: the one with room for 12, zeroed where it grows.
        let grown = spare.take(12);
        assert_eq!(grown[..10], [1; 10]);
        assert_eq!(grown[10..], [0; 2]);
        assert_eq!(spare.take_any(), [2; 4]);
        assert_eq!(spare.take(3), [0; 3]);
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
    }
}
