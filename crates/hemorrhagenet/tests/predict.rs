//! `hemorrhagenet predict` end to end: the built binary on a tiny saved model and synthetic
//! studies, single-study and sharded batch mode.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hn_data::synth::{SynthConfig, generate_study};
use hn_engine::checkpoint::{
    Calibration, DatasetDigest, INTENDED_USE, ModelCard, TemperatureSet, save_model,
};
use hn_engine::metrics::ReferralPolicy;
use hn_engine::sample::default_preprocess;
use hn_imaging::dicom_write::{CtSeriesMeta, uid_from_hash, write_ct_series};
use hn_model::HemorrhageNetConfig;
use hn_model::burn::prelude::Device;
use serde_json::Value;

fn save_tiny_model(dir: &Path) {
    let net = HemorrhageNetConfig::new()
        .with_slices(8)
        .with_height(32)
        .with_width(32)
        .with_widths(vec![8, 16])
        .with_d_attn(16)
        .init(&Device::flex());
    let card = ModelCard {
        card_version: 1,
        code_version: "test".into(),
        created_unix: 0,
        preprocess: default_preprocess(8, 32),
        train_config: serde_json::json!({}),
        dataset: DatasetDigest {
            name: "synthetic-test".into(),
            synthetic: true,
            n_train: 0,
            n_validation: 0,
            n_test: 0,
            sha256: String::new(),
        },
        epoch: 1,
        validation: serde_json::json!({}),
        calibration: Some(Calibration {
            temperatures: TemperatureSet::default(),
            thresholds: [0.5; 6],
            uncertainty: Default::default(),
            referral: ReferralPolicy {
                threshold: 0.5,
                target_rate: 0.2,
                validation_rate: 0.2,
            },
            mc_passes: 2,
            mortality_threshold: 0.3,
            tta: hn_engine::scoring::TestTimeAugmentation::Flip,
            facts: None,
        }),
        intended_use: INTENDED_USE.into(),
    };
    save_model(dir, &net, &card).unwrap();
}

fn write_dicom(dir: &Path, idx: usize) {
    let cfg = SynthConfig {
        size: 40,
        n_slices: Some(8),
        p_missing_slice: 0.0,
        ..Default::default()
    };
    let st = generate_study(&cfg, 5, idx);
    let meta = CtSeriesMeta {
        patient_id: "PIDSENTINEL77".into(),
        patient_name: "ZZSENTINEL^NAME".into(),
        study_instance_uid: uid_from_hash(10 + idx as u128),
        series_instance_uid: uid_from_hash(20 + idx as u128),
        frame_of_reference_uid: uid_from_hash(30 + idx as u128),
        sop_uid_prefix: uid_from_hash(40 + idx as u128),
        study_description: "CT HEAD".into(),
        series_description: "AXIAL".into(),
        image_comments: String::new(),
        study_date: "20260101".into(),
        study_time: "120000".into(),
        manufacturer: "test".into(),
        window_center: 40.0,
        window_width: 80.0,
        series_number: 1,
        skip_slices: Vec::new(),
    };
    write_ct_series(dir, &st.volume, &meta).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    manifest: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let model = root.join("model");
    save_tiny_model(&model);
    write_dicom(&root.join("studies/s1"), 1);
    write_dicom(&root.join("studies/s3"), 3);
    let cfg = SynthConfig {
        size: 40,
        n_slices: Some(8),
        ..Default::default()
    };
    let st = generate_study(&cfg, 5, 2);
    hn_imaging::nifti::write_volume(&root.join("studies/s2.nii.gz"), &st.volume).unwrap();
    std::fs::create_dir_all(root.join("studies/broken")).unwrap();
    std::fs::write(root.join("studies/broken/not-dicom.dcm"), "plain text").unwrap();
    let manifest = root.join("manifest.csv");
    std::fs::write(
        &manifest,
        "study_key,path,age,gcs\n\
         study-1,studies/s1,70,14\n\
         study-2,studies/s2.nii.gz,,\n\
         study-3,studies/s3,55,\n\
         broken,studies/broken/not-dicom.dcm,60,12\n",
    )
    .unwrap();
    Fixture {
        _tmp: tmp,
        root,
        model,
        manifest,
    }
}

fn hn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"));
    c.arg("predict").args(args);
    c.env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_ID");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run hemorrhagenet")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn single_study_writes_report_and_prints_json() {
    let f = fixture();
    let clinical = f.root.join("patient.json");
    std::fs::write(&clinical, r#"{"age": 80, "gcs": 6, "anticoagulant": true}"#).unwrap();
    let out = f.root.join("out");
    let o = hn(
        &[
            s(&f.root.join("studies/s1")),
            "--model",
            s(&f.model),
            "--clinical",
            s(&clinical),
            "--out",
            s(&out),
            "--top-features",
            "3",
            "--mc-passes",
            "2",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["study"], "s1");
    assert_eq!(v["feature_weights"].as_array().unwrap().len(), 3);
    assert_eq!(v["uncertainty"]["passes"], 2);
    assert_eq!(v["input"]["clinical_features_given"], 3);
    let dir = out.join("s1");
    for name in ["prediction.json", "heatmap.nii.gz"] {
        assert!(dir.join(name).is_file(), "{name}");
    }
    let pngs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".png")
        })
        .count();
    assert_eq!(pngs, 3);
    // MC dropout is seeded per study: a rerun gives the same numbers.
    let again = hn(
        &[
            s(&f.root.join("studies/s1")),
            "--model",
            s(&f.model),
            "--clinical",
            s(&clinical),
            "--out",
            s(&out),
            "--top-features",
            "3",
            "--mc-passes",
            "2",
        ],
        &[],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let v2: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["probabilities"], v2["probabilities"]);
    assert_eq!(v["uncertainty"], v2["uncertainty"]);
    assert!(
        v["uncertainty"]["any"]["mutual_information"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
    let text = std::fs::read_to_string(dir.join("prediction.json")).unwrap();
    assert!(!text.contains("SENTINEL"));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("SENTINEL"));
}

#[test]
fn bad_inputs_name_the_file() {
    let f = fixture();
    let o = hn(
        &[
            s(&f.root.join("studies/s1")),
            "--model",
            s(&f.root.join("no-model")),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-model"), "{}", stderr(&o));

    let bad = f.root.join("clin.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let o = hn(
        &[
            s(&f.root.join("studies/s1")),
            "--model",
            s(&f.model),
            "--clinical",
            s(&bad),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("clin.json"), "{}", stderr(&o));

    let o = hn(
        &[
            s(&f.root.join("studies/broken")),
            "--model",
            s(&f.model),
            "--out",
            s(&f.root.join("o")),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("studies/broken"), "{}", stderr(&o));
    assert!(!f.root.join("o/broken").exists());
}

fn summary(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}", String::from_utf8_lossy(&o.stdout)))
}

fn keys(v: &Value, field: &str) -> BTreeSet<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            if field == "failed" {
                x["key"].as_str().unwrap().to_string()
            } else {
                x[0].as_str().unwrap().to_string()
            }
        })
        .collect()
}

#[test]
fn sharded_batch_covers_every_study_once_and_reruns_skip() {
    let f = fixture();
    let out = f.root.join("batch");
    let run = |i: &str, env: &[(&str, &str)]| {
        let mut args = vec![
            "--manifest",
            s(&f.manifest),
            "--shard-count",
            "2",
            "--model",
            s(&f.model),
            "--out",
            s(&out),
        ];
        if !i.is_empty() {
            args.extend(["--shard-index", i]);
        }
        hn(&args, env)
    };
    let o0 = run("0", &[]);
    // The shard index from the Kubernetes Indexed Job variable.
    let o1 = run("", &[("JOB_COMPLETION_INDEX", "1")]);
    let (v0, v1) = (summary(&o0), summary(&o1));
    assert_eq!(v1["shard_index"], 1);
    let all: BTreeSet<String> = ["study-1", "study-2", "study-3", "broken"]
        .map(String::from)
        .into();
    let (k0, k1) = (keys(&v0, "outputs"), keys(&v1, "outputs"));
    assert!(k0.is_disjoint(&k1), "{k0:?} {k1:?}");
    assert_eq!(&k0 | &k1, all);
    for k in &all {
        let want = hn_data::splits::shard_of(k, 2);
        assert!(if want == 0 { &k0 } else { &k1 }.contains(k));
    }
    // The broken study fails in its shard only; that shard exits non-zero.
    let failed: BTreeSet<String> = &keys(&v0, "failed") | &keys(&v1, "failed");
    assert_eq!(failed, ["broken".to_string()].into());
    let broken_shard = hn_data::splits::shard_of("broken", 2);
    let (bad, good) = if broken_shard == 0 {
        (&o0, &o1)
    } else {
        (&o1, &o0)
    };
    assert!(!bad.status.success());
    assert!(good.status.success(), "{}", stderr(good));
    assert!(stderr(bad).contains("broken") && stderr(bad).contains("not-dicom.dcm"));
    let done = v0["done"].as_u64().unwrap() + v1["done"].as_u64().unwrap();
    assert_eq!(done, 3);
    for k in ["study-1", "study-2", "study-3"] {
        let p: Value =
            serde_json::from_slice(&std::fs::read(out.join(k).join("prediction.json")).unwrap())
                .unwrap();
        assert_eq!(p["study"], k);
    }
    assert!(out.join("shard-0-of-2.json").is_file() && out.join("shard-1-of-2.json").is_file());
    // No identifiers in any output.
    for k in ["study-1", "study-3"] {
        let t = std::fs::read_to_string(out.join(k).join("prediction.json")).unwrap();
        assert!(!t.contains("SENTINEL"));
    }

    // Rerun: finished studies are skipped, the broken one is tried (and fails) again.
    let before = std::fs::metadata(out.join("study-1/prediction.json"))
        .unwrap()
        .modified()
        .unwrap();
    let (r0, r1) = (summary(&run("0", &[])), summary(&run("1", &[])));
    assert_eq!(
        r0["done"].as_u64().unwrap() + r1["done"].as_u64().unwrap(),
        0
    );
    assert_eq!(
        r0["skipped_existing"].as_u64().unwrap() + r1["skipped_existing"].as_u64().unwrap(),
        3
    );
    assert_eq!(
        r0["failed"].as_array().unwrap().len() + r1["failed"].as_array().unwrap().len(),
        1
    );
    let after = std::fs::metadata(out.join("study-1/prediction.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // Bad shard arguments are an error.
    let o = run("2", &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("shard"), "{}", stderr(&o));
}

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-imaging")
        .join(rel)
}

#[test]
fn real_dicom_ct_is_scored_without_identifiers_and_mr_is_refused() {
    let f = fixture();
    let out = f.root.join("real");
    let o = hn(
        &[
            s(&testdata("dicom/series-ct-head-16px")),
            "--model",
            s(&f.model),
            "--out",
            s(&out),
            "--mc-passes",
            "2",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["study"], "series-ct-head-16px");
    assert_eq!(v["input"]["modality"], "CT");
    assert_eq!(v["input"]["dims"], serde_json::json!([16, 16, 4]));
    // The header's PatientName (Doe^Archibald) and PatientID (77654033) never appear.
    let dir = out.join("series-ct-head-16px");
    for e in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        for needle in ["Archibald", "77654033"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
        }
    }
    for needle in ["Archibald", "77654033"] {
        assert!(!String::from_utf8_lossy(&o.stdout).contains(needle));
        assert!(!stderr(&o).contains(needle));
    }

    let o = hn(
        &[s(&testdata("dicom/MR_small.dcm")), "--model", s(&f.model)],
        &[],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("MR_small.dcm") && e.contains("unusable") && e.contains("MR"),
        "{e}"
    );
}

/// `demo` ends by predicting a held-out study; the model it trained (with a calibration
/// fitted by the training code, not by hand) then serves `predict` with `--key`.
#[test]
fn demo_predicts_a_heldout_study_and_its_model_serves_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        "seed = 5\nepochs = 1\nbatch_size = 4\npatience = 0\nmc_passes = 3\n\
         [net]\nslices = 6\nsize = 32\nwidths = [8, 16]\nn_heads = 2\nd_attn = 8\n",
    )
    .unwrap();
    let out = tmp.path().join("demo");
    let o = Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
        .args(["demo", "--studies", "30", "--bootstrap", "10", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let preds: Vec<PathBuf> = std::fs::read_dir(out.join("prediction"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(preds.len(), 1, "{preds:?}");
    let p: Value =
        serde_json::from_slice(&std::fs::read(preds[0].join("prediction.json")).unwrap()).unwrap();
    assert_eq!(p["model"]["calibrated"], true);
    assert_eq!(p["input"]["format"], "dicom");
    let id = p["study"].as_str().unwrap().to_string();
    assert!(id.starts_with("SYNTH-"));

    let dicom = out.join("heldout").join(&id).join("dicom");
    let o = hn(
        &[
            s(&dicom),
            "--model",
            s(&out.join("run/model")),
            "--key",
            "case-7",
            "--out",
            s(&tmp.path().join("p")),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["study"], "case-7");
    assert_eq!(v["uncertainty"]["passes"], 3, "the card's mc_passes");
    assert!(tmp.path().join("p/case-7/prediction.json").is_file());
    // The synthetic DICOM's patient name must not leak either.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("SYNTHETIC^PATIENT"));
}
