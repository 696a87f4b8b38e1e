//! The clinical schema: which clinical variables HemorrhageNet uses, their kinds and units.
//!
//! Every value is optional: real records have gaps, and the model receives an explicit
//! missing-indicator per feature instead of a silently imputed value.

use serde::{Deserialize, Serialize};

/// How a feature is encoded for the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum FeatureKind {
    /// Continuous value; standardised with `(x - center) / scale`.
    Numeric { center: f32, scale: f32 },
    /// 0/1 flag.
    Binary,
    /// Integer category `0..n`.
    Categorical { n: u8 },
}

/// One clinical feature of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClinicalFeature {
    /// Column name in `clinical.csv` and in reports.
    pub name: &'static str,
    pub kind: FeatureKind,
    /// Unit or value meaning, for reports and docs.
    pub unit: &'static str,
}

const fn num(name: &'static str, center: f32, scale: f32, unit: &'static str) -> ClinicalFeature {
    ClinicalFeature {
        name,
        kind: FeatureKind::Numeric { center, scale },
        unit,
    }
}

const fn bin(name: &'static str, unit: &'static str) -> ClinicalFeature {
    ClinicalFeature {
        name,
        kind: FeatureKind::Binary,
        unit,
    }
}

/// The features, in the order of [`ClinicalRecord::values`] and of the model's clinical input.
pub const CLINICAL_FEATURES: [ClinicalFeature; 16] = [
    num("age", 65.0, 15.0, "years"),
    bin("sex_male", "1 = male"),
    num("gcs", 12.0, 3.5, "Glasgow Coma Scale 3-15"),
    num("nihss", 10.0, 8.0, "NIH Stroke Scale 0-42"),
    num("sbp", 160.0, 30.0, "systolic BP, mmHg"),
    num("dbp", 90.0, 15.0, "diastolic BP, mmHg"),
    num("glucose", 7.5, 2.5, "mmol/L"),
    num("inr", 1.2, 0.5, "INR"),
    bin("anticoagulant", "1 = on oral anticoagulation"),
    num("platelets", 230.0, 70.0, "10^9/L"),
    bin("hypertension", "1 = history of hypertension"),
    bin("diabetes", "1 = diabetes"),
    bin("prior_stroke", "1 = prior stroke"),
    ClinicalFeature {
        name: "premorbid_mrs",
        kind: FeatureKind::Categorical { n: 6 },
        unit: "pre-ICH modified Rankin Scale 0-5",
    },
    num("onset_hours", 4.0, 4.0, "hours from symptom onset to scan"),
    bin("antiplatelet", "1 = on antiplatelet therapy"),
];

/// Number of clinical features.
pub const N_CLINICAL: usize = CLINICAL_FEATURES.len();

/// Glasgow Coma Scale.
pub const GCS_RANGE: std::ops::RangeInclusive<u8> = 3..=15;
/// NIH Stroke Scale.
pub const NIHSS_RANGE: std::ops::RangeInclusive<u8> = 0..=42;
/// Pre-ICH modified Rankin Scale (6, death, cannot precede the bleed).
pub const PREMORBID_MRS_RANGE: std::ops::RangeInclusive<u8> = 0..=5;
/// Modified Rankin Scale as an outcome (6 = dead).
pub const MRS_RANGE: std::ops::RangeInclusive<u8> = 0..=6;

/// Cell spellings that mean "not recorded" in every CSV we read (compared trimmed and
/// case-insensitively): the empty cell and the usual NA markers.
pub const MISSING_TOKENS: [&str; 5] = ["", "na", "n/a", "nan", "null"];

/// A CSV cell as a boolean: `1/0`, `1.0/0.0`, `true/false`, `yes/no`, `y/n` (any case);
/// `Ok(None)` for a [missing](is_missing_token) cell. The error says what was found.
pub fn parse_bool_token(cell: &str) -> Result<Option<bool>, String> {
    if is_missing_token(cell) {
        return Ok(None);
    }
    match cell.trim().to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" | "yes" | "y" => Ok(Some(true)),
        "0" | "0.0" | "false" | "no" | "n" => Ok(Some(false)),
        other => Err(format!(
            "`{other}` is not a boolean (0/1, true/false, yes/no)"
        )),
    }
}

/// True when `cell` is one of [`MISSING_TOKENS`].
pub fn is_missing_token(cell: &str) -> bool {
    let c = cell.trim();
    MISSING_TOKENS.iter().any(|t| c.eq_ignore_ascii_case(t))
}

/// One patient's clinical record. `None` = not recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClinicalRecord {
    pub age: Option<f32>,
    pub sex_male: Option<bool>,
    pub gcs: Option<u8>,
    pub nihss: Option<u8>,
    pub sbp: Option<f32>,
    pub dbp: Option<f32>,
    pub glucose: Option<f32>,
    pub inr: Option<f32>,
    pub anticoagulant: Option<bool>,
    pub platelets: Option<f32>,
    pub hypertension: Option<bool>,
    pub diabetes: Option<bool>,
    pub prior_stroke: Option<bool>,
    pub premorbid_mrs: Option<u8>,
    pub onset_hours: Option<f32>,
    pub antiplatelet: Option<bool>,
}

impl ClinicalRecord {
    /// Check the scored features against their ranges ([`GCS_RANGE`], [`NIHSS_RANGE`],
    /// [`PREMORBID_MRS_RANGE`]) and every value for finiteness; the message names the feature.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v, range) in [
            ("gcs", self.gcs, GCS_RANGE),
            ("nihss", self.nihss, NIHSS_RANGE),
            ("premorbid_mrs", self.premorbid_mrs, PREMORBID_MRS_RANGE),
        ] {
            if let Some(x) = v
                && !range.contains(&x)
            {
                return Err(format!(
                    "{name} {x} is outside {}..={}",
                    range.start(),
                    range.end()
                ));
            }
        }
        for (v, f) in self.values().iter().zip(CLINICAL_FEATURES.iter()) {
            if let Some(x) = v
                && !x.is_finite()
            {
                return Err(format!("{} is not finite", f.name));
            }
        }
        Ok(())
    }

    /// Raw values in [`CLINICAL_FEATURES`] order (booleans as 0/1), `None` where missing.
    pub fn values(&self) -> [Option<f32>; N_CLINICAL] {
        let b = |v: Option<bool>| v.map(|x| if x { 1.0 } else { 0.0 });
        [
            self.age,
            b(self.sex_male),
            self.gcs.map(f32::from),
            self.nihss.map(f32::from),
            self.sbp,
            self.dbp,
            self.glucose,
            self.inr,
            b(self.anticoagulant),
            self.platelets,
            b(self.hypertension),
            b(self.diabetes),
            b(self.prior_stroke),
            self.premorbid_mrs.map(f32::from),
            self.onset_hours,
            b(self.antiplatelet),
        ]
    }

    /// Model encoding: `(values, present)`; numeric features standardised, missing values 0
    /// with `present = 0` so the model can tell "missing" from "zero".
    pub fn encode(&self) -> ([f32; N_CLINICAL], [f32; N_CLINICAL]) {
        let mut x = [0.0; N_CLINICAL];
        let mut m = [0.0; N_CLINICAL];
        for (idx, (v, f)) in self
            .values()
            .iter()
            .zip(CLINICAL_FEATURES.iter())
            .enumerate()
        {
            if let Some(v) = v {
                m[idx] = 1.0;
                x[idx] = match f.kind {
                    FeatureKind::Numeric { center, scale } => (v - center) / scale,
                    FeatureKind::Binary => *v,
                    FeatureKind::Categorical { n } => *v / f32::from(n.max(1) - 1).max(1.0),
                };
            }
        }
        (x, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_are_flagged_not_imputed() {
        let r = ClinicalRecord {
            age: Some(80.0),
            gcs: None,
            ..Default::default()
        };
        let (x, m) = r.encode();
        assert_eq!(m[0], 1.0);
        assert!((x[0] - 1.0).abs() < 1e-6);
        assert_eq!(m[2], 0.0);
        assert_eq!(x[2], 0.0);
    }
}
