//! `hemorrhagenet evaluate` on an external cohort written to disk as DICOM and read back
//! through a manifest: `predictions.csv` gives, study by study, the numbers `predict` gives
//! (with and without test-time augmentation); `--split all` reports every study with the
//! card's calibration; `--recalibrate-on validation` reports before and after and writes a
//! recalibrated model that `predict` then agrees with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hn_engine::checkpoint::{
    Calibration, DatasetDigest, INTENDED_USE, ModelCard, TemperatureSet, save_model,
};
use hn_engine::metrics::ReferralPolicy;
use hn_engine::predictions::{PredictionRow, read_csv};
use hn_engine::sample::default_preprocess;
use hn_engine::scoring::TestTimeAugmentation;
use hn_model::HemorrhageNetConfig;
use hn_model::burn::prelude::Device;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A model that was never trained on this cohort, with a calibration in its card and dropout
/// on (so MC passes and their seeds matter).
fn save_model_with(dir: &Path, tta: TestTimeAugmentation) {
    let net = HemorrhageNetConfig::new()
        .with_slices(6)
        .with_height(32)
        .with_width(32)
        .with_widths(vec![8, 16])
        .with_d_attn(16)
        .with_dropout(0.2)
        .init(&Device::flex());
    let card = ModelCard {
        card_version: 1,
        code_version: "test".into(),
        created_unix: 0,
        preprocess: default_preprocess(6, 32),
        train_config: serde_json::json!({}),
        dataset: DatasetDigest {
            name: "another-site".into(),
            synthetic: true,
            n_train: 0,
            n_validation: 0,
            n_test: 0,
            sha256: "not-this-cohort".into(),
            train_labels: None,
        },
        epoch: 1,
        validation: serde_json::json!({}),
        calibration: Some(Calibration {
            temperatures: TemperatureSet {
                any: 1.3,
                mortality_bias: 0.4,
                ..Default::default()
            },
            thresholds: [0.5; 6],
            uncertainty: Default::default(),
            referral: ReferralPolicy {
                threshold: 0.6,
                target_rate: 0.2,
                validation_rate: 0.2,
            },
            mc_passes: 3,
            mortality_threshold: 0.3,
            tta,
            facts: None,
            distance: None,
        }),
        intended_use: INTENDED_USE.into(),
        envelope: None,
        mr_envelope: None,
        mr_calibration: None,
    };
    save_model(dir, &net, &card).unwrap();
}

/// `synth` writes a DICOM cohort; the manifest points at each study's DICOM folder and
/// carries its labels, clinical record and outcomes.
fn cohort(root: &Path, n: usize) -> PathBuf {
    let c = root.join("cohort");
    ok(
        bin()
            .args(["synth", "--studies", &n.to_string(), "--size", "40"])
            .args([
                "--slices", "7", "--format", "dicom", "--seed", "31", "--out",
            ])
            .arg(&c)
            .output()
            .unwrap(),
        "synth",
    );
    let table = |f: &str| -> (Vec<String>, Vec<Vec<String>>) {
        let text = std::fs::read_to_string(c.join(f)).unwrap();
        let mut lines = text
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect());
        let header: Vec<String> = lines.next().unwrap();
        (header, lines.collect())
    };
    let parts = [
        table("labels_study.csv"),
        table("clinical.csv"),
        table("outcomes.csv"),
    ];
    let mut header = vec!["study_key".to_string(), "path".into()];
    for (h, _) in &parts {
        header.extend(h[1..].iter().cloned());
    }
    let mut csv = header.join(",") + "\n";
    for i in 0..n {
        let id = &parts[0].1[i][0];
        let mut row = vec![id.clone(), format!("cohort/studies/{id}/dicom")];
        for (_, rows) in &parts {
            assert_eq!(&rows[i][0], id, "CSV rows in the same order");
            row.extend(rows[i][1..].iter().cloned());
        }
        csv += &(row.join(",") + "\n");
    }
    let m = root.join("manifest.csv");
    std::fs::write(&m, csv).unwrap();
    m
}

fn evaluate(model: &Path, manifest: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = ok(
        bin()
            .arg("evaluate")
            .arg("--model")
            .arg(model)
            .args(["--dataset", "manifest", "--root"])
            .arg(manifest)
            .args(["--bootstrap", "20", "--out"])
            .arg(out)
            .args(extra)
            .output()
            .unwrap(),
        "evaluate",
    );
    let _ = o;
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

/// `predict` in batch mode over the same manifest: one prediction.json per study key.
fn predict_all(model: &Path, manifest: &Path, out: &Path) -> HashMap<String, Value> {
    ok(
        bin()
            .arg("predict")
            .arg("--manifest")
            .arg(manifest)
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap(),
        "predict --manifest",
    );
    let mut m = HashMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path().join("prediction.json");
        if p.exists() {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            m.insert(v["study"].as_str().unwrap().to_string(), v);
        }
    }
    m
}

fn assert_rows_match_predict(rows: &[PredictionRow], preds: &HashMap<String, Value>, what: &str) {
    assert!(!rows.is_empty());
    for r in rows {
        let p = preds
            .get(&r.study_key)
            .unwrap_or_else(|| panic!("{what}: predict wrote nothing for {}", r.study_key));
        let pr = &p["probabilities"];
        let subtype = |name: &str| -> f64 {
            pr["subtypes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e[0] == name)
                .unwrap()[1]
                .as_f64()
                .unwrap()
        };
        let pairs = [
            ("any", r.any, pr["any"].as_f64().unwrap()),
            ("epidural", r.epidural, subtype("epidural")),
            ("subdural", r.subdural, subtype("subdural")),
            ("subarachnoid", r.subarachnoid, subtype("subarachnoid")),
            (
                "intraparenchymal",
                r.intraparenchymal,
                subtype("intraparenchymal"),
            ),
            (
                "intraventricular",
                r.intraventricular,
                subtype("intraventricular"),
            ),
            (
                "mortality_30d",
                r.mortality_30d.unwrap(),
                pr["mortality_30d"].as_f64().unwrap(),
            ),
            (
                "poor_outcome_90d",
                r.poor_outcome_90d.unwrap(),
                pr["poor_outcome_90d"].as_f64().unwrap(),
            ),
            (
                "uncertainty",
                r.uncertainty,
                p["review"]["uncertainty"].as_f64().unwrap(),
            ),
        ];
        for (name, csv, json) in pairs {
            assert!(
                (csv - json).abs() <= 1e-5,
                "{what} {}: {name} {csv} in predictions.csv, {json} from predict",
                r.study_key
            );
        }
        assert_eq!(
            r.review_flag == 1,
            p["review"]["flag"].as_bool().unwrap(),
            "{what} {}",
            r.study_key
        );
    }
}

#[test]
fn predictions_csv_matches_predict_on_an_external_dicom_cohort() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = cohort(dir.path(), 24);
    for tta in [TestTimeAugmentation::Flip, TestTimeAugmentation::None] {
        let model = dir.path().join(format!("model-{}", tta.name()));
        save_model_with(&model, tta);
        let report = dir.path().join(format!("report-{}", tta.name()));
        let metrics = evaluate(&model, &manifest, &report, &["--split", "all"]);
        assert_eq!(metrics["dataset"]["split"], "all");
        assert_eq!(metrics["dataset"]["training_distribution"], false);
        assert_eq!(metrics["dataset"]["n_studies"], 24);
        assert_eq!(metrics["test_time_augmentation"], tta.name());
        let html = std::fs::read_to_string(report.join("report.html")).unwrap();
        assert!(html.contains("split <b>all</b>") && html.contains("<b>external</b>"));
        // External data: the card's calibration is applied, not refitted on these studies.
        for p in metrics["prognosis"].as_array().unwrap() {
            if p["outcome"] == "mortality_30d" {
                assert!((p["calibration"]["bias"].as_f64().unwrap() - 0.4).abs() < 1e-12);
            }
        }
        let rows = read_csv(&report.join("predictions.csv")).unwrap();
        assert_eq!(rows.len(), 24, "every study of the cohort");
        let splits: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.split.as_str()).collect();
        assert!(
            splits.contains("train") && splits.contains("test"),
            "{splits:?}"
        );
        let preds = predict_all(
            &model,
            &manifest,
            &dir.path().join(format!("pred-{}", tta.name())),
        );
        assert_rows_match_predict(&rows, &preds, tta.name());
    }
}

#[test]
fn recalibration_reports_before_and_after_and_predict_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = cohort(dir.path(), 30);
    let model = dir.path().join("model");
    save_model_with(&model, TestTimeAugmentation::None);
    let out = dir.path().join("recal");
    let metrics = evaluate(&model, &manifest, &out, &["--recalibrate-on", "validation"]);
    assert_eq!(metrics["dataset"]["split"], "test");
    let rc = &metrics["recalibration"];
    assert_eq!(rc["fitted_on"], "validation");
    assert!(rc["n_fitted"].as_u64().unwrap() > 0);
    assert_eq!(
        rc["n_reported"].as_u64().unwrap(),
        metrics["dataset"]["n_studies"].as_u64().unwrap()
    );
    assert_eq!(rc["before"]["target_referral_rate"], 0.2);
    for side in ["before", "after"] {
        let ece = rc[side]["ece"][0].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ece), "{side}: {ece}");
    }
    // The thresholds are refitted (the card's were made up for another site); the
    // temperatures are not: a site this small cannot show that a refit predicts its held-out
    // studies better (`metrics::keep_or_refit`), so the card's stay, and with them the ECE.
    let n_fitted = rc["n_fitted"].as_u64().unwrap() as usize;
    assert!(n_fitted < 2 * hn_engine::metrics::REFIT_FOLDS, "{n_fitted}");
    assert_ne!(rc["before"]["thresholds"][0], rc["after"]["thresholds"][0]);
    assert_eq!(rc["before"]["ece"], rc["after"]["ece"]);
    // Each head with fewer studies than the cross-validation needs keeps the card's mapping.
    // (The subtype head pools five logits per bleeding study, so it may have enough; the
    // untrained net's subtype logits are noise, and whether a refit of them wins depends on
    // its random weights.)
    assert_eq!(rc["before"]["temperatures"]["any"], 1.3);
    for head in ["any", "mortality", "mortality_bias", "mrs", "mrs_bias"] {
        assert_eq!(
            rc["before"]["temperatures"][head], rc["after"]["temperatures"][head],
            "{head}"
        );
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<h2>Recalibration</h2>"),
        "report.html shows before/after"
    );
    // The recalibrated model is written, and predict with it gives predictions.csv's numbers.
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/card.json")).unwrap())
            .unwrap();
    assert_eq!(card["calibration"]["temperatures"]["any"], 1.3);
    assert_eq!(card["calibration"]["temperatures"]["mortality_bias"], 0.4);
    assert_ne!(card["calibration"]["thresholds"][0], 0.5);
    let rows = read_csv(&out.join("predictions.csv")).unwrap();
    assert!(rows.iter().all(|r| r.split == "test"));
    let preds = predict_all(&out.join("model"), &manifest, &dir.path().join("pred"));
    assert_rows_match_predict(&rows, &preds, "recalibrated");
}

#[test]
fn bad_evaluate_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    save_model_with(&model, TestTimeAugmentation::None);
    // A manifest layout without --root names what it needs.
    let o = bin()
        .arg("evaluate")
        .arg("--model")
        .arg(&model)
        .args(["--dataset", "manifest", "--out"])
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--root") && err.contains("manifest"), "{err}");
    // An unknown layout lists the known ones.
    let o = bin()
        .args(["evaluate", "--dataset", "pacs", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("rsna") && err.contains("cq500"),
        "{err}"
    );
    // A card that would break a request is refused before any data is read.
    let path = model.join("card.json");
    let mut card: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    card["calibration"]["temperatures"]["any"] = serde_json::json!(-1.0);
    std::fs::write(&path, card.to_string()).unwrap();
    let o = bin()
        .arg("evaluate")
        .arg("--model")
        .arg(&model)
        .args(["--dataset", "manifest", "--root", "nowhere.csv", "--out"])
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("temperatures.any"),
        "{err}"
    );
}
