//! The preprocessing contract: how a decoded head CT becomes the model's input. One
//! [`PreprocessConfig`] (windows, grid, storage precision) travels in every model card, and
//! [`preprocess`] applies it the same way to a training study, a cached layout and a `predict`
//! request; [`check_head_ct`] refuses what no CT model can read.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StudyLabels;

/// How voxel values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheDtype {
    F32,
    /// IEEE half precision (~3 significant digits).
    F16,
    /// Linear 8-bit quantisation of `[lo, hi]` (values clamped): `q = round((v−lo)/(hi−lo)·255)`.
    U8 {
        lo: f32,
        hi: f32,
    },
}

impl CacheDtype {
    pub(crate) fn bytes(self) -> usize {
        match self {
            CacheDtype::F32 => 4,
            CacheDtype::F16 => 2,
            CacheDtype::U8 { .. } => 1,
        }
    }

    /// `v` as a stored entry gives it back. A study preprocessed without a cache (a `predict`
    /// request, a layout read with `--cache` off) is brought to the same precision, so the
    /// model sees the same values whichever way a study reached it.
    pub fn quantize(self, v: f32) -> f32 {
        match self {
            CacheDtype::F32 => v,
            CacheDtype::F16 => half::f16::from_f32(v).to_f32(),
            CacheDtype::U8 { lo, hi } => u8_value(u8_code(v, lo, hi), lo, hi),
        }
    }
}

pub(crate) fn u8_code(v: f32, lo: f32, hi: f32) -> u8 {
    let span = (hi - lo).max(f32::MIN_POSITIVE);
    ((v.clamp(lo, hi) - lo) / span * 255.0).round() as u8
}

pub(crate) fn u8_value(q: u8, lo: f32, hi: f32) -> f32 {
    lo + f32::from(q) / 255.0 * (hi - lo)
}

impl CachedStudy {
    /// These values at the precision `dtype` stores ([`CacheDtype::quantize`]).
    pub fn quantized(mut self, dtype: CacheDtype) -> Self {
        if dtype != CacheDtype::F32 {
            self.data.iter_mut().for_each(|v| *v = dtype.quantize(*v));
        }
        self
    }
}

/// The preprocessing that produced an entry. Every field is part of the cache key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// HU windows as `(center, width)`, one output channel each.
    pub windows: Vec<(f32, f32)>,
    /// Output grid `[S, H, W]` after resampling, when fixed.
    pub shape: Option<[usize; 3]>,
    /// Target voxel spacing in mm `[x, y, z]`, when resampled.
    pub spacing_mm: Option<[f64; 3]>,
    pub dtype: CacheDtype,
    /// Free-form version of the preprocessing code; bump to invalidate every entry.
    pub pipeline_version: String,
    /// Shrink with area averaging ([`hn_imaging::transforms::Interp::Area`]) instead of
    /// trilinear sampling, so every input voxel counts (a 512² slice resampled to 128² by
    /// trilinear sampling reads only half its rows and columns). Configs written before this
    /// field existed were trilinear: they read as `false`, and `false` is not written, so
    /// their cache keys and model cards stay valid.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub antialias: bool,
    /// MR input channels, one per sequence in this order ([`preprocess_mr`]); empty for a
    /// CT-only model (not written then, so CT cache keys and cards are unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mr_sequences: Vec<hn_imaging::mr::MrSequence>,
    /// How MR voxels are combined onto coarser grids (the study's common grid, then this
    /// one). The default, the mean, is what configs written before the choice existed did:
    /// it is not written, so their cache keys and cards stay valid.
    #[serde(default, skip_serializing_if = "hn_imaging::mr::MrReduction::is_mean")]
    pub mr_reduction: hn_imaging::mr::MrReduction,
    /// The N4 bias-field correction of each MR sequence before it is normalised
    /// ([`hn_imaging::bias`]); `None`, as every config written before it existed, is none (and
    /// is not written, so their cache keys and cards stay valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_bias_correction: Option<hn_imaging::bias::BiasCorrectionConfig>,
}

/// The value of an MR channel whose sequence the study lacks: a constant no present sequence
/// takes (normalised intensities are ≥ 0), so the network sees "absent", not a dark image,
/// and nothing is imputed.
pub const MISSING_CHANNEL: f32 = -1.0;

impl PreprocessConfig {
    /// Channels per slice of every study this config produces: the larger of the CT window
    /// count and the MR sequence count (a CT study's extra channels are 0, an MR study's
    /// extra channels [`MISSING_CHANNEL`]).
    pub fn channels(&self) -> usize {
        self.windows.len().max(self.mr_sequences.len())
    }

    /// First 16 hex digits of SHA-256 over the canonical JSON of the config.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("config serialises");
        hex(&Sha256::digest(&json))[..16].to_string()
    }
}

/// A preprocessed study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedStudy {
    /// `[C, S, H, W]`.
    pub shape: [usize; 4],
    /// `C·S·H·W` values, C-order (as stored, de-quantised to f32 on load).
    pub data: Vec<f32>,
    pub labels: Option<StudyLabels>,
    /// Per-slice labels (length S) when known.
    pub slice_labels: Option<Vec<StudyLabels>>,
    /// Voxel spacing of the stored grid in mm `[x, y, z]`.
    pub spacing_mm: [f64; 3],
}

/// Preprocess a decoded volume with `cfg` through `hn-imaging` transforms: resample to
/// `cfg.shape` (`[S, H, W]`; area-averaged where an axis shrinks when `cfg.antialias`, else
/// trilinear) when set, else to `cfg.spacing_mm` when set, then stack
/// the HU windows as channels in [0, 1]. Slice labels (one per input slice, in the volume's
/// slice order) are carried to the output slices by [`resample_slice_labels`].
pub fn preprocess(
    volume: hn_imaging::Volume,
    labels: Option<StudyLabels>,
    slice_labels: Option<Vec<StudyLabels>>,
    cfg: &PreprocessConfig,
) -> Result<CachedStudy, hn_imaging::transforms::TransformError> {
    use hn_imaging::transforms::{
        Interp, Resample, SliceTarget, Transform, Window, window_channels,
    };
    let nz_in = volume.dims[2];
    let interp = if cfg.antialias {
        Interp::Area
    } else {
        Interp::Linear
    };
    let resample = match (cfg.shape, cfg.spacing_mm) {
        (Some([s, h, w]), _) => Some(Resample {
            in_plane: Some((w, h)),
            slices: SliceTarget::Count(s),
            interp,
        }),
        (None, Some(sp)) => {
            let n = |i: usize| {
                ((volume.dims[i] as f64 * volume.spacing[i] / sp[i]).round() as usize).max(1)
            };
            Some(Resample {
                in_plane: Some((n(0), n(1))),
                slices: SliceTarget::Spacing(sp[2]),
                interp,
            })
        }
        (None, None) => None,
    };
    let vol = match resample {
        Some(r) => r.apply(volume)?,
        None => volume,
    };
    let windows: Vec<Window> = cfg
        .windows
        .iter()
        .enumerate()
        .map(|(i, (c, w))| Window::new(&format!("w{i}"), *c, *w))
        .collect();
    let mut data = window_channels(&vol, &windows);
    let [nx, ny, nz] = vol.dims;
    // Channels beyond the windows (a model that also reads MR): 0, air in every window.
    data.resize(cfg.channels() * nx * ny * nz, 0.0);
    Ok(CachedStudy {
        shape: [cfg.channels(), nz, ny, nx],
        data,
        labels,
        slice_labels: slice_labels
            .filter(|s| s.len() == nz_in)
            .map(|s| resample_slice_labels(&s, nz)),
        spacing_mm: vol.spacing,
    })
}

/// Preprocess an MR study already on one grid ([`hn_imaging::mr::MrStack`]: every sequence
/// normalised and resampled onto the reference sequence's grid, with `cfg.mr_reduction`) with
/// `cfg`: each channel of `cfg.mr_sequences` resampled to `cfg.shape` (where it shrinks,
/// combined as `cfg.mr_reduction` says: area-averaged when `cfg.antialias`, or the minimum for
/// a susceptibility sequence), a missing sequence the constant [`MISSING_CHANNEL`]. Slice labels (one per
/// slice of the reference grid) follow by coverage as for CT.
pub fn preprocess_mr(
    stack: &hn_imaging::mr::MrStack,
    labels: Option<StudyLabels>,
    slice_labels: Option<Vec<StudyLabels>>,
    cfg: &PreprocessConfig,
) -> Result<CachedStudy, hn_imaging::transforms::TransformError> {
    use hn_imaging::transforms::{Interp, Resample, SliceTarget, Transform, TransformError};
    let terr = |reason: String| TransformError {
        step: "preprocess_mr".into(),
        reason,
    };
    if cfg.mr_sequences.is_empty() {
        return Err(terr(
            "this preprocessing has no MR channels (a CT-only model)".into(),
        ));
    }
    let Some([s, h, w]) = cfg.shape else {
        return Err(terr("MR preprocessing needs a fixed grid shape".into()));
    };
    if stack.reduction != cfg.mr_reduction {
        return Err(terr(format!(
            "the study was brought onto one grid with {:?} but this preprocessing combines \
             voxels with {:?}",
            stack.reduction, cfg.mr_reduction
        )));
    }
    if stack.bias_correction != cfg.mr_bias_correction {
        return Err(terr(format!(
            "the study's sequences had bias-field correction {:?} but this preprocessing \
             asks for {:?}",
            stack.bias_correction, cfg.mr_bias_correction
        )));
    }
    let nz_in = stack.grid.dims[2];
    let mean = if cfg.antialias {
        Interp::Area
    } else {
        Interp::Linear
    };
    let plane = s * h * w;
    let mut data = vec![MISSING_CHANNEL; cfg.channels() * plane];
    let mut spacing = None;
    for (c, q) in cfg.mr_sequences.iter().enumerate() {
        if let Some(ch) = stack.channels.iter().find(|ch| ch.sequence == *q) {
            let resample = Resample {
                in_plane: Some((w, h)),
                slices: SliceTarget::Count(s),
                interp: cfg.mr_reduction.footprint(*q).interp(mean),
            };
            let v = resample.apply(ch.volume.clone())?;
            data[c * plane..(c + 1) * plane].copy_from_slice(&v.data);
            spacing.get_or_insert(v.spacing);
        }
    }
    let spacing_mm =
        spacing.ok_or_else(|| terr("the study has none of the model's sequences".into()))?;
    Ok(CachedStudy {
        shape: [cfg.channels(), s, h, w],
        data,
        labels,
        slice_labels: slice_labels
            .filter(|l| l.len() == nz_in)
            .map(|l| resample_slice_labels(&l, s)),
        spacing_mm,
    })
}

/// Fraction of a model slice that positive input slices must cover for the model slice to be
/// positive. A third: when 40 input slices of 5 mm become 16 of 12.5 mm, a bleed seen on one
/// input slice covers 40 % of its model slice, whose voxels hold that blood averaged in, so the
/// model slice is labelled positive; a bleed that only grazes a model slice's edge (under a
/// third of it) is not.
pub const SLICE_LABEL_COVERAGE: f64 = 1.0 / 3.0;

/// Labels of `n_out` resampled slices from the labels of the input slices: per label, a model
/// slice is positive when the input slices positive for that label cover at least
/// [`SLICE_LABEL_COVERAGE`] of its thickness (the footprints of
/// [`hn_imaging::transforms::slice_footprints`], the same geometry the resampler uses); `any`
/// is also set when a subtype is. With the same count this is the identity.
pub fn resample_slice_labels(input: &[StudyLabels], n_out: usize) -> Vec<StudyLabels> {
    // A hair under the rule so that a footprint of exactly a third, summed in floating point,
    // counts.
    let cut = SLICE_LABEL_COVERAGE - 1e-9;
    hn_imaging::transforms::slice_footprints(input.len(), n_out)
        .into_iter()
        .map(|fp| {
            let covered = |label: &dyn Fn(&StudyLabels) -> bool| -> bool {
                fp.iter()
                    .filter(|(i, _)| label(&input[*i]))
                    .map(|(_, w)| w)
                    .sum::<f64>()
                    >= cut
            };
            let subtypes: [bool; 5] = std::array::from_fn(|k| covered(&|l| l.subtypes[k]));
            StudyLabels {
                any: covered(&|l| l.any) || subtypes.iter().any(|b| *b),
                subtypes,
            }
        })
        .collect()
}

/// Cells per side of the label grid [`resample_cell_labels`] writes: a multiple of every
/// network cell grid of the configs in use (4² at 64², 6² at 96², 8² at 128², 12² at 192²), so
/// that each network cell pools exactly its own label cells.
pub const CELL_LABEL_GRID: usize = 24;

/// Where in each model slice the blood of each type lies: a generator mask (`dims = [nx, ny,
/// nz]`, 0 none, 1..=5 subtype index + 1; the whole field of view, as the preprocessing
/// resamples it) on a [`CELL_LABEL_GRID`]² grid of cells per slice for `n_out` model
/// slices. Each cell's column of input slices is labelled as slices are (a label is present
/// in a cell of an input slice when any of its voxels there has it) and carried to the model
/// slices by [`resample_slice_labels`], the slice rule. Returns `n_out × G × G` bitmasks, row
/// by row: bit 0 any blood, bit `k + 1` subtype `k`.
pub fn resample_cell_labels(mask: &[u8], dims: [usize; 3], n_out: usize) -> Vec<u8> {
    let g = CELL_LABEL_GRID;
    let [nx, ny, nz] = dims;
    let mut per_input = vec![[false; 5]; nz * g * g];
    for k in 0..nz {
        for y in 0..ny {
            let gy = y * g / ny;
            for x in 0..nx {
                let m = mask[(k * ny + y) * nx + x];
                if m > 0 {
                    per_input[(k * g + gy) * g + x * g / nx][m as usize - 1] = true;
                }
            }
        }
    }
    let mut out = vec![0u8; n_out * g * g];
    for cell in 0..g * g {
        let column: Vec<StudyLabels> = (0..nz)
            .map(|k| {
                let subtypes = per_input[k * g * g + cell];
                StudyLabels {
                    any: subtypes.iter().any(|b| *b),
                    subtypes,
                }
            })
            .collect();
        for (z, l) in resample_slice_labels(&column, n_out).iter().enumerate() {
            out[z * g * g + cell] = u8::from(l.any)
                | l.subtypes
                    .iter()
                    .enumerate()
                    .fold(0u8, |acc, (t, b)| acc | (u8::from(*b) << (t + 1)));
        }
    }
    out
}

/// Lower-case hex of `b`.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// In-plane pixels a study needs at least.
pub const MIN_IN_PLANE: usize = 16;
/// Axial slices a study needs at least.
pub const MIN_SLICES: usize = 2;
/// The HU a head CT must reach somewhere (air below, bone above), or the values are not HU.
pub const AIR_HU: f32 = -200.0;
pub const BONE_HU: f32 = 200.0;

/// Why `volume` cannot be read as a head CT in Hounsfield units, if it cannot: too few pixels
/// or slices, an MR or other modality, non-finite voxels, or values that never reach air and
/// bone (not HU, or the rescale not applied).
pub fn check_head_ct(volume: &hn_imaging::Volume) -> Result<(), String> {
    use hn_imaging::Modality;
    let [nx, ny, nz] = volume.dims;
    if nx < MIN_IN_PLANE || ny < MIN_IN_PLANE {
        return Err(format!(
            "slices are {nx}×{ny} pixels; at least {MIN_IN_PLANE}×{MIN_IN_PLANE} are needed"
        ));
    }
    if nz < MIN_SLICES {
        return Err(format!(
            "{nz} slice(s); a head CT volume of at least {MIN_SLICES} axial slices is needed"
        ));
    }
    match &volume.modality {
        Modality::Mr => {
            return Err(
                "MR study: this model reads CT in Hounsfield units (its windows are HU)".into(),
            );
        }
        Modality::Other(code) if code != "NIfTI" => {
            return Err(format!(
                "modality {code}: this model reads CT in Hounsfield units"
            ));
        }
        _ => {}
    }
    if let Some(i) = volume.data.iter().position(|v| !v.is_finite()) {
        return Err(format!("voxel {i} is not a finite number"));
    }
    let (lo, hi) = volume.min_max().unwrap_or((0.0, 0.0));
    if lo > AIR_HU || hi < BONE_HU {
        return Err(format!(
            "values span {lo:.0}..{hi:.0}; a head CT in Hounsfield units has air \
             (< {AIR_HU}) and bone (> {BONE_HU}) — is this CT, and is the rescale applied?"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(k: usize) -> StudyLabels {
        let mut subtypes = [false; 5];
        subtypes[k] = true;
        StudyLabels {
            any: true,
            subtypes,
        }
    }

    #[test]
    fn slice_labels_follow_the_coverage_rule() {
        // 40 slices to 16: each model slice spans 2.5 input slices, so one positive input slice
        // covers 40 % of the model slice it lies inside (positive) and 20 % of a model slice
        // it only shares with a neighbour (negative).
        let mut input = vec![StudyLabels::default(); 40];
        input[11] = pos(2); // inside model slice 4 ([10, 12.5))
        input[12] = pos(2); // half in model slice 4, half in 5 ([12.5, 15))
        let out = resample_slice_labels(&input, 16);
        let positive: Vec<usize> = (0..16).filter(|&t| out[t].subtypes[2]).collect();
        // Model slice 4: 1 + 0.5 of 2.5 = 60 %; model slice 5: 0.5 of 2.5 = 20 %.
        assert_eq!(positive, vec![4]);
        assert!(out[4].any);
        // A subtype without `any` in the input still sets `any` (a label set never says
        // "subdural but no bleed").
        let odd = vec![StudyLabels {
            any: false,
            subtypes: [true, false, false, false, false],
        }];
        assert!(resample_slice_labels(&odd, 2).iter().all(|l| l.any));
        // Growing 8 -> 24 copies each label onto the three slices inside it.
        let mut input = vec![StudyLabels::default(); 8];
        input[3] = pos(0);
        let out = resample_slice_labels(&input, 24);
        let positive: Vec<usize> = (0..24).filter(|&t| out[t].any).collect();
        assert_eq!(positive, vec![9, 10, 11]);
        // The same count is the identity.
        let same: Vec<StudyLabels> = (0..6).map(|k| pos(k % 5)).collect();
        assert_eq!(resample_slice_labels(&same, 6), same);
    }

    #[test]
    fn cell_labels_say_where_each_type_lies_and_follow_the_slice_rule() {
        let g = CELL_LABEL_GRID;
        // 64 × 32 pixels, 4 input slices → 2 model slices. A subdural voxel in the top left
        // of slice 0, subarachnoid voxels at the bottom right of slices 2 and 3.
        let (nx, ny, nz) = (64, 32, 4);
        let mut mask = vec![0u8; nx * ny * nz];
        mask[1] = 2;
        for k in 2..4 {
            mask[(k * ny + ny - 1) * nx + nx - 1] = 3;
        }
        let out = resample_cell_labels(&mask, [nx, ny, nz], 2);
        assert_eq!(out.len(), 2 * g * g);
        // Pixel (x 1, y 0) lies in cell (0, 0); (63, 31) in cell (15, 15).
        assert_eq!(out[0], 0b101, "any + subdural");
        assert_eq!(out[g * g + g * g - 1], 0b1001, "any + subarachnoid");
        // Nothing else is labelled: slice 0 of model slice 1 saw no blood.
        assert_eq!(out.iter().filter(|b| **b != 0).count(), 2);
        // Each cell column follows the slice rule: the same as the slice labels of a mask
        // made of that cell alone.
        let column: Vec<StudyLabels> = (0..nz)
            .map(|k| {
                if k >= 2 {
                    pos(2)
                } else {
                    StudyLabels::default()
                }
            })
            .collect();
        let slices = resample_slice_labels(&column, 2);
        assert_eq!(slices[1].subtypes[2], out[g * g + g * g - 1] & 0b1000 != 0);
        assert!(!slices[0].any && out[g * g - 1] == 0);
    }
}

#[cfg(test)]
mod mr_tests {
    use super::*;
    use hn_imaging::mr::{MrChannel, MrReduction, MrSequence, MrStack};

    /// Two sequences on a 16² × 8 grid, parenchyma 1, each with one dark voxel (a void).
    fn stack(reduction: MrReduction) -> MrStack {
        let channel = |sequence| {
            let mut v = hn_imaging::Volume::new(
                vec![1.0; 16 * 16 * 8],
                [16, 16, 8],
                [1.0, 1.0, 2.0],
                hn_imaging::Modality::Other("mr-normalised".into()),
            )
            .unwrap();
            let i = v.index(5, 9, 3);
            v.data[i] = 0.0;
            MrChannel {
                sequence,
                volume: v,
                coverage: 1.0,
                scale: 1.0,
                bias_field: None,
            }
        };
        let channels = vec![channel(MrSequence::T2), channel(MrSequence::Swi)];
        MrStack {
            reference: MrSequence::T2,
            grid: channels[0].volume.grid(),
            channels,
            missing: vec![MrSequence::T1],
            reduction,
            bias_correction: None,
        }
    }

    fn cfg(reduction: MrReduction) -> PreprocessConfig {
        PreprocessConfig {
            windows: vec![(40.0, 80.0)],
            shape: Some([4, 8, 8]),
            spacing_mm: None,
            dtype: CacheDtype::F32,
            pipeline_version: "test".into(),
            antialias: true,
            mr_sequences: vec![MrSequence::T1, MrSequence::T2, MrSequence::Swi],
            mr_reduction: reduction,
            mr_bias_correction: None,
        }
    }

    #[test]
    fn susceptibility_channels_keep_a_small_void_the_others_average() {
        let r = MrReduction::SusceptibilityMinimum;
        let out = preprocess_mr(&stack(r), None, None, &cfg(r)).unwrap();
        assert_eq!(out.shape, [3, 4, 8, 8]);
        let plane = 4 * 8 * 8;
        let darkest = |c: usize| {
            out.data[c * plane..(c + 1) * plane]
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min)
        };
        // T1 is missing: the constant, not an image.
        assert!(out.data[..plane].iter().all(|v| *v == MISSING_CHANNEL));
        // T2 averages the void over 2 × 2 × 2 voxels; SWI keeps it black.
        assert!((darkest(1) - 0.875).abs() < 1e-6, "{}", darkest(1));
        assert_eq!(darkest(2), 0.0);
        // Under the legacy reduction both average.
        let m = MrReduction::Mean;
        let legacy = preprocess_mr(&stack(m), None, None, &cfg(m)).unwrap();
        assert!(legacy.data[2 * plane..].iter().all(|v| *v > 0.8));
        // A card's legacy field: absent in JSON reads as the mean, and is not written.
        let mut j = serde_json::to_value(cfg(m)).unwrap();
        assert!(j.get("mr_reduction").is_none());
        j["mr_reduction"] = "susceptibility_minimum".into();
        assert_eq!(
            serde_json::from_value::<PreprocessConfig>(j).unwrap(),
            cfg(r)
        );
    }

    #[test]
    fn a_stack_gridded_another_way_than_the_config_says_is_an_error() {
        let e = preprocess_mr(
            &stack(MrReduction::Mean),
            None,
            None,
            &cfg(MrReduction::SusceptibilityMinimum),
        )
        .unwrap_err();
        assert!(e.to_string().contains("combines voxels"), "{e}");
        // So is a stack corrected (or not) otherwise than the config says.
        let mut corrected = cfg(MrReduction::Mean);
        corrected.mr_bias_correction = Some(Default::default());
        let e = preprocess_mr(&stack(MrReduction::Mean), None, None, &corrected).unwrap_err();
        assert!(e.to_string().contains("bias-field correction"), "{e}");
        // The field is not written when absent (old cards and cache keys stay valid), and
        // an empty table in a config means the defaults.
        let j = serde_json::to_value(cfg(MrReduction::Mean)).unwrap();
        assert!(j.get("mr_bias_correction").is_none());
        let mut j = j;
        j["mr_bias_correction"] = serde_json::json!({});
        assert_eq!(
            serde_json::from_value::<PreprocessConfig>(j).unwrap(),
            corrected
        );
    }
}
