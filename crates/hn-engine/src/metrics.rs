//! Evaluation metrics on plain `f64` slices (no ML framework).
//!
//! Conventions, shared by every function here:
//! - `scores`/`probs` are the model's outputs for the positive class, `labels` the truth;
//! - a case is *predicted positive* when `score >= threshold`;
//! - inputs must be the same length, non-empty and finite, else [`MetricsError`];
//! - metrics that need both classes (AUC, Youden, ...) return [`MetricsError::SingleClass`]
//!   rather than a made-up number.
//!
//! These are hand-written because each is a few lines of arithmetic and the reference values in
//! the tests come from scikit-learn (snippets in the test comments); pulling an ML crate for them
//! would add a large dependency for no gain.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("{what}: length mismatch ({a} vs {b})")]
    LengthMismatch {
        what: &'static str,
        a: usize,
        b: usize,
    },
    #[error("{0}: no cases")]
    Empty(&'static str),
    #[error("{0}: needs both positive and negative cases")]
    SingleClass(&'static str),
    #[error("{what}: non-finite value at index {index}")]
    NonFinite { what: &'static str, index: usize },
    #[error("{what}: value {value} at index {index} is outside [0, 1]")]
    NotProbability {
        what: &'static str,
        index: usize,
        value: f64,
    },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, MetricsError>;

/// Serde for `f64` fields that may be NaN ("undefined"): written as JSON `null`, read back
/// from `null` as NaN (serde_json alone writes NaN as `null` but cannot read it back).
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// Serde for `f64` fields that may be ±∞ (e.g. "refer everything"): infinities are written as
/// the strings `"inf"` / `"-inf"` (JSON has no infinity) and read back from either form.
pub mod float_or_inf {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(D::Error::custom(format!(
                    "expected a number, \"inf\" or \"-inf\", got {other:?}"
                ))),
            },
        }
    }
}

fn check(what: &'static str, scores: &[f64], labels: &[bool]) -> Result<()> {
    if scores.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            what,
            a: scores.len(),
            b: labels.len(),
        });
    }
    if scores.is_empty() {
        return Err(MetricsError::Empty(what));
    }
    if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
        return Err(MetricsError::NonFinite { what, index });
    }
    Ok(())
}

fn check_probs(what: &'static str, probs: &[f64], labels: &[bool]) -> Result<()> {
    check(what, probs, labels)?;
    if let Some(index) = probs.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(MetricsError::NotProbability {
            what,
            index,
            value: probs[index],
        });
    }
    Ok(())
}

fn class_counts(labels: &[bool]) -> (usize, usize) {
    let pos = labels.iter().filter(|l| **l).count();
    (pos, labels.len() - pos)
}

/// Area under the ROC curve by the Mann-Whitney U statistic with average ranks for ties
/// (a tied positive/negative pair counts one half), equal to scikit-learn's `roc_auc_score`.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    check("roc_auc", scores, labels)?;
    let (n1, n0) = class_counts(labels);
    if n1 == 0 || n0 == 0 {
        return Err(MetricsError::SingleClass("roc_auc"));
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average 1-based ranks over tie groups; sum ranks of positives.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let (n1f, n0f) = (n1 as f64, n0 as f64);
    Ok((rank_sum_pos - n1f * (n1f + 1.0) / 2.0) / (n1f * n0f))
}

/// A point estimate with a percentile bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub estimate: f64,
    /// Lower bound (2.5th percentile for a 95 % CI).
    #[serde(with = "nan_as_null")]
    pub lo: f64,
    /// Upper bound (97.5th percentile for a 95 % CI).
    #[serde(with = "nan_as_null")]
    pub hi: f64,
    /// Bootstrap resamples that had both classes and so entered the interval.
    pub n_boot: usize,
}

/// ROC AUC with a seeded percentile-bootstrap 95 % CI (`n_boot` case resamples with
/// replacement; resamples with a single class are redrawn up to `10 * n_boot` draws in all).
pub fn roc_auc_ci(scores: &[f64], labels: &[bool], n_boot: usize, seed: u64) -> Result<Interval> {
    let estimate = roc_auc(scores, labels)?;
    let n = scores.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut aucs = Vec::with_capacity(n_boot);
    let mut s = vec![0.0; n];
    let mut l = vec![false; n];
    let mut draws = 0;
    while aucs.len() < n_boot && draws < n_boot.saturating_mul(10) {
        draws += 1;
        for k in 0..n {
            let j = rng.random_range(0..n);
            s[k] = scores[j];
            l[k] = labels[j];
        }
        if let Ok(a) = roc_auc(&s, &l) {
            aucs.push(a);
        }
    }
    if aucs.is_empty() {
        return Ok(Interval {
            estimate,
            lo: f64::NAN,
            hi: f64::NAN,
            n_boot: 0,
        });
    }
    aucs.sort_by(f64::total_cmp);
    Ok(Interval {
        estimate,
        lo: percentile_sorted(&aucs, 2.5),
        hi: percentile_sorted(&aucs, 97.5),
        n_boot: aucs.len(),
    })
}

/// Linear-interpolated percentile (numpy's default) of sorted values, `q` in 0..=100.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// One ROC operating point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// Predicted positive when `score >= threshold` (`+inf` for the (0, 0) start point).
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
}

/// ROC curve at every distinct score, highest first, starting at (0, 0) with threshold `+inf`
/// (scikit-learn's `roc_curve(..., drop_intermediate=False)`).
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<RocPoint>> {
    check("roc_curve", scores, labels)?;
    let (n1, n0) = class_counts(labels);
    if n1 == 0 || n0 == 0 {
        return Err(MetricsError::SingleClass("roc_curve"));
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut pts = vec![RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let t = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == t {
            if labels[idx[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        pts.push(RocPoint {
            threshold: t,
            fpr: fp as f64 / n0 as f64,
            tpr: tp as f64 / n1 as f64,
        });
    }
    Ok(pts)
}

/// Confusion counts and derived rates at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// TP / (TP + FN); NaN without positives.
    #[serde(with = "nan_as_null")]
    pub sensitivity: f64,
    /// TN / (TN + FP); NaN without negatives.
    #[serde(with = "nan_as_null")]
    pub specificity: f64,
    /// TP / (TP + FP); 0 when nothing is predicted positive (scikit-learn's zero_division=0).
    pub ppv: f64,
    /// 2 TP / (2 TP + FP + FN); 0 when that is 0/0.
    pub f1: f64,
    /// (TP + TN) / n.
    #[serde(with = "nan_as_null")]
    pub accuracy: f64,
}

/// Sensitivity, specificity, PPV, F1 and accuracy at `threshold` (positive when `>=`).
pub fn at_threshold(scores: &[f64], labels: &[bool], threshold: f64) -> Result<OperatingPoint> {
    check("at_threshold", scores, labels)?;
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for (s, l) in scores.iter().zip(labels) {
        match (*s >= threshold, *l) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let div = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    let zdiv = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(OperatingPoint {
        threshold,
        tp,
        fp,
        tn,
        fn_,
        sensitivity: div(tp, tp + fn_),
        specificity: div(tn, tn + fp),
        ppv: zdiv(tp, tp + fp),
        f1: zdiv(2 * tp, 2 * tp + fp + fn_),
        accuracy: (tp + tn) as f64 / scores.len() as f64,
    })
}

/// F1 score at `threshold`.
pub fn f1_score(scores: &[f64], labels: &[bool], threshold: f64) -> Result<f64> {
    Ok(at_threshold(scores, labels, threshold)?.f1)
}

/// The operating point maximising Youden's J = sensitivity + specificity - 1 over the distinct
/// scores (the first, i.e. highest, threshold wins ties).
pub fn youden(scores: &[f64], labels: &[bool]) -> Result<OperatingPoint> {
    let curve = roc_curve(scores, labels)?;
    let best = curve
        .iter()
        .skip(1)
        .fold(None::<RocPoint>, |best, p| match best {
            Some(b) if b.tpr - b.fpr >= p.tpr - p.fpr => Some(b),
            _ => Some(*p),
        })
        .ok_or(MetricsError::Empty("youden"))?;
    at_threshold(scores, labels, best.threshold)
}

/// Average precision (area under the precision-recall curve as a step sum,
/// `Σ (R_n − R_{n−1}) P_n`), equal to scikit-learn's `average_precision_score`.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64> {
    let curve = roc_curve(scores, labels)?;
    let (n1, _) = class_counts(labels);
    let n0 = labels.len() - n1;
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for p in curve.iter().skip(1) {
        let tp = p.tpr * n1 as f64;
        let fp = p.fpr * n0 as f64;
        let precision = tp / (tp + fp);
        ap += (p.tpr - prev_recall) * precision;
        prev_recall = p.tpr;
    }
    Ok(ap)
}

/// Probability clipping used by the log-losses.
pub const LOG_LOSS_EPS: f64 = 1e-15;

fn bce(p: f64, y: bool) -> f64 {
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

/// How well the hematoma-facts read-out agrees with the known facts (synthetic truth) on a set
/// of studies. Stored in the card (validation) when the model was trained with facts targets;
/// `predict` and the model-estimated ICH score use the read-out only then.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FactsAgreement {
    /// Studies with known facts.
    pub n: usize,
    /// Mean absolute error of the hematoma volume outside the ventricles (mL).
    pub hematoma_ml_mae: f64,
    /// Mean absolute error of the intraventricular volume (mL).
    pub intraventricular_ml_mae: f64,
    /// Fraction of studies on the right side of the ICH score's 30 mL cut.
    pub volume_cut_accuracy: f64,
    /// AUC of P(infratentorial) (null with a single class).
    pub infratentorial_auc: Option<f64>,
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
    pub const IDENTITY: LogitCalibration = LogitCalibration {
        method: CalibrationMethod::Temperature,
        temperature: 1.0,
        bias: 0.0,
    };

    /// Calibrated logit.
    pub fn logit(&self, z: f64) -> f64 {
        z / self.temperature + self.bias
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
    Ok(LogitCalibration {
        method: CalibrationMethod::Temperature,
        temperature: fit_temperature(logits, labels)?,
        bias: 0.0,
    })
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from scikit-learn 1.9.1 / scipy:
    // s = np.array([0.1,0.4,0.35,0.8,0.65,0.4,0.2,0.9,0.55,0.4])
    // y = np.array([0,0,1,1,0,1,0,1,1,0])
    // roc_auc_score(y,s) -> 0.76; average_precision_score(y,s) -> 0.7892857142857144
    // brier_score_loss(y,s) -> 0.18275; log_loss(y,s) -> 0.5292431363103185
    // roc_curve(y,s,drop_intermediate=False) -> see ROC below; f1_score(y, s>=0.4) -> 2/3
    // z = 3*logit(s); minimize_scalar(mean NLL of sigmoid(z/t), bounds=(0.01,100)) -> 2.43803801
    // ECE, 15 equal-width bins: 0.255
    const S: [f64; 10] = [0.1, 0.4, 0.35, 0.8, 0.65, 0.4, 0.2, 0.9, 0.55, 0.4];
    const Y: [bool; 10] = [
        false, false, true, true, false, true, false, true, true, false,
    ];

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn auc_matches_sklearn_with_ties() {
        close(roc_auc(&S, &Y).unwrap(), 0.76, 1e-12);
        // perfect and inverted
        close(roc_auc(&[0.1, 0.9], &[false, true]).unwrap(), 1.0, 0.0);
        close(roc_auc(&[0.9, 0.1], &[false, true]).unwrap(), 0.0, 0.0);
        // all tied -> 0.5
        close(
            roc_auc(&[0.3; 4], &[true, false, true, false]).unwrap(),
            0.5,
            0.0,
        );
    }

    #[test]
    fn auc_rejects_bad_input() {
        assert_eq!(
            roc_auc(&[0.1, 0.2], &[true, true]),
            Err(MetricsError::SingleClass("roc_auc"))
        );
        assert!(matches!(
            roc_auc(&[0.1], &[true, false]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            roc_auc(&[0.1, f64::NAN], &[true, false]),
            Err(MetricsError::NonFinite { index: 1, .. })
        ));
    }

    #[test]
    fn bootstrap_ci_is_seeded_and_brackets_estimate() {
        let a = roc_auc_ci(&S, &Y, 500, 7).unwrap();
        let b = roc_auc_ci(&S, &Y, 500, 7).unwrap();
        let c = roc_auc_ci(&S, &Y, 500, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!((a.lo, a.hi), (c.lo, c.hi)); // the seed matters
        assert!(a.lo <= a.estimate && a.estimate <= a.hi, "{a:?}");
        assert!(a.lo > 0.2 && a.hi <= 1.0 && a.hi - a.lo > 0.1, "{a:?}");
        assert_eq!(a.n_boot, 500);
    }

    #[test]
    fn roc_curve_matches_sklearn() {
        const ROC: [(f64, f64, f64); 9] = [
            (f64::INFINITY, 0.0, 0.0),
            (0.9, 0.0, 0.2),
            (0.8, 0.0, 0.4),
            (0.65, 0.2, 0.4),
            (0.55, 0.2, 0.6),
            (0.4, 0.6, 0.8),
            (0.35, 0.6, 1.0),
            (0.2, 0.8, 1.0),
            (0.1, 1.0, 1.0),
        ];
        let c = roc_curve(&S, &Y).unwrap();
        assert_eq!(c.len(), ROC.len());
        for (p, (t, f, r)) in c.iter().zip(ROC) {
            assert_eq!(p.threshold, t);
            close(p.fpr, f, 1e-12);
            close(p.tpr, r, 1e-12);
        }
    }

    #[test]
    fn operating_points() {
        let op = at_threshold(&S, &Y, 0.4).unwrap();
        assert_eq!((op.tp, op.fp, op.tn, op.fn_), (4, 3, 2, 1));
        close(op.sensitivity, 0.8, 1e-12);
        close(op.specificity, 0.4, 1e-12);
        close(op.f1, 2.0 / 3.0, 1e-12);
        close(f1_score(&S, &Y, 0.4).unwrap(), 2.0 / 3.0, 1e-12);
        // Youden: J = tpr - fpr is max 0.4 at 0.8 (0.4-0), 0.55 (0.6-0.2) and 0.35 (1-0.6);
        // the highest threshold wins ties.
        let y = youden(&S, &Y).unwrap();
        assert_eq!(y.threshold, 0.8);
        close(y.sensitivity - (1.0 - y.specificity), 0.4, 1e-12);
    }

    #[test]
    fn pr_auc_brier_logloss_match_sklearn() {
        close(
            average_precision(&S, &Y).unwrap(),
            0.7892857142857144,
            1e-12,
        );
        close(brier(&S, &Y).unwrap(), 0.18275, 1e-12);
        close(log_loss(&S, &Y).unwrap(), 0.5292431363103185, 1e-12);
        assert!(matches!(
            brier(&[1.5], &[true]),
            Err(MetricsError::NotProbability { .. })
        ));
    }

    #[test]
    fn rsna_log_loss_weights_any_twice() {
        // One row: any p=0.5 (y=1), subtypes p=0.5 (y=0) -> every term ln 2 -> loss ln 2.
        let l = rsna_weighted_log_loss(&[[0.5; 6]], &[[true, false, false, false, false, false]])
            .unwrap();
        close(l, 2f64.ln(), 1e-12);
        // any perfectly right, subtypes p=0.5: (2*~0 + 5*ln2)/7
        let mut p = [0.5; 6];
        p[0] = 1.0;
        let l = rsna_weighted_log_loss(&[p], &[[true; 6]]).unwrap();
        close(l, 5.0 * 2f64.ln() / 7.0, 1e-12);
        // any wrong (p=0.25 for y=1) weighs 2: (2*ln4 + 5*ln2)/7
        p[0] = 0.25;
        let l = rsna_weighted_log_loss(&[p], &[[true; 6]]).unwrap();
        close(l, (2.0 * 4f64.ln() + 5.0 * 2f64.ln()) / 7.0, 1e-12);
    }

    #[test]
    fn ece_and_reliability() {
        close(ece(&S, &Y, ECE_BINS).unwrap(), 0.255, 1e-12);
        let bins = reliability(&S, &Y, 15).unwrap();
        assert_eq!(bins.len(), 15);
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 10);
        // p = 1.0 goes to the last bin, p = 0 to the first
        let b = reliability(&[0.0, 1.0], &[false, true], 15).unwrap();
        assert_eq!((b[0].count, b[14].count), (1, 1));
        close(ece(&[0.0, 1.0], &[false, true], 15).unwrap(), 0.0, 0.0);
    }

    #[test]
    fn temperature_scaling_matches_scipy_and_helps() {
        let z: Vec<f64> = S.iter().map(|p| 3.0 * (p / (1.0 - p)).ln()).collect();
        let t = fit_temperature(&z, &Y).unwrap();
        close(t, 2.4380380100172983, 1e-6);
        let before = nll_at_temperature(&z, &Y, 1.0);
        let after = nll_at_temperature(&z, &Y, t);
        assert!(after < before);
        close(after, 0.5252760781590476, 1e-9);
        let p = apply_temperature(&z, t);
        assert!(p.iter().all(|p| (0.0..=1.0).contains(p)));
    }

    #[test]
    fn platt_scaling_recovers_a_shift_that_temperature_cannot() {
        // Labels drawn from sigmoid(0.5·z − 1): the model is over-confident and shifted.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let z: Vec<f64> = (0..4000).map(|_| rng.random_range(-6.0..6.0)).collect();
        let y: Vec<bool> = z
            .iter()
            .map(|z| rng.random::<f64>() < sigmoid(0.5 * z - 1.0))
            .collect();
        let c = fit_platt(&z, &y).unwrap();
        assert_eq!(c.method, CalibrationMethod::Platt);
        close(c.temperature, 2.0, 0.25);
        close(c.bias, -1.0, 0.2);
        let t = fit_temperature(&z, &y).unwrap();
        let platt_nll = {
            let p = c.probabilities(&z);
            log_loss_mean(&p, &y)
        };
        let temp_nll = nll_at_temperature(&z, &y, t);
        assert!(platt_nll < temp_nll - 0.01, "{platt_nll} vs {temp_nll}");
        let ece_p = ece(&c.probabilities(&z), &y, 15).unwrap();
        let ece_t = ece(&apply_temperature(&z, t), &y, 15).unwrap();
        assert!(ece_p < ece_t, "{ece_p} vs {ece_t}");
        // The chooser picks Platt with enough of each class, temperature without.
        assert_eq!(
            fit_logit_calibration(&z, &y).unwrap().method,
            CalibrationMethod::Platt
        );
        let few = fit_logit_calibration(&z[..30], &y[..30]).unwrap();
        assert_eq!(few.method, CalibrationMethod::Temperature);
        assert_eq!(few.bias, 0.0);
        // Logits that rank backwards: no Platt fit, the chooser still answers.
        let flipped: Vec<f64> = z.iter().map(|v| -v).collect();
        assert!(fit_platt(&flipped, &y).is_err());
        assert_eq!(
            fit_logit_calibration(&flipped, &y).unwrap().method,
            CalibrationMethod::Temperature
        );
    }

    fn log_loss_mean(p: &[f64], y: &[bool]) -> f64 {
        p.iter()
            .zip(y)
            .map(|(p, y)| if *y { -p.ln() } else { -(1.0 - p).ln() })
            .sum::<f64>()
            / p.len() as f64
    }

    #[test]
    fn referral_curve_drops_uncertain_errors() {
        // Wrong cases are the uncertain ones: referring them raises accuracy to 1.
        let probs = [0.9, 0.1, 0.6, 0.4, 0.8, 0.2];
        let labels = [true, false, false, true, true, false];
        let unc: Vec<f64> = probs.iter().map(|p| binary_entropy(*p)).collect();
        let c = referral_curve(&probs, &labels, &unc, &[0.0, 1.0 / 3.0, 1.0]).unwrap();
        close(c[0].accuracy, 4.0 / 6.0, 1e-12);
        assert_eq!(c[1].n_retained, 4);
        close(c[1].accuracy, 1.0, 0.0);
        assert_eq!(c[1].auc, Some(1.0));
        assert_eq!(c[2].n_retained, 0);
        assert!(c[2].auc.is_none());
    }

    #[test]
    fn referral_policy_hits_target_rate() {
        let u: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let p = ReferralPolicy::fit(&u, 0.2).unwrap();
        close(p.validation_rate, 0.2, 1e-12);
        assert_eq!(u.iter().filter(|x| p.refer(**x)).count(), 20);
        assert!(p.refer(0.99) && !p.refer(0.5));
        assert!(p.refer(f64::NAN));
        let none = ReferralPolicy::fit(&u, 0.0).unwrap();
        assert_eq!(u.iter().filter(|x| none.refer(**x)).count(), 0);
        let all = ReferralPolicy::fit(&u, 1.0).unwrap();
        assert_eq!(u.iter().filter(|x| all.refer(**x)).count(), 100);
        assert!(ReferralPolicy::fit(&u, 1.5).is_err());
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn refer_everything_policy_survives_json() {
        let p = ReferralPolicy::fit(&[0.1, 0.2, 0.3], 1.0).unwrap();
        assert_eq!(p.threshold, f64::NEG_INFINITY);
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"-inf\""), "{text}");
        let back: ReferralPolicy = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        let q = ReferralPolicy::fit(&[0.1, 0.2, 0.3], 0.0).unwrap();
        let back: ReferralPolicy =
            serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
        assert_eq!(back, q);
        assert!(
            serde_json::from_str::<ReferralPolicy>(
                r#"{"threshold":"lots","target_rate":0.1,"validation_rate":0.1}"#
            )
            .is_err()
        );
    }
}
