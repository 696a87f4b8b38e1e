//! Inference: one study → a [`Prediction`] report (hierarchical decision path, calibrated
//! probabilities with MC-dropout uncertainty, review flag, feature weights, hematoma volume,
//! key slices), heatmap overlays and a NIfTI heatmap on the input grid; batch prediction over
//! a manifest shard ([`predict_batch`]). The JSON schema is documented in `docs/PREDICT.md`.
//!
//! Nothing here reads or writes patient identifiers: the study is named by the key the caller
//! gives (a file/folder name or a manifest key), never by DICOM header values.

pub mod batch;
pub mod clinical;
pub mod output;
pub mod volume;

use std::path::{Path, PathBuf};

use hn_data::clinical::{CLINICAL_FEATURES, N_CLINICAL};
use hn_data::{ClinicalRecord, Outcomes, SUBTYPES};
use hn_imaging::{Modality, Volume};
use hn_model::burn::prelude::Device;
use hn_model::{HemorrhageNet, ModelInput, ModelProbabilities, Temperatures};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, ModelCard, load_model};
use crate::metrics::{ReferralPolicy, binary_entropy};
use crate::sample::{InputMask, StudySample, make_batch};
use crate::scoring::host as to_vec;

pub use batch::{BatchEvent, BatchSummary, FailedStudy, predict_batch, sanitize_key};
pub use clinical::read_clinical;
pub use output::{heatmap_on_input_grid, write_outputs, write_study_dir};
pub use volume::{VolumeEstimateConfig, estimate_volume_ml, estimate_volume_ml_with, volume_gate};

/// Version of the `prediction.json` schema.
pub const SCHEMA_VERSION: u32 = 2;

/// MC-dropout passes when the card does not say.
pub const DEFAULT_MC_PASSES: usize = 20;

/// Mixed into the per-study MC-dropout seed.
const MC_SEED: u64 = 0x4845_4d4f_5252_4841;

/// Clinical features listed in `feature_weights` by default.
pub const DEFAULT_TOP_FEATURES: usize = 5;

/// Key slices listed (and rendered as overlays).
pub const N_KEY_SLICES: usize = 3;

/// Inference errors. Each names the file or study it is about; none carries patient data.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Imaging(#[from] hn_imaging::ImagingError),
    #[error(transparent)]
    Decode(#[from] hn_data::layouts::DecodeError),
    #[error("{study}: unusable study: {reason}")]
    Unusable { study: String, reason: String },
    #[error("{}: {msg}", path.display())]
    Clinical { path: PathBuf, msg: String },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{study}: preprocessing failed: {source}")]
    Transform {
        study: String,
        source: hn_imaging::transforms::TransformError,
    },
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InferError + '_ {
    move |cause| InferError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Options of a [`Predictor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictOptions {
    /// Clinical features in `feature_weights`.
    pub top_features: usize,
    /// MC-dropout passes; `None` = the card's `mc_passes` (else [`DEFAULT_MC_PASSES`]).
    /// `Some(0)` = one deterministic pass (mutual information 0).
    pub mc_passes: Option<usize>,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            top_features: DEFAULT_TOP_FEATURES,
            mc_passes: None,
        }
    }
}

/// A loaded model ready to score studies.
pub struct Predictor {
    pub net: HemorrhageNet,
    pub card: ModelCard,
    pub device: Device,
    pub options: PredictOptions,
}

// ------------------------------------------------------------------------------------------
// The report

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
    pub format: String,
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
    pub mrs_distribution: Option<[f64; 7]>,
}

/// Every calibrated probability (deterministic forward with the card's temperatures), whatever
/// the decision path showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probabilities {
    pub any: f64,
    /// Subtype names in [`SUBTYPES`] order with P(subtype).
    pub subtypes: Vec<(String, f64)>,
    pub subtypes_given_bleed: Vec<(String, f64)>,
    pub mortality_30d: f64,
    pub poor_outcome_90d: f64,
    /// P(mRS ≥ k), k = 1..=6.
    pub mrs_at_least: [f64; 6],
    pub mrs: [f64; 7],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UncertaintyReport {
    /// `"mc_dropout"` or `"deterministic"` (0 passes).
    pub method: String,
    pub passes: usize,
    pub any: HeadUncertainty,
    pub mortality_30d: HeadUncertainty,
    pub mrs_90d: HeadUncertainty,
}

/// Uncertainty of one head, in nats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadUncertainty {
    /// `H[E p]`: total predictive uncertainty.
    pub predictive_entropy: f64,
    /// `H[E p] − E H[p]`: disagreement between MC passes (epistemic).
    pub mutual_information: f64,
    /// Mean calibrated probability over the passes (binary heads; `null` for mRS).
    pub mc_mean: Option<f64>,
    /// Standard deviation of the probability over passes (binary heads; `null` for mRS).
    pub sd: Option<f64>,
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

// ------------------------------------------------------------------------------------------

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Host copy of one study's probabilities.
#[derive(Debug, Clone)]
struct HostProbs {
    any: f64,
    subtypes: [f64; 5],
    given: [f64; 5],
    mortality: f64,
    mrs_at_least: [f64; 6],
    mrs: [f64; 7],
}

impl HostProbs {
    fn from(p: ModelProbabilities) -> Self {
        let sub = to_vec(p.subtypes);
        let giv = to_vec(p.subtype_given_bleed);
        let mal = to_vec(p.mrs_at_least);
        let mrs = to_vec(p.mrs);
        HostProbs {
            any: to_vec(p.any)[0],
            subtypes: std::array::from_fn(|i| sub[i]),
            given: std::array::from_fn(|i| giv[i]),
            mortality: to_vec(p.mortality)[0],
            mrs_at_least: std::array::from_fn(|i| mal[i]),
            mrs: std::array::from_fn(|i| mrs[i]),
        }
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

fn binary_uncertainty(ps: &[f64]) -> HeadUncertainty {
    let m = mean(ps.iter().copied());
    let expected = mean(ps.iter().map(|p| binary_entropy(*p)));
    let h = binary_entropy(m);
    let var = mean(ps.iter().map(|p| (p - m).powi(2)));
    HeadUncertainty {
        predictive_entropy: h,
        mutual_information: (h - expected).max(0.0),
        mc_mean: Some(m),
        sd: Some(var.sqrt()),
    }
}

fn categorical_entropy(p: &[f64]) -> f64 {
    -p.iter()
        .map(|q| {
            let q = q.clamp(1e-7, 1.0);
            q * q.ln()
        })
        .sum::<f64>()
}

fn categorical_uncertainty(ps: &[[f64; 7]]) -> HeadUncertainty {
    let m: Vec<f64> = (0..7).map(|k| mean(ps.iter().map(|p| p[k]))).collect();
    let h = categorical_entropy(&m);
    let expected = mean(ps.iter().map(|p| categorical_entropy(p)));
    HeadUncertainty {
        predictive_entropy: h,
        mutual_information: (h - expected).max(0.0),
        mc_mean: None,
        sd: None,
    }
}

/// The HU range a head CT must reach somewhere (air and bone), or the values are not HU.
const AIR_HU: f32 = -200.0;
const BONE_HU: f32 = 200.0;

impl Predictor {
    /// Load a model folder (or its `model.bpk` / `card.json`) onto the CPU (`flex`) device.
    pub fn load(model_path: &Path) -> Result<Self, InferError> {
        if !model_path.exists() {
            return Err(InferError::Checkpoint(CheckpointError::Format {
                path: model_path.to_path_buf(),
                msg: "model folder does not exist".into(),
            }));
        }
        let device = Device::flex();
        let loaded = load_model(model_path, &device)?;
        Ok(Self::new(loaded.net, loaded.card, device))
    }

    /// From a network and card already in memory.
    pub fn new(net: HemorrhageNet, card: ModelCard, device: Device) -> Self {
        Predictor {
            net,
            card,
            device,
            options: PredictOptions::default(),
        }
    }

    /// Builder: options.
    pub fn with_options(mut self, options: PredictOptions) -> Self {
        self.options = options;
        self
    }

    /// Check that `volume` is a usable head CT and preprocess it to the card's model grid.
    /// `key` names the study in errors and in the report.
    pub fn preprocess(
        &self,
        key: &str,
        volume: Volume,
        clinical: ClinicalRecord,
    ) -> Result<StudySample, InferError> {
        let unusable = |reason: String| InferError::Unusable {
            study: key.to_string(),
            reason,
        };
        let [nx, ny, nz] = volume.dims;
        if nx < 16 || ny < 16 {
            return Err(unusable(format!(
                "slices are {nx}×{ny} pixels; at least 16×16 are needed"
            )));
        }
        if nz < 2 {
            return Err(unusable(format!(
                "{nz} slice(s); a head CT volume of at least 2 axial slices is needed"
            )));
        }
        if volume.modality == Modality::Mr {
            return Err(unusable(
                "MR study: this model reads CT in Hounsfield units (its windows are HU)".into(),
            ));
        }
        if let Modality::Other(code) = &volume.modality
            && code != "NIfTI"
        {
            return Err(unusable(format!(
                "modality {code}: this model reads CT in Hounsfield units"
            )));
        }
        if let Some(i) = volume.data.iter().position(|v| !v.is_finite()) {
            return Err(unusable(format!("voxel {i} is not a finite number")));
        }
        let (lo, hi) = volume.min_max().unwrap_or((0.0, 0.0));
        if lo > AIR_HU || hi < BONE_HU {
            return Err(unusable(format!(
                "values span {lo:.0}..{hi:.0}; a head CT in Hounsfield units has air \
                 (< {AIR_HU}) and bone (> {BONE_HU}) — is this CT, and is the rescale applied?"
            )));
        }
        let cfg = &self.card.preprocess;
        if cfg.windows.len() != self.net.config().channels {
            return Err(InferError::Invalid(format!(
                "model card has {} windows but the network expects {} channels",
                cfg.windows.len(),
                self.net.config().channels
            )));
        }
        let cached = hn_data::cache::preprocess(volume, None, None, cfg).map_err(|source| {
            InferError::Transform {
                study: key.to_string(),
                source,
            }
        })?;
        Ok(StudySample::from_cached(
            key,
            key,
            cached,
            clinical,
            Outcomes::default(),
        ))
    }

    /// Seed the dropout RNG from the study key.
    fn seed_dropout(&self, key: &str) {
        self.device
            .seed(u64::from(hn_data::splits::shard_of(key, u32::MAX)) ^ MC_SEED);
    }

    fn mc_passes(&self) -> usize {
        self.options.mc_passes.unwrap_or_else(|| {
            self.card
                .calibration
                .as_ref()
                .map(|c| c.mc_passes)
                .filter(|p| *p > 0)
                .unwrap_or(DEFAULT_MC_PASSES)
        })
    }

    fn temperatures(&self) -> Temperatures {
        self.card
            .calibration
            .as_ref()
            .map(|c| c.temperatures.to_model())
            .unwrap_or_else(Temperatures::new)
    }

    /// Score one preprocessed study. `input` describes the source (format, grid) for the
    /// report; see [`describe_input`].
    pub fn predict(&self, sample: &StudySample, input: InputInfo) -> Prediction {
        let batch: ModelInput = make_batch(&[sample], None, InputMask::default(), &self.device);
        let temps = self.temperatures();
        // Deterministic pass (under the card's test-time augmentation, as calibrated):
        // heatmap, feature gates, slice probabilities. Every MC-dropout pass decodes from the
        // unaugmented encoding, so the CNN runs once more only for the mirror.
        let tta = self
            .card
            .calibration
            .as_ref()
            .map(|c| c.tta)
            .unwrap_or_default();
        let (encoded, det) = crate::scoring::forward_tta(&self.net, batch, tta);
        let facts_row = to_vec(det.facts.clone());
        let det_cal = temps.apply(&det);
        let det_probs = det_cal.probabilities();
        let [_, s, h, w] = det.heatmap.dims();
        let cells = to_vec(det.heatmap.clone());
        let gates = to_vec(det.feature_gates.clone());
        let slice_probs = to_vec(det_probs.slices.clone());
        let slice_any: Vec<f64> = (0..s)
            .map(|i| slice_probs[i * (1 + hn_model::N_SUBTYPES)])
            .collect();

        // MC dropout: temperatures applied to each pass's logits before averaging. The dropout
        // RNG is seeded from the study key, so a rerun gives the same numbers (the flex RNG is
        // process-global: concurrent predictions in one process interleave their draws).
        let passes = self.mc_passes();
        self.seed_dropout(&sample.key);
        let det = HostProbs::from(det_probs);
        let runs: Vec<HostProbs> = if passes == 0 {
            vec![det.clone()]
        } else {
            (0..passes)
                .map(|_| {
                    let out = self.net.decode_stochastic(encoded.clone());
                    HostProbs::from(temps.apply(&out).probabilities())
                })
                .collect()
        };
        // Reported probabilities and decisions: the deterministic calibrated forward, the
        // quantity the card's thresholds and temperatures were fitted on (evaluation scores it
        // the same way). The MC passes give the uncertainty (and their mean, reported there).
        let (m_any, m_sub, m_giv, m_mort, m_mal, m_mrs) = (
            det.any,
            det.subtypes,
            det.given,
            det.mortality,
            det.mrs_at_least,
            det.mrs,
        );
        let u_any = binary_uncertainty(&runs.iter().map(|r| r.any).collect::<Vec<_>>());
        let u_mort = binary_uncertainty(&runs.iter().map(|r| r.mortality).collect::<Vec<_>>());
        let u_mrs = categorical_uncertainty(&runs.iter().map(|r| r.mrs).collect::<Vec<_>>());

        let cal = self.card.calibration.as_ref();
        let thresholds = cal.map(|c| c.thresholds).unwrap_or([0.5; 6]);
        let bleed = m_any >= thresholds[0];
        let level_1 = HemorrhageDecision {
            question: "hemorrhage?".into(),
            probability: m_any,
            threshold: thresholds[0],
            decision: bleed,
        };
        let names: Vec<String> = SUBTYPES.iter().map(|t| t.rsna_name().into()).collect();
        let not_bleed = format!(
            "level 1 decided no hemorrhage (P = {m_any:.4} < threshold {:.4})",
            thresholds[0]
        );
        let level_2 = SubtypeLevel {
            question: "which types?".into(),
            evaluated: bleed,
            skipped: (!bleed).then(|| not_bleed.clone()),
            subtypes: if bleed {
                (0..5)
                    .map(|k| SubtypeDecision {
                        subtype: names[k].clone(),
                        probability: m_sub[k],
                        probability_given_bleed: m_giv[k],
                        threshold: thresholds[k + 1],
                        decision: m_sub[k] >= thresholds[k + 1],
                    })
                    .collect()
            } else {
                Vec::new()
            },
        };
        let mort_thr = cal.map(|c| c.mortality_threshold).and_then(finite);
        let level_3 = PrognosisLevel {
            question: "prognosis?".into(),
            evaluated: bleed,
            skipped: (!bleed).then_some(not_bleed),
            p_mortality_30d: bleed.then_some(m_mort),
            mortality_threshold: if bleed { mort_thr } else { None },
            high_mortality_risk: if bleed {
                mort_thr.map(|t| m_mort >= t)
            } else {
                None
            },
            p_poor_outcome_90d: bleed.then_some(m_mal[3]),
            mrs_distribution: bleed.then_some(m_mrs),
        };

        let review = review(cal.map(|c| (&c.uncertainty, &c.referral)), &u_any);

        // Clinical feature weights: top-k gates, values as given.
        let given = serde_json::to_value(sample.clinical).unwrap_or_default();
        let mut order: Vec<usize> = (0..N_CLINICAL.min(gates.len())).collect();
        order.sort_by(|a, b| gates[*b].total_cmp(&gates[*a]).then(a.cmp(b)));
        let feature_weights = order
            .into_iter()
            .take(self.options.top_features)
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
            .collect();

        // Heatmap density on the model grid, and key slices by heat mass.
        let [_, _, gh, gw] = sample.shape;
        let mut density = vec![0f32; s * gh * gw];
        let mut slice_mass = vec![0f64; s];
        let cfg = self.net.config();
        for si in 0..s {
            for i in 0..h {
                for j in 0..w {
                    let m = cells[(si * h + i) * w + j];
                    slice_mass[si] += m;
                    let (rows, cols) = cfg.cell_bounds(i, j, gh, gw);
                    let n = rows.len() * cols.len();
                    if n == 0 {
                        continue;
                    }
                    for y in rows {
                        for x in cols.clone() {
                            density[(si * gh + y) * gw + x] = (m / n as f64) as f32;
                        }
                    }
                }
            }
        }
        let mut by_mass: Vec<usize> = (0..s).collect();
        by_mass.sort_by(|a, b| slice_mass[*b].total_cmp(&slice_mass[*a]).then(a.cmp(b)));
        let nz_in = input.dims[2];
        let key_slices = by_mass
            .into_iter()
            .take(N_KEY_SLICES)
            .map(|si| KeySlice {
                slice: si,
                input_slice: (((si as f64 + 0.5) * nz_in as f64 / s as f64 - 0.5).round() as usize)
                    .min(nz_in.saturating_sub(1)),
                heat_mass: slice_mass[si],
                p_any: slice_any[si],
                overlay: overlay_name(si),
            })
            .collect();

        let estimated_facts = cal.and_then(|c| c.facts).map(|validation| {
            let f = hn_model::HematomaFacts::decode(std::array::from_fn(|j| facts_row[j] as f32));
            let gate = |v: f64| if level_1.decision { v } else { 0.0 };
            EstimatedFacts {
                hematoma_ml: gate(f.hematoma_ml),
                intraventricular_ml: gate(f.intraventricular_ml),
                p_infratentorial: crate::metrics::sigmoid(facts_row[2]),
                validation,
            }
        });
        let (vol, vol_method) = match &estimated_facts {
            Some(f) => (
                f.hematoma_ml + f.intraventricular_ml,
                format!(
                    "the network's hematoma-facts read-out (hematoma + intraventricular; \
                     validation mean absolute error {:.1} + {:.1} mL)",
                    f.validation.hematoma_ml_mae, f.validation.intraventricular_ml_mae
                ),
            ),
            None => (
                estimate_volume_ml(
                    sample,
                    &volume_gate(&slice_any, &slice_mass, level_1.decision),
                    &self.card.preprocess.windows,
                ),
                "crude image-derived estimate: voxels of 55-100 HU (3x3 mean, bone excluded) \
                 on slices with slice P(any) >= 0.5, on the model grid; not a segmentation"
                    .to_string(),
            ),
        };
        let mut warnings = Vec::new();
        if cal.is_none() {
            warnings.push(
                "model is uncalibrated: temperature 1, thresholds 0.5, no referral policy".into(),
            );
        }
        if let Some(c) = cal
            && !KNOWN_MEASURES.contains(&c.uncertainty.as_str())
        {
            warnings.push(format!(
                "card's referral uncertainty {:?} is not known to this build; predictive \
                 entropy of P(hemorrhage) was used",
                c.uncertainty
            ));
        }
        if self.card.dataset.synthetic {
            warnings.push("model was trained on synthetic data only".into());
        }
        Prediction {
            schema_version: SCHEMA_VERSION,
            study: sample.key.clone(),
            model: ModelInfo {
                code_version: crate::checkpoint::code_version(),
                trained_with: self.card.code_version.clone(),
                dataset: self.card.dataset.name.clone(),
                synthetic: self.card.dataset.synthetic,
                epoch: self.card.epoch,
                calibrated: cal.is_some(),
                calibration: if cal.is_some() {
                    "calibrated".into()
                } else {
                    "uncalibrated".into()
                },
            },
            input,
            decision_path: DecisionPath {
                level_1,
                level_2,
                level_3,
            },
            probabilities: Probabilities {
                any: m_any,
                subtypes: names.iter().cloned().zip(m_sub).collect(),
                subtypes_given_bleed: names.iter().cloned().zip(m_giv).collect(),
                mortality_30d: m_mort,
                poor_outcome_90d: m_mal[3],
                mrs_at_least: m_mal,
                mrs: m_mrs,
            },
            uncertainty: UncertaintyReport {
                method: if passes == 0 {
                    "deterministic".into()
                } else {
                    "mc_dropout".into()
                },
                passes,
                any: u_any,
                mortality_30d: u_mort,
                mrs_90d: u_mrs,
            },
            review,
            feature_weights,
            hematoma_volume_ml: finite(vol),
            hematoma_volume_method: vol_method,
            estimated_facts,
            key_slices,
            warnings,
            intended_use: self.card.intended_use.clone(),
            heatmap: Heatmap {
                shape: [s, gh, gw],
                density,
            },
        }
    }
}

/// Overlay file name of model-grid slice `s`.
pub fn overlay_name(s: usize) -> String {
    format!("overlay_slice{s:02}.png")
}

/// Referral uncertainty names understood in `Calibration::uncertainty`.
pub const KNOWN_MEASURES: [&str; 3] = [
    "any_predictive_entropy",
    "any_mutual_information",
    "any_mutual_info",
];

fn review(policy: Option<(&String, &ReferralPolicy)>, any: &HeadUncertainty) -> Review {
    match policy {
        None => Review {
            flag: true,
            reason: "uncalibrated model: no referral threshold was chosen on validation, so \
                     every result needs clinician review"
                .into(),
            uncertainty_measure: "any_predictive_entropy".into(),
            uncertainty: any.predictive_entropy,
            threshold: None,
            target_referral_rate: None,
            validation_referral_rate: None,
        },
        Some((measure, pol)) => {
            let (name, u) = match measure.as_str() {
                "any_mutual_information" | "any_mutual_info" => (
                    "mutual information of P(hemorrhage)",
                    any.mutual_information,
                ),
                _ => (
                    "predictive entropy of P(hemorrhage)",
                    any.predictive_entropy,
                ),
            };
            let flag = pol.refer(u);
            let rate = pol.target_rate * 100.0;
            let reason = if flag {
                format!(
                    "{name} {u:.3} nats is above the referral threshold {:.3} chosen on \
                     validation for a {rate:.0}% referral rate: refer to a clinician",
                    pol.threshold
                )
            } else {
                format!(
                    "{name} {u:.3} nats is within the referral threshold {:.3} chosen on \
                     validation for a {rate:.0}% referral rate",
                    pol.threshold
                )
            };
            Review {
                flag,
                reason,
                uncertainty_measure: measure.clone(),
                uncertainty: u,
                threshold: finite(pol.threshold),
                target_referral_rate: Some(pol.target_rate),
                validation_referral_rate: Some(pol.validation_rate),
            }
        }
    }
}

/// Describe the input for the report: format, modality, grids. Nothing from the headers
/// beyond geometry and modality.
pub fn describe_input(
    volume: &Volume,
    format: &str,
    sample: &StudySample,
    windows: &[(f32, f32)],
) -> InputInfo {
    let [s, _, h, w] = sample.shape;
    InputInfo {
        format: format.into(),
        modality: match &volume.modality {
            Modality::Ct => "CT".into(),
            Modality::Mr => "MR".into(),
            Modality::Other(o) => o.clone(),
        },
        dims: volume.dims,
        spacing_mm: volume.spacing,
        model_grid: [s, h, w],
        model_spacing_mm: sample.spacing_mm,
        windows: windows.to_vec(),
        clinical_features_given: sample.clinical.values().iter().flatten().count(),
    }
}

/// Everything one study's prediction produced, ready for [`write_outputs`].
pub struct StudyResult {
    pub prediction: Prediction,
    pub sample: StudySample,
    /// The input volume (its grid is the NIfTI heatmap's grid).
    pub volume: Volume,
}

impl Predictor {
    /// Read, check, preprocess and score one study: a DICOM folder/file or a NIfTI file.
    pub fn predict_path(
        &self,
        key: &str,
        path: &Path,
        clinical: ClinicalRecord,
    ) -> Result<StudyResult, InferError> {
        if !path.exists() {
            return Err(InferError::Io {
                path: path.to_path_buf(),
                cause: std::io::Error::new(std::io::ErrorKind::NotFound, "study not found"),
            });
        }
        let read = hn_imaging::read_any(path, &hn_imaging::AnyReadOptions::default())?;
        let format = if read.series.is_empty() {
            "nifti"
        } else {
            "dicom"
        };
        self.predict_volume(key, read.volume, format, clinical)
    }

    /// Check, preprocess and score a decoded volume.
    pub fn predict_volume(
        &self,
        key: &str,
        volume: Volume,
        format: &str,
        clinical: ClinicalRecord,
    ) -> Result<StudyResult, InferError> {
        let mut volume = volume;
        // Paths and UIDs stay out of everything written from here on.
        volume.provenance = hn_imaging::Provenance::default();
        let sample = self.preprocess(key, volume.clone(), clinical)?;
        let info = describe_input(&volume, format, &sample, &self.card.preprocess.windows);
        let prediction = self.predict(&sample, info);
        Ok(StudyResult {
            prediction,
            sample,
            volume,
        })
    }
}
