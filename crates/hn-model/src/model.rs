//! The whole network: [`HemorrhageNetConfig`] → [`HemorrhageNet`].

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::s;

use crate::clinical::{ClinicalProcessor, ClinicalProcessorConfig};
use crate::encoder::{ImageEncoder, ImageEncoderConfig};
use crate::fusion::{CrossModalFusion, CrossModalFusionConfig};
use crate::graph::{
    GatLayer, GatLayerConfig, GatedAttentionPool, GatedAttentionPoolConfig, GraphCache, NEIGHBOURS,
};
use crate::heads::{HierarchicalHeads, HierarchicalHeadsConfig, N_MRS_THRESHOLDS, N_SUBTYPES};
use crate::util::{McDropout, halve};

/// Modality index of CT studies in [`ModelInput::modality`].
pub const MODALITY_CT: i64 = 0;
/// Modality index of MR studies in [`ModelInput::modality`].
pub const MODALITY_MR: i64 = 1;

/// Everything that defines the network's shape. `slices`, `height` and `width` are the
/// nominal study shape used by [`HemorrhageNet::summary`] and the FLOPs estimate; `forward`
/// accepts any `S`, `H`, `W` (only `channels` is fixed by the weights).
#[derive(Config, Debug)]
pub struct HemorrhageNetConfig {
    /// Slices per study `S` (nominal).
    #[config(default = 24)]
    pub slices: usize,
    /// Windowed channels per slice `C` (e.g. brain, subdural, bone windows).
    #[config(default = 3)]
    pub channels: usize,
    /// Slice height `H` (nominal).
    #[config(default = 128)]
    pub height: usize,
    /// Slice width `W` (nominal).
    #[config(default = 128)]
    pub width: usize,
    /// CNN widths: stem, then one stride-2 residual stage per further entry. The last entry
    /// is the node width `D`; the feature map is `H / 2^len` per side.
    #[config(default = "vec![16, 32, 64, 128]")]
    pub widths: Vec<usize>,
    /// Attention heads (graph attention and fusion); must divide `D`.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Graph-attention layers (≥ 1).
    #[config(default = 2)]
    pub n_gat_layers: usize,
    /// Clinical features `F`.
    #[config(default = 16)]
    pub n_clinical: usize,
    /// Dropout probability at every dropout site (also the MC-dropout rate).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// 2.5-D context: each slice also sees this many neighbours on each side as extra
    /// channels (edge slices repeat), so the CNN input has `C·(2k+1)` channels.
    #[config(default = 0)]
    pub neighbour_slices: usize,
    /// Modalities with their own channel normalisation and embedding (0 = CT, 1 = MR).
    #[config(default = 2)]
    pub n_modalities: usize,
    /// Hidden width of the gated attention pooling.
    #[config(default = 64)]
    pub d_attn: usize,
    /// Level 3 reads the level-1/2 decisions detached ([`HierarchicalHeadsConfig`]).
    #[config(default = true)]
    pub detach_decisions: bool,
    /// MR channels per slice (one per sequence); 0 = a CT-only network without an MR stem
    /// (MR studies, if any, then go through the CT stem as before MR existed).
    #[config(default = 0)]
    pub mr_channels: usize,
    /// Clinical features (indices into the `F` inputs) that no training study carried: their
    /// weights never saw a value, so the network reads them as missing whatever the input
    /// holds (a network trained on an imaging-only dataset such as RSNA has an untrained
    /// clinical path, and values fed to it would move its outputs at random). `None`, as
    /// configs written before the field load: every feature is read.
    pub clinical_unlearned: Option<Vec<usize>>,
    /// A linear path from the (gated) clinical inputs to the mortality logit and the mRS
    /// score beside the deep one ([`HierarchicalHeads`]). `None`, as configs written before
    /// the field load: no such path.
    pub clinical_linear: Option<bool>,
    /// Hidden width of the facts path into the prognosis logits ([`HierarchicalHeads`]);
    /// `None` (configs written before the field) or 0: no such path.
    pub facts_prognosis_hidden: Option<usize>,
}

impl HemorrhageNetConfig {
    /// [`clinical_unlearned`](Self::clinical_unlearned) as a slice (empty when `None`).
    pub fn unlearned_clinical_features(&self) -> &[usize] {
        self.clinical_unlearned.as_deref().unwrap_or_default()
    }

    /// Whether the network has the linear clinical path
    /// ([`clinical_linear`](Self::clinical_linear)).
    pub fn has_clinical_linear(&self) -> bool {
        self.clinical_linear == Some(true)
    }
}

/// Model input for a batch of `B` studies.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// `[B, S, C, H, W]` windowed slices (roughly unit scale; CT windows mapped to `[0, 1]`).
    pub images: Tensor<5>,
    /// `[B, F]` standardized clinical values (anything where missing; never read there).
    pub clinical: Tensor<2>,
    /// `[B, F]` 1 where the value is present, 0 where missing.
    pub clinical_present: Tensor<2>,
    /// `[B]` modality index ([`MODALITY_CT`], [`MODALITY_MR`]).
    pub modality: Tensor<1, Int>,
}

/// A batch after the deterministic imaging part of the network ([`HemorrhageNet::encode`]):
/// graph nodes and the clinical inputs still to be used.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// `[B, N, D]` node features, `N = S·h·w` in [`RegionGraph`] order.
    pub nodes: Tensor<3>,
    /// `[S, h, w]`: slices and feature-map cells per slice.
    pub grid: [usize; 3],
    /// `[B, F]` as in [`ModelInput::clinical`].
    pub clinical: Tensor<2>,
    /// `[B, F]` as in [`ModelInput::clinical_present`].
    pub clinical_present: Tensor<2>,
}

impl ModelInput {
    /// Build a batch from host buffers. `images` is row-major `[B, S, C, H, W]`, `clinical` and
    /// `present` row-major `[B, F]`.
    pub fn from_host(
        images: Vec<f32>,
        shape: [usize; 5],
        clinical: Vec<f32>,
        present: Vec<f32>,
        modality: Vec<i64>,
        device: &Device,
    ) -> Self {
        let b = shape[0];
        let f = clinical.len() / b.max(1);
        Self {
            images: Tensor::from_data(TensorData::new(images, shape), device),
            clinical: Tensor::from_data(TensorData::new(clinical, [b, f]), device),
            clinical_present: Tensor::from_data(TensorData::new(present, [b, f]), device),
            modality: Tensor::from_data(TensorData::new(modality, [b]), device),
        }
    }
}

/// Everything the network produces for a batch. Logits are raw (apply
/// [`Temperatures`](crate::Temperatures) before [`probabilities`](ModelOutput::probabilities)
/// when calibrated).
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// `[B]` level 1: logit of any hemorrhage.
    pub any_logit: Tensor<1>,
    /// `[B, 5]` level 2: logits of each subtype *given* a bleed.
    pub subtype_cond_logits: Tensor<2>,
    /// `[B, S, 6]` per-slice logits: column 0 any, columns 1–5 subtype given a bleed on that slice.
    pub slice_logits: Tensor<3>,
    /// `[B]` level 3: logit of 30-day mortality.
    pub mortality_logit: Tensor<1>,
    /// `[B, 6]` level 3: logits of `P(mRS ≥ k)`, `k = 1..=6` (rank-consistent).
    pub mrs_logits: Tensor<2>,
    /// `[B, 3]` estimated hematoma facts: `ln(1 + hematoma mL outside the ventricles)` and
    /// `ln(1 + intraventricular mL)` over `ln(101)`, infratentorial logit
    /// ([`HematomaFacts::decode`](crate::HematomaFacts::decode) reads a row).
    pub facts: Tensor<2>,
    /// `[B, S, h, w]` node importance from gated attention pooling; sums to 1 per study.
    /// Cell `(i, j)` of slice `s` covers pixels `[i·f, (i+1)·f) × [j·f, (j+1)·f)` of that
    /// slice with `f = 2^widths.len()` (clipped at the border); see docs/MODEL.md.
    pub heatmap: Tensor<4>,
    /// `[B, F]` per-patient clinical feature weights in `(0, 1)`.
    pub feature_gates: Tensor<2>,
    /// `[B, N, 11, H]` last graph-attention layer's weights over each node's neighbour slots
    /// (order of [`RegionGraph`](crate::RegionGraph)); padding slots are 0 and each `[.., :, h]` sums to 1.
    pub graph_attention: Tensor<4>,
    /// `[B, H, F, N]` attention of each clinical token over the image nodes.
    pub cross_attention: Tensor<4>,
    /// `[B, D]` fused study embedding.
    pub embedding: Tensor<2>,
}

/// Probabilities derived from [`ModelOutput`].
#[derive(Debug, Clone)]
pub struct ModelProbabilities {
    /// `[B]` P(any).
    pub any: Tensor<1>,
    /// `[B, 5]` P(subtype | bleed).
    pub subtype_given_bleed: Tensor<2>,
    /// `[B, 5]` reported P(subtype) = P(any)·P(subtype | bleed) ≤ P(any).
    pub subtypes: Tensor<2>,
    /// `[B, S, 6]` per slice: P(any), then P(subtype) = P(any)·P(subtype | bleed).
    pub slices: Tensor<3>,
    /// `[B]` P(death within 30 days).
    pub mortality: Tensor<1>,
    /// `[B, 6]` P(mRS ≥ k), `k = 1..=6`, non-increasing in `k`.
    pub mrs_at_least: Tensor<2>,
    /// `[B, 7]` P(mRS = k), `k = 0..=6`; sums to 1.
    pub mrs: Tensor<2>,
}

impl ModelOutput {
    /// Sigmoids and the hierarchical products.
    pub fn probabilities(&self) -> ModelProbabilities {
        let [b] = self.any_logit.dims();
        let any = sigmoid(self.any_logit.clone());
        let subtype_given_bleed = sigmoid(self.subtype_cond_logits.clone());
        let subtypes = subtype_given_bleed.clone() * any.clone().reshape([b, 1]);
        let [_, s, _] = self.slice_logits.dims();
        let sl = sigmoid(self.slice_logits.clone());
        let slice_any = sl.clone().narrow(2, 0, 1);
        let slice_sub = sl.narrow(2, 1, N_SUBTYPES) * slice_any.clone();
        let slices = Tensor::cat(vec![slice_any, slice_sub], 2);
        debug_assert_eq!(slices.dims(), [b, s, 1 + N_SUBTYPES]);
        let mrs_at_least = sigmoid(self.mrs_logits.clone());
        let device = mrs_at_least.device();
        let upper = Tensor::cat(vec![Tensor::ones([b, 1], &device), mrs_at_least.clone()], 1);
        let lower = Tensor::cat(
            vec![mrs_at_least.clone(), Tensor::zeros([b, 1], &device)],
            1,
        );
        ModelProbabilities {
            any,
            subtype_given_bleed,
            subtypes,
            slices,
            mortality: sigmoid(self.mortality_logit.clone()),
            mrs_at_least,
            mrs: upper - lower,
        }
    }
}

/// The rows `idx` of a batch's `[B]` modality indices (all of them when `idx` is `None`),
/// as [`HemorrhageNet::by_modality`] hands them to its closure.
fn rows_of(modality: &Tensor<1, Int>, idx: Option<Tensor<1, Int>>) -> Tensor<1, Int> {
    match idx {
        Some(i) => modality.clone().select(0, i),
        None => modality.clone(),
    }
}

/// The HemorrhageNet network.
#[derive(Module, Debug)]
pub struct HemorrhageNet {
    /// `[M, C]` per-modality channel scale (CT and MR intensities differ).
    channel_scale: Param<Tensor<2>>,
    /// `[M, C]` per-modality channel shift.
    channel_shift: Param<Tensor<2>>,
    modality_embedding: Embedding,
    encoder: ImageEncoder,
    gat: Vec<GatLayer>,
    pool: GatedAttentionPool,
    clinical: ClinicalProcessor,
    fusion: CrossModalFusion,
    heads: HierarchicalHeads,
    #[module(skip)]
    config: HemorrhageNetConfig,
    #[module(skip)]
    graphs: GraphCache,
}

impl HemorrhageNetConfig {
    /// Default GPU shape: 32 × 3 × 256², one more stage so the map is still 8×8.
    pub fn gpu() -> Self {
        Self::new()
            .with_slices(32)
            .with_height(256)
            .with_width(256)
            .with_widths(vec![32, 64, 128, 192, 256])
    }

    /// A tiny network for tests and smoke runs (3 slices × 2 channels × 16², widths 8-16, 2
    /// heads, 4 clinical features, no dropout): builds and runs in milliseconds on a CPU.
    pub fn tiny() -> Self {
        Self::new()
            .with_slices(3)
            .with_channels(2)
            .with_height(16)
            .with_width(16)
            .with_widths(vec![8, 16])
            .with_n_heads(2)
            .with_n_clinical(4)
            .with_dropout(0.0)
            .with_d_attn(8)
    }

    /// Node width `D`.
    pub fn d_model(&self) -> usize {
        *self.widths.last().expect("widths is not empty")
    }

    /// Channels the CNN sees per slice: `C·(2k+1)`.
    pub fn cnn_channels(&self) -> usize {
        self.channels * (2 * self.neighbour_slices + 1)
    }

    /// Channels per slice of [`ModelInput::images`]: the larger of the CT and MR channel
    /// counts (a CT study's extra channels are zero; an MR study uses the first
    /// `mr_channels`).
    pub fn input_channels(&self) -> usize {
        self.channels.max(self.mr_channels)
    }

    /// Channels the MR stem sees per slice: `mr_channels·(2k+1)`.
    pub fn mr_cnn_channels(&self) -> usize {
        self.mr_channels * (2 * self.neighbour_slices + 1)
    }

    /// Feature-map size `(h, w)` for a slice of `height × width`.
    pub fn feature_hw_for(&self, height: usize, width: usize) -> (usize, usize) {
        (0..self.widths.len()).fold((height, width), |(h, w), _| (halve(h), halve(w)))
    }

    /// Feature-map size at the nominal shape.
    pub fn feature_hw(&self) -> (usize, usize) {
        self.feature_hw_for(self.height, self.width)
    }

    /// Pixels per heatmap cell side: `2^widths.len()`.
    pub fn cell_size(&self) -> usize {
        1 << self.widths.len()
    }

    /// Pixels of an `height × width` slice covered by heatmap cell `(i, j)`:
    /// `(rows, cols)` = `[i·f, min((i+1)·f, H)) × [j·f, min((j+1)·f, W))` with
    /// `f = ` [`cell_size`](Self::cell_size). Empty ranges for cells outside the map.
    pub fn cell_bounds(
        &self,
        i: usize,
        j: usize,
        height: usize,
        width: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let f = self.cell_size();
        let span = |k: usize, n: usize| (k * f).min(n)..((k + 1) * f).min(n);
        (span(i, height), span(j, width))
    }

    /// Build the network on `device` (`Device::flex()` for inference, `.autodiff()` to train).
    pub fn init(&self, device: &Device) -> HemorrhageNet {
        assert!(self.n_gat_layers >= 1, "at least one graph-attention layer");
        let d = self.d_model();
        let (m, c) = (self.n_modalities, self.channels);
        HemorrhageNet {
            channel_scale: Initializer::Ones.init([m, c], device),
            channel_shift: Initializer::Zeros.init([m, c], device),
            modality_embedding: EmbeddingConfig::new(m, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            encoder: ImageEncoderConfig::new(self.cnn_channels(), self.widths.clone())
                .with_mr_in_channels(self.mr_cnn_channels())
                .init(device),
            gat: (0..self.n_gat_layers)
                .map(|_| {
                    GatLayerConfig::new(d, self.n_heads)
                        .with_dropout(self.dropout)
                        .init(device)
                })
                .collect(),
            pool: GatedAttentionPoolConfig::new(d, self.d_attn).init(device),
            clinical: ClinicalProcessorConfig::new(self.n_clinical, d).init(device),
            fusion: CrossModalFusionConfig::new(d, self.n_heads)
                .with_dropout(self.dropout)
                .init(device),
            heads: HierarchicalHeadsConfig::new(d)
                .with_dropout(self.dropout)
                .with_detach_decisions(self.detach_decisions)
                .with_clinical_inputs(2 * self.n_clinical)
                .with_clinical_linear(self.has_clinical_linear())
                .with_facts_hidden(self.facts_prognosis_hidden.unwrap_or(0))
                .init(device),
            config: self.clone(),
            graphs: GraphCache::default(),
        }
    }

    /// Forward FLOPs per study (2 per multiply-add) of convolutions, linear layers and
    /// attention products at the nominal shape; norms and activations are left out (< 2 %).
    pub fn flops_per_study(&self) -> u64 {
        let mac = |a: usize, b: usize| 2 * (a as u64) * (b as u64);
        let (mut h, mut w) = (halve(self.height), halve(self.width));
        let w0 = self.widths[0];
        let mut cnn = mac(self.cnn_channels() * 9 * w0, h * w);
        for pair in self.widths.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            h = halve(h);
            w = halve(w);
            cnn += mac(a * 9 * b, h * w) + mac(b * 9 * b, h * w) + mac(a * b, h * w);
        }
        let cnn = cnn * self.slices as u64;
        let n = self.slices * h * w;
        let d = self.d_model();
        let k = NEIGHBOURS;
        let gat = (mac(n, d * d) * 2 + mac(n, 2 * d) + mac(n * k, d) + mac(n, 4 * d * d))
            * self.n_gat_layers as u64;
        let pool = mac(n, 2 * d * self.d_attn + self.d_attn);
        let f = self.n_clinical;
        let clinical = mac(f, 2 * d) + mac(2 * f, 32) + mac(32, f);
        let fusion = mac(f, 2 * d * d) + mac(n, 2 * d * d) + mac(f * n, 2 * d) + mac(2 * d, d);
        let heads = mac(d, 6 + 2 + 3) + mac(self.slices * d, 6) + mac(d + 12, d);
        cnn + gat + pool + clinical + fusion + heads
    }
}

/// Parameter counts per component and compute per study.
#[derive(Debug, Clone)]
pub struct ModelSummary {
    /// `(component, parameters)`.
    pub components: Vec<(&'static str, usize)>,
    /// Total parameters.
    pub total_params: usize,
    /// Forward FLOPs per study at the nominal shape.
    pub flops_per_study: u64,
    /// Nominal study shape `(S, C, H, W)`.
    pub study_shape: (usize, usize, usize, usize),
    /// Feature map per slice `(h, w)`.
    pub feature_hw: (usize, usize),
    /// Graph nodes per study.
    pub nodes: usize,
}

impl std::fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, c, h, w) = self.study_shape;
        writeln!(
            f,
            "study {s} x {c} x {h} x {w}; feature map {}x{}; {} graph nodes",
            self.feature_hw.0, self.feature_hw.1, self.nodes
        )?;
        for (name, n) in &self.components {
            writeln!(f, "  {name:<28} {n:>10}")?;
        }
        writeln!(f, "  {:<28} {:>10}", "total parameters", self.total_params)?;
        write!(
            f,
            "  {:<28} {:>10.3} GFLOP (forward)",
            "per study",
            self.flops_per_study as f64 / 1e9
        )
    }
}

/// Error of [`HemorrhageNet::save`] / [`HemorrhageNet::load`].
#[derive(Debug, thiserror::Error)]
pub enum ModelIoError {
    /// Writing or reading the config file.
    #[error("model config {path}: {message}")]
    Config {
        /// The config path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Writing or reading the weights.
    #[error("model weights {path}: {message}")]
    Weights {
        /// The weights path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Where [`HemorrhageNet::save`] puts the config next to the weights: `model.bpk` →
/// `model.config.json`.
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("config.json")
}

impl HemorrhageNet {
    /// The config the network was built from.
    pub fn config(&self) -> &HemorrhageNetConfig {
        &self.config
    }

    /// The parameters [`encode_slices`](Self::encode_slices) reads — the per-modality channel
    /// scale and shift and the CNN encoder: what slice pre-training
    /// ([`SlicePretrainer`](crate::SlicePretrainer)) trains. Training uses the group to give
    /// a pre-trained encoder its own (lower) learning rate in the end-to-end phase.
    pub fn slice_encoder_params(&self) -> burn::module::ParamGroup {
        use burn::module::ParamGroup;
        ParamGroup::ids_from_module(self.encoder.clone())
            .fuse(&ParamGroup::ids_from_module(self.channel_scale.clone()))
            .fuse(&ParamGroup::ids_from_module(self.channel_shift.clone()))
    }

    /// Forward pass (deterministic unless the module is training on an autodiff device).
    ///
    /// Shapes: `images [B, S, C, H, W]`, `clinical`/`clinical_present [B, F]`, `modality [B]`
    /// → see [`ModelOutput`], with `h × w` = [`HemorrhageNetConfig::feature_hw_for`]`(H, W)`.
    pub fn forward(&self, batch: ModelInput) -> ModelOutput {
        self.forward_impl(batch, None)
    }

    /// Forward with `mc = Some(sampler)` forcing every dropout site on (Monte-Carlo dropout).
    pub(crate) fn forward_impl(&self, batch: ModelInput, mc: Option<&McDropout>) -> ModelOutput {
        self.decode_impl(self.encode(batch), mc)
    }

    /// The deterministic first part of [`forward`](Self::forward): channel normalisation and
    /// the shared CNN, giving the graph's nodes, and the clinical inputs as the network reads
    /// them (unlearned features marked missing). Every dropout site lies after it, so
    /// Monte-Carlo dropout encodes a batch once and repeats only
    /// [`decode_stochastic`](Self::decode_stochastic) (graph attention, fusion, heads): the
    /// same samples as repeated full forwards, for a fraction of the cost.
    pub fn encode(&self, batch: ModelInput) -> EncodedBatch {
        let ModelInput {
            images,
            clinical,
            clinical_present,
            modality,
        } = batch;
        let [b, s, c, height, width] = images.dims();
        assert_eq!(
            c,
            self.config.input_channels(),
            "images have {c} channels, the model expects {}",
            self.config.input_channels()
        );
        // Each modality through its own stem, then the shared CNN: [B·S, D, h, w].
        let stems = self.by_modality(&modality, |idx, mr| {
            let x = match idx.clone() {
                Some(i) => images.clone().select(0, i),
                None => images.clone(),
            };
            let [bm, ..] = x.dims();
            let own = if mr {
                self.config.mr_channels
            } else {
                self.config.channels
            };
            let x = x.slice(s![.., .., 0..own]);
            let x = if mr {
                x
            } else {
                self.normalise_channels(x, rows_of(&modality, idx))
            };
            let x = self.with_context(x);
            let cin = x.dims()[2];
            let y = self
                .encoder
                .stem(x.reshape([bm * s, cin, height, width]), mr);
            let [_, w0, h2, w2] = y.dims();
            y.reshape([bm, s * w0, h2, w2])
        });
        let [_, sw0, h2, w2] = stems.dims();
        let fmap = self.encoder.trunk(stems.reshape([b * s, sw0 / s, h2, w2]));
        let [_, d, h, w] = fmap.dims();
        let n = s * h * w;
        // Nodes in RegionGraph order: n = (s·h + i)·w + j.
        let nodes = fmap
            .reshape([b, s, d, h * w])
            .swap_dims(2, 3)
            .reshape([b, n, d]);
        let nodes = nodes + self.modality_embedding.forward(modality.reshape([b, 1]));
        let (clinical, clinical_present) = self.without_unlearned(clinical, clinical_present);
        EncodedBatch {
            nodes,
            grid: [s, h, w],
            clinical,
            clinical_present,
        }
    }

    /// `clinical` and `clinical_present` `[B, F]` with the features of
    /// [`HemorrhageNetConfig::clinical_unlearned`] marked missing (value 0, not present).
    fn without_unlearned(&self, clinical: Tensor<2>, present: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let unlearned = self.config.unlearned_clinical_features();
        if unlearned.is_empty() {
            return (clinical, present);
        }
        let [_, f] = clinical.dims();
        let keep: Vec<f32> = (0..f)
            .map(|i| if unlearned.contains(&i) { 0.0 } else { 1.0 })
            .collect();
        let keep = Tensor::<2>::from_data(TensorData::new(keep, [1, f]), &clinical.device());
        (clinical * keep.clone(), present * keep)
    }

    /// The rest of a deterministic forward after [`encode`](Self::encode).
    pub fn decode(&self, encoded: EncodedBatch) -> ModelOutput {
        self.decode_impl(encoded, None)
    }

    /// The rest of a forward after [`encode`](Self::encode) with every dropout site on: one
    /// Monte-Carlo dropout sample, its masks drawn from `sampler` (one generator per study).
    pub fn decode_stochastic(&self, encoded: EncodedBatch, sampler: &McDropout) -> ModelOutput {
        self.decode_impl(encoded, Some(sampler))
    }

    fn decode_impl(&self, encoded: EncodedBatch, mc: Option<&McDropout>) -> ModelOutput {
        let EncodedBatch {
            nodes,
            grid: [s, h, w],
            clinical,
            clinical_present,
        } = encoded;
        let [b, n, d] = nodes.dims();
        let device = nodes.device();

        // The neighbour table is built once per shape; only the small index upload is per call.
        let graph = self.graphs.get(s, h, w).tensors(&device);
        let mut x = nodes;
        let mut graph_attention = None;
        for layer in &self.gat {
            let (y, a) = layer.forward(x, &graph, mc);
            x = y;
            graph_attention = Some(a);
        }
        let graph_attention = graph_attention.expect("n_gat_layers >= 1");

        // Gated attention pooling: one scorer, softmax over the study and within each slice.
        let scores = self.pool.forward(x.clone());
        let study_attn = softmax(scores.clone(), 1);
        let image = (study_attn.clone().reshape([b, n, 1]) * x.clone())
            .sum_dim(1)
            .reshape([b, d]);
        let slice_attn = softmax(scores.reshape([b, s, h * w]), 2);
        let slices = (slice_attn.reshape([b, s, h * w, 1]) * x.clone().reshape([b, s, h * w, d]))
            .sum_dim(2)
            .reshape([b, s, d]);

        let (tokens, feature_gates) = self
            .clinical
            .forward(clinical.clone(), clinical_present.clone());
        let linear =
            ClinicalProcessor::linear_inputs(clinical, clinical_present, feature_gates.clone());
        let (embedding, cross_attention) = self.fusion.forward(tokens, x, image, mc);
        let heads = self.heads.forward(embedding.clone(), slices, linear, mc);
        ModelOutput {
            any_logit: heads.any_logit,
            subtype_cond_logits: heads.subtype_cond_logits,
            slice_logits: heads.slice_logits,
            mortality_logit: heads.mortality_logit,
            mrs_logits: heads.mrs_logits,
            facts: heads.facts,
            heatmap: study_attn.reshape([b, s, h, w]),
            feature_gates,
            graph_attention,
            cross_attention,
            embedding,
        }
    }

    /// The imaging feature extractor alone, on independent slices: `x [N, C·(2k+1), H, W]`
    /// (each slice with its `k` context slices on each side as extra channels, windowed as in
    /// [`ModelInput::images`]) and `modality [N]` → `[N, D, h, w]`, with the same per-modality
    /// channel normalisation as [`forward`](Self::forward). Used to pre-train the encoder on
    /// slices mixed across studies ([`SlicePretrainer`](crate::SlicePretrainer)).
    pub fn encode_slices(&self, x: Tensor<4>, modality: Tensor<1, Int>) -> Tensor<4> {
        let [_, cin, height, width] = x.dims();
        let ci = self.config.input_channels();
        let groups = 2 * self.config.neighbour_slices + 1;
        assert_eq!(
            cin,
            ci * groups,
            "slices have {cin} channels, the encoder expects {}",
            ci * groups
        );
        let stems = self.by_modality(&modality, |idx, mr| {
            let x = match idx.clone() {
                Some(i) => x.clone().select(0, i),
                None => x.clone(),
            };
            let [nm, ..] = x.dims();
            let own = if mr {
                self.config.mr_channels
            } else {
                self.config.channels
            };
            let x = x
                .reshape([nm, groups, ci, height, width])
                .slice(s![.., .., 0..own]);
            let x = if mr {
                x
            } else {
                self.normalise_channels(x, rows_of(&modality, idx))
            };
            self.encoder
                .stem(x.reshape([nm, groups * own, height, width]), mr)
        });
        self.encoder.trunk(stems)
    }

    /// Run `f(indices, mr)` on the rows of each modality of a batch (`indices` `None` when
    /// the batch has one modality: no gather), and put the results back in batch order.
    /// `f` returns `[rows, …]` 4-D tensors of one shape per row. The modality indices are
    /// read on the host (a few bytes): which stem runs is decided per row.
    fn by_modality(
        &self,
        modality: &Tensor<1, Int>,
        f: impl Fn(Option<Tensor<1, Int>>, bool) -> Tensor<4>,
    ) -> Tensor<4> {
        let has_mr = self.encoder.has_mr_stem();
        let mods: Vec<i64> = modality
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("modality indices");
        let is_mr: Vec<bool> = mods.iter().map(|m| has_mr && *m == MODALITY_MR).collect();
        let n_mr = is_mr.iter().filter(|x| **x).count();
        if n_mr == 0 || n_mr == is_mr.len() {
            return f(None, n_mr > 0);
        }
        let device = modality.device();
        let rows = |want: bool| -> Vec<i64> {
            (0..is_mr.len() as i64)
                .filter(|&i| is_mr[i as usize] == want)
                .collect()
        };
        let (ct, mr) = (rows(false), rows(true));
        let idx = |v: &[i64]| {
            Tensor::<1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
        };
        let y = Tensor::cat(vec![f(Some(idx(&ct)), false), f(Some(idx(&mr)), true)], 0);
        // Row r of the batch sits at position inverse[r] of the concatenation.
        let mut inverse = vec![0i64; is_mr.len()];
        for (pos, r) in ct.iter().chain(&mr).enumerate() {
            inverse[*r as usize] = pos as i64;
        }
        y.select(0, idx(&inverse))
    }

    /// `x [B, G, C, H, W]` (G slices or context groups of C windowed channels) scaled and
    /// shifted per channel with each study's modality parameters. Only the CT stem's input
    /// is normalised this way; a network without an MR stem also sends its MR studies
    /// there, and they keep their own (MR) row, as the PyTorch reference does.
    fn normalise_channels(&self, x: Tensor<5>, modality: Tensor<1, Int>) -> Tensor<5> {
        let [b, _, c, _, _] = x.dims();
        let scale = self
            .channel_scale
            .val()
            .select(0, modality.clone())
            .reshape([b, 1, c, 1, 1]);
        let shift = self
            .channel_shift
            .val()
            .select(0, modality)
            .reshape([b, 1, c, 1, 1]);
        x * scale + shift
    }

    /// `[B, S, C, H, W]` → `[B, S, C·(2k+1), H, W]`: slice `s` gets slices `s−k … s+k`
    /// (clamped at the ends) stacked as channels.
    fn with_context(&self, x: Tensor<5>) -> Tensor<5> {
        let k = self.config.neighbour_slices as i64;
        if k == 0 {
            return x;
        }
        let s = x.dims()[1] as i64;
        let device = x.device();
        let parts = (-k..=k)
            .map(|off| {
                let idx: Vec<i64> = (0..s).map(|i| (i + off).clamp(0, s - 1)).collect();
                x.clone().select(
                    1,
                    Tensor::from_data(TensorData::new(idx, [s as usize]), &device),
                )
            })
            .collect();
        Tensor::cat(parts, 2)
    }

    /// Region-graph shapes built so far (each `(S, h, w)` once).
    pub fn graph_shapes_built(&self) -> usize {
        self.graphs.len()
    }

    /// Total trainable parameters.
    pub fn param_count(&self) -> usize {
        self.num_params()
    }

    /// Forward FLOPs per study at the config's nominal shape
    /// (see [`HemorrhageNetConfig::flops_per_study`]).
    pub fn flops_per_study(&self) -> u64 {
        self.config.flops_per_study()
    }

    /// Parameters per component and FLOPs per study.
    pub fn summary(&self) -> ModelSummary {
        let cfg = &self.config;
        let components = vec![
            (
                "modality norm + embedding",
                self.channel_scale.num_params()
                    + self.channel_shift.num_params()
                    + self.modality_embedding.num_params(),
            ),
            ("imaging CNN", self.encoder.num_params()),
            ("region graph attention", self.gat.num_params()),
            ("gated attention pooling", self.pool.num_params()),
            ("clinical processor", self.clinical.num_params()),
            ("cross-modal fusion", self.fusion.num_params()),
            ("hierarchical heads", self.heads.num_params()),
        ];
        let (h, w) = cfg.feature_hw();
        ModelSummary {
            components,
            total_params: self.param_count(),
            flops_per_study: cfg.flops_per_study(),
            study_shape: (cfg.slices, cfg.channels, cfg.height, cfg.width),
            feature_hw: (h, w),
            nodes: cfg.slices * h * w,
        }
    }

    /// Save the weights (burnpack) at `path` and the config at [`config_path`]`(path)`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelIoError> {
        let path = path.as_ref();
        let cpath = config_path(path);
        self.config.save(&cpath).map_err(|e| ModelIoError::Config {
            path: cpath,
            message: e.to_string(),
        })?;
        self.clone()
            .save_file(path)
            .map_err(|e| ModelIoError::Weights {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    /// Load a network saved by [`save`](Self::save) onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, ModelIoError> {
        let path = path.as_ref();
        let cpath = config_path(path);
        let config = HemorrhageNetConfig::load(&cpath).map_err(|e| ModelIoError::Config {
            path: cpath,
            message: e.to_string(),
        })?;
        config
            .init(device)
            .try_load_file(path)
            .map_err(|e| ModelIoError::Weights {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }
}

/// `[B, 6]` cumulative mRS targets: column `k−1` is 1 where `mRS ≥ k`.
pub(crate) fn mrs_cumulative(mrs: Tensor<1, Int>) -> Tensor<2> {
    let [b] = mrs.dims();
    let device = mrs.device();
    let m = mrs.float().reshape([b, 1]).expand([b, N_MRS_THRESHOLDS]);
    let ks = Tensor::<1, Int>::arange(1..(N_MRS_THRESHOLDS as i64 + 1), &device)
        .float()
        .reshape([1, N_MRS_THRESHOLDS])
        .expand([b, N_MRS_THRESHOLDS]);
    (m - ks).greater_elem(-0.5).float()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gradient of `[channel_scale, channel_shift]`'s rows from a loss on the whole
    /// output of a batch of `modality` studies, as `[row][0]` absolute sums.
    fn row_gradients(cfg: &HemorrhageNetConfig, modality: Vec<i64>) -> Vec<[f32; 2]> {
        let device = Device::flex().autodiff();
        let net = cfg.init(&device);
        let b = modality.len();
        let [s, c, h, w] = [cfg.slices, cfg.input_channels(), cfg.height, cfg.width];
        let images = (0..b * s * c * h * w)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0)
            .collect();
        let f = cfg.n_clinical;
        let input = ModelInput::from_host(
            images,
            [b, s, c, h, w],
            vec![0.5; b * f],
            vec![1.0; b * f],
            modality,
            &device,
        );
        let out = net.forward(input);
        let grads = (out.any_logit.sum() + out.mortality_logit.sum()).backward();
        let per_row = |p: &Param<Tensor<2>>| -> Vec<f32> {
            let g = p.val().grad(&grads).expect("a gradient");
            let [m, _] = g.dims();
            (0..m)
                .map(|r| {
                    g.clone()
                        .slice(s![r..r + 1, ..])
                        .abs()
                        .sum()
                        .into_scalar::<f32>()
                })
                .collect()
        };
        let (scale, shift) = (per_row(&net.channel_scale), per_row(&net.channel_shift));
        scale.into_iter().zip(shift).map(|(a, b)| [a, b]).collect()
    }

    #[test]
    fn a_network_without_an_mr_stem_normalises_each_study_with_its_own_row() {
        let cfg = HemorrhageNetConfig::tiny();
        let mr_only = row_gradients(&cfg, vec![MODALITY_MR; 2]);
        assert!(
            mr_only[MODALITY_MR as usize].iter().all(|g| *g > 0.0),
            "{mr_only:?}"
        );
        assert_eq!(mr_only[MODALITY_CT as usize], [0.0, 0.0], "{mr_only:?}");
        let ct_only = row_gradients(&cfg, vec![MODALITY_CT; 2]);
        assert!(ct_only[MODALITY_CT as usize].iter().all(|g| *g > 0.0));
        assert_eq!(ct_only[MODALITY_MR as usize], [0.0, 0.0], "{ct_only:?}");
        let mixed = row_gradients(&cfg, vec![MODALITY_CT, MODALITY_MR]);
        assert!(mixed.iter().flatten().all(|g| *g > 0.0), "{mixed:?}");
    }

    #[test]
    fn with_an_mr_stem_only_ct_studies_are_channel_normalised() {
        let cfg = HemorrhageNetConfig::tiny().with_mr_channels(5);
        let mixed = row_gradients(&cfg, vec![MODALITY_CT, MODALITY_MR]);
        assert!(mixed[MODALITY_CT as usize].iter().all(|g| *g > 0.0));
        assert_eq!(mixed[MODALITY_MR as usize], [0.0, 0.0], "{mixed:?}");
    }
}
