//! Small helpers shared by the components.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::Distribution;

/// Largest group count ≤ 8 that divides `channels`, so GroupNorm works for any width
/// (8 groups is the usual choice for small CNNs; fewer when the width is not a multiple of 8).
pub fn norm_groups(channels: usize) -> usize {
    (1..=8.min(channels))
        .rev()
        .find(|g| channels.is_multiple_of(*g))
        .unwrap_or(1)
}

/// Dropout that can also run outside training.
///
/// burn's [`Dropout`] only drops on an autodiff device with its training flag set, which is right
/// for training but makes Monte-Carlo dropout at inference impossible. `mc = true` forces a fresh
/// Bernoulli mask whatever the device; `mc = false` defers to burn's own rule, so a plain forward
/// on an inference device (or after `valid()`) stays deterministic.
pub fn drop<const D: usize>(dropout: &Dropout, x: Tensor<D>, mc: bool) -> Tensor<D> {
    if !mc || dropout.prob == 0.0 {
        return dropout.forward(x);
    }
    let keep = 1.0 - dropout.prob;
    let mask = x.random_like(Distribution::Bernoulli(keep));
    x * mask / keep
}

/// Output side of a 3×3, stride-2, padding-1 convolution: `ceil(n / 2)`.
pub fn halve(n: usize) -> usize {
    n.div_ceil(2)
}
