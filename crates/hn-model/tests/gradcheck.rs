//! Finite-difference checks of the backward pass, in f64: the whole model (input gradients) and
//! the convolution weight gradients.
//!
//! Its own test binary because it switches the flex device's default float type to f64 for
//! the whole process (burn allows that once per device, before any tensor exists). In f32 the
//! check is unreliable: rounding needs steps of ~1e-3, and at that size the CNN's ReLU kinks
//! bias the quotient by 10–20 %. In f64 a step of 1e-6 avoids both.

use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use hn_model::*;

/// The flex device switched to f64 once for this test binary (burn allows that once, before
/// any tensor exists), shared by the tests below.
fn f64_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let mut plain = Device::flex();
            plain.configure(FloatDType::F64).expect("f64 on flex");
            plain
        })
        .clone()
}

/// The tiny network with level 3 reading the level-1/2 decisions *attached*: the default
/// detaches them (a stop-gradient by design), and a finite difference sees through a detach
/// while autodiff does not, so the check runs on the fully differentiable variant.
fn tiny() -> HemorrhageNetConfig {
    HemorrhageNetConfig::tiny()
        .with_neighbour_slices(1)
        .with_detach_decisions(false)
}

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

fn rows(b: usize, s: usize) -> Vec<TargetRow> {
    (0..b)
        .map(|i| {
            let bleed = i % 2 == 0;
            let mut sub = [false; 5];
            sub[i % 5] = bleed;
            let slices = (0..s)
                .map(|k| {
                    let on = bleed && k == s / 2;
                    let mut r = [false; 6];
                    r[0] = on;
                    r[1 + i % 5] = on;
                    r
                })
                .collect();
            TargetRow {
                study: Some((bleed, sub)),
                slices: Some(slices),
                mortality: Some(bleed),
                mrs: Some(if bleed { 4 } else { 1 }),
                facts: Some(HematomaFacts {
                    hematoma_ml: if bleed { 20.0 } else { 0.0 },
                    intraventricular_ml: 0.0,
                    infratentorial: bleed,
                }),
            }
        })
        .collect()
}

/// Directional finite differences of the full multi-task loss with respect to the input
/// images and the clinical values against the autodiff gradients: checks the backward pass of
/// every layer on the way (CNN, graph attention with its gathers and masks, pooling, clinical
/// gates, fusion, heads, loss).
#[test]
fn gradient_matches_finite_differences() {
    let plain = f64_device();
    let ad = plain.clone().autodiff();
    ad.seed(3);
    let cfg = tiny();
    let model = Trainable::new(&cfg, &MultiTaskLossConfig::new(), &ad);
    let (b, s, c, h, w, f) = (2, cfg.slices, cfg.channels, 16, 16, cfg.n_clinical);
    let x0: Vec<f64> = noise(1, b * s * c * h * w)
        .iter()
        .map(|v| 0.5 + 0.5 * v)
        .collect();
    let c0: Vec<f64> = noise(2, b * f);
    let present: Vec<f64> = (0..b * f).map(|i| if i == 3 { 0.0 } else { 1.0 }).collect();
    let batch = |dev: &Device, x: &[f64], cl: &[f64]| ModelInput {
        images: Tensor::from_data(TensorData::new(x.to_vec(), [b, s, c, h, w]), dev),
        clinical: Tensor::from_data(TensorData::new(cl.to_vec(), [b, f]), dev),
        clinical_present: Tensor::from_data(TensorData::new(present.clone(), [b, f]), dev),
        modality: Tensor::from_data(TensorData::new(vec![0i64, 1], [b]), dev),
    };
    let targets = ModelTargets::from_rows(&rows(b, s), s, &ad);
    let input = batch(&ad, &x0, &c0);
    let images = input.images.clone().require_grad();
    let clinical = input.clinical.clone().require_grad();
    assert_eq!(images.dtype(), burn::tensor::DType::F64);
    let (_, loss) = model.forward(
        ModelInput {
            images: images.clone(),
            clinical: clinical.clone(),
            ..input
        },
        &targets,
    );
    let grads = loss.total.backward();
    let gx: Vec<f64> = images
        .grad(&grads)
        .unwrap()
        .into_data()
        .convert::<f64>()
        .try_to_vec()
        .unwrap();
    let gc: Vec<f64> = clinical
        .grad(&grads)
        .unwrap()
        .into_data()
        .convert::<f64>()
        .try_to_vec()
        .unwrap();

    let frozen = model.valid();
    let targets_p = ModelTargets::from_rows(&rows(b, s), s, &plain);
    let loss_at = |x: &[f64], cl: &[f64]| -> f64 {
        let (_, l) = frozen.forward(batch(&plain, x, cl), &targets_p);
        l.total
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap()[0]
    };
    let eps = 1e-6;
    let check = |name: &str, analytic: f64, fd: f64| {
        let err = (fd - analytic).abs();
        eprintln!("{name}: finite difference {fd:.9} autodiff {analytic:.9}");
        assert!(
            analytic.abs() > 1e-7,
            "{name}: degenerate direction ({analytic})"
        );
        assert!(
            err / analytic.abs() < 1e-4,
            "{name}: finite difference {fd} vs autodiff {analytic}"
        );
    };
    for seed in 0..3 {
        let dir = noise(100 + seed, x0.len());
        let analytic: f64 = gx.iter().zip(&dir).map(|(g, d)| g * d).sum();
        let plus: Vec<f64> = x0.iter().zip(&dir).map(|(x, d)| x + eps * d).collect();
        let minus: Vec<f64> = x0.iter().zip(&dir).map(|(x, d)| x - eps * d).collect();
        let fd = (loss_at(&plus, &c0) - loss_at(&minus, &c0)) / (2.0 * eps);
        check(&format!("images, direction {seed}"), analytic, fd);

        let dir = noise(200 + seed, c0.len());
        let analytic: f64 = gc.iter().zip(&dir).map(|(g, d)| g * d).sum();
        let plus: Vec<f64> = c0.iter().zip(&dir).map(|(x, d)| x + eps * d).collect();
        let minus: Vec<f64> = c0.iter().zip(&dir).map(|(x, d)| x - eps * d).collect();
        let fd = (loss_at(&x0, &plus) - loss_at(&x0, &minus)) / (2.0 * eps);
        check(&format!("clinical, direction {seed}"), analytic, fd);
    }
    // The missing value (index 3) gets exactly no gradient.
    assert_eq!(gc[3], 0.0);
}

/// The whole-model check (gradcheck.rs) differentiates with respect to the inputs; this one
/// checks the *weight* gradients of the convolution shapes the encoder uses (stride 2 with
/// padding, stride 1, 1×1 projection shortcuts), for burn's flex kernels and for ours
/// (`hn_model::conv`, which the encoder runs on flex).
#[test]
fn conv_weight_gradients_match_finite_differences() {
    let plain = f64_device();
    let ad = plain.clone().autodiff();
    for ours in [false, true] {
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
                let y = if ours {
                    hn_model::conv::conv2d_tensor(xt, wt.clone(), None, opts.clone())
                } else {
                    conv2d(xt, wt.clone(), None, opts.clone())
                };
                let [_, _, ho, wo] = y.dims();
                let n = b * cout * ho * wo;
                let rt = Tensor::<4>::from_data(
                    TensorData::new(r[..n].to_vec(), [b, cout, ho, wo]),
                    dev,
                );
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
                "ours {ours}, stride {stride} pad {pad} cin {cin} k {k}: relative error {maxrel:.2e}"
            );
        }
    }
}
