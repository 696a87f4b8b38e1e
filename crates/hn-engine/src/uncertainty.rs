//! Uncertainty of one study's prediction from its MC-dropout passes, and the measure the
//! referral policy ranks by. Calibration, evaluation and prediction all read it from here, so
//! the value a threshold was fitted on is the value a request is compared with.

use serde::{Deserialize, Serialize};

use hn_model::N_MRS_CLASSES;

use crate::metrics::{binary_entropy, sigmoid};

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// Which uncertainty of P(hemorrhage) drives referral (`Calibration::uncertainty`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UncertaintyMeasure {
    /// `H[E p]`: total predictive uncertainty, largest at P = 0.5 (what cards calibrated
    /// before the decision entropy existed use).
    #[serde(rename = "any_predictive_entropy")]
    AnyPredictiveEntropy,
    /// `H[E σ(logit p − logit τ)]`: the predictive entropy measured around the card's bleed
    /// threshold τ instead of 0.5 (what training fits the policy on). The threshold is fitted
    /// on validation and a site recalibration moves it; the plain entropy would then rank
    /// studies by their distance from 0.5, not from the decision, and refer the wrong ones
    /// (docs/RESULTS.md, "Shift suite"). At τ = 0.5 both are the same.
    #[default]
    #[serde(rename = "any_decision_entropy")]
    AnyDecisionEntropy,
    /// `H[E p] − E H[p]`: the epistemic part only. `any_mutual_info` is the name some early
    /// cards used.
    #[serde(rename = "any_mutual_information", alias = "any_mutual_info")]
    AnyMutualInformation,
}

impl UncertaintyMeasure {
    /// Name as written in cards.
    pub fn name(self) -> &'static str {
        match self {
            UncertaintyMeasure::AnyPredictiveEntropy => "any_predictive_entropy",
            UncertaintyMeasure::AnyDecisionEntropy => "any_decision_entropy",
            UncertaintyMeasure::AnyMutualInformation => "any_mutual_information",
        }
    }

    /// The words a report uses for it.
    pub fn describe(self) -> &'static str {
        match self {
            UncertaintyMeasure::AnyPredictiveEntropy => "predictive entropy of P(hemorrhage)",
            UncertaintyMeasure::AnyDecisionEntropy => {
                "predictive entropy of P(hemorrhage) around the bleed threshold"
            }
            UncertaintyMeasure::AnyMutualInformation => "mutual information of P(hemorrhage)",
        }
    }

    /// This measure's value for the calibrated P(hemorrhage) of each MC pass, `passes`, when
    /// the bleed decision is `P ≥ threshold`.
    pub fn of_passes(self, passes: &[f64], threshold: f64) -> f64 {
        match self {
            UncertaintyMeasure::AnyPredictiveEntropy => {
                binary_uncertainty(passes).predictive_entropy
            }
            UncertaintyMeasure::AnyMutualInformation => {
                binary_uncertainty(passes).mutual_information
            }
            UncertaintyMeasure::AnyDecisionEntropy => {
                let tau = logit(threshold.clamp(1e-6, 1.0 - 1e-6));
                let centred: Vec<f64> = passes
                    .iter()
                    .map(|&p| sigmoid(logit(p.clamp(1e-12, 1.0 - 1e-12)) - tau))
                    .collect();
                binary_uncertainty(&centred).predictive_entropy
            }
        }
    }
}

/// Uncertainty of one head, in nats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadUncertainty {
    /// `H[E p]`: total predictive uncertainty.
    pub predictive_entropy: f64,
    /// `H[E p] − E H[p]`: disagreement between MC passes (epistemic).
    pub mutual_information: f64,
    /// Mean calibrated probability over the passes (binary heads; `null` for mRS).
    pub mc_mean: Option<f64>,
    /// Standard deviation of the probability over passes (binary heads; `null` for mRS).
    pub sd: Option<f64>,
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// Mean of the passes' distributions and the decomposition under `entropy` (BALD): the
/// predictive entropy of the mean, and that minus the mean entropy of the passes.
fn decompose<P>(
    passes: &[P],
    mean_of: impl Fn(&[P]) -> P,
    entropy: impl Fn(&P) -> f64,
) -> (P, f64, f64) {
    let m = mean_of(passes);
    let h = entropy(&m);
    let expected = mean(passes.iter().map(&entropy));
    (m, h, (h - expected).max(0.0))
}

/// Uncertainty of a binary head from its per-pass probabilities.
pub fn binary_uncertainty(ps: &[f64]) -> HeadUncertainty {
    let (m, h, mi) = decompose(ps, |p| mean(p.iter().copied()), |p| binary_entropy(*p));
    let var = mean(ps.iter().map(|p| (p - m).powi(2)));
    HeadUncertainty {
        predictive_entropy: h,
        mutual_information: mi,
        mc_mean: Some(m),
        sd: Some(var.sqrt()),
    }
}

fn categorical_entropy(p: &[f64; N_MRS_CLASSES]) -> f64 {
    -p.iter()
        .map(|q| {
            let q = q.clamp(1e-7, 1.0);
            q * q.ln()
        })
        .sum::<f64>()
}

/// Uncertainty of the 7-class mRS head from its per-pass distributions.
pub fn categorical_uncertainty(ps: &[[f64; N_MRS_CLASSES]]) -> HeadUncertainty {
    let mean_dist =
        |p: &[[f64; N_MRS_CLASSES]]| std::array::from_fn(|k| mean(p.iter().map(|q| q[k])));
    let (_, h, mi) = decompose(ps, mean_dist, categorical_entropy);
    HeadUncertainty {
        predictive_entropy: h,
        mutual_information: mi,
        mc_mean: None,
        sd: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreeing_passes_have_no_mutual_information() {
        let u = binary_uncertainty(&[0.3, 0.3, 0.3]);
        assert!(u.mutual_information.abs() < 1e-12);
        assert!((u.predictive_entropy - binary_entropy(0.3)).abs() < 1e-12);
        assert_eq!(u.sd, Some(0.0));
        let split = binary_uncertainty(&[0.01, 0.99]);
        assert!(split.mutual_information > 0.5, "{split:?}");
        let c = categorical_uncertainty(&[[1.0 / 7.0; 7], [1.0 / 7.0; 7]]);
        assert!((c.predictive_entropy - 7f64.ln()).abs() < 1e-9);
        assert!(c.mutual_information.abs() < 1e-12);
    }

    #[test]
    fn the_decision_entropy_peaks_at_the_threshold() {
        let d = UncertaintyMeasure::AnyDecisionEntropy;
        let h = |p: f64| d.of_passes(&[p], 0.3);
        // Largest at the threshold, not at 0.5, and symmetric in the logit around it.
        assert!((h(0.3) - 2f64.ln()).abs() < 1e-9);
        assert!(h(0.3) > h(0.5) && h(0.3) > h(0.2));
        let lo = sigmoid(logit(0.3) - 1.0);
        let hi = sigmoid(logit(0.3) + 1.0);
        assert!((h(lo) - h(hi)).abs() < 1e-9);
        // At a threshold of 0.5 it is the plain predictive entropy.
        let passes = [0.2, 0.45, 0.7];
        let plain = UncertaintyMeasure::AnyPredictiveEntropy.of_passes(&passes, 0.9);
        assert!((d.of_passes(&passes, 0.5) - plain).abs() < 1e-9);
        assert!((plain - binary_uncertainty(&passes).predictive_entropy).abs() < 1e-12);
    }

    #[test]
    fn measure_names_round_trip_and_accept_the_old_alias() {
        for m in [
            UncertaintyMeasure::AnyPredictiveEntropy,
            UncertaintyMeasure::AnyDecisionEntropy,
            UncertaintyMeasure::AnyMutualInformation,
        ] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        let old: UncertaintyMeasure = serde_json::from_str("\"any_mutual_info\"").unwrap();
        assert_eq!(old, UncertaintyMeasure::AnyMutualInformation);
        let err = serde_json::from_str::<UncertaintyMeasure>("\"entropy\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}
