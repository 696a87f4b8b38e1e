//! Clinical feature processor with per-patient dynamic feature selection.

use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

/// Configuration of the clinical processor.
#[derive(Config, Debug)]
pub struct ClinicalProcessorConfig {
    /// Clinical features `F` (16 in `hn-data`'s schema).
    pub n_features: usize,
    /// Token width `D` (same as the image nodes so the fusion can attend across modalities).
    pub d_model: usize,
    /// Hidden width of the gate network.
    #[config(default = 32)]
    pub d_gate: usize,
}

/// Turns `F` standardized values plus a present-mask into `F` tokens `[B, F, D]` and
/// per-patient feature gates `[B, F]` in `(0, 1)`.
///
/// * Embedding per feature: `e_f = v_f·w_f + b_f` when present, a learned `m_f` when missing.
///   Missing values are zeroed with `mask_fill` before anything reads them, so a missing
///   feature's value (NaN included) cannot reach the output; its *missingness* does, through
///   `m_f` and the gate network's mask input (no silent imputation).
/// * Gates: `g = σ(MLP([v ⊙ present, present]))`, one per feature, scaling each token. They are
///   the patient's feature weights; the loss adds `λ·mean(g)` so unneeded features close.
#[derive(Module, Debug)]
pub struct ClinicalProcessor {
    weight: Param<Tensor<2>>,
    bias: Param<Tensor<2>>,
    missing: Param<Tensor<2>>,
    gate1: Linear,
    gate2: Linear,
    norm: LayerNorm,
}

impl ClinicalProcessorConfig {
    /// Build the processor.
    pub fn init(&self, device: &Device) -> ClinicalProcessor {
        let (f, d) = (self.n_features, self.d_model);
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 1.0 / (d as f64).sqrt(),
        };
        ClinicalProcessor {
            weight: normal.init([f, d], device),
            bias: Initializer::Zeros.init([f, d], device),
            missing: normal.init([f, d], device),
            gate1: LinearConfig::new(2 * f, self.d_gate).init(device),
            // Near-zero weights plus the +1 offset in `forward` start every gate mostly open
            // (σ(1) ≈ 0.73), so all features are used early and the penalty closes them later.
            gate2: LinearConfig::new(self.d_gate, f)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            norm: LayerNormConfig::new(d).init(device),
        }
    }
}

impl ClinicalProcessor {
    /// The inputs of the heads' linear clinical path, `[B, 2F]`: each value (0 where missing,
    /// never read there) and each missing indicator, both scaled by the patient's gate.
    pub fn linear_inputs(values: Tensor<2>, present: Tensor<2>, gates: Tensor<2>) -> Tensor<2> {
        let (v, p) = zeroed_where_missing(values, present);
        Tensor::cat(vec![v * gates.clone(), p.neg().add_scalar(1.0) * gates], 1)
    }

    /// `values: [B, F]`, `present: [B, F]` (1 present, 0 missing) →
    /// (`tokens [B, F, D]`, `gates [B, F]`).
    pub fn forward(&self, values: Tensor<2>, present: Tensor<2>) -> (Tensor<3>, Tensor<2>) {
        let [b, f] = values.dims();
        let (v, p) = zeroed_where_missing(values, present);
        let d = self.weight.dims()[1];
        let present_emb = v.clone().reshape([b, f, 1]) * self.weight.val().reshape([1, f, d])
            + self.bias.val().reshape([1, f, d]);
        let p3 = p.clone().reshape([b, f, 1]);
        let emb = present_emb * p3.clone()
            + self.missing.val().reshape([1, f, d]) * (p3.neg().add_scalar(1.0));
        let gate_in = Tensor::cat(vec![v, p], 1);
        let gates = sigmoid(
            self.gate2
                .forward(relu(self.gate1.forward(gate_in)))
                .add_scalar(1.0),
        );
        let tokens = self.norm.forward(emb) * gates.clone().reshape([b, f, 1]);
        (tokens, gates)
    }
}

/// `(values with 0 where missing, present as 0/1)`. The mask is applied with `mask_fill`, not
/// a product, so a missing value (NaN included) cannot reach anything that reads `values`.
fn zeroed_where_missing(values: Tensor<2>, present: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let absent = present.lower_equal_elem(0.5);
    let p = absent.clone().bool_not().float();
    (values.mask_fill(absent, 0.0), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_inputs_are_gated_values_and_missing_indicators_never_the_missing_value() {
        let device = Device::flex();
        let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [1, 3]), &device);
        let x = ClinicalProcessor::linear_inputs(
            t(vec![2.0, f32::NAN, -1.0]),
            t(vec![1.0, 0.0, 1.0]),
            t(vec![0.5, 0.25, 1.0]),
        );
        let got = x.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got, vec![1.0, 0.0, -1.0, 0.0, 0.25, 0.0]);
    }
}
