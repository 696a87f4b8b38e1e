//! The ICH score (Hemphill et al., Stroke 2001) and its published 30-day mortality: one home
//! for the synthetic generator (whose outcome model is calibrated to it) and the engine's
//! baselines (which score real and synthetic patients with it).

use serde::{Deserialize, Serialize};

/// Image facts the ICH score needs, measured on the CT (by a reader, a mask or the model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IchImageFacts {
    /// Hematoma volume in mL (e.g. by ABC/2).
    pub volume_ml: f64,
    /// Intraventricular extension.
    pub ivh: bool,
    /// Infratentorial origin (brainstem/cerebellum).
    pub infratentorial: bool,
}

/// Why an ICH score could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IchScoreError {
    #[error("GCS {0} is outside 3..=15")]
    BadGcs(u8),
    #[error("{what} must be finite and >= 0, got {value}")]
    BadValue { what: &'static str, value: f64 },
}

/// The ICH score, 0..=6: GCS 3–4 → 2, 5–12 → 1, 13–15 → 0; volume ≥ 30 mL → 1; IVH → 1;
/// infratentorial → 1; age ≥ 80 → 1.
pub fn ich_score(gcs: u8, age_years: f64, facts: &IchImageFacts) -> Result<u8, IchScoreError> {
    if !crate::clinical::GCS_RANGE.contains(&gcs) {
        return Err(IchScoreError::BadGcs(gcs));
    }
    for (what, value) in [("age", age_years), ("volume_ml", facts.volume_ml)] {
        if !value.is_finite() || value < 0.0 {
            return Err(IchScoreError::BadValue { what, value });
        }
    }
    let gcs_pts = match gcs {
        3..=4 => 2,
        5..=12 => 1,
        _ => 0,
    };
    Ok(gcs_pts
        + u8::from(facts.volume_ml >= 30.0)
        + u8::from(facts.ivh)
        + u8::from(facts.infratentorial)
        + u8::from(age_years >= 80.0))
}

/// 30-day mortality by ICH score in Hemphill 2001 (scores 0..=5: 0, 13, 26, 72, 97, 100 %);
/// no patient scored 6 there, and 6 is mapped to 100 % like 5.
pub const HEMPHILL_30D_MORTALITY: [f64; 7] = [0.0, 0.13, 0.26, 0.72, 0.97, 1.0, 1.0];

/// Published 30-day mortality probability for an ICH score (scores above 6 clamp to 6).
pub fn ich_score_mortality(score: u8) -> f64 {
    HEMPHILL_30D_MORTALITY[usize::from(score.min(6))]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO: IchImageFacts = IchImageFacts {
        volume_ml: 0.0,
        ivh: false,
        infratentorial: false,
    };

    #[test]
    fn points_follow_hemphill_and_bad_inputs_are_errors() {
        assert_eq!(ich_score(15, 50.0, &NO), Ok(0));
        assert_eq!(ich_score(12, 50.0, &NO), Ok(1));
        assert_eq!(ich_score(4, 50.0, &NO), Ok(2));
        let all = IchImageFacts {
            volume_ml: 30.0,
            ivh: true,
            infratentorial: true,
        };
        assert_eq!(ich_score(3, 80.0, &all), Ok(6));
        assert_eq!(ich_score(2, 50.0, &NO), Err(IchScoreError::BadGcs(2)));
        assert!(ich_score(15, f64::NAN, &NO).is_err());
        assert_eq!(ich_score_mortality(6), 1.0);
        assert_eq!(ich_score_mortality(9), 1.0);
        assert_eq!(ich_score_mortality(2), 0.26);
    }
}
