//! Hierarchical decision heads: bleed → subtype | bleed → prognosis.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid, softplus};

use crate::util::{McDropout, drop};

/// Subtypes, in `hn-data`'s `SUBTYPES` order (epidural, subdural, subarachnoid,
/// intraparenchymal, intraventricular).
pub const N_SUBTYPES: usize = 5;
/// Detection labels: `any`, then the subtypes.
pub const N_LABELS: usize = 1 + N_SUBTYPES;
/// mRS thresholds: `P(mRS ≥ k)` for `k = 1..=6`.
pub const N_MRS_THRESHOLDS: usize = 6;
/// mRS classes 0..=6.
pub const N_MRS_CLASSES: usize = N_MRS_THRESHOLDS + 1;
/// Index among the thresholds of `P(mRS ≥ 4)`, the poor 90-day outcome.
pub const POOR_OUTCOME_THRESHOLD: usize = 3;
/// Hematoma facts predicted beside prognosis: `ln(1 + hematoma mL)` (outside the
/// ventricles: the ICH score's volume) and `ln(1 + intraventricular mL)`, both divided by
/// `ln(101)` ([`crate::loss::FACTS_LOG_SCALE`]), and the logit of an infratentorial bleed.
pub const N_FACTS: usize = 3;

/// Configuration of the heads.
#[derive(Config, Debug)]
pub struct HierarchicalHeadsConfig {
    /// Fused / slice embedding width `D`.
    pub d_model: usize,
    /// Dropout before every head (the MC-dropout sites of the decision layer).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Feed the level-1/2 probabilities and the burden to level 3 detached (no gradient from
    /// prognosis into the detection heads). `false` only for gradient checks of the whole
    /// function.
    #[config(default = true)]
    pub detach_decisions: bool,
    /// Width of the clinical inputs the prognosis paths below read (`2F`: the gated values
    /// and the gated missing indicators, [`crate::clinical::ClinicalProcessor::linear_inputs`]).
    #[config(default = 0)]
    pub clinical_inputs: usize,
    /// A linear path from the clinical inputs into the prognosis logits.
    #[config(default = false)]
    pub clinical_linear: bool,
    /// Hidden width of the facts path into the prognosis logits: a small network over the
    /// facts read-out (detached) and the clinical inputs of the linear path; 0 = none.
    #[config(default = 0)]
    pub facts_hidden: usize,
}

/// Level 1 `P(any)`, level 2 `P(subtype | bleed)`, slice logits, and level 3 prognosis
/// conditioned on the fused vector, on the level-1/2 probabilities and on the lesion burden:
/// the mean over slices of the per-slice `[P(any), P(subtype)]`, i.e. the fraction of slices
/// each bleed type covers. Attention pooling is a weighted *average* and so cannot say how
/// large a hematoma is; extent is what outcome depends on (hematoma volume in the ICH score),
/// and the densely supervised slice head measures it.
///
/// The prognosis hidden layer `z` also predicts the hematoma facts the ICH score and outcome
/// depend on ([`N_FACTS`]: hematoma and intraventricular volume, infratentorial
/// location) through a linear read-out. Where those facts are known (masks, or the synthetic
/// generator) their loss makes `z` — which mortality and mRS read linearly too — carry them:
/// dense supervision of exactly the image information prognosis needs, instead of leaving a
/// few hundred outcome labels to discover it.
///
/// Beside that deep path, the clinical inputs reach the mortality logit and the mRS score
/// through one linear layer (a "wide" path, when configured): the deep path sees each value
/// through a layer-normalised token that keeps little of its magnitude, and a logistic
/// regression on the same inputs out-ranked the network's mortality in distribution
/// (docs/RESULTS.md). The path reads the values *gated* by the patient's feature gates, so a
/// closed gate removes a feature from both paths and the gates stay the patient's weights.
///
/// The mRS head is a cumulative-link (CORAL-style) model: one shared score `g(x)` and six
/// thresholds `θ_1 > … > θ_6`, `logit P(mRS ≥ k) = g(x) + θ_k`. The thresholds are built as
/// `θ_1 − cumsum(softplus(δ))`, so they are strictly decreasing by construction and the six
/// probabilities are always rank-consistent (`P(mRS ≥ k)` never increases with `k`).
#[derive(Module, Debug)]
pub struct HierarchicalHeads {
    any: Linear,
    subtype: Linear,
    slice: Linear,
    prognosis: Linear,
    mortality: Linear,
    facts: Linear,
    mrs_score: Linear,
    mrs_first: Param<Tensor<1>>,
    mrs_gaps: Param<Tensor<1>>,
    /// Linear clinical path: adds `w·c` to the mortality logit and to the mRS score.
    clinical_linear: Option<Linear>,
    /// Facts path: `[facts, clinical] → GELU → (mortality, mRS score)`.
    facts_path: Option<(Linear, Linear)>,
    dropout: Dropout,
    #[module(skip)]
    detach_decisions: bool,
}

/// Raw head outputs.
#[derive(Debug, Clone)]
pub struct HeadOutputs {
    /// `[B]`.
    pub any_logit: Tensor<1>,
    /// `[B, 5]`.
    pub subtype_cond_logits: Tensor<2>,
    /// `[B, S, 6]`.
    pub slice_logits: Tensor<3>,
    /// `[B]`.
    pub mortality_logit: Tensor<1>,
    /// `[B, 6]`.
    pub mrs_logits: Tensor<2>,
    /// `[B, 3]`, see [`N_FACTS`].
    pub facts: Tensor<2>,
}

impl HierarchicalHeadsConfig {
    /// Build the heads.
    pub fn init(&self, device: &Device) -> HierarchicalHeads {
        let d = self.d_model;
        HierarchicalHeads {
            any: LinearConfig::new(d, 1).init(device),
            subtype: LinearConfig::new(d, N_SUBTYPES).init(device),
            slice: LinearConfig::new(d, 1 + N_SUBTYPES).init(device),
            prognosis: LinearConfig::new(d + 2 * (1 + N_SUBTYPES), d).init(device),
            mortality: LinearConfig::new(d, 1).init(device),
            facts: LinearConfig::new(d, N_FACTS).init(device),
            mrs_score: LinearConfig::new(d, 1).with_bias(false).init(device),
            // θ_1 = 1.5 and unit-ish gaps put the initial P(mRS ≥ k) across (0.8 … 0.1).
            mrs_first: Initializer::Constant { value: 1.5 }.init([1], device),
            mrs_gaps: Initializer::Constant { value: 0.5 }.init([N_MRS_THRESHOLDS - 1], device),
            // Starts at zero: the path adds nothing until training finds a use for it.
            clinical_linear: self.clinical_linear.then(|| {
                LinearConfig::new(self.clinical_inputs, 2)
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            }),
            facts_path: (self.facts_hidden > 0).then(|| {
                (
                    LinearConfig::new(N_FACTS + self.clinical_inputs, self.facts_hidden)
                        .init(device),
                    LinearConfig::new(self.facts_hidden, 2)
                        .with_initializer(Initializer::Zeros)
                        .init(device),
                )
            }),
            dropout: DropoutConfig::new(self.dropout).init(),
            detach_decisions: self.detach_decisions,
        }
    }
}

impl HierarchicalHeads {
    /// `fused [B, D]`, `slices [B, S, D]`, and the linear clinical path's inputs `[B, 2F]`
    /// (read only by heads built with one) → head logits.
    pub fn forward(
        &self,
        fused: Tensor<2>,
        slices: Tensor<3>,
        clinical: Tensor<2>,
        mc: Option<&McDropout>,
    ) -> HeadOutputs {
        let [b, _] = fused.dims();
        let x = drop(&self.dropout, fused, mc);
        let any_logit = self.any.forward(x.clone()).reshape([b]);
        let subtype_cond_logits = self.subtype.forward(x.clone());
        let slice_logits = self.slice.forward(drop(&self.dropout, slices, mc));
        // Level 3 sees the decisions of levels 1–2 as probabilities (joint subtype) and the
        // lesion burden (mean over slices of the joint slice probabilities).
        let p_any = sigmoid(any_logit.clone()).reshape([b, 1]);
        let p_sub = sigmoid(subtype_cond_logits.clone()) * p_any.clone();
        let [_, s, _] = slice_logits.dims();
        let sp = sigmoid(slice_logits.clone());
        let sp_any = sp.clone().narrow(2, 0, 1);
        let sp_sub = sp.narrow(2, 1, N_SUBTYPES) * sp_any.clone();
        let burden = Tensor::cat(vec![sp_any, sp_sub], 2)
            .mean_dim(1)
            .reshape([b, 1 + N_SUBTYPES]);
        debug_assert!(s > 0);
        // The level-1/2 probabilities and the burden enter level 3 detached: detection is
        // trained by detection labels only, and prognosis (or the facts read-out, whose
        // regression loss is large early in training) cannot bend the bleed and slice heads to
        // suit itself — a first trial without the detach lost 0.2 of slice-level AUC that way.
        let (p_any, p_sub, burden) = if self.detach_decisions {
            (p_any.detach(), p_sub.detach(), burden.detach())
        } else {
            (p_any, p_sub, burden)
        };
        let z = gelu(
            self.prognosis
                .forward(Tensor::cat(vec![x, p_any, p_sub, burden], 1)),
        );
        let z = drop(&self.dropout, z, mc);
        let mut mortality_logit = self.mortality.forward(z.clone()).reshape([b]);
        let mut mrs_score = self.mrs_score.forward(z.clone());
        let facts = self.facts.forward(z.clone());
        let mut paths = Vec::new();
        if let Some((hidden, out)) = &self.facts_path {
            // Detached: the read-out is trained by the facts' labels alone and reported as
            // it is; this path learns what the facts mean for outcome.
            let x = Tensor::cat(vec![facts.clone().detach(), clinical.clone()], 1);
            paths.push(out.forward(gelu(hidden.forward(x))));
        }
        if let Some(lin) = &self.clinical_linear {
            paths.push(lin.forward(clinical));
        }
        for c in paths {
            mortality_logit = mortality_logit + c.clone().narrow(1, 0, 1).reshape([b]);
            mrs_score = mrs_score + c.narrow(1, 1, 1);
        }
        let device = z.device();
        let steps = Tensor::cat(
            vec![
                Tensor::zeros([1], &device),
                softplus(self.mrs_gaps.val(), 1.0),
            ],
            0,
        )
        .cumsum(0);
        let thresholds = self.mrs_first.val() - steps; // [6], strictly decreasing
        let mrs_logits = mrs_score + thresholds.reshape([1, N_MRS_THRESHOLDS]);
        HeadOutputs {
            any_logit,
            subtype_cond_logits,
            slice_logits,
            mortality_logit,
            mrs_logits,
            facts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// A fixed, varied tensor: element `i` is `sin(i·step)`.
    fn wave<const D: usize>(dims: [usize; D], step: f32, device: &Device) -> Tensor<D> {
        let n = dims.iter().product::<usize>();
        let v = (0..n).map(|i| (i as f32 * step).sin()).collect();
        Tensor::from_data(TensorData::new(v, dims), device)
    }

    #[test]
    fn the_linear_clinical_path_adds_its_weights_to_prognosis_only() {
        let device = Device::flex();
        let (b, d, s, k) = (2, 8, 3, 6);
        let fused = wave([b, d], 0.37, &device);
        let slices = wave([b, s, d], 0.11, &device);
        let clinical = |bump: f32| {
            let mut c = vec![0.25f32; b * k];
            c[2] += bump; // study 0, input 2
            Tensor::<2>::from_data(TensorData::new(c, [b, k]), &device)
        };
        let mut heads = HierarchicalHeadsConfig::new(d)
            .with_dropout(0.0)
            .with_clinical_inputs(k)
            .with_clinical_linear(true)
            .init(&device);
        // Weights `[k, 2]`: input `j` → (mortality, mRS score) = (0.1·2j, 0.1·(2j + 1)).
        let w: Vec<f32> = (0..2 * k).map(|i| 0.1 * i as f32).collect();
        let lin = heads.clinical_linear.as_mut().expect("a linear path");
        lin.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [k, 2]), &device));
        let (a, z) = (
            heads.forward(fused.clone(), slices.clone(), clinical(1.0), None),
            heads.forward(fused.clone(), slices.clone(), clinical(0.0), None),
        );
        let mort: Vec<f32> = host(a.mortality_logit.clone() - z.mortality_logit.clone());
        assert!(
            (mort[0] - 0.4).abs() < 1e-5 && mort[1].abs() < 1e-6,
            "{mort:?}"
        );
        // The mRS score moves every threshold's logit alike, for study 0 only.
        let mrs = host(a.mrs_logits.clone() - z.mrs_logits.clone());
        let (first, second) = mrs.split_at(N_MRS_THRESHOLDS);
        assert!(first.iter().all(|v| (v - 0.5).abs() < 1e-5), "{mrs:?}");
        assert!(second.iter().all(|v| v.abs() < 1e-6), "{mrs:?}");
        // Detection and the facts read-out do not read it.
        assert_eq!(host(a.any_logit), host(z.any_logit));
        assert_eq!(host(a.subtype_cond_logits), host(z.subtype_cond_logits));
        assert_eq!(host(a.slice_logits), host(z.slice_logits));
        assert_eq!(host(a.facts), host(z.facts));

        // Heads built without the path ignore its input.
        let plain = HierarchicalHeadsConfig::new(d)
            .with_dropout(0.0)
            .init(&device);
        let (a, z) = (
            plain.forward(fused.clone(), slices.clone(), clinical(1.0), None),
            plain.forward(fused, slices, clinical(0.0), None),
        );
        assert_eq!(host(a.mortality_logit), host(z.mortality_logit));
        assert_eq!(host(a.mrs_logits), host(z.mrs_logits));
    }

    /// The facts path reads the facts read-out detached: prognosis losses train the path but
    /// never bend the read-out, which is reported as the model's estimate of the facts.
    #[test]
    fn the_facts_path_moves_prognosis_without_training_the_facts_read_out() {
        let device = Device::flex().autodiff();
        let (b, d, s, k) = (3, 8, 2, 4);
        let slices = wave([b, s, d], 0.3, &device);
        let mut heads = HierarchicalHeadsConfig::new(d)
            .with_dropout(0.0)
            .with_clinical_inputs(k)
            .with_facts_hidden(5)
            .init(&device);
        let (hidden, out) = heads.facts_path.as_mut().expect("a facts path");
        assert_eq!(hidden.weight.dims(), [N_FACTS + k, 5]);
        // Zero-initialised output: the path adds nothing until trained.
        let zero = out.weight.val().abs().sum().into_scalar::<f32>();
        assert_eq!(zero, 0.0);
        out.weight = Param::from_tensor(wave([5, 2], 0.7, &device).require_grad());
        let o = heads.forward(
            wave([b, d], 0.37, &device),
            slices,
            wave([b, k], 0.9, &device),
            None,
        );
        let grads = (o.mortality_logit.sum() + o.mrs_logits.sum()).backward();
        let (hidden, _) = heads.facts_path.as_ref().unwrap();
        let g = hidden.weight.grad(&grads).expect("the path is trained");
        assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
        assert!(
            heads.facts.weight.grad(&grads).is_none(),
            "prognosis reached the facts read-out"
        );
        assert!(heads.mortality.weight.grad(&grads).is_some());
    }
}
