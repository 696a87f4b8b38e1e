//! Monte-Carlo dropout and per-head temperature scaling.

use burn::prelude::*;

use crate::model::{HemorrhageNet, ModelInput, ModelOutput, ModelProbabilities};
use crate::util::McDropout;

/// Predictive entropy and mutual information (BALD) of one output, in nats.
#[derive(Debug, Clone)]
pub struct Uncertainty<const D: usize> {
    /// `H[E_t p_t]`: total predictive uncertainty.
    pub entropy: Tensor<D>,
    /// `H[E_t p_t] − E_t H[p_t]`: the epistemic part (disagreement between passes).
    pub mutual_info: Tensor<D>,
}

/// Result of [`HemorrhageNet::forward_mc`].
#[derive(Debug, Clone)]
pub struct McOutput {
    /// Mean over passes of every probability.
    pub mean: ModelProbabilities,
    /// `[B]` P(any), binary.
    pub any: Uncertainty<1>,
    /// `[B, 5]` reported P(subtype), binary each.
    pub subtypes: Uncertainty<2>,
    /// `[B]` mortality, binary.
    pub mortality: Uncertainty<1>,
    /// `[B]` mRS as a 7-class distribution.
    pub mrs: Uncertainty<1>,
    /// Passes used.
    pub passes: usize,
}

fn plogp<const D: usize>(p: Tensor<D>) -> Tensor<D> {
    let p = p.clamp(1e-7, 1.0);
    p.clone() * p.log()
}

fn binary_entropy<const D: usize>(p: Tensor<D>) -> Tensor<D> {
    (plogp(p.clone()) + plogp(p.neg().add_scalar(1.0))).neg()
}

/// Mean of the passes and its uncertainty decomposition under `entropy`: predictive entropy
/// of the mean, and mutual information = that minus the mean entropy of the passes (BALD).
fn decompose<const D: usize, const E: usize>(
    passes: Vec<Tensor<D>>,
    entropy: impl Fn(Tensor<D>) -> Tensor<E>,
) -> (Tensor<D>, Uncertainty<E>) {
    let t = passes.len();
    let mean = mean_of(passes.iter().cloned(), t);
    let expected = mean_of(passes.into_iter().map(&entropy), t);
    let total = entropy(mean.clone());
    let mutual_info = (total.clone() - expected).clamp_min(0.0);
    (
        mean,
        Uncertainty {
            entropy: total,
            mutual_info,
        },
    )
}

fn binary<const D: usize>(passes: Vec<Tensor<D>>) -> (Tensor<D>, Uncertainty<D>) {
    decompose(passes, binary_entropy)
}

fn categorical(passes: Vec<Tensor<2>>) -> (Tensor<2>, Uncertainty<1>) {
    decompose(passes, |p: Tensor<2>| {
        let [b, _] = p.dims();
        plogp(p).sum_dim(1).neg().reshape([b])
    })
}

fn mean_of<const D: usize>(xs: impl Iterator<Item = Tensor<D>>, t: usize) -> Tensor<D> {
    xs.reduce(|a, b| a + b).expect("passes >= 1") / t as f64
}

impl HemorrhageNet {
    /// One stochastic forward with every dropout site on (a single MC-dropout sample), its
    /// masks drawn from `sampler`.
    pub fn forward_stochastic(&self, batch: ModelInput, sampler: &McDropout) -> ModelOutput {
        self.forward_impl(batch, Some(sampler))
    }

    /// Monte-Carlo dropout: `passes` stochastic forwards with every dropout site on (even on
    /// an inference device), summarised as mean probabilities, predictive entropy and mutual
    /// information per output; the masks come from `sampler`.
    pub fn forward_mc(&self, batch: ModelInput, passes: usize, sampler: &McDropout) -> McOutput {
        assert!(passes >= 1, "at least one pass");
        // The CNN has no dropout site: encode once, sample only the stochastic rest.
        let encoded = self.encode(batch);
        let probs: Vec<ModelProbabilities> = (0..passes)
            .map(|_| {
                self.decode_stochastic(encoded.clone(), sampler)
                    .probabilities()
            })
            .collect();
        let (any_mean, any) = binary(probs.iter().map(|p| p.any.clone()).collect());
        let (sub_mean, subtypes) = binary(probs.iter().map(|p| p.subtypes.clone()).collect());
        let (mort_mean, mortality) = binary(probs.iter().map(|p| p.mortality.clone()).collect());
        let (mrs_mean, mrs) = categorical(probs.iter().map(|p| p.mrs.clone()).collect());
        let mean = ModelProbabilities {
            any: any_mean,
            subtype_given_bleed: mean_of(
                probs.iter().map(|p| p.subtype_given_bleed.clone()),
                passes,
            ),
            subtypes: sub_mean,
            slices: mean_of(probs.iter().map(|p| p.slices.clone()), passes),
            mortality: mort_mean,
            mrs_at_least: mean_of(probs.iter().map(|p| p.mrs_at_least.clone()), passes),
            mrs: mrs_mean,
        };
        McOutput {
            mean,
            any,
            subtypes,
            mortality,
            mrs,
            passes,
        }
    }
}

/// One temperature per head (Guo et al. 2017): logits are divided by `T` (> 0) before the
/// sigmoid; the prognosis heads also take a bias added after the division (Platt scaling,
/// `z / T + b`). Fitting happens in the engine on a validation set; `T = 1, b = 0` is the
/// identity. Both maps are increasing, so rankings (AUCs) never change.
#[derive(Config, Debug, PartialEq)]
pub struct Temperatures {
    /// Study `any` head.
    #[config(default = 1.0)]
    pub any: f64,
    /// Study subtype-given-bleed head.
    #[config(default = 1.0)]
    pub subtypes: f64,
    /// Slice head.
    #[config(default = 1.0)]
    pub slices: f64,
    /// Mortality head.
    #[config(default = 1.0)]
    pub mortality: f64,
    /// mRS head (all six cumulative logits share it, so rank consistency is kept).
    #[config(default = 1.0)]
    pub mrs: f64,
    /// Platt bias of the mortality head.
    #[config(default = 0.0)]
    pub mortality_bias: f64,
    /// Platt bias shared by the six cumulative mRS logits (a common shift keeps them ordered).
    #[config(default = 0.0)]
    pub mrs_bias: f64,
}

impl Temperatures {
    /// Scaled copy of `out`'s logits; everything else is unchanged.
    pub fn apply(&self, out: &ModelOutput) -> ModelOutput {
        for t in [
            self.any,
            self.subtypes,
            self.slices,
            self.mortality,
            self.mrs,
        ] {
            assert!(t > 0.0 && t.is_finite(), "temperatures must be positive");
        }
        assert!(
            self.mortality_bias.is_finite() && self.mrs_bias.is_finite(),
            "calibration biases must be finite"
        );
        let mut o = out.clone();
        o.any_logit = o.any_logit / self.any;
        o.subtype_cond_logits = o.subtype_cond_logits / self.subtypes;
        o.slice_logits = o.slice_logits / self.slices;
        o.mortality_logit = o.mortality_logit / self.mortality + self.mortality_bias;
        o.mrs_logits = o.mrs_logits / self.mrs + self.mrs_bias;
        o
    }
}
