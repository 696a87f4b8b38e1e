//! MR bias-field correction: N4 (Tustison et al., "N4ITK: Improved N3 Bias Correction",
//! IEEE TMI 29:1310, 2010), the method ANTs, ITK, SimpleITK and MONAI pipelines run.
//!
//! A receive coil makes the same tissue brighter near it: a smooth multiplicative field over
//! the head (±10–40 % at 1.5–3 T). Intensity normalisation by one median cannot remove it, so
//! white matter on one side reads like grey matter on the other. N4 models the image, in the
//! log domain, as the true image plus a smooth field, and alternates two steps until the field
//! stops changing: *sharpen* the histogram of the current corrected image (deconvolve the
//! blur a smooth field puts on it, Wiener filter with a Gaussian of `fwhm`), and fit a cubic
//! B-spline field to what the sharpening says the field is (`log image − sharpened image`),
//! coarse lattice first, each level doubling it.
//!
//! Why written here: no Rust crate implements N4 (ITK's is C++); the parts it needs that a
//! crate does well are taken from one (the FFT of the histogram: `rustfft`). The B-spline fit
//! is the B-spline approximation of Lee, Wolberg and Shin (IEEE TVCG 3:228, 1997) that N4
//! uses, evaluated separably along each axis so one iteration costs a few passes over the
//! shrunk volume.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::Volume;

/// Settings of [`estimate_bias_field`]; the defaults are ITK's N4 defaults where they apply
/// (200 bins, FWHM 0.15, Wiener noise 0.01, convergence 0.001, one B-spline span at the first
/// level) with three fitting levels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BiasCorrectionConfig {
    /// Fitting levels; level `l` fits a lattice of `2^l` spans along each axis.
    pub levels: usize,
    /// Iterations per level at most.
    pub max_iterations: usize,
    /// A level stops when the coefficient of variation of the field's change is below this.
    pub convergence: f64,
    /// Histogram bins of the log image.
    pub bins: usize,
    /// FWHM of the Gaussian blur the field is assumed to put on the log histogram.
    pub fwhm: f64,
    /// Wiener filter noise of the deconvolution.
    pub wiener_noise: f64,
    /// The field is estimated on voxels about this large (mm), shrinking each axis by an
    /// integer factor; it is smooth, so this loses nothing and keeps the cost small.
    pub shrunk_voxel_mm: f64,
}

impl Default for BiasCorrectionConfig {
    fn default() -> Self {
        BiasCorrectionConfig {
            levels: 3,
            max_iterations: 50,
            convergence: 0.001,
            bins: 200,
            fwhm: 0.15,
            wiener_noise: 0.01,
            shrunk_voxel_mm: 4.0,
        }
    }
}

/// A bias-field estimate of one volume.
#[derive(Debug, Clone)]
pub struct BiasField {
    /// The multiplicative field on the volume's grid (`observed = true × field`), its geometric
    /// mean over the foreground 1, so correcting keeps the image's overall scale.
    pub field: Vec<f32>,
    /// Iterations run at each level.
    pub iterations: Vec<usize>,
    /// Whether every level met the convergence threshold before its iteration limit.
    pub converged: bool,
    /// Smallest and largest field value over the foreground (e.g. 0.8 and 1.2 for ±20 %).
    pub range: (f32, f32),
}

/// Why a field could not be estimated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BiasError {
    #[error(
        "too little foreground for bias-field correction: {voxels} voxels of about \
         {mm:.0} mm above the background threshold (at least {MIN_FOREGROUND} needed)"
    )]
    TooLittleForeground { voxels: usize, mm: f64 },
    #[error("bias-field settings: {0}")]
    Config(String),
}

/// Fewest shrunk foreground voxels a field is fitted to (about 13 mL of tissue at 4 mm):
/// fewer is no head, and the finer lattices would be fixed by a handful of voxels each.
pub const MIN_FOREGROUND: usize = 200;

impl BiasCorrectionConfig {
    fn validate(&self) -> Result<(), BiasError> {
        let bad = |m: &str| Err(BiasError::Config(m.into()));
        if self.levels == 0 || self.levels > 6 {
            return bad("levels must be 1 to 6");
        }
        if self.max_iterations == 0 {
            return bad("max_iterations must be at least 1");
        }
        if self.bins < 16 {
            return bad("bins must be at least 16");
        }
        if !(self.fwhm > 0.0 && self.wiener_noise > 0.0 && self.shrunk_voxel_mm > 0.0) {
            return bad("fwhm, wiener_noise and shrunk_voxel_mm must be positive");
        }
        if self.convergence.is_nan() || self.convergence < 0.0 {
            return bad("convergence must be ≥ 0");
        }
        Ok(())
    }
}

/// Estimate the bias field of `v` over its foreground (voxels above `threshold`, e.g.
/// [`crate::mr::foreground_threshold`]).
pub fn estimate_bias_field(
    v: &Volume,
    threshold: f32,
    cfg: &BiasCorrectionConfig,
) -> Result<BiasField, BiasError> {
    cfg.validate()?;
    let threshold = threshold.max(f32::MIN_POSITIVE);
    let shrink: [usize; 3] = std::array::from_fn(|a| {
        ((cfg.shrunk_voxel_mm / v.spacing[a]).round() as usize).clamp(1, v.dims[a].max(1))
    });
    let small = Shrunk::of(v, threshold, shrink);
    let n_fg = small.mask.iter().filter(|m| **m).count();
    if n_fg < MIN_FOREGROUND {
        return Err(BiasError::TooLittleForeground {
            voxels: n_fg,
            mm: cfg.shrunk_voxel_mm,
        });
    }
    // As in ITK's N4: each iteration fits the B-spline to what the sharpening says is still
    // left of the field (an increment), and adds it; a level's increments sum into one lattice.
    let mut log_field = vec![0.0f32; small.log.len()];
    let mut iterations = Vec::with_capacity(cfg.levels);
    let mut converged = true;
    let mut sharpener = Sharpener::new(cfg);
    let mut lattices: Vec<(usize, Lattice)> = Vec::with_capacity(cfg.levels);
    for level in 0..cfg.levels {
        let spans = 1 << level;
        let axes: [AxisWeights; 3] =
            std::array::from_fn(|a| AxisWeights::on_own_grid(small.dims[a], spans));
        let fitter = BsplineFitter::new(&small.mask, small.dims, &axes);
        let mut sum = Lattice::zeros([axes[0].lattice, axes[1].lattice, axes[2].lattice]);
        let mut done = 0;
        let mut level_converged = false;
        while done < cfg.max_iterations {
            done += 1;
            let corrected: Vec<f32> = small
                .log
                .iter()
                .zip(&log_field)
                .map(|(u, f)| u - f)
                .collect();
            let sharpened = sharpener.sharpen(&corrected, &small.mask);
            let residual: Vec<f32> = corrected
                .iter()
                .zip(&sharpened)
                .zip(&small.mask)
                .map(|((u, s), m)| if *m { u - s } else { 0.0 })
                .collect();
            let increment = fitter.fit(&residual);
            let step = evaluate_bspline(&increment, &axes);
            sum.add(&increment);
            let change = change_cv(&step, &small.mask);
            log_field.iter_mut().zip(&step).for_each(|(f, d)| *f += d);
            if change < cfg.convergence {
                level_converged = true;
                break;
            }
        }
        converged &= level_converged;
        iterations.push(done);
        lattices.push((spans, sum));
    }
    // Every level's lattice, evaluated on the full grid (positions mapped through the
    // shrinking), summed, then centred on the full foreground.
    let mut full = vec![0.0f32; v.data.len()];
    for (spans, lattice) in &lattices {
        let axes: [AxisWeights; 3] = std::array::from_fn(|a| {
            AxisWeights::on_finer_grid(v.dims[a], small.dims[a], shrink[a], *spans)
        });
        let part = evaluate_bspline(lattice, &axes);
        full.iter_mut().zip(&part).for_each(|(f, p)| *f += p);
    }
    let fg: Vec<bool> = v.data.iter().map(|x| *x > threshold).collect();
    centre(&mut full, &fg);
    let field: Vec<f32> = full.iter().map(|f| f.exp()).collect();
    let range = field
        .iter()
        .zip(&fg)
        .filter(|(_, m)| **m)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (f, _)| {
            (lo.min(*f), hi.max(*f))
        });
    Ok(BiasField {
        field,
        iterations,
        converged,
        range,
    })
}

/// `v` divided by its estimated bias field ([`estimate_bias_field`]), and the field.
pub fn correct_bias(
    v: &Volume,
    threshold: f32,
    cfg: &BiasCorrectionConfig,
) -> Result<(Volume, BiasField), BiasError> {
    let field = estimate_bias_field(v, threshold, cfg)?;
    let mut out = v.clone();
    for (x, f) in out.data.iter_mut().zip(&field.field) {
        if x.is_finite() {
            *x /= f;
        }
    }
    Ok((out, field))
}

/// The volume shrunk by block means of the log intensity over foreground voxels.
struct Shrunk {
    dims: [usize; 3],
    log: Vec<f32>,
    /// A shrunk voxel is foreground when at least half its block is.
    mask: Vec<bool>,
}

impl Shrunk {
    fn of(v: &Volume, threshold: f32, s: [usize; 3]) -> Self {
        let [nx, ny, nz] = v.dims;
        let dims = [nx.div_ceil(s[0]), ny.div_ceil(s[1]), nz.div_ceil(s[2])];
        let n = dims[0] * dims[1] * dims[2];
        let mut sum = vec![0.0f64; n];
        let mut fg = vec![0u32; n];
        let mut all = vec![0u32; n];
        for k in 0..nz {
            for j in 0..ny {
                let row = &v.data[(k * ny + j) * nx..(k * ny + j + 1) * nx];
                let base = ((k / s[2]) * dims[1] + j / s[1]) * dims[0];
                for (i, x) in row.iter().enumerate() {
                    let b = base + i / s[0];
                    all[b] += 1;
                    if *x > threshold && x.is_finite() {
                        sum[b] += f64::from(x.ln());
                        fg[b] += 1;
                    }
                }
            }
        }
        let mask: Vec<bool> = fg.iter().zip(&all).map(|(f, a)| 2 * f >= *a).collect();
        let log = sum
            .iter()
            .zip(&fg)
            .zip(&mask)
            .map(|((s, f), m)| if *m { (s / f64::from(*f)) as f32 } else { 0.0 })
            .collect();
        Shrunk { dims, log, mask }
    }
}

/// Cubic B-spline weights of every voxel of one axis on a lattice of `spans` spans
/// (`spans + 3` control points): voxel `x` touches control points `base[x]..base[x] + 4`.
struct AxisWeights {
    lattice: usize,
    base: Vec<usize>,
    w: Vec<[f32; 4]>,
}

impl AxisWeights {
    /// Voxels `0..n` spread over the lattice's whole domain `[0, spans]`.
    fn on_own_grid(n: usize, spans: usize) -> Self {
        Self::from_positions((0..n).map(|x| x as f64), n, spans)
    }

    /// Voxels `0..n_full` of the grid that was shrunk by `s` into `n_small` voxels, placed
    /// where the shrunk grid's lattice has them (a shrunk voxel sits at the centre of its
    /// block); positions beyond the outermost shrunk centres take the edge's value.
    fn on_finer_grid(n_full: usize, n_small: usize, s: usize, spans: usize) -> Self {
        let half = (s as f64 - 1.0) / 2.0;
        Self::from_positions(
            (0..n_full).map(|x| ((x as f64 - half) / s as f64).clamp(0.0, (n_small - 1) as f64)),
            n_small,
            spans,
        )
    }

    /// `positions` in shrunk-voxel units of an axis of `n` voxels.
    fn from_positions(positions: impl Iterator<Item = f64>, n: usize, spans: usize) -> Self {
        let scale = if n > 1 {
            spans as f64 / (n - 1) as f64
        } else {
            0.0
        };
        let (base, w) = positions
            .map(|p| {
                let t = p * scale;
                let b = (t.floor() as usize).min(spans - 1);
                let u = (t - b as f64) as f32;
                let v = 1.0 - u;
                let w = [
                    v * v * v / 6.0,
                    (3.0 * u * u * u - 6.0 * u * u + 4.0) / 6.0,
                    (-3.0 * u * u * u + 3.0 * u * u + 3.0 * u + 1.0) / 6.0,
                    u * u * u / 6.0,
                ];
                (b, w)
            })
            .unzip();
        AxisWeights {
            lattice: spans + 3,
            base,
            w,
        }
    }
}

/// Contract axis `axis` of `data` (`dims`) between voxels and lattice points through
/// `weights` raised to `power`: voxels → lattice (`to_lattice`) sums each voxel into its four
/// control points; lattice → voxels interpolates. Returns the new data and dims.
fn contract(
    data: &[f32],
    dims: [usize; 3],
    axis: usize,
    weights: &AxisWeights,
    power: i32,
    to_lattice: bool,
) -> (Vec<f32>, [usize; 3]) {
    let mut out_dims = dims;
    out_dims[axis] = if to_lattice {
        weights.lattice
    } else {
        weights.base.len()
    };
    let stride = |d: [usize; 3]| [1, d[0], d[0] * d[1]];
    let (si, so) = (stride(dims), stride(out_dims));
    let mut out = vec![0.0f32; out_dims.iter().product()];
    let others: Vec<usize> = (0..3).filter(|a| *a != axis).collect();
    let (a1, a2) = (others[0], others[1]);
    // The powered weights once per call, not once per voxel.
    let powered: Vec<[f32; 4]> = weights.w.iter().map(|w| w.map(|x| x.powi(power))).collect();
    let (sa_in, sa_out) = (si[axis], so[axis]);
    for p2 in 0..dims[a2] {
        for p1 in 0..dims[a1] {
            let off_in = p1 * si[a1] + p2 * si[a2];
            let off_out = p1 * so[a1] + p2 * so[a2];
            if to_lattice {
                for (x, (b, w)) in weights.base.iter().zip(&powered).enumerate() {
                    let v = data[off_in + x * sa_in];
                    if v != 0.0 {
                        for (t, wp) in w.iter().enumerate() {
                            out[off_out + (b + t) * sa_out] += wp * v;
                        }
                    }
                }
            } else {
                for (x, (b, w)) in weights.base.iter().zip(&powered).enumerate() {
                    let mut acc = 0.0;
                    for (t, wp) in w.iter().enumerate() {
                        acc += wp * data[off_in + (b + t) * sa_in];
                    }
                    out[off_out + x * sa_out] = acc;
                }
            }
        }
    }
    (out, out_dims)
}

/// Lee–Wolberg–Shin B-spline approximation over `mask` on one lattice: each voxel proposes the
/// control values that reproduce it exactly with the least norm, and each control point takes
/// the average of its proposals weighted by the squared weights. Separable, because a
/// voxel's 64 weights are products of its three axes' weights. What depends only on the mask
/// and the lattice (each voxel's weight norm, the control points' weight sums) is computed
/// once per level.
struct BsplineFitter<'a> {
    mask: &'a [bool],
    dims: [usize; 3],
    axes: &'a [AxisWeights; 3],
    /// Per axis, each voxel's Σ of squared weights (a voxel's 64-weight norm is their product).
    sq: [Vec<f32>; 3],
    /// Σ over masked voxels of each control point's squared weight.
    omega: Vec<f32>,
}

impl<'a> BsplineFitter<'a> {
    fn new(mask: &'a [bool], dims: [usize; 3], axes: &'a [AxisWeights; 3]) -> Self {
        let sq = std::array::from_fn(|a| {
            axes[a]
                .w
                .iter()
                .map(|w| w.iter().map(|x| x * x).sum())
                .collect()
        });
        let indicator: Vec<f32> = mask.iter().map(|m| f32::from(u8::from(*m))).collect();
        let (omega, _) = Self::to_lattice(indicator, dims, axes, 2);
        BsplineFitter {
            mask,
            dims,
            axes,
            sq,
            omega,
        }
    }

    fn to_lattice(
        data: Vec<f32>,
        dims: [usize; 3],
        axes: &[AxisWeights; 3],
        power: i32,
    ) -> (Vec<f32>, [usize; 3]) {
        let (mut d, mut dm) = (data, dims);
        for (a, ax) in axes.iter().enumerate() {
            (d, dm) = contract(&d, dm, a, ax, power, true);
        }
        (d, dm)
    }

    /// The lattice approximating `residual` over the mask.
    fn fit(&self, residual: &[f32]) -> Lattice {
        let dims = self.dims;
        let mut numerator = vec![0.0f32; residual.len()];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                let row = (k * dims[1] + j) * dims[0];
                let norm_jk = self.sq[1][j] * self.sq[2][k];
                for i in 0..dims[0] {
                    let c = row + i;
                    if self.mask[c] {
                        numerator[c] = residual[c] / (self.sq[0][i] * norm_jk);
                    }
                }
            }
        }
        let (delta, ldims) = Self::to_lattice(numerator, dims, self.axes, 3);
        let values = delta
            .iter()
            .zip(&self.omega)
            .map(|(d, o)| if *o > 0.0 { d / o } else { 0.0 })
            .collect();
        Lattice {
            values,
            dims: ldims,
        }
    }
}

/// Control values of a cubic B-spline over a 3-D lattice.
struct Lattice {
    values: Vec<f32>,
    dims: [usize; 3],
}

impl Lattice {
    fn zeros(dims: [usize; 3]) -> Self {
        Lattice {
            values: vec![0.0; dims.iter().product()],
            dims,
        }
    }

    /// `self += other` (same lattice): the spline of the sum is the sum of the splines.
    fn add(&mut self, other: &Lattice) {
        debug_assert_eq!(self.dims, other.dims);
        self.values
            .iter_mut()
            .zip(&other.values)
            .for_each(|(a, b)| *a += b);
    }
}

/// The B-spline of `lattice` at every voxel `axes` describe.
fn evaluate_bspline(lattice: &Lattice, axes: &[AxisWeights; 3]) -> Vec<f32> {
    let (mut d, mut dm) = (lattice.values.clone(), lattice.dims);
    for (a, ax) in axes.iter().enumerate().rev() {
        (d, dm) = contract(&d, dm, a, ax, 1, false);
    }
    d
}

/// Subtract the mean over `mask`, so the field keeps the image's scale.
fn centre(log_field: &mut [f32], mask: &[bool]) {
    let (s, n) = log_field
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .fold((0.0f64, 0usize), |(s, n), (f, _)| {
            (s + f64::from(*f), n + 1)
        });
    if n > 0 {
        let mean = (s / n as f64) as f32;
        log_field.iter_mut().for_each(|f| *f -= mean);
    }
}

/// N4's convergence measure: the coefficient of variation of `exp(step)`, the field's
/// multiplicative change, over the mask.
fn change_cv(step: &[f32], mask: &[bool]) -> f64 {
    let d: Vec<f64> = step
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(s, _)| f64::from(*s).exp())
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64;
    var.sqrt() / mean
}

/// N4's histogram sharpening: the expected true log intensity of each observed one, given
/// that the field blurred the true histogram by a Gaussian of `fwhm`.
struct Sharpener {
    bins: usize,
    fwhm: f64,
    noise: f64,
    planner: FftPlanner<f64>,
}

impl Sharpener {
    fn new(cfg: &BiasCorrectionConfig) -> Self {
        Sharpener {
            bins: cfg.bins,
            fwhm: cfg.fwhm,
            noise: cfg.wiener_noise,
            planner: FftPlanner::new(),
        }
    }

    /// The sharpened value of every masked voxel of `log` (0 elsewhere).
    fn sharpen(&mut self, log: &[f32], mask: &[bool]) -> Vec<f32> {
        let (lo, hi) = log
            .iter()
            .zip(mask)
            .filter(|(_, m)| **m)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (x, _)| {
                (lo.min(*x), hi.max(*x))
            });
        let bins = self.bins;
        let slope = f64::from(hi - lo) / (bins - 1) as f64;
        if slope.is_nan() || slope <= 0.0 {
            // One intensity: nothing to sharpen.
            return log.to_vec();
        }
        let position = |x: f32| f64::from(x - lo) / slope;
        let mut hist = vec![0.0f64; bins];
        for (x, _) in log.iter().zip(mask).filter(|(_, m)| **m) {
            let p = position(*x);
            let i = (p.floor() as usize).min(bins - 1);
            let o = p - i as f64;
            hist[i] += 1.0 - o;
            if i + 1 < bins {
                hist[i + 1] += o;
            }
        }
        let padded = 1usize << ((bins as f64).log2().ceil() as u32 + 1);
        let offset = (padded - bins) / 2;
        let fft = self.planner.plan_fft_forward(padded);
        let ifft = self.planner.plan_fft_inverse(padded);
        let forward = |v: Vec<f64>| {
            let mut c: Vec<Complex<f64>> = v.into_iter().map(|x| Complex::new(x, 0.0)).collect();
            fft.process(&mut c);
            c
        };
        let inverse = |mut c: Vec<Complex<f64>>| {
            ifft.process(&mut c);
            c.into_iter()
                .map(|z| z.re / padded as f64)
                .collect::<Vec<f64>>()
        };
        let mut v = vec![0.0; padded];
        v[offset..offset + bins].copy_from_slice(&hist);
        // The Gaussian, centred on index 0 and wrapping around, of unit area.
        let fwhm = self.fwhm / slope;
        let exp_factor = 4.0 * std::f64::consts::LN_2 / (fwhm * fwhm);
        let scale = 2.0 * (std::f64::consts::LN_2 / std::f64::consts::PI).sqrt() / fwhm;
        let gauss: Vec<f64> = (0..padded)
            .map(|n| {
                let d = n.min(padded - n) as f64;
                scale * (-d * d * exp_factor).exp()
            })
            .collect();
        let g = forward(gauss);
        let wiener: Vec<Complex<f64>> = g
            .iter()
            .map(|z| z.conj() / (z.norm_sqr() + self.noise))
            .collect();
        let u: Vec<f64> = inverse(forward(v).iter().zip(&wiener).map(|(a, b)| a * b).collect())
            .into_iter()
            .map(|x| x.max(0.0))
            .collect();
        let blur = |x: Vec<f64>| -> Vec<f64> {
            inverse(forward(x).iter().zip(&g).map(|(a, b)| a * b).collect())
        };
        let weighted: Vec<f64> = u
            .iter()
            .enumerate()
            .map(|(n, un)| (f64::from(lo) + (n as f64 - offset as f64) * slope) * un)
            .collect();
        let numerator = blur(weighted);
        let denominator = blur(u);
        let expected: Vec<f64> = (0..bins)
            .map(|n| {
                let d = denominator[n + offset];
                if d.abs() > 1e-12 {
                    numerator[n + offset] / d
                } else {
                    f64::from(lo) + n as f64 * slope
                }
            })
            .collect();
        log.iter()
            .zip(mask)
            .map(|(x, m)| {
                if !*m {
                    return 0.0;
                }
                let p = position(*x);
                let i = p.floor() as usize;
                if i + 1 < bins {
                    (expected[i] + (expected[i + 1] - expected[i]) * (p - i as f64)) as f32
                } else {
                    expected[bins - 1] as f32
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-tissue phantom (a sphere of "white matter" 1.0 in "grey matter" 0.7, background
    /// 0) on `dims` voxels of `spacing`, times `field`.
    fn phantom(
        dims: [usize; 3],
        spacing: [f64; 3],
        field: impl Fn([f64; 3]) -> f64,
    ) -> (Volume, Vec<f32>, Vec<u8>) {
        let mut data = Vec::new();
        let mut truth = Vec::new();
        let mut tissue = Vec::new();
        let c: [f64; 3] = std::array::from_fn(|a| (dims[a] as f64 - 1.0) / 2.0 * spacing[a]);
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let p = [
                        i as f64 * spacing[0],
                        j as f64 * spacing[1],
                        k as f64 * spacing[2],
                    ];
                    let r = ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2))
                        .sqrt();
                    // Stripes of the two tissues inside a head of radius 70 mm.
                    let (t, x) = if r > 70.0 {
                        (0, 0.0)
                    } else if ((p[0] / 12.0).floor() as i64 + (p[2] / 12.0).floor() as i64) % 2 == 0
                    {
                        (1, 1.0)
                    } else {
                        (2, 0.7)
                    };
                    let u = [
                        (p[0] - c[0]) / 70.0,
                        (p[1] - c[1]) / 70.0,
                        (p[2] - c[2]) / 70.0,
                    ];
                    data.push((x * field(u)) as f32);
                    truth.push(field(u) as f32);
                    tissue.push(t);
                }
            }
        }
        let v = Volume::new(data, dims, spacing, crate::Modality::Mr).unwrap();
        (v, truth, tissue)
    }

    /// Coefficient of variation of `values` over voxels of `tissue == t`.
    fn cv(values: &[f32], tissue: &[u8], t: u8) -> f64 {
        let x: Vec<f64> = values
            .iter()
            .zip(tissue)
            .filter(|(_, s)| **s == t)
            .map(|(v, _)| f64::from(*v))
            .collect();
        let m = x.iter().sum::<f64>() / x.len() as f64;
        (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt() / m
    }

    #[test]
    fn a_smooth_field_is_found_and_removed() {
        // ±25 %: a linear gradient plus a radial term, as a receive coil gives.
        let field = |u: [f64; 3]| {
            (0.25 * (0.8 * u[0] - 0.5 * u[1] + 0.3 * u[2]) - 0.1 * (u[0] * u[0] + u[1] * u[1]))
                .exp()
        };
        let (v, truth, tissue) = phantom([64, 64, 30], [2.5, 2.5, 5.0], field);
        let (out, est) = correct_bias(&v, 0.05, &BiasCorrectionConfig::default()).unwrap();
        for t in [1, 2] {
            let (before, after) = (cv(&v.data, &tissue, t), cv(&out.data, &tissue, t));
            assert!(
                after < 0.1 * before,
                "tissue {t}: CV {before:.3} → {after:.3}"
            );
        }
        // The estimate follows the true field (up to its scale).
        let ratio: Vec<f32> = est.field.iter().zip(&truth).map(|(e, t)| e / t).collect();
        assert!(cv(&ratio, &tissue, 1) < 0.01, "{}", cv(&ratio, &tissue, 1));
        assert!(est.range.0 < 0.85 && est.range.1 > 1.15, "{:?}", est.range);
        assert_eq!(est.iterations.len(), 3);
        // Background stays background.
        assert!(
            out.data
                .iter()
                .zip(&tissue)
                .all(|(x, t)| *t != 0 || *x == 0.0)
        );
    }

    #[test]
    fn a_flat_image_is_left_flat() {
        let (v, _, tissue) = phantom([48, 48, 20], [3.0, 3.0, 6.0], |_| 1.0);
        let (out, est) = correct_bias(&v, 0.05, &BiasCorrectionConfig::default()).unwrap();
        assert!(est.range.0 > 0.97 && est.range.1 < 1.03, "{:?}", est.range);
        assert!(cv(&out.data, &tissue, 1) < 0.02);
        assert!(est.converged);
    }

    #[test]
    fn too_little_foreground_and_bad_settings_are_errors() {
        let v = Volume::new(
            vec![1.0; 8 * 8 * 2],
            [8, 8, 2],
            [4.0, 4.0, 4.0],
            crate::Modality::Mr,
        )
        .unwrap();
        let e = estimate_bias_field(&v, 0.5, &BiasCorrectionConfig::default()).unwrap_err();
        assert!(
            matches!(e, BiasError::TooLittleForeground { voxels: 128, .. }),
            "{e}"
        );
        let cfg = BiasCorrectionConfig {
            levels: 0,
            ..Default::default()
        };
        assert!(matches!(
            estimate_bias_field(&v, 0.5, &cfg),
            Err(BiasError::Config(_))
        ));
    }

    #[test]
    fn the_separable_fit_equals_the_voxel_by_voxel_formula() {
        let dims = [7, 5, 4];
        let axes: [AxisWeights; 3] = std::array::from_fn(|a| AxisWeights::on_own_grid(dims[a], 2));
        let n: usize = dims.iter().product();
        let r: Vec<f32> = (0..n).map(|c| ((c * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let mask: Vec<bool> = (0..n).map(|c| c % 5 != 0).collect();
        let fast = BsplineFitter::new(&mask, dims, &axes).fit(&r);
        let l = axes[0].lattice;
        let mut delta = vec![0.0f64; l * l * l];
        let mut omega = vec![0.0f64; l * l * l];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let c = (k * dims[1] + j) * dims[0] + i;
                    if !mask[c] {
                        continue;
                    }
                    let mut ws = Vec::new();
                    for (c2, w2) in axes[2].w[k].iter().enumerate() {
                        for (c1, w1) in axes[1].w[j].iter().enumerate() {
                            for (c0, w0) in axes[0].w[i].iter().enumerate() {
                                let idx = ((axes[2].base[k] + c2) * l + axes[1].base[j] + c1) * l
                                    + axes[0].base[i]
                                    + c0;
                                ws.push((idx, f64::from(w0 * w1 * w2)));
                            }
                        }
                    }
                    let norm: f64 = ws.iter().map(|(_, w)| w * w).sum();
                    for (idx, w) in ws {
                        let phi = w * f64::from(r[c]) / norm;
                        delta[idx] += w * w * phi;
                        omega[idx] += w * w;
                    }
                }
            }
        }
        for (idx, got) in fast.values.iter().enumerate() {
            let want = if omega[idx] > 0.0 {
                delta[idx] / omega[idx]
            } else {
                0.0
            };
            assert!(
                (f64::from(*got) - want).abs() < 1e-4,
                "{idx}: {got} vs {want}"
            );
        }
    }
}
