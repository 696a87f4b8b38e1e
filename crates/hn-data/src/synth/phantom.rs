//! The procedural head phantom: a continuous function from a point in the *head frame*
//! (mm, LPS axes: +x left, +y posterior, +z superior, origin at the brain centre) to a
//! Hounsfield value and a lesion label.
//!
//! Why a continuous function and not a voxel template: the same phantom is sampled at any
//! matrix size and slice thickness (partial volume is obtained by sub-sampling), lesion
//! volumes can be measured on a fixed grid independent of the output size, and each patient's
//! anatomy is a handful of numbers drawn from a seed. Anatomy is built from ellipsoids,
//! planes and smooth value noise (sulci are the zero level set of a 3-D noise field); it is
//! deliberately simple but places every structure the task needs where it belongs, including
//! a real posterior fossa below a tentorium so "infratentorial" is a property of the image.

use super::noise::Noise3;

/// Skull bones, separated by suture lines. Epidural hematomas never cross them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Bone {
    Frontal,
    ParietalLeft,
    ParietalRight,
    TemporalLeft,
    TemporalRight,
    Occipital,
}

/// Where an intraparenchymal bleed sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IphSite {
    BasalGanglia,
    Thalamus,
    Lobar,
    Cerebellum,
    Brainstem,
}

impl IphSite {
    pub fn infratentorial(self) -> bool {
        matches!(self, IphSite::Cerebellum | IphSite::Brainstem)
    }
}

/// Age of the blood, which sets its density.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acuity {
    /// < ~3 h: unretracted clot, heterogeneous 40–60 HU.
    Hyperacute,
    /// Hours to 3 days: 50–90 HU.
    Acute,
    /// 1–3 weeks: near-isodense to brain (30–45 HU).
    Subacute,
}

/// One planned lesion (continuous shape parameters, head frame).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Shape {
    /// Biconvex lens under the inner table, confined to one bone.
    Epidural {
        center: [f64; 3],
        radius: f64,
        thickness: f64,
        bone: Bone,
    },
    /// Crescent over one hemisphere's convexity.
    Subdural {
        side: f64,
        yc: f64,
        zc: f64,
        ly: f64,
        lz: f64,
        thickness: f64,
    },
    /// Blood in CSF spaces (sulci, cisterns, convexity) within `reach` mm of `center`.
    Subarachnoid { center: [f64; 3], reach: f64 },
    /// Irregular ellipsoid with an edema rim.
    Intraparenchymal {
        center: [f64; 3],
        radii: [f64; 3],
        angle: f64,
        edema: f64,
        site: IphSite,
    },
    /// Blood in the ventricles posterior (dependent, supine) of `level_y`.
    Intraventricular { level_y: f64 },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lesion {
    pub subtype_index: usize,
    pub shape: Shape,
    /// Mean density (HU).
    pub hu: f64,
    pub acuity: Acuity,
}

/// Per-patient anatomy parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anatomy {
    /// Global head-size factor (1 = average adult).
    pub scale: f64,
    /// Brain semi-axes (mm) L-R, A-P, superior.
    pub semi: [f64; 3],
    /// Convexity CSF gap between brain and inner table (mm); grows with atrophy.
    pub gap: f64,
    /// Mean skull thickness (mm).
    pub skull: f64,
    /// Scalp thickness (mm).
    pub scalp: f64,
    /// Atrophy 0..1 (age-driven): sulcal width, ventricle size.
    pub atrophy: f64,
    /// Ventricle scale factor.
    pub vent: f64,
    pub gm_hu: f64,
    pub wm_hu: f64,
    pub csf_hu: f64,
    pub calc_choroid: bool,
    pub calc_pineal: bool,
    pub calc_basal_ganglia: bool,
    pub calc_hu: f64,
    /// Midline shift (mm) and its sign along x (negative = toward the patient's right).
    pub shift: f64,
    pub shift_dir: f64,
    /// Beam-hardening streak strength (HU) and angle jitter.
    pub streak: f64,
    pub streak_angle: f64,
    pub noise_seed: u64,
}

/// Kinds of tissue the base anatomy returns before lesions are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tissue {
    Air,
    Scalp,
    Bone,
    ConvexityCsf,
    Gm,
    Wm,
    DeepGm,
    Sulcus,
    Cistern,
    Ventricle,
    Falx,
    Calcification,
}

/// What [`Phantom::sample`] returns for one point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PointSample {
    pub(crate) tissue: Tissue,
    /// CT value (HU), beam hardening included.
    pub(crate) hu: f32,
    /// 0 none, 1..=5 subtype index + 1.
    pub(crate) label: u8,
    /// Index into `Phantom::lesions` of the lesion at this point.
    pub(crate) lesion: Option<usize>,
    /// Perilesional edema weight 0..1 (brain outside a lesion only).
    pub(crate) edema: f64,
}

/// A patient's phantom: anatomy plus lesions. `classify` is the whole image model.
#[derive(Debug, Clone)]
pub struct Phantom {
    pub anatomy: Anatomy,
    pub lesions: Vec<Lesion>,
    noise: Noise3,
}

#[inline]
fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[inline]
fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

#[inline]
fn ell(p: [f64; 3], c: [f64; 3], r: [f64; 3]) -> f64 {
    let a = (p[0] - c[0]) / r[0];
    let b = (p[1] - c[1]) / r[1];
    let d = (p[2] - c[2]) / r[2];
    a * a + b * b + d * d
}

/// Suture geometry (head frame, mm, before scaling): coronal, lambdoid and squamosal
/// surfaces plus the sagittal plane split the vault into six bones.
pub fn bone_at(p: [f64; 3], scale: f64) -> Bone {
    let (x, y, z) = (p[0] / scale, p[1] / scale, p[2] / scale);
    if y < coronal_y(z) {
        Bone::Frontal
    } else if y > lambdoid_y(z) {
        Bone::Occipital
    } else if z < SQUAMOSAL_Z {
        if x >= 0.0 {
            Bone::TemporalLeft
        } else {
            Bone::TemporalRight
        }
    } else if x >= 0.0 {
        Bone::ParietalLeft
    } else {
        Bone::ParietalRight
    }
}

fn coronal_y(z: f64) -> f64 {
    -22.0 + 0.25 * z
}
fn lambdoid_y(z: f64) -> f64 {
    42.0 + 0.3 * z
}
const SQUAMOSAL_Z: f64 = 2.0;

/// Distance (mm, approximate) to the nearest suture line, for the lucent suture in the skull.
fn suture_dist(p: [f64; 3], scale: f64) -> f64 {
    let (x, y, z) = (p[0] / scale, p[1] / scale, p[2] / scale);
    let dc = (y - coronal_y(z)).abs() * 0.97;
    let dl = (y - lambdoid_y(z)).abs() * 0.96;
    let between = y > coronal_y(z) && y < lambdoid_y(z);
    let ds = if between {
        (z - SQUAMOSAL_Z).abs()
    } else {
        f64::INFINITY
    };
    let dm = if between && z > SQUAMOSAL_Z {
        x.abs()
    } else {
        f64::INFINITY
    };
    dc.min(dl).min(ds).min(dm) * scale
}

impl Phantom {
    pub fn new(anatomy: Anatomy, lesions: Vec<Lesion>) -> Self {
        let noise = Noise3::new(anatomy.noise_seed);
        Phantom {
            anatomy,
            lesions,
            noise,
        }
    }

    /// Inferior semi-axis of the brain envelope as a function of y: anterior fossa shallow,
    /// middle fossa deeper, posterior fossa deepest.
    #[inline]
    fn semi_down(&self, y: f64) -> f64 {
        let s = self.anatomy.scale;
        let yn = y / s;
        s * (28.0 + 10.0 * sig((yn + 30.0) / 6.0) + 14.0 * sig((yn - 18.0) / 7.0))
    }

    /// Brain-surface radial distance: (distance from the centre, distance of the surface along
    /// the same ray). `d_out = |p| - surface` is > 0 outside the brain.
    #[inline]
    fn envelope(&self, p: [f64; 3]) -> (f64, f64) {
        let a = &self.anatomy;
        let cz = if p[2] >= 0.0 {
            a.semi[2]
        } else {
            self.semi_down(p[1])
        };
        // Egg-shaped: narrower frontally than occipitally.
        let sx = a.semi[0] * (1.0 + 0.07 * (p[1] / a.semi[1]).clamp(-1.0, 1.0));
        let r = ell(p, [0.0; 3], [sx, a.semi[1], cz]).sqrt();
        let len = norm(p);
        if r < 1e-9 {
            return (0.0, 1.0e3);
        }
        // Gentle lobulation of the outline.
        let wob = 1.0 + 0.025 * ((p[1] * 0.05).sin() * (p[2] * 0.06).cos());
        (len, len / r * wob)
    }

    fn skull_thickness(&self, p: [f64; 3]) -> f64 {
        let s = self.anatomy.scale;
        // Thicker frontal and occipital, thin temporal squama.
        let temporal = sig((p[0].abs() / s - 45.0) / 6.0) * sig(-(p[2] / s - 5.0) / 8.0);
        self.anatomy.skull * (1.0 + 0.15 * (p[1] / s / 60.0).powi(2) - 0.45 * temporal)
    }

    /// Lateral displacement of the supratentorial brain (mass effect), peaking at the septum.
    #[inline]
    fn shift_at(&self, p: [f64; 3]) -> f64 {
        let a = &self.anatomy;
        if a.shift <= 0.0 {
            return 0.0;
        }
        let s = a.scale;
        let fy = (p[1] / s - 2.0) / 38.0;
        let fz = (p[2] / s - 12.0) / 30.0;
        let fx = (1.0 - (p[0].abs() / a.semi[0])).max(0.0);
        a.shift * a.shift_dir * (-(fy * fy + fz * fz)).exp() * fx
    }

    /// Is p (head frame) within the posterior fossa, below the tentorium?
    #[inline]
    pub fn infratentorial(&self, p: [f64; 3]) -> bool {
        let s = self.anatomy.scale;
        let (x, y, z) = (p[0] / s, p[1] / s, p[2] / s);
        y > pf_front(x) && z < tentorium_z(x, y)
    }

    /// Base anatomy at p (brain points use the warped coordinates q).
    fn base(&self, p: [f64; 3], d_out: f64) -> (Tissue, f64) {
        let a = &self.anatomy;
        let s = a.scale;
        let gap = a.gap;
        let skull_t = self.skull_thickness(p);
        let scalp = a.scalp
            * (1.0 + 0.8 * sig((p[0].abs() / s - 50.0) / 5.0) * sig(-(p[2] / s - 10.0) / 6.0));
        if d_out > gap + skull_t + scalp {
            return (Tissue::Air, -1000.0);
        }
        if d_out > gap + skull_t {
            let depth = d_out - gap - skull_t; // from the outer table outward
            let hu = if depth > scalp - 1.2 {
                45.0
            } else if depth < 0.35 * scalp {
                38.0 // galea / muscle
            } else {
                -85.0 // subcutaneous fat
            };
            return (Tissue::Scalp, hu);
        }
        if d_out > gap {
            let db = (d_out - gap) / skull_t;
            if suture_dist(p, s) < 0.6 {
                return (Tissue::Bone, 250.0);
            }
            let hu = if skull_t > 4.0 && db > 0.3 && db < 0.7 {
                750.0 + 180.0 * f64::from(self.noise.eval([p[0] * 0.3, p[1] * 0.3, p[2] * 0.3]))
            } else {
                1750.0
            };
            return (Tissue::Bone, hu);
        }
        if d_out > 0.0 {
            return (Tissue::ConvexityCsf, a.csf_hu);
        }
        let depth = -d_out;
        let mut q = p;
        q[0] -= self.shift_at(p);
        let (x, y, z) = (q[0] / s, q[1] / s, q[2] / s);

        // Skull base: petrous ridges and clivus are bone inside the envelope.
        if z < -22.0 {
            let pr = |side: f64| {
                let u = (x - side * 27.0) * 0.80 + (y - 8.0) * side * 0.60;
                let v = -(x - side * 27.0) * side * 0.60 + (y - 8.0) * 0.80;
                (u / 17.0).powi(2) + (v / 5.0).powi(2) + ((z + 34.0) / 7.0).powi(2)
            };
            if pr(1.0) < 1.0
                || pr(-1.0) < 1.0
                || ell([x, y, z], [0.0, 2.0, -42.0], [7.0, 6.0, 12.0]) < 1.0
            {
                return (Tissue::Bone, 1500.0);
            }
        }

        if y > pf_front(x) && z < tentorium_z(x, y) {
            // Posterior fossa.
            if (z - tentorium_z(x, y)).abs() < 0.8 && y > 14.0 {
                return (Tissue::Falx, 55.0);
            }
            // Brainstem (pons/medulla) with prepontine cistern in front.
            let bs = ((x / 12.0).powi(2) + ((y - 20.0) / 10.5).powi(2)).sqrt();
            if bs < 1.0 && z > -62.0 {
                return (Tissue::Wm, a.wm_hu + 4.0);
            }
            if bs < 1.35 && y < 20.0 && z > -55.0 {
                return (Tissue::Cistern, a.csf_hu);
            }
            if ell(
                [x, y, z],
                [0.0, 33.0, -28.0],
                [4.0 * a.vent, 3.5 * a.vent, 8.0],
            ) < 1.0
            {
                return (Tissue::Ventricle, a.csf_hu);
            }
            // Cerebellar white-matter cores and foliated cortex.
            if ell([x.abs(), y, z], [20.0, 42.0, -30.0], [10.0, 10.0, 7.0]) < 1.0 {
                return (Tissue::Wm, a.wm_hu + 2.0);
            }
            let f = self.noise.eval([q[0] * 0.18, q[1] * 0.18, q[2] * 0.35]);
            if f64::from(f).abs() < 0.03 + 0.07 * a.atrophy && depth < 12.0 {
                return (Tissue::Sulcus, a.csf_hu);
            }
            return (Tissue::Gm, a.gm_hu - 2.0);
        }

        // Supratentorial.
        // Interhemispheric fissure and falx (not through the deep structures).
        let fiss_w = 1.0 + 2.0 * a.atrophy;
        if x.abs() * s < fiss_w && (z > 22.0 || !(-32.0..=38.0).contains(&y)) {
            return if x.abs() * s < 0.5 {
                (Tissue::Falx, 60.0)
            } else {
                (Tissue::Sulcus, a.csf_hu)
            };
        }
        // Ventricles: the side with the mass is compressed.
        let v = a.vent;
        let comp = |xs: f64| {
            if a.shift > 0.0 && xs * a.shift_dir < 0.0 {
                (1.0 - 0.035 * a.shift).max(0.35)
            } else {
                1.0
            }
        };
        let xv = x.abs();
        let side = if x >= 0.0 { 1.0 } else { -1.0 };
        let c = comp(side);
        let pv = [xv, y, z];
        let in_vent = ell(pv, [8.0 * v, -18.0, 12.0], [4.5 * v * c, 13.0, 6.0 * v * c]) < 1.0
            || ell(pv, [10.0 * v, 6.0, 17.0], [5.0 * v * c, 20.0, 5.0 * v * c]) < 1.0
            || ell(pv, [17.0 * v, 28.0, 8.0], [6.0 * v * c, 11.0, 8.0 * v * c]) < 1.0
            || ell(pv, [24.0, -4.0, -14.0], [2.5 * v * c, 11.0, 2.5 * v * c]) < 1.0
            || ell([x, y, z], [0.0, 0.0, 0.0], [1.8 * v, 11.0, 7.0]) < 1.0;
        if in_vent {
            if a.calc_choroid && ell(pv, [17.0 * v, 30.0, 8.0], [2.6, 3.0, 2.4]) < 1.0 {
                return (Tissue::Calcification, a.calc_hu);
            }
            return (Tissue::Ventricle, a.csf_hu);
        }
        if a.calc_pineal && ell([x, y, z], [0.0, 19.0, 2.0], [2.2, 2.8, 2.2]) < 1.0 {
            return (Tissue::Calcification, a.calc_hu);
        }
        // Basal cisterns: suprasellar, ambient/quadrigeminal; Sylvian fissures.
        if ell([x, y, z], [0.0, -6.0, -16.0], [11.0, 8.0, 5.0]) < 1.0
            || ell([x, y, z], [0.0, 26.0, -4.0], [11.0, 5.0, 5.0]) < 1.0
        {
            return (Tissue::Cistern, a.csf_hu);
        }
        let syl = (xv - 38.0 - 0.35 * (y + 8.0)
            + 6.0
                * f64::from(
                    self.noise
                        .eval([q[0] * 0.06, q[1] * 0.06 + 50.0, q[2] * 0.06]),
                ))
        .abs();
        if syl < 1.2 + 2.5 * a.atrophy && y > -30.0 && y < 8.0 && z > -22.0 && z < 6.0 {
            return (Tissue::Cistern, a.csf_hu);
        }
        // Deep grey nuclei.
        if ell(pv, [22.0, -1.0, 0.0], [6.5, 13.0, 8.0]) < 1.0 {
            if a.calc_basal_ganglia && ell(pv, [18.0, 0.0, -1.0], [2.0, 3.0, 2.0]) < 1.0 {
                return (Tissue::Calcification, a.calc_hu);
            }
            return (Tissue::DeepGm, a.gm_hu - 3.0);
        }
        if ell(pv, [12.5 * v.sqrt(), -15.0, 10.0], [4.5, 7.0, 7.0]) < 1.0
            || ell(pv, [9.0, 12.0, 3.0], [7.5, 11.0, 7.5]) < 1.0
        {
            return (Tissue::DeepGm, a.gm_hu - 2.0);
        }
        // Cortex, sulci.
        let sulc_depth = 13.0 * s;
        if depth < sulc_depth {
            let f = f64::from(self.noise.eval([q[0] * 0.085, q[1] * 0.085, q[2] * 0.085])).abs();
            let w = (0.06 + 0.12 * a.atrophy) * (1.0 - 0.6 * depth / sulc_depth);
            if f < w {
                return (Tissue::Sulcus, a.csf_hu);
            }
            if f < w + 0.2 || depth < 3.0 {
                return (Tissue::Gm, a.gm_hu);
            }
        }
        (Tissue::Wm, a.wm_hu)
    }

    /// Hounsfield value and lesion label (0 none, 1..=5 subtype index + 1) at head-frame p.
    pub fn classify(&self, p: [f64; 3]) -> (f32, u8) {
        let s = self.sample(p);
        (s.hu, s.label)
    }

    /// Everything known at head-frame p: the tissue, the lesion (if any), the edema weight
    /// and the CT value. MR rendering maps the tissue and the lesion's blood age to signal.
    pub(crate) fn sample(&self, p: [f64; 3]) -> PointSample {
        let (len, surf) = self.envelope(p);
        let d_out = len - surf;
        let (tissue, mut hu) = self.base(p, d_out);
        if matches!(tissue, Tissue::Air | Tissue::Scalp | Tissue::Bone) {
            return PointSample {
                tissue,
                hu: hu as f32,
                label: 0,
                lesion: None,
                edema: 0.0,
            };
        }
        let mut lesion = None;
        let inner = self.anatomy.gap - d_out; // depth below the inner table
        let mut label = 0u8;
        let mut edema = 0.0;
        for (li, les) in self.lesions.iter().enumerate() {
            let hit = match &les.shape {
                Shape::Epidural {
                    center,
                    radius,
                    thickness,
                    bone,
                } => {
                    let d = norm([p[0] - center[0], p[1] - center[1], p[2] - center[2]]);
                    d < *radius
                        && inner < thickness * (1.0 - (d / radius).powi(2))
                        && bone_at(p, self.anatomy.scale) == *bone
                }
                Shape::Subdural {
                    side,
                    yc,
                    zc,
                    ly,
                    lz,
                    thickness,
                } => {
                    let w = 1.0 - ((p[1] - yc) / ly).powi(2) - ((p[2] - zc) / lz).powi(2);
                    p[0] * side > 6.0
                        && w > 0.0
                        && inner < thickness * w.sqrt()
                        && !self.infratentorial(p)
                }
                Shape::Subarachnoid { center, reach } => {
                    matches!(
                        tissue,
                        Tissue::Sulcus | Tissue::Cistern | Tissue::ConvexityCsf
                    ) && norm([p[0] - center[0], p[1] - center[1], p[2] - center[2]]) < *reach
                }
                Shape::Intraparenchymal {
                    center,
                    radii,
                    angle,
                    edema: e,
                    ..
                } => {
                    if d_out > 0.0 {
                        false
                    } else {
                        let dx = p[0] - center[0];
                        let dy = p[1] - center[1];
                        let (sa, ca) = angle.sin_cos();
                        let u = [ca * dx + sa * dy, -sa * dx + ca * dy, p[2] - center[2]];
                        let r = ell(u, [0.0; 3], *radii).sqrt();
                        let wob = 1.0
                            + 0.28
                                * f64::from(self.noise.eval([
                                    p[0] * 0.22 + 17.0,
                                    p[1] * 0.22,
                                    p[2] * 0.22,
                                ]));
                        let r = r / wob;
                        let rmax = radii[0].max(radii[1]).max(radii[2]);
                        if r >= 1.0 && r < 1.0 + e / rmax && label == 0 {
                            edema = 1.0 - (r - 1.0) * rmax / e.max(1e-6) * 0.5;
                        }
                        r < 1.0
                    }
                }
                Shape::Intraventricular { level_y } => {
                    tissue == Tissue::Ventricle && p[1] > *level_y
                }
            };
            if hit && label == 0 {
                label = les.subtype_index as u8 + 1;
                lesion = Some(li);
                let tex = f64::from(self.noise.eval([p[0] * 0.5, p[1] * 0.5 + 31.0, p[2] * 0.5]));
                hu = match les.acuity {
                    Acuity::Acute => les.hu + 4.0 * tex,
                    Acuity::Hyperacute => les.hu + 12.0 * tex,
                    Acuity::Subacute => les.hu + 3.0 * tex,
                };
                // SAH and layering IVH mix with CSF.
                if les.subtype_index == 2 {
                    hu = 0.85 * hu + 0.15 * self.anatomy.csf_hu;
                }
            }
        }
        if label == 0 && edema > 0.0 && matches!(tissue, Tissue::Gm | Tissue::Wm | Tissue::DeepGm) {
            hu -= 9.0 * edema.min(1.0);
        }
        // Beam hardening: dark band between the petrous ridges, fading upward.
        let a = &self.anatomy;
        if a.streak > 0.0 && p[2] < -14.0 * a.scale && label == 0 {
            let (sa, ca) = a.streak_angle.sin_cos();
            let d = (p[1] - 8.0 * a.scale) * ca - p[0] * sa;
            let fade = sig((-14.0 * a.scale - p[2]) / 3.0);
            hu -= a.streak * fade * (-(d * d) / 8.0).exp();
            // Fine bright/dark radial streaks.
            let ang = p[1].atan2(p[0]);
            hu += 0.35 * a.streak * fade * (ang * 23.0).sin() * (-(d * d) / 200.0).exp();
        }
        PointSample {
            tissue,
            hu: hu as f32,
            label,
            lesion,
            edema: if label == 0 { edema.min(1.0) } else { 0.0 },
        }
    }

    /// Is the point inside any ventricle (used for the IVH facts)?
    pub fn tissue_is_ventricle(&self, p: [f64; 3]) -> bool {
        let (len, surf) = self.envelope(p);
        self.base(p, len - surf).0 == Tissue::Ventricle
    }

    /// Radius (mm) of a box around the head centre that contains the whole head.
    pub fn extent(&self) -> [f64; 3] {
        let a = &self.anatomy;
        let pad = a.gap + a.skull * 1.2 + a.scalp * 1.8 + 1.0;
        [
            a.semi[0] + pad,
            a.semi[1] + pad,
            a.semi[2].max(self.semi_down(60.0)) + pad,
        ]
    }

    /// Bounding box (head frame) of a lesion, for fast measurement.
    pub fn lesion_bbox(&self, les: &Lesion) -> ([f64; 3], [f64; 3]) {
        let e = self.extent();
        let full = ([-e[0], -e[1], -e[2]], e);
        match &les.shape {
            Shape::Epidural { center, radius, .. } => {
                let r = radius + 1.0;
                (
                    [center[0] - r, center[1] - r, center[2] - r],
                    [center[0] + r, center[1] + r, center[2] + r],
                )
            }
            Shape::Subdural {
                side,
                yc,
                zc,
                ly,
                lz,
                ..
            } => {
                let (x0, x1) = if *side > 0.0 {
                    (0.0, e[0])
                } else {
                    (-e[0], 0.0)
                };
                ([x0, yc - ly, zc - lz], [x1, yc + ly, zc + lz])
            }
            Shape::Subarachnoid { center, reach } => (
                [center[0] - reach, center[1] - reach, center[2] - reach],
                [center[0] + reach, center[1] + reach, center[2] + reach],
            ),
            Shape::Intraparenchymal { center, radii, .. } => {
                let r = radii[0].max(radii[1]).max(radii[2]) * 1.4 + 1.0;
                (
                    [center[0] - r, center[1] - r, center[2] - r],
                    [center[0] + r, center[1] + r, center[2] + r],
                )
            }
            Shape::Intraventricular { .. } => {
                let s = self.anatomy.scale;
                (
                    [-35.0 * s, -40.0 * s, -40.0 * s],
                    [35.0 * s, 45.0 * s, 30.0 * s],
                )
            }
        }
        .clamp_to(full)
    }
}

/// Anterior boundary of the posterior fossa (petrous ridges run antero-medially).
#[inline]
fn pf_front(x: f64) -> f64 {
    2.0 + 0.75 * x.abs()
}

/// Height of the tentorium (unscaled head frame): slopes down posteriorly and laterally.
#[inline]
fn tentorium_z(x: f64, y: f64) -> f64 {
    -4.0 - 0.30 * (y - 12.0).max(0.0) - 0.15 * x.abs()
}

trait ClampBox {
    fn clamp_to(self, b: ([f64; 3], [f64; 3])) -> Self;
}
impl ClampBox for ([f64; 3], [f64; 3]) {
    fn clamp_to(self, b: ([f64; 3], [f64; 3])) -> Self {
        let mut lo = self.0;
        let mut hi = self.1;
        for i in 0..3 {
            lo[i] = lo[i].max(b.0[i]);
            hi[i] = hi[i].min(b.1[i]);
        }
        (lo, hi)
    }
}
