//! From evaluation inputs (scores, labels, baselines) to the report: discrimination with CIs,
//! calibration, referral and the plots' data.

#[allow(unused_imports)]
use super::*;

pub(super) fn auc_opt(
    s: &[f64],
    y: &[bool],
    n_boot: usize,
    seed: u64,
) -> Result<Option<Interval>, ReportError> {
    single_class_as_none(metrics::roc_auc_ci(s, y, n_boot, seed))
}

/// An AUC interval, or `None` where the cases hold one class only (no AUC is defined).
fn single_class_as_none(
    r: Result<Interval, MetricsError>,
) -> Result<Option<Interval>, ReportError> {
    match r {
        Ok(i) => Ok(Some(i)),
        Err(MetricsError::SingleClass(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Detection metrics of one label from scores (probabilities or logits) at `threshold`.
pub fn label_metrics(
    label: &str,
    scores: &[f64],
    labels: &[bool],
    thresholds: &[f64],
    n_boot: usize,
    seed: u64,
) -> Result<LabelMetrics, ReportError> {
    let auc = auc_opt(scores, labels, n_boot, seed)?;
    let two = auc.is_some();
    Ok(LabelMetrics {
        label: label.to_string(),
        n: scores.len(),
        n_positive: labels.iter().filter(|l| **l).count(),
        auc,
        pr_auc: if two {
            Some(metrics::average_precision(scores, labels)?)
        } else {
            None
        },
        at_chosen: metrics::at_thresholds(scores, labels, thresholds)?,
        at_youden: if two {
            Some(metrics::youden(scores, labels)?)
        } else {
            None
        },
    })
}

/// Prognosis metrics: temperature scaling and the card's calibration fitted on validation
/// logits, applied to test logits.
pub fn prognosis_metrics(
    outcome: &str,
    fixed: Option<metrics::LogitCalibration>,
    val_logits: &[f64],
    val_labels: &[bool],
    test_logits: &[f64],
    test_labels: &[bool],
    n_boot: usize,
    seed: u64,
) -> Result<PrognosisMetrics, ReportError> {
    let (t, calibration) = match fixed {
        Some(c) => (c.temperature, c),
        None => (
            metrics::fit_temperature(val_logits, val_labels)?,
            metrics::fit_logit_calibration(val_logits, val_labels)?,
        ),
    };
    let before = metrics::apply_temperature(test_logits, 1.0);
    let scaled = metrics::apply_temperature(test_logits, t);
    let after = calibration.probabilities(test_logits);
    Ok(PrognosisMetrics {
        outcome: outcome.to_string(),
        n: test_logits.len(),
        n_positive: test_labels.iter().filter(|l| **l).count(),
        auc: auc_opt(test_logits, test_labels, n_boot, seed)?,
        temperature: t,
        brier_after_temperature: metrics::brier(&scaled, test_labels)?,
        ece_after_temperature: metrics::ece(&scaled, test_labels, ECE_BINS)?,
        calibration,
        brier_before: metrics::brier(&before, test_labels)?,
        brier_after: metrics::brier(&after, test_labels)?,
        ece_before: metrics::ece(&before, test_labels, ECE_BINS)?,
        ece_after: metrics::ece(&after, test_labels, ECE_BINS)?,
        reliability_before: metrics::reliability(&before, test_labels, ECE_BINS)?,
        reliability_after_temperature: metrics::reliability(&scaled, test_labels, ECE_BINS)?,
        reliability_after: metrics::reliability(&after, test_labels, ECE_BINS)?,
    })
}

/// A baseline's AUC (and Brier when its scores are probabilities), and the model's AUC gain
/// over it on the same cases where the model's scores are given.
pub fn baseline_result(
    b: &BaselineInputs,
    n_boot: usize,
    seed: u64,
) -> Result<BaselineResult, ReportError> {
    let model_gain = match &b.model_scores {
        Some(m) => single_class_as_none(metrics::roc_auc_difference_ci(
            m, &b.scores, &b.labels, n_boot, seed,
        ))?,
        None => None,
    };
    Ok(BaselineResult {
        name: b.name.clone(),
        task: b.task.clone(),
        n: b.scores.len(),
        auc: auc_opt(&b.scores, &b.labels, n_boot, seed)?,
        brier: if b.probabilities {
            Some(metrics::brier(&b.scores, &b.labels)?)
        } else {
            None
        },
        model_gain,
    })
}

/// Detection outputs and truth, rows = studies (or slices), columns = [`metrics::RSNA_LABELS`].
#[derive(Debug, Clone, Default)]
pub struct DetectionInputs {
    pub probs: Vec<[f64; 6]>,
    pub truth: Vec<[bool; 6]>,
    /// Each row's operating thresholds per label (picked on validation; a mixed-modality
    /// report judges each study at its own modality's).
    pub thresholds: Vec<[f64; 6]>,
}

/// One binary prognosis outcome: validation logits fit the temperature, test logits are scored.
#[derive(Debug, Clone, Default)]
pub struct PrognosisInputs {
    pub outcome: String,
    /// The calibration to apply instead of one fitted on `val_logits` (external data scored
    /// with the card's calibration: nothing of it is used to fit).
    pub fixed: Option<metrics::LogitCalibration>,
    pub val_logits: Vec<f64>,
    pub val_labels: Vec<bool>,
    pub test_logits: Vec<f64>,
    pub test_labels: Vec<bool>,
}

/// Referral inputs for one task.
#[derive(Debug, Clone, Default)]
pub struct ReferralInputs {
    pub task: String,
    pub uncertainty: String,
    /// The policy to apply instead of one fitted on `val_uncertainty`.
    pub fixed: Option<ReferralPolicy>,
    pub val_uncertainty: Vec<f64>,
    pub target_rate: f64,
    pub test_probs: Vec<f64>,
    pub test_labels: Vec<bool>,
    pub test_uncertainty: Vec<f64>,
    /// The feature distance, when the card has a distance policy.
    pub distance: Option<DistanceInputs>,
}

/// Feature distances of the validation and evaluated cases, and the card's threshold.
#[derive(Debug, Clone)]
pub struct DistanceInputs {
    pub threshold: f64,
    pub val: Vec<f64>,
    pub test: Vec<f64>,
}

/// A baseline's (or ablation's) scores on the same cases as the model for `task`
/// (a detection label or a prognosis outcome name).
#[derive(Debug, Clone, Default)]
pub struct BaselineInputs {
    pub name: String,
    pub task: String,
    pub scores: Vec<f64>,
    pub labels: Vec<bool>,
    /// True when `scores` are probabilities (then Brier is reported).
    pub probabilities: bool,
    /// The model's scores on the same cases, in the same order, for a paired comparison
    /// ([`BaselineResult::model_gain`]); `None` leaves it out.
    pub model_scores: Option<Vec<f64>>,
}

/// Everything an evaluation produced, for [`evaluate`].
#[derive(Debug, Clone)]
pub struct EvalInputs {
    pub dataset: DatasetInfo,
    pub detection: Option<DetectionInputs>,
    pub prognosis: Vec<PrognosisInputs>,
    pub referral: Option<ReferralInputs>,
    pub baselines: Vec<BaselineInputs>,
    pub bayes_limit: Vec<BayesLimit>,
    pub hematoma_facts: Option<metrics::FactsAgreement>,
    pub test_time_augmentation: TestTimeAugmentation,
    /// Overlay PNGs for the attention section.
    pub overlays: Vec<(String, Vec<u8>)>,
    /// The model's outputs left unreported because their head never learned.
    pub withheld: Vec<crate::infer::WithheldOutput>,
    /// Synthetic data: any-bleed scores with the true bleed volume (`None`: no bleed).
    pub bleed_volumes: Vec<(f64, Option<f64>)>,
    /// The same studies scored from the images alone (clinical values hidden): what the
    /// imaging, one sequence more or less, finds by itself.
    pub bleed_volumes_image_only: Vec<(f64, Option<f64>)>,
}

/// Bounds (mL) of the bleed-size strata of [`SizeStratum`]: under 1 mL, 1–5 mL, 5 mL and
/// more. 1 mL because the intraparenchymal bleeds the generator calls small (`p_small_bleed`)
/// are under it — microbleed-sized, and on MR a haemosiderin scar when old — and 5 mL because
/// a 5 mL bleed is about 2 cm across, a few pixels on the model grid.
pub const BLEED_SIZE_BOUNDS_ML: [f64; 2] = [1.0, 5.0];

/// [`SizeStratum`]s of `(any-bleed score, true volume)` pairs at [`BLEED_SIZE_BOUNDS_ML`].
pub fn bleed_size_strata(
    scored: &[(f64, Option<f64>)],
    n_boot: usize,
    seed: u64,
) -> Vec<SizeStratum> {
    let negatives: Vec<f64> = scored
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(s, _)| *s)
        .collect();
    let mut edges = vec![0.0];
    edges.extend(BLEED_SIZE_BOUNDS_ML);
    (0..edges.len())
        .map(|i| {
            let (lo, hi) = (edges[i], edges.get(i + 1).copied());
            let pos: Vec<f64> = scored
                .iter()
                .filter(|(_, v)| v.is_some_and(|v| v >= lo && hi.is_none_or(|h| v < h)))
                .map(|(s, _)| *s)
                .collect();
            let scores: Vec<f64> = pos.iter().chain(&negatives).copied().collect();
            let labels: Vec<bool> = (0..scores.len()).map(|k| k < pos.len()).collect();
            SizeStratum {
                label: match hi {
                    Some(h) if i == 0 => format!("< {h} mL"),
                    Some(h) => format!("{lo}–{h} mL"),
                    None => format!("≥ {lo} mL"),
                },
                min_ml: lo,
                max_ml: hi,
                n_positive: pos.len(),
                n_negative: negatives.len(),
                auc: metrics::roc_auc_ci(&scores, &labels, n_boot, seed).ok(),
            }
        })
        .collect()
}

/// Referral fractions of the report's curve: 0, 5, ..., 50 %.
pub const REFERRAL_FRACTIONS: [f64; 11] =
    [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5];

/// Compute the whole report (and its plots) from model outputs, baselines and truth.
pub fn evaluate(inp: &EvalInputs) -> Result<(MetricsReport, ReportPlots), ReportError> {
    let (n_boot, seed) = (inp.dataset.bootstrap_resamples, inp.dataset.bootstrap_seed);
    let mut plots = ReportPlots {
        overlays: inp.overlays.clone(),
        ..Default::default()
    };
    let roc_with_baselines = |task: &str, model: Vec<RocPoint>| -> Result<RocSet, ReportError> {
        let mut set = vec![("model".to_string(), model)];
        for b in inp.baselines.iter().filter(|b| b.task == task) {
            if let Ok(c) = metrics::roc_curve(&b.scores, &b.labels) {
                set.push((b.name.clone(), c));
            }
        }
        Ok(set)
    };
    let mut detection = Vec::new();
    let mut rsna_log_loss = None;
    if let Some(d) = &inp.detection {
        for (what, n) in [
            ("detection", d.truth.len()),
            ("thresholds", d.thresholds.len()),
        ] {
            if d.probs.len() != n {
                return Err(MetricsError::LengthMismatch {
                    what,
                    a: d.probs.len(),
                    b: n,
                }
                .into());
            }
        }
        for (j, label) in metrics::RSNA_LABELS.iter().enumerate() {
            let s: Vec<f64> = d.probs.iter().map(|p| p[j]).collect();
            let y: Vec<bool> = d.truth.iter().map(|t| t[j]).collect();
            let thr: Vec<f64> = d.thresholds.iter().map(|t| t[j]).collect();
            let m = label_metrics(label, &s, &y, &thr, n_boot, seed)?;
            if m.auc.is_some() {
                plots.roc.push((
                    label.to_string(),
                    roc_with_baselines(label, metrics::roc_curve(&s, &y)?)?,
                ));
            }
            detection.push(m);
        }
        rsna_log_loss = Some(metrics::rsna_weighted_log_loss(&d.probs, &d.truth)?);
    }
    let mut prognosis = Vec::new();
    for p in &inp.prognosis {
        let m = prognosis_metrics(
            &p.outcome,
            p.fixed,
            &p.val_logits,
            &p.val_labels,
            &p.test_logits,
            &p.test_labels,
            n_boot,
            seed,
        )?;
        if m.auc.is_some() {
            let probs = m.calibration.probabilities(&p.test_logits);
            plots.roc.push((
                p.outcome.clone(),
                roc_with_baselines(&p.outcome, metrics::roc_curve(&probs, &p.test_labels)?)?,
            ));
        }
        prognosis.push(m);
    }
    let referral = match &inp.referral {
        Some(r) => {
            let policy = match r.fixed {
                Some(p) => p,
                None => ReferralPolicy::fit(&r.val_uncertainty, r.target_rate)?,
            };
            let atypical = |k: usize| {
                r.distance
                    .as_ref()
                    .is_some_and(|d| crate::distance::beyond(d.threshold, d.test[k]))
            };
            let n = r.test_uncertainty.len().max(1) as f64;
            let referred = (0..r.test_uncertainty.len())
                .filter(|&k| policy.refer(r.test_uncertainty[k]) || atypical(k))
                .count();
            let curve = |score: &[f64]| {
                metrics::referral_curve(&r.test_probs, &r.test_labels, score, &REFERRAL_FRACTIONS)
            };
            let distance = match &r.distance {
                Some(d) => Some(DistanceReferral {
                    threshold: d.threshold,
                    test_rate: (0..d.test.len()).filter(|&k| atypical(k)).count() as f64 / n,
                    curve: curve(&d.test)?,
                    curve_combined: curve(&crate::distance::combined_scores(
                        &r.val_uncertainty,
                        &d.val,
                        &r.test_uncertainty,
                        &d.test,
                    ))?,
                }),
                None => None,
            };
            Some(ReferralReport {
                task: r.task.clone(),
                uncertainty: r.uncertainty.clone(),
                policy,
                test_rate: referred as f64 / n,
                curve: curve(&r.test_uncertainty)?,
                distance,
            })
        }
        None => None,
    };
    let baselines = inp
        .baselines
        .iter()
        .map(|b| baseline_result(b, n_boot, seed))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        MetricsReport {
            schema_version: SCHEMA_VERSION,
            dataset: inp.dataset.clone(),
            detection,
            rsna_log_loss,
            prognosis,
            referral,
            baselines,
            bayes_limit: inp.bayes_limit.clone(),
            hematoma_facts: inp.hematoma_facts,
            test_time_augmentation: inp.test_time_augmentation,
            recalibration: None,
            withheld: inp.withheld.clone(),
            detection_by_bleed_size: if inp.bleed_volumes.is_empty() {
                Vec::new()
            } else {
                bleed_size_strata(&inp.bleed_volumes, n_boot, seed)
            },
            detection_by_bleed_size_image_only: if inp.bleed_volumes_image_only.is_empty() {
                Vec::new()
            } else {
                bleed_size_strata(&inp.bleed_volumes_image_only, n_boot, seed)
            },
        },
        plots,
    ))
}
