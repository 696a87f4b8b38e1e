//! Generator configuration: TOML-loadable, every field defaulted.

use serde::{Deserialize, Serialize};
use std::path::Path;

use super::SynthError;

/// How a synthetic cohort is generated. Every field has a default, so a TOML file only needs
/// the fields it changes (unknown fields are an error, so typos do not pass silently).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// In-plane matrix size (nx = ny). 512 is clinical; 128 is the training default.
    pub size: usize,
    /// Fixed number of slices. When set, slice thickness = head coverage / n_slices.
    /// When `None` or 0 (TOML: `n_slices = 0`), thickness is drawn from `slice_thickness_mm`
    /// and the count follows from the head coverage.
    pub n_slices: Option<usize>,
    /// Range of slice thickness (mm) used when `n_slices` is `None`.
    pub slice_thickness_mm: [f64; 2],
    /// Range of the reconstruction field of view (mm); pixel spacing = fov / size.
    pub fov_mm: [f64; 2],
    /// Range of image noise standard deviation (HU).
    pub noise_sd_hu: [f64; 2],
    /// Sub-samples per slice along z for partial volume (0 = automatic from thickness).
    pub z_supersample: usize,
    /// Fraction of studies with any hemorrhage.
    pub prevalence_bleed: f64,
    /// Relative frequency of the primary bleed subtype, in `SUBTYPES` order
    /// (epidural, subdural, subarachnoid, intraparenchymal, intraventricular).
    pub primary_subtype_weights: [f64; 5],
    /// Probability that an intraparenchymal bleed extends into the ventricles.
    pub p_ivh_extension: f64,
    /// Probability of a hyperacute (heterogeneous, lower HU) bleed.
    pub p_hyperacute: f64,
    /// Probability of a subacute (near-isodense) bleed.
    pub p_subacute: f64,
    /// Probability of a small (< 1 mL) intraparenchymal bleed.
    pub p_small_bleed: f64,
    /// Probability that a subdural is thin (2–4 mm).
    pub p_thin_subdural: f64,
    /// Probability of a gantry-tilt-like head pitch (10–20°).
    pub p_gantry_tilt: f64,
    /// Probability that one slice is missing from the DICOM series (the volume keeps it).
    pub p_missing_slice: f64,
    /// Strength multiplier of beam-hardening streaks near the skull base (0 = none).
    pub beam_hardening: f64,
    /// Default cohort seed when none is given on the command line.
    pub seed: u64,
    /// Which modalities a written cohort holds (`synth --modality`).
    #[serde(skip_serializing_if = "CohortModality::is_ct")]
    pub modality: CohortModality,
    /// MR sequences, contrasts and scanner effects (`[mr]`).
    #[serde(skip_serializing_if = "super::mr::MrConfig::is_default")]
    pub mr: super::mr::MrConfig,
    /// What real CT scans carry that the phantom lacks (`[artifacts]`; all off by default).
    #[serde(skip_serializing_if = "super::artifacts::ArtifactConfig::is_default")]
    pub artifacts: super::artifacts::ArtifactConfig,
}

/// The imaging modalities of a synthetic cohort: every patient is imaged with CT, with MR,
/// or with both (the same lesions and outcomes either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CohortModality {
    #[default]
    Ct,
    Mr,
    Both,
}

impl CohortModality {
    pub fn is_ct(&self) -> bool {
        *self == CohortModality::Ct
    }
    pub fn has_ct(self) -> bool {
        matches!(self, CohortModality::Ct | CohortModality::Both)
    }
    pub fn has_mr(self) -> bool {
        matches!(self, CohortModality::Mr | CohortModality::Both)
    }
}

impl std::str::FromStr for CohortModality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ct" => Ok(Self::Ct),
            "mr" => Ok(Self::Mr),
            "both" => Ok(Self::Both),
            o => Err(format!("unknown modality {o:?} (ct|mr|both)")),
        }
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            size: 128,
            n_slices: Some(24),
            slice_thickness_mm: [2.5, 5.0],
            fov_mm: [220.0, 250.0],
            noise_sd_hu: [3.0, 10.0],
            z_supersample: 0,
            prevalence_bleed: 0.5,
            primary_subtype_weights: [0.08, 0.24, 0.18, 0.42, 0.08],
            p_ivh_extension: 0.35,
            p_hyperacute: 0.08,
            p_subacute: 0.08,
            p_small_bleed: 0.08,
            p_thin_subdural: 0.25,
            p_gantry_tilt: 0.05,
            p_missing_slice: 0.02,
            beam_hardening: 1.0,
            seed: 2026,
            modality: CohortModality::Ct,
            mr: super::mr::MrConfig::default(),
            artifacts: super::artifacts::ArtifactConfig::default(),
        }
    }
}

impl SynthConfig {
    /// Load from a TOML file; missing fields take defaults.
    pub fn from_toml_file(path: &Path) -> Result<Self, SynthError> {
        let text = std::fs::read_to_string(path).map_err(|e| SynthError::Io {
            path: path.to_path_buf(),
            cause: e,
        })?;
        let cfg: SynthConfig = toml::from_str(&text).map_err(|e| SynthError::Config {
            path: Some(path.to_path_buf()),
            msg: e.to_string(),
        })?;
        cfg.validate().map_err(|msg| SynthError::Config {
            path: Some(path.to_path_buf()),
            msg,
        })?;
        Ok(cfg)
    }

    /// Check ranges; returns a human-readable reason when invalid.
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=1024).contains(&self.size) {
            return Err(format!("size {} must be in 16..=1024", self.size));
        }
        if let Some(n) = self.n_slices
            && n != 0
            && !(2..=512).contains(&n)
        {
            return Err(format!("n_slices {n} must be 0 (automatic) or in 2..=512"));
        }
        ordered_range("slice_thickness_mm", self.slice_thickness_mm, 0.5, 10.0, "")?;
        ordered_range("fov_mm", self.fov_mm, 200.0, 400.0, " (the head must fit)")?;
        ordered_range("noise_sd_hu", self.noise_sd_hu, 0.0, 100.0, "")?;
        if self.z_supersample > 8 {
            return Err(format!("z_supersample {} must be <= 8", self.z_supersample));
        }
        for (name, p) in [
            ("prevalence_bleed", self.prevalence_bleed),
            ("p_ivh_extension", self.p_ivh_extension),
            ("p_hyperacute", self.p_hyperacute),
            ("p_subacute", self.p_subacute),
            ("p_small_bleed", self.p_small_bleed),
            ("p_thin_subdural", self.p_thin_subdural),
            ("p_gantry_tilt", self.p_gantry_tilt),
            ("p_missing_slice", self.p_missing_slice),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} = {p} must be a probability in 0..=1"));
            }
        }
        if self.p_hyperacute + self.p_subacute > 1.0 {
            return Err("p_hyperacute + p_subacute must be <= 1".into());
        }
        let w = self.primary_subtype_weights;
        if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
            return Err(format!(
                "primary_subtype_weights {w:?} must be non-negative with a positive sum"
            ));
        }
        if !(0.0..=10.0).contains(&self.beam_hardening) {
            return Err(format!(
                "beam_hardening {} must be in 0..=10",
                self.beam_hardening
            ));
        }
        self.artifacts.validate()?;
        self.mr.validate()
    }
}

/// A named variation of the generator for the shift suite (`hemorrhagenet shift-suite`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftPreset {
    pub name: &'static str,
    pub description: &'static str,
    pub config: SynthConfig,
}

/// The shift suite's built-in cohorts: the generator's own distribution brought through the
/// scanner-resolution path, and shifts of scanner, slice thickness and case mix away from it.
/// Chosen to probe what a new site changes, not tuned to any one model.
pub fn shift_presets() -> Vec<ShiftPreset> {
    let base = SynthConfig {
        n_slices: None,
        ..SynthConfig::default()
    };
    vec![
        ShiftPreset {
            name: "reference",
            description: "the generator's defaults at 128², 2.5–5 mm slices, through DICOM and resampling",
            config: base.clone(),
        },
        ShiftPreset {
            name: "scanner",
            description: "256², wider field of view (230–280 mm), noise 8–16 HU, beam hardening ×2, 30 % gantry tilt",
            config: SynthConfig {
                size: 256,
                fov_mm: [230.0, 280.0],
                noise_sd_hu: [8.0, 16.0],
                beam_hardening: 2.0,
                p_gantry_tilt: 0.3,
                ..base.clone()
            },
        },
        ShiftPreset {
            name: "thick_slices",
            description: "7–10 mm slices (older or fast protocols), 128²",
            config: SynthConfig {
                slice_thickness_mm: [7.0, 10.0],
                ..base.clone()
            },
        },
        ShiftPreset {
            name: "artifacts",
            description: "every scan with the table and head holder; kernels up to very sharp (0–2), HU offsets ±8, heads off-centre (σ 10 mm) and turned (σ 8°), 35 % partial coverage, 30 % motion, 35 % metal",
            config: SynthConfig {
                artifacts: super::artifacts::ArtifactConfig {
                    sharpness: [0.0, 2.0],
                    hu_offset: [-8.0, 8.0],
                    p_head_holder: 1.0,
                    off_centre_sd_mm: 10.0,
                    rotation_sd_deg: 8.0,
                    p_partial_coverage: 0.35,
                    p_motion: 0.3,
                    p_metal: 0.35,
                },
                ..base.clone()
            },
        },
        ShiftPreset {
            name: "case_mix",
            description: "35 % bleeding; more small (40 %), thin subdural (60 %), subacute (30 %) and hyperacute (15 %) bleeds",
            config: SynthConfig {
                prevalence_bleed: 0.35,
                p_small_bleed: 0.4,
                p_thin_subdural: 0.6,
                p_subacute: 0.3,
                p_hyperacute: 0.15,
                ..base
            },
        },
    ]
}

/// `Ok` when `r` is a finite, ordered `[low, high]` range within `lo..=hi`; otherwise the
/// reason, naming the setting `name` (`suffix` adds a unit or why the bound exists). The one
/// range rule of every `[synth]` section's validation.
pub(crate) fn ordered_range(
    name: &str,
    r: [f64; 2],
    lo: f64,
    hi: f64,
    suffix: &str,
) -> Result<(), String> {
    if r[0].is_finite() && r[1].is_finite() && r[0] >= lo && r[1] <= hi && r[0] <= r[1] {
        Ok(())
    } else {
        Err(format!(
            "{name} {r:?} must be an ordered range within {lo}..{hi}{suffix}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_rule_refuses_reversed_unbounded_and_non_finite_ranges_naming_the_setting() {
        assert_eq!(ordered_range("x", [1.0, 2.0], 0.0, 2.0, ""), Ok(()));
        assert_eq!(ordered_range("x", [2.0, 2.0], 0.0, 2.0, ""), Ok(()));
        for bad in [
            [2.0, 1.0],
            [-0.1, 1.0],
            [0.0, 2.1],
            [f64::NAN, 1.0],
            [0.0, f64::INFINITY],
        ] {
            let e = ordered_range("fov_mm", bad, 0.0, 2.0, " (why)").unwrap_err();
            assert!(e.starts_with("fov_mm "), "{e}");
            assert!(e.ends_with("within 0..2 (why)"), "{e}");
        }
    }

    #[test]
    fn every_section_applies_the_range_rule() {
        let ok = SynthConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.fov_mm = [300.0, 250.0];
        assert!(c.validate().unwrap_err().contains("fov_mm"));
        let mut c = ok.clone();
        c.mr.snr = [1.0, 50.0];
        assert!(c.validate().unwrap_err().contains("mr.snr"));
        let mut c = ok;
        c.artifacts.hu_offset = [-40.0, 0.0];
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("artifacts.hu_offset") && e.ends_with("HU"),
            "{e}"
        );
    }
}
