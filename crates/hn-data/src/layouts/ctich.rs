//! PhysioNet "Computed Tomography Images for Intracranial Hemorrhage Detection and
//! Segmentation" (CT-ICH) layout.
//!
//! ```text
//! root/
//!   ct_scans/NNN.nii            one volume per patient (also NNN.nii.gz)
//!   masks/NNN.nii               hemorrhage mask, same grid (optional per patient)
//!   hemorrhage_diagnosis_raw_ct.csv
//!       PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,
//!       Subdural,No_Hemorrhage,Fracture_Yes_No
//!   Patient_demographics.csv    optional: patient number, age, gender columns
//! ```
//! Slice labels come from the diagnosis CSV (SliceNumber is 1-based); a slice is `any` when
//! `No_Hemorrhage` is 0 or a subtype is marked. Study labels are the OR over slices. Keys are
//! `CTICH-<NNN>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CsvTable, DatasetKind, LayoutError, SliceLabel, StudyIndex, StudyRecord, StudySource};
use crate::{ClinicalRecord, Outcomes, StudyLabels, Subtype};

/// Subtype columns of the diagnosis CSV.
pub const SUBTYPE_COLUMNS: [(&str, Subtype); 5] = [
    ("Epidural", Subtype::Epidural),
    ("Subdural", Subtype::Subdural),
    ("Subarachnoid", Subtype::Subarachnoid),
    ("Intraparenchymal", Subtype::Intraparenchymal),
    ("Intraventricular", Subtype::Intraventricular),
];

/// Per patient: slice number → labels.
pub fn read_diagnosis_csv(
    path: &Path,
) -> Result<BTreeMap<u32, BTreeMap<u32, StudyLabels>>, LayoutError> {
    let mut t = CsvTable::open(path)?;
    let pcol = t.require("PatientNumber")?;
    let scol = t.require("SliceNumber")?;
    let none_col = t.require("No_Hemorrhage")?;
    let sub_cols: Vec<(usize, Subtype)> = SUBTYPE_COLUMNS
        .iter()
        .map(|(n, s)| t.require(n).map(|c| (c, *s)))
        .collect::<Result<_, _>>()?;
    let mut out: BTreeMap<u32, BTreeMap<u32, StudyLabels>> = BTreeMap::new();
    t.for_each(|row| {
        let int = |c: usize| {
            row.get(c)
                .parse::<u32>()
                .map_err(|_| row.err(c, format!("`{}` is not a whole number", row.get(c))))
        };
        let (p, s) = (int(pcol)?, int(scol)?);
        let mut l = StudyLabels::default();
        for (c, sub) in &sub_cols {
            l.subtypes[sub.index()] = row
                .opt_bool(*c)?
                .ok_or_else(|| row.err(*c, "value is blank"))?;
        }
        let none = row
            .opt_bool(none_col)?
            .ok_or_else(|| row.err(none_col, "value is blank"))?;
        l.any = !none || l.subtypes.iter().any(|b| *b);
        if out.entry(p).or_default().insert(s, l).is_some() {
            return Err(row.err(scol, format!("duplicate slice {s} of patient number {p}")));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Age and sex per patient number from `Patient_demographics.csv` (column names matched
/// loosely: one containing "patient", one starting with "age", one "gender"/"sex").
pub fn read_demographics(path: &Path) -> Result<BTreeMap<u32, ClinicalRecord>, LayoutError> {
    let mut t = CsvTable::open(path)?;
    let find = |pred: &dyn Fn(&str) -> bool| {
        t.headers
            .iter()
            .position(|h| pred(&h.to_ascii_lowercase().replace(['\n', '\r'], " ")))
    };
    let pcol = find(&|h| h.contains("patient")).ok_or_else(|| {
        LayoutError::csv(path, 1, Some("Patient Number"), "no patient number column")
    })?;
    let age = find(&|h| h.trim_start().starts_with("age"));
    let sex = find(&|h| h.contains("gender") || h.contains("sex"));
    let mut out = BTreeMap::new();
    t.for_each(|row| {
        let ps = row.get(pcol);
        if ps.is_empty() {
            return Ok(()); // trailing blank / footnote rows
        }
        let p = ps
            .parse::<u32>()
            .map_err(|_| row.err(pcol, format!("`{ps}` is not a whole number")))?;
        let mut rec = ClinicalRecord::default();
        if let Some(c) = age {
            rec.age = row.opt_f32(c)?;
        }
        if let Some(c) = sex {
            rec.sex_male = match row.get(c).to_ascii_lowercase().as_str() {
                "m" | "male" => Some(true),
                "f" | "female" => Some(false),
                s if super::is_blank(s) => None,
                s => return Err(row.err(c, format!("`{s}` is not male/female"))),
            };
        }
        out.insert(p, rec);
        Ok(())
    })?;
    Ok(out)
}

fn find_volume(dir: &Path, n: u32) -> Option<PathBuf> {
    [
        format!("{n:03}.nii"),
        format!("{n:03}.nii.gz"),
        format!("{n}.nii"),
        format!("{n}.nii.gz"),
    ]
    .into_iter()
    .map(|f| dir.join(f))
    .find(|p| p.is_file())
}

fn patient_number(p: &Path) -> Option<u32> {
    let name = p.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))?;
    stem.parse().ok()
}

/// Index a CT-ICH folder.
pub fn load(root: &Path) -> Result<StudyIndex, LayoutError> {
    let diag_path = root.join("hemorrhage_diagnosis_raw_ct.csv");
    let diag = read_diagnosis_csv(&diag_path)?;
    let demo_path = root.join("Patient_demographics.csv");
    let demo = if demo_path.is_file() {
        read_demographics(&demo_path)?
    } else {
        BTreeMap::new()
    };
    let scans = root.join("ct_scans");
    if !scans.is_dir() {
        return Err(LayoutError::layout(
            &scans,
            "CT-ICH ct_scans folder not found",
        ));
    }
    let mut numbers: Vec<u32> = std::fs::read_dir(&scans)
        .map_err(|e| LayoutError::io(&scans, e))?
        .filter_map(|e| e.ok().and_then(|e| patient_number(&e.path())))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let mut warnings = Vec::new();
    let mut studies = Vec::new();
    for n in &numbers {
        let path = find_volume(&scans, *n).ok_or_else(|| {
            LayoutError::layout(&scans, format!("volume for patient number {n} vanished"))
        })?;
        let mask = find_volume(&root.join("masks"), *n);
        let key = format!("CTICH-{n:03}");
        let mut notes = Vec::new();
        if mask.is_none() {
            notes.push("no mask".into());
        }
        let (labels, slice_labels) = match diag.get(n) {
            Some(slices) => {
                let sl: Vec<SliceLabel> = slices
                    .iter()
                    .map(|(s, l)| SliceLabel {
                        slice_id: s.to_string(),
                        index: (*s).checked_sub(1).map(|i| i as usize),
                        position_mm: None,
                        labels: *l,
                    })
                    .collect();
                let mut study = StudyLabels::default();
                for s in &sl {
                    study.any |= s.labels.any;
                    for k in 0..5 {
                        study.subtypes[k] |= s.labels.subtypes[k];
                    }
                }
                (Some(study), Some(sl))
            }
            None => {
                notes.push("no rows in hemorrhage_diagnosis_raw_ct.csv".into());
                (None, None)
            }
        };
        studies.push(StudyRecord {
            patient_key: key.clone(),
            key,
            source: StudySource::Nifti { path, mask },
            labels,
            slice_labels,
            clinical: demo.get(n).copied().unwrap_or_default(),
            outcomes: Outcomes::default(),
            notes,
        });
    }
    let orphans = diag.keys().filter(|p| !numbers.contains(p)).count();
    if orphans > 0 {
        warnings.push(format!(
            "{}: {orphans} patient numbers have no volume in {}",
            diag_path.display(),
            scans.display()
        ));
    }
    Ok(StudyIndex {
        dataset: DatasetKind::PhysionetCtIch,
        root: root.to_path_buf(),
        studies,
        warnings,
    })
}
