//! Finite-difference check of convolution weight gradients, in f64 (own binary: it switches
//! the flex device to f64 for the process).

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

fn noise(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// The whole-model check (gradcheck.rs) differentiates with respect to the inputs; this one
/// checks the *weight* gradients of the convolution shapes the encoder uses (stride 2 with
/// padding, stride 1, 1×1 projection shortcuts), which flex computes with separate kernels.
#[test]
fn conv_weight_gradients_match_finite_differences() {
    let mut plain = Device::flex();
    plain.configure(FloatDType::F64).unwrap();
    let ad = plain.clone().autodiff();
    for (stride, pad, cin, cout, hw, k) in [
        (2usize, 1usize, 3usize, 8usize, 16usize, 3usize),
        (1, 1, 8, 8, 8, 3),
        (2, 0, 4, 6, 9, 1),
        (2, 1, 16, 32, 32, 3),
    ] {
        let (b,) = (2,);
        let x = noise(1, b * cin * hw * hw);
        let wv = noise(2, cout * cin * k * k);
        let r = noise(3, 100000);
        let opts = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let f = |dev: &Device, wv: &[f64], rq: bool| -> (Tensor<1>, Tensor<4>) {
            let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), [b, cin, hw, hw]), dev);
            let mut wt =
                Tensor::<4>::from_data(TensorData::new(wv.to_vec(), [cout, cin, k, k]), dev);
            if rq {
                wt = wt.require_grad();
            }
            let y = conv2d(xt, wt.clone(), None, opts.clone());
            let [_, _, ho, wo] = y.dims();
            let n = b * cout * ho * wo;
            let rt =
                Tensor::<4>::from_data(TensorData::new(r[..n].to_vec(), [b, cout, ho, wo]), dev);
            ((y * rt).sum(), wt)
        };
        let (l, wt) = f(&ad, &wv, true);
        let g = l.backward();
        let gw: Vec<f64> = wt
            .grad(&g)
            .unwrap()
            .into_data()
            .convert::<f64>()
            .try_to_vec()
            .unwrap();
        let mut maxrel: f64 = 0.0;
        for idx in [0usize, 1, 5, cout * cin * k * k / 2, cout * cin * k * k - 1] {
            let mut wp = wv.clone();
            wp[idx] += 1e-6;
            let mut wm = wv.clone();
            wm[idx] -= 1e-6;
            let lp: f64 = f(&plain, &wp, false)
                .0
                .into_data()
                .convert::<f64>()
                .try_to_vec::<f64>()
                .unwrap()[0];
            let lm: f64 = f(&plain, &wm, false)
                .0
                .into_data()
                .convert::<f64>()
                .try_to_vec::<f64>()
                .unwrap()[0];
            let fd = (lp - lm) / 2e-6;
            maxrel = maxrel.max((fd - gw[idx]).abs() / fd.abs().max(1e-9));
        }
        assert!(
            maxrel < 1e-5,
            "stride {stride} pad {pad} cin {cin} k {k}: relative error {maxrel:.2e}"
        );
    }
}
