//! The `prediction.json` schema (documented field by field in `docs/PREDICT.md`).

use serde::{Deserialize, Serialize};

pub use crate::uncertainty::HeadUncertainty;

/// `prediction.json`. See `docs/PREDICT.md` for every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub schema_version: u32,
    /// The study key as the user gave it (file/folder name or manifest key).
    pub study: String,
    pub model: ModelInfo,
    pub input: InputInfo,
    pub decision_path: DecisionPath,
    pub probabilities: Probabilities,
    pub uncertainty: UncertaintyReport,
    pub review: Review,
    pub feature_weights: Vec<FeatureWeight>,
    /// The study against the model's training envelope (`null` for a card without one):
    /// every check, and the verdict (`inside`, or `outside`: scored and flagged for review).
    #[serde(default)]
    pub input_gate: Option<crate::envelope::InputGate>,
    /// Outputs left `null` because their head never learned (the model card's training label
    /// counts), each with the reason.
    #[serde(default)]
    pub withheld: Vec<WithheldOutput>,
    /// Hematoma volume (mL): the facts read-out's estimate when the card says it was trained
    /// ([`EstimatedFacts`]), else the crude image-derived estimate ([`estimate_volume_ml`]);
    /// `null` when not estimable.
    pub hematoma_volume_ml: Option<f64>,
    pub hematoma_volume_method: String,
    /// The facts read-out (hematoma and IVH volume, infratentorial location) with its
    /// validation agreement; `null` for a model trained without facts targets.
    #[serde(default)]
    pub estimated_facts: Option<EstimatedFacts>,
    pub key_slices: Vec<KeySlice>,
    /// Non-fatal observations about the input.
    pub warnings: Vec<String>,
    pub intended_use: String,
    /// Heatmap density on the model grid (not serialised; written as NIfTI and overlays).
    #[serde(skip)]
    pub heatmap: Heatmap,
}

/// The network's own estimate of the hematoma facts the ICH score uses, and how well that
/// estimate agreed with the truth on the model's validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimatedFacts {
    /// Hematoma volume outside the ventricles (mL), 0 when the bleed decision is negative.
    pub hematoma_ml: f64,
    /// Intraventricular blood volume (mL), 0 when the bleed decision is negative.
    pub intraventricular_ml: f64,
    /// P(infratentorial bleed) from the read-out (not gated).
    pub p_infratentorial: f64,
    pub validation: crate::metrics::FactsAgreement,
}

/// Heatmap on the model grid `[S, H, W]`: each cell's pooling mass spread evenly over the
/// pixels it covers ([`HemorrhageNetConfig::cell_bounds`](hn_model::HemorrhageNetConfig::cell_bounds)),
/// so the whole grid sums to 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heatmap {
    pub shape: [usize; 3],
    pub density: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Version of the code that made this prediction.
    pub code_version: String,
    /// Version of the code that trained the model (from the card).
    pub trained_with: String,
    pub dataset: String,
    /// True when the model was trained on synthetic data only.
    pub synthetic: bool,
    pub epoch: usize,
    /// True when the card carries a validation calibration (temperatures, thresholds,
    /// referral policy).
    pub calibrated: bool,
    /// `"calibrated"` or `"uncalibrated"` with what that means.
    pub calibration: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    /// `"dicom"` or `"nifti"`.
    pub format: hn_imaging::InputFormat,
    /// `"CT"`, `"MR"` or what the file said.
    pub modality: String,
    /// Input grid `[nx, ny, nz]` (columns, rows, slices).
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// Model grid `[S, H, W]`.
    pub model_grid: [usize; 3],
    /// Model grid spacing `[x, y, z]` in mm.
    pub model_spacing_mm: [f64; 3],
    /// HU windows `(center, width)`, one channel each.
    pub windows: Vec<(f32, f32)>,
    pub clinical_features_given: usize,
    /// MR input: which series was read as which sequence and why, the grid they were brought
    /// onto, and the sequences missing (their channels masked, not imputed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr: Option<MrInputInfo>,
}

/// The MR part of [`InputInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MrInputInfo {
    /// The sequence whose grid the others were resampled onto.
    pub reference: hn_imaging::mr::MrSequence,
    /// Per sequence read: the rule that told it apart and the share of the common grid it
    /// covers.
    pub sequences: Vec<MrSequenceInfo>,
    pub missing: Vec<hn_imaging::mr::MrSequence>,
    /// How voxels were combined onto the coarser grids (the card's preprocessing): `mean`, or
    /// `susceptibility_minimum` (T2*-GRE and SWI by their minimum intensity).
    #[serde(default)]
    pub reduction: hn_imaging::mr::MrReduction,
}

/// One sequence of [`MrInputInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MrSequenceInfo {
    pub sequence: hn_imaging::mr::MrSequence,
    pub rule: String,
    pub coverage: f64,
    /// The bias field divided out of the sequence (N4, when the card's preprocessing has it),
    /// as its smallest and largest value over the foreground.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_field: Option<[f32; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionPath {
    pub level_1: HemorrhageDecision,
    pub level_2: SubtypeLevel,
    pub level_3: PrognosisLevel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HemorrhageDecision {
    /// `"hemorrhage?"`.
    pub question: String,
    /// Calibrated P(any hemorrhage) (deterministic forward, as the threshold was fitted).
    pub probability: f64,
    pub threshold: f64,
    /// `probability ≥ threshold`.
    pub decision: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtypeLevel {
    /// `"which types?"`.
    pub question: String,
    /// False when level 1 said no.
    pub evaluated: bool,
    /// Why it was skipped.
    pub skipped: Option<String>,
    /// Empty when skipped.
    pub subtypes: Vec<SubtypeDecision>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtypeDecision {
    pub subtype: String,
    /// P(subtype) = P(any)·P(subtype | bleed), never above P(any).
    pub probability: f64,
    pub probability_given_bleed: f64,
    pub threshold: f64,
    pub decision: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrognosisLevel {
    /// `"prognosis?"`.
    pub question: String,
    pub evaluated: bool,
    pub skipped: Option<String>,
    pub p_mortality_30d: Option<f64>,
    /// Mortality operating threshold chosen on validation (`null` when uncalibrated).
    pub mortality_threshold: Option<f64>,
    pub high_mortality_risk: Option<bool>,
    /// P(mRS ≥ 4 at 90 days).
    pub p_poor_outcome_90d: Option<f64>,
    /// P(mRS = 0..6 at 90 days).
    pub mrs_distribution: Option<[f64; hn_model::N_MRS_CLASSES]>,
    /// Why an output of this level is `null` although the level was evaluated (its head never
    /// learned), one line each.
    #[serde(default)]
    pub withheld: Vec<String>,
}

/// Every calibrated probability (deterministic forward with the card's temperatures), whatever
/// the decision path showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probabilities {
    pub any: f64,
    /// Subtype names in [`SUBTYPES`] order with P(subtype).
    pub subtypes: Vec<(String, f64)>,
    pub subtypes_given_bleed: Vec<(String, f64)>,
    /// `null` when the head never learned (the reason is in [`Prediction::withheld`]).
    pub mortality_30d: Option<f64>,
    /// `null` when the mRS head never learned.
    pub poor_outcome_90d: Option<f64>,
    /// P(mRS ≥ k), k = 1..=6; `null` when the mRS head never learned.
    pub mrs_at_least: Option<[f64; hn_model::N_MRS_THRESHOLDS]>,
    pub mrs: Option<[f64; hn_model::N_MRS_CLASSES]>,
}

/// An output the model does not report, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithheldOutput {
    /// `"mortality_30d"` or `"mrs_90d"`.
    pub output: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UncertaintyReport {
    /// `"mc_dropout"` or `"deterministic"` (0 passes).
    pub method: String,
    pub passes: usize,
    pub any: HeadUncertainty,
    /// `null` when the head never learned.
    pub mortality_30d: Option<HeadUncertainty>,
    pub mrs_90d: Option<HeadUncertainty>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// Refer this case to a clinician.
    pub flag: bool,
    pub reason: String,
    /// Which uncertainty the policy uses (card's `calibration.uncertainty`).
    pub uncertainty_measure: String,
    pub uncertainty: f64,
    /// Refer when `uncertainty > threshold` (`null` when uncalibrated or not finite).
    pub threshold: Option<f64>,
    pub target_referral_rate: Option<f64>,
    pub validation_referral_rate: Option<f64>,
    /// Mahalanobis distance of the study's features from the training data's (`null` when the
    /// card has no feature density), and the distance above which a study is referred as
    /// atypical (chosen on validation).
    #[serde(default)]
    pub feature_distance: Option<f64>,
    #[serde(default)]
    pub distance_threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureWeight {
    pub name: String,
    /// The value as given, or `"missing"`.
    pub value: serde_json::Value,
    pub unit: String,
    /// This patient's gate in (0, 1).
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySlice {
    /// Slice index on the model grid.
    pub slice: usize,
    /// Nearest slice index of the input volume (k).
    pub input_slice: usize,
    /// Fraction of the heatmap's mass on this slice.
    pub heat_mass: f64,
    /// Slice P(any) from the slice head (temperature 1: the card has no slice temperature).
    pub p_any: f64,
    /// Overlay file name.
    pub overlay: String,
}
