//! Writes the weights, an input batch and the outputs of a default-architecture network to a
//! JSON file, so `bench/torch/check_equivalence.py` can load the same weights into the
//! PyTorch reference and compare outputs (evidence the two are the same network). It also
//! writes the f32 gradient of a fixed scalar of the outputs with respect to every parameter,
//! so the backward pass (burn's autodiff on flex) is compared with PyTorch's autograd too.
//!
//! ```sh
//! cargo run -p hn-model --example export_reference -- /tmp/hn_reference.json
//! /tmp/torchenv/bin/python bench/torch/check_equivalence.py /tmp/hn_reference.json
//! ```
//!
//! `HN_CONV=burn` runs flex's own kernels instead of hn-model's extension ops (A/B checks).

use std::fmt::Write as _;

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use hn_model::*;

/// Collects every float parameter with its dotted module path.
#[derive(Default)]
struct Dump {
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Collects every float parameter's gradient, named like [`Dump`].
struct GradDump<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for GradDump<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let g = self
            .grads
            .get::<D>(param.id)
            .unwrap_or_else(|| panic!("no gradient for {}", self.path.join(".")));
        let data = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        self.out.push((self.path.join("."), data));
    }
}

/// `Σ_k w_k · t_k` over a tensor's row-major values with the fixed weights
/// `w_k = ((7k + 3) mod 11) / 11 − 0.5`, the same in `check_equivalence.py`.
fn weighted_sum<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    let w: Vec<f32> = (0..n)
        .map(|k| ((7 * k + 3) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let device = t.device();
    (t.reshape([n]) * Tensor::<1>::from_data(TensorData::new(w, [n]), &device)).sum()
}

impl ModuleVisitor for Dump {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        self.out.push((self.path.join("."), shape, data));
    }
}

fn json_array(v: &[f32]) -> String {
    let mut s = String::from("[");
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write!(s, "{x:e}").unwrap();
    }
    s.push(']');
    s
}

fn main() {
    if std::env::var("HN_CONV").as_deref() == Ok("burn") {
        hn_model::conv::set_fast_kernels(false);
    }
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/hn_reference.json".into());
    // Built on the autodiff device (parameters tracked, for the gradients below); the outputs
    // come from its plain-device copy.
    let ad = Device::flex().autodiff();
    ad.seed(1);
    let device = Device::flex();
    // No dropout, so the autodiff forward below computes the same function as the eval one.
    let cfg = HemorrhageNetConfig::new()
        .with_dropout(0.0)
        .with_slices(4)
        .with_height(64)
        .with_width(48);
    let net_ad = cfg.init(&ad);
    let net = net_ad.valid();
    let (b, s, c, h, w, f) = (
        2,
        cfg.slices,
        cfg.channels,
        cfg.height,
        cfg.width,
        cfg.n_clinical,
    );
    let images: Vec<f32> = (0..b * s * c * h * w)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0)
        .collect();
    let clinical: Vec<f32> = (0..b * f).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
    let present: Vec<f32> = (0..b * f)
        .map(|i| if i % 5 == 3 { 0.0 } else { 1.0 })
        .collect();
    let modality = vec![MODALITY_CT, MODALITY_MR];
    let input = ModelInput::from_host(
        images.clone(),
        [b, s, c, h, w],
        clinical.clone(),
        present.clone(),
        modality.clone(),
        &device,
    );
    let out = net.forward(input.clone());

    // Gradient of a fixed scalar of every output with respect to every parameter.
    let o = net_ad.forward(ModelInput {
        images: input.images.clone().to_device(&ad),
        clinical: input.clinical.clone().to_device(&ad),
        clinical_present: input.clinical_present.clone().to_device(&ad),
        modality: input.modality.clone().to_device(&ad),
    });
    let objective = weighted_sum(o.any_logit)
        + weighted_sum(o.subtype_cond_logits)
        + weighted_sum(o.slice_logits)
        + weighted_sum(o.mortality_logit)
        + weighted_sum(o.mrs_logits)
        + weighted_sum(o.facts)
        + weighted_sum(o.heatmap) * 100.0
        + weighted_sum(o.feature_gates);
    let grads = GradientsParams::from_grads(objective.backward(), &net_ad);
    let mut gdump = GradDump {
        grads: &grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    net_ad.visit(&mut gdump);
    let mut dump = Dump::default();
    net.visit(&mut dump);

    let v = |t: Vec<f32>| json_array(&t);
    let host = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let mut js = String::from("{\"params\":{");
    for (i, (name, shape, data)) in dump.out.iter().enumerate() {
        if i > 0 {
            js.push(',');
        }
        write!(
            js,
            "\"{name}\":{{\"shape\":{shape:?},\"data\":{}}}",
            json_array(data)
        )
        .unwrap();
    }
    write!(
        js,
        "}},\"shape\":[{b},{s},{c},{h},{w}],\"images\":{},\"clinical\":{},\"present\":{},\"modality\":{:?},",
        v(images),
        v(clinical),
        v(present),
        modality
    )
    .unwrap();
    js.push_str("\"grads\":{");
    for (i, (name, data)) in gdump.out.iter().enumerate() {
        if i > 0 {
            js.push(',');
        }
        write!(js, "\"{name}\":{}", json_array(data)).unwrap();
    }
    js.push_str("},");
    write!(
        js,
        "\"any_logit\":{},\"subtype_cond_logits\":{},\"slice_logits\":{},\"mortality_logit\":{},\"mrs_logits\":{},\"facts\":{},\"heatmap\":{},\"feature_gates\":{}}}",
        v(host(out.any_logit.reshape([b, 1]))),
        v(host(out.subtype_cond_logits)),
        v(host(out.slice_logits.reshape([b, s * 6]))),
        v(host(out.mortality_logit.reshape([b, 1]))),
        v(host(out.mrs_logits)),
        v(host(out.facts)),
        v(host(out.heatmap.reshape([b as i32, -1]))),
        v(host(out.feature_gates)),
    )
    .unwrap();
    std::fs::write(&path, js).unwrap();
    eprintln!("{} parameter tensors -> {path}", dump.out.len());
    for (name, shape, _) in dump.out.iter().take(200) {
        eprintln!("  {name} {shape:?}");
    }
}
