//! # hn-imaging — layer 1: imaging I/O
//!
//! Turns DICOM and NIfTI bytes into [`Volume`]s: oriented voxel grids of f32 values (Hounsfield
//! units for CT, stored intensities for MR) with spacing, origin, direction and provenance.
//! Windowing, resampling and masks are small composable [`transforms`].
//!
//! This crate knows nothing of machine learning, datasets or the model; every later layer
//! (data, model, engine, faces) builds on the [`Volume`] defined here.
//!
//! Coordinate convention: **LPS** (DICOM patient coordinates) everywhere. NIfTI's RAS+
//! world coordinates are converted on read and write (x and y negated).
//! See `docs/IMAGING.md` for the conventions, the series-choice rule and the codec table.

pub mod bias;
pub mod dicom;
pub mod dicom_write;
pub mod error;
pub mod inspect;
pub mod mr;
pub mod nifti;
pub mod raster;
pub mod transforms;
pub mod volume;

use std::path::{Path, PathBuf};

pub use dicom::{ReadOptions, SeriesSummary, SkippedFile, StudyRead};
pub use error::{Fault, ImagingError};
pub use nifti::NiftiReadOptions;
pub use volume::{Grid, Modality, Provenance, Volume, VolumeError};

/// What a study was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Dicom,
    Nifti,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Dicom => "dicom",
            InputFormat::Nifti => "nifti",
        }
    }
}

impl StudyRead {
    /// DICOM when series were found, NIfTI otherwise ([`read_any`] lists no series for NIfTI).
    pub fn format(&self) -> InputFormat {
        if self.series.is_empty() {
            InputFormat::Nifti
        } else {
            InputFormat::Dicom
        }
    }
}

/// A NIfTI volume as a [`StudyRead`] (no series; rule `"NIfTI file"`).
pub fn nifti_study(volume: Volume) -> StudyRead {
    StudyRead {
        volume,
        chosen_rule: "NIfTI file".into(),
        series: Vec::new(),
        skipped: Vec::new(),
        source: None,
    }
}

/// Options for [`read_any`]: DICOM options, and the NIfTI volume index for 4-D files.
#[derive(Debug, Clone, Default)]
pub struct AnyReadOptions {
    pub dicom: ReadOptions,
    pub nifti: NiftiReadOptions,
}

/// Read a NIfTI file (`.nii`, `.nii.gz`), a DICOM file, or a folder of DICOM files.
///
/// NIfTI input gives a [`StudyRead`] with an empty series list and rule `"NIfTI file"`.
pub fn read_any(path: &Path, opts: &AnyReadOptions) -> Result<StudyRead, ImagingError> {
    if path.is_file() && nifti::is_nifti_path(path) {
        return Ok(nifti_study(nifti::read_volume(path, &opts.nifti)?));
    }
    dicom::read_series(&[PathBuf::from(path)], &opts.dicom)
}

/// Rotation about the x (left-right) axis by `a` radians, as a direction matrix (tests).
#[cfg(test)]
pub(crate) fn rotation_for_tests(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}
