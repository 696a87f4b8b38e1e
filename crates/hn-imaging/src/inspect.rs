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
    /// An MR study: the series read per sequence, the common grid and what is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr: Option<MrInspect>,
}

/// The MR part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MrInspect {
    /// The sequence whose grid the others are resampled onto.
    pub reference: crate::mr::MrSequence,
    pub sequences: Vec<MrSequenceInspect>,
    /// Sequences the model reads that the study lacks (masked, not imputed).
    pub missing: Vec<crate::mr::MrSequence>,
}

/// One sequence of [`MrInspect`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MrSequenceInspect {
    pub sequence: crate::mr::MrSequence,
    pub series_uid: String,
    pub rule: String,
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    /// Fraction of the common grid this sequence covers.
    pub coverage: f64,
    /// The bias field N4 finds in the sequence with its default settings, as its smallest and
    /// largest value over the foreground (a coil's shading; `None` for an empty image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_field: Option<(f32, f32)>,
}

impl MrInspect {
    /// Read the study sequence by sequence and bring it onto one grid.
    pub fn of(path: &Path, opts: &crate::ReadOptions) -> Result<Self, ImagingError> {
        let study = crate::dicom::read_mr_study(&[path.to_path_buf()], opts)?;
        Self::from_read(path, study)
    }

    /// The report of an MR study already read (DICOM or a NIfTI folder).
    pub fn from_read(path: &Path, study: crate::dicom::MrStudyRead) -> Result<Self, ImagingError> {
        // Coverage does not depend on how footprints are combined: the default reduction.
        let stack = study
            .on_one_grid(
                crate::mr::MrReduction::default(),
                Some(&crate::bias::BiasCorrectionConfig::default()),
            )
            .map_err(|e| ImagingError::Unsupported {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(MrInspect {
            reference: stack.reference,
            sequences: study
                .sequences
                .iter()
                .zip(&stack.channels)
                .map(|(s, c)| MrSequenceInspect {
                    sequence: s.sequence,
                    series_uid: s.series_uid.clone(),
                    rule: s.rule.clone(),
                    dims: s.volume.dims,
                    spacing: s.volume.spacing,
                    coverage: c.coverage,
                    bias_field: c.bias_field,
                })
                .collect(),
            missing: study.missing,
        })
    }
}

/// Value at quantile `q` (0..=1), nearest-rank, by selection (O(n); a full sort of a
/// 200-slice CT, 52 M voxels, would dominate the report's time).
fn quantile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    let i = (((values.len() - 1) as f64 * q).round() as usize).min(values.len() - 1);
    *values.select_nth_unstable_by(i, f32::total_cmp).1
}

/// Build the report from an already-read study.
pub fn report_from(path: &Path, study: &StudyRead) -> InspectReport {
    let v = &study.volume;
    let mut finite: Vec<f32> = v.data.iter().copied().filter(|x| !x.is_nan()).collect();
    let (mut lo, mut hi, mut total) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
    for &x in &finite {
        lo = lo.min(x);
        hi = hi.max(x);
        total += x as f64;
    }
    let mean = if finite.is_empty() {
        f64::NAN
    } else {
        total / finite.len() as f64
    };
    let (p1, p50, p99) = (
        quantile(&mut finite, 0.01),
        quantile(&mut finite, 0.50),
        quantile(&mut finite, 0.99),
    );
    let (lo, hi) = if finite.is_empty() {
        (f32::NAN, f32::NAN)
    } else {
        (lo, hi)
    };
    let format = study.format().name();
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
        min: lo,
        max: hi,
        mean,
        p1,
        p50,
        p99,
        notes: v.provenance.notes.clone(),
        warnings: v.provenance.warnings.clone(),
        mr: None,
    }
}

/// Read `path` (DICOM file, DICOM folder, NIfTI file, or a folder of NIfTI files named by MR
/// sequence) and build the report.
pub fn inspect(path: &Path, opts: &AnyReadOptions) -> Result<InspectReport, ImagingError> {
    // A folder of NIfTI files named by sequence is an MR study: the report of its reference
    // sequence, and the per-sequence view.
    if crate::mr::is_nifti_mr_folder(path) {
        let mr = crate::mr::read_nifti_folder(path)?;
        let reference = crate::mr::REFERENCE_ORDER
            .into_iter()
            .find_map(|q| mr.sequences.iter().find(|s| s.sequence == q))
            .expect("read_nifti_folder reads at least one sequence");
        let mut report = report_from(path, &crate::nifti_study(reference.volume.clone()));
        report.mr = Some(MrInspect::from_read(path, mr)?);
        return Ok(report);
    }
    let study = read_any(path, opts)?;
    let mut report = report_from(path, &study);
    // An MR study read as a whole (no series forced): the per-sequence view as well.
    if study.volume.modality == crate::Modality::Mr
        && study.format() == crate::InputFormat::Dicom
        && opts.dicom.series_uid.is_none()
    {
        report.mr = Some(MrInspect::of(path, &opts.dicom)?);
    }
    Ok(report)
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
                if let Some(d) = &x.mr {
                    let what = d.sequence.map(|q| q.name()).unwrap_or("not read");
                    let _ = writeln!(s, "       MR sequence {what}: {}", d.rule);
                }
            }
        }
        if let Some(mr) = &self.mr {
            let _ = writeln!(
                s,
                "  MR study    {} sequence(s); common grid of {}",
                mr.sequences.len(),
                mr.reference
            );
            for q in &mr.sequences {
                let _ = writeln!(
                    s,
                    "    {:<10} {}x{}x{} at {} covers {:.0} % of the grid  ({})",
                    q.sequence.name(),
                    q.dims[0],
                    q.dims[1],
                    q.dims[2],
                    fmt3(q.spacing),
                    100.0 * q.coverage,
                    q.rule
                );
                if let Some((lo, hi)) = q.bias_field {
                    let _ = writeln!(s, "               bias field ×{lo:.2} to ×{hi:.2} (N4)");
                }
            }
            if !mr.missing.is_empty() {
                let names: Vec<&str> = mr.missing.iter().map(|q| q.name()).collect();
                let _ = writeln!(
                    s,
                    "    missing    {} (masked, not imputed)",
                    names.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Modality, Volume};

    #[test]
    fn report_statistics_are_nearest_rank() {
        // 0..=100 shuffled, plus a NaN that must be ignored.
        let mut data: Vec<f32> = (0..=100).map(|x| ((x * 37) % 101) as f32).collect();
        data.push(f32::NAN);
        let v = Volume::new(data, [102, 1, 1], [1.0; 3], Modality::Ct).unwrap();
        let study = StudyRead {
            volume: v,
            chosen_rule: "only series".into(),
            series: Vec::new(),
            skipped: Vec::new(),
            source: None,
        };
        let r = report_from(Path::new("x"), &study);
        assert_eq!((r.min, r.max), (0.0, 100.0));
        assert_eq!((r.p1, r.p50, r.p99), (1.0, 50.0, 99.0));
        assert!((r.mean - 50.0).abs() < 1e-9);
        assert!(r.to_text().contains("min 0 HU"));
    }
}
