//! `hemorrhagenet predict` end to end: the built binary on a tiny saved model and synthetic
//! studies, single-study and sharded batch mode.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hn_data::synth::{SynthConfig, generate_study};
use serde_json::Value;

mod common;
use common::{dicom_text, save_tiny_model, tool_missing, write_dicom};

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
    // The trained card gates inputs by its training envelope and refers atypical studies by
    // their feature distance; the held-out study of the same generator is inside.
    assert_eq!(p["input_gate"]["verdict"], "inside", "{}", p["input_gate"]);
    assert!(p["review"]["feature_distance"].as_f64().unwrap() >= 0.0);
    assert!(p["review"]["distance_threshold"].as_f64().unwrap() > 0.0);
    let card: Value =
        serde_json::from_slice(&std::fs::read(out.join("run/model/card.json")).unwrap()).unwrap();
    assert!(card["envelope"]["n_studies"].as_u64().unwrap() > 0);
    let dist = &card["calibration"]["distance"];
    assert!(dist["density"]["n"].as_u64().unwrap() > 0, "{dist}");
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(out.join("report/metrics.json")).unwrap()).unwrap();
    let rd = &metrics["referral"]["distance"];
    assert_eq!(
        rd["curve_combined"].as_array().unwrap().len(),
        metrics["referral"]["curve"].as_array().unwrap().len()
    );
    assert!(
        rd["test_rate"].as_f64().unwrap() <= metrics["referral"]["test_rate"].as_f64().unwrap()
    );
    // The demo also shows what a PACS would receive.
    assert!(preds[0].join("dicom/sr.dcm").is_file());
    assert!(preds[0].join("dicom/overlay_01.dcm").is_file());
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

fn run_tool(cmd: &str, args: &[&Path]) -> (bool, String, String) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|_| tool_missing(cmd));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn sop_uids(path: &Path) -> (String, String) {
    (
        dicom_text(path, dicom_dictionary_std::tags::SOP_INSTANCE_UID),
        dicom_text(path, dicom_dictionary_std::tags::SERIES_INSTANCE_UID),
    )
}

/// The checks of issue "DICOM results": every object valid for dciodvfy, parsed by dcmdump,
/// the SR tree read by dsrdump and by highdicom (TID 1500 measurement groups) with the same
/// numbers as prediction.json, identity copied from the source, evidence and source-image
/// references to the source instances, deterministic UIDs, no identifier anywhere else.
#[test]
fn dicom_results_carry_the_prediction_and_the_source_identity() {
    let f = fixture();
    let clinical = f.root.join("patient.json");
    std::fs::write(&clinical, r#"{"age": 80, "gcs": 6, "anticoagulant": true}"#).unwrap();
    // A copy of the model whose bleed threshold is 0, so every level of the decision path is
    // evaluated and lands in the SR (the batch run below uses the plain model).
    let always = f.root.join("model-always");
    std::fs::create_dir_all(&always).unwrap();
    for e in std::fs::read_dir(&f.model).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), always.join(e.file_name())).unwrap();
    }
    let card_path = always.join("card.json");
    let mut card: Value = serde_json::from_slice(&std::fs::read(&card_path).unwrap()).unwrap();
    card["calibration"]["thresholds"][0] = serde_json::json!(0.0);
    std::fs::write(&card_path, serde_json::to_vec(&card).unwrap()).unwrap();
    let predict = |out: &Path| {
        hn(
            &[
                s(&f.root.join("studies/s1")),
                "--model",
                s(&always),
                "--clinical",
                s(&clinical),
                "--out",
                s(out),
                "--mc-passes",
                "2",
                "--dicom",
            ],
            &[],
        )
    };
    let out = f.root.join("out");
    let o = predict(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    for text in [String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o)] {
        assert!(!text.contains("SENTINEL"), "identifiers on stdout/stderr");
    }
    let dir = out.join("s1");
    let json = std::fs::read_to_string(dir.join("prediction.json")).unwrap();
    assert!(!json.contains("SENTINEL"));
    let ddir = dir.join("dicom");
    let mut names: Vec<String> = std::fs::read_dir(&ddir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "overlay_01.dcm",
            "overlay_02.dcm",
            "overlay_03.dcm",
            "sr.dcm"
        ]
    );
    let sr = ddir.join("sr.dcm");
    let overlays: Vec<PathBuf> = (1..=3)
        .map(|i| ddir.join(format!("overlay_{i:02}.dcm")))
        .collect();

    // dicom3tools: no IOD errors (warnings: our private coding scheme is not in its tables).
    for p in std::iter::once(&sr).chain(&overlays) {
        let (_, out, err) = run_tool("dciodvfy", &[p]);
        let text = out + &err;
        let iod = if p == &sr { "EnhancedSR" } else { "SCImage" };
        assert!(text.contains(iod), "{}: {text}", p.display());
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", p.display());
        let (ok, _, err) = run_tool("dcmdump", &[p]);
        assert!(ok && !err.contains("E:"), "dcmdump {}: {err}", p.display());
    }
    // dcmtk's SR reader: the tree, with the level-1 numbers as written.
    let pred: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        pred["decision_path"]["level_2"]["subtypes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(pred["decision_path"]["level_3"]["evaluated"], true);
    let (ok, tree, err) = run_tool("dsrdump", &[&sr]);
    assert!(ok, "dsrdump: {err}");
    let p_any = pred["decision_path"]["level_1"]["probability"]
        .as_f64()
        .unwrap();
    for needle in [
        "Enhanced SR Document".to_string(),
        "Imaging Measurement Report".into(),
        "(1386000,SCT,\"Intracranial hemorrhage\")".into(),
        format!("\"Probability\")=\"{p_any:.6}\""),
        "\"Intended use\")".into(),
    ] {
        assert!(tree.contains(&needle), "{needle} not in {tree}");
    }
    // The overlay renders (dcmtk's own renderer).
    let png = f.root.join("overlay.png");
    let (ok, _, err) = run_tool("dcmj2pnm", &[Path::new("--write-png"), &overlays[0], &png]);
    assert!(ok && std::fs::metadata(&png).unwrap().len() > 1000, "{err}");

    // highdicom and pydicom: every number of prediction.json, identity, references.
    let script = r#"
import sys, json, glob, pydicom, highdicom as hd
pred = json.load(open(sys.argv[1])); srp = sys.argv[2]; src_dir = sys.argv[3]; ovs = sys.argv[4:]
close = lambda a, b: abs(a - b) < 1e-12
sr = hd.sr.srread(srp)
groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
meas = lambda g: {m.name.meaning: m.value for m in g.get_measurements()}
qual = lambda g: {q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()}
dp = pred["decision_path"]; l1 = dp["level_1"]
g = groups["level 1: intracranial hemorrhage"]; m = meas(g)
assert g.finding_type.value == "1386000" and g.finding_type.scheme_designator == "SCT"
assert close(m["Probability"], l1["probability"]) and close(m["Threshold Value"], l1["threshold"])
assert qual(g)["Intracranial hemorrhage"] == ("Present" if l1["decision"] else "Absent")
if pred["hematoma_volume_ml"] is not None:
    assert close(m["Volume"], pred["hematoma_volume_ml"])
l2 = dp["level_2"]
assert len([k for k in groups if k.startswith("level 2: ")]) == len(l2["subtypes"])
for st in l2["subtypes"]:
    g = groups["level 2: " + st["subtype"]]; m = meas(g)
    assert close(m["Probability"], st["probability"])
    assert close(m["Probability given hemorrhage"], st["probability_given_bleed"])
    assert close(m["Threshold Value"], st["threshold"])
    assert list(qual(g).values()) == ["Present" if st["decision"] else "Absent"]
l3 = dp["level_3"]
if l3["evaluated"]:
    m = meas(groups["level 3: prognosis"])
    assert close(m["Probability of death within 30 days"], l3["p_mortality_30d"])
    assert close(m["Probability of 90-day mRS 4 or worse"], l3["p_poor_outcome_90d"])
    for k, p in enumerate(l3["mrs_distribution"]):
        assert close(m["Probability of 90-day mRS %d" % k], p)
else:
    assert "level 3: prognosis" not in groups
g = groups["expert review"]
assert qual(g)["Referral for expert review"] == ("Yes" if pred["review"]["flag"] else "No")
assert close(meas(g)["Model uncertainty"], pred["review"]["uncertainty"])
w = [x.value for x in groups["clinical feature weights"].get_measurements()]
assert len(w) == len(pred["feature_weights"]) and all(close(a, b["weight"]) for a, b in zip(w, pred["feature_weights"]))
texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in sr.ContentSequence}
assert texts["Intended use"].TextValue == pred["intended_use"]
assert texts["Model trained on synthetic data only"].ConceptCodeSequence[0].CodeMeaning == ("Yes" if pred["model"]["synthetic"] else "No")

src = {}
for p in sorted(glob.glob(src_dir + "/*.dcm")):
    d = pydicom.dcmread(p); src[d.SOPInstanceUID] = (p, d)
s0 = next(iter(src.values()))[1]
ds = pydicom.dcmread(srp)
assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22" and ds.Modality == "SR"
ev = ds.CurrentRequestedProcedureEvidenceSequence[0]
assert ev.StudyInstanceUID == s0.StudyInstanceUID
assert ev.ReferencedSeriesSequence[0].SeriesInstanceUID == s0.SeriesInstanceUID
assert {r.ReferencedSOPInstanceUID for r in ev.ReferencedSeriesSequence[0].ReferencedSOPSequence} == set(src)
series = {ds.SeriesInstanceUID}
for i, o in enumerate(ovs):
    d = pydicom.dcmread(o)
    assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and d.BurnedInAnnotation == "YES"
    assert d.pixel_array.ndim == 3 and d.pixel_array.shape[2] == 3
    assert "NOT FOR DIAGNOSIS" in d.ImageComments and "SYNTHETIC MODEL" in d.ImageComments
    ks = pred["key_slices"][i]
    ref = d.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert src[ref][0].endswith("IM%04d.dcm" % (ks["input_slice"] + 1)), (src[ref][0], ks)
    series.add(d.SeriesInstanceUID)
for d in [ds] + [pydicom.dcmread(o) for o in ovs]:
    for kw in ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"]:
        assert d.get(kw) == s0.get(kw), kw
    assert d.SeriesInstanceUID != s0.SeriesInstanceUID
assert str(ds.PatientName) == "ZZSENTINEL^NAME" and ds.PatientID == "PIDSENTINEL77"
assert len(series) == 2 and ds.SeriesNumber != pydicom.dcmread(ovs[0]).SeriesNumber
print("ok")
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.join("prediction.json"))
        .arg(&sr)
        .arg(f.root.join("studies/s1"))
        .args(&overlays)
        .output()
        .unwrap_or_else(|_| tool_missing("python3 with highdicom"));
    assert!(
        o.status.success(),
        "highdicom/pydicom: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // Rescoring replaces: the same study and model give the same UIDs.
    let out2 = f.root.join("out2");
    assert!(predict(&out2).status.success());
    for name in ["sr.dcm", "overlay_01.dcm"] {
        assert_eq!(
            sop_uids(&ddir.join(name)),
            sop_uids(&out2.join("s1/dicom").join(name))
        );
    }

    // NIfTI has no identity to file results under: a clear error, nothing written.
    let o = hn(
        &[
            s(&f.root.join("studies/s2.nii.gz")),
            "--model",
            s(&f.model),
            "--out",
            s(&out),
            "--dicom",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("DICOM results need a DICOM study"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("s2.nii.gz").exists());

    // Batch mode: DICOM studies get their objects; the NIfTI study fails with the reason.
    let bout = f.root.join("batch");
    let o = hn(
        &[
            "--manifest",
            s(&f.manifest),
            "--model",
            s(&f.model),
            "--out",
            s(&bout),
            "--mc-passes",
            "0",
            "--dicom",
        ],
        &[],
    );
    let v = summary(&o);
    assert_eq!(
        keys(&v, "failed"),
        ["broken", "study-2"]
            .iter()
            .map(|k| k.to_string())
            .collect()
    );
    let failed = v["failed"].to_string();
    assert!(
        failed.contains("DICOM results need a DICOM study"),
        "{failed}"
    );
    for k in ["study-1", "study-3"] {
        assert!(bout.join(k).join("dicom/sr.dcm").is_file(), "{k}");
    }
}
