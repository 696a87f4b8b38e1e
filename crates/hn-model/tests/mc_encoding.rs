//! Monte-Carlo dropout from one encoding, and its masks drawn per study (`McDropout`), so a
//! study's samples depend on its own seed alone.

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
    let sampler = McDropout::per_row(&[11, 12]);
    let full: Vec<Vec<f32>> = (0..3)
        .map(|_| outputs(&net.forward_stochastic(batch.clone(), &sampler)))
        .collect();
    let sampler = McDropout::per_row(&[11, 12]);
    let encoded = net.encode(batch);
    let split: Vec<Vec<f32>> = (0..3)
        .map(|_| outputs(&net.decode_stochastic(encoded.clone(), &sampler)))
        .collect();
    assert_eq!(full, split);
    assert_ne!(full[0], full[1], "passes did not differ");
}

/// Row `r` of a batch draws its masks from generator `r` only: a study's MC samples are the
/// same alone as beside another study, and a different seed gives different samples.
#[test]
fn mc_samples_depend_on_the_study_seed_not_on_the_batch() {
    let device = Device::flex();
    device.seed(4);
    let cfg = HemorrhageNetConfig::tiny().with_dropout(0.3);
    let net = cfg.init(&device);
    let n_img = 3 * 2 * 16 * 16;
    let study = |k: usize| -> Vec<f32> {
        (0..n_img)
            .map(|i| (((i + 13 * k) * 37) % 101) as f32 / 101.0)
            .collect()
    };
    let input = |images: Vec<f32>, b: usize| {
        ModelInput::from_host(
            images,
            [b, 3, 2, 16, 16],
            vec![0.3; 4 * b],
            vec![1.0; 4 * b],
            vec![MODALITY_CT; b],
            &device,
        )
    };
    let any = |o: ModelOutput| o.any_logit.into_data().try_to_vec::<f32>().unwrap();
    let pair = [study(0), study(1)].concat();
    let together = net.encode(input(pair, 2));
    let alone = net.encode(input(study(0), 1));
    let (s2, s1) = (McDropout::per_row(&[7, 8]), McDropout::per_row(&[7]));
    for pass in 0..3 {
        let a = any(net.decode_stochastic(together.clone(), &s2));
        let b = any(net.decode_stochastic(alone.clone(), &s1));
        assert!(
            (a[0] - b[0]).abs() < 1e-5,
            "pass {pass}: {} vs {}",
            a[0],
            b[0]
        );
    }
    let other = any(net.decode_stochastic(alone.clone(), &McDropout::per_row(&[9])));
    let same_seed = any(net.decode_stochastic(alone, &McDropout::per_row(&[7])));
    assert_ne!(other, same_seed, "the seed does not reach the masks");
}
