//! The `inspect` report, built in the library so the CLI stays a thin printer and other faces
//! (a server, a notebook binding) give the same facts.
//!
//! The report carries no patient identifiers: series UIDs and descriptions only.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{AnyReadOptions, ImagingError, SeriesSummary, SkippedFile, StudyRead, read_any};

/// Everything `hemorrhagenet inspect` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectReport {
    pub path: String,
    /// `dicom` or `nifti`.
    pub format: String,
    pub chosen_series: Option<String>,
    pub chosen_rule: String,
    pub series: Vec<SeriesSummary>,
    pub skipped: Vec<SkippedFile>,
    pub modality: String,
    /// True when values are Hounsfield units.
    pub hu: bool,
    /// `[nx, ny, nz]`.
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    pub direction: [[f64; 3]; 3],
    /// Smallest and largest decoded value (HU for CT).
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    pub p1: f32,
    pub p50: f32,
    pub p99: f32,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// Value at quantile `q` (0..=1) of sorted data, nearest-rank.
fn quantile(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Build the report from an already-read study.
pub fn report_from(path: &Path, study: &StudyRead) -> InspectReport {
    let v = &study.volume;
    let mut sorted: Vec<f32> = v.data.iter().copied().filter(|x| !x.is_nan()).collect();
    sorted.sort_unstable_by(f32::total_cmp);
    let mean = if sorted.is_empty() {
        f64::NAN
    } else {
        sorted.iter().map(|x| *x as f64).sum::<f64>() / sorted.len() as f64
    };
    let format = if study.series.is_empty() {
        "nifti"
    } else {
        "dicom"
    };
    InspectReport {
        path: path.display().to_string(),
        format: format.into(),
        chosen_series: v.provenance.series_uid.clone(),
        chosen_rule: study.chosen_rule.clone(),
        series: study.series.clone(),
        skipped: study.skipped.clone(),
        modality: match &v.modality {
            crate::Modality::Ct => "CT".into(),
            crate::Modality::Mr => "MR".into(),
            crate::Modality::Other(s) if s.is_empty() => "unknown".into(),
            crate::Modality::Other(s) => s.clone(),
        },
        hu: v.modality.is_hu(),
        dims: v.dims,
        spacing: v.spacing,
        origin: v.origin,
        direction: v.direction,
        min: sorted.first().copied().unwrap_or(f32::NAN),
        max: sorted.last().copied().unwrap_or(f32::NAN),
        mean,
        p1: quantile(&sorted, 0.01),
        p50: quantile(&sorted, 0.50),
        p99: quantile(&sorted, 0.99),
        notes: v.provenance.notes.clone(),
        warnings: v.provenance.warnings.clone(),
    }
}

/// Read `path` (DICOM file, DICOM folder or NIfTI) and build the report.
pub fn inspect(path: &Path, opts: &AnyReadOptions) -> Result<InspectReport, ImagingError> {
    let study = read_any(path, opts)?;
    Ok(report_from(path, &study))
}

fn fmt3(v: [f64; 3]) -> String {
    format!("({:.4}, {:.4}, {:.4})", v[0], v[1], v[2])
}

impl InspectReport {
    /// A human-readable multi-line report.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let unit = if self.hu { " HU" } else { "" };
        let _ = writeln!(s, "{}", self.path);
        let _ = writeln!(s, "  format      {}", self.format);
        if !self.series.is_empty() {
            let _ = writeln!(s, "  series      {} found", self.series.len());
            for x in &self.series {
                let mark = if x.chosen { "*" } else { " " };
                let _ = writeln!(
                    s,
                    "   {mark} {}  {} {} {} frame(s) {}x{} {}{}{}{}",
                    x.uid,
                    x.modality,
                    x.orientation,
                    x.frames,
                    x.cols,
                    x.rows,
                    x.slice_thickness
                        .map(|t| format!("thickness {t} mm"))
                        .unwrap_or_default(),
                    x.kernel
                        .as_ref()
                        .map(|k| format!(" kernel {k}"))
                        .unwrap_or_default(),
                    if x.description.is_empty() {
                        String::new()
                    } else {
                        format!(" \"{}\"", x.description)
                    },
                    x.unusable
                        .as_ref()
                        .map(|u| format!(" [unusable: {u}]"))
                        .unwrap_or_default(),
                );
            }
        }
        let _ = writeln!(s, "  chosen by   {}", self.chosen_rule);
        let _ = writeln!(
            s,
            "  modality    {}{}",
            self.modality,
            if self.hu {
                " (values in Hounsfield units)"
            } else {
                " (stored intensities, not HU)"
            }
        );
        let _ = writeln!(
            s,
            "  dims        {} x {} x {} (i=columns, j=rows, k=slices)",
            self.dims[0], self.dims[1], self.dims[2]
        );
        let _ = writeln!(s, "  spacing mm  {}", fmt3(self.spacing));
        let _ = writeln!(s, "  origin LPS  {}", fmt3(self.origin));
        let d = self.direction;
        for (c, name) in ["i", "j", "k"].iter().enumerate() {
            let _ = writeln!(
                s,
                "  axis {name} LPS  {}",
                fmt3([d[0][c], d[1][c], d[2][c]])
            );
        }
        let _ = writeln!(
            s,
            "  values      min {}{unit}  max {}{unit}  mean {:.1}",
            self.min, self.max, self.mean
        );
        let _ = writeln!(
            s,
            "  percentiles p1 {}  p50 {}  p99 {}",
            self.p1, self.p50, self.p99
        );
        for n in &self.notes {
            let _ = writeln!(s, "  note        {n}");
        }
        if self.warnings.is_empty() {
            let _ = writeln!(s, "  warnings    none");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  WARNING     {w}");
        }
        for k in &self.skipped {
            let _ = writeln!(s, "  skipped     {}: {}", k.path, k.reason);
        }
        s
    }
}
