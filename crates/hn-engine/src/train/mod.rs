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

mod pretrain;
use pretrain::*;
mod checkpoints;
use checkpoints::*;
mod step;
use step::*;
mod calibrate;
pub use calibrate::*;
#[cfg(test)]
mod tests;

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
    /// A linear path from the clinical inputs to the prognosis logits beside the deep one
    /// (`HemorrhageNetConfig::clinical_linear`).
    pub clinical_linear: bool,
    /// Hidden width of the facts path into the prognosis logits, 0 = none
    /// (`HemorrhageNetConfig::facts_prognosis_hidden`).
    pub facts_prognosis_hidden: usize,
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
            // docs/RESULTS.md, "A larger training split, and a linear clinical path".
            clinical_linear: true,
            facts_prognosis_hidden: 0,
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
            .with_clinical_linear(Some(self.clinical_linear))
            .with_facts_prognosis_hidden(Some(self.facts_prognosis_hidden))
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
    /// Clean (non-bleeding) slices drawn per bleeding slice in each pre-training epoch, a
    /// fresh draw every epoch; every bleeding slice is used every epoch. Absent: every slice
    /// every epoch. Most slices of a cohort are clean, and the subtype terms of the slice loss
    /// only learn from bleeding ones, so an epoch of every bleeding slice and as many clean
    /// ones costs a fraction of a full pass (docs/TRAINING.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain_clean_per_bleeding: Option<f64>,
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
    /// The embedded synthetic cohort's generator config (`hn_data::synth::SynthConfig`
    /// fields). Absent: studies are rendered directly at the model grid. Present: they are
    /// rendered as a scanner would (its matrix, slice thickness, noise, tilt, ... drawn per
    /// study from its ranges) and brought to the grid by the same preprocessing as a DICOM
    /// study — training on the serving path (docs/TRAINING.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synth: Option<hn_data::synth::SynthConfig>,
    /// How a model that reads MR combines MR voxels onto coarser grids (`"mean"`, or
    /// `"susceptibility_minimum"`: T2*-GRE and SWI by their minimum intensity); recorded in
    /// the card's preprocessing.
    #[serde(default, skip_serializing_if = "hn_imaging::mr::MrReduction::is_mean")]
    pub mr_reduction: hn_imaging::mr::MrReduction,
    /// N4 bias-field correction of every MR sequence before normalising (a
    /// `[mr_bias_correction]` table; empty = the defaults of
    /// `hn_imaging::bias::BiasCorrectionConfig`); recorded in the card's preprocessing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_bias_correction: Option<hn_imaging::bias::BiasCorrectionConfig>,
    /// Weight of a per-cell loss in encoder pre-training: the slice head read at every cell
    /// of the feature map against where the generator's masks put each type of blood
    /// (`hn_model::SlicePretrainer::forward_with_cells`), added to the slice loss. Only slices
    /// with cell labels (the synthetic CT cohort) take part; `None` = the slice loss alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain_cell_loss: Option<f64>,
}

impl TrainConfig {
    /// The preprocessing of the model this config trains: the CT windows on the model grid,
    /// plus the MR channels (combined as `mr_reduction` says) when the cohort holds MR.
    pub fn preprocess(&self) -> hn_data::cache::PreprocessConfig {
        self.preprocess_reading(self.synth.as_ref().is_some_and(|s| s.modality.has_mr()))
    }

    /// [`preprocess`](Self::preprocess) for data that hold MR studies (`mr`) or not, whatever
    /// the synthetic section says (a manifest with MR rows).
    pub fn preprocess_reading(&self, mr: bool) -> hn_data::cache::PreprocessConfig {
        let mut p = crate::sample::preprocess_for(self.net.slices, self.net.size, mr);
        if mr {
            p.mr_reduction = self.mr_reduction;
            p.mr_bias_correction = self.mr_bias_correction;
        }
        p
    }
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
            pretrain_clean_per_bleeding: None,
            encoder_lr_ratio: 0.2,
            mc_passes: crate::scoring::DEFAULT_MC_PASSES,
            tta: TestTimeAugmentation::Flip,
            target_referral_rate: 0.1,
            net: NetSection::default(),
            augment: AugmentConfig::default(),
            split: SplitConfig::default(),
            synth: None,
            mr_reduction: Default::default(),
            mr_bias_correction: None,
            pretrain_cell_loss: None,
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
        if let Some(r) = self.pretrain_clean_per_bleeding
            && !(r >= 0.0 && r.is_finite())
        {
            return Err(format!(
                "pretrain_clean_per_bleeding must be a finite number ≥ 0, got {r}"
            ));
        }
        if let Some(r) = self.pretrain_cell_loss
            && !(r >= 0.0 && r.is_finite())
        {
            return Err(format!(
                "pretrain_cell_loss must be a finite number ≥ 0, got {r}"
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
    /// Of `slices`, those of MR studies (each through the MR stem; 0 for a CT-only cohort).
    #[serde(default)]
    pub slices_mr: usize,
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
    let pre = &data.preprocess;
    if cfg.mr_bias_correction.is_some() && pre.mr_sequences.is_empty() {
        tracing::warn!(
            "mr_bias_correction is set but the data hold no MR study: nothing to correct"
        );
    }
    let windows = pre.windows.clone();
    std::fs::create_dir_all(out_dir)
        .map_err(io_err(out_dir))
        .map_err(TrainError::from)?;
    let digest = data.digest();
    let envelope =
        crate::envelope::TrainingEnvelope::of(train_idx.iter().map(|&i| &data.samples[i]));
    let mr_envelope = crate::envelope::TrainingEnvelope::of_modality(
        train_idx.iter().map(|&i| &data.samples[i]),
        hn_model::MODALITY_MR,
    );
    let never_given = data.clinical_never_given(&train_idx);
    if !never_given.is_empty() {
        tracing::warn!(
            "no training study has {}: the model will read them as missing",
            crate::infer::clinical_names(&never_given)
        );
    }
    let model_cfg = cfg
        .net
        .model_config(pre.windows.len())
        .with_mr_channels(pre.mr_sequences.len())
        .with_clinical_unlearned((!never_given.is_empty()).then_some(never_given));
    debug_assert_eq!(model_cfg.input_channels(), shape[1]);
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
    let ctx = StepContext {
        cfg,
        data,
        windows: &windows,
        workers: &workers,
        device: &device,
        shape,
        encoder_group: encoder_group.as_ref(),
    };
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
            lr = learning_rate(cfg, state.step, steps_per_epoch);
            let (m, step_loss) = train_step(&ctx, model, &mut optim, chunk, epoch, b, lr)?;
            model = m;
            let value = step_loss.total;
            loss_sum += value;
            for (a, v) in task_sum.iter_mut().zip(&step_loss.per_task) {
                *a += v;
            }
            task_weights = step_loss.task_weights.iter().map(|&v| v as f32).collect();
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
            let mut card = epoch_card(cfg, &digest, pre, epoch + 1, &val);
            card.envelope = envelope.clone();
            card.mr_envelope = mr_envelope.clone();
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
    // One calibration per modality when the data hold both (CT in `calibration`, MR in
    // `mr_calibration`); a single-modality model has one, in `calibration`.
    let mixed =
        data.has_modality(hn_model::MODALITY_CT) && data.has_modality(hn_model::MODALITY_MR);
    let fit = |m: Option<i64>| {
        calibrate::calibrate_modality(
            &loaded.net,
            data,
            cfg,
            crate::uncertainty::UncertaintyMeasure::default(),
            calibrate::Density::FitOnTrainingSplit,
            None,
            m,
            &infer_device,
        )
    };
    let calibration = fit(mixed.then_some(hn_model::MODALITY_CT))?;
    let mr_calibration = if mixed {
        Some(fit(Some(hn_model::MODALITY_MR))?)
    } else {
        None
    };
    let mut card = loaded.card;
    card.calibration = Some(calibration.clone());
    card.mr_calibration = mr_calibration;
    checkpoint::update_card(&loaded.dir, &card)?;
    Ok(TrainSummary {
        model_dir,
        state,
        calibration,
    })
}
