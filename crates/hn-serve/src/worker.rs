//! Background work: the scheduler (studies whose timeout passed become `queued`), the scoring
//! workers (one model, `workers` threads, studies taken from the store in arrival order) and
//! the forwarder (results to the PACS, with backoff).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hn_engine::infer::{StudyBytes, write_study_dir};
use hn_imaging::dicom::{MemoryData, MemoryInstance};

use crate::App;
use crate::forward::{Outgoing, backoff};
use crate::store::{InputKind, Outcome, StudyRow, log_name};

/// Attempts for a study whose scoring failed on our side (a write error, a panic).
const MAX_ATTEMPTS: u32 = 3;

/// How often the scheduler looks for complete studies: a tenth of a second adds at most that
/// (≈ 50 ms on average) to a study's latency for one indexed query.
const SCHEDULER_TICK: Duration = Duration::from_millis(100);

/// Promote complete studies every [`SCHEDULER_TICK`] until shutdown.
pub fn scheduler(app: Arc<App>) {
    while !app.shutdown.load(Ordering::SeqCst) {
        match app.store.promote_complete(app.cfg.study_timeout_s) {
            Ok(n) if n > 0 => {
                app.metrics.studies_received.inc_by(n as u64);
                app.wake_workers();
            }
            Ok(_) => {}
            Err(e) => app.set_unready(&e.to_string()),
        }
        std::thread::sleep(SCHEDULER_TICK);
    }
}

/// Score queued studies until shutdown; a study being scored is finished first.
pub fn worker(app: Arc<App>) {
    while !app.shutdown.load(Ordering::SeqCst) {
        match app.store.claim() {
            Ok(Some(row)) => score(&app, row),
            Ok(None) => app.wait_for_work(Duration::from_millis(500)),
            Err(e) => {
                app.set_unready(&e.to_string());
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn read_inputs(app: &App, row: &StudyRow) -> Result<StudyBytes, String> {
    let files = app.store.input_files(row).map_err(|e| e.to_string())?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("stored input unreadable: {e}"));
    match row.kind {
        InputKind::Dicom => Ok(StudyBytes::Dicom(
            files
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    Ok(MemoryInstance {
                        name: format!("instance {}", i + 1),
                        data: MemoryData::Bytes(read(p)?),
                    })
                })
                .collect::<Result<_, String>>()?,
        )),
        InputKind::Nifti => Ok(StudyBytes::Nifti(read(
            files.first().ok_or("no stored NIfTI file")?,
        )?)),
    }
}

fn score(app: &App, row: StudyRow) {
    let name = log_name(&row.id);
    let hooks = &app.cfg.test_hooks;
    if hooks.score_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(hooks.score_delay_ms));
    }
    let started = Instant::now();
    tracing::info!("{name}: scoring ({} instance(s))", row.instances);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| score_inner(app, &row)));
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(("scoring panicked".to_string(), true)),
    };
    // Messages name the study by its id; logs use the hashed name instead.
    let for_log = |m: &str| m.replace(&row.id, &name);
    match result {
        Ok(outcome) => {
            let forward = app.forward.is_some() && row.kind == InputKind::Dicom && outcome.1;
            if let Err(e) = app.store.finish(&row.id, outcome.0, forward) {
                app.set_unready(&e.to_string());
                return;
            }
            app.metrics.studies_scored.inc();
            app.metrics
                .scoring_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(
                "{name}: done in {:.1} s (P(bleed) {:.3})",
                started.elapsed().as_secs_f64(),
                outcome.0.p_hemorrhage
            );
        }
        Err((msg, ours)) => {
            app.metrics.studies_failed.inc();
            tracing::warn!("{name}: failed: {}", for_log(&msg));
            if let Err(e) = app.store.fail(&row.id, &msg, ours, MAX_ATTEMPTS) {
                app.set_unready(&e.to_string());
            }
        }
    }
}

/// Score one study and write its results; `(outcome, has DICOM results)` or `(message,
/// whether it was our fault)`.
fn score_inner(app: &App, row: &StudyRow) -> Result<(Outcome, bool), (String, bool)> {
    let input = read_inputs(app, row).map_err(|m| (m, true))?;
    let clinical = match &row.clinical {
        Some(text) => hn_engine::infer::parse_clinical_json(Path::new("clinical data"), text)
            .map_err(|e| (e.to_string(), false))?,
        None => Default::default(),
    };
    let with_clinical = row.clinical.is_some();
    let res = app
        .predictor
        .predict_bytes(&row.id, input, clinical)
        .map_err(|e| (e.to_string(), e.fault() == hn_imaging::Fault::Internal))?;
    let dicom = if row.kind == InputKind::Dicom {
        Some(
            app.predictor
                .dicom_results(&res)
                .map_err(|e| (e.to_string(), e.fault() == hn_imaging::Fault::Internal))?,
        )
    } else {
        None
    };
    write_study_dir(&res, &app.store.result_dir(row), dicom.as_ref())
        .map_err(|e| (e.to_string(), true))?;
    let p = &res.prediction;
    Ok((
        Outcome {
            p_hemorrhage: p.decision_path.level_1.probability,
            hemorrhage: p.decision_path.level_1.decision,
            review: p.review.flag,
            with_clinical,
        },
        dicom.is_some(),
    ))
}

/// Forward results until shutdown.
pub fn forwarder(app: Arc<App>) {
    let Some(target) = app.forward.clone() else {
        return;
    };
    while !app.shutdown.load(Ordering::SeqCst) {
        let row = match app.store.next_forward() {
            Ok(Some(r)) => r,
            Ok(None) => {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            Err(e) => {
                app.set_unready(&e.to_string());
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let name = log_name(&row.id);
        let sent = outgoing(app.store.result_dir(&row).join("dicom")).and_then(|objs| {
            crate::forward::send(&target, &app.cfg.forward_calling_ae_title, &objs)
        });
        let attempt = row.forward_attempts + 1;
        let r = match sent {
            Ok(()) => {
                app.metrics.forward_sent.inc();
                tracing::info!("{name}: results sent to {}", target.ae_title);
                app.store.forward_result(&row.id, None, None)
            }
            Err(e) => {
                app.metrics.forward_failed.inc();
                let retry = (attempt < app.cfg.forward_attempts).then(|| {
                    backoff(
                        attempt,
                        app.cfg.forward_backoff_s,
                        app.cfg.forward_max_backoff_s,
                    )
                });
                tracing::warn!(
                    "{name}: forwarding attempt {attempt} failed: {e}{}",
                    match retry {
                        Some(s) => format!("; retry in {s:.0} s"),
                        None => "; giving up".into(),
                    }
                );
                app.store.forward_result(&row.id, Some(&e), retry)
            }
        };
        if let Err(e) = r {
            app.set_unready(&e.to_string());
        }
    }
}

/// The SR and overlays of a result folder, SR first.
fn outgoing(dir: std::path::PathBuf) -> Result<Vec<Outgoing>, String> {
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dcm"))
        .collect();
    names.sort_by_key(|n| (n != "sr.dcm", n.clone()));
    names
        .into_iter()
        .map(|n| {
            let p = dir.join(&n);
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let obj = dicom_object::OpenFileOptions::new()
                .from_reader(&bytes[128.min(bytes.len())..])
                .map_err(|e| format!("{n}: {e}"))?;
            Ok(Outgoing {
                sop_class_uid: obj.meta().media_storage_sop_class_uid().to_string(),
                sop_instance_uid: obj.meta().media_storage_sop_instance_uid().to_string(),
                part10: bytes,
            })
        })
        .collect()
}
