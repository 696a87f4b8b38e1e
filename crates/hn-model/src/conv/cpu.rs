//! The CPU kernels of [`FastConv`](super::FastConv): 2-D convolution forward, input gradient
//! and weight gradient on contiguous NCHW `f32` buffers.
//!
//! Written by hand because no crate offers a convolution for these shapes that beats flex's:
//! flex converts every input to NHWC on the calling thread and runs its GEMM over pixel tiles,
//! so a third of a train step is serial. Here each sample (a CT slice) is one job on the rayon
//! pool: its im2col matrix is built in a per-thread buffer straight from NCHW and multiplied
//! by the `gemm` crate's cache-blocked micro-kernels, writing the output in NCHW with no
//! transpose. A 1×1 stride-1 convolution needs no im2col at all. When there are fewer samples
//! than threads, the samples run one after another and `gemm` parallelises inside each.

use std::ops::Range;

use gemm::{Parallelism, gemm};
use rayon::prelude::*;

/// The float types the kernels run in: `f32` (training and inference) and `f64` (the
/// finite-difference checks).
pub trait Real:
    Copy + Default + PartialEq + std::ops::AddAssign + Send + Sync + std::fmt::Debug + 'static
{
    const ZERO: Self;
    const ONE: Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// Shapes of one convolution (groups = 1), in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Padding before the first row and column (the end padding only shapes `ho`, `wo`).
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeometry {
    /// The geometry of `x: [N, C_in, H, W]` convolved with `w: [C_out, C_in, kh, kw]`;
    /// `None` where the output would be empty or the channels disagree.
    pub fn new(
        x: [usize; 4],
        w: [usize; 4],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        dilation: [usize; 2],
    ) -> Option<Self> {
        let [batch, c_in, h, wd] = x;
        let [c_out, wc, kh, kw] = w;
        if wc != c_in {
            return None;
        }
        let out = |len: usize, (a, b): (usize, usize), k: usize, s: usize, d: usize| {
            let span = d * (k - 1) + 1;
            (len + a + b).checked_sub(span).map(|r| r / s + 1)
        };
        let ho = out(h, padding[0], kh, stride[0], dilation[0])?;
        let wo = out(wd, padding[1], kw, stride[1], dilation[1])?;
        Some(ConvGeometry {
            batch,
            c_in,
            h,
            w: wd,
            c_out,
            kh,
            kw,
            stride,
            pad: [padding[0].0, padding[1].0],
            dilation,
            ho,
            wo,
        })
    }

    /// Rows of the im2col matrix (C_in · kh · kw).
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output pixels per channel.
    fn p(&self) -> usize {
        self.ho * self.wo
    }

    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    fn out_len(&self) -> usize {
        self.c_out * self.p()
    }

    /// A 1×1, stride-1, unpadded convolution: the input already is its im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// For kernel offset `k` along an axis: the output positions whose input position lies
    /// inside the image, as `(first, end)`, and the input position of output 0 (may be < 0).
    fn valid_range(
        &self,
        k: usize,
        axis: usize,
        out_len: usize,
        in_len: usize,
    ) -> (usize, usize, isize) {
        let s = self.stride[axis] as isize;
        let base = (k * self.dilation[axis]) as isize - self.pad[axis] as isize;
        // Smallest o with base + o·s ≥ 0, and the end where base + o·s ≥ in_len.
        let first = if base >= 0 {
            0
        } else {
            ((-base + s - 1) / s) as usize
        };
        let end = if base >= in_len as isize {
            0
        } else {
            (((in_len as isize - base + s - 1) / s) as usize).min(out_len)
        };
        (first.min(end), end, base)
    }
}

/// Output rows `rows` of one sample's im2col matrix, as `col[(ci·kh + ky)·kw + kx][r·wo + ox]`
/// for output row `rows.start + r`, zero where the kernel reads padding.
fn im2col<T: Real>(g: &ConvGeometry, x: &[T], rows: Range<usize>, col: &mut [T]) {
    let tp = rows.len() * g.wo;
    for ci in 0..g.c_in {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            let (y0, y1, ybase) = g.valid_range(ky, 0, g.ho, g.h);
            let (y0, y1) = (
                y0.clamp(rows.start, rows.end),
                y1.clamp(rows.start, rows.end),
            );
            let (y0, y1) = (y0 - rows.start, y1.max(y0) - rows.start);
            for kx in 0..g.kw {
                let (x0, x1, xbase) = g.valid_range(kx, 1, g.wo, g.w);
                let row = &mut col[((ci * g.kh + ky) * g.kw + kx) * tp..][..tp];
                row[..y0 * g.wo].fill(T::ZERO);
                row[y1 * g.wo..].fill(T::ZERO);
                for r in y0..y1 {
                    let oy = rows.start + r;
                    let iy = (ybase + (oy * g.stride[0]) as isize) as usize;
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    let dst = &mut row[r * g.wo..(r + 1) * g.wo];
                    dst[..x0].fill(T::ZERO);
                    dst[x1..].fill(T::ZERO);
                    if x0 == x1 {
                        // This tap reads only padding on this row.
                        continue;
                    }
                    let ix0 = (xbase + (x0 * g.stride[1]) as isize) as usize;
                    if g.stride[1] == 1 {
                        dst[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
                    } else {
                        for (j, d) in dst[x0..x1].iter_mut().enumerate() {
                            *d = src[ix0 + j * g.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// col2im of output rows `rows` of one sample: the adjoint of [`im2col`], accumulating into
/// `dx`.
fn col2im<T: Real>(g: &ConvGeometry, col: &[T], rows: Range<usize>, dx: &mut [T]) {
    let tp = rows.len() * g.wo;
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            let (y0, y1, ybase) = g.valid_range(ky, 0, g.ho, g.h);
            let (y0, y1) = (
                y0.clamp(rows.start, rows.end),
                y1.clamp(rows.start, rows.end),
            );
            for kx in 0..g.kw {
                let (x0, x1, xbase) = g.valid_range(kx, 1, g.wo, g.w);
                if x0 == x1 {
                    // This tap reads only padding: nothing flows back.
                    continue;
                }
                let row = &col[((ci * g.kh + ky) * g.kw + kx) * tp..][..tp];
                for oy in y0..y1 {
                    let r = oy - rows.start;
                    let iy = (ybase + (oy * g.stride[0]) as isize) as usize;
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let src = &row[r * g.wo + x0..r * g.wo + x1];
                    let ix0 = (xbase + (x0 * g.stride[1]) as isize) as usize;
                    if g.stride[1] == 1 {
                        for (d, s) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (j, s) in src.iter().enumerate() {
                            dst[ix0 + j * g.stride[1]] += *s;
                        }
                    }
                }
            }
        }
    }
}

/// The output-row tiles of one sample's im2col matrix: the column buffer of a 16-channel 3×3
/// layer at 128² is 9.4 MB per slice, written once and read once by the GEMM; in tiles of
/// [`DEFAULT_TILE_ELEMS`] it stays small and mostly in cache, which measured 5–7 % faster at
/// 128² and the same at 64² (docs/BENCHMARKS.md, run M).
fn row_tiles(g: &ConvGeometry) -> impl Iterator<Item = Range<usize>> + use<> {
    let per_row = (g.k() * g.wo).max(1);
    let rows = (tile_elems() / per_row).clamp(1, g.ho.max(1));
    let ho = g.ho;
    (0..ho.div_ceil(rows)).map(move |t| t * rows..((t + 1) * rows).min(ho))
}

/// Elements of one column tile (see [`row_tiles`]); `HN_CONV_TILE` overrides it for
/// benchmarks.
fn tile_elems() -> usize {
    static TILE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *TILE.get_or_init(|| {
        std::env::var("HN_CONV_TILE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_TILE_ELEMS)
    })
}

/// 512 KiB of `f32`: the best of the tile sizes tried (16 Ki–256 Ki elements, and none).
const DEFAULT_TILE_ELEMS: usize = 128 * 1024;

/// A row-major matrix view for [`matmul`]: element (i, j) at `ptr[i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct View {
    rs: isize,
    cs: isize,
}

const ROW_MAJOR: fn(usize) -> View = |cols| View {
    rs: cols as isize,
    cs: 1,
};

/// `dst[m×n] (+)= a[m×k] · b[k×n]` with the given strides (`dst` row `i` at `dst[i·dst_rs]`;
/// `accumulate` adds to `dst`).
#[allow(clippy::too_many_arguments)]
fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    a: &[T],
    av: View,
    b: &[T],
    bv: View,
    par: Parallelism,
) {
    let extent = |v: View, rows: usize, cols: usize| {
        (rows.saturating_sub(1) as isize * v.rs + cols.saturating_sub(1) as isize * v.cs) as usize
            + 1
    };
    assert!(m == 0 || n == 0 || (dst_rs >= n && dst.len() >= extent(ROW_MAJOR(dst_rs), m, n)));
    assert!(m == 0 || k == 0 || a.len() >= extent(av, m, k));
    assert!(k == 0 || n == 0 || b.len() >= extent(bv, k, n));
    // SAFETY: the asserts above keep every index gemm computes from the strides inside the
    // three slices (`dst_rs ≥ n`, so rows do not overlap); `dst` does not alias `a` or `b`
    // (distinct borrows).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            av.cs,
            av.rs,
            b.as_ptr(),
            bv.cs,
            bv.rs,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            par,
        );
    }
}

/// Whether samples run in parallel (one per thread) or one after another with a parallel
/// GEMM inside.
fn per_sample_parallel(g: &ConvGeometry) -> bool {
    g.batch >= rayon::current_num_threads()
}

fn inner_parallelism(outer: bool) -> Parallelism {
    if outer {
        Parallelism::None
    } else {
        Parallelism::Rayon(rayon::current_num_threads())
    }
}

/// Run `one(scratch, (n, out[n]))` for every sample's slice of `out` (`len` elements each): when
/// `outer`, in one contiguous range of samples per thread on the rayon pool, each range with
/// one scratch buffer (allocated and zeroed once, not per sample); else in order.
fn per_sample<T: Real>(
    out: &mut [T],
    len: usize,
    outer: bool,
    one: impl Fn(&mut Vec<T>, (usize, &mut [T])) + Sync + Send,
) {
    let len = len.max(1);
    let samples = out.len() / len;
    let per_range = if outer {
        samples.div_ceil(rayon::current_num_threads().max(1)).max(1)
    } else {
        samples.max(1)
    };
    out.par_chunks_mut(per_range * len)
        .enumerate()
        .for_each(|(r, range)| {
            let mut col = Vec::new();
            for (j, c) in range.chunks_mut(len).enumerate() {
                one(&mut col, (r * per_range + j, c));
            }
        });
}

/// Forward: `y[n] = W · im2col(x[n])`, `[N, C_out, Ho, Wo]`, one column tile at a time.
pub fn forward<T: Real>(g: &ConvGeometry, x: &[T], w: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let mut y = vec![T::ZERO; g.batch * g.out_len()];
    let outer = per_sample_parallel(g);
    let par = inner_parallelism(outer);
    let one = |col: &mut Vec<T>, (n, yn): (usize, &mut [T])| {
        let xn = &x[n * g.in_len()..(n + 1) * g.in_len()];
        if g.is_pointwise() {
            let (a, b) = (ROW_MAJOR(k), ROW_MAJOR(p));
            matmul(g.c_out, p, k, yn, p, false, w, a, xn, b, par);
            return;
        }
        for rows in row_tiles(g) {
            let tp = rows.len() * g.wo;
            col.resize(k * tp, T::ZERO);
            im2col(g, xn, rows.clone(), col);
            let dst = &mut yn[rows.start * g.wo..];
            matmul(
                g.c_out,
                tp,
                k,
                dst,
                p,
                false,
                w,
                ROW_MAJOR(k),
                col,
                ROW_MAJOR(tp),
                par,
            );
        }
    };
    per_sample(&mut y, g.out_len(), outer, one);
    y
}

/// Input gradient: `dx[n] = col2im(Wᵀ · dy[n])`, `[N, C_in, H, W]`, one column tile at a time.
pub fn backward_input<T: Real>(g: &ConvGeometry, w: &[T], dy: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let mut dx = vec![T::ZERO; g.batch * g.in_len()];
    let outer = per_sample_parallel(g);
    let par = inner_parallelism(outer);
    let wt = View {
        rs: 1,
        cs: k as isize,
    };
    let one = |col: &mut Vec<T>, (n, dxn): (usize, &mut [T])| {
        let dyn_ = &dy[n * g.out_len()..(n + 1) * g.out_len()];
        if g.is_pointwise() {
            matmul(k, p, g.c_out, dxn, p, false, w, wt, dyn_, ROW_MAJOR(p), par);
            return;
        }
        for rows in row_tiles(g) {
            let tp = rows.len() * g.wo;
            col.resize(k * tp, T::ZERO);
            let src = &dyn_[rows.start * g.wo..];
            matmul(
                k,
                tp,
                g.c_out,
                col,
                tp,
                false,
                w,
                wt,
                src,
                ROW_MAJOR(p),
                par,
            );
            col2im(g, col, rows, dxn);
        }
    };
    per_sample(&mut dx, g.in_len(), outer, one);
    dx
}

/// Weight gradient: `dW = Σₙ dy[n] · im2col(x[n])ᵀ`, `[C_out, C_in, kh, kw]`, one column tile
/// at a time. Samples are split into one contiguous range per thread, each summed into its
/// own buffer; the buffers are added at the end (a fixed order, so the result does not depend
/// on scheduling).
pub fn backward_weight<T: Real>(g: &ConvGeometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let outer = per_sample_parallel(g);
    let par = inner_parallelism(outer);
    let range = |lo: usize, hi: usize| {
        let mut dw = vec![T::ZERO; g.c_out * k];
        let mut col = Vec::new();
        let mut accumulate = false;
        for n in lo..hi {
            let xn = &x[n * g.in_len()..(n + 1) * g.in_len()];
            let dyn_ = &dy[n * g.out_len()..(n + 1) * g.out_len()];
            if g.is_pointwise() {
                // xn[K×P] read as xnᵀ[P×K].
                let xt = View {
                    rs: 1,
                    cs: p as isize,
                };
                let dv = ROW_MAJOR(p);
                matmul(g.c_out, k, p, &mut dw, k, accumulate, dyn_, dv, xn, xt, par);
                accumulate = true;
                continue;
            }
            for rows in row_tiles(g) {
                let tp = rows.len() * g.wo;
                col.resize(k * tp, T::ZERO);
                im2col(g, xn, rows.clone(), &mut col);
                // col[K×tp] read as colᵀ[tp×K].
                let colt = View {
                    rs: 1,
                    cs: tp as isize,
                };
                let src = &dyn_[rows.start * g.wo..];
                let dv = ROW_MAJOR(p);
                matmul(
                    g.c_out, k, tp, &mut dw, k, accumulate, src, dv, &col, colt, par,
                );
                accumulate = true;
            }
        }
        dw
    };
    if !outer {
        return range(0, g.batch);
    }
    let t = rayon::current_num_threads().min(g.batch).max(1);
    let bounds: Vec<(usize, usize)> = (0..t)
        .map(|i| (i * g.batch / t, (i + 1) * g.batch / t))
        .collect();
    let mut parts = bounds
        .into_par_iter()
        .map(|(lo, hi)| range(lo, hi))
        .collect::<Vec<_>>()
        .into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![T::ZERO; g.c_out * k]);
    for part in parts {
        for (d, s) in dw.iter_mut().zip(part) {
            *d += s;
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition of the convolution, for reference.
    fn naive(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; g.batch * g.out_len()];
        for n in 0..g.batch {
            for co in 0..g.c_out {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut s = 0.0f64;
                        for ci in 0..g.c_in {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * g.c_in + ci) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    let wv = w[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((n * g.c_out + co) * g.ho + oy) * g.wo + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    /// Forward equals the definition; both gradients satisfy the adjoint identities
    /// ⟨dy, conv(x, w)⟩ = ⟨dx, x⟩ (linear in x) = ⟨dW, w⟩ (linear in w), over strides,
    /// asymmetric padding, dilation, odd sizes, pointwise, batch 1 and images split into
    /// several column tiles.
    #[test]
    fn kernels_match_the_definition_and_their_adjoints() {
        let cases = [
            // x, w, stride, padding, dilation
            ([2, 3, 9, 7], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            ([1, 2, 8, 8], [3, 2, 3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
            ([3, 4, 5, 6], [2, 4, 1, 1], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            ([2, 4, 7, 5], [3, 4, 1, 1], [2, 2], [(0, 0), (0, 0)], [1, 1]),
            (
                [1, 1, 11, 10],
                [2, 1, 3, 2],
                [2, 1],
                [(2, 0), (0, 1)],
                [2, 1],
            ),
            ([5, 3, 4, 4], [1, 3, 5, 5], [1, 1], [(2, 2), (2, 2)], [1, 1]),
            // A kernel wider than the padded image: some taps read only padding.
            ([2, 1, 3, 1], [2, 1, 5, 5], [1, 1], [(2, 2), (2, 2)], [1, 1]),
            // Several column tiles per sample (see `row_tiles`), even and uneven.
            (
                [2, 16, 40, 40],
                [8, 16, 3, 3],
                [1, 1],
                [(1, 1), (1, 1)],
                [1, 1],
            ),
            (
                [1, 32, 61, 63],
                [4, 32, 3, 3],
                [2, 2],
                [(1, 1), (1, 1)],
                [1, 1],
            ),
        ];
        for (i, (xs, ws, st, pad, dil)) in cases.into_iter().enumerate() {
            let g = ConvGeometry::new(xs, ws, st, pad, dil).unwrap();
            if i >= 7 {
                assert!(row_tiles(&g).count() > 1, "case {i} is one tile");
            }
            let x = noise(xs.iter().product(), i as u64);
            let w = noise(ws.iter().product(), 100 + i as u64);
            let y = forward(&g, &x, &w);
            let r = naive(&g, &x, &w);
            assert_eq!(y.len(), r.len());
            for (a, b) in y.iter().zip(&r) {
                assert!((a - b).abs() < 1e-5, "case {i}: {a} vs {b}");
            }
            let dy = noise(y.len(), 200 + i as u64);
            let dx = backward_input(&g, &w, &dy);
            let dw = backward_weight(&g, &x, &dy);
            let lhs = dot(&dy, &y);
            assert!(
                (lhs - dot(&dx, &x)).abs() < 1e-4 * (1.0 + lhs.abs()),
                "case {i} dx"
            );
            assert!(
                (lhs - dot(&dw, &w)).abs() < 1e-4 * (1.0 + lhs.abs()),
                "case {i} dw"
            );
        }
    }
}
