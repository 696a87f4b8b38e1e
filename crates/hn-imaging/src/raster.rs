//! RGB pictures of slices: a gray slice with a heat map blended over it, nearest-neighbour
//! upscaling for coarse grids, and burned-in text. Used for the PNG overlays of reports and for
//! the DICOM Secondary Capture overlays ([`crate::dicom_write::secondary_capture`]), so both
//! show the same picture.
//!
//! Text is drawn with the `font8x8` bitmap font (public-domain 8×8 glyphs, printable ASCII):
//! burned-in warnings must be legible in any viewer at any window setting, which a bitmap font
//! in solid colour on a black band guarantees without a font rasteriser.

use font8x8::UnicodeFonts;

/// An 8-bit RGB image, row-major, `data.len() == 3 · width · height`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Glyph cell size of the font, in pixels at scale 1.
pub const GLYPH: usize = 8;

impl RgbImage {
    /// A black image.
    pub fn black(width: usize, height: usize) -> Self {
        RgbImage {
            width,
            height,
            data: vec![0; 3 * width * height],
        }
    }

    /// Draw `text` with its top-left corner at `(x, y)`, each font pixel a `scale × scale`
    /// block; characters outside printable ASCII are drawn as `?`; what falls outside the
    /// image is clipped.
    pub fn draw_text(&mut self, x: usize, y: usize, text: &str, scale: usize, rgb: [u8; 3]) {
        let s = scale.max(1);
        for (n, c) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                })
                .unwrap_or([0; 8]);
            let x0 = x + n * GLYPH * s;
            for (gy, row) in glyph.iter().enumerate() {
                for gx in 0..GLYPH {
                    if row & (1 << gx) == 0 {
                        continue;
                    }
                    for dy in 0..s {
                        for dx in 0..s {
                            self.put(x0 + gx * s + dx, y + gy * s + dy, rgb);
                        }
                    }
                }
            }
        }
    }

    fn put(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.data[i..i + 3].copy_from_slice(&rgb);
        }
    }

    /// This image below a black band carrying `lines` (each `(text, colour)`), each line as
    /// large as fits the width (16 px per character when it fits, else 8). The band is added
    /// above the picture, so no pixel of it is covered.
    pub fn with_banner(&self, lines: &[(&str, [u8; 3])]) -> RgbImage {
        let scales: Vec<usize> = lines
            .iter()
            .map(|(t, _)| {
                if t.chars().count() * GLYPH * 2 + 8 <= self.width {
                    2
                } else {
                    1
                }
            })
            .collect();
        let band = if lines.is_empty() {
            0
        } else {
            scales.iter().map(|s| GLYPH * s + 4).sum::<usize>() + 4
        };
        let mut out = RgbImage::black(self.width, self.height + band);
        out.data[3 * self.width * band..].copy_from_slice(&self.data);
        let mut y = 4;
        for ((text, rgb), scale) in lines.iter().zip(scales) {
            out.draw_text(4, y, text, scale, *rgb);
            y += GLYPH * scale + 4;
        }
        out
    }

    /// PNG bytes of this image.
    pub fn to_png(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut wr = enc.write_header().map_err(|e| e.to_string())?;
            wr.write_image_data(&self.data).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
}

/// Nearest-neighbour upscaling of a `w × h` image by an integer `factor`, so pictures of a
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

/// Opacity of the heat colour where the heat is at its maximum.
pub const MAX_HEAT_ALPHA: f32 = 0.45;

/// Integer factor that brings the larger side of a `w × h` image to at least `target` pixels.
pub fn display_factor(w: usize, h: usize, target: usize) -> usize {
    target.div_ceil(w.max(h).max(1)).max(1)
}

/// A gray slice with a heat map over it (both `w × h`, row-major).
///
/// The slice is min–max scaled to gray; the heat is scaled by its maximum (values ≤ 0 are
/// transparent) and blended with a blue→red→yellow colour map at alpha `0.45·heat`, light
/// enough that the anatomy under the hottest cell stays readable.
pub fn heat_overlay(slice: &[f32], heat: &[f32], w: usize, h: usize) -> Result<RgbImage, String> {
    if slice.len() != w * h || heat.len() != w * h || w == 0 || h == 0 {
        return Err(format!(
            "overlay: slice has {} and heat {} values, {w}×{h} needs {}",
            slice.len(),
            heat.len(),
            w * h
        ));
    }
    let (lo, hi) = slice
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let hmax = heat
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |a, v| a.max(*v));
    let mut data = Vec::with_capacity(w * h * 3);
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
        let a = MAX_HEAT_ALPHA * t;
        for c in [r, gg, b] {
            data.push((((1.0 - a) * g + a * c) * 255.0).round() as u8);
        }
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_inside_the_banner_and_the_picture_is_kept() {
        let mut pic = RgbImage::black(200, 10);
        pic.data.iter_mut().for_each(|v| *v = 100);
        let out = pic.with_banner(&[("NOT FOR DIAGNOSIS", [255, 255, 0])]);
        assert_eq!(out.width, 200);
        let band = out.height - 10;
        assert!(band >= GLYPH + 4);
        // The picture is intact below the band.
        assert!(out.data[3 * 200 * band..].iter().all(|&v| v == 100));
        // Some yellow pixels in the band, none elsewhere.
        let yellow = out.data[..3 * 200 * band]
            .chunks(3)
            .filter(|p| p == &[255, 255, 0])
            .count();
        assert!(yellow > 50, "{yellow}");
        // An 'N' at scale 1 starts with its left stem: column 0 of the glyph is set.
        let g = font8x8::BASIC_FONTS.get('N').unwrap();
        assert!(g.iter().any(|r| r & 1 == 1));
    }

    #[test]
    fn overlay_checks_sizes() {
        assert!(heat_overlay(&[0.0; 4], &[0.0; 3], 2, 2).is_err());
        let img = heat_overlay(&[0.0, 1.0, 0.0, 1.0], &[0.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
        assert_eq!(&img.data[..3], &[0, 0, 0]);
        assert_eq!(&img.data[3..6], &[255, 255, 255]);
        // Full heat on white: 0.55 white + 0.45 yellow.
        assert_eq!(&img.data[9..12], &[255, 255, 140]);
    }
}
