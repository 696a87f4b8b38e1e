//! Run a network over samples and keep the raw per-study outputs the evaluation, calibration
//! and referral need (logits, slice probabilities, MC-dropout passes).

use hn_model::HemorrhageNet;
use hn_model::burn::prelude::*;

use crate::metrics::{FactsAgreement, sigmoid};
use crate::sample::{InputMask, StudySample, make_batch};

/// Raw outputs for one study (logits before temperature scaling).
#[derive(Debug, Clone, PartialEq)]
pub struct StudyScores {
    pub any_logit: f64,
    /// Logits of P(subtype | bleed).
    pub subtype_cond_logits: [f64; 5],
    pub mortality_logit: f64,
    /// Logits of P(mRS ≥ k), k = 1..6.
    pub mrs_logits: [f64; 6],
    /// Per-slice P(any).
    pub slice_any: Vec<f64>,
    /// Per-slice `[P(any), P(subtype) ×5]` (joint, as the hierarchy reports them).
    pub slice_probs: Vec<[f64; 6]>,
    /// MC-dropout passes of the any logit (empty when not requested).
    pub mc_any_logits: Vec<f64>,
    /// Clinical feature gates (per-patient feature weights).
    pub feature_gates: Vec<f64>,
    /// `[S, h, w]` heatmap (sums to 1).
    pub heatmap: Vec<f32>,
    /// Raw hematoma-facts read-out (`hn_model::HematomaFacts::decode` reads it).
    pub facts: [f32; hn_model::N_FACTS],
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

/// Score `idx` of `samples` in batches of `batch` on `device` (an inference device, e.g.
/// `Device::flex()`), hiding inputs per `mask`; `mc_passes > 0` adds that many MC-dropout
/// passes of the any logit.
pub fn score(
    net: &HemorrhageNet,
    samples: &[StudySample],
    idx: &[usize],
    batch: usize,
    mask: InputMask,
    mc_passes: usize,
    device: &Device,
) -> Vec<StudyScores> {
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(batch.max(1)) {
        let refs: Vec<&StudySample> = chunk.iter().map(|&i| &samples[i]).collect();
        let b = refs.len();
        let input = make_batch(&refs, None, mask, device);
        // The CNN runs once per batch; the deterministic and the MC-dropout passes share it.
        let encoded = net.encode(input);
        let o = net.decode(encoded.clone());
        let s = refs[0].shape[0];
        let any = host(o.any_logit.clone());
        let sub = host(o.subtype_cond_logits.clone().reshape([b * 5]));
        let mort = host(o.mortality_logit.clone());
        let mrs = host(o.mrs_logits.clone().reshape([b * 6]));
        let facts = host(o.facts.clone().reshape([b * hn_model::N_FACTS]));
        let slice_all = host(o.probabilities().slices.reshape([b * s * 6]));
        let slice_any: Vec<f64> = (0..b * s).map(|r| slice_all[r * 6]).collect();
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
        let mut mc: Vec<Vec<f64>> = vec![Vec::with_capacity(mc_passes); b];
        for _ in 0..mc_passes {
            let p = host(net.decode_stochastic(encoded.clone()).any_logit);
            for (k, v) in p.into_iter().enumerate() {
                mc[k].push(v);
            }
        }
        let n_heat = hs * hh * hw;
        for k in 0..b {
            let mut sc = [0.0; 5];
            sc.copy_from_slice(&sub[k * 5..k * 5 + 5]);
            let mut ml = [0.0; 6];
            ml.copy_from_slice(&mrs[k * 6..k * 6 + 6]);
            out.push(StudyScores {
                any_logit: any[k],
                subtype_cond_logits: sc,
                mortality_logit: mort[k],
                mrs_logits: ml,
                slice_any: slice_any[k * s..(k + 1) * s].to_vec(),
                slice_probs: (0..s)
                    .map(|q| {
                        let mut r = [0.0; 6];
                        r.copy_from_slice(&slice_all[(k * s + q) * 6..(k * s + q) * 6 + 6]);
                        r
                    })
                    .collect(),
                mc_any_logits: std::mem::take(&mut mc[k]),
                feature_gates: gates[k * f..(k + 1) * f].to_vec(),
                heatmap: heat[k * n_heat..(k + 1) * n_heat].to_vec(),
                facts: std::array::from_fn(|j| facts[k * hn_model::N_FACTS + j] as f32),
            });
        }
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
    pub fn p_subtypes(&self, t_any: f64, t_sub: f64) -> [f64; 5] {
        let pa = self.p_any(t_any);
        let mut p = [0.0; 5];
        for (j, v) in p.iter_mut().enumerate() {
            *v = pa * sigmoid(self.subtype_cond_logits[j] / t_sub);
        }
        p
    }

    /// `[any, 5 subtypes]` calibrated.
    pub fn detection_row(&self, t_any: f64, t_sub: f64) -> [f64; 6] {
        let mut r = [0.0; 6];
        r[0] = self.p_any(t_any);
        r[1..].copy_from_slice(&self.p_subtypes(t_any, t_sub));
        r
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
    pub fn slice_max(&self) -> [f64; 6] {
        let mut m = [0.0f64; 6];
        for r in &self.slice_probs {
            for j in 0..6 {
                m[j] = m[j].max(r[j]);
            }
        }
        m
    }

    /// P(mRS ≥ 4) (poor 90-day outcome) at temperature `t`.
    pub fn p_poor_outcome(&self, t: f64) -> f64 {
        sigmoid(self.mrs_logits[3] / t)
    }

    /// Predictive entropy (nats) of the MC-averaged calibrated P(any); falls back to the
    /// deterministic probability's entropy when no passes were run.
    pub fn any_predictive_entropy(&self, t: f64) -> f64 {
        let p = if self.mc_any_logits.is_empty() {
            self.p_any(t)
        } else {
            self.mc_any_logits
                .iter()
                .map(|z| sigmoid(z / t))
                .sum::<f64>()
                / self.mc_any_logits.len() as f64
        };
        crate::metrics::binary_entropy(p)
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
