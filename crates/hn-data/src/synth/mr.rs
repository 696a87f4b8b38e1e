//! Synthetic head MR: the same patient, anatomy and lesions as the CT generator, imaged with
//! the sequences a stroke unit runs (T1, T2, FLAIR, T2*-GRE, SWI).
//!
//! Why a contrast table and not a Bloch simulation: what a model (and a radiologist) reads is
//! the *relative* signal of each tissue and of blood of each age on each sequence; those are
//! well documented in the radiology literature, while tissue T1/T2/T2* maps of blood products
//! at every age are not, and a simulation from invented relaxation times would only dress
//! the same guess in more numbers. The table, its sources and the simplifications are in
//! docs/SYNTH.md ("MR contrast"). On top of it, what makes MR hard for a model: susceptibility
//! blooming (signal loss spreading beyond the blood on GRE/SWI, growing with echo time), an
//! arbitrary intensity scale per series, a smooth receive-coil bias field, Rician noise,
//! thick 2-D slices with gaps beside thin 3-D SWI, each sequence on its own grid, slight
//! head motion between sequences, and sequences missing from some studies.
//!
//! Every draw comes from streams of its own (`rng_for` streams 5000+), so adding MR leaves
//! the CT generator's bytes unchanged.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::case::{Case, Pose, rng_for};
use super::config::ordered_range;
use super::phantom::{Acuity, PointSample, Shape, Tissue};
use super::{SynthConfig, SynthError, study_id};
use crate::{ClinicalRecord, Outcomes, StudyLabels};
use hn_imaging::mr::{MrProtocol, MrSequence};
use hn_imaging::{Modality, Volume};

/// Age of the blood as MR sees it (the CT acuity refined: CT cannot tell early from late
/// subacute, MR can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BloodAge {
    /// < 12 h, intracellular oxyhaemoglobin.
    Hyperacute,
    /// 12 h – 3 days, intracellular deoxyhaemoglobin.
    Acute,
    /// 3 – 7 days, intracellular methaemoglobin.
    EarlySubacute,
    /// 1 – 4 weeks, extracellular methaemoglobin.
    LateSubacute,
    /// Months: haemosiderin and ferritin around a fluid cavity.
    Chronic,
    /// Months, a bleed too small to leave a cavity (under [`HAEMOSIDERIN_SCAR_MAX_ML`]):
    /// haemosiderin-laden macrophages in otherwise normal parenchyma, as in a microbleed.
    /// Spin echo and FLAIR barely show it; GRE and SWI show a blooming void.
    HaemosiderinScar,
}

/// Below this volume (mL) a chronic intraparenchymal bleed resorbs to a haemosiderin scar
/// ([`BloodAge::HaemosiderinScar`]) instead of a fluid cavity. The generator's small bleeds
/// (`p_small_bleed`) lie under it, its other bleeds above. Source: docs/SYNTH.md.
pub const HAEMOSIDERIN_SCAR_MAX_ML: f64 = 1.0;

/// Relative signal (white matter on T1 = 1) of a tissue on each sequence, in
/// [`MrSequence::ALL`] order (T1, T2, FLAIR, T2*-GRE, SWI), and its susceptibility source
/// strength 0..1 (what blooms on GRE/SWI). Sources: docs/SYNTH.md.
struct Contrast {
    signal: [f64; 5],
    chi: f64,
}

fn tissue_contrast(t: Tissue) -> Contrast {
    let c = |signal, chi| Contrast { signal, chi };
    match t {
        Tissue::Air => c([0.0; 5], 0.0),
        // Scalp is mostly fat: bright on T1, fairly bright on (fast) spin echo T2.
        Tissue::Scalp => c([1.25, 0.85, 0.80, 0.75, 0.70], 0.0),
        // Cortical bone has no MR signal.
        Tissue::Bone => c([0.08, 0.06, 0.06, 0.04, 0.04], 0.0),
        Tissue::ConvexityCsf | Tissue::Sulcus | Tissue::Cistern | Tissue::Ventricle => {
            c([0.30, 1.60, 0.08, 1.05, 0.95], 0.0)
        }
        Tissue::Gm => c([0.78, 0.92, 0.95, 0.85, 0.80], 0.0),
        Tissue::Wm => c([1.00, 0.66, 0.72, 0.70, 0.72], 0.0),
        // Iron in the basal ganglia: darker on T2*, more so on SWI.
        Tissue::DeepGm => c([0.84, 0.78, 0.85, 0.70, 0.58], 0.08),
        Tissue::Falx => c([0.25, 0.20, 0.20, 0.15, 0.12], 0.0),
        // Calcium is diamagnetic: magnitude images show it dark and blooming like blood.
        Tissue::Calcification => c([0.55, 0.20, 0.25, 0.35, 0.30], 0.45),
    }
}

/// Blood of each age: intrinsic signal per sequence and susceptibility strength. The GRE/SWI
/// entries are before blooming; the signal void comes from `chi` through [`bloom`].
fn blood_contrast(age: BloodAge) -> Contrast {
    let c = |signal, chi| Contrast { signal, chi };
    match age {
        // Oxyhaemoglobin is diamagnetic: T2 bright, little blooming (a thin dark rim).
        BloodAge::Hyperacute => c([0.88, 1.30, 1.10, 0.95, 0.90], 0.25),
        // Deoxyhaemoglobin: T2 dark, strong susceptibility.
        BloodAge::Acute => c([0.82, 0.28, 0.40, 0.55, 0.50], 1.0),
        // Intracellular methaemoglobin: T1 bright, T2 dark.
        BloodAge::EarlySubacute => c([1.50, 0.30, 0.55, 0.60, 0.55], 0.9),
        // Extracellular methaemoglobin: bright on T1 and T2; susceptibility fades.
        BloodAge::LateSubacute => c([1.50, 1.45, 1.25, 1.10, 1.00], 0.35),
        // Fluid cavity lined by haemosiderin: CSF-like inside, dark rim (blooming).
        BloodAge::Chronic => c([0.40, 1.30, 0.35, 0.90, 0.85], 0.8),
        // Haemosiderin in parenchyma: these are factors on the tissue's own signal (see
        // `point_signal`) — iso on T1, faintly dark on fast spin echo and FLAIR, whose
        // refocusing pulses undo most of the dephasing; the void comes from `chi`.
        BloodAge::HaemosiderinScar => c([1.0, 0.85, 0.9, 0.9, 0.9], 1.0),
    }
}

/// The generator's MR settings (`[mr]` in a synth config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MrConfig {
    /// The sequences the protocol acquires (an ablation drops some: e.g. no T2*-GRE or SWI).
    pub sequences: Vec<MrSequence>,
    /// In-plane matrix of every sequence (each draws its own field of view).
    pub size: usize,
    /// Slab thickness of the 2-D sequences (T1, T2, FLAIR, T2*-GRE), mm.
    pub thickness_mm: [f64; 2],
    /// Gap between 2-D slabs, mm (slice distance = thickness + gap).
    pub gap_mm: [f64; 2],
    /// Slice thickness of the 3-D SWI, mm (contiguous).
    pub swi_thickness_mm: [f64; 2],
    /// Signal-to-noise ratio of white matter (before the Rician magnitude).
    pub snr: [f64; 2],
    /// Peak amplitude of the receive bias field (0.2 = ±20 % across the head).
    pub bias: [f64; 2],
    /// Probability that each sequence is missing from a study (at least one stays).
    pub p_missing_sequence: f64,
    /// Among CT-subacute bleeds, the fraction MR shows as chronic (the rest split evenly
    /// between early and late subacute).
    pub p_chronic_of_subacute: f64,
    /// Head motion between sequences: rotation (degrees) and shift (mm), at most.
    pub motion_deg: f64,
    pub motion_mm: f64,
    /// Field strength (T), written to the files.
    pub field_t: f64,
}

impl Default for MrConfig {
    fn default() -> Self {
        MrConfig {
            sequences: MrSequence::ALL.to_vec(),
            size: 128,
            thickness_mm: [4.0, 6.0],
            gap_mm: [0.0, 1.5],
            swi_thickness_mm: [1.5, 2.5],
            snr: [15.0, 40.0],
            bias: [0.05, 0.25],
            p_missing_sequence: 0.1,
            p_chronic_of_subacute: 0.2,
            motion_deg: 1.5,
            motion_mm: 1.5,
            field_t: 1.5,
        }
    }
}

impl MrConfig {
    /// For `skip_serializing_if`: a CT config written before MR existed keeps its bytes.
    pub fn is_default(&self) -> bool {
        *self == MrConfig::default()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.sequences.is_empty() {
            return Err("mr.sequences must name at least one sequence".into());
        }
        for (i, q) in self.sequences.iter().enumerate() {
            if self.sequences[..i].contains(q) {
                return Err(format!("mr.sequences names {q} twice"));
            }
        }
        if !(16..=1024).contains(&self.size) {
            return Err(format!("mr.size {} must be in 16..=1024", self.size));
        }
        for (name, r, lo, hi) in [
            ("mr.thickness_mm", self.thickness_mm, 0.5, 10.0),
            ("mr.gap_mm", self.gap_mm, 0.0, 5.0),
            ("mr.swi_thickness_mm", self.swi_thickness_mm, 0.5, 5.0),
            ("mr.snr", self.snr, 2.0, 1000.0),
            ("mr.bias", self.bias, 0.0, 0.6),
        ] {
            ordered_range(name, r, lo, hi, "")?;
        }
        for (name, p) in [
            ("mr.p_missing_sequence", self.p_missing_sequence),
            ("mr.p_chronic_of_subacute", self.p_chronic_of_subacute),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} = {p} must be a probability in 0..=1"));
            }
        }
        if !(0.0..=10.0).contains(&self.motion_deg) || !(0.0..=10.0).contains(&self.motion_mm) {
            return Err("mr.motion_deg and mr.motion_mm must be in 0..=10".into());
        }
        if !(0.2..=11.7).contains(&self.field_t) {
            return Err(format!("mr.field_t {} must be in 0.2..=11.7", self.field_t));
        }
        Ok(())
    }
}

/// Where one sequence's slices lie.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MrGeometry {
    pub size: usize,
    pub n_slices: usize,
    pub pixel_mm: f64,
    /// Slab thickness (mm).
    pub thickness_mm: f64,
    /// Slice distance (mm) = thickness + gap.
    pub spacing_mm: f64,
    pub origin: [f64; 3],
    /// The head's pose during this sequence (the case's pose plus motion).
    pub pose: Pose,
    pub snr: f64,
    /// Stored value of white matter without bias (the series' arbitrary scale).
    pub scale: f64,
}

/// One sequence of a synthetic MR study.
#[derive(Debug, Clone)]
pub struct MrSeries {
    pub sequence: MrSequence,
    /// Stored intensities (arbitrary units, 0..=65535), on the sequence's own grid.
    pub volume: Volume,
    /// Lesion labels on the same grid (0 none, 1..=5 subtype index + 1).
    pub mask: Vec<u8>,
    pub geometry: MrGeometry,
    pub protocol: MrProtocol,
}

/// One synthetic MR study with its ground truth (the same patient as CT study `index`).
#[derive(Debug, Clone)]
pub struct SyntheticMrStudy {
    pub id: String,
    pub index: usize,
    /// The sequences acquired, in [`MrSequence::ALL`] order.
    pub series: Vec<MrSeries>,
    /// The sequences this study lacks.
    pub missing: Vec<MrSequence>,
    pub labels: StudyLabels,
    /// Blood age per lesion (subtype index, age).
    pub blood_ages: Vec<(usize, BloodAge)>,
    pub clinical: ClinicalRecord,
    pub clinical_truth: ClinicalRecord,
    pub outcomes: Outcomes,
    pub oracle: super::OracleProbabilities,
    pub facts: super::ImageFacts,
    pub ich_score: u8,
}

impl SyntheticMrStudy {
    /// The study as the DICOM reader gives an MR study ([`hn_imaging::dicom::read_mr_study`]),
    /// without writing files: the same volumes and geometry, so the engine brings it onto one
    /// grid by the same path as a scanner's study.
    pub fn as_read(&self) -> hn_imaging::dicom::MrStudyRead {
        hn_imaging::dicom::MrStudyRead {
            sequences: self
                .series
                .iter()
                .map(|s| hn_imaging::dicom::MrSequenceRead {
                    sequence: s.sequence,
                    volume: s.volume.clone(),
                    series_uid: String::new(),
                    rule: "synthetic series of this sequence".into(),
                })
                .collect(),
            missing: self.missing.clone(),
            series: Vec::new(),
            skipped: Vec::new(),
            source: None,
        }
    }

    /// Per-slice labels of sequence `q`'s grid (from its mask); `None` when it is missing.
    pub fn slice_labels(&self, q: MrSequence) -> Option<Vec<StudyLabels>> {
        let s = self.series.iter().find(|s| s.sequence == q)?;
        let plane = s.volume.dims[0] * s.volume.dims[1];
        Some(super::labels_per_slice(&s.mask, plane))
    }
}

/// The MR age of each lesion of the case (stream 5000).
pub(crate) fn blood_ages(cfg: &MrConfig, case: &Case, seed: u64, index: usize) -> Vec<BloodAge> {
    let mut rng = rng_for(seed, index, 5000);
    case.phantom
        .lesions
        .iter()
        .map(|l| {
            let u: f64 = rng.random();
            match l.acuity {
                Acuity::Hyperacute => BloodAge::Hyperacute,
                Acuity::Acute => BloodAge::Acute,
                Acuity::Subacute if u < cfg.p_chronic_of_subacute => {
                    if intraparenchymal_ml(&l.shape).is_some_and(|v| v < HAEMOSIDERIN_SCAR_MAX_ML) {
                        BloodAge::HaemosiderinScar
                    } else {
                        BloodAge::Chronic
                    }
                }
                Acuity::Subacute if u < 0.5 + 0.5 * cfg.p_chronic_of_subacute => {
                    BloodAge::EarlySubacute
                }
                Acuity::Subacute => BloodAge::LateSubacute,
            }
        })
        .collect()
}

/// The volume (mL) of an intraparenchymal lesion's ellipsoid (its boundary wobble averages
/// out); `None` for the other shapes.
fn intraparenchymal_ml(shape: &Shape) -> Option<f64> {
    match shape {
        Shape::Intraparenchymal { radii, .. } => {
            Some(4.0 / 3.0 * std::f64::consts::PI * radii[0] * radii[1] * radii[2] / 1000.0)
        }
        _ => None,
    }
}

/// Which sequences a study has (stream 5001): those of the protocol (`mr.sequences`), each
/// missing with `p_missing_sequence`, but never all of them. One draw per sequence of
/// [`MrSequence::ALL`] whatever the protocol, so dropping a sequence from the protocol leaves
/// the others' presence unchanged (an ablation changes one thing).
fn acquired(cfg: &MrConfig, seed: u64, index: usize) -> Vec<MrSequence> {
    let mut rng = rng_for(seed, index, 5001);
    let draws: Vec<bool> = MrSequence::ALL
        .iter()
        .map(|_| rng.random::<f64>() >= cfg.p_missing_sequence)
        .collect();
    let mut have: Vec<MrSequence> = MrSequence::ALL
        .into_iter()
        .zip(draws)
        .filter(|(q, kept)| *kept && cfg.sequences.contains(q))
        .map(|(q, _)| q)
        .collect();
    if have.is_empty() {
        let protocol: Vec<MrSequence> = MrSequence::ALL
            .into_iter()
            .filter(|q| cfg.sequences.contains(q))
            .collect();
        have.push(protocol[rng.random_range(0..protocol.len())]);
    }
    have
}

fn geometry(cfg: &MrConfig, case: &Case, q: MrSequence, seed: u64, index: usize) -> MrGeometry {
    let mut rng = rng_for(seed, index, 5010 + q.index() as u64);
    let s = case.phantom.anatomy.scale;
    let fov = rng.random_range(220.0..=250.0);
    let pixel = fov / cfg.size as f64;
    let (thickness, gap) = if q == MrSequence::Swi {
        (
            rng.random_range(cfg.swi_thickness_mm[0]..=cfg.swi_thickness_mm[1]),
            0.0,
        )
    } else {
        (
            rng.random_range(cfg.thickness_mm[0]..=cfg.thickness_mm[1]),
            rng.random_range(cfg.gap_mm[0]..=cfg.gap_mm[1]),
        )
    };
    let spacing = thickness + gap;
    let coverage = rng.random_range(118.0..132.0) * s;
    let n_slices = ((coverage / spacing).round() as usize).max(2);
    let mut pose = case.pose;
    let deg = cfg.motion_deg.to_radians();
    for a in &mut pose.angles {
        *a += rng.random_range(-1.0..=1.0) * deg;
    }
    for o in &mut pose.offset {
        *o += rng.random_range(-1.0..=1.0) * cfg.motion_mm;
    }
    let bottom = pose.offset[2] - 47.0 * s + thickness / 2.0 + rng.random_range(-3.0..=3.0);
    MrGeometry {
        size: cfg.size,
        n_slices,
        pixel_mm: pixel,
        thickness_mm: thickness,
        spacing_mm: spacing,
        origin: [-fov / 2.0 + pixel / 2.0, -fov / 2.0 + pixel / 2.0, bottom],
        pose,
        snr: rng.random_range(cfg.snr[0]..=cfg.snr[1]),
        scale: rng.random_range(200.0..=2000.0),
    }
}

/// Signal and susceptibility of one phantom point on sequence `q`.
fn point_signal(ps: &PointSample, case: &Case, ages: &[BloodAge], q: usize) -> (f64, f64) {
    let tissue = tissue_contrast(ps.tissue);
    let Some(li) = ps.lesion else {
        let mut s = tissue.signal[q];
        // Edema resolves within weeks: none around a haemosiderin scar (the case's one
        // intraparenchymal lesion is the only one with an edema rim).
        let scarred = ages.contains(&BloodAge::HaemosiderinScar);
        let e = if matches!(ps.tissue, Tissue::Gm | Tissue::Wm | Tissue::DeepGm) && !scarred {
            ps.edema
        } else {
            0.0
        };
        // Vasogenic edema: long T1 and T2, bright on FLAIR.
        s += e * [-0.15, 0.5, 0.45, 0.25, 0.2][q];
        return (s, tissue.chi);
    };
    let les = &case.phantom.lesions[li];
    let blood = blood_contrast(ages[li]);
    if matches!(les.subtype_index, 2 | 4) {
        // Blood diluted in CSF. FLAIR's inversion nulls pure CSF only: the mixture's shorter
        // T1 leaves it bright, which is why FLAIR shows subarachnoid blood.
        let csf = tissue_contrast(Tissue::Cistern);
        let s = if MrSequence::ALL[q] == MrSequence::Flair {
            0.95
        } else {
            0.6 * blood.signal[q] + 0.4 * csf.signal[q]
        };
        return (s, 0.6 * blood.chi);
    }
    if ages[li] == BloodAge::HaemosiderinScar {
        return (tissue.signal[q] * blood.signal[q], blood.chi);
    }
    (blood.signal[q], blood.chi)
}

/// Susceptibility blooming: the field disturbance of paramagnetic blood reaches beyond it,
/// more the longer the echo time; modelled as a Gaussian spread of the source map (σ in mm
/// proportional to TE) and an exponential signal loss.
fn bloom(signal: &mut [f32], chi: &[f32], dims: [usize; 3], spacing: [f64; 3], p: &MrProtocol) {
    let sigma_mm = 0.06 * p.echo_time_ms;
    let k = if p.sequence == MrSequence::Swi {
        3.0
    } else {
        2.2
    };
    let mut spread = chi.to_vec();
    for (axis, sp) in spacing.iter().enumerate() {
        let sigma = sigma_mm / sp;
        if sigma < 0.3 {
            continue;
        }
        let r = (3.0 * sigma).ceil() as isize;
        let w: Vec<f32> = (-r..=r)
            .map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp() as f32)
            .collect();
        let norm: f32 = w.iter().sum();
        spread = blur_axis(&spread, dims, axis, &w, r, norm);
    }
    for (s, c) in signal.iter_mut().zip(&spread) {
        // The source itself counts fully: blooming only adds around it.
        let c = c.max(0.0);
        *s *= (-k * c).exp();
    }
}

fn blur_axis(v: &[f32], dims: [usize; 3], axis: usize, w: &[f32], r: isize, norm: f32) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let n = [nx, ny, nz][axis] as isize;
    let stride = [1, nx, nx * ny][axis];
    let mut out = vec![0f32; v.len()];
    out.par_iter_mut().enumerate().for_each(|(idx, o)| {
        let pos = [idx % nx, (idx / nx) % ny, idx / (nx * ny)][axis] as isize;
        let mut acc = 0f32;
        for (t, wt) in w.iter().enumerate() {
            let q = pos + t as isize - r;
            if (0..n).contains(&q) {
                acc += wt * v[(idx as isize + (q - pos) * stride as isize) as usize];
            }
        }
        *o = acc / norm;
    });
    out
}

/// Render sequence `q` of the case on geometry `g`: (stored intensities, labels).
fn render_sequence(
    case: &Case,
    ages: &[BloodAge],
    q: MrSequence,
    g: &MrGeometry,
    cfg: &MrConfig,
    seed: u64,
    index: usize,
) -> Result<(Volume, Vec<u8>), SynthError> {
    let n = g.size;
    let nz = g.n_slices;
    let plane = n * n;
    let qi = q.index();
    let protocol = q.protocol();
    let ph = &case.phantom;
    let ext = ph.extent();
    let r = super::render::rotation(g.pose.angles);
    let off = g.pose.offset;
    let z_sub = ((g.thickness_mm / 2.0).ceil() as usize).clamp(1, 3);
    let subs: Vec<f64> = (0..z_sub)
        .map(|m| ((m as f64 + 0.5) / z_sub as f64 - 0.5) * g.thickness_mm)
        .collect();
    let mut signal = vec![0f32; plane * nz];
    let mut chi = vec![0f32; plane * nz];
    let mut mask = vec![0u8; plane * nz];
    signal
        .par_chunks_mut(plane)
        .zip(chi.par_chunks_mut(plane))
        .zip(mask.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(k, ((sl, cl), ml))| {
            let wz = g.origin[2] + k as f64 * g.spacing_mm;
            for j in 0..n {
                let wy = g.origin[1] + j as f64 * g.pixel_mm;
                for i in 0..n {
                    let wx = g.origin[0] + i as f64 * g.pixel_mm;
                    let (mut acc, mut acc_chi) = (0f64, 0f64);
                    let mut label = 0u8;
                    for (m, dz) in subs.iter().enumerate() {
                        let d = [wx - off[0], wy - off[1], wz + dz - off[2]];
                        let p = [
                            r[0][0] * d[0] + r[1][0] * d[1] + r[2][0] * d[2],
                            r[0][1] * d[0] + r[1][1] * d[1] + r[2][1] * d[2],
                            r[0][2] * d[0] + r[1][2] * d[1] + r[2][2] * d[2],
                        ];
                        let inside = (p[0] / ext[0]).powi(2)
                            + (p[1] / ext[1]).powi(2)
                            + (p[2] / ext[2]).powi(2)
                            < 1.0;
                        if !inside {
                            continue;
                        }
                        let ps = ph.sample(p);
                        let (s, c) = point_signal(&ps, case, ages, qi);
                        acc += s;
                        acc_chi += c;
                        if m == z_sub / 2 {
                            label = ps.label;
                        }
                    }
                    sl[j * n + i] = (acc / z_sub as f64) as f32;
                    cl[j * n + i] = (acc_chi / z_sub as f64) as f32;
                    ml[j * n + i] = label;
                }
            }
        });
    // A lesion smaller than the sampling still gets its label and its signal at the anchor
    // voxel (as on CT), so every labelled subtype is in the mask.
    for t in 0..5 {
        if case.facts.volume_ml[t] > 0.0
            && !mask.iter().any(|m| *m as usize == t + 1)
            && let Some(a) = case.anchors[t]
        {
            let w = super::render::world_from_head(&g.pose, a);
            let f = |c: usize, sp: f64, dim: usize| {
                ((w[c] - g.origin[c]) / sp)
                    .round()
                    .clamp(0.0, (dim - 1) as f64) as usize
            };
            let (i, j, k) = (
                f(0, g.pixel_mm, n),
                f(1, g.pixel_mm, n),
                f(2, g.spacing_mm, nz),
            );
            let idx = (k * n + j) * n + i;
            mask[idx] = t as u8 + 1;
            if let Some(li) = ph.lesions.iter().position(|l| l.subtype_index == t) {
                let b = blood_contrast(ages[li]);
                signal[idx] = 0.5 * signal[idx] + 0.5 * b.signal[qi] as f32;
                chi[idx] = chi[idx].max(0.5 * b.chi as f32);
            }
        }
    }
    if q.is_susceptibility() {
        bloom(
            &mut signal,
            &chi,
            [n, n, nz],
            [g.pixel_mm, g.pixel_mm, g.spacing_mm],
            &protocol,
        );
    }
    // Bias field (stream 5020+q): a smooth multiplicative receive profile over the head.
    let mut rng = rng_for(seed, index, 5020 + qi as u64);
    let amp = rng.random_range(cfg.bias[0]..=cfg.bias[1]);
    let dir: [f64; 3] = std::array::from_fn(|_| rng.random_range(-1.0..=1.0));
    let radial = rng.random_range(-1.0..=1.0);
    let bias = |w: [f64; 3]| {
        let u: [f64; 3] = std::array::from_fn(|c| (w[c] - off[c]) / 100.0);
        (amp * (dir[0] * u[0] + dir[1] * u[1] + dir[2] * u[2]
            - radial * (u[0] * u[0] + u[1] * u[1])))
            .exp()
    };
    let sigma = g.scale / g.snr;
    signal
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(k, sl)| {
            super::render::blur121(sl, n);
            let wz = g.origin[2] + k as f64 * g.spacing_mm;
            let mut rng = rng_for(seed, index, 6000 + 1000 * qi as u64 + k as u64);
            for j in 0..n {
                let wy = g.origin[1] + j as f64 * g.pixel_mm;
                for i in 0..n {
                    let wx = g.origin[0] + i as f64 * g.pixel_mm;
                    let v = f64::from(sl[j * n + i]) * g.scale * bias([wx, wy, wz]);
                    // Magnitude of a complex signal with Gaussian noise in both channels:
                    // Rician, with a Rayleigh floor where there is no signal.
                    let n1: f64 = StandardNormal.sample(&mut rng);
                    let n2: f64 = StandardNormal.sample(&mut rng);
                    let m = ((v + sigma * n1).powi(2) + (sigma * n2).powi(2)).sqrt();
                    sl[j * n + i] = m.round().clamp(0.0, 65535.0) as f32;
                }
            }
        });
    let mut vol = Volume::new(
        signal,
        [n, n, nz],
        [g.pixel_mm, g.pixel_mm, g.spacing_mm],
        Modality::Mr,
    )
    .map_err(|e| SynthError::Internal(e.to_string()))?;
    vol.origin = g.origin;
    vol.provenance.notes.push(format!(
        "synthetic head MR, {} (HemorrhageNet generator)",
        protocol.series_description
    ));
    Ok((vol, mask))
}

/// Generate MR study `index` of cohort `seed`: the patient of CT study `index` (same case,
/// same lesions, same outcomes), imaged with the sequences it was acquired with.
pub fn generate_mr_study(
    cfg: &SynthConfig,
    seed: u64,
    index: usize,
) -> Result<SyntheticMrStudy, SynthError> {
    cfg.validate()
        .map_err(|msg| SynthError::Config { path: None, msg })?;
    let case = super::sample_case(cfg, seed, index);
    let ages = blood_ages(&cfg.mr, &case, seed, index);
    let have = acquired(&cfg.mr, seed, index);
    let mut series = Vec::with_capacity(have.len());
    for q in &have {
        let g = geometry(&cfg.mr, &case, *q, seed, index);
        let (volume, mask) = render_sequence(&case, &ages, *q, &g, &cfg.mr, seed, index)?;
        series.push(MrSeries {
            sequence: *q,
            volume,
            mask,
            geometry: g,
            protocol: q.protocol(),
        });
    }
    let mut sub = [false; 5];
    for (t, s) in sub.iter_mut().enumerate() {
        *s = case.facts.volume_ml[t] > 0.0;
    }
    Ok(SyntheticMrStudy {
        id: study_id(index),
        index,
        missing: MrSequence::ALL
            .into_iter()
            .filter(|q| !have.contains(q))
            .collect(),
        series,
        labels: StudyLabels {
            any: sub.iter().any(|b| *b),
            subtypes: sub,
        },
        blood_ages: case
            .phantom
            .lesions
            .iter()
            .zip(&ages)
            .map(|(l, a)| (l.subtype_index, *a))
            .collect(),
        clinical: case.clinical,
        clinical_truth: case.clinical_truth,
        outcomes: case.outcomes,
        oracle: case.oracle,
        facts: case.facts,
        ich_score: case.ich_score,
    })
}

/// Generate MR studies `indices` of cohort `seed` in parallel (rayon), in index order; the
/// same bytes as [`generate_mr_study`] one by one.
pub fn generate_mr_studies(
    cfg: &SynthConfig,
    seed: u64,
    indices: std::ops::Range<usize>,
) -> Result<Vec<SyntheticMrStudy>, SynthError> {
    indices
        .into_par_iter()
        .map(|i| generate_mr_study(cfg, seed, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SynthConfig {
        SynthConfig {
            mr: MrConfig {
                size: 64,
                p_missing_sequence: 0.0,
                ..MrConfig::default()
            },
            prevalence_bleed: 1.0,
            ..SynthConfig::default()
        }
    }

    /// Mean of the series over voxels whose label passes `f`.
    fn mean_where(s: &MrSeries, f: impl Fn(u8) -> bool) -> f64 {
        let v: Vec<f64> = s
            .volume
            .data
            .iter()
            .zip(&s.mask)
            .filter(|(_, m)| f(**m))
            .map(|(v, _)| f64::from(*v))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    #[test]
    fn same_patient_as_ct_and_deterministic_with_ct_bytes_unchanged() {
        let c = cfg();
        let ct_before = super::super::generate_study(&c, 7, 3);
        let a = generate_mr_study(&c, 7, 3).unwrap();
        let b = generate_mr_study(&c, 7, 3).unwrap();
        let ct_after = super::super::generate_study(&c, 7, 3);
        assert_eq!(ct_before.volume.data, ct_after.volume.data);
        assert_eq!(a.labels, ct_before.labels, "same lesions as the CT twin");
        assert_eq!(a.outcomes, ct_before.outcomes);
        assert_eq!(a.series.len(), 5);
        for (x, y) in a.series.iter().zip(&b.series) {
            assert_eq!(x.volume.data, y.volume.data);
        }
        // Each sequence on its own grid: slice distances differ between 2-D and SWI.
        let swi = &a.series[MrSequence::Swi.index()];
        let t2 = &a.series[MrSequence::T2.index()];
        assert!(swi.volume.spacing[2] < 3.0 && t2.volume.spacing[2] >= 4.0);
        assert!(swi.volume.dims[2] > t2.volume.dims[2]);
    }

    #[test]
    fn blood_shows_as_the_literature_says_by_sequence_and_age() {
        let st = generate_mr_study(&cfg(), 11, 0).unwrap();
        for s in &st.series {
            // Every series has a usable dynamic range and no negative values.
            let (lo, hi) = s.volume.min_max().unwrap();
            assert!(lo >= 0.0 && hi > 100.0, "{:?}: {lo}..{hi}", s.sequence);
        }
        let (mut acute, mut sah) = (false, false);
        for n in 0..60 {
            let st = generate_mr_study(&cfg(), 5, n).unwrap();
            let age_of = |t: usize| st.blood_ages.iter().find(|(s, _)| *s == t).map(|x| x.1);
            let series = |q: MrSequence| &st.series[q.index()];
            // Head background: label-0 voxels above the noise floor.
            let head = |s: &MrSeries| {
                let floor = 0.2 * s.geometry.scale;
                let v: Vec<f64> = s
                    .volume
                    .data
                    .iter()
                    .zip(&s.mask)
                    .filter(|(v, m)| **m == 0 && f64::from(**v) > floor)
                    .map(|(v, _)| f64::from(*v))
                    .collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            if !acute && age_of(3) == Some(BloodAge::Acute) && st.facts.volume_ml[3] >= 5.0 {
                acute = true;
                // Deoxyhaemoglobin: a void on SWI (blooming), near brain on T1.
                let swi = series(MrSequence::Swi);
                let t1 = series(MrSequence::T1);
                let (l_swi, h_swi) = (mean_where(swi, |m| m == 4), head(swi));
                assert!(l_swi < 0.5 * h_swi, "acute IPH on SWI {l_swi} vs {h_swi}");
                let (l_t1, h_t1) = (mean_where(t1, |m| m == 4), head(t1));
                assert!(l_t1 > 0.7 * h_t1, "acute IPH on T1 {l_t1} vs {h_t1}");
            }
            if !sah && st.facts.volume_ml[2] >= 2.0 && st.facts.volume_ml[3] == 0.0 {
                sah = true;
                // Subarachnoid blood is bright on FLAIR, whose CSF is dark.
                let fl = series(MrSequence::Flair);
                let (l_fl, h_fl) = (mean_where(fl, |m| m == 3), head(fl));
                assert!(l_fl > h_fl, "SAH on FLAIR {l_fl} vs {h_fl}");
            }
            if acute && sah {
                break;
            }
        }
        assert!(
            acute && sah,
            "acute IPH {acute}, SAH {sah} not found in 60 studies"
        );
    }

    /// A cohort of old intraparenchymal bleeds only: every bleed subacute on CT and chronic
    /// on MR, `p_small` of them small.
    fn old_bleeds(p_small: f64) -> SynthConfig {
        let mut c = cfg();
        c.primary_subtype_weights = [0.0, 0.0, 0.0, 1.0, 0.0];
        c.p_ivh_extension = 0.0;
        c.p_hyperacute = 0.0;
        c.p_subacute = 1.0;
        c.p_small_bleed = p_small;
        c.mr.p_chronic_of_subacute = 1.0;
        c.mr.size = 128;
        c
    }

    #[test]
    fn a_small_old_bleed_is_a_haemosiderin_scar_and_a_large_one_a_cavity() {
        for (p_small, want) in [(1.0, BloodAge::HaemosiderinScar), (0.0, BloodAge::Chronic)] {
            let c = old_bleeds(p_small);
            for i in 0..8 {
                let case = super::super::sample_case(&c, 3, i);
                let ages = blood_ages(&c.mr, &case, 3, i);
                for (l, a) in case.phantom.lesions.iter().zip(&ages) {
                    assert_eq!(l.subtype_index, 3);
                    assert_eq!(*a, want, "case {i}: {:?}", case.facts.volume_ml);
                }
            }
        }
    }

    #[test]
    fn a_haemosiderin_scar_shows_on_gre_and_swi_and_barely_on_spin_echo() {
        let c = old_bleeds(1.0);
        let mut seen = 0;
        for n in 0..12 {
            let st = generate_mr_study(&c, 9, n).unwrap();
            if st
                .blood_ages
                .iter()
                .all(|(_, a)| *a != BloodAge::HaemosiderinScar)
            {
                continue;
            }
            // Lesion against the brain around it: non-lesion voxels 8–14 mm from the
            // lesion's centroid (beyond the blooming; the scar sits in parenchyma).
            let contrast = |q: MrSequence| {
                let s = &st.series[q.index()];
                let [nx, ny, _] = s.volume.dims;
                let sp = s.volume.spacing;
                let at = |i: usize| [i % nx, (i / nx) % ny, i / (nx * ny)];
                let lesion: Vec<usize> = (0..s.mask.len()).filter(|i| s.mask[*i] == 4).collect();
                if lesion.is_empty() {
                    return None;
                }
                let mut cen = [0f64; 3];
                for i in &lesion {
                    for (a, p) in cen.iter_mut().zip(at(*i)) {
                        *a += p as f64 / lesion.len() as f64;
                    }
                }
                let (mut sum, mut k) = (0f64, 0usize);
                for i in 0..s.mask.len() {
                    let p = at(i);
                    let d2: f64 = (0..3)
                        .map(|a| ((p[a] as f64 - cen[a]) * sp[a]).powi(2))
                        .sum();
                    if s.mask[i] == 0 && (64.0..196.0).contains(&d2) {
                        sum += f64::from(s.volume.data[i]);
                        k += 1;
                    }
                }
                Some(mean_where(s, |m| m == 4) / (sum / k.max(1) as f64))
            };
            let (Some(t2), Some(flair), Some(swi), Some(gre)) = (
                contrast(MrSequence::T2),
                contrast(MrSequence::Flair),
                contrast(MrSequence::Swi),
                contrast(MrSequence::T2StarGre),
            ) else {
                continue;
            };
            // The shell's CSF and partial volume spread the scar's T2 ratio over 0.7–1.0
            // here; GRE and SWI put it at 0.2–0.4.
            assert!(t2 > 0.6 && flair > 0.7, "scar on T2 {t2}, FLAIR {flair}");
            assert!(swi < 0.45 && gre < 0.45, "scar on SWI {swi}, GRE {gre}");
            assert!(
                swi < t2 - 0.25,
                "SWI {swi} must show it far more than T2 {t2}"
            );
            seen += 1;
        }
        assert!(seen >= 2, "{seen} scars seen in 12 studies");
    }

    #[test]
    fn missing_sequences_and_config_checks() {
        let c = SynthConfig {
            mr: MrConfig {
                size: 32,
                p_missing_sequence: 0.6,
                ..MrConfig::default()
            },
            ..SynthConfig::default()
        };
        let mut some_missing = false;
        for i in 0..10 {
            let st = generate_mr_study(&c, 1, i).unwrap();
            assert!(!st.series.is_empty());
            assert_eq!(st.series.len() + st.missing.len(), 5);
            some_missing |= !st.missing.is_empty();
        }
        assert!(some_missing);
        let bad = SynthConfig {
            mr: MrConfig {
                snr: [40.0, 10.0],
                ..MrConfig::default()
            },
            ..SynthConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("mr.snr"));
    }
}
