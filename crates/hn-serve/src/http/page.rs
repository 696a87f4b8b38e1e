//! `GET /`: the worklist as one server-rendered HTML page (no script, no build step): the
//! banner, then one row per study in reading order with its result and overlay links.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::studies::reading_order;
use super::{ApiResult, blocking};
use crate::App;
use crate::store::Status;

/// Escape text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encode a path segment.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}\
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.6em 1em;font-weight:600;margin-bottom:1em}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:middle}\
th{background:#f4f4f4}.bleed{background:#fde2e1}.review{background:#fff7d6}.p{font-variant-numeric:tabular-nums}\
img{height:72px;margin-right:4px;border:1px solid #ccc}.muted{color:#666}";

pub async fn worklist_page(State(app): State<Arc<App>>) -> ApiResult<Response> {
    blocking(move || {
        let mut rows = app.store.all()?;
        reading_order(&mut rows);
        let mut h = String::new();
        h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str("<meta http-equiv=\"refresh\" content=\"30\">");
        h.push_str("<title>HemorrhageNet worklist</title><style>");
        h.push_str(STYLE);
        h.push_str("</style></head><body><h1>HemorrhageNet worklist</h1><div class=\"banner\">");
        if app.synthetic_model() {
            h.push_str("SYNTHETIC MODEL — trained on synthetic data only. ");
        }
        h.push_str(
            "Not a medical device: research and triage support only; every result needs a \
             radiologist's read.</div>",
        );
        h.push_str(&format!(
            "<p class=\"muted\">{} stud{} · bleeds first (by probability), then studies flagged \
             for review, then the rest · refreshes every 30 s</p>",
            rows.len(),
            if rows.len() == 1 { "y" } else { "ies" }
        ));
        h.push_str(
            "<table><thead><tr><th>#</th><th>study</th><th>status</th><th>P(bleed)</th>\
             <th>finding</th><th>review</th><th>overlays</th><th>results</th></tr></thead><tbody>",
        );
        for (i, r) in rows.iter().enumerate() {
            let class = match (r.status, r.hemorrhage, r.review) {
                (Status::Done, Some(true), _) => " class=\"bleed\"",
                (Status::Done, _, Some(true)) => " class=\"review\"",
                _ => "",
            };
            let id = seg(&r.id);
            let p = r
                .p_hemorrhage
                .map(|p| format!("{p:.3}"))
                .unwrap_or_else(|| "—".into());
            let finding = match r.hemorrhage {
                Some(true) => "hemorrhage",
                Some(false) => "no hemorrhage",
                None => "—",
            };
            let review = match r.review {
                Some(true) => "FLAGGED",
                Some(false) => "no",
                None => "—",
            };
            let (overlays, results) = if r.status == Status::Done {
                let imgs: String = (1..=3)
                    .map(|n| {
                        format!(
                            "<a href=\"/v1/studies/{id}/overlay/{n}/png\"><img alt=\"overlay {n}\" \
                             src=\"/v1/studies/{id}/overlay/{n}/png\"></a>"
                        )
                    })
                    .collect();
                (
                    imgs,
                    format!(
                        "<a href=\"/v1/studies/{id}\">prediction</a> · \
                         <a href=\"/v1/studies/{id}/sr\">SR</a>"
                    ),
                )
            } else {
                (
                    String::new(),
                    r.error
                        .as_deref()
                        .map(|e| format!("<span class=\"muted\">{}</span>", esc(e)))
                        .unwrap_or_default(),
                )
            };
            h.push_str(&format!(
                "<tr{class}><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"p\">{p}</td>\
                 <td>{finding}</td><td>{review}</td><td>{overlays}</td><td>{results}</td></tr>",
                i + 1,
                esc(&r.id),
                r.status.name(),
            ));
        }
        h.push_str("</tbody></table></body></html>");
        Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], h).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(seg("1.2.3"), "1.2.3");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
