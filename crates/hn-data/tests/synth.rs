//! Proof that the synthetic cohort is what it claims: deterministic, consistent ground truth,
//! anatomically constrained lesions, plausible densities, calibrated outcomes, readable files.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use hn_data::SUBTYPES;
use hn_data::synth::{
    self, Acuity, OutputFormat, SynthConfig, SyntheticStudy, generate_study, read_cohort,
    write_cohort_with_progress,
};

fn small_cfg() -> SynthConfig {
    SynthConfig {
        size: 96,
        n_slices: Some(20),
        ..SynthConfig::default()
    }
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("thread pool")
}

fn bytes(st: &SyntheticStudy) -> Vec<u8> {
    let mut b: Vec<u8> = st
        .volume
        .data
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    b.extend_from_slice(&st.mask);
    b
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count() {
    let cfg = small_cfg();
    let a = pool(1).install(|| generate_study(&cfg, 11, 3));
    let b = pool(3).install(|| generate_study(&cfg, 11, 3));
    assert_eq!(bytes(&a), bytes(&b));
    assert_eq!(a.clinical, b.clinical);
    assert_eq!(a.outcomes, b.outcomes);
    assert_eq!(a.oracle, b.oracle);
    let batch = pool(2).install(|| synth::generate_studies(&cfg, 11, 2..5).unwrap());
    assert_eq!(batch.len(), 3);
    assert_eq!(
        bytes(&batch[1]),
        bytes(&a),
        "batch API must match generate_study"
    );
    let c = generate_study(&cfg, 12, 3);
    assert_ne!(
        bytes(&a),
        bytes(&c),
        "a different seed must give a different study"
    );
}

fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn cohort_files_identical_with_1_and_2_threads() {
    let cfg = SynthConfig {
        size: 64,
        n_slices: Some(12),
        ..SynthConfig::default()
    };
    let t1 = tempfile::tempdir().unwrap();
    let t2 = tempfile::tempdir().unwrap();
    pool(1).install(|| {
        write_cohort_with_progress(&cfg, t1.path(), 5, 99, OutputFormat::Dicom, false).unwrap()
    });
    pool(2).install(|| {
        write_cohort_with_progress(&cfg, t2.path(), 5, 99, OutputFormat::Dicom, false).unwrap()
    });
    let a = dir_bytes(t1.path());
    let b = dir_bytes(t2.path());
    assert!(
        a.len() > 50,
        "expected DICOM files and CSVs, got {}",
        a.len()
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!(x.1 == y.1, "{} differs between thread counts", x.0);
    }
}

/// Studies with bleeds (and some without), generated once for several tests.
fn cohort(n: usize, seed: u64) -> Vec<SyntheticStudy> {
    let cfg = SynthConfig {
        prevalence_bleed: 0.8,
        ..small_cfg()
    };
    use rayon::prelude::*;
    (0..n)
        .into_par_iter()
        .map(|i| generate_study(&cfg, seed, i))
        .collect()
}

#[test]
fn labels_agree_with_masks_and_facts() {
    let studies = cohort(60, 5);
    let plane = 96 * 96;
    let mut positives = [0usize; 5];
    let mut negatives = 0;
    for st in &studies {
        assert!(st.id.starts_with("SYNTH-"), "{}", st.id);
        assert_eq!(st.slice_labels.len(), st.volume.dims[2]);
        // Study level: label t ⇔ mask has voxels of t ⇔ facts volume > 0.
        for t in 0..5 {
            let n = st.mask.iter().filter(|m| **m as usize == t + 1).count();
            assert_eq!(st.labels.subtypes[t], n > 0, "{} subtype {t}", st.id);
            assert_eq!(
                st.labels.subtypes[t],
                st.facts.volume_ml[t] > 0.0,
                "{} subtype {t}: label {} but facts volume {} mL",
                st.id,
                st.labels.subtypes[t],
                st.facts.volume_ml[t]
            );
            if st.labels.subtypes[t] {
                positives[t] += 1;
            }
        }
        assert_eq!(st.labels.any, st.mask.iter().any(|m| *m > 0));
        if !st.labels.any {
            negatives += 1;
            assert_eq!(st.ich_score, 0);
        }
        // Slice level.
        for (k, sl) in st.slice_labels.iter().enumerate() {
            let m = &st.mask[k * plane..(k + 1) * plane];
            for t in 0..5 {
                assert_eq!(sl.subtypes[t], m.iter().any(|v| *v as usize == t + 1));
            }
            assert_eq!(sl.any, m.iter().any(|v| *v > 0));
            assert_eq!(sl.any, sl.subtypes.iter().any(|b| *b));
        }
    }
    assert!(negatives > 0, "no negatives in the sample");
    for (t, n) in positives.iter().enumerate() {
        assert!(*n > 0, "no study with {:?} among 60", SUBTYPES[t]);
    }
}

#[test]
fn acute_blood_is_50_to_90_hu_in_phantom_and_in_rendered_interiors() {
    // 1. The blood itself: every lesion point of the continuous phantom.
    let cfg = SynthConfig {
        prevalence_bleed: 1.0,
        ..small_cfg()
    };
    let mut sum = [0.0f64; 5];
    let mut cnt = [0usize; 5];
    for i in 0..60 {
        let c = synth::sample_case(&cfg, 21, i);
        if c.facts.acuity != Some(Acuity::Acute) {
            continue;
        }
        for les in &c.phantom.lesions {
            let (lo, hi) = c.phantom.lesion_bbox(les);
            let step = 2.0;
            let mut z = lo[2];
            while z <= hi[2] {
                let mut y = lo[1];
                while y <= hi[1] {
                    let mut x = lo[0];
                    while x <= hi[0] {
                        let (hu, l) = c.phantom.classify([x, y, z]);
                        if l > 0 {
                            sum[l as usize - 1] += f64::from(hu);
                            cnt[l as usize - 1] += 1;
                        }
                        x += step;
                    }
                    y += step;
                }
                z += step;
            }
        }
    }
    for t in 0..5 {
        assert!(cnt[t] > 50, "{:?}: only {} points", SUBTYPES[t], cnt[t]);
        let mean = sum[t] / cnt[t] as f64;
        assert!(
            (50.0..=90.0).contains(&mean),
            "{:?}: acute phantom mean {mean:.1} HU outside 50..90",
            SUBTYPES[t]
        );
    }

    // 2. Rendered voxels whose whole 3×3×3 neighbourhood has the same label (no partial
    //    volume with bone or brain): the scanner must not shift the density either.
    let studies = cohort(60, 21);
    let n = 96;
    let plane = n * n;
    let mut sum = [0.0f64; 5];
    let mut cnt = [0usize; 5];
    let mut brain = (0.0f64, 0usize);
    for st in studies
        .iter()
        .filter(|s| s.facts.acuity == Some(Acuity::Acute))
    {
        let nz = st.volume.dims[2];
        for (idx, &m) in st.mask.iter().enumerate() {
            let (k, r) = (idx / plane, idx % plane);
            let (j, i) = (r / n, r % n);
            if i == 0 || j == 0 || i + 1 == n || j + 1 == n || k == 0 || k + 1 == nz {
                continue;
            }
            let v = f64::from(st.volume.data[idx]);
            if m == 0 {
                if (20.0..50.0).contains(&v) {
                    brain.0 += v;
                    brain.1 += 1;
                }
                continue;
            }
            let interior = (0..3).all(|dk| {
                (0..3).all(|dj| {
                    (0..3).all(|di| st.mask[idx + dk * plane + dj * n + di - plane - n - 1] == m)
                })
            });
            if interior {
                sum[m as usize - 1] += v;
                cnt[m as usize - 1] += 1;
            }
        }
    }
    let brain_mean = brain.0 / brain.1 as f64;
    let mut tested = 0;
    for t in 0..5 {
        if cnt[t] < 20 {
            continue; // thin lesions (SAH, thin SDH) have no partial-volume-free interior
        }
        tested += 1;
        let mean = sum[t] / cnt[t] as f64;
        assert!(
            (50.0..=90.0).contains(&mean) && mean > brain_mean + 15.0,
            "{:?}: rendered interior mean {mean:.1} HU (brain {brain_mean:.1})",
            SUBTYPES[t]
        );
    }
    assert!(
        tested >= 3,
        "only {tested} subtypes had interior voxels: {cnt:?}"
    );
}

#[test]
fn epidural_never_crosses_a_suture() {
    let cfg = SynthConfig {
        prevalence_bleed: 1.0,
        primary_subtype_weights: [1.0, 0.0, 0.0, 0.0, 0.0],
        ..small_cfg()
    };
    let n = cfg.size;
    let mut checked = 0;
    for i in 0..15 {
        let st = generate_study(&cfg, 77, i);
        let mut bones = HashSet::new();
        for (idx, &m) in st.mask.iter().enumerate() {
            if m == 1 {
                let k = idx / (n * n);
                let r = idx % (n * n);
                bones.insert(format!("{:?}", st.bone_at_voxel(r % n, r / n, k)));
            }
        }
        if !bones.is_empty() {
            checked += 1;
        }
        assert!(
            bones.len() <= 1,
            "{}: epidural spans bones {bones:?}",
            st.id
        );
    }
    assert!(checked >= 10, "only {checked} epidurals rendered");
}

#[test]
fn ich_score_strata_reproduce_hemphill_within_12_points() {
    let report = synth::calibration_check(&SynthConfig::default(), 2026, 1500);
    let rows = &report.rows;
    let mut total = 0;
    for r in rows {
        total += r.n;
        if r.n >= 10 {
            let diff = (r.observed - r.target).abs() * 100.0;
            assert!(
                diff <= 12.0,
                "ICH score {}: observed {:.1} % vs Hemphill {:.0} % (n = {})",
                r.score,
                r.observed * 100.0,
                r.target * 100.0,
                r.n
            );
        }
    }
    assert_eq!(total, 1500);
    // Every score 0..=4 must be populated for the check to mean anything.
    assert!(rows[..5].iter().all(|r| r.n >= 10), "{rows:?}");
}

#[test]
fn oracle_is_a_distribution_and_outcomes_are_consistent() {
    let cfg = small_cfg();
    for i in 0..300 {
        let c = synth::sample_case(&cfg, 3, i);
        let o = c.oracle;
        let s: f64 = o.mrs_probs.iter().sum();
        assert!((s - 1.0).abs() < 1e-9, "mRS probabilities sum to {s}");
        assert!(o.mrs_probs[6] >= o.p_mortality_30d - 1e-12);
        assert!((o.p_poor_outcome_90d - o.mrs_probs[4..].iter().sum::<f64>()).abs() < 1e-9);
        if c.outcomes.mortality_30d == Some(true) {
            assert_eq!(c.outcomes.mrs_90d, Some(6));
        }
    }
}

#[test]
fn cohort_csvs_round_trip_through_read_cohort() {
    let cfg = SynthConfig {
        size: 48,
        n_slices: Some(10),
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let m = write_cohort_with_progress(&cfg, dir.path(), 12, 4, OutputFormat::None, false).unwrap();
    assert_eq!(m.n_studies, 12);
    let c = read_cohort(dir.path()).unwrap();
    assert_eq!(c.manifest, m);
    assert_eq!(c.studies.len(), 12);
    for (i, s) in c.studies.iter().enumerate() {
        let st = generate_study(&cfg, 4, i);
        assert_eq!(s.id, st.id);
        assert_eq!(s.labels, st.labels);
        assert_eq!(s.clinical, st.clinical);
        assert_eq!(s.outcomes, st.outcomes);
        assert_eq!(s.ich_score, st.ich_score);
        assert!((s.oracle.p_mortality_30d - st.oracle.p_mortality_30d).abs() < 1e-6);
        assert_eq!(s.slice_labels.len(), st.slice_labels.len());
        for (k, (sid, l)) in s.slice_labels.iter().enumerate() {
            assert_eq!(sid, &st.slice_id(k));
            assert_eq!(*l, st.slice_labels[k]);
        }
    }
    // Missing clinical values are empty cells, not zeros.
    let text = std::fs::read_to_string(dir.path().join("clinical.csv")).unwrap();
    assert!(text.contains(",,"), "expected some empty (missing) cells");
}

#[test]
fn bad_config_and_unwritable_dir_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "size = 8\n").unwrap();
    let e = SynthConfig::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("size"), "{e}");
    // n_slices = 0 selects thickness-driven slice counts within the configured range.
    std::fs::write(
        &p,
        "size = 32\nn_slices = 0\nslice_thickness_mm = [2.5, 2.5]\n",
    )
    .unwrap();
    let cfg = SynthConfig::from_toml_file(&p).unwrap();
    let st = generate_study(&cfg, 1, 0);
    assert!((st.volume.spacing[2] - 2.5).abs() < 1e-9);
    assert!(
        (40..=60).contains(&st.volume.dims[2]),
        "{:?}",
        st.volume.dims
    );
    std::fs::write(&p, "sise = 128\n").unwrap();
    let e = SynthConfig::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("sise"), "{e}");
    let e = SynthConfig::from_toml_file(&dir.path().join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.toml"), "{e}");
    // A file where a directory should be.
    let f = dir.path().join("file");
    std::fs::write(&f, "x").unwrap();
    let e = write_cohort_with_progress(
        &SynthConfig::default(),
        &f.join("out"),
        1,
        1,
        OutputFormat::None,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("file"), "{e}");
}

fn tool_missing(what: &str) -> ! {
    panic!(
        "{what} is required by this test and was not found; install it (apt-get install dcmtk; \
         apt-get install dicom3tools; python3 -m pip install pydicom numpy nibabel; or run \
         scripts/test.sh, which installs them)"
    )
}

#[test]
fn dicom_output_reads_in_dcmtk_and_pydicom() {
    let cfg = SynthConfig {
        size: 64,
        n_slices: Some(8),
        p_missing_slice: 0.0,
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_cohort_with_progress(&cfg, dir.path(), 2, 8, OutputFormat::Dicom, false).unwrap();
    let sdir = dir
        .path()
        .join("studies")
        .join("SYNTH-000001")
        .join("dicom");
    let files: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(&sdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    assert_eq!(files.len(), 8);
    // dcmtk: -E reports parse errors on stderr and a non-zero exit code.
    let out = Command::new("dcmdump")
        .arg("-E")
        .args(&files)
        .output()
        .unwrap_or_else(|_| tool_missing("dcmdump (dcmtk)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dcmdump failed: {stderr}");
    assert!(
        !stderr.contains("E:") && !stderr.contains("W:"),
        "dcmdump: {stderr}"
    );
    assert!(stdout.contains("SYNTH-000001") && stdout.contains("SYNTHETIC^PATIENT"));
    assert!(stdout.contains("CTImageStorage"));

    // dicom3tools: every slice a valid CT Image IOD (no "Error" line; warnings are advice).
    for f in &files {
        let out = Command::new("dciodvfy")
            .arg(f)
            .output()
            .unwrap_or_else(|_| tool_missing("dciodvfy (dicom3tools)"));
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("CTImage"), "dciodvfy did not run: {text}");
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }

    // pydicom: decode pixels, apply rescale, compare with the generated volume.
    let st = generate_study(&cfg, 8, 1);
    let script = r#"
import sys, pydicom, numpy as np
vals = []
for f in sys.argv[1:]:
    d = pydicom.dcmread(f)
    assert d.Modality == 'CT' and d.PatientID.startswith('SYNTH-')
    a = d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
    vals.append(a)
v = np.stack(vals)
print(v.shape[0], v.shape[1], v.shape[2], float(v.sum()))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .unwrap_or_else(|_| tool_missing("python3"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named") {
        tool_missing("pydicom/numpy");
    }
    assert!(out.status.success(), "pydicom failed: {stderr}");
    let s = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(&f[..3], &[8.0, 64.0, 64.0]);
    let want: f64 = st.volume.data.iter().map(|v| f64::from(v.round())).sum();
    assert!(
        (f[3] - want).abs() < 0.5,
        "pydicom sum {} vs generated {}",
        f[3],
        want
    );
}

#[test]
fn dicom_reread_by_project_reader_equals_volume_within_quantisation() {
    let cfg = SynthConfig {
        size: 64,
        n_slices: Some(10),
        p_missing_slice: 0.0,
        p_gantry_tilt: 0.0,
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_cohort_with_progress(&cfg, dir.path(), 3, 5, OutputFormat::Both, false).unwrap();
    for i in 0..3 {
        let st = generate_study(&cfg, 5, i);
        let sdir = dir.path().join("studies").join(&st.id);
        let mut files: Vec<_> = std::fs::read_dir(sdir.join("dicom"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let read =
            hn_imaging::dicom::read_series(&files, &hn_imaging::ReadOptions::default()).unwrap();
        let v = read.volume;
        assert_eq!(v.dims, st.volume.dims);
        for c in 0..3 {
            assert!(
                (v.spacing[c] - st.volume.spacing[c]).abs() < 1e-4,
                "{:?}",
                v.spacing
            );
            assert!(
                (v.origin[c] - st.volume.origin[c]).abs() < 1e-3,
                "{:?}",
                v.origin
            );
        }
        let max = v
            .data
            .iter()
            .zip(&st.volume.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max <= 0.5 + 1e-3, "{}: max |DICOM - volume| = {max}", st.id);
        // NIfTI volume and mask round trip through the project's NIfTI reader.
        let nv = hn_imaging::nifti::read_volume(
            &sdir.join("ct.nii.gz"),
            &hn_imaging::NiftiReadOptions::default(),
        )
        .unwrap();
        assert_eq!(nv.dims, st.volume.dims);
        assert!(
            nv.data
                .iter()
                .zip(&st.volume.data)
                .all(|(a, b)| (a - b).abs() < 1e-3)
        );
        let nm = hn_imaging::nifti::read_volume(
            &sdir.join("mask.nii.gz"),
            &hn_imaging::NiftiReadOptions::default(),
        )
        .unwrap();
        assert!(
            nm.data
                .iter()
                .zip(&st.mask)
                .all(|(a, b)| *a == f32::from(*b))
        );
    }
}

#[test]
fn nifti_files_read_in_nibabel() {
    let cfg = SynthConfig {
        size: 48,
        n_slices: Some(8),
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_cohort_with_progress(&cfg, dir.path(), 1, 2, OutputFormat::Nifti, false).unwrap();
    let sdir = dir.path().join("studies").join("SYNTH-000000");
    let script = r#"
import sys, nibabel as nib, numpy as np
a = nib.load(sys.argv[1]); m = nib.load(sys.argv[2])
print(*a.shape, *m.shape, int(np.asarray(m.dataobj).max()) <= 5)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(sdir.join("ct.nii.gz"))
        .arg(sdir.join("mask.nii.gz"))
        .output()
        .unwrap_or_else(|_| tool_missing("python3"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named") {
        tool_missing("nibabel/numpy");
    }
    assert!(out.status.success(), "nibabel failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "48 48 8 48 48 8 True"
    );
}

fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    // Mann–Whitney with ties counted half.
    let pos: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|x| *x.1)
        .map(|x| *x.0)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|x| !*x.1)
        .map(|x| *x.0)
        .collect();
    let mut s = 0.0;
    for p in &pos {
        for n in &neg {
            s += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    s / (pos.len() * neg.len()) as f64
}

#[test]
fn oracle_leaves_room_above_the_ich_score() {
    let cfg = SynthConfig {
        prevalence_bleed: 1.0,
        ..SynthConfig::default()
    };
    let mut oracle = Vec::new();
    let mut ich = Vec::new();
    let mut died = Vec::new();
    for i in 0..1200 {
        let c = synth::sample_case(&cfg, 31, i);
        if let Some(d) = c.outcomes.mortality_30d {
            oracle.push(c.oracle.p_mortality_30d);
            ich.push(f64::from(c.ich_score));
            died.push(d);
        }
    }
    let a_oracle = auc(&oracle, &died);
    let a_ich = auc(&ich, &died);
    // The library's rank-based AUC agrees with the pairwise definition.
    assert!((synth::auc(&oracle, &died) - a_oracle).abs() < 1e-9);
    assert!((synth::auc(&ich, &died) - a_ich).abs() < 1e-9);
    assert!(
        a_ich > 0.75,
        "ICH score AUC {a_ich:.3} should be informative"
    );
    assert!(
        a_oracle > a_ich + 0.02,
        "oracle AUC {a_oracle:.3} vs ICH score {a_ich:.3}: no room for a learned model"
    );
}

#[test]
fn missing_slice_is_left_out_of_the_dicom_series_only() {
    let cfg = SynthConfig {
        size: 32,
        n_slices: Some(8),
        p_missing_slice: 1.0,
        ..SynthConfig::default()
    };
    let st = generate_study(&cfg, 3, 0);
    let k = st.geometry.missing_slice.expect("p_missing_slice = 1");
    assert_eq!(st.volume.dims[2], 8, "the volume keeps every slice");
    let dir = tempfile::tempdir().unwrap();
    write_cohort_with_progress(&cfg, dir.path(), 1, 3, OutputFormat::Dicom, false).unwrap();
    let d = dir.path().join("studies").join(&st.id).join("dicom");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 7);
    assert!(!d.join(format!("IM{:04}.dcm", k + 1)).exists());
}

#[test]
fn montage_is_a_png_of_six_tiles_with_masks() {
    let cfg = SynthConfig {
        size: 48,
        n_slices: Some(12),
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.png");
    synth::montage::write_montage(&cfg, 7, &p, true).unwrap();
    let b = std::fs::read(&p).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    assert_eq!((w, h), (3 * 48, 4 * 48));
    let e = synth::montage::write_montage(&cfg, 7, &dir.path().join("no/such/dir/m.png"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no/such/dir"), "{e}");
}
