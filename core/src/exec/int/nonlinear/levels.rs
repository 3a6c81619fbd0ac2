//! Rounding an integer to one of a few non-uniform levels (log2, log√2) by comparison with
//! precomputed thresholds — a leading-one detector and a comparator in hardware. The
//! thresholds are where the float quantizer changes its code, converted once to the integer's
//! scale, so the integer and float quantizers agree except on values within one integer step of
//! a threshold.
#![allow(unsafe_code)]

use serde::{Deserialize, Serialize};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::exec::int::kernels::{Isa, Width, width};

/// Codes for an integer `v`: `codes[i]` where `i` counts the thresholds `v` exceeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelEncoder {
    /// Ascending.
    pub thresholds: Vec<i64>,
    /// One more than the thresholds: the code of each interval, smallest real level first.
    pub codes: Vec<i32>,
}

impl LevelEncoder {
    /// From the real boundaries between consecutive levels (ascending) for an integer whose real
    /// value is `scale·v + offset`: `v` exceeds boundary `b` when `v > ⌊(b − offset)/scale⌋`.
    pub fn new(boundaries: &[f64], codes: Vec<i32>, scale: f64, offset: f64) -> Self {
        debug_assert_eq!(boundaries.len() + 1, codes.len());
        let thresholds = boundaries
            .iter()
            .map(|b| {
                let t = ((b - offset) / scale).floor();
                t.clamp(i64::MIN as f64 / 2.0, i64::MAX as f64 / 2.0) as i64
            })
            .collect();
        Self { thresholds, codes }
    }

    /// The thresholds of a non-decreasing step function `code(v)` over `lo..=hi`, found by
    /// bisection between its changes: an exact table of any monotone encoder (a uniform
    /// requantization included) on a bounded input, searched with one comparison per level.
    pub fn from_monotone(code: impl Fn(i64) -> i32, lo: i64, hi: i64) -> Self {
        let mut thresholds = Vec::new();
        let mut codes = vec![code(lo)];
        let mut from = lo;
        let last = code(hi);
        while codes[codes.len() - 1] != last {
            let current = codes[codes.len() - 1];
            // code(a) == current, code(b) != current.
            let (mut a, mut b) = (from, hi);
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                if code(mid) == current {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            thresholds.push(a);
            codes.push(code(b));
            from = b;
        }
        Self { thresholds, codes }
    }

    #[inline]
    pub fn encode(&self, v: i64) -> i32 {
        self.codes[self.thresholds.partition_point(|&t| v > t)]
    }
}

/// A [`LevelEncoder`] indexed by bit length, for many non-negative inputs (probabilities): an
/// input's leading-zero count gives the few thresholds of its binade, searched alone.
#[derive(Debug, Clone)]
pub struct BinadeLookup<'a> {
    encoder: &'a LevelEncoder,
    /// `first[b]`: how many thresholds lie below the smallest input of bit length `b` (0 for
    /// `b = 0`, else `2^(b−1)`); `first[b + 1]` bounds the ones it must compare with.
    first: [usize; 65],
    /// For inputs in i32, when no binade holds more than two thresholds (a log encoder's
    /// do not).
    table: Option<Box<BinadeTable>>,
}

/// Each i32 binade's (at most) two thresholds and three codes, as columns indexed by bit
/// length: a table lanes look up with one permute or gather per column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BinadeTable {
    /// The binade's first and second thresholds; absent ones `i32::MAX`, which no input
    /// exceeds.
    thresholds: [[i32; 32]; 2],
    /// The code of an input of the binade exceeding 0, 1 or 2 of them (unreachable entries 0).
    codes: [[i32; 32]; 3],
    /// The same codes as steps of one, where they have that form.
    steps: Option<Steps>,
}

/// A [`BinadeTable`] whose codes move by one, in the same direction, at each threshold an
/// input can exceed (a log encoder's levels, in order): an input's code is its binade's first
/// plus or minus the thresholds it exceeds, so that lanes look up one column of codes rather
/// than three. A threshold where the code moves by two (two levels closer than one integer
/// apart, as log√2 levels of probabilities at 2^−24 are at 2 and 3) is held twice; one that no
/// input of its binade exceeds (at the binade's largest value or past it) is left out.
///
/// DeiT-T's Softmax codes have this form. The whole model, with it against without (in-process
/// alternation, Zen 4): `QVIT_ISA=avx2` one thread 0.981 / 0.978 (batch 1 / 8), two threads
/// 0.993 / 0.999; AVX-512 1.000 / 0.994 (two threads), where a column is one permute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Steps {
    /// Each binade's first and second step; absent ones `i32::MAX`.
    thresholds: [[i32; 32]; 2],
    /// The code of an input of the binade exceeding none of them.
    first: [i32; 32],
    /// Whether the codes step up (else down).
    up: bool,
}

impl Steps {
    /// The steps of the binades' thresholds and codes (`held[b]` thresholds in binade `b`),
    /// where they have that form.
    fn of(thresholds: &[[i32; 32]; 2], codes: &[[i32; 32]; 3], held: &[usize; 32]) -> Option<Self> {
        let mut steps = Steps {
            thresholds: [[i32::MAX; 32]; 2],
            first: codes[0],
            up: true,
        };
        let mut direction = None;
        for b in 0..32 {
            // The binade's largest input: `2^b − 1` (0 for b = 0).
            let largest = ((1u64 << b) - 1) as i32;
            // The binade's steps so far.
            let mut count = 0;
            for k in 0..held[b] {
                let t = thresholds[k][b];
                if t >= largest {
                    break;
                }
                let change = codes[k + 1][b].checked_sub(codes[k][b])?;
                let up = change > 0;
                if change != 0 && *direction.get_or_insert(up) != up {
                    return None;
                }
                for _ in 0..change.unsigned_abs() {
                    // A third step in one binade: not this form.
                    *steps.thresholds.get_mut(count)?.get_mut(b)? = t;
                    count += 1;
                }
            }
        }
        steps.up = direction.unwrap_or(true);
        Some(steps)
    }
}

impl BinadeTable {
    /// The code of a non-negative `v` of bit length `b` (`b < 32`): where the lanes' selects
    /// come from, one element at a time.
    #[inline(always)]
    fn code(&self, b: usize, v: i32) -> i32 {
        let above = usize::from(v > self.thresholds[0][b]) + usize::from(v > self.thresholds[1][b]);
        self.codes[above][b]
    }
}

impl LevelEncoder {
    pub fn binade_lookup(&self) -> BinadeLookup<'_> {
        // One walk up the (ascending) thresholds, where 65 binary searches had been most of
        // the look-up's cost: made once per head and image in B1's linear attention, the
        // look-up went from 7.2 % of its samples to 4.8 % (`perf`), the rest its table.
        let t = &self.thresholds;
        let mut first = [t.len(); 65];
        let mut below = 0;
        for (b, f) in first.iter_mut().enumerate().take(64) {
            let least = if b == 0 { 0 } else { 1i64 << (b - 1) };
            while below < t.len() && t[below] < least {
                below += 1;
            }
            *f = below;
        }
        BinadeLookup {
            encoder: self,
            first,
            table: self.binade_table(&first).map(Box::new),
        }
    }

    /// The [`BinadeTable`] of these thresholds, if no i32 binade holds more than two.
    fn binade_table(&self, first: &[usize; 65]) -> Option<BinadeTable> {
        let mut table = BinadeTable {
            thresholds: [[i32::MAX; 32]; 2],
            codes: [[0; 32]; 3],
            steps: None,
        };
        let mut held = [0; 32];
        for b in 0..32 {
            // Binade `b` of an i32 input holds thresholds `first[b]..first[b + 1]`, all below
            // 2^b, so they fit in i32; the codes after them exist (one more code than
            // thresholds).
            let inside = &self.thresholds[first[b]..first[b + 1]];
            if inside.len() > 2 {
                return None;
            }
            for (k, &t) in inside.iter().enumerate() {
                table.thresholds[k][b] = t.try_into().ok()?;
            }
            for k in 0..=inside.len() {
                table.codes[k][b] = self.codes[first[b] + k];
            }
            held[b] = inside.len();
        }
        table.steps = Steps::of(&table.thresholds, &table.codes, &held);
        Some(table)
    }
}

impl BinadeLookup<'_> {
    /// [`LevelEncoder::encode`], exactly.
    #[inline]
    pub fn encode(&self, v: i64) -> i32 {
        if v < 0 {
            return self.encoder.encode(v);
        }
        let b = (64 - v.leading_zeros()) as usize;
        // Every threshold below the binade's smallest input is exceeded; the rest of those
        // below the next binade are compared.
        let (lo, hi) = (self.first[b], self.first[(b + 1).min(64)]);
        // A log encoder's binade holds a threshold or two: counting them costs less than a
        // search; a uniform encoder's top binades hold many, which are searched.
        let candidates = &self.encoder.thresholds[lo..hi];
        let inside = if candidates.len() <= 8 {
            candidates.iter().filter(|&&t| v > t).count()
        } else {
            candidates.partition_point(|&t| v > t)
        };
        self.encoder.codes[lo + inside]
    }

    /// `out[i] = encode(p[i])` for many inputs: in lanes (a bit length, then the binade's
    /// thresholds and codes looked up by it) where every binade holds at most two thresholds
    /// and every input is non-negative (probabilities); else one by one.
    pub fn encode_all(&self, isa: Isa, p: &[i32], out: &mut [i32]) {
        assert_eq!(p.len(), out.len(), "as many codes as inputs");
        let table = match &self.table {
            // An OR over the inputs (which vectorises) has the sign bit of any negative one.
            Some(table) if p.iter().fold(0, |a, &v| a | v) >= 0 => table,
            _ => {
                return out
                    .iter_mut()
                    .zip(p)
                    .for_each(|(o, &v)| *o = self.encode(v as i64));
            }
        };
        match width(isa) {
            // SAFETY (both): `width` found the features the function is compiled for.
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 if std::arch::is_x86_feature_detected!("avx512cd") => unsafe {
                encode_avx512(table, p, out)
            },
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 | Width::Avx2 => unsafe { encode_avx2(table, p, out) },
            _ => encode_portable(table, p, out),
        }
    }
}

/// The bit length of a non-negative i32, `32 − leading zeros` (0 for 0).
#[inline(always)]
fn bit_length(v: i32) -> usize {
    (32 - v.leading_zeros()) as usize
}

fn encode_portable(table: &BinadeTable, p: &[i32], out: &mut [i32]) {
    for (o, &v) in out.iter_mut().zip(p) {
        *o = table.code(bit_length(v) & 31, v);
    }
}

/// Bit lengths of non-negative lanes from their f32 conversion: the biased exponent `e` of
/// `f32(v)` gives `e − 126` for `v > 0` (0 for `v = 0`, where `e = 0`), except where rounding to
/// 24 bits carried `v` up to the next power of two — then `v < 2^(b−1)`, and `b` is one less.
/// Capped at 31 first (a carry to 2^31 lands there, and `2^30` stays positive).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn bit_lengths_avx2(v: __m256i) -> __m256i {
    // SAFETY (every intrinsic below): the caller is compiled with AVX2.
    unsafe {
        let e = _mm256_srli_epi32::<23>(_mm256_castps_si256(_mm256_cvtepi32_ps(v)));
        let b = _mm256_min_epi32(
            _mm256_max_epi32(
                _mm256_sub_epi32(e, _mm256_set1_epi32(126)),
                _mm256_setzero_si256(),
            ),
            _mm256_set1_epi32(31),
        );
        // `1 << (b − 1)`: 0 for b = 0 (a shift by 2^32 − 1 clears the lane).
        let low = _mm256_sllv_epi32(
            _mm256_set1_epi32(1),
            _mm256_sub_epi32(b, _mm256_set1_epi32(1)),
        );
        // The compare's all-ones mask is −1: one less where `v < 2^(b−1)`.
        _mm256_add_epi32(b, _mm256_cmpgt_epi32(low, v))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn encode_avx2(table: &BinadeTable, p: &[i32], out: &mut [i32]) {
    let lanes = Binades256::new(table);
    let (whole, tail) = (p.len() / 8 * 8, p.len() % 8);
    for (src, dst) in p[..whole]
        .chunks_exact(8)
        .zip(out[..whole].chunks_exact_mut(8))
    {
        // SAFETY: `src` and `dst` hold 8 i32.
        let v = unsafe { _mm256_loadu_si256(src.as_ptr().cast()) };
        // SAFETY: as above.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), lanes.code(v)) };
    }
    encode_portable(table, &p[whole..], &mut out[whole..][..tail]);
}

/// A [`BinadeTable`] in 256-bit registers for 8 AVX2 lanes: each column of 32 as four
/// registers of 8, looked up by `vpermd` (which reads the low three bits of the bit length)
/// and picked between by its bits 3 and 4. Twenty permutes and fifteen blends per 8 lanes
/// (twelve and nine with [`Steps`]) rather than five `vpgatherdd`: on AMD Zen 4 DeiT-T's
/// Softmax steps took 0.78× the gathers' time and the whole model ran 1.07× faster with
/// `QVIT_ISA=avx2`, where an Intel Xeon (Emerald Rapids, whose gathers are quicker) had run
/// 0.98× (BENCHMARKS.md); the machines with AVX2 alone that qvit meets are AMD EPYCs.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Binades256 {
    thresholds: [[__m256i; 4]; 2],
    /// The codes past 0, 1 and 2 thresholds; with [`Steps`], the first code alone.
    codes: [[__m256i; 4]; 3],
    /// With [`Steps`], whether the codes step up.
    up: Option<bool>,
}

#[cfg(target_arch = "x86_64")]
impl Binades256 {
    #[target_feature(enable = "avx2")]
    fn new(table: &BinadeTable) -> Self {
        let load = |c: &[i32; 32]| {
            // SAFETY: `c` holds 32 i32, four vectors of 8.
            [0, 8, 16, 24].map(|i| unsafe { _mm256_loadu_si256(c[i..].as_ptr().cast()) })
        };
        match &table.steps {
            Some(steps) => Self {
                thresholds: steps.thresholds.each_ref().map(load),
                codes: [
                    load(&steps.first),
                    [_mm256_setzero_si256(); 4],
                    [_mm256_setzero_si256(); 4],
                ],
                up: Some(steps.up),
            },
            None => Self {
                thresholds: table.thresholds.each_ref().map(load),
                codes: table.codes.each_ref().map(load),
                up: None,
            },
        }
    }

    /// The codes of 8 non-negative lanes, each by its bit length. Inlined: called from the
    /// Softmax rows' loop (`softmax_codes`), it had been a call per 8 lanes that loaded the
    /// table's twenty registers again each time.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn code(&self, v: __m256i) -> __m256i {
        let b = bit_lengths_avx2(v);
        // Bits 3 and 4 of the bit length moved to the lanes' sign bits, which `vblendvps`
        // reads.
        let bit3 = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(b));
        let bit4 = _mm256_castsi256_ps(_mm256_slli_epi32::<27>(b));
        let look = |[c0, c1, c2, c3]: [__m256i; 4]| {
            let pick = |x: __m256i, y: __m256i, bit: __m256| {
                _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(x),
                    _mm256_castsi256_ps(y),
                    bit,
                ))
            };
            let low = pick(
                _mm256_permutevar8x32_epi32(c0, b),
                _mm256_permutevar8x32_epi32(c1, b),
                bit3,
            );
            let high = pick(
                _mm256_permutevar8x32_epi32(c2, b),
                _mm256_permutevar8x32_epi32(c3, b),
                bit3,
            );
            pick(low, high, bit4)
        };
        let [t0, t1] = self.thresholds;
        let [c0, c1, c2] = self.codes;
        let over0 = _mm256_cmpgt_epi32(v, look(t0));
        let over1 = _mm256_cmpgt_epi32(v, look(t1));
        if let Some(up) = self.up {
            // A compare's lanes that hold are −1.
            let first = look(c0);
            return match up {
                true => _mm256_sub_epi32(_mm256_sub_epi32(first, over0), over1),
                false => _mm256_add_epi32(_mm256_add_epi32(first, over0), over1),
            };
        }
        _mm256_blendv_epi8(
            _mm256_blendv_epi8(look(c0), look(c1), over0),
            look(c2),
            over1,
        )
    }
}

/// [`encode_avx2`] 16 lanes at a time, each bit length `32 − lzcnt` (AVX-512 CD, which every
/// CPU with AVX-512 BW has but the checks of [`Width::Avx512`] do not name): the f32 route of
/// [`bit_lengths_avx2`] on two halves had been about half of the loop's instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512cd")]
fn encode_avx512(table: &BinadeTable, p: &[i32], out: &mut [i32]) {
    let lanes = Binades512::new(table);
    let (whole, tail) = (p.len() / 16 * 16, p.len() % 16);
    for (src, dst) in p[..whole]
        .chunks_exact(16)
        .zip(out[..whole].chunks_exact_mut(16))
    {
        // SAFETY: `src` and `dst` hold 16 i32.
        let v = unsafe { _mm512_loadu_si512(src.as_ptr().cast()) };
        // SAFETY: as above.
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), lanes.code(v)) };
    }
    encode_portable(table, &p[whole..], &mut out[whole..][..tail]);
}

/// A [`BinadeTable`] in 512-bit registers: each column of 32 as two, looked up by `vpermt2d`
/// (the bit length's fifth bit picks the register).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Binades512 {
    thresholds: [(__m512i, __m512i); 2],
    /// The codes past 0, 1 and 2 thresholds; with [`Steps`], the first code alone.
    codes: [(__m512i, __m512i); 3],
    /// With [`Steps`], the step: 1 or −1.
    step: Option<__m512i>,
}

#[cfg(target_arch = "x86_64")]
impl Binades512 {
    #[target_feature(enable = "avx512f")]
    fn new(table: &BinadeTable) -> Self {
        let load = |c: &[i32; 32]| {
            // SAFETY: `c` holds 32 i32.
            unsafe {
                (
                    _mm512_loadu_si512(c.as_ptr().cast()),
                    _mm512_loadu_si512(c[16..].as_ptr().cast()),
                )
            }
        };
        match &table.steps {
            Some(steps) => {
                let zero = (_mm512_setzero_si512(), _mm512_setzero_si512());
                Self {
                    thresholds: steps.thresholds.each_ref().map(load),
                    codes: [load(&steps.first), zero, zero],
                    step: Some(_mm512_set1_epi32(if steps.up { 1 } else { -1 })),
                }
            }
            None => Self {
                thresholds: table.thresholds.each_ref().map(load),
                codes: table.codes.each_ref().map(load),
                step: None,
            },
        }
    }

    /// The codes of 16 non-negative lanes, each by its bit length `32 − lzcnt` (AVX-512 CD).
    #[target_feature(enable = "avx512f,avx512cd")]
    pub(crate) fn code(&self, v: __m512i) -> __m512i {
        let look = |(lo, hi): (__m512i, __m512i), b: __m512i| _mm512_permutex2var_epi32(lo, b, hi);
        // Non-negative lanes: 0 to 31.
        let b = _mm512_sub_epi32(_mm512_set1_epi32(32), _mm512_lzcnt_epi32(v));
        let [t0, t1] = self.thresholds;
        let [c0, c1, c2] = self.codes;
        let over0 = _mm512_cmpgt_epi32_mask(v, look(t0, b));
        let over1 = _mm512_cmpgt_epi32_mask(v, look(t1, b));
        if let Some(step) = self.step {
            let first = look(c0, b);
            let once = _mm512_mask_add_epi32(first, over0, first, step);
            return _mm512_mask_add_epi32(once, over1, once, step);
        }
        _mm512_mask_blend_epi32(
            over1,
            _mm512_mask_blend_epi32(over0, look(c0, b), look(c1, b)),
            look(c2, b),
        )
    }
}

impl BinadeLookup<'_> {
    /// Whether the thresholds have a [`BinadeTable`] (no i32 binade holds more than two).
    pub(crate) fn has_table(&self) -> bool {
        self.table.is_some()
    }

    /// The table in registers, for a kernel that encodes probabilities it has just computed
    /// (always non-negative); `None` where the thresholds have no [`BinadeTable`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn lanes512(&self) -> Option<Binades512> {
        self.table.as_deref().map(|t| Binades512::new(t))
    }

    /// The table for 8 AVX2 lanes, as [`BinadeLookup::lanes512`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub(crate) fn lanes256(&self) -> Option<Binades256> {
        self.table.as_deref().map(|t| Binades256::new(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binade_lookup_equals_the_search() {
        // log√2 levels of probabilities at 2^−24 (thresholds near 2^(24 − k/2)), a uniform
        // table with many thresholds per binade, and thresholds at powers of two and below 0.
        let sqrt2: Vec<f64> = (1..40)
            .rev()
            .map(|k| 2f64.powf(-(k as f64 - 0.5) / 2.0))
            .collect();
        let codes: Vec<i32> = (0..=sqrt2.len() as i32).rev().collect();
        let encoders = [
            LevelEncoder::new(&sqrt2, codes, 1.0 / (1 << 24) as f64, 0.0),
            LevelEncoder::from_monotone(|v| ((v + 5) / 10).clamp(0, 255) as i32, 0, 3000),
            LevelEncoder {
                thresholds: vec![-5, 0, 1, 2, 3, 4, 7, 8, 1 << 40],
                codes: (0..10).collect(),
            },
            // Thresholds just below powers of two, where an f32 bit length is one too large.
            LevelEncoder {
                thresholds: vec![(1 << 26) - 1, (1 << 30) - 1, i32::MAX as i64],
                codes: vec![5, 6, 7, 8],
            },
            // Codes that move by two at a threshold (held twice as steps), and past the
            // binades' largest values (1 in binade 1, 7 in binade 3), by any amount.
            LevelEncoder {
                thresholds: vec![0, 1, 2, 5, 7, 9, 12],
                codes: vec![40, 7, 6, 4, 3, 90, 89, 88],
            },
            // Steps of three, and steps both ways: no steps form.
            LevelEncoder {
                thresholds: vec![2, 9, 12],
                codes: vec![9, 6, 5, 4],
            },
            LevelEncoder {
                thresholds: vec![2, 9, 12],
                codes: vec![9, 8, 9, 10],
            },
            // Codes whose step leaves i32.
            LevelEncoder {
                thresholds: vec![2, 9],
                codes: vec![i32::MIN, i32::MAX, 0],
            },
        ];
        // The log and hand-made tables take the branch-free path; the uniform one cannot. Of
        // those, all but the last three have steps of one.
        let forms: Vec<(bool, bool)> = encoders
            .iter()
            .map(|e| {
                let table = e.binade_lookup().table;
                (table.is_some(), table.is_some_and(|t| t.steps.is_some()))
            })
            .collect();
        let (tables, steps): (Vec<bool>, Vec<bool>) = forms.into_iter().unzip();
        assert_eq!(tables, [true, false, true, true, true, true, true, true]);
        assert_eq!(steps, [true, false, true, true, true, false, false, false]);
        for enc in &encoders {
            let lookup = enc.binade_lookup();
            let mut probes: Vec<i64> = (-20..5000).collect();
            probes.extend(enc.thresholds.iter().flat_map(|&t| [t - 1, t, t + 1]));
            probes.extend((0..63).map(|b| 1i64 << b).chain([i64::MAX, i64::MIN]));
            // Either side of every power of two: the lanes' bit lengths come from an f32
            // conversion, which carries `2^b − 1` up to `2^b` from b = 25 on.
            probes.extend((1..63).flat_map(|b| [(1i64 << b) - 1, (1i64 << b) + 1]));
            for &v in &probes {
                assert_eq!(lookup.encode(v), enc.encode(v), "v = {v}");
            }
            // Many at once (in i32): every ISA, with and without a negative input.
            let mut many: Vec<i32> = probes.iter().filter_map(|&v| v.try_into().ok()).collect();
            for negative in [false, true] {
                if !negative {
                    many.retain(|&v| v >= 0);
                }
                let want: Vec<i32> = many.iter().map(|&v| enc.encode(v as i64)).collect();
                for isa in Isa::available() {
                    let mut got = vec![-1; many.len()];
                    lookup.encode_all(isa, &many, &mut got);
                    assert_eq!(got, want, "{}", isa.name());
                }
                many.push(-3);
            }
        }
    }

    #[test]
    fn log2_divisor_by_hand() {
        // Levels 1, 2, 4 (codes 2, 1, 0 of a log2 quantizer with Δ = 4); geometric midpoints
        // √2 and 2√2. Integer at scale 0.5: thresholds ⌊2.83⌋ = 2 and ⌊5.66⌋ = 5.
        let b = [2f64.sqrt(), 8f64.sqrt()];
        let enc = LevelEncoder::new(&b, vec![2, 1, 0], 0.5, 0.0);
        assert_eq!(enc.thresholds, [2, 5]);
        let codes: Vec<i32> = (0..8).map(|v| enc.encode(v)).collect();
        // real 0, 0.5, 1, 1.5 → level 1 (code 2); 2, 2.5 → level 2; 3, 3.5 → level 4.
        assert_eq!(codes, [2, 2, 2, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn a_monotone_function_becomes_its_thresholds() {
        // Rounding v/10 half up, clamped to 0..=3, over 0..=100.
        let f = |v: i64| ((v + 5) / 10).min(3) as i32;
        let enc = LevelEncoder::from_monotone(f, 0, 100);
        assert_eq!(enc.thresholds, [4, 14, 24]);
        assert_eq!(enc.codes, [0, 1, 2, 3]);
        assert!((0..=100).all(|v| enc.encode(v) == f(v)));
        let flat = LevelEncoder::from_monotone(|_| 7, 0, 100);
        assert!(flat.thresholds.is_empty() && flat.encode(50) == 7);
    }
}
