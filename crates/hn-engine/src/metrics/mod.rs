//! Evaluation metrics on plain `f64` slices (no ML framework).
//!
//! Conventions, shared by every function here:
//! - `scores`/`probs` are the model's outputs for the positive class, `labels` the truth;
//! - a case is *predicted positive* when `score >= threshold`;
//! - inputs must be the same length, non-empty and finite, else [`MetricsError`];
//! - metrics that need both classes (AUC, Youden, ...) return [`MetricsError::SingleClass`]
//!   rather than a made-up number.
//!
//! These are hand-written because each is a few lines of arithmetic and the reference values in
//! the tests come from scikit-learn (snippets in the test comments); pulling an ML crate for them
//! would add a large dependency for no gain.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

mod discrimination;
pub use discrimination::*;
mod calibration;
pub use calibration::*;
mod referral;
pub use referral::*;
#[cfg(test)]
mod serde_tests;
#[cfg(test)]
mod tests;

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("{what}: length mismatch ({a} vs {b})")]
    LengthMismatch {
        what: &'static str,
        a: usize,
        b: usize,
    },
    #[error("{0}: no cases")]
    Empty(&'static str),
    #[error("{0}: needs both positive and negative cases")]
    SingleClass(&'static str),
    #[error("{what}: non-finite value at index {index}")]
    NonFinite { what: &'static str, index: usize },
    #[error("{what}: value {value} at index {index} is outside [0, 1]")]
    NotProbability {
        what: &'static str,
        index: usize,
        value: f64,
    },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, MetricsError>;

/// Serde for `f64` fields that may be NaN ("undefined"): written as JSON `null`, read back
/// from `null` as NaN (serde_json alone writes NaN as `null` but cannot read it back).
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// Serde for `f64` fields that may be ±∞ (e.g. "refer everything"): infinities are written as
/// the strings `"inf"` / `"-inf"` (JSON has no infinity) and read back from either form.
pub mod float_or_inf {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(D::Error::custom(format!(
                    "expected a number, \"inf\" or \"-inf\", got {other:?}"
                ))),
            },
        }
    }
}

fn check(what: &'static str, scores: &[f64], labels: &[bool]) -> Result<()> {
    if scores.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            what,
            a: scores.len(),
            b: labels.len(),
        });
    }
    if scores.is_empty() {
        return Err(MetricsError::Empty(what));
    }
    if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
        return Err(MetricsError::NonFinite { what, index });
    }
    Ok(())
}

fn check_probs(what: &'static str, probs: &[f64], labels: &[bool]) -> Result<()> {
    check(what, probs, labels)?;
    if let Some(index) = probs.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(MetricsError::NotProbability {
            what,
            index,
            value: probs[index],
        });
    }
    Ok(())
}

fn class_counts(labels: &[bool]) -> (usize, usize) {
    let pos = labels.iter().filter(|l| **l).count();
    (pos, labels.len() - pos)
}

/// How well the hematoma-facts read-out agrees with the known facts (synthetic truth) on a set
/// of studies. Stored in the card (validation) when the model was trained with facts targets;
/// `predict` and the model-estimated ICH score use the read-out only then.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FactsAgreement {
    /// Studies with known facts.
    pub n: usize,
    /// Mean absolute error of the hematoma volume outside the ventricles (mL).
    pub hematoma_ml_mae: f64,
    /// Mean absolute error of the intraventricular volume (mL).
    pub intraventricular_ml_mae: f64,
    /// Fraction of studies on the right side of the ICH score's 30 mL cut.
    pub volume_cut_accuracy: f64,
    /// AUC of P(infratentorial) (null with a single class).
    pub infratentorial_auc: Option<f64>,
}
