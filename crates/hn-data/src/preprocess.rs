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
}

impl PreprocessConfig {
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
/// the HU windows as channels in [0, 1]. Slice labels are kept only when the slice count is
/// unchanged (resampling along k would misalign them).
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
    let data = window_channels(&vol, &windows);
    let [nx, ny, nz] = vol.dims;
    Ok(CachedStudy {
        shape: [windows.len(), nz, ny, nx],
        data,
        labels,
        slice_labels: slice_labels.filter(|s| nz == nz_in && s.len() == nz),
        spacing_mm: vol.spacing,
    })
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
