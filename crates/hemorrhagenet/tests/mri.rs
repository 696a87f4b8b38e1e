//! MRI end to end on the built binary: a model trained on CT and MR studies of the same
//! synthetic patients, evaluated per modality, scoring an MR DICOM study with a sequence
//! missing, and a CT-only model refusing MR with the reason.

use std::path::Path;
use std::process::Command;

const MIXED: &str = r#"
seed = 5
epochs = 1
batch_size = 4
patience = 0
mc_passes = 2
pretrain_epochs = 1
pretrain_batch = 16
# The non-default reduction, so that its path (card, predict) is exercised end to end.
mr_reduction = "susceptibility_minimum"
# N4 bias-field correction with its defaults, so that it too runs through card and predict.
[mr_bias_correction]
[net]
slices = 6
size = 32
widths = [8, 16]
n_heads = 2
d_attn = 8
[synth]
size = 48
n_slices = 0
modality = "both"
[synth.mr]
size = 40
"#;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
}

fn run(c: &mut Command) -> String {
    let o = c.output().unwrap();
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    text
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

#[test]
fn one_model_trains_on_ct_and_mr_evaluates_each_and_scores_an_mr_study() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mixed.toml");
    std::fs::write(&cfg, MIXED).unwrap();
    let out = dir.path().join("run");
    let log = run(bin()
        .args(["train", "--studies", "24", "--synth-seed", "4", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out));
    assert!(log.contains("pre-training epoch 1"), "{log}");
    // Pre-training draws slices of both modalities, each through its own stem.
    let mr_slices: usize = log
        .split(" of them MR)")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MR slice count in the pre-training log: {log}"));
    let all_slices: usize = log
        .split(" slices (")
        .next()
        .and_then(|head| head.rsplit("over ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(
        mr_slices > 0 && mr_slices < all_slices,
        "{mr_slices} of {all_slices}"
    );
    let model = out.join("model");
    let card = json(&model.join("card.json"));
    let seqs: Vec<&str> = card["preprocess"]["mr_sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(seqs, ["t1", "t2", "flair", "t2star_gre", "swi"]);
    // GRE and SWI reduced by their minimum (a minimum-intensity projection), as configured.
    assert_eq!(card["preprocess"]["mr_reduction"], "susceptibility_minimum");
    assert_eq!(card["preprocess"]["mr_bias_correction"]["levels"], 3);
    assert_eq!(card["envelope"]["modality"], "CT");
    assert_eq!(card["mr_envelope"]["modality"], "MR");
    // One calibration per modality: fitted on the CT and on the MR validation studies.
    assert!(card["calibration"]["temperatures"]["any"].as_f64().unwrap() > 0.0);
    assert!(
        card["mr_calibration"]["temperatures"]["any"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_ne!(
        card["calibration"]["thresholds"],
        card["mr_calibration"]["thresholds"]
    );
    let net = json(&model.join("model.config.json"));
    assert_eq!(net["mr_channels"], 5);
    assert_eq!(net["channels"], 3);

    // Per-modality evaluation beside the combined one.
    let ev = dir.path().join("eval");
    let text = run(bin()
        .args([
            "evaluate",
            "--studies",
            "24",
            "--synth-seed",
            "4",
            "--bootstrap",
            "20",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(&ev));
    let table = std::fs::read_to_string(ev.join("modalities.md")).unwrap();
    assert!(
        table.contains("| ALL (n = ")
            && table.contains("| CT (n = ")
            && table.contains("| MR (n = "),
        "{table}"
    );
    assert!(text.contains("| any"), "{text}");
    let all = json(&ev.join("metrics.json"));
    let ct = json(&ev.join("ct/metrics.json"));
    let mr = json(&ev.join("mr/metrics.json"));
    let n = |m: &serde_json::Value| m["dataset"]["n_studies"].as_u64().unwrap();
    assert_eq!(n(&all), n(&ct) + n(&mr));
    assert!(n(&mr) > 0 && n(&ct) > 0);
    // The combined report judges each study under its own modality's calibration (the
    // thresholds differ, asserted above): its operating points are the two reports' summed,
    // with no one threshold to name, and so is its review rate.
    for j in 0..6 {
        let counts = |m: &serde_json::Value| {
            ["tp", "fp", "tn", "fn"].map(|f| m["detection"][j]["at_chosen"][f].as_u64().unwrap())
        };
        let (a, c, r) = (counts(&all), counts(&ct), counts(&mr));
        assert_eq!(a, [0, 1, 2, 3].map(|i| c[i] + r[i]), "label {j}");
    }
    assert!(
        all["detection"][0]["at_chosen"]["threshold"].is_null(),
        "{}",
        all["detection"][0]
    );
    let referred =
        |m: &serde_json::Value| m["referral"]["test_rate"].as_f64().unwrap() * n(m) as f64;
    assert!((referred(&all) - referred(&ct) - referred(&mr)).abs() < 1e-6);

    // Recalibrated on another site's mixed studies: each modality's calibration refitted on
    // that modality's validation studies.
    let rc = dir.path().join("recal");
    let said = run(bin()
        .args([
            "evaluate",
            "--studies",
            "24",
            "--synth-seed",
            "5",
            "--bootstrap",
            "10",
        ])
        .args(["--recalibrate-on", "validation", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&rc));
    // Each modality's few studies are warned about on their own.
    assert!(
        said.contains("CT validation studies to recalibrate on")
            && said.contains("MR validation studies to recalibrate on"),
        "{said}"
    );
    let recal = json(&rc.join("model/card.json"));
    for c in ["calibration", "mr_calibration"] {
        assert!(recal[c].is_object(), "{c}");
        assert_ne!(recal[c], card[c], "{c} was not refitted");
    }

    // An MR study of a new patient with its SWI series missing: scored, the gap reported.
    let cohort = dir.path().join("mr");
    run(bin()
        .args([
            "synth",
            "--modality",
            "mr",
            "--format",
            "both",
            "--studies",
            "6",
            "--seed",
            "77",
            "--config",
        ])
        .arg(write_synth(dir.path()))
        .arg("--out")
        .arg(&cohort));
    let study = cohort.join("studies/SYNTH-000000/mr");
    let swi = study.join("swi");
    if swi.exists() {
        std::fs::remove_dir_all(&swi).unwrap();
    }
    let pred = dir.path().join("pred");
    run(bin()
        .args(["predict", "--quiet", "--key", "mr0", "--model"])
        .arg(&model)
        .arg(&study)
        .arg("--out")
        .arg(&pred));
    let p = json(&pred.join("mr0/prediction.json"));
    let input = &p["input"];
    assert_eq!(input["modality"], "MR");
    let missing: Vec<&str> = input["mr"]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(missing.contains(&"swi"), "{input}");
    // ... and a reader of the warnings is told in words.
    assert!(
        p["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("swi not in the study")),
        "{}",
        p["warnings"]
    );
    assert_eq!(
        input["mr"]["reduction"], "susceptibility_minimum",
        "{input}"
    );
    let read: Vec<&str> = input["mr"]["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sequence"].as_str().unwrap())
        .collect();
    assert!(!read.contains(&"swi") && !read.is_empty(), "{input}");
    for s in input["mr"]["sequences"].as_array().unwrap() {
        assert!(!s["rule"].as_str().unwrap().contains("description"), "{s}");
        // Each sequence's bias field, divided out before normalising (the generator puts
        // ±5–25 % on every sequence).
        let field: Vec<f64> = s["bias_field"]
            .as_array()
            .unwrap_or_else(|| panic!("no bias_field: {s}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            field[0] < 1.0 && field[1] > 1.0 && field[0] > 0.3 && field[1] < 3.0,
            "{s}"
        );
    }
    let any = p["probabilities"]["any"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&any));
    assert!(
        p["input_gate"]["verdict"].as_str().is_some(),
        "{}",
        p["input_gate"]
    );

    // The same patient as NIfTI files named by sequence: the same sequences read, the same
    // answer within the storage precision.
    let nii = cohort.join("studies/SYNTH-000000");
    run(bin()
        .args(["predict", "--quiet", "--key", "mr0-nifti", "--model"])
        .arg(&model)
        .arg(&nii)
        .arg("--out")
        .arg(&pred));
    let q = json(&pred.join("mr0-nifti/prediction.json"));
    assert_eq!(q["input"]["format"], "nifti");
    assert!(
        q["input"]["mr"]["sequences"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("NIfTI")
    );
    let q_any = q["probabilities"]["any"].as_f64().unwrap();
    let seqs_nifti = q["input"]["mr"]["sequences"].as_array().unwrap().len();
    // The NIfTI folder still has the SWI file the DICOM folder lost.
    assert_eq!(seqs_nifti, read.len() + 1, "{}", q["input"]);
    assert!((0.0..=1.0).contains(&q_any));

    // A real brain with its geometry: the MNI ICBM152 T1 template (1 mm, 197 × 233 × 189,
    // nilearn) as the study's only sequence, through reading, N4, normalisation and
    // resampling to the model's gate.
    let real = dir.path().join("mni");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../testdata/real-imaging/nifti/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        ),
        real.join("t1.nii.gz"),
    )
    .unwrap();
    run(bin()
        .args(["predict", "--quiet", "--key", "mni", "--model"])
        .arg(&model)
        .arg(&real)
        .arg("--out")
        .arg(&pred));
    let m = json(&pred.join("mni/prediction.json"));
    assert_eq!(m["input"]["dims"], serde_json::json!([197, 233, 189]));
    assert_eq!(m["input"]["mr"]["reference"], "t1");
    assert_eq!(
        m["input"]["mr"]["missing"],
        serde_json::json!(["t2", "flair", "t2star_gre", "swi"])
    );
    // An average of 152 scans is nearly flat: N4 finds at most a few per cent.
    let field = &m["input"]["mr"]["sequences"][0]["bias_field"];
    let (lo, hi) = (field[0].as_f64().unwrap(), field[1].as_f64().unwrap());
    assert!(lo > 0.85 && hi < 1.15 && lo < hi, "{field}");
    // 189 mm of 1 mm slices with one sequence is far from this model's training: scored,
    // but never unflagged.
    assert_eq!(m["input_gate"]["verdict"], "outside", "{}", m["input_gate"]);
    assert_eq!(m["review"]["flag"], true);
    let why = m["review"]["reason"].as_str().unwrap();
    assert!(
        why.contains("outside the training envelope") && why.contains("coverage_mm"),
        "{why}"
    );

    // `inspect` shows the choices per sequence: of the DICOM study (SWI deleted above) and of
    // the same patient's NIfTI folder (SWI still there).
    let shown = run(bin().arg("inspect").arg(&study));
    assert!(
        shown.contains("MR study") && shown.contains("missing    swi"),
        "{shown}"
    );
    let shown_nii = run(bin().arg("inspect").arg(&nii));
    assert!(
        shown_nii.contains("MR study") && shown_nii.contains("NIfTI file named swi"),
        "{shown_nii}"
    );
    for s in [&shown, &shown_nii] {
        assert!(s.contains("flair") && s.contains("bias field ×"), "{s}");
    }

    // MR studies on disk, listed in a manifest (`modality = MR`): the six patients, study 1
    // as its folder of NIfTI files, the others as DICOM folders, with their labels.
    let labels = std::fs::read_to_string(cohort.join("labels_study.csv")).unwrap();
    let mut manifest = String::from(
        "study_key,path,modality,any,epidural,subdural,subarachnoid,intraparenchymal,intraventricular\n",
    );
    for line in labels.lines().skip(1) {
        let (id, l) = line.split_once(',').unwrap();
        let path = if id.ends_with('1') {
            format!("studies/{id}")
        } else {
            format!("studies/{id}/mr")
        };
        manifest += &format!("{id},{path},MR,{l}\n");
    }
    let manifest_csv = cohort.join("manifest.csv");
    std::fs::write(&manifest_csv, manifest).unwrap();
    // Trained from disk: the model gets MR channels from the rows alone.
    let disk_cfg = dir.path().join("disk.toml");
    std::fs::write(
        &disk_cfg,
        "seed = 3\nepochs = 1\nbatch_size = 2\npatience = 0\nmc_passes = 2\n\
         pretrain_epochs = 0\n[split]\ntrain = 0.34\nvalidation = 0.33\ntest = 0.33\n\
         [net]\nslices = 6\nsize = 32\nwidths = [8, 16]\nn_heads = 2\nd_attn = 8\n",
    )
    .unwrap();
    let disk = dir.path().join("disk");
    run(bin()
        .args(["train", "--dataset", "manifest", "--root"])
        .arg(&manifest_csv)
        .arg("--config")
        .arg(&disk_cfg)
        .arg("--out")
        .arg(&disk));
    let disk_card = json(&disk.join("model/card.json"));
    assert_eq!(
        disk_card["preprocess"]["mr_sequences"]
            .as_array()
            .unwrap()
            .len(),
        5,
        "{}",
        disk_card["preprocess"]
    );
    assert_eq!(disk_card["mr_envelope"]["modality"], "MR");
    // Evaluated from disk, every study read as MR.
    let disk_ev = dir.path().join("disk-ev");
    run(bin()
        .args([
            "evaluate",
            "--dataset",
            "manifest",
            "--split",
            "all",
            "--bootstrap",
            "10",
            "--root",
        ])
        .arg(&manifest_csv)
        .arg("--model")
        .arg(disk.join("model"))
        .arg("--out")
        .arg(&disk_ev));
    let ev_metrics = json(&disk_ev.join("metrics.json"));
    assert_eq!(
        ev_metrics["dataset"]["n_studies"], 6,
        "{}",
        ev_metrics["dataset"]
    );
    // Scored in a batch from the same manifest: each study an MR prediction.
    let batch = dir.path().join("batch");
    run(bin()
        .args(["predict", "--quiet", "--manifest"])
        .arg(&manifest_csv)
        .arg("--model")
        .arg(disk.join("model"))
        .arg("--out")
        .arg(&batch));
    for id in ["SYNTH-000001", "SYNTH-000004"] {
        let b = json(&batch.join(id).join("prediction.json"));
        assert_eq!(b["input"]["modality"], "MR", "{id}");
    }
    // One NIfTI file named by its sequence, read as MR when told so; a file that is no
    // sequence's name is refused with how to name it.
    let single = dir.path().join("single");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::copy(nii.join("mr_flair.nii.gz"), single.join("flair.nii.gz")).unwrap();
    std::fs::copy(nii.join("mr_flair.nii.gz"), single.join("head.nii.gz")).unwrap();
    run(bin()
        .args([
            "predict",
            "--quiet",
            "--modality",
            "mr",
            "--key",
            "flair-only",
            "--model",
        ])
        .arg(&model)
        .arg(single.join("flair.nii.gz"))
        .arg("--out")
        .arg(&pred));
    let f = json(&pred.join("flair-only/prediction.json"));
    assert_eq!(f["input"]["mr"]["sequences"][0]["sequence"], "flair");
    assert_eq!(f["input"]["mr"]["missing"].as_array().unwrap().len(), 4);
    let o = bin()
        .args(["predict", "--quiet", "--modality", "mr", "--model"])
        .arg(&model)
        .arg(single.join("head.nii.gz"))
        .arg("--out")
        .arg(&pred)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("named by its sequence"),
        "{err}"
    );

    // The triage service on the same model takes the MR series by C-STORE and scores them.
    serve_scores_an_mr_study(&model, &study, dir.path());

    // A CT-only model says why it cannot read MR.
    let ct_cfg = dir.path().join("ct.toml");
    std::fs::write(
        &ct_cfg,
        MIXED
            .replace("modality = \"both\"", "")
            .replace("[synth.mr]\nsize = 40\n", "")
            .replace("pretrain_epochs = 1", "pretrain_epochs = 0"),
    )
    .unwrap();
    let ct_out = dir.path().join("ct-run");
    run(bin()
        .args(["train", "--studies", "16", "--synth-seed", "4", "--config"])
        .arg(&ct_cfg)
        .arg("--out")
        .arg(&ct_out));
    let o = bin()
        .args(["predict", "--quiet", "--model"])
        .arg(ct_out.join("model"))
        .arg(&study)
        .arg("--out")
        .arg(dir.path().join("pred-ct"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("Hounsfield") || err.contains("CT only"),
        "{err}"
    );
}

/// The MR size of the training config, for a study the model can read at its resolution.
fn write_synth(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("synth.toml");
    std::fs::write(&p, "[mr]\nsize = 40\np_missing_sequence = 0.0\n").unwrap();
    p
}

/// `hemorrhagenet serve` with an MR-reading model: dcmtk's storescu sends an MR study's
/// series (the SCP offers MR Image Storage for such a model), the study is scored as MR.
fn serve_scores_an_mr_study(model: &Path, study: &Path, tmp: &Path) {
    use std::io::{BufRead, BufReader, Read, Write};
    let log = std::fs::File::create(tmp.join("serve.log")).unwrap();
    // The server is ended however the test ends (an assertion below unwinds through this).
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Server(
        bin()
            .args(["serve", "--model"])
            .arg(model)
            .arg("--data")
            .arg(tmp.join("serve-data"))
            .args([
                "--http",
                "127.0.0.1:0",
                "--dicom",
                "127.0.0.1:0",
                "--study-timeout",
                "2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("serve started");
    let http = v["http"].as_str().unwrap().to_string();
    let port = v["dicom"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    // dcmtk sends `path` (a folder with `+sd +r`) and the node says success for every file.
    let store = |path: &Path, args: &[&str]| {
        let o = Command::new("storescu")
            .args(["-aec", "HNET"])
            .args(args)
            .args(["127.0.0.1", &port])
            .arg(path)
            .output()
            .expect("storescu (dcmtk) is required");
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            o.status.success() && !err.contains("E:") && !err.contains("W:"),
            "storescu {}: {err}",
            path.display()
        );
    };
    let study_uid = |file: &Path| -> String {
        let dump = Command::new("dcmdump")
            .args(["+P", "0020,000d"])
            .arg(file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&dump.stdout)
            .split('[')
            .nth(1)
            .and_then(|r| r.split(']').next())
            .expect("StudyInstanceUID")
            .to_string()
    };
    let get = |path: &str| -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(&http).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        let text = String::from_utf8_lossy(&b);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    };
    // The study's job once it has ended, done or failed.
    let finished = |uid: &str| -> serde_json::Value {
        let t = std::time::Instant::now();
        loop {
            let v = get(&format!("/v1/studies/{uid}"));
            if v["status"] == "done" || v["status"] == "failed" {
                return v;
            }
            assert!(t.elapsed().as_secs() < 120, "not scored in 120 s: {v}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };

    store(study, &["+sd", "+r"]);
    let first = std::fs::read_dir(study.join("t1"))
        .or_else(|_| std::fs::read_dir(study.join("t2")))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let status = finished(&study_uid(&first));
    assert_eq!(status["status"], "done", "{status}");
    let text = status.to_string();
    assert!(text.contains("\"MR\""), "the result says MR: {text}");

    // A real multi-frame Enhanced MR file (Philips, 10 frames of 64², anonymised without
    // geometry) is admitted by the same node (C-STORE success, not 0122) and read as a T1
    // study; 10 mm of coverage is far outside this model's training, so the job ends with the
    // gate's reason, never with a decoding or SOP-class error.
    let emr = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-imaging/dicom/emri_small.dcm");
    store(&emr, &[]);
    let status = finished(&study_uid(&emr));
    drop(child);
    let text = status.to_string();
    assert!(
        status["status"] == "done" || text.contains("outside the model's MR training envelope"),
        "an Enhanced MR study is read: {text}"
    );
}
