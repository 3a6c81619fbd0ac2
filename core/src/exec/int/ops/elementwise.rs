//! Steps without weights: residual add, global average pooling, DeiT's class token and
//! position table, and the steps that only move codes (concatenation, taking the class token).

use super::super::dyadic::Dyadic;
use super::super::requant::Encoder;

/// Which channel an element of one image's tensor belongs to: `(i / inner) % channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMap {
    pub channels: usize,
    pub inner: usize,
}

impl ChannelMap {
    #[inline]
    pub fn of(&self, i: usize) -> usize {
        (i / self.inner) % self.channels
    }
}

/// `a + b` of two differently scaled inputs with one rounding: per channel both ratios share
/// one shift `k`, `q = clamp(((a − z_a)·m_a + (b − z_b)·m_b + c + 2^(k−1)) >> k)`. (I-ViT
/// requantizes each operand and then adds, which rounds twice.)
#[derive(Debug, Clone, PartialEq)]
pub struct Add {
    pub map: ChannelMap,
    pub zero_a: Vec<i32>,
    pub zero_b: Vec<i32>,
    pub m_a: Vec<i64>,
    pub m_b: Vec<i64>,
    pub k: Vec<u8>,
    pub addend: Vec<i64>,
    pub qmin: i64,
    pub qmax: i64,
}

impl Add {
    /// Constants for one channel: inputs `s_a·(a − z_a) + o_a` and `s_b·(b − z_b) + o_b` into
    /// codes `(x − o)/s + z` — returns `(m_a, m_b, k, addend)`, or `None` when a ratio is too
    /// large for a 31-bit multiplier.
    pub fn channel(
        (s_a, o_a): (f64, f64),
        (s_b, o_b): (f64, f64),
        (s, z, o): (f64, i32, f64),
    ) -> Option<(i64, i64, u8, i64)> {
        let (ra, rb) = (s_a / s, s_b / s);
        let k = Dyadic::from_real(ra.max(rb))?.k;
        let scale = 2f64.powi(k as i32);
        let addend = ((o_a + o_b - o) / s * scale).round() as i64 + ((z as i64) << k);
        Some((
            (ra * scale).round() as i64,
            (rb * scale).round() as i64,
            k,
            addend,
        ))
    }

    pub fn run(&self, a: &[i32], b: &[i32], out: &mut Vec<i32>) {
        out.clear();
        out.extend(a.iter().zip(b).enumerate().map(|(i, (&qa, &qb))| {
            let c = self.map.of(i);
            let k = self.k[c];
            let p = (qa - self.zero_a[c]) as i64 * self.m_a[c]
                + (qb - self.zero_b[c]) as i64 * self.m_b[c]
                + self.addend[c];
            ((p + (1i64 << (k - 1))) >> k).clamp(self.qmin, self.qmax) as i32
        }));
    }
}

/// Mean over each channel's plane: `Σ (q − z)` at scale `s_c/HW`, then requantized.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub plane: usize,
    pub zero: Vec<i32>,
    pub out: Encoder,
}

impl Pool {
    pub fn run(&self, x: &[i32], out: &mut Vec<i32>) {
        out.clear();
        out.extend(x.chunks(self.plane).enumerate().map(|(c, plane)| {
            let z = self.zero[c];
            let sum: i64 = plane.iter().map(|&q| (q - z) as i64).sum();
            self.out.encode(sum, c)
        }));
    }
}

/// DeiT's `[cls; patches] + pos`: row 0 is a constant code (class token plus its position,
/// quantized at compile time); the patch rows are requantized with the position folded into
/// a per-element addend.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPos {
    pub dim: usize,
    pub class_row: Vec<i32>,
    pub zero: Vec<i32>,
    pub multiplier: Vec<Dyadic>,
    /// `[tokens, dim]`, in units of `2^−k_c` of the output code.
    pub addend: Vec<i64>,
    pub qmin: i64,
    pub qmax: i64,
}

impl ClassPos {
    pub fn run(&self, x: &[i32], out: &mut Vec<i32>) {
        out.clear();
        out.extend_from_slice(&self.class_row);
        out.extend(x.iter().enumerate().map(|(i, &q)| {
            let c = i % self.dim;
            let d = self.multiplier[c];
            let p = (q - self.zero[c]) as i128 * d.m as i128 + self.addend[i] as i128;
            ((p + (1i128 << (d.k - 1))) >> d.k).clamp(self.qmin as i128, self.qmax as i128) as i32
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_rounds_once() {
        // a at 0.1 (zero 0), b at 0.3 (zero 10) into 0.2 (zero 5):
        // a = 7 → 0.7, b = 13 → 0.9; sum 1.6 → 8 → code 13.
        let (m_a, m_b, k, addend) = Add::channel((0.1, 0.0), (0.3, 0.0), (0.2, 5, 0.0)).unwrap();
        let add = Add {
            map: ChannelMap {
                channels: 1,
                inner: 1,
            },
            zero_a: vec![0],
            zero_b: vec![10],
            m_a: vec![m_a],
            m_b: vec![m_b],
            k: vec![k],
            addend: vec![addend],
            qmin: 0,
            qmax: 255,
        };
        let mut out = Vec::new();
        add.run(&[7, 1], &[13, 10], &mut out);
        // 0.1 + 0 = 0.1 → 0.5 → rounds half up to 1 → code 6 (ratios are dyadic-exact: 1/2, 3/2).
        assert_eq!(out, [13, 6]);
    }
}
