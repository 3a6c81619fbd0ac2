//! int8 kernels on one core: the GEMM, the packing of its operands, the depthwise conv, the attention products, the
//! Hardswish epilogue, the residual add, the fused Softmax rows and LayerNorm's rows on
//! layer-sized shapes for every ISA, and the CPU's measured int8 peaks (register-only
//! `vpdpbusd`, AMX's `tdpbsud`, and `vpmaddwd` + `vpaddd` for AVX2), so GOPS can be quoted as a
//! share of each ISA's peak. On a Xeon with AMX, the AVX-512 VNNI products run on its tiles
//! unless `QVIT_ISA=avx512vnni`.
//! `cargo bench -p qvit-core --bench int8`; figures in BENCHMARKS.md.

use qvit_core::exec::int::kernels::add::{AddLane, AddLanes, add_rows, add_run};
use qvit_core::exec::int::kernels::depthwise::{DwShape, depthwise, depthwise_bytes};
use qvit_core::exec::int::kernels::layernorm::{GROUP, RowNorm};
use qvit_core::exec::int::kernels::pack::{pack_rows, pack_signed_tokens};
use qvit_core::exec::int::kernels::requant::{
    Fast, FastHardswish, Narrow, hardswish_narrow, hardswish_wide,
};
use qvit_core::exec::int::kernels::scores::{PackedKeys, query_pairs, scores};
use qvit_core::exec::int::kernels::softmax_codes::RowCodes;
use qvit_core::exec::int::kernels::square_hardswish::{hardswish_square, hardswish_square_bytes};
use qvit_core::exec::int::kernels::{
    Isa, PackedA, PackedB, gemm, peak_loop_amx, peak_loop_avx2, peak_loop_vnni,
};
use qvit_core::exec::int::nonlinear::levels::LevelEncoder;
use qvit_core::exec::int::nonlinear::softmax::PROBABILITY_BITS;
use qvit_core::exec::spare::Buffer;
use qvit_core::rng::Rng;

mod common;
use common::DW_SHAPES;

fn main() {
    divan::main();
}

/// (rows, K, columns): B1@224 stage-3 pointwise (256 → 1024 on 14×14) and stage-4 pointwise
/// (1024 → 256 on 7×7: 49 columns, the last one as dot products), DeiT-T fc1 (192 → 768 on
/// 197 tokens), a 1×1 conv on 56×56, B1@224's head linear (1536 → 1600, one token: the
/// matrix-vector product), then DeiT-T's layers token-major as the executor runs them at
/// batch 8: a block of 120 tokens as rows times qkv (192 → 576), fc1 (192 → 768) and fc2
/// (768 → 192); then B1@224's short-`K` products, where AMX tiles gain least: stage 1's
/// expansion (32 → 128 on 56×56), stage 2's projection (256 → 64 on 28×28) and a group of
/// 16 channels of its attention's grouped 1×1 convs (on 14×14).
const SHAPES: [(usize, usize, usize); 13] = [
    (1024, 256, 196),
    (256, 1024, 49),
    (768, 192, 197),
    (128, 64, 3136),
    (1600, 1536, 1),
    (120, 192, 576),
    (120, 192, 768),
    (120, 768, 192),
    (128, 32, 3136),
    (64, 256, 784),
    (16, 16, 196),
    (16, 16, 49),
    (16, 16, 12544),
];

fn operands(rows: usize, k: usize, cols: usize) -> (PackedA, PackedB) {
    let mut rng = Rng::new(1);
    let a: Vec<i8> = (0..rows * k)
        .map(|_| (rng.below(255) as i32 - 127) as i8)
        .collect();
    let b: Vec<u8> = (0..k * cols).map(|_| rng.below(256) as u8).collect();
    (PackedA::new(&a, rows, k), PackedB::from_rows(&b, k, cols))
}

#[divan::bench(args = SHAPES, consts = [0, 1, 2])]
fn gemm_int8<const ISA: usize>(bencher: divan::Bencher, shape: (usize, usize, usize)) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let (rows, k, cols) = shape;
    let (a, b) = operands(rows, k, cols);
    let mut out = vec![0; rows * cols];
    bencher
        .counter(divan::counter::ItemsCount::new(2 * rows * k * cols))
        .bench_local(|| gemm(isa, &a, &b, &mut out));
}

/// (K, columns) of byte codes packed as a product's `B`: a group of 16 channels of
/// EfficientViT-B1@224's attention's grouped 1×1 convs on its 7×7 and 14×14 maps (49 and 196
/// columns: a last panel of 1 and 4), and stage 4's projection input (1024 channels on 7×7).
#[divan::bench(args = [(16, 49), (16, 196), (1024, 49)], consts = [0, 1, 2])]
fn pack_rows_int<const ISA: usize>(bencher: divan::Bencher, shape: (usize, usize)) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let (k, cols) = shape;
    let mut rng = Rng::new(5);
    let bytes: Vec<u8> = (0..k * cols).map(|_| rng.below(256) as u8).collect();
    let mut buf = Buffer::default();
    bencher
        .counter(divan::counter::ItemsCount::new(k * cols))
        .bench_local(|| {
            let b = pack_rows(isa, k, cols, &bytes, 0, std::mem::take(&mut buf));
            buf = b.data;
        });
}

/// DeiT-T's token-major operands at batch 8: a block of 120 tokens of 192 codes (LayerNorm's,
/// before qkv and fc1) or 768 (GELU's, before fc2) packed as the product's signed rows with
/// their sums.
#[divan::bench(args = [(120, 192), (120, 768)], consts = [0, 1, 2])]
fn pack_signed_tokens_int<const ISA: usize>(bencher: divan::Bencher, shape: (usize, usize)) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let (tokens, k) = shape;
    let mut rng = Rng::new(6);
    let codes: Vec<i32> = (0..tokens * k)
        .map(|_| rng.below(256) as i32 - 128)
        .collect();
    let (mut packed, mut sums) = (PackedA::new(&[], 0, k), Vec::new());
    bencher
        .counter(divan::counter::ItemsCount::new(tokens * k))
        .bench_local(|| pack_signed_tokens(isa, k, &codes, 128, &mut packed, &mut sums));
}

/// 1,000 rounds of 12 `vpdpbusd`: 768,000 MACs (1.536 M int8 ops) per iteration.
#[divan::bench]
fn peak_vnni(bencher: divan::Bencher) {
    if peak_loop_vnni(1).is_none() {
        return;
    }
    bencher
        .counter(divan::counter::ItemsCount::new(2 * 1000 * 12 * 64usize))
        .bench_local(|| peak_loop_vnni(divan::black_box(1000)));
}

/// 1,000 rounds of 4 `tdpbsud`: 65.5 M MACs per iteration — the peak of the AVX-512 VNNI
/// products where they run on AMX tiles (`QVIT_ISA=avx512vnni` keeps them off).
#[divan::bench]
fn peak_amx(bencher: divan::Bencher) {
    if peak_loop_amx(1).is_none() {
        return;
    }
    bencher
        .counter(divan::counter::ItemsCount::new(2 * 1000 * 4 * 16384usize))
        .bench_local(|| peak_loop_amx(divan::black_box(1000)));
}

/// 10,000 rounds of 12 `vpmaddwd` + `vpaddd`: 1.92 M MACs per iteration — AVX2's exact int8
/// peak, which the AVX2 GEMM is measured against.
#[divan::bench]
fn peak_avx2(bencher: divan::Bencher) {
    if peak_loop_avx2(1).is_none() {
        return;
    }
    bencher
        .counter(divan::counter::ItemsCount::new(2 * 10_000 * 12 * 16usize))
        .bench_local(|| peak_loop_avx2(divan::black_box(10_000)));
}

#[divan::bench(args = DW_SHAPES, consts = [0, 1, 2])]
fn depthwise_int<const ISA: usize>(bencher: divan::Bencher, shape: (usize, usize, usize, usize)) {
    let Some(mut c) = DwCase::new(ISA, shape) else {
        return;
    };
    let x: Vec<i32> = c.x.iter().map(|&b| i32::from(b)).collect();
    bencher
        .counter(c.items())
        .bench_local(|| depthwise(c.isa, &c.s, &x, &c.zero, 0, &c.w, &mut c.out));
}

/// [`depthwise_int`] with the codes as bytes, as the int executor passes them between convs.
#[divan::bench(args = DW_SHAPES, consts = [0, 1, 2])]
fn depthwise_bytes_int<const ISA: usize>(
    bencher: divan::Bencher,
    shape: (usize, usize, usize, usize),
) {
    let Some(mut c) = DwCase::new(ISA, shape) else {
        return;
    };
    bencher
        .counter(c.items())
        .bench_local(|| depthwise_bytes(c.isa, &c.s, &c.x, &c.zero, 0, &c.w, &mut c.out));
}

/// [`depthwise_bytes_int`] in calls of 24 channels, as the int executor makes them (its row
/// blocks): what a call costs besides its channels' sums shows here.
#[divan::bench(args = DW_SHAPES, consts = [2])]
fn depthwise_bytes_blocks_int<const ISA: usize>(
    bencher: divan::Bencher,
    shape: (usize, usize, usize, usize),
) {
    let Some(mut c) = DwCase::new(ISA, shape) else {
        return;
    };
    const BLOCK: usize = 24;
    let (plane, out_plane) = (c.s.in_hw.0 * c.s.in_hw.1, c.s.out_hw.0 * c.s.out_hw.1);
    bencher.counter(c.items()).bench_local(|| {
        for first in (0..c.s.channels).step_by(BLOCK) {
            let n = BLOCK.min(c.s.channels - first);
            let s = DwShape { channels: n, ..c.s };
            let x = &c.x[first * plane..(first + n) * plane];
            let (zero, w) = (
                &c.zero[first..first + n],
                &c.w[first * s.kernel * s.kernel..],
            );
            let out = &mut c.out[first * out_plane..(first + n) * out_plane];
            depthwise_bytes(c.isa, &s, x, zero, 0, w, out);
        }
    });
}

/// One depthwise layer's operands: random byte codes, zero-points 128 and i8 weights.
struct DwCase {
    isa: Isa,
    s: DwShape,
    x: Vec<u8>,
    zero: Vec<i32>,
    w: Vec<i16>,
    out: Vec<i32>,
}

impl DwCase {
    /// The layer of `shape` (channels, side, kernel, stride) for the ISA numbered `isa` in the
    /// benches' `consts`, if this CPU has it.
    fn new(
        isa: usize,
        (channels, side, kernel, stride): (usize, usize, usize, usize),
    ) -> Option<Self> {
        let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][isa];
        if !Isa::available().contains(&isa) {
            return None;
        }
        let s = DwShape::square(channels, side, kernel, stride);
        let mut rng = Rng::new(2);
        let x = (0..channels * side * side)
            .map(|_| rng.below(256) as u8)
            .collect();
        let w = (0..channels * kernel * kernel)
            .map(|_| rng.below(255) as i16 - 127)
            .collect();
        let out = vec![0; channels * s.out_hw.0 * s.out_hw.1];
        Some(DwCase {
            isa,
            s,
            x,
            zero: vec![128; channels],
            w,
            out,
        })
    }

    /// Two int8 operations per multiply-accumulate.
    fn items(&self) -> divan::counter::ItemsCount {
        let s = &self.s;
        divan::counter::ItemsCount::new(
            2 * s.channels * s.out_hw.0 * s.out_hw.1 * s.kernel * s.kernel,
        )
    }
}

/// (queries, keys, dimensions) of one DeiT-T head: `q·kᵀ` (197 × 197 over 64) and `P·V`
/// (197 × 64 over the 197 tokens), centred codes / probabilities inside i16.
const ATTENTION_SHAPES: [(usize, usize, usize); 2] = [(197, 197, 64), (197, 64, 197)];

#[divan::bench(args = ATTENTION_SHAPES, consts = [0, 1, 2])]
fn attention_product<const ISA: usize>(bencher: divan::Bencher, shape: (usize, usize, usize)) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let (rows, keys, d) = shape;
    let mut rng = Rng::new(3);
    let q: Vec<i16> = (0..rows * d).map(|_| rng.below(511) as i16 - 255).collect();
    let k: Vec<i16> = (0..keys * d).map(|_| rng.below(511) as i16 - 255).collect();
    let packed = PackedKeys::pack(keys, d, |j, c| k[j * d + c]);
    let mut pairs = Vec::new();
    for row in q.chunks_exact(d) {
        query_pairs(row, &mut pairs);
    }
    let mut out = vec![0; rows * keys];
    bencher
        .counter(divan::counter::ItemsCount::new(2 * rows * keys * d))
        .bench_local(|| scores(isa, &pairs, &packed, &mut out));
}

/// A Hardswish epilogue shaped like EfficientViT-B1's (j = 17, an output step of 24
/// t-units, the product's clamp a code past either end of the output's range, as a layer
/// sets it) on one 56×56 channel of accumulators: the product in 64-bit lanes, in 32, and in
/// 32 as a square (its codes stop changing below `x = 3`), and as a square stored as bytes (as
/// the int executor stores the codes between its convs).
#[divan::bench(args = ["wide", "lanes", "square", "square bytes"], consts = [0, 1, 2])]
fn hardswish_epilogue<const ISA: usize>(bencher: divan::Bencher, form: &str) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let (j, r) = (17, 24i64);
    let h = FastHardswish {
        to_t: Fast {
            m: 1_500_000_000,
            lo: 1 << 33,
            hi: 0,
            k: 34,
            qmin: -(1 << j),
            qmax: 256 * r,
        },
        j,
        p_range: (-(4 * r) << (j + 1), (256 * r) << (j + 1)),
        out: Fast {
            m: ((1i64 << 25) / r) as i32,
            lo: 1 << 20,
            hi: 3,
            k: j + 26,
            qmin: 0,
            qmax: 255,
        },
    };
    let (wide, lanes, square) = (
        h.wide().expect("a 64-bit form"),
        h.narrow().expect("a 32-bit form"),
        h.square().expect("a square form"),
    );
    let mut rng = Rng::new(3);
    let acc: Vec<i32> = (0..56 * 56)
        .map(|_| rng.below(1 << 16) as i32 - (1 << 14))
        .collect();
    let mut out = vec![0; acc.len()];
    let mut bytes = vec![0; acc.len()];
    bencher
        .counter(divan::counter::ItemsCount::new(acc.len()))
        .bench_local(|| match form {
            "wide" => hardswish_wide(isa, &wide, &acc, &mut out),
            "square" => hardswish_square(isa, &square, &acc, &mut out),
            "square bytes" => hardswish_square_bytes(isa, &square, &acc, 0, &mut bytes),
            _ => hardswish_narrow(isa, &lanes, &acc, &mut out),
        });
}

/// The residual add on DeiT-T's shape (197 tokens of 192 channels, channels-last rows, each
/// channel its constants) and on one of EfficientViT-B1's (a 56×56 plane of one channel, a
/// run), codes in −128..=127 and constants of a layer's size.
#[divan::bench(args = ["deit-t rows", "b1 run"], consts = [0, 1, 2])]
fn residual_add<const ISA: usize>(bencher: divan::Bencher, form: &str) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let mut rng = Rng::new(4);
    let lane = |rng: &mut Rng| {
        let mut m = || (1 << 28) + rng.below(1 << 28) as i64;
        AddLane::new((3, -5), m(), -m(), 1 << 40, 31, 128).expect("in range")
    };
    let (channels, n) = match form {
        "deit-t rows" => (192, 197 * 192),
        _ => (1, 56 * 56),
    };
    let lanes: AddLanes = (0..channels).map(|_| lane(&mut rng)).collect();
    let code = |rng: &mut Rng| rng.below(256) as i32 - 128;
    let a: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
    let b: Vec<i32> = (0..n).map(|_| code(&mut rng)).collect();
    let one = lane(&mut rng);
    let mut out = vec![0; n];
    bencher
        .counter(divan::counter::ItemsCount::new(n))
        .bench_local(|| match channels {
            1 => add_run(isa, &one, (-128, 127), &a, &b, &mut out),
            _ => add_rows(isa, &lanes, (-128, 127), &a, &b, &mut out),
        });
}

/// DeiT-T's fused Softmax rows: a tile of 16 queries' `q·kᵀ` sums over 197 keys to the codes
/// of repq-vit's 8-bit log√2 point (the thresholds as the compiler builds them), the logits
/// requantized to base-2 exponents at `2^−10`.
#[divan::bench(consts = [1, 2])]
fn softmax_rows<const ISA: usize>(bencher: divan::Bencher) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let levels = 256;
    let bounds: Vec<f64> = (1..levels)
        .rev()
        .map(|k| 2f64.powf(-(k as f64 - 0.5) / 2.0))
        .collect();
    let codes: Vec<i32> = (0..levels).rev().collect();
    let unit = 1.0 / (1u64 << PROBABILITY_BITS) as f64;
    let log = LevelEncoder::new(&bounds, codes, unit, 0.0);
    let encoder = LevelEncoder::from_monotone(|p| -log.encode(p), 0, 1 << PROBABILITY_BITS);
    let lookup = encoder.binade_lookup();
    let (tokens, rows, k) = (197, 16, 40);
    let to_x = Fast {
        m: 1 << 29,
        lo: 1 << (k - 1),
        hi: 0,
        k,
        qmin: -(1 << 29),
        qmax: 1 << 29,
    };
    let kernel = RowCodes::new(isa, tokens, Some(&to_x), 10, &lookup).expect("the fused rows");
    let mut rng = Rng::new(11);
    let acc: Vec<i32> = (0..rows * tokens)
        .map(|_| rng.below(1 << 22) as i32 - (1 << 21))
        .collect();
    let (mut scratch, mut out) = (Vec::new(), vec![0; acc.len()]);
    bencher
        .counter(divan::counter::ItemsCount::new(acc.len()))
        .bench_local(|| kernel.rows(&acc, &mut scratch, &mut out));
}

/// DeiT-T's LayerNorm in lanes (197 tokens of 192 channels, per-channel zero-points, shifts
/// and output requantizations), its rows one at a time (`RowNorm::row`) against groups of
/// `layernorm::GROUP` side by side (`RowNorm::rows`, what the executor runs).
#[divan::bench(args = ["one at a time", "in groups"], consts = [1, 2])]
fn layernorm_rows<const ISA: usize>(bencher: divan::Bencher, form: &str) {
    let isa = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni][ISA];
    if !Isa::available().contains(&isa) {
        return;
    }
    let (tokens, d) = (197, 192);
    let mut rng = Rng::new(3);
    let zero: Vec<i32> = (0..d).map(|_| rng.below(21) as i32 - 10).collect();
    let shift: Vec<u32> = (0..d).map(|_| 6 + rng.below(3) as u32).collect();
    let out: Vec<Narrow> = (0..d)
        .map(|_| {
            let fast = Fast {
                m: (1 << 30) + rng.below(1 << 30) as i32,
                lo: rng.below(1 << 40) as i64,
                hi: rng.below(21) as i64 - 10,
                k: 50 + rng.below(4) as u32,
                qmin: -128,
                qmax: 127,
            };
            fast.narrow().expect("a 32-bit form")
        })
        .collect();
    let norm = RowNorm::new(&zero, &shift, &out).expect("shifts below 32");
    let x: Vec<i32> = (0..tokens * d)
        .map(|_| rng.below(201) as i32 - 100)
        .collect();
    let (mut centred, mut codes) = (vec![0; GROUP * d], vec![0; x.len()]);
    bencher
        .counter(divan::counter::ItemsCount::new(x.len()))
        .bench_local(|| match form {
            "one at a time" => {
                for (row, out) in x.chunks(d).zip(codes.chunks_mut(d)) {
                    norm.row(isa, row, &mut centred[..d], out);
                }
            }
            _ => {
                for (rows, out) in x.chunks(GROUP * d).zip(codes.chunks_mut(GROUP * d)) {
                    norm.rows(isa, rows, &mut centred[..rows.len()], out);
                }
            }
        });
}
