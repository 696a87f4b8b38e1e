//! The demo's targets ("bars": detection AUCs, mortality against the Bayes limit and the
//! baselines, calibration) checked against an evaluation report, so the demo and anyone
//! rerunning it read the same verdicts.

use crate::report::MetricsReport;

/// The bars of the demo, with the threshold each must reach.
pub const ANY_AUC_BAR: f64 = 0.97;
pub const SUBTYPE_AUC_BAR: f64 = 0.93;
/// Mortality AUC may fall at most this far below the Bayes limit.
pub const BAYES_GAP_BAR: f64 = 0.02;
pub const MORTALITY_ECE_BAR: f64 = 0.03;

/// Targets of issue 5 at the demo budget, checked and printed at the end.
pub struct Bar {
    pub what: String,
    pub reached: f64,
    pub target: String,
    pub ok: bool,
}

/// Every bar of the demo on `r`.
pub fn demo_bars(r: &MetricsReport) -> Vec<Bar> {
    let auc = |label: &str| {
        r.detection
            .iter()
            .find(|d| d.label == label)
            .and_then(|d| d.auc.as_ref())
            .map(|i| i.estimate)
            .unwrap_or(f64::NAN)
    };
    let mut bars = vec![Bar {
        what: "any-bleed AUC".into(),
        reached: auc("any"),
        target: format!("≥ {ANY_AUC_BAR}"),
        ok: auc("any") >= ANY_AUC_BAR,
    }];
    for l in &crate::metrics::RSNA_LABELS[1..] {
        bars.push(Bar {
            what: format!("{l} AUC"),
            reached: auc(l),
            target: format!("≥ {SUBTYPE_AUC_BAR}"),
            ok: auc(l) >= SUBTYPE_AUC_BAR,
        });
    }
    if let Some(m) = r.prognosis.iter().find(|p| p.outcome == "mortality_30d") {
        let a = m.auc.as_ref().map(|i| i.estimate).unwrap_or(f64::NAN);
        if let Some(b) = r.bayes_limit.iter().find(|b| b.task == "mortality_30d") {
            bars.push(Bar {
                what: format!("mortality AUC vs Bayes limit {:.3}", b.auc),
                reached: a,
                target: format!("≥ {:.3}", b.auc - BAYES_GAP_BAR),
                ok: a >= b.auc - BAYES_GAP_BAR,
            });
        }
        for base in r.baselines.iter().filter(|b| b.task == "mortality_30d") {
            let ba = base.auc.as_ref().map(|i| i.estimate).unwrap_or(f64::NAN);
            bars.push(Bar {
                what: format!("mortality AUC above {} ({ba:.3})", base.name),
                reached: a,
                target: format!("> {ba:.3}"),
                ok: a > ba,
            });
        }
        let floor = r
            .bayes_limit
            .iter()
            .find(|b| b.task == "mortality_30d")
            .and_then(|b| b.ece)
            .map(|e| format!(" (true probabilities score {e:.3} here)"))
            .unwrap_or_default();
        bars.push(Bar {
            what: format!("mortality ECE after calibration{floor}"),
            reached: m.ece_after,
            target: format!("≤ {MORTALITY_ECE_BAR}"),
            ok: m.ece_after <= MORTALITY_ECE_BAR,
        });
    }
    bars
}

/// The bars as a Markdown table (`bars.md`).
pub fn to_markdown(bars: &[Bar]) -> String {
    let mut md = String::from("| bar | reached | target | met |\n|---|---|---|---|\n");
    for b in bars {
        md.push_str(&format!(
            "| {} | {:.3} | {} | {} |\n",
            b.what,
            b.reached,
            b.target,
            if b.ok { "yes" } else { "no" }
        ));
    }
    md
}
