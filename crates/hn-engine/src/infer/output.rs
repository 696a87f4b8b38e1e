//! Files of one prediction: `prediction.json`, `overlay_sliceNN.png` per key slice,
//! `heatmap.nii.gz` on the input volume's grid and, when asked, the DICOM results in `dicom/`.

use std::path::{Path, PathBuf};

use hn_imaging::transforms::{Interp, Resample, SliceTarget, Transform};
use hn_imaging::{Modality, Provenance, Volume};

use super::dicom_results::{DICOM_DIR, DicomResults};
use super::{InferError, Prediction};
use crate::checkpoint::{CheckpointError, write_dir_atomic};
use crate::sample::StudySample;

/// Write `bytes` to `path` atomically ([`crate::atomic::write_file`]).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), InferError> {
    crate::atomic::write_file(path, bytes)
        .map_err(|(path, cause)| InferError::Write { path, cause })
}

/// The heatmap resampled (trilinear) from the model grid back onto `source`'s grid: same
/// dims, spacing, origin and direction, so it overlays the input in a viewer. Values are
/// relative importance in [0, 1] (density / its maximum).
pub fn heatmap_on_input_grid(
    pred: &Prediction,
    sample: &StudySample,
    source: &Volume,
) -> Result<Volume, InferError> {
    let [s, h, w] = pred.heatmap.shape;
    let bad = |m: String| InferError::Invalid(format!("heatmap: {m}"));
    if pred.heatmap.density.len() != s * h * w || s * h * w == 0 {
        return Err(bad(format!(
            "{} values for a {s}×{h}×{w} grid",
            pred.heatmap.density.len()
        )));
    }
    // [S, H, W] C-order is the Volume layout (k·ny + j)·nx + i with nx = W, ny = H.
    let grid = Volume::new(
        pred.heatmap.density.clone(),
        [w, h, s],
        sample.spacing_mm,
        Modality::Other("heatmap".into()),
    )
    .map_err(|e| bad(e.to_string()))?;
    let [nx, ny, nz] = source.dims;
    let back = Resample {
        in_plane: Some((nx, ny)),
        slices: SliceTarget::Count(nz),
        interp: Interp::Linear,
    }
    .apply(grid)
    .map_err(|e| bad(e.to_string()))?;
    let max = back.data.iter().copied().fold(0f32, f32::max);
    let data = back
        .data
        .into_iter()
        .map(|v| if max > 0.0 { v / max } else { 0.0 })
        .collect();
    let mut out = source.with_data(data).map_err(|e| bad(e.to_string()))?;
    out.modality = Modality::Other("heatmap".into());
    out.provenance = Provenance::default();
    Ok(out)
}

/// Everything one prediction produced, in memory: what the file writer ([`write_outputs`])
/// writes, and what a server returns or stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifacts {
    /// `prediction.json` (pretty-printed).
    pub prediction_json: Vec<u8>,
    /// `(file name, PNG)` per key slice: the brain window with the heatmap over it.
    pub overlays: Vec<(String, Vec<u8>)>,
    /// `heatmap.nii.gz`: the heatmap on the input volume's grid.
    pub heatmap_nifti_gz: Vec<u8>,
}

/// Larger side of the PNG overlays (pixels).
pub const OVERLAY_PNG_SIZE: usize = 256;

/// The heatmap NIfTI's file name.
pub const HEATMAP_FILE: &str = "heatmap.nii.gz";
/// The report's file name.
pub const PREDICTION_FILE: &str = "prediction.json";

/// Render a prediction's artifacts.
pub fn artifacts(
    pred: &Prediction,
    sample: &StudySample,
    source: &Volume,
) -> Result<Artifacts, InferError> {
    let pictures = super::dicom_results::key_slice_pictures(pred, sample, OVERLAY_PNG_SIZE)?;
    let mut overlays = Vec::with_capacity(pictures.len());
    for (ks, pic) in pred.key_slices.iter().zip(pictures) {
        let png = pic
            .to_png()
            .map_err(|e| InferError::Invalid(format!("{}: {e}", ks.overlay)))?;
        overlays.push((ks.overlay.clone(), png));
    }
    let heat = heatmap_on_input_grid(pred, sample, source)?;
    let heatmap_nifti_gz = hn_imaging::nifti::volume_bytes(&heat, true)?;
    let prediction_json = serde_json::to_vec_pretty(pred)
        .map_err(|e| InferError::Invalid(format!("{PREDICTION_FILE}: {e}")))?;
    Ok(Artifacts {
        prediction_json,
        overlays,
        heatmap_nifti_gz,
    })
}

/// Write a prediction's files into `dir` (created if needed), each atomically (temp +
/// rename), `prediction.json` last so its presence means the folder is complete. Returns the
/// written paths.
///
/// With `dicom`, its objects go to `dir/dicom/` (`sr.dcm`, `overlay_NN.dcm`) before
/// `prediction.json`.
pub fn write_outputs(
    pred: &Prediction,
    sample: &StudySample,
    source: &Volume,
    dir: &Path,
    dicom: Option<&DicomResults>,
) -> Result<Vec<PathBuf>, InferError> {
    let art = artifacts(pred, sample, source)?;
    std::fs::create_dir_all(dir).map_err(|cause| InferError::Write {
        path: dir.to_path_buf(),
        cause,
    })?;
    let mut written = Vec::new();
    if let Some(d) = dicom {
        let ddir = dir.join(DICOM_DIR);
        std::fs::create_dir_all(&ddir).map_err(|cause| InferError::Write {
            path: ddir.clone(),
            cause,
        })?;
        for o in d.objects() {
            let p = ddir.join(&o.file_name);
            write_file_atomic(&p, &o.bytes)?;
            written.push(p);
        }
    }
    let files = art
        .overlays
        .iter()
        .map(|(name, png)| (name.as_str(), png))
        .chain([(HEATMAP_FILE, &art.heatmap_nifti_gz)])
        .chain([(PREDICTION_FILE, &art.prediction_json)]);
    for (name, bytes) in files {
        let p = dir.join(name);
        write_file_atomic(&p, bytes)?;
        written.push(p);
    }
    Ok(written)
}

/// Write a study's files as one folder, atomically ([`write_dir_atomic`]): `dir` is either
/// absent, or the complete previous result, or the complete new one. `dicom`: also the DICOM
/// results ([`write_outputs`]).
pub fn write_study_dir(
    res: &super::StudyResult,
    dir: &Path,
    dicom: Option<&DicomResults>,
) -> Result<(), InferError> {
    let mut inner: Option<InferError> = None;
    let r = write_dir_atomic(dir, |tmp| {
        write_outputs(&res.prediction, &res.sample, &res.volume, tmp, dicom)
            .map(|_| ())
            .map_err(|e| {
                let msg = e.to_string();
                inner = Some(e);
                CheckpointError::Format {
                    path: tmp.to_path_buf(),
                    msg,
                }
            })
    });
    match (r, inner) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}
