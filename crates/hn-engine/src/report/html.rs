//! The self-contained `report.html`.

#[allow(unused_imports)]
use super::*;

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(super) fn fmt_ci(i: &Option<Interval>) -> String {
    match i {
        Some(i) => format!("{:.3} ({:.3}–{:.3})", i.estimate, i.lo, i.hi),
        None => "–".into(),
    }
}

pub(super) fn f3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

/// The self-contained HTML report.
pub fn render_html(r: &MetricsReport, plots: &ReportPlots) -> Result<String, ReportError> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>HemorrhageNet evaluation: {}</title>\
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}\
.banner{{background:#b00020;color:#fff;padding:10px 16px;font-weight:bold;font-size:1.2em}}\
.plots{{display:flex;flex-wrap:wrap;gap:12px}}img.ov{{image-rendering:pixelated;width:256px}}</style></head><body>",
        esc(&r.dataset.name)
    );
    if r.dataset.synthetic {
        h += "<div class=\"banner\">SYNTHETIC DATA: these numbers describe a simulated cohort, \
not patients. Research software, not a medical device.</div>";
    }
    let _ = write!(
        h,
        "<h1>HemorrhageNet evaluation</h1><p>Dataset <b>{}</b>, split <b>{}</b> ({}), {} studies; \
95 % CIs from {} bootstrap resamples (seed {}); test-time augmentation: <b>{}</b>.</p>",
        esc(&r.dataset.name),
        esc(&r.dataset.split),
        if r.dataset.training_distribution {
            "the model's training data: this split was held out from training"
        } else {
            "<b>external</b> to the model's training data"
        },
        r.dataset.n_studies,
        r.dataset.bootstrap_resamples,
        r.dataset.bootstrap_seed,
        match r.test_time_augmentation {
            TestTimeAugmentation::None => "none (one forward pass)",
            TestTimeAugmentation::Flip => "flip (mean with the left–right mirror image)",
        }
    );
    if let Some(rc) = &r.recalibration {
        let _ = write!(
            h,
            "<h2>Recalibration</h2><p>Calibration refitted on the {} {} studies of this data; \
the {} reported studies under the card's calibration (before) and the refitted one (after, \
used everywhere else in this report).</p><table><tr><th></th><th>ECE before</th>\
<th>ECE after</th><th>Brier before</th><th>Brier after</th></tr>",
            rc.n_fitted,
            esc(&rc.fitted_on),
            rc.n_reported
        );
        let f = |v: Option<f64>| v.map(f3).unwrap_or_else(|| "–".into());
        for (j, task) in ["any", "mortality_30d", "poor_outcome_90d"]
            .iter()
            .enumerate()
        {
            let _ = write!(
                h,
                "<tr><td>{task}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f(rc.before.ece[j]),
                f(rc.after.ece[j]),
                f(rc.before.brier[j]),
                f(rc.after.brier[j])
            );
        }
        let _ = write!(
            h,
            "<tr><td>referral rate (target {})</td><td colspan=\"2\">{} → {}</td><td colspan=\"2\"></td></tr></table>",
            f3(rc.after.target_referral_rate),
            f3(rc.before.referral_rate),
            f3(rc.after.referral_rate)
        );
    }
    h += "<h2>Detection</h2><table><tr><th>label</th><th>n</th><th>pos</th><th>AUC (95 % CI)</th>\
<th>PR AUC</th><th>thr</th><th>sens</th><th>spec</th><th>F1</th><th>Youden thr</th><th>sens</th><th>spec</th></tr>";
    for l in &r.detection {
        let (yt, ys, ysp) = match &l.at_youden {
            Some(y) => (f3(y.threshold), f3(y.sensitivity), f3(y.specificity)),
            None => ("–".into(), "–".into(), "–".into()),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{yt}</td><td>{ys}</td><td>{ysp}</td></tr>",
            esc(&l.label),
            l.n,
            l.n_positive,
            fmt_ci(&l.auc),
            l.pr_auc.map(f3).unwrap_or_else(|| "–".into()),
            // NaN: each study was judged at its own modality's threshold.
            if l.at_chosen.threshold.is_nan() {
                "per modality".into()
            } else {
                f3(l.at_chosen.threshold)
            },
            f3(l.at_chosen.sensitivity),
            f3(l.at_chosen.specificity),
            f3(l.at_chosen.f1),
        );
    }
    h += "</table>";
    if let Some(ll) = r.rsna_log_loss {
        let _ = write!(h, "<p>RSNA-2019 weighted log-loss: <b>{}</b></p>", f3(ll));
    }
    h += "<div class=\"plots\">";
    for (label, curves) in &plots.roc {
        h += &roc_svg(label, curves)?;
    }
    let conf_label = plots.confusion_label.as_deref().unwrap_or("any");
    if let Some(l) = r.detection.iter().find(|l| l.label == conf_label) {
        h += &confusion_svg(&l.label, &l.at_chosen)?;
    }
    h += "</div>";
    if !r.prognosis.is_empty() {
        h += "<h2>Prognosis</h2><table><tr><th>outcome</th><th>n</th><th>pos</th><th>AUC (95 % CI)</th>\
<th>Brier before</th><th>ECE before</th><th>T alone</th><th>ECE after T</th>\
<th>calibration used (validation)</th><th>Brier after</th><th>ECE after</th></tr>";
        for p in &r.prognosis {
            let c = &p.calibration;
            let used = match c.method {
                metrics::CalibrationMethod::Platt => {
                    format!("Platt: z / {} {:+.3}", f3(c.temperature), c.bias)
                }
                metrics::CalibrationMethod::Temperature => {
                    format!("temperature: z / {}", f3(c.temperature))
                }
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.outcome),
                p.n,
                p.n_positive,
                fmt_ci(&p.auc),
                f3(p.brier_before),
                f3(p.ece_before),
                f3(p.temperature),
                f3(p.ece_after_temperature),
                esc(&used),
                f3(p.brier_after),
                f3(p.ece_after)
            );
        }
        h += "</table><div class=\"plots\">";
        for p in &r.prognosis {
            h += &reliability_svg(p)?;
        }
        h += "</div>";
    }
    if let Some(rf) = &r.referral {
        let _ = write!(
            h,
            "<h2>Referral</h2><p>Task {}, uncertainty {}: refer when above {} (target rate {}, \
validation rate {}, rate on these cases {}).</p><div class=\"plots\">{}</div>",
            esc(&rf.task),
            esc(&rf.uncertainty),
            f3(rf.policy.threshold),
            f3(rf.policy.target_rate),
            f3(rf.policy.validation_rate),
            f3(rf.test_rate),
            referral_svg(rf)?
        );
        if let Some(d) = &rf.distance {
            let _ = write!(
                h,
                "<p>Feature distance from the training data: refer when above {} (rate on these \
cases {}); the review flag is atypical <em>or</em> uncertain, so the rate above includes \
both. The chart also ranks by distance alone and by the larger validation rank of the two \
(combined).</p>",
                f3(d.threshold),
                f3(d.test_rate)
            );
        }
    }
    if let Some(f) = &r.hematoma_facts {
        let _ = write!(
            h,
            "<h2>Hematoma facts read-out</h2><table><tr><th>n</th><th>hematoma volume MAE (mL)</th>\
<th>IVH volume MAE (mL)</th><th>right side of the 30 mL cut</th><th>infratentorial AUC</th></tr>\
<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            f.n,
            f3(f.hematoma_ml_mae),
            f3(f.intraventricular_ml_mae),
            f3(f.volume_cut_accuracy),
            f.infratentorial_auc.map(f3).unwrap_or_else(|| "–".into())
        );
    }
    if !r.detection_by_bleed_size.is_empty() {
        h += "<h2>Detection by bleed size</h2><p>Synthetic data: bleeds grouped by the \
generator's true volume, each group against every study without a bleed.</p><table><tr>\
<th>bleeds</th><th>n bleeding</th><th>n without</th><th>any-bleed AUC (95 % CI)</th>\
<th>from the images alone</th></tr>";
        for (k, st) in r.detection_by_bleed_size.iter().enumerate() {
            let image_only = r
                .detection_by_bleed_size_image_only
                .get(k)
                .map_or("–".to_string(), |s| fmt_ci(&s.auc));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&st.label),
                st.n_positive,
                st.n_negative,
                fmt_ci(&st.auc),
                image_only
            );
        }
        h += "</table>";
    }
    if !r.baselines.is_empty() || !r.bayes_limit.is_empty() {
        h += "<h2>Baselines and ablations</h2><table><tr><th>name</th><th>task</th><th>n</th>\
<th>AUC (95 % CI)</th><th>Brier</th><th>model's AUC minus this one, same cases (paired 95 % CI)</th></tr>";
        for b in &r.baselines {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.name),
                esc(&b.task),
                b.n,
                fmt_ci(&b.auc),
                b.brier.map(f3).unwrap_or_else(|| "–".into()),
                b.model_gain
                    .map(|g| format!("{:+.3} [{:+.3}, {:+.3}]", g.estimate, g.lo, g.hi))
                    .unwrap_or_else(|| "–".into())
            );
        }
        for b in &r.bayes_limit {
            let _ = write!(
                h,
                "<tr><td>Bayes limit</td><td>{}</td><td></td><td>{}</td><td>{}</td><td></td></tr>\
<tr><td colspan=\"6\"><small>{}{}</small></td></tr>",
                esc(&b.task),
                f3(b.auc),
                b.brier.map(f3).unwrap_or_else(|| "–".into()),
                esc(&b.note),
                b.ece
                    .map(|e| format!(
                        "; ECE (15 bins) of the true probabilities on these cases: {} — the noise floor of the ECE at this sample size",
                        f3(e)
                    ))
                    .unwrap_or_default()
            );
        }
        h += "</table>";
    }
    if !plots.overlays.is_empty() {
        h += "<h2>Attention examples</h2><div class=\"plots\">";
        for (title, png) in &plots.overlays {
            let _ = write!(
                h,
                "<figure><img class=\"ov\" alt=\"{0}\" src=\"data:image/png;base64,{1}\"><figcaption>{0}</figcaption></figure>",
                esc(title),
                base64::engine::general_purpose::STANDARD.encode(png)
            );
        }
        h += "</div>";
    }
    h += "</body></html>\n";
    Ok(h)
}
