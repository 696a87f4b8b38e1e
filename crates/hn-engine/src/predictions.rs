//! `predictions.csv`: one row per study that `evaluate` scored, with the calibrated
//! probabilities, review flag and referral uncertainty exactly as `predict` reports them for
//! that study (both go through [`crate::infer::assemble`]'s [`probabilities`] and [`review`]
//! on the same [`StudyScores`]), so a user can check one against the other.
//!
//! [`probabilities`]: crate::infer::assemble::probabilities
//! [`review`]: crate::infer::assemble::review

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::ModelCard;
use crate::infer::assemble;
use crate::scoring::StudyScores;

/// One study's row. Column names are the CSV header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRow {
    pub study_key: String,
    /// The study's split in the dataset (`train`, `validation`, `test`).
    pub split: String,
    pub any: f64,
    pub epidural: f64,
    pub subdural: f64,
    pub subarachnoid: f64,
    pub intraparenchymal: f64,
    pub intraventricular: f64,
    /// Empty when the model's head never learned (`prediction.json`'s `withheld`).
    pub mortality_30d: Option<f64>,
    pub poor_outcome_90d: Option<f64>,
    /// 1 when the study is referred for review.
    pub review_flag: u8,
    /// The card's referral uncertainty measure (nats).
    pub uncertainty: f64,
}

impl PredictionRow {
    /// The row `predict` would report for `sample`'s `scores` under `card` (the review flag
    /// includes the training-envelope check).
    pub fn new(
        split: &str,
        card: &ModelCard,
        sample: &crate::sample::StudySample,
        scores: &StudyScores,
    ) -> Self {
        let key = &sample.key;
        let p = scores.calibrated(&assemble::temperatures(card, sample.modality));
        let gate = assemble::input_gate(card, sample);
        let r =
            assemble::gated_review(card.calibration_for(sample.modality), scores, gate.as_ref());
        let reported = assemble::probabilities(&p, &assemble::withheld(card));
        let [
            epidural,
            subdural,
            subarachnoid,
            intraparenchymal,
            intraventricular,
        ] = p.subtypes;
        PredictionRow {
            study_key: key.to_string(),
            split: split.to_string(),
            any: p.any,
            epidural,
            subdural,
            subarachnoid,
            intraparenchymal,
            intraventricular,
            mortality_30d: reported.mortality_30d,
            poor_outcome_90d: reported.poor_outcome_90d,
            review_flag: u8::from(r.flag),
            uncertainty: r.uncertainty,
        }
    }
}

/// The CSV text of `rows` (header first).
pub fn to_csv(rows: &[PredictionRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner()
        .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))
}

/// Read a `predictions.csv`.
pub fn read_csv(path: &Path) -> Result<Vec<PredictionRow>, csv::Error> {
    csv::Reader::from_path(path)?.deserialize().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_the_documented_columns_and_rows_round_trip() {
        let row = PredictionRow {
            study_key: "s1".into(),
            split: "test".into(),
            any: 0.9,
            epidural: 0.1,
            subdural: 0.2,
            subarachnoid: 0.3,
            intraparenchymal: 0.4,
            intraventricular: 0.5,
            mortality_30d: Some(0.25),
            poor_outcome_90d: Some(0.75),
            review_flag: 1,
            uncertainty: 0.125,
        };
        let bytes = to_csv(std::slice::from_ref(&row)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "study_key,split,any,epidural,subdural,subarachnoid,intraparenchymal,\
             intraventricular,mortality_30d,poor_outcome_90d,review_flag,uncertainty"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("predictions.csv");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(read_csv(&p).unwrap(), vec![row.clone()]);
        // A head that never learned is an empty cell, read back as `None`.
        let unlearned = PredictionRow {
            mortality_30d: None,
            poor_outcome_90d: None,
            ..row
        };
        let text = String::from_utf8(to_csv(std::slice::from_ref(&unlearned)).unwrap()).unwrap();
        assert!(text.lines().nth(1).unwrap().contains(",0.5,,,1,"), "{text}");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(read_csv(&p).unwrap(), vec![unlearned]);
    }
}
