//! SVG plots for `report.html`: ROC, reliability, referral and confusion charts.

#[allow(unused_imports)]
use super::*;

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

pub(super) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub(super) fn plot_err<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError::Plot(e.to_string())
}

pub(super) type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// A line chart on [0, 1]² as an SVG string.
pub(super) fn line_chart_svg(
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
    let auc = |c: &[ReferralPoint]| -> Vec<(f64, f64)> {
        c.iter()
            .filter_map(|p| p.auc.map(|a| (p.fraction_referred, a)))
            .collect()
    };
    let acc = |c: &[ReferralPoint]| -> Vec<(f64, f64)> {
        c.iter()
            .filter(|p| p.accuracy.is_finite())
            .map(|p| (p.fraction_referred, p.accuracy))
            .collect()
    };
    let mut series = vec![
        ("AUC (uncertainty)", auc(&r.curve)),
        ("accuracy (uncertainty)", acc(&r.curve)),
    ];
    if let Some(d) = &r.distance {
        series.push(("accuracy (distance)", acc(&d.curve)));
        series.push(("accuracy (combined)", acc(&d.curve_combined)));
    }
    line_chart_svg(
        &format!("Referral: {}", r.task),
        "fraction referred",
        "metric on retained cases",
        &series,
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
