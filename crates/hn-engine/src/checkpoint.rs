//! Model checkpoints: a folder with the weights, the network config and a model card
//! (`card.json`: preprocessing, training config, dataset digest, code version, calibration).
//!
//! ```text
//! run/model/            ← what `predict` and `evaluate` load (best validation epoch)
//!   model.bpk           burnpack weights of the network
//!   model.config.json   HemorrhageNetConfig
//!   card.json           ModelCard
//! run/last/             ← what `train --resume` continues from (latest finished epoch)
//!   trainable.bpk       network + learned task weights
//!   trainable.config.json
//!   optimizer.bpk       AdamW moments
//!   state.json          TrainState (epoch, step, best score, patience, history)
//! ```
//!
//! Every folder is written atomically: into `NAME.tmp`, fsynced, then renamed over `NAME`
//! (the old one is moved to `NAME.old` first and removed after), so a crash at any point leaves
//! either the old or the new checkpoint complete, never a mixture.

use std::path::{Path, PathBuf};

use hn_data::preprocess::PreprocessConfig;
use hn_model::burn::prelude::Device;
use hn_model::{HemorrhageNet, Temperatures};
use serde::{Deserialize, Serialize};

use crate::metrics::{self, ReferralPolicy};
use crate::scoring::TestTimeAugmentation;

/// Version of the card format.
pub const CARD_VERSION: u32 = 1;

/// Code version written into every card: crate version plus the git commit when the build knew
/// it (`HN_GIT_COMMIT` at compile time).
pub fn code_version() -> String {
    match option_env!("HN_GIT_COMMIT") {
        Some(c) if !c.is_empty() => format!("hemorrhagenet {} ({c})", env!("CARGO_PKG_VERSION")),
        _ => format!("hemorrhagenet {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Checkpoint errors: each names the path.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error(transparent)]
    Model(#[from] hn_model::ModelIoError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Per-head temperatures, and the prognosis heads' Platt biases (serialisable mirror of
/// [`Temperatures`]; calibrated logit = `z / T + bias`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TemperatureSet {
    pub any: f64,
    pub subtypes: f64,
    pub mortality: f64,
    pub mrs: f64,
    /// Absent in cards written before Platt scaling (then 0: temperature only).
    #[serde(default)]
    pub mortality_bias: f64,
    #[serde(default)]
    pub mrs_bias: f64,
}

impl Default for TemperatureSet {
    fn default() -> Self {
        TemperatureSet {
            any: 1.0,
            subtypes: 1.0,
            mortality: 1.0,
            mrs: 1.0,
            mortality_bias: 0.0,
            mrs_bias: 0.0,
        }
    }
}

impl TemperatureSet {
    /// The mortality head's calibration.
    pub fn mortality_calibration(&self) -> metrics::LogitCalibration {
        logit_calibration(self.mortality, self.mortality_bias)
    }

    /// The mRS head's calibration (all six cumulative logits).
    pub fn mrs_calibration(&self) -> metrics::LogitCalibration {
        logit_calibration(self.mrs, self.mrs_bias)
    }

    pub fn to_model(self) -> Temperatures {
        Temperatures::new()
            .with_any(self.any)
            .with_subtypes(self.subtypes)
            .with_mortality(self.mortality)
            .with_mrs(self.mrs)
            .with_mortality_bias(self.mortality_bias)
            .with_mrs_bias(self.mrs_bias)
    }
}

fn logit_calibration(temperature: f64, bias: f64) -> metrics::LogitCalibration {
    metrics::LogitCalibration {
        method: if bias == 0.0 {
            metrics::CalibrationMethod::Temperature
        } else {
            metrics::CalibrationMethod::Platt
        },
        temperature,
        bias,
    }
}

/// What the validation split fixed after training: temperatures, operating thresholds and the
/// referral policy. Test data never touches these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub temperatures: TemperatureSet,
    /// Operating thresholds on calibrated probabilities, `[any, 5 subtypes]` (Youden on
    /// validation).
    pub thresholds: [f64; hn_model::N_LABELS],
    /// Which uncertainty drives referral.
    pub uncertainty: crate::uncertainty::UncertaintyMeasure,
    /// Refer when that uncertainty exceeds the policy threshold.
    pub referral: ReferralPolicy,
    /// MC-dropout passes used for uncertainty.
    pub mc_passes: usize,
    /// Test-time augmentation the temperatures and thresholds were fitted under (and that
    /// evaluation and prediction therefore use); `none` for cards written before it existed.
    #[serde(default)]
    pub tta: TestTimeAugmentation,
    /// Mortality threshold (Youden on validation) used only for the report's decision path.
    pub mortality_threshold: f64,
    /// Agreement of the hematoma-facts read-out with the known facts on validation; present
    /// only when the validation (hence training) data had facts, i.e. when the read-out was
    /// trained. `predict` and the model-estimated ICH score use the read-out only then.
    #[serde(default)]
    pub facts: Option<metrics::FactsAgreement>,
    /// The training embeddings' density and the distance beyond which a study is referred as
    /// atypical (`crate::distance`); `null` for cards calibrated before it existed, which
    /// refer on uncertainty alone.
    #[serde(default)]
    pub distance: Option<crate::distance::DistancePolicy>,
}

/// Dataset identity of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetDigest {
    pub name: String,
    pub synthetic: bool,
    pub n_train: usize,
    pub n_validation: usize,
    pub n_test: usize,
    /// SHA-256 over the sorted `key,split,labels,outcomes` lines of every study.
    pub sha256: String,
    /// What the training split could teach each head; `null` in cards written before it was
    /// recorded (their heads are taken as trained).
    #[serde(default)]
    pub train_labels: Option<TrainingLabelCounts>,
}

/// How many studies of the training split carried each kind of label. A head that none of
/// them supervised never learned: its outputs are withheld (`null` with a reason) in
/// `prediction.json`, the SR, the service's result and `evaluate`, instead of reporting what
/// an untrained layer happens to say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingLabelCounts {
    /// Studies with study-level hemorrhage labels (any + subtypes).
    pub detection: usize,
    /// Studies with per-slice labels (encoder pre-training and the slice loss).
    pub slices: usize,
    /// Studies with a known 30-day outcome.
    pub mortality_30d: usize,
    /// Studies with a known 90-day mRS.
    pub mrs_90d: usize,
}

/// The network's outputs that can be withheld when their head never learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// 30-day mortality.
    Mortality30d,
    /// 90-day mRS (its distribution and the poor-outcome probability).
    Mrs90d,
}

impl Head {
    /// The head behind a prognosis outcome of the report (`mortality_30d`, `poor_outcome_90d`).
    pub fn of_outcome(outcome: &str) -> Self {
        if outcome == "mortality_30d" {
            Head::Mortality30d
        } else {
            Head::Mrs90d
        }
    }

    /// The output's name in `prediction.json`.
    pub fn name(self) -> &'static str {
        match self {
            Head::Mortality30d => "mortality_30d",
            Head::Mrs90d => "mrs_90d",
        }
    }
}

/// `card.json`: everything needed to know what a model is and to run it the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub card_version: u32,
    pub code_version: String,
    /// Seconds since the Unix epoch when written.
    pub created_unix: u64,
    pub preprocess: PreprocessConfig,
    /// The training config as given (TOML fields, JSON here).
    pub train_config: serde_json::Value,
    pub dataset: DatasetDigest,
    /// Epoch (1-based) whose weights these are.
    pub epoch: usize,
    /// Validation metrics of that epoch.
    pub validation: serde_json::Value,
    /// Filled in after training by calibration on the validation split.
    pub calibration: Option<Calibration>,
    /// Intended use and limits, shown in every report.
    pub intended_use: String,
    /// What the training inputs looked like; studies are checked against it before scoring
    /// (`null` in cards written before it was recorded: no gate beyond the head-CT checks).
    #[serde(default)]
    pub envelope: Option<crate::envelope::TrainingEnvelope>,
    /// The calibration of MR studies, for a model trained on CT and MR (`calibration` is then
    /// the CT studies'); absent otherwise ([`ModelCard::calibration_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_calibration: Option<Calibration>,
    /// The MR studies' training envelope, for a model that also reads MR (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_envelope: Option<crate::envelope::TrainingEnvelope>,
}

/// Most MC-dropout passes a card may ask for (each is a decode of the whole study).
pub const MAX_MC_PASSES: usize = 1000;

impl ModelCard {
    /// The calibration that applies to a study of `modality`: `mr_calibration` for MR when
    /// the card has one, else `calibration`.
    pub fn calibration_for(&self, modality: i64) -> Option<&Calibration> {
        if modality == hn_model::MODALITY_MR {
            self.mr_calibration.as_ref().or(self.calibration.as_ref())
        } else {
            self.calibration.as_ref()
        }
    }

    /// What identifies these weights: a hex SHA-256 over the code version that trained them,
    /// the time the card was written, the epoch and the training data's digest. Calibration is
    /// left out, so a recalibrated card keeps its fingerprint (its results replace the old).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            self.code_version.as_str(),
            &self.created_unix.to_string(),
            &self.epoch.to_string(),
            &self.dataset.sha256,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Why `head`'s outputs are withheld, when no training study carried its label (`None`:
    /// the head learned, or the card predates the record).
    pub fn untrained(&self, head: Head) -> Option<String> {
        let counts = self.dataset.train_labels?;
        let (n, what) = match head {
            Head::Mortality30d => (counts.mortality_30d, "a 30-day outcome"),
            Head::Mrs90d => (counts.mrs_90d, "a 90-day mRS"),
        };
        (n == 0).then(|| {
            format!(
                "not reported: no study of the training data ({}, {} studies) had {what}, so this head never learned",
                self.dataset.name, self.dataset.n_train
            )
        })
    }

    /// Check every value a request would later rely on, against the network `net` the card
    /// describes: windows vs input channels, the fixed grid, temperatures, thresholds, the
    /// referral policy and MC passes. The error says which field and why.
    pub fn validate(&self, net: &hn_model::HemorrhageNetConfig) -> Result<(), String> {
        let p = &self.preprocess;
        if p.windows.len() != net.channels {
            return Err(format!(
                "preprocess.windows has {} windows but the network reads {} channels",
                p.windows.len(),
                net.channels
            ));
        }
        if p.mr_sequences.len() != net.mr_channels {
            return Err(format!(
                "preprocess.mr_sequences has {} sequences but the network's MR stem reads {} \
                 channels",
                p.mr_sequences.len(),
                net.mr_channels
            ));
        }
        if let Some(i) = p
            .windows
            .iter()
            .position(|(c, w)| !c.is_finite() || !w.is_finite() || *w <= 0.0)
        {
            return Err(format!(
                "preprocess.windows[{i}] = {:?}: a window needs a finite centre and a positive width",
                p.windows[i]
            ));
        }
        match p.shape {
            None => return Err("preprocess.shape is missing: the model needs a fixed grid".into()),
            Some([s, h, w]) if [s, h, w] != [net.slices, net.height, net.width] => {
                return Err(format!(
                    "preprocess.shape {s}×{h}×{w} differs from the network's grid {}×{}×{}",
                    net.slices, net.height, net.width
                ));
            }
            Some(_) => {}
        }
        let Some(c) = &self.calibration else {
            return Ok(());
        };
        let t = &c.temperatures;
        for (name, v) in [
            ("any", t.any),
            ("subtypes", t.subtypes),
            ("mortality", t.mortality),
            ("mrs", t.mrs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "calibration.temperatures.{name} = {v}: temperatures must be positive and finite"
                ));
            }
        }
        for (name, v) in [
            ("mortality_bias", t.mortality_bias),
            ("mrs_bias", t.mrs_bias),
        ] {
            if !v.is_finite() {
                return Err(format!(
                    "calibration.temperatures.{name} = {v} is not finite"
                ));
            }
        }
        let probability = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if let Some(j) = c.thresholds.iter().position(|v| !probability(*v)) {
            return Err(format!(
                "calibration.thresholds[{j}] = {}: thresholds are probabilities in [0, 1]",
                c.thresholds[j]
            ));
        }
        if !probability(c.mortality_threshold) {
            return Err(format!(
                "calibration.mortality_threshold = {} is not a probability",
                c.mortality_threshold
            ));
        }
        let r = &c.referral;
        if r.threshold.is_nan() || r.threshold == f64::INFINITY {
            return Err(format!(
                "calibration.referral.threshold = {}: it must be a number or -inf",
                r.threshold
            ));
        }
        if !probability(r.target_rate) || !probability(r.validation_rate) {
            return Err(format!(
                "calibration.referral rates ({}, {}) must be in [0, 1]",
                r.target_rate, r.validation_rate
            ));
        }
        if c.mc_passes > MAX_MC_PASSES {
            return Err(format!(
                "calibration.mc_passes = {} is more than {MAX_MC_PASSES}",
                c.mc_passes
            ));
        }
        Ok(())
    }
}

pub const INTENDED_USE: &str = "Research and triage support only; not a medical device. \
Outputs must be reviewed by a qualified clinician. Trained on the data named in `dataset`; \
performance elsewhere is unknown until evaluated there.";

/// A loaded model: network (inference device), card.
pub struct LoadedModel {
    pub net: HemorrhageNet,
    pub card: ModelCard,
    pub dir: PathBuf,
}

impl LoadedModel {
    /// The device the network's parameters live on (`load_model(dir, device)`'s `device`):
    /// where evaluation and prediction of this model run.
    pub fn device(&self) -> Device {
        use hn_model::burn::module::Module;
        self.net
            .devices()
            .first()
            .cloned()
            .unwrap_or_else(Device::flex)
    }
}

/// Write `dir` atomically: `fill(tmp)` writes the files into a fresh temporary sibling, which
/// then replaces `dir`.
pub fn write_dir_atomic(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!("{name}.tmp"));
    let old = parent.join(format!("{name}.old"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    fill(&tmp)?;
    for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))? {
        let p = entry.map_err(io_err(&tmp))?.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&p))?;
    }
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        std::fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io_err(&tmp))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

/// The folder to read for `dir`: `dir` itself, or `dir.old` when a crash happened between the
/// two renames of [`write_dir_atomic`].
pub fn resolve_dir(dir: &Path) -> Option<PathBuf> {
    if dir.join("card.json").exists() || dir.join("state.json").exists() {
        return Some(dir.to_path_buf());
    }
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let old = dir.with_file_name(format!("{name}.old"));
    (old.join("card.json").exists() || old.join("state.json").exists()).then_some(old)
}

/// Write a JSON file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(io_err(path))
}

/// Read a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Save a model folder (network weights + config + card) atomically.
pub fn save_model(
    dir: &Path,
    net: &HemorrhageNet,
    card: &ModelCard,
) -> Result<(), CheckpointError> {
    write_dir_atomic(dir, |tmp| {
        net.save(tmp.join("model.bpk"))?;
        write_json(&tmp.join("card.json"), card)
    })
}

/// Update only the card of a saved model folder (e.g. after calibration), atomically
/// (temp file + rename).
pub fn update_card(dir: &Path, card: &ModelCard) -> Result<(), CheckpointError> {
    let dst = dir.join("card.json");
    let text = serde_json::to_string_pretty(card).map_err(|e| CheckpointError::Format {
        path: dst.clone(),
        msg: e.to_string(),
    })?;
    crate::atomic::write_file(&dst, text.as_bytes()).map_err(|(p, e)| io_err(&p)(e))
}

/// Load a model folder (or a path to its `model.bpk` / `card.json`) onto `device`.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel, CheckpointError> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let dir = resolve_dir(&dir).ok_or_else(|| CheckpointError::Format {
        path: dir.clone(),
        msg: "not a HemorrhageNet model folder (no card.json); pass the `model` folder a \
              training run wrote"
            .into(),
    })?;
    let card: ModelCard = read_json(&dir.join("card.json"))?;
    if card.card_version > CARD_VERSION {
        return Err(CheckpointError::Format {
            path: dir.join("card.json"),
            msg: format!(
                "card version {} is newer than this build understands ({CARD_VERSION})",
                card.card_version
            ),
        });
    }
    let net = HemorrhageNet::load(dir.join("model.bpk"), device)?;
    Ok(LoadedModel { net, card, dir })
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
