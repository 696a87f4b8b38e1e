//! Scanner model: samples the continuous phantom onto the CT grid.
//!
//! Partial volume comes from averaging sub-samples across the slice thickness (the dominant
//! partial-volume direction in thick-slice head CT, and what blurs the convexity's bone into
//! the brain); the in-plane point-spread function is a 3×3 binomial blur; quantum noise is
//! white Gaussian noise added *before* that blur so it comes out spatially correlated like
//! real CT noise, scaled so its final standard deviation is the requested σ. Slices are
//! independent, so they render in parallel with a per-slice RNG stream: the bytes do not
//! depend on the thread count.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::artifacts::{self, ArtifactPlan, METAL_HU};
use super::case::{Case, Pose, rng_for};
use super::{SynthConfig, SynthError};
use hn_imaging::{Modality, Volume};

/// Scan geometry for one study.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanGeometry {
    pub size: usize,
    pub n_slices: usize,
    pub pixel_mm: f64,
    pub thickness_mm: f64,
    pub noise_sd: f64,
    pub z_sub: usize,
    /// World (LPS) position of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Slice index left out of the DICOM series, if any.
    pub missing_slice: Option<usize>,
    /// Table, holder, motion, metal, kernel and calibration of this scan (none by default).
    #[serde(default, skip_serializing_if = "ArtifactPlan::is_none")]
    pub artifacts: ArtifactPlan,
}

pub(crate) fn scan_geometry(
    cfg: &SynthConfig,
    case: &Case,
    seed: u64,
    index: usize,
) -> ScanGeometry {
    let mut rng = rng_for(seed, index, 2);
    let s = case.phantom.anatomy.scale;
    let fov = rng.random_range(cfg.fov_mm[0]..=cfg.fov_mm[1]);
    let size = cfg.size;
    let pixel = fov / size as f64;
    let planned = rng.random_range(118.0..132.0) * s;
    let bottom_edge = case.pose.offset[2] - 47.0 * s;
    let plan = artifacts::sample_plan(
        &cfg.artifacts,
        case,
        seed,
        index,
        (bottom_edge, bottom_edge + planned),
        lesions_world_z(case),
    );
    let coverage = planned - plan.coverage_cut_mm[0] - plan.coverage_cut_mm[1];
    let bottom_edge = bottom_edge + plan.coverage_cut_mm[0];
    let (n_slices, thickness) = match cfg.n_slices {
        Some(n) if n > 0 => (n, coverage / n as f64),
        _ => {
            let t = rng.random_range(cfg.slice_thickness_mm[0]..=cfg.slice_thickness_mm[1]);
            (((coverage / t).round() as usize).max(2), t)
        }
    };
    let noise_sd = rng.random_range(cfg.noise_sd_hu[0]..=cfg.noise_sd_hu[1]);
    let z_sub = if cfg.z_supersample > 0 {
        cfg.z_supersample
    } else if thickness > 2.0 {
        3
    } else {
        1
    };
    let missing_slice = if n_slices > 4 && rng.random::<f64>() < cfg.p_missing_slice {
        Some(rng.random_range(1..n_slices - 1))
    } else {
        None
    };
    let bottom = bottom_edge + thickness / 2.0;
    ScanGeometry {
        size,
        n_slices,
        pixel_mm: pixel,
        thickness_mm: thickness,
        noise_sd,
        z_sub,
        origin: [-fov / 2.0 + pixel / 2.0, -fov / 2.0 + pixel / 2.0, bottom],
        missing_slice,
        artifacts: plan,
    }
}

/// World z range the case's lesions occupy (their head-frame boxes under the pose), if any.
fn lesions_world_z(case: &Case) -> Option<(f64, f64)> {
    let mut range: Option<(f64, f64)> = None;
    for les in &case.phantom.lesions {
        let (lo, hi) = case.phantom.lesion_bbox(les);
        for c in 0..8 {
            let p = [
                if c & 1 == 0 { lo[0] } else { hi[0] },
                if c & 2 == 0 { lo[1] } else { hi[1] },
                if c & 4 == 0 { lo[2] } else { hi[2] },
            ];
            let z = world_from_head(&case.pose, p)[2];
            range = Some(range.map_or((z, z), |(a, b)| (a.min(z), b.max(z))));
        }
    }
    range
}

/// Rotation matrix (head frame → world) from pitch (x), roll (y), yaw (z).
pub fn rotation(angles: [f64; 3]) -> [[f64; 3]; 3] {
    let (sx, cx) = angles[0].sin_cos();
    let (sy, cy) = angles[1].sin_cos();
    let (sz, cz) = angles[2].sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    mul(rz, mul(ry, rx))
}

fn mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

/// World (LPS mm) → head frame.
pub fn head_from_world(pose: &Pose, w: [f64; 3]) -> [f64; 3] {
    let r = rotation(pose.angles);
    let d = [
        w[0] - pose.offset[0],
        w[1] - pose.offset[1],
        w[2] - pose.offset[2],
    ];
    // R^T d
    [
        r[0][0] * d[0] + r[1][0] * d[1] + r[2][0] * d[2],
        r[0][1] * d[0] + r[1][1] * d[1] + r[2][1] * d[2],
        r[0][2] * d[0] + r[1][2] * d[1] + r[2][2] * d[2],
    ]
}

/// Head frame → world (LPS mm).
pub fn world_from_head(pose: &Pose, p: [f64; 3]) -> [f64; 3] {
    let r = rotation(pose.angles);
    let mut w = pose.offset;
    for i in 0..3 {
        for j in 0..3 {
            w[i] += r[i][j] * p[j];
        }
    }
    w
}

/// Render the case: (HU volume, label mask).
pub(crate) fn render(
    case: &Case,
    g: &ScanGeometry,
    seed: u64,
    index: usize,
) -> Result<(Volume, Vec<u8>), SynthError> {
    let n = g.size;
    let nz = g.n_slices;
    let plane = n * n;
    let mut data = vec![0f32; plane * nz];
    let mut mask = vec![0u8; plane * nz];
    let ph = &case.phantom;
    let ext = ph.extent();
    let r = rotation(case.pose.angles);
    let off = case.pose.offset;
    // Sub-sample offsets across the slab; the centre sample (or an extra one) gives the label.
    let subs: Vec<f64> = (0..g.z_sub)
        .map(|m| ((m as f64 + 0.5) / g.z_sub as f64 - 0.5) * g.thickness_mm)
        .collect();
    let centre_in_subs = g.z_sub % 2 == 1;
    let white_sd = g.noise_sd / 0.375; // [1,2,1]⊗[1,2,1]/16 keeps 0.375 of white-noise σ
    let plan = &g.artifacts;
    // Half the diagonal of one sample's cell: every metal object covers at least one sample.
    let dz = g.thickness_mm / g.z_sub as f64;
    let metal_bloom = 0.5 * (2.0 * g.pixel_mm * g.pixel_mm + dz * dz).sqrt();
    let metal_world: Vec<[f64; 3]> = plan
        .metal
        .iter()
        .flat_map(|m| {
            m.points
                .iter()
                .map(|q| world_from_head(&case.pose, q.centre))
        })
        .collect();

    data.par_chunks_mut(plane)
        .zip(mask.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(k, (sl, ml))| {
            let wz = g.origin[2] + k as f64 * g.thickness_mm;
            let to_head = |w: [f64; 3]| {
                let d = [w[0] - off[0], w[1] - off[1], w[2] - off[2]];
                [
                    r[0][0] * d[0] + r[1][0] * d[1] + r[2][0] * d[2],
                    r[0][1] * d[0] + r[1][1] * d[1] + r[2][1] * d[2],
                    r[0][2] * d[0] + r[1][2] * d[1] + r[2][2] * d[2],
                ]
            };
            let inside = |p: [f64; 3]| {
                (p[0] / ext[0]).powi(2) + (p[1] / ext[1]).powi(2) + (p[2] / ext[2]).powi(2) < 1.0
            };
            for j in 0..n {
                let wy = g.origin[1] + j as f64 * g.pixel_mm;
                for i in 0..n {
                    let wx = g.origin[0] + i as f64 * g.pixel_mm;
                    let mut acc = 0.0f32;
                    let mut label = 0u8;
                    for (m, dz) in subs.iter().enumerate() {
                        let w = [wx, wy, wz + dz];
                        let p = to_head(w);
                        let (hu, l) = if plan.metal_at(p, metal_bloom) {
                            (METAL_HU, 0)
                        } else if inside(p) {
                            ph.classify(p)
                        } else {
                            (plan.outside_hu(w, off), 0)
                        };
                        acc += hu;
                        if centre_in_subs && m == g.z_sub / 2 {
                            label = l;
                        }
                    }
                    if !centre_in_subs {
                        let p = to_head([wx, wy, wz]);
                        if inside(p) {
                            label = ph.classify(p).1;
                        }
                    }
                    sl[j * n + i] = acc / subs.len() as f32;
                    ml[j * n + i] = label;
                }
            }
            // What happens before detection: motion ghosts the slice, metal throws streaks.
            if let Some(m) = &plan.motion
                && (k + nz - m.first % nz) % nz < m.count
            {
                let shift = [m.shift_mm[0] / g.pixel_mm, m.shift_mm[1] / g.pixel_mm];
                artifacts::ghost(sl, n, shift, m.weight);
            }
            let half = g.thickness_mm / 2.0;
            plan.add_streaks(sl, n, (wz - half, wz + half), &metal_world, |i, j| {
                [
                    g.origin[0] + i as f64 * g.pixel_mm,
                    g.origin[1] + j as f64 * g.pixel_mm,
                ]
            });
            // Noise then PSF blur (correlated noise, soft edges).
            let mut rng = rng_for(seed, index, 1000 + k as u64);
            if white_sd > 0.0 {
                for v in sl.iter_mut() {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    *v += (white_sd * z) as f32;
                }
            }
            blur121(sl, n);
            // The reconstruction kernel: unsharp masking against one more blur (sharpness > 0
            // enhances edges and noise, < 0 smooths toward the blurred slice).
            if plan.sharpness != 0.0 {
                let mut b = sl.to_vec();
                blur121(&mut b, n);
                let s = plan.sharpness as f32;
                for (v, bv) in sl.iter_mut().zip(&b) {
                    *v += s * (*v - bv);
                }
            }
            let offset = plan.hu_offset as f32;
            for v in sl.iter_mut() {
                *v = (*v + offset).clamp(-1024.0, 3071.0);
            }
        });

    let mut vol = Volume::new(
        data,
        [n, n, nz],
        [g.pixel_mm, g.pixel_mm, g.thickness_mm],
        Modality::Ct,
    )
    .map_err(|e| SynthError::Internal(e.to_string()))?;
    vol.origin = g.origin;
    vol.provenance
        .notes
        .push("synthetic head CT (HemorrhageNet generator)".into());
    vol.provenance.notes.extend(plan.notes());
    if case.pose.gantry_tilt {
        vol.provenance
            .notes
            .push("head pitched 10-20 degrees (gantry-tilt-like)".into());
    }
    Ok((vol, mask))
}

/// Separable [1 2 1]/4 blur in both in-plane directions (edges replicate).
pub(crate) fn blur121(s: &mut [f32], n: usize) {
    let mut tmp = vec![0f32; s.len()];
    for j in 0..n {
        let row = &s[j * n..(j + 1) * n];
        for i in 0..n {
            let a = row[i.saturating_sub(1)];
            let c = row[(i + 1).min(n - 1)];
            tmp[j * n + i] = 0.25 * a + 0.5 * row[i] + 0.25 * c;
        }
    }
    for j in 0..n {
        let jm = j.saturating_sub(1);
        let jp = (j + 1).min(n - 1);
        for i in 0..n {
            s[j * n + i] = 0.25 * tmp[jm * n + i] + 0.5 * tmp[j * n + i] + 0.25 * tmp[jp * n + i];
        }
    }
}
