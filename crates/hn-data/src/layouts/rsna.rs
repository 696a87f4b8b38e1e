//! RSNA Intracranial Hemorrhage Detection 2019 layout.
//!
//! ```text
//! root/
//!   stage_2_train.csv        ID,Label  with IDs `ID_<slice>_<any|epidural|...>`
//!   stage_2_train/ID_<slice>.dcm   one DICOM per slice
//! ```
//! Slices are grouped into studies by StudyInstanceUID and SeriesInstanceUID read from the
//! headers (read up to PixelData, in parallel) and ordered by ImagePositionPatient along the
//! slice normal. The RSNA header fix is switched on for every study. A test set without a
//! label file gives studies with `labels = None`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::dicom_header::{SliceHeader, order_slices, read_slice_header};
use super::{
    CsvTable, DatasetKind, LayoutError, SliceLabel, StudyIndex, StudyRecord, StudySource,
    walk_files,
};
use crate::{ClinicalRecord, Outcomes, StudyLabels, Subtype};

/// Where the RSNA files are, relative to the root unless absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct RsnaOptions {
    /// Label CSV; `None` = no labels (test set). Default `stage_2_train.csv`.
    pub labels_csv: Option<PathBuf>,
    /// Folder of `ID_<slice>.dcm` files. Default `stage_2_train`.
    pub images_dir: PathBuf,
}

impl Default for RsnaOptions {
    fn default() -> Self {
        RsnaOptions {
            labels_csv: Some(PathBuf::from("stage_2_train.csv")),
            images_dir: PathBuf::from("stage_2_train"),
        }
    }
}

/// Six labels of a slice in `[any, SUBTYPES...]` order, each possibly missing.
type SliceRow = [Option<bool>; 6];

/// Parse `ID,Label` rows into per-slice labels. Conflicting duplicate rows are errors; exact
/// duplicates (present in the real file) are accepted.
pub fn read_label_csv(path: &Path) -> Result<HashMap<String, SliceRow>, LayoutError> {
    let mut t = CsvTable::open(path)?;
    let id_col = t.require("ID")?;
    let label_col = t.require("Label")?;
    let mut out: HashMap<String, SliceRow> = HashMap::new();
    t.for_each(|row| {
        let id = row.get(id_col);
        let (slice, name) = id
            .rsplit_once('_')
            .filter(|(s, _)| s.starts_with("ID_"))
            .ok_or_else(|| row.err(id_col, format!("`{id}` is not ID_<slice>_<label>")))?;
        let j = if name == "any" {
            0
        } else {
            1 + Subtype::from_rsna_name(name)
                .ok_or_else(|| row.err(id_col, format!("unknown label `{name}`")))?
                .index()
        };
        let v = row
            .opt_bool(label_col)?
            .ok_or_else(|| row.err(label_col, "label is blank"))?;
        let e = out.entry(slice.to_string()).or_default();
        if e[j].is_some_and(|old| old != v) {
            return Err(row.err(
                label_col,
                format!("conflicts with an earlier row for `{id}`"),
            ));
        }
        e[j] = Some(v);
        Ok(())
    })?;
    Ok(out)
}

fn resolve(root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Index an RSNA-2019 folder.
pub fn load(root: &Path, opts: &RsnaOptions) -> Result<StudyIndex, LayoutError> {
    let mut warnings = Vec::new();
    let labels = match &opts.labels_csv {
        Some(p) => Some(read_label_csv(&resolve(root, p))?),
        None => None,
    };
    let images = resolve(root, &opts.images_dir);
    if !images.is_dir() {
        return Err(LayoutError::layout(&images, "RSNA image folder not found"));
    }
    let files = walk_files(&images, &|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
    })?;
    let headers: Vec<Result<SliceHeader, LayoutError>> =
        files.par_iter().map(|f| read_slice_header(f)).collect();
    let mut groups: BTreeMap<(String, String), Vec<SliceHeader>> = BTreeMap::new();
    for h in headers {
        match h {
            Ok(h) => groups
                .entry((h.study_instance_uid.clone(), h.series_instance_uid.clone()))
                .or_default()
                .push(h),
            Err(e) => warnings.push(format!("skipped: {e}")),
        }
    }
    let mut series_per_study: HashMap<&str, usize> = HashMap::new();
    for (study, _) in groups.keys() {
        *series_per_study.entry(study.as_str()).or_default() += 1;
    }
    let series_per_study: HashMap<String, usize> = series_per_study
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut used = std::collections::HashSet::new();
    let mut studies = Vec::new();
    for ((study, series), mut slices) in groups {
        let mut notes = Vec::new();
        if let Some(n) = order_slices(&mut slices) {
            notes.push(n);
        }
        let key = if series_per_study[&study] > 1 {
            format!("{study}/{series}")
        } else {
            study.clone()
        };
        let patient_key = match slices.iter().find_map(|s| s.patient_id.clone()) {
            Some(p) => p,
            None => {
                notes.push("PatientID missing: patient key = study key".into());
                key.clone()
            }
        };
        let slice_id = |s: &SliceHeader| {
            s.path
                .file_stem()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string()
        };
        let (study_labels, slice_labels) = match &labels {
            None => (None, None),
            Some(map) => {
                let mut sl = Vec::new();
                let mut complete = true;
                for (i, s) in slices.iter().enumerate() {
                    let id = slice_id(s);
                    match map.get(&id) {
                        Some(row) if row.iter().all(Option::is_some) => {
                            used.insert(id.clone());
                            let mut subtypes = [false; 5];
                            for k in 0..5 {
                                subtypes[k] = row[k + 1] == Some(true);
                            }
                            sl.push(SliceLabel {
                                slice_id: id,
                                index: Some(i),
                                position_mm: s.position_along_normal(),
                                labels: StudyLabels {
                                    any: row[0] == Some(true),
                                    subtypes,
                                },
                            });
                        }
                        Some(_) => {
                            used.insert(id.clone());
                            complete = false;
                            notes.push(format!("slice {id}: some of the 6 labels missing"));
                        }
                        None => {
                            complete = false;
                            notes.push(format!("slice {id}: no label rows"));
                        }
                    }
                }
                let study_labels = complete.then(|| {
                    let mut l = StudyLabels::default();
                    for s in &sl {
                        l.any |= s.labels.any;
                        for k in 0..5 {
                            l.subtypes[k] |= s.labels.subtypes[k];
                        }
                    }
                    l
                });
                (study_labels, Some(sl))
            }
        };
        studies.push(StudyRecord {
            key,
            patient_key,
            source: StudySource::Dicom {
                files: slices.iter().map(|s| s.path.clone()).collect(),
                series_uid: Some(series),
                rsna_fix: true,
            },
            labels: study_labels,
            slice_labels,
            clinical: ClinicalRecord::default(),
            outcomes: Outcomes::default(),
            notes,
        });
    }
    if let Some(map) = &labels {
        let orphans = map.keys().filter(|k| !used.contains(*k)).count();
        if orphans > 0 {
            warnings.push(format!(
                "{}: {orphans} labelled slices have no DICOM file in {}",
                opts.labels_csv
                    .as_deref()
                    .map(|p| resolve(root, p).display().to_string())
                    .unwrap_or_default(),
                images.display()
            ));
        }
    }
    Ok(StudyIndex {
        dataset: DatasetKind::Rsna2019,
        root: root.to_path_buf(),
        studies,
        warnings,
    })
}
