//! GroupNorm (optionally followed by ReLU) as one pass, with our own CPU kernels on burn's
//! `flex` backend.
//!
//! [`FastGroupNorm`] is a burn backend extension, as [`crate::conv`] is. burn's `GroupNorm`
//! is a chain of generic tensor ops (mean, subtract, square, mean, divide, scale, shift, then
//! the ReLU), each a full pass over the activation and an autodiff node of its own, and the
//! backward is as many again; on the encoder's large early feature maps that memory traffic
//! cost more than the convolutions around it. Here the forward reads the input once per
//! group for the statistics and once to write the output; the backward recomputes the
//! statistics and makes two passes. Statistics accumulate in `f64`. On every other backend
//! [`group_norm`] is burn's own `GroupNorm::forward` (+ `relu`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};
use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::relu;
use rayon::prelude::*;

/// What [`FastGroupNorm`] computes besides the normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNormOptions {
    /// Groups of channels sharing statistics (divides the channels).
    pub groups: usize,
    /// Added to the variance.
    pub epsilon: f64,
    /// Apply ReLU to the affine output.
    pub relu: bool,
}

/// `y = act(γ_c · (x − μ_ng) / √(σ²_ng + ε) + β_c)` over `x: [N, C, H, W]`.
#[backend_extension(Flex, Autodiff)]
pub trait FastGroupNorm: Backend {
    /// The forward pass; `gamma`, `beta`: `[C]`.
    fn group_norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        options: GroupNormOptions,
    ) -> FloatTensor<Self>;
    /// Gradients with respect to `(x, gamma, beta)` from the output's gradient `grad`.
    fn group_norm_act_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: GroupNormOptions,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The float types the kernels run in.
trait Float:
    Copy
    + Default
    + PartialOrd
    + Send
    + Sync
    + std::ops::Mul<Output = Self>
    + std::ops::Add<Output = Self>
    + burn::tensor::Element
{
    fn to64(self) -> f64;
    fn from64(v: f64) -> Self;
}

impl Float for f32 {
    fn to64(self) -> f64 {
        self as f64
    }
    fn from64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    fn to64(self) -> f64 {
        self
    }
    fn from64(v: f64) -> Self {
        v
    }
}

/// `Σ f(v)` in `f64` with eight independent accumulators (so the loop vectorises and is not
/// bound by the latency of one running sum).
fn sum<T: Float>(xs: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += f(v.to64());
        }
    }
    acc.iter().sum::<f64>() + rest.iter().map(|v| f(v.to64())).sum::<f64>()
}

/// Mean and `1/√(σ² + ε)` of one group (biased variance, as burn's and PyTorch's GroupNorm).
fn stats<T: Float>(xs: &[T], epsilon: f64) -> (f64, f64) {
    let m = xs.len().max(1) as f64;
    let mean = sum(xs, |v| v) / m;
    let var = sum(xs, |v| (v - mean) * (v - mean)) / m;
    (mean, 1.0 / (var + epsilon).sqrt())
}

/// Per-channel scale and shift of the affine output `a·x + b`, in `T` so that the forward and
/// the backward's ReLU mask compute the same numbers.
fn scale_shift<T: Float>(gamma: T, beta: T, mean: f64, rstd: f64) -> (T, T) {
    let a = gamma.to64() * rstd;
    (T::from64(a), T::from64(beta.to64() - mean * a))
}

/// The sizes of one call: samples, channels, pixels per channel, channels per group.
#[derive(Clone, Copy)]
struct Dims {
    c: usize,
    hw: usize,
    cg: usize,
}

fn forward<T: Float>(x: &[T], gamma: &[T], beta: &[T], d: Dims, o: &GroupNormOptions) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    let zero = T::default();
    y.par_chunks_mut(d.c * d.hw)
        .zip(x.par_chunks(d.c * d.hw))
        .for_each(|(yn, xn)| {
            for g in 0..o.groups {
                let span = g * d.cg * d.hw..(g + 1) * d.cg * d.hw;
                let (mean, rstd) = stats(&xn[span], o.epsilon);
                for ch in g * d.cg..(g + 1) * d.cg {
                    let (a, b) = scale_shift(gamma[ch], beta[ch], mean, rstd);
                    let px = ch * d.hw..(ch + 1) * d.hw;
                    for (yv, &xv) in yn[px.clone()].iter_mut().zip(&xn[px]) {
                        let z = a * xv + b;
                        *yv = if o.relu && z <= zero { zero } else { z };
                    }
                }
            }
        });
    y
}

/// `(dx, dγ, dβ)`. With `x̂ = (x − μ)·r`, `dz` the output gradient through the ReLU and
/// `g = γ·dz`: `dx = r·(g − mean(g) − x̂·mean(g·x̂))` per group, `dγ = Σ dz·x̂`, `dβ = Σ dz`.
/// Per-sample parameter gradients are summed in sample order (no dependence on scheduling).
fn backward<T: Float>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    dy: &[T],
    d: Dims,
    o: &GroupNormOptions,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut dx = vec![T::default(); x.len()];
    let zero = T::default();
    let per_sample: Vec<Vec<f64>> = dx
        .par_chunks_mut(d.c * d.hw)
        .zip(x.par_chunks(d.c * d.hw).zip(dy.par_chunks(d.c * d.hw)))
        .map(|(dxn, (xn, dyn_))| {
            // [dγ for every channel, then dβ].
            let mut param = vec![0f64; 2 * d.c];
            let mut dz = vec![0f64; d.hw];
            for g in 0..o.groups {
                let span = g * d.cg * d.hw..(g + 1) * d.cg * d.hw;
                let (mean, rstd) = stats(&xn[span], o.epsilon);
                let (mut sum_g, mut sum_gx) = (0f64, 0f64);
                for ch in g * d.cg..(g + 1) * d.cg {
                    let (a, b) = scale_shift(gamma[ch], beta[ch], mean, rstd);
                    let px = ch * d.hw..(ch + 1) * d.hw;
                    let (xs, dys) = (&xn[px.clone()], &dyn_[px]);
                    for ((z, &xv), &g) in dz.iter_mut().zip(xs).zip(dys) {
                        let pass = !o.relu || a * xv + b > zero;
                        *z = if pass { g.to64() } else { 0.0 };
                    }
                    let s_dz = sum(&dz, |v| v);
                    let mut acc = [0f64; 4];
                    for (i, (&z, &xv)) in dz.iter().zip(xs).enumerate() {
                        acc[i % 4] += z * (xv.to64() - mean);
                    }
                    let s_dzx = acc.iter().sum::<f64>() * rstd;
                    param[ch] = s_dzx;
                    param[d.c + ch] = s_dz;
                    sum_g += gamma[ch].to64() * s_dz;
                    sum_gx += gamma[ch].to64() * s_dzx;
                }
                let m = (d.cg * d.hw).max(1) as f64;
                let (mean_g, mean_gx) = (sum_g / m, sum_gx / m);
                for ch in g * d.cg..(g + 1) * d.cg {
                    let (a, b) = scale_shift(gamma[ch], beta[ch], mean, rstd);
                    let gm = gamma[ch].to64();
                    let px = ch * d.hw..(ch + 1) * d.hw;
                    let (xs, dys) = (&xn[px.clone()], &dyn_[px.clone()]);
                    for ((dxv, &xv), &g) in dxn[px].iter_mut().zip(xs).zip(dys) {
                        let pass = !o.relu || a * xv + b > zero;
                        let dzv = if pass { g.to64() } else { 0.0 };
                        let xhat = (xv.to64() - mean) * rstd;
                        *dxv = T::from64(rstd * (gm * dzv - mean_g - xhat * mean_gx));
                    }
                }
            }
            param
        })
        .collect();
    let mut param = vec![0f64; 2 * d.c];
    for p in per_sample {
        for (a, v) in param.iter_mut().zip(p) {
            *a += v;
        }
    }
    let dgamma = param[..d.c].iter().map(|&v| T::from64(v)).collect();
    let dbeta = param[d.c..].iter().map(|&v| T::from64(v)).collect();
    (dx, dgamma, dbeta)
}

type FlexTensor = FloatTensor<Flex>;

/// The sizes of `x` (`[N, C, H, W]`, `C` divisible by the groups), checked against `[C]`
/// parameters.
fn dims_of(x: &FlexTensor, gamma: &FlexTensor, o: &GroupNormOptions) -> Dims {
    let s = x.layout().shape();
    assert!(
        s.len() == 4,
        "group_norm_act: shapes are checked by `norm::group_norm`"
    );
    let (c, hw) = (s[1], s[2] * s[3]);
    assert!(
        o.groups > 0 && c.is_multiple_of(o.groups) && gamma.layout().shape()[0] == c,
        "group_norm_act: shapes are checked by `norm::group_norm`"
    );
    Dims {
        c,
        hw,
        cg: c / o.groups,
    }
}

fn flex<T: Float>(v: Vec<T>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// The contiguous data of `t` as `$t` (the dtype [`group_norm`] checked).
macro_rules! slice {
    ($t:ty, $x:expr) => {
        $x.as_slice::<$t>()
            .expect("group_norm_act: dtypes are checked by `norm::group_norm`")
    };
}

/// The sizes and shape of `x` and `[x, γ, β]` made contiguous, for the kernels.
fn contiguous(o: &GroupNormOptions, t: [FlexTensor; 3]) -> (Dims, Vec<usize>, [FlexTensor; 3]) {
    let d = dims_of(&t[0], &t[1], o);
    let shape = t[0].layout().shape().dims::<4>().to_vec();
    (d, shape, t.map(|t| t.to_contiguous()))
}

impl FastGroupNorm for Flex {
    fn group_norm_act(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        o: GroupNormOptions,
    ) -> FlexTensor {
        let (d, shape, [x, gamma, beta]) = contiguous(&o, [x, gamma, beta]);
        macro_rules! go {
            ($t:ty) => {
                flex::<$t>(
                    forward(slice!($t, x), slice!($t, gamma), slice!($t, beta), d, &o),
                    shape,
                )
            };
        }
        match x.dtype() {
            DType::F64 => go!(f64),
            _ => go!(f32),
        }
    }

    fn group_norm_act_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        grad: FlexTensor,
        o: GroupNormOptions,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (d, shape, [x, gamma, beta]) = contiguous(&o, [x, gamma, beta]);
        let grad = grad.to_contiguous();
        macro_rules! go {
            ($t:ty) => {{
                let (dx, dg, db) = backward::<$t>(
                    slice!($t, x),
                    slice!($t, gamma),
                    slice!($t, beta),
                    slice!($t, grad),
                    d,
                    &o,
                );
                (flex(dx, shape), flex(dg, vec![d.c]), flex(db, vec![d.c]))
            }};
        }
        match x.dtype() {
            DType::F64 => go!(f64),
            _ => go!(f32),
        }
    }
}

#[derive(Debug)]
struct GroupNormBackward;

impl<B: Backend + FastGroupNorm> Backward<B, 3> for GroupNormBackward {
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        GroupNormOptions,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, o) = ops.state;
        let (dx, dg, db) = B::group_norm_act_backward(x, gamma, beta, grad, o);
        for (node, g) in [(node_x, dx), (node_g, dg), (node_b, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + FastGroupNorm, C: CheckpointStrategy> FastGroupNorm for Autodiff<B, C> {
    fn group_norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        o: GroupNormOptions,
    ) -> FloatTensor<Self> {
        match GroupNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, gp, bp) = (
                    x.primitive().clone(),
                    gamma.primitive().clone(),
                    beta.primitive().clone(),
                );
                let out = B::group_norm_act(xp.clone(), gp.clone(), bp.clone(), o);
                prep.finish((xp, gp, bp, o), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::group_norm_act(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                o,
            )),
        }
    }

    // Gradients of gradients are not needed by this network; these run untracked.
    fn group_norm_act_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        o: GroupNormOptions,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dg, db) = B::group_norm_act_backward(
            Self::inner(x),
            Self::inner(gamma),
            Self::inner(beta),
            Self::inner(grad),
            o,
        );
        (
            Self::from_inner(dx),
            Self::from_inner(dg),
            Self::from_inner(db),
        )
    }
}

/// `norm.forward(x)`, then `relu` when asked: on our kernels where `x` is on flex, `f32` or
/// `f64`, the norm affine and its groups divide the channels; burn's own ops otherwise.
pub fn group_norm(norm: &GroupNorm, x: Tensor<4>, then_relu: bool) -> Tensor<4> {
    let c = x.dims()[1];
    let fast = crate::conv::fast_kernels_on()
        && x.device().inner() == Device::flex()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && norm.num_groups > 0
        && c == norm.num_channels
        && c.is_multiple_of(norm.num_groups);
    let (Some(gamma), Some(beta), true) = (&norm.gamma, &norm.beta, fast) else {
        let y = norm.forward(x);
        return if then_relu { relu(y) } else { y };
    };
    let options = GroupNormOptions {
        groups: norm.num_groups,
        epsilon: norm.epsilon,
        relu: then_relu,
    };
    Tensor::<4>::from_dispatch(<burn::backend::Dispatch as FastGroupNorm>::group_norm_act(
        x.into_dispatch(),
        gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        options,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::GroupNormConfig;
    use burn::tensor::Distribution;

    fn max_rel<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-3);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Ours against burn's `GroupNorm` (+ `relu`) through autodiff: output and the gradients of
    /// input, γ and β, with and without the ReLU, over group counts, odd sizes, batch 1 and
    /// more samples than threads, with γ and β away from their initial 1 and 0.
    #[test]
    fn fast_group_norm_equals_burns_forward_and_backward() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let normal = Distribution::Normal(0.0, 1.0);
        for (i, (shape, groups, then_relu)) in [
            ([2usize, 8usize, 5usize, 7usize], 4usize, true),
            ([1, 6, 9, 3], 3, false),
            ([5, 16, 4, 4], 8, true),
            ([3, 4, 1, 1], 1, true),
            ([4, 12, 6, 6], 12, false),
        ]
        .into_iter()
        .enumerate()
        {
            let mut norm = GroupNormConfig::new(groups, shape[1]).init(&device);
            let c = shape[1];
            norm.gamma = Some(burn::module::Param::from_tensor(
                Tensor::<1>::random([c], normal, &device) + 1.0,
            ));
            norm.beta = Some(burn::module::Param::from_tensor(Tensor::<1>::random(
                [c],
                normal,
                &device,
            )));
            let x = (Tensor::<4>::random(shape, normal, &device) * 3.0 + 0.5).require_grad();
            let reference = {
                let y = norm.forward(x.clone());
                if then_relu { relu(y) } else { y }
            };
            let ours = group_norm(&norm, x.clone(), then_relu);
            let r = Tensor::<4>::random(shape, normal, &device);
            let ga = (reference.clone() * r.clone()).sum().backward();
            let gb = (ours.clone() * r).sum().backward();
            assert!(max_rel(ours, reference) < 1e-5, "case {i}: output");
            assert!(
                max_rel(x.grad(&gb).unwrap(), x.grad(&ga).unwrap()) < 1e-4,
                "case {i}: input gradient"
            );
            let (gamma, beta) = (norm.gamma.as_ref().unwrap(), norm.beta.as_ref().unwrap());
            for (name, p) in [("gamma", gamma), ("beta", beta)] {
                let (b, a) = (p.val().grad(&gb).unwrap(), p.val().grad(&ga).unwrap());
                assert!(max_rel(b, a) < 1e-4, "case {i}: {name} gradient");
            }
        }
    }
}
