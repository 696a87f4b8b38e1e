//! The one scoring path: run a network over studies and keep each study's raw outputs
//! (logits, slice probabilities, MC-dropout passes, gates, heatmap), and read calibrated
//! probabilities and uncertainty off them. Calibration, evaluation and `predict` all score
//! through [`score_variants`], so a study gets the same numbers from each.

use hn_model::burn::prelude::*;
use hn_model::{
    EncodedBatch, HemorrhageNet, McDropout, ModelInput, ModelOutput, N_LABELS, N_MRS_CLASSES,
    N_MRS_THRESHOLDS, N_SUBTYPES, POOR_OUTCOME_THRESHOLD,
};
use serde::{Deserialize, Serialize};

use crate::checkpoint::TemperatureSet;
use crate::metrics::{FactsAgreement, sigmoid};
use crate::sample::{InputMask, StudySample, make_batch};
use crate::uncertainty::{
    HeadUncertainty, UncertaintyMeasure, binary_uncertainty, categorical_uncertainty,
};

/// Test-time augmentation of the deterministic forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestTimeAugmentation {
    /// One forward pass (also what a card written before this option means).
    #[default]
    None,
    /// Average the logits of the study and of its left–right mirror image. The head is
    /// nearly symmetric and training already flips it, so the mirror is a second look at the
    /// same anatomy for one more CNN pass (its measured gain: docs/RESULTS.md).
    Flip,
}

impl TestTimeAugmentation {
    /// Name as written in configs and cards.
    pub fn name(self) -> &'static str {
        match self {
            TestTimeAugmentation::None => "none",
            TestTimeAugmentation::Flip => "flip",
        }
    }
}

/// The deterministic forward under `tta`, and the encoding of the unaugmented input (which
/// the MC-dropout passes decode from). With [`TestTimeAugmentation::Flip`] every logit, the
/// facts read-out and the heatmap (mirrored back) are the mean of the two views; the graph
/// and cross attention maps and the embedding are the unaugmented view's.
pub fn forward_tta(
    net: &HemorrhageNet,
    input: ModelInput,
    tta: TestTimeAugmentation,
) -> (EncodedBatch, ModelOutput) {
    let (encoded, mirror) = encode_views(net, input, tta == TestTimeAugmentation::Flip);
    let o = decode_tta(net, encoded.clone(), mirror);
    (encoded, o)
}

/// The encoding of `input` and, with `mirror`, of its left–right mirror image.
fn encode_views(
    net: &HemorrhageNet,
    input: ModelInput,
    mirror: bool,
) -> (EncodedBatch, Option<EncodedBatch>) {
    let mirrored = mirror.then(|| {
        net.encode(ModelInput {
            images: input.images.clone().flip([4]),
            ..input.clone()
        })
    });
    (net.encode(input), mirrored)
}

/// Decode an encoding and, when given, average with the decoded mirror encoding as
/// [`forward_tta`] describes.
fn decode_tta(
    net: &HemorrhageNet,
    encoded: EncodedBatch,
    mirror: Option<EncodedBatch>,
) -> ModelOutput {
    let mut o = net.decode(encoded);
    if let Some(m) = mirror {
        let g = net.decode(m);
        o.any_logit = (o.any_logit + g.any_logit) / 2.0;
        o.mortality_logit = (o.mortality_logit + g.mortality_logit) / 2.0;
        o.subtype_cond_logits = (o.subtype_cond_logits + g.subtype_cond_logits) / 2.0;
        o.mrs_logits = (o.mrs_logits + g.mrs_logits) / 2.0;
        o.facts = (o.facts + g.facts) / 2.0;
        o.embedding = (o.embedding + g.embedding) / 2.0;
        o.slice_logits = (o.slice_logits + g.slice_logits) / 2.0;
        // Cell j of the mirror's map covers the original's cell w − 1 − j.
        o.heatmap = (o.heatmap + g.heatmap.flip([3])) / 2.0;
    }
    o
}

/// The same encoding with the clinical values hidden, exactly as [`make_batch`] hides them
/// (values and present-mask zero): the CNN's work is reused for the image-only ablation.
fn hide_clinical(e: &EncodedBatch) -> EncodedBatch {
    EncodedBatch {
        clinical: e.clinical.zeros_like(),
        clinical_present: e.clinical_present.zeros_like(),
        ..e.clone()
    }
}

/// MC-dropout passes when neither the caller nor the card says (training writes its own
/// value into the card; evaluation and prediction read it from there).
pub const DEFAULT_MC_PASSES: usize = 10;

/// MC-dropout passes and test-time augmentation of a scoring run: the caller's override, else
/// the card's calibration (whatever it says, 0 passes included: its referral threshold was
/// fitted on that), else [`DEFAULT_MC_PASSES`] and no augmentation. Evaluation and `predict`
/// both read their settings here.
pub fn scoring_settings(
    calibration: Option<&crate::checkpoint::Calibration>,
    mc_passes: Option<usize>,
    tta: Option<TestTimeAugmentation>,
) -> (usize, TestTimeAugmentation) {
    (
        mc_passes
            .or(calibration.map(|c| c.mc_passes))
            .unwrap_or(DEFAULT_MC_PASSES),
        tta.or(calibration.map(|c| c.tta)).unwrap_or_default(),
    )
}

/// Mixed into every study's MC-dropout seed.
const MC_SEED: u64 = 0x4845_4d4f_5252_4841;

/// The MC-dropout seed of the study named `key`: its samples depend on nothing else, so
/// calibration, evaluation, `predict` and a server scoring many studies at once agree.
pub fn mc_seed(key: &str) -> u64 {
    u64::from(hn_data::splits::shard_of(key, u32::MAX)) ^ MC_SEED
}

/// The logits of one MC-dropout pass that the uncertainty report reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McPass {
    pub any_logit: f64,
    pub mortality_logit: f64,
    /// Logits of P(mRS ≥ k), k = 1..6.
    pub mrs_logits: [f64; N_MRS_THRESHOLDS],
}

/// Raw outputs for one study (logits before temperature scaling).
#[derive(Debug, Clone, PartialEq)]
pub struct StudyScores {
    pub any_logit: f64,
    /// Logits of P(subtype | bleed).
    pub subtype_cond_logits: [f64; N_SUBTYPES],
    pub mortality_logit: f64,
    /// Logits of P(mRS ≥ k), k = 1..6.
    pub mrs_logits: [f64; N_MRS_THRESHOLDS],
    /// Per-slice P(any).
    pub slice_any: Vec<f64>,
    /// Per-slice `[P(any), P(subtype) ×5]` (joint, as the hierarchy reports them).
    pub slice_probs: Vec<[f64; N_LABELS]>,
    /// MC-dropout passes (empty when not requested), from the unaugmented encoding.
    pub mc: Vec<McPass>,
    /// Clinical feature gates (per-patient feature weights).
    pub feature_gates: Vec<f64>,
    /// `[S, h, w]` heatmap (sums to 1).
    pub heatmap: Vec<f32>,
    /// `[S, h, w]` of [`heatmap`](Self::heatmap).
    pub heatmap_shape: [usize; 3],
    /// Raw hematoma-facts read-out (`hn_model::HematomaFacts::decode` reads it).
    pub facts: [f32; hn_model::N_FACTS],
    /// The fused study embedding (mean with the mirror's under test-time augmentation): what
    /// the feature distance (`crate::distance`) measures.
    pub embedding: Vec<f32>,
}

/// One study's calibrated probabilities: what `prediction.json` reports and `predictions.csv`
/// lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibratedProbabilities {
    pub any: f64,
    /// P(subtype) = P(any)·P(subtype | bleed).
    pub subtypes: [f64; N_SUBTYPES],
    pub given_bleed: [f64; N_SUBTYPES],
    pub mortality_30d: f64,
    /// P(mRS ≥ k), k = 1..=6.
    pub mrs_at_least: [f64; N_MRS_THRESHOLDS],
    /// P(mRS = 0..6).
    pub mrs: [f64; N_MRS_CLASSES],
}

impl CalibratedProbabilities {
    /// P(mRS ≥ 4): poor 90-day outcome.
    pub fn poor_outcome_90d(&self) -> f64 {
        self.mrs_at_least[POOR_OUTCOME_THRESHOLD]
    }
}

/// P(mRS = 0..6) from the cumulative P(mRS ≥ k), k = 1..6 (as the network's own
/// `ModelOutput::probabilities` computes it).
fn mrs_distribution(at_least: &[f64; N_MRS_THRESHOLDS]) -> [f64; N_MRS_CLASSES] {
    std::array::from_fn(|k| {
        let upper = if k == 0 { 1.0 } else { at_least[k - 1] };
        let lower = if k == N_MRS_THRESHOLDS {
            0.0
        } else {
            at_least[k]
        };
        upper - lower
    })
}

fn mrs_at_least(logits: &[f64; N_MRS_THRESHOLDS], t: &TemperatureSet) -> [f64; N_MRS_THRESHOLDS] {
    let c = t.mrs_calibration();
    std::array::from_fn(|k| sigmoid(c.logit(logits[k])))
}

/// The uncertainty of every head of one study (from its MC passes; from the deterministic
/// forward alone when none were run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StudyUncertainty {
    pub passes: usize,
    pub any: HeadUncertainty,
    pub mortality_30d: HeadUncertainty,
    pub mrs_90d: HeadUncertainty,
}

/// Host copy of a float tensor's values (row-major), widened to f64.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensors convert to f32")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Score `studies` in batches of `batch` on `device` (an inference device, e.g.
/// `Device::flex()`), hiding inputs per `mask`, the deterministic pass under `tta`;
/// `mc_passes > 0` adds that many MC-dropout passes, each study's masks drawn from its own
/// generator ([`mc_seed`] of its key), so a study's numbers do not depend on its batch.
pub fn score(
    net: &HemorrhageNet,
    studies: &[&StudySample],
    batch: usize,
    mask: InputMask,
    mc_passes: usize,
    tta: TestTimeAugmentation,
    device: &Device,
) -> Vec<StudyScores> {
    let variant = ScoreVariant { mask, mc_passes };
    score_variants(net, studies, batch, &[variant], tta, device)
        .pop()
        .expect("one variant")
}

/// `idx` of `samples`, as the slice of references [`score`] takes.
pub fn pick<'a>(samples: &'a [StudySample], idx: &[usize]) -> Vec<&'a StudySample> {
    idx.iter().map(|&i| &samples[i]).collect()
}

/// What to hide and how many MC-dropout passes, for one pass of [`score_variants`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreVariant {
    pub mask: InputMask,
    pub mc_passes: usize,
}

/// [`score`] for several input masks at once, one result per variant, each identical to
/// what [`score`] gives for it alone. The CNN — nearly all of the cost — runs once per batch
/// (twice with the mirror) for every variant that shows the images: hiding the clinical
/// values only changes what is decoded. A variant that hides the images encodes a blank
/// study, whose mirror image is itself, so its mirror pass is skipped (same logits).
pub fn score_variants(
    net: &HemorrhageNet,
    studies: &[&StudySample],
    batch: usize,
    variants: &[ScoreVariant],
    tta: TestTimeAugmentation,
    device: &Device,
) -> Vec<Vec<StudyScores>> {
    let mut out: Vec<Vec<StudyScores>> = variants
        .iter()
        .map(|_| Vec::with_capacity(studies.len()))
        .collect();
    let flip = tta == TestTimeAugmentation::Flip;
    for refs in studies.chunks(batch.max(1)) {
        // Encodings of the images (and their mirror), made once for the variants that show
        // them; the MC-dropout passes decode the unaugmented encoding.
        let mut shown: Option<(EncodedBatch, Option<EncodedBatch>)> = None;
        for (v, variant) in variants.iter().enumerate() {
            let (encoded, o) = if variant.mask.hide_images {
                // Blank images are their own mirror: the mirror view is this encoding again.
                let encoded = net.encode(make_batch(refs, None, variant.mask, device));
                let o = decode_tta(net, encoded.clone(), flip.then(|| encoded.clone()));
                (encoded, o)
            } else {
                let (plain, mirror) = shown.get_or_insert_with(|| {
                    let input = make_batch(refs, None, InputMask::default(), device);
                    encode_views(net, input, flip)
                });
                let (plain, mirror) = if variant.mask.hide_clinical {
                    (hide_clinical(plain), mirror.as_ref().map(hide_clinical))
                } else {
                    (plain.clone(), mirror.clone())
                };
                let o = decode_tta(net, plain.clone(), mirror);
                (plain, o)
            };
            out[v].extend(study_scores(net, refs, encoded, o, variant.mc_passes));
        }
    }
    out
}

/// Per-study scores of one decoded batch, with `mc_passes` MC-dropout passes of `encoded`.
fn study_scores(
    net: &HemorrhageNet,
    refs: &[&StudySample],
    encoded: EncodedBatch,
    o: ModelOutput,
    mc_passes: usize,
) -> Vec<StudyScores> {
    let b = refs.len();
    let mut out = Vec::with_capacity(b);
    let s = refs[0].shape[0];
    let any = host(o.any_logit.clone());
    let sub = host(o.subtype_cond_logits.clone().reshape([b * N_SUBTYPES]));
    let mort = host(o.mortality_logit.clone());
    let mrs = host(o.mrs_logits.clone().reshape([b * N_MRS_THRESHOLDS]));
    let facts = host(o.facts.clone().reshape([b * hn_model::N_FACTS]));
    let d_emb = o.embedding.dims()[1];
    let emb = host(o.embedding.clone().reshape([b * d_emb]));
    let slice_all = host(o.probabilities().slices.reshape([b * s * N_LABELS]));
    let slice_any: Vec<f64> = (0..b * s).map(|r| slice_all[r * N_LABELS]).collect();
    let f = o.feature_gates.dims()[1];
    let gates = host(o.feature_gates.clone().reshape([b * f]));
    let [_, hs, hh, hw] = o.heatmap.dims();
    let heat: Vec<f32> = o
        .heatmap
        .clone()
        .reshape([b * hs * hh * hw])
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 heatmap");
    let mut mc: Vec<Vec<McPass>> = vec![Vec::with_capacity(mc_passes); b];
    if mc_passes > 0 {
        let seeds: Vec<u64> = refs.iter().map(|r| mc_seed(&r.key)).collect();
        let sampler = McDropout::per_row(&seeds);
        for _ in 0..mc_passes {
            let p = net.decode_stochastic(encoded.clone(), &sampler);
            let pa = host(p.any_logit);
            let pm = host(p.mortality_logit);
            let pr = host(p.mrs_logits.reshape([b * N_MRS_THRESHOLDS]));
            for (k, passes) in mc.iter_mut().enumerate() {
                passes.push(McPass {
                    any_logit: pa[k],
                    mortality_logit: pm[k],
                    mrs_logits: std::array::from_fn(|j| pr[k * N_MRS_THRESHOLDS + j]),
                });
            }
        }
    }
    let n_heat = hs * hh * hw;
    for k in 0..b {
        let sc = std::array::from_fn(|j| sub[k * N_SUBTYPES + j]);
        let ml = std::array::from_fn(|j| mrs[k * N_MRS_THRESHOLDS + j]);
        out.push(StudyScores {
            any_logit: any[k],
            subtype_cond_logits: sc,
            mortality_logit: mort[k],
            mrs_logits: ml,
            slice_any: slice_any[k * s..(k + 1) * s].to_vec(),
            slice_probs: (0..s)
                .map(|q| std::array::from_fn(|j| slice_all[(k * s + q) * N_LABELS + j]))
                .collect(),
            mc: std::mem::take(&mut mc[k]),
            feature_gates: gates[k * f..(k + 1) * f].to_vec(),
            heatmap: heat[k * n_heat..(k + 1) * n_heat].to_vec(),
            heatmap_shape: [hs, hh, hw],
            facts: std::array::from_fn(|j| facts[k * hn_model::N_FACTS + j] as f32),
            embedding: emb[k * d_emb..(k + 1) * d_emb]
                .iter()
                .map(|&v| v as f32)
                .collect(),
        });
    }
    out
}

impl StudyScores {
    /// The model's estimate of the hematoma facts (meaningful only for a model trained with
    /// facts targets: see `Calibration::facts`).
    pub fn estimated_facts(&self) -> hn_model::HematomaFacts {
        hn_model::HematomaFacts::decode(self.facts)
    }

    /// The facts read-out's probability of an infratentorial bleed.
    pub fn p_infratentorial(&self) -> f64 {
        sigmoid(f64::from(self.facts[2]))
    }

    /// Calibrated P(any) at temperature `t`.
    pub fn p_any(&self, t: f64) -> f64 {
        sigmoid(self.any_logit / t)
    }

    /// Calibrated P(subtype) = P(any)·P(subtype | bleed).
    pub fn p_subtypes(&self, t_any: f64, t_sub: f64) -> [f64; N_SUBTYPES] {
        let pa = self.p_any(t_any);
        let mut p = [0.0; N_SUBTYPES];
        for (j, v) in p.iter_mut().enumerate() {
            *v = pa * sigmoid(self.subtype_cond_logits[j] / t_sub);
        }
        p
    }

    /// `[any, 5 subtypes]` calibrated.
    pub fn detection_row(&self, t_any: f64, t_sub: f64) -> [f64; N_LABELS] {
        let mut r = [0.0; N_LABELS];
        r[0] = self.p_any(t_any);
        r[1..].copy_from_slice(&self.p_subtypes(t_any, t_sub));
        r
    }

    /// Every probability of the deterministic forward under the calibration `t` (temperatures,
    /// and the prognosis heads' Platt biases).
    pub fn calibrated(&self, t: &TemperatureSet) -> CalibratedProbabilities {
        let any = self.p_any(t.any);
        let given: [f64; N_SUBTYPES] =
            std::array::from_fn(|j| sigmoid(self.subtype_cond_logits[j] / t.subtypes));
        let at_least = mrs_at_least(&self.mrs_logits, t);
        CalibratedProbabilities {
            any,
            subtypes: std::array::from_fn(|j| any * given[j]),
            given_bleed: given,
            mortality_30d: sigmoid(t.mortality_calibration().logit(self.mortality_logit)),
            mrs_at_least: at_least,
            mrs: mrs_distribution(&at_least),
        }
    }

    /// Uncertainty of P(any), mortality and mRS from the MC passes under calibration `t`
    /// (temperatures applied to each pass before averaging); with no passes, the entropy of
    /// the deterministic probabilities (mutual information 0).
    pub fn uncertainty(&self, t: &TemperatureSet) -> StudyUncertainty {
        let det = self.calibrated(t);
        let m = t.mortality_calibration();
        let mort = self.per_pass(det.mortality_30d, |p| sigmoid(m.logit(p.mortality_logit)));
        let mrs = self.per_pass(det.mrs, |p| {
            mrs_distribution(&mrs_at_least(&p.mrs_logits, t))
        });
        StudyUncertainty {
            passes: self.mc.len(),
            any: binary_uncertainty(&self.any_per_pass(t)),
            mortality_30d: binary_uncertainty(&mort),
            mrs_90d: categorical_uncertainty(&mrs),
        }
    }

    /// The value the referral policy compares with its threshold, for a bleed decision at
    /// calibrated P(any) ≥ `any_threshold`.
    pub fn referral_uncertainty(
        &self,
        measure: UncertaintyMeasure,
        t: &TemperatureSet,
        any_threshold: f64,
    ) -> f64 {
        measure.of_passes(&self.any_per_pass(t), any_threshold)
    }

    /// Calibrated P(any) of each MC pass (of the deterministic forward when none ran).
    fn any_per_pass(&self, t: &TemperatureSet) -> Vec<f64> {
        self.per_pass(self.p_any(t.any), |p| sigmoid(p.any_logit / t.any))
    }

    /// `of_pass` of every MC pass, or `deterministic` alone when no pass was run.
    fn per_pass<T>(&self, deterministic: T, of_pass: impl Fn(&McPass) -> T) -> Vec<T> {
        if self.mc.is_empty() {
            vec![deterministic]
        } else {
            self.mc.iter().map(of_pass).collect()
        }
    }

    /// Heatmap mass of each of the `n_slices` slices (sums to 1 over the study).
    pub fn slice_heat_mass(&self, n_slices: usize) -> Vec<f64> {
        let per = self.heatmap.len() / n_slices.max(1);
        (0..n_slices)
            .map(|q| {
                self.heatmap[q * per..(q + 1) * per]
                    .iter()
                    .map(|v| f64::from(*v))
                    .sum()
            })
            .collect()
    }

    /// Slice holding the most heatmap mass.
    pub fn peak_slice(&self, n_slices: usize) -> usize {
        let mass = self.slice_heat_mass(n_slices);
        (0..n_slices)
            .max_by(|&a, &b| mass[a].total_cmp(&mass[b]))
            .unwrap_or(0)
    }

    /// Max over slices of the per-slice `[any, subtypes]` probabilities.
    pub fn slice_max(&self) -> [f64; N_LABELS] {
        let mut m = [0.0f64; N_LABELS];
        for r in &self.slice_probs {
            for j in 0..N_LABELS {
                m[j] = m[j].max(r[j]);
            }
        }
        m
    }
}

/// [`FactsAgreement`] of `scores` (rows of `idx`) against the samples' synthetic truth;
/// `None` when no study has it.
pub fn facts_agreement(
    samples: &[StudySample],
    idx: &[usize],
    scores: &[StudyScores],
) -> Option<FactsAgreement> {
    let (mut n, mut e_h, mut e_v, mut cut) = (0usize, 0.0, 0.0, 0usize);
    let (mut p_inf, mut y_inf) = (Vec::new(), Vec::new());
    for (k, &i) in idx.iter().enumerate() {
        let Some(t) = samples[i].truth else { continue };
        let f = scores[k].estimated_facts();
        n += 1;
        e_h += (f.hematoma_ml - t.parenchymal_ml).abs();
        e_v += (f.intraventricular_ml - t.ivh_ml).abs();
        cut += usize::from((f.hematoma_ml >= 30.0) == (t.parenchymal_ml >= 30.0));
        p_inf.push(scores[k].p_infratentorial());
        y_inf.push(t.infratentorial);
    }
    (n > 0).then(|| FactsAgreement {
        n,
        hematoma_ml_mae: e_h / n as f64,
        intraventricular_ml_mae: e_v / n as f64,
        volume_cut_accuracy: cut as f64 / n as f64,
        infratentorial_auc: crate::metrics::roc_auc(&p_inf, &y_inf).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hn_model::HemorrhageNetConfig;

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        host(t)
    }

    fn close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{what}: {a:?} vs {b:?}");
        }
    }

    /// Scoring several masks at once (one CNN pass shared by the variants that show the
    /// images, no mirror pass for blank images) gives, bit for bit, what a fresh forward of
    /// each masked batch gives.
    #[test]
    fn variants_share_the_encoding_and_match_fresh_forwards() {
        let device = Device::flex();
        let pre = crate::sample::default_preprocess(4, 32);
        let sc = hn_data::synth::SynthConfig {
            size: 32,
            n_slices: Some(4),
            ..Default::default()
        };
        let samples: Vec<StudySample> = (0..5)
            .map(|i| {
                StudySample::from_synthetic(&hn_data::synth::generate_study(&sc, 3, i), &pre)
                    .unwrap()
            })
            .collect();
        let cfg = HemorrhageNetConfig::tiny()
            .with_slices(4)
            .with_channels(3)
            .with_height(32)
            .with_width(32)
            .with_n_clinical(hn_data::clinical::N_CLINICAL)
            .with_dropout(0.2);
        device.seed(1);
        let net = cfg.init(&device);
        let idx = [0, 1, 2, 3, 4];
        let masks = [
            InputMask::default(),
            InputMask {
                hide_clinical: true,
                hide_images: false,
            },
            InputMask {
                hide_clinical: false,
                hide_images: true,
            },
        ];
        for tta in [TestTimeAugmentation::None, TestTimeAugmentation::Flip] {
            let variants: Vec<ScoreVariant> = masks
                .iter()
                .enumerate()
                .map(|(v, &mask)| ScoreVariant {
                    mask,
                    mc_passes: if v == 0 { 2 } else { 0 },
                })
                .collect();
            let together = score_variants(&net, &pick(&samples, &idx), 2, &variants, tta, &device);
            for (v, mask) in masks.iter().enumerate() {
                assert_eq!(together[v].len(), idx.len());
                assert_eq!(together[v][0].mc.len(), variants[v].mc_passes);
                for (c, chunk) in idx.chunks(2).enumerate() {
                    let refs: Vec<&StudySample> = chunk.iter().map(|&i| &samples[i]).collect();
                    let (_, o) = forward_tta(&net, make_batch(&refs, None, *mask, &device), tta);
                    let got = &together[v][c * 2..c * 2 + chunk.len()];
                    let any: Vec<f64> = got.iter().map(|g| g.any_logit).collect();
                    let mort: Vec<f64> = got.iter().map(|g| g.mortality_logit).collect();
                    let sub: Vec<f64> = got.iter().flat_map(|g| g.subtype_cond_logits).collect();
                    let heat: Vec<f64> = got
                        .iter()
                        .flat_map(|g| g.heatmap.iter().map(|&x| f64::from(x)))
                        .collect();
                    assert_eq!(any, vals(o.any_logit), "{tta:?} variant {v}: any");
                    assert_eq!(mort, vals(o.mortality_logit), "{tta:?} variant {v}");
                    assert_eq!(sub, vals(o.subtype_cond_logits), "{tta:?} variant {v}");
                    assert_eq!(heat, vals(o.heatmap), "{tta:?} variant {v}: heatmap");
                }
            }
            // The ablations are different inputs: a broken mask would pass the checks above
            // only if it changed nothing.
            let m = |v: usize| together[v][0].mortality_logit;
            assert_ne!(m(0), m(1));
            assert_ne!(m(0), m(2));
        }
    }

    /// The mirror view is averaged in exactly: every logit is the mean of the two plain
    /// forwards, the heatmap the mean of the plain map and the mirror's map mirrored back
    /// (still summing to 1), and `none` is the plain forward.
    #[test]
    fn flip_averages_the_study_and_its_mirror() {
        let device = Device::flex();
        device.seed(5);
        let cfg = HemorrhageNetConfig::tiny();
        let net = cfg.init(&device);
        let (b, s, c, h, w) = (2, cfg.slices, cfg.channels, cfg.height, cfg.width);
        // An asymmetric image, so that the mirror is a different input.
        let images: Vec<f32> = (0..b * s * c * h * w)
            .map(|i| ((i * 7919) % 113) as f32 / 113.0 * (1.0 + (i % w) as f32 / w as f32))
            .collect();
        let f = cfg.n_clinical;
        let input = ModelInput::from_host(
            images,
            [b, s, c, h, w],
            vec![0.3; b * f],
            vec![1.0; b * f],
            vec![0; b],
            &device,
        );
        let mirror = ModelInput {
            images: input.images.clone().flip([4]),
            ..input.clone()
        };
        let plain = net.forward(input.clone());
        let mirrored = net.forward(mirror);
        let (_, none) = forward_tta(&net, input.clone(), TestTimeAugmentation::None);
        let (_, flip) = forward_tta(&net, input, TestTimeAugmentation::Flip);

        close(
            &vals(none.any_logit),
            &vals(plain.any_logit.clone()),
            "none",
        );
        let mean = |a: Vec<f64>, b: Vec<f64>| -> Vec<f64> {
            a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect()
        };
        let any_p = vals(plain.any_logit.clone());
        let any_m = vals(mirrored.any_logit.clone());
        assert!(
            any_p.iter().zip(&any_m).any(|(x, y)| (x - y).abs() > 1e-6),
            "the mirror gave the same output: the test input is symmetric"
        );
        close(&vals(flip.any_logit), &mean(any_p, any_m), "any");
        close(
            &vals(flip.subtype_cond_logits),
            &mean(
                vals(plain.subtype_cond_logits),
                vals(mirrored.subtype_cond_logits),
            ),
            "subtypes",
        );
        close(
            &vals(flip.mortality_logit),
            &mean(vals(plain.mortality_logit), vals(mirrored.mortality_logit)),
            "mortality",
        );
        close(
            &vals(flip.facts),
            &mean(vals(plain.facts), vals(mirrored.facts)),
            "facts",
        );
        let heat = vals(flip.heatmap.clone());
        close(
            &heat,
            &mean(vals(plain.heatmap), vals(mirrored.heatmap.flip([3]))),
            "heatmap",
        );
        let per_study = heat.len() / b;
        for k in 0..b {
            let sum: f64 = heat[k * per_study..(k + 1) * per_study].iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "heatmap sums to {sum}");
        }
    }

    /// Unknown values are rejected with their name by the config parser
    /// (`train::tests::test_time_augmentation_is_read_from_toml_and_defaults_to_flip`).
    #[test]
    fn names_are_the_serialised_values() {
        for t in [TestTimeAugmentation::None, TestTimeAugmentation::Flip] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(
                serde_json::from_str::<TestTimeAugmentation>(&json).unwrap(),
                t
            );
        }
    }
}
