//! CQ500 layout (qure.ai head CT).
//!
//! ```text
//! root/
//!   reads.csv     name,Category,R1:ICH,R1:IPH,R1:IVH,R1:SDH,R1:EDH,R1:SAH,...,R2:...,R3:...
//!   CQ500CT<N> CQ500CT<N>/Unknown Study/CT <series description>/*.dcm
//! ```
//! Study folders (found up to two levels below the root, so an extra top folder from unzipping
//! is fine) map to the key `CQ500-CT-<N>`, the form used in `reads.csv`. Labels are the
//! majority vote of the three readers (a finding is positive when more than half of the readers
//! that gave a value marked it); `any` is the vote on `ICH`, or-ed with any positive subtype
//! vote. All DICOM files of a study are listed; choosing the series is left to the reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    CsvTable, DatasetKind, LayoutError, StudyIndex, StudyRecord, StudySource, looks_like_dicom,
    walk_files,
};
use crate::{ClinicalRecord, Outcomes, StudyLabels, Subtype};

/// CQ500 finding columns and the subtype they stand for (`None` = any ICH).
pub const FINDINGS: [(&str, Option<Subtype>); 6] = [
    ("ICH", None),
    ("EDH", Some(Subtype::Epidural)),
    ("SDH", Some(Subtype::Subdural)),
    ("SAH", Some(Subtype::Subarachnoid)),
    ("IPH", Some(Subtype::Intraparenchymal)),
    ("IVH", Some(Subtype::Intraventricular)),
];

/// `CQ500-CT-<N>` from `CQ500CT<N>...` (folder) or `CQ500-CT-<N>` (reads.csv); `None` otherwise.
pub fn study_key(name: &str) -> Option<String> {
    let rest = name
        .strip_prefix("CQ500-CT-")
        .or_else(|| name.strip_prefix("CQ500CT"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n: u32 = digits.parse().ok()?;
    let tail = &rest[digits.len()..];
    // Folder names are `CQ500CT<N> CQ500CT<N>`; anything else after the number is not ours.
    if !(tail.is_empty() || tail.starts_with(' ')) {
        return None;
    }
    Some(format!("CQ500-CT-{n}"))
}

/// Majority vote over readers: positive when more than half of the given votes are positive.
pub fn majority(votes: &[Option<bool>]) -> Option<bool> {
    let given: Vec<bool> = votes.iter().flatten().copied().collect();
    if given.is_empty() {
        return None;
    }
    Some(given.iter().filter(|v| **v).count() * 2 > given.len())
}

/// Labels per study key from `reads.csv`.
pub fn read_reads_csv(path: &Path) -> Result<BTreeMap<String, StudyLabels>, LayoutError> {
    let mut t = CsvTable::open(path)?;
    let name_col = t.require("name")?;
    let mut cols = Vec::new(); // [finding][reader] -> column
    for (f, _) in FINDINGS {
        let per_reader: Vec<usize> = (1..=3)
            .filter_map(|r| t.column(&format!("R{r}:{f}")))
            .collect();
        if per_reader.is_empty() {
            t.require(&format!("R1:{f}"))?;
        }
        cols.push(per_reader);
    }
    let mut out = BTreeMap::new();
    t.for_each(|row| {
        let name = row.get(name_col);
        let key = study_key(name)
            .ok_or_else(|| row.err(name_col, format!("`{name}` is not CQ500-CT-<N>")))?;
        let mut votes = [None; 6];
        for (i, c) in cols.iter().enumerate() {
            let v = c
                .iter()
                .map(|&c| row.opt_bool(c))
                .collect::<Result<Vec<_>, _>>()?;
            votes[i] = majority(&v);
        }
        if votes.iter().all(Option::is_none) {
            return Err(row.err(name_col, "no reader gave any finding"));
        }
        let mut l = StudyLabels::default();
        for (i, (_, sub)) in FINDINGS.iter().enumerate() {
            if let Some(s) = sub {
                l.subtypes[s.index()] = votes[i] == Some(true);
            }
        }
        l.any = votes[0] == Some(true) || l.subtypes.iter().any(|b| *b);
        if out.insert(key.clone(), l).is_some() {
            return Err(row.err(name_col, format!("duplicate row for {key}")));
        }
        Ok(())
    })?;
    Ok(out)
}

fn find_study_dirs(
    root: &Path,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), LayoutError> {
    for entry in std::fs::read_dir(root).map_err(|e| LayoutError::io(root, e))? {
        let entry = entry.map_err(|e| LayoutError::io(root, e))?;
        let p = entry.path();
        if !p.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(key) = study_key(&name) {
            out.push((key, p));
        } else if depth > 0 {
            find_study_dirs(&p, depth - 1, out)?;
        }
    }
    Ok(())
}

/// Index a CQ500 folder (`reads.csv` in the root).
pub fn load(root: &Path) -> Result<StudyIndex, LayoutError> {
    let reads_path = root.join("reads.csv");
    let reads = read_reads_csv(&reads_path)?;
    let mut dirs = Vec::new();
    find_study_dirs(root, 2, &mut dirs)?;
    dirs.sort();
    let mut warnings = Vec::new();
    let mut studies: Vec<StudyRecord> = Vec::new();
    for (key, dir) in dirs {
        if studies.iter().any(|s| s.key == key) {
            return Err(LayoutError::layout(
                &dir,
                format!("a second folder for {key}"),
            ));
        }
        let files = walk_files(&dir, &looks_like_dicom)?;
        if files.is_empty() {
            warnings.push(format!("{}: no DICOM files, skipped", dir.display()));
            continue;
        }
        let mut series: Vec<String> = files
            .iter()
            .filter_map(|f| f.parent()?.file_name()?.to_str().map(str::to_string))
            .collect();
        series.dedup();
        let mut notes = vec![format!(
            "{} series folders: {}",
            series.len(),
            series.join("; ")
        )];
        let labels = reads.get(&key).copied();
        if labels.is_none() {
            notes.push("no row in reads.csv".into());
        }
        studies.push(StudyRecord {
            patient_key: key.clone(),
            key,
            source: StudySource::Dicom {
                files,
                series_uid: None,
                rsna_fix: false,
            },
            labels,
            slice_labels: None,
            clinical: ClinicalRecord::default(),
            outcomes: Outcomes::default(),
            notes,
        });
    }
    let missing = reads
        .keys()
        .filter(|k| !studies.iter().any(|s| &s.key == *k))
        .count();
    if missing > 0 {
        warnings.push(format!(
            "{}: {missing} rows have no study folder under {}",
            reads_path.display(),
            root.display()
        ));
    }
    Ok(StudyIndex {
        dataset: DatasetKind::Cq500,
        root: root.to_path_buf(),
        studies,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_votes() {
        assert_eq!(
            study_key("CQ500CT427 CQ500CT427").as_deref(),
            Some("CQ500-CT-427")
        );
        assert_eq!(study_key("CQ500-CT-0").as_deref(), Some("CQ500-CT-0"));
        assert_eq!(study_key("CQ500CT12x"), None);
        assert_eq!(study_key("other"), None);
        assert_eq!(majority(&[Some(true), Some(true), Some(false)]), Some(true));
        assert_eq!(
            majority(&[Some(true), Some(false), Some(false)]),
            Some(false)
        );
        assert_eq!(majority(&[Some(true), None, Some(false)]), Some(false));
        assert_eq!(majority(&[None, None, None]), None);
    }
}
