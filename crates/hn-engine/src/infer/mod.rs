//! Inference: one study → a [`Prediction`] report (hierarchical decision path, calibrated
//! probabilities with MC-dropout uncertainty, review flag, feature weights, hematoma volume,
//! key slices), heatmap overlays and a NIfTI heatmap on the input grid; batch prediction over
//! a manifest shard ([`predict_batch`]). The JSON schema is documented in `docs/PREDICT.md`.
//!
//! Nothing here reads or writes patient identifiers: the study is named by the key the caller
//! gives (a file/folder name or a manifest key), never by DICOM header values.

pub mod assemble;
pub mod batch;
pub mod clinical;
pub mod dicom_results;
pub mod output;
pub mod schema;
pub mod volume;

use std::path::{Path, PathBuf};

use hn_data::{ClinicalRecord, Outcomes};
use hn_imaging::{Fault, InputFormat, Modality, Volume};
use hn_model::HemorrhageNet;
use hn_model::burn::prelude::Device;

use crate::checkpoint::{CheckpointError, ModelCard, load_model};
use crate::sample::{InputMask, StudySample};
use crate::scoring::{StudyScores, TestTimeAugmentation, score};

pub use batch::{BatchEvent, BatchSummary, FailedStudy, predict_batch, sanitize_key};
pub use clinical::{parse_clinical_json, read_clinical};
pub use dicom_results::{DicomObject, DicomResults, dicom_results};
pub use output::{Artifacts, artifacts, heatmap_on_input_grid, write_outputs, write_study_dir};
pub use volume::{VolumeEstimateConfig, estimate_volume_ml, estimate_volume_ml_with, volume_gate};

pub use assemble::{
    DEFAULT_TOP_FEATURES, N_KEY_SLICES, SCHEMA_VERSION, clinical_names, overlay_name,
};
pub use schema::*;

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
    /// Writing a result failed: always ours, whatever the I/O error says.
    #[error("{}: writing the result failed: {cause}", path.display())]
    Write {
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

impl InferError {
    /// Whose fault the error is: the request's (an unusable study, a bad clinical value, a
    /// missing file; a server answers 4xx) or ours (the model, writing results; 5xx).
    pub fn fault(&self) -> Fault {
        match self {
            InferError::Imaging(e) => e.fault(),
            InferError::Decode(hn_data::layouts::DecodeError::Imaging(e)) => e.fault(),
            InferError::Decode(_)
            | InferError::Unusable { .. }
            | InferError::Clinical { .. }
            | InferError::Transform { .. } => Fault::Input,
            InferError::Io { cause, .. } => Fault::of_io(cause),
            InferError::Write { .. } => Fault::Internal,
            InferError::Checkpoint(_) | InferError::Report(_) | InferError::Invalid(_) => {
                Fault::Internal
            }
        }
    }
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
    /// MC-dropout passes; `None` = the card's `mc_passes` (else [`DEFAULT_MC_PASSES`](crate::scoring::DEFAULT_MC_PASSES)).
    /// `Some(0)` = one deterministic pass (mutual information 0).
    pub mc_passes: Option<usize>,
    /// Test-time augmentation; `None` = the one the card's calibration was fitted under.
    pub tta: Option<TestTimeAugmentation>,
    /// Studies per forward in [`Predictor::predict_many`].
    pub batch: usize,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            top_features: DEFAULT_TOP_FEATURES,
            mc_passes: None,
            tta: None,
            batch: DEFAULT_BATCH,
        }
    }
}

/// Studies per forward when the caller does not say: on the CPU, larger batches gain little
/// (docs/BENCHMARKS.md) and cost latency for the first study of the batch.
pub const DEFAULT_BATCH: usize = 4;

/// A loaded model ready to score studies.
///
/// `Predictor` is `Send + Sync`: a server holds one (in an `Arc`) and scores from many
/// threads at once. Every study's numbers depend on that study alone — MC dropout draws from
/// a generator seeded by the study key, not from the backend's process-global RNG — so
/// concurrent, batched and one-at-a-time scoring agree (`tests/predict.rs`).
pub struct Predictor {
    pub net: HemorrhageNet,
    pub card: ModelCard,
    pub device: Device,
    pub options: PredictOptions,
}

impl Predictor {
    /// Load a model folder (or its `model.bpk` / `card.json`) onto the CPU (`flex`) device.
    pub fn load(model_path: &Path) -> Result<Self, InferError> {
        Self::load_on(model_path, Device::flex())
    }

    /// Load a model folder onto `device` (any backend this build has: see
    /// [`crate::devices::parse_devices`]). The card is validated here
    /// ([`ModelCard::validate`]): a value that would make a later request fail is refused now,
    /// naming the file.
    pub fn load_on(model_path: &Path, device: Device) -> Result<Self, InferError> {
        if !model_path.exists() {
            return Err(InferError::Checkpoint(CheckpointError::Format {
                path: model_path.to_path_buf(),
                msg: "model folder does not exist".into(),
            }));
        }
        let loaded = load_model(model_path, &device)?;
        Self::new(loaded.net, loaded.card, device).map_err(|msg| {
            InferError::Checkpoint(CheckpointError::Format {
                path: loaded.dir.join("card.json"),
                msg,
            })
        })
    }

    /// From a network and card already in memory; the card is validated against the network.
    pub fn new(net: HemorrhageNet, card: ModelCard, device: Device) -> Result<Self, String> {
        card.validate(net.config())?;
        Ok(Predictor {
            net,
            card,
            device,
            options: PredictOptions::default(),
        })
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
        hn_data::preprocess::check_head_ct(&volume).map_err(unusable)?;
        let cfg = &self.card.preprocess;
        // At the precision a cached layout gives the model (`CacheDtype::quantize`), so a
        // study scored here and the same study scored by `evaluate` agree.
        let cached = hn_data::preprocess::preprocess(volume, None, None, cfg)
            .map_err(|source| InferError::Transform {
                study: key.to_string(),
                source,
            })?
            .quantized(cfg.dtype);
        let sample = StudySample::from_cached(key, key, cached, clinical, Outcomes::default());
        if let Some(gate) = assemble::input_gate(&self.card, &sample)
            && gate.verdict == crate::envelope::Verdict::Refused
        {
            return Err(unusable(format!(
                "clearly outside the model's training envelope ({}); a model trained on such \
                 studies is needed",
                gate.describe()
            )));
        }
        Ok(sample)
    }

    /// MC-dropout passes: the caller's, else the card's, else [`DEFAULT_MC_PASSES`](crate::scoring::DEFAULT_MC_PASSES)
    /// ([`crate::scoring::scoring_settings`], as evaluation).
    pub fn mc_passes(&self) -> usize {
        self.settings().0
    }

    /// Test-time augmentation: the caller's, else the one the card was calibrated under.
    pub fn tta(&self) -> TestTimeAugmentation {
        self.settings().1
    }

    fn settings(&self) -> (usize, TestTimeAugmentation) {
        crate::scoring::scoring_settings(
            self.card.calibration.as_ref(),
            self.options.mc_passes,
            self.options.tta,
        )
    }

    /// Raw scores of preprocessed studies, [`PredictOptions::batch`] per forward, through the
    /// scoring path evaluation uses.
    pub fn score(&self, samples: &[&StudySample]) -> Vec<StudyScores> {
        score(
            &self.net,
            samples,
            self.options.batch,
            InputMask::default(),
            self.mc_passes(),
            self.tta(),
            &self.device,
        )
    }

    /// Score one preprocessed study. `input` describes the source (format, grid) for the
    /// report; see [`describe_input`].
    pub fn predict(&self, sample: &StudySample, input: InputInfo) -> Prediction {
        let scores = self.score(&[sample]).pop().expect("one study scored");
        self.assemble(sample, &scores, input)
    }

    /// Score several preprocessed studies, [`PredictOptions::batch`] per forward; each
    /// prediction equals what [`predict`](Self::predict) gives for it alone.
    pub fn predict_many(&self, studies: &[(&StudySample, InputInfo)]) -> Vec<Prediction> {
        let samples: Vec<&StudySample> = studies.iter().map(|(s, _)| *s).collect();
        let scores = self.score(&samples);
        studies
            .iter()
            .zip(&scores)
            .map(|((sample, input), sc)| self.assemble(sample, sc, input.clone()))
            .collect()
    }

    /// The report of one scored study (pure: [`assemble::assemble`]).
    pub fn assemble(
        &self,
        sample: &StudySample,
        scores: &StudyScores,
        input: InputInfo,
    ) -> Prediction {
        assemble::assemble(
            &self.card,
            self.net.config(),
            self.options.top_features,
            sample,
            scores,
            input,
        )
    }
}

/// Describe the input for the report: format, modality, grids. Nothing from the headers
/// beyond geometry and modality.
pub fn describe_input(
    volume: &Volume,
    format: InputFormat,
    sample: &StudySample,
    windows: &[(f32, f32)],
) -> InputInfo {
    let [s, _, h, w] = sample.shape;
    InputInfo {
        format,
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
        mr: None,
    }
}

/// Whether a folder holds NIfTI files (at its top level).
/// Whether the first instance of a study held in memory is an MR image (a study is one
/// modality; a broken first instance is left to the reader's errors).
fn first_is_mr(instances: &[hn_imaging::dicom::MemoryInstance]) -> bool {
    instances.first().and_then(|i| i.modality()).as_deref() == Some("MR")
}

/// A study as bytes in memory, for [`Predictor::predict_bytes`].
#[derive(Debug)]
pub enum StudyBytes {
    /// The instances of one study (Part-10 bytes or parsed objects).
    Dicom(Vec<hn_imaging::dicom::MemoryInstance>),
    /// A `.nii` or `.nii.gz` file's bytes.
    Nifti(Vec<u8>),
}

impl StudyResult {
    /// The prediction's files in memory ([`output::artifacts`]).
    pub fn artifacts(&self) -> Result<output::Artifacts, InferError> {
        output::artifacts(&self.prediction, &self.sample, &self.volume)
    }
}

/// Everything one study's prediction produced, ready for [`write_outputs`].
pub struct StudyResult {
    pub prediction: Prediction,
    pub sample: StudySample,
    /// The input volume (its grid is the NIfTI heatmap's grid).
    pub volume: Volume,
    /// The source study's identity (DICOM input): only the DICOM results read it.
    pub source: Option<hn_imaging::dicom::SourceStudy>,
}

/// What a study on disk is, when the caller says so instead of letting the files say it
/// (`predict --modality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyModality {
    /// Read as a CT (one series in Hounsfield units), whatever else the folder holds.
    Ct,
    /// Read as an MR study: a DICOM folder or file (series told apart by their attributes), a
    /// folder of NIfTI files named by sequence, or one NIfTI file named by its sequence.
    Mr,
}

impl std::str::FromStr for StudyModality {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ct" => Ok(StudyModality::Ct),
            "mr" => Ok(StudyModality::Mr),
            other => Err(format!("modality `{other}`: ct or mr")),
        }
    }
}

impl Predictor {
    /// [`predict_path`](Self::predict_path) with the modality given (`None`: from the files).
    pub fn predict_path_as(
        &self,
        key: &str,
        path: &Path,
        clinical: ClinicalRecord,
        modality: Option<StudyModality>,
    ) -> Result<StudyResult, InferError> {
        if !path.exists() {
            return Err(InferError::Io {
                path: path.to_path_buf(),
                cause: std::io::Error::new(std::io::ErrorKind::NotFound, "study not found"),
            });
        }
        let mr = match modality {
            Some(m) => m == StudyModality::Mr,
            // From the files, for a model that reads MR: a folder of NIfTI files named by
            // sequence, or a DICOM study whose first header says MR (peeked, so the study is
            // decoded once, by the reader it needs).
            None => {
                self.reads_mr()
                    && (hn_imaging::mr::is_nifti_mr_folder(path)
                        || (!hn_imaging::nifti::is_nifti_path(path)
                            && hn_imaging::dicom::peek_modality(&[path.to_path_buf()]).as_deref()
                                == Some("MR")))
            }
        };
        if mr {
            let study = hn_imaging::mr::read_mr_path(path)?;
            return self.predict_mr(key, study, clinical);
        }
        let read = hn_imaging::read_any(path, &hn_imaging::AnyReadOptions::default())?;
        self.predict_read(key, read, clinical)
    }

    /// Read, check, preprocess and score one study: a DICOM folder/file or a NIfTI file (an
    /// MR study when the model reads MR and the files say so).
    pub fn predict_path(
        &self,
        key: &str,
        path: &Path,
        clinical: ClinicalRecord,
    ) -> Result<StudyResult, InferError> {
        self.predict_path_as(key, path, clinical, None)
    }

    /// Whether the model has an MR input (its card's preprocessing has MR channels).
    pub fn reads_mr(&self) -> bool {
        !self.card.preprocess.mr_sequences.is_empty()
    }

    /// Score an MR study read sequence by sequence ([`hn_imaging::dicom::read_mr_study`]):
    /// every sequence onto one grid, normalised, the model's channels filled (a missing
    /// sequence masked), checked against the MR training envelope, scored. The prediction's
    /// `input.mr` says which series was read as which sequence, and what was missing.
    pub fn predict_mr(
        &self,
        key: &str,
        mr: hn_imaging::dicom::MrStudyRead,
        clinical: ClinicalRecord,
    ) -> Result<StudyResult, InferError> {
        let unusable = |reason: String| InferError::Unusable {
            study: key.to_string(),
            reason,
        };
        if !self.reads_mr() {
            return Err(unusable(
                "this model reads CT only (its card has no MR channels); train on MR studies                  to score MR"
                    .into(),
            ));
        }
        let transform = |source| InferError::Transform {
            study: key.to_string(),
            source,
        };
        let cfg = &self.card.preprocess;
        let stack = mr
            .on_one_grid(cfg.mr_reduction, cfg.mr_bias_correction.as_ref())
            .map_err(transform)?;
        if !stack
            .channels
            .iter()
            .any(|c| cfg.mr_sequences.contains(&c.sequence))
        {
            return Err(unusable(
                "the study has none of the MR sequences the model reads".into(),
            ));
        }
        let cached = hn_data::preprocess::preprocess_mr(&stack, None, None, cfg)
            .map_err(transform)?
            .quantized(cfg.dtype);
        let mut sample = StudySample::from_cached(key, key, cached, clinical, Outcomes::default());
        sample.modality = hn_model::MODALITY_MR;
        if let Some(gate) = assemble::input_gate(&self.card, &sample)
            && gate.verdict == crate::envelope::Verdict::Refused
        {
            return Err(unusable(format!(
                "clearly outside the model's MR training envelope ({})",
                gate.describe()
            )));
        }
        let reference = mr
            .sequences
            .iter()
            .find(|s| s.sequence == stack.reference)
            .expect("the reference is a read sequence");
        let mut volume = reference.volume.clone();
        volume.provenance = hn_imaging::Provenance::default();
        // DICOM input lists its series; a NIfTI folder has none.
        let format = if mr.series.is_empty() {
            InputFormat::Nifti
        } else {
            InputFormat::Dicom
        };
        let mut info = describe_input(&volume, format, &sample, &[]);
        info.mr = Some(schema::MrInputInfo {
            reference: stack.reference,
            reduction: stack.reduction,
            sequences: mr
                .sequences
                .iter()
                .zip(&stack.channels)
                .map(|(s, c)| schema::MrSequenceInfo {
                    sequence: s.sequence,
                    rule: s.rule.clone(),
                    coverage: c.coverage,
                    bias_field: c.bias_field.map(|(lo, hi)| [lo, hi]),
                })
                .collect(),
            missing: cfg
                .mr_sequences
                .iter()
                .copied()
                .filter(|q| !stack.channels.iter().any(|c| c.sequence == *q))
                .collect(),
        });
        let prediction = self.predict(&sample, info);
        Ok(StudyResult {
            prediction,
            sample,
            volume,
            source: mr.source,
        })
    }

    /// Score a study as read ([`hn_imaging::StudyRead`]), keeping its DICOM identity for
    /// [`dicom_results`](Self::dicom_results).
    pub fn predict_read(
        &self,
        key: &str,
        read: hn_imaging::StudyRead,
        clinical: ClinicalRecord,
    ) -> Result<StudyResult, InferError> {
        let format = read.format();
        let mut res = self.predict_volume(key, read.volume, format, clinical)?;
        res.source = read.source;
        Ok(res)
    }

    /// The DICOM results of a scored study: an Enhanced SR and the overlay series, filed into
    /// the source study ([`dicom_results::dicom_results`]). An error for input without a DICOM
    /// identity (NIfTI) or with a malformed one, naming the attribute.
    pub fn dicom_results(&self, res: &StudyResult) -> Result<DicomResults, InferError> {
        dicom_results::dicom_results(
            &self.card,
            &res.prediction,
            &res.sample,
            res.source.as_ref(),
        )
    }

    /// Read, check, preprocess and score a study held in memory (a network receiver's): DICOM
    /// instances through the same series selection, ordering, geometry checks and HU decoding
    /// as files, or a NIfTI file's bytes. `key` names the study in errors and the report.
    pub fn predict_bytes(
        &self,
        key: &str,
        study: StudyBytes,
        clinical: ClinicalRecord,
    ) -> Result<StudyResult, InferError> {
        let read = match study {
            StudyBytes::Dicom(instances) if self.reads_mr() && first_is_mr(&instances) => {
                let mr = hn_imaging::dicom::read_mr_study_from_memory(
                    key,
                    instances,
                    &hn_imaging::ReadOptions::default(),
                )?;
                return self.predict_mr(key, mr, clinical);
            }
            StudyBytes::Dicom(instances) => hn_imaging::dicom::read_series_from_memory(
                key,
                instances,
                &hn_imaging::ReadOptions::default(),
            )?,
            StudyBytes::Nifti(bytes) => {
                hn_imaging::nifti_study(hn_imaging::nifti::read_volume_bytes(
                    Path::new(key),
                    bytes,
                    &hn_imaging::NiftiReadOptions::default(),
                )?)
            }
        };
        self.predict_read(key, read, clinical)
    }

    /// Check, preprocess and score a decoded volume (no DICOM identity: see
    /// [`predict_read`](Self::predict_read)).
    pub fn predict_volume(
        &self,
        key: &str,
        volume: Volume,
        format: InputFormat,
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
            source: None,
        })
    }
}
