//! How atypical a study's features are for the model's training data: the Mahalanobis
//! distance of its fused study embedding from the training studies' embeddings, and the
//! policy that refers studies beyond what validation showed. MC-dropout uncertainty says "the
//! model is unsure here"; the distance says "the model has not seen inputs like this", which a
//! confidently wrong answer on a shifted scanner or case mix does not show in its uncertainty.

use serde::{Deserialize, Serialize};

/// Shrinkage of the embedding covariance toward its mean variance (a scaled identity): keeps the
/// inverse defined and stable when the training studies are few for the embedding width.
pub const SHRINKAGE: f64 = 0.1;

/// Fraction of validation studies the distance alone refers: those beyond the validation
/// quantile `1 − DISTANCE_REFERRAL_RATE` of the distance (the rest of the card's referral target
/// is filled by uncertainty; see `train::calibrate`).
pub const DISTANCE_REFERRAL_RATE: f64 = 0.025;

/// A Gaussian model of the training embeddings: mean and shrunk precision matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDensity {
    /// Training studies it was fitted on.
    pub n: usize,
    pub mean: Vec<f64>,
    /// `dim × dim`, row-major: the inverse of the shrunk covariance.
    pub precision: Vec<f64>,
}

impl FeatureDensity {
    /// Fit on `embeddings` (one row per training study, all the same width). `None` with fewer
    /// than two rows, rows of unequal width or non-finite values.
    pub fn fit(embeddings: &[Vec<f32>]) -> Option<Self> {
        let n = embeddings.len();
        let d = embeddings.first()?.len();
        if n < 2 || d == 0 || embeddings.iter().any(|e| e.len() != d) {
            return None;
        }
        if embeddings.iter().flatten().any(|v| !v.is_finite()) {
            return None;
        }
        let mut mean = vec![0f64; d];
        for e in embeddings {
            for (m, &v) in mean.iter_mut().zip(e) {
                *m += f64::from(v) / n as f64;
            }
        }
        let mut cov = vec![0f64; d * d];
        for e in embeddings {
            let c: Vec<f64> = e
                .iter()
                .zip(&mean)
                .map(|(&v, m)| f64::from(v) - m)
                .collect();
            for i in 0..d {
                for j in i..d {
                    cov[i * d + j] += c[i] * c[j] / (n - 1) as f64;
                }
            }
        }
        for i in 0..d {
            for j in 0..i {
                cov[i * d + j] = cov[j * d + i];
            }
        }
        let avg_var = (0..d).map(|i| cov[i * d + i]).sum::<f64>() / d as f64;
        // A floor so that a constant embedding (an untrained or collapsed layer) still inverts.
        let target = avg_var.max(1e-12);
        for i in 0..d {
            for j in 0..d {
                let t = if i == j { target } else { 0.0 };
                cov[i * d + j] = (1.0 - SHRINKAGE) * cov[i * d + j] + SHRINKAGE * t;
            }
        }
        let precision = spd_inverse(&cov, d)?;
        Some(FeatureDensity { n, mean, precision })
    }

    /// Mahalanobis distance of `e` from the training mean (`NaN` for a width mismatch).
    pub fn distance(&self, e: &[f32]) -> f64 {
        let d = self.mean.len();
        if e.len() != d || self.precision.len() != d * d {
            return f64::NAN;
        }
        let c: Vec<f64> = e
            .iter()
            .zip(&self.mean)
            .map(|(&v, m)| f64::from(v) - m)
            .collect();
        let mut q = 0.0;
        for i in 0..d {
            let row = &self.precision[i * d..(i + 1) * d];
            q += c[i] * row.iter().zip(&c).map(|(p, x)| p * x).sum::<f64>();
        }
        q.max(0.0).sqrt()
    }
}

/// The inverse of a symmetric positive definite `d × d` matrix by Cholesky factorisation;
/// `None` when it is not positive definite. Hand-written: one small dense inverse per
/// calibration does not justify a linear-algebra dependency.
fn spd_inverse(a: &[f64], d: usize) -> Option<Vec<f64>> {
    // a = L·Lᵀ, L lower triangular.
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if !(v > 0.0 && v.is_finite()) {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    // Columns of L⁻¹ by forward substitution, then a⁻¹ = L⁻ᵀ·L⁻¹.
    let mut linv = vec![0f64; d * d];
    for c in 0..d {
        for i in c..d {
            let s: f64 = (c..i).map(|k| l[i * d + k] * linv[k * d + c]).sum();
            let rhs = if i == c { 1.0 } else { 0.0 };
            linv[i * d + c] = (rhs - s) / l[i * d + i];
        }
    }
    let mut inv = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let v: f64 = (i.max(j)..d)
                .map(|k| linv[k * d + i] * linv[k * d + j])
                .sum();
            inv[i * d + j] = v;
            inv[j * d + i] = v;
        }
    }
    Some(inv)
}

/// `calibration.distance` in the card: the training density and the distance beyond which a
/// study is referred as atypical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistancePolicy {
    pub density: FeatureDensity,
    /// Refer when the distance is above this (the validation quantile
    /// `1 − DISTANCE_REFERRAL_RATE`).
    pub threshold: f64,
    /// Fraction of validation studies above the threshold.
    pub validation_rate: f64,
}

impl DistancePolicy {
    /// The threshold from the validation studies' distances.
    pub fn fit(density: FeatureDensity, val_distances: &[f64]) -> Option<Self> {
        let mut d: Vec<f64> = val_distances
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if d.is_empty() {
            return None;
        }
        d.sort_by(|a, b| b.total_cmp(a));
        let k = ((DISTANCE_REFERRAL_RATE * d.len() as f64).round() as usize).min(d.len() - 1);
        let threshold = d[k];
        let above = d.iter().filter(|&&v| v > threshold).count();
        Some(DistancePolicy {
            density,
            threshold,
            validation_rate: above as f64 / d.len() as f64,
        })
    }

    /// True when `distance` is beyond the threshold ([`beyond`]).
    pub fn atypical(&self, distance: f64) -> bool {
        beyond(self.threshold, distance)
    }
}

/// The referral rule of a distance: above `threshold`, or not a number (an embedding the
/// density cannot place).
pub fn beyond(threshold: f64, distance: f64) -> bool {
    !distance.is_finite() || distance > threshold
}

/// The distance [`beyond`] `threshold` exactly when `distance` is beyond `own` (its own
/// policy's threshold; `None`: a study whose calibration has no distance policy, never
/// atypical), shifted by the difference of the thresholds: a study of another modality
/// re-expressed on this threshold, so one report can pool both.
pub fn equivalent_distance(distance: f64, own: Option<f64>, threshold: f64) -> f64 {
    let Some(own) = own else {
        return f64::MIN;
    };
    if own == threshold || !distance.is_finite() {
        return distance;
    }
    let v = distance - own + threshold;
    // Rounding must not move a case across the threshold.
    match (beyond(own, distance), beyond(threshold, v)) {
        (true, false) => threshold.next_up(),
        (false, true) => threshold,
        _ => v,
    }
}

/// The share of `reference` values at or below `x` (an empirical CDF; 0 for an empty reference).
fn rank_in(sorted: &[f64], x: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    if x.is_nan() {
        return 1.0;
    }
    sorted.partition_point(|&v| v <= x) as f64 / sorted.len() as f64
}

/// One referral score from uncertainty and distance: the larger of the two validation ranks
/// (each study's uncertainty and distance placed among the validation studies'), so a study is
/// as suspect as its more unusual side. What the report's "combined" referral curve ranks by.
pub fn combined_scores(
    val_uncertainty: &[f64],
    val_distance: &[f64],
    uncertainty: &[f64],
    distance: &[f64],
) -> Vec<f64> {
    let sorted = |v: &[f64]| {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        s.sort_by(f64::total_cmp);
        s
    };
    let (su, sd) = (sorted(val_uncertainty), sorted(val_distance));
    uncertainty
        .iter()
        .zip(distance)
        .map(|(&u, &d)| rank_in(&su, u).max(rank_in(&sd, d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn gaussian(n: usize, d: usize, shift: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|j| {
                        // A correlated pair of coordinates, the rest independent.
                        let z: f32 = (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0;
                        z * if j == 0 { 3.0 } else { 1.0 } + shift
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn combined_score_is_the_larger_validation_rank() {
        let val_u = [0.1, 0.2, 0.3, 0.4];
        let val_d = [1.0, 2.0, 3.0, 4.0];
        let c = combined_scores(&val_u, &val_d, &[0.15, 0.45, 0.15], &[3.5, 0.5, f64::NAN]);
        assert_eq!(c, vec![0.75, 1.0, 1.0]);
    }

    #[test]
    fn inverse_is_an_inverse() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let inv = spd_inverse(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!(
                    (v - f64::from(u8::from(i == j))).abs() < 1e-12,
                    "({i},{j}) {v}"
                );
            }
        }
        assert!(
            spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2).is_none(),
            "indefinite"
        );
    }

    #[test]
    fn distance_separates_shifted_features_and_policy_refers_them() {
        let train = gaussian(400, 8, 0.0, 1);
        let density = FeatureDensity::fit(&train).unwrap();
        let val: Vec<f64> = gaussian(200, 8, 0.0, 2)
            .iter()
            .map(|e| density.distance(e))
            .collect();
        // For 8 standard dimensions the distance is about √8 ≈ 2.8.
        let mean = val.iter().sum::<f64>() / val.len() as f64;
        assert!((2.0..3.6).contains(&mean), "{mean}");
        let policy = DistancePolicy::fit(density.clone(), &val).unwrap();
        assert!((policy.validation_rate - DISTANCE_REFERRAL_RATE).abs() < 0.01);
        // Shifted by 3 standard deviations on every axis: every study referred.
        let far = gaussian(50, 8, 3.0, 3);
        assert!(far.iter().all(|e| policy.atypical(density.distance(e))));
        // The training mean itself is typical; a wrong width is atypical, not a panic.
        let m: Vec<f32> = density.mean.iter().map(|&v| v as f32).collect();
        assert!(!policy.atypical(density.distance(&m)));
        assert!(policy.atypical(density.distance(&[0.0; 3])));
        // A constant embedding still fits (shrinkage floor).
        assert!(FeatureDensity::fit(&vec![vec![1.0f32; 4]; 5]).is_some());
        assert!(FeatureDensity::fit(&[vec![1.0]]).is_none());
    }

    #[test]
    fn a_distance_re_expressed_on_another_threshold_keeps_its_decision() {
        for own in [2.0, 7.5, 7.5_f64.next_up()] {
            for onto in [2.0, 7.5] {
                for d in [0.0, 2.0, 3.0, 7.5, 9.0, f64::NAN, f64::INFINITY] {
                    let v = equivalent_distance(d, Some(own), onto);
                    assert_eq!(beyond(onto, v), beyond(own, d), "{d}: {own} onto {onto}");
                }
            }
        }
        // A study whose calibration has no distance policy is never atypical.
        assert!(!beyond(2.0, equivalent_distance(f64::NAN, None, 2.0)));
    }
}
