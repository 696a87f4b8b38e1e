//! After training: validation metrics per epoch, and the calibration of the best model on the
//! validation split (temperatures and Platt biases, thresholds, referral policy).

#[allow(unused_imports)]
use super::*;

/// Validation metrics from scores.
pub fn val_metrics(samples: &[StudySample], idx: &[usize], scores: &[StudyScores]) -> ValMetrics {
    let auc = |s: Vec<f64>, y: Vec<bool>| metrics::roc_auc(&s, &y).ok();
    let mut m = ValMetrics::default();
    let lab: Vec<_> = idx.iter().map(|&i| samples[i].labels).collect();
    let known: Vec<usize> = (0..idx.len()).filter(|&k| lab[k].is_some()).collect();
    m.auc_any = auc(
        known.iter().map(|&k| scores[k].any_logit).collect(),
        known.iter().map(|&k| lab[k].unwrap().any).collect(),
    );
    let subs: Vec<f64> = (0..hn_model::N_SUBTYPES)
        .filter_map(|j| {
            auc(
                known
                    .iter()
                    .map(|&k| scores[k].p_subtypes(1.0, 1.0)[j])
                    .collect(),
                known.iter().map(|&k| lab[k].unwrap().subtypes[j]).collect(),
            )
        })
        .collect();
    m.auc_subtypes_mean = (!subs.is_empty()).then(|| subs.iter().sum::<f64>() / subs.len() as f64);
    let mk: Vec<usize> = (0..idx.len())
        .filter(|&k| samples[idx[k]].outcomes.mortality_30d.is_some())
        .collect();
    m.auc_mortality = auc(
        mk.iter().map(|&k| scores[k].mortality_logit).collect(),
        mk.iter()
            .map(|&k| samples[idx[k]].outcomes.mortality_30d.unwrap())
            .collect(),
    );
    let (mut slice_s, mut slice_y) = (Vec::new(), Vec::new());
    for (k, &i) in idx.iter().enumerate() {
        if let Some(labels) = &samples[i].slice_labels {
            slice_s.extend(scores[k].slice_any.iter().copied());
            slice_y.extend(labels.iter().map(|l| l.any));
        }
    }
    m.auc_slice_any = auc(slice_s, slice_y);
    let parts: Vec<f64> = [m.auc_any, m.auc_subtypes_mean, m.auc_mortality]
        .into_iter()
        .flatten()
        .collect();
    m.score = if parts.is_empty() {
        0.0
    } else {
        parts.iter().sum::<f64>() / parts.len() as f64
    };
    m
}

/// Fit temperatures (any; subtypes pooled over known bleeds; mortality; poor outcome),
/// Youden thresholds and the referral policy on the validation split.
pub fn calibrate(
    net: &HemorrhageNet,
    data: &Dataset,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Calibration, TrainError> {
    calibrate_with(
        net,
        data,
        cfg,
        UncertaintyMeasure::default(),
        Density::FitOnTrainingSplit,
        None,
        device,
    )
}

/// Where the feature density of a calibration comes from.
#[derive(Debug, Clone)]
pub enum Density {
    /// Fitted on `data`'s training split (training: the model's own training data).
    FitOnTrainingSplit,
    /// The card's (a recalibration on another site keeps the density of the data the model
    /// was trained on; `None` for a card without one, which then refers on uncertainty alone).
    Keep(Option<crate::distance::FeatureDensity>),
}

/// [`calibrate`] with the referral policy fitted on `uncertainty` (a recalibration keeps the
/// measure the card had), the feature density of the model's training data ([`Density`]),
/// and, for a site recalibration, the card's temperatures to keep where refitting them does
/// not generalise on the site's data (`card_temperatures`, [`refit_temperatures`]).
pub fn calibrate_with(
    net: &HemorrhageNet,
    data: &Dataset,
    cfg: &TrainConfig,
    uncertainty: UncertaintyMeasure,
    density: Density,
    card_temperatures: Option<&TemperatureSet>,
    device: &Device,
) -> Result<Calibration, TrainError> {
    calibrate_modality(
        net,
        data,
        cfg,
        uncertainty,
        density,
        card_temperatures,
        None,
        device,
    )
}

/// [`calibrate_with`] on the studies of one modality only (`None`: all): the temperatures,
/// thresholds, feature density and referral policy of CT studies and of MR studies differ
/// (another image, another confidence), so a model that reads both gets one calibration each.
pub fn calibrate_modality(
    net: &HemorrhageNet,
    data: &Dataset,
    cfg: &TrainConfig,
    uncertainty: UncertaintyMeasure,
    density: Density,
    card_temperatures: Option<&TemperatureSet>,
    modality: Option<i64>,
    device: &Device,
) -> Result<Calibration, TrainError> {
    let idx = data.of_modality(data.indices(Split::Validation), modality);
    let scores = score(
        net,
        &crate::scoring::pick(&data.samples, &idx),
        16,
        InputMask::default(),
        cfg.mc_passes,
        cfg.tta,
        device,
    );
    let temps = match card_temperatures {
        Some(card) => refit_temperatures(&data.samples, &idx, &scores, card),
        None => fit_temperatures(&data.samples, &idx, &scores),
    };
    let mut thresholds = [0.5; hn_model::N_LABELS];
    let known: Vec<usize> = (0..idx.len())
        .filter(|&k| data.samples[idx[k]].labels.is_some())
        .collect();
    for j in 0..hn_model::N_LABELS {
        let s: Vec<f64> = known
            .iter()
            .map(|&k| scores[k].detection_row(temps.any, temps.subtypes)[j])
            .collect();
        let y: Vec<bool> = known
            .iter()
            .map(|&k| crate::sample::label_row(&data.samples[idx[k]].labels.unwrap())[j])
            .collect();
        if let Ok(op) = metrics::youden(&s, &y) {
            thresholds[j] = op.threshold;
        }
    }
    let mk: Vec<usize> = (0..idx.len())
        .filter(|&k| data.samples[idx[k]].outcomes.mortality_30d.is_some())
        .collect();
    let mortality_threshold = metrics::youden(
        &mk.iter()
            .map(|&k| {
                temps
                    .mortality_calibration()
                    .logit(scores[k].mortality_logit)
            })
            .map(metrics::sigmoid)
            .collect::<Vec<_>>(),
        &mk.iter()
            .map(|&k| data.samples[idx[k]].outcomes.mortality_30d.unwrap())
            .collect::<Vec<_>>(),
    )
    .map(|op| op.threshold)
    .unwrap_or(0.5);
    let unc: Vec<f64> = scores
        .iter()
        .map(|s| s.referral_uncertainty(uncertainty, &temps, thresholds[0]))
        .collect();
    // The feature distance from the training data: its density from the training split's
    // embeddings (one deterministic forward, the card's test-time augmentation, no MC), its
    // threshold from validation.
    let density = match density {
        Density::Keep(d) => d,
        Density::FitOnTrainingSplit => {
            let train = data.of_modality(data.indices(Split::Train), modality);
            let emb: Vec<Vec<f32>> = score(
                net,
                &crate::scoring::pick(&data.samples, &train),
                16,
                InputMask::default(),
                0,
                cfg.tta,
                device,
            )
            .into_iter()
            .map(|s| s.embedding)
            .collect();
            crate::distance::FeatureDensity::fit(&emb)
        }
    };
    let (distance, flagged_by_distance) = match density {
        Some(d) => {
            let dist: Vec<f64> = scores.iter().map(|s| d.distance(&s.embedding)).collect();
            let policy = crate::distance::DistancePolicy::fit(d, &dist);
            let flagged = dist
                .iter()
                .map(|&v| policy.as_ref().is_some_and(|p| p.atypical(v)))
                .collect();
            (policy, flagged)
        }
        None => (None, vec![false; scores.len()]),
    };
    // Referral is "atypical OR uncertain": the distance refers what it refers, and the
    // uncertainty threshold is chosen among the other validation studies so that together
    // they refer the target rate.
    let n_dist = flagged_by_distance.iter().filter(|&&f| f).count();
    let rest: Vec<f64> = unc
        .iter()
        .zip(&flagged_by_distance)
        .filter(|(_, f)| !**f)
        .map(|(u, _)| *u)
        .collect();
    let want = (cfg.target_referral_rate * unc.len() as f64).round() as usize;
    let referral = if rest.is_empty() || n_dist == 0 {
        metrics::ReferralPolicy::fit(&unc, cfg.target_referral_rate)?
    } else {
        let rate = want.saturating_sub(n_dist) as f64 / rest.len() as f64;
        let mut p = metrics::ReferralPolicy::fit(&rest, rate.clamp(0.0, 1.0))?;
        // Recorded as the policy of the whole referral: the target asked for, and the rate the
        // union reaches on validation.
        let union = unc
            .iter()
            .zip(&flagged_by_distance)
            .filter(|(u, f)| **f || p.refer(**u))
            .count();
        p.target_rate = cfg.target_referral_rate;
        p.validation_rate = union as f64 / unc.len() as f64;
        p
    };
    Ok(Calibration {
        temperatures: temps,
        thresholds,
        uncertainty,
        referral,
        mc_passes: cfg.mc_passes,
        tta: cfg.tta,
        mortality_threshold,
        facts: crate::scoring::facts_agreement(&data.samples, &idx, &scores),
        distance,
    })
}

/// Each head's validation `(logits, labels)`: any, subtypes (pooled over known bleeds),
/// mortality, poor outcome.
fn head_logits(
    samples: &[StudySample],
    idx: &[usize],
    scores: &[StudyScores],
) -> [(Vec<f64>, Vec<bool>); 4] {
    let mut any = (Vec::new(), Vec::new());
    let mut sub = (Vec::new(), Vec::new());
    let mut mort = (Vec::new(), Vec::new());
    let mut poor = (Vec::new(), Vec::new());
    for (k, &i) in idx.iter().enumerate() {
        let s = &samples[i];
        if let Some(l) = s.labels {
            any.0.push(scores[k].any_logit);
            any.1.push(l.any);
            if l.any {
                for j in 0..hn_model::N_SUBTYPES {
                    sub.0.push(scores[k].subtype_cond_logits[j]);
                    sub.1.push(l.subtypes[j]);
                }
            }
        }
        if let Some(m) = s.outcomes.mortality_30d {
            mort.0.push(scores[k].mortality_logit);
            mort.1.push(m);
        }
        if let Some(p) = s.outcomes.poor_outcome_90d() {
            poor.0
                .push(scores[k].mrs_logits[hn_model::POOR_OUTCOME_THRESHOLD]);
            poor.1.push(p);
        }
    }
    [any, sub, mort, poor]
}

/// The detection heads' fit: a temperature (their thresholds are picked after it; a bias
/// would only move them).
fn fit_detection(
    z: &[f64],
    y: &[bool],
) -> Result<metrics::LogitCalibration, metrics::MetricsError> {
    metrics::fit_temperature(z, y).map(metrics::LogitCalibration::temperature)
}

/// The prognosis heads' fit: Platt scaling where validation has enough of both outcomes
/// (their probabilities are reported as risks, so the offset matters as much as the spread).
fn fit_prognosis(
    z: &[f64],
    y: &[bool],
) -> Result<metrics::LogitCalibration, metrics::MetricsError> {
    metrics::fit_logit_calibration(z, y)
}

fn temperature_set(heads: [metrics::LogitCalibration; 4]) -> TemperatureSet {
    let [any, sub, mort, poor] = heads;
    TemperatureSet {
        any: any.temperature,
        subtypes: sub.temperature,
        mortality: mort.temperature,
        mortality_bias: mort.bias,
        mrs: poor.temperature,
        mrs_bias: poor.bias,
    }
}

/// Temperatures (and the prognosis heads' Platt biases) fitted on validation scores (identity
/// where a head has no labelled cases).
pub fn fit_temperatures(
    samples: &[StudySample],
    idx: &[usize],
    scores: &[StudyScores],
) -> TemperatureSet {
    let [any, sub, mort, poor] = head_logits(samples, idx, scores);
    let or_identity = |c: Result<metrics::LogitCalibration, metrics::MetricsError>| {
        c.unwrap_or(metrics::LogitCalibration::IDENTITY)
    };
    temperature_set([
        or_identity(fit_detection(&any.0, &any.1)),
        or_identity(fit_detection(&sub.0, &sub.1)),
        or_identity(fit_prognosis(&mort.0, &mort.1)),
        or_identity(fit_prognosis(&poor.0, &poor.1)),
    ])
}

/// A site recalibration's temperatures: each head refitted on the site's validation scores
/// only where the refit predicts held-out site studies better than `card`'s mapping
/// ([`metrics::keep_or_refit`]), else the card's kept. Logged per head.
pub fn refit_temperatures(
    samples: &[StudySample],
    idx: &[usize],
    scores: &[StudyScores],
    card: &TemperatureSet,
) -> TemperatureSet {
    let [any, sub, mort, poor] = head_logits(samples, idx, scores);
    let choose = |name: &str, (z, y): &(Vec<f64>, Vec<bool>), kept, fit: FitFn| {
        let (c, refitted) = metrics::keep_or_refit(z, y, kept, fit);
        tracing::info!(
            head = name,
            studies = z.len(),
            "site recalibration: {}",
            if refitted {
                "refitted"
            } else {
                "the card's mapping kept (a refit did not predict held-out site studies better)"
            }
        );
        c
    };
    temperature_set([
        choose(
            "any",
            &any,
            metrics::LogitCalibration::temperature(card.any),
            fit_detection,
        ),
        choose(
            "subtypes",
            &sub,
            metrics::LogitCalibration::temperature(card.subtypes),
            fit_detection,
        ),
        choose(
            "mortality",
            &mort,
            card.mortality_calibration(),
            fit_prognosis,
        ),
        choose("poor_outcome", &poor, card.mrs_calibration(), fit_prognosis),
    ])
}

type FitFn = fn(&[f64], &[bool]) -> Result<metrics::LogitCalibration, metrics::MetricsError>;
