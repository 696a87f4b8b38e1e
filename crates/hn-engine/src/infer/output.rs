//! Files of one prediction: `prediction.json`, `overlay_sliceNN.png` per key slice and
//! `heatmap.nii.gz` on the input volume's grid.

use std::path::{Path, PathBuf};

use hn_imaging::transforms::{Interp, Resample, SliceTarget, Transform};
use hn_imaging::{Modality, Provenance, Volume};

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

/// The channel to show under the overlays: the brain window (the narrowest covering 20–60
/// HU), else channel 0.
fn display_channel(windows: &[(f32, f32)]) -> usize {
    super::volume::channel_covering(windows, 20.0, 60.0).unwrap_or(0)
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
    let [s, c, h, w] = sample.shape;
    let plane = h * w;
    let ch = display_channel(&pred.input.windows).min(c.saturating_sub(1));
    let mut overlays = Vec::with_capacity(pred.key_slices.len());
    for ks in &pred.key_slices {
        if ks.slice >= s || pred.heatmap.density.len() != s * plane {
            return Err(InferError::Invalid(format!(
                "key slice {} outside the {s}-slice model grid",
                ks.slice
            )));
        }
        let img = &sample.images[(ks.slice * c + ch) * plane..(ks.slice * c + ch + 1) * plane];
        let heat = &pred.heatmap.density[ks.slice * plane..(ks.slice + 1) * plane];
        let f = crate::report::display_factor(w, h, 256);
        let png = crate::report::render_overlay_png(
            &crate::report::upscale_nearest(img, w, h, f),
            &crate::report::upscale_nearest(heat, w, h, f),
            w * f,
            h * f,
        )?;
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
pub fn write_outputs(
    pred: &Prediction,
    sample: &StudySample,
    source: &Volume,
    dir: &Path,
) -> Result<Vec<PathBuf>, InferError> {
    let art = artifacts(pred, sample, source)?;
    std::fs::create_dir_all(dir).map_err(|cause| InferError::Write {
        path: dir.to_path_buf(),
        cause,
    })?;
    let mut written = Vec::new();
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
/// absent, or the complete previous result, or the complete new one.
pub fn write_study_dir(res: &super::StudyResult, dir: &Path) -> Result<(), InferError> {
    let mut inner: Option<InferError> = None;
    let r = write_dir_atomic(dir, |tmp| {
        write_outputs(&res.prediction, &res.sample, &res.volume, tmp)
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
