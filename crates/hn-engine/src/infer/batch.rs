//! Batch prediction over one shard of a study index (manifest), for Kubernetes Indexed Jobs
//! and Slurm arrays: `shard_of(key, count) == index` selects the studies, each result goes
//! to `out/<sanitised key>/` written atomically, finished studies are skipped on a rerun and
//! a failing study is recorded without stopping the run.

use std::path::Path;

use hn_data::layouts::{StudyIndex, StudyRecord, StudySource, read_study};
use hn_data::splits::shard_of;
use serde::{Deserialize, Serialize};

use super::{InferError, Predictor};

/// One study that failed: its key and the cause (file and reason; no patient data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedStudy {
    pub key: String,
    pub error: String,
}

/// `shard-<i>-of-<n>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub shard_index: u32,
    pub shard_count: u32,
    /// Studies of the index in this shard.
    pub in_shard: usize,
    /// Predicted in this run.
    pub done: usize,
    /// Skipped because `prediction.json` already existed.
    pub skipped_existing: usize,
    pub failed: Vec<FailedStudy>,
    /// Output folder name per key of this shard, in index order.
    pub outputs: Vec<(String, String)>,
}

/// What [`predict_batch`] reports after each study.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchEvent {
    /// Studies in the shard (sent once, first).
    Started {
        in_shard: usize,
    },
    Done {
        key: String,
    },
    Skipped {
        key: String,
    },
    Failed {
        key: String,
        error: String,
    },
}

/// A file-system-safe folder name for a study key: characters outside `[A-Za-z0-9._-]`
/// and leading dots become `_`; when anything changed (or the name could clash with temporary folders), a
/// stable 8-hex-digit hash of the key is appended so distinct keys stay distinct.
pub fn sanitize_key(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // No hidden names (and never `.` or `..`).
    let dots = s.len() - s.trim_start_matches('.').len();
    s.replace_range(..dots, &"_".repeat(dots));
    let clash = s.is_empty()
        || s.ends_with(".tmp")
        || s.ends_with(".old")
        || s.starts_with("shard-")
        || s.len() > 100;
    if s != key || clash {
        s.truncate(100);
        s = format!("{s}-{:08x}", shard_of(key, u32::MAX));
    }
    s
}

fn study_path(rec: &StudyRecord) -> Option<&Path> {
    match &rec.source {
        StudySource::Dicom { files, .. } => files.first().map(|p| p.as_path()),
        StudySource::Nifti { path, .. } | StudySource::Mr { path } => Some(path.as_path()),
    }
}

fn predict_one(
    pred: &Predictor,
    rec: &StudyRecord,
    dir: &Path,
    dicom: bool,
) -> Result<(), InferError> {
    if let Some(p) = study_path(rec)
        && !p.exists()
    {
        return Err(InferError::Io {
            path: p.to_path_buf(),
            cause: std::io::Error::new(std::io::ErrorKind::NotFound, "study not found"),
        });
    }
    let res = if rec.source.is_mr() {
        let mr = hn_data::layouts::read_mr_study_record(rec)?;
        pred.predict_mr(&rec.key, mr, rec.clinical)?
    } else {
        let decoded = read_study(rec, &hn_imaging::NiftiReadOptions::default())?;
        let format = match rec.source {
            StudySource::Nifti { .. } => hn_imaging::InputFormat::Nifti,
            _ => hn_imaging::InputFormat::Dicom,
        };
        let mut res = pred.predict_volume(&rec.key, decoded.volume, format, rec.clinical)?;
        res.source = decoded.source;
        res
    };
    let results = if dicom {
        Some(pred.dicom_results(&res)?)
    } else {
        None
    };
    super::output::write_study_dir(&res, dir, results.as_ref())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Predict every study of `index` in shard `shard_index` of `shard_count` into `out_dir`.
/// Per-study failures (unreadable study, unusable volume, even a panic) are reported through
/// `progress` and collected in the summary; the run goes on. The summary is also written to
/// `out_dir/shard-<i>-of-<n>.json`. Errors only for bad shard arguments or an unwritable
/// `out_dir`. `dicom`: each study's DICOM results too (a study that cannot have them, such as
/// NIfTI input, fails with the reason); a study is finished only when they exist.
pub fn predict_batch(
    predictor: &Predictor,
    index: &StudyIndex,
    shard_index: u32,
    shard_count: u32,
    out_dir: &Path,
    dicom: bool,
    progress: &mut dyn FnMut(&BatchEvent),
) -> Result<BatchSummary, InferError> {
    if shard_count == 0 || shard_index >= shard_count {
        return Err(InferError::Invalid(format!(
            "shard index {shard_index} must be in 0..{shard_count} (shard count ≥ 1)"
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(super::io_err(out_dir))?;
    let mine: Vec<&StudyRecord> = index
        .studies
        .iter()
        .filter(|r| shard_of(&r.key, shard_count) == shard_index)
        .collect();
    progress(&BatchEvent::Started {
        in_shard: mine.len(),
    });
    let mut summary = BatchSummary {
        shard_index,
        shard_count,
        in_shard: mine.len(),
        done: 0,
        skipped_existing: 0,
        failed: Vec::new(),
        outputs: Vec::new(),
    };
    for rec in mine {
        let name = sanitize_key(&rec.key);
        summary.outputs.push((rec.key.clone(), name.clone()));
        let dir = out_dir.join(&name);
        let finished = dir.join(super::output::PREDICTION_FILE).is_file()
            && (!dicom
                || dir
                    .join(super::dicom_results::DICOM_DIR)
                    .join("sr.dcm")
                    .is_file());
        if finished {
            summary.skipped_existing += 1;
            progress(&BatchEvent::Skipped {
                key: rec.key.clone(),
            });
            continue;
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            predict_one(predictor, rec, &dir, dicom)
        }));
        let err = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(p) => Some(format!("internal error: {}", panic_message(p.as_ref()))),
        };
        match err {
            None => {
                summary.done += 1;
                progress(&BatchEvent::Done {
                    key: rec.key.clone(),
                });
            }
            Some(error) => {
                progress(&BatchEvent::Failed {
                    key: rec.key.clone(),
                    error: error.clone(),
                });
                summary.failed.push(FailedStudy {
                    key: rec.key.clone(),
                    error,
                });
            }
        }
    }
    let p = out_dir.join(format!("shard-{shard_index}-of-{shard_count}.json"));
    let text = serde_json::to_string_pretty(&summary)
        .map_err(|e| InferError::Invalid(format!("{}: {e}", p.display())))?;
    super::output::write_file_atomic(&p, text.as_bytes())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitised_keys_are_safe_and_distinct() {
        assert_eq!(sanitize_key("SYNTH-000001"), "SYNTH-000001");
        let a = sanitize_key("a/b");
        let b = sanitize_key("a_b");
        assert_ne!(a, b);
        assert!(a.starts_with("a_b-"));
        for k in ["..", "", "x.tmp", "../../etc", "shard-0-of-2.json"] {
            let s = sanitize_key(k);
            assert!(
                !s.starts_with('.') && !s.contains('/') && !s.is_empty(),
                "{k} -> {s}"
            );
            assert_ne!(s, k);
        }
        assert_eq!(sanitize_key("a/b"), a, "stable");
    }
}
