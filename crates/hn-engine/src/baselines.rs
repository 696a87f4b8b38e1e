//! Clinical baselines the network is compared with: the ICH score, a clinical-only logistic
//! regression, and hematoma volume (ABC/2 and voxel count).
//!
//! The logistic regression is hand-written (IRLS with a Cholesky solve, ~33 columns): it is
//! small, deterministic and avoids an ML or linear-algebra dependency for one baseline.

use hn_data::{CLINICAL_FEATURES, ClinicalRecord};
use serde::{Deserialize, Serialize};

/// Why a baseline could not be computed or fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    IchScore(#[from] hn_data::ich::IchScoreError),
    #[error("{what} must be finite and >= 0, got {value}")]
    BadValue { what: &'static str, value: f64 },
    #[error("{0}")]
    Invalid(String),
    #[error("logistic regression: Hessian not positive definite (use l2 > 0)")]
    Singular,
}

pub use hn_data::ich::{
    HEMPHILL_30D_MORTALITY as ICH_SCORE_MORTALITY, IchImageFacts, ich_score, ich_score_mortality,
};

/// ICH score from a clinical record; `Ok(None)` when GCS or age is missing (the score is then
/// undefined, and evaluation reports it on the subset where it is defined).
pub fn ich_score_from_record(
    rec: &ClinicalRecord,
    facts: &IchImageFacts,
) -> Result<Option<u8>, BaselineError> {
    match (rec.gcs, rec.age) {
        (Some(g), Some(a)) => Ok(Some(ich_score(g, f64::from(a), facts)?)),
        _ => Ok(None),
    }
}

/// Hematoma volume in mL from a voxel count: `count · sx · sy · sz / 1000`.
pub fn voxel_volume_ml(mask: &[bool], spacing_mm: [f64; 3]) -> f64 {
    mask.iter().filter(|m| **m).count() as f64 * spacing_mm.iter().product::<f64>() / 1000.0
}

/// Which slices count towards C in [`abc2_volume_ml`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbcSlices {
    /// Kothari et al. 1996: slices with area ≥ 75 % of the largest count 1, 25–75 % count ½,
    /// < 25 % count 0.
    Kothari,
    /// Every slice with any hemorrhage counts 1.
    All,
}

/// A, B, C (mm) and volume of the ABC/2 estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Abc2 {
    pub a_mm: f64,
    pub b_mm: f64,
    pub c_mm: f64,
    pub volume_ml: f64,
}

/// ABC/2 hematoma volume from a binary mask `[nz][ny][nx]` (the [`hn_imaging::Volume`] layout,
/// `dims = [nx, ny, nz]`) and voxel spacing in mm.
///
/// On the axial slice with the largest hemorrhage area, A is the largest diameter (maximum
/// Feret diameter over 1° steps, voxel footprint included) and B the extent perpendicular to
/// it; C is the weighted slice count ([`AbcSlices`]) times the slice spacing. Volume =
/// A·B·C/2 mm³ / 1000. An empty mask gives zeros.
pub fn abc2_volume_ml(
    mask: &[bool],
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    slices: AbcSlices,
) -> Result<Abc2, BaselineError> {
    let [nx, ny, nz] = dims;
    if mask.len() != nx * ny * nz {
        return Err(BaselineError::Invalid(format!(
            "mask has {} voxels but dims {dims:?} need {}",
            mask.len(),
            nx * ny * nz
        )));
    }
    if spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(BaselineError::Invalid(format!(
            "spacing {spacing_mm:?} must be finite and > 0"
        )));
    }
    let plane = nx * ny;
    let areas: Vec<usize> = (0..nz)
        .map(|k| {
            mask[k * plane..(k + 1) * plane]
                .iter()
                .filter(|m| **m)
                .count()
        })
        .collect();
    let Some((kmax, &amax)) = areas
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        .filter(|(_, a)| **a > 0)
    else {
        return Ok(Abc2 {
            a_mm: 0.0,
            b_mm: 0.0,
            c_mm: 0.0,
            volume_ml: 0.0,
        });
    };
    let pts: Vec<(f64, f64)> = (0..plane)
        .filter(|&p| mask[kmax * plane + p])
        .map(|p| {
            (
                (p % nx) as f64 * spacing_mm[0],
                (p / nx) as f64 * spacing_mm[1],
            )
        })
        .collect();
    let extent = |theta: f64| {
        let (c, s) = (theta.cos(), theta.sin());
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (x, y) in &pts {
            let q = x * c + y * s;
            lo = lo.min(q);
            hi = hi.max(q);
        }
        hi - lo + c.abs() * spacing_mm[0] + s.abs() * spacing_mm[1]
    };
    let (mut a_mm, mut a_theta) = (0.0, 0.0);
    for deg in 0..180 {
        let theta = (deg as f64).to_radians();
        let e = extent(theta);
        if e > a_mm {
            a_mm = e;
            a_theta = theta;
        }
    }
    let b_mm = extent(a_theta + std::f64::consts::FRAC_PI_2);
    let weight: f64 = areas
        .iter()
        .map(|&a| {
            let r = a as f64 / amax as f64;
            match slices {
                AbcSlices::All => f64::from(u8::from(a > 0)),
                AbcSlices::Kothari if r >= 0.75 => 1.0,
                AbcSlices::Kothari if r >= 0.25 => 0.5,
                AbcSlices::Kothari => 0.0,
            }
        })
        .sum();
    let c_mm = weight * spacing_mm[2];
    Ok(Abc2 {
        a_mm,
        b_mm,
        c_mm,
        volume_ml: a_mm * b_mm * c_mm / 2.0 / 1000.0,
    })
}

/// Clinical design row: `[x_0..x_15, missing_0..missing_15]` where `x` is
/// [`ClinicalRecord::encode`] (standardised, 0 where missing) and `missing_i = 1` when feature
/// `i` is not recorded. The intercept is kept separately by [`LogisticRegression`].
pub fn clinical_design_row(rec: &ClinicalRecord) -> Vec<f64> {
    let (x, m) = rec.encode();
    x.iter()
        .map(|v| f64::from(*v))
        .chain(m.iter().map(|p| 1.0 - f64::from(*p)))
        .collect()
}

/// Column names of [`clinical_design_row`].
pub fn clinical_design_names() -> Vec<String> {
    CLINICAL_FEATURES
        .iter()
        .map(|f| f.name.to_string())
        .chain(
            CLINICAL_FEATURES
                .iter()
                .map(|f| format!("{}_missing", f.name)),
        )
        .collect()
}

/// L2-regularised logistic regression fitted by IRLS (Newton–Raphson); the intercept is not
/// penalised. Objective: `Σ NLL + (l2 / 2)·‖w‖²`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegression {
    pub intercept: f64,
    pub weights: Vec<f64>,
    pub l2: f64,
    /// Newton iterations used.
    pub iterations: usize,
}

impl LogisticRegression {
    /// Fit on rows `x` (all the same length) and labels `y`.
    pub fn fit(x: &[Vec<f64>], y: &[bool], l2: f64) -> Result<Self, BaselineError> {
        if x.len() != y.len() || x.is_empty() {
            return Err(BaselineError::Invalid(format!(
                "logistic regression: {} rows but {} labels (need > 0)",
                x.len(),
                y.len()
            )));
        }
        if !(l2.is_finite() && l2 >= 0.0) {
            return Err(BaselineError::BadValue {
                what: "l2",
                value: l2,
            });
        }
        let d = x[0].len();
        if let Some(r) = x.iter().position(|r| r.len() != d) {
            return Err(BaselineError::Invalid(format!(
                "logistic regression: row {r} has {} columns, row 0 has {d}",
                x[r].len()
            )));
        }
        if let Some(r) = x.iter().position(|r| r.iter().any(|v| !v.is_finite())) {
            return Err(BaselineError::Invalid(format!(
                "logistic regression: row {r} has a non-finite value"
            )));
        }
        let p = d + 1; // beta[0] = intercept
        let mut beta = vec![0.0; p];
        let mut iterations = 0;
        for it in 0..100 {
            iterations = it + 1;
            let mut g = vec![0.0; p];
            let mut h = vec![vec![0.0; p]; p];
            for (row, &yi) in x.iter().zip(y) {
                let z = beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
                let mu = crate::metrics::sigmoid(z);
                let r = mu - f64::from(u8::from(yi));
                let w = (mu * (1.0 - mu)).max(1e-12);
                let xi = |j: usize| if j == 0 { 1.0 } else { row[j - 1] };
                for a in 0..p {
                    g[a] += r * xi(a);
                    for b in 0..=a {
                        h[a][b] += w * xi(a) * xi(b);
                    }
                }
            }
            for a in 1..p {
                g[a] += l2 * beta[a];
                h[a][a] += l2;
            }
            for a in 0..p {
                for b in 0..a {
                    h[b][a] = h[a][b];
                }
            }
            let step = cholesky_solve(&h, &g).ok_or(BaselineError::Singular)?;
            let mut max_step: f64 = 0.0;
            for (b, s) in beta.iter_mut().zip(&step) {
                *b -= s;
                max_step = max_step.max(s.abs());
            }
            if max_step < 1e-10 {
                break;
            }
        }
        Ok(LogisticRegression {
            intercept: beta[0],
            weights: beta[1..].to_vec(),
            l2,
            iterations,
        })
    }

    /// Linear predictor (logit) of one row.
    pub fn logit(&self, row: &[f64]) -> f64 {
        self.intercept
            + row
                .iter()
                .zip(&self.weights)
                .map(|(a, b)| a * b)
                .sum::<f64>()
    }

    /// Probability of the positive class for one row.
    pub fn predict_proba(&self, row: &[f64]) -> f64 {
        crate::metrics::sigmoid(self.logit(row))
    }
}

/// Clinical-only baseline: [`LogisticRegression`] on [`clinical_design_row`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClinicalLogistic {
    pub model: LogisticRegression,
    pub columns: Vec<String>,
}

impl ClinicalLogistic {
    /// Fit on clinical records and a binary outcome (e.g. 30-day mortality).
    pub fn fit(records: &[ClinicalRecord], y: &[bool], l2: f64) -> Result<Self, BaselineError> {
        let x: Vec<Vec<f64>> = records.iter().map(clinical_design_row).collect();
        Ok(ClinicalLogistic {
            model: LogisticRegression::fit(&x, y, l2)?,
            columns: clinical_design_names(),
        })
    }

    /// Predicted probability for one record.
    pub fn predict(&self, rec: &ClinicalRecord) -> f64 {
        self.model.predict_proba(&clinical_design_row(rec))
    }
}

/// Solve `A x = b` for symmetric positive definite `A`; `None` when `A` is not SPD.
fn cholesky_solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d.is_nan() || d <= 1e-14 {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    let mut z = vec![0.0; n];
    for i in 0..n {
        z[i] = (b[i] - (0..i).map(|k| l[i][k] * z[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (z[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO: IchImageFacts = IchImageFacts {
        volume_ml: 10.0,
        ivh: false,
        infratentorial: false,
    };

    #[test]
    fn ich_score_components() {
        assert_eq!(ich_score(15, 50.0, &NO).unwrap(), 0);
        assert_eq!(ich_score(13, 50.0, &NO).unwrap(), 0);
        assert_eq!(ich_score(12, 50.0, &NO).unwrap(), 1);
        assert_eq!(ich_score(5, 50.0, &NO).unwrap(), 1);
        assert_eq!(ich_score(4, 50.0, &NO).unwrap(), 2);
        assert_eq!(ich_score(3, 50.0, &NO).unwrap(), 2);
        assert_eq!(ich_score(15, 80.0, &NO).unwrap(), 1);
        assert_eq!(ich_score(15, 79.9, &NO).unwrap(), 0);
        let big = IchImageFacts {
            volume_ml: 30.0,
            ..NO
        };
        assert_eq!(ich_score(15, 50.0, &big).unwrap(), 1);
        let all = IchImageFacts {
            volume_ml: 45.0,
            ivh: true,
            infratentorial: true,
        };
        assert_eq!(ich_score(3, 85.0, &all).unwrap(), 6);
        assert_eq!(
            ich_score(2, 50.0, &NO),
            Err(hn_data::ich::IchScoreError::BadGcs(2))
        );
        assert!(ich_score(15, f64::NAN, &NO).is_err());
    }

    #[test]
    fn ich_score_table_and_record() {
        let table: Vec<f64> = (0..=6).map(ich_score_mortality).collect();
        assert_eq!(table, vec![0.0, 0.13, 0.26, 0.72, 0.97, 1.0, 1.0]);
        let rec = ClinicalRecord {
            gcs: Some(8),
            age: Some(82.0),
            ..Default::default()
        };
        assert_eq!(ich_score_from_record(&rec, &NO).unwrap(), Some(2));
        let missing = ClinicalRecord { gcs: None, ..rec };
        assert_eq!(ich_score_from_record(&missing, &NO).unwrap(), None);
    }

    fn ellipsoid(dims: [usize; 3], sp: [f64; 3], axes: [f64; 3]) -> Vec<bool> {
        let c = dims.map(|d| (d as f64 - 1.0) / 2.0);
        let mut m = vec![false; dims[0] * dims[1] * dims[2]];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let x = (i as f64 - c[0]) * sp[0] / axes[0];
                    let y = (j as f64 - c[1]) * sp[1] / axes[1];
                    let z = (k as f64 - c[2]) * sp[2] / axes[2];
                    m[(k * dims[1] + j) * dims[0] + i] = x * x + y * y + z * z <= 1.0;
                }
            }
        }
        m
    }

    #[test]
    fn volumes_of_an_ellipsoid() {
        // Semi-axes 20 x 10 x 8 mm, 1 mm voxels: exact volume 4/3·π·20·10·8 mm³ = 6.702 mL.
        let dims = [61, 41, 31];
        let sp = [1.0, 1.0, 1.0];
        let m = ellipsoid(dims, sp, [20.0, 10.0, 8.0]);
        let exact = 4.0 / 3.0 * std::f64::consts::PI * 20.0 * 10.0 * 8.0 / 1000.0;
        let vox = voxel_volume_ml(&m, sp);
        assert!((vox - exact).abs() / exact < 0.03, "{vox} vs {exact}");
        let all = abc2_volume_ml(&m, dims, sp, AbcSlices::All).unwrap();
        // A ≈ 41 mm (40 + one voxel), B ≈ 21 mm, C = 17 slices.
        assert!((all.a_mm - 41.0).abs() < 1.0, "{all:?}");
        assert!((all.b_mm - 21.0).abs() < 1.0, "{all:?}");
        assert_eq!(all.c_mm, 17.0);
        assert!((all.volume_ml - exact).abs() / exact < 0.12, "{all:?}");
        // Kothari: |z| <= 4 -> 9 full slices; z = ±5, ±6 -> 4 half slices; C = 11 mm.
        let k = abc2_volume_ml(&m, dims, sp, AbcSlices::Kothari).unwrap();
        assert_eq!(k.c_mm, 11.0);
        // Spacing scales volumes.
        let sp2 = [0.5, 0.5, 2.0];
        assert!((voxel_volume_ml(&m, sp2) - vox * 0.5).abs() < 1e-12);
    }

    #[test]
    fn abc_edge_cases() {
        let e = abc2_volume_ml(&[false; 8], [2, 2, 2], [1.0; 3], AbcSlices::All).unwrap();
        assert_eq!(e.volume_ml, 0.0);
        assert!(abc2_volume_ml(&[false; 7], [2, 2, 2], [1.0; 3], AbcSlices::All).is_err());
        // A single voxel 1x1x5 mm: A = B ≈ 1..√2, C = 5.
        let one = abc2_volume_ml(&[true], [1, 1, 1], [1.0, 1.0, 5.0], AbcSlices::All).unwrap();
        assert!(one.a_mm >= 1.0 && one.a_mm <= 2f64.sqrt() + 1e-9, "{one:?}");
        assert_eq!(one.c_mm, 5.0);
    }

    #[test]
    fn logistic_regression_recovers_weights() {
        // y drawn from a known logistic model on two features, deterministic LCG noise.
        let (w0, w1, w2) = (-0.5, 2.0, -1.0);
        let mut state = 12345u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..4000 {
            let a = rnd() * 4.0 - 2.0;
            let b = rnd() * 4.0 - 2.0;
            let p = crate::metrics::sigmoid(w0 + w1 * a + w2 * b);
            y.push(rnd() < p);
            x.push(vec![a, b]);
        }
        let m = LogisticRegression::fit(&x, &y, 0.0).unwrap();
        assert!((m.intercept - w0).abs() < 0.2, "{m:?}");
        assert!((m.weights[0] - w1).abs() < 0.2, "{m:?}");
        assert!((m.weights[1] - w2).abs() < 0.2, "{m:?}");
        // Strong L2 shrinks the weights.
        let s = LogisticRegression::fit(&x, &y, 1e4).unwrap();
        assert!(s.weights[0].abs() < m.weights[0].abs() / 2.0);
    }

    #[test]
    fn logistic_regression_separable_with_l2_stays_finite() {
        let x = vec![vec![0.0], vec![1.0], vec![2.0], vec![3.0]];
        let y = [false, false, true, true];
        let m = LogisticRegression::fit(&x, &y, 0.1).unwrap();
        assert!(m.weights[0].is_finite() && m.weights[0] > 0.0);
        assert!(m.predict_proba(&[3.0]) > 0.9 && m.predict_proba(&[0.0]) < 0.1);
        assert!(LogisticRegression::fit(&x, &y[..3], 0.1).is_err());
    }

    #[test]
    fn clinical_logistic_uses_missing_indicators() {
        // Outcome = GCS missing. Only the indicator column can explain it.
        let mut recs = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let missing = i % 3 == 0;
            recs.push(ClinicalRecord {
                age: Some(50.0 + (i % 40) as f32),
                gcs: if missing { None } else { Some(14) },
                ..Default::default()
            });
            y.push(missing);
        }
        let m = ClinicalLogistic::fit(&recs, &y, 0.01).unwrap();
        assert_eq!(m.columns.len(), 32);
        assert_eq!(m.columns[16 + 2], "gcs_missing");
        assert!(m.predict(&recs[0]) > 0.9);
        assert!(m.predict(&recs[1]) < 0.1);
    }
}
