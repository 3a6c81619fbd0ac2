//! A table's [`Buckets`] read in 16 AVX-512 lanes with no load per lane: VBMI's byte permute
//! picks each lane's bucket's first code from registers, BW's word permutes its steps, and
//! VPOPCNTDQ counts the steps up to the lane's entry. About 17 instructions per 16 codes (23
//! with a second page of buckets), where a load per lane takes a store, 16 loads and 16
//! inserts: on DeiT-T's fc1 shape the look-up took about two thirds of the loads' time, and
//! the product with it 0.90× (BENCHMARKS.md, forty-fourth session). Cascade Lake has VNNI but
//! neither VBMI nor VPOPCNTDQ: [`BucketLanes::run`] says whether this CPU has them.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::exec::int::code_table::CodeTable;
use crate::exec::int::code_table::buckets::{Buckets, DOWN, ENTRIES, MAX_BUCKETS, below};

/// First codes per byte permute (two registers of 64).
const PER_PAGE: usize = 128;

/// A table's [`Buckets`] in registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct BucketLanes {
    /// The value whose entry is the window's first.
    start: __m512i,
    /// The window's last entry, counted from its first.
    top: __m512i,
    base: __m512i,
    /// The first codes less `base`, bucket `b` at byte `b`.
    first_codes: [__m512i; MAX_BUCKETS / 64],
    /// The steps, bucket `b` at word `b`.
    steps: [__m512i; MAX_BUCKETS / 32],
    /// [`below`] of entries 0 to 15.
    below: __m512i,
    /// Whether the window has more than [`PER_PAGE`] buckets (the second half of the
    /// registers is then read).
    two_pages: bool,
}

#[cfg(target_arch = "x86_64")]
impl BucketLanes {
    /// Whether this CPU runs [`BucketLanes::codes`].
    pub(super) fn run() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
    }

    /// The table's buckets in registers, when it has them and its window starts at a value
    /// inside i32.
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(table: &CodeTable) -> Option<BucketLanes> {
        let b: &Buckets = table.buckets()?;
        let start = i32::try_from(table.first().checked_add(b.start)?).ok()?;
        let load = |bytes: *const u8| {
            // SAFETY: each call below points at 64 bytes of one of the bucket arrays.
            unsafe { _mm512_loadu_si512(bytes.cast()) }
        };
        let below: [i32; ENTRIES] = std::array::from_fn(|p| i32::from(below(p)));
        Some(BucketLanes {
            start: _mm512_set1_epi32(start),
            top: _mm512_set1_epi32((b.count * ENTRIES - 1) as i32),
            base: _mm512_set1_epi32(b.base),
            first_codes: std::array::from_fn(|i| load(b.first_codes[i * 64..][..64].as_ptr())),
            // 32 steps of 16 bits to a register, in memory's order (x86 is little-endian).
            steps: std::array::from_fn(|i| load(b.steps[i * 32..][..32].as_ptr().cast())),
            // SAFETY: `below` holds 16 i32.
            below: unsafe { _mm512_loadu_si512(below.as_ptr().cast()) },
            two_pages: b.count > PER_PAGE,
        })
    }

    /// The codes of the 16 values `x` whose table entries are `x − first` (any code of the
    /// table for a value outside it).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VBMI and VPOPCNTDQ ([`BucketLanes::run`]).
    #[inline(always)]
    pub(super) unsafe fn codes(&self, x: __m512i) -> __m512i {
        // SAFETY: the features are the caller's promise; every permute reads registers only.
        unsafe {
            // The entry in the window, clamped into it: the codes are constant outside.
            let j = _mm512_sub_epi32(x, self.start);
            let j = _mm512_min_epi32(_mm512_max_epi32(j, _mm512_setzero_si512()), self.top);
            let bucket = _mm512_srli_epi32::<4>(j);
            // The low byte of each 32-bit lane, the others zeroed: the bucket's first code.
            const LOW_BYTES: u64 = 0x1111_1111_1111_1111;
            let pick_code = |i: usize| {
                _mm512_maskz_permutex2var_epi8(
                    LOW_BYTES,
                    self.first_codes[i],
                    bucket,
                    self.first_codes[i + 1],
                )
            };
            // Each lane's low word: its bucket's steps (the high word, word 0's, is cleared by
            // `below` below). A word permute reaches 64 buckets; bit 6 picks the pair.
            let pick_steps = |i: usize| {
                let low = _mm512_permutex2var_epi16(self.steps[i], bucket, self.steps[i + 1]);
                let high = _mm512_permutex2var_epi16(self.steps[i + 2], bucket, self.steps[i + 3]);
                let upper = _mm512_test_epi32_mask(bucket, _mm512_set1_epi32(64));
                _mm512_mask_blend_epi32(upper, low, high)
            };
            let (mut first, mut steps) = (pick_code(0), pick_steps(0));
            if self.two_pages {
                let second = _mm512_test_epi32_mask(bucket, _mm512_set1_epi32(PER_PAGE as i32));
                first = _mm512_mask_blend_epi32(second, first, pick_code(2));
                steps = _mm512_mask_blend_epi32(second, steps, pick_steps(4));
            }
            // `vpermd` reads the entry's low 4 bits: its place in the bucket.
            let up_to = _mm512_and_si512(steps, _mm512_permutexvar_epi32(j, self.below));
            let n = _mm512_popcnt_epi32(up_to);
            let first = _mm512_add_epi32(first, self.base);
            let down = _mm512_test_epi32_mask(steps, _mm512_set1_epi32(i32::from(DOWN)));
            _mm512_mask_sub_epi32(_mm512_add_epi32(first, n), down, first, n)
        }
    }
}

/// `values[i]` = the code of table entry `values[i] − first` where the table holds it, and
/// whether it held every one: [`codes_within`](super::requant::codes_within) read by buckets.
///
/// # Safety
/// The CPU has the features of [`BucketLanes::run`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vpopcntdq")]
pub(super) unsafe fn codes_within(
    lanes: &BucketLanes,
    table: &CodeTable,
    values: &mut [i32],
) -> bool {
    let first = _mm512_set1_epi32(table.first() as i32);
    let last = _mm512_set1_epi32((table.codes().len() - 1) as i32);
    let mut outside: __mmask16 = 0;
    for chunk in values.chunks_mut(16) {
        let mask = ((1u32 << chunk.len()) - 1) as __mmask16;
        // SAFETY: the mask touches the chunk's values only; the features are the caller's
        // promise.
        unsafe {
            let x = _mm512_maskz_loadu_epi32(mask, chunk.as_ptr());
            // Below the table the difference wraps past the last entry as well.
            let i = _mm512_sub_epi32(x, first);
            outside |= _mm512_mask_cmpgt_epu32_mask(mask, i, last);
            _mm512_mask_storeu_epi32(chunk.as_mut_ptr(), mask, lanes.codes(x));
        }
    }
    outside == 0
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::exec::int::code_table::buckets::valley;
    use crate::rng::Rng;

    /// Tables of one to two pages of buckets, windows that start before the table, tables
    /// that start anywhere in i32: the lanes give every entry's code, and flag exactly the
    /// values past the table.
    #[test]
    fn lanes_equal_the_table() {
        if !BucketLanes::run() {
            eprintln!(
                "SKIPPED: this CPU lacks AVX-512 VBMI or VPOPCNTDQ; the buckets' lanes are untested here"
            );
            return;
        }
        let mut rng = Rng::new(41);
        let mut pages = [0; 2];
        let firsts = |len: usize| {
            [
                -5_000_i64,
                0,
                123,
                i32::MIN as i64,
                i32::MAX as i64 - len as i64,
            ]
        };
        let cases = [1, 2, 15, 16, 17, 300, 2_047, 2_100, 4_000, 4_096, 9_000]
            .into_iter()
            .flat_map(|len| [1, 4, 12].map(|spacing| (len, spacing)))
            .flat_map(|(len, spacing)| firsts(len).map(|first| (len, spacing, first)));
        for (len, spacing, first) in cases {
            let table = CodeTable::from_codes(first, valley(&mut rng, len, spacing));
            // Steps one in 12 entries may leave a window too wide for buckets.
            let Some(b) = table.buckets() else {
                assert_eq!(spacing, 12);
                continue;
            };
            // SAFETY: `run` found the features.
            let Some(lanes) = (unsafe { BucketLanes::new(&table) }) else {
                // Only a window that starts outside i32.
                assert!(i32::try_from(first + b.start).is_err());
                continue;
            };
            pages[usize::from(b.count > PER_PAGE)] += 1;
            let mut values: Vec<i32> = (0..len as i64).map(|i| (first + i) as i32).collect();
            values.reverse();
            let want: Vec<i32> = values
                .iter()
                .map(|&v| table.get(v as i64).unwrap())
                .collect();
            // SAFETY: as above.
            assert!(unsafe { codes_within(&lanes, &table, &mut values) });
            assert_eq!(values, want, "{len} from {first}");
            // A value past each end, in a chunk of its own and among others.
            for past in [first - 1, first + len as i64] {
                let Ok(past) = i32::try_from(past) else {
                    continue;
                };
                for n in [1, 5, 16, 20] {
                    let mut values = vec![first as i32; n];
                    values[n / 2] = past;
                    // SAFETY: as above.
                    assert!(!unsafe { codes_within(&lanes, &table, &mut values) });
                    let held = table.codes()[0];
                    for (i, &v) in values.iter().enumerate() {
                        assert!(i == n / 2 || v == held, "{len} from {first}");
                    }
                }
            }
        }
        assert!(pages[0] > 0 && pages[1] > 0, "one page and two: {pages:?}");
    }
}
