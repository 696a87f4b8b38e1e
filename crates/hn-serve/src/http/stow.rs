//! `POST /dicomweb/studies`: DICOMweb STOW-RS (PS3.18 §10.5). The body is
//! `multipart/related; type="application/dicom"`, one Part-10 instance per part; the answer is
//! the Store Instances Response Module as DICOM JSON: 200 when every instance was stored, 202
//! when some failed, 409 when none was stored (the failure reasons per instance in the Failed
//! SOP Sequence), 503 with Retry-After when the queue is full.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, blocking};
use crate::App;
use crate::ingest::{self, IngestError};

/// The boundary of a `multipart/related; type="application/dicom"` body.
fn related_boundary(ct: &str) -> ApiResult<String> {
    let m: mime::Mime = ct
        .parse()
        .map_err(|_| ApiError::new(415, format!("unreadable Content-Type {ct:?}")))?;
    if m.type_() != mime::MULTIPART || m.subtype().as_str() != "related" {
        return Err(ApiError::new(
            415,
            "STOW-RS needs Content-Type multipart/related; type=\"application/dicom\"",
        ));
    }
    match m.get_param("type").map(|t| t.as_str().to_ascii_lowercase()) {
        Some(t) if t == "application/dicom" => {}
        Some(t) => {
            return Err(ApiError::new(
                415,
                format!("STOW-RS part type {t:?} is not supported (only application/dicom)"),
            ));
        }
        None => {}
    }
    m.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_string())
        .ok_or_else(|| ApiError::new(400, "multipart/related without a boundary"))
}

fn ui(v: &str) -> Value {
    json!({ "vr": "UI", "Value": [v] })
}

pub async fn store_instances(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = related_boundary(ct)?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| ApiError::new(400, format!("multipart body: {e}")))?
    {
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::new(400, format!("multipart part {}: {e}", parts.len() + 1)))?;
        parts.push(bytes);
    }
    if parts.is_empty() {
        return Err(ApiError::new(400, "STOW-RS body without parts"));
    }
    let a = app.clone();
    let (stored, failed, refusal) = blocking(move || {
        let mut stored: Vec<Value> = Vec::new();
        let mut failed: Vec<Value> = Vec::new();
        // A refusal that is the node's state, not the part's: answered as such (503 / 507)
        // when nothing was stored, so that the client retries.
        let mut refusal: Option<IngestError> = None;
        for (k, bytes) in parts.into_iter().enumerate() {
            let part = format!("part {}", k + 1);
            a.metrics.instances_received.inc();
            let r = ingest::parse_part10(
                &part,
                bytes.to_vec(),
                a.cfg.limits.max_instance_bytes,
                &a.accepted_sop_classes,
            )
            .and_then(|inst| ingest::admit(&a.store, &a.cfg, &inst, &part).map(|_| inst));
            match r {
                Ok(inst) => {
                    stored.push(json!({
                        "00081150": ui(&inst.sop_class_uid),
                        "00081155": ui(&inst.sop_instance_uid),
                    }));
                    a.note_received(&inst.study_instance_uid);
                }
                Err(e) => {
                    a.metrics.instances_refused.inc();
                    if matches!(e, IngestError::Store(_)) {
                        a.set_unready(&e.to_string());
                    }
                    tracing::warn!("STOW-RS {part} refused: {e}");
                    // FailureReason (0008,1197): the C-STORE status codes (PS3.18 Table 10.5.3-1).
                    failed.push(json!({
                        "00081197": { "vr": "US", "Value": [e.dimse_status()] },
                        "00000902": { "vr": "LO", "Value": [e.to_string()] },
                    }));
                    if matches!(e.http_status(), 503 | 507) {
                        refusal = Some(e);
                    }
                }
            }
        }
        Ok((stored, failed, refusal))
    })
    .await?;
    if let (true, Some(e)) = (stored.is_empty(), refusal) {
        return Err(e.into());
    }
    let status = match (stored.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut doc = serde_json::Map::new();
    if !stored.is_empty() {
        doc.insert("00081199".into(), json!({ "vr": "SQ", "Value": stored }));
    }
    if !failed.is_empty() {
        doc.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Value::Object(doc).to_string(),
    )
        .into_response())
}
