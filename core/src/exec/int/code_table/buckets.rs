//! A code table in a form SIMD lanes read without a load per lane. A GELU table's codes are
//! constant outside a window of a few thousand entries (the output's zero point far below,
//! its top code above), and inside it they step by one at a time: down to GELU's minimum,
//! then up (DeiT-T's fc1 tables, random weights under repq-vit W8A8: about 270 steps of ±1 in
//! a window of 1,845–2,062 of 9,400–10,700 entries). So the window is cut into buckets of 16
//! entries, and a bucket holds its first code and a 16-bit mask of where its code steps: an
//! entry's code is the first code plus or minus the steps set in the mask up to the entry.
//! Tables without that form (a step past ±1, a bucket that steps both ways, a window past
//! [`MAX_BUCKETS`]) have no buckets, and are read entry by entry.

/// Entries per bucket: one per bit of its mask.
pub const ENTRIES: usize = 16;
/// The most buckets a window holds (4,096 entries): two pages of 128, each a byte permute of
/// first codes and two word permutes of steps in the lanes (`kernels::bucket_lanes`).
pub const MAX_BUCKETS: usize = 256;

/// The codes of a [`CodeTable`](super::CodeTable) in buckets; see the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    /// The table index of the window's first entry (below 0 when the window starts before the
    /// table: entries outside the table have the code of its nearest end).
    pub start: i64,
    /// Buckets in the window, 1 to [`MAX_BUCKETS`].
    pub count: usize,
    /// The least code: the first codes are stored less it.
    pub base: i32,
    /// Each bucket's first code, less `base` (zero past `count`).
    pub first_codes: [u8; MAX_BUCKETS],
    /// Each bucket's steps: bit `p` (1 to 15) set where the code of entry `p` differs from
    /// entry `p − 1`'s; bit 0 set when the bucket's code steps down (zero past `count`).
    pub steps: [u16; MAX_BUCKETS],
}

/// Bit 0 of a bucket's steps: its code steps down.
pub const DOWN: u16 = 1;

impl Buckets {
    /// The buckets of `codes` (a table's, `codes[i]` the code of its `i`-th entry), when they
    /// have the form of the module; the window aligned so that it holds the fewest buckets.
    pub fn of(codes: &[i32]) -> Option<Buckets> {
        let last = codes.len().checked_sub(1)?;
        let steps: Vec<usize> = (1..codes.len())
            .filter(|&i| codes[i] != codes[i - 1])
            .collect();
        if steps.iter().any(|&i| codes[i].abs_diff(codes[i - 1]) != 1) {
            return None;
        }
        let (&lo, &hi) = (codes.iter().min()?, codes.iter().max()?);
        if hi.abs_diff(lo) > u8::MAX as u32 {
            return None;
        }
        // The window holds the entry before the first step and the last step; the codes
        // before and after it are constant, so an index clamped into it keeps its code.
        let (from, to) = match (steps.first(), steps.last()) {
            (Some(&first), Some(&last)) => (first as i64 - 1, last as i64),
            _ => (0, 0),
        };
        let at = |i: i64| codes[i.clamp(0, last as i64) as usize];
        (0..ENTRIES as i64)
            .filter_map(|shift| {
                let start = from - shift;
                let count = usize::try_from((to - start) / ENTRIES as i64 + 1).ok()?;
                if count > MAX_BUCKETS {
                    return None;
                }
                let mut buckets = Buckets {
                    start,
                    count,
                    base: lo,
                    first_codes: [0; MAX_BUCKETS],
                    steps: [0; MAX_BUCKETS],
                };
                for b in 0..count {
                    let first = start + (b * ENTRIES) as i64;
                    let (mut up, mut down) = (false, false);
                    let mut mask = 0u16;
                    for p in 1..ENTRIES as i64 {
                        let (before, here) = (at(first + p - 1), at(first + p));
                        up |= here > before;
                        down |= here < before;
                        mask |= u16::from(here != before) << p;
                    }
                    if up && down {
                        return None;
                    }
                    buckets.first_codes[b] = (at(first) - lo) as u8;
                    buckets.steps[b] = mask | if down { DOWN } else { 0 };
                }
                Some(buckets)
            })
            .min_by_key(|b| b.count)
    }

    /// The code of table entry `i` (any index: outside the window the codes are constant).
    pub fn code(&self, i: i64) -> i32 {
        let j = (i.saturating_sub(self.start)).clamp(0, (self.count * ENTRIES) as i64 - 1) as usize;
        let (b, p) = (j / ENTRIES, j % ENTRIES);
        let steps = self.steps[b];
        let n = (steps & below(p)).count_ones() as i32;
        let first = self.base + i32::from(self.first_codes[b]);
        if steps & DOWN != 0 {
            first - n
        } else {
            first + n
        }
    }
}

/// The step bits of the entries from 1 to `p` of a bucket: `(2 << p) − 2`.
pub fn below(p: usize) -> u16 {
    ((2u32 << p) - 2) as u16
}

/// `len` codes that step by one, down then up, as a GELU table's do: a step after about one
/// in `spacing` entries, the turn at a random entry; the codes span less than 256. For tests.
#[cfg(test)]
pub(crate) fn valley(rng: &mut crate::rng::Rng, len: usize, spacing: usize) -> Vec<i32> {
    let turn = rng.below(len.max(1));
    let mut code = rng.below(512) as i32 - 256;
    let (mut steps, mut codes) = (0, Vec::with_capacity(len));
    for i in 0..len {
        if i > 0 && steps < 255 && rng.below(spacing) == 0 {
            code += if i <= turn { -1 } else { 1 };
            steps += 1;
        }
        codes.push(code);
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every entry's code, and one past each end.
    fn assert_same(codes: &[i32], b: &Buckets) {
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(b.code(i as i64), c, "entry {i}");
        }
        assert_eq!(b.code(-1), codes[0]);
        assert_eq!(b.code(i64::MIN), codes[0]);
        assert_eq!(b.code(codes.len() as i64), *codes.last().unwrap());
        assert_eq!(b.code(i64::MAX), *codes.last().unwrap());
    }

    #[test]
    fn by_hand() {
        // Steps at entries 3 and 4 (down) and 20 (up): the window runs from entry 2 (before
        // the first step) to 20, two buckets from 2 (the first alignment with the fewest).
        let mut codes = vec![10; 30];
        codes[3..].iter_mut().for_each(|c| *c = 9);
        codes[4..].iter_mut().for_each(|c| *c = 8);
        codes[20..].iter_mut().for_each(|c| *c = 9);
        let b = Buckets::of(&codes).expect("steps of one, one way per bucket");
        assert_eq!((b.start, b.count, b.base), (2, 2, 8));
        // Bucket 0 (entries 2–17) starts at code 10 and steps down at its entries 1 and 2;
        // bucket 1 (18–33) starts at 8 and steps up at its entry 2.
        assert_eq!((b.first_codes[0], b.steps[0]), (2, DOWN | 0b110));
        assert_eq!((b.first_codes[1], b.steps[1]), (0, 0b100));
        assert_same(&codes, &b);
        assert_eq!(below(0), 0);
        assert_eq!(below(1), 0b10);
        assert_eq!(below(15), 0xFFFE);
    }

    #[test]
    fn tables_without_the_form_have_no_buckets() {
        // A step of two.
        assert_eq!(Buckets::of(&[0, 0, 2, 2]), None);
        // Codes 256 apart.
        assert_eq!(Buckets::of(&[0, 1, 2]).map(|b| b.count), Some(1));
        let wide: Vec<i32> = (0..=256).collect();
        assert_eq!(Buckets::of(&wide), None);
        // Up then down within every 16 entries.
        let zigzag: Vec<i32> = (0..64).map(|i| [0, 1, 1, 0][i % 4]).collect();
        assert_eq!(Buckets::of(&zigzag), None);
        // A window longer than 256 buckets.
        let long: Vec<i32> = (0..MAX_BUCKETS * ENTRIES + 2)
            .map(|i| i32::from(i == 0 || i == MAX_BUCKETS * ENTRIES + 1))
            .collect();
        assert_eq!(Buckets::of(&long), None);
        assert_eq!(Buckets::of(&[]), None);
    }

    #[test]
    fn constant_and_single_entry_tables() {
        for codes in [vec![7], vec![-3; 100]] {
            let b = Buckets::of(&codes).expect("a constant table");
            assert_eq!(b.count, 1);
            assert_same(&codes, &b);
        }
    }

    /// A GELU-like table: constant, down by one at a time, up, constant at the top; at sizes
    /// that take up to the last bucket allowed, and signed codes.
    #[test]
    fn random_valleys_equal_their_tables() {
        let mut rng = Rng::new(31);
        for case in 0..300 {
            let len = 1 + rng.below(12_000);
            let top = rng.below(256) as i32 - 128;
            let (bottom, left) = (top - rng.below(256) as i32, top - rng.below(256) as i32);
            let (bottom, left) = (bottom.max(top - 255), left.max(bottom).max(top - 255));
            // Where the valley lies, and how far apart its steps are (≥ 1 entry).
            let at = rng.below(len);
            let gap = 1 + rng.below(12);
            let mut codes = vec![0; len];
            for (i, c) in codes.iter_mut().enumerate() {
                let d = i.abs_diff(at) / gap;
                *c = if i < at {
                    (bottom + d as i32).min(left)
                } else {
                    (bottom + d as i32).min(top)
                };
            }
            match Buckets::of(&codes) {
                Some(b) => {
                    assert!(b.count <= MAX_BUCKETS);
                    assert_same(&codes, &b);
                }
                None => {
                    // Only a window past the limit, or a valley in a bucket, turns one away.
                    let mut steps = (1..len).filter(|&i| codes[i] != codes[i - 1]);
                    let f = steps.next();
                    let l = steps.next_back().or(f);
                    let span = l.zip(f).map_or(0, |(l, f)| l - f + 2);
                    assert!(
                        span > (MAX_BUCKETS - 1) * ENTRIES,
                        "case {case}: span {span}"
                    );
                }
            }
        }
    }
}
