//! Timing of the encoder's stride-2 1×1 shortcut rewrite ([`strided_pointwise`]) against
//! burn's plain `Conv2d` on the current backend (docs/BENCHMARKS.md, run G): forward and
//! backward (weight and input gradients, as inside the network).
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p hn-model --example conv_variants -- [slices] [size]
//! ```
//! `slices` = batch × slices per study (128 = the demo's 8 × 16), `size` = slice side (the
//! shortcut's input is `size / 2`, as in the first residual stage).

use std::time::Instant;

use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use hn_model::encoder::strided_pointwise;

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
