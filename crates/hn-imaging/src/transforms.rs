//! Small composable volume transforms, in the style of MONAI: each step does one thing, has a
//! name, and fails with an error naming the step, so a preprocessing pipeline that breaks on
//! one study tells you *which* step and *why* instead of a shape mismatch three layers later.
//!
//! Geometry is kept honest: every step that changes the grid (resample, crop/pad) updates
//! spacing and origin so voxel (i, j, k) still maps to the same place in LPS space.

use crate::{Modality, Volume};

/// A failed transform step.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("transform {step}: {reason}")]
pub struct TransformError {
    pub step: String,
    pub reason: String,
}

fn terr(step: &str, reason: impl Into<String>) -> TransformError {
    TransformError {
        step: step.into(),
        reason: reason.into(),
    }
}

/// One preprocessing step.
pub trait Transform: Send + Sync {
    /// Short human-readable name, used in errors and provenance notes.
    fn name(&self) -> String;
    fn apply(&self, vol: Volume) -> Result<Volume, TransformError>;
}

/// Steps applied in order; each appends a provenance note.
#[derive(Default)]
pub struct Compose {
    pub steps: Vec<Box<dyn Transform>>,
}

impl Compose {
    pub fn new(steps: Vec<Box<dyn Transform>>) -> Self {
        Compose { steps }
    }
}

impl Transform for Compose {
    fn name(&self) -> String {
        let names: Vec<String> = self.steps.iter().map(|s| s.name()).collect();
        format!("Compose[{}]", names.join(", "))
    }
    fn apply(&self, mut vol: Volume) -> Result<Volume, TransformError> {
        for s in &self.steps {
            vol = s.apply(vol)?;
            vol.provenance
                .notes
                .push(format!("transform: {}", s.name()));
        }
        Ok(vol)
    }
}

// ---------------------------------------------------------------------------------------------
// HU windows

/// Brain window `(center, width)` in HU.
pub const BRAIN_WINDOW: (f32, f32) = (40.0, 80.0);
/// Subdural window `(center, width)` in HU.
pub const SUBDURAL_WINDOW: (f32, f32) = (80.0, 200.0);
/// Bone window `(center, width)` in HU.
pub const BONE_WINDOW: (f32, f32) = (600.0, 2800.0);
/// The three hemorrhage windows stacked as input channels: brain, subdural, bone.
pub const DEFAULT_WINDOWS: [(f32, f32); 3] = [BRAIN_WINDOW, SUBDURAL_WINDOW, BONE_WINDOW];

/// A display window (level/width) mapping HU to [0, 1].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub name: String,
    pub center: f32,
    pub width: f32,
}

impl Window {
    pub fn new(name: &str, center: f32, width: f32) -> Self {
        Window {
            name: name.into(),
            center,
            width,
        }
    }
    /// [`BRAIN_WINDOW`].
    pub fn brain() -> Self {
        Window::new("brain", BRAIN_WINDOW.0, BRAIN_WINDOW.1)
    }
    /// [`SUBDURAL_WINDOW`].
    pub fn subdural() -> Self {
        Window::new("subdural", SUBDURAL_WINDOW.0, SUBDURAL_WINDOW.1)
    }
    /// [`BONE_WINDOW`].
    pub fn bone() -> Self {
        Window::new("bone", BONE_WINDOW.0, BONE_WINDOW.1)
    }
    /// The three default hemorrhage windows: brain, subdural, bone.
    pub fn defaults() -> Vec<Window> {
        vec![Window::brain(), Window::subdural(), Window::bone()]
    }
    /// Map one value to [0, 1] (linear between center ± width/2, clipped).
    #[inline]
    pub fn apply(&self, hu: f32) -> f32 {
        let lo = self.center - self.width / 2.0;
        ((hu - lo) / self.width).clamp(0.0, 1.0)
    }
}

/// Stack windows as channels: `[C][nz][ny][nx]` channels-first, values in [0, 1].
/// NaN voxels map to 0.
pub fn window_channels(vol: &Volume, windows: &[Window]) -> Vec<f32> {
    let n = vol.data.len();
    let mut out = vec![0f32; n * windows.len()];
    for (c, w) in windows.iter().enumerate() {
        let dst = &mut out[c * n..(c + 1) * n];
        for (d, &v) in dst.iter_mut().zip(&vol.data) {
            *d = if v.is_nan() { 0.0 } else { w.apply(v) };
        }
    }
    out
}

/// Single-window transform: values become the window's [0, 1] mapping.
pub struct HuWindow(pub Window);

impl Transform for HuWindow {
    fn name(&self) -> String {
        format!(
            "HuWindow({} {}/{})",
            self.0.name, self.0.center, self.0.width
        )
    }
    fn apply(&self, mut vol: Volume) -> Result<Volume, TransformError> {
        if self.0.width.is_nan() || self.0.width <= 0.0 {
            return Err(terr(&self.name(), "window width must be > 0"));
        }
        if !vol.modality.is_hu() {
            return Err(terr(
                &self.name(),
                format!("{:?} values are not Hounsfield units", vol.modality),
            ));
        }
        for v in vol.data.iter_mut() {
            *v = if v.is_nan() { 0.0 } else { self.0.apply(*v) };
        }
        Ok(vol)
    }
}

// ---------------------------------------------------------------------------------------------
// Resampling

/// Interpolation for [`Resample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Trilinear: images.
    Linear,
    /// Nearest neighbour: label masks (never invents labels).
    Nearest,
    /// Anti-aliased images: along an axis that shrinks, each output voxel is the mean of the
    /// input over its footprint (box filter, partial voxels weighted by overlap: "area"
    /// interpolation, OpenCV's `INTER_AREA`); along an axis that keeps or grows its size,
    /// linear. Trilinear sampling reads only the 2 nearest input voxels per axis, so shrinking
    /// a 512² CT slice to 128² with it ignores 3 of every 4 rows and columns, and a
    /// one-voxel-wide rim of blood can vanish or not depending on where it falls on the grid.
    /// Area keeps every input voxel's contribution (and the image mean).
    Area,
    /// Minimum-intensity: along an axis that shrinks, each output voxel is the minimum of the
    /// input voxels whose centres lie in its footprint; along an axis that keeps or grows its
    /// size, linear. For images whose finding is dark and small (susceptibility voids,
    /// [`crate::mr::MrReduction`]), which an average would fade.
    Minimum,
}

/// How the samples inside one target voxel's footprint are combined ([`resample_onto`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Footprint {
    Mean,
    /// The darkest sample: a minimum-intensity projection over the footprint.
    Minimum,
}

impl Footprint {
    /// The [`Resample`] interpolation that combines a shrinking axis the same way; `mean` is
    /// the one used for averaging ([`Interp::Area`] or [`Interp::Linear`]).
    pub fn interp(self, mean: Interp) -> Interp {
        match self {
            Footprint::Mean => mean,
            Footprint::Minimum => Interp::Minimum,
        }
    }
}

/// What to do along k in [`Resample`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SliceTarget {
    Keep,
    Count(usize),
    /// Slice spacing in mm; the count follows from the extent.
    Spacing(f64),
}

/// Resample to an in-plane size (nx, ny) and a slice count or spacing. Voxel centres keep the
/// same field of view (the "align centres" convention), so origin and spacing are updated.
pub struct Resample {
    pub in_plane: Option<(usize, usize)>,
    pub slices: SliceTarget,
    pub interp: Interp,
}

impl Transform for Resample {
    fn name(&self) -> String {
        format!(
            "Resample(in_plane {:?}, slices {:?}, {:?})",
            self.in_plane, self.slices, self.interp
        )
    }
    fn apply(&self, vol: Volume) -> Result<Volume, TransformError> {
        let name = self.name();
        let [nx, ny, nz] = vol.dims;
        if vol.is_empty() {
            return Err(terr(&name, "empty volume"));
        }
        let (tx, ty) = self.in_plane.unwrap_or((nx, ny));
        let tz = match self.slices {
            SliceTarget::Keep => nz,
            SliceTarget::Count(n) => n,
            SliceTarget::Spacing(mm) => {
                if !(mm > 0.0 && mm.is_finite()) {
                    return Err(terr(&name, format!("slice spacing {mm} must be > 0")));
                }
                ((nz as f64 * vol.spacing[2]) / mm).round().max(1.0) as usize
            }
        };
        if tx == 0 || ty == 0 || tz == 0 {
            return Err(terr(&name, "target size must be > 0"));
        }
        let target = [tx, ty, tz];
        let scale: [f64; 3] = std::array::from_fn(|a| vol.dims[a] as f64 / target[a] as f64);
        // Source coordinate of target index t along axis a.
        let src = |a: usize, t: usize| -> f64 {
            ((t as f64 + 0.5) * scale[a] - 0.5).clamp(0.0, (vol.dims[a] - 1) as f64)
        };
        if self.interp == Interp::Area {
            let data = area_resample(&vol, target);
            return finish(data, &vol, target, scale).map_err(|e| terr(&name, e));
        }
        if self.interp == Interp::Minimum {
            let data = minimum_resample(&vol, target);
            return finish(data, &vol, target, scale).map_err(|e| terr(&name, e));
        }
        let xs: Vec<f64> = (0..tx).map(|t| src(0, t)).collect();
        let ys: Vec<f64> = (0..ty).map(|t| src(1, t)).collect();
        let zs: Vec<f64> = (0..tz).map(|t| src(2, t)).collect();
        let mut data = vec![0f32; tx * ty * tz];
        let get = |i: usize, j: usize, k: usize| vol.data[(k * ny + j) * nx + i];
        use rayon::prelude::*;
        data.par_chunks_mut(tx * ty)
            .enumerate()
            .for_each(|(k, plane)| {
                let z = zs[k];
                for (j, &y) in ys.iter().enumerate() {
                    for (i, &x) in xs.iter().enumerate() {
                        plane[j * tx + i] = match self.interp {
                            Interp::Nearest => {
                                get(x.round() as usize, y.round() as usize, z.round() as usize)
                            }
                            // (Area and Minimum returned above; the arm keeps the match
                            // exhaustive.)
                            Interp::Linear | Interp::Area | Interp::Minimum => {
                                let (x0, y0, z0) =
                                    (x.floor() as usize, y.floor() as usize, z.floor() as usize);
                                let (x1, y1, z1) = (
                                    (x0 + 1).min(nx - 1),
                                    (y0 + 1).min(ny - 1),
                                    (z0 + 1).min(nz - 1),
                                );
                                let (fx, fy, fz) = (
                                    (x - x0 as f64) as f32,
                                    (y - y0 as f64) as f32,
                                    (z - z0 as f64) as f32,
                                );
                                let l = |a: f32, b: f32, t: f32| a + (b - a) * t;
                                let c00 = l(get(x0, y0, z0), get(x1, y0, z0), fx);
                                let c10 = l(get(x0, y1, z0), get(x1, y1, z0), fx);
                                let c01 = l(get(x0, y0, z1), get(x1, y0, z1), fx);
                                let c11 = l(get(x0, y1, z1), get(x1, y1, z1), fx);
                                l(l(c00, c10, fy), l(c01, c11, fy), fz)
                            }
                        };
                    }
                }
            });
        finish(data, &vol, target, scale).map_err(|e| terr(&name, e))
    }
}

/// The resampled volume's geometry: spacing scaled, voxel centres aligned with the old field
/// of view (new voxel 0 sits at old fractional index `0.5·scale − 0.5`), direction and
/// provenance kept.
fn finish(
    data: Vec<f32>,
    vol: &Volume,
    target: [usize; 3],
    scale: [f64; 3],
) -> Result<Volume, String> {
    let spacing: [f64; 3] = std::array::from_fn(|a| vol.spacing[a] * scale[a]);
    let first: [f64; 3] = std::array::from_fn(|a| 0.5 * scale[a] - 0.5);
    let origin = vol.world(first);
    let mut out =
        Volume::new(data, target, spacing, vol.modality.clone()).map_err(|e| e.to_string())?;
    out.origin = origin;
    out.direction = vol.direction;
    out.provenance = vol.provenance.clone();
    Ok(out)
}

/// Per output index along one axis, the input indices and weights (summing to 1) of
/// [`Interp::Area`]: the overlap of each input voxel `[i, i+1)` with the output footprint
/// `[t·scale, (t+1)·scale)` when the axis shrinks (`scale > 1`), linear weights otherwise.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|t| {
            if scale <= 1.0 {
                let x = ((t as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let x0 = x.floor() as usize;
                let f = x - x0 as f64;
                if f == 0.0 || x0 + 1 >= n_in {
                    vec![(x0, 1.0)]
                } else {
                    vec![(x0, (1.0 - f) as f32), (x0 + 1, f as f32)]
                }
            } else {
                footprint(n_in, n_out, t)
                    .map(|(i, w)| (i, w as f32))
                    .collect()
            }
        })
        .collect()
}

/// The input voxels `[i, i+1)` that output voxel `t`'s footprint `[t·s, (t+1)·s)` overlaps
/// (`s = n_in / n_out`: both grids span the same extent, as in [`Resample`]), each with the
/// fraction of the footprint it covers; the fractions sum to 1.
fn footprint(n_in: usize, n_out: usize, t: usize) -> impl Iterator<Item = (usize, f64)> {
    let scale = n_in as f64 / n_out as f64;
    let (lo, hi) = (t as f64 * scale, ((t + 1) as f64 * scale).min(n_in as f64));
    (lo.floor() as usize..(hi.ceil() as usize).min(n_in))
        .map(move |i| (i, (hi.min(i as f64 + 1.0) - lo.max(i as f64)) / scale))
        .filter(|&(_, w)| w > 0.0)
}

/// For each of `n_out` slices resampled from `n_in` over the same extent (what [`Resample`]
/// does along k), the input slices it covers and the fraction of its thickness each covers
/// (summing to 1), whether the count shrinks or grows. Labels attached to input slices are
/// carried to the resampled grid with it (`hn_data::preprocess`).
pub fn slice_footprints(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f64)>> {
    if n_in == 0 {
        return vec![Vec::new(); n_out];
    }
    (0..n_out)
        .map(|t| footprint(n_in, n_out, t).collect())
        .collect()
}

/// [`Interp::Area`] as three separable passes, each a weighted sum of input lines;
/// hand-written because the image crates resize 2-D pictures, not 3-D volumes with
/// anisotropic voxels. The passes run z, then y, then x: the first two are contiguous
/// `dst += c · src` sweeps the compiler vectorises, and the per-element gather along x runs
/// last, on the smallest array (the pass order's measured gain: docs/BENCHMARKS.md).
fn area_resample(vol: &Volume, target: [usize; 3]) -> Vec<f32> {
    use rayon::prelude::*;
    fn axpy(dst: &mut [f32], src: &[f32], c: f32) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += c * s;
        }
    }
    let [nx, ny, nz] = vol.dims;
    let [tx, ty, tz] = target;
    let (wx, wy, wz) = (
        axis_weights(nx, tx),
        axis_weights(ny, ty),
        axis_weights(nz, tz),
    );
    // z: [nx, ny, nz] -> [nx, ny, tz]
    let plane = nx * ny;
    let mut a = vec![0f32; plane * tz];
    a.par_chunks_mut(plane)
        .zip(wz.par_iter())
        .for_each(|(dst, w)| {
            for &(k, c) in w {
                axpy(dst, &vol.data[k * plane..(k + 1) * plane], c);
            }
        });
    // y: [nx, ny, tz] -> [nx, ty, tz]
    let mut b = vec![0f32; nx * ty * tz];
    b.par_chunks_mut(nx * ty)
        .zip(a.par_chunks(plane))
        .for_each(|(out, src)| {
            for (j, w) in wy.iter().enumerate() {
                let dst = &mut out[j * nx..(j + 1) * nx];
                for &(r, c) in w {
                    axpy(dst, &src[r * nx..(r + 1) * nx], c);
                }
            }
        });
    // x: [nx, ty, tz] -> [tx, ty, tz]
    let mut out = vec![0f32; tx * ty * tz];
    out.par_chunks_mut(tx)
        .zip(b.par_chunks(nx))
        .with_min_len(64)
        .for_each(|(o, row)| {
            for (v, w) in o.iter_mut().zip(&wx) {
                *v = w.iter().map(|&(i, c)| c * row[i]).sum();
            }
        });
    out
}

/// [`Interp::Minimum`] as three separable passes (the minimum over a box is the minimum of
/// per-axis minima): along a shrinking axis each output takes the input voxels whose centres
/// its footprint `[t·scale, (t+1)·scale)` holds (at least one, since `scale > 1`); along
/// other axes the linear weights of [`axis_weights`].
fn minimum_resample(vol: &Volume, target: [usize; 3]) -> Vec<f32> {
    enum Taps {
        Min(Vec<usize>),
        Sum(Vec<(usize, f32)>),
    }
    let taps = |n_in: usize, n_out: usize| -> Vec<Taps> {
        if n_in <= n_out {
            return axis_weights(n_in, n_out)
                .into_iter()
                .map(Taps::Sum)
                .collect();
        }
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|t| {
                let (lo, hi) = (t as f64 * scale, (t + 1) as f64 * scale);
                let inside: Vec<usize> = (0..n_in)
                    .filter(|&i| {
                        let c = i as f64 + 0.5;
                        c >= lo && c < hi
                    })
                    .collect();
                Taps::Min(inside)
            })
            .collect()
    };
    // One pass along an axis: `line(i)` is the i-th input line (as long as `out`), `out` the
    // output line that `taps` combine them into.
    fn reduce<'a>(out: &mut [f32], taps: &Taps, line: impl Fn(usize) -> &'a [f32]) {
        match taps {
            Taps::Min(idx) => {
                out.fill(f32::INFINITY);
                for &i in idx {
                    for (o, v) in out.iter_mut().zip(line(i)) {
                        *o = o.min(*v);
                    }
                }
            }
            Taps::Sum(w) => {
                out.fill(0.0);
                for &(i, c) in w {
                    for (o, v) in out.iter_mut().zip(line(i)) {
                        *o += c * v;
                    }
                }
            }
        }
    }
    let [nx, ny, nz] = vol.dims;
    let [tx, ty, tz] = target;
    let (wx, wy, wz) = (taps(nx, tx), taps(ny, ty), taps(nz, tz));
    let plane = nx * ny;
    // z: [nx, ny, nz] -> [nx, ny, tz]
    let mut a = vec![0f32; plane * tz];
    for (k, dst) in a.chunks_mut(plane).enumerate() {
        reduce(dst, &wz[k], |i| &vol.data[i * plane..(i + 1) * plane]);
    }
    // y: [nx, ny, tz] -> [nx, ty, tz]
    let mut b = vec![0f32; nx * ty * tz];
    for (out, src) in b.chunks_mut(nx * ty).zip(a.chunks(plane)) {
        for (j, dst) in out.chunks_mut(nx).enumerate() {
            reduce(dst, &wy[j], |r| &src[r * nx..(r + 1) * nx]);
        }
    }
    // x: [nx, ty, tz] -> [tx, ty, tz]
    let mut out = vec![0f32; tx * ty * tz];
    for (o, row) in out.chunks_mut(tx).zip(b.chunks(nx)) {
        for (v, w) in o.chunks_mut(1).zip(&wx) {
            reduce(v, w, |i| &row[i..i + 1]);
        }
    }
    out
}

/// Centre crop and/or pad to `dims`, padding with `fill` (e.g. -1024 HU air). Origin follows.
pub struct CropPad {
    pub dims: [usize; 3],
    pub fill: f32,
}

impl Transform for CropPad {
    fn name(&self) -> String {
        format!("CropPad({:?}, fill {})", self.dims, self.fill)
    }
    fn apply(&self, vol: Volume) -> Result<Volume, TransformError> {
        let name = self.name();
        if self.dims.contains(&0) {
            return Err(terr(&name, "target size must be > 0"));
        }
        let [tx, ty, tz] = self.dims;
        // Offset of the target grid's voxel 0 in source indices (negative = padding).
        let off: [i64; 3] =
            std::array::from_fn(|a| (vol.dims[a] as i64 - self.dims[a] as i64).div_euclid(2));
        let mut data = vec![self.fill; tx * ty * tz];
        for k in 0..tz {
            let sk = k as i64 + off[2];
            if sk < 0 || sk >= vol.dims[2] as i64 {
                continue;
            }
            for j in 0..ty {
                let sj = j as i64 + off[1];
                if sj < 0 || sj >= vol.dims[1] as i64 {
                    continue;
                }
                for i in 0..tx {
                    let si = i as i64 + off[0];
                    if si < 0 || si >= vol.dims[0] as i64 {
                        continue;
                    }
                    data[(k * ty + j) * tx + i] = vol.get(si as usize, sj as usize, sk as usize);
                }
            }
        }
        let origin = vol.world([off[0] as f64, off[1] as f64, off[2] as f64]);
        let mut out = Volume::new(data, self.dims, vol.spacing, vol.modality.clone())
            .map_err(|e| terr(&name, e.to_string()))?;
        out.origin = origin;
        out.direction = vol.direction;
        out.provenance = vol.provenance;
        Ok(out)
    }
}

/// MR intensity normalisation: map the `lower`..`upper` percentiles to 0..1, clipped.
pub struct PercentileNormalize {
    pub lower: f64,
    pub upper: f64,
}

impl Default for PercentileNormalize {
    fn default() -> Self {
        PercentileNormalize {
            lower: 0.5,
            upper: 99.5,
        }
    }
}

impl Transform for PercentileNormalize {
    fn name(&self) -> String {
        format!("PercentileNormalize({}..{})", self.lower, self.upper)
    }
    fn apply(&self, mut vol: Volume) -> Result<Volume, TransformError> {
        let name = self.name();
        if !(0.0..=100.0).contains(&self.lower)
            || !(0.0..=100.0).contains(&self.upper)
            || self.lower >= self.upper
        {
            return Err(terr(&name, "need 0 <= lower < upper <= 100"));
        }
        let mut s: Vec<f32> = vol.data.iter().copied().filter(|v| !v.is_nan()).collect();
        if s.is_empty() {
            return Err(terr(&name, "no finite values"));
        }
        s.sort_unstable_by(f32::total_cmp);
        let q = |p: f64| s[((s.len() - 1) as f64 * p / 100.0).round() as usize];
        let (lo, hi) = (q(self.lower), q(self.upper));
        let range = hi - lo;
        for v in vol.data.iter_mut() {
            *v = if range > 0.0 {
                ((*v - lo) / range).clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        if matches!(vol.modality, Modality::Ct) {
            vol.provenance
                .warnings
                .push("percentile normalisation applied to CT: values are no longer HU".into());
        }
        vol.modality = Modality::Other("normalized".into());
        Ok(vol)
    }
}

/// A 0/1 mask of voxels with `lo <= value <= hi` (e.g. brain 0..100 HU, skull >= 300 HU).
pub struct ThresholdMask {
    pub lo: f32,
    pub hi: f32,
}

impl ThresholdMask {
    /// Brain parenchyma and blood, roughly 0..100 HU.
    pub fn brain() -> Self {
        ThresholdMask { lo: 0.0, hi: 100.0 }
    }
    /// Bone, >= 300 HU.
    pub fn skull() -> Self {
        ThresholdMask {
            lo: 300.0,
            hi: f32::INFINITY,
        }
    }
}

impl Transform for ThresholdMask {
    fn name(&self) -> String {
        format!("ThresholdMask({}..{})", self.lo, self.hi)
    }
    fn apply(&self, mut vol: Volume) -> Result<Volume, TransformError> {
        if self.lo.is_nan() || self.hi.is_nan() || self.lo > self.hi {
            return Err(terr(&self.name(), "lo must be <= hi"));
        }
        for v in vol.data.iter_mut() {
            *v = if *v >= self.lo && *v <= self.hi {
                1.0
            } else {
                0.0
            };
        }
        vol.modality = Modality::Other("mask".into());
        Ok(vol)
    }
}

/// Resample `vol` onto `grid` through world coordinates: each target voxel combines (the mean
/// or the minimum, as `footprint` says) trilinear samples spread over its own extent (along
/// each target axis as many as source voxels its edge spans, at most 4), so a thin-slice
/// series brought onto a thick-slice grid keeps every slice's contribution instead of the two
/// nearest. Target
/// voxels outside the source's field of view get `fill`. Returns the volume and the fraction
/// of target voxels the source covered.
///
/// Why not [`Resample`]: that one changes sizes within one series' own frame; sequences of an
/// MR study are acquired on different grids (matrix, slice thickness and position, even
/// orientation), and only their world coordinates relate them.
pub fn resample_onto(
    vol: &Volume,
    grid: &crate::Grid,
    fill: f32,
    footprint: Footprint,
) -> Result<(Volume, f64), TransformError> {
    let name = "resample_onto";
    if vol.is_empty() || grid.dims.contains(&0) {
        return Err(terr(name, "empty volume or grid"));
    }
    let probe = Volume {
        data: Vec::new(),
        dims: vol.dims,
        spacing: vol.spacing,
        origin: vol.origin,
        direction: vol.direction,
        modality: vol.modality.clone(),
        provenance: Default::default(),
    };
    if probe.index_of(vol.origin).is_none() {
        return Err(terr(name, "source direction matrix is singular"));
    }
    let target = Volume {
        data: Vec::new(),
        dims: grid.dims,
        spacing: grid.spacing,
        origin: grid.origin,
        direction: grid.direction,
        modality: vol.modality.clone(),
        provenance: Default::default(),
    };
    // Target index → source index is one affine map: source⁻¹ ∘ target, computed once.
    let t0 = probe
        .index_of(target.world([0.0; 3]))
        .expect("checked non-singular");
    let col = |a: usize| {
        let mut e = [0.0; 3];
        e[a] = 1.0;
        let p = probe
            .index_of(target.world(e))
            .expect("checked non-singular");
        [p[0] - t0[0], p[1] - t0[1], p[2] - t0[2]]
    };
    let cols = [col(0), col(1), col(2)];
    let to_src = |t: [f64; 3]| -> [f64; 3] {
        std::array::from_fn(|r| t0[r] + cols[0][r] * t[0] + cols[1][r] * t[1] + cols[2][r] * t[2])
    };
    // Sub-samples along a target axis: how many source voxels one target voxel spans there
    // (the length of its edge in source voxels), at most 4.
    let subs: [usize; 3] = std::array::from_fn(|a| {
        let span = (cols[a][0].powi(2) + cols[a][1].powi(2) + cols[a][2].powi(2)).sqrt();
        (span.ceil() as usize).clamp(1, 4)
    });
    let offsets = |a: usize| -> Vec<f64> {
        (0..subs[a])
            .map(|m| (m as f64 + 0.5) / subs[a] as f64 - 0.5)
            .collect()
    };
    let (ox, oy, oz) = (offsets(0), offsets(1), offsets(2));
    let [nx, ny, _] = vol.dims;
    let get = |i: usize, j: usize, k: usize| vol.data[(k * ny + j) * nx + i];
    // Trilinear at a fractional source index; half a voxel of tolerance at the edges.
    let sample = |p: [f64; 3]| -> Option<f32> {
        for a in 0..3 {
            if !(p[a] >= -0.5 && p[a] <= vol.dims[a] as f64 - 0.5) {
                return None;
            }
        }
        let c: [f64; 3] = std::array::from_fn(|a| p[a].clamp(0.0, (vol.dims[a] - 1) as f64));
        let i0: [usize; 3] = std::array::from_fn(|a| c[a].floor() as usize);
        let i1: [usize; 3] = std::array::from_fn(|a| (i0[a] + 1).min(vol.dims[a] - 1));
        let f: [f32; 3] = std::array::from_fn(|a| (c[a] - i0[a] as f64) as f32);
        let l = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = l(get(i0[0], i0[1], i0[2]), get(i1[0], i0[1], i0[2]), f[0]);
        let c10 = l(get(i0[0], i1[1], i0[2]), get(i1[0], i1[1], i0[2]), f[0]);
        let c01 = l(get(i0[0], i0[1], i1[2]), get(i1[0], i0[1], i1[2]), f[0]);
        let c11 = l(get(i0[0], i1[1], i1[2]), get(i1[0], i1[1], i1[2]), f[0]);
        Some(l(l(c00, c10, f[1]), l(c01, c11, f[1]), f[2]))
    };
    let [tx, ty, tz] = grid.dims;
    let mut data = vec![fill; tx * ty * tz];
    use rayon::prelude::*;
    let covered: usize = data
        .par_chunks_mut(tx * ty)
        .enumerate()
        .map(|(k, plane)| {
            let mut n = 0usize;
            for j in 0..ty {
                for i in 0..tx {
                    let (mut acc, mut lowest, mut hits) = (0f32, f32::INFINITY, 0usize);
                    for dz in &oz {
                        for dy in &oy {
                            for dx in &ox {
                                let p = to_src([i as f64 + dx, j as f64 + dy, k as f64 + dz]);
                                if let Some(v) = sample(p) {
                                    acc += v;
                                    lowest = lowest.min(v);
                                    hits += 1;
                                }
                            }
                        }
                    }
                    if hits > 0 {
                        plane[j * tx + i] = match footprint {
                            Footprint::Mean => acc / hits as f32,
                            Footprint::Minimum => lowest,
                        };
                        n += 1;
                    }
                }
            }
            n
        })
        .sum();
    let mut out = Volume::new(data, grid.dims, grid.spacing, vol.modality.clone())
        .map_err(|e| terr(name, e.to_string()))?;
    out.origin = grid.origin;
    out.direction = grid.direction;
    out.provenance = vol.provenance.clone();
    Ok((out, covered as f64 / (tx * ty * tz) as f64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn resample_onto_is_geometry_correct_across_grids_and_orientations() {
        use crate::rotation_for_tests as rot;
        // A linear field of world position: trilinear sampling and box averaging reproduce it
        // exactly wherever the source covers, so any error is a geometry error.
        let f = |w: [f64; 3]| (0.7 * w[0] - 0.3 * w[1] + 1.9 * w[2] + 5.0) as f32;
        let make = |dims: [usize; 3], spacing: [f64; 3], origin: [f64; 3], dir: [[f64; 3]; 3]| {
            let mut v = Volume::new(
                vec![0.0; dims[0] * dims[1] * dims[2]],
                dims,
                spacing,
                Modality::Mr,
            )
            .unwrap();
            v.origin = origin;
            v.direction = dir;
            for k in 0..dims[2] {
                for j in 0..dims[1] {
                    for i in 0..dims[0] {
                        let idx = v.index(i, j, k);
                        v.data[idx] = f(v.world([i as f64, j as f64, k as f64]));
                    }
                }
            }
            v
        };
        // Source: thin slices, tilted 12 degrees about x; target: thick axial slices, other
        // matrix and origin, extending past the source at the top.
        let src = make(
            [40, 44, 60],
            [1.1, 1.0, 1.5],
            [-22.0, -20.0, -40.0],
            rot(0.21),
        );
        let tgt = make(
            [24, 26, 14],
            [1.9, 1.8, 5.0],
            [-20.0, -19.0, -30.0],
            rot(0.0),
        );
        let (out, coverage) = resample_onto(&src, &tgt.grid(), -1.0, Footprint::Mean).unwrap();
        assert_eq!(out.dims, tgt.dims);
        assert_eq!(out.origin, tgt.origin);
        assert!(coverage > 0.3 && coverage < 1.0, "coverage {coverage}");
        let mut checked = 0;
        for k in 0..tgt.dims[2] {
            for j in 0..tgt.dims[1] {
                for i in 0..tgt.dims[0] {
                    let w = tgt.world([i as f64, j as f64, k as f64]);
                    let p = src.index_of(w).unwrap();
                    // Well inside the source (the whole footprint is covered): exact.
                    let inside = (0..3).all(|a| p[a] > 3.5 && p[a] < src.dims[a] as f64 - 4.5);
                    let got = out.get(i, j, k);
                    if inside {
                        assert!((got - f(w)).abs() < 2e-3, "({i},{j},{k}) {got} vs {}", f(w));
                        checked += 1;
                    }
                    let outside = (0..3).any(|a| p[a] < -4.0 || p[a] > src.dims[a] as f64 + 3.0);
                    if outside {
                        assert_eq!(got, -1.0, "({i},{j},{k}) outside the source");
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
        // index_of inverts world.
        let w = src.world([3.25, 7.5, 11.0]);
        let p = src.index_of(w).unwrap();
        assert!(
            (p[0] - 3.25).abs() < 1e-9 && (p[1] - 7.5).abs() < 1e-9 && (p[2] - 11.0).abs() < 1e-9
        );
    }

    use super::*;

    /// A parenchyma-bright volume with one dark voxel: what a susceptibility void smaller than
    /// the model's voxel looks like.
    fn one_dark_voxel(dims: [usize; 3], at: [usize; 3]) -> Volume {
        let mut v = Volume::new(
            vec![1.0; dims[0] * dims[1] * dims[2]],
            dims,
            [1.0, 1.0, 1.0],
            Modality::Mr,
        )
        .unwrap();
        let i = v.index(at[0], at[1], at[2]);
        v.data[i] = 0.0;
        v
    }

    #[test]
    fn minimum_downsampling_keeps_a_dark_voxel_that_area_fades() {
        // 10 → 4 slices (scale 2.5: footprints hold 2 or 3 input centres), 8 → 4 in-plane.
        for at in [[0, 0, 0], [5, 2, 4], [7, 7, 9], [3, 6, 5]] {
            let v = one_dark_voxel([8, 8, 10], at);
            let r = |interp| {
                Resample {
                    in_plane: Some((4, 4)),
                    slices: SliceTarget::Count(4),
                    interp,
                }
                .apply(v.clone())
                .unwrap()
            };
            let (min, area) = (r(Interp::Minimum), r(Interp::Area));
            // Exactly one output voxel holds the void, fully dark, wherever it fell.
            let dark: Vec<usize> = (0..min.data.len())
                .filter(|&i| min.data[i] == 0.0)
                .collect();
            assert_eq!(dark.len(), 1, "void at {at:?}: {dark:?}");
            assert!(min.data.iter().all(|x| *x == 0.0 || *x == 1.0));
            let centre = |t: usize, s: f64| ((t as f64 + 0.5) / s) as usize;
            let want = min.index(centre(at[0], 2.0), centre(at[1], 2.0), centre(at[2], 2.5));
            assert_eq!(dark[0], want, "void at {at:?}");
            // Averaging fades it to a grey (one of 8 × 2.5 voxels).
            let darkest = area.data.iter().copied().fold(f32::INFINITY, f32::min);
            assert!(darkest > 0.85, "area {darkest}");
            // Same geometry as every resampler.
            assert_eq!((min.origin, min.spacing), (area.origin, area.spacing));
        }
        // An axis that does not shrink is interpolated, so Minimum at the same size is the
        // identity.
        let v = ramp([4, 3, 5]);
        let same = Resample {
            in_plane: None,
            slices: SliceTarget::Keep,
            interp: Interp::Minimum,
        }
        .apply(v.clone())
        .unwrap();
        assert_eq!(same.data, v.data);
    }

    #[test]
    fn resample_onto_minimum_keeps_a_thin_slice_void_on_a_thick_grid() {
        // Thin 1 mm slices (the SWI) with a void on one, onto 4 mm slabs (the T1 reference).
        let mut src = one_dark_voxel([12, 12, 24], [6, 6, 13]);
        src.origin = [0.0, 0.0, 0.0];
        let mut tgt = Volume::new(
            vec![0.0; 12 * 12 * 6],
            [12, 12, 6],
            [1.0, 1.0, 4.0],
            Modality::Mr,
        )
        .unwrap();
        tgt.origin = [0.0, 0.0, 1.5];
        let (min, _) = resample_onto(&src, &tgt.grid(), -1.0, Footprint::Minimum).unwrap();
        let (mean, _) = resample_onto(&src, &tgt.grid(), -1.0, Footprint::Mean).unwrap();
        // The slab that holds slice 13 (world z 13: slab 3 spans z 11.5..15.5).
        assert!(min.get(6, 6, 3) < 0.3, "minimum {}", min.get(6, 6, 3));
        assert!(mean.get(6, 6, 3) > 0.7, "mean {}", mean.get(6, 6, 3));
        // Elsewhere both are parenchyma.
        assert_eq!(min.get(2, 2, 3), 1.0);
        assert_eq!(min.get(6, 6, 1), 1.0);
    }

    fn ramp(dims: [usize; 3]) -> Volume {
        let n = dims[0] * dims[1] * dims[2];
        let mut v = Volume::new(
            (0..n).map(|x| x as f32).collect(),
            dims,
            [1.0, 1.0, 2.0],
            Modality::Ct,
        )
        .unwrap();
        v.origin = [5.0, 6.0, 7.0];
        v
    }

    #[test]
    fn windows_stack_channels_first_in_unit_range() {
        let v = Volume::new(
            vec![-1000.0, 0.0, 40.0, 80.0, 2000.0, f32::NAN],
            [3, 2, 1],
            [1.0; 3],
            Modality::Ct,
        )
        .unwrap();
        let out = window_channels(&v, &Window::defaults());
        assert_eq!(out.len(), 18);
        assert_eq!(&out[0..6], &[0.0, 0.0, 0.5, 1.0, 1.0, 0.0]);
        // subdural 80/200: lo -20 -> 0 HU maps to 0.1
        assert!((out[7] - 0.1).abs() < 1e-6);
        // bone 600/2800: lo -800 -> 2000 HU maps to 1.0
        assert_eq!(out[12 + 4], 1.0);
        assert!(out.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn hu_window_refuses_non_hu() {
        let v = Volume::new(vec![1.0], [1, 1, 1], [1.0; 3], Modality::Mr).unwrap();
        let e = HuWindow(Window::brain()).apply(v).unwrap_err();
        assert!(e.step.starts_with("HuWindow"));
    }

    #[test]
    fn resample_identity_and_halving_keep_geometry() {
        let v = ramp([4, 4, 2]);
        let same = Resample {
            in_plane: None,
            slices: SliceTarget::Keep,
            interp: Interp::Linear,
        }
        .apply(v.clone())
        .unwrap();
        assert_eq!(same.data, v.data);
        assert_eq!(same.origin, v.origin);
        let half = Resample {
            in_plane: Some((2, 2)),
            slices: SliceTarget::Keep,
            interp: Interp::Linear,
        }
        .apply(v.clone())
        .unwrap();
        assert_eq!(half.dims, [2, 2, 2]);
        assert_eq!(half.spacing, [2.0, 2.0, 2.0]);
        // New voxel 0 is the average of old voxels 0,1 in x and y: centre at old index 0.5.
        assert_eq!(half.origin, [5.5, 6.5, 7.0]);
        assert_eq!(half.get(0, 0, 0), (0.0 + 1.0 + 4.0 + 5.0) / 4.0);
        // Centre of the field of view is preserved.
        let c_old = v.world([1.5, 1.5, 0.5]);
        let c_new = half.world([0.5, 0.5, 0.5]);
        assert_eq!(c_old, c_new);
    }

    fn shrink(v: &Volume, to: (usize, usize), interp: Interp) -> Volume {
        Resample {
            in_plane: Some(to),
            slices: SliceTarget::Keep,
            interp,
        }
        .apply(v.clone())
        .unwrap()
    }

    #[test]
    fn area_downsampling_keeps_a_one_voxel_line_wherever_it_falls() {
        let mut lost_by_linear = 0;
        for c in 0..64 {
            let mut v = Volume::new(
                vec![0.0; 64 * 64],
                [64, 64, 1],
                [0.5, 0.5, 5.0],
                Modality::Ct,
            )
            .unwrap();
            for j in 0..64 {
                v.data[j * 64 + c] = 100.0;
            }
            let area = shrink(&v, (16, 16), Interp::Area);
            // The line covers a quarter of output column c / 4, whatever its phase.
            for j in 0..16 {
                for i in 0..16 {
                    let want = if i == c / 4 { 25.0 } else { 0.0 };
                    assert!((area.get(i, j, 0) - want).abs() < 1e-4, "c {c}: ({i}, {j})");
                }
            }
            let mean = |v: &Volume| v.data.iter().sum::<f32>() / v.data.len() as f32;
            assert!((mean(&area) - mean(&v)).abs() < 1e-4);
            let linear = shrink(&v, (16, 16), Interp::Linear);
            if linear.data.iter().all(|&x| x == 0.0) {
                lost_by_linear += 1;
            }
        }
        // Trilinear reads 2 of every 4 columns: half the phases lose the line entirely.
        assert_eq!(lost_by_linear, 32);
    }

    #[test]
    fn area_is_linear_when_not_shrinking_and_keeps_geometry() {
        let v = ramp([4, 4, 2]);
        let same = shrink(&v, (4, 4), Interp::Area);
        assert_eq!(same.data, v.data);
        let grow = |interp| {
            Resample {
                in_plane: Some((7, 6)),
                slices: SliceTarget::Count(3),
                interp,
            }
            .apply(v.clone())
            .unwrap()
        };
        let (a, l) = (grow(Interp::Area), grow(Interp::Linear));
        assert_eq!((a.dims, a.spacing, a.origin), (l.dims, l.spacing, l.origin));
        for (x, y) in a.data.iter().zip(&l.data) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // A non-integer shrink (10 -> 4, 10 -> 3): weights sum to 1, geometry as Linear's.
        let mut c = ramp([10, 10, 1]);
        c.data.iter_mut().for_each(|x| *x = 7.0);
        let (a, l) = (
            shrink(&c, (4, 3), Interp::Area),
            shrink(&c, (4, 3), Interp::Linear),
        );
        assert_eq!((a.dims, a.spacing, a.origin), (l.dims, l.spacing, l.origin));
        assert!(a.data.iter().all(|x| (x - 7.0).abs() < 1e-5));
    }

    #[test]
    fn resample_nearest_never_invents_labels() {
        let mut v = ramp([5, 5, 3]);
        for x in v.data.iter_mut() {
            *x = (*x as u32 % 3) as f32;
        }
        let r = Resample {
            in_plane: Some((7, 3)),
            slices: SliceTarget::Spacing(1.0),
            interp: Interp::Nearest,
        }
        .apply(v)
        .unwrap();
        assert_eq!(r.dims, [7, 3, 6]);
        assert!(r.data.iter().all(|x| [0.0, 1.0, 2.0].contains(x)));
    }

    #[test]
    fn crop_pad_centres_and_moves_origin() {
        let v = ramp([4, 4, 1]);
        let c = CropPad {
            dims: [2, 6, 1],
            fill: -1024.0,
        }
        .apply(v.clone())
        .unwrap();
        assert_eq!(c.dims, [2, 6, 1]);
        // x cropped by 1 each side, y padded by 1 each side.
        assert_eq!(c.get(0, 0, 0), -1024.0);
        assert_eq!(c.get(0, 1, 0), v.get(1, 0, 0));
        assert_eq!(c.origin, v.world([1.0, -1.0, 0.0]));
    }

    #[test]
    fn compose_names_failing_step_and_notes_steps() {
        let pipeline = Compose::new(vec![
            Box::new(ThresholdMask::brain()),
            Box::new(CropPad {
                dims: [0, 1, 1],
                fill: 0.0,
            }),
        ]);
        let e = pipeline.apply(ramp([2, 2, 1])).unwrap_err();
        assert!(e.to_string().contains("CropPad"));
        let ok = Compose::new(vec![Box::new(PercentileNormalize::default())])
            .apply(ramp([4, 4, 4]))
            .unwrap();
        assert!(
            ok.provenance
                .notes
                .iter()
                .any(|n| n.contains("PercentileNormalize"))
        );
        assert_eq!(ok.min_max(), Some((0.0, 1.0)));
    }

    #[test]
    fn masks_by_threshold() {
        let v = Volume::new(
            vec![-1000.0, 30.0, 500.0],
            [3, 1, 1],
            [1.0; 3],
            Modality::Ct,
        )
        .unwrap();
        assert_eq!(
            ThresholdMask::brain().apply(v.clone()).unwrap().data,
            vec![0.0, 1.0, 0.0]
        );
        assert_eq!(
            ThresholdMask::skull().apply(v).unwrap().data,
            vec![0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn slice_footprints_cover_each_output_slice_once() {
        // 5 → 2: slice 0 spans input [0, 2.5): slices 0, 1 whole and half of 2.
        let f = slice_footprints(5, 2);
        assert_eq!(f[0], vec![(0, 0.4), (1, 0.4), (2, 0.2)]);
        assert_eq!(f[1], vec![(2, 0.2), (3, 0.4), (4, 0.4)]);
        // 2 → 4: each output slice lies inside one input slice.
        assert_eq!(
            slice_footprints(2, 4),
            vec![
                vec![(0, 1.0)],
                vec![(0, 1.0)],
                vec![(1, 1.0)],
                vec![(1, 1.0)]
            ]
        );
        // 3 → 2 and 7 → 3 sum to 1 per output slice; the same count is the identity.
        for (a, b) in [(3, 2), (7, 3), (40, 16), (16, 24)] {
            for (t, w) in slice_footprints(a, b).iter().enumerate() {
                let sum: f64 = w.iter().map(|x| x.1).sum();
                assert!((sum - 1.0).abs() < 1e-12, "{a}→{b} slice {t}: {sum}");
            }
        }
        let same = slice_footprints(4, 4);
        assert!(same.iter().enumerate().all(|(t, w)| w == &vec![(t, 1.0)]));
    }
}
