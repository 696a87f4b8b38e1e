//! The network's 2-D convolutions, with our own CPU kernels on burn's `flex` backend.
//!
//! [`FastConv`] is a burn backend extension: forward, input gradient and weight gradient are
//! ours on `flex` ([`cpu`]), tied into burn's autodiff by a hand-written `Backward`. On
//! libtorch's CUDA devices (feature `tch`) the same extension runs libtorch's own kernels, the
//! weight gradient through libtorch's autograd ([`libtorch`]), because burn 0.22 computes it
//! there with a generic formula that cuDNN runs as an odd large-kernel convolution. On every
//! other backend and device [`conv2d`] is burn's own `Conv2d::forward`, so the model code
//! stays backend-generic.

pub mod cpu;
#[cfg(feature = "tch")]
mod libtorch;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

use cpu::ConvGeometry;

/// Convolution without bias (the bias is a broadcast add outside, differentiated by burn).
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait FastConv: Backend {
    /// `x: [N, C_in, H, W]`, `weight: [C_out, C_in, kh, kw]` → `[N, C_out, Ho, Wo]`.
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;
    /// The gradient with respect to `x` (whose shape it takes) of [`Self::fast_conv2d`].
    fn fast_conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;
    /// The gradient with respect to `weight` (whose shape it takes).
    fn fast_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;
}

type FlexTensor = FloatTensor<Flex>;

/// A contiguous flex tensor of a float type the kernels run in.
enum Data {
    F32(FlexTensor),
    F64(FlexTensor),
}

/// Contiguous data and shape of a 4-D flex tensor; `None` for dtypes the kernels do not take.
fn data(t: &FlexTensor) -> Option<(Data, [usize; 4])> {
    use burn::tensor::DType;
    if t.layout().shape().len() != 4 {
        return None;
    }
    let dims = t.layout().shape().dims::<4>();
    match t.dtype() {
        DType::F32 => Some((Data::F32(t.to_contiguous()), dims)),
        DType::F64 => Some((Data::F64(t.to_contiguous()), dims)),
        _ => None,
    }
}

fn tensor<T: cpu::Real + burn::tensor::Element>(data: Vec<T>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(burn::tensor::TensorData::new(data, shape))
}

/// Which kernel of [`cpu`] to run.
#[derive(Clone, Copy)]
enum Kernel {
    Forward,
    InputGrad,
    WeightGrad,
}

/// Run `kernel` on `(a, b)` — `(x, w)` forward, `(w, dy)` for the input gradient, `(x, dy)`
/// for the weight gradient — in their common float type; `None` where the kernels do not
/// apply (groups, dtypes, mixed types): then flex's own kernels run.
fn run(
    kernel: Kernel,
    x: &FlexTensor,
    w: &FlexTensor,
    dy: Option<&FlexTensor>,
    o: &ConvOptions<2>,
) -> Option<FlexTensor> {
    if o.groups != 1 {
        return None;
    }
    let (xd, xs) = data(x)?;
    let (wd, ws) = data(w)?;
    let g = ConvGeometry::new(xs, ws, o.stride, o.padding, o.dilation)?;
    let dy = dy.map(data);
    let out_shape = match kernel {
        Kernel::Forward => [g.batch, g.c_out, g.ho, g.wo],
        Kernel::InputGrad => [g.batch, g.c_in, g.h, g.w],
        Kernel::WeightGrad => [g.c_out, g.c_in, g.kh, g.kw],
    };
    macro_rules! go {
        ($t:ty, $x:expr, $w:expr, $dy:expr) => {{
            let (x, w): (&[$t], &[$t]) = ($x.as_slice()?, $w.as_slice()?);
            let dy: Option<&[$t]> = match $dy {
                Some(d) => Some(d.as_slice()?),
                None => None,
            };
            let v = match (kernel, dy) {
                (Kernel::Forward, _) => cpu::forward(&g, x, w),
                (Kernel::InputGrad, Some(dy)) => cpu::backward_input(&g, w, dy),
                (Kernel::WeightGrad, Some(dy)) => cpu::backward_weight(&g, x, dy),
                _ => return None,
            };
            Some(tensor(v, out_shape))
        }};
    }
    match (xd, wd, dy) {
        (Data::F32(x), Data::F32(w), None) => go!(f32, x, w, None::<&FlexTensor>),
        (Data::F32(x), Data::F32(w), Some(Some((Data::F32(d), _)))) => go!(f32, x, w, Some(&d)),
        (Data::F64(x), Data::F64(w), None) => go!(f64, x, w, None::<&FlexTensor>),
        (Data::F64(x), Data::F64(w), Some(Some((Data::F64(d), _)))) => go!(f64, x, w, Some(&d)),
        _ => None,
    }
}

impl FastConv for Flex {
    fn fast_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        run(Kernel::Forward, &x, &weight, None, &options)
            .unwrap_or_else(|| Flex::conv2d(x, weight, None, options))
    }

    fn fast_conv2d_input_grad(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        run(Kernel::InputGrad, &x, &weight, Some(&grad), &options)
            .unwrap_or_else(|| Flex::conv2d_x_backward(x, weight, grad, options))
    }

    fn fast_conv2d_weight_grad(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        run(Kernel::WeightGrad, &x, &weight, Some(&grad), &options)
            .unwrap_or_else(|| Flex::conv2d_weight_backward(x, weight, grad, options))
    }
}

#[derive(Debug)]
struct FastConvBackward;

impl<B: Backend + FastConv> Backward<B, 2> for FastConvBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, o) = ops.state;
        if let Some(node) = node_x {
            let dx = B::fast_conv2d_input_grad(x.clone(), w.clone(), grad.clone(), o.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, B::fast_conv2d_weight_grad(x, w, grad, o));
        }
    }
}

impl<B: Backend + FastConv, C: CheckpointStrategy> FastConv for Autodiff<B, C> {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match FastConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
                let out = B::fast_conv2d(xp.clone(), wp.clone(), options.clone());
                prep.finish((xp, wp, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }

    // Gradients of gradients are not needed by this network; these run untracked.
    fn fast_conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options)
    }

    fn fast_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options)
    }
}

static FAST_KERNELS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Use our kernels on flex (the default) or burn's own there too: for A/B benchmarks and
/// equivalence checks, process-wide.
pub fn set_fast_kernels(on: bool) {
    FAST_KERNELS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether our flex kernels (this module's and [`crate::gather`]'s) are on.
pub fn fast_kernels_on() -> bool {
    FAST_KERNELS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether [`conv2d`] runs our kernels for `x`: it lives on flex (with or without autodiff) and
/// they are on.
fn runs_fast_kernels(x: &Tensor<4>) -> bool {
    fast_kernels_on() && x.device().inner() == Device::flex()
}

/// Whether [`conv2d`] goes through [`FastConv`] for `x`: our kernels on flex, libtorch's
/// convolution backward on a libtorch CUDA device. (On libtorch's CPU, oneDNN runs burn's
/// generic weight gradient as fast as its own backward, and the extension's recomputed
/// forward made a train step no faster, up to 15 % slower: docs/BENCHMARKS.md, run O.)
/// Callers keep rewrites meant for burn's own kernels for the other case.
pub fn runs_extension(x: &Tensor<4>) -> bool {
    #[cfg(feature = "tch")]
    if fast_kernels_on()
        && matches!(
            x.device().inner().as_dispatch(),
            burn::backend::DispatchDevice::LibTorch(burn::backend::LibTorchDevice::Cuda(_))
        )
    {
        return true;
    }
    runs_fast_kernels(x)
}

/// `conv.forward(x)`, on our kernels where `x` is on flex.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    use burn::nn::PaddingConfig2d;
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        // "Same" is computed from the input size by burn; not used by this network.
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    conv2d_tensor(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}

/// burn's functional `conv2d`, on our kernels where `x` is on flex.
pub fn conv2d_tensor(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if !runs_extension(&x) || options.groups != 1 {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    through_extension(x, weight, bias, options)
}

/// [`conv2d_tensor`] through [`FastConv`] whatever the device (groups = 1).
fn through_extension(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let y = Tensor::<4>::from_dispatch(<burn::backend::Dispatch as FastConv>::fast_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ));
    match bias {
        Some(b) => {
            let c = b.dims()[0];
            y + b.reshape([1, c, 1, 1])
        }
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Input shape, weight shape, stride, padding, dilation.
    type Case = (
        [usize; 4],
        [usize; 4],
        [usize; 2],
        [(usize, usize); 2],
        [usize; 2],
    );

    fn max_rel(a: Tensor<4>, b: Tensor<4>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-3);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Ours against burn's own flex kernels through autodiff: the output and the gradients of
    /// input, weight and bias, over strides, asymmetric padding, dilation, odd sizes, 1×1
    /// (pointwise and strided) and batch 1 — more samples than threads and fewer.
    #[test]
    fn fast_convolution_equals_burns_forward_and_backward() {
        equals_burns_convolution(Device::flex().autodiff(), conv2d_tensor);
    }

    /// The extension on libtorch (its weight gradient from libtorch's autograd) against
    /// burn-tch's own convolution and burn's generic backward, on the same cases: run on the
    /// CPU device, which [`conv2d_tensor`] itself leaves to burn, so the extension is called
    /// directly.
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    #[test]
    fn libtorch_extension_equals_burns_forward_and_backward() {
        equals_burns_convolution(Device::libtorch().autodiff(), through_extension);
    }

    /// `ours` on `device` against burn's functional `conv2d` there.
    fn equals_burns_convolution(
        device: Device,
        ours: fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>,
    ) {
        device.seed(11);
        let cases: [Case; 7] = [
            (
                [2, 3, 17, 13],
                [8, 3, 3, 3],
                [2, 2],
                [(1, 1), (1, 1)],
                [1, 1],
            ),
            ([1, 8, 9, 9], [8, 8, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            ([6, 5, 8, 6], [7, 5, 1, 1], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            (
                [3, 5, 9, 14],
                [4, 5, 1, 1],
                [2, 2],
                [(0, 0), (0, 0)],
                [1, 1],
            ),
            (
                [2, 2, 12, 11],
                [3, 2, 3, 2],
                [2, 1],
                [(2, 0), (0, 1)],
                [2, 1],
            ),
            ([5, 4, 7, 7], [2, 4, 5, 5], [1, 1], [(2, 2), (2, 2)], [1, 1]),
            (
                [16, 16, 16, 16],
                [32, 16, 3, 3],
                [2, 2],
                [(1, 1), (1, 1)],
                [1, 1],
            ),
        ];
        for (i, (xs, ws, stride, padding, dilation)) in cases.into_iter().enumerate() {
            let options = ConvOptions::new_with_padding(stride, padding, dilation, 1);
            let normal = Distribution::Normal(0.0, 1.0);
            let x = Tensor::<4>::random(xs, normal, &device).require_grad();
            let w = Tensor::<4>::random(ws, normal, &device).require_grad();
            let b = Tensor::<1>::random([ws[0]], normal, &device).require_grad();
            let reference = burn::tensor::module::conv2d(
                x.clone(),
                w.clone(),
                Some(b.clone()),
                options.clone(),
            );
            let ours = ours(x.clone(), w.clone(), Some(b.clone()), options);
            let r = Tensor::<4>::random(reference.dims(), normal, &device);
            let ga = (reference.clone() * r.clone()).sum().backward();
            let gb = (ours.clone() * r).sum().backward();
            assert!(max_rel(ours, reference) < 1e-5, "case {i}: output");
            let grad = |t: &Tensor<4>, g| t.grad(g).unwrap();
            assert!(
                max_rel(grad(&x, &gb), grad(&x, &ga)) < 1e-5,
                "case {i}: input gradient"
            );
            assert!(
                max_rel(grad(&w, &gb), grad(&w, &ga)) < 1e-5,
                "case {i}: weight gradient"
            );
            let (bb, ba) = (b.grad(&gb).unwrap(), b.grad(&ga).unwrap());
            let d = (bb - ba.clone()).abs().max().into_scalar::<f32>();
            assert!(
                d <= 1e-4 * ba.abs().max().into_scalar::<f32>().max(1.0),
                "case {i}: bias"
            );
        }
    }
}
