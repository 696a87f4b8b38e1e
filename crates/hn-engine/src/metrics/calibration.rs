//! Calibration: log-losses, Brier, reliability and ECE, temperature and Platt scaling.

#[allow(unused_imports)]
use super::*;

/// Probability clipping used by the log-losses.
pub const LOG_LOSS_EPS: f64 = 1e-15;

pub(super) fn bce(p: f64, y: bool) -> f64 {
    let p = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
    if y { -p.ln() } else { -(1.0 - p).ln() }
}

/// Mean binary cross-entropy (probabilities clipped to `[1e-15, 1 - 1e-15]`).
pub fn log_loss(probs: &[f64], labels: &[bool]) -> Result<f64> {
    check_probs("log_loss", probs, labels)?;
    Ok(probs
        .iter()
        .zip(labels)
        .map(|(p, y)| bce(*p, *y))
        .sum::<f64>()
        / probs.len() as f64)
}

/// Label order of the RSNA-2019 rows: `any`, then [`hn_data::SUBTYPES`].
pub const RSNA_LABELS: [&str; 6] = [
    "any",
    "epidural",
    "subdural",
    "subarachnoid",
    "intraparenchymal",
    "intraventricular",
];
/// RSNA-2019 weights in [`RSNA_LABELS`] order: `any` 2, each subtype 1.
pub const RSNA_WEIGHTS: [f64; 6] = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0];

/// RSNA-2019 weighted multi-label log-loss: `Σ_i Σ_j w_j ℓ_ij / Σ_i Σ_j w_j` over rows `i`
/// (slices or studies) and labels `j` in [`RSNA_LABELS`] order.
pub fn rsna_weighted_log_loss(probs: &[[f64; 6]], labels: &[[bool; 6]]) -> Result<f64> {
    if probs.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            what: "rsna_weighted_log_loss",
            a: probs.len(),
            b: labels.len(),
        });
    }
    if probs.is_empty() {
        return Err(MetricsError::Empty("rsna_weighted_log_loss"));
    }
    let mut num = 0.0;
    for (i, (p, y)) in probs.iter().zip(labels).enumerate() {
        for j in 0..6 {
            if !(0.0..=1.0).contains(&p[j]) {
                return Err(MetricsError::NotProbability {
                    what: "rsna_weighted_log_loss",
                    index: i,
                    value: p[j],
                });
            }
            num += RSNA_WEIGHTS[j] * bce(p[j], y[j]);
        }
    }
    Ok(num / (RSNA_WEIGHTS.iter().sum::<f64>() * probs.len() as f64))
}

/// Brier score: mean squared difference between probability and outcome.
pub fn brier(probs: &[f64], labels: &[bool]) -> Result<f64> {
    check_probs("brier", probs, labels)?;
    Ok(probs
        .iter()
        .zip(labels)
        .map(|(p, y)| (p - if *y { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / probs.len() as f64)
}

/// Number of bins of [`ece`] by default.
pub const ECE_BINS: usize = 15;

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    #[serde(with = "nan_as_null")]
    pub lo: f64,
    #[serde(with = "nan_as_null")]
    pub hi: f64,
    pub count: usize,
    /// Mean predicted probability in the bin (NaN when empty).
    #[serde(with = "nan_as_null")]
    pub mean_pred: f64,
    /// Observed fraction of positives in the bin (NaN when empty).
    #[serde(with = "nan_as_null")]
    pub frac_pos: f64,
}

/// Reliability-diagram data with `n_bins` equal-width bins on [0, 1]; bin `b` holds
/// `b/n <= p < (b+1)/n`, the last bin also holds `p = 1`.
pub fn reliability(probs: &[f64], labels: &[bool], n_bins: usize) -> Result<Vec<ReliabilityBin>> {
    check_probs("reliability", probs, labels)?;
    if n_bins == 0 {
        return Err(MetricsError::Invalid(
            "reliability: n_bins must be > 0".into(),
        ));
    }
    let mut sum_p = vec![0.0; n_bins];
    let mut sum_y = vec![0.0; n_bins];
    let mut cnt = vec![0usize; n_bins];
    for (p, y) in probs.iter().zip(labels) {
        let b = ((p * n_bins as f64).floor() as usize).min(n_bins - 1);
        sum_p[b] += p;
        sum_y[b] += if *y { 1.0 } else { 0.0 };
        cnt[b] += 1;
    }
    Ok((0..n_bins)
        .map(|b| {
            let c = cnt[b] as f64;
            ReliabilityBin {
                lo: b as f64 / n_bins as f64,
                hi: (b + 1) as f64 / n_bins as f64,
                count: cnt[b],
                mean_pred: sum_p[b] / c,
                frac_pos: sum_y[b] / c,
            }
        })
        .collect())
}

/// Expected calibration error of the positive-class probability with `n_bins` equal-width
/// bins: `Σ_b (|B_b| / n) · |frac_pos_b − mean_pred_b|` (use [`ECE_BINS`] = 15).
pub fn ece(probs: &[f64], labels: &[bool], n_bins: usize) -> Result<f64> {
    let bins = reliability(probs, labels, n_bins)?;
    let n = probs.len() as f64;
    Ok(bins
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| b.count as f64 / n * (b.frac_pos - b.mean_pred).abs())
        .sum())
}

/// Logistic sigmoid, stable for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Mean NLL of `sigmoid(logit / t)`, computed from logits (no clipping needed).
pub fn nll_at_temperature(logits: &[f64], labels: &[bool], t: f64) -> f64 {
    // -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
    let softplus = |x: f64| {
        if x > 0.0 {
            x + (-x).exp().ln_1p()
        } else {
            x.exp().ln_1p()
        }
    };
    logits
        .iter()
        .zip(labels)
        .map(|(z, y)| {
            let z = z / t;
            if *y { softplus(-z) } else { softplus(z) }
        })
        .sum::<f64>()
        / logits.len() as f64
}

/// Temperature scaling: the `T > 0` minimising the validation NLL of `sigmoid(logit / T)`.
///
/// The NLL is convex in `1/T`, so a golden-section search on `1/T ∈ [0.01, 100]` (tolerance
/// 1e-9) finds the global minimum. Returns `T`.
pub fn fit_temperature(logits: &[f64], labels: &[bool]) -> Result<f64> {
    check("fit_temperature", logits, labels)?;
    let f = |inv_t: f64| nll_at_temperature(logits, labels, 1.0 / inv_t);
    let (mut a, mut b) = (0.01_f64, 100.0_f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    while (b - a).abs() > 1e-9 * (1.0 + c.abs()) {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    Ok(1.0 / ((a + b) / 2.0))
}

/// Probabilities `sigmoid(logit / t)`.
pub fn apply_temperature(logits: &[f64], t: f64) -> Vec<f64> {
    logits.iter().map(|z| sigmoid(z / t)).collect()
}

/// How a head's logits are recalibrated on validation data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// `sigmoid(z / T)` (Guo et al. 2017): one parameter, ranking unchanged.
    Temperature,
    /// `sigmoid(z / T + b)` (Platt 1999): a temperature and a bias, ranking unchanged.
    Platt,
}

/// A monotone recalibration of logits: `z ↦ z / temperature + bias`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogitCalibration {
    pub method: CalibrationMethod,
    pub temperature: f64,
    pub bias: f64,
}

impl LogitCalibration {
    /// The identity (temperature 1, no bias).
    pub const IDENTITY: LogitCalibration = LogitCalibration::temperature(1.0);

    /// Temperature scaling alone: `z ↦ z / t`.
    pub const fn temperature(t: f64) -> LogitCalibration {
        LogitCalibration {
            method: CalibrationMethod::Temperature,
            temperature: t,
            bias: 0.0,
        }
    }

    /// Calibrated logit.
    pub fn logit(&self, z: f64) -> f64 {
        z / self.temperature + self.bias
    }

    /// The logit this calibration maps to the probability `from` gives `z`: a logit of a study
    /// calibrated another way (an MR study of a model with per-modality calibrations)
    /// re-expressed on this scale, so one report can pool both.
    pub fn equivalent_logit(&self, z: f64, from: &LogitCalibration) -> f64 {
        (from.logit(z) - self.bias) * self.temperature
    }

    /// Calibrated probabilities of `logits`.
    pub fn probabilities(&self, logits: &[f64]) -> Vec<f64> {
        logits.iter().map(|z| sigmoid(self.logit(*z))).collect()
    }
}

/// Platt scaling needs this many validation cases of *each* class; below it the bias is too
/// noisy and [`fit_logit_calibration`] falls back to temperature scaling.
pub const PLATT_MIN_PER_CLASS: usize = 20;

/// Platt scaling: `a, b` maximising the validation likelihood of `sigmoid(a·z + b)`, returned
/// as `T = 1/a` and `bias = b`. Fitted by Newton's method (the IRLS of
/// [`crate::baselines::LogisticRegression`], slope lightly L2-penalised so separable data stay
/// finite). Errors when the fitted slope is not positive (the logits rank the classes
/// backwards: no monotone recalibration can help).
pub fn fit_platt(logits: &[f64], labels: &[bool]) -> Result<LogitCalibration> {
    check("fit_platt", logits, labels)?;
    let rows: Vec<Vec<f64>> = logits.iter().map(|z| vec![*z]).collect();
    let lr = crate::baselines::LogisticRegression::fit(&rows, labels, 1e-3)
        .map_err(|e| MetricsError::Invalid(format!("fit_platt: {e}")))?;
    let a = lr.weights[0];
    if !(a > 0.0 && a.is_finite() && lr.intercept.is_finite()) {
        return Err(MetricsError::Invalid(format!(
            "fit_platt: fitted slope {a} is not positive"
        )));
    }
    Ok(LogitCalibration {
        method: CalibrationMethod::Platt,
        temperature: 1.0 / a,
        bias: lr.intercept,
    })
}

/// The calibration a prognosis head gets from validation data: Platt scaling when there are
/// at least [`PLATT_MIN_PER_CLASS`] cases of each class (a temperature alone cannot move the
/// reliability curve's offset: a model that is too confident *and* shifted stays shifted),
/// else temperature scaling.
pub fn fit_logit_calibration(logits: &[f64], labels: &[bool]) -> Result<LogitCalibration> {
    let pos = labels.iter().filter(|y| **y).count();
    if pos >= PLATT_MIN_PER_CLASS
        && labels.len() - pos >= PLATT_MIN_PER_CLASS
        && let Ok(c) = fit_platt(logits, labels)
    {
        return Ok(c);
    }
    Ok(LogitCalibration::temperature(fit_temperature(
        logits, labels,
    )?))
}

/// Folds of [`keep_or_refit`]'s cross-validation.
pub const REFIT_FOLDS: usize = 5;

/// A site recalibration's choice for one head: `fit` on all of `(logits, labels)` if refitting
/// predicts held-out studies better than `kept` (the card's mapping) — the summed NLL over
/// [`REFIT_FOLDS`] interleaved folds, each fold scored by a fit on the others — else `kept`.
/// A refit on a few dozen events can move a calibration that was right further than the
/// site's data justify; this keeps the card unless the site's own data say otherwise. Returns
/// the mapping and whether it is the refit.
pub fn keep_or_refit(
    logits: &[f64],
    labels: &[bool],
    kept: LogitCalibration,
    fit: impl Fn(&[f64], &[bool]) -> Result<LogitCalibration>,
) -> (LogitCalibration, bool) {
    let nll = |c: &LogitCalibration, z: &[f64], y: &[bool]| {
        let z: Vec<f64> = z.iter().map(|v| c.logit(*v)).collect();
        nll_at_temperature(&z, y, 1.0) * z.len() as f64
    };
    if logits.len() < 2 * REFIT_FOLDS || logits.len() != labels.len() {
        return (kept, false);
    }
    let (mut refit_nll, mut kept_nll) = (0.0, 0.0);
    for f in 0..REFIT_FOLDS {
        let part = |held: bool| -> (Vec<f64>, Vec<bool>) {
            (0..logits.len())
                .filter(|i| (i % REFIT_FOLDS == f) == held)
                .map(|i| (logits[i], labels[i]))
                .unzip()
        };
        let ((zt, yt), (zh, yh)) = (part(false), part(true));
        // A fold where the refit cannot be fitted counts as the card's.
        let c = fit(&zt, &yt).unwrap_or(kept);
        refit_nll += nll(&c, &zh, &yh);
        kept_nll += nll(&kept, &zh, &yh);
    }
    match fit(logits, labels) {
        Ok(c) if refit_nll < kept_nll => (c, true),
        _ => (kept, false),
    }
}
