//! [`FastConv`] on libtorch: libtorch's own kernels for all three convolution passes.
//!
//! burn-tch 0.22 leaves the convolution's backward to burn's generic formulas. The input
//! gradient's (a transposed convolution) is what libtorch itself runs, but the weight
//! gradient's swaps batch and channels of the input and the output gradient and convolves
//! them with the whole output-gradient map as the kernel, which cuDNN and oneDNN run as an odd
//! large-kernel convolution instead of their backward-filter kernels. tch 0.22 binds no ATen
//! `convolution_backward`, so the weight gradient is taken from libtorch's autograd: the
//! forward is recomputed on detached copies of the saved input and weight (only the weight
//! tracked), and the backward starts from `Σ y · dy`, whose gradient with respect to `y` is
//! `dy` (a scalar root, so `run_backward`'s seed of ones is one number, not another buffer of
//! the output's size). libtorch then runs its own backward-filter kernel, for the price of one
//! more forward convolution.

// burn-tch is deprecated upstream; this project still offers it (docs/BENCHMARKS.md).
#![allow(deprecated)]

use burn::backend::LibTorch;
use burn::backend::libtorch::TchTensor;
use burn::backend::ops::ModuleOps;
use burn::tensor::ops::ConvOptions;

use super::FastConv;

fn i64s(v: [usize; 2]) -> [i64; 2] {
    v.map(|i| i as i64)
}

impl FastConv for LibTorch {
    fn fast_conv2d(x: TchTensor, weight: TchTensor, options: ConvOptions<2>) -> TchTensor {
        LibTorch::conv2d(x, weight, None, options)
    }

    fn fast_conv2d_input_grad(
        x: TchTensor,
        weight: TchTensor,
        grad: TchTensor,
        options: ConvOptions<2>,
    ) -> TchTensor {
        LibTorch::conv2d_x_backward(x, weight, grad, options)
    }

    fn fast_conv2d_weight_grad(
        x: TchTensor,
        weight: TchTensor,
        grad: TchTensor,
        options: ConvOptions<2>,
    ) -> TchTensor {
        if options.is_asymmetric() {
            // libtorch's convolution takes one padding per side pair; burn pads such inputs
            // itself first. Not a shape this network uses.
            return LibTorch::conv2d_weight_backward(x, weight, grad, options);
        }
        let dw = tch::with_grad(|| {
            let x = x.tensor.detach();
            let w = weight.tensor.detach().set_requires_grad(true);
            let y = x.conv2d(
                &w,
                None::<tch::Tensor>,
                i64s(options.stride),
                i64s(options.padding_begin()),
                i64s(options.dilation),
                options.groups as i64,
            );
            let root = (y * &grad.tensor).sum(None);
            tch::Tensor::run_backward(&[root], &[&w], false, false)
                .pop()
                .expect("one gradient per input")
        });
        TchTensor::new(dw)
    }
}
