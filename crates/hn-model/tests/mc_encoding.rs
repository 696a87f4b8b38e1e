//! Monte-Carlo dropout from one encoding. Its own test binary because it compares sequences of
//! random draws: flex's RNG is process-wide, and tests running beside it in one process would
//! take draws in between.

use burn::prelude::*;
use hn_model::*;

fn outputs(o: &ModelOutput) -> Vec<f32> {
    let mut v = Vec::new();
    for t in [
        o.any_logit.clone().reshape([-1]),
        o.subtype_cond_logits.clone().reshape([-1]),
        o.slice_logits.clone().reshape([-1]),
        o.mortality_logit.clone().reshape([-1]),
        o.mrs_logits.clone().reshape([-1]),
        o.heatmap.clone().reshape([-1]),
    ] {
        v.extend(t.into_data().try_to_vec::<f32>().unwrap());
    }
    v
}

/// Encoding once and decoding per pass gives exactly the samples of repeated full stochastic
/// forwards (the CNN draws no random numbers), and `decode(encode(x))` is `forward(x)`.
#[test]
fn mc_passes_from_one_encoding_equal_repeated_full_forwards() {
    let device = Device::flex();
    device.seed(3);
    let cfg = HemorrhageNetConfig::tiny().with_dropout(0.3);
    let net = cfg.init(&device);
    let (b, n_img) = (2, 2 * 3 * 2 * 16 * 16);
    let batch = ModelInput::from_host(
        (0..n_img)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect(),
        [b, 3, 2, 16, 16],
        vec![0.3, -0.2, 0.9, 0.0, -1.1, 0.4, 0.2, 0.7],
        vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0],
        vec![MODALITY_CT, MODALITY_MR],
        &device,
    );
    assert_eq!(
        outputs(&net.forward(batch.clone())),
        outputs(&net.decode(net.encode(batch.clone())))
    );
    device.seed(11);
    let full: Vec<Vec<f32>> = (0..3)
        .map(|_| outputs(&net.forward_stochastic(batch.clone())))
        .collect();
    device.seed(11);
    let encoded = net.encode(batch);
    let split: Vec<Vec<f32>> = (0..3)
        .map(|_| outputs(&net.decode_stochastic(encoded.clone())))
        .collect();
    assert_eq!(full, split);
    assert_ne!(full[0], full[1], "passes did not differ");
}
