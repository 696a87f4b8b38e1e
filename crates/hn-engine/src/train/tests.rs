//! Tests of the schedule, configs, determinism and calibration.

#[allow(unused_imports)]
use super::*;

#[test]
fn warmup_then_cosine_to_the_floor() {
    let cfg = TrainConfig {
        epochs: 10,
        lr: 1e-3,
        warmup_epochs: 1.0,
        min_lr_ratio: 0.1,
        ..TrainConfig::default()
    };
    let spe = 10;
    let lrs: Vec<f64> = (0..100).map(|s| learning_rate(&cfg, s, spe)).collect();
    // Warm-up rises strictly, peaks at lr, then never rises again, ending near the floor.
    for s in 1..10 {
        assert!(lrs[s] > lrs[s - 1]);
    }
    assert!(lrs[0] < 2e-4);
    let peak = lrs.iter().cloned().fold(0.0, f64::max);
    assert!((peak - 1e-3).abs() < 1e-5, "peak {peak}");
    for s in 11..100 {
        assert!(lrs[s] <= lrs[s - 1] + 1e-15);
    }
    assert!((lrs[99] - 1e-4).abs() < 2e-6, "end {}", lrs[99]);
}

#[test]
fn invalid_configs_are_rejected_with_the_field() {
    let mut c = TrainConfig::default();
    c.net.n_heads = 3;
    assert!(c.validate().unwrap_err().contains("n_heads"));
    let c = TrainConfig {
        hide_clinical: 1.5,
        ..TrainConfig::default()
    };
    assert!(c.validate().unwrap_err().contains("hide_clinical"));
    let c = TrainConfig {
        lr: f64::NAN,
        ..TrainConfig::default()
    };
    assert!(c.validate().unwrap_err().contains("lr"));
    let c = TrainConfig {
        encoder_lr_ratio: 1.5,
        ..TrainConfig::default()
    };
    assert!(c.validate().unwrap_err().contains("encoder_lr_ratio"));
    let c = TrainConfig {
        pretrain_clean_per_bleeding: Some(-1.0),
        ..TrainConfig::default()
    };
    assert!(
        c.validate()
            .unwrap_err()
            .contains("pretrain_clean_per_bleeding")
    );
    let c = TrainConfig {
        pretrain_cell_loss: Some(f64::INFINITY),
        ..TrainConfig::default()
    };
    assert!(c.validate().unwrap_err().contains("pretrain_cell_loss"));
}

/// A pre-training epoch with a clean-slice ratio holds every bleeding slice and that many
/// distinct clean ones (never more than exist), and the next epoch draws other clean ones.
#[test]
fn balanced_pretraining_epochs_keep_every_bleeding_slice_and_redraw_the_clean_ones() {
    let bleeding: Vec<(usize, usize)> = (0..10).map(|k| (0, k)).collect();
    let clean: Vec<(usize, usize)> = (0..100).map(|k| (1 + k / 16, k % 16)).collect();
    assert_eq!(clean_per_epoch(10, 100, 1.5), 15);
    assert_eq!(clean_per_epoch(10, 100, 0.0), 0);
    assert_eq!(clean_per_epoch(10, 100, 50.0), 100, "capped at what exists");
    let draw = |epoch: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(epoch);
        epoch_slices(&bleeding, &clean, 15, &mut rng)
    };
    let (a, b) = (draw(0), draw(1));
    for e in [&a, &b] {
        assert_eq!(e.len(), 25);
        assert_eq!(&e[..10], &bleeding[..]);
        let picked: std::collections::BTreeSet<_> = e[10..].iter().collect();
        assert_eq!(picked.len(), 15, "distinct clean slices");
        assert!(e[10..].iter().all(|p| clean.contains(p)));
    }
    assert_ne!(a[10..], b[10..], "a fresh draw per epoch");
    assert_eq!(draw(0), a, "deterministic in the seed");
}

#[test]
fn the_clean_slice_ratio_is_read_from_toml_and_absent_by_default() {
    assert_eq!(TrainConfig::default().pretrain_clean_per_bleeding, None);
    let c: TrainConfig = toml::from_str("pretrain_clean_per_bleeding = 1.0").unwrap();
    assert_eq!(c.pretrain_clean_per_bleeding, Some(1.0));
    // Absent is not written, so cards of configs without it keep their bytes.
    assert!(
        !toml::to_string(&TrainConfig::default())
            .unwrap()
            .contains("pretrain_clean")
    );
}

#[test]
fn test_time_augmentation_is_read_from_toml_and_defaults_to_flip() {
    assert_eq!(TrainConfig::default().tta, TestTimeAugmentation::Flip);
    let c: TrainConfig = toml::from_str("tta = \"none\"").unwrap();
    assert_eq!(c.tta, TestTimeAugmentation::None);
    let e = toml::from_str::<TrainConfig>("tta = \"rotate\"").unwrap_err();
    assert!(e.to_string().contains("rotate"), "{e}");
}

/// With the encoder's rate at 0 an AdamW step leaves every parameter that
/// `encode_slices` reads untouched and still moves the rest of the network; at a rate of 1
/// the encoder moves too.
#[test]
fn encoder_group_rate_holds_the_encoder_and_moves_the_rest() {
    use hn_model::{HematomaFacts, ModelInput, TargetRow};
    let device = Device::flex().autodiff();
    device.seed(3);
    let cfg = HemorrhageNetConfig::tiny();
    let (b, s, c, h, w) = (2, cfg.slices, cfg.channels, cfg.height, cfg.width);
    let input = |d: &Device| {
        let images: Vec<f32> = (0..b * s * c * h * w)
            .map(|i| ((i * 7919) % 101) as f32 / 101.0)
            .collect();
        let f = cfg.n_clinical;
        ModelInput::from_host(
            images,
            [b, s, c, h, w],
            (0..b * f).map(|i| i as f32 / 10.0).collect(),
            vec![1.0; b * f],
            vec![0; b],
            d,
        )
    };
    let rows: Vec<TargetRow> = (0..b)
        .map(|i| TargetRow {
            study: Some((i == 0, [i == 0, false, false, false, false])),
            slices: None,
            mortality: Some(i == 0),
            mrs: Some(2 + i as u8),
            facts: Some(HematomaFacts {
                hematoma_ml: 10.0 * (1 - i) as f64,
                intraventricular_ml: 0.0,
                infratentorial: false,
            }),
        })
        .collect();
    let targets = ModelTargets::from_rows(&rows, s, &device);
    let slices = |net: &HemorrhageNet| -> Vec<f32> {
        let x = input(&Device::flex()).images.reshape([b * s, c, h, w]);
        let m = Tensor::<1, Int>::from_data(
            TensorData::new(vec![0i64; b * s], [b * s]),
            &Device::flex(),
        );
        net.encode_slices(x, m)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let outputs = |net: &HemorrhageNet| -> Vec<f32> {
        net.forward(input(&Device::flex()))
            .mortality_logit
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    for (ratio, encoder_moves) in [(0.0, false), (1.0, true)] {
        let model = Trainable::new(&cfg, &MultiTaskLossConfig::new(), &device);
        let before = model.net.valid();
        let group = model.net.slice_encoder_params();
        let mut optim = AdamWConfig::new().init();
        let (_, loss) = model.forward(input(&device), &targets);
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        let model = optim.step(grouped_lr(1e-2, &group, 1e-2 * ratio), model, grads);
        let after = model.net.valid();
        assert_eq!(
            slices(&before) != slices(&after),
            encoder_moves,
            "ratio {ratio}: encoder features"
        );
        assert_ne!(
            outputs(&before),
            outputs(&after),
            "ratio {ratio}: the rest moves"
        );
    }
    // Frozen (ratio 0 in training): the encoder's parameters get no gradient at all.
    let model = Trainable::new(&cfg, &MultiTaskLossConfig::new(), &device);
    let group = model.net.slice_encoder_params();
    let model = model.set_require_grad_group(group.clone(), false);
    let before = model.net.valid();
    let (_, loss) = model.forward(input(&device), &targets);
    let grads = GradientsParams::from_grads(loss.total.backward(), &model);
    let mut ids = Vec::new();
    model.net.visit(&mut ParamIds(&mut ids));
    let (frozen, free): (Vec<_>, Vec<_>) = ids.into_iter().partition(|id| group.matches(id, None));
    assert!(!frozen.is_empty() && !free.is_empty());
    assert!(frozen.iter().all(|id| grads.get::<1>(*id).is_none()
        && grads.get::<2>(*id).is_none()
        && grads.get::<4>(*id).is_none()));
    assert!(free.iter().any(|id| grads.get::<2>(*id).is_some()));
    let model = AdamWConfig::new().init().step(1e-2, model, grads);
    assert_eq!(
        slices(&before),
        slices(&model.net.valid()),
        "frozen encoder moved"
    );
    assert_ne!(outputs(&before), outputs(&model.net.valid()));
}

/// Collects parameter ids.
struct ParamIds<'a>(&'a mut Vec<hn_model::burn::module::ParamId>);
impl hn_model::burn::module::ModuleVisitor for ParamIds<'_> {
    fn visit_float<const D: usize>(&mut self, param: &hn_model::burn::module::Param<Tensor<D>>) {
        self.0.push(param.id);
    }
}

#[test]
fn cell_labels_lie_inside_the_slice_labels_and_follow_a_mirrored_slice() {
    let synth = hn_data::synth::SynthConfig {
        size: 64,
        n_slices: Some(20),
        prevalence_bleed: 1.0,
        ..Default::default()
    };
    let pre = crate::sample::default_preprocess(8, 32);
    let data = crate::dataset::synthetic(
        &synth,
        6,
        3,
        &pre,
        &crate::dataset::SplitConfig::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let net_cfg = hn_model::HemorrhageNetConfig::new()
        .with_slices(8)
        .with_height(32)
        .with_width(32)
        .with_widths(vec![8, 16, 16]);
    assert_eq!(net_cfg.feature_hw_for(32, 32), (4, 4));
    let mut bleeding_cells = 0;
    for smp in &data.samples {
        let g = hn_data::preprocess::CELL_LABEL_GRID;
        assert_eq!(smp.cell_labels.as_ref().unwrap().len(), 8 * g * g);
        let slices = smp.slice_labels.as_ref().unwrap();
        for sl in 0..8 {
            let rows = pretrain::cell_rows(smp, sl, &net_cfg, false).unwrap();
            assert_eq!(rows.len(), 16 * 6);
            // A label in a cell is a label of its slice (the same rule over fewer voxels).
            for cell in rows.chunks(6) {
                if cell[0] == 1.0 {
                    assert!(slices[sl].any);
                    bleeding_cells += 1;
                }
                for t in 0..5 {
                    assert!(cell[t + 1] == 0.0 || slices[sl].subtypes[t]);
                }
            }
            // Mirrored, the rows of each cell row come in reverse column order.
            let flipped = pretrain::cell_rows(smp, sl, &net_cfg, true).unwrap();
            for i in 0..4 {
                for j in 0..4 {
                    assert_eq!(
                        flipped[(i * 4 + j) * 6..][..6],
                        rows[(i * 4 + 3 - j) * 6..][..6]
                    );
                }
            }
        }
    }
    assert!(bleeding_cells > 10, "{bleeding_cells}");
}
