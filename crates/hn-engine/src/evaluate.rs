//! Evaluation of a trained model on a held-out split, the way a clinical paper reports it:
//! per-label discrimination with bootstrap CIs, operating points fixed on validation,
//! calibration before/after temperature scaling, uncertainty-based referral, and baselines on
//! the same cases (ICH score from true facts and from the model's own image estimate, a
//! clinical-only logistic regression, image-only and clinical-only ablations, and on synthetic
//! data the Bayes limit).
//!
//! Ablations are the same network with one input path hidden (all clinical values marked
//! missing, or all images blank). The network is trained with that modality dropout
//! (`TrainConfig::hide_clinical`, `hide_images`), so each path alone is a meaningful model and
//! the ablation costs no extra training run; a separately trained single-path model can only
//! do as well or better, which the report states.

use crate::uncertainty::UncertaintyMeasure;
use hn_model::{N_LABELS, N_SUBTYPES, POOR_OUTCOME_THRESHOLD};

/// Column of intraventricular blood in a detection row `[any, subtypes…]`.
const IVH: usize = 1 + hn_data::Subtype::Intraventricular as usize;
use hn_data::splits::Split;

use crate::baselines::{self, ClinicalLogistic, IchImageFacts};
use crate::checkpoint::{Calibration, LoadedModel, ModelCard, TemperatureSet};
use crate::dataset::Dataset;
use crate::metrics::sigmoid;
use crate::metrics::{self, RSNA_LABELS};
use crate::predictions::PredictionRow;
use crate::report::{
    self, BaselineInputs, BayesLimit, DatasetInfo, DetectionInputs, EvalInputs, MetricsReport,
    PrognosisInputs, ReferralInputs, ReportPlots,
};
use crate::sample::{InputMask, StudySample};
use crate::scoring::{
    ScoreVariant, StudyScores, TestTimeAugmentation, pick, score, score_variants,
};

/// Which studies of a dataset to report on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalSplit {
    /// The held-out test split (patient-level split of the data).
    Test,
    Validation,
    /// Every study: an external cohort the model never saw. Nothing of it is fitted: the
    /// card's calibration, thresholds and referral policy are applied as they are.
    All,
}

impl EvalSplit {
    /// Name in reports and `metrics.json`.
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::Test => "test",
            EvalSplit::Validation => "validation",
            EvalSplit::All => "all",
        }
    }

    /// The studies of `data` it covers.
    pub fn indices(self, data: &Dataset) -> Vec<usize> {
        match self {
            EvalSplit::Test => data.indices(Split::Test),
            EvalSplit::Validation => data.indices(Split::Validation),
            EvalSplit::All => (0..data.samples.len()).collect(),
        }
    }
}

/// Evaluation options.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub split: EvalSplit,
    pub bootstrap_resamples: usize,
    pub seed: u64,
    /// MC-dropout passes for the referral uncertainty (card's value when `None`).
    pub mc_passes: Option<usize>,
    /// Heatmap overlay examples in the report.
    pub n_overlays: usize,
    pub batch: usize,
    /// Test-time augmentation; `None` = the one the card's calibration was fitted under.
    pub tta: Option<TestTimeAugmentation>,
    /// Only the studies of this modality ([`hn_model::MODALITY_CT`], [`hn_model::MODALITY_MR`]),
    /// validation and test alike; `None`: every study.
    pub modality: Option<i64>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            split: EvalSplit::Test,
            bootstrap_resamples: 1000,
            seed: 17,
            mc_passes: None,
            n_overlays: 3,
            batch: 16,
            tta: None,
            modality: None,
        }
    }
}

/// Evaluation errors.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("{0}")]
    Invalid(String),
}

/// Everything an evaluation computed, including what the face layer may print.
pub struct Evaluation {
    pub report: MetricsReport,
    pub plots: ReportPlots,
    /// Calibration used (from the card, or fitted here on validation when the card has none).
    pub calibration: Calibration,
    /// One row per evaluated study, as `predict` reports it (`predictions.csv`).
    pub predictions: Vec<PredictionRow>,
    /// The raw scores behind `predictions`, same order.
    pub scores: Vec<StudyScores>,
}

/// The card checked against the network ([`crate::checkpoint::ModelCard::validate`]).
fn check_card(model: &LoadedModel) -> Result<(), EvalError> {
    model
        .card
        .validate(model.net.config())
        .map_err(|e| EvalError::Invalid(format!("{}: {e}", model.dir.join("card.json").display())))
}

/// Hematoma facts estimated by the model for the ICH score, all gated by the bleed decision:
/// IVH from the intraventricular probability; volume and infratentorial location from the
/// network's facts read-out when the card says it was trained (`cal.facts`), else volume from
/// the image estimator the caller passes (`crude_volume_ml`, only called then) and
/// infratentorial from where the heatmap mass lies (lowest 30 % of the slices: posterior fossa).
pub fn model_ich_facts(
    sc: &StudyScores,
    cal: &Calibration,
    n_slices: usize,
    crude_volume_ml: impl FnOnce() -> f64,
) -> IchImageFacts {
    let t = &cal.temperatures;
    let p = sc.detection_row(t.any, t.subtypes);
    let bleed = p[0] >= cal.thresholds[0];
    let (volume_ml, infratentorial) = if cal.facts.is_some() {
        let f = sc.estimated_facts();
        (f.hematoma_ml, f.infratentorial)
    } else {
        let peak = sc.peak_slice(n_slices);
        (crude_volume_ml(), (peak as f64) < 0.3 * n_slices as f64)
    };
    IchImageFacts {
        volume_ml: if bleed { volume_ml.max(0.0) } else { 0.0 },
        ivh: p[IVH] >= cal.thresholds[IVH],
        infratentorial: bleed && infratentorial,
    }
}

/// The calibration that judges each study: its modality's ([`ModelCard::calibration_for`]),
/// or for an uncalibrated card the one fitted on validation in [`evaluate`].
enum StudyCalibrations<'a> {
    Card {
        card: &'a ModelCard,
        /// The card's (CT) calibration, present by construction.
        ct: &'a Calibration,
    },
    Fitted(Box<Calibration>),
}

impl StudyCalibrations<'_> {
    fn of_modality(&self, modality: i64) -> &Calibration {
        match self {
            Self::Card { card, ct } => card.calibration_for(modality).unwrap_or(ct),
            Self::Fitted(c) => c,
        }
    }

    fn of(&self, s: &StudySample) -> &Calibration {
        self.of_modality(s.modality)
    }
}

/// Evaluate `model` on `opts.split` of `data`. Without a trained facts read-out, the
/// model-estimated ICH score takes the crude image volume ([`crate::infer::estimate_volume_ml`]
/// with the card's windows) on the slices [`crate::infer::volume_gate`] opens, as `predict`
/// reports it.
pub fn evaluate(
    model: &LoadedModel,
    data: &Dataset,
    opts: &EvalOptions,
) -> Result<Evaluation, EvalError> {
    let windows = &model.card.preprocess.windows;
    let volume_ml =
        |s: &StudySample, gate: &[f64]| crate::infer::estimate_volume_ml(s, gate, windows);
    // Evaluate where the model was loaded (`load_model(dir, device)`): the CPU by default, a
    // GPU when the face asked for one.
    check_card(model)?;
    let device = model.device();
    let net = &model.net;
    let mut unread = std::collections::BTreeSet::new();
    let mut studies = 0;
    for s in &data.samples {
        let u = crate::infer::assemble::unread_clinical(net.config(), &s.clinical);
        studies += usize::from(!u.is_empty());
        unread.extend(u);
    }
    if studies > 0 {
        tracing::warn!(
            "{studies} studies give clinical values the model never learned ({}); it reads \
             them as missing",
            crate::infer::clinical_names(&unread.into_iter().collect::<Vec<_>>())
        );
    }
    let external = opts.split == EvalSplit::All;
    // On external data nothing is fitted, so no validation studies are scored.
    let val_idx = if external {
        Vec::new()
    } else {
        data.of_modality(data.indices(Split::Validation), opts.modality)
    };
    let test_idx = data.of_modality(opts.split.indices(data), opts.modality);
    if test_idx.is_empty() {
        return Err(EvalError::Invalid(format!(
            "the {} split is empty{}",
            opts.split.name(),
            if opts.modality.is_some() {
                " for this modality"
            } else {
                ""
            }
        )));
    }
    if external && model.card.calibration.is_none() {
        return Err(EvalError::Invalid(
            "the model card has no calibration, and --split all fits nothing on the data it \
             reports: evaluate on --split test, or recalibrate on this data's validation split \
             first (--recalibrate-on validation)"
                .into(),
        ));
    }
    let (mc, tta) =
        crate::scoring::scoring_settings(model.card.calibration.as_ref(), opts.mc_passes, opts.tta);
    let full = InputMask::default();
    let val = score(
        net,
        &pick(&data.samples, &val_idx),
        opts.batch,
        full,
        mc,
        tta,
        &device,
    );
    // The test split with everything shown, and the image-only ablation (clinical values
    // hidden) from the same CNN encodings; the clinical-only ablation below encodes blank
    // images.
    let test_studies = pick(&data.samples, &test_idx);
    let mut test_and_image_only = score_variants(
        net,
        &test_studies,
        opts.batch,
        &[
            ScoreVariant {
                mask: full,
                mc_passes: mc,
            },
            ScoreVariant {
                mask: InputMask {
                    hide_clinical: true,
                    hide_images: false,
                },
                mc_passes: 0,
            },
        ],
        tta,
        &device,
    );
    let img_only = test_and_image_only.pop().expect("image-only variant");
    let test = test_and_image_only.pop().expect("full variant");
    let predictions = test_idx
        .iter()
        .zip(&test)
        .map(|(&i, sc)| {
            let sample = &data.samples[i];
            PredictionRow::new(data.splits[i].name(), &model.card, sample, sc)
        })
        .collect();
    // Each study is judged under its own modality's calibration; where the report needs one
    // scale (prognosis logits, referral uncertainty and distance) the others are re-expressed
    // on the evaluated modality's (`primary`; CT for the combined report of a mixed model).
    let cals = match &model.card.calibration {
        Some(ct) => StudyCalibrations::Card {
            card: &model.card,
            ct,
        },
        None => {
            // Uncalibrated model: fit on validation here, exactly as training would.
            let temps = crate::train::fit_temperatures(&data.samples, &val_idx, &val);
            let uncertainty = UncertaintyMeasure::default();
            let thresholds = [0.5; N_LABELS];
            let unc: Vec<f64> = val
                .iter()
                .map(|s| s.referral_uncertainty(uncertainty, &temps, thresholds[0]))
                .collect();
            StudyCalibrations::Fitted(Box::new(Calibration {
                temperatures: temps,
                thresholds,
                uncertainty,
                referral: metrics::ReferralPolicy::fit(&unc, 0.1)?,
                mc_passes: mc,
                tta,
                mortality_threshold: 0.5,
                facts: crate::scoring::facts_agreement(&data.samples, &val_idx, &val),
                distance: None,
            }))
        }
    };
    let primary = cals.of_modality(opts.modality.unwrap_or(hn_model::MODALITY_CT));
    let smp = |k: usize| &data.samples[test_idx[k]];
    let cal_of = |k: usize| cals.of(smp(k));
    let val_cal_of = |k: usize| cals.of(&data.samples[val_idx[k]]);

    // Detection on labelled test studies.
    let known: Vec<usize> = (0..test_idx.len())
        .filter(|&k| smp(k).labels.is_some())
        .collect();
    let detection = (!known.is_empty()).then(|| DetectionInputs {
        probs: known
            .iter()
            .map(|&k| {
                let t = &cal_of(k).temperatures;
                test[k].detection_row(t.any, t.subtypes)
            })
            .collect(),
        truth: known
            .iter()
            .map(|&k| crate::sample::label_row(&smp(k).labels.unwrap()))
            .collect(),
        thresholds: known.iter().map(|&k| cal_of(k).thresholds).collect(),
    });

    // Prognosis (temperatures refitted on validation logits inside the report).
    type Getter = fn(&StudySample) -> Option<bool>;
    type Logit = fn(&StudyScores) -> f64;
    type HeadCalibration = fn(&TemperatureSet) -> metrics::LogitCalibration;
    let outcomes: [(&str, Getter, Logit, HeadCalibration); 2] = [
        (
            "mortality_30d",
            |s| s.outcomes.mortality_30d,
            |sc| sc.mortality_logit,
            TemperatureSet::mortality_calibration,
        ),
        (
            "poor_outcome_90d",
            |s| s.outcomes.poor_outcome_90d(),
            |sc| sc.mrs_logits[POOR_OUTCOME_THRESHOLD],
            TemperatureSet::mrs_calibration,
        ),
    ];
    // A head that never learned is not reported (prediction.json's `withheld`), so neither
    // is its AUC or its ablations: they would measure an untrained layer.
    let withheld = crate::infer::assemble::withheld(&model.card);
    let unlearned = |name: &str| {
        model
            .card
            .untrained(crate::checkpoint::Head::of_outcome(name))
            .is_some()
    };
    let mut prognosis = Vec::new();
    for (name, get, logit, head) in outcomes {
        if unlearned(name) {
            continue;
        }
        // Each logit on the primary calibration's scale (unchanged for its own studies).
        let on_primary = |sc: &StudyScores, own: &Calibration| {
            head(&primary.temperatures).equivalent_logit(logit(sc), &head(&own.temperatures))
        };
        let (mut vl, mut vy, mut tl, mut ty) = (vec![], vec![], vec![], vec![]);
        for (k, &i) in val_idx.iter().enumerate() {
            if let Some(y) = get(&data.samples[i]) {
                vl.push(on_primary(&val[k], val_cal_of(k)));
                vy.push(y);
            }
        }
        for (k, &i) in test_idx.iter().enumerate() {
            if let Some(y) = get(&data.samples[i]) {
                tl.push(on_primary(&test[k], cal_of(k)));
                ty.push(y);
            }
        }
        if !ty.is_empty() && (external || !vy.is_empty()) {
            prognosis.push(PrognosisInputs {
                outcome: name.into(),
                fixed: external.then(|| head(&primary.temperatures)),
                val_logits: vl,
                val_labels: vy,
                test_logits: tl,
                test_labels: ty,
            });
        }
    }

    // Referral on the bleed decision: each study's uncertainty and distance under its own
    // calibration, re-expressed on the primary one's thresholds (its own decision is kept).
    let uncertainty = |sc: &StudyScores, own: &Calibration| {
        primary.referral.equivalent_uncertainty(
            sc.referral_uncertainty(own.uncertainty, &own.temperatures, own.thresholds[0]),
            &own.referral,
        )
    };
    let measure = if (0..test_idx.len()).all(|k| cal_of(k).uncertainty == primary.uncertainty) {
        primary.uncertainty.name()
    } else {
        "per modality"
    };
    let referral = (!known.is_empty()).then(|| ReferralInputs {
        task: "any".into(),
        uncertainty: measure.into(),
        // The card's policy (fitted on validation at training, or here for an uncalibrated
        // card): with a distance policy it is the uncertainty part of "atypical or uncertain",
        // which a refit on uncertainty alone would not reproduce.
        fixed: Some(primary.referral),
        val_uncertainty: (0..val.len())
            .map(|k| uncertainty(&val[k], val_cal_of(k)))
            .collect(),
        target_rate: primary.referral.target_rate,
        test_probs: known
            .iter()
            .map(|&k| test[k].p_any(cal_of(k).temperatures.any))
            .collect(),
        test_labels: known.iter().map(|&k| smp(k).labels.unwrap().any).collect(),
        test_uncertainty: known
            .iter()
            .map(|&k| uncertainty(&test[k], cal_of(k)))
            .collect(),
        distance: primary.distance.as_ref().map(|p| {
            let distance = |sc: &StudyScores, own: &Calibration| match &own.distance {
                Some(d) => crate::distance::equivalent_distance(
                    d.density.distance(&sc.embedding),
                    Some(d.threshold),
                    p.threshold,
                ),
                None => crate::distance::equivalent_distance(f64::NAN, None, p.threshold),
            };
            report::DistanceInputs {
                threshold: p.threshold,
                val: (0..val.len())
                    .map(|k| distance(&val[k], val_cal_of(k)))
                    .collect(),
                test: known
                    .iter()
                    .map(|&k| distance(&test[k], cal_of(k)))
                    .collect(),
            }
        }),
    });

    // Baselines and ablations on the prognosis tasks.
    let mut bl = Vec::new();
    let clin_only = score(
        net,
        &test_studies,
        opts.batch,
        InputMask {
            hide_clinical: false,
            hide_images: true,
        },
        0,
        tta,
        &device,
    );
    let train_idx = if external {
        Vec::new()
    } else {
        data.indices(Split::Train)
    };
    let n_slices = data.samples[0].shape[0];
    for (name, get, logit, head) in outcomes {
        let ks: Vec<usize> = (0..test_idx.len())
            .filter(|&k| get(smp(k)).is_some())
            .collect();
        if ks.is_empty() {
            continue;
        }
        let y: Vec<bool> = ks.iter().map(|&k| get(smp(k)).unwrap()).collect();
        // The model's own row's scores (the same studies, in the same order, as `ks`), for
        // the paired gains; none where that row is not reported (a head that never learned,
        // or no validation labels to calibrate it on).
        let model: Option<Vec<f64>> = prognosis
            .iter()
            .find(|p| p.outcome == name)
            .map(|p| p.test_logits.clone());
        debug_assert!(model.as_ref().is_none_or(|m| m.len() == ks.len()));
        let ablations: &[(&str, &Vec<StudyScores>)] = if unlearned(name) {
            &[]
        } else {
            &[("image_only", &img_only), ("clinical_only", &clin_only)]
        };
        for &(abl, sc) in ablations {
            bl.push(BaselineInputs {
                name: abl.into(),
                task: name.into(),
                scores: ks
                    .iter()
                    .map(|&k| sigmoid(head(&cal_of(k).temperatures).logit(logit(&sc[k]))))
                    .collect(),
                labels: y.clone(),
                probabilities: true,
                model_scores: model.clone(),
            });
        }
        // Clinical logistic regression fitted on the training split (not on external data,
        // where every study is reported: it would be scored on the cases it was fitted on).
        let (tr_rec, tr_y): (Vec<_>, Vec<_>) = train_idx
            .iter()
            .filter_map(|&i| get(&data.samples[i]).map(|y| (data.samples[i].clinical, y)))
            .unzip();
        if let Ok(lr) = ClinicalLogistic::fit(&tr_rec, &tr_y, 1.0) {
            bl.push(BaselineInputs {
                name: "clinical_lr".into(),
                task: name.into(),
                scores: ks.iter().map(|&k| lr.predict(&smp(k).clinical)).collect(),
                labels: y.clone(),
                probabilities: true,
                model_scores: model.clone(),
            });
        }
        // ICH score: from the true hematoma facts (synthetic masks) and from the model's own
        // estimate, with the recorded GCS and age (undefined, so left out, when missing).
        let mut ich = |label: &str, facts: &dyn Fn(usize) -> Option<IchImageFacts>| {
            let (mut s, mut yy, mut m) = (Vec::new(), Vec::new(), Vec::new());
            for (n, &k) in ks.iter().enumerate() {
                if let Some(f) = facts(k)
                    && let Ok(Some(score)) = baselines::ich_score_from_record(&smp(k).clinical, &f)
                {
                    s.push(f64::from(score));
                    yy.push(y[n]);
                    if let Some(model) = &model {
                        m.push(model[n]);
                    }
                }
            }
            if !s.is_empty() {
                bl.push(BaselineInputs {
                    name: label.into(),
                    task: name.into(),
                    scores: s,
                    labels: yy,
                    probabilities: false,
                    model_scores: model.is_some().then_some(m),
                });
            }
        };
        if data.synthetic {
            ich("ich_score_true_facts", &|k| {
                smp(k).truth.map(|tr| IchImageFacts {
                    volume_ml: if smp(k).labels.is_some_and(|l| l.any) {
                        tr.parenchymal_ml
                    } else {
                        0.0
                    },
                    ivh: tr.ivh,
                    infratentorial: tr.infratentorial,
                })
            });
        }
        ich("ich_score_model_estimate", &|k| {
            let (sc, cal) = (&test[k], cal_of(k));
            Some(model_ich_facts(sc, cal, n_slices, || {
                let gate = crate::infer::volume_gate(
                    &sc.slice_any,
                    &sc.slice_heat_mass(n_slices),
                    sc.p_any(cal.temperatures.any) >= cal.thresholds[0],
                );
                volume_ml(smp(k), &gate)
            }))
        });
    }

    // Bayes limit on synthetic data: the generator's true probabilities.
    let mut bayes = Vec::new();
    if data.synthetic {
        for (name, get, truth) in [
            (
                "mortality_30d",
                outcomes[0].1,
                (|tr: &crate::sample::SyntheticTruth| tr.p_mortality_30d) as fn(&_) -> f64,
            ),
            ("poor_outcome_90d", outcomes[1].1, |tr| {
                tr.p_poor_outcome_90d
            }),
        ] {
            let (s, y): (Vec<f64>, Vec<bool>) = (0..test_idx.len())
                .filter_map(|k| Some((truth(&smp(k).truth?), get(smp(k))?)))
                .unzip();
            if let Ok(a) = metrics::roc_auc(&s, &y) {
                bayes.push(BayesLimit {
                    task: name.into(),
                    auc: a,
                    ece: metrics::ece(&s, &y, metrics::ECE_BINS).ok(),
                    brier: metrics::brier(&s, &y).ok(),
                    note: "AUC of the generator's true outcome probabilities on these cases: no \
                           model can do better in expectation"
                        .into(),
                });
            }
        }
    }

    // Detection by true bleed size (synthetic data): is a small bleed found?
    // Also from the images alone: the full model's strata mix in what the clinical values
    // say about a bleed, which no sequence changes.
    let by_size = |scores: &[StudyScores]| -> Vec<(f64, Option<f64>)> {
        if !data.synthetic {
            return Vec::new();
        }
        known
            .iter()
            .filter_map(|&k| {
                let tr = smp(k).truth?;
                let bleed = smp(k).labels?.any;
                Some((
                    scores[k].p_any(cal_of(k).temperatures.any),
                    bleed.then_some(tr.total_ml),
                ))
            })
            .collect()
    };
    let bleed_volumes = by_size(&test);
    let bleed_volumes_image_only = by_size(&img_only);

    // Heatmap overlays: the most confident true bleeds, slice with most heat.
    let mut overlays = Vec::new();
    let mut bleeds: Vec<usize> = known
        .iter()
        .copied()
        .filter(|&k| smp(k).labels.unwrap().any)
        .collect();
    bleeds.sort_by(|&a, &b| test[b].any_logit.total_cmp(&test[a].any_logit));
    let cfg = net.config();
    for &k in bleeds.iter().take(opts.n_overlays) {
        let s = smp(k);
        let [ns, c, h, w] = s.shape;
        let (fh, fw) = cfg.feature_hw_for(h, w);
        let per = fh * fw;
        let peak = test[k].peak_slice(ns);
        let pixels = &s.images[(peak * c) * h * w..][..h * w];
        let heat = crate::infer::assemble::cells_to_pixels(
            cfg,
            &test[k].heatmap[peak * per..(peak + 1) * per],
            (fh, fw),
            h,
            w,
            false,
        );
        let f = report::display_factor(w, h, 256);
        let png = report::render_overlay_png(
            &report::upscale_nearest(pixels, w, h, f),
            &report::upscale_nearest(&heat, w, h, f),
            w * f,
            h * f,
        )?;
        let l = s.labels.unwrap();
        let types: Vec<&str> = (0..N_SUBTYPES)
            .filter(|&j| l.subtypes[j])
            .map(|j| RSNA_LABELS[j + 1])
            .collect();
        overlays.push((
            format!(
                "test study #{k}, slice {peak}: P(bleed) {:.2}; truth: {}",
                test[k].p_any(cal_of(k).temperatures.any),
                types.join(", ")
            ),
            png,
        ));
    }

    let inputs = EvalInputs {
        dataset: DatasetInfo {
            name: data.name.clone(),
            synthetic: data.synthetic,
            split: opts.split.name().into(),
            training_distribution: data.digest().sha256 == model.card.dataset.sha256,
            n_studies: test_idx.len(),
            bootstrap_seed: opts.seed,
            bootstrap_resamples: opts.bootstrap_resamples,
        },
        detection,
        prognosis,
        referral,
        baselines: bl,
        bayes_limit: bayes,
        hematoma_facts: primary.facts.and(crate::scoring::facts_agreement(
            &data.samples,
            &test_idx,
            &test,
        )),
        test_time_augmentation: tta,
        overlays,
        withheld,
        bleed_volumes,
        bleed_volumes_image_only,
    };
    let (report, plots) = report::evaluate(&inputs)?;
    Ok(Evaluation {
        report,
        plots,
        calibration: primary.clone(),
        predictions,
        scores: test,
    })
}

/// Fewer validation studies than this make a recalibration noisy (thresholds and temperatures
/// fitted on a handful of cases); `evaluate` warns.
pub const MIN_RECALIBRATION_STUDIES: usize = 100;

/// The card of `model` with its calibration refitted on `data`'s validation split, as training
/// fits it (temperatures and Platt biases, thresholds, mortality threshold, referral policy),
/// keeping the card's MC passes, test-time augmentation and referral target — and each head's
/// temperature where a refit does not predict held-out site studies better
/// ([`crate::train::refit_temperatures`]). A card with a calibration per modality has each
/// refitted on the site's studies of that modality (one the site lacks is kept).
pub fn recalibrate(
    model: &LoadedModel,
    data: &Dataset,
) -> Result<crate::checkpoint::ModelCard, EvalError> {
    let n = data.indices(Split::Validation).len();
    if n == 0 {
        return Err(EvalError::Invalid(
            "the validation split of this data is empty: nothing to recalibrate on".into(),
        ));
    }
    check_card(model)?;
    let refit = |old: Option<&crate::checkpoint::Calibration>, modality: Option<i64>| {
        // Scored as the card scores (what `predict` with it does), refitted with its referral
        // target and measure.
        let (mc_passes, tta) = crate::scoring::scoring_settings(old, None, None);
        let defaults = crate::train::TrainConfig::default();
        let cfg = crate::train::TrainConfig {
            mc_passes,
            tta,
            target_referral_rate: old
                .map_or(defaults.target_referral_rate, |c| c.referral.target_rate),
            ..defaults
        };
        let measure = old.map(|c| c.uncertainty).unwrap_or_default();
        let density = crate::train::Density::Keep(
            old.and_then(|c| c.distance.as_ref())
                .map(|d| d.density.clone()),
        );
        // The card's temperatures are refitted only where the site's data predict better
        // with a refit (cross-validated): a few dozen events can move a right calibration.
        let card_temperatures = old.map(|c| c.temperatures);
        crate::train::calibrate_modality(
            &model.net,
            data,
            &cfg,
            measure,
            density,
            card_temperatures.as_ref(),
            modality,
            &model.device(),
        )
        .map_err(|e| EvalError::Invalid(format!("recalibration: {e}")))
    };
    let mut card = model.card.clone();
    match &model.card.mr_calibration {
        // One calibration for every study the model reads.
        None => card.calibration = Some(refit(model.card.calibration.as_ref(), None)?),
        // A model with a calibration per modality: each refitted on the site's studies of its
        // modality; one the site has no validation study of is kept as it is.
        Some(mr_old) => {
            let val = data.indices(Split::Validation);
            let has = |m: i64| val.iter().any(|&i| data.samples[i].modality == m);
            if has(hn_model::MODALITY_CT) {
                card.calibration = Some(refit(
                    model.card.calibration.as_ref(),
                    Some(hn_model::MODALITY_CT),
                )?);
            }
            if has(hn_model::MODALITY_MR) {
                card.mr_calibration = Some(refit(Some(mr_old), Some(hn_model::MODALITY_MR))?);
            }
        }
    }
    Ok(card)
}

/// `evaluate --recalibrate-on validation`: the card refitted on `data`'s validation split
/// ([`recalibrate`]), the test split evaluated under it, and the report's `recalibration`
/// comparing the card's calibration with the refitted one on the same test studies (one
/// scoring: the weights, MC passes and test-time augmentation are the card's in both).
/// Returns the evaluation and the recalibrated card.
pub fn evaluate_recalibrated(
    model: &LoadedModel,
    data: &Dataset,
    opts: &EvalOptions,
) -> Result<(Evaluation, crate::checkpoint::ModelCard), EvalError> {
    let card = recalibrate(model, data)?;
    let recalibrated = LoadedModel {
        net: model.net.clone(),
        card: card.clone(),
        dir: model.dir.clone(),
    };
    // The card's own scoring settings, as the refit used: the "before" rows come from the
    // same scores.
    let opts = EvalOptions {
        split: EvalSplit::Test,
        mc_passes: None,
        tta: None,
        ..opts.clone()
    };
    let mut after = evaluate(&recalibrated, data, &opts)?;
    let by_key = data.by_key();
    let before: Vec<PredictionRow> = after
        .predictions
        .iter()
        .zip(&after.scores)
        .map(|(row, sc)| {
            // Every row was made from one of `data`'s samples.
            let sample = by_key[row.study_key.as_str()];
            PredictionRow::new(&row.split, &model.card, sample, sc)
        })
        .collect();
    after.report.recalibration = Some(compare_calibrations(
        data,
        &before,
        &after.predictions,
        &model.card,
        &card,
    ));
    Ok((after, card))
}

/// [`CalibrationCheck`](report::CalibrationCheck)s of the same studies' rows under the card
/// `before` and the card `after`.
pub fn compare_calibrations(
    data: &Dataset,
    before_rows: &[PredictionRow],
    after_rows: &[PredictionRow],
    before: &crate::checkpoint::ModelCard,
    after: &crate::checkpoint::ModelCard,
) -> report::RecalibrationReport {
    let by_key = data.by_key();
    let check = |rows: &[PredictionRow], card: &crate::checkpoint::ModelCard| {
        type Get = fn(&StudySample) -> Option<bool>;
        // `None`: a head that never learned (an empty cell of predictions.csv).
        type Prob = fn(&PredictionRow) -> Option<f64>;
        let tasks: [(Get, Prob); 3] = [
            (|s| s.labels.map(|l| l.any), |r| Some(r.any)),
            (|s| s.outcomes.mortality_30d, |r| r.mortality_30d),
            (|s| s.outcomes.poor_outcome_90d(), |r| r.poor_outcome_90d),
        ];
        let mut ece = [None; 3];
        let mut brier = [None; 3];
        for (j, (get, prob)) in tasks.iter().enumerate() {
            let (p, y): (Vec<f64>, Vec<bool>) = rows
                .iter()
                .filter_map(|r| Some((prob(r)?, get(by_key.get(r.study_key.as_str())?)?)))
                .unzip();
            ece[j] = metrics::ece(&p, &y, metrics::ECE_BINS).ok();
            brier[j] = metrics::brier(&p, &y).ok();
        }
        let cal = card.calibration.as_ref();
        report::CalibrationCheck {
            ece,
            brier,
            thresholds: cal.map_or([0.5; N_LABELS], |c| c.thresholds),
            temperatures: cal.map(|c| c.temperatures),
            referral_rate: rows.iter().filter(|r| r.review_flag == 1).count() as f64
                / rows.len().max(1) as f64,
            target_referral_rate: cal.map_or(1.0, |c| c.referral.target_rate),
        }
    };
    report::RecalibrationReport {
        fitted_on: "validation".into(),
        n_fitted: data.indices(Split::Validation).len(),
        n_reported: after_rows.len(),
        before: check(before_rows, before),
        after: check(after_rows, after),
    }
}
