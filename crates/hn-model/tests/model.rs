//! Behaviour of the whole network on the pure-Rust `flex` CPU backend with tiny configs.

use burn::module::{ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Gradients;
use hn_model::*;

/// Deterministic pseudo-random numbers in [-1, 1) (no rand dependency needed).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn input(
    cfg: &HemorrhageNetConfig,
    b: usize,
    s: usize,
    h: usize,
    w: usize,
    seed: u64,
    device: &Device,
) -> ModelInput {
    let c = cfg.input_channels();
    let f = cfg.n_clinical;
    let images = noise(seed, b * s * c * h * w)
        .into_iter()
        .map(|v| 0.5 + 0.5 * v)
        .collect();
    let clinical = noise(seed + 1, b * f);
    let present = (0..b * f)
        .map(|i| if i % 3 == 2 { 0.0 } else { 1.0 })
        .collect();
    let modality = (0..b).map(|i| (i % 2) as i64).collect();
    ModelInput::from_host(images, [b, s, c, h, w], clinical, present, modality, device)
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}
fn host_n<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn all_outputs(o: &ModelOutput) -> Vec<f32> {
    let mut v = host(o.any_logit.clone());
    v.extend(host_n(o.subtype_cond_logits.clone()));
    v.extend(host_n(o.slice_logits.clone()));
    v.extend(host(o.mortality_logit.clone()));
    v.extend(host_n(o.mrs_logits.clone()));
    v.extend(host_n(o.heatmap.clone()));
    v.extend(host_n(o.feature_gates.clone()));
    v
}

fn rows(b: usize, s: usize) -> Vec<TargetRow> {
    (0..b)
        .map(|i| {
            let bleed = i % 2 == 0;
            let mut sub = [false; 5];
            sub[i % 5] = bleed;
            let slices = (0..s)
                .map(|k| {
                    let on = bleed && k == s / 2;
                    let mut r = [false; 6];
                    r[0] = on;
                    r[1 + i % 5] = on;
                    r
                })
                .collect();
            TargetRow {
                study: Some((bleed, sub)),
                slices: Some(slices),
                mortality: Some(bleed),
                mrs: Some(if bleed { 4 } else { 1 }),
                facts: Some(HematomaFacts {
                    hematoma_ml: if bleed { 35.0 } else { 0.0 },
                    intraventricular_ml: if bleed { 4.0 } else { 0.0 },
                    infratentorial: false,
                }),
            }
        })
        .collect()
}

#[test]
fn shapes_for_2d_and_2_5d_inputs_batch_1_and_more_odd_sizes() {
    let device = Device::flex();
    for (s, k, b, h, w) in [
        (1, 0, 1, 16, 16),
        (1, 0, 3, 17, 13),
        (4, 1, 2, 16, 16),
        (3, 2, 1, 15, 21),
    ] {
        let cfg = HemorrhageNetConfig::tiny()
            .with_slices(s)
            .with_neighbour_slices(k);
        let net = cfg.init(&device);
        let out = net.forward(input(&cfg, b, s, h, w, 7, &device));
        let (fh, fw) = cfg.feature_hw_for(h, w);
        assert_eq!((fh, fw), (h.div_ceil(4), w.div_ceil(4)));
        let d = cfg.d_model();
        assert_eq!(out.any_logit.dims(), [b]);
        assert_eq!(out.subtype_cond_logits.dims(), [b, 5]);
        assert_eq!(out.slice_logits.dims(), [b, s, 6]);
        assert_eq!(out.mortality_logit.dims(), [b]);
        assert_eq!(out.mrs_logits.dims(), [b, 6]);
        assert_eq!(out.heatmap.dims(), [b, s, fh, fw]);
        assert_eq!(out.feature_gates.dims(), [b, cfg.n_clinical]);
        assert_eq!(
            out.graph_attention.dims(),
            [b, s * fh * fw, NEIGHBOURS, cfg.n_heads]
        );
        assert_eq!(
            out.cross_attention.dims(),
            [b, cfg.n_heads, cfg.n_clinical, s * fh * fw]
        );
        assert_eq!(out.embedding.dims(), [b, d]);
        // The heatmap is a distribution over the study's cells.
        for sum in host(
            out.heatmap
                .clone()
                .reshape([b, s * fh * fw])
                .sum_dim(1)
                .reshape([b]),
        ) {
            assert!((sum - 1.0).abs() < 1e-4, "heatmap sums to {sum}");
        }
        assert!(all_outputs(&out).iter().all(|v| v.is_finite()));
        // The region graph is built once per shape.
        assert_eq!(net.graph_shapes_built(), 1);
        net.forward(input(&cfg, b, s, h, w, 8, &device));
        assert_eq!(net.graph_shapes_built(), 1);
        net.forward(input(&cfg, b, s, h + 8, w, 8, &device));
        assert_eq!(net.graph_shapes_built(), 2);
    }
}

struct GradCheck<'a> {
    grads: &'a Gradients,
    missing: Vec<String>,
    seen: usize,
}

impl ModuleVisitor for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.seen += 1;
        let shape = param.shape();
        match param.val().grad(self.grads) {
            Some(g) if g.clone().abs().sum().into_scalar::<f32>() > 0.0 => {}
            Some(_) => self
                .missing
                .push(format!("zero gradient for a {shape:?} parameter")),
            None => self
                .missing
                .push(format!("no gradient for a {shape:?} parameter")),
        }
    }
}

#[test]
fn gradients_reach_every_parameter() {
    for linear in [false, true] {
        gradients_reach_every_parameter_of(
            HemorrhageNetConfig::tiny()
                .with_dropout(0.1)
                .with_neighbour_slices(1)
                .with_clinical_linear(Some(linear)),
        );
    }
}

fn gradients_reach_every_parameter_of(cfg: HemorrhageNetConfig) {
    let device = Device::flex().autodiff();
    let model = Trainable::new(&cfg, &MultiTaskLossConfig::new(), &device);
    let b = 4;
    let targets = ModelTargets::from_rows(&rows(b, cfg.slices), cfg.slices, &device);
    let (_, loss) = model.forward(input(&cfg, b, cfg.slices, 16, 16, 3, &device), &targets);
    let grads = loss.total.backward();
    let mut check = GradCheck {
        grads: &grads,
        missing: vec![],
        seen: 0,
    };
    model.visit(&mut check);
    assert!(check.seen > 40, "visited {} parameters", check.seen);
    assert!(check.missing.is_empty(), "{:#?}", check.missing);
}

#[test]
fn graph_attention_sums_to_one_over_valid_neighbours() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny().with_slices(3);
    let net = cfg.init(&device);
    let (b, h, w) = (2, 12, 16);
    let out = net.forward(input(&cfg, b, 3, h, w, 5, &device));
    let (fh, fw) = cfg.feature_hw_for(h, w);
    let graph = RegionGraph::new(3, fh, fw);
    let heads = cfg.n_heads;
    let a = host_n(out.graph_attention);
    let n = graph.nodes();
    for bi in 0..b {
        for node in 0..n {
            for head in 0..heads {
                let mut sum = 0.0;
                for k in 0..NEIGHBOURS {
                    let v = a[((bi * n + node) * NEIGHBOURS + k) * heads + head];
                    if graph.valid[node * NEIGHBOURS + k] {
                        sum += v;
                    } else {
                        assert_eq!(v, 0.0, "padding slot {k} of node {node} has weight {v}");
                    }
                }
                assert!(
                    (sum - 1.0).abs() < 1e-5,
                    "node {node} head {head} sums to {sum}"
                );
            }
        }
    }
}

#[test]
fn hierarchical_probabilities_are_consistent() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny();
    let net = cfg.init(&device);
    // Push the logits to extremes too: scaled inputs.
    for (seed, scale) in [(1, 1.0f32), (2, 50.0)] {
        let mut batch = input(&cfg, 4, 3, 16, 16, seed, &device);
        batch.images = batch.images * scale;
        let p = net.forward(batch).probabilities();
        let any = host(p.any);
        let sub = host_n(p.subtypes);
        for (i, a) in any.iter().enumerate() {
            for j in 0..5 {
                assert!(
                    sub[i * 5 + j] <= *a + 1e-7,
                    "P(subtype) {} > P(any) {a}",
                    sub[i * 5 + j]
                );
            }
        }
        let sl = host_n(p.slices);
        for row in sl.chunks(6) {
            assert!(row[1..].iter().all(|v| *v <= row[0] + 1e-7));
        }
        let ge = host_n(p.mrs_at_least);
        for row in ge.chunks(6) {
            assert!(
                row.windows(2).all(|w| w[1] <= w[0]),
                "P(mRS >= k) must not increase: {row:?}"
            );
        }
        for row in host_n(p.mrs).chunks(7) {
            assert!(row.iter().all(|v| *v >= 0.0));
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn feature_gates_are_in_unit_interval_and_respond_to_input() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny();
    let net = cfg.init(&device);
    let a = net.forward(input(&cfg, 3, 3, 16, 16, 21, &device));
    let mut other = input(&cfg, 3, 3, 16, 16, 21, &device);
    other.clinical = other.clinical * 4.0 + 1.0;
    let b = net.forward(other);
    let ga = host_n(a.feature_gates);
    let gb = host_n(b.feature_gates);
    assert!(ga.iter().chain(&gb).all(|g| (0.0..=1.0).contains(g)));
    let diff: f32 = ga.iter().zip(&gb).map(|(x, y)| (x - y).abs()).sum();
    assert!(
        diff > 1e-3,
        "gates did not respond to the clinical values: {diff}"
    );
    // And the prediction depends on present clinical values.
    assert_ne!(host(a.mortality_logit), host(b.mortality_logit));
}

#[test]
fn a_missing_feature_value_has_no_effect() {
    for linear in [false, true] {
        a_missing_feature_value_has_no_effect_in(
            HemorrhageNetConfig::tiny().with_clinical_linear(Some(linear)),
        );
    }
}

fn a_missing_feature_value_has_no_effect_in(cfg: HemorrhageNetConfig) {
    let device = Device::flex();
    let net = cfg.init(&device);
    let (b, f) = (2, cfg.n_clinical);
    let base = input(&cfg, b, 3, 16, 16, 9, &device);
    let mut present = vec![1.0f32; b * f];
    present[1] = 0.0;
    present[f + 3] = 0.0;
    let present = Tensor::<2>::from_data(TensorData::new(present, [b, f]), &device);
    let vals = host_n(base.clinical.clone());
    let mut changed = vals.clone();
    changed[1] = 1e3;
    changed[f + 3] = f32::NAN;
    let with = |v: Vec<f32>| ModelInput {
        clinical: Tensor::from_data(TensorData::new(v, [b, f]), &device),
        clinical_present: present.clone(),
        ..base.clone()
    };
    let a = all_outputs(&net.forward(with(vals.clone())));
    let c = all_outputs(&net.forward(with(changed)));
    assert_eq!(a, c, "a masked value changed the output");
    // Control: the same change on a present feature does change the output.
    let mut present_changed = vals;
    present_changed[0] = 1e3;
    assert_ne!(a, all_outputs(&net.forward(with(present_changed))));
}

/// A feature the network never learned is read as missing whatever its value; the others
/// are read as before, and the list survives save and load.
#[test]
fn an_unlearned_clinical_feature_is_read_as_missing() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny().with_clinical_unlearned(Some(vec![1, 3]));
    let net = cfg.init(&device);
    let (b, f) = (2, cfg.n_clinical);
    let base = input(&cfg, b, 3, 16, 16, 9, &device);
    let with = |vals: Vec<f32>, present: Vec<f32>| ModelInput {
        clinical: Tensor::from_data(TensorData::new(vals, [b, f]), &device),
        clinical_present: Tensor::from_data(TensorData::new(present, [b, f]), &device),
        ..base.clone()
    };
    let vals = host_n(base.clinical.clone());
    let given = vec![1.0f32; b * f];
    let mut absent = given.clone();
    for row in 0..b {
        absent[row * f + 1] = 0.0;
        absent[row * f + 3] = 0.0;
    }
    let a = all_outputs(&net.forward(with(vals.clone(), given.clone())));
    assert_eq!(a, all_outputs(&net.forward(with(vals.clone(), absent))));
    let mut changed = vals.clone();
    changed[1] = 1e3;
    changed[f + 3] = -7.0;
    assert_eq!(a, all_outputs(&net.forward(with(changed, given.clone()))));
    // Control: a learned feature is still read.
    let mut learned = vals.clone();
    learned[0] = 1e3;
    assert_ne!(a, all_outputs(&net.forward(with(learned, given.clone()))));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bpk");
    net.save(&path).unwrap();
    let loaded = HemorrhageNet::load(&path, &device).unwrap();
    assert_eq!(loaded.config().clinical_unlearned, Some(vec![1, 3]));
    assert_eq!(a, all_outputs(&loaded.forward(with(vals, given))));
    // A config written before the field existed loads, reading every feature.
    let cpath = dir.path().join("old.json");
    HemorrhageNetConfig::tiny().save(&cpath).unwrap();
    let text = std::fs::read_to_string(&cpath).unwrap();
    let old: String = text
        .lines()
        .filter(|l| !l.contains("clinical_unlearned"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(",\n}", "\n}");
    assert_ne!(old, text, "the field was written");
    std::fs::write(&cpath, &old).unwrap();
    assert_eq!(
        HemorrhageNetConfig::load(&cpath)
            .unwrap()
            .clinical_unlearned,
        None
    );
    // And one written before the linear clinical path existed loads without it.
    let text = old
        .lines()
        .filter(|l| !l.contains("clinical_linear") && !l.contains("facts_prognosis_hidden"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(",\n}", "\n}");
    assert_ne!(text, old, "the field was written");
    std::fs::write(&cpath, &text).unwrap();
    let loaded = HemorrhageNetConfig::load(&cpath).unwrap();
    assert!(!loaded.has_clinical_linear());
    assert_eq!(loaded.facts_prognosis_hidden, None);
}

#[test]
fn mc_dropout_passes_differ_while_plain_forward_is_deterministic() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny().with_dropout(0.3);
    let net = cfg.init(&device);
    let batch = input(&cfg, 2, 3, 16, 16, 4, &device);
    let a = all_outputs(&net.forward(batch.clone()));
    let b = all_outputs(&net.forward(batch.clone()));
    assert_eq!(a, b);
    let sampler = McDropout::per_row(&[1, 2]);
    let s1 = all_outputs(&net.forward_stochastic(batch.clone(), &sampler));
    let s2 = all_outputs(&net.forward_stochastic(batch.clone(), &sampler));
    assert_ne!(s1, s2);
    // The same seeds give the same passes: MC dropout depends on the sampler alone.
    let again = McDropout::per_row(&[1, 2]);
    assert_eq!(
        s1,
        all_outputs(&net.forward_stochastic(batch.clone(), &again))
    );
    let mc = net.forward_mc(batch, 8, &McDropout::per_row(&[3, 4]));
    assert_eq!(mc.passes, 8);
    let mi = host(mc.any.mutual_info.clone());
    let ent = host(mc.any.entropy.clone());
    assert!(
        mi.iter()
            .zip(&ent)
            .all(|(m, e)| *m >= 0.0 && m <= &(e + 1e-6))
    );
    assert!(mi.iter().any(|m| *m > 0.0), "passes did not disagree");
    assert_eq!(mc.subtypes.entropy.dims(), [2, 5]);
    assert_eq!(mc.mrs.mutual_info.dims(), [2]);
}

#[test]
fn save_then_load_gives_identical_outputs() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny().with_neighbour_slices(1);
    let net = cfg.init(&device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bpk");
    net.save(&path).unwrap();
    assert!(config_path(&path).exists());
    let loaded = HemorrhageNet::load(&path, &device).unwrap();
    let batch = input(&cfg, 2, 3, 16, 16, 8, &device);
    assert_eq!(
        all_outputs(&net.forward(batch.clone())),
        all_outputs(&loaded.forward(batch.clone()))
    );
    // A freshly initialised network differs, so the equality above is not vacuous.
    assert_ne!(
        all_outputs(&net.forward(batch.clone())),
        all_outputs(&cfg.init(&device).forward(batch))
    );
}

#[test]
fn heatmap_cells_tile_the_slice() {
    let cfg = HemorrhageNetConfig::tiny();
    let (h, w) = (17, 13);
    let (fh, fw) = cfg.feature_hw_for(h, w);
    let mut covered = vec![0u8; h * w];
    for i in 0..fh {
        for j in 0..fw {
            let (rows, cols) = cfg.cell_bounds(i, j, h, w);
            assert!(
                !rows.is_empty() && !cols.is_empty(),
                "cell ({i}, {j}) covers nothing"
            );
            for r in rows {
                for c in cols.clone() {
                    covered[r * w + c] += 1;
                }
            }
        }
    }
    assert!(
        covered.iter().all(|&n| n == 1),
        "every pixel belongs to exactly one cell"
    );
}

#[test]
fn modality_changes_the_output() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny();
    let net = cfg.init(&device);
    let ct = input(&cfg, 2, 3, 16, 16, 12, &device);
    let mr = ModelInput {
        modality: Tensor::from_data(TensorData::new(vec![MODALITY_MR; 2], [2]), &device),
        ..ct.clone()
    };
    let ct = ModelInput {
        modality: Tensor::from_data(TensorData::new(vec![MODALITY_CT; 2], [2]), &device),
        ..ct
    };
    assert_ne!(all_outputs(&net.forward(ct)), all_outputs(&net.forward(mr)));
}

#[test]
fn temperatures_scale_logits() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny();
    let out = cfg
        .init(&device)
        .forward(input(&cfg, 2, 3, 16, 16, 2, &device));
    let t = Temperatures::new().with_any(2.0).with_mrs(4.0);
    let scaled = t.apply(&out);
    let (a, s) = (host(out.any_logit.clone()), host(scaled.any_logit));
    assert!(a.iter().zip(&s).all(|(x, y)| (x / 2.0 - y).abs() < 1e-6));
    let (m, ms) = (host_n(out.mrs_logits.clone()), host_n(scaled.mrs_logits));
    assert!(m.iter().zip(&ms).all(|(x, y)| (x / 4.0 - y).abs() < 1e-6));
    assert_eq!(
        host(out.mortality_logit.clone()),
        host(scaled.mortality_logit)
    );
    // Platt scaling: z / T + b on the prognosis heads; the six mRS logits stay ordered.
    let p = Temperatures::new()
        .with_mortality(2.0)
        .with_mortality_bias(-0.5)
        .with_mrs(1.5)
        .with_mrs_bias(0.3);
    let platt = p.apply(&out);
    let (z, zp) = (
        host(out.mortality_logit.clone()),
        host(platt.mortality_logit),
    );
    assert!(
        z.iter()
            .zip(&zp)
            .all(|(x, y)| (x / 2.0 - 0.5 - y).abs() < 1e-6)
    );
    let mp = host_n(platt.mrs_logits);
    assert!(
        m.iter()
            .zip(&mp)
            .all(|(x, y)| (x / 1.5 + 0.3 - y).abs() < 1e-6)
    );
    for row in mp.chunks(6) {
        assert!(row.windows(2).all(|w| w[0] >= w[1]), "{row:?}");
    }
    assert_eq!(host(out.any_logit.clone()), host(platt.any_logit));
}

#[test]
fn masked_labels_contribute_nothing() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny();
    let net = cfg.init(&device);
    let loss = MultiTaskLossConfig::new().init(&device);
    let out = net.forward(input(&cfg, 2, 3, 16, 16, 6, &device));
    let mut r = rows(2, 3);
    r[1] = TargetRow::default();
    let l1 = loss.forward(&out, &ModelTargets::from_rows(&r, 3, &device));
    // Flip every label of the fully masked study: nothing changes.
    r[1] = TargetRow::default();
    let mut flipped = ModelTargets::from_rows(&r, 3, &device);
    flipped.any = flipped.any.clone() + flipped.study_mask.clone().neg().add_scalar(1.0);
    flipped.mrs = Tensor::from_data(TensorData::new(vec![4i64, 6], [2]), &device);
    flipped.facts = flipped.facts.clone()
        + flipped
            .facts_mask
            .clone()
            .neg()
            .add_scalar(1.0)
            .reshape([2, 1])
            * 3.0;
    let l2 = loss.forward(&out, &flipped);
    assert_eq!(host(l1.total.clone()), host(l2.total));
    // No labels at all: every task term is exactly zero.
    let none = loss.forward(
        &out,
        &ModelTargets::from_rows(&[TargetRow::default(), TargetRow::default()], 3, &device),
    );
    assert_eq!(host(none.per_task), vec![0.0; TASKS.len()]);
    assert!(host(l1.per_task).iter().all(|v| *v > 0.0));
}

/// Eight tiny synthetic studies: bleeds are bright blobs on one slice. The network must fit
/// them (all four task losses small, every study classified right) within a bounded number of
/// AdamW steps.
#[test]
fn overfits_eight_synthetic_studies() {
    let device = Device::flex().autodiff();
    let cfg = HemorrhageNetConfig::tiny();
    let (b, s, c, h, w) = (8, cfg.slices, cfg.channels, 16, 16);
    let mut images = vec![0.0f32; b * s * c * h * w];
    let bg = noise(42, images.len());
    for (i, v) in images.iter_mut().enumerate() {
        *v = 0.3 + 0.05 * bg[i];
    }
    let mut target_rows = Vec::new();
    for i in 0..b {
        let bleed = i % 2 == 1;
        let slice = i % s;
        let (cy, cx) = (4 + (i * 3) % 8, 4 + (i * 5) % 8);
        let mut sub = [false; 5];
        if bleed {
            sub[i % 5] = true;
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let r2 = (y as i64 - cy as i64).pow(2) + (x as i64 - cx as i64).pow(2);
                        if r2 <= 6 {
                            images[(((i * s + slice) * c + ch) * h + y) * w + x] = 1.0;
                        }
                    }
                }
            }
        }
        let slices = (0..s)
            .map(|k| {
                let mut r = [false; 6];
                if bleed && k == slice {
                    r[0] = true;
                    r[1 + i % 5] = true;
                }
                r
            })
            .collect();
        target_rows.push(TargetRow {
            study: Some((bleed, sub)),
            slices: Some(slices),
            mortality: Some(bleed && i % 4 == 1),
            mrs: Some(if bleed {
                3 + (i % 4) as u8
            } else {
                (i % 2) as u8
            }),
            facts: Some(HematomaFacts {
                hematoma_ml: if bleed {
                    5.0 + 10.0 * (i % 3) as f64
                } else {
                    0.0
                },
                intraventricular_ml: if bleed && i % 5 == 4 { 8.0 } else { 0.0 },
                infratentorial: bleed && i % 3 == 1,
            }),
        });
    }
    let clinical = noise(7, b * cfg.n_clinical);
    let present = vec![1.0; b * cfg.n_clinical];
    let batch = ModelInput::from_host(
        images,
        [b, s, c, h, w],
        clinical,
        present,
        vec![0; b],
        &device,
    );
    let targets = ModelTargets::from_rows(&target_rows, s, &device);

    let mut model = Trainable::new(
        &cfg,
        &MultiTaskLossConfig::new().with_learn_task_weights(false),
        &device,
    );
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut last = vec![f32::INFINITY; 4];
    let mut steps = 0;
    for step in 0..600 {
        steps = step + 1;
        let (_, loss) = model.forward(batch.clone(), &targets);
        last = host(loss.per_task.clone());
        if last.iter().all(|l| *l < 0.05) {
            break;
        }
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = optim.step(5e-3, model, grads);
    }
    assert!(
        last.iter().all(|l| *l < 0.05),
        "after {steps} steps per-task losses are {last:?}"
    );
    let p = host(
        model
            .net
            .valid()
            .forward(ModelInput {
                images: batch.images.inner(),
                clinical: batch.clinical.inner(),
                clinical_present: batch.clinical_present.inner(),
                modality: batch.modality.inner(),
            })
            .probabilities()
            .any,
    );
    for (i, p) in p.iter().enumerate() {
        assert_eq!(*p > 0.5, i % 2 == 1, "study {i}: P(any) = {p}");
    }
    eprintln!("overfit in {steps} steps: {last:?}");
}

/// The facts term of the loss (task 4) is 0 at the encoded target, the mean squared error of
/// the scaled log volumes otherwise, and a study without facts adds nothing.
#[test]
fn facts_loss_is_zero_at_the_target_and_masked_when_unknown() {
    let device = Device::flex();
    let cfg = HemorrhageNetConfig::tiny();
    let net = cfg.init(&device);
    let loss = MultiTaskLossConfig::new().init(&device);
    let mut out = net.forward(input(&cfg, 2, 3, 16, 16, 6, &device));
    let f = HematomaFacts {
        hematoma_ml: 30.0,
        intraventricular_ml: 0.0,
        infratentorial: false,
    };
    let rows = [
        TargetRow {
            facts: Some(f),
            ..TargetRow::default()
        },
        TargetRow::default(),
    ];
    let targets = ModelTargets::from_rows(&rows, 3, &device);
    let enc = f.encode();
    let facts = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [2, N_FACTS]), &device);
    let facts_term = |out: &ModelOutput| host(loss.forward(out, &targets).per_task)[4];
    out.facts = facts(vec![enc[0], enc[1], -30.0, 9.0, 9.0, 9.0]);
    assert!(facts_term(&out) < 1e-6, "{}", facts_term(&out));
    // Off by 0.5 on the first volume: (0.5² + 0²) / 2; the unknown study's row is ignored.
    out.facts = facts(vec![enc[0] + 0.5, enc[1], -30.0, -9.0, 0.0, 3.0]);
    assert!(
        (facts_term(&out) - 0.125).abs() < 1e-5,
        "{}",
        facts_term(&out)
    );
}

/// One network for CT and MR: each study goes through its modality's stem, a mixed batch gives
/// every study the output it gets alone (rows put back in order), and the MR stem learns only
/// from MR studies.
#[test]
fn mixed_ct_and_mr_batches_route_each_study_through_its_own_stem() {
    let device = Device::flex();
    device.seed(5);
    let cfg = HemorrhageNetConfig::tiny().with_mr_channels(5);
    assert_eq!(cfg.input_channels(), 5);
    let net = cfg.init(&device);
    let ct_only = HemorrhageNetConfig::tiny().init(&device);
    // The MR stem is the only addition: a 3x3 conv of 5 -> 8 channels and its norm.
    assert_eq!(net.param_count() - ct_only.param_count(), 5 * 8 * 9 + 2 * 8);
    let (b, s, h, w) = (4, 3, 16, 16);
    let batch = input(&cfg, b, s, h, w, 11, &device); // modality 0, 1, 0, 1
    let together = net.forward(batch.clone());
    let per_image = b * s * cfg.input_channels() * h * w / b;
    let imgs = batch
        .images
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let clin = batch
        .clinical
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let pres = batch
        .clinical_present
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let f = cfg.n_clinical;
    let any = host(together.any_logit.clone());
    for r in 0..b {
        let one = ModelInput::from_host(
            imgs[r * per_image..(r + 1) * per_image].to_vec(),
            [1, s, cfg.input_channels(), h, w],
            clin[r * f..(r + 1) * f].to_vec(),
            pres[r * f..(r + 1) * f].to_vec(),
            vec![(r % 2) as i64],
            &device,
        );
        let alone = host(net.forward(one).any_logit);
        assert!(
            (alone[0] - any[r]).abs() < 1e-4,
            "row {r}: {} vs {}",
            alone[0],
            any[r]
        );
    }
    // The same images read as CT give another answer: the stems differ.
    let mut as_ct = batch.clone();
    as_ct.modality = Tensor::from_data(TensorData::new(vec![0i64; b], [b]), &device);
    let ct_any = host(net.forward(as_ct).any_logit);
    assert!((ct_any[1] - any[1]).abs() > 1e-5);

    // Gradients: a CT-only batch leaves the MR stem untouched.
    let ad = Device::flex().autodiff();
    ad.seed(5);
    let net = cfg.init(&ad);
    let mut ct_batch = input(&cfg, 2, s, h, w, 3, &ad);
    ct_batch.modality = Tensor::from_data(TensorData::new(vec![0i64; 2], [2]), &ad);
    let grads = net.forward(ct_batch).any_logit.sum().backward();
    struct StemGrads<'a> {
        grads: &'a Gradients,
        with: usize,
        shapes: Vec<Vec<usize>>,
    }
    impl ModuleVisitor for StemGrads<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if p.val().grad(self.grads).is_some() {
                self.with += 1;
            } else {
                self.shapes.push(p.val().dims().to_vec());
            }
        }
    }
    let mut v = StemGrads {
        grads: &grads,
        with: 0,
        shapes: Vec::new(),
    };
    net.visit(&mut v);
    assert!(
        v.shapes.iter().any(|d| d == &vec![8, 5, 3, 3]),
        "MR stem weight must get no gradient from CT studies: {:?}",
        v.shapes
    );
}
