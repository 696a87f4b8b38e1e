//! From one study's [`StudyScores`] to its [`Prediction`]: small pure functions (no network,
//! no device), each one part of the report. Evaluation's `predictions.csv` is built from the
//! same [`probabilities`] and [`review`], so the two cannot drift apart.

use hn_data::clinical::{CLINICAL_FEATURES, N_CLINICAL};
use hn_data::{ClinicalRecord, SUBTYPES};
use hn_model::HemorrhageNetConfig;

use super::schema::*;
use crate::checkpoint::{Calibration, Head, ModelCard, TemperatureSet};
use crate::sample::StudySample;
use crate::scoring::{CalibratedProbabilities, StudyScores, StudyUncertainty};
use crate::uncertainty::UncertaintyMeasure;

/// Version of the `prediction.json` schema.
pub const SCHEMA_VERSION: u32 = 3;

/// Clinical features listed in `feature_weights` by default.
pub const DEFAULT_TOP_FEATURES: usize = 5;

/// Key slices listed (and rendered as overlays).
pub const N_KEY_SLICES: usize = 3;

/// The levels of the decision path, as the report names them.
const LEVEL_QUESTIONS: [&str; 3] = ["hemorrhage?", "which types?", "prognosis?"];

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The temperatures a card's predictions of a `modality` study are made with (identity when
/// uncalibrated; [`ModelCard::calibration_for`]).
pub fn temperatures(card: &ModelCard, modality: i64) -> TemperatureSet {
    card.calibration_for(modality)
        .map(|c| c.temperatures)
        .unwrap_or_default()
}

/// Operating thresholds `[any, 5 subtypes]` (0.5 when uncalibrated).
fn thresholds(cal: Option<&Calibration>) -> [f64; hn_model::N_LABELS] {
    cal.map(|c| c.thresholds)
        .unwrap_or([0.5; hn_model::N_LABELS])
}

/// The outputs `card`'s model does not report because their head never learned
/// ([`ModelCard::untrained`]).
pub fn withheld(card: &ModelCard) -> Vec<WithheldOutput> {
    [Head::Mortality30d, Head::Mrs90d]
        .into_iter()
        .filter_map(|h| {
            card.untrained(h).map(|reason| WithheldOutput {
                output: h.name().into(),
                reason,
            })
        })
        .collect()
}

fn learned(withheld: &[WithheldOutput], head: Head) -> bool {
    !withheld.iter().any(|w| w.output == head.name())
}

/// Every calibrated probability, named as in the report; `null` for the heads in `withheld`.
pub fn probabilities(p: &CalibratedProbabilities, withheld: &[WithheldOutput]) -> Probabilities {
    let names = subtype_names();
    let mort = learned(withheld, Head::Mortality30d);
    let mrs = learned(withheld, Head::Mrs90d);
    Probabilities {
        any: p.any,
        subtypes: names.iter().cloned().zip(p.subtypes).collect(),
        subtypes_given_bleed: names.into_iter().zip(p.given_bleed).collect(),
        mortality_30d: mort.then_some(p.mortality_30d),
        poor_outcome_90d: mrs.then(|| p.poor_outcome_90d()),
        mrs_at_least: mrs.then_some(p.mrs_at_least),
        mrs: mrs.then_some(p.mrs),
    }
}

fn subtype_names() -> Vec<String> {
    SUBTYPES.iter().map(|t| t.rsna_name().into()).collect()
}

/// The hierarchical decision path: bleed? → which types? → prognosis, each level evaluated
/// only when the one above said yes; level 3 only with a head that learned, and without the
/// outputs in `withheld`.
pub fn decision_path(
    p: &CalibratedProbabilities,
    cal: Option<&Calibration>,
    withheld: &[WithheldOutput],
) -> DecisionPath {
    let thr = thresholds(cal);
    let bleed = p.any >= thr[0];
    let level_1 = HemorrhageDecision {
        question: LEVEL_QUESTIONS[0].into(),
        probability: p.any,
        threshold: thr[0],
        decision: bleed,
    };
    let not_bleed = format!(
        "level 1 decided no hemorrhage (P = {:.4} < threshold {:.4})",
        p.any, thr[0]
    );
    let names = subtype_names();
    let level_2 = SubtypeLevel {
        question: LEVEL_QUESTIONS[1].into(),
        evaluated: bleed,
        skipped: (!bleed).then(|| not_bleed.clone()),
        subtypes: if bleed {
            (0..SUBTYPES.len())
                .map(|k| SubtypeDecision {
                    subtype: names[k].clone(),
                    probability: p.subtypes[k],
                    probability_given_bleed: p.given_bleed[k],
                    threshold: thr[k + 1],
                    decision: p.subtypes[k] >= thr[k + 1],
                })
                .collect()
        } else {
            Vec::new()
        },
    };
    let mort = learned(withheld, Head::Mortality30d);
    let mrs = learned(withheld, Head::Mrs90d);
    let evaluated = bleed && (mort || mrs);
    let skipped = if !bleed {
        Some(not_bleed)
    } else if !evaluated {
        Some("no prognosis head of this model learned (see withheld)".to_string())
    } else {
        None
    };
    let (bm, br) = (bleed && mort, bleed && mrs);
    let mort_thr = cal
        .map(|c| c.mortality_threshold)
        .and_then(finite)
        .filter(|_| bm);
    let level_3 = PrognosisLevel {
        question: LEVEL_QUESTIONS[2].into(),
        evaluated,
        skipped,
        p_mortality_30d: bm.then_some(p.mortality_30d),
        mortality_threshold: mort_thr,
        high_mortality_risk: mort_thr.map(|t| p.mortality_30d >= t),
        p_poor_outcome_90d: br.then(|| p.poor_outcome_90d()),
        mrs_distribution: br.then_some(p.mrs),
        withheld: if bleed {
            withheld
                .iter()
                .map(|w| format!("{}: {}", w.output, w.reason))
                .collect()
        } else {
            Vec::new()
        },
    };
    DecisionPath {
        level_1,
        level_2,
        level_3,
    }
}

/// The uncertainty section of the report (`null` for the heads in `withheld`).
pub fn uncertainty_report(u: &StudyUncertainty, withheld: &[WithheldOutput]) -> UncertaintyReport {
    UncertaintyReport {
        method: if u.passes == 0 {
            "deterministic".into()
        } else {
            "mc_dropout".into()
        },
        passes: u.passes,
        any: u.any,
        mortality_30d: learned(withheld, Head::Mortality30d).then_some(u.mortality_30d),
        mrs_90d: learned(withheld, Head::Mrs90d).then_some(u.mrs_90d),
    }
}

/// `sample` against `card`'s training envelope, when the card has one.
pub fn input_gate(card: &ModelCard, sample: &StudySample) -> Option<crate::envelope::InputGate> {
    let envelope = if sample.modality == hn_model::MODALITY_MR {
        card.mr_envelope.as_ref()?
    } else {
        card.envelope.as_ref()?
    };
    Some(envelope.check(&crate::envelope::InputProfile::of(sample)))
}

/// [`review`], and a study outside the training envelope is referred whatever its
/// uncertainty, the reason saying so first. What `predict` and `predictions.csv` report.
pub fn gated_review(
    cal: Option<&Calibration>,
    scores: &StudyScores,
    gate: Option<&crate::envelope::InputGate>,
) -> Review {
    let mut r = review(cal, scores);
    if let Some(g) = gate.filter(|g| g.verdict != crate::envelope::Verdict::Inside) {
        r.flag = true;
        r.reason = format!(
            "outside the training envelope ({}): refer to a clinician; {}",
            g.describe(),
            r.reason
        );
    }
    r
}

/// The referral decision: the card's policy on the card's uncertainty measure; an
/// uncalibrated model refers every case.
pub fn review(cal: Option<&Calibration>, scores: &StudyScores) -> Review {
    let Some(c) = cal else {
        let measure = UncertaintyMeasure::default();
        return Review {
            flag: true,
            reason: "uncalibrated model: no referral threshold was chosen on validation, so \
                     every result needs clinician review"
                .into(),
            uncertainty_measure: measure.name().into(),
            uncertainty: scores.referral_uncertainty(measure, &TemperatureSet::default(), 0.5),
            threshold: None,
            target_referral_rate: None,
            validation_referral_rate: None,
            feature_distance: None,
            distance_threshold: None,
        };
    };
    let u = scores.referral_uncertainty(c.uncertainty, &c.temperatures, c.thresholds[0]);
    let pol = &c.referral;
    let uncertain = pol.refer(u);
    let distance = c
        .distance
        .as_ref()
        .map(|p| (p, p.density.distance(&scores.embedding)));
    let atypical = distance.is_some_and(|(p, d)| p.atypical(d));
    let flag = uncertain || atypical;
    let rate = pol.target_rate * 100.0;
    let relation = if uncertain { "above" } else { "within" };
    let action = if flag { ": refer to a clinician" } else { "" };
    let mut reason = format!(
        "{} {u:.3} nats is {relation} the referral threshold {:.3} chosen on validation \
         for a {rate:.0}% referral rate",
        c.uncertainty.describe(),
        pol.threshold
    );
    if let Some((p, d)) = distance {
        let relation = if atypical { "above" } else { "within" };
        reason = format!(
            "{reason}; the feature distance from the training data, {d:.2}, is {relation} the \
             threshold {:.2} chosen on validation{}",
            p.threshold,
            if atypical {
                " (an atypical study for this model)"
            } else {
                ""
            }
        );
    }
    Review {
        flag,
        reason: reason + action,
        uncertainty_measure: c.uncertainty.name().into(),
        uncertainty: u,
        threshold: finite(pol.threshold),
        target_referral_rate: Some(pol.target_rate),
        validation_referral_rate: Some(pol.validation_rate),
        feature_distance: distance.map(|(_, d)| d).and_then(finite),
        distance_threshold: distance.map(|(p, _)| p.threshold),
    }
}

/// The `top` clinical features by this patient's gate, with the values as given.
pub fn feature_weights(
    gates: &[f64],
    clinical: &ClinicalRecord,
    unlearned: &[usize],
    top: usize,
) -> Vec<FeatureWeight> {
    let given = serde_json::to_value(clinical).unwrap_or_default();
    // A feature the network never learned is read as missing: its gate says nothing.
    let mut order: Vec<usize> = (0..N_CLINICAL.min(gates.len()))
        .filter(|i| !unlearned.contains(i))
        .collect();
    order.sort_by(|a, b| gates[*b].total_cmp(&gates[*a]).then(a.cmp(b)));
    order
        .into_iter()
        .take(top)
        .map(|i| {
            let f = &CLINICAL_FEATURES[i];
            let v = given
                .get(f.name)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            FeatureWeight {
                name: f.name.into(),
                value: if v.is_null() { "missing".into() } else { v },
                unit: f.unit.into(),
                weight: gates[i],
            }
        })
        .collect()
}

/// Spread each heatmap cell's mass evenly over the `[height, width]` pixels it covers
/// (`per_pixel`: mass / pixel count, so the map still sums to 1) or copy the cell value to
/// each of them (`!per_pixel`: an image to colour). The one cell-to-pixel map of the engine.
pub fn cells_to_pixels(
    cfg: &HemorrhageNetConfig,
    cells: &[f32],
    hw: (usize, usize),
    height: usize,
    width: usize,
    per_pixel: bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; height * width];
    for i in 0..hw.0 {
        for j in 0..hw.1 {
            let (rows, cols) = cfg.cell_bounds(i, j, height, width);
            let n = rows.len() * cols.len();
            if n == 0 {
                continue;
            }
            let v = cells[i * hw.1 + j];
            let v = if per_pixel { v / n as f32 } else { v };
            for y in rows {
                for x in cols.clone() {
                    out[y * width + x] = v;
                }
            }
        }
    }
    out
}

/// The heatmap as a density on the model grid `[S, H, W]` (sums to 1).
pub fn heatmap_density(
    cfg: &HemorrhageNetConfig,
    scores: &StudyScores,
    grid_hw: (usize, usize),
) -> Heatmap {
    let [s, h, w] = scores.heatmap_shape;
    let (gh, gw) = grid_hw;
    let mut density = Vec::with_capacity(s * gh * gw);
    for si in 0..s {
        let cells = &scores.heatmap[si * h * w..(si + 1) * h * w];
        density.extend(cells_to_pixels(cfg, cells, (h, w), gh, gw, true));
    }
    Heatmap {
        shape: [s, gh, gw],
        density,
    }
}

/// Overlay file name of model-grid slice `s`.
pub fn overlay_name(s: usize) -> String {
    format!("overlay_slice{s:02}.png")
}

/// The [`N_KEY_SLICES`] slices with the most heatmap mass, with the nearest slice of an input
/// volume of `nz_in` slices.
pub fn key_slices(scores: &StudyScores, nz_in: usize) -> Vec<KeySlice> {
    let s = scores.heatmap_shape[0];
    let mass = scores.slice_heat_mass(s);
    let mut by_mass: Vec<usize> = (0..s).collect();
    by_mass.sort_by(|a, b| mass[*b].total_cmp(&mass[*a]).then(a.cmp(b)));
    by_mass
        .into_iter()
        .take(N_KEY_SLICES)
        .map(|si| KeySlice {
            slice: si,
            input_slice: (((si as f64 + 0.5) * nz_in as f64 / s as f64 - 0.5).round() as usize)
                .min(nz_in.saturating_sub(1)),
            heat_mass: mass[si],
            p_any: scores.slice_any[si],
            overlay: overlay_name(si),
        })
        .collect()
}

/// The facts read-out, gated by the bleed decision; `None` unless the card says it was trained.
pub fn estimated_facts(
    scores: &StudyScores,
    cal: Option<&Calibration>,
    bleed: bool,
) -> Option<EstimatedFacts> {
    let validation = cal.and_then(|c| c.facts)?;
    let f = scores.estimated_facts();
    let gate = |v: f64| if bleed { v } else { 0.0 };
    Some(EstimatedFacts {
        hematoma_ml: gate(f.hematoma_ml),
        intraventricular_ml: gate(f.intraventricular_ml),
        p_infratentorial: scores.p_infratentorial(),
        validation,
    })
}

/// Hematoma volume (mL) and the words for how it was estimated: the facts read-out when
/// trained, else the crude image estimate on the slices the bleed decision opens.
pub fn hematoma_volume(
    facts: Option<&EstimatedFacts>,
    scores: &StudyScores,
    sample: &StudySample,
    windows: &[(f32, f32)],
    bleed: bool,
) -> (Option<f64>, String) {
    match facts {
        Some(f) => (
            finite(f.hematoma_ml + f.intraventricular_ml),
            format!(
                "the network's hematoma-facts read-out (hematoma + intraventricular; \
                 validation mean absolute error {:.1} + {:.1} mL)",
                f.validation.hematoma_ml_mae, f.validation.intraventricular_ml_mae
            ),
        ),
        None => {
            let s = scores.heatmap_shape[0];
            let gate = super::volume_gate(&scores.slice_any, &scores.slice_heat_mass(s), bleed);
            (
                finite(super::estimate_volume_ml(sample, &gate, windows)),
                "crude image-derived estimate: voxels of 55-100 HU (3x3 mean, bone excluded) \
                 on slices with slice P(any) >= 0.5, on the model grid; not a segmentation"
                    .to_string(),
            )
        }
    }
}

/// Names of clinical features by index into `CLINICAL_FEATURES`, comma-separated.
pub fn clinical_names(features: &[usize]) -> String {
    features
        .iter()
        .filter_map(|&i| CLINICAL_FEATURES.get(i).map(|f| f.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The clinical features given for a study that the network does not read
/// ([`HemorrhageNetConfig::clinical_unlearned`]).
pub fn unread_clinical(net: &HemorrhageNetConfig, clinical: &ClinicalRecord) -> Vec<usize> {
    let values = clinical.values();
    net.unlearned_clinical_features()
        .iter()
        .copied()
        .filter(|&i| values.get(i).is_some_and(|v| v.is_some()))
        .collect()
}

/// [`unread_clinical`] as a warning; `None` when every given value was read.
pub fn unread_clinical_warning(
    net: &HemorrhageNetConfig,
    clinical: &ClinicalRecord,
) -> Option<String> {
    let unread = unread_clinical(net, clinical);
    (!unread.is_empty()).then(|| {
        format!(
            "clinical values given but not used: {} (no study the model was trained on had \
             them, so it never learned them; read as missing)",
            clinical_names(&unread)
        )
    })
}

/// The warning of an MR study that lacks sequences the model reads: their channels were
/// masked (the network was trained with such gaps), never imputed, and the reader should know
/// what the answer was made without. `None` for CT or a complete protocol.
pub fn missing_sequences_warning(input: &InputInfo) -> Option<String> {
    let mr = input.mr.as_ref()?;
    (!mr.missing.is_empty()).then(|| {
        let names: Vec<&str> = mr.missing.iter().map(|q| q.name()).collect();
        format!(
            "MR sequence(s) {} not in the study: scored without them (masked, not imputed)",
            names.join(", ")
        )
    })
}

/// Observations about the model every report of it carries.
pub fn model_warnings(card: &ModelCard) -> Vec<String> {
    let mut warnings = Vec::new();
    if card.calibration.is_none() {
        warnings.push(
            "model is uncalibrated: temperature 1, thresholds 0.5, no referral policy".into(),
        );
    }
    if card.dataset.synthetic {
        warnings.push("model was trained on synthetic data only".into());
    }
    warnings
}

/// What the report says about the model.
pub fn model_info(card: &ModelCard) -> ModelInfo {
    let calibrated = card.calibration.is_some();
    ModelInfo {
        code_version: crate::checkpoint::code_version(),
        trained_with: card.code_version.clone(),
        dataset: card.dataset.name.clone(),
        synthetic: card.dataset.synthetic,
        epoch: card.epoch,
        calibrated,
        calibration: if calibrated {
            "calibrated".into()
        } else {
            "uncalibrated".into()
        },
    }
}

/// The whole report of one scored study.
pub fn assemble(
    card: &ModelCard,
    net: &HemorrhageNetConfig,
    top_features: usize,
    sample: &StudySample,
    scores: &StudyScores,
    input: InputInfo,
) -> Prediction {
    let cal = card.calibration_for(sample.modality);
    let t = temperatures(card, sample.modality);
    let p = scores.calibrated(&t);
    let withheld = withheld(card);
    let gate = input_gate(card, sample);
    let decision_path = decision_path(&p, cal, &withheld);
    let bleed = decision_path.level_1.decision;
    let facts = estimated_facts(scores, cal, bleed);
    let [_, _, gh, gw] = sample.shape;
    let (volume, method) = hematoma_volume(
        facts.as_ref(),
        scores,
        sample,
        &card.preprocess.windows,
        bleed,
    );
    let nz_in = input.dims[2];
    let missing = missing_sequences_warning(&input);
    Prediction {
        schema_version: SCHEMA_VERSION,
        study: sample.key.clone(),
        model: model_info(card),
        input,
        decision_path,
        probabilities: probabilities(&p, &withheld),
        uncertainty: uncertainty_report(&scores.uncertainty(&t), &withheld),
        review: gated_review(cal, scores, gate.as_ref()),
        feature_weights: feature_weights(
            &scores.feature_gates,
            &sample.clinical,
            net.unlearned_clinical_features(),
            top_features,
        ),
        input_gate: gate,
        withheld,
        hematoma_volume_ml: volume,
        hematoma_volume_method: method,
        estimated_facts: facts,
        key_slices: key_slices(scores, nz_in),
        warnings: model_warnings(card)
            .into_iter()
            .chain(unread_clinical_warning(net, &sample.clinical))
            .chain(missing)
            .collect(),
        intended_use: card.intended_use.clone(),
        heatmap: heatmap_density(net, scores, (gh, gw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network that never learned `gcs` (index 2) and `inr` (index 7): a study giving
    /// `gcs` is warned about it by name, one giving neither is not, and the feature weights
    /// leave both out.
    #[test]
    fn clinical_values_the_network_never_learned_are_named_and_left_out_of_the_weights() {
        assert_eq!(CLINICAL_FEATURES[2].name, "gcs");
        assert_eq!(CLINICAL_FEATURES[7].name, "inr");
        let net = HemorrhageNetConfig::tiny()
            .with_n_clinical(N_CLINICAL)
            .with_clinical_unlearned(Some(vec![2, 7]));
        let given = ClinicalRecord {
            age: Some(70.0),
            gcs: Some(9),
            ..ClinicalRecord::default()
        };
        let w = unread_clinical_warning(&net, &given).expect("gcs was given");
        assert!(
            w.contains("gcs") && !w.contains("inr") && !w.contains("age"),
            "{w}"
        );
        let only_age = ClinicalRecord {
            age: Some(70.0),
            ..ClinicalRecord::default()
        };
        assert_eq!(unread_clinical_warning(&net, &only_age), None);
        assert_eq!(
            unread_clinical_warning(&HemorrhageNetConfig::tiny(), &given),
            None,
            "a network that learned every feature reads them all"
        );
        // The unlearned features have the largest gates, and still do not appear.
        let mut gates = vec![0.1; N_CLINICAL];
        gates[2] = 0.99;
        gates[7] = 0.98;
        gates[0] = 0.5;
        let top = feature_weights(&gates, &given, &[2, 7], 3);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].name, "age");
        assert!(top.iter().all(|f| f.name != "gcs" && f.name != "inr"));
        assert_eq!(feature_weights(&gates, &given, &[], 1)[0].name, "gcs");
    }
}
