//! Generic manifest CSV: one row per study (format in `docs/DATASETS.md`).
//!
//! Columns (header names exact, order free; only `path` is required):
//! `study_key`, `patient_key`, `path`, `mask`, `series_uid`, the labels `any`, `epidural`,
//! `subdural`, `subarachnoid`, `intraparenchymal`, `intraventricular` (0/1, all six or none),
//! the clinical columns named as in [`crate::CLINICAL_FEATURES`], and the outcomes
//! `mortality_30d` (0/1) and `mrs_90d` (0..=6), and `modality` (`CT`, the default when blank
//! or absent, or `MR`: the path is then a folder holding the MR study's series, or NIfTI files
//! named by sequence). Blank or `NA` = missing. Paths are relative to the manifest's folder
//! unless absolute. Unknown columns are reported in the index warnings.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    CsvRow, CsvTable, DatasetKind, LayoutError, StudyIndex, StudyRecord, StudySource,
    looks_like_dicom, walk_files,
};
use crate::clinical::{GCS_RANGE, MRS_RANGE, NIHSS_RANGE, PREMORBID_MRS_RANGE};
use crate::{CLINICAL_FEATURES, ClinicalRecord, Outcomes, SUBTYPES, StudyLabels};

/// Non-clinical columns the manifest understands.
pub const MANIFEST_COLUMNS: [&str; 14] = [
    "study_key",
    "patient_key",
    "path",
    "mask",
    "series_uid",
    "any",
    "epidural",
    "subdural",
    "subarachnoid",
    "intraparenchymal",
    "intraventricular",
    "mortality_30d",
    "mrs_90d",
    "modality",
];

fn is_nifti(p: &Path) -> bool {
    let n = p.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

fn set_clinical(
    rec: &mut ClinicalRecord,
    name: &str,
    row: &CsvRow<'_>,
    c: usize,
) -> Result<(), LayoutError> {
    match name {
        "age" => rec.age = row.opt_f32(c)?,
        "sex_male" => rec.sex_male = row.opt_bool(c)?,
        "gcs" => rec.gcs = row.opt_u8_in(c, GCS_RANGE)?,
        "nihss" => rec.nihss = row.opt_u8_in(c, NIHSS_RANGE)?,
        "sbp" => rec.sbp = row.opt_f32(c)?,
        "dbp" => rec.dbp = row.opt_f32(c)?,
        "glucose" => rec.glucose = row.opt_f32(c)?,
        "inr" => rec.inr = row.opt_f32(c)?,
        "anticoagulant" => rec.anticoagulant = row.opt_bool(c)?,
        "platelets" => rec.platelets = row.opt_f32(c)?,
        "hypertension" => rec.hypertension = row.opt_bool(c)?,
        "diabetes" => rec.diabetes = row.opt_bool(c)?,
        "prior_stroke" => rec.prior_stroke = row.opt_bool(c)?,
        "premorbid_mrs" => rec.premorbid_mrs = row.opt_u8_in(c, PREMORBID_MRS_RANGE)?,
        "onset_hours" => rec.onset_hours = row.opt_f32(c)?,
        "antiplatelet" => rec.antiplatelet = row.opt_bool(c)?,
        other => {
            return Err(row.err(
                c,
                format!("clinical feature `{other}` has no manifest parser"),
            ));
        }
    }
    Ok(())
}

/// Index a manifest CSV.
pub fn load(manifest: &Path) -> Result<StudyIndex, LayoutError> {
    let base = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut t = CsvTable::open(manifest)?;
    let path_col = t.require("path")?;
    let col = |n: &str| t.column(n);
    let (key_col, pat_col, mask_col, series_col) = (
        col("study_key"),
        col("patient_key"),
        col("mask"),
        col("series_uid"),
    );
    let any_col = col("any");
    let sub_cols: Vec<Option<usize>> = SUBTYPES.iter().map(|s| col(s.rsna_name())).collect();
    let (mort_col, mrs_col) = (col("mortality_30d"), col("mrs_90d"));
    let modality_col = col("modality");
    let clin_cols: Vec<(&str, usize)> = CLINICAL_FEATURES
        .iter()
        .filter_map(|f| col(f.name).map(|c| (f.name, c)))
        .collect();
    let mut warnings = Vec::new();
    let unknown: Vec<&String> = t
        .headers
        .iter()
        .filter(|h| {
            !MANIFEST_COLUMNS.contains(&h.as_str())
                && !CLINICAL_FEATURES.iter().any(|f| f.name == h.as_str())
        })
        .collect();
    if !unknown.is_empty() {
        warnings.push(format!(
            "{}: ignored unknown columns: {}",
            manifest.display(),
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let resolve = |s: &str| {
        let p = PathBuf::from(s);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let mut keys = HashSet::new();
    let mut studies = Vec::new();
    t.for_each(|row| {
        let raw_path = row.get(path_col);
        if raw_path.is_empty() {
            return Err(row.err(path_col, "path is blank"));
        }
        let path = resolve(raw_path);
        let key = key_col
            .map(|c| row.get(c).to_string())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| raw_path.to_string());
        if !keys.insert(key.clone()) {
            return Err(row.err(
                key_col.unwrap_or(path_col),
                format!("duplicate study key `{key}`"),
            ));
        }
        let patient_key = pat_col
            .map(|c| row.get(c).to_string())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| key.clone());
        let mut notes = Vec::new();
        let mask = mask_col
            .map(|c| row.get(c))
            .filter(|m| !super::is_blank(m))
            .map(resolve);
        let mr = match modality_col.map(|c| row.get(c).trim().to_ascii_uppercase()) {
            None => false,
            Some(m) if super::is_blank(&m) || m == "CT" => false,
            Some(m) if m == "MR" => true,
            Some(m) => {
                return Err(row.err(
                    modality_col.unwrap_or(path_col),
                    format!("modality `{m}`: CT or MR"),
                ));
            }
        };
        let source = if mr {
            let series_given = series_col.filter(|c| !super::is_blank(row.get(*c)));
            if mask.is_some() || series_given.is_some() {
                return Err(row.err(
                    if mask.is_some() {
                        mask_col
                    } else {
                        series_given
                    }
                    .unwrap_or(path_col),
                    "an MR study takes neither a mask nor a series UID (its sequences are told \
                     apart by their acquisition attributes)",
                ));
            }
            if path.exists() && !path.is_dir() {
                return Err(row.err(
                    path_col,
                    "an MR study's path is a folder (its series, or NIfTI files named by sequence)",
                ));
            }
            StudySource::Mr { path: path.clone() }
        } else if is_nifti(&path) {
            StudySource::Nifti {
                path: path.clone(),
                mask,
            }
        } else {
            if mask.is_some() {
                return Err(row.err(
                    mask_col.unwrap_or(path_col),
                    "a mask is only supported with a NIfTI path",
                ));
            }
            let files = if path.is_dir() {
                walk_files(&path, &looks_like_dicom)?
            } else {
                vec![path.clone()]
            };
            StudySource::Dicom {
                files,
                series_uid: series_col
                    .map(|c| row.get(c).to_string())
                    .filter(|s| !s.is_empty()),
                rsna_fix: false,
            }
        };
        if !path.exists() {
            let msg = format!("line {}: {} does not exist", row.line, path.display());
            warnings.push(format!("{}: {msg}", manifest.display()));
            notes.push(msg);
        }
        // Labels: all six or none.
        let mut given = Vec::new();
        if let Some(c) = any_col {
            given.push((c, row.opt_bool(c)?));
        }
        for c in sub_cols.iter().flatten() {
            given.push((*c, row.opt_bool(*c)?));
        }
        let n_given = given.iter().filter(|(_, v)| v.is_some()).count();
        let labels = if n_given == 0 {
            None
        } else if n_given < 6 {
            let (c, _) = given
                .iter()
                .find(|(_, v)| v.is_none())
                .copied()
                .unwrap_or((path_col, None));
            return Err(row.err(
                c,
                "labels must be all six (any + 5 subtypes) or none; this one is missing",
            ));
        } else {
            let mut l = StudyLabels {
                any: any_col.and_then(|c| row.opt_bool(c).ok().flatten()) == Some(true),
                ..Default::default()
            };
            for (k, c) in sub_cols.iter().enumerate() {
                l.subtypes[k] = c.and_then(|c| row.opt_bool(c).ok().flatten()) == Some(true);
            }
            Some(l)
        };
        let mut clinical = ClinicalRecord::default();
        for (name, c) in &clin_cols {
            set_clinical(&mut clinical, name, row, *c)?;
        }
        let outcomes = Outcomes {
            mortality_30d: mort_col.map(|c| row.opt_bool(c)).transpose()?.flatten(),
            mrs_90d: mrs_col
                .map(|c| row.opt_u8_in(c, MRS_RANGE))
                .transpose()?
                .flatten(),
        };
        if let (Some(true), Some(m)) = (outcomes.mortality_30d, outcomes.mrs_90d)
            && m != 6
        {
            notes.push(format!("mortality_30d = 1 but mrs_90d = {m}"));
        }
        studies.push(StudyRecord {
            key,
            patient_key,
            source,
            labels,
            slice_labels: None,
            clinical,
            outcomes,
            notes,
        });
        Ok(())
    })?;
    Ok(StudyIndex {
        dataset: DatasetKind::Manifest,
        root: base,
        studies,
        warnings,
    })
}
