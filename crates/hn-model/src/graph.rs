//! Region graph over the per-slice feature maps, graph-attention propagation and gated
//! attention pooling.

use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::{elu, gelu, leaky_relu, sigmoid, softmax, tanh};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::util::{McDropout, drop};

/// Neighbour slots per node: self, the 8 in-slice neighbours, the same cell one slice up and
/// one slice down.
pub const NEIGHBOURS: usize = 11;

/// The region graph for one study shape `S × h × w`.
///
/// Node `n = (s·h + i)·w + j` is cell `(i, j)` of slice `s`. Each node has [`NEIGHBOURS`] slots
/// in a fixed order (self; the 8 in-slice neighbours row by row; slice `s−1`; slice `s+1`).
/// Slots that fall outside the volume point at the node itself and are marked invalid, so the
/// table is a dense `[N, K]` index that a single `select` can gather from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionGraph {
    /// Slices.
    pub slices: usize,
    /// Cells per slice, vertically.
    pub h: usize,
    /// Cells per slice, horizontally.
    pub w: usize,
    /// `[N·K]` neighbour node index, row-major by node.
    pub index: Vec<i64>,
    /// `[N·K]` whether the slot is a real neighbour.
    pub valid: Vec<bool>,
}

impl RegionGraph {
    /// Build the neighbour table. Cost is `O(S·h·w·K)` host work, negligible next to the CNN.
    pub fn new(slices: usize, h: usize, w: usize) -> Self {
        let n = slices * h * w;
        let mut index = Vec::with_capacity(n * NEIGHBOURS);
        let mut valid = Vec::with_capacity(n * NEIGHBOURS);
        let node = |s: usize, i: usize, j: usize| ((s * h + i) * w + j) as i64;
        for s in 0..slices {
            for i in 0..h {
                for j in 0..w {
                    let me = node(s, i, j);
                    let mut push = |target: Option<i64>| {
                        index.push(target.unwrap_or(me));
                        valid.push(target.is_some());
                    };
                    push(Some(me));
                    for di in -1i64..=1 {
                        for dj in -1i64..=1 {
                            if di == 0 && dj == 0 {
                                continue;
                            }
                            let (ii, jj) = (i as i64 + di, j as i64 + dj);
                            let inside = ii >= 0 && jj >= 0 && ii < h as i64 && jj < w as i64;
                            push(inside.then(|| node(s, ii as usize, jj as usize)));
                        }
                    }
                    push((s > 0).then(|| node(s - 1, i, j)));
                    push((s + 1 < slices).then(|| node(s + 1, i, j)));
                }
            }
        }
        Self {
            slices,
            h,
            w,
            index,
            valid,
        }
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.slices * self.h * self.w
    }

    /// Device tensors: `([N·K] Int index, [1, N, K, 1] Bool *invalid* mask)`.
    pub fn tensors(&self, device: &Device) -> GraphTensors {
        let n = self.nodes();
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(self.index.clone(), [n * NEIGHBOURS]),
            device,
        );
        let invalid: Vec<bool> = self.valid.iter().map(|v| !v).collect();
        let invalid =
            Tensor::<4, Bool>::from_data(TensorData::new(invalid, [1, n, NEIGHBOURS, 1]), device);
        GraphTensors {
            nodes: n,
            index,
            invalid,
        }
    }
}

/// Region graphs already built, keyed by `(S, h, w)`: each shape's neighbour table is built
/// once and shared by every clone of the model (clones share the cache).
#[derive(Debug, Clone, Default)]
pub struct GraphCache(Arc<Mutex<HashMap<GraphShape, Arc<RegionGraph>>>>);

/// `(slices, h, w)`.
type GraphShape = (usize, usize, usize);

impl GraphCache {
    /// The graph for `slices × h × w`, built on first use.
    pub fn get(&self, slices: usize, h: usize, w: usize) -> Arc<RegionGraph> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((slices, h, w))
            .or_insert_with(|| Arc::new(RegionGraph::new(slices, h, w)))
            .clone()
    }

    /// Shapes built so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// No shape built yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`RegionGraph`] on a device.
#[derive(Debug, Clone)]
pub struct GraphTensors {
    /// Nodes `N`.
    pub nodes: usize,
    /// `[N·K]` neighbour index.
    pub index: Tensor<1, Int>,
    /// `[1, N, K, 1]` true where a slot is padding.
    pub invalid: Tensor<4, Bool>,
}

/// Configuration of one graph-attention layer.
#[derive(Config, Debug)]
pub struct GatLayerConfig {
    /// Node feature size `D`.
    pub d_model: usize,
    /// Attention heads (must divide `D`).
    pub n_heads: usize,
    /// Dropout on the attention output and feed-forward output.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// Multi-head graph attention (Veličković et al. 2018) over each node's [`NEIGHBOURS`] slots,
/// with a residual + LayerNorm and a position-wise feed-forward, as in a Transformer block.
///
/// `e_ij = LeakyReLU(a_dstᵀ W h_i + a_srcᵀ W h_j)` per head; `α_ij = softmax_j(e_ij)` over the
/// valid neighbours (padding slots get `-1e9` and so weight exactly 0 in f32).
#[derive(Module, Debug)]
pub struct GatLayer {
    proj: Linear,
    attn_src: Param<Tensor<2>>,
    attn_dst: Param<Tensor<2>>,
    out: Linear,
    norm1: LayerNorm,
    ff1: Linear,
    ff2: Linear,
    norm2: LayerNorm,
    dropout: Dropout,
    n_heads: usize,
}

impl GatLayerConfig {
    /// Build the layer.
    pub fn init(&self, device: &Device) -> GatLayer {
        let d = self.d_model;
        assert!(
            d.is_multiple_of(self.n_heads),
            "n_heads must divide the node width"
        );
        let dh = d / self.n_heads;
        let a = Initializer::XavierUniform { gain: 1.0 };
        GatLayer {
            proj: LinearConfig::new(d, d).with_bias(false).init(device),
            attn_src: a.init_with([self.n_heads, dh], Some(dh), Some(1), device),
            attn_dst: a.init_with([self.n_heads, dh], Some(dh), Some(1), device),
            out: LinearConfig::new(d, d).init(device),
            norm1: LayerNormConfig::new(d).init(device),
            ff1: LinearConfig::new(d, 2 * d).init(device),
            ff2: LinearConfig::new(2 * d, d).init(device),
            norm2: LayerNormConfig::new(d).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
        }
    }
}

impl GatLayer {
    /// `x: [B, N, D]` → (`[B, N, D]`, attention `[B, N, K, H]` summing to 1 over `K`).
    pub fn forward(
        &self,
        x: Tensor<3>,
        graph: &GraphTensors,
        mc: Option<&McDropout>,
    ) -> (Tensor<3>, Tensor<4>) {
        let [b, n, d] = x.dims();
        let (h, k) = (self.n_heads, NEIGHBOURS);
        let dh = d / h;
        let wh = self.proj.forward(x.clone()); // [B, N, D]
        let wh4 = wh.clone().reshape([b, n, h, dh]);
        // Per-node halves of the additive score: [B, N, H].
        let e_dst = (wh4.clone() * self.attn_dst.val().reshape([1, 1, h, dh]))
            .sum_dim(3)
            .reshape([b, n, 1, h]);
        let e_src = (wh4 * self.attn_src.val().reshape([1, 1, h, dh]))
            .sum_dim(3)
            .reshape([b, n, h]);
        let e_src_nb =
            crate::gather::gather_nodes(e_src, graph.index.clone()).reshape([b, n, k, h]);
        let scores = leaky_relu(e_dst + e_src_nb, 0.2)
            .mask_fill(graph.invalid.clone().expand([b, n, k, h]), -1.0e9);
        let alpha = softmax(scores, 2); // [B, N, K, H]
        let v_nb = crate::gather::gather_nodes(wh, graph.index.clone()).reshape([b, n, k, h, dh]);
        let agg = (alpha.clone().reshape([b, n, k, h, 1]) * v_nb)
            .sum_dim(2)
            .reshape([b, n, d]);
        let y = drop(&self.dropout, self.out.forward(elu(agg, 1.0)), mc);
        let x = self.norm1.forward(x + y);
        let y = drop(
            &self.dropout,
            self.ff2.forward(gelu(self.ff1.forward(x.clone()))),
            mc,
        );
        (self.norm2.forward(x + y), alpha)
    }
}

/// Configuration of the gated attention pooling.
#[derive(Config, Debug)]
pub struct GatedAttentionPoolConfig {
    /// Node feature size.
    pub d_model: usize,
    /// Hidden size of the attention network.
    pub d_attn: usize,
}

/// Gated attention MIL pooling (Ilse et al. 2018): `a_n = wᵀ(tanh(V h_n) ⊙ σ(U h_n))`. Returns
/// the unnormalised scores so the caller can softmax over a study (heatmap, study embedding)
/// or over each slice (slice embeddings) with the same scorer.
#[derive(Module, Debug)]
pub struct GatedAttentionPool {
    v: Linear,
    u: Linear,
    w: Linear,
}

impl GatedAttentionPoolConfig {
    /// Build the pooling scorer.
    pub fn init(&self, device: &Device) -> GatedAttentionPool {
        GatedAttentionPool {
            v: LinearConfig::new(self.d_model, self.d_attn).init(device),
            u: LinearConfig::new(self.d_model, self.d_attn).init(device),
            w: LinearConfig::new(self.d_attn, 1).init(device),
        }
    }
}

impl GatedAttentionPool {
    /// `[B, N, D]` → scores `[B, N]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let [b, n, _] = x.dims();
        let gate = tanh(self.v.forward(x.clone())) * sigmoid(self.u.forward(x));
        self.w.forward(gate).reshape([b, n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_table_counts_and_symmetry() {
        let g = RegionGraph::new(3, 4, 5);
        assert_eq!(g.nodes(), 60);
        let valid = |n: usize| {
            g.valid[n * NEIGHBOURS..(n + 1) * NEIGHBOURS]
                .iter()
                .filter(|v| **v)
                .count()
        };
        // Corner of the first slice: self + 3 in-slice + 1 slice above.
        assert_eq!(valid(0), 5);
        // Interior cell of the middle slice: self + 8 + 2.
        let mid = (4 + 1) * 5 + 2;
        assert_eq!(valid(mid), 11);
        // Every valid edge has its reverse.
        for n in 0..g.nodes() {
            for k in 0..NEIGHBOURS {
                if g.valid[n * NEIGHBOURS + k] {
                    let m = g.index[n * NEIGHBOURS + k] as usize;
                    let back = (0..NEIGHBOURS).any(|j| {
                        g.valid[m * NEIGHBOURS + j] && g.index[m * NEIGHBOURS + j] as usize == n
                    });
                    assert!(back, "edge {n} -> {m} has no reverse");
                }
            }
        }
        // Padding slots point at the node itself (safe to gather) and are invalid.
        for n in 0..g.nodes() {
            for k in 0..NEIGHBOURS {
                if !g.valid[n * NEIGHBOURS + k] {
                    assert_eq!(g.index[n * NEIGHBOURS + k] as usize, n);
                }
            }
        }
    }
}
