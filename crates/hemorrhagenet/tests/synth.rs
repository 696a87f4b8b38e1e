//! `hemorrhagenet synth` on the built binary: the cohort's files, their agreement with each
//! other and with `inspect`, determinism, and clear errors.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
}

fn synth(out: &std::path::Path, seed: &str) -> std::process::Output {
    bin()
        .args([
            "synth",
            "--studies",
            "3",
            "--size",
            "32",
            "--slices",
            "6",
            "--format",
            "both",
        ])
        .args(["--seed", seed, "--out"])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn cohort_files_agree_and_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let out = synth(&a, "4");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "cohort.json",
        "clinical.csv",
        "outcomes.csv",
        "labels_study.csv",
        "labels_slices.csv",
        "oracle.csv",
    ] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    // One clinical and one outcome row per study.
    let clinical = std::fs::read_to_string(a.join("clinical.csv")).unwrap();
    assert_eq!(clinical.lines().count(), 4);
    assert!(clinical.starts_with("study_id,age,sex_male,gcs"));
    assert_eq!(
        std::fs::read_to_string(a.join("outcomes.csv"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    // Every study has a 6-slice DICOM series that inspect reads as 32×32×6 HU, and a NIfTI.
    for i in 0..3 {
        let study = a.join(format!("studies/SYNTH-00000{i}"));
        assert!(study.join("ct.nii.gz").exists() && study.join("mask.nii.gz").exists());
        let out = bin()
            .args(["inspect", "--json"])
            .arg(study.join("dicom"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["hu"], true);
        assert_eq!(v["dims"], serde_json::json!([32, 32, 6]));
        let nii = bin()
            .args(["inspect", "--json"])
            .arg(study.join("ct.nii.gz"))
            .output()
            .unwrap();
        let n: serde_json::Value = serde_json::from_slice(&nii.stdout).unwrap();
        assert_eq!(n["dims"], v["dims"], "NIfTI and DICOM grids agree");
    }
    // Same seed → same bytes; another seed → other data.
    let b = dir.path().join("b");
    assert!(synth(&b, "4").status.success());
    assert_eq!(
        clinical,
        std::fs::read_to_string(b.join("clinical.csv")).unwrap()
    );
    let c = dir.path().join("c");
    assert!(synth(&c, "5").status.success());
    assert_ne!(
        clinical,
        std::fs::read_to_string(c.join("clinical.csv")).unwrap()
    );
}

#[test]
fn bad_synth_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "sise = 64\n").unwrap();
    let out = bin()
        .args(["synth", "--studies", "1", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("sise"), "{err}");

    // An output path that is a file cannot hold a cohort.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let out = bin()
        .args([
            "synth",
            "--studies",
            "1",
            "--size",
            "32",
            "--slices",
            "4",
            "--out",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("file"));
}
