//! Tests of the report on fake evaluations.

#[allow(unused_imports)]
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
    let baseline = |name: &str| BaselineInputs {
        name: name.into(),
        task: "mortality_30d".into(),
        scores: base.clone(),
        labels: y.clone(),
        probabilities: true,
        model_scores: None,
    };
    let det = label_metrics("any", &s, &y, &vec![0.5; s.len()], 200, 1).unwrap();
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
            distance: None,
        }),
        baselines: vec![
            baseline_result(&baseline("ich_score"), 200, 1).unwrap(),
            baseline_result(&baseline("clinical_lr"), 200, 1).unwrap(),
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
        withheld: Vec::new(),
        detection_by_bleed_size: bleed_size_strata(
            &[
                (0.9, Some(40.0)),
                (0.4, Some(0.5)),
                (0.1, None),
                (0.3, None),
            ],
            50,
            1,
        ),
        // From the images alone the small bleed scores below every negative: AUC 0.
        detection_by_bleed_size_image_only: bleed_size_strata(
            &[
                (0.8, Some(40.0)),
                (0.05, Some(0.5)),
                (0.1, None),
                (0.3, None),
            ],
            50,
            1,
        ),
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
    assert!(html.contains("Detection by bleed size") && html.contains("&lt; 1 mL"));
    assert!(html.contains("1–5 mL") && html.contains("from the images alone"));
    assert_eq!(back.detection_by_bleed_size, r.detection_by_bleed_size);
    assert_eq!(
        back.detection_by_bleed_size_image_only,
        r.detection_by_bleed_size_image_only
    );
    assert_eq!(
        r.detection_by_bleed_size_image_only[0]
            .auc
            .as_ref()
            .unwrap()
            .estimate,
        0.0
    );
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
            thresholds: vec![[0.5; 6]; truth.len()],
            truth,
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
            distance: None,
        }),
        baselines: vec![BaselineInputs {
            name: "ich_score".into(),
            task: "mortality_30d".into(),
            scores: z.iter().map(|v| metrics::sigmoid(v / 4.0)).collect(),
            labels: y.clone(),
            probabilities: true,
            model_scores: Some(z.clone()),
        }],
        bayes_limit: vec![],
        hematoma_facts: None,
        test_time_augmentation: TestTimeAugmentation::Flip,
        overlays: vec![],
        withheld: Vec::new(),
        bleed_volumes: Vec::new(),
        bleed_volumes_image_only: Vec::new(),
    };
    let (r, plots) = evaluate(&inp).unwrap();
    // Not synthetic (no volumes): no size strata, and none written.
    assert!(r.detection_by_bleed_size.is_empty());
    assert!(
        !serde_json::to_string(&r)
            .unwrap()
            .contains("detection_by_bleed_size")
    );
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
    // The baseline ranks the cases as the model does: a gain of exactly nothing, paired.
    let gain = r.baselines[0].model_gain.expect("model scores were given");
    assert_eq!((gain.estimate, gain.lo, gain.hi), (0.0, 0.0, 0.0));
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
    // The PNG holds exactly the imaging layer's picture (colours tested there).
    let pic = hn_imaging::raster::heat_overlay(&slice, &heat, 2, 2).unwrap();
    assert_eq!(&buf[..12], &pic.data[..]);
    assert_eq!(&buf[0..3], &[0, 0, 0]); // black, no heat
    assert!(render_overlay_png(&slice, &heat[..3], 2, 2).is_err());
}

#[test]
fn bleed_size_strata_split_at_1_and_5_ml_against_all_negatives() {
    // Large bleeds (and one of exactly 5 mL: the upper stratum) scored above every negative,
    // smaller ones among them; exactly 1 mL is in the middle stratum.
    let scored = [
        (0.9, Some(30.0)),
        (0.8, Some(5.0)),
        (0.7, Some(12.0)),
        (0.35, Some(0.4)),
        (0.05, Some(2.0)),
        (0.6, Some(1.0)),
        (0.1, None),
        (0.3, None),
        (0.5, None),
        (0.2, None),
    ];
    let st = bleed_size_strata(&scored, 200, 7);
    let labels: Vec<&str> = st.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["< 1 mL", "1–5 mL", "≥ 5 mL"]);
    let n: Vec<usize> = st.iter().map(|s| s.n_positive).collect();
    assert_eq!(n, [1, 2, 3]);
    assert!(st.iter().all(|s| s.n_negative == 4));
    let bounds: Vec<(f64, Option<f64>)> = st.iter().map(|s| (s.min_ml, s.max_ml)).collect();
    assert_eq!(bounds, [(0.0, Some(1.0)), (1.0, Some(5.0)), (5.0, None)]);
    let auc = |i: usize| st[i].auc.as_ref().unwrap().estimate;
    // < 1 mL: 0.35 beats 3 of 4 negatives. 1–5 mL: 0.05 beats none, 0.6 all four: 4 / 8.
    assert!((auc(0) - 0.75).abs() < 1e-12, "{}", auc(0));
    assert!((auc(1) - 0.5).abs() < 1e-12, "{}", auc(1));
    assert_eq!(auc(2), 1.0);
    // No negatives: no AUC, still a row.
    let none = bleed_size_strata(&[(0.9, Some(1.0))], 50, 1);
    assert_eq!(none.len(), 3);
    assert!(none.iter().all(|s| s.auc.is_none()));
}
