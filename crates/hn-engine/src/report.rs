//! The evaluation report: `metrics.json` (schema in `docs/METRICS.md`, the serde structs
//! below) and a self-contained `report.html` (inline SVG plots drawn by plotters, heatmap
//! overlays as base64 PNG).
//!
//! Plots use plotters' SVG backend with no font feature: text becomes SVG `<text>` elements
//! laid out by the browser, so nothing needs fontconfig or system fonts at build or run time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::metrics::{
    self, ECE_BINS, Interval, MetricsError, OperatingPoint, ReferralPoint, ReferralPolicy,
    ReliabilityBin, RocPoint,
};
use crate::scoring::TestTimeAugmentation;

/// Version of the `metrics.json` schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 2;

/// Report errors.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plot: {0}")]
    Plot(String),
    #[error("{0}")]
    Invalid(String),
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub schema_version: u32,
    pub dataset: DatasetInfo,
    /// Hemorrhage detection, one entry per label (`any`, then the subtypes).
    pub detection: Vec<LabelMetrics>,
    /// RSNA-2019 weighted log-loss over the evaluated rows, when all six labels are known.
    pub rsna_log_loss: Option<f64>,
    /// Prognosis, one entry per outcome (`mortality_30d`, `poor_outcome_90d`).
    pub prognosis: Vec<PrognosisMetrics>,
    /// Uncertainty-aware referral, when evaluated.
    pub referral: Option<ReferralReport>,
    /// Baselines and ablations on the same cases, side by side with the model.
    pub baselines: Vec<BaselineResult>,
    /// Best achievable AUC per task when the data generator is known (synthetic data).
    pub bayes_limit: Vec<BayesLimit>,
    /// Agreement of the model's hematoma-facts read-out with the known facts on these cases
    /// (when both exist).
    #[serde(default)]
    pub hematoma_facts: Option<metrics::FactsAgreement>,
    /// How the model's outputs were computed (`none`: one pass; `flip`: mean with the mirror).
    #[serde(default)]
    pub test_time_augmentation: TestTimeAugmentation,
    /// With `evaluate --recalibrate-on validation`: the reported split under the card's
    /// calibration and under the one refitted on this data (the rest of this report).
    #[serde(default)]
    pub recalibration: Option<RecalibrationReport>,
}

/// The same studies under two calibrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecalibrationReport {
    /// Where the new calibration was fitted (`validation` of this data).
    pub fitted_on: String,
    pub n_fitted: usize,
    /// Studies both are reported on.
    pub n_reported: usize,
    pub before: CalibrationCheck,
    pub after: CalibrationCheck,
}

/// How well one calibration fits the reported studies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationCheck {
    /// `[any, mortality_30d, poor_outcome_90d]` expected calibration error (`null`: no labels).
    pub ece: [Option<f64>; 3],
    pub brier: [Option<f64>; 3],
    /// Operating thresholds `[any, 5 subtypes]`.
    pub thresholds: [f64; 6],
    /// Fraction of the reported studies flagged for review, and the rate the policy targets.
    pub referral_rate: f64,
    pub target_referral_rate: f64,
}

/// What was evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub synthetic: bool,
    /// `test`, `validation`, `all`, ...
    pub split: String,
    /// True when this is the data the model was trained on (same dataset digest), so the
    /// split is held out from training; false for an external cohort.
    #[serde(default)]
    pub training_distribution: bool,
    pub n_studies: usize,
    /// Seed of the bootstrap CIs.
    pub bootstrap_seed: u64,
    pub bootstrap_resamples: usize,
}

/// Detection metrics of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    pub label: String,
    pub n: usize,
    pub n_positive: usize,
    /// ROC AUC with percentile-bootstrap 95 % CI; `None` with a single class.
    pub auc: Option<Interval>,
    /// Average precision; `None` with a single class.
    pub pr_auc: Option<f64>,
    /// At the chosen (e.g. validation-picked) threshold.
    pub at_chosen: OperatingPoint,
    /// At the Youden-optimal threshold on these cases (optimistic: picked on test).
    pub at_youden: Option<OperatingPoint>,
}

/// Prognosis metrics of one binary outcome, before and after calibration on validation logits:
/// temperature scaling alone, and the calibration the model card applies
/// ([`metrics::fit_logit_calibration`]: Platt scaling where validation has enough of both
/// outcomes, else the same temperature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrognosisMetrics {
    pub outcome: String,
    pub n: usize,
    pub n_positive: usize,
    pub auc: Option<Interval>,
    /// Temperature fitted on validation logits (temperature scaling alone).
    pub temperature: f64,
    pub brier_after_temperature: f64,
    pub ece_after_temperature: f64,
    /// The card's calibration (`z / T + bias`), fitted on validation logits.
    pub calibration: metrics::LogitCalibration,
    pub brier_before: f64,
    /// After [`calibration`](Self::calibration).
    pub brier_after: f64,
    /// 15-bin ECE.
    pub ece_before: f64,
    /// After [`calibration`](Self::calibration).
    pub ece_after: f64,
    pub reliability_before: Vec<ReliabilityBin>,
    pub reliability_after_temperature: Vec<ReliabilityBin>,
    pub reliability_after: Vec<ReliabilityBin>,
}

/// Referral evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralReport {
    /// Task the referral applies to (e.g. `any`).
    pub task: String,
    /// Uncertainty score used (e.g. `predictive_entropy`).
    pub uncertainty: String,
    /// Policy fitted on validation.
    pub policy: ReferralPolicy,
    /// Referral rate that policy gives on the evaluated cases.
    pub test_rate: f64,
    pub curve: Vec<ReferralPoint>,
}

/// A baseline or ablation on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    /// `model`, `ich_score`, `clinical_lr`, `image_only`, `clinical_only`, ...
    pub name: String,
    pub task: String,
    pub n: usize,
    pub auc: Option<Interval>,
    /// Brier score when the outputs are probabilities.
    pub brier: Option<f64>,
}

/// Bayes limit of a task (synthetic data: the generator's own probabilities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BayesLimit {
    pub task: String,
    pub auc: f64,
    /// 15-bin ECE of the true probabilities on the same cases: the ECE a perfectly calibrated
    /// model would show on this sample (estimation noise of the metric itself).
    #[serde(default)]
    pub ece: Option<f64>,
    /// Brier score of the true probabilities on the same cases.
    #[serde(default)]
    pub brier: Option<f64>,
    pub note: String,
}

fn auc_opt(
    s: &[f64],
    y: &[bool],
    n_boot: usize,
    seed: u64,
) -> Result<Option<Interval>, ReportError> {
    match metrics::roc_auc_ci(s, y, n_boot, seed) {
        Ok(i) => Ok(Some(i)),
        Err(MetricsError::SingleClass(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Detection metrics of one label from scores (probabilities or logits) at `threshold`.
pub fn label_metrics(
    label: &str,
    scores: &[f64],
    labels: &[bool],
    threshold: f64,
    n_boot: usize,
    seed: u64,
) -> Result<LabelMetrics, ReportError> {
    let auc = auc_opt(scores, labels, n_boot, seed)?;
    let two = auc.is_some();
    Ok(LabelMetrics {
        label: label.to_string(),
        n: scores.len(),
        n_positive: labels.iter().filter(|l| **l).count(),
        auc,
        pr_auc: if two {
            Some(metrics::average_precision(scores, labels)?)
        } else {
            None
        },
        at_chosen: metrics::at_threshold(scores, labels, threshold)?,
        at_youden: if two {
            Some(metrics::youden(scores, labels)?)
        } else {
            None
        },
    })
}

/// Prognosis metrics: temperature scaling and the card's calibration fitted on validation
/// logits, applied to test logits.
pub fn prognosis_metrics(
    outcome: &str,
    fixed: Option<metrics::LogitCalibration>,
    val_logits: &[f64],
    val_labels: &[bool],
    test_logits: &[f64],
    test_labels: &[bool],
    n_boot: usize,
    seed: u64,
) -> Result<PrognosisMetrics, ReportError> {
    let (t, calibration) = match fixed {
        Some(c) => (c.temperature, c),
        None => (
            metrics::fit_temperature(val_logits, val_labels)?,
            metrics::fit_logit_calibration(val_logits, val_labels)?,
        ),
    };
    let before = metrics::apply_temperature(test_logits, 1.0);
    let scaled = metrics::apply_temperature(test_logits, t);
    let after = calibration.probabilities(test_logits);
    Ok(PrognosisMetrics {
        outcome: outcome.to_string(),
        n: test_logits.len(),
        n_positive: test_labels.iter().filter(|l| **l).count(),
        auc: auc_opt(test_logits, test_labels, n_boot, seed)?,
        temperature: t,
        brier_after_temperature: metrics::brier(&scaled, test_labels)?,
        ece_after_temperature: metrics::ece(&scaled, test_labels, ECE_BINS)?,
        calibration,
        brier_before: metrics::brier(&before, test_labels)?,
        brier_after: metrics::brier(&after, test_labels)?,
        ece_before: metrics::ece(&before, test_labels, ECE_BINS)?,
        ece_after: metrics::ece(&after, test_labels, ECE_BINS)?,
        reliability_before: metrics::reliability(&before, test_labels, ECE_BINS)?,
        reliability_after_temperature: metrics::reliability(&scaled, test_labels, ECE_BINS)?,
        reliability_after: metrics::reliability(&after, test_labels, ECE_BINS)?,
    })
}

/// A baseline's AUC (and Brier when `probs_are_probabilities`).
pub fn baseline_result(
    name: &str,
    task: &str,
    scores: &[f64],
    labels: &[bool],
    probs_are_probabilities: bool,
    n_boot: usize,
    seed: u64,
) -> Result<BaselineResult, ReportError> {
    Ok(BaselineResult {
        name: name.to_string(),
        task: task.to_string(),
        n: scores.len(),
        auc: auc_opt(scores, labels, n_boot, seed)?,
        brier: if probs_are_probabilities {
            Some(metrics::brier(scores, labels)?)
        } else {
            None
        },
    })
}

/// Named ROC curves of one label: `(series name, curve)`, model first then baselines.
pub type RocSet = Vec<(String, Vec<RocPoint>)>;

/// Curves and images for `report.html` (not part of `metrics.json`).
#[derive(Debug, Clone, Default)]
pub struct ReportPlots {
    /// Per label: `(label, [(series name, ROC curve)])`, model first then baselines.
    pub roc: Vec<(String, RocSet)>,
    /// Heatmap overlays: `(title, PNG bytes)` e.g. from [`render_overlay_png`].
    pub overlays: Vec<(String, Vec<u8>)>,
    /// Label whose confusion matrix (at the chosen threshold) is drawn; default `any`.
    pub confusion_label: Option<String>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn plot_err<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError::Plot(e.to_string())
}

type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// A line chart on [0, 1]² as an SVG string.
fn line_chart_svg(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series<'_>],
    diagonal: bool,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (440, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(6)
            .y_labels(6)
            .draw()
            .map_err(plot_err)?;
        if diagonal {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, 0.0), (1.0, 1.0)],
                    ShapeStyle::from(&RGBColor(160, 160, 160)).stroke_width(1),
                ))
                .map_err(plot_err)?;
        }
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    pts.iter().copied(),
                    ShapeStyle::from(&c).stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// ROC curves of one label (model and baselines) as SVG.
pub fn roc_svg(label: &str, curves: &[(String, Vec<RocPoint>)]) -> Result<String, ReportError> {
    let s: Vec<Series<'_>> = curves
        .iter()
        .map(|(n, c)| (n.as_str(), c.iter().map(|p| (p.fpr, p.tpr)).collect()))
        .collect();
    line_chart_svg(
        &format!("ROC: {label}"),
        "1 - specificity",
        "sensitivity",
        &s,
        true,
    )
}

/// Reliability diagram (before calibration, after temperature scaling, after the card's
/// calibration) as SVG.
pub fn reliability_svg(p: &PrognosisMetrics) -> Result<String, ReportError> {
    let pts = |bins: &[ReliabilityBin]| -> Vec<(f64, f64)> {
        bins.iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.mean_pred, b.frac_pos))
            .collect()
    };
    line_chart_svg(
        &format!("Reliability: {}", p.outcome),
        "mean predicted probability",
        "observed frequency",
        &[
            ("uncalibrated", pts(&p.reliability_before)),
            ("temperature", pts(&p.reliability_after_temperature)),
            (
                match p.calibration.method {
                    metrics::CalibrationMethod::Platt => "Platt (used)",
                    metrics::CalibrationMethod::Temperature => "temperature (used)",
                },
                pts(&p.reliability_after),
            ),
        ],
        true,
    )
}

/// Referral curve (AUC and accuracy of retained cases vs fraction referred) as SVG.
pub fn referral_svg(r: &ReferralReport) -> Result<String, ReportError> {
    let auc: Vec<(f64, f64)> = r
        .curve
        .iter()
        .filter_map(|p| p.auc.map(|a| (p.fraction_referred, a)))
        .collect();
    let acc: Vec<(f64, f64)> = r
        .curve
        .iter()
        .filter(|p| p.accuracy.is_finite())
        .map(|p| (p.fraction_referred, p.accuracy))
        .collect();
    line_chart_svg(
        &format!("Referral: {}", r.task),
        "fraction referred",
        "metric on retained cases",
        &[("AUC", auc), ("accuracy", acc)],
        false,
    )
}

/// 2×2 confusion matrix as SVG.
pub fn confusion_svg(label: &str, op: &OperatingPoint) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (360, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let cells = [
            (0, 0, "TN", op.tn),
            (1, 0, "FP", op.fp),
            (0, 1, "FN", op.fn_),
            (1, 1, "TP", op.tp),
        ];
        let max = cells.iter().map(|c| c.3).max().unwrap_or(1).max(1) as f64;
        let style = |size| ("sans-serif", size).into_font().color(&BLACK);
        root.draw(&Text::new(
            format!("{label} @ {:.3}", op.threshold),
            (20, 8),
            style(16),
        ))
        .map_err(plot_err)?;
        for (col, row, name, n) in cells {
            let (x0, y0) = (90 + col * 120, 50 + row * 120);
            let shade = 255 - (n as f64 / max * 180.0) as u8;
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + 118, y0 + 118)],
                RGBColor(shade, shade, 255).filled(),
            ))
            .map_err(plot_err)?;
            root.draw(&Text::new(
                format!("{name} {n}"),
                (x0 + 30, y0 + 52),
                style(18),
            ))
            .map_err(plot_err)?;
        }
        root.draw(&Text::new("pred −", (120, 295), style(14)))
            .map_err(plot_err)?;
        root.draw(&Text::new("pred +", (240, 295), style(14)))
            .map_err(plot_err)?;
        root.draw(&Text::new("true −", (20, 105), style(14)))
            .map_err(plot_err)?;
        root.draw(&Text::new("true +", (20, 225), style(14)))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// A grayscale slice with a heatmap overlaid, as PNG bytes (RGB8, `w × h`, row-major inputs).
///
/// The slice is min–max scaled to gray; the heat is scaled by its maximum (values ≤ 0 are
/// transparent) and blended with a blue→red→yellow colour map at alpha `0.6·heat`.
/// Nearest-neighbour upscaling of a `w × h` image by an integer `factor`, so overlays of a
/// coarse model grid stay legible (each model pixel becomes a visible block, no invented detail).
pub fn upscale_nearest(img: &[f32], w: usize, h: usize, factor: usize) -> Vec<f32> {
    let f = factor.max(1);
    let mut out = Vec::with_capacity(img.len() * f * f);
    for y in 0..h * f {
        let row = &img[(y / f) * w..(y / f + 1) * w];
        for x in 0..w * f {
            out.push(row[x / f]);
        }
    }
    out
}

/// Integer factor that brings the larger side of a `w × h` image to at least `target` pixels.
pub fn display_factor(w: usize, h: usize, target: usize) -> usize {
    target.div_ceil(w.max(h).max(1)).max(1)
}

pub fn render_overlay_png(
    slice: &[f32],
    heat: &[f32],
    w: usize,
    h: usize,
) -> Result<Vec<u8>, ReportError> {
    if slice.len() != w * h || heat.len() != w * h || w == 0 || h == 0 {
        return Err(ReportError::Invalid(format!(
            "overlay: slice has {} and heat {} values, {w}×{h} needs {}",
            slice.len(),
            heat.len(),
            w * h
        )));
    }
    let finite = |v: &f32| v.is_finite();
    let (lo, hi) = slice
        .iter()
        .filter(|v| finite(v))
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let hmax = heat
        .iter()
        .filter(|v| finite(v))
        .fold(0f32, |a, v| a.max(*v));
    let mut rgb = Vec::with_capacity(w * h * 3);
    for (s, t) in slice.iter().zip(heat) {
        let g = if s.is_finite() {
            ((s - lo) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let t = if hmax > 0.0 && t.is_finite() {
            (t / hmax).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // blue (0) -> red (0.5) -> yellow (1)
        let (r, gg, b) = if t < 0.5 {
            (2.0 * t, 0.0, 1.0 - 2.0 * t)
        } else {
            (1.0, 2.0 * t - 1.0, 0.0)
        };
        let a = 0.6 * t;
        for c in [r, gg, b] {
            rgb.push((((1.0 - a) * g + a * c) * 255.0).round() as u8);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(plot_err)?;
        wr.write_image_data(&rgb).map_err(plot_err)?;
    }
    Ok(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_ci(i: &Option<Interval>) -> String {
    match i {
        Some(i) => format!("{:.3} ({:.3}–{:.3})", i.estimate, i.lo, i.hi),
        None => "–".into(),
    }
}

fn f3(v: f64) -> String {
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
        "<h1>HemorrhageNet evaluation</h1><p>Dataset <b>{}</b>, split <b>{}</b>, {} studies; \
95 % CIs from {} bootstrap resamples (seed {}); test-time augmentation: <b>{}</b>.</p>",
        esc(&r.dataset.name),
        esc(&r.dataset.split),
        r.dataset.n_studies,
        r.dataset.bootstrap_resamples,
        r.dataset.bootstrap_seed,
        match r.test_time_augmentation {
            TestTimeAugmentation::None => "none (one forward pass)",
            TestTimeAugmentation::Flip => "flip (mean with the left–right mirror image)",
        }
    );
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
            f3(l.at_chosen.threshold),
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
    if !r.baselines.is_empty() || !r.bayes_limit.is_empty() {
        h += "<h2>Baselines and ablations</h2><table><tr><th>name</th><th>task</th><th>n</th>\
<th>AUC (95 % CI)</th><th>Brier</th></tr>";
        for b in &r.baselines {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.name),
                esc(&b.task),
                b.n,
                fmt_ci(&b.auc),
                b.brier.map(f3).unwrap_or_else(|| "–".into())
            );
        }
        for b in &r.bayes_limit {
            let _ = write!(
                h,
                "<tr><td>Bayes limit</td><td>{}</td><td></td><td>{}</td><td>{}</td></tr>\
<tr><td colspan=\"5\"><small>{}{}</small></td></tr>",
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

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::atomic::write_file(path, bytes)
        .map_err(|(path, source)| ReportError::Io { path, source })
}

/// Write `metrics.json` and `report.html` into `dir` (created). Returns their paths.
pub fn write_report(
    dir: &Path,
    r: &MetricsReport,
    plots: &ReportPlots,
) -> Result<(PathBuf, PathBuf), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_vec_pretty(r).map_err(|e| ReportError::Invalid(e.to_string()))?;
    let html = render_html(r, plots)?;
    let (jp, hp) = (dir.join("metrics.json"), dir.join("report.html"));
    write_atomic(&jp, &json)?;
    write_atomic(&hp, html.as_bytes())?;
    Ok((jp, hp))
}

/// Detection outputs and truth, rows = studies (or slices), columns = [`metrics::RSNA_LABELS`].
#[derive(Debug, Clone, Default)]
pub struct DetectionInputs {
    pub probs: Vec<[f64; 6]>,
    pub truth: Vec<[bool; 6]>,
    /// Operating thresholds per label (e.g. picked on validation).
    pub thresholds: [f64; 6],
}

/// One binary prognosis outcome: validation logits fit the temperature, test logits are scored.
#[derive(Debug, Clone, Default)]
pub struct PrognosisInputs {
    pub outcome: String,
    /// The calibration to apply instead of one fitted on `val_logits` (external data scored
    /// with the card's calibration: nothing of it is used to fit).
    pub fixed: Option<metrics::LogitCalibration>,
    pub val_logits: Vec<f64>,
    pub val_labels: Vec<bool>,
    pub test_logits: Vec<f64>,
    pub test_labels: Vec<bool>,
}

/// Referral inputs for one task.
#[derive(Debug, Clone, Default)]
pub struct ReferralInputs {
    pub task: String,
    pub uncertainty: String,
    /// The policy to apply instead of one fitted on `val_uncertainty`.
    pub fixed: Option<ReferralPolicy>,
    pub val_uncertainty: Vec<f64>,
    pub target_rate: f64,
    pub test_probs: Vec<f64>,
    pub test_labels: Vec<bool>,
    pub test_uncertainty: Vec<f64>,
}

/// A baseline's (or ablation's) scores on the same cases as the model for `task`
/// (a detection label or a prognosis outcome name).
#[derive(Debug, Clone, Default)]
pub struct BaselineInputs {
    pub name: String,
    pub task: String,
    pub scores: Vec<f64>,
    pub labels: Vec<bool>,
    /// True when `scores` are probabilities (then Brier is reported).
    pub probabilities: bool,
}

/// Everything an evaluation produced, for [`evaluate`].
#[derive(Debug, Clone)]
pub struct EvalInputs {
    pub dataset: DatasetInfo,
    pub detection: Option<DetectionInputs>,
    pub prognosis: Vec<PrognosisInputs>,
    pub referral: Option<ReferralInputs>,
    pub baselines: Vec<BaselineInputs>,
    pub bayes_limit: Vec<BayesLimit>,
    pub hematoma_facts: Option<metrics::FactsAgreement>,
    pub test_time_augmentation: TestTimeAugmentation,
    /// Overlay PNGs for the attention section.
    pub overlays: Vec<(String, Vec<u8>)>,
}

/// Referral fractions of the report's curve: 0, 5, ..., 50 %.
pub const REFERRAL_FRACTIONS: [f64; 11] =
    [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5];

/// Compute the whole report (and its plots) from model outputs, baselines and truth.
pub fn evaluate(inp: &EvalInputs) -> Result<(MetricsReport, ReportPlots), ReportError> {
    let (n_boot, seed) = (inp.dataset.bootstrap_resamples, inp.dataset.bootstrap_seed);
    let mut plots = ReportPlots {
        overlays: inp.overlays.clone(),
        ..Default::default()
    };
    let roc_with_baselines = |task: &str, model: Vec<RocPoint>| -> Result<RocSet, ReportError> {
        let mut set = vec![("model".to_string(), model)];
        for b in inp.baselines.iter().filter(|b| b.task == task) {
            if let Ok(c) = metrics::roc_curve(&b.scores, &b.labels) {
                set.push((b.name.clone(), c));
            }
        }
        Ok(set)
    };
    let mut detection = Vec::new();
    let mut rsna_log_loss = None;
    if let Some(d) = &inp.detection {
        if d.probs.len() != d.truth.len() {
            return Err(MetricsError::LengthMismatch {
                what: "detection",
                a: d.probs.len(),
                b: d.truth.len(),
            }
            .into());
        }
        for (j, label) in metrics::RSNA_LABELS.iter().enumerate() {
            let s: Vec<f64> = d.probs.iter().map(|p| p[j]).collect();
            let y: Vec<bool> = d.truth.iter().map(|t| t[j]).collect();
            let m = label_metrics(label, &s, &y, d.thresholds[j], n_boot, seed)?;
            if m.auc.is_some() {
                plots.roc.push((
                    label.to_string(),
                    roc_with_baselines(label, metrics::roc_curve(&s, &y)?)?,
                ));
            }
            detection.push(m);
        }
        rsna_log_loss = Some(metrics::rsna_weighted_log_loss(&d.probs, &d.truth)?);
    }
    let mut prognosis = Vec::new();
    for p in &inp.prognosis {
        let m = prognosis_metrics(
            &p.outcome,
            p.fixed,
            &p.val_logits,
            &p.val_labels,
            &p.test_logits,
            &p.test_labels,
            n_boot,
            seed,
        )?;
        if m.auc.is_some() {
            let probs = m.calibration.probabilities(&p.test_logits);
            plots.roc.push((
                p.outcome.clone(),
                roc_with_baselines(&p.outcome, metrics::roc_curve(&probs, &p.test_labels)?)?,
            ));
        }
        prognosis.push(m);
    }
    let referral = match &inp.referral {
        Some(r) => {
            let policy = match r.fixed {
                Some(p) => p,
                None => ReferralPolicy::fit(&r.val_uncertainty, r.target_rate)?,
            };
            let referred = r
                .test_uncertainty
                .iter()
                .filter(|u| policy.refer(**u))
                .count();
            Some(ReferralReport {
                task: r.task.clone(),
                uncertainty: r.uncertainty.clone(),
                policy,
                test_rate: referred as f64 / r.test_uncertainty.len().max(1) as f64,
                curve: metrics::referral_curve(
                    &r.test_probs,
                    &r.test_labels,
                    &r.test_uncertainty,
                    &REFERRAL_FRACTIONS,
                )?,
            })
        }
        None => None,
    };
    let baselines = inp
        .baselines
        .iter()
        .map(|b| {
            baseline_result(
                &b.name,
                &b.task,
                &b.scores,
                &b.labels,
                b.probabilities,
                n_boot,
                seed,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        MetricsReport {
            schema_version: SCHEMA_VERSION,
            dataset: inp.dataset.clone(),
            detection,
            rsna_log_loss,
            prognosis,
            referral,
            baselines,
            bayes_limit: inp.bayes_limit.clone(),
            hematoma_facts: inp.hematoma_facts,
            test_time_augmentation: inp.test_time_augmentation,
            recalibration: None,
        },
        plots,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake evaluation: deterministic scores that separate the classes imperfectly.
    fn fake_scores() -> (Vec<f64>, Vec<bool>) {
        let y: Vec<bool> = (0..200).map(|i| i % 3 == 0).collect();
        let s: Vec<f64> = (0..200)
            .map(|i| {
                let noise = ((i * 37 % 101) as f64) / 101.0;
                (if y[i] { 0.35 } else { 0.0 } + 0.65 * noise).min(1.0)
            })
            .collect();
        (s, y)
    }

    fn fake_logits() -> (Vec<f64>, Vec<bool>) {
        let (s, y) = fake_scores();
        (s.iter().map(|p| 4.0 * (p - 0.5)).collect(), y)
    }

    fn fake() -> (MetricsReport, ReportPlots) {
        let (s, y) = fake_scores();
        let n = s.len();
        let (z, _) = fake_logits();
        let base: Vec<f64> = s
            .iter()
            .enumerate()
            .map(|(i, p)| (p + ((i * 13 % 7) as f64) / 7.0) / 2.0)
            .collect();
        let det = label_metrics("any", &s, &y, 0.5, 200, 1).unwrap();
        let prog = prognosis_metrics("mortality_30d", None, &z, &y, &z, &y, 200, 1).unwrap();
        let unc: Vec<f64> = s.iter().map(|p| metrics::binary_entropy(*p)).collect();
        let policy = ReferralPolicy::fit(&unc, 0.2).unwrap();
        let fr: Vec<f64> = (0..=10).map(|k| k as f64 * 0.05).collect();
        let report = MetricsReport {
            schema_version: SCHEMA_VERSION,
            dataset: DatasetInfo {
                name: "synthetic <demo>".into(),
                synthetic: true,
                split: "test".into(),
                training_distribution: true,
                n_studies: n,
                bootstrap_seed: 1,
                bootstrap_resamples: 200,
            },
            detection: vec![det],
            rsna_log_loss: Some(0.123),
            prognosis: vec![prog],
            referral: Some(ReferralReport {
                task: "any".into(),
                uncertainty: "predictive_entropy".into(),
                test_rate: unc.iter().filter(|u| policy.refer(**u)).count() as f64 / n as f64,
                policy,
                curve: metrics::referral_curve(&s, &y, &unc, &fr).unwrap(),
            }),
            baselines: vec![
                baseline_result("ich_score", "mortality_30d", &base, &y, true, 200, 1).unwrap(),
                baseline_result("clinical_lr", "mortality_30d", &base, &y, true, 200, 1).unwrap(),
            ],
            bayes_limit: vec![BayesLimit {
                task: "any".into(),
                auc: 0.97,
                ece: Some(0.04),
                brier: None,
                note: "generator probabilities".into(),
            }],
            hematoma_facts: Some(metrics::FactsAgreement {
                n: 10,
                hematoma_ml_mae: 4.5,
                intraventricular_ml_mae: 1.25,
                volume_cut_accuracy: 0.9,
                infratentorial_auc: Some(0.8),
            }),
            test_time_augmentation: TestTimeAugmentation::Flip,
            recalibration: None,
        };
        let (w, h) = (32, 24);
        let slice: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32 - 16.0, (i / w) as f32 - 12.0);
                if x * x / 196.0 + y * y / 100.0 < 1.0 {
                    40.0
                } else {
                    -1000.0
                }
            })
            .collect();
        let heat: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32 - 20.0, (i / w) as f32 - 10.0);
                (-(x * x + y * y) / 12.0).exp()
            })
            .collect();
        let plots = ReportPlots {
            roc: vec![(
                "any".into(),
                vec![
                    ("model".into(), metrics::roc_curve(&s, &y).unwrap()),
                    ("ICH score".into(), metrics::roc_curve(&base, &y).unwrap()),
                ],
            )],
            overlays: vec![(
                "slice 12".into(),
                render_overlay_png(&slice, &heat, w, h).unwrap(),
            )],
            confusion_label: None,
        };
        (report, plots)
    }

    #[test]
    fn writes_json_and_html() {
        let (r, p) = fake();
        let dir = tempfile::tempdir().unwrap();
        let (jp, hp) = write_report(dir.path(), &r, &p).unwrap();
        let back: MetricsReport = serde_json::from_slice(&std::fs::read(&jp).unwrap()).unwrap();
        assert_eq!(back.schema_version, SCHEMA_VERSION);
        assert_eq!(back.detection[0].n, 200);
        assert_eq!(back.detection[0].auc, r.detection[0].auc);
        // Empty reliability bins are null in JSON and NaN again after reading.
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&jp).unwrap()).unwrap();
        assert!(
            v["prognosis"][0]["reliability_before"]
                .as_array()
                .unwrap()
                .len()
                == 15
        );
        let html = std::fs::read_to_string(&hp).unwrap();
        assert!(html.contains("SYNTHETIC DATA"));
        assert!(html.contains("synthetic &lt;demo&gt;"));
        assert!(html.contains("test-time augmentation: <b>flip"));
        assert_eq!(
            html.matches("<svg").count(),
            4,
            "ROC, confusion, reliability, referral"
        );
        assert!(html.contains("data:image/png;base64,iVBOR"));
        assert!(html.contains("ROC: any") && html.contains("TP "));
        assert!(!html.contains("NaN"));
        // Not synthetic: no banner.
        let mut real = r.clone();
        real.dataset.synthetic = false;
        assert!(!render_html(&real, &p).unwrap().contains("SYNTHETIC DATA"));
        if let Ok(out) = std::env::var("HN_REPORT_SAMPLE_DIR") {
            write_report(Path::new(&out), &r, &p).unwrap();
            std::fs::write(Path::new(&out).join("overlay.png"), &p.overlays[0].1).unwrap();
            std::fs::write(
                Path::new(&out).join("roc.svg"),
                roc_svg("any", &p.roc[0].1).unwrap(),
            )
            .unwrap();
        }
    }

    #[test]
    fn evaluate_assembles_all_sections() {
        let n = 120;
        let truth: Vec<[bool; 6]> = (0..n)
            .map(|i| {
                let sub = i % 6 == 1;
                [i % 3 == 0 || sub, false, sub, i % 3 == 0, false, i % 9 == 0]
            })
            .collect();
        let probs: Vec<[f64; 6]> = truth
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let noise = ((i * 31 % 17) as f64) / 17.0;
                t.map(|b| (if b { 0.4 } else { 0.05 } + 0.5 * noise).min(1.0))
            })
            .collect();
        let y: Vec<bool> = (0..n).map(|i| i % 4 == 0).collect();
        let z: Vec<f64> = (0..n)
            .map(|i| if y[i] { 1.0 } else { -1.0 } * 3.0 + ((i * 7 % 11) as f64 - 5.0))
            .collect();
        let any_p: Vec<f64> = probs.iter().map(|p| p[0]).collect();
        let any_y: Vec<bool> = truth.iter().map(|t| t[0]).collect();
        let unc: Vec<f64> = any_p.iter().map(|p| metrics::binary_entropy(*p)).collect();
        let inp = EvalInputs {
            dataset: DatasetInfo {
                name: "fake".into(),
                synthetic: false,
                split: "test".into(),
                training_distribution: true,
                n_studies: n,
                bootstrap_seed: 3,
                bootstrap_resamples: 100,
            },
            detection: Some(DetectionInputs {
                probs,
                truth,
                thresholds: [0.5; 6],
            }),
            prognosis: vec![PrognosisInputs {
                outcome: "mortality_30d".into(),
                fixed: None,
                val_logits: z.clone(),
                val_labels: y.clone(),
                test_logits: z.clone(),
                test_labels: y.clone(),
            }],
            referral: Some(ReferralInputs {
                task: "any".into(),
                uncertainty: "entropy".into(),
                fixed: None,
                val_uncertainty: unc.clone(),
                target_rate: 0.1,
                test_probs: any_p,
                test_labels: any_y,
                test_uncertainty: unc,
            }),
            baselines: vec![BaselineInputs {
                name: "ich_score".into(),
                task: "mortality_30d".into(),
                scores: z.iter().map(|v| metrics::sigmoid(v / 4.0)).collect(),
                labels: y.clone(),
                probabilities: true,
            }],
            bayes_limit: vec![],
            hematoma_facts: None,
            test_time_augmentation: TestTimeAugmentation::Flip,
            overlays: vec![],
        };
        let (r, plots) = evaluate(&inp).unwrap();
        assert_eq!(r.detection.len(), 6);
        // epidural has no positives: no AUC, no ROC plot, but still a row.
        assert!(r.detection[1].auc.is_none());
        assert_eq!(r.detection[1].n_positive, 0);
        assert!(r.detection[0].auc.unwrap().estimate > 0.8);
        assert!(r.rsna_log_loss.unwrap() > 0.0);
        // epidural and intraparenchymal have no positives: 4 detection ROCs + mortality.
        assert_eq!(plots.roc.len(), 4 + 1);
        let mort = plots
            .roc
            .iter()
            .find(|(l, _)| l == "mortality_30d")
            .unwrap();
        assert_eq!(mort.1.len(), 2, "model + ich_score");
        let rf = r.referral.as_ref().unwrap();
        assert!((rf.test_rate - 0.1).abs() < 0.05, "{rf:?}");
        assert_eq!(rf.curve.len(), REFERRAL_FRACTIONS.len());
        assert_eq!(r.baselines[0].n, n);
        let html = render_html(&r, &plots).unwrap();
        assert!(!html.contains("SYNTHETIC DATA"));
        assert_eq!(html.matches("<svg").count(), 5 + 1 + 1 + 1);
    }

    #[test]
    fn temperature_scaling_improves_calibration_in_report() {
        let (r, _) = fake();
        let p = &r.prognosis[0];
        assert!(p.ece_after <= p.ece_before + 1e-12, "{p:?}");
        assert!(p.brier_after <= p.brier_before + 1e-12);
        assert!(p.ece_after_temperature <= p.ece_before + 1e-12, "{p:?}");
        assert!(p.brier_after_temperature <= p.brier_before + 1e-12);
        // The card's calibration is the chooser's answer on the same validation logits.
        let (z, y) = fake_logits();
        let c = metrics::fit_logit_calibration(&z, &y).unwrap();
        assert_eq!(p.calibration, c);
        assert_eq!(p.reliability_after_temperature.len(), ECE_BINS);
    }

    #[test]
    fn overlay_png_decodes_with_right_size_and_colors() {
        let slice = vec![0.0, 1.0, 0.0, 1.0];
        let heat = vec![0.0, 0.0, 0.0, 1.0];
        let png_bytes = render_overlay_png(&slice, &heat, 2, 2).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut rd = dec.read_info().unwrap();
        let mut buf = vec![0; rd.output_buffer_size().unwrap()];
        let info = rd.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2, 2));
        assert_eq!(&buf[0..3], &[0, 0, 0]); // black, no heat
        assert_eq!(&buf[3..6], &[255, 255, 255]); // white, no heat
        // hottest pixel: 0.4 * white + 0.6 * yellow
        assert_eq!(&buf[9..12], &[255, 255, 102]);
        assert!(render_overlay_png(&slice, &heat[..3], 2, 2).is_err());
    }
}

#[cfg(test)]
mod upscale_tests {
    use super::*;

    #[test]
    fn nearest_upscale_repeats_pixels() {
        let img = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3 wide, 2 high
        let up = upscale_nearest(&img, 3, 2, 2);
        assert_eq!(up.len(), 24);
        assert_eq!(&up[0..6], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        assert_eq!(&up[6..12], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        assert_eq!(&up[12..18], &[4.0, 4.0, 5.0, 5.0, 6.0, 6.0]);
        assert_eq!(display_factor(64, 64, 256), 4);
        assert_eq!(display_factor(300, 10, 256), 1);
    }
}
