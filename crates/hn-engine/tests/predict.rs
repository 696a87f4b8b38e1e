//! `infer::Predictor` end to end on a tiny model and synthetic studies written as DICOM and
//! NIfTI.

use std::io::Read;
use std::path::{Path, PathBuf};

use hn_data::ClinicalRecord;
use hn_data::synth::{SynthConfig, generate_study};
use hn_engine::checkpoint::{
    Calibration, DatasetDigest, INTENDED_USE, ModelCard, TemperatureSet, save_model,
};
use hn_engine::infer::{InferError, PredictOptions, Predictor, write_outputs};
use hn_engine::metrics::ReferralPolicy;
use hn_engine::sample::{InputMask, default_preprocess, make_batch};
use hn_imaging::dicom_write::{SeriesMeta, uid_from_hash, write_ct_series};
use hn_model::HemorrhageNetConfig;
use hn_model::burn::prelude::Device;

const NAME_SENTINEL: &str = "ZZSENTINEL^PATIENTNAME";
const ID_SENTINEL: &str = "PIDSENTINEL4242";

fn card(calibration: Option<Calibration>) -> ModelCard {
    ModelCard {
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
            train_labels: None,
        },
        epoch: 1,
        validation: serde_json::json!({}),
        calibration,
        intended_use: INTENDED_USE.into(),
        envelope: None,
        mr_envelope: None,
        mr_calibration: None,
    }
}

fn calibration(any_threshold: f64, referral_threshold: f64) -> Calibration {
    Calibration {
        temperatures: TemperatureSet {
            any: 1.5,
            ..Default::default()
        },
        thresholds: [any_threshold, 0.3, 0.3, 0.3, 0.3, 0.3],
        uncertainty: Default::default(),
        referral: ReferralPolicy {
            threshold: referral_threshold,
            target_rate: 0.1,
            validation_rate: 0.1,
        },
        mc_passes: 3,
        mortality_threshold: 0.4,
        tta: Default::default(),
        facts: None,
        distance: None,
    }
}

fn net() -> hn_model::HemorrhageNet {
    HemorrhageNetConfig::new()
        .with_slices(8)
        .with_height(32)
        .with_width(32)
        .with_widths(vec![8, 16])
        .with_d_attn(16)
        .init(&Device::flex())
}

fn predictor(net: &hn_model::HemorrhageNet, cal: Option<Calibration>) -> Predictor {
    Predictor::new(net.clone(), card(cal), Device::flex())
        .unwrap()
        .with_options(PredictOptions {
            top_features: 4,
            ..Default::default()
        })
}

/// A synthetic bleeding study (48² × 10, so the model grid differs from the input grid)
/// written as DICOM with sentinel patient name/ID, and as NIfTI.
fn studies(root: &Path) -> (PathBuf, PathBuf) {
    let cfg = SynthConfig {
        size: 48,
        n_slices: Some(10),
        prevalence_bleed: 1.0,
        p_missing_slice: 0.0,
        ..Default::default()
    };
    let st = generate_study(&cfg, 11, 0);
    let dicom = root.join("study-a");
    let meta = SeriesMeta {
        patient_id: ID_SENTINEL.into(),
        patient_name: NAME_SENTINEL.into(),
        study_instance_uid: uid_from_hash(1),
        series_instance_uid: uid_from_hash(2),
        frame_of_reference_uid: uid_from_hash(3),
        sop_uid_prefix: uid_from_hash(4),
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
    write_ct_series(&dicom, &st.volume, &meta).unwrap();
    let nii = root.join("study-b.nii.gz");
    hn_imaging::nifti::write_volume(&nii, &st.volume).unwrap();
    (dicom, nii)
}

fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        if p.to_string_lossy().ends_with(".gz") {
            let mut d = Vec::new();
            flate2::read::GzDecoder::new(&b[..])
                .read_to_end(&mut d)
                .unwrap();
            b = d;
        }
        out.push((p, b));
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_same_affine(a: [[f64; 4]; 4], b: [[f64; 4]; 4]) {
    for r in 0..4 {
        for c in 0..4 {
            assert!((a[r][c] - b[r][c]).abs() < 1e-3, "affine {a:?} vs {b:?}");
        }
    }
}

#[test]
fn predict_dicom_and_nifti_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (dicom, nii) = studies(tmp.path());
    let net = net();
    let clinical = ClinicalRecord {
        age: Some(77.0),
        gcs: Some(8),
        ..Default::default()
    };

    // Saved and loaded like a training run's `model` folder.
    let model_dir = tmp.path().join("model");
    save_model(&model_dir, &net, &card(Some(calibration(0.0, -1.0)))).unwrap();
    let p = Predictor::load(&model_dir)
        .unwrap()
        .with_options(PredictOptions {
            top_features: 4,
            ..Default::default()
        });
    assert_eq!(p.card.calibration.as_ref().unwrap().mc_passes, 3);

    let res = p.predict_path("study-a", &dicom, clinical).unwrap();
    let out = tmp.path().join("out-a");
    let files = write_outputs(&res.prediction, &res.sample, &res.volume, &out, None).unwrap();
    assert_eq!(files.len(), 3 + 2, "{files:?}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("prediction.json")).unwrap()).unwrap();
    for key in [
        "schema_version",
        "study",
        "model",
        "input",
        "decision_path",
        "probabilities",
        "uncertainty",
        "review",
        "feature_weights",
        "hematoma_volume_ml",
        "estimated_facts",
        "key_slices",
        "intended_use",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["study"], "study-a");
    assert_eq!(json["input"]["format"], "dicom");
    assert_eq!(json["input"]["dims"], serde_json::json!([48, 48, 10]));
    assert_eq!(json["input"]["model_grid"], serde_json::json!([8, 32, 32]));
    assert_eq!(json["model"]["calibrated"], true);
    assert_eq!(json["uncertainty"]["passes"], 3);
    assert!(json["decision_path"]["level_1"]["question"].is_string());
    let pr = &res.prediction;
    // Threshold 0 → bleed decided, levels 2 and 3 evaluated.
    assert!(pr.decision_path.level_1.decision);
    assert_eq!(pr.decision_path.level_2.subtypes.len(), 5);
    assert!(pr.decision_path.level_3.p_mortality_30d.is_some());
    assert!(pr.decision_path.level_3.high_mortality_risk.is_some());
    for (name, ps) in &pr.probabilities.subtypes {
        assert!(*ps <= pr.probabilities.any + 1e-9, "{name}: {ps} > P(any)");
    }
    for sd in &pr.decision_path.level_2.subtypes {
        assert!(sd.probability <= pr.decision_path.level_1.probability + 1e-9);
        assert_eq!(sd.decision, sd.probability >= 0.3);
    }
    // Reported probabilities are the deterministic forward with the card's temperatures
    // (any: T = 1.5), the quantity the thresholds were fitted on.
    let raw = p.net.forward(make_batch(
        &[&res.sample],
        None,
        InputMask::default(),
        &Device::flex(),
    ));
    let logit = f64::from(raw.any_logit.into_data().try_to_vec::<f32>().unwrap()[0]);
    let want = 1.0 / (1.0 + (-logit / 1.5).exp());
    assert!(
        (pr.probabilities.any - want).abs() < 1e-5,
        "{} vs {want}",
        pr.probabilities.any
    );
    let mc = pr.uncertainty.any.mc_mean.unwrap();
    assert!((0.0..=1.0).contains(&mc) && pr.uncertainty.any.sd.unwrap() >= 0.0);
    let mrs_sum: f64 = pr.probabilities.mrs.unwrap().iter().sum();
    assert!((mrs_sum - 1.0).abs() < 1e-4, "mRS sums to {mrs_sum}");
    let poor = pr.probabilities.poor_outcome_90d.unwrap();
    assert!((poor - pr.probabilities.mrs_at_least.unwrap()[3]).abs() < 1e-12);
    // A card written before training label counts were recorded withholds nothing.
    assert!(pr.withheld.is_empty() && pr.decision_path.level_3.withheld.is_empty());
    let u = &pr.uncertainty.any;
    assert!(u.predictive_entropy >= 0.0 && u.predictive_entropy <= 2f64.ln() + 1e-9);
    assert!(u.mutual_information >= 0.0 && u.mutual_information <= u.predictive_entropy + 1e-9);
    // Referral threshold −1 < any entropy → flagged.
    assert!(pr.review.flag, "{:?}", pr.review);
    assert_eq!(pr.review.threshold, Some(-1.0));
    assert_eq!(pr.review.target_referral_rate, Some(0.1));
    // Feature weights: top 4, sorted, values as given.
    assert_eq!(pr.feature_weights.len(), 4);
    assert!(
        pr.feature_weights
            .windows(2)
            .all(|w| w[0].weight >= w[1].weight)
    );
    for fw in &pr.feature_weights {
        match fw.name.as_str() {
            "age" => assert_eq!(fw.value, serde_json::json!(77.0)),
            "gcs" => assert_eq!(fw.value, serde_json::json!(8)),
            _ => assert_eq!(fw.value, serde_json::json!("missing")),
        }
    }
    assert!(pr.hematoma_volume_ml.unwrap() >= 0.0);
    // Key slices: 3, by decreasing heat mass, each with its overlay.
    assert_eq!(pr.key_slices.len(), 3);
    assert!(
        pr.key_slices
            .windows(2)
            .all(|w| w[0].heat_mass >= w[1].heat_mass)
    );
    for ks in &pr.key_slices {
        let png = std::fs::read(out.join(&ks.overlay)).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(ks.input_slice < 10);
    }
    let mass: f32 = pr.heatmap.density.iter().sum();
    assert!((mass - 1.0).abs() < 1e-3, "heatmap sums to {mass}");

    // The NIfTI heatmap is on the input's grid.
    let heat =
        hn_imaging::nifti::read_volume(&out.join("heatmap.nii.gz"), &Default::default()).unwrap();
    assert_eq!(heat.dims, res.volume.dims);
    assert_same_affine(heat.affine(), res.volume.affine());
    let (lo, hi) = heat.min_max().unwrap();
    assert!(lo >= 0.0 && (hi - 1.0).abs() < 1e-6);

    // Only the outputs: no temporary files left behind.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = pr.key_slices.iter().map(|k| k.overlay.clone()).collect();
    want.extend(["heatmap.nii.gz".into(), "prediction.json".into()]);
    want.sort();
    assert_eq!(names, want);

    // No patient name/ID anywhere in the outputs.
    for (path, bytes) in all_bytes(&out) {
        for s in [NAME_SENTINEL, ID_SENTINEL, "ZZSENTINEL"] {
            assert!(!contains(&bytes, s), "{} contains {s}", path.display());
        }
    }

    // NIfTI input: same geometry in the heatmap.
    let res_b = p
        .predict_path("study-b.nii.gz", &nii, ClinicalRecord::default())
        .unwrap();
    assert_eq!(
        res_b.prediction.input.format,
        hn_imaging::InputFormat::Nifti
    );
    let out_b = tmp.path().join("out-b");
    write_outputs(
        &res_b.prediction,
        &res_b.sample,
        &res_b.volume,
        &out_b,
        None,
    )
    .unwrap();
    let heat_b =
        hn_imaging::nifti::read_volume(&out_b.join("heatmap.nii.gz"), &Default::default()).unwrap();
    assert_eq!(heat_b.dims, [48, 48, 10]);
    assert_same_affine(heat_b.affine(), res_b.volume.affine());
}

#[test]
fn decision_path_and_review_follow_the_card() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, nii) = studies(tmp.path());
    let net = net();
    let run = |cal: Option<Calibration>| {
        predictor(&net, cal)
            .predict_path("s", &nii, ClinicalRecord::default())
            .unwrap()
            .prediction
    };
    // Threshold 1.0 is never reached: level 1 says no, levels 2 and 3 are skipped.
    let no = run(Some(calibration(1.0, 1e9)));
    assert!(!no.decision_path.level_1.decision);
    assert!(!no.decision_path.level_2.evaluated);
    assert!(no.decision_path.level_2.subtypes.is_empty());
    assert!(
        no.decision_path
            .level_2
            .skipped
            .as_ref()
            .unwrap()
            .contains("no hemorrhage")
    );
    assert!(!no.decision_path.level_3.evaluated);
    assert_eq!(no.decision_path.level_3.p_mortality_30d, None);
    // Referral threshold far above any entropy: not flagged.
    assert!(!no.review.flag, "{:?}", no.review);
    assert!(no.review.reason.contains("within"));
    // Probabilities are reported whatever the path.
    assert!(
        no.probabilities
            .subtypes
            .iter()
            .all(|(_, p)| *p <= no.probabilities.any + 1e-9)
    );

    // Referral threshold −∞ (a policy fitted for a 100 % referral rate): always flagged; the
    // non-finite threshold is reported as null.
    let all = run(Some(calibration(0.5, f64::NEG_INFINITY)));
    assert!(all.review.flag);
    assert_eq!(all.review.threshold, None);
    assert!(all.review.reason.contains("above"));

    // Uncalibrated: thresholds 0.5, flagged for review, said so.
    let un = run(None);
    assert!(!un.model.calibrated);
    assert_eq!(un.model.calibration, "uncalibrated");
    assert_eq!(un.decision_path.level_1.threshold, 0.5);
    assert!(un.review.flag && un.review.threshold.is_none());
    assert!(un.review.reason.contains("uncalibrated"));
    assert_eq!(un.uncertainty.passes, hn_engine::scoring::DEFAULT_MC_PASSES);
}

#[test]
fn unusable_studies_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let net = net();
    let p = predictor(&net, None);
    // Values in [0, 1]: not Hounsfield units.
    let v = hn_imaging::Volume::new(
        vec![0.5; 32 * 32 * 4],
        [32, 32, 4],
        [1.0, 1.0, 5.0],
        hn_imaging::Modality::Other("NIfTI".into()),
    )
    .unwrap();
    let nii = tmp.path().join("scaled.nii");
    hn_imaging::nifti::write_volume(&nii, &v).unwrap();
    let e = p
        .predict_path("scaled.nii", &nii, ClinicalRecord::default())
        .err()
        .unwrap();
    assert!(matches!(e, InferError::Unusable { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("scaled.nii") && msg.contains("Hounsfield"),
        "{msg}"
    );
    // A single slice.
    let mut one = v.clone();
    one.dims = [64, 64, 1];
    let e = p
        .predict_volume(
            "flat",
            one,
            hn_imaging::InputFormat::Nifti,
            ClinicalRecord::default(),
        )
        .err()
        .unwrap();
    assert!(e.to_string().contains("slice"), "{e}");
    // A folder without DICOM files.
    let empty = tmp.path().join("no-dicom");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "hello").unwrap();
    let e = p
        .predict_path("no-dicom", &empty, ClinicalRecord::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("no-dicom"), "{e}");
    // A missing model folder.
    let e = Predictor::load(&tmp.path().join("missing-model"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing-model"), "{e}");
}

/// The facts read-out reaches the report only when the card says it was trained (it carries
/// the validation agreement), gated by the bleed decision; the card's Platt bias moves the
/// reported mortality.
#[test]
fn facts_read_out_and_platt_bias_follow_the_card() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, nii) = studies(tmp.path());
    let net = net();
    let run = |cal: Calibration| {
        predictor(&net, Some(cal))
            .predict_path("s", &nii, ClinicalRecord::default())
            .unwrap()
            .prediction
    };
    let agreement = hn_engine::metrics::FactsAgreement {
        n: 300,
        hematoma_ml_mae: 8.1,
        intraventricular_ml_mae: 0.8,
        volume_cut_accuracy: 0.95,
        infratentorial_auc: Some(0.97),
    };
    // Without facts in the card: the crude estimate, no read-out.
    let plain = run(calibration(0.0, 1e9));
    assert!(plain.estimated_facts.is_none());
    assert!(plain.hematoma_volume_method.contains("crude"));
    // With them and a positive bleed decision (threshold 0): the read-out, ungated.
    let mut cal = calibration(0.0, 1e9);
    cal.facts = Some(agreement);
    let yes = run(cal.clone());
    let f = yes.estimated_facts.as_ref().unwrap();
    assert_eq!(f.validation, agreement);
    assert!(yes.hematoma_volume_method.contains("read-out"));
    assert!((0.0..=1.0).contains(&f.p_infratentorial));
    let total = f.hematoma_ml + f.intraventricular_ml;
    assert!((yes.hematoma_volume_ml.unwrap() - total).abs() < 1e-9);
    // A negative bleed decision (threshold 1) zeroes the volumes.
    cal.thresholds[0] = 1.0;
    let no = run(cal.clone());
    let g = no.estimated_facts.as_ref().unwrap();
    assert_eq!((g.hematoma_ml, g.intraventricular_ml), (0.0, 0.0));
    assert_eq!(no.hematoma_volume_ml, Some(0.0));
    // Platt bias: a bias of +2 on the mortality logit raises P(death) as sigmoid says.
    let mut platt = calibration(0.0, 1e9);
    platt.temperatures.mortality_bias = 2.0;
    let p0 = plain.probabilities.mortality_30d.unwrap();
    let p2 = run(platt).probabilities.mortality_30d.unwrap();
    let logit = |p: f64| (p / (1.0 - p)).ln();
    assert!((logit(p2) - logit(p0) - 2.0).abs() < 1e-4, "{p0} → {p2}");
}

/// A card written before test-time augmentation existed has no `tta`: it means one plain
/// forward, the way its temperatures and thresholds were fitted.
#[test]
fn calibration_without_tta_means_none() {
    let mut v = serde_json::to_value(calibration(0.5, 0.2)).unwrap();
    v.as_object_mut().unwrap().remove("tta");
    let back: Calibration = serde_json::from_value(v).unwrap();
    assert_eq!(back.tta, hn_engine::scoring::TestTimeAugmentation::None);
    let mut flip = calibration(0.5, 0.2);
    flip.tta = hn_engine::scoring::TestTimeAugmentation::Flip;
    let v = serde_json::to_value(&flip).unwrap();
    assert_eq!(v["tta"], "flip");
    assert_eq!(serde_json::from_value::<Calibration>(v).unwrap(), flip);
}

/// Several synthetic studies as NIfTI files, each a different patient.
fn nifti_cohort(root: &Path, n: usize) -> Vec<PathBuf> {
    let cfg = SynthConfig {
        size: 40,
        n_slices: Some(9),
        p_missing_slice: 0.0,
        ..Default::default()
    };
    (0..n)
        .map(|i| {
            let st = generate_study(&cfg, 21, i);
            let p = root.join(format!("s{i}.nii.gz"));
            hn_imaging::nifti::write_volume(&p, &st.volume).unwrap();
            p
        })
        .collect()
}

fn as_json(p: &hn_engine::infer::Prediction) -> serde_json::Value {
    serde_json::to_value(p).unwrap()
}

/// Everything numeric in two reports agrees to `tol` (strings and flags exactly).
fn assert_close_json(a: &serde_json::Value, b: &serde_json::Value, tol: f64, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= tol, "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                assert_close_json(u, v, tol, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, u) in x {
                // Free text quotes numbers to 3-4 digits: compared exactly only when the
                // numbers are.
                if k == "reason" || k == "skipped" {
                    continue;
                }
                assert_close_json(u, &y[k], tol, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// `Predictor` can be shared between threads, and what a study gets does not depend on what
/// else is scored at the same time, nor on the batch it is scored in: MC dropout draws from the
/// study's own generator, not from the backend's process-global RNG.
#[test]
fn concurrent_and_batched_scoring_equal_serial_scoring() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Predictor>();

    let tmp = tempfile::tempdir().unwrap();
    let files = nifti_cohort(tmp.path(), 6);
    // Dropout on, so that MC passes differ and the RNG matters.
    let net = HemorrhageNetConfig::new()
        .with_slices(8)
        .with_height(32)
        .with_width(32)
        .with_widths(vec![8, 16])
        .with_d_attn(16)
        .with_dropout(0.3)
        .init(&Device::flex());
    let p = std::sync::Arc::new(predictor(&net, Some(calibration(0.0, 0.3))));
    let key = |i: usize| format!("s{i}");
    let serial: Vec<serde_json::Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            as_json(
                &p.predict_path(&key(i), f, ClinicalRecord::default())
                    .unwrap()
                    .prediction,
            )
        })
        .collect();
    assert!(
        serial[0]["uncertainty"]["any"]["mutual_information"]
            .as_f64()
            .unwrap()
            > 0.0,
        "MC passes agree: dropout is not on"
    );
    // A rerun in the same process gives the same numbers (seeded per study, not per process).
    let again = as_json(
        &p.predict_path(&key(0), &files[0], ClinicalRecord::default())
            .unwrap()
            .prediction,
    );
    assert_eq!(again, serial[0]);

    // Three threads, each scoring every study in a different order, all at once.
    let handles: Vec<_> = (0..3)
        .map(|t| {
            let p = p.clone();
            let files = files.clone();
            std::thread::spawn(move || {
                let mut order: Vec<usize> = (0..files.len()).collect();
                order.rotate_left(t * 2);
                order
                    .into_iter()
                    .map(|i| {
                        let r = p
                            .predict_path(&format!("s{i}"), &files[i], ClinicalRecord::default())
                            .unwrap();
                        (i, as_json(&r.prediction))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, got) in h.join().unwrap() {
            assert_eq!(got, serial[i], "study {i} scored concurrently");
        }
    }

    // Batched: the same studies four to a forward.
    let results: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            p.predict_path(&key(i), f, ClinicalRecord::default())
                .unwrap()
        })
        .collect();
    let items: Vec<_> = results
        .iter()
        .map(|r| (&r.sample, r.prediction.input.clone()))
        .collect();
    let batched = p.predict_many(&items);
    assert_eq!(batched.len(), files.len());
    for (i, b) in batched.iter().enumerate() {
        assert_close_json(&as_json(b), &serial[i], 1e-5, &format!("study {i} batched"));
    }
}

/// A card whose values would make a later request fail is refused when the model is loaded,
/// naming card.json and the field.
#[test]
fn model_card_is_validated_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let net = net();
    let load = |name: &str, edit: &dyn Fn(&mut ModelCard)| {
        let mut c = card(Some(calibration(0.5, 0.2)));
        edit(&mut c);
        let dir = tmp.path().join(name);
        save_model(&dir, &net, &c).unwrap();
        Predictor::load(&dir).err().map(|e| e.to_string())
    };
    assert_eq!(load("good", &|_| {}), None);
    type Edit<'a> = &'a dyn Fn(&mut ModelCard);
    let cases: [(&str, Edit, &str); 6] = [
        (
            "temperature",
            &|c| c.calibration.as_mut().unwrap().temperatures.any = 0.0,
            "temperatures.any",
        ),
        (
            "threshold",
            &|c| c.calibration.as_mut().unwrap().thresholds[2] = 1.5,
            "thresholds[2]",
        ),
        (
            "windows",
            &|c| c.preprocess.windows.truncate(2),
            "2 windows",
        ),
        ("width", &|c| c.preprocess.windows[1].1 = 0.0, "windows[1]"),
        ("grid", &|c| c.preprocess.shape = Some([8, 64, 64]), "grid"),
        (
            "rate",
            &|c| c.calibration.as_mut().unwrap().referral.target_rate = 2.0,
            "referral",
        ),
    ];
    for (name, edit, want) in cases {
        let msg = load(name, edit).unwrap_or_else(|| panic!("{name}: card accepted"));
        assert!(
            msg.contains("card.json") && msg.contains(want),
            "{name}: {msg}"
        );
    }
    // An unknown referral measure is refused by the card's parser, not at the first request.
    let dir = tmp.path().join("measure");
    save_model(&dir, &net, &card(Some(calibration(0.5, 0.2)))).unwrap();
    let path = dir.join("card.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("any_decision_entropy", "entropy_of_everything");
    std::fs::write(&path, text).unwrap();
    let msg = Predictor::load(&dir).err().unwrap().to_string();
    assert!(msg.contains("entropy_of_everything"), "{msg}");
}

/// A study held in memory (DICOM instances as bytes, a NIfTI file's bytes) is scored exactly as
/// the same study read from disk, and its artifacts in memory are the files the writer writes.
#[test]
fn studies_in_memory_score_like_files_and_artifacts_are_the_files() {
    use hn_engine::infer::StudyBytes;
    use hn_imaging::dicom::{MemoryData, MemoryInstance};
    let tmp = tempfile::tempdir().unwrap();
    let (dicom, nii) = studies(tmp.path());
    let p = predictor(&net(), Some(calibration(0.0, 0.5)));
    let clinical = ClinicalRecord {
        age: Some(64.0),
        ..Default::default()
    };
    let from_disk = p.predict_path("study-a", &dicom, clinical).unwrap();
    let instances = std::fs::read_dir(&dicom)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            MemoryInstance {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                data: MemoryData::Bytes(std::fs::read(&path).unwrap()),
            }
        })
        .collect();
    let from_memory = p
        .predict_bytes("study-a", StudyBytes::Dicom(instances), clinical)
        .unwrap();
    assert_eq!(from_memory.prediction, from_disk.prediction);
    let nii_disk = p
        .predict_path("b", &nii, ClinicalRecord::default())
        .unwrap();
    let nii_mem = p
        .predict_bytes(
            "b",
            StudyBytes::Nifti(std::fs::read(&nii).unwrap()),
            ClinicalRecord::default(),
        )
        .unwrap();
    assert_eq!(nii_mem.prediction, nii_disk.prediction);

    let art = from_memory.artifacts().unwrap();
    let out = tmp.path().join("written");
    write_outputs(
        &from_disk.prediction,
        &from_disk.sample,
        &from_disk.volume,
        &out,
        None,
    )
    .unwrap();
    assert_eq!(
        art.prediction_json,
        std::fs::read(out.join("prediction.json")).unwrap()
    );
    assert_eq!(
        art.heatmap_nifti_gz,
        std::fs::read(out.join("heatmap.nii.gz")).unwrap()
    );
    assert_eq!(art.overlays.len(), 3);
    for (name, png) in &art.overlays {
        assert_eq!(png, &std::fs::read(out.join(name)).unwrap(), "{name}");
    }

    // Errors say whose fault they are: an unusable request is the caller's.
    let junk = vec![MemoryInstance {
        name: "i0".into(),
        data: MemoryData::Bytes(b"junk".to_vec()),
    }];
    let e = p
        .predict_bytes(
            "request-5",
            StudyBytes::Dicom(junk),
            ClinicalRecord::default(),
        )
        .err()
        .unwrap();
    assert_eq!(e.fault(), hn_imaging::Fault::Input, "{e}");
    assert!(e.to_string().contains("request-5"), "{e}");
    let e = p
        .predict_bytes(
            "request-6",
            StudyBytes::Nifti(vec![1, 2, 3]),
            ClinicalRecord::default(),
        )
        .err()
        .unwrap();
    assert_eq!(e.fault(), hn_imaging::Fault::Input, "{e}");
    let e = Predictor::load(&tmp.path().join("missing-model"))
        .err()
        .unwrap();
    assert_eq!(e.fault(), hn_imaging::Fault::Internal, "{e}");
}

/// A model whose training data had no outcomes (RSNA, CQ500) reports no prognosis: `null`
/// with the reason in `prediction.json`, its uncertainty, `predictions.csv` and the SR; a
/// model that learned only the mRS head reports that one alone.
#[test]
fn heads_that_never_learned_are_withheld_with_a_reason() {
    use hn_engine::checkpoint::TrainingLabelCounts;
    let dir = tempfile::tempdir().unwrap();
    let (dicom, _) = studies(dir.path());
    let net = net();
    let with_counts = |mortality_30d: usize, mrs_90d: usize| {
        let mut c = card(Some(calibration(0.0, 1e9)));
        c.dataset.name = "rsna-2019".into();
        c.dataset.n_train = 40;
        c.dataset.train_labels = Some(TrainingLabelCounts {
            detection: 40,
            slices: 40,
            mortality_30d,
            mrs_90d,
        });
        Predictor::new(net.clone(), c, Device::flex()).unwrap()
    };

    // No outcome at all: level 1 says bleed (threshold 0), level 3 is not evaluated.
    let p = with_counts(0, 0);
    let res = p
        .predict_path("s", &dicom, ClinicalRecord::default())
        .unwrap();
    let pr = &res.prediction;
    assert!(pr.decision_path.level_1.decision);
    let probs = &pr.probabilities;
    assert_eq!(
        (
            probs.mortality_30d,
            probs.poor_outcome_90d,
            probs.mrs,
            probs.mrs_at_least
        ),
        (None, None, None, None)
    );
    assert!(pr.uncertainty.mortality_30d.is_none() && pr.uncertainty.mrs_90d.is_none());
    let names: Vec<&str> = pr.withheld.iter().map(|w| w.output.as_str()).collect();
    assert_eq!(names, ["mortality_30d", "mrs_90d"]);
    assert!(
        pr.withheld[0].reason.contains("never learned"),
        "{:?}",
        pr.withheld
    );
    assert!(pr.withheld[0].reason.contains("rsna-2019"));
    let l3 = &pr.decision_path.level_3;
    assert!(!l3.evaluated && l3.p_mortality_30d.is_none() && l3.mrs_distribution.is_none());
    assert!(l3.skipped.as_deref().unwrap().contains("no prognosis head"));
    let json = serde_json::to_value(pr).unwrap();
    assert!(json["probabilities"]["mortality_30d"].is_null());
    let sr = p.dicom_results(&res).unwrap().sr.bytes;
    assert!(contains(&sr, "WITHHELD") && contains(&sr, "never learned"));
    assert!(
        !contains(&sr, "MORT30"),
        "no mortality probability in the SR"
    );

    // Only the mRS head learned: level 3 is evaluated with the mRS alone.
    let pr = with_counts(0, 25)
        .predict_path("s", &dicom, ClinicalRecord::default())
        .unwrap()
        .prediction;
    let l3 = &pr.decision_path.level_3;
    assert!(l3.evaluated && l3.p_mortality_30d.is_none() && l3.high_mortality_risk.is_none());
    assert!(l3.p_poor_outcome_90d.is_some() && l3.mrs_distribution.is_some());
    assert_eq!(l3.withheld.len(), 1);
    assert!(pr.probabilities.mortality_30d.is_none() && pr.probabilities.mrs.is_some());

    // Both learned: nothing withheld.
    let pr = with_counts(30, 30)
        .predict_path("s", &dicom, ClinicalRecord::default())
        .unwrap()
        .prediction;
    assert!(pr.withheld.is_empty() && pr.probabilities.mortality_30d.is_some());
}

/// The DICOM study of [`studies`], the test network, a calibrated predictor without envelope
/// or distance policy, and the study as that predictor preprocesses it.
fn preprocessed_study(
    root: &Path,
) -> (
    PathBuf,
    hn_model::HemorrhageNet,
    Predictor,
    hn_engine::sample::StudySample,
) {
    let (dicom, _) = studies(root);
    let net = net();
    let plain = predictor(&net, Some(calibration(0.5, 1e9)));
    let read = hn_imaging::read_any(&dicom, &Default::default()).unwrap();
    let sample = plain
        .preprocess("s", read.volume, ClinicalRecord::default())
        .unwrap();
    (dicom, net, plain, sample)
}

/// The input gate: a study like the training studies is inside the card's envelope; one whose
/// field of view the model never saw is scored but referred, the reason saying so; the real
/// 4-slice, 16-pixel GE series (a 5 mm slab, 8 mm across) is refused.
#[test]
fn studies_outside_the_training_envelope_are_flagged_or_refused() {
    use hn_engine::envelope::{Range, TrainingEnvelope, Verdict};
    let dir = tempfile::tempdir().unwrap();
    let (dicom, net, _, sample) = preprocessed_study(dir.path());
    let envelope = TrainingEnvelope::of([&sample]).unwrap();
    let with = |e: TrainingEnvelope| {
        let mut c = card(Some(calibration(0.5, 1e9)));
        c.envelope = Some(e);
        Predictor::new(net.clone(), c, Device::flex()).unwrap()
    };

    // The study the envelope was taken from: inside, not referred (referral threshold 1e9).
    let pr = with(envelope.clone())
        .predict_path("s", &dicom, ClinicalRecord::default())
        .unwrap()
        .prediction;
    let gate = pr.input_gate.as_ref().unwrap();
    assert_eq!(gate.verdict, Verdict::Inside, "{gate:?}");
    assert_eq!(
        gate.checks.len(),
        2 + 2 * 3,
        "coverage, field of view, 2 per window"
    );
    assert!(!pr.review.flag, "{}", pr.review.reason);

    // Training saw only fields of view 30–40 % wider: scored, referred, and said why.
    let f = envelope.fov_mm.lo;
    let wider = TrainingEnvelope {
        fov_mm: Range {
            lo: 1.3 * f,
            hi: 1.4 * f,
        },
        ..envelope.clone()
    };
    let pr = with(wider)
        .predict_path("s", &dicom, ClinicalRecord::default())
        .unwrap()
        .prediction;
    assert_eq!(pr.input_gate.as_ref().unwrap().verdict, Verdict::Outside);
    assert!(pr.review.flag);
    assert!(
        pr.review
            .reason
            .starts_with("outside the training envelope (fov_mm"),
        "{}",
        pr.review.reason
    );
    let json = serde_json::to_value(&pr).unwrap();
    assert_eq!(json["input_gate"]["verdict"], "outside");

    // The real 16-pixel series: refused before scoring, naming the file's key and the cause.
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-imaging/dicom/series-ct-head-16px");
    let Err(e) = with(envelope).predict_path("ge-16px", &real, ClinicalRecord::default()) else {
        panic!("the 16-pixel series was scored");
    };
    let msg = e.to_string();
    assert!(matches!(e, InferError::Unusable { .. }), "{msg}");
    assert!(
        msg.contains("ge-16px") && msg.contains("training envelope") && msg.contains("coverage_mm"),
        "{msg}"
    );
}

/// A card with a feature-distance policy refers a study whose embedding lies far from the
/// training density, whatever its uncertainty, and says so; at the density's mean it does not.
#[test]
fn atypical_features_are_referred_by_distance() {
    use hn_engine::distance::{DistancePolicy, FeatureDensity};
    let dir = tempfile::tempdir().unwrap();
    let (dicom, net, plain, sample) = preprocessed_study(dir.path());
    let emb = plain.score(&[&sample]).pop().unwrap().embedding;
    let d = emb.len();
    let policy = |shift: f64| {
        let mut cal = calibration(0.5, 1e9);
        let mut precision = vec![0.0; d * d];
        (0..d).for_each(|i| precision[i * d + i] = 1.0);
        cal.distance = Some(DistancePolicy {
            density: FeatureDensity {
                n: 10,
                mean: emb.iter().map(|&v| f64::from(v) + shift).collect(),
                precision,
            },
            threshold: 1.0,
            validation_rate: 0.025,
        });
        Predictor::new(net.clone(), card(Some(cal)), Device::flex()).unwrap()
    };
    let at_mean = policy(0.0)
        .predict_path("s", &dicom, ClinicalRecord::default())
        .unwrap()
        .prediction
        .review;
    assert!(!at_mean.flag, "{}", at_mean.reason);
    assert!(at_mean.feature_distance.unwrap() < 1e-3);
    assert!(
        at_mean.reason.contains("is within the threshold 1.00"),
        "{}",
        at_mean.reason
    );
    let far = policy(10.0)
        .predict_path("s", &dicom, ClinicalRecord::default())
        .unwrap()
        .prediction
        .review;
    assert!(far.flag);
    let want = 10.0 * (d as f64).sqrt();
    assert!((far.feature_distance.unwrap() - want).abs() < 1e-3 * want);
    assert_eq!(far.distance_threshold, Some(1.0));
    assert!(far.reason.contains("atypical study"), "{}", far.reason);
}
