//! A layer's output codes tabulated over the integer its epilogue's first requantization
//! yields: Hardswish's `t` (whose range that requantization clamps) and GELU's `x` (inside the
//! clamp `|x| ≤ limit` of its sigmoid). Everything after that requantization — the product
//! `t·clamp(t + 2^j, …)` or the tanh-form GELU's i128 polynomial, then the output encoder —
//! depends on that one integer alone when the output point has one scale for every channel,
//! so the compiler evaluates it once per possible value and the executor looks the code up.

pub mod buckets;

use super::nonlinear::gelu::gelu;
use super::nonlinear::hardswish::hardswish_product;
use super::ops::weighted::Output;
use super::requant::{Encoder, Epilogue};
use buckets::Buckets;

/// Tables longer than this are not built (the epilogue is computed instead).
const MAX_ENTRIES: i64 = 1 << 16;

/// `codes[x − first]` is the code of intermediate `x`; the same codes as [`Buckets`] where
/// they have that form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeTable {
    first: i64,
    codes: Vec<i32>,
    buckets: Option<Buckets>,
}

impl CodeTable {
    /// The table whose code of `first + i` is `codes[i]`. Panics if `codes` is empty.
    pub fn from_codes(first: i64, codes: Vec<i32>) -> CodeTable {
        assert!(!codes.is_empty(), "a table holds at least one code");
        let buckets = Buckets::of(&codes);
        CodeTable {
            first,
            codes,
            buckets,
        }
    }

    /// `code(x)` for every `x` in `lo..=hi`; `None` for an empty or overlong range.
    fn new(lo: i64, hi: i64, code: impl Fn(i64) -> i32) -> Option<CodeTable> {
        let len = hi.checked_sub(lo)?.checked_add(1)?;
        (1..=MAX_ENTRIES)
            .contains(&len)
            .then(|| CodeTable::from_codes(lo, (lo..=hi).map(code).collect()))
    }

    /// The intermediate whose code is `codes()[0]`.
    pub fn first(&self) -> i64 {
        self.first
    }

    /// The codes of `first()`, `first() + 1`, …
    pub fn codes(&self) -> &[i32] {
        &self.codes
    }

    /// The codes as buckets, when they have that form.
    pub fn buckets(&self) -> Option<&Buckets> {
        self.buckets.as_ref()
    }

    /// The table of a weighted layer's output, when it has one (see the module).
    pub fn for_output(output: &Output) -> Option<CodeTable> {
        match output {
            Output::Epilogue(Epilogue::Hardswish {
                to_t,
                j,
                p_range,
                out,
            }) if shared(out) => CodeTable::new(to_t.qmin, to_t.qmax, |t| {
                out.encode(hardswish_product(t, *j).clamp(p_range.0, p_range.1), 0)
            }),
            Output::Gelu {
                gelu: k, out: enc, ..
            } if shared(enc) => {
                CodeTable::new(-k.limit, k.limit, |x| enc.encode(gelu(x as i32, k), 0))
            }
            _ => None,
        }
    }

    /// The code of `x`, when the table holds it.
    #[inline(always)]
    pub fn get(&self, x: i64) -> Option<i32> {
        usize::try_from(x.wrapping_sub(self.first))
            .ok()
            .and_then(|i| self.codes.get(i).copied())
    }

    /// Whether every `x` in `lo..=hi` is in the table.
    pub fn covers(&self, lo: i64, hi: i64) -> bool {
        lo >= self.first && hi < self.first + self.codes.len() as i64
    }
}

/// Whether an encoder gives every channel the same codes.
fn shared(e: &Encoder) -> bool {
    match e {
        Encoder::Linear(r) => {
            r.multiplier.windows(2).all(|w| w[0] == w[1])
                && r.addend.windows(2).all(|w| w[0] == w[1])
        }
        Encoder::Levels(l) => l.windows(2).all(|w| w[0] == w[1]),
    }
}
