//! Writes the weights, an input batch and the outputs of a default-architecture network to a
//! JSON file, so `bench/torch/check_equivalence.py` can load the same weights into the
//! PyTorch reference and compare outputs (evidence the two are the same network).
//!
//! ```sh
//! cargo run -p hn-model --example export_reference -- /tmp/hn_reference.json
//! /tmp/torchenv/bin/python bench/torch/check_equivalence.py /tmp/hn_reference.json
//! ```

use std::fmt::Write as _;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use hn_model::*;

/// Collects every float parameter with its dotted module path.
#[derive(Default)]
struct Dump {
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
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
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/hn_reference.json".into());
    let device = Device::flex();
    device.seed(1);
    let cfg = HemorrhageNetConfig::new()
        .with_slices(4)
        .with_height(64)
        .with_width(48);
    let net = cfg.init(&device);
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
    let out = net.forward(input);
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
    write!(
        js,
        "\"any_logit\":{},\"subtype_cond_logits\":{},\"slice_logits\":{},\"mortality_logit\":{},\"mrs_logits\":{},\"heatmap\":{},\"feature_gates\":{}}}",
        v(host(out.any_logit.reshape([b, 1]))),
        v(host(out.subtype_cond_logits)),
        v(host(out.slice_logits.reshape([b, s * 6]))),
        v(host(out.mortality_logit.reshape([b, 1]))),
        v(host(out.mrs_logits)),
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
