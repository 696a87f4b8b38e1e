//! Heatmap overlays: a slice with its heatmap as PNG, and the upscaling that keeps a coarse
//! model grid legible.

#[allow(unused_imports)]
use super::*;

/// Nearest-neighbour upscaling of a `w × h` image by an integer `factor`, so overlays of a
/// coarse model grid stay legible (each model pixel becomes a visible block, no invented detail).
pub fn upscale_nearest(img: &[f32], w: usize, h: usize, factor: usize) -> Vec<f32> {
    let f = factor.max(1);
    let mut out = Vec::with_capacity(img.len() * f * f);
    for y in 0..h * f {
        let row = &img[(y / f) * w..(y / f + 1) * w];
        for x in 0..w * f {
            out.push(row[x / f]);
        }
    }
    out
}

/// Integer factor that brings the larger side of a `w × h` image to at least `target` pixels.
pub fn display_factor(w: usize, h: usize, target: usize) -> usize {
    target.div_ceil(w.max(h).max(1)).max(1)
}

/// A grayscale slice with a heatmap overlaid, as PNG bytes (RGB8, `w × h`, row-major inputs).
///
/// The slice is min–max scaled to gray; the heat is scaled by its maximum (values ≤ 0 are
/// transparent) and blended with a blue→red→yellow colour map at alpha `0.6·heat`.
pub fn render_overlay_png(
    slice: &[f32],
    heat: &[f32],
    w: usize,
    h: usize,
) -> Result<Vec<u8>, ReportError> {
    if slice.len() != w * h || heat.len() != w * h || w == 0 || h == 0 {
        return Err(ReportError::Invalid(format!(
            "overlay: slice has {} and heat {} values, {w}×{h} needs {}",
            slice.len(),
            heat.len(),
            w * h
        )));
    }
    let finite = |v: &f32| v.is_finite();
    let (lo, hi) = slice
        .iter()
        .filter(|v| finite(v))
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let hmax = heat
        .iter()
        .filter(|v| finite(v))
        .fold(0f32, |a, v| a.max(*v));
    let mut rgb = Vec::with_capacity(w * h * 3);
    for (s, t) in slice.iter().zip(heat) {
        let g = if s.is_finite() {
            ((s - lo) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let t = if hmax > 0.0 && t.is_finite() {
            (t / hmax).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // blue (0) -> red (0.5) -> yellow (1)
        let (r, gg, b) = if t < 0.5 {
            (2.0 * t, 0.0, 1.0 - 2.0 * t)
        } else {
            (1.0, 2.0 * t - 1.0, 0.0)
        };
        let a = 0.6 * t;
        for c in [r, gg, b] {
            rgb.push((((1.0 - a) * g + a * c) * 255.0).round() as u8);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(plot_err)?;
        wr.write_image_data(&rgb).map_err(plot_err)?;
    }
    Ok(out)
}
