//! Training: AdamW with a cosine schedule after a linear warm-up, augmentation, modality
//! dropout, validation every epoch, early stopping, atomic checkpoints with a model card, and
//! `resume` after a crash. After training, the best model is calibrated on validation
//! (temperatures, Youden thresholds, referral policy) and its card updated.
//!
//! Determinism: every random draw (initial weights, shuffling, augmentation, dropout masks) is
//! seeded from `TrainConfig::seed`; on the CPU backend the same seed and data give the same
//! weights and metrics (tested).

use std::path::{Path, PathBuf};

use hn_data::splits::Split;
use hn_model::burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use hn_model::burn::prelude::*;
use hn_model::{HemorrhageNet, HemorrhageNetConfig, ModelTargets, MultiTaskLossConfig, Trainable};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{AugmentConfig, augment};
use crate::checkpoint::{
    self, Calibration, CheckpointError, INTENDED_USE, ModelCard, TemperatureSet, io_err, read_json,
    write_dir_atomic, write_json,
};
use crate::dataset::{Dataset, SplitConfig};
use crate::metrics;
use crate::sample::{InputMask, StudySample, make_batch};
use crate::scoring::{StudyScores, TestTimeAugmentation, score};
use crate::uncertainty::UncertaintyMeasure;

/// Network section of the training config (the rest of `HemorrhageNetConfig` follows the data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSection {
    /// Slices per study (model grid).
    pub slices: usize,
    /// In-plane size (model grid is size × size).
    pub size: usize,
    pub widths: Vec<usize>,
    pub n_heads: usize,
    pub n_gat_layers: usize,
    pub dropout: f64,
    pub neighbour_slices: usize,
    pub d_attn: usize,
}

impl Default for NetSection {
    fn default() -> Self {
        NetSection {
            slices: 16,
            size: 64,
            widths: vec![16, 32, 48, 64],
            n_heads: 4,
            n_gat_layers: 1,
            dropout: 0.1,
            neighbour_slices: 0,
            d_attn: 32,
        }
    }
}

impl NetSection {
    pub fn model_config(&self, channels: usize) -> HemorrhageNetConfig {
        HemorrhageNetConfig::new()
            .with_slices(self.slices)
            .with_channels(channels)
            .with_height(self.size)
            .with_width(self.size)
            .with_widths(self.widths.clone())
            .with_n_heads(self.n_heads)
            .with_n_gat_layers(self.n_gat_layers)
            .with_dropout(self.dropout)
            .with_neighbour_slices(self.neighbour_slices)
            .with_d_attn(self.d_attn)
    }
}

/// `hemorrhagenet train` configuration (TOML; every field defaulted, unknown fields rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of weights, shuffling, augmentation and dropout.
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    pub weight_decay: f64,
    /// Linear warm-up length in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// Final learning rate as a fraction of the peak (cosine floor).
    pub min_lr_ratio: f64,
    /// Stop after this many epochs without a better validation score (0 = never).
    pub patience: usize,
    /// Gradient-norm clipping (0 = off).
    pub grad_clip: f64,
    /// Probability that a batch hides every clinical value (modality dropout; also what makes
    /// the image-only ablation meaningful).
    pub hide_clinical: f64,
    /// Probability that a batch hides the images (clinical-only ablation).
    pub hide_images: f64,
    /// Positive-class weight of the bleed label (1 = none).
    pub pos_weight_any: f64,
    /// Epochs of encoder pre-training on single slices mixed across studies before the
    /// end-to-end epochs (0 = none; skipped with a warning when the training split has no
    /// slice labels). See `hn_model::pretrain`.
    pub pretrain_epochs: usize,
    /// Slices per pre-training batch.
    pub pretrain_batch: usize,
    /// Learning rate of the pre-trained slice encoder in the end-to-end epochs, as a fraction
    /// of `lr` (1 = no difference, 0 = frozen: no gradient is computed through the CNN). Only
    /// applies when pre-training ran; protects what the encoder learnt from single slices from
    /// the end-to-end warm-up back to the full rate (docs/TRAINING.md).
    pub encoder_lr_ratio: f64,
    /// MC-dropout passes for uncertainty at calibration and prediction.
    pub mc_passes: usize,
    /// Test-time augmentation of calibration, evaluation and prediction (`"flip"` or
    /// `"none"`; recorded in the card so all three score the same way). The per-epoch
    /// validation that picks the best epoch uses one plain pass.
    pub tta: TestTimeAugmentation,
    /// Fraction of validation cases the referral policy should refer.
    pub target_referral_rate: f64,
    pub net: NetSection,
    pub augment: AugmentConfig,
    pub split: SplitConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 42,
            epochs: 12,
            batch_size: 8,
            lr: 2e-3,
            weight_decay: 1e-4,
            warmup_epochs: 1.0,
            min_lr_ratio: 0.02,
            patience: 4,
            grad_clip: 5.0,
            hide_clinical: 0.15,
            hide_images: 0.1,
            pos_weight_any: 1.0,
            pretrain_epochs: 3,
            pretrain_batch: 64,
            encoder_lr_ratio: 0.2,
            mc_passes: crate::scoring::DEFAULT_MC_PASSES,
            tta: TestTimeAugmentation::Flip,
            target_referral_rate: 0.1,
            net: NetSection::default(),
            augment: AugmentConfig::default(),
            split: SplitConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Load from TOML; errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| TrainError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        cfg.validate().map_err(|msg| TrainError::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Reject values that cannot train.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.net;
        if self.epochs == 0 || self.batch_size == 0 || self.pretrain_batch == 0 {
            return Err("epochs, batch_size and pretrain_batch must be ≥ 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr must be positive, got {}", self.lr));
        }
        if n.slices == 0 || n.size < 8 || n.widths.is_empty() {
            return Err("net: slices ≥ 1, size ≥ 8 and at least one width are required".into());
        }
        let d = *n.widths.last().unwrap();
        if n.n_heads == 0 || !d.is_multiple_of(n.n_heads) {
            return Err(format!(
                "net: n_heads ({}) must divide the last width ({d})",
                n.n_heads
            ));
        }
        if !(self.encoder_lr_ratio >= 0.0 && self.encoder_lr_ratio <= 1.0) {
            return Err(format!(
                "encoder_lr_ratio must be in [0, 1], got {}",
                self.encoder_lr_ratio
            ));
        }
        for (name, p) in [
            ("hide_clinical", self.hide_clinical),
            ("hide_images", self.hide_images),
            ("target_referral_rate", self.target_referral_rate),
            ("net.dropout", n.dropout),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be in [0, 1], got {p}"));
            }
        }
        Ok(())
    }
}

/// Training errors.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("{0}")]
    Invalid(String),
}

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    /// Mean unweighted loss per task (`hn_model::TASKS`: study, slice, mortality, mrs, facts).
    pub train_task_losses: [f64; hn_model::TASKS.len()],
    /// Learned task weights `exp(−s_t)` at the end of the epoch.
    pub task_weights: [f64; hn_model::TASKS.len()],
    pub lr_end: f64,
    pub val: ValMetrics,
    pub seconds: f64,
}

/// Validation metrics used for model selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ValMetrics {
    pub auc_any: Option<f64>,
    /// Mean AUC over subtypes with both classes present.
    pub auc_subtypes_mean: Option<f64>,
    pub auc_mortality: Option<f64>,
    /// Slice-level AUC of P(bleed on this slice) over every labelled validation slice: a
    /// diagnostic of the slice head (not part of the selection score).
    #[serde(default)]
    pub auc_slice_any: Option<f64>,
    /// Mean of the available AUCs: the selection score.
    pub score: f64,
}

/// `last/state.json`: where training stands, for `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    pub step: usize,
    pub best_score: f64,
    pub best_epoch: usize,
    pub epochs_since_best: usize,
    pub history: Vec<EpochRecord>,
    /// The config this run started with (resume refuses a different one).
    pub config: TrainConfig,
    pub dataset_sha256: String,
    pub stopped_early: bool,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub model_dir: PathBuf,
    pub state: TrainState,
    pub calibration: Calibration,
}

/// Progress events for the face layer (bars, logs).
pub enum Progress<'a> {
    Start {
        epochs: usize,
        steps_per_epoch: usize,
        resumed_from: usize,
    },
    Step {
        epoch: usize,
        step: usize,
        loss: f64,
    },
    Epoch(&'a EpochRecord, bool),
    /// A pre-training step (before the end-to-end epochs).
    PretrainStep {
        epoch: usize,
        epochs: usize,
        step: usize,
        steps: usize,
        loss: f64,
    },
    /// A pre-training epoch finished.
    PretrainEpoch(&'a PretrainRecord),
    Calibrating,
}

/// One pre-training epoch, as written to `pretrain.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainRecord {
    pub epoch: usize,
    /// Mean slice loss (any + subtypes given a bleed).
    pub loss: f64,
    pub slices: usize,
    pub seconds: f64,
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, then cosine to
/// `min_lr_ratio·lr`. (Computed here rather than with burn's schedulers because the step is
/// driven by our loop and must survive `--resume` exactly, as a pure function of the step.)
pub fn learning_rate(cfg: &TrainConfig, step: usize, steps_per_epoch: usize) -> f64 {
    let total = (cfg.epochs * steps_per_epoch).max(1) as f64;
    let warm = (cfg.warmup_epochs * steps_per_epoch as f64).max(0.0);
    warmup_cosine(cfg, step, warm, total)
}

/// `cfg.lr` after a linear warm-up of `warm` steps, then a cosine to `min_lr_ratio·lr` at
/// step `total` (shared by the end-to-end epochs and the encoder pre-training).
fn warmup_cosine(cfg: &TrainConfig, step: usize, warm: f64, total: f64) -> f64 {
    let s = step as f64;
    if s < warm {
        return cfg.lr * (s + 1.0) / (warm + 1.0);
    }
    let t = ((s - warm) / (total - warm).max(1.0)).clamp(0.0, 1.0);
    let floor = cfg.lr * cfg.min_lr_ratio;
    floor + (cfg.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// AdamW with the config's weight decay and gradient clipping.
fn adamw(cfg: &TrainConfig) -> AdamWConfig {
    let adamw = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32);
    if cfg.grad_clip > 0.0 {
        adamw.with_grad_clipping(Some(
            hn_model::burn::grad_clipping::GradientClippingConfig::Norm(cfg.grad_clip as f32),
        ))
    } else {
        adamw
    }
}

fn epoch_order(n: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut v = n.to_vec();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    v.shuffle(&mut rng);
    v
}

/// Validation metrics from scores.
pub fn val_metrics(samples: &[StudySample], idx: &[usize], scores: &[StudyScores]) -> ValMetrics {
    let auc = |s: Vec<f64>, y: Vec<bool>| metrics::roc_auc(&s, &y).ok();
    let mut m = ValMetrics::default();
    let lab: Vec<_> = idx.iter().map(|&i| samples[i].labels).collect();
    let known: Vec<usize> = (0..idx.len()).filter(|&k| lab[k].is_some()).collect();
    m.auc_any = auc(
        known.iter().map(|&k| scores[k].any_logit).collect(),
        known.iter().map(|&k| lab[k].unwrap().any).collect(),
    );
    let subs: Vec<f64> = (0..5)
        .filter_map(|j| {
            auc(
                known
                    .iter()
                    .map(|&k| scores[k].p_subtypes(1.0, 1.0)[j])
                    .collect(),
                known.iter().map(|&k| lab[k].unwrap().subtypes[j]).collect(),
            )
        })
        .collect();
    m.auc_subtypes_mean = (!subs.is_empty()).then(|| subs.iter().sum::<f64>() / subs.len() as f64);
    let mk: Vec<usize> = (0..idx.len())
        .filter(|&k| samples[idx[k]].outcomes.mortality_30d.is_some())
        .collect();
    m.auc_mortality = auc(
        mk.iter().map(|&k| scores[k].mortality_logit).collect(),
        mk.iter()
            .map(|&k| samples[idx[k]].outcomes.mortality_30d.unwrap())
            .collect(),
    );
    let (mut slice_s, mut slice_y) = (Vec::new(), Vec::new());
    for (k, &i) in idx.iter().enumerate() {
        if let Some(labels) = &samples[i].slice_labels {
            slice_s.extend(scores[k].slice_any.iter().copied());
            slice_y.extend(labels.iter().map(|l| l.any));
        }
    }
    m.auc_slice_any = auc(slice_s, slice_y);
    let parts: Vec<f64> = [m.auc_any, m.auc_subtypes_mean, m.auc_mortality]
        .into_iter()
        .flatten()
        .collect();
    m.score = if parts.is_empty() {
        0.0
    } else {
        parts.iter().sum::<f64>() / parts.len() as f64
    };
    m
}

/// A study whose every slice has labels (what pre-training can use).
fn has_slice_labels(s: &StudySample) -> bool {
    s.slice_labels
        .as_ref()
        .is_some_and(|l| l.len() == s.shape[0])
}

/// `lr` for every parameter and `group_lr` for those of `group`, in the form burn's
/// optimizer takes per-parameter rates (`ModuleLearningRate`, built through its
/// `ModuleLrScheduler` with constant sub-schedules: the schedule itself is ours, see
/// [`learning_rate`]).
fn grouped_lr(
    lr: f64,
    group: &hn_model::burn::module::ParamGroup,
    group_lr: f64,
) -> hn_model::burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate {
    use hn_model::burn::optim::lr_scheduler::constant::ConstantLr;
    use hn_model::burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
    ModuleLrScheduler::new(ConstantLr::from(lr))
        .with_group(group.clone(), ConstantLr::from(group_lr))
        .step()
}

/// Encoder pre-training on slices mixed across studies (see `hn_model::pretrain` for why):
/// `cfg.pretrain_epochs` passes over every labelled slice of the training split in shuffled
/// batches of `cfg.pretrain_batch`, each slice with its `k` context slices, augmented like
/// the studies (without slice dropout), AdamW with a short warm-up then cosine. Returns the
/// model with the trained encoder and the per-epoch records.
fn pretrain_encoder(
    cfg: &TrainConfig,
    data: &Dataset,
    train_idx: &[usize],
    windows: &[(f32, f32)],
    model: Trainable,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Trainable, Vec<PretrainRecord>), TrainError> {
    let pairs: Vec<(usize, usize)> = train_idx
        .iter()
        .filter(|&&i| has_slice_labels(&data.samples[i]))
        .flat_map(|&i| (0..data.samples[i].shape[0]).map(move |k| (i, k)))
        .collect();
    if pairs.is_empty() {
        // CQ500 and most manifests have study labels only: nothing to pre-train on.
        tracing::warn!(
            "encoder pre-training skipped: no study in the training split has slice labels"
        );
        return Ok((model, Vec::new()));
    }
    let Trainable { net, loss } = model;
    let mut pre = hn_model::SlicePretrainer::new(net, device);
    let mut optim = adamw(cfg).init();
    let k = cfg.net.neighbour_slices;
    let aug = AugmentConfig {
        slice_dropout: 0.0,
        ..cfg.augment
    };
    let bs = cfg.pretrain_batch;
    let steps = pairs.len().div_ceil(bs);
    let total = (steps * cfg.pretrain_epochs) as f64;
    let warm = (total * 0.05).max(1.0);
    let mut records = Vec::new();
    let mut step_no = 0usize;
    for epoch in 0..cfg.pretrain_epochs {
        let t0 = std::time::Instant::now();
        let mut order = pairs.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5EE_D0F5_11CE ^ (epoch as u64) << 40);
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for (b, chunk) in order.chunks(bs).enumerate() {
            let [s, c, h, w] = data.samples[chunk[0].0].shape;
            let ctx = 2 * k + 1;
            let mut x = Vec::with_capacity(chunk.len() * ctx * c * h * w);
            let mut y = Vec::with_capacity(chunk.len() * 6);
            let mut modality = Vec::with_capacity(chunk.len());
            for &(i, sl) in chunk {
                let smp = &data.samples[i];
                let plane = c * h * w;
                let mut stack = Vec::with_capacity(ctx * plane);
                for off in 0..ctx {
                    let src = (sl + off).saturating_sub(k).min(s - 1);
                    stack.extend_from_slice(&smp.images[src * plane..(src + 1) * plane]);
                }
                // The context slices are stacked as channels in slice order, as in the model.
                x.extend(augment(
                    &stack,
                    [ctx, c, h, w],
                    windows,
                    None,
                    &aug,
                    &mut rng,
                ));
                let labels = smp.slice_labels.as_ref().expect("filtered above");
                y.extend(
                    crate::sample::label_row(&labels[sl]).map(|v| if v { 1.0f32 } else { 0.0 }),
                );
                modality.push(smp.modality);
            }
            let n = chunk.len();
            let xt = Tensor::<4>::from_data(TensorData::new(x, [n, ctx * c, h, w]), device);
            let yt = Tensor::<2>::from_data(TensorData::new(y, [n, 6]), device);
            let mt = Tensor::<1, Int>::from_data(TensorData::new(modality, [n]), device);
            let l = hn_model::SlicePretrainer::loss(pre.forward(xt, mt), yt);
            let value = f64::from(l.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(TrainError::Invalid(format!(
                    "pre-training loss became {value} at epoch {} step {b}; lower lr",
                    epoch + 1
                )));
            }
            loss_sum += value;
            let lr = warmup_cosine(cfg, step_no, warm, total);
            let grads = GradientsParams::from_grads(l.backward(), &pre);
            pre = optim.step(lr, pre, grads);
            step_no += 1;
            progress(Progress::PretrainStep {
                epoch: epoch + 1,
                epochs: cfg.pretrain_epochs,
                step: b + 1,
                steps,
                loss: value,
            });
        }
        let rec = PretrainRecord {
            epoch: epoch + 1,
            loss: loss_sum / steps as f64,
            slices: pairs.len(),
            seconds: t0.elapsed().as_secs_f64(),
        };
        progress(Progress::PretrainEpoch(&rec));
        records.push(rec);
    }
    Ok((
        Trainable {
            net: pre.into_net(),
            loss,
        },
        records,
    ))
}

fn save_last(
    dir: &Path,
    model: &Trainable,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> Result<(), CheckpointError> {
    write_dir_atomic(dir, |tmp| {
        let p = tmp.join("trainable.bpk");
        model
            .clone()
            .save_file(&p)
            .map_err(|e| CheckpointError::Format {
                path: p.clone(),
                msg: e.to_string(),
            })?;
        let o = tmp.join("optimizer.bpk");
        optim
            .to_record()
            .save(&o)
            .map_err(|e| CheckpointError::Format {
                path: o.clone(),
                msg: e.to_string(),
            })?;
        write_json(&tmp.join("state.json"), state)
    })
}

fn load_last(
    dir: &Path,
    model: Trainable,
    optim: ModuleOptimizer,
) -> Result<(Trainable, ModuleOptimizer, TrainState), CheckpointError> {
    let dir = checkpoint::resolve_dir(dir).ok_or_else(|| CheckpointError::Format {
        path: dir.to_path_buf(),
        msg: "no checkpoint to resume from (state.json missing)".into(),
    })?;
    let state: TrainState = read_json(&dir.join("state.json"))?;
    let p = dir.join("trainable.bpk");
    let model = model
        .try_load_file(&p)
        .map_err(|e| CheckpointError::Format {
            path: p.clone(),
            msg: e.to_string(),
        })?;
    let o = dir.join("optimizer.bpk");
    let rec =
        hn_model::burn::optim::OptimizerRecord::load(&o).map_err(|e| CheckpointError::Format {
            path: o.clone(),
            msg: e.to_string(),
        })?;
    Ok((model, optim.load_record(rec), state))
}

/// Train on `data` into `out_dir` (`out_dir/model`, `out_dir/last`, `out_dir/history.json`).
/// With `resume`, continue from `out_dir/last`.
pub fn train(
    cfg: &TrainConfig,
    data: &Dataset,
    out_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainSummary, TrainError> {
    train_on(cfg, data, out_dir, resume, &[Device::flex()], progress)
}

/// [`train`] on `devices` (plain devices, main first; see [`crate::devices::parse_devices`]).
/// One device trains as usual; several split every batch into one shard per device and
/// average their gradients ([`crate::devices::data_parallel_grads`]). Validation,
/// calibration and checkpoints run on the main device.
pub fn train_on(
    cfg: &TrainConfig,
    data: &Dataset,
    out_dir: &Path,
    resume: bool,
    devices: &[Device],
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainSummary, TrainError> {
    let main_device = devices.first().cloned().unwrap_or_else(Device::flex);
    let workers: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
    cfg.validate().map_err(TrainError::Invalid)?;
    let train_idx = data.indices(Split::Train);
    let val_idx = data.indices(Split::Validation);
    if train_idx.is_empty() || val_idx.is_empty() {
        return Err(TrainError::Invalid(format!(
            "training needs studies in both train ({}) and validation ({}) splits",
            train_idx.len(),
            val_idx.len()
        )));
    }
    let shape = data.samples[0].shape;
    if shape[0] != cfg.net.slices || shape[2] != cfg.net.size || shape[3] != cfg.net.size {
        return Err(TrainError::Invalid(format!(
            "data grid [S, C, H, W] = {shape:?} differs from the net section ({} slices, {}²)",
            cfg.net.slices, cfg.net.size
        )));
    }
    let windows = crate::sample::default_preprocess(shape[0], shape[2]).windows;
    std::fs::create_dir_all(out_dir)
        .map_err(io_err(out_dir))
        .map_err(TrainError::from)?;
    let digest = data.digest();
    let model_cfg = cfg.net.model_config(shape[1]);
    let device = main_device.clone().autodiff();
    device.seed(cfg.seed);
    let loss_cfg = MultiTaskLossConfig::new().with_pos_weight_any(cfg.pos_weight_any);
    let mut model = Trainable::new(&model_cfg, &loss_cfg, &device);
    let mut optim = adamw(cfg).init();
    let last_dir = out_dir.join("last");
    let model_dir = out_dir.join("model");
    let steps_per_epoch = train_idx.len().div_ceil(cfg.batch_size);
    let mut state = TrainState {
        epoch: 0,
        step: 0,
        best_score: f64::NEG_INFINITY,
        best_epoch: 0,
        epochs_since_best: 0,
        history: Vec::new(),
        config: cfg.clone(),
        dataset_sha256: digest.sha256.clone(),
        stopped_early: false,
    };
    if resume {
        let (m, o, st) = load_last(&last_dir, model, optim)?;
        if st.config != *cfg {
            return Err(TrainError::Invalid(format!(
                "{}: the checkpoint was trained with a different config; resume with the same \
                 config (or start a new output folder)",
                last_dir.display()
            )));
        }
        if st.dataset_sha256 != digest.sha256 {
            return Err(TrainError::Invalid(format!(
                "{}: the checkpoint was trained on different data (digest {} vs {})",
                last_dir.display(),
                &st.dataset_sha256[..12],
                &digest.sha256[..12]
            )));
        }
        model = m;
        optim = o;
        state = st;
    }
    if !resume && state.epoch == 0 && cfg.pretrain_epochs > 0 {
        device.seed(cfg.seed ^ 0x9E37);
        let (m, records) =
            pretrain_encoder(cfg, data, &train_idx, &windows, model, &device, progress)?;
        model = m;
        let path = out_dir.join("pretrain.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&records).expect("records serialise"),
        )
        .map_err(io_err(&path))
        .map_err(TrainError::from)?;
    }
    // The pre-trained encoder's own rate, a pure function of config and data so that a
    // resumed run steps exactly as an uninterrupted one.
    // `Some` only for a rate strictly between 0 and 1: at 0 the encoder is frozen outright
    // instead — its parameters stop requiring gradients, so the backward pass never enters the
    // CNN (the end-to-end epochs get cheaper, not just slower to move it). Re-applied on every
    // start, resume included: the flag is not checkpointed.
    let mut encoder_group = (cfg.pretrain_epochs > 0
        && cfg.encoder_lr_ratio != 1.0
        && train_idx
            .iter()
            .any(|&i| has_slice_labels(&data.samples[i])))
    .then(|| model.net.slice_encoder_params());
    if cfg.encoder_lr_ratio == 0.0
        && let Some(group) = encoder_group.take()
    {
        model = model.set_require_grad_group(group, false);
    }
    progress(Progress::Start {
        epochs: cfg.epochs,
        steps_per_epoch,
        resumed_from: state.epoch,
    });
    let infer_device = main_device.clone();
    let done = state.stopped_early || state.epoch >= cfg.epochs;
    for epoch in state.epoch..if done { state.epoch } else { cfg.epochs } {
        let t0 = std::time::Instant::now();
        // Each epoch re-seeds the backend so dropout masks do not depend on how many epochs
        // ran in this process (resume gives the same run as no crash).
        device.seed(cfg.seed.wrapping_add(1 + epoch as u64));
        for (k, w) in workers.iter().enumerate().skip(1) {
            if *w != device {
                w.seed(cfg.seed.wrapping_add(1 + epoch as u64) ^ ((k as u64) << 32));
            }
        }
        let order = epoch_order(&train_idx, cfg.seed, epoch);
        let mut loss_sum = 0.0;
        let mut task_sum = [0.0f64; hn_model::TASKS.len()];
        let mut task_weights: Vec<f32> = Vec::new();
        let mut lr = cfg.lr;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(
                cfg.seed ^ ((epoch * 100_003 + b) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            );
            let refs: Vec<&StudySample> = chunk.iter().map(|&i| &data.samples[i]).collect();
            let mut rows = Vec::with_capacity(refs.len());
            let mut imgs = Vec::with_capacity(refs.len());
            for s in &refs {
                let mut sl = s.slice_labels.clone();
                imgs.push(augment(
                    &s.images,
                    s.shape,
                    &windows,
                    sl.as_mut(),
                    &cfg.augment,
                    &mut rng,
                ));
                let mut row = s.target_row();
                row.slices = sl
                    .filter(|v| v.len() == s.shape[0])
                    .map(|v| v.iter().map(crate::sample::label_row).collect());
                rows.push(row);
            }
            let u: f64 = rand::Rng::random(&mut rng);
            let mask = InputMask {
                hide_clinical: u < cfg.hide_clinical,
                hide_images: u >= cfg.hide_clinical && u < cfg.hide_clinical + cfg.hide_images,
            };
            if mask.hide_images {
                // Without images the image labels are unknowable: train prognosis only.
                for r in &mut rows {
                    r.study = None;
                    r.slices = None;
                }
            }
            // One shard per device (a single device: the whole batch, weight 1, no copy).
            let per = refs.len().div_ceil(workers.len());
            let shards = workers
                .iter()
                .zip(refs.chunks(per).zip(imgs.chunks(per)).zip(rows.chunks(per)))
                .map(|(w, ((r, im), ro))| crate::devices::Shard {
                    device: w.clone(),
                    input: make_batch(r, Some(im), mask, w),
                    targets: ModelTargets::from_rows(ro, shape[0], w),
                    weight: r.len() as f64 / refs.len() as f64,
                })
                .collect();
            let (step_loss, grads) = crate::devices::data_parallel_grads(&model, &device, shards);
            let value = step_loss.total;
            if !value.is_finite() {
                return Err(TrainError::Invalid(format!(
                    "loss became {value} at epoch {} step {b}; lower lr (now {lr:.2e})",
                    epoch + 1
                )));
            }
            loss_sum += value;
            for (a, v) in task_sum.iter_mut().zip(&step_loss.per_task) {
                *a += v;
            }
            task_weights = step_loss.task_weights.iter().map(|&v| v as f32).collect();
            lr = learning_rate(cfg, state.step, steps_per_epoch);
            model = match &encoder_group {
                Some(group) => optim.step(
                    grouped_lr(lr, group, lr * cfg.encoder_lr_ratio),
                    model,
                    grads,
                ),
                None => optim.step(lr, model, grads),
            };
            state.step += 1;
            progress(Progress::Step {
                epoch: epoch + 1,
                step: b + 1,
                loss: value,
            });
        }
        let net = model.net.valid();
        let scores = score(
            &net,
            &crate::scoring::pick(&data.samples, &val_idx),
            16,
            InputMask::default(),
            0,
            TestTimeAugmentation::None,
            &infer_device,
        );
        let val = val_metrics(&data.samples, &val_idx, &scores);
        let rec = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / steps_per_epoch as f64,
            train_task_losses: task_sum.map(|v| v / steps_per_epoch as f64),
            task_weights: std::array::from_fn(|i| {
                task_weights.get(i).map_or(f64::NAN, |v| f64::from(*v))
            }),
            lr_end: lr,
            val: val.clone(),
            seconds: t0.elapsed().as_secs_f64(),
        };
        let improved = val.score > state.best_score;
        if improved {
            state.best_score = val.score;
            state.best_epoch = epoch + 1;
            state.epochs_since_best = 0;
            let card = ModelCard {
                card_version: checkpoint::CARD_VERSION,
                code_version: checkpoint::code_version(),
                created_unix: checkpoint::now_unix(),
                preprocess: crate::sample::default_preprocess(shape[0], shape[2]),
                train_config: serde_json::to_value(cfg).expect("config serialises"),
                dataset: digest.clone(),
                epoch: epoch + 1,
                validation: serde_json::to_value(&val).expect("metrics serialise"),
                calibration: None,
                intended_use: INTENDED_USE.into(),
            };
            checkpoint::save_model(&model_dir, &net, &card)?;
        } else {
            state.epochs_since_best += 1;
        }
        state.epoch = epoch + 1;
        state.history.push(rec.clone());
        if cfg.patience > 0 && state.epochs_since_best >= cfg.patience {
            state.stopped_early = true;
        }
        save_last(&last_dir, &model, &optim, &state)?;
        write_json(&out_dir.join("history.json"), &state.history)?;
        progress(Progress::Epoch(&rec, improved));
        if state.stopped_early {
            break;
        }
    }
    progress(Progress::Calibrating);
    let loaded = checkpoint::load_model(&model_dir, &infer_device)?;
    let calibration = calibrate(&loaded.net, data, cfg, &infer_device)?;
    let mut card = loaded.card;
    card.calibration = Some(calibration.clone());
    checkpoint::update_card(&loaded.dir, &card)?;
    Ok(TrainSummary {
        model_dir,
        state,
        calibration,
    })
}

/// Fit temperatures (any; subtypes pooled over known bleeds; mortality; poor outcome),
/// Youden thresholds and the referral policy on the validation split.
pub fn calibrate(
    net: &HemorrhageNet,
    data: &Dataset,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Calibration, TrainError> {
    let idx = data.indices(Split::Validation);
    let scores = score(
        net,
        &crate::scoring::pick(&data.samples, &idx),
        16,
        InputMask::default(),
        cfg.mc_passes,
        cfg.tta,
        device,
    );
    let temps = fit_temperatures(&data.samples, &idx, &scores);
    let mut thresholds = [0.5; 6];
    let known: Vec<usize> = (0..idx.len())
        .filter(|&k| data.samples[idx[k]].labels.is_some())
        .collect();
    for j in 0..6 {
        let s: Vec<f64> = known
            .iter()
            .map(|&k| scores[k].detection_row(temps.any, temps.subtypes)[j])
            .collect();
        let y: Vec<bool> = known
            .iter()
            .map(|&k| crate::sample::label_row(&data.samples[idx[k]].labels.unwrap())[j])
            .collect();
        if let Ok(op) = metrics::youden(&s, &y) {
            thresholds[j] = op.threshold;
        }
    }
    let mk: Vec<usize> = (0..idx.len())
        .filter(|&k| data.samples[idx[k]].outcomes.mortality_30d.is_some())
        .collect();
    let mortality_threshold = metrics::youden(
        &mk.iter()
            .map(|&k| {
                temps
                    .mortality_calibration()
                    .logit(scores[k].mortality_logit)
            })
            .map(metrics::sigmoid)
            .collect::<Vec<_>>(),
        &mk.iter()
            .map(|&k| data.samples[idx[k]].outcomes.mortality_30d.unwrap())
            .collect::<Vec<_>>(),
    )
    .map(|op| op.threshold)
    .unwrap_or(0.5);
    let uncertainty = UncertaintyMeasure::default();
    let unc: Vec<f64> = scores
        .iter()
        .map(|s| s.referral_uncertainty(uncertainty, &temps))
        .collect();
    let referral = metrics::ReferralPolicy::fit(&unc, cfg.target_referral_rate)?;
    Ok(Calibration {
        temperatures: temps,
        thresholds,
        uncertainty,
        referral,
        mc_passes: cfg.mc_passes,
        tta: cfg.tta,
        mortality_threshold,
        facts: crate::scoring::facts_agreement(&data.samples, &idx, &scores),
    })
}

/// Temperatures (and the prognosis heads' Platt biases) fitted on validation scores (identity
/// where a head has no labelled cases).
pub fn fit_temperatures(
    samples: &[StudySample],
    idx: &[usize],
    scores: &[StudyScores],
) -> TemperatureSet {
    let mut t = TemperatureSet::default();
    let mut any = (Vec::new(), Vec::new());
    let mut sub = (Vec::new(), Vec::new());
    let mut mort = (Vec::new(), Vec::new());
    let mut poor = (Vec::new(), Vec::new());
    for (k, &i) in idx.iter().enumerate() {
        let s = &samples[i];
        if let Some(l) = s.labels {
            any.0.push(scores[k].any_logit);
            any.1.push(l.any);
            if l.any {
                for j in 0..5 {
                    sub.0.push(scores[k].subtype_cond_logits[j]);
                    sub.1.push(l.subtypes[j]);
                }
            }
        }
        if let Some(m) = s.outcomes.mortality_30d {
            mort.0.push(scores[k].mortality_logit);
            mort.1.push(m);
        }
        if let Some(p) = s.outcomes.poor_outcome_90d() {
            poor.0.push(scores[k].mrs_logits[3]);
            poor.1.push(p);
        }
    }
    let fit = |(z, y): &(Vec<f64>, Vec<bool>)| metrics::fit_temperature(z, y).unwrap_or(1.0);
    t.any = fit(&any);
    t.subtypes = fit(&sub);
    // Prognosis heads: Platt scaling where validation has enough of both outcomes (their
    // probabilities are reported as risks, so the offset matters as much as the spread).
    let platt = |(z, y): &(Vec<f64>, Vec<bool>)| {
        metrics::fit_logit_calibration(z, y).unwrap_or(metrics::LogitCalibration::IDENTITY)
    };
    let m = platt(&mort);
    (t.mortality, t.mortality_bias) = (m.temperature, m.bias);
    let p = platt(&poor);
    (t.mrs, t.mrs_bias) = (p.temperature, p.bias);
    t
}

#[cfg(test)]
mod tests {
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
        let (frozen, free): (Vec<_>, Vec<_>) =
            ids.into_iter().partition(|id| group.matches(id, None));
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
        fn visit_float<const D: usize>(
            &mut self,
            param: &hn_model::burn::module::Param<Tensor<D>>,
        ) {
            self.0.push(param.id);
        }
    }
}
