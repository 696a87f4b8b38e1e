//! Dataset layouts: readers that turn a dataset folder into a [`StudyIndex`] — which files make
//! up each study, its labels, clinical record and outcomes — **without decoding pixels**.
//!
//! Pixels are decoded later, per study, through `hn-imaging` (`dicom::read_series` for
//! [`StudySource::Dicom`] with `ReadOptions { rsna_fix, series_uid, .. }` taken from the
//! source, `nifti::read_volume` for [`StudySource::Nifti`]); an MR study
//! ([`StudySource::Mr`]) is read sequence by sequence by [`read_mr_study_record`].
//!
//! Supported layouts (see `docs/DATASETS.md`): RSNA 2019 ([`rsna`]), CQ500 ([`cq500`]),
//! PhysioNet CT-ICH ([`ctich`]) and a generic manifest CSV ([`manifest`]).
//!
//! Errors name the file and, for CSV, the line and column. Log messages never contain patient
//! names or IDs; the keys kept in the index are the datasets' own pseudonymous keys.

pub mod cq500;
pub mod ctich;
pub mod dicom_header;
pub mod manifest;
pub mod rsna;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ClinicalRecord, Outcomes, StudyLabels};

/// Which layout an index was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    Rsna2019,
    Cq500,
    PhysionetCtIch,
    Manifest,
    Synthetic,
}

impl DatasetKind {
    /// Every kind, in the order a help text lists them.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Synthetic,
        DatasetKind::Rsna2019,
        DatasetKind::Cq500,
        DatasetKind::PhysionetCtIch,
        DatasetKind::Manifest,
    ];

    /// The name a command line uses (`--dataset rsna`).
    pub fn cli_name(self) -> &'static str {
        match self {
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::Rsna2019 => "rsna",
            DatasetKind::Cq500 => "cq500",
            DatasetKind::PhysionetCtIch => "ctich",
            DatasetKind::Manifest => "manifest",
        }
    }

    /// What the root is and what it holds, for help texts and errors.
    pub fn describe(self) -> &'static str {
        match self {
            DatasetKind::Synthetic => "the embedded synthetic cohort, generated in memory",
            DatasetKind::Rsna2019 => "RSNA 2019 (stage_2_train.csv + stage_2_train/ID_*.dcm)",
            DatasetKind::Cq500 => "CQ500 (reads.csv + CQ500CT<N> ... folders)",
            DatasetKind::PhysionetCtIch => {
                "PhysioNet CT-ICH (ct_scans/, masks/, hemorrhage_diagnosis_raw_ct.csv)"
            }
            DatasetKind::Manifest => "generic manifest CSV (docs/DATASETS.md); the root is the CSV",
        }
    }

    /// Dataset name as reports show it.
    pub fn title(self) -> &'static str {
        match self {
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::Rsna2019 => "RSNA 2019",
            DatasetKind::Cq500 => "CQ500",
            DatasetKind::PhysionetCtIch => "PhysioNet CT-ICH",
            DatasetKind::Manifest => "manifest",
        }
    }

    /// Read the layout at `root` into an index (the synthetic cohort has none: it is
    /// generated, see `crate::synth`).
    pub fn load_index(self, root: &Path) -> Result<StudyIndex, LayoutError> {
        match self {
            DatasetKind::Rsna2019 => rsna::load(root, &Default::default()),
            DatasetKind::Cq500 => cq500::load(root),
            DatasetKind::PhysionetCtIch => ctich::load(root),
            DatasetKind::Manifest => manifest::load(root),
            DatasetKind::Synthetic => Err(LayoutError::Layout {
                path: root.to_path_buf(),
                msg: "the synthetic cohort is generated, not read from a folder".into(),
            }),
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.cli_name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.cli_name()).collect();
                format!("unknown dataset {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Where a study's pixels are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StudySource {
    /// DICOM files. When the layout knows the slice order (RSNA) `files` are in slice order
    /// (ImagePositionPatient along the slice normal); otherwise the reader sorts them and
    /// chooses the series.
    Dicom {
        files: Vec<PathBuf>,
        /// Series to read when the files hold several (`None`: the reader's series rule).
        series_uid: Option<String>,
        /// Apply the RSNA-2019 header fix (pass as `ReadOptions::rsna_fix`).
        rsna_fix: bool,
    },
    /// A NIfTI volume, with an optional hemorrhage mask of the same grid.
    Nifti {
        path: PathBuf,
        mask: Option<PathBuf>,
    },
    /// An MR study: a folder with every series of the study as DICOM (told apart by
    /// `hn_imaging::mr::classify`), or a folder of NIfTI files named by sequence.
    Mr { path: PathBuf },
}

impl StudySource {
    /// Whether this is an MR study.
    pub fn is_mr(&self) -> bool {
        matches!(self, StudySource::Mr { .. })
    }
}

/// Labels of one slice of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceLabel {
    /// The dataset's slice identifier (RSNA `ID_<id>`, CT-ICH slice number, ...).
    pub slice_id: String,
    /// 0-based index in the study's slice order, when known.
    pub index: Option<usize>,
    /// Position along the slice normal in mm, when known.
    pub position_mm: Option<f64>,
    pub labels: StudyLabels,
}

/// One study of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// Unique study key within the index (used for splits, shards, cache names, reports).
    pub key: String,
    /// Patient key; every study of a patient goes to the same split.
    pub patient_key: String,
    pub source: StudySource,
    /// Study-level labels; `None` when unlabelled (test sets) or only partly labelled.
    pub labels: Option<StudyLabels>,
    /// Per-slice labels where the dataset has them, in slice order.
    pub slice_labels: Option<Vec<SliceLabel>>,
    pub clinical: ClinicalRecord,
    pub outcomes: Outcomes,
    /// Non-fatal observations about this study (missing label rows, duplicate slices, ...).
    pub notes: Vec<String>,
}

/// The studies of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyIndex {
    pub dataset: DatasetKind,
    pub root: PathBuf,
    pub studies: Vec<StudyRecord>,
    /// Dataset-level problems that did not stop indexing (unreadable files skipped, label rows
    /// without images, ...). Each names the file; none names a patient.
    pub warnings: Vec<String>,
}

impl StudyIndex {
    /// Study by key.
    pub fn get(&self, key: &str) -> Option<&StudyRecord> {
        self.studies.iter().find(|s| s.key == key)
    }

    /// Whether any study of the index is an MR study.
    pub fn has_mr(&self) -> bool {
        self.studies.iter().any(|s| s.source.is_mr())
    }
}

/// Decoded pixels of a study.
#[derive(Debug, Clone)]
pub struct DecodedStudy {
    pub volume: hn_imaging::Volume,
    /// Hemorrhage mask on the same grid, when the source has one (values as stored, > 0 =
    /// hemorrhage).
    pub mask: Option<hn_imaging::Volume>,
    /// The source study's identity (DICOM sources), for results filed back into it.
    pub source: Option<hn_imaging::dicom::SourceStudy>,
}

/// Errors from decoding a study's pixels.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Imaging(#[from] hn_imaging::ImagingError),
    #[error("{mask}: mask grid {mask_dims:?} differs from the volume's {dims:?}")]
    MaskGrid {
        mask: PathBuf,
        mask_dims: [usize; 3],
        dims: [usize; 3],
    },
    #[error("study has no DICOM files")]
    NoFiles,
    #[error(
        "{0}: an MR study is read sequence by sequence (read_mr_study_record), not as one volume"
    )]
    MrStudy(PathBuf),
    #[error("{0}: not an MR study record")]
    NotMr(String),
}

/// Read an MR study record ([`StudySource::Mr`]) sequence by sequence
/// ([`hn_imaging::mr::read_mr_path`]: a folder of NIfTI files named by sequence, else every
/// DICOM series below it).
pub fn read_mr_study_record(
    rec: &StudyRecord,
) -> Result<hn_imaging::dicom::MrStudyRead, DecodeError> {
    let StudySource::Mr { path } = &rec.source else {
        return Err(DecodeError::NotMr(rec.key.clone()));
    };
    Ok(hn_imaging::mr::read_mr_path(path)?)
}

/// Decode a study's pixels through `hn-imaging`: DICOM with the source's series and RSNA
/// fix, NIfTI (and its mask) with `nifti` options (set `modality: Some(Modality::Ct)` for CT
/// datasets such as CT-ICH so values are treated as HU).
pub fn read_study(
    rec: &StudyRecord,
    nifti: &hn_imaging::NiftiReadOptions,
) -> Result<DecodedStudy, DecodeError> {
    match &rec.source {
        StudySource::Dicom {
            files,
            series_uid,
            rsna_fix,
        } => {
            if files.is_empty() {
                return Err(DecodeError::NoFiles);
            }
            let opts = hn_imaging::ReadOptions {
                series_uid: series_uid.clone(),
                rsna_fix: *rsna_fix,
                ..Default::default()
            };
            let read = hn_imaging::dicom::read_series(files, &opts)?;
            Ok(DecodedStudy {
                volume: read.volume,
                mask: None,
                source: read.source,
            })
        }
        StudySource::Mr { path } => Err(DecodeError::MrStudy(path.clone())),
        StudySource::Nifti { path, mask } => {
            let volume = hn_imaging::nifti::read_volume(path, nifti)?;
            let mask = match mask {
                Some(m) => {
                    let mv = hn_imaging::nifti::read_volume(m, nifti)?;
                    if mv.dims != volume.dims {
                        return Err(DecodeError::MaskGrid {
                            mask: m.clone(),
                            mask_dims: mv.dims,
                            dims: volume.dims,
                        });
                    }
                    Some(mv)
                }
                None => None,
            };
            Ok(DecodedStudy {
                volume,
                mask,
                source: None,
            })
        }
    }
}

/// Errors from reading a dataset layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}{}: {msg}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    Csv {
        path: PathBuf,
        line: u64,
        column: Option<String>,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Dicom { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Layout { path: PathBuf, msg: String },
}

impl LayoutError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        LayoutError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn layout(path: &Path, msg: impl Into<String>) -> Self {
        LayoutError::Layout {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    pub(crate) fn csv(
        path: &Path,
        line: u64,
        column: Option<&str>,
        msg: impl Into<String>,
    ) -> Self {
        LayoutError::Csv {
            path: path.to_path_buf(),
            line,
            column: column.map(str::to_string),
            msg: msg.into(),
        }
    }

    /// From a `csv` crate error (keeps its line number).
    pub(crate) fn from_csv(path: &Path, e: csv::Error) -> Self {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        match e.into_kind() {
            csv::ErrorKind::Io(source) => LayoutError::Io {
                path: path.to_path_buf(),
                source,
            },
            kind => LayoutError::csv(path, line, None, format!("{kind:?}")),
        }
    }
}

/// A CSV file opened with headers, trimmed fields and flexible=false (ragged rows are errors).
pub(crate) struct CsvTable {
    pub path: PathBuf,
    pub headers: Vec<String>,
    reader: csv::Reader<std::fs::File>,
}

/// One CSV row with its line number.
pub(crate) struct CsvRow<'a> {
    pub path: &'a Path,
    pub headers: &'a [String],
    pub line: u64,
    pub rec: &'a csv::StringRecord,
}

impl CsvTable {
    pub fn open(path: &Path) -> Result<Self, LayoutError> {
        let file = std::fs::File::open(path).map_err(|e| LayoutError::io(path, e))?;
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(file);
        let headers = reader
            .headers()
            .map_err(|e| LayoutError::from_csv(path, e))?
            .iter()
            // Strip a UTF-8 BOM that spreadsheet exports put before the first header.
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect();
        Ok(CsvTable {
            path: path.to_path_buf(),
            headers,
            reader,
        })
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    pub fn require(&self, name: &str) -> Result<usize, LayoutError> {
        self.column(name).ok_or_else(|| {
            LayoutError::csv(
                &self.path,
                1,
                Some(name),
                format!(
                    "required column is missing (header: {})",
                    self.headers.join(",")
                ),
            )
        })
    }

    /// Visit every data row.
    pub fn for_each(
        &mut self,
        mut f: impl FnMut(&CsvRow<'_>) -> Result<(), LayoutError>,
    ) -> Result<(), LayoutError> {
        let mut rec = csv::StringRecord::new();
        loop {
            match self.reader.read_record(&mut rec) {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let line = rec.position().map(|p| p.line()).unwrap_or(0);
                    f(&CsvRow {
                        path: &self.path,
                        headers: &self.headers,
                        line,
                        rec: &rec,
                    })?;
                }
                Err(e) => return Err(LayoutError::from_csv(&self.path, e)),
            }
        }
    }
}

impl CsvRow<'_> {
    pub fn get(&self, col: usize) -> &str {
        self.rec.get(col).unwrap_or("")
    }

    pub fn err(&self, col: usize, msg: impl Into<String>) -> LayoutError {
        LayoutError::csv(
            self.path,
            self.line,
            self.headers.get(col).map(String::as_str),
            msg,
        )
    }

    /// Optional boolean: blank/`NA` → None; 0/1/true/false/yes/no (any case).
    pub fn opt_bool(&self, col: usize) -> Result<Option<bool>, LayoutError> {
        parse_bool(self.get(col)).map_err(|m| self.err(col, m))
    }

    /// Optional number: blank/`NA` → None.
    pub fn opt_f32(&self, col: usize) -> Result<Option<f32>, LayoutError> {
        let s = self.get(col);
        if is_blank(s) {
            return Ok(None);
        }
        match s.parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(self.err(col, format!("`{s}` is not a finite number"))),
        }
    }

    /// [`opt_u8`](Self::opt_u8) within `range`.
    pub fn opt_u8_in(
        &self,
        col: usize,
        range: std::ops::RangeInclusive<u8>,
    ) -> Result<Option<u8>, LayoutError> {
        self.opt_u8(col, *range.start(), *range.end())
    }

    /// Optional integer in `lo..=hi`: blank/`NA` → None. Accepts `3.0`-style integers.
    pub fn opt_u8(&self, col: usize, lo: u8, hi: u8) -> Result<Option<u8>, LayoutError> {
        let Some(v) = self.opt_f32(col)? else {
            return Ok(None);
        };
        if v.fract() != 0.0 || v < f32::from(lo) || v > f32::from(hi) {
            return Err(self.err(col, format!("`{v}` is not an integer in {lo}..={hi}")));
        }
        Ok(Some(v as u8))
    }
}

pub(crate) use crate::clinical::{is_missing_token as is_blank, parse_bool_token as parse_bool};

/// Files under `dir` (recursively) accepted by `keep`, sorted by path.
pub(crate) fn walk_files(
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>, LayoutError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| LayoutError::io(&d, e))? {
            let entry = entry.map_err(|e| LayoutError::io(&d, e))?;
            let p = entry.path();
            let ft = entry.file_type().map_err(|e| LayoutError::io(&p, e))?;
            if ft.is_dir() {
                stack.push(p);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// True for `*.dcm` (any case) or extension-less files (common DICOM naming).
pub(crate) fn looks_like_dicom(p: &Path) -> bool {
    match p.extension().and_then(|e| e.to_str()) {
        Some(e) => e.eq_ignore_ascii_case("dcm"),
        None => !p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n == "DICOMDIR"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_parsing() {
        assert_eq!(parse_bool("1"), Ok(Some(true)));
        assert_eq!(parse_bool(" No "), Ok(Some(false)));
        assert_eq!(parse_bool(""), Ok(None));
        assert_eq!(parse_bool("NA"), Ok(None));
        assert!(parse_bool("2").is_err());
    }
}
