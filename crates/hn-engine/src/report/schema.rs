//! The `metrics.json` schema (documented in `docs/METRICS.md`).

#[allow(unused_imports)]
use super::*;

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub schema_version: u32,
    pub dataset: DatasetInfo,
    /// Hemorrhage detection, one entry per label (`any`, then the subtypes).
    pub detection: Vec<LabelMetrics>,
    /// RSNA-2019 weighted log-loss over the evaluated rows, when all six labels are known.
    pub rsna_log_loss: Option<f64>,
    /// Prognosis, one entry per outcome (`mortality_30d`, `poor_outcome_90d`).
    pub prognosis: Vec<PrognosisMetrics>,
    /// Uncertainty-aware referral, when evaluated.
    pub referral: Option<ReferralReport>,
    /// Baselines and ablations on the same cases, side by side with the model.
    pub baselines: Vec<BaselineResult>,
    /// Best achievable AUC per task when the data generator is known (synthetic data).
    pub bayes_limit: Vec<BayesLimit>,
    /// Agreement of the model's hematoma-facts read-out with the known facts on these cases
    /// (when both exist).
    #[serde(default)]
    pub hematoma_facts: Option<metrics::FactsAgreement>,
    /// How the model's outputs were computed (`none`: one pass; `flip`: mean with the mirror).
    #[serde(default)]
    pub test_time_augmentation: TestTimeAugmentation,
    /// With `evaluate --recalibrate-on validation`: the reported split under the card's
    /// calibration and under the one refitted on this data (the rest of this report).
    #[serde(default)]
    pub recalibration: Option<RecalibrationReport>,
    /// Outputs the model does not report (their head never learned, by the card's training
    /// label counts): no `prognosis` entry or model ablation for them, the reason here.
    #[serde(default)]
    pub withheld: Vec<crate::infer::WithheldOutput>,
    /// Synthetic data: any-bleed detection by the generator's true bleed volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detection_by_bleed_size: Vec<SizeStratum>,
    /// The same strata scored from the images alone (the clinical values hidden, as in the
    /// `image_only` ablation): which bleeds the imaging finds by itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detection_by_bleed_size_image_only: Vec<SizeStratum>,
}

/// Any-bleed detection among the bleeds of one size range (synthetic data: the generator's
/// true volume of all blood) against every study without a bleed: whether small bleeds are
/// found, which the all-bleed AUC, dominated by large ones, does not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeStratum {
    /// `"< 1 mL"`, `"1–5 mL"`, `"≥ 5 mL"`.
    pub label: String,
    pub min_ml: f64,
    /// Exclusive; `None`: unbounded.
    pub max_ml: Option<f64>,
    pub n_positive: usize,
    pub n_negative: usize,
    /// `None` when the stratum is empty.
    pub auc: Option<Interval>,
}

/// The same studies under two calibrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecalibrationReport {
    /// Where the new calibration was fitted (`validation` of this data).
    pub fitted_on: String,
    pub n_fitted: usize,
    /// Studies both are reported on.
    pub n_reported: usize,
    pub before: CalibrationCheck,
    pub after: CalibrationCheck,
}

/// How well one calibration fits the reported studies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationCheck {
    /// `[any, mortality_30d, poor_outcome_90d]` expected calibration error (`null`: no labels).
    pub ece: [Option<f64>; 3],
    pub brier: [Option<f64>; 3],
    /// Operating thresholds `[any, 5 subtypes]`.
    pub thresholds: [f64; 6],
    /// Each head's temperature (and Platt bias): `after` equals `before` for a head whose refit
    /// did not predict held-out site studies better (`metrics::keep_or_refit`).
    #[serde(default)]
    pub temperatures: Option<crate::checkpoint::TemperatureSet>,
    /// Fraction of the reported studies flagged for review, and the rate the policy targets.
    pub referral_rate: f64,
    pub target_referral_rate: f64,
}

/// What was evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub synthetic: bool,
    /// `test`, `validation`, `all`, ...
    pub split: String,
    /// True when this is the data the model was trained on (same dataset digest), so the
    /// split is held out from training; false for an external cohort.
    #[serde(default)]
    pub training_distribution: bool,
    pub n_studies: usize,
    /// Seed of the bootstrap CIs.
    pub bootstrap_seed: u64,
    pub bootstrap_resamples: usize,
}

/// Detection metrics of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    pub label: String,
    pub n: usize,
    pub n_positive: usize,
    /// ROC AUC with percentile-bootstrap 95 % CI; `None` with a single class.
    pub auc: Option<Interval>,
    /// Average precision; `None` with a single class.
    pub pr_auc: Option<f64>,
    /// At the chosen (e.g. validation-picked) threshold.
    pub at_chosen: OperatingPoint,
    /// At the Youden-optimal threshold on these cases (optimistic: picked on test).
    pub at_youden: Option<OperatingPoint>,
}

/// Prognosis metrics of one binary outcome, before and after calibration on validation logits:
/// temperature scaling alone, and the calibration the model card applies
/// ([`metrics::fit_logit_calibration`]: Platt scaling where validation has enough of both
/// outcomes, else the same temperature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrognosisMetrics {
    pub outcome: String,
    pub n: usize,
    pub n_positive: usize,
    pub auc: Option<Interval>,
    /// Temperature fitted on validation logits (temperature scaling alone).
    pub temperature: f64,
    pub brier_after_temperature: f64,
    pub ece_after_temperature: f64,
    /// The card's calibration (`z / T + bias`), fitted on validation logits.
    pub calibration: metrics::LogitCalibration,
    pub brier_before: f64,
    /// After [`calibration`](Self::calibration).
    pub brier_after: f64,
    /// 15-bin ECE.
    pub ece_before: f64,
    /// After [`calibration`](Self::calibration).
    pub ece_after: f64,
    pub reliability_before: Vec<ReliabilityBin>,
    pub reliability_after_temperature: Vec<ReliabilityBin>,
    pub reliability_after: Vec<ReliabilityBin>,
}

/// Referral evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralReport {
    /// Task the referral applies to (e.g. `any`).
    pub task: String,
    /// Uncertainty score used (e.g. `predictive_entropy`).
    pub uncertainty: String,
    /// Policy fitted on validation.
    pub policy: ReferralPolicy,
    /// Rate of the review flag on the evaluated cases: the uncertainty policy, or (with a
    /// distance policy) atypical or uncertain.
    pub test_rate: f64,
    /// Retained-case metrics when the most uncertain cases are referred.
    pub curve: Vec<ReferralPoint>,
    /// The feature distance from the training data, when the card has a distance policy.
    #[serde(default)]
    pub distance: Option<DistanceReferral>,
}

/// Referral by feature distance (`crate::distance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistanceReferral {
    /// Refer when the distance is above this (chosen on validation).
    pub threshold: f64,
    /// Fraction of the evaluated cases above it.
    pub test_rate: f64,
    /// Retained-case metrics when the most distant cases are referred.
    pub curve: Vec<ReferralPoint>,
    /// ... when referred by the larger validation rank of uncertainty and distance.
    pub curve_combined: Vec<ReferralPoint>,
}

/// A baseline or ablation on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    /// `model`, `ich_score`, `clinical_lr`, `image_only`, `clinical_only`, ...
    pub name: String,
    pub task: String,
    pub n: usize,
    pub auc: Option<Interval>,
    /// Brier score when the outputs are probabilities.
    pub brier: Option<f64>,
    /// The model's AUC minus this baseline's on the same cases, with a paired bootstrap 95 %
    /// CI (absent where the model's scores on those cases were not given, and in reports
    /// written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_gain: Option<Interval>,
}

/// Bayes limit of a task (synthetic data: the generator's own probabilities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BayesLimit {
    pub task: String,
    pub auc: f64,
    /// 15-bin ECE of the true probabilities on the same cases: the ECE a perfectly calibrated
    /// model would show on this sample (estimation noise of the metric itself).
    #[serde(default)]
    pub ece: Option<f64>,
    /// Brier score of the true probabilities on the same cases.
    #[serde(default)]
    pub brier: Option<f64>,
    pub note: String,
}
