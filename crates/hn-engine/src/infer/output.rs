//! Files of one prediction: `prediction.json`, `overlay_sliceNN.png` per key slice and
//! `heatmap.nii.gz` on the input volume's grid.

use std::io::Write;
use std::path::{Path, PathBuf};

use hn_imaging::transforms::{Interp, Resample, SliceTarget, Transform};
use hn_imaging::{Modality, Provenance, Volume};

use super::{InferError, Prediction, io_err};
use crate::checkpoint::{CheckpointError, write_dir_atomic};
use crate::sample::StudySample;

/// Write `bytes` to `path` atomically: a hidden temporary sibling, fsync, rename.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), InferError> {
    let tmp = tmp_sibling(path);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Keep the extension last (the NIfTI writer compresses by `.gz`).
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
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

/// Write a prediction's files into `dir` (created if needed), each atomically (temp +
/// rename), `prediction.json` last so its presence means the folder is complete. Returns the
/// written paths.
pub fn write_outputs(
    pred: &Prediction,
    sample: &StudySample,
    source: &Volume,
    dir: &Path,
) -> Result<Vec<PathBuf>, InferError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = Vec::new();
    let [s, c, h, w] = sample.shape;
    let plane = h * w;
    let ch = display_channel(&pred.input.windows).min(c.saturating_sub(1));
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
        let p = dir.join(&ks.overlay);
        write_file_atomic(&p, &png)?;
        written.push(p);
    }
    let heat = heatmap_on_input_grid(pred, sample, source)?;
    let p = dir.join("heatmap.nii.gz");
    let tmp = tmp_sibling(&p);
    hn_imaging::nifti::write_volume(&tmp, &heat)?;
    std::fs::rename(&tmp, &p).map_err(io_err(&p))?;
    written.push(p);
    let p = dir.join("prediction.json");
    let text = serde_json::to_string_pretty(pred)
        .map_err(|e| InferError::Invalid(format!("prediction.json: {e}")))?;
    write_file_atomic(&p, text.as_bytes())?;
    written.push(p);
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
