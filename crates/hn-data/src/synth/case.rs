//! One synthetic patient without pixels: anatomy, lesion plan, image facts, clinical record,
//! outcome probabilities and drawn outcomes.
//!
//! Why separate from rendering: the causal chain facts → clinical → outcomes is what the
//! prognosis task learns and what the ICH-score calibration checks; sampling it for 5 000
//! patients must take seconds, so nothing here touches a voxel grid (lesion volumes are
//! measured on a coarse fixed grid of the continuous phantom).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};

use super::SynthConfig;
use super::phantom::{Acuity, Anatomy, Bone, IphSite, Lesion, Phantom, Shape, bone_at};
use crate::{ClinicalRecord, Outcomes};

/// Ground-truth facts about the bleed(s) as drawn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageFacts {
    /// Lesion volume (mL) per subtype, `SUBTYPES` order, measured on a 1.5 mm grid of the
    /// continuous phantom (independent of output matrix size).
    pub volume_ml: [f64; 5],
    pub total_ml: f64,
    /// Volume excluding intraventricular blood (the ICH score's "volume").
    pub parenchymal_ml: f64,
    pub ivh: bool,
    pub infratentorial: bool,
    pub midline_shift_mm: f64,
    pub iph_site: Option<IphSite>,
    pub acuity: Option<Acuity>,
    pub calcifications: u8,
    /// Patient age-driven atrophy 0..1.
    pub atrophy: f64,
    /// Probability of hematoma expansion (latent, enters the outcome model).
    pub p_expansion: f64,
}

/// The true outcome probabilities given everything the generator knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OracleProbabilities {
    pub p_mortality_30d: f64,
    pub p_poor_outcome_90d: f64,
    pub mrs_probs: [f64; 7],
}

/// A patient without pixels.
#[derive(Debug, Clone)]
pub struct Case {
    pub phantom: Phantom,
    pub facts: ImageFacts,
    /// The complete clinical truth (no missingness) used by the outcome model.
    pub clinical_truth: ClinicalRecord,
    /// What was recorded (missing not at random).
    pub clinical: ClinicalRecord,
    pub outcomes: Outcomes,
    pub oracle: OracleProbabilities,
    pub ich_score: u8,
    pub pose: Pose,
    pub planned_subtypes: [bool; 5],
    /// One head-frame point inside each present lesion (used to guarantee that every labelled
    /// subtype has at least one mask voxel even when it is smaller than a voxel).
    pub anchors: [Option<[f64; 3]>; 5],
}

/// Lesions smaller than this on the measuring grid are removed from the plan.
pub const MIN_LESION_ML: f64 = 0.1;

/// Head placement in the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Pitch, roll, yaw (radians).
    pub angles: [f64; 3],
    /// Head centre in world (LPS, mm) relative to the FOV centre.
    pub offset: [f64; 3],
    pub gantry_tilt: bool,
}

/// Deterministic per-(seed, index, stream) RNG.
pub fn rng_for(seed: u64, index: usize, stream: u64) -> ChaCha8Rng {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1);
    x ^= stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    ChaCha8Rng::seed_from_u64(x)
}

#[inline]
fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn normal(rng: &mut ChaCha8Rng, m: f64, s: f64) -> f64 {
    let z: f64 = StandardNormal.sample(rng);
    m + s * z
}

fn pick(rng: &mut ChaCha8Rng, w: &[f64]) -> usize {
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, x) in w.iter().enumerate() {
        if u < *x {
            return i;
        }
        u -= x;
    }
    w.len() - 1
}

/// Sample the whole case for study `index` of cohort `seed`.
pub fn sample_case(cfg: &SynthConfig, seed: u64, index: usize) -> Case {
    let mut rng = rng_for(seed, index, 0);
    let bleed = rng.random::<f64>() < cfg.prevalence_bleed;
    let primary = if bleed {
        Some(pick(&mut rng, &cfg.primary_subtype_weights))
    } else {
        None
    };
    // Age first: it drives atrophy and much of the clinical picture.
    let age = match primary {
        Some(0) => normal(&mut rng, 38.0, 16.0),
        Some(1) => normal(&mut rng, 70.0, 14.0),
        Some(_) => normal(&mut rng, 66.0, 13.0),
        None => normal(&mut rng, 58.0, 18.0),
    }
    .clamp(18.0, 99.0);
    let atrophy = (sig((age - 62.0) / 10.0) + normal(&mut rng, 0.0, 0.08)).clamp(0.0, 1.0);
    let scale = normal(&mut rng, 1.0, 0.05).clamp(0.85, 1.15);
    let calc_age = sig((age - 50.0) / 12.0);
    let anatomy = Anatomy {
        scale,
        semi: [
            67.0 * scale * normal(&mut rng, 1.0, 0.03),
            82.0 * scale * normal(&mut rng, 1.0, 0.03),
            68.0 * scale * normal(&mut rng, 1.0, 0.03),
        ],
        gap: 0.8 + 3.0 * atrophy,
        skull: normal(&mut rng, 6.5, 1.0).clamp(4.5, 9.5),
        scalp: normal(&mut rng, 5.0, 0.8).clamp(3.5, 7.5),
        atrophy,
        vent: 0.85 + 0.6 * atrophy + normal(&mut rng, 0.0, 0.06),
        gm_hu: normal(&mut rng, 40.0, 1.5),
        wm_hu: normal(&mut rng, 27.0, 1.5),
        csf_hu: normal(&mut rng, 7.0, 2.5).clamp(0.0, 15.0),
        calc_choroid: rng.random::<f64>() < 0.2 + 0.6 * calc_age,
        calc_pineal: rng.random::<f64>() < 0.2 + 0.5 * calc_age,
        calc_basal_ganglia: rng.random::<f64>() < 0.02 + 0.08 * calc_age,
        calc_hu: rng.random_range(110.0..400.0),
        shift: 0.0,
        shift_dir: 1.0,
        streak: cfg.beam_hardening * rng.random_range(5.0..25.0),
        streak_angle: normal(&mut rng, 0.0, 0.12),
        noise_seed: rng.random(),
    };
    let gantry_tilt = rng.random::<f64>() < cfg.p_gantry_tilt;
    let pitch = if gantry_tilt {
        rng.random_range(0.17..0.35) * if rng.random::<bool>() { 1.0 } else { -1.0 }
    } else {
        normal(&mut rng, 0.0, 0.06)
    };
    let pose = Pose {
        angles: [
            pitch,
            normal(&mut rng, 0.0, 0.035),
            normal(&mut rng, 0.0, 0.05),
        ],
        offset: [
            normal(&mut rng, 0.0, 4.0),
            normal(&mut rng, 0.0, 5.0),
            normal(&mut rng, 0.0, 3.0),
        ],
        gantry_tilt,
    };

    // ---- Lesion plan ----
    let acuity = {
        let u = rng.random::<f64>();
        if u < cfg.p_hyperacute {
            Acuity::Hyperacute
        } else if u < cfg.p_hyperacute + cfg.p_subacute {
            Acuity::Subacute
        } else {
            Acuity::Acute
        }
    };
    let blood_hu = |rng: &mut ChaCha8Rng| match acuity {
        Acuity::Acute => normal(rng, 66.0, 6.0).clamp(55.0, 82.0),
        Acuity::Hyperacute => normal(rng, 50.0, 3.0).clamp(44.0, 56.0),
        Acuity::Subacute => normal(rng, 38.0, 3.0).clamp(32.0, 45.0),
    };
    let s = scale;
    let mut lesions: Vec<Lesion> = Vec::new();
    let mut planned = [false; 5];
    let mut lateral_ml = 0.0; // planned lateralised supratentorial volume for mass effect
    let mut lesion_side = if rng.random::<bool>() { 1.0 } else { -1.0 };
    let mut iph_site = None;
    if let Some(prim) = primary {
        let mut add = |t: usize| planned[t] = true;
        add(prim);
        match prim {
            3 => {
                if rng.random::<f64>() < cfg.p_ivh_extension {
                    add(4);
                }
                if rng.random::<f64>() < 0.08 {
                    add(2);
                }
            }
            1 if rng.random::<f64>() < 0.2 => add(2),
            0 if rng.random::<f64>() < 0.12 => add(1),
            2 if rng.random::<f64>() < 0.2 => add(4),
            _ => {}
        }
        for t in 0..5 {
            if !planned[t] {
                continue;
            }
            let hu = blood_hu(&mut rng);
            let shape = match t {
                0 => {
                    // Temporal most common (middle meningeal artery).
                    let target = pick(&mut rng, &[0.55, 0.2, 0.15, 0.1]);
                    let (dir, _) = match target {
                        0 => ([lesion_side * 0.95, -0.05, -0.25], "temporal"),
                        1 => ([lesion_side * 0.55, 0.2, 0.75], "parietal"),
                        2 => ([lesion_side * 0.35, -0.85, 0.3], "frontal"),
                        _ => ([lesion_side * 0.3, 0.9, 0.1], "occipital"),
                    };
                    let d = jitter_dir(&mut rng, dir, 0.12);
                    let center = surface_point(&anatomy, d);
                    let bone: Bone = bone_at(center, s);
                    let thickness = rng.random_range(6.0..28.0);
                    let radius = rng.random_range(22.0..42.0) * s;
                    lateral_ml += thickness * radius * radius * 0.0016;
                    Shape::Epidural {
                        center,
                        radius,
                        thickness,
                        bone,
                    }
                }
                1 => {
                    let thin = rng.random::<f64>() < cfg.p_thin_subdural;
                    let thickness = if thin {
                        rng.random_range(2.0..4.0)
                    } else {
                        rng.random_range(5.0..22.0)
                    };
                    let ly = rng.random_range(45.0..75.0) * s;
                    let lz = rng.random_range(35.0..60.0) * s;
                    lateral_ml += thickness * ly * lz * 0.0028;
                    Shape::Subdural {
                        side: lesion_side,
                        yc: normal(&mut rng, 0.0, 15.0) * s,
                        zc: normal(&mut rng, 20.0, 12.0) * s,
                        ly,
                        lz,
                        thickness,
                    }
                }
                2 => {
                    let basal = prim != 1 && rng.random::<f64>() < 0.75;
                    if basal {
                        Shape::Subarachnoid {
                            center: [normal(&mut rng, 0.0, 6.0) * s, -6.0 * s, -15.0 * s],
                            reach: rng.random_range(18.0..55.0) * s,
                        }
                    } else {
                        let d = jitter_dir(&mut rng, [lesion_side * 0.7, -0.1, 0.7], 0.3);
                        let c = surface_point(&anatomy, d);
                        Shape::Subarachnoid {
                            center: c,
                            reach: rng.random_range(12.0..35.0) * s,
                        }
                    }
                }
                3 => {
                    let site = [
                        IphSite::BasalGanglia,
                        IphSite::Thalamus,
                        IphSite::Lobar,
                        IphSite::Cerebellum,
                        IphSite::Brainstem,
                    ][pick(&mut rng, &[0.38, 0.17, 0.25, 0.13, 0.07])];
                    iph_site = Some(site);
                    let small = rng.random::<f64>() < cfg.p_small_bleed;
                    let mut vol: f64 = if small {
                        rng.random_range(0.2..0.9)
                    } else {
                        (normal(&mut rng, 2.6, 1.0)).exp().clamp(1.0, 110.0)
                    };
                    let xs = lesion_side;
                    let center = match site {
                        IphSite::BasalGanglia => [xs * 22.0, -1.0, 0.0],
                        IphSite::Thalamus => [xs * 10.0, 12.0, 3.0],
                        IphSite::Lobar => {
                            let d = jitter_dir(&mut rng, [xs * 0.7, 0.0, 0.5], 0.35);
                            let c = surface_point(&anatomy, d);
                            let back = 16.0 + vol.cbrt() * 2.5;
                            let n = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
                            [
                                c[0] / s * (1.0 - back / n),
                                c[1] / s * (1.0 - back / n),
                                c[2] / s * (1.0 - back / n),
                            ]
                        }
                        IphSite::Cerebellum => [xs * 22.0, 42.0, -30.0],
                        IphSite::Brainstem => {
                            vol = vol.min(12.0);
                            [0.0, 20.0, -28.0]
                        }
                    };
                    let center = [
                        (center[0] + normal(&mut rng, 0.0, 2.5)) * s,
                        (center[1] + normal(&mut rng, 0.0, 3.0)) * s,
                        (center[2] + normal(&mut rng, 0.0, 2.5)) * s,
                    ];
                    let r = (3.0 * vol * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
                    let asp: [f64; 3] = [
                        rng.random_range(0.75..1.25),
                        rng.random_range(0.85..1.5),
                        rng.random_range(0.75..1.2),
                    ];
                    let g = (asp[0] * asp[1] * asp[2]).cbrt();
                    if !site.infratentorial() {
                        lateral_ml += vol;
                    }
                    Shape::Intraparenchymal {
                        center,
                        radii: [r * asp[0] / g, r * asp[1] / g, r * asp[2] / g],
                        angle: normal(&mut rng, 0.0, 0.4),
                        edema: rng.random_range(1.5..5.0)
                            * if acuity == Acuity::Subacute { 1.8 } else { 1.0 },
                        site,
                    }
                }
                _ => {
                    let amount: f64 = rng.random();
                    Shape::Intraventricular {
                        level_y: s * (38.0 - 90.0 * amount * amount),
                    }
                }
            };
            lesions.push(Lesion {
                subtype_index: t,
                shape,
                hu,
                acuity,
            });
        }
        if lateral_ml < 1.0 {
            lesion_side = 1.0;
        }
    }
    let mut anatomy = anatomy;
    // Mass effect: midline shift grows with lateralised supratentorial volume.
    let shift = if lateral_ml > 3.0 {
        (0.13 * lateral_ml + normal(&mut rng, 0.0, 1.0)).clamp(0.0, 18.0)
    } else {
        0.0
    };
    anatomy.shift = shift;
    anatomy.shift_dir = -lesion_side;
    let calcs = u8::from(anatomy.calc_choroid)
        + u8::from(anatomy.calc_pineal)
        + u8::from(anatomy.calc_basal_ganglia);
    let phantom = Phantom::new(anatomy, lesions);
    let mut phantom = phantom;
    let (mut volume_ml, mut infra_ml, mut anchors) = measure(&phantom);
    // A planned lesion that barely exists on the measuring grid (< 0.1 mL) is dropped from the
    // plan, so facts, labels and outcomes always agree with what is drawn.
    let before = phantom.lesions.len();
    phantom
        .lesions
        .retain(|l| volume_ml[l.subtype_index] >= MIN_LESION_ML);
    if phantom.lesions.len() != before {
        (volume_ml, infra_ml, anchors) = measure(&phantom);
    }
    let total_ml: f64 = volume_ml.iter().sum();
    let ivh = volume_ml[4] > 0.0;
    let parenchymal_ml = total_ml - volume_ml[4];
    let infratentorial = infra_ml > 0.5 * parenchymal_ml.max(1e-9) && parenchymal_ml > 0.0;
    let mut planned_subtypes = [false; 5];
    for t in 0..5 {
        planned_subtypes[t] = volume_ml[t] > 0.0;
    }
    let is_bleed = total_ml > 0.0;

    // ---- Clinical truth ----
    let sex_male = rng.random::<f64>() < if primary == Some(0) { 0.75 } else { 0.55 };
    let hypertension = rng.random::<f64>()
        < (0.25 + 0.5 * sig((age - 55.0) / 10.0)).min(0.9)
            + if primary == Some(3) { 0.1 } else { 0.0 };
    let diabetes = rng.random::<f64>() < 0.12 + 0.12 * sig((age - 60.0) / 10.0);
    let prior_stroke = rng.random::<f64>() < 0.04 + 0.12 * sig((age - 70.0) / 8.0);
    let anticoagulant = rng.random::<f64>()
        < 0.03 + 0.17 * sig((age - 70.0) / 8.0) + 0.08 * f64::from(u8::from(prior_stroke));
    let antiplatelet =
        !anticoagulant && rng.random::<f64>() < 0.08 + 0.22 * sig((age - 65.0) / 10.0);
    let inr = if anticoagulant {
        normal(&mut rng, 2.4, 0.6).clamp(1.2, 5.0)
    } else {
        normal(&mut rng, 1.03, 0.08).clamp(0.8, 1.4)
    };
    let platelets = normal(&mut rng, 235.0 - 0.4 * (age - 60.0), 60.0).clamp(40.0, 500.0);
    let sbp = normal(
        &mut rng,
        if is_bleed { 165.0 } else { 145.0 } + if hypertension { 14.0 } else { 0.0 },
        24.0,
    )
    .clamp(85.0, 260.0);
    let dbp = (0.5 * sbp + normal(&mut rng, 10.0, 9.0)).clamp(45.0, 150.0);
    let premorbid_mrs = {
        let w = 0.5 + 0.06 * (age - 60.0).max(0.0) + if prior_stroke { 1.0 } else { 0.0 };
        let u = normal(&mut rng, w * 0.8, 1.0).max(0.0);
        (u.floor() as u8).min(5)
    };
    let onset_hours = (normal(&mut rng, 1.1, 0.8)).exp().clamp(0.3, 48.0);
    // Hematoma expansion risk (latent): anticoagulation, BP, early scan, volume.
    let p_expansion = if is_bleed && acuity != Acuity::Subacute {
        sig(-1.9
            + 1.3 * f64::from(u8::from(anticoagulant))
            + 0.5 * (inr - 1.0).max(0.0)
            + 0.4 * f64::from(u8::from(antiplatelet))
            + 0.016 * (sbp - 160.0)
            + 0.7 * f64::from(u8::from(onset_hours < 3.0))
            + 0.25 * (parenchymal_ml + 1.0).ln()
            - 0.5)
    } else {
        0.0
    };
    // GCS from image facts (volume, IVH, shift, location) plus noise.
    let sev_img = if is_bleed {
        1.9 * (1.0 + parenchymal_ml / 12.0).ln()
            + 1.5 * f64::from(u8::from(ivh))
            + 0.6 * (volume_ml[4] / 10.0).min(3.0)
            + 0.22 * shift
            + 1.2 * f64::from(u8::from(infratentorial)) * sig((parenchymal_ml - 8.0) / 4.0)
            + if iph_site == Some(IphSite::Brainstem) {
                2.5
            } else {
                0.0
            }
            + 0.6 * f64::from(u8::from(planned_subtypes[2]))
    } else {
        0.0
    };
    let gcs_drop = if is_bleed {
        (1.25 * sev_img + normal(&mut rng, 0.0, 1.6) - 0.8).max(0.0)
    } else {
        (normal(&mut rng, 0.0, 0.6)).max(0.0)
    };
    let gcs = (15.0 - gcs_drop).round().clamp(3.0, 15.0) as u8;
    let nihss = if is_bleed {
        (2.0 + 1.4 * sev_img + 0.6 * (15.0 - f64::from(gcs)) + normal(&mut rng, 0.0, 3.0))
            .round()
            .clamp(0.0, 42.0) as u8
    } else {
        (normal(&mut rng, 1.0, 1.5)).round().clamp(0.0, 42.0) as u8
    };
    let glucose = (normal(&mut rng, 6.6, 1.2)
        + if diabetes { 2.5 } else { 0.0 }
        + 0.12 * (15.0 - f64::from(gcs)))
    .clamp(2.5, 30.0);

    let truth = ClinicalRecord {
        age: Some(age.round() as f32),
        sex_male: Some(sex_male),
        gcs: Some(gcs),
        nihss: Some(nihss),
        sbp: Some(sbp.round() as f32),
        dbp: Some(dbp.round() as f32),
        glucose: Some((glucose * 10.0).round() as f32 / 10.0),
        inr: Some((inr * 100.0).round() as f32 / 100.0),
        anticoagulant: Some(anticoagulant),
        platelets: Some(platelets.round() as f32),
        hypertension: Some(hypertension),
        diabetes: Some(diabetes),
        prior_stroke: Some(prior_stroke),
        premorbid_mrs: Some(premorbid_mrs),
        onset_hours: Some((onset_hours * 10.0).round() as f32 / 10.0),
        antiplatelet: Some(antiplatelet),
    };
    let ich_score = if is_bleed {
        crate::ich::ich_score(
            gcs,
            age.round(),
            &crate::ich::IchImageFacts {
                volume_ml: parenchymal_ml,
                ivh,
                infratentorial,
            },
        )
        .expect("the generator draws GCS in 3..=15, age and volumes >= 0")
    } else {
        0
    };
    let facts = ImageFacts {
        volume_ml,
        total_ml,
        parenchymal_ml,
        ivh,
        infratentorial,
        midline_shift_mm: shift,
        iph_site: if planned_subtypes[3] { iph_site } else { None },
        acuity: if is_bleed { Some(acuity) } else { None },
        calcifications: calcs,
        atrophy,
        p_expansion,
    };
    let oracle = oracle(&facts, &truth, is_bleed);

    // ---- Outcomes drawn from the oracle ----
    let dead30 = rng.random::<f64>() < oracle.p_mortality_30d;
    let mrs = if dead30 {
        6
    } else {
        // Conditional distribution of 90-day mRS given alive at 30 days.
        let alive = 1.0 - oracle.p_mortality_30d;
        let w: Vec<f64> = (0..7)
            .map(|k| {
                if k == 6 {
                    (oracle.mrs_probs[6] - oracle.p_mortality_30d).max(0.0) / alive.max(1e-12)
                } else {
                    oracle.mrs_probs[k] / alive.max(1e-12)
                }
            })
            .collect();
        pick(&mut rng, &w) as u8
    };
    let outcomes = Outcomes {
        mortality_30d: if rng.random::<f64>() < 0.01 {
            None
        } else {
            Some(dead30)
        },
        mrs_90d: if !dead30 && rng.random::<f64>() < 0.06 {
            None // lost to follow-up
        } else {
            Some(mrs)
        },
    };

    // ---- Missingness (not at random) ----
    let mut c = truth;
    let mut miss = |p: f64| rng.random::<f64>() < p;
    if miss(0.01) {
        c.age = None;
    }
    if miss(0.03) {
        c.gcs = None;
    }
    // NIHSS is rarely scored in comatose patients.
    if miss(if gcs <= 8 { 0.6 } else { 0.12 }) {
        c.nihss = None;
    }
    if miss(0.03) {
        c.sbp = None;
        c.dbp = None;
    }
    if miss(0.06) {
        c.glucose = None;
    }
    // INR is checked almost always on anticoagulation, often skipped otherwise.
    if miss(if anticoagulant { 0.04 } else { 0.35 }) {
        c.inr = None;
    }
    if miss(0.05) {
        c.anticoagulant = None;
    }
    if miss(0.08) {
        c.platelets = None;
    }
    if miss(0.07) {
        c.hypertension = None;
    }
    if miss(0.07) {
        c.diabetes = None;
    }
    if miss(0.08) {
        c.prior_stroke = None;
    }
    // Premorbid function is harder to obtain from patients who cannot talk.
    if miss(if gcs <= 8 { 0.35 } else { 0.1 }) {
        c.premorbid_mrs = None;
    }
    // Unknown onset (wake-up) is common.
    if miss(0.22) {
        c.onset_hours = None;
    }
    if miss(0.1) {
        c.antiplatelet = None;
    }

    Case {
        phantom,
        facts,
        clinical_truth: truth,
        clinical: c,
        outcomes,
        oracle,
        ich_score,
        pose,
        planned_subtypes,
        anchors,
    }
}

fn jitter_dir(rng: &mut ChaCha8Rng, d: [f64; 3], s: f64) -> [f64; 3] {
    let n = Normal::new(0.0, s).expect("finite sd");
    let v = [
        d[0] + n.sample(rng),
        d[1] + n.sample(rng),
        d[2] + n.sample(rng),
    ];
    let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-9);
    [v[0] / l, v[1] / l, v[2] / l]
}

/// Point on the brain envelope (upper half ellipsoid) along unit direction d.
fn surface_point(a: &Anatomy, d: [f64; 3]) -> [f64; 3] {
    let cz = if d[2] >= 0.0 {
        a.semi[2]
    } else {
        38.0 * a.scale
    };
    let r = 1.0
        / ((d[0] / a.semi[0]).powi(2) + (d[1] / a.semi[1]).powi(2) + (d[2] / cz).powi(2)).sqrt();
    [d[0] * r, d[1] * r, d[2] * r]
}

/// Lesion volumes per subtype (mL) and the infratentorial part of non-IVH volume, on a
/// 1.5 mm grid over each lesion's bounding box.
pub fn measure(ph: &Phantom) -> ([f64; 5], f64, [Option<[f64; 3]>; 5]) {
    const STEP: f64 = 1.5;
    let mut counts = [0usize; 5];
    let mut sums = [[0.0f64; 3]; 5];
    let mut first: [Option<[f64; 3]>; 5] = [None; 5];
    let mut infra = 0usize;
    if ph.lesions.is_empty() {
        return ([0.0; 5], 0.0, [None; 5]);
    }
    // Union of boxes, visiting each grid point once (grid anchored at the origin).
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    let boxes: Vec<_> = ph.lesions.iter().map(|l| ph.lesion_bbox(l)).collect();
    for (a, b) in &boxes {
        for i in 0..3 {
            lo[i] = lo[i].min(a[i]);
            hi[i] = hi[i].max(b[i]);
        }
    }
    let idx = |v: f64| (v / STEP).floor() as i64;
    for kz in idx(lo[2])..=idx(hi[2]) {
        for ky in idx(lo[1])..=idx(hi[1]) {
            for kx in idx(lo[0])..=idx(hi[0]) {
                let p = [kx as f64 * STEP, ky as f64 * STEP, kz as f64 * STEP];
                if !boxes
                    .iter()
                    .any(|(a, b)| (0..3).all(|i| p[i] >= a[i] && p[i] <= b[i]))
                {
                    continue;
                }
                let (_, l) = ph.classify(p);
                if l > 0 {
                    let t = l as usize - 1;
                    counts[t] += 1;
                    for i in 0..3 {
                        sums[t][i] += p[i];
                    }
                    first[t].get_or_insert(p);
                    if l != 5 && ph.infratentorial(p) {
                        infra += 1;
                    }
                }
            }
        }
    }
    let ml = STEP * STEP * STEP / 1000.0;
    let mut v = [0.0; 5];
    let mut anchors = [None; 5];
    for t in 0..5 {
        v[t] = counts[t] as f64 * ml;
        if counts[t] > 0 {
            let c = sums[t].map(|x| x / counts[t] as f64);
            anchors[t] = if ph.classify(c).1 as usize == t + 1 {
                Some(c)
            } else {
                first[t]
            };
        }
    }
    (v, infra as f64 * ml, anchors)
}

/// Piecewise-linear map from the continuous severity index to the 30-day mortality logit.
/// Knots were tuned (see docs/SYNTH.md) so that the ICH-score strata reproduce Hemphill 2001.
pub const SEVERITY_KNOTS: [(f64, f64); 6] = [
    (0.0, -5.6),
    (1.0, -1.7),
    (2.0, -1.8),
    (3.0, -1.0),
    (4.0, 4.3),
    (5.0, 7.0),
];

fn knot_logit(z: f64) -> f64 {
    let k = &SEVERITY_KNOTS;
    if z <= k[0].0 {
        return k[0].1 + (z - k[0].0) * (k[1].1 - k[0].1);
    }
    for w in k.windows(2) {
        if z <= w[1].0 {
            let t = (z - w[0].0) / (w[1].0 - w[0].0);
            return w[0].1 + t * (w[1].1 - w[0].1);
        }
    }
    let n = k.len();
    k[n - 1].1 + (z - k[n - 1].0) * (k[n - 1].1 - k[n - 2].1)
}

/// Continuous severity index: a smooth version of each ICH-score component (so its strata
/// stay calibrated) plus effects the score ignores (volume beyond 30 mL, IVH amount, shift,
/// anticoagulation via expansion, premorbid function, glucose, subtype).
pub fn severity(f: &ImageFacts, c: &ClinicalRecord) -> f64 {
    let gcs = f64::from(c.gcs.unwrap_or(15));
    let age = f64::from(c.age.unwrap_or(60.0));
    let v = f.parenchymal_ml;
    let c_gcs = sig((12.5 - gcs) * 1.8) + sig((4.5 - gcs) * 1.8);
    let c_vol = sig((v.max(0.05).ln() - 30f64.ln()) * 4.0);
    let c_ivh = if f.ivh {
        0.75 + 0.5 * sig((f.volume_ml[4] - 8.0) / 4.0)
    } else {
        0.0
    };
    let c_inf = f64::from(u8::from(f.infratentorial));
    let c_age = sig((age - 79.5) / 2.5);
    // Extras, roughly centred so the strata means stay put.
    let extra = 0.22 * ((v + 1.0).ln() - 2.5)
        + 0.05 * (f.midline_shift_mm - 3.0)
        + 0.25 * (f64::from(c.premorbid_mrs.unwrap_or(0)) - 1.0)
        + 0.05 * (f64::from(c.glucose.unwrap_or(7.5)) - 7.5)
        + 0.012 * (age - 68.0)
        - 0.35 * f64::from(u8::from(f.volume_ml[0] > 0.0 && f.volume_ml[3] == 0.0));
    c_gcs + c_vol + c_ivh + c_inf + c_age + extra
}

/// True outcome probabilities (the oracle) given image facts and the complete clinical truth.
pub fn oracle(f: &ImageFacts, c: &ClinicalRecord, is_bleed: bool) -> OracleProbabilities {
    let age = f64::from(c.age.unwrap_or(60.0));
    let pm = f64::from(c.premorbid_mrs.unwrap_or(0));
    let (p30, eta) = if is_bleed {
        let z = severity(f, c);
        let l = knot_logit(z);
        // Expansion adds risk; integrate over the latent expansion.
        let pe = f.p_expansion;
        let p = pe * sig(l + 1.1) + (1.0 - pe) * sig(l);
        (p, 1.1 * z + 0.8 * pe + 0.35 * pm - 0.5)
    } else {
        let l = -6.0 + 0.06 * (age - 60.0) + 0.5 * pm;
        (sig(l), -2.6 + 0.03 * (age - 60.0) + 0.6 * pm)
    };
    // Survivors: ordinal logistic over mRS 0..5; late deaths (30–90 days) a small extra.
    let cuts = [-1.6, -0.4, 0.6, 1.6, 2.8];
    let mut q = [0.0; 6];
    let mut prev = 0.0;
    for k in 0..5 {
        let cdf = sig(cuts[k] - eta);
        q[k] = cdf - prev;
        prev = cdf;
    }
    q[5] = 1.0 - prev;
    let p_late = 0.12 * sig(eta - 3.0);
    let alive = 1.0 - p30;
    let mut mrs = [0.0; 7];
    for k in 0..6 {
        mrs[k] = alive * (1.0 - p_late) * q[k];
    }
    mrs[6] = p30 + alive * p_late;
    OracleProbabilities {
        p_mortality_30d: p30,
        p_poor_outcome_90d: mrs[4] + mrs[5] + mrs[6],
        mrs_probs: mrs,
    }
}
