//! The residual add's lanes: `clamp((a·m_a + b·m_b + c) >> k)` per element, with the
//! zero-points and the rounding half folded into `c` once per channel, so an element costs two
//! 32 × 32 → 64-bit multiplies (`vpmuldq`), two adds, a shift and a clamp. With AVX-512 the
//! lanes are written out ([`avx512`]): 16 codes to a register, the even lanes' and the odd
//! ones' 64-bit sums apart, put back together by a blend. The compiler's vectorisation of the
//! portable body had widened 8 codes at a time and narrowed them by `vpmovqd` stores (half of
//! the loop's samples on Zen 4, `perf annotate`). The portable body is also compiled for AVX2;
//! the same integers on every path.
#![allow(unsafe_code)]

use super::Isa;
use super::add_pairs::{self, PairBlock, Pairs};

/// One channel's constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddLane {
    pub m_a: i32,
    pub m_b: i32,
    pub c: i64,
    pub k: u32,
    /// The same sums in 16-bit pairs, when the input codes and the constants allow
    /// ([`Pairs`]): what the lanes run then.
    pub pairs: Option<Pairs>,
}

impl AddLane {
    /// The lane form of `((a − z_a)·m_a + (b − z_b)·m_b + addend + 2^(k−1)) >> k`, when every
    /// sum of codes below 2^16 in magnitude stays inside i64 (`|c| < 2^61`); `None` otherwise.
    /// `codes`: the largest magnitude of an input code (both inputs), for the pair form.
    pub fn new(
        (z_a, z_b): (i32, i32),
        m_a: i64,
        m_b: i64,
        addend: i64,
        k: u8,
        codes: u32,
    ) -> Option<AddLane> {
        let half = if k == 0 { 0 } else { 1i64 << (k - 1) };
        let c = addend
            .checked_sub((z_a as i64).checked_mul(m_a)?)?
            .checked_sub((z_b as i64).checked_mul(m_b)?)?
            .checked_add(half)?;
        let mut lane = (c.abs() < 1 << 61 && k < 64).then_some(AddLane {
            m_a: i32::try_from(m_a).ok()?,
            m_b: i32::try_from(m_b).ok()?,
            c,
            k: k as u32,
            pairs: None,
        })?;
        lane.pairs = Pairs::new(&lane, codes);
        Some(lane)
    }

    #[inline(always)]
    fn apply(&self, a: i32, b: i32, (qmin, qmax): (i64, i64)) -> i32 {
        let p = a as i64 * self.m_a as i64 + b as i64 * self.m_b as i64 + self.c;
        (p >> self.k).clamp(qmin, qmax) as i32
    }
}

/// One channel's run: `out[i] = lane(a[i], b[i])`.
pub fn add_run(isa: Isa, lane: &AddLane, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    by_width!(
        isa,
        run_avx512,
        run_avx2,
        run_portable,
        (lane, range, a, b, out)
    )
}

/// Per-channel constants in separate arrays (channels-last rows vectorise over channels).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddLanes {
    pub m_a: Vec<i32>,
    pub m_b: Vec<i32>,
    pub c: Vec<i64>,
    pub k: Vec<u64>,
    /// The same constants by blocks of 16 channels, as the AVX-512 lanes take them.
    blocks: Vec<Block>,
    /// The pair forms by blocks of 16 channels, when every channel has one (empty otherwise).
    pair_blocks: Vec<PairBlock>,
}

impl FromIterator<AddLane> for AddLanes {
    fn from_iter<I: IntoIterator<Item = AddLane>>(lanes: I) -> Self {
        let lanes: Vec<AddLane> = lanes.into_iter().collect();
        AddLanes {
            m_a: lanes.iter().map(|l| l.m_a).collect(),
            m_b: lanes.iter().map(|l| l.m_b).collect(),
            c: lanes.iter().map(|l| l.c).collect(),
            k: lanes.iter().map(|l| l.k as u64).collect(),
            blocks: lanes.chunks(BLOCK).map(Block::new).collect(),
            pair_blocks: match lanes
                .iter()
                .map(|l| l.pairs)
                .collect::<Option<Vec<Pairs>>>()
            {
                Some(pairs) => pairs.chunks(BLOCK).map(PairBlock::new).collect(),
                None => Vec::new(),
            },
        }
    }
}

impl AddLanes {
    /// Channel `c`'s pair form (`pair_blocks` is not empty).
    fn pairs(&self, c: usize) -> Pairs {
        let b = &self.pair_blocks[c / BLOCK];
        b.lane(c % BLOCK)
    }
}

/// Channels per block: one AVX-512 register of i32 codes.
const BLOCK: usize = 16;

/// The constants of up to 16 neighbouring channels (the rest 0) as the lanes read them: the
/// multipliers as i32 lanes, and the addends and shifts of the even channels and of the odd
/// ones apart, as the 64-bit lanes of their sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Block {
    m_a: [i32; BLOCK],
    m_b: [i32; BLOCK],
    c: [[i64; BLOCK / 2]; 2],
    k: [[u64; BLOCK / 2]; 2],
}

impl Block {
    fn new(lanes: &[AddLane]) -> Block {
        let mut block = Block::default();
        for (i, lane) in lanes.iter().take(BLOCK).enumerate() {
            block.m_a[i] = lane.m_a;
            block.m_b[i] = lane.m_b;
            block.c[i % 2][i / 2] = lane.c;
            block.k[i % 2][i / 2] = lane.k as u64;
        }
        block
    }
}

/// Channels-last rows of `lanes`' channels: `out[i]` = channel `i mod C`'s lane of `a[i]`,
/// `b[i]`.
pub fn add_rows(
    isa: Isa,
    lanes: &AddLanes,
    range: (i64, i64),
    a: &[i32],
    b: &[i32],
    out: &mut [i32],
) {
    by_width!(
        isa,
        rows_avx512,
        rows_avx2,
        rows_portable,
        (lanes, range, a, b, out)
    )
}

#[inline(always)]
fn run_portable(lane: &AddLane, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = lane.apply(x, y, range);
    }
}

#[inline(always)]
fn rows_portable(lanes: &AddLanes, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    let n = lanes.c.len();
    if n == 0 {
        return;
    }
    let (qmin, qmax) = range;
    let (m_a, m_b) = (&lanes.m_a[..n], &lanes.m_b[..n]);
    let (cs, ks) = (&lanes.c[..n], &lanes.k[..n]);
    for ((o, x), y) in out.chunks_mut(n).zip(a.chunks(n)).zip(b.chunks(n)) {
        for i in 0..o.len().min(x.len()).min(y.len()) {
            let p = x[i] as i64 * m_a[i] as i64 + y[i] as i64 * m_b[i] as i64 + cs[i];
            o[i] = (p >> ks[i]).clamp(qmin, qmax) as i32;
        }
    }
}

/// The output's clamp as the pair form's lanes take it, when it lies inside i32.
fn range32((qmin, qmax): (i64, i64)) -> Option<(i32, i32)> {
    Some((i32::try_from(qmin).ok()?, i32::try_from(qmax).ok()?))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(lane: &AddLane, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    let (Some(pairs), Some(range)) = (lane.pairs, range32(range)) else {
        return run_portable(lane, range, a, b, out);
    };
    let n = out.len().min(a.len()).min(b.len());
    let block = PairBlock::of_one(&pairs);
    let whole = n / 8 * 8;
    for at in (0..whole).step_by(8) {
        // SAFETY: AVX2 is this function's; lanes `at..at + 8` lie inside all three slices.
        unsafe { add_pairs::apply256(&block, range, (a, b, out), at, 0) };
    }
    for i in whole..n {
        out[i] = pairs.apply(a[i], b[i], range);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn run_avx512(lane: &AddLane, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    let n = out.len().min(a.len()).min(b.len());
    if let (Some(pairs), Some(range)) = (lane.pairs, range32(range)) {
        let block = PairBlock::of_one(&pairs);
        for at in (0..n).step_by(BLOCK) {
            // SAFETY: AVX-512 F and BW are this function's; lanes `at..min(at + 16, n)`, inside
            // all three slices.
            unsafe { add_pairs::apply512(&block, range, (a, b, out), at, (n - at).min(BLOCK)) };
        }
        return;
    }
    let block = avx512::Lanes::new(&Block::new(&[*lane; BLOCK]));
    for i in (0..n).step_by(BLOCK) {
        // SAFETY: lanes `i..min(i + 16, n)`, inside all three slices.
        unsafe { avx512::apply(&block, range, (a, b, out), i, (n - i).min(BLOCK)) };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2(lanes: &AddLanes, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    let channels = lanes.c.len();
    let pairs = range32(range).filter(|_| !lanes.pair_blocks.is_empty() && channels > 0);
    let Some(range) = pairs else {
        return rows_portable(lanes, range, a, b, out);
    };
    let n = out.len().min(a.len()).min(b.len());
    for row in (0..n).step_by(channels) {
        // The last row may stop short of the channels, as the portable rows do.
        let len = (n - row).min(channels);
        let whole = len / 8 * 8;
        for first in (0..whole).step_by(8) {
            let block = &lanes.pair_blocks[first / BLOCK];
            // SAFETY: AVX2 is this function's; lanes `row + first ..` plus 8, inside the row
            // and so inside all three slices.
            unsafe {
                add_pairs::apply256(block, range, (a, b, out), row + first, (first % BLOCK) / 8)
            };
        }
        for c in whole..len {
            let pairs = lanes.pairs(c);
            out[row + c] = pairs.apply(a[row + c], b[row + c], range);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn rows_avx512(lanes: &AddLanes, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    let (channels, n) = (lanes.c.len(), out.len().min(a.len()).min(b.len()));
    if channels == 0 {
        return;
    }
    assert_eq!(
        lanes.blocks.len(),
        channels.div_ceil(BLOCK),
        "built by `from_iter`"
    );
    let pairs = range32(range).filter(|_| !lanes.pair_blocks.is_empty());
    for row in (0..n).step_by(channels) {
        // The last row may stop short of the channels, as the portable rows do.
        let len = (n - row).min(channels);
        for (j, block) in lanes.blocks.iter().enumerate() {
            let first = j * BLOCK;
            if first >= len {
                break;
            }
            let lanes_len = (len - first).min(BLOCK);
            if let Some(range) = pairs {
                let block = &lanes.pair_blocks[j];
                // SAFETY: AVX-512 F and BW are this function's; lanes `row + first ..` up to
                // the row's end, inside all three slices.
                unsafe { add_pairs::apply512(block, range, (a, b, out), row + first, lanes_len) };
                continue;
            }
            let block = avx512::Lanes::new(block);
            // SAFETY: lanes `row + first ..` up to the row's end, inside all three slices.
            unsafe { avx512::apply(&block, range, (a, b, out), row + first, lanes_len) };
        }
    }
}

/// 16 channels' sums in AVX-512 lanes.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Block;

    /// A [`Block`] in registers.
    pub(super) struct Lanes {
        m_a: __m512i,
        m_b: __m512i,
        c: [__m512i; 2],
        k: [__m512i; 2],
    }

    impl Lanes {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw")]
        pub(super) fn new(b: &Block) -> Lanes {
            // SAFETY: each array holds a whole register (16 i32, or 8 i64 or u64).
            unsafe {
                let load = |p: *const u8| _mm512_loadu_si512(p.cast());
                Lanes {
                    m_a: load(b.m_a.as_ptr().cast()),
                    m_b: load(b.m_b.as_ptr().cast()),
                    c: [load(b.c[0].as_ptr().cast()), load(b.c[1].as_ptr().cast())],
                    k: [load(b.k[0].as_ptr().cast()), load(b.k[1].as_ptr().cast())],
                }
            }
        }
    }

    /// `out[at..at + len] = clamp((a·m_a + b·m_b + c) >> k)` of the same elements of `a` and
    /// `b`, element `at + i` by lane `i` of `l`, as [`AddLane::apply`](super::AddLane) does:
    /// `vpmuldq` forms the even lanes' 64-bit products and, of the registers shifted down 32
    /// bits, the odd lanes'; each half is summed, shifted and clamped in its 64-bit lanes,
    /// and the low halves are blended back into i32 lanes (the codes' `as i32`).
    ///
    /// # Safety
    /// `1 ≤ len ≤ 16` and `at + len` is within all three slices.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn apply(
        l: &Lanes,
        (qmin, qmax): (i64, i64),
        (a, b, out): (&[i32], &[i32], &mut [i32]),
        at: usize,
        len: usize,
    ) {
        debug_assert!((1..=16).contains(&len) && at + len <= a.len().min(b.len()).min(out.len()));
        let mask = ((1u32 << len) - 1) as __mmask16;
        // SAFETY: the caller's promises; the masked accesses touch lanes `0..len` only.
        unsafe {
            let va = _mm512_maskz_loadu_epi32(mask, a.as_ptr().add(at));
            let vb = _mm512_maskz_loadu_epi32(mask, b.as_ptr().add(at));
            let high = |v| _mm512_srli_epi64::<32>(v);
            let (lo, hi) = (_mm512_set1_epi64(qmin), _mm512_set1_epi64(qmax));
            let finish = |p, c, k| {
                let shifted = _mm512_srav_epi64(_mm512_add_epi64(p, c), k);
                _mm512_min_epi64(_mm512_max_epi64(shifted, lo), hi)
            };
            let even = _mm512_add_epi64(_mm512_mul_epi32(va, l.m_a), _mm512_mul_epi32(vb, l.m_b));
            let odd = _mm512_add_epi64(
                _mm512_mul_epi32(high(va), high(l.m_a)),
                _mm512_mul_epi32(high(vb), high(l.m_b)),
            );
            let (even, odd) = (finish(even, l.c[0], l.k[0]), finish(odd, l.c[1], l.k[1]));
            let codes = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64::<32>(odd));
            _mm512_mask_storeu_epi32(out.as_mut_ptr().add(at), mask, codes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The pair form against the 64-bit definition: constants a compiler gives (multipliers
    /// up to ±2^31, shifts 16–47, addends from a code's zero points) and the bounds of the
    /// form (codes at their largest magnitude, 8 and 15 bits), on runs and rows of lengths
    /// around whole registers; every ISA gives [`AddLane::apply`]'s codes, and writes nothing
    /// past them.
    #[test]
    fn pairs_equal_the_lane_definition() {
        let mut rng = Rng::new(19);
        let mut formed = 0;
        for case in 0..40 {
            let bits = [8, 12, 15][case % 3];
            let codes = (1u32 << (bits - 1)) - 1;
            let lane = |rng: &mut Rng| {
                let m = |rng: &mut Rng| rng.below(1 << 32) as i64 - (1 << 31);
                let k = 16 + rng.below(32) as u8;
                let zero = |rng: &mut Rng| rng.below(256) as i32 - 128;
                let addend = (rng.next_u64() as i64) >> (64 - 20 - k.min(40) as u32);
                AddLane::new((zero(rng), zero(rng)), m(rng), m(rng), addend, k, codes)
            };
            let channels = [1, 7, 16, 17, 192][case % 5];
            let constants: Vec<AddLane> = (0..channels).filter_map(|_| lane(&mut rng)).collect();
            if constants.len() < channels {
                continue;
            }
            formed += constants.iter().filter(|l| l.pairs.is_some()).count();
            let n = channels * (1 + case % 4) + case % 3;
            let code = |rng: &mut Rng| match rng.below(4) {
                0 => codes as i32,
                1 => -(codes as i32),
                _ => rng.below(2 * codes as usize + 1) as i32 - codes as i32,
            };
            let a: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
            let b: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
            let range = [(-128, 127), (0, 255), (-(1 << 20), 1 << 20)][case % 3];
            for isa in Isa::available() {
                let what = format!("{} case {case}", isa.name());
                assert_rows_and_run(isa, &constants, range, (&a, &b), &what);
            }
        }
        assert!(formed > 500, "{formed} channels in pair form");
        // Past the form's bounds: codes of 16 bits, a multiplier within 2^15 of 2^31, a shift
        // below 16.
        let pairs = |m_a: i64, k: u8, codes: u32| {
            let lane = AddLane::new((0, 0), m_a, 1 << 20, 0, k, codes).expect("in range");
            lane.pairs.is_some()
        };
        assert!(pairs(1 << 20, 20, 127) && pairs((1 << 31) - (1 << 15) - 1, 40, 127));
        assert!(!pairs(1 << 20, 20, 1 << 15));
        assert!(!pairs((1 << 31) - (1 << 15), 40, 127));
        assert!(!pairs(1 << 10, 15, 127));
    }

    /// Constants across the lanes' whole range (shifts 0–63, multipliers across i32, addends up
    /// to ±2^60, codes up to ±2^15, clamps inside and at the ends of i32) on lengths around
    /// whole registers and blocks of 16 channels (DeiT-T's 192 among them): every path gives
    /// [`AddLane::apply`]'s codes, as runs and as rows (a last row cut short too), and writes
    /// nothing past them.
    #[test]
    fn every_path_equals_the_lane_definition() {
        let mut rng = Rng::new(17);
        let lane = |rng: &mut Rng| AddLane {
            m_a: rng.next_u64() as i32,
            m_b: rng.next_u64() as i32,
            c: (rng.next_u64() as i64) >> 3,
            k: rng.below(64) as u32,
            pairs: None,
        };
        let ranges = [
            (-128, 127),
            (-(1 << 20), 1 << 20),
            (i32::MIN as i64, i32::MAX as i64),
        ];
        let shapes: [(usize, usize); 6] = [(1, 5), (7, 3), (16, 2), (17, 4), (33, 1), (192, 3)];
        for (case, &(channels, rows)) in shapes.iter().enumerate() {
            let range = ranges[case % ranges.len()];
            let constants: Vec<AddLane> = (0..channels).map(|_| lane(&mut rng)).collect();
            let n = channels * rows;
            let code = |rng: &mut Rng| rng.below(1 << 16) as i32 - (1 << 15);
            let a: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
            let b: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
            let lanes: AddLanes = constants.iter().copied().collect();
            for isa in Isa::available() {
                assert_rows_and_run(isa, &constants, range, (&a, &b), isa.name());
                // A last row short of the channels (the shortest slice sets the length).
                let short = n - channels.div_ceil(2);
                let mut got = vec![i32::MIN; n + 3];
                add_rows(isa, &lanes, range, &a[..short], &b, &mut got);
                for i in 0..short {
                    let want = constants[i % channels].apply(a[i], b[i], range);
                    assert_eq!(got[i], want, "{} short rows, element {i}", isa.name());
                }
                assert!(got[short..].iter().all(|&g| g == i32::MIN));
            }
        }
    }

    /// `a` and `b` as rows of `constants`' channels and as a run of the first channel's, by
    /// `isa`: each code [`AddLane::apply`]'s, and nothing written past them.
    fn assert_rows_and_run(
        isa: Isa,
        constants: &[AddLane],
        range: (i64, i64),
        (a, b): (&[i32], &[i32]),
        what: &str,
    ) {
        let (n, channels) = (a.len(), constants.len());
        let lanes: AddLanes = constants.iter().copied().collect();
        let mut got = vec![i32::MIN; n + 3];
        add_rows(isa, &lanes, range, a, b, &mut got);
        for i in 0..n {
            let want = constants[i % channels].apply(a[i], b[i], range);
            assert_eq!(got[i], want, "{what}: rows, element {i} of {n}");
        }
        assert!(got[n..].iter().all(|&g| g == i32::MIN));
        let mut got = vec![i32::MIN; n + 3];
        add_run(isa, &constants[0], range, a, b, &mut got);
        for i in 0..n {
            let want = constants[0].apply(a[i], b[i], range);
            assert_eq!(got[i], want, "{what}: run, element {i} of {n}");
        }
        assert!(got[n..].iter().all(|&g| g == i32::MIN));
    }
}
