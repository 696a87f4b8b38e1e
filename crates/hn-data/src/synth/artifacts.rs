//! What real head CTs carry that the bare phantom lacks: the table and a head holder, an
//! off-centre or rotated head, a scan that misses the vertex or the skull base, patient
//! motion, metal (dental work, clips) with its streaks, a reconstruction kernel sharper or
//! softer than the scanner model's, and a water calibration a few HU off.
//!
//! Why: a model trained only on clean, centred, complete phantoms meets all of these on its
//! first real archive (issue 18's domain randomisation). Each effect is drawn per study from
//! `[artifacts]` ([`ArtifactConfig`], everything off by default, so a cohort without the
//! section is byte-identical to one generated before it existed) on RNG streams of its own.
//! None of them changes the truth: the label mask comes from the phantom, a partial coverage
//! never cuts through a lesion, and metal is not blood.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::case::{Case, Pose, rng_for};
use super::config::ordered_range;

/// RNG streams (disjoint from the case's 0, the geometry's 2, the slices' 1000+k, MR's 5000+
/// and the writer's 9000+).
const STREAM_PLAN: u64 = 3;
const STREAM_POSE: u64 = 4;

/// How often and how strongly the effects occur (`[artifacts]` of a synthetic config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactConfig {
    /// Range of the reconstruction kernel's sharpness `s`: the slice becomes
    /// `x + s·(x − blur(x))`, so 0 is the scanner model's standard kernel, −1 a soft kernel
    /// and 1–2 an edge-enhancing one (which, as on a scanner, also raises the noise).
    pub sharpness: [f64; 2],
    /// Range of the HU calibration offset added to every voxel.
    pub hu_offset: [f64; 2],
    /// Probability that the table and a carbon-fibre head holder (with its foam pad) are in
    /// the field of view.
    pub p_head_holder: f64,
    /// Standard deviation (mm) of an extra in-plane displacement of the head from the
    /// isocentre (clamped to ±2.5 σ).
    pub off_centre_sd_mm: f64,
    /// Standard deviation (degrees) of an extra roll and yaw of the head (clamped to ±2.5 σ).
    pub rotation_sd_deg: f64,
    /// Probability that the scan stops short of the vertex or starts above the skull base
    /// (10–25 mm missing; shortened where it would cut a lesion).
    pub p_partial_coverage: f64,
    /// Probability of patient motion: 1–4 consecutive slices carry a ghost of themselves
    /// displaced by 1.5–4 mm (double contours).
    pub p_motion: f64,
    /// Probability of metal: dental fillings in the lowest slices or an intracranial clip,
    /// each with the bright and dark streaks it throws across its slices.
    pub p_metal: f64,
}

impl Default for ArtifactConfig {
    fn default() -> Self {
        ArtifactConfig {
            sharpness: [0.0, 0.0],
            hu_offset: [0.0, 0.0],
            p_head_holder: 0.0,
            off_centre_sd_mm: 0.0,
            rotation_sd_deg: 0.0,
            p_partial_coverage: 0.0,
            p_motion: 0.0,
            p_metal: 0.0,
        }
    }
}

impl ArtifactConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The mix a hospital archive shows (the demo trains with it): most scans with the table
    /// and holder, a few HU of calibration drift, heads a little off-centre and turned, and a
    /// minority with partial coverage, motion or metal.
    pub fn realistic() -> Self {
        ArtifactConfig {
            sharpness: [-0.5, 1.0],
            hu_offset: [-4.0, 4.0],
            p_head_holder: 0.7,
            off_centre_sd_mm: 6.0,
            rotation_sd_deg: 4.0,
            p_partial_coverage: 0.15,
            p_motion: 0.1,
            p_metal: 0.12,
        }
    }

    /// Check ranges; returns a human-readable reason when invalid.
    pub fn validate(&self) -> Result<(), String> {
        ordered_range("artifacts.sharpness", self.sharpness, -1.0, 3.0, "")?;
        ordered_range("artifacts.hu_offset", self.hu_offset, -30.0, 30.0, " HU")?;
        if !(0.0..=15.0).contains(&self.off_centre_sd_mm) {
            return Err(format!(
                "artifacts.off_centre_sd_mm {} must be in 0..=15 (the head must stay in the field of view)",
                self.off_centre_sd_mm
            ));
        }
        if !(0.0..=15.0).contains(&self.rotation_sd_deg) {
            return Err(format!(
                "artifacts.rotation_sd_deg {} must be in 0..=15",
                self.rotation_sd_deg
            ));
        }
        for (name, p) in [
            ("p_head_holder", self.p_head_holder),
            ("p_partial_coverage", self.p_partial_coverage),
            ("p_motion", self.p_motion),
            ("p_metal", self.p_metal),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "artifacts.{name} = {p} must be a probability in 0..=1"
                ));
            }
        }
        Ok(())
    }
}

/// The table and head holder of one study, in world mm around the head's centre.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadHolder {
    /// Inner radius of the cradle's shell (its axis is the head's z axis).
    pub radius_mm: f64,
    pub shell_mm: f64,
    pub shell_hu: f64,
    /// Top of the cradle (world z).
    pub top_z: f64,
    /// Distance from the head's centre, posteriorly, of the table top.
    pub table_y_mm: f64,
    pub table_mm: f64,
    pub table_hu: f64,
    /// The foam pad between head and shell.
    pub foam_hu: f64,
}

/// Motion during the acquisition of slices `first..first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Motion {
    pub first: usize,
    pub count: usize,
    /// In-plane displacement of the ghost (mm).
    pub shift_mm: [f64; 2],
    /// Weight of the ghost in the slice.
    pub weight: f64,
}

/// One metal object, in the head frame (it moves with the head).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetalPoint {
    pub centre: [f64; 3],
    pub radius_mm: f64,
}

/// Metal in one study and the streaks it throws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metal {
    /// `dental` or `clip`.
    pub kind: String,
    pub points: Vec<MetalPoint>,
    /// Angles (radians) and amplitudes (HU) of the streaks through each point.
    pub streaks: Vec<(f64, f64)>,
}

/// Which effects one study got, drawn from [`ArtifactConfig`] (recorded with its geometry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArtifactPlan {
    pub sharpness: f64,
    pub hu_offset: f64,
    pub head_holder: Option<HeadHolder>,
    /// Millimetres left out at the bottom and at the top of the head coverage.
    pub coverage_cut_mm: [f64; 2],
    pub motion: Option<Motion>,
    pub metal: Option<Metal>,
}

/// Metal's value: beyond what the 12-bit HU range holds, so it saturates as on a scanner.
pub const METAL_HU: f32 = 3071.0;
/// Width (mm) and reach (mm) of a streak.
const STREAK_WIDTH_MM: f64 = 1.5;
const STREAK_REACH_MM: f64 = 70.0;

impl ArtifactPlan {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// Words for the volume's provenance, one per effect present.
    pub fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.sharpness != 0.0 {
            n.push(format!("reconstruction sharpness {:+.2}", self.sharpness));
        }
        if self.hu_offset != 0.0 {
            n.push(format!("HU calibration offset {:+.1}", self.hu_offset));
        }
        if self.head_holder.is_some() {
            n.push("table and head holder in the field of view".into());
        }
        if self.coverage_cut_mm.iter().any(|c| *c > 0.0) {
            n.push(format!(
                "partial coverage: {:.0} mm missing at the skull base, {:.0} mm at the vertex",
                self.coverage_cut_mm[0], self.coverage_cut_mm[1]
            ));
        }
        if let Some(m) = &self.motion {
            n.push(format!(
                "patient motion on slices {}..{}",
                m.first,
                m.first + m.count
            ));
        }
        if let Some(m) = &self.metal {
            n.push(format!("metal ({}) with streaks", m.kind));
        }
        n
    }

    /// HU of a point outside the head (world mm; `centre` = the head's centre in world):
    /// air, or the foam, shell and table of the holder.
    pub fn outside_hu(&self, w: [f64; 3], centre: [f64; 3]) -> f32 {
        let Some(h) = &self.head_holder else {
            return -1000.0;
        };
        let dx = w[0] - centre[0];
        let dy = w[1] - centre[1];
        if dy >= h.table_y_mm && dy < h.table_y_mm + h.table_mm && dx.abs() < 220.0 {
            return h.table_hu as f32;
        }
        if w[2] > h.top_z || dy <= 0.0 {
            return -1000.0;
        }
        // The cradle: the posterior half-shell, open anteriorly beyond 70° from the back.
        let r = (dx * dx + dy * dy).sqrt();
        if dy < r * 0.342 {
            return -1000.0;
        }
        if r >= h.radius_mm && r < h.radius_mm + h.shell_mm {
            h.shell_hu as f32
        } else if r < h.radius_mm {
            h.foam_hu as f32
        } else {
            -1000.0
        }
    }

    /// Is the head-frame point `p` inside a metal object? Metal blooms on CT, so an object
    /// is at least `min_radius_mm` big (the render passes the sampling step, so no metal falls
    /// between the samples).
    pub fn metal_at(&self, p: [f64; 3], min_radius_mm: f64) -> bool {
        self.metal.as_ref().is_some_and(|m| {
            m.points.iter().any(|q| {
                let r = q.radius_mm.max(min_radius_mm);
                let d = (0..3).map(|c| (p[c] - q.centre[c]).powi(2)).sum::<f64>();
                d < r * r
            })
        })
    }

    /// Add the metal's streaks to one slice (`world_of(i, j)` gives a pixel's world position;
    /// `metal_world` the metal points' world positions): straight bright and dark bands
    /// through each point that crosses the slab, fading with distance, and a dark band
    /// between two such points (photon starvation along the line joining them).
    pub fn add_streaks(
        &self,
        slice: &mut [f32],
        n: usize,
        slab: (f64, f64),
        metal_world: &[[f64; 3]],
        world_of: impl Fn(usize, usize) -> [f64; 2],
    ) {
        let Some(m) = &self.metal else { return };
        let active: Vec<[f64; 3]> = m
            .points
            .iter()
            .zip(metal_world)
            .filter(|(q, w)| w[2] + q.radius_mm >= slab.0 && w[2] - q.radius_mm <= slab.1)
            .map(|(_, w)| *w)
            .collect();
        if active.is_empty() {
            return;
        }
        let band = |d: f64, width: f64| (-(d / width).powi(2)).exp();
        for j in 0..n {
            for i in 0..n {
                let [x, y] = world_of(i, j);
                let mut add = 0.0;
                for c in &active {
                    let (dx, dy) = (x - c[0], y - c[1]);
                    let r = (dx * dx + dy * dy).sqrt();
                    let fade = (-r / STREAK_REACH_MM).exp();
                    for &(angle, amp) in &m.streaks {
                        let (s, co) = angle.sin_cos();
                        let across = (dx * s - dy * co).abs();
                        add += amp * band(across, STREAK_WIDTH_MM) * fade;
                    }
                }
                for a in 0..active.len() {
                    for b in a + 1..active.len() {
                        let (p, q) = (active[a], active[b]);
                        let (ux, uy) = (q[0] - p[0], q[1] - p[1]);
                        let len2 = (ux * ux + uy * uy).max(1e-9);
                        let t = ((x - p[0]) * ux + (y - p[1]) * uy) / len2;
                        if (0.0..=1.0).contains(&t) {
                            let (cx, cy) = (p[0] + t * ux, p[1] + t * uy);
                            let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
                            add -= 250.0 * band(d, 2.0 * STREAK_WIDTH_MM);
                        }
                    }
                }
                slice[j * n + i] += add as f32;
            }
        }
    }
}

/// Apply the configured extra displacement and rotation to the head's pose.
pub(crate) fn perturb_pose(cfg: &ArtifactConfig, pose: &mut Pose, seed: u64, index: usize) {
    if cfg.off_centre_sd_mm == 0.0 && cfg.rotation_sd_deg == 0.0 {
        return;
    }
    let mut rng = rng_for(seed, index, STREAM_POSE);
    let mut clamped_normal = |sd: f64| {
        let z: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
        (z * sd).clamp(-2.5 * sd, 2.5 * sd)
    };
    pose.offset[0] += clamped_normal(cfg.off_centre_sd_mm);
    pose.offset[1] += clamped_normal(cfg.off_centre_sd_mm);
    pose.angles[1] += clamped_normal(cfg.rotation_sd_deg).to_radians();
    pose.angles[2] += clamped_normal(cfg.rotation_sd_deg).to_radians();
}

/// Draw the effects of one study. `coverage` is the planned scan's world z range; the partial
/// coverage shortens it (never past `lesions_z`, the world z range the lesions occupy).
pub(crate) fn sample_plan(
    cfg: &ArtifactConfig,
    case: &Case,
    seed: u64,
    index: usize,
    coverage: (f64, f64),
    lesions_z: Option<(f64, f64)>,
) -> ArtifactPlan {
    if cfg.is_default() {
        return ArtifactPlan::default();
    }
    let mut rng = rng_for(seed, index, STREAM_PLAN);
    let draw = |rng: &mut ChaCha8Rng, r: [f64; 2]| {
        if r[0] < r[1] {
            rng.random_range(r[0]..=r[1])
        } else {
            r[0]
        }
    };
    let sharpness = draw(&mut rng, cfg.sharpness);
    let hu_offset = draw(&mut rng, cfg.hu_offset);
    let ext = case.phantom.extent();
    let head_holder = (rng.random::<f64>() < cfg.p_head_holder).then(|| {
        let radius_mm = ext[1].max(ext[0]) + rng.random_range(3.0..10.0);
        let shell_mm = rng.random_range(2.5..5.0);
        HeadHolder {
            radius_mm,
            shell_mm,
            shell_hu: rng.random_range(200.0..450.0),
            top_z: case.pose.offset[2] + rng.random_range(0.0..30.0),
            table_y_mm: radius_mm + shell_mm + rng.random_range(10.0..30.0),
            table_mm: rng.random_range(5.0..10.0),
            table_hu: rng.random_range(120.0..300.0),
            foam_hu: rng.random_range(-900.0..-700.0),
        }
    });
    let mut coverage_cut_mm = [0.0, 0.0];
    if rng.random::<f64>() < cfg.p_partial_coverage {
        let want: f64 = rng.random_range(10.0..25.0);
        let margin = 2.0;
        let (lo, hi) = lesions_z.unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
        if rng.random::<bool>() {
            coverage_cut_mm[0] = want.min(lo - margin - coverage.0).max(0.0);
        } else {
            coverage_cut_mm[1] = want.min(coverage.1 - hi - margin).max(0.0);
        }
    }
    let motion = (rng.random::<f64>() < cfg.p_motion).then(|| {
        let angle = rng.random_range(0.0..std::f64::consts::TAU);
        let d = rng.random_range(1.5..4.0);
        Motion {
            // Resolved against the slice count at render time (modulo).
            first: rng.random_range(0..1024),
            count: rng.random_range(1..=4),
            shift_mm: [d * angle.cos(), d * angle.sin()],
            weight: rng.random_range(0.25..0.5),
        }
    });
    let metal = (rng.random::<f64>() < cfg.p_metal).then(|| {
        let s = case.phantom.anatomy.scale;
        let (kind, points) = if rng.random::<f64>() < 0.6 {
            // Fillings along the upper dental arch, anteriorly in the lowest planned slices
            // (placed in the world, then carried into the head frame: they move with the head).
            let n = rng.random_range(1..=3);
            let z = coverage.0 + rng.random_range(2.0..8.0);
            let points = (0..n)
                .map(|_| {
                    let t: f64 = rng.random_range(-0.9..0.9);
                    let w = [
                        case.pose.offset[0] + 30.0 * s * t,
                        case.pose.offset[1] - 0.6 * ext[1] + 12.0 * s * t * t,
                        z,
                    ];
                    MetalPoint {
                        centre: super::render::head_from_world(&case.pose, w),
                        radius_mm: rng.random_range(2.5..4.5),
                    }
                })
                .collect();
            ("dental", points)
        } else {
            // An aneurysm clip near the circle of Willis.
            let side = if rng.random::<bool>() { 1.0 } else { -1.0 };
            let point = MetalPoint {
                centre: [
                    side * rng.random_range(5.0..20.0) * s,
                    rng.random_range(-15.0..5.0) * s,
                    rng.random_range(-25.0..-12.0) * s,
                ],
                radius_mm: rng.random_range(1.5..3.0),
            };
            ("clip", vec![point])
        };
        let n_streaks = rng.random_range(6..=12);
        let streaks = (0..n_streaks)
            .map(|k| {
                let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
                (
                    rng.random_range(0.0..std::f64::consts::PI),
                    sign * rng.random_range(150.0..500.0),
                )
            })
            .collect();
        Metal {
            kind: kind.into(),
            points,
            streaks,
        }
    });
    ArtifactPlan {
        sharpness,
        hu_offset,
        head_holder,
        coverage_cut_mm,
        motion,
        metal,
    }
}

/// `slice` with a ghost of itself displaced by `shift` pixels blended in with `weight`
/// (bilinear; outside the slice the ghost is air).
pub(crate) fn ghost(slice: &mut [f32], n: usize, shift: [f64; 2], weight: f64) {
    let src = slice.to_vec();
    let at = |i: isize, j: isize| -> f32 {
        if i < 0 || j < 0 || i >= n as isize || j >= n as isize {
            -1000.0
        } else {
            src[j as usize * n + i as usize]
        }
    };
    let w = weight as f32;
    for j in 0..n {
        for i in 0..n {
            let x = i as f64 - shift[0];
            let y = j as f64 - shift[1];
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = ((x - x0) as f32, (y - y0) as f32);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let g = (1.0 - fy) * ((1.0 - fx) * at(x0, y0) + fx * at(x0 + 1, y0))
                + fy * ((1.0 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
            slice[j * n + i] = (1.0 - w) * slice[j * n + i] + w * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_lies_behind_the_head_and_the_table_below_it() {
        let plan = ArtifactPlan {
            head_holder: Some(HeadHolder {
                radius_mm: 100.0,
                shell_mm: 4.0,
                shell_hu: 300.0,
                top_z: 20.0,
                table_y_mm: 120.0,
                table_mm: 8.0,
                table_hu: 200.0,
                foam_hu: -800.0,
            }),
            ..Default::default()
        };
        let c = [0.0; 3];
        assert_eq!(plan.outside_hu([0.0, 102.0, 0.0], c), 300.0);
        assert_eq!(plan.outside_hu([0.0, 95.0, 0.0], c), -800.0);
        assert_eq!(
            plan.outside_hu([0.0, -102.0, 0.0], c),
            -1000.0,
            "open anteriorly"
        );
        assert_eq!(
            plan.outside_hu([0.0, 102.0, 30.0], c),
            -1000.0,
            "above the cradle"
        );
        assert_eq!(
            plan.outside_hu([50.0, 124.0, 60.0], c),
            200.0,
            "table at any z"
        );
        assert_eq!(
            ArtifactPlan::default().outside_hu([0.0, 102.0, 0.0], c),
            -1000.0
        );
    }

    #[test]
    fn streaks_cross_the_slices_of_the_metal_only() {
        let plan = ArtifactPlan {
            metal: Some(Metal {
                kind: "clip".into(),
                points: vec![MetalPoint {
                    centre: [0.0; 3],
                    radius_mm: 2.0,
                }],
                streaks: vec![(0.0, 400.0)],
            }),
            ..Default::default()
        };
        let n = 32;
        let world = |i: usize, j: usize| [i as f64 - 16.0, j as f64 - 16.0];
        let mut on = vec![0f32; n * n];
        plan.add_streaks(&mut on, n, (-1.0, 1.0), &[[0.0; 3]], world);
        // A horizontal streak (angle 0) through the metal: bright along y = 0 (row 16),
        // nothing far off it.
        assert!(on[16 * n + 4] > 100.0, "{}", on[16 * n + 4]);
        assert!(on[2 * n + 4].abs() < 1.0);
        let mut off = vec![0f32; n * n];
        plan.add_streaks(&mut off, n, (10.0, 14.0), &[[0.0; 3]], world);
        assert!(off.iter().all(|v| *v == 0.0));
        assert!(plan.metal_at([1.0, 1.0, 0.0], 0.0) && !plan.metal_at([3.0, 0.0, 0.0], 0.0));
        assert!(
            plan.metal_at([3.0, 0.0, 0.0], 3.5),
            "blooms to the sampling step"
        );
    }

    #[test]
    fn a_ghost_is_a_displaced_copy() {
        let n = 8;
        let mut s = vec![0f32; n * n];
        s[3 * n + 3] = 100.0;
        ghost(&mut s, n, [2.0, 0.0], 0.5);
        assert_eq!(s[3 * n + 3], 50.0);
        assert_eq!(s[3 * n + 5], 50.0);
    }

    #[test]
    fn invalid_ranges_are_named() {
        let bad = ArtifactConfig {
            p_metal: 1.5,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("p_metal"));
        let bad = ArtifactConfig {
            sharpness: [1.0, -1.0],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("sharpness"));
        ArtifactConfig::realistic().validate().unwrap();
    }
}
