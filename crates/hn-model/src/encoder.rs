//! Imaging feature extractor: a 2-D residual CNN shared across slices (2.5-D).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::s;

use crate::util::norm_groups;

/// Configuration of one residual block.
#[derive(Config, Debug)]
pub struct ResBlockConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Stride of the first convolution (2 halves the feature map).
    #[config(default = 2)]
    pub stride: usize,
}

/// Pre-activation-free basic residual block (He et al. 2016): conv3×3 → GN → ReLU → conv3×3 →
/// GN, plus a 1×1 projection shortcut when the shape changes. GroupNorm rather than BatchNorm
/// because batches are a handful of studies and the statistics must not depend on the batch
/// (MC dropout, save/load equality and per-study inference all need that).
#[derive(Module, Debug)]
pub struct ResBlock {
    conv1: Conv2d,
    norm1: GroupNorm,
    conv2: Conv2d,
    norm2: GroupNorm,
    shortcut: Option<Conv2d>,
}

impl ResBlockConfig {
    /// Build the block.
    pub fn init(&self, device: &Device) -> ResBlock {
        let conv3 = |cin: usize, stride: usize| {
            Conv2dConfig::new([cin, self.out_channels], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device)
        };
        let gn =
            || GroupNormConfig::new(norm_groups(self.out_channels), self.out_channels).init(device);
        let shortcut = (self.stride != 1 || self.in_channels != self.out_channels).then(|| {
            Conv2dConfig::new([self.in_channels, self.out_channels], [1, 1])
                .with_stride([self.stride, self.stride])
                .init(device)
        });
        ResBlock {
            conv1: conv3(self.in_channels, self.stride),
            norm1: gn(),
            conv2: conv3(self.out_channels, 1),
            norm2: gn(),
            shortcut,
        }
    }
}

impl ResBlock {
    /// `[N, C_in, H, W]` → `[N, C_out, ceil(H/stride), ceil(W/stride)]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.shortcut {
            // Our kernels gather strided pixels themselves, and libtorch takes a strided 1×1
            // as it is; the rewrite is for burn's kernels.
            Some(conv) if crate::conv::runs_extension(&x) => crate::conv::conv2d(conv, x.clone()),
            Some(conv) => strided_pointwise(conv, x.clone()),
            None => x.clone(),
        };
        let y = crate::norm::group_norm(&self.norm1, crate::conv::conv2d(&self.conv1, x), true);
        let y = crate::norm::group_norm(&self.norm2, crate::conv::conv2d(&self.conv2, y), false);
        relu(y + identity)
    }
}

/// Configuration of the slice encoder.
#[derive(Config, Debug)]
pub struct ImageEncoderConfig {
    /// Channels per slice given to the CNN (windows × context slices).
    pub in_channels: usize,
    /// Stem width followed by one stride-2 residual block per further entry.
    pub widths: Vec<usize>,
    /// Channels of the MR stem (sequences × context slices); 0 = no MR stem.
    #[config(default = 0)]
    pub mr_in_channels: usize,
}

/// The 2-D CNN: a stride-2 stem per modality (CT windows; MR sequences) then stride-2
/// residual stages shared by both. Every stage halves the map (`ceil`), so a slice of `H×W`
/// becomes `ceil(H/2^L)×ceil(W/2^L)` cells with `L = widths.len()`.
///
/// Why a stem per modality: the first layer reads what the channels *mean* (a bone window, a
/// FLAIR image); the same filters cannot serve both, while edges, textures and shapes deeper
/// in are shared — so one trunk learns from CT and MR studies together.
#[derive(Module, Debug)]
pub struct ImageEncoder {
    stem: Conv2d,
    stem_norm: GroupNorm,
    blocks: Vec<ResBlock>,
    mr_stem: Option<Conv2d>,
    mr_stem_norm: Option<GroupNorm>,
}

impl ImageEncoderConfig {
    /// Build the encoder.
    pub fn init(&self, device: &Device) -> ImageEncoder {
        assert!(
            !self.widths.is_empty(),
            "widths needs at least the stem width"
        );
        let w0 = self.widths[0];
        let stem_conv = |cin: usize| {
            Conv2dConfig::new([cin, w0], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device)
        };
        let stem = stem_conv(self.in_channels);
        let mr = self.mr_in_channels > 0;
        let blocks = self
            .widths
            .windows(2)
            .map(|w| ResBlockConfig::new(w[0], w[1]).init(device))
            .collect();
        ImageEncoder {
            stem,
            stem_norm: GroupNormConfig::new(norm_groups(w0), w0).init(device),
            blocks,
            mr_stem: mr.then(|| stem_conv(self.mr_in_channels)),
            mr_stem_norm: mr.then(|| GroupNormConfig::new(norm_groups(w0), w0).init(device)),
        }
    }
}

/// A 1×1 convolution of stride `s` is the 1×1 stride-1 convolution of every `s`-th row and
/// column: the same numbers. Used where hn-model's own kernels do not run
/// ([`crate::conv::runs_extension`]): burn's `flex` kernels run a strided 1×1 through their
/// general im2col path but a stride-1 1×1 straight as one GEMM (faster forward and backward at
/// the demo's shapes; figures in docs/BENCHMARKS.md). The rows and columns are
/// picked by a reshape and a plain slice, not a stepped slice: libtorch's backward of a
/// stepped slice fails in burn-tch 0.22 ("view size is not compatible"). Sizes that are not
/// multiples of the stride use the plain convolution.
pub fn strided_pointwise(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [sh, sw] = conv.stride;
    let [n, c, h, w] = x.dims();
    let plain = conv.kernel_size != [1, 1]
        || conv.dilation != [1, 1]
        || conv.groups != 1
        || conv.padding != PaddingConfig2d::Valid
        || (sh == 1 && sw == 1)
        || h % sh != 0
        || w % sw != 0;
    if plain {
        return conv.forward(x);
    }
    let x = x
        .reshape([n, c, h / sh, sh, w / sw, sw])
        .slice(s![.., .., .., 0..1, .., 0..1])
        .reshape([n, c, h / sh, w / sw]);
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    )
}

impl ImageEncoder {
    /// CT path: `[N, C_in, H, W]` (N = batch × slices) → `[N, D, h, w]`, `D = widths.last()`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.trunk(self.stem(x, false))
    }

    /// Whether the encoder has an MR stem.
    pub fn has_mr_stem(&self) -> bool {
        self.mr_stem.is_some()
    }

    /// The stem of CT (`mr = false`) or MR: `[N, C, H, W]` → `[N, widths[0], H/2, W/2]`.
    /// Panics when `mr` is asked of an encoder without an MR stem.
    pub fn stem(&self, x: Tensor<4>, mr: bool) -> Tensor<4> {
        let (conv, norm) = if mr {
            (
                self.mr_stem.as_ref().expect("encoder has an MR stem"),
                self.mr_stem_norm.as_ref().expect("encoder has an MR stem"),
            )
        } else {
            (&self.stem, &self.stem_norm)
        };
        crate::norm::group_norm(norm, crate::conv::conv2d(conv, x), true)
    }

    /// The shared residual stages after a stem.
    pub fn trunk(&self, mut x: Tensor<4>) -> Tensor<4> {
        for block in &self.blocks {
            x = block.forward(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The rewritten stride-2 shortcut computes what burn's `Conv2d` computes, forward and
    /// backward (weight and input gradients), on sizes that take the rewrite and on odd ones.
    #[test]
    fn rewritten_shortcut_equals_the_plain_convolution() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let conv = Conv2dConfig::new([5, 7], [1, 1])
            .with_stride([2, 2])
            .init(&device);
        for (h, w) in [(16, 12), (9, 14), (7, 7)] {
            let x = Tensor::<4>::random([2, 5, h, w], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let (a, b) = (conv.forward(x.clone()), strided_pointwise(&conv, x.clone()));
            let ga = (a.clone() * a.clone()).sum().backward();
            let gb = (b.clone() * b.clone()).sum().backward();
            assert!(max_diff(a, b) < 1e-5, "output at {h}×{w}");
            for (p, q, what) in [
                (
                    conv.weight.grad(&ga).unwrap(),
                    conv.weight.grad(&gb).unwrap(),
                    "weight",
                ),
                (x.grad(&ga).unwrap(), x.grad(&gb).unwrap(), "input"),
            ] {
                let scale = p.clone().abs().max().into_scalar::<f32>().max(1.0);
                let d = (p - q).abs().max().into_scalar::<f32>();
                assert!(d < 1e-5 * scale, "{what} gradient at {h}×{w}: {d}");
            }
        }
    }
}
