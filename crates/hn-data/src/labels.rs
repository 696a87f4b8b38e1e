//! Hemorrhage labels and outcomes.

use serde::{Deserialize, Serialize};

/// The five intracranial hemorrhage subtypes (RSNA 2019 naming).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subtype {
    Epidural,
    Subdural,
    Subarachnoid,
    Intraparenchymal,
    Intraventricular,
}

/// All subtypes in the fixed order used by label vectors, CSV columns and model heads.
pub const SUBTYPES: [Subtype; 5] = [
    Subtype::Epidural,
    Subtype::Subdural,
    Subtype::Subarachnoid,
    Subtype::Intraparenchymal,
    Subtype::Intraventricular,
];

impl Subtype {
    /// Name as used in RSNA-2019 label IDs (`ID_<slice>_<name>`).
    pub fn rsna_name(self) -> &'static str {
        match self {
            Subtype::Epidural => "epidural",
            Subtype::Subdural => "subdural",
            Subtype::Subarachnoid => "subarachnoid",
            Subtype::Intraparenchymal => "intraparenchymal",
            Subtype::Intraventricular => "intraventricular",
        }
    }

    /// Index in [`SUBTYPES`].
    pub fn index(self) -> usize {
        SUBTYPES
            .iter()
            .position(|s| *s == self)
            .expect("in SUBTYPES")
    }

    /// Parse an RSNA-style name.
    pub fn from_rsna_name(name: &str) -> Option<Self> {
        SUBTYPES.iter().copied().find(|s| s.rsna_name() == name)
    }
}

/// Study-level hemorrhage labels: any bleed plus one flag per subtype (order of [`SUBTYPES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyLabels {
    pub any: bool,
    pub subtypes: [bool; 5],
}

impl StudyLabels {
    /// Labels from a set of present subtypes; `any` is true iff one is present.
    pub fn from_subtypes(present: &[Subtype]) -> Self {
        let mut subtypes = [false; 5];
        for s in present {
            subtypes[s.index()] = true;
        }
        StudyLabels {
            any: subtypes.iter().any(|b| *b),
            subtypes,
        }
    }
}

/// Patient outcomes. Either may be unknown in real data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Death within 30 days.
    pub mortality_30d: Option<bool>,
    /// Modified Rankin Scale at 90 days, 0..=6 (6 = dead).
    pub mrs_90d: Option<u8>,
}

impl Outcomes {
    /// 90-day poor outcome (mRS 4–6), when mRS is known.
    pub fn poor_outcome_90d(&self) -> Option<bool> {
        self.mrs_90d.map(|m| m >= 4)
    }
}
