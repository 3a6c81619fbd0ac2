//! How far a quantized model's logits are from the float model's.

use crate::tensor::Tensor;

/// Mean over images of KL(p_float ‖ p_quantized) of the softmax of each row, in nats. Zero when
/// the logits agree; every term is finite because softmax probabilities are positive (a row
/// with a non-finite logit counts as infinitely far).
pub fn mean_kl(float: &Tensor, quantized: &Tensor) -> f64 {
    let n = float.batch().min(quantized.batch());
    if n == 0 {
        return 0.0;
    }
    let total: f64 = (0..n).map(|i| kl(float.item(i), quantized.item(i))).sum();
    total / n as f64
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let log_sum = max + sum.ln();
    row.iter().map(|&x| f64::from(x) - log_sum).collect()
}

fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    if p_logits.iter().chain(q_logits).any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter()
        .zip(&lq)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
}

/// Signal-to-quantization-noise ratio of the logits in dB: `10·log10(Σ f² / Σ (f − q)²)`
/// (infinite when they agree exactly).
pub fn sqnr_db(float: &Tensor, quantized: &Tensor) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (f, q) in float.data.iter().zip(&quantized.data) {
        signal += f64::from(*f).powi(2);
        noise += (f64::from(*f) - f64::from(*q)).powi(2);
    }
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_by_hand() {
        // p = softmax(0, ln 3) = (1/4, 3/4), q = (1/2, 1/2):
        // KL = 1/4·ln(1/2) + 3/4·ln(3/2) = 0.130812…
        let p = Tensor::new(vec![1, 2], vec![0.0, 3f32.ln()]);
        let q = Tensor::new(vec![1, 2], vec![5.0, 5.0]);
        assert!((mean_kl(&p, &q) - 0.130_812_035).abs() < 1e-6);
        assert_eq!(mean_kl(&p, &p), 0.0);
        let bad = Tensor::new(vec![1, 2], vec![f32::NAN, 0.0]);
        assert_eq!(mean_kl(&p, &bad), f64::INFINITY);
    }

    #[test]
    fn sqnr_by_hand() {
        // Signal 3² + 4² = 25, noise 0.5² = 0.25: 10·log10(100) = 20 dB.
        let f = Tensor::new(vec![1, 2], vec![3.0, 4.0]);
        let q = Tensor::new(vec![1, 2], vec![3.5, 4.0]);
        assert!((sqnr_db(&f, &q) - 20.0).abs() < 1e-9);
        assert_eq!(sqnr_db(&f, &f), f64::INFINITY);
    }
}
