//! `hemorrhagenet shift-suite` on the built binary: shifted cohorts written as DICOM, read back
//! through a manifest, scored as they are and after recalibration, one table.

use std::process::Command;

mod common;
use common::save_tiny_model;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
}

#[test]
fn shift_suite_writes_one_row_per_cohort_and_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    save_tiny_model(&model);
    // A cohort of the user's own beside two built-in ones.
    let own = dir.path().join("own.toml");
    std::fs::write(&own, "size = 64\nprevalence_bleed = 0.7\n").unwrap();
    let out = dir.path().join("suite");
    let o = bin()
        .args(["shift-suite", "--studies", "24", "--bootstrap", "20"])
        .args(["--only", "reference,case_mix", "--model"])
        .arg(&model)
        .arg("--cohort")
        .arg(format!("mine={}", own.display()))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let table = std::fs::read_to_string(out.join("shift_suite.md")).unwrap();
    for name in ["| reference |", "| case_mix |", "| mine |"] {
        assert!(table.contains(name), "{name} missing:\n{table}");
    }
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("shift_suite.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["n"], 24, "every study reported with --split all: {r}");
        let auc = r["any_auc"]["estimate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc));
        assert!(r["mortality_ece_recalibrated"].as_f64().is_some(), "{r}");
        // Every detection label is there, with its positives.
        let labels: Vec<&str> = r["detection"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels[0], "any", "{r}");
        assert!(labels.contains(&"subarachnoid"), "{r}");
        // The model's paired gain over the clinical-only ablation: on the same studies, so
        // exactly the difference of the two AUCs.
        if let (Some(m), Some(c)) = (
            r["mortality_auc"]["estimate"].as_f64(),
            r["clinical_only_auc"]["estimate"].as_f64(),
        ) {
            let gain = r["gain_over_clinical_only"]["estimate"].as_f64().unwrap();
            assert!((gain - (m - c)).abs() < 1e-9, "{r}");
        }
    }
    assert!(
        table.contains("; model "),
        "paired gains in the table:\n{table}"
    );
    // The per-label table: one row per cohort, each shifted cohort's AUCs with their change
    // against the reference cohort (the same patients without a shift).
    let per_label = table
        .split("Every detection label")
        .nth(1)
        .expect("per-label table");
    assert!(per_label.contains("| subarachnoid |"), "{per_label}");
    let mine = per_label
        .lines()
        .find(|l| l.starts_with("| mine |"))
        .expect("a row for the user's cohort");
    assert!(mine.contains("(+") || mine.contains("(-"), "{mine}");
    let reference = per_label
        .lines()
        .find(|l| l.starts_with("| reference |"))
        .unwrap();
    assert!(
        !reference.contains("(+") && !reference.contains("(-"),
        "{reference}"
    );
    // Each cohort's reports are there; its images were removed once scored.
    assert!(out.join("reference/report/metrics.json").is_file());
    assert!(out.join("reference/recalibrated/metrics.json").is_file());
    assert!(out.join("reference/cohort/manifest.csv").is_file());
    assert!(!out.join("reference/cohort/studies").exists());

    // Bad arguments fail before anything is written, saying which.
    let refused = |args: &[&str], out: &str| -> String {
        let o = bin()
            .arg("shift-suite")
            .args(args)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(refused(&["--only", "nonesuch"], "x").contains("nonesuch"));
    assert!(refused(&["--cohort", "noequals"], "y").contains("NAME=FILE"));
    // A name that would leave --out, or one the suite already has, is refused.
    for bad in ["../up", "reference"] {
        let arg = format!("{bad}={}", own.display());
        assert!(
            refused(&["--cohort", &arg], "z").contains("--cohort"),
            "{bad}"
        );
    }
    assert!(!dir.path().join("up").exists());
}
