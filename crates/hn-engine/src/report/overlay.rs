//! Heatmap overlays: a slice with its heatmap as PNG, and the upscaling that keeps a coarse
//! model grid legible.

#[allow(unused_imports)]
use super::*;

pub use hn_imaging::raster::{display_factor, upscale_nearest};

/// A grayscale slice with a heatmap overlaid, as PNG bytes (RGB8, `w × h`, row-major inputs):
/// [`hn_imaging::raster::heat_overlay`], the picture the DICOM overlays show too.
pub fn render_overlay_png(
    slice: &[f32],
    heat: &[f32],
    w: usize,
    h: usize,
) -> Result<Vec<u8>, ReportError> {
    hn_imaging::raster::heat_overlay(slice, heat, w, h)
        .map_err(ReportError::Invalid)?
        .to_png()
        .map_err(ReportError::Invalid)
}
