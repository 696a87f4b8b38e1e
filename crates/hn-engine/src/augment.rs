//! Training-time augmentation on the model grid `[S, C, H, W]` (windowed channels in [0, 1]).
//!
//! Small, composable, seeded: left-right flip, one in-plane rotation + scale for the whole
//! study (bilinear, the same for every slice so 3-D context is kept), an HU offset applied
//! through each window (a `d` HU shift moves channel `c` by `d / width_c`), and slice dropout
//! (a slice replaced by its neighbour, labels following the copy). Written here rather than
//! taken from a crate because it must act on this exact multi-window tensor layout with the
//! labels in step; the image crates work on single 2-D images. MR studies get the geometric
//! transforms and slice dropout but no HU offset (pass no windows), and a constant channel — a
//! missing sequence — is left untouched.

use rand::Rng;
use serde::{Deserialize, Serialize};

use hn_data::StudyLabels;

/// Augmentation settings (`[augment]` in the training TOML). Zero disables a transform.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Probability of a left-right flip.
    pub flip_lr: f64,
    /// Maximum in-plane rotation in degrees (uniform in ±).
    pub rotate_deg: f64,
    /// Maximum relative scale change (uniform in 1 ± scale).
    pub scale: f64,
    /// Maximum HU offset (uniform in ±), applied through every window.
    pub hu_jitter: f64,
    /// Probability that each slice is replaced by a neighbour.
    pub slice_dropout: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            flip_lr: 0.5,
            rotate_deg: 8.0,
            scale: 0.08,
            hu_jitter: 4.0,
            slice_dropout: 0.03,
        }
    }
}

impl AugmentConfig {
    /// No augmentation.
    pub fn none() -> Self {
        AugmentConfig {
            flip_lr: 0.0,
            rotate_deg: 0.0,
            scale: 0.0,
            hu_jitter: 0.0,
            slice_dropout: 0.0,
        }
    }
}

/// Augment one study. `windows` are the channels' `(center, width)`; `slice_labels` (when
/// present) are permuted with slice dropout. Returns the new pixels.
pub fn augment(
    images: &[f32],
    shape: [usize; 4],
    windows: &[(f32, f32)],
    slice_labels: Option<&mut Vec<StudyLabels>>,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> Vec<f32> {
    augment_and_say_if_flipped(images, shape, windows, slice_labels, cfg, rng).0
}

/// [`augment`], and whether the study was mirrored left–right (so that labels of places in
/// the image can follow; the small rotation and scaling are not reported).
pub fn augment_and_say_if_flipped(
    images: &[f32],
    shape: [usize; 4],
    windows: &[(f32, f32)],
    slice_labels: Option<&mut Vec<StudyLabels>>,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> (Vec<f32>, bool) {
    let [s, c, h, w] = shape;
    let plane = h * w;
    let flip = cfg.flip_lr > 0.0 && rng.random::<f64>() < cfg.flip_lr;
    let angle = if cfg.rotate_deg > 0.0 {
        rng.random_range(-cfg.rotate_deg..=cfg.rotate_deg)
            .to_radians()
    } else {
        0.0
    };
    let scale = if cfg.scale > 0.0 {
        rng.random_range(1.0 - cfg.scale..=1.0 + cfg.scale)
    } else {
        1.0
    };
    let hu = if cfg.hu_jitter > 0.0 {
        rng.random_range(-cfg.hu_jitter..=cfg.hu_jitter) as f32
    } else {
        0.0
    };
    // Output pixel (y, x) samples input at centre + R⁻¹·(p − centre)/scale.
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let geometric = angle != 0.0 || scale != 1.0 || flip;
    let mut map: Vec<(usize, usize, f32, f32, bool)> = Vec::new();
    if geometric {
        map.reserve(plane);
        for y in 0..h {
            for x in 0..w {
                let xo = if flip { w - 1 - x } else { x } as f64;
                let (dy, dx) = ((y as f64 - cy) / scale, (xo - cx) / scale);
                let sy = cy + cos * dy - sin * dx;
                let sx = cx + sin * dy + cos * dx;
                let inside = sy >= 0.0 && sx >= 0.0 && sy <= (h - 1) as f64 && sx <= (w - 1) as f64;
                let (y0, x0) = (sy.floor().max(0.0) as usize, sx.floor().max(0.0) as usize);
                let (fy, fx) = ((sy - y0 as f64) as f32, (sx - x0 as f64) as f32);
                map.push((y0.min(h - 1), x0.min(w - 1), fy, fx, inside));
            }
        }
    }
    // Slice dropout: source slice of each output slice.
    let mut src_slice: Vec<usize> = (0..s).collect();
    if cfg.slice_dropout > 0.0 && s > 1 {
        for k in 0..s {
            if rng.random::<f64>() < cfg.slice_dropout {
                src_slice[k] = if k == 0 {
                    1
                } else if k == s - 1 || rng.random::<bool>() {
                    k - 1
                } else {
                    k + 1
                };
            }
        }
        if let Some(l) = slice_labels
            && l.len() == s
        {
            let orig = l.clone();
            for k in 0..s {
                l[k] = orig[src_slice[k]];
            }
        }
    }
    let mut out = vec![0.0f32; images.len()];
    for k in 0..s {
        for ch in 0..c {
            let src = &images[(src_slice[k] * c + ch) * plane..][..plane];
            let dst = &mut out[(k * c + ch) * plane..][..plane];
            let shift = windows.get(ch).map(|(_, wd)| hu / wd).unwrap_or(0.0);
            // A constant plane (an MR sequence the study lacks: the missing-channel value)
            // stays as it is: moving it would invent a field-of-view edge.
            if src.iter().all(|v| *v == src[0]) {
                dst.copy_from_slice(src);
                continue;
            }
            if geometric {
                // Outside the field of view is air: 0 in every window.
                for (p, &(y0, x0, fy, fx, inside)) in map.iter().enumerate() {
                    if !inside {
                        dst[p] = 0.0;
                        continue;
                    }
                    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                    let v = src[y0 * w + x0] * (1.0 - fy) * (1.0 - fx)
                        + src[y0 * w + x1] * (1.0 - fy) * fx
                        + src[y1 * w + x0] * fy * (1.0 - fx)
                        + src[y1 * w + x1] * fy * fx;
                    dst[p] = v;
                }
            } else {
                dst.copy_from_slice(src);
            }
            if shift != 0.0 {
                // Only tissue moves (air stays air): shift values strictly inside the window.
                for v in dst.iter_mut() {
                    if *v > 0.0 {
                        *v = (*v + shift).clamp(0.0, 1.0);
                    }
                }
            }
        }
    }
    (out, flip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn identity_when_disabled_and_flip_mirrors() {
        let shape = [2, 1, 3, 4];
        let img: Vec<f32> = (0..24).map(|i| i as f32 / 24.0).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let same = augment(
            &img,
            shape,
            &[(40.0, 80.0)],
            None,
            &AugmentConfig::none(),
            &mut rng,
        );
        assert_eq!(same, img);
        let flip = AugmentConfig {
            flip_lr: 1.0,
            ..AugmentConfig::none()
        };
        let f = augment(&img, shape, &[(40.0, 80.0)], None, &flip, &mut rng);
        for k in 0..2 {
            for y in 0..3 {
                for x in 0..4 {
                    let a = f[(k * 3 + y) * 4 + x];
                    let b = img[(k * 3 + y) * 4 + (3 - x)];
                    assert!((a - b).abs() < 1e-6, "({k},{y},{x}) {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn slice_dropout_moves_labels_with_pixels() {
        let shape = [4, 1, 1, 1];
        let img = vec![0.1, 0.2, 0.3, 0.4];
        let mut labels: Vec<StudyLabels> = (0..4)
            .map(|k| StudyLabels {
                any: k % 2 == 1,
                ..Default::default()
            })
            .collect();
        let cfg = AugmentConfig {
            slice_dropout: 1.0,
            ..AugmentConfig::none()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let out = augment(
            &img,
            shape,
            &[(40.0, 80.0)],
            Some(&mut labels),
            &cfg,
            &mut rng,
        );
        for k in 0..4 {
            let src = img.iter().position(|v| *v == out[k]).unwrap();
            assert_ne!(src, k, "every slice was dropped");
            assert_eq!(labels[k].any, src % 2 == 1);
        }
    }

    #[test]
    fn hu_jitter_shifts_each_window_by_its_width() {
        let shape = [1, 2, 1, 2];
        let img = vec![0.5, 0.0, 0.5, 0.0];
        let cfg = AugmentConfig {
            hu_jitter: 10.0,
            ..AugmentConfig::none()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let out = augment(
            &img,
            shape,
            &[(40.0, 80.0), (80.0, 200.0)],
            None,
            &cfg,
            &mut rng,
        );
        let d0 = out[0] - 0.5;
        let d1 = out[2] - 0.5;
        assert!(d0.abs() > 0.0);
        assert!(
            (d0 * 80.0 - d1 * 200.0).abs() < 1e-4,
            "same HU shift in both windows"
        );
        assert_eq!(out[1], 0.0, "air stays air");
    }
}
