//! Imaging feature extractor: a 2-D residual CNN shared across slices (2.5-D).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

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
            Some(conv) => conv.forward(x.clone()),
            None => x.clone(),
        };
        let y = relu(self.norm1.forward(self.conv1.forward(x)));
        let y = self.norm2.forward(self.conv2.forward(y));
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
}

/// The shared 2-D CNN: a stride-2 stem then stride-2 residual stages. Every stage halves the
/// map (`ceil`), so a slice of `H×W` becomes `ceil(H/2^L)×ceil(W/2^L)` cells with
/// `L = widths.len()`.
#[derive(Module, Debug)]
pub struct ImageEncoder {
    stem: Conv2d,
    stem_norm: GroupNorm,
    blocks: Vec<ResBlock>,
}

impl ImageEncoderConfig {
    /// Build the encoder.
    pub fn init(&self, device: &Device) -> ImageEncoder {
        assert!(
            !self.widths.is_empty(),
            "widths needs at least the stem width"
        );
        let w0 = self.widths[0];
        let stem = Conv2dConfig::new([self.in_channels, w0], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(device);
        let blocks = self
            .widths
            .windows(2)
            .map(|w| ResBlockConfig::new(w[0], w[1]).init(device))
            .collect();
        ImageEncoder {
            stem,
            stem_norm: GroupNormConfig::new(norm_groups(w0), w0).init(device),
            blocks,
        }
    }
}

impl ImageEncoder {
    /// `[N, C_in, H, W]` (N = batch × slices) → `[N, D, h, w]` with `D = widths.last()`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = relu(self.stem_norm.forward(self.stem.forward(x)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        x
    }
}
