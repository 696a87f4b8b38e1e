//! Timing of the encoder's two convolution rewrites against burn's plain `Conv2d` on the
//! current backend (docs/BENCHMARKS.md, "Where flex's time goes"): the stem's 3×3 stride-2
//! convolution of 3 channels, and a 1×1 stride-2 shortcut, forward and backward (weight
//! gradient; input gradient too for the shortcut, as inside the network).
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p hn-model --example conv_variants -- [slices] [size]
//! ```
//! `slices` = batch × slices per study (128 = the demo's 8 × 16), `size` = slice side.

use std::time::Instant;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use hn_model::encoder::{stem_conv, strided_pointwise};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Median forward and backward milliseconds over 7 runs (after one warm-up).
fn time(f: &dyn Fn() -> Tensor<4>, weight: &Tensor<4>) -> (f64, f64) {
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for i in 0..8 {
        let t0 = Instant::now();
        let y = f();
        let _ = y.clone().into_data();
        let t1 = Instant::now();
        let grads = y.sum().backward();
        let _ = weight.grad(&grads).expect("weight gradient").into_data();
        if i > 0 {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push(t1.elapsed().as_secs_f64() * 1e3);
        }
    }
    fwd.sort_by(f64::total_cmp);
    bwd.sort_by(f64::total_cmp);
    (fwd[fwd.len() / 2], bwd[bwd.len() / 2])
}

fn main() {
    let (n, size) = (arg(1, 128), arg(2, 64));
    let device = Device::flex().autodiff();
    device.seed(1);
    let stem = Conv2dConfig::new([3, 16], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&device);
    let x = Tensor::<4>::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
    let w = stem.weight.val();
    let plain = time(&|| stem.forward(x.clone()), &w);
    let rewrite = time(&|| stem_conv(&stem, x.clone()), &w);
    println!(
        "{{\"layer\":\"stem 3→16 3×3/2\",\"input\":\"{n}x3x{size}x{size}\",\"conv2d_fwd_ms\":{:.2},\"conv2d_bwd_ms\":{:.2},\"rewrite_fwd_ms\":{:.2},\"rewrite_bwd_ms\":{:.2}}}",
        plain.0, plain.1, rewrite.0, rewrite.1
    );

    let shortcut = Conv2dConfig::new([16, 32], [1, 1])
        .with_stride([2, 2])
        .init(&device);
    let half = size / 2;
    let x = Tensor::<4>::random([n, 16, half, half], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();
    let w = shortcut.weight.val();
    let plain = time(&|| shortcut.forward(x.clone()), &w);
    let rewrite = time(&|| strided_pointwise(&shortcut, x.clone()), &w);
    println!(
        "{{\"layer\":\"shortcut 16→32 1×1/2\",\"input\":\"{n}x16x{half}x{half}\",\"conv2d_fwd_ms\":{:.2},\"conv2d_bwd_ms\":{:.2},\"rewrite_fwd_ms\":{:.2},\"rewrite_bwd_ms\":{:.2}}}",
        plain.0, plain.1, rewrite.0, rewrite.1
    );
}
