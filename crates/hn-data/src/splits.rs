//! Patient-level splits (train/validation/test and k-fold) and the stable shard assignment used
//! by distributed prediction.
//!
//! Every study of a patient lands in the same split. Patients are stratified by any-bleed and,
//! where known, by the binary outcome (30-day mortality); the assignment is a deterministic
//! function of the patient keys, their strata and the seed (patients are sorted by key before a
//! seeded ChaCha8 shuffle, so input order does not matter).

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layouts::StudyIndex;

/// Which split a study belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    /// Name as serialised (`train`, `validation`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// One study as the splitter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitItem {
    pub patient_key: String,
    /// Any bleed on this study, when labelled.
    pub any_bleed: Option<bool>,
    /// Binary outcome (e.g. 30-day mortality), when known.
    pub outcome: Option<bool>,
}

impl SplitItem {
    /// Items of every study of an index, in index order (outcome = 30-day mortality).
    pub fn from_index(index: &StudyIndex) -> Vec<SplitItem> {
        index
            .studies
            .iter()
            .map(|s| SplitItem {
                patient_key: s.patient_key.clone(),
                any_bleed: s.labels.map(|l| l.any),
                outcome: s.outcomes.mortality_30d,
            })
            .collect()
    }
}

/// Errors from splitting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    #[error("split fractions {0:?} must be >= 0, finite and sum to 1")]
    BadFractions([f64; 3]),
    #[error("k-fold needs 2 <= k <= number of patients ({patients}), got k = {k}")]
    BadK { k: usize, patients: usize },
    #[error("nothing to split")]
    Empty,
}

/// Patient stratum: (any bleed on any study, outcome on any study); unknowns form their own.
type Stratum = (Option<bool>, Option<bool>);

fn merge(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x || y),
        (x, None) | (None, x) => x,
    }
}

/// Patients grouped by stratum, each group sorted by key then shuffled with the seed.
fn shuffled_strata(items: &[SplitItem], seed: u64) -> Vec<Vec<String>> {
    let mut patients: BTreeMap<&str, Stratum> = BTreeMap::new();
    for it in items {
        let e = patients
            .entry(it.patient_key.as_str())
            .or_insert((it.any_bleed, it.outcome));
        *e = (merge(e.0, it.any_bleed), merge(e.1, it.outcome));
    }
    let mut strata: BTreeMap<Stratum, Vec<String>> = BTreeMap::new();
    for (p, s) in patients {
        strata.entry(s).or_default().push(p.to_string());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    strata
        .into_values()
        .map(|mut v| {
            v.shuffle(&mut rng);
            v
        })
        .collect()
}

/// Stratified patient-level train/validation/test split. `fractions = [train, val, test]`
/// (summing to 1). Within each stratum the first `round(n·train)` shuffled patients go to train,
/// the next `round(n·(train+val)) − round(n·train)` to validation, the rest to test. Returns the
/// split of every item, in item order.
pub fn patient_split(
    items: &[SplitItem],
    fractions: [f64; 3],
    seed: u64,
) -> Result<Vec<Split>, SplitError> {
    if fractions.iter().any(|f| !f.is_finite() || *f < 0.0)
        || (fractions.iter().sum::<f64>() - 1.0).abs() > 1e-9
    {
        return Err(SplitError::BadFractions(fractions));
    }
    if items.is_empty() {
        return Err(SplitError::Empty);
    }
    let mut of_patient: BTreeMap<String, Split> = BTreeMap::new();
    for group in shuffled_strata(items, seed) {
        let n = group.len() as f64;
        let n_train = (n * fractions[0]).round() as usize;
        let n_trval = ((n * (fractions[0] + fractions[1])).round() as usize).max(n_train);
        for (i, p) in group.into_iter().enumerate() {
            let s = if i < n_train {
                Split::Train
            } else if i < n_trval {
                Split::Validation
            } else {
                Split::Test
            };
            of_patient.insert(p, s);
        }
    }
    Ok(items.iter().map(|it| of_patient[&it.patient_key]).collect())
}

/// Stratified patient-level k-fold: returns the fold (0..k) of every item, in item order.
/// Patients are dealt round-robin within each stratum, continuing across strata, so fold
/// sizes differ by at most one patient.
pub fn kfold(items: &[SplitItem], k: usize, seed: u64) -> Result<Vec<usize>, SplitError> {
    let strata = shuffled_strata(items, seed);
    let patients: usize = strata.iter().map(Vec::len).sum();
    if k < 2 || k > patients {
        return Err(SplitError::BadK { k, patients });
    }
    let mut of_patient: BTreeMap<String, usize> = BTreeMap::new();
    let mut next = 0;
    for group in strata {
        for p in group {
            of_patient.insert(p, next % k);
            next += 1;
        }
    }
    Ok(items.iter().map(|it| of_patient[&it.patient_key]).collect())
}

/// Stable shard of a study key for distributed prediction: the first 8 bytes of
/// SHA-256(key as UTF-8), read big-endian, modulo `count`. Independent of platform, Rust
/// version and process (unlike `std`'s `DefaultHasher`). `count = 0` is treated as 1.
pub fn shard_of(key: &str, count: u32) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    #[test]
    fn split_names_are_the_serialised_values() {
        for s in [Split::Train, Split::Validation, Split::Test] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.name())
            );
        }
    }

    /// 300 patients, 1-3 studies each; 30 % bleed, 20 % of known outcomes fatal.
    fn cohort() -> Vec<SplitItem> {
        let mut v = Vec::new();
        for p in 0..300 {
            for s in 0..(1 + p % 3) {
                v.push(SplitItem {
                    patient_key: format!("P{p:03}"),
                    any_bleed: Some(p % 10 < 3 && s == 0),
                    outcome: if p % 7 == 0 { None } else { Some(p % 5 == 0) },
                });
            }
        }
        v
    }

    #[test]
    fn no_patient_in_two_splits() {
        let items = cohort();
        let s = patient_split(&items, [0.7, 0.15, 0.15], 1).unwrap();
        let mut seen: HashMap<&str, Split> = HashMap::new();
        for (it, sp) in items.iter().zip(&s) {
            let prev = seen.insert(&it.patient_key, *sp);
            assert!(
                prev.is_none() || prev == Some(*sp),
                "{} split",
                it.patient_key
            );
        }
        // Proportions of patients.
        let count = |x: Split| seen.values().filter(|v| **v == x).count();
        assert!((count(Split::Train) as i64 - 210).abs() <= 4);
        assert!((count(Split::Validation) as i64 - 45).abs() <= 4);
        assert!((count(Split::Test) as i64 - 45).abs() <= 4);
    }

    #[test]
    fn stratified_by_bleed() {
        let items = cohort();
        let s = patient_split(&items, [0.6, 0.2, 0.2], 3).unwrap();
        for split in [Split::Train, Split::Validation, Split::Test] {
            let pats: BTreeSet<(&str, bool)> = items
                .iter()
                .zip(&s)
                .filter(|(_, sp)| **sp == split)
                .map(|(it, _)| (it.patient_key.as_str(), it.any_bleed == Some(true)))
                .filter(|(_, b)| *b)
                .collect();
            let total: BTreeSet<&str> = items
                .iter()
                .zip(&s)
                .filter(|(_, sp)| **sp == split)
                .map(|(it, _)| it.patient_key.as_str())
                .collect();
            let rate = pats.len() as f64 / total.len() as f64;
            assert!((rate - 0.3).abs() < 0.03, "{split:?}: bleed rate {rate}");
        }
    }

    #[test]
    fn stratified_by_outcome() {
        let items = cohort();
        let s = patient_split(&items, [0.5, 0.25, 0.25], 5).unwrap();
        let mut rates = Vec::new();
        for split in [Split::Train, Split::Validation, Split::Test] {
            let pats: BTreeSet<(&str, Option<bool>)> = items
                .iter()
                .zip(&s)
                .filter(|(it, sp)| **sp == split && it.outcome.is_some())
                .map(|(it, _)| (it.patient_key.as_str(), it.outcome))
                .collect();
            let fatal = pats.iter().filter(|(_, o)| *o == Some(true)).count();
            rates.push(fatal as f64 / pats.len() as f64);
        }
        // 51 of 257 patients with a known outcome are fatal (19.8 %).
        for r in &rates {
            assert!((r - 51.0 / 257.0).abs() < 0.04, "{rates:?}");
        }
    }

    #[test]
    fn items_from_index() {
        use crate::layouts::{DatasetKind, StudyIndex, StudyRecord, StudySource};
        let rec = |k: &str, p: &str, any: Option<bool>, dead: Option<bool>| StudyRecord {
            key: k.into(),
            patient_key: p.into(),
            source: StudySource::Nifti {
                path: "x.nii".into(),
                mask: None,
            },
            labels: any.map(|a| crate::StudyLabels {
                any: a,
                subtypes: [false; 5],
            }),
            slice_labels: None,
            clinical: Default::default(),
            outcomes: crate::Outcomes {
                mortality_30d: dead,
                mrs_90d: None,
            },
            notes: vec![],
        };
        let idx = StudyIndex {
            dataset: DatasetKind::Manifest,
            root: ".".into(),
            studies: vec![
                rec("s1", "p1", Some(true), None),
                rec("s2", "p1", None, Some(false)),
            ],
            warnings: vec![],
        };
        let items = SplitItem::from_index(&idx);
        assert_eq!(items[0].any_bleed, Some(true));
        assert_eq!(items[1].outcome, Some(false));
        let s = patient_split(&items, [0.5, 0.5, 0.0], 1).unwrap();
        assert_eq!(s[0], s[1]);
    }

    #[test]
    fn seeded_and_order_independent() {
        let items = cohort();
        let a = patient_split(&items, [0.7, 0.15, 0.15], 42).unwrap();
        let b = patient_split(&items, [0.7, 0.15, 0.15], 42).unwrap();
        let c = patient_split(&items, [0.7, 0.15, 0.15], 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut rev = items.clone();
        rev.reverse();
        let mut r = patient_split(&rev, [0.7, 0.15, 0.15], 42).unwrap();
        r.reverse();
        assert_eq!(a, r);
        assert!(patient_split(&items, [0.7, 0.2, 0.2], 1).is_err());
        assert!(patient_split(&[], [1.0, 0.0, 0.0], 1).is_err());
    }

    #[test]
    fn kfold_partitions_patients() {
        let items = cohort();
        let f = kfold(&items, 5, 9).unwrap();
        let mut of: HashMap<&str, usize> = HashMap::new();
        for (it, k) in items.iter().zip(&f) {
            assert!(*k < 5);
            let prev = of.insert(&it.patient_key, *k);
            assert!(prev.is_none() || prev == Some(*k));
        }
        let mut sizes = [0; 5];
        for k in of.values() {
            sizes[*k] += 1;
        }
        assert_eq!(sizes, [60; 5]);
        assert!(kfold(&items, 1, 9).is_err());
        assert!(kfold(&items[..2], 3, 9).is_err());
    }

    #[test]
    fn shard_of_is_stable() {
        // python3: int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") % n
        assert_eq!(shard_of("CQ500-CT-1", 8), 4);
        assert_eq!(shard_of("ID_0002081b6", 16), 12);
        assert_eq!(shard_of("", 1000), 652);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
        // Roughly uniform.
        let mut c = [0; 4];
        for i in 0..4000 {
            c[shard_of(&format!("study-{i}"), 4) as usize] += 1;
        }
        assert!(c.iter().all(|n| (900..1100).contains(n)), "{c:?}");
    }
}
