//! The residual add's lanes: `clamp((a·m_a + b·m_b + c) >> k)` per element, with the
//! zero-points and the rounding half folded into `c` once per channel, so an element costs two
//! 32 × 32 → 64-bit multiplies (`vpmuldq`), two adds, a shift and a clamp. One portable body,
//! also compiled for AVX2 and AVX-512 and chosen at run time; the same integers on every path.
#![allow(unsafe_code)]

use super::Isa;

/// One channel's constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddLane {
    pub m_a: i32,
    pub m_b: i32,
    pub c: i64,
    pub k: u32,
}

impl AddLane {
    /// The lane form of `((a − z_a)·m_a + (b − z_b)·m_b + addend + 2^(k−1)) >> k`, when every
    /// sum of codes below 2^16 in magnitude stays inside i64 (`|c| < 2^61`); `None` otherwise.
    pub fn new(z_a: i32, z_b: i32, m_a: i64, m_b: i64, addend: i64, k: u8) -> Option<AddLane> {
        let half = if k == 0 { 0 } else { 1i64 << (k - 1) };
        let c = addend
            .checked_sub((z_a as i64).checked_mul(m_a)?)?
            .checked_sub((z_b as i64).checked_mul(m_b)?)?
            .checked_add(half)?;
        (c.abs() < 1 << 61 && k < 64).then_some(AddLane {
            m_a: i32::try_from(m_a).ok()?,
            m_b: i32::try_from(m_b).ok()?,
            c,
            k: k as u32,
        })
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
}

impl FromIterator<AddLane> for AddLanes {
    fn from_iter<I: IntoIterator<Item = AddLane>>(lanes: I) -> Self {
        let mut all = AddLanes::default();
        for lane in lanes {
            all.m_a.push(lane.m_a);
            all.m_b.push(lane.m_b);
            all.c.push(lane.c);
            all.k.push(lane.k as u64);
        }
        all
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(lane: &AddLane, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    run_portable(lane, range, a, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn run_avx512(lane: &AddLane, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    run_portable(lane, range, a, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2(lanes: &AddLanes, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    rows_portable(lanes, range, a, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn rows_avx512(lanes: &AddLanes, range: (i64, i64), a: &[i32], b: &[i32], out: &mut [i32]) {
    rows_portable(lanes, range, a, b, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Constants across the lanes' whole range (shifts 0–63, multipliers across i32, addends up
    /// to ±2^60, codes up to ±2^15, clamps inside and at the ends of i32) on lengths around
    /// whole registers: every path gives [`AddLane::apply`]'s codes, as runs and as rows, and
    /// writes nothing past them.
    #[test]
    fn every_path_equals_the_lane_definition() {
        let mut rng = Rng::new(17);
        let lane = |rng: &mut Rng| AddLane {
            m_a: rng.next_u64() as i32,
            m_b: rng.next_u64() as i32,
            c: (rng.next_u64() as i64) >> 3,
            k: rng.below(64) as u32,
        };
        let ranges = [
            (-128, 127),
            (-(1 << 20), 1 << 20),
            (i32::MIN as i64, i32::MAX as i64),
        ];
        for (case, &(channels, rows)) in [(1, 5), (7, 3), (16, 2), (17, 4), (33, 1), (192, 3)]
            .iter()
            .enumerate()
        {
            let range = ranges[case % ranges.len()];
            let constants: Vec<AddLane> = (0..channels).map(|_| lane(&mut rng)).collect();
            let n = channels * rows;
            let code = |rng: &mut Rng| rng.below(1 << 16) as i32 - (1 << 15);
            let a: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
            let b: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
            let lanes: AddLanes = constants.iter().copied().collect();
            for isa in Isa::available() {
                let mut got = vec![i32::MIN; n + 3];
                add_rows(isa, &lanes, range, &a, &b, &mut got);
                for i in 0..n {
                    let want = constants[i % channels].apply(a[i], b[i], range);
                    assert_eq!(got[i], want, "{} rows, element {i} of {n}", isa.name());
                }
                assert!(got[n..].iter().all(|&g| g == i32::MIN));
                let mut got = vec![i32::MIN; n + 3];
                add_run(isa, &constants[0], range, &a, &b, &mut got);
                for i in 0..n {
                    let want = constants[0].apply(a[i], b[i], range);
                    assert_eq!(got[i], want, "{} run, element {i} of {n}", isa.name());
                }
                assert!(got[n..].iter().all(|&g| g == i32::MIN));
            }
        }
    }
}
