//! Uncertainty-weighted multi-task loss and the RSNA-2019 metric.

use burn::module::Param;
use burn::nn::Initializer;
use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

use crate::heads::{N_FACTS, N_MRS_THRESHOLDS, N_SUBTYPES};
use crate::model::{ModelOutput, mrs_cumulative};

/// Task order of [`LossBreakdown::per_task`] and of [`MultiTaskLoss`]'s log-variances.
pub const TASKS: [&str; 5] = ["study", "slice", "mortality", "mrs", "facts"];

/// Targets for a batch. Every label has a mask (1 = known, 0 = missing); a masked label adds
/// nothing to the loss and a task with no known label in the batch adds nothing at all.
#[derive(Debug, Clone)]
pub struct ModelTargets {
    /// `[B]` any hemorrhage (0/1).
    pub any: Tensor<1>,
    /// `[B, 5]` subtypes (0/1), `SUBTYPES` order.
    pub subtypes: Tensor<2>,
    /// `[B]` study labels known.
    pub study_mask: Tensor<1>,
    /// `[B, S, 6]` slice labels: any, then the 5 subtypes.
    pub slices: Tensor<3>,
    /// `[B, S]` slice labels known.
    pub slice_mask: Tensor<2>,
    /// `[B]` died within 30 days (0/1).
    pub mortality: Tensor<1>,
    /// `[B]` mortality known.
    pub mortality_mask: Tensor<1>,
    /// `[B]` 90-day mRS, 0–6 (any value where masked).
    pub mrs: Tensor<1, Int>,
    /// `[B]` mRS known.
    pub mrs_mask: Tensor<1>,
    /// `[B, 3]` hematoma facts ([`HematomaFacts::encode`]); any value where masked.
    pub facts: Tensor<2>,
    /// `[B]` facts known.
    pub facts_mask: Tensor<1>,
}

/// `ln(101)`: the encoded log volume of 100 mL is 1.
pub const FACTS_LOG_SCALE: f64 = 4.61512051684126;

/// Hematoma facts of one study (from masks or the synthetic generator), the targets of the
/// facts read-out ([`crate::heads::N_FACTS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HematomaFacts {
    /// Hematoma volume outside the ventricles (mL): the ICH score's volume.
    pub hematoma_ml: f64,
    /// Intraventricular blood volume (mL).
    pub intraventricular_ml: f64,
    /// Any non-intraventricular blood below the tentorium.
    pub infratentorial: bool,
}

impl HematomaFacts {
    /// Target row `[ln(1 + hematoma mL), ln(1 + IVH mL)] / ln(101)`, infratentorial: log
    /// volumes, since the outcome depends on volume multiplicatively (30 mL is the ICH score's
    /// cut), divided by [`FACTS_LOG_SCALE`] so that 0–100 mL maps to [0, 1] and the squared
    /// error starts at the size of a cross-entropy.
    pub fn encode(&self) -> [f32; N_FACTS] {
        [
            (self.hematoma_ml.max(0.0).ln_1p() / FACTS_LOG_SCALE) as f32,
            (self.intraventricular_ml.max(0.0).ln_1p() / FACTS_LOG_SCALE) as f32,
            f32::from(u8::from(self.infratentorial)),
        ]
    }

    /// Inverse of [`encode`](Self::encode) on a predicted row (volumes in mL, infratentorial
    /// as `logit > 0`).
    pub fn decode(row: [f32; N_FACTS]) -> Self {
        HematomaFacts {
            hematoma_ml: (f64::from(row[0]) * FACTS_LOG_SCALE).exp_m1().max(0.0),
            intraventricular_ml: (f64::from(row[1]) * FACTS_LOG_SCALE).exp_m1().max(0.0),
            infratentorial: row[2] > 0.0,
        }
    }
}

/// Host-side labels of one study, for [`ModelTargets::from_rows`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetRow {
    /// `Some((any, subtypes))` when the study is labelled.
    pub study: Option<(bool, [bool; N_SUBTYPES])>,
    /// Per-slice `[any, 5 subtypes]`, `None` when slices are unlabelled; must have `S` rows.
    pub slices: Option<Vec<[bool; 1 + N_SUBTYPES]>>,
    /// 30-day mortality when known.
    pub mortality: Option<bool>,
    /// 90-day mRS (0–6) when known.
    pub mrs: Option<u8>,
    /// Hematoma facts when known.
    pub facts: Option<HematomaFacts>,
}

impl ModelTargets {
    /// Build the tensors for `rows.len()` studies of `slices` slices.
    pub fn from_rows(rows: &[TargetRow], slices: usize, device: &Device) -> Self {
        let b = rows.len();
        let f = |x: bool| if x { 1.0f32 } else { 0.0 };
        let mut any = Vec::with_capacity(b);
        let mut subtypes = Vec::with_capacity(b * N_SUBTYPES);
        let mut study_mask = Vec::with_capacity(b);
        let mut sl = Vec::with_capacity(b * slices * 6);
        let mut slice_mask = Vec::with_capacity(b * slices);
        let (mut mort, mut mort_mask, mut mrs, mut mrs_mask) = (vec![], vec![], vec![], vec![]);
        let (mut facts, mut facts_mask) = (Vec::with_capacity(b * N_FACTS), Vec::with_capacity(b));
        for row in rows {
            let (a, s) = row.study.unwrap_or_default();
            any.push(f(a));
            subtypes.extend(s.map(f));
            study_mask.push(f(row.study.is_some()));
            match &row.slices {
                Some(v) => {
                    assert_eq!(v.len(), slices, "slice labels must have one row per slice");
                    for r in v {
                        sl.extend(r.map(f));
                    }
                    slice_mask.extend(std::iter::repeat_n(1.0f32, slices));
                }
                None => {
                    sl.extend(std::iter::repeat_n(0.0f32, slices * 6));
                    slice_mask.extend(std::iter::repeat_n(0.0f32, slices));
                }
            }
            mort.push(f(row.mortality.unwrap_or(false)));
            mort_mask.push(f(row.mortality.is_some()));
            mrs.push(row.mrs.unwrap_or(0).min(6) as i64);
            mrs_mask.push(f(row.mrs.is_some()));
            facts.extend(row.facts.unwrap_or_default().encode());
            facts_mask.push(f(row.facts.is_some()));
        }
        let t1 = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [b]), device);
        Self {
            any: t1(any),
            subtypes: Tensor::from_data(TensorData::new(subtypes, [b, N_SUBTYPES]), device),
            study_mask: t1(study_mask),
            slices: Tensor::from_data(TensorData::new(sl, [b, slices, 6]), device),
            slice_mask: Tensor::from_data(TensorData::new(slice_mask, [b, slices]), device),
            mortality: t1(mort),
            mortality_mask: t1(mort_mask),
            mrs: Tensor::from_data(TensorData::new(mrs, [b]), device),
            mrs_mask: t1(mrs_mask),
            facts: Tensor::from_data(TensorData::new(facts, [b, N_FACTS]), device),
            facts_mask: t1(facts_mask),
        }
    }
}

/// Configuration of [`MultiTaskLoss`].
#[derive(Config, Debug)]
pub struct MultiTaskLossConfig {
    /// Positive-class weight of `any` (≈ negatives / positives for imbalance).
    #[config(default = 1.0)]
    pub pos_weight_any: f64,
    /// Positive-class weights of the 5 subtypes.
    #[config(default = "vec![1.0; 5]")]
    pub pos_weight_subtypes: Vec<f64>,
    /// Positive-class weight of mortality.
    #[config(default = 1.0)]
    pub pos_weight_mortality: f64,
    /// λ of the feature-gate sparsity penalty `λ·mean(gates)`.
    #[config(default = 1e-3)]
    pub gate_sparsity: f64,
    /// Learn the homoscedastic task weights; when false all log-variances stay 0 (plain sum).
    #[config(default = true)]
    pub learn_task_weights: bool,
}

/// Multi-task loss with learned homoscedastic uncertainty (Kendall, Gal & Cipolla 2018):
/// `total = Σ_t a_t·(exp(−s_t)·L_t + s_t / 2) + λ·mean(gates)`, `s_t = log σ_t²` learned,
/// `a_t = 1` when task `t` has at least one known label in the batch (so an absent task
/// cannot drive its `s_t` to −∞).
#[derive(Module, Debug)]
pub struct MultiTaskLoss {
    /// `[5]` log-variances in [`TASKS`] order.
    pub log_vars: Param<Tensor<1>>,
    #[module(skip)]
    config: MultiTaskLossConfig,
}

/// The loss of one batch.
#[derive(Debug, Clone)]
pub struct LossBreakdown {
    /// `[1]` what to call `backward()` on.
    pub total: Tensor<1>,
    /// `[5]` unweighted task losses in [`TASKS`] order (0 for a task without labels).
    pub per_task: Tensor<1>,
    /// `[5]` current task weights `exp(−s_t)`.
    pub task_weights: Tensor<1>,
    /// `[1]` the gate sparsity term (before λ).
    pub gate_sparsity: Tensor<1>,
}

impl MultiTaskLossConfig {
    /// Build the loss (log-variances start at 0: equal weights).
    pub fn init(&self, device: &Device) -> MultiTaskLoss {
        assert_eq!(
            self.pos_weight_subtypes.len(),
            N_SUBTYPES,
            "one pos weight per subtype"
        );
        let log_vars = Initializer::Zeros.init([TASKS.len()], device);
        let log_vars = if self.learn_task_weights {
            log_vars
        } else {
            log_vars.set_require_grad(false)
        };
        MultiTaskLoss {
            log_vars,
            config: self.clone(),
        }
    }
}

/// Masked, positive-weighted binary cross-entropy with logits; mean over known entries,
/// 0 when none is known. `pos_weight` broadcasts against `logits`.
pub fn masked_bce<const D: usize>(
    logits: Tensor<D>,
    targets: Tensor<D>,
    mask: Tensor<D>,
    pos_weight: Tensor<D>,
) -> Tensor<1> {
    let pos = targets.clone() * pos_weight * log_sigmoid(logits.clone());
    let neg = targets.neg().add_scalar(1.0) * log_sigmoid(logits.neg());
    let l = (pos + neg).neg() * mask.clone();
    l.sum() / mask.sum().clamp_min(1.0)
}

impl MultiTaskLoss {
    /// Loss of `out` against `targets`.
    pub fn forward(&self, out: &ModelOutput, targets: &ModelTargets) -> LossBreakdown {
        let device = out.any_logit.device();
        let [b] = out.any_logit.dims();
        let [_, s, _] = out.slice_logits.dims();
        let cfg = &self.config;
        let scalar = |v: f64| Tensor::<1>::from_data(TensorData::new(vec![v as f32], [1]), &device);
        let subtype_pw = Tensor::<1>::from_data(
            TensorData::new(
                cfg.pos_weight_subtypes
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<_>>(),
                [N_SUBTYPES],
            ),
            &device,
        );

        // Study: level 1 on every labelled study, level 2 only on labelled bleeds.
        let any_loss = masked_bce(
            out.any_logit.clone(),
            targets.any.clone(),
            targets.study_mask.clone(),
            scalar(cfg.pos_weight_any),
        );
        let bleed = (targets.study_mask.clone() * targets.any.clone())
            .reshape([b, 1])
            .expand([b, N_SUBTYPES]);
        let sub_loss = masked_bce(
            out.subtype_cond_logits.clone(),
            targets.subtypes.clone(),
            bleed,
            subtype_pw.clone().reshape([1, N_SUBTYPES]),
        );
        let study = any_loss + sub_loss;
        let study_active = targets.study_mask.clone().sum().clamp_max(1.0);

        // Slices: the same hierarchy per slice.
        let slice_any_t = targets.slices.clone().narrow(2, 0, 1);
        let slice_any_loss = masked_bce(
            out.slice_logits.clone().narrow(2, 0, 1),
            slice_any_t.clone(),
            targets.slice_mask.clone().reshape([b, s, 1]),
            scalar(cfg.pos_weight_any).reshape([1, 1, 1]),
        );
        let slice_bleed = (targets.slice_mask.clone().reshape([b, s, 1]) * slice_any_t)
            .expand([b, s, N_SUBTYPES]);
        let slice_sub_loss = masked_bce(
            out.slice_logits.clone().narrow(2, 1, N_SUBTYPES),
            targets.slices.clone().narrow(2, 1, N_SUBTYPES),
            slice_bleed,
            subtype_pw.reshape([1, 1, N_SUBTYPES]),
        );
        let slice = slice_any_loss + slice_sub_loss;
        let slice_active = targets.slice_mask.clone().sum().clamp_max(1.0);

        let mortality = masked_bce(
            out.mortality_logit.clone(),
            targets.mortality.clone(),
            targets.mortality_mask.clone(),
            scalar(cfg.pos_weight_mortality),
        );
        let mortality_active = targets.mortality_mask.clone().sum().clamp_max(1.0);

        // mRS: cumulative-link BCE on the six P(mRS ≥ k), mean over thresholds.
        let mrs_mask = targets
            .mrs_mask
            .clone()
            .reshape([b, 1])
            .expand([b, N_MRS_THRESHOLDS]);
        let mrs = masked_bce(
            out.mrs_logits.clone(),
            mrs_cumulative(targets.mrs.clone()),
            mrs_mask,
            Tensor::ones([1, 1], &device),
        );
        let mrs_active = targets.mrs_mask.clone().sum().clamp_max(1.0);

        // Hematoma facts: squared error of the two scaled log volumes (mean of the two) plus
        // the infratentorial BCE.
        let fmask = targets.facts_mask.clone();
        let n_facts = fmask.clone().sum().clamp_min(1.0);
        let vol_err = (out.facts.clone().narrow(1, 0, 2) - targets.facts.clone().narrow(1, 0, 2))
            .powf_scalar(2.0)
            .mean_dim(1)
            .reshape([b]);
        let vol = (vol_err * fmask.clone()).sum() / n_facts;
        let infra = masked_bce(
            out.facts.clone().narrow(1, 2, 1).reshape([b]),
            targets.facts.clone().narrow(1, 2, 1).reshape([b]),
            fmask.clone(),
            scalar(1.0),
        );
        let facts = vol + infra;
        let facts_active = fmask.sum().clamp_max(1.0);

        let per_task = Tensor::cat(vec![study, slice, mortality, mrs, facts], 0);
        let active = Tensor::cat(
            vec![
                study_active,
                slice_active,
                mortality_active,
                mrs_active,
                facts_active,
            ],
            0,
        );
        let s_t = self.log_vars.val();
        let weights = s_t.clone().neg().exp();
        let weighted = (weights.clone() * per_task.clone() + s_t * 0.5) * active;
        let gate_sparsity = out.feature_gates.clone().mean();
        let total = weighted.sum() + gate_sparsity.clone() * cfg.gate_sparsity;
        LossBreakdown {
            total,
            per_task,
            task_weights: weights,
            gate_sparsity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hematoma_facts_round_trip_and_scale() {
        let f = HematomaFacts {
            hematoma_ml: 42.5,
            intraventricular_ml: 3.0,
            infratentorial: true,
        };
        let row = f.encode();
        // 100 mL encodes to 1: the squared error starts at a cross-entropy's size.
        let hundred = HematomaFacts {
            hematoma_ml: 100.0,
            ..Default::default()
        };
        assert!((hundred.encode()[0] - 1.0).abs() < 1e-6);
        assert_eq!(row[2], 1.0);
        let back = HematomaFacts::decode([row[0], row[1], 2.0]);
        assert!((back.hematoma_ml - 42.5).abs() < 1e-3, "{back:?}");
        assert!((back.intraventricular_ml - 3.0).abs() < 1e-4, "{back:?}");
        assert!(back.infratentorial);
        // A negative read-out is no volume, a negative logit no infratentorial bleed.
        let none = HematomaFacts::decode([-0.3, -1.0, -0.5]);
        assert_eq!(none, HematomaFacts::default());
    }
}
