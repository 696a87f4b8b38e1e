//! Uncertainty-based referral: the referral curve and the policy fitted on validation.

#[allow(unused_imports)]
use super::*;

/// Binary entropy of `p` in nats (an uncertainty score for referral).
pub fn binary_entropy(p: f64) -> f64 {
    let p = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
    -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())
}

/// One point of a referral curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReferralPoint {
    /// Requested fraction of cases referred to a clinician.
    pub fraction_referred: f64,
    /// Cases the model keeps.
    pub n_retained: usize,
    /// AUC on retained cases; `None` when they hold a single class.
    pub auc: Option<f64>,
    /// Accuracy at probability 0.5 on retained cases (NaN when none are retained).
    #[serde(with = "nan_as_null")]
    pub accuracy: f64,
}

/// Referral curve: for each fraction `f`, the `round(f·n)` most uncertain cases (highest
/// `uncertainty`, stable order on ties) are referred and AUC/accuracy are measured on the rest.
pub fn referral_curve(
    probs: &[f64],
    labels: &[bool],
    uncertainty: &[f64],
    fractions: &[f64],
) -> Result<Vec<ReferralPoint>> {
    check_probs("referral_curve", probs, labels)?;
    check("referral_curve uncertainty", uncertainty, labels)?;
    let n = probs.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| uncertainty[b].total_cmp(&uncertainty[a]));
    let mut out = Vec::with_capacity(fractions.len());
    for &f in fractions {
        if !(0.0..=1.0).contains(&f) {
            return Err(MetricsError::Invalid(format!(
                "referral_curve: fraction {f} is outside [0, 1]"
            )));
        }
        let k = ((f * n as f64).round() as usize).min(n);
        let kept = &order[k..];
        let p: Vec<f64> = kept.iter().map(|&i| probs[i]).collect();
        let y: Vec<bool> = kept.iter().map(|&i| labels[i]).collect();
        let accuracy = if kept.is_empty() {
            f64::NAN
        } else {
            p.iter()
                .zip(&y)
                .filter(|(p, y)| (**p >= 0.5) == **y)
                .count() as f64
                / p.len() as f64
        };
        out.push(ReferralPoint {
            fraction_referred: f,
            n_retained: kept.len(),
            auc: roc_auc(&p, &y).ok(),
            accuracy,
        });
    }
    Ok(out)
}

/// Refer a case to a clinician when its uncertainty is above a threshold chosen on validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReferralPolicy {
    /// Refer when `uncertainty > threshold` (`-inf`, written `"-inf"`, refers every case).
    #[serde(with = "float_or_inf")]
    pub threshold: f64,
    /// The referral rate asked for at fit time.
    pub target_rate: f64,
    /// The rate the threshold achieves on the validation data (differs from the target on ties).
    pub validation_rate: f64,
}

impl ReferralPolicy {
    /// Pick the threshold so that about `target_rate` of the validation cases are referred:
    /// with `k = round(rate · n)`, the threshold is the (k+1)-th largest uncertainty (so the
    /// `k` largest are above it when there are no ties); `-inf` when `k = n`.
    pub fn fit(val_uncertainty: &[f64], target_rate: f64) -> Result<Self> {
        if val_uncertainty.is_empty() {
            return Err(MetricsError::Empty("ReferralPolicy::fit"));
        }
        if let Some(index) = val_uncertainty.iter().position(|u| !u.is_finite()) {
            return Err(MetricsError::NonFinite {
                what: "ReferralPolicy::fit",
                index,
            });
        }
        if !(0.0..=1.0).contains(&target_rate) {
            return Err(MetricsError::Invalid(format!(
                "ReferralPolicy::fit: target rate {target_rate} is outside [0, 1]"
            )));
        }
        let mut u = val_uncertainty.to_vec();
        u.sort_by(|a, b| b.total_cmp(a));
        let n = u.len();
        let k = ((target_rate * n as f64).round() as usize).min(n);
        let threshold = if k == n { f64::NEG_INFINITY } else { u[k] };
        let referred = u.iter().filter(|x| **x > threshold).count();
        Ok(ReferralPolicy {
            threshold,
            target_rate,
            validation_rate: referred as f64 / n as f64,
        })
    }

    /// True when the case should be referred.
    pub fn refer(&self, uncertainty: f64) -> bool {
        // NaN uncertainty means the model cannot vouch for the case: refer it.
        uncertainty.is_nan() || uncertainty > self.threshold
    }

    /// The uncertainty this policy refers exactly when `own` refers `uncertainty`, shifted by
    /// the difference of the thresholds (so rankings above and below each threshold are
    /// kept): a study judged under another policy (its modality's) re-expressed on this one,
    /// so one report can pool both.
    pub fn equivalent_uncertainty(&self, uncertainty: f64, own: &ReferralPolicy) -> f64 {
        if own.threshold == self.threshold || uncertainty.is_nan() {
            return uncertainty;
        }
        let referred = own.refer(uncertainty);
        if own.threshold == f64::NEG_INFINITY {
            return f64::INFINITY;
        }
        if self.threshold == f64::NEG_INFINITY {
            return if referred {
                uncertainty - own.threshold
            } else {
                f64::NEG_INFINITY
            };
        }
        let v = uncertainty - own.threshold + self.threshold;
        // Rounding must not move a case across the threshold.
        match (referred, self.refer(v)) {
            (true, false) => self.threshold.next_up(),
            (false, true) => self.threshold,
            _ => v,
        }
    }
}
