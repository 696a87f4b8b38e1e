//! `hemorrhagenet train` / `evaluate` on the built binary: determinism, resume after a killed
//! run, config errors, and an evaluation report on the held-out split.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = r#"
seed = 5
epochs = 3
batch_size = 4
patience = 0
mc_passes = 3
pretrain_epochs = 0
[net]
slices = 6
size = 32
widths = [8, 16]
n_heads = 2
d_attn = 8
"#;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hemorrhagenet"))
}

fn train_cmd(cfg: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["train", "--studies", "30", "--synth-seed", "3", "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(out);
    c
}

fn history(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("history.json")).expect("history.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Wall time differs between runs; everything else must not.
    for e in v.as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seconds");
    }
    v
}

#[test]
fn same_seed_same_metrics_and_resume_after_kill_matches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();

    let a = dir.path().join("a");
    let st = train_cmd(&cfg, &a).stderr(Stdio::null()).status().unwrap();
    assert!(st.success());
    let b = dir.path().join("b");
    assert!(
        train_cmd(&cfg, &b)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let ha = history(&a);
    assert_eq!(ha.as_array().unwrap().len(), 3);
    assert_eq!(ha, history(&b), "same seed and data must give the same run");
    // The slice-head diagnostic is computed over the validation slices (synthetic studies all
    // carry slice labels) and is a probability-scale AUC.
    for e in ha.as_array().unwrap() {
        let a = e["val"]["auc_slice_any"].as_f64().expect("auc_slice_any");
        assert!((0.0..=1.0).contains(&a), "{a}");
    }
    for f in [
        "model/model.bpk",
        "model/model.config.json",
        "model/card.json",
    ] {
        assert!(a.join(f).exists(), "{f}");
    }
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("model/card.json")).unwrap()).unwrap();
    assert!(card["calibration"]["temperatures"]["any"].as_f64().unwrap() > 0.0);
    assert!(card["dataset"]["n_train"].as_u64().unwrap() > 0);
    assert!(
        card["code_version"]
            .as_str()
            .unwrap()
            .starts_with("hemorrhagenet")
    );

    // Kill a run once its first epoch checkpoint exists, then resume.
    let c = dir.path().join("c");
    let mut child = train_cmd(&cfg, &c).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        if let Ok(t) = std::fs::read_to_string(c.join("last/state.json"))
            && t.contains("\"epoch\": 1")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        if let Some(s) = child.try_wait().unwrap() {
            panic!("run ended before it could be killed: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("last/state.json")).unwrap()).unwrap();
    assert!(
        state["epoch"].as_u64().unwrap() < 3,
        "the kill must interrupt the run (it finished first)"
    );
    let st = train_cmd(&cfg, &c)
        .arg("--resume")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        ha,
        history(&c),
        "resumed run must equal the uninterrupted one"
    );

    // Resume with a changed config is refused with a clear message.
    std::fs::write(&cfg, TINY.replace("epochs = 3", "epochs = 4")).unwrap();
    let out = train_cmd(&cfg, &c).arg("--resume").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different config"));

    // Evaluate the first run on its held-out split.
    let rep = dir.path().join("report");
    let out = bin()
        .args([
            "evaluate",
            "--studies",
            "30",
            "--synth-seed",
            "3",
            "--bootstrap",
            "50",
            "--model",
        ])
        .arg(a.join("model"))
        .arg("--out")
        .arg(&rep)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["dataset"]["synthetic"], true);
    assert_eq!(m["dataset"]["split"], "test");
    let names: Vec<&str> = m["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    for n in [
        "image_only",
        "clinical_only",
        "clinical_lr",
        "ich_score_true_facts",
    ] {
        assert!(names.contains(&n), "baseline {n} missing: {names:?}");
    }
    assert!(!m["bayes_limit"].as_array().unwrap().is_empty());
    let html = std::fs::read_to_string(rep.join("report.html")).unwrap();
    assert!(html.to_lowercase().contains("synthetic"));
}

#[test]
fn bad_training_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "epochz = 3\n").unwrap();
    let out = train_cmd(&cfg, &dir.path().join("o")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("epochz"), "{err}");

    let out = bin()
        .args(["train", "--devices", "cuda:0,cuda:1", "--out"])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--devices"));
    // The demo and evaluate take the same device names, with the same errors, before any
    // work is done (nothing is written).
    for args in [
        vec!["demo", "--devices", "tpu:0", "--out"],
        vec![
            "evaluate",
            "--model",
            "missing",
            "--device",
            "cuda:0,cpu",
            "--out",
        ],
    ] {
        let o = dir.path().join("dev-err");
        let out = bin().args(&args).arg(&o).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--device"), "{args:?}: {err}");
        assert!(!o.exists(), "{args:?} wrote its output folder");
    }

    let out = bin()
        .args(["train", "--dataset", "rsna", "--out"])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--root"));

    let out = bin()
        .args(["evaluate", "--out"])
        .arg(dir.path().join("r"))
        .arg("--model")
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

/// Training from a dataset on disk: a manifest CSV over NIfTI studies (the synthetic cohort
/// written to files) goes through the layout reader, the decoder and the preprocessing cache;
/// an unreadable study is left out with a warning naming it, not a crash.
#[test]
fn trains_from_a_manifest_through_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = dir.path().join("cohort");
    let out = bin()
        .args([
            "synth",
            "--studies",
            "16",
            "--size",
            "32",
            "--slices",
            "6",
            "--format",
            "nifti",
        ])
        .args(["--seed", "8", "--out"])
        .arg(&cohort)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| -> Vec<Vec<String>> {
        std::fs::read_to_string(cohort.join(f))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    let (labels, clinical, outcomes) = (
        read("labels_study.csv"),
        read("clinical.csv"),
        read("outcomes.csv"),
    );
    let mut csv = String::from(
        "study_key,path,any,epidural,subdural,subarachnoid,intraparenchymal,intraventricular,\
         age,gcs,mortality_30d,mrs_90d\n",
    );
    for i in 0..16 {
        let id = &labels[i][0];
        csv += &format!(
            "{id},cohort/studies/{id}/ct.nii.gz,{},{},{},{}\n",
            labels[i][1..].join(","),
            clinical[i][1],
            clinical[i][3],
            outcomes[i][1..].join(",")
        );
    }
    csv += "BROKEN,cohort/does-not-exist.nii.gz,0,0,0,0,0,0,70,15,0,0\n";
    let manifest = dir.path().join("manifest.csv");
    std::fs::write(&manifest, csv).unwrap();
    let cfg = dir.path().join("tiny.toml");
    // Manifests carry study labels only: the requested encoder pre-training is skipped with a
    // warning, and training goes on.
    std::fs::write(
        &cfg,
        TINY.replace("epochs = 3", "epochs = 1")
            .replace("pretrain_epochs = 0", "pretrain_epochs = 1"),
    )
    .unwrap();
    let run = |out: &str| {
        bin()
            .args(["train", "--dataset", "manifest", "--root"])
            .arg(&manifest)
            .arg("--config")
            .arg(&cfg)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    let first = run("run1");
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(
        err.contains("BROKEN") && err.contains("does-not-exist"),
        "{err}"
    );
    assert!(err.contains("pre-training skipped"), "{err}");
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run1/model/card.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(card["dataset"]["synthetic"], false);
    let n = ["n_train", "n_validation", "n_test"]
        .iter()
        .map(|k| card["dataset"][k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(n, 16, "the broken study is left out, every other one used");
    // The cache holds one entry per decoded study, and a second run reuses them untouched.
    let cache = dir.path().join(".hn-cache");
    let entries = |d: &std::path::Path| -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut v = Vec::new();
        for e in walk(d) {
            v.push((
                e.clone(),
                std::fs::metadata(&e).unwrap().modified().unwrap(),
            ));
        }
        v.sort();
        v
    };
    let before = entries(&cache);
    assert!(before.len() >= 16, "cache entries: {}", before.len());
    assert!(run("run2").status.success());
    assert_eq!(
        before,
        entries(&cache),
        "second run must read the cache, not rebuild it"
    );
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `--devices cpu,cpu` trains data-parallel (two workers on the one CPU device: the same
/// code path a `cuda:0,cuda:1` build takes, minus the threads): it runs to a model, is
/// deterministic, and lands close to the single-device run (the shard means differ only in
/// how masked losses are averaged).
#[test]
fn data_parallel_devices_train_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let run = |name: &str, devices: &str| {
        let out = dir.path().join(name);
        let st = train_cmd(&cfg, &out)
            .args(["--devices", devices])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{devices}");
        assert!(out.join("model/model.bpk").exists());
        history(&out)
    };
    let dp1 = run("dp1", "cpu,cpu");
    let dp2 = run("dp2", "cpu, cpu");
    assert_eq!(dp1, dp2, "data-parallel training must be deterministic");
    let single = run("single", "cpu");
    assert_ne!(
        dp1, single,
        "two shards are not literally the single-device run"
    );
    let loss = |h: &serde_json::Value, e: usize| h[e]["train_loss"].as_f64().unwrap();
    for e in 0..3 {
        let (a, b) = (loss(&dp1, e), loss(&single, e));
        assert!(
            a.is_finite() && (a - b).abs() < 0.25 * b,
            "epoch {e}: {a} vs {b}"
        );
    }
}

/// `pretrain_epochs` runs the mixed-slice encoder phase first: its per-epoch record is
/// written, the run stays deterministic, and it changes what the end-to-end epochs start from.
#[test]
fn encoder_pretraining_runs_first_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pre.toml");
    std::fs::write(
        &cfg,
        TINY.replace(
            "pretrain_epochs = 0",
            "pretrain_epochs = 2\npretrain_batch = 16",
        ),
    )
    .unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = train_cmd(&cfg, &out).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("pre-training epoch 2"));
        let pre: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("pretrain.json")).unwrap())
                .unwrap();
        let pre = pre.as_array().unwrap().clone();
        assert_eq!(pre.len(), 2);
        for r in &pre {
            assert!(r["loss"].as_f64().unwrap().is_finite());
            assert!(r["slices"].as_u64().unwrap() > 0);
        }
        (pre, history(&out))
    };
    let (pa, ha) = run("a");
    let (pb, hb) = run("b");
    let strip = |v: &Vec<serde_json::Value>| {
        v.iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&pa), strip(&pb));
    assert_eq!(ha, hb);
    // Without pre-training the end-to-end epochs start elsewhere.
    let plain = dir.path().join("tiny.toml");
    std::fs::write(&plain, TINY).unwrap();
    let out = dir.path().join("plain");
    assert!(
        train_cmd(&plain, &out)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    assert!(!out.join("pretrain.json").exists());
    assert_ne!(history(&out)[0]["train_loss"], ha[0]["train_loss"]);
}

/// A synthetic cohort written as DICOM at another resolution than the model grid and arranged
/// as an RSNA-2019 tree trains with encoder pre-training: its slice labels survive resampling
/// (10 input slices onto the 6 model slices), where before pre-training was skipped.
#[test]
fn rsna_layout_at_scanner_resolution_keeps_slice_labels_for_pretraining() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rsna");
    let o = bin()
        .args(["synth", "--studies", "24", "--size", "48", "--slices", "10"])
        .args(["--seed", "9", "--layout", "rsna", "--out"])
        .arg(&root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("arranged as RSNA-2019"), "{err}");
    let files = std::fs::read_dir(root.join("stage_2_train"))
        .unwrap()
        .count();
    assert!(files >= 24 * 9, "{files} slice files");
    let csv = std::fs::read_to_string(root.join("stage_2_train.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 6 * files,
        "six label rows per slice file"
    );
    assert!(csv.lines().nth(1).unwrap().starts_with("ID_SYNTH-"));

    let cfg = dir.path().join("pre.toml");
    std::fs::write(
        &cfg,
        TINY.replace("epochs = 3", "epochs = 1").replace(
            "pretrain_epochs = 0",
            "pretrain_epochs = 1\npretrain_batch = 16",
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = bin()
        .args(["train", "--dataset", "rsna", "--root"])
        .arg(&root)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("pre-training skipped"), "{err}");
    assert!(err.contains("pre-training epoch 1"), "{err}");
    let pre: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pretrain.json")).unwrap()).unwrap();
    assert!(pre[0]["slices"].as_u64().unwrap() > 0);
    // The card records what the data could teach: study and slice labels, no outcomes (so
    // the prognosis heads are withheld), and the envelope of the resampled inputs.
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/card.json")).unwrap())
            .unwrap();
    let counts = &card["dataset"]["train_labels"];
    assert!(counts["slices"].as_u64().unwrap() > 0, "{counts}");
    assert_eq!(counts["slices"], counts["detection"]);
    assert_eq!(counts["mortality_30d"], 0);
    assert!(card["envelope"]["coverage_mm"]["lo"].as_f64().unwrap() > 50.0);
    // No training study had a clinical value, so the network reads none: a prediction given
    // some says which were not used, and reports no feature weights.
    let net: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model/model.config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        net["clinical_unlearned"].as_array().map(|a| a.len()),
        Some(16)
    );
    let clinical = dir.path().join("clinical.json");
    std::fs::write(&clinical, r#"{"age": 70, "gcs": 7}"#).unwrap();
    // One study's slices out of the flat RSNA folder.
    let study = dir.path().join("study");
    std::fs::create_dir(&study).unwrap();
    for e in std::fs::read_dir(root.join("stage_2_train")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("ID_SYNTH-000000-")
        {
            std::fs::copy(&p, study.join(p.file_name().unwrap())).unwrap();
        }
    }
    let o = bin()
        .arg("predict")
        .arg(&study)
        .arg("--model")
        .arg(out.join("model"))
        .arg("--clinical")
        .arg(&clinical)
        .arg("--out")
        .arg(dir.path().join("pred"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("clinical values given but not used: age, gcs"),
        "{warnings}"
    );
    assert_eq!(v["feature_weights"], serde_json::json!([]));
}
