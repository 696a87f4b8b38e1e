//! Discrimination: ROC AUC (with bootstrap CI), ROC curve, operating points, Youden, average
//! precision.

#[allow(unused_imports)]
use super::*;

/// Area under the ROC curve by the Mann-Whitney U statistic with average ranks for ties
/// (a tied positive/negative pair counts one half), equal to scikit-learn's `roc_auc_score`.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    check("roc_auc", scores, labels)?;
    let (n1, n0) = class_counts(labels);
    if n1 == 0 || n0 == 0 {
        return Err(MetricsError::SingleClass("roc_auc"));
    }
    Ok(hn_data::stats::roc_auc_unchecked(scores, labels))
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
    Ok(bootstrap(estimate, labels, n_boot, seed, |pick, l| {
        let s: Vec<f64> = pick.iter().map(|&j| scores[j]).collect();
        roc_auc(&s, l).ok()
    }))
}

/// The AUC of `scores` minus that of `other` on the same cases, with a seeded paired
/// percentile-bootstrap 95 % CI: both are scored on each resample, so what the two have in
/// common (the cases drawn) cancels and the interval is that of the difference, much
/// narrower than the two AUCs' own intervals side by side. Resampling as [`roc_auc_ci`].
pub fn roc_auc_difference_ci(
    scores: &[f64],
    other: &[f64],
    labels: &[bool],
    n_boot: usize,
    seed: u64,
) -> Result<Interval> {
    check("roc_auc_difference", other, labels)?;
    let estimate = roc_auc(scores, labels)? - roc_auc(other, labels)?;
    Ok(bootstrap(estimate, labels, n_boot, seed, |pick, l| {
        let a: Vec<f64> = pick.iter().map(|&j| scores[j]).collect();
        let b: Vec<f64> = pick.iter().map(|&j| other[j]).collect();
        Some(roc_auc(&a, l).ok()? - roc_auc(&b, l).ok()?)
    }))
}

/// Percentile bootstrap of `stat(case indices, their labels)` over `n_boot` case resamples
/// (those where `stat` is `None`, a single class, are redrawn up to `10 * n_boot` draws).
fn bootstrap(
    estimate: f64,
    labels: &[bool],
    n_boot: usize,
    seed: u64,
    stat: impl Fn(&[usize], &[bool]) -> Option<f64>,
) -> Interval {
    let n = labels.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(n_boot);
    let mut pick = vec![0; n];
    let mut l = vec![false; n];
    let mut draws = 0;
    while values.len() < n_boot && draws < n_boot.saturating_mul(10) {
        draws += 1;
        for k in 0..n {
            pick[k] = rng.random_range(0..n);
            l[k] = labels[pick[k]];
        }
        if let Some(v) = stat(&pick, &l) {
            values.push(v);
        }
    }
    if values.is_empty() {
        return Interval {
            estimate,
            lo: f64::NAN,
            hi: f64::NAN,
            n_boot: 0,
        };
    }
    values.sort_by(f64::total_cmp);
    Interval {
        estimate,
        lo: percentile_sorted(&values, 2.5),
        hi: percentile_sorted(&values, 97.5),
        n_boot: values.len(),
    }
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
    /// Positive when the score is at or above it; NaN (`null`) when each case had its own
    /// ([`at_thresholds`]).
    #[serde(with = "nan_as_null")]
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
    at_thresholds(scores, labels, &vec![threshold; scores.len()])
}

/// The same with each case judged at its own threshold (`thresholds[i]` for `scores[i]`): a
/// report pooling studies whose operating thresholds differ (CT and MR studies of one model,
/// each fixed on its modality's validation studies). The point's `threshold` is the common
/// value, NaN when they differ.
pub fn at_thresholds(
    scores: &[f64],
    labels: &[bool],
    thresholds: &[f64],
) -> Result<OperatingPoint> {
    check("at_threshold", scores, labels)?;
    if thresholds.len() != scores.len() {
        return Err(MetricsError::LengthMismatch {
            what: "at_thresholds",
            a: scores.len(),
            b: thresholds.len(),
        });
    }
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for ((s, l), t) in scores.iter().zip(labels).zip(thresholds) {
        match (*s >= *t, *l) {
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
    let threshold = match thresholds.first() {
        Some(&t) if thresholds.iter().all(|&u| u == t) => t,
        _ => f64::NAN,
    };
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
