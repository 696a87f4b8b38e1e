//! Cross-modal fusion: clinical tokens attend to image region nodes.

use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};

use crate::util::{McDropout, drop};

/// Configuration of the fusion block.
#[derive(Config, Debug)]
pub struct CrossModalFusionConfig {
    /// Token / node width `D`.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Dropout on the attention output and the fused vector.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// Clinical tokens (queries) attend to the image nodes (keys/values); the attended tokens are
/// averaged and joined with the pooled image embedding into one fused vector `[B, D]`.
///
/// Why cross-attention rather than a gated sum: the clinical context (e.g. anticoagulation,
/// GCS) should be able to look at *specific* regions, and the per-token attention map over
/// nodes is itself an explanation. Because the tokens are already scaled by the feature gates,
/// a closed gate removes that feature's query from the fused vector.
#[derive(Module, Debug)]
pub struct CrossModalFusion {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm: LayerNorm,
    mix: Linear,
    dropout: Dropout,
    n_heads: usize,
}

impl CrossModalFusionConfig {
    /// Build the block.
    pub fn init(&self, device: &Device) -> CrossModalFusion {
        let d = self.d_model;
        assert!(
            d.is_multiple_of(self.n_heads),
            "n_heads must divide the node width"
        );
        CrossModalFusion {
            q: LinearConfig::new(d, d).init(device),
            k: LinearConfig::new(d, d).init(device),
            v: LinearConfig::new(d, d).init(device),
            o: LinearConfig::new(d, d).init(device),
            norm: LayerNormConfig::new(d).init(device),
            mix: LinearConfig::new(2 * d, d).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
        }
    }
}

impl CrossModalFusion {
    /// `tokens [B, F, D]`, `nodes [B, N, D]`, `image [B, D]` →
    /// (`fused [B, D]`, cross-attention `[B, H, F, N]`).
    pub fn forward(
        &self,
        tokens: Tensor<3>,
        nodes: Tensor<3>,
        image: Tensor<2>,
        mc: Option<&McDropout>,
    ) -> (Tensor<2>, Tensor<4>) {
        let [b, f, d] = tokens.dims();
        let n = nodes.dims()[1];
        let h = self.n_heads;
        let dh = d / h;
        let heads = |x: Tensor<3>, len: usize| x.reshape([b, len, h, dh]).swap_dims(1, 2);
        let q = heads(self.q.forward(tokens.clone()), f);
        let k = heads(self.k.forward(nodes.clone()), n);
        let v = heads(self.v.forward(nodes), n);
        let attn = softmax(
            q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt()),
            3,
        );
        let ctx = attn.clone().matmul(v).swap_dims(1, 2).reshape([b, f, d]);
        let t = self
            .norm
            .forward(tokens + drop(&self.dropout, self.o.forward(ctx), mc));
        let clinical = t.mean_dim(1).reshape([b, d]);
        let fused = gelu(self.mix.forward(Tensor::cat(vec![image, clinical], 1)));
        (drop(&self.dropout, fused, mc), attn)
    }
}
