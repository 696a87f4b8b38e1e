//! What the engine feeds the network: one preprocessed study ([`StudySample`]) and batches of
//! them ([`make_batch`]).
//!
//! A sample is the model grid `[S, C, H, W]` (slices, windowed channels in [0, 1], rows,
//! columns) plus everything known about the study: labels, per-slice labels, clinical record,
//! outcomes and — on the synthetic cohort only — the generator's truth (oracle probabilities,
//! true hematoma facts) for the Bayes limit and the ICH-score baseline.

use hn_data::cache::{CachedStudy, PreprocessConfig};
use hn_data::synth::{SyntheticMrStudy, SyntheticStudy};
use hn_data::{ClinicalRecord, Outcomes, StudyLabels};
use hn_model::burn::prelude::Device;
use hn_model::{HematomaFacts, MODALITY_CT, MODALITY_MR, ModelInput, TargetRow};
use serde::{Deserialize, Serialize};

/// The default CT windows `(center, width)` in HU: brain, subdural, bone. One channel each.
pub use hn_imaging::transforms::DEFAULT_WINDOWS;

/// The preprocessing the engine uses for a model grid of `[slices, size, size]`.
pub fn default_preprocess(slices: usize, size: usize) -> PreprocessConfig {
    PreprocessConfig {
        windows: DEFAULT_WINDOWS.to_vec(),
        shape: Some([slices, size, size]),
        spacing_mm: None,
        dtype: hn_data::cache::CacheDtype::F16,
        // -2: cache entries of -1 dropped the slice labels of resampled studies.
        pipeline_version: "hn-engine-2".into(),
        antialias: true,
        mr_sequences: Vec::new(),
        mr_reduction: hn_imaging::mr::MrReduction::Mean,
        mr_bias_correction: None,
    }
}

/// The preprocessing of a model that reads MR as well as CT: [`default_preprocess`] plus one
/// channel per MR sequence ([`MrSequence::ALL`](hn_imaging::mr::MrSequence::ALL)).
pub fn mixed_preprocess(slices: usize, size: usize) -> PreprocessConfig {
    PreprocessConfig {
        mr_sequences: hn_imaging::mr::MrSequence::ALL.to_vec(),
        ..default_preprocess(slices, size)
    }
}

/// [`mixed_preprocess`] when the data hold MR studies, else [`default_preprocess`].
pub fn preprocess_for(slices: usize, size: usize, mr: bool) -> PreprocessConfig {
    if mr {
        mixed_preprocess(slices, size)
    } else {
        default_preprocess(slices, size)
    }
}

/// Facts only the synthetic generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyntheticTruth {
    /// The generator's true 30-day mortality probability (Bayes-optimal score).
    pub p_mortality_30d: f64,
    /// The generator's true probability of a poor 90-day outcome (mRS ≥ 4).
    pub p_poor_outcome_90d: f64,
    /// True hematoma volume in mL (all subtypes).
    pub total_ml: f64,
    /// True hematoma volume outside the ventricles (the ICH score's volume) in mL.
    pub parenchymal_ml: f64,
    pub ivh: bool,
    /// True intraventricular blood volume in mL.
    #[serde(default)]
    pub ivh_ml: f64,
    pub infratentorial: bool,
    /// The ICH score computed from the true facts and the *true* clinical GCS and age.
    pub ich_score: u8,
}

impl SyntheticTruth {
    /// The generator's truth of one patient (the same for its CT and MR studies).
    pub fn of(
        oracle: &hn_data::synth::OracleProbabilities,
        facts: &hn_data::synth::ImageFacts,
        clinical_truth: &ClinicalRecord,
        bleed: bool,
    ) -> Self {
        let t = clinical_truth;
        SyntheticTruth {
            p_mortality_30d: oracle.p_mortality_30d,
            p_poor_outcome_90d: oracle.p_poor_outcome_90d,
            total_ml: facts.total_ml,
            parenchymal_ml: facts.parenchymal_ml,
            ivh: facts.ivh,
            ivh_ml: facts.volume_ml[hn_data::Subtype::Intraventricular as usize],
            infratentorial: facts.infratentorial,
            ich_score: if bleed {
                hn_data::ich::ich_score(
                    t.gcs.unwrap_or(15),
                    f64::from(t.age.unwrap_or(65.0)),
                    &hn_data::ich::IchImageFacts {
                        volume_ml: facts.parenchymal_ml,
                        ivh: facts.ivh,
                        infratentorial: facts.infratentorial,
                    },
                )
                .expect("synthetic truth: GCS in 3..=15, age and volume >= 0")
            } else {
                0
            },
        }
    }
}

/// One preprocessed study.
#[derive(Debug, Clone)]
pub struct StudySample {
    pub key: String,
    pub patient_key: String,
    /// `[S, C, H, W]` values, C-order.
    pub images: Vec<f32>,
    /// `[S, C, H, W]`.
    pub shape: [usize; 4],
    /// `MODALITY_CT` or `MODALITY_MR`.
    pub modality: i64,
    /// Voxel spacing of the model grid in mm `[x, y, z]`.
    pub spacing_mm: [f64; 3],
    pub clinical: ClinicalRecord,
    pub labels: Option<StudyLabels>,
    /// Per-slice labels (length S) when known.
    pub slice_labels: Option<Vec<StudyLabels>>,
    /// Where in each slice the blood of each type lies, when a mask says so (the synthetic
    /// CT cohort): `S × G × G` bitmasks of [`hn_data::preprocess::resample_cell_labels`]
    /// (`G` = [`hn_data::preprocess::CELL_LABEL_GRID`]).
    pub cell_labels: Option<Vec<u8>>,
    pub outcomes: Outcomes,
    pub truth: Option<SyntheticTruth>,
}

impl StudySample {
    /// From a cache entry (`[C, S, H, W]`, transposed here to the model's `[S, C, H, W]`).
    pub fn from_cached(
        key: &str,
        patient_key: &str,
        cached: CachedStudy,
        clinical: ClinicalRecord,
        outcomes: Outcomes,
    ) -> Self {
        let [c, s, h, w] = cached.shape;
        let plane = h * w;
        let mut images = vec![0.0f32; c * s * plane];
        for ci in 0..c {
            for si in 0..s {
                let src = (ci * s + si) * plane;
                let dst = (si * c + ci) * plane;
                images[dst..dst + plane].copy_from_slice(&cached.data[src..src + plane]);
            }
        }
        StudySample {
            key: key.to_string(),
            patient_key: patient_key.to_string(),
            images,
            shape: [s, c, h, w],
            modality: MODALITY_CT,
            spacing_mm: cached.spacing_mm,
            clinical,
            labels: cached.labels,
            slice_labels: cached.slice_labels,
            cell_labels: None,
            outcomes,
            truth: None,
        }
    }

    /// From a generated synthetic study, preprocessed with `cfg` (resampled to its grid like a
    /// decoded DICOM study when rendered at another one; slice labels follow by coverage).
    pub fn from_synthetic(
        study: &SyntheticStudy,
        cfg: &PreprocessConfig,
    ) -> Result<Self, hn_imaging::transforms::TransformError> {
        let cached = hn_data::preprocess::preprocess(
            study.volume.clone(),
            Some(study.labels),
            Some(study.slice_labels.clone()),
            cfg,
        )?;
        let mut s = Self::from_cached(&study.id, &study.id, cached, study.clinical, study.outcomes);
        s.cell_labels = Some(hn_data::preprocess::resample_cell_labels(
            &study.mask,
            study.volume.dims,
            s.shape[0],
        ));
        s.truth = Some(SyntheticTruth::of(
            &study.oracle,
            &study.facts,
            &study.clinical_truth,
            study.labels.any,
        ));
        Ok(s)
    }

    /// From a generated synthetic MR study: its sequences brought onto one grid as a DICOM MR
    /// study is ([`hn_imaging::dicom::MrStudyRead::on_one_grid`]), then preprocessed with `cfg`
    /// ([`hn_data::preprocess::preprocess_mr`]). Key `<id>-MR`, patient key `<id>` (the CT twin
    /// of the same patient falls in the same split).
    pub fn from_synthetic_mr(
        study: &SyntheticMrStudy,
        cfg: &PreprocessConfig,
    ) -> Result<Self, hn_imaging::transforms::TransformError> {
        let stack = study
            .as_read()
            .on_one_grid(cfg.mr_reduction, cfg.mr_bias_correction.as_ref())?;
        let cached = hn_data::preprocess::preprocess_mr(
            &stack,
            Some(study.labels),
            study.slice_labels(stack.reference),
            cfg,
        )?;
        let mut s = Self::from_cached(
            &format!("{}-MR", study.id),
            &study.id,
            cached,
            study.clinical,
            study.outcomes,
        );
        s.modality = MODALITY_MR;
        s.truth = Some(SyntheticTruth::of(
            &study.oracle,
            &study.facts,
            &study.clinical_truth,
            study.labels.any,
        ));
        Ok(s)
    }

    /// The HU windows of this sample's channels, for augmentation that acts through them:
    /// `windows` for CT, none for MR (its channels are not HU).
    pub fn hu_windows<'a>(&self, windows: &'a [(f32, f32)]) -> &'a [(f32, f32)] {
        if self.modality == MODALITY_MR {
            &[]
        } else {
            windows
        }
    }

    /// Training targets of this sample.
    pub fn target_row(&self) -> TargetRow {
        TargetRow {
            study: self.labels.map(|l| (l.any, l.subtypes)),
            slices: self
                .slice_labels
                .as_ref()
                .filter(|s| s.len() == self.shape[0])
                .map(|s| s.iter().map(label_row).collect()),
            mortality: self.outcomes.mortality_30d,
            mrs: self.outcomes.mrs_90d,
            facts: self.truth.map(|t| HematomaFacts {
                hematoma_ml: t.parenchymal_ml,
                intraventricular_ml: t.ivh_ml,
                infratentorial: t.infratentorial,
            }),
        }
    }
}

/// `[any, 5 subtypes]` of a label set.
pub fn label_row(l: &StudyLabels) -> [bool; hn_model::N_LABELS] {
    let mut r = [false; hn_model::N_LABELS];
    r[0] = l.any;
    r[1..].copy_from_slice(&l.subtypes);
    r
}

/// Which inputs a batch hides from the network (modality dropout in training, single-path
/// ablations in evaluation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputMask {
    /// Every clinical value marked missing.
    pub hide_clinical: bool,
    /// Every image value set to 0 (air in every window).
    pub hide_images: bool,
}

/// Stack samples (same `[S, C, H, W]`) into one model input. `images` may override the
/// samples' own pixels (augmented copies), one buffer per sample.
pub fn make_batch(
    samples: &[&StudySample],
    images: Option<&[Vec<f32>]>,
    mask: InputMask,
    device: &Device,
) -> ModelInput {
    let b = samples.len();
    let [s, c, h, w] = samples[0].shape;
    let n = s * c * h * w;
    let mut img = Vec::with_capacity(b * n);
    let mut clin = Vec::with_capacity(b * hn_data::clinical::N_CLINICAL);
    let mut present = Vec::with_capacity(b * hn_data::clinical::N_CLINICAL);
    let mut modality = Vec::with_capacity(b);
    for (i, smp) in samples.iter().enumerate() {
        assert_eq!(
            smp.shape, samples[0].shape,
            "samples in a batch share a shape"
        );
        if mask.hide_images {
            img.resize(img.len() + n, 0.0);
        } else {
            match images {
                Some(over) => img.extend_from_slice(&over[i]),
                None => img.extend_from_slice(&smp.images),
            }
        }
        let (x, m) = smp.clinical.encode();
        if mask.hide_clinical {
            clin.extend(std::iter::repeat_n(0.0, x.len()));
            present.extend(std::iter::repeat_n(0.0, m.len()));
        } else {
            clin.extend_from_slice(&x);
            present.extend_from_slice(&m);
        }
        modality.push(smp.modality);
    }
    ModelInput::from_host(img, [b, s, c, h, w], clin, present, modality, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_layout_is_transposed_to_slices_first() {
        let cached = CachedStudy {
            shape: [2, 3, 1, 2],
            // channel c, slice s, pixel p → 100c + 10s + p
            data: (0..2)
                .flat_map(|c| {
                    (0..3).flat_map(move |s| (0..2).map(move |p| (100 * c + 10 * s + p) as f32))
                })
                .collect(),
            labels: None,
            slice_labels: None,
            spacing_mm: [1.0, 1.0, 5.0],
        };
        let s = StudySample::from_cached(
            "k",
            "p",
            cached,
            ClinicalRecord::default(),
            Outcomes::default(),
        );
        assert_eq!(s.shape, [3, 2, 1, 2]);
        // slice 2, channel 1, pixel 1
        assert_eq!(s.images[(2 * 2 + 1) * 2 + 1], 121.0);
        assert_eq!(s.images[2 * 2], 10.0);
    }
}

#[cfg(test)]
mod alignment_tests {
    use super::*;

    /// The model grid must keep the generator's voxel order: inside the true hematoma mask the
    /// preprocessed pixels (HU read back from the subdural window) are blood-dense, and the
    /// per-slice labels are exactly the slices the mask touches. A z-flip or transposition
    /// anywhere in preprocessing fails this.
    #[test]
    fn pixels_and_slice_labels_follow_the_mask() {
        let pre = default_preprocess(12, 48);
        let cfg = hn_data::synth::SynthConfig {
            size: 48,
            n_slices: Some(12),
            prevalence_bleed: 1.0,
            ..Default::default()
        };
        let (mut inside, mut n_in, mut flipped, mut n_fl) = (0.0, 0, 0.0, 0);
        for i in 0..6 {
            let st = hn_data::synth::generate_study(&cfg, 11, i);
            let s = StudySample::from_synthetic(&st, &pre).unwrap();
            let [ns, c, h, w] = s.shape;
            let labels = s.slice_labels.as_ref().unwrap();
            for k in 0..ns {
                let plane = &st.mask[k * h * w..(k + 1) * h * w];
                assert_eq!(
                    labels[k].any,
                    plane.iter().any(|m| *m > 0),
                    "slice {k} label"
                );
                let hu = |kk: usize, p: usize| -20.0 + s.images[(kk * c + 1) * h * w + p] * 200.0;
                for (p, m) in plane.iter().enumerate() {
                    if *m > 0 {
                        inside += f64::from(hu(k, p));
                        n_in += 1;
                        flipped += f64::from(hu(ns - 1 - k, p));
                        n_fl += 1;
                    }
                }
            }
        }
        let (a, b) = (inside / n_in as f64, flipped / n_fl as f64);
        assert!(a > 50.0, "mean HU inside the mask {a:.1}");
        assert!(a > b + 10.0, "inside {a:.1} vs z-flipped {b:.1}");
    }
}
