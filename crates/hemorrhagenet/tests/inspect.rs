//! `hemorrhagenet inspect` end to end: the built binary on real files.

use std::path::PathBuf;
use std::process::Command;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-imaging")
        .join(rel)
}

fn inspect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("run hemorrhagenet")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn json_report_for_the_head_ct_series() {
    let p = testdata("dicom/series-ct-head-16px");
    let j = json(&inspect(&[p.to_str().unwrap(), "--json"]));
    // Per-file pydicom minima/maxima: -981..77, 77..1360, 991..1489, 498..1399.
    assert_eq!(j["min"], -981.0);
    assert_eq!(j["max"], 1489.0);
    assert_eq!(j["modality"], "CT");
    assert_eq!(j["hu"], true);
    assert_eq!(j["dims"], serde_json::json!([16, 16, 4]));
    assert_eq!(j["chosen_rule"], "only series");
    assert_eq!(j["series"].as_array().unwrap().len(), 1);
    assert_eq!(
        j["chosen_series"],
        "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2"
    );
    assert!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("gap"))
    );
    for k in ["p1", "p50", "p99", "origin", "direction", "spacing"] {
        assert!(!j[k].is_null(), "{k} missing");
    }
    let (p1, p50, p99) = (
        j["p1"].as_f64().unwrap(),
        j["p50"].as_f64().unwrap(),
        j["p99"].as_f64().unwrap(),
    );
    assert!(-981.0 <= p1 && p1 <= p50 && p50 <= p99 && p99 <= 1489.0);
}

#[test]
fn json_report_for_a_nifti() {
    let p = testdata("nifti/anatomical.nii");
    let j = json(&inspect(&[p.to_str().unwrap(), "--json"]));
    // nibabel: -610 / 30393.
    assert_eq!(j["min"], -610.0);
    assert_eq!(j["max"], 30393.0);
    assert_eq!(j["format"], "nifti");
    assert_eq!(j["dims"], serde_json::json!([33, 41, 25]));
}

#[test]
fn human_report_names_the_essentials() {
    let p = testdata("dicom/series-ct-head-16px");
    let out = inspect(&[p.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "chosen by",
        "Hounsfield",
        "16 x 16 x 4",
        "origin LPS",
        "WARNING",
        "p99",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn rejected_file_exits_non_zero_naming_file_and_reason() {
    let p = testdata("dicom/ctbrain1.dcm");
    let out = inspect(&[p.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ctbrain1.dcm"), "{err}");
    assert!(err.contains("YBR_FULL_422"), "{err}");
}

#[test]
fn unknown_series_uid_is_an_error() {
    let p = testdata("dicom/series-ct-head-16px");
    let out = inspect(&[p.to_str().unwrap(), "--series", "1.2.3.4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1.2.3.4"));
}
