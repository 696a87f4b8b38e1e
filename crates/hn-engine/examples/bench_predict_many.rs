//! Per-study scoring time of `Predictor::predict` one study at a time against
//! `Predictor::predict_many` with several studies per forward, on the demo's network and
//! scoring settings (10 MC passes, mirror test-time augmentation), CPU (`flex`) backend.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p hn-engine --example bench_predict_many -- [studies] [repeats]
//! ```
//!
//! `HN_GRID=24,128` sets slices and in-plane size (default: the demo's, `TrainConfig::default`).
//!
//! Prints one JSON line per batch size: milliseconds per study (best and median of `repeats`
//! after one warm-up), and the ratio to one study per forward. The network is untrained: the
//! time does not depend on the weights.

use std::time::Instant;

use hn_data::synth::generate_study;
use hn_engine::checkpoint::{Calibration, DatasetDigest, INTENDED_USE, ModelCard, TemperatureSet};
use hn_engine::dataset::synth_config_for;
use hn_engine::infer::{InputInfo, PredictOptions, Predictor};
use hn_engine::metrics::ReferralPolicy;
use hn_engine::sample::{StudySample, default_preprocess};
use hn_engine::scoring::TestTimeAugmentation;
use hn_engine::train::TrainConfig;
use hn_model::burn::prelude::Device;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (n, repeats) = (arg(1, 8), arg(2, 3));
    let mut net_cfg = TrainConfig::default().net;
    if let Ok(g) = std::env::var("HN_GRID") {
        let v: Vec<usize> = g.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        if let [slices, size] = v[..] {
            net_cfg.slices = slices;
            net_cfg.size = size;
        }
    }
    let (s, size) = (net_cfg.slices, net_cfg.size);
    let device = Device::flex();
    device.seed(1);
    let net = net_cfg.model_config(3).init(&device);
    let pre = default_preprocess(s, size);
    let card = ModelCard {
        card_version: 1,
        code_version: "bench".into(),
        created_unix: 0,
        preprocess: pre.clone(),
        train_config: serde_json::json!({}),
        dataset: DatasetDigest {
            name: "bench".into(),
            synthetic: true,
            n_train: 0,
            n_validation: 0,
            n_test: 0,
            sha256: String::new(),
            train_labels: None,
        },
        epoch: 1,
        validation: serde_json::json!({}),
        calibration: Some(Calibration {
            temperatures: TemperatureSet::default(),
            thresholds: [0.5; 6],
            uncertainty: Default::default(),
            referral: ReferralPolicy {
                threshold: 0.5,
                target_rate: 0.1,
                validation_rate: 0.1,
            },
            mc_passes: hn_engine::scoring::DEFAULT_MC_PASSES,
            tta: TestTimeAugmentation::Flip,
            mortality_threshold: 0.5,
            facts: None,
            distance: None,
        }),
        intended_use: INTENDED_USE.into(),
        envelope: None,
        mr_envelope: None,
        mr_calibration: None,
    };
    let synth = synth_config_for(s, size);
    let samples: Vec<StudySample> = (0..n)
        .map(|i| StudySample::from_synthetic(&generate_study(&synth, 7, i), &pre).unwrap())
        .collect();
    let info = |smp: &StudySample| InputInfo {
        format: hn_imaging::InputFormat::Nifti,
        modality: "CT".into(),
        dims: [size, size, s],
        spacing_mm: smp.spacing_mm,
        model_grid: [s, size, size],
        model_spacing_mm: smp.spacing_mm,
        windows: pre.windows.clone(),
        mr: None,
        clinical_features_given: 0,
    };
    let items: Vec<(&StudySample, InputInfo)> = samples.iter().map(|x| (x, info(x))).collect();
    let mut base = f64::NAN;
    for batch in [1usize, 2, 4, 8].into_iter().filter(|b| *b <= n) {
        let p = Predictor::new(net.clone(), card.clone(), device.clone())
            .unwrap()
            .with_options(PredictOptions {
                batch,
                ..Default::default()
            });
        let _ = p.predict_many(&items[..batch]);
        let mut times: Vec<f64> = (0..repeats)
            .map(|_| {
                let t = Instant::now();
                let out = p.predict_many(&items);
                assert_eq!(out.len(), n);
                t.elapsed().as_secs_f64() * 1000.0 / n as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let best = times[0];
        if batch == 1 {
            base = best;
        }
        println!(
            "{{\"what\":\"predict_many\",\"studies\":{n},\"batch\":{batch},\"best_ms_per_study\":{best:.1},\"median_ms_per_study\":{:.1},\"speedup_vs_batch_1\":{:.2},\"grid\":[{s},{size},{size}]}}",
            times[times.len() / 2],
            base / best
        );
    }
}
