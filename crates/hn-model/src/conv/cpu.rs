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

/// im2col of one sample: `col[(ci·kh + ky)·kw + kx][oy·wo + ox]`, zero where the kernel reads
/// padding.
fn im2col<T: Real>(g: &ConvGeometry, x: &[T], col: &mut [T]) {
    let p = g.p();
    for ci in 0..g.c_in {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            let (y0, y1, ybase) = g.valid_range(ky, 0, g.ho, g.h);
            for kx in 0..g.kw {
                let (x0, x1, xbase) = g.valid_range(kx, 1, g.wo, g.w);
                let row = &mut col[((ci * g.kh + ky) * g.kw + kx) * p..][..p];
                row[..y0 * g.wo].fill(T::ZERO);
                row[y1 * g.wo..].fill(T::ZERO);
                for oy in y0..y1 {
                    let iy = (ybase + (oy * g.stride[0]) as isize) as usize;
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    let dst = &mut row[oy * g.wo..(oy + 1) * g.wo];
                    dst[..x0].fill(T::ZERO);
                    dst[x1..].fill(T::ZERO);
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

/// col2im of one sample: the adjoint of [`im2col`], accumulating into `dx` (which the caller
/// gives zeroed).
fn col2im<T: Real>(g: &ConvGeometry, col: &[T], dx: &mut [T]) {
    let p = g.p();
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            let (y0, y1, ybase) = g.valid_range(ky, 0, g.ho, g.h);
            for kx in 0..g.kw {
                let (x0, x1, xbase) = g.valid_range(kx, 1, g.wo, g.w);
                let row = &col[((ci * g.kh + ky) * g.kw + kx) * p..][..p];
                for oy in y0..y1 {
                    let iy = (ybase + (oy * g.stride[0]) as isize) as usize;
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let src = &row[oy * g.wo + x0..oy * g.wo + x1];
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

/// `dst[m×n] (+)= a[m×k] · b[k×n]` with the given strides (`accumulate` adds to `dst`).
#[allow(clippy::too_many_arguments)]
fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    a: &[T],
    av: View,
    b: &[T],
    bv: View,
    par: Parallelism,
) {
    assert!(dst.len() >= m * n);
    let extent = |v: View, rows: usize, cols: usize| {
        (rows.saturating_sub(1) as isize * v.rs + cols.saturating_sub(1) as isize * v.cs) as usize
            + 1
    };
    assert!(m == 0 || k == 0 || a.len() >= extent(av, m, k));
    assert!(k == 0 || n == 0 || b.len() >= extent(bv, k, n));
    // SAFETY: the asserts above keep every index gemm computes from the strides inside the
    // three slices; `dst` does not alias `a` or `b` (distinct borrows).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
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

/// Run `one(scratch, (n, out[n]))` for every sample's slice of `out` (`len` elements each): on
/// the rayon pool with a scratch buffer per worker when `outer`, else in order.
fn per_sample<T: Real>(
    out: &mut [T],
    len: usize,
    outer: bool,
    one: impl Fn(&mut Vec<T>, (usize, &mut [T])) + Sync + Send,
) {
    let chunks = out.chunks_mut(len.max(1)).enumerate();
    if outer {
        chunks
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each_init(Vec::new, one);
    } else {
        let mut col = Vec::new();
        chunks.for_each(|c| one(&mut col, c));
    }
}

/// Forward: `y[n] = W · im2col(x[n])`, `[N, C_out, Ho, Wo]`.
pub fn forward<T: Real>(g: &ConvGeometry, x: &[T], w: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let mut y = vec![T::ZERO; g.batch * g.out_len()];
    let outer = per_sample_parallel(g);
    let par = inner_parallelism(outer);
    let one = |col: &mut Vec<T>, (n, yn): (usize, &mut [T])| {
        let xn = &x[n * g.in_len()..(n + 1) * g.in_len()];
        let colm: &[T] = if g.is_pointwise() {
            xn
        } else {
            col.resize(k * p, T::ZERO);
            im2col(g, xn, col);
            col
        };
        matmul(
            g.c_out,
            p,
            k,
            yn,
            false,
            w,
            ROW_MAJOR(k),
            colm,
            ROW_MAJOR(p),
            par,
        );
    };
    per_sample(&mut y, g.out_len(), outer, one);
    y
}

/// Input gradient: `dx[n] = col2im(Wᵀ · dy[n])`, `[N, C_in, H, W]`.
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
            matmul(k, p, g.c_out, dxn, false, w, wt, dyn_, ROW_MAJOR(p), par);
        } else {
            col.resize(k * p, T::ZERO);
            matmul(k, p, g.c_out, col, false, w, wt, dyn_, ROW_MAJOR(p), par);
            col2im(g, col, dxn);
        }
    };
    per_sample(&mut dx, g.in_len(), outer, one);
    dx
}

/// Weight gradient: `dW = Σₙ dy[n] · im2col(x[n])ᵀ`, `[C_out, C_in, kh, kw]`. Samples are split
/// into one contiguous range per thread, each summed into its own buffer; the buffers are
/// added at the end (a fixed order, so the result does not depend on scheduling).
pub fn backward_weight<T: Real>(g: &ConvGeometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let outer = per_sample_parallel(g);
    let par = inner_parallelism(outer);
    // col[K×P] read as colᵀ[P×K].
    let colt = View {
        rs: 1,
        cs: p as isize,
    };
    let range = |lo: usize, hi: usize| {
        let mut dw = vec![T::ZERO; g.c_out * k];
        let mut col = Vec::new();
        for n in lo..hi {
            let xn = &x[n * g.in_len()..(n + 1) * g.in_len()];
            let dyn_ = &dy[n * g.out_len()..(n + 1) * g.out_len()];
            let colm: &[T] = if g.is_pointwise() {
                xn
            } else {
                col.resize(k * p, T::ZERO);
                im2col(g, xn, &mut col);
                &col
            };
            matmul(
                g.c_out,
                k,
                p,
                &mut dw,
                n > lo,
                dyn_,
                ROW_MAJOR(p),
                colm,
                colt,
                par,
            );
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
    /// asymmetric padding, dilation, odd sizes, pointwise and batch 1.
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
        ];
        for (i, (xs, ws, st, pad, dil)) in cases.into_iter().enumerate() {
            let g = ConvGeometry::new(xs, ws, st, pad, dil).unwrap();
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
