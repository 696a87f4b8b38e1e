//! `/v1/studies…` and `/v1/worklist`: upload a study (zip of DICOM, one DICOM file, or
//! NIfTI, with optional clinical JSON), its status and prediction, its clinical data, its
//! DICOM results, and the reading order.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, blocking};
use crate::App;
use crate::ingest::{self, Upload};
use crate::store::{StudyRow, hashed_name};

/// One multipart form field or the raw body.
struct UploadParts {
    study: Bytes,
    clinical: Option<String>,
}

async fn read_upload(headers: &HeaderMap, body: Bytes) -> ApiResult<UploadParts> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("multipart/form-data") {
        return Ok(UploadParts {
            study: body,
            clinical: None,
        });
    }
    let boundary = multer::parse_boundary(ct)
        .map_err(|e| ApiError::new(400, format!("multipart body: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut study = None;
    let mut clinical = None;
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| ApiError::new(400, format!("multipart body: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::new(400, format!("multipart field {name:?}: {e}")))?;
        match name.as_str() {
            "study" | "file" => study = Some(bytes),
            "clinical" => {
                clinical = Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::new(400, "multipart field \"clinical\" is not UTF-8 text")
                })?)
            }
            other => {
                return Err(ApiError::new(
                    400,
                    format!(
                        "unknown multipart field {other:?} (expected \"study\" and optionally \"clinical\")"
                    ),
                ));
            }
        }
    }
    Ok(UploadParts {
        study: study
            .ok_or_else(|| ApiError::new(400, "multipart body without a \"study\" field"))?,
        clinical,
    })
}

/// Validate clinical JSON as the engine will read it; the canonical text to store.
fn check_clinical(text: &str, origin: &str) -> ApiResult<String> {
    hn_engine::infer::parse_clinical_json(FsPath::new(origin), text)
        .map_err(|e| ApiError::new(400, e.to_string()))?;
    let v: Value = serde_json::from_str(text).map_err(|e| ApiError::new(400, e.to_string()))?;
    Ok(v.to_string())
}

/// `POST /v1/studies`: a zip of one study's DICOM files, one DICOM file, or a NIfTI file, as
/// the body or as multipart field `study` (with optional field `clinical`). `202 {"id": …}`.
pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let up = read_upload(&headers, body).await?;
    let clinical = up
        .clinical
        .as_deref()
        .map(|t| check_clinical(t, "multipart field \"clinical\""))
        .transpose()?;
    let a = app.clone();
    let (id, instances, skipped) = blocking(move || {
        let bytes = up.study;
        match ingest::sniff(&bytes) {
            Some(Upload::Zip) => {
                let (insts, skipped) =
                    ingest::unzip(&bytes, &a.cfg.limits, &a.accepted_sop_classes)?;
                let mut studies: Vec<&str> = insts
                    .iter()
                    .map(|i| i.study_instance_uid.as_str())
                    .collect();
                studies.sort();
                studies.dedup();
                let id = match studies.as_slice() {
                    [] => {
                        return Err(ApiError::new(
                            400,
                            format!(
                                "the archive holds no CT instance ({skipped} other file(s) skipped)"
                            ),
                        ));
                    }
                    [one] => one.to_string(),
                    many => {
                        return Err(ApiError::new(
                            400,
                            format!(
                                "the archive holds {} studies; send one study per request",
                                many.len()
                            ),
                        ));
                    }
                };
                for (k, inst) in insts.iter().enumerate() {
                    a.metrics.instances_received.inc();
                    ingest::admit(&a.store, &a.cfg, inst, &format!("instance {}", k + 1))?;
                }
                if let Some(c) = &clinical {
                    a.store.set_clinical(&id, c)?;
                }
                a.store.promote_now(&id)?;
                Ok((id, insts.len(), skipped))
            }
            Some(Upload::Dicom) => {
                let inst = ingest::parse_part10(
                    "DICOM file",
                    bytes.to_vec(),
                    a.cfg.limits.max_instance_bytes,
                    &a.accepted_sop_classes,
                )?;
                a.metrics.instances_received.inc();
                ingest::admit(&a.store, &a.cfg, &inst, "DICOM file")?;
                let id = inst.study_instance_uid.clone();
                if let Some(c) = &clinical {
                    a.store.set_clinical(&id, c)?;
                }
                a.store.promote_now(&id)?;
                Ok((id, 1, 0))
            }
            Some(Upload::Nifti { gz }) => {
                ingest::check_nifti(&bytes)?;
                let id = format!("nifti-{}", crate::store::content_name(&bytes));
                match a.store.add_nifti(
                    &id,
                    &bytes,
                    gz,
                    clinical.as_deref(),
                    a.cfg.queue_capacity,
                )? {
                    crate::store::Admission::Stored => Ok((id, 1, 0)),
                    _ => Err(crate::ingest::IngestError::QueueFull.into()),
                }
            }
            None => Err(ApiError::new(
                415,
                "the body is not a zip, a DICOM Part-10 file or a NIfTI file",
            )),
        }
    })
    .await?;
    app.metrics.studies_received.inc();
    app.wake_workers();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "id": id, "status": "queued", "instances": instances, "skipped_files": skipped })),
    )
        .into_response())
}

fn row_or_404(app: &App, id: &str) -> ApiResult<StudyRow> {
    app.store
        .get(id)?
        .ok_or_else(|| ApiError::not_found("study"))
}

fn prediction(app: &App, row: &StudyRow) -> Option<Value> {
    let p = app.store.result_dir(row).join("prediction.json");
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// The status document of a study.
fn status_json(app: &App, row: &StudyRow) -> Value {
    let mut v = json!({
        "id": row.id,
        "status": row.status.name(),
        "input": row.kind,
        "instances": row.instances,
        "bytes": row.bytes,
        "received_unix": row.received_unix,
        "updated_unix": row.updated_unix,
        "attempts": row.attempts,
        "clinical_given": row.clinical_given,
        "error": row.error,
    });
    if let Some(f) = &row.forward_status {
        v["forward"] = json!({
            "status": f,
            "attempts": row.forward_attempts,
            "error": row.forward_error,
        });
    }
    if let Some(with) = row.scored_with_clinical {
        v["scored_with_clinical_data"] = json!(with);
        if !with {
            v["note"] = json!(
                "scored without clinical data: prognosis and feature weights use none; PUT /v1/studies/{id}/clinical rescores"
            );
        }
    }
    if row.status == crate::store::Status::Done
        && let Some(p) = prediction(app, row)
    {
        v["prediction"] = p;
    }
    v
}

/// `GET /v1/studies/{id}`.
pub async fn status(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Response> {
    blocking(move || {
        let row = row_or_404(&app, &id)?;
        Ok(axum::Json(status_json(&app, &row)).into_response())
    })
    .await
}

/// `PUT /v1/studies/{id}/clinical`: a JSON object of clinical features. Before the images
/// arrive it waits for them; a scored study is scored again with it (the result is replaced).
pub async fn put_clinical(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(400, "clinical data must be UTF-8 JSON"))?;
    let text = check_clinical(text, "request body")?;
    let a = app.clone();
    let row = blocking(move || {
        let known = a.store.get(&id)?.is_some();
        if !known && hn_imaging::dicom::identity::check_value(dicom_core::VR::UI, &id).is_err() {
            return Err(ApiError::new(
                404,
                "unknown study, and the id is not a StudyInstanceUID whose images could follow",
            ));
        }
        Ok(a.store.set_clinical(&id, &text)?)
    })
    .await?;
    app.wake_workers();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "id": row.id, "status": row.status.name(), "rescore": row.rescore || row.status == crate::store::Status::Queued })),
    )
        .into_response())
}

fn dicom_file(app: &App, id: &str, name: &str) -> ApiResult<Vec<u8>> {
    let row = row_or_404(app, id)?;
    if row.status != crate::store::Status::Done {
        return Err(ApiError::new(
            404,
            format!("no results yet: the study is {}", row.status.name()),
        ));
    }
    std::fs::read(app.store.result_dir(&row).join("dicom").join(name))
        .map_err(|_| ApiError::not_found("DICOM result"))
}

fn dicom_response(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/dicom")], bytes).into_response()
}

/// `GET /v1/studies/{id}/sr`: the Enhanced SR (application/dicom).
pub async fn sr(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Response> {
    blocking(move || dicom_file(&app, &id, "sr.dcm").map(dicom_response)).await
}

/// `GET /v1/studies/{id}/overlay/{n}`: one overlay instance (1-based).
pub async fn overlay(
    State(app): State<Arc<App>>,
    Path((id, n)): Path<(String, u32)>,
) -> ApiResult<Response> {
    blocking(move || dicom_file(&app, &id, &format!("overlay_{n:02}.dcm")).map(dicom_response))
        .await
}

/// `GET /v1/studies/{id}/overlay`: every overlay instance, `multipart/related;
/// type="application/dicom"` (as DICOMweb WADO-RS returns instances).
pub async fn overlays(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Response> {
    blocking(move || {
        let mut parts = Vec::new();
        for n in 1..=99u32 {
            match dicom_file(&app, &id, &format!("overlay_{n:02}.dcm")) {
                Ok(b) => parts.push(b),
                Err(e) if n == 1 => return Err(e),
                Err(_) => break,
            }
        }
        let boundary = format!("hnet-{}", &hashed_name(&id)[..12]);
        let mut body = Vec::new();
        for p in parts {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(&p);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        Ok((
            [(
                header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )],
            body,
        )
            .into_response())
    })
    .await
}

/// `GET /v1/studies/{id}/overlay/{n}/png`: the same picture as PNG (for the worklist page).
pub async fn overlay_png(
    State(app): State<Arc<App>>,
    Path((id, n)): Path<(String, usize)>,
) -> ApiResult<Response> {
    blocking(move || {
        let row = row_or_404(&app, &id)?;
        let p = prediction(&app, &row).ok_or_else(|| ApiError::not_found("result"))?;
        let name = p["key_slices"]
            .get(n.wrapping_sub(1))
            .and_then(|k| k["overlay"].as_str())
            .ok_or_else(|| ApiError::not_found("overlay"))?
            .to_string();
        let bytes = std::fs::read(app.store.result_dir(&row).join(&name))
            .map_err(|_| ApiError::not_found("overlay"))?;
        Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())
    })
    .await
}

/// The reading order: scored bleeds first (by P, highest first), then studies flagged for
/// review, then the other scored studies (by P), then those not scored yet (newest first) and
/// failed ones.
pub fn reading_order(rows: &mut [StudyRow]) {
    use crate::store::Status;
    let rank = |r: &StudyRow| match (r.status, r.hemorrhage, r.review) {
        (Status::Done, Some(true), _) => 0,
        (Status::Done, _, Some(true)) => 1,
        (Status::Done, _, _) => 2,
        (Status::Failed, _, _) => 4,
        _ => 3,
    };
    rows.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(
                b.p_hemorrhage
                    .unwrap_or(-1.0)
                    .total_cmp(&a.p_hemorrhage.unwrap_or(-1.0)),
            )
            .then(b.received_unix.total_cmp(&a.received_unix))
    });
}

/// `GET /v1/worklist`.
pub async fn worklist(State(app): State<Arc<App>>) -> ApiResult<Response> {
    blocking(move || {
        let mut rows = app.store.all()?;
        reading_order(&mut rows);
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "status": r.status.name(),
                    "p_hemorrhage": r.p_hemorrhage,
                    "hemorrhage": r.hemorrhage,
                    "review": r.review,
                    "received_unix": r.received_unix,
                    "scored_with_clinical_data": r.scored_with_clinical,
                    "forward_status": r.forward_status,
                })
            })
            .collect();
        Ok(axum::Json(json!({ "studies": items })).into_response())
    })
    .await
}
