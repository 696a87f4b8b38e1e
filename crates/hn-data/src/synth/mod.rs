//! # Synthetic head-CT cohort — the project's embedded default dataset
//!
//! Why it exists: real ICH data with voxel masks *and* outcomes cannot be shipped, and a
//! dataset whose ground truth is known exactly (lesion masks, labels, and each patient's
//! true outcome probability) is what tests, demos and benchmarks need. The generator is
//! built to make classification and prognosis genuinely hard (mimics, small and isodense
//! bleeds, noisy scanners, missing-not-at-random clinical data, outcome effects beyond the
//! ICH score) while staying fast enough to train on two CPU cores.
//!
//! Structure (each step only depends on the ones before, so outcomes can be sampled without
//! rendering — see [`sample_case`]):
//! 1. [`case`]: anatomy parameters and lesion plan → measured [`ImageFacts`] → clinical
//!    record (truth, then missingness) → oracle probabilities → drawn outcomes.
//! 2. [`phantom`]: the continuous procedural head (HU + lesion label at any point).
//! 3. [`render`]: the scanner (grid, partial volume, PSF, noise, pose), with the table,
//!    holder, motion, metal and kernel of [`artifacts`] when configured.
//! 4. [`io`]: cohort files (DICOM/NIfTI, RSNA-style CSVs, manifest) and [`read_cohort`].
//!
//! Everything is a pure function of `(config, cohort seed, study index)`: studies can be
//! generated in any order on any number of threads with identical bytes.
//!
//! Documentation of the model (causal table, calibration): `docs/SYNTH.md`.

pub mod artifacts;
pub mod case;
mod config;
pub mod io;
pub mod montage;
pub mod mr;
mod noise;
pub mod phantom;
pub mod render;

use std::path::PathBuf;

pub use artifacts::ArtifactConfig;
pub use case::{ImageFacts, OracleProbabilities, sample_case};
pub use config::{CohortModality, ShiftPreset, SynthConfig, shift_presets};
pub use io::{
    Cohort, CohortManifest, CohortStudy, OutputFormat, arrange_as_rsna, read_cohort, write_cohort,
    write_cohort_with_progress, write_manifest,
};
pub use mr::{
    BloodAge, MrConfig, MrSeries, SyntheticMrStudy, generate_mr_studies, generate_mr_study,
};
pub use phantom::{Acuity, Bone, IphSite};
pub use render::ScanGeometry;

use crate::{ClinicalRecord, Outcomes, StudyLabels};
use hn_imaging::Volume;

/// Version of the generator; part of the cohort manifest. Bump when output changes.
pub const GENERATOR_VERSION: &str = "hn-synth 1.0";

/// Errors from configuring, generating, writing or reading a synthetic cohort.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthetic config{}: {msg}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Config { path: Option<PathBuf>, msg: String },
    /// The cause is part of the message (not a `source()`), so error chains print it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    #[error("writing {}: {msg}", path.display())]
    Write { path: PathBuf, msg: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// One synthetic study with its complete ground truth.
#[derive(Debug, Clone)]
pub struct SyntheticStudy {
    /// `SYNTH-000123` (marked synthetic).
    pub id: String,
    pub index: usize,
    /// HU volume.
    pub volume: Volume,
    /// 0 = none, 1..=5 = subtype index + 1 (order of `SUBTYPES`); same layout as the volume.
    pub mask: Vec<u8>,
    /// Study labels, derived from the mask.
    pub labels: StudyLabels,
    /// One entry per slice, derived from the mask.
    pub slice_labels: Vec<StudyLabels>,
    /// Recorded clinical data (with realistic missingness).
    pub clinical: ClinicalRecord,
    /// Complete clinical truth (what the outcome model used).
    pub clinical_truth: ClinicalRecord,
    pub outcomes: Outcomes,
    pub oracle: OracleProbabilities,
    pub facts: ImageFacts,
    /// Hemphill ICH score (0 for studies without a bleed).
    pub ich_score: u8,
    pub geometry: ScanGeometry,
    pub pose: case::Pose,
    /// Head size factor (needed to locate suture lines).
    pub head_scale: f64,
}

impl SyntheticStudy {
    /// Head-frame position (mm) of the centre of voxel (i, j, k).
    pub fn head_point(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        let w = self.volume.world([i as f64, j as f64, k as f64]);
        render::head_from_world(&self.pose, w)
    }

    /// The skull bone region (between suture lines) above voxel (i, j, k).
    pub fn bone_at_voxel(&self, i: usize, j: usize, k: usize) -> Bone {
        phantom::bone_at(self.head_point(i, j, k), self.head_scale)
    }

    /// Slice identifier for RSNA-style labels (`SYNTH-000123-S007`).
    pub fn slice_id(&self, k: usize) -> String {
        format!("{}-S{k:03}", self.id)
    }
}

/// Synthetic patient ID for study `index`.
pub fn study_id(index: usize) -> String {
    format!("SYNTH-{index:06}")
}

/// Generate study `index` of cohort `cohort_seed`. Deterministic in `(cfg, seed, index)`.
///
/// Panics only if `cfg` is invalid; call [`SynthConfig::validate`] on untrusted configs
/// (the CLI and [`write_cohort`] do).
pub fn generate_study(cfg: &SynthConfig, cohort_seed: u64, index: usize) -> SyntheticStudy {
    try_generate_study(cfg, cohort_seed, index).expect("valid synthetic config")
}

/// Generate studies `indices` of cohort `cohort_seed` in parallel (rayon), in index order.
/// The in-memory path for training: no files are written. Same bytes as [`generate_study`].
pub fn generate_studies(
    cfg: &SynthConfig,
    cohort_seed: u64,
    indices: std::ops::Range<usize>,
) -> Result<Vec<SyntheticStudy>, SynthError> {
    use rayon::prelude::*;
    cfg.validate()
        .map_err(|msg| SynthError::Config { path: None, msg })?;
    indices
        .into_par_iter()
        .map(|i| try_generate_study(cfg, cohort_seed, i))
        .collect()
}

/// Fallible variant of [`generate_study`].
pub fn try_generate_study(
    cfg: &SynthConfig,
    cohort_seed: u64,
    index: usize,
) -> Result<SyntheticStudy, SynthError> {
    cfg.validate()
        .map_err(|msg| SynthError::Config { path: None, msg })?;
    let mut case = sample_case(cfg, cohort_seed, index);
    artifacts::perturb_pose(&cfg.artifacts, &mut case.pose, cohort_seed, index);
    let geometry = render::scan_geometry(cfg, &case, cohort_seed, index);
    let (mut volume, mut mask) = render::render(&case, &geometry, cohort_seed, index)?;
    // Every lesion in the facts must be visible in the mask: a lesion smaller than a voxel
    // (or between sub-samples) gets the voxel at its anchor point, with blood density.
    for t in 0..5 {
        let present = case.facts.volume_ml[t] > 0.0;
        if present
            && !mask.iter().any(|m| *m as usize == t + 1)
            && let Some(a) = case.anchors[t]
        {
            let w = render::world_from_head(&case.pose, a);
            let mut ijk = [0usize; 3];
            let mut clamped = false;
            for c in 0..3 {
                let f = ((w[c] - volume.origin[c]) / volume.spacing[c]).round();
                let max = (volume.dims[c] - 1) as f64;
                clamped |= f < 0.0 || f > max;
                ijk[c] = f.clamp(0.0, max) as usize;
            }
            if clamped {
                volume.provenance.warnings.push(format!(
                    "{:?} lesion lies outside the scanned range; its label is kept on the edge voxel",
                    crate::SUBTYPES[t]
                ));
            }
            let idx = volume.index(ijk[0], ijk[1], ijk[2]);
            mask[idx] = t as u8 + 1;
            let hu = case
                .phantom
                .lesions
                .iter()
                .find(|l| l.subtype_index == t)
                .map(|l| l.hu)
                .unwrap_or(60.0);
            volume.data[idx] = 0.5 * volume.data[idx] + 0.5 * hu as f32;
        }
    }
    let id = study_id(index);
    volume.provenance.sources.push(format!("synthetic:{id}"));
    let slice_labels = labels_per_slice(&mask, geometry.size * geometry.size);
    let mut sub = [false; 5];
    for sl in &slice_labels {
        for t in 0..5 {
            sub[t] |= sl.subtypes[t];
        }
    }
    let labels = StudyLabels {
        any: sub.iter().any(|b| *b),
        subtypes: sub,
    };
    Ok(SyntheticStudy {
        id,
        index,
        volume,
        mask,
        labels,
        slice_labels,
        clinical: case.clinical,
        clinical_truth: case.clinical_truth,
        outcomes: case.outcomes,
        oracle: case.oracle,
        facts: case.facts,
        ich_score: case.ich_score,
        geometry,
        pose: case.pose,
        head_scale: case.phantom.anatomy.scale,
    })
}

/// The labels of each slice of a mask (0 none, 1..=5 subtype index + 1) of `plane` voxels
/// per slice.
pub(crate) fn labels_per_slice(mask: &[u8], plane: usize) -> Vec<StudyLabels> {
    mask.chunks(plane)
        .map(|s| {
            let mut sub = [false; 5];
            for &m in s {
                if m > 0 {
                    sub[m as usize - 1] = true;
                }
            }
            StudyLabels {
                any: sub.iter().any(|b| *b),
                subtypes: sub,
            }
        })
        .collect()
}

/// One row of the ICH-score calibration table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CalibrationRow {
    pub score: u8,
    pub n: usize,
    pub deaths: usize,
    pub observed: f64,
    pub mean_oracle: f64,
    /// Hemphill 2001 30-day mortality for this score.
    pub target: f64,
}

/// Result of [`calibration_check`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CalibrationReport {
    /// One row per ICH score 0..=5 (scores ≥ 5 pooled into 5).
    pub rows: Vec<CalibrationRow>,
    /// AUC of 30-day death for the oracle probability and for the ICH score: the gap is the
    /// room a model using continuous image and clinical information has above the score.
    pub auc_oracle: f64,
    pub auc_ich_score: f64,
}

/// Area under the ROC curve ([`crate::stats::roc_auc_unchecked`]).
pub use crate::stats::roc_auc_unchecked as auc;

/// ICH-score calibration over the first `n` *bleeding* patients of cohort `seed` (no pixels
/// rendered): observed 30-day mortality per ICH score against Hemphill 2001.
pub fn calibration_check(cfg: &SynthConfig, seed: u64, n: usize) -> CalibrationReport {
    use rayon::prelude::*;
    let mut cfg = cfg.clone();
    cfg.prevalence_bleed = 1.0;
    let cases: Vec<(u8, Option<bool>, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let c = sample_case(&cfg, seed, i);
            (
                c.ich_score.min(5),
                c.outcomes.mortality_30d,
                c.oracle.p_mortality_30d,
            )
        })
        .collect();
    let known: Vec<_> = cases.iter().filter(|c| c.1.is_some()).collect();
    let died: Vec<bool> = known.iter().map(|c| c.1 == Some(true)).collect();
    let auc_oracle = auc(&known.iter().map(|c| c.2).collect::<Vec<_>>(), &died);
    let auc_ich_score = auc(
        &known.iter().map(|c| f64::from(c.0)).collect::<Vec<_>>(),
        &died,
    );
    let rows = (0..=5u8)
        .map(|s| {
            let rows: Vec<_> = cases.iter().filter(|c| c.0 == s).collect();
            let known: Vec<_> = rows.iter().filter_map(|c| c.1).collect();
            let deaths = known.iter().filter(|d| **d).count();
            CalibrationRow {
                score: s,
                n: rows.len(),
                deaths,
                observed: if known.is_empty() {
                    f64::NAN
                } else {
                    deaths as f64 / known.len() as f64
                },
                mean_oracle: if rows.is_empty() {
                    f64::NAN
                } else {
                    rows.iter().map(|c| c.2).sum::<f64>() / rows.len() as f64
                },
                target: crate::ich::ich_score_mortality(s),
            }
        })
        .collect();
    CalibrationReport {
        rows,
        auc_oracle,
        auc_ich_score,
    }
}
