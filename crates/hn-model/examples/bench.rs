//! Train-step and inference timing of the default (CPU) network on burn's `flex` backend.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p hn-model --example bench -- [batch] [slices] [size] [iters]
//! ```
//!
//! `HN_WIDTHS=16,32,48,64` sets the CNN widths (the demo's; default: the library's CPU default).
//!
//! `HN_INFERENCE_ONLY=1` skips the timed train steps (one untimed step, then inference): for
//! profiling inference alone, e.g. under `perf record`.
//!
//! `HN_CONV=burn` turns hn-model's backend extensions off (`hn_model::conv::set_fast_kernels`):
//! on flex, flex's own convolution, GroupNorm and gather instead of ours; on libtorch, burn's
//! generic convolution backward instead of libtorch's. For an A/B comparison in one build; the
//! JSON's `impl` then ends in `+burn-kernels`.
//!
//! `HN_DEVICE=cuda` (with `--features cuda`), `HN_DEVICE=libtorch` or `HN_DEVICE=libtorch-cuda`
//! (with `--features tch`; GPU 0) runs the same measurement on those backends; the default is
//! `flex`.
//!
//! Prints one JSON line per measurement (median and min over `iters` after 2 warm-up runs, and
//! `first_ms`: the first, cold iteration, which on a GPU carries context creation, kernel
//! loading and autotuning), the same format as `bench/torch/bench.py`.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use hn_model::*;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn batch(cfg: &HemorrhageNetConfig, b: usize, device: &Device) -> (ModelInput, ModelTargets) {
    let (s, c, h, w) = (cfg.slices, cfg.channels, cfg.height, cfg.width);
    let n = b * s * c * h * w;
    let images: Vec<f32> = (0..n)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0)
        .collect();
    let f = cfg.n_clinical;
    let clinical: Vec<f32> = (0..b * f).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
    let input = ModelInput::from_host(
        images,
        [b, s, c, h, w],
        clinical,
        vec![1.0; b * f],
        vec![0; b],
        device,
    );
    let rows: Vec<TargetRow> = (0..b)
        .map(|i| TargetRow {
            study: Some((i % 2 == 0, [i % 2 == 0, false, false, false, false])),
            slices: Some(vec![
                [i % 2 == 0, i % 2 == 0, false, false, false, false];
                s
            ]),
            mortality: Some(i % 2 == 0),
            mrs: Some(3),
            facts: Some(HematomaFacts {
                hematoma_ml: if i % 2 == 0 { 20.0 } else { 0.0 },
                intraventricular_ml: 0.0,
                infratentorial: false,
            }),
        })
        .collect();
    (input, ModelTargets::from_rows(&rows, s, device))
}

/// The backend under test (`HN_DEVICE`), without autodiff.
fn base_device() -> (Device, &'static str) {
    match std::env::var("HN_DEVICE").as_deref() {
        #[cfg(feature = "cuda")]
        Ok("cuda") => (Device::cuda(0), "burn-cuda"),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        Ok("libtorch") => (Device::libtorch(), "burn-tch"),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        Ok("libtorch-cuda") => (Device::libtorch_cuda(0), "burn-tch-cuda"),
        Ok("flex") | Err(_) => (Device::flex(), "burn-flex"),
        Ok(other) => panic!("HN_DEVICE={other}: not enabled in this build (flex, cuda, libtorch)"),
    }
}

/// (median, min) of the timed iterations.
fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ms[ms.len() / 2], ms[0])
}

fn main() {
    let started = Instant::now();
    if std::env::var("HN_CONV").as_deref() == Ok("burn") {
        hn_model::conv::set_fast_kernels(false);
    }
    let b = arg(1, 2);
    let mut cfg = HemorrhageNetConfig::new()
        .with_slices(arg(2, 24))
        .with_height(arg(3, 128))
        .with_width(arg(3, 128));
    if let Ok(w) = std::env::var("HN_WIDTHS") {
        cfg.widths = w
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .expect("HN_WIDTHS: comma-separated integers")
            })
            .collect();
    }
    let iters = arg(4, 5);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let shape = format!(
        "{}x{}x{}x{}x{}",
        b, cfg.slices, cfg.channels, cfg.height, cfg.width
    );

    // Train step: forward + loss + backward + AdamW, with autodiff.
    let (base, name) = base_device();
    let name = if hn_model::conv::fast_kernels_on() {
        name.to_string()
    } else {
        format!("{name}+burn-kernels")
    };
    let device = base.clone().autodiff();
    device.seed(0);
    let mut model = Trainable::new(&cfg, &MultiTaskLossConfig::new(), &device);
    let mut optim = AdamWConfig::new().init();
    let (input, targets) = batch(&cfg, b, &device);
    let mut times = vec![];
    let mut first = 0.0;
    // `HN_INFERENCE_ONLY=1` (for profiling inference): one untimed train step only.
    let train_iters = if std::env::var_os("HN_INFERENCE_ONLY").is_some() {
        1
    } else {
        iters + 2
    };
    // Process start to the end of the first train step: what a user waits before training runs.
    let mut cold = 0.0;
    for i in 0..train_iters {
        let t = Instant::now();
        let (_, loss) = model.forward(input.clone(), &targets);
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = optim.step(1e-4, model, grads);
        // Block until the update is done (flex is synchronous, but keep it honest).
        let _ = model.loss.log_vars.val().into_data();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            first = ms;
            cold = started.elapsed().as_secs_f64() * 1e3;
        }
        if i >= 2 {
            times.push(ms);
        }
    }
    let (median, min) = if times.is_empty() {
        (first, first)
    } else {
        stats(times)
    };
    println!(
        "{{\"impl\":\"{name}\",\"what\":\"train_step\",\"shape\":\"{shape}\",\"threads\":\"{threads}\",\"median_ms\":{median:.1},\"min_ms\":{min:.1},\"first_ms\":{first:.1},\"process_to_first_step_ms\":{cold:.1},\"params\":{}}}",
        model.net.param_count()
    );

    // Inference: the plain device, no autodiff.
    let device = base;
    let net = model.net.valid().to_device(&device);
    let (input, _) = batch(&cfg, b, &device);
    let mut times = vec![];
    let mut first = 0.0;
    for i in 0..iters + 2 {
        let t = Instant::now();
        let out = net.forward(input.clone());
        let _ = out.probabilities().any.into_data();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            first = ms;
        }
        if i >= 2 {
            times.push(ms);
        }
    }
    let (median, min) = stats(times);
    println!(
        "{{\"impl\":\"{name}\",\"what\":\"inference\",\"shape\":\"{shape}\",\"threads\":\"{threads}\",\"median_ms\":{median:.1},\"min_ms\":{min:.1},\"first_ms\":{first:.1},\"gflop_per_study\":{:.3}}}",
        cfg.flops_per_study() as f64 / 1e9
    );
}
