//! Small helpers shared by the components.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;

/// Largest group count ≤ 8 that divides `channels`, so GroupNorm works for any width
/// (8 groups is the usual choice for small CNNs; fewer when the width is not a multiple of 8).
pub fn norm_groups(channels: usize) -> usize {
    (1..=8.min(channels))
        .rev()
        .find(|g| channels.is_multiple_of(*g))
        .unwrap_or(1)
}

/// Where Monte-Carlo dropout draws its masks: one seeded generator per study of the batch.
///
/// A backend's own RNG is process-global, so two studies scored at once on different threads
/// would interleave their draws and each get numbers that depend on the other. Here each
/// batch row draws from its own generator (seeded by the caller, e.g. from the study key), so
/// a study's MC samples are the same whatever it is batched or run concurrently with. The
/// masks are drawn on the host and uploaded: they are small next to the activations.
#[derive(Debug)]
pub struct McDropout {
    rows: RefCell<Vec<ChaCha8Rng>>,
}

impl McDropout {
    /// One generator per batch row, seeded with `seeds[row]`.
    pub fn per_row(seeds: &[u64]) -> Self {
        McDropout {
            rows: RefCell::new(
                seeds
                    .iter()
                    .map(|&s| ChaCha8Rng::seed_from_u64(s))
                    .collect(),
            ),
        }
    }

    /// Batch rows this sampler serves.
    pub fn rows(&self) -> usize {
        self.rows.borrow().len()
    }

    /// A keep-mask (1 with probability `keep`, else 0) shaped like `x`, row `r` of the first
    /// dimension from generator `r`.
    fn mask<const D: usize>(&self, x: &Tensor<D>, keep: f64) -> Tensor<D> {
        let dims = x.dims();
        let mut rows = self.rows.borrow_mut();
        assert_eq!(
            dims[0],
            rows.len(),
            "MC dropout sampler has {} rows for a batch of {}",
            rows.len(),
            dims[0]
        );
        let per: usize = dims[1..].iter().product();
        // P(u < keep·2³²) = keep for a uniform 32-bit u.
        let cut = (keep * 4_294_967_296.0) as u64;
        let mut values = Vec::with_capacity(per * rows.len());
        for rng in rows.iter_mut() {
            values.extend((0..per).map(|_| f32::from(u64::from(rng.next_u32()) < cut)));
        }
        Tensor::from_data(TensorData::new(values, dims), &x.device())
    }
}

/// Dropout that can also run outside training.
///
/// burn's [`Dropout`] only drops on an autodiff device with its training flag set, which is right
/// for training but makes Monte-Carlo dropout at inference impossible. `mc = Some(sampler)`
/// forces a fresh Bernoulli mask from the sampler whatever the device; `None` defers to burn's
/// own rule, so a plain forward on an inference device (or after `valid()`) stays deterministic.
pub fn drop<const D: usize>(dropout: &Dropout, x: Tensor<D>, mc: Option<&McDropout>) -> Tensor<D> {
    let Some(sampler) = mc.filter(|_| dropout.prob > 0.0) else {
        return dropout.forward(x);
    };
    let keep = 1.0 - dropout.prob;
    let mask = sampler.mask(&x, keep);
    x * mask / keep
}

/// Output side of a 3×3, stride-2, padding-1 convolution: `ceil(n / 2)`.
pub fn halve(n: usize) -> usize {
    n.div_ceil(2)
}
