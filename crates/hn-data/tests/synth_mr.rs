//! Synthetic MR written as files that tools nobody here wrote accept (dcmtk, dicom3tools,
//! pydicom, nibabel), told apart by the series rule, and brought onto one grid correctly.

use std::path::{Path, PathBuf};
use std::process::Command;

use hn_data::synth::{
    CohortModality, MrConfig, OutputFormat, SynthConfig, generate_mr_study,
    write_cohort_with_progress,
};
use hn_imaging::dicom::read_mr_study;
use hn_imaging::mr::MrSequence;

fn tool_missing(what: &str) -> ! {
    panic!(
        "{what} is required by this test and was not found; install it (apt-get install dcmtk \
         dicom3tools; python3 -m pip install pydicom numpy nibabel; or run scripts/test.sh)"
    )
}

fn cfg() -> SynthConfig {
    SynthConfig {
        modality: CohortModality::Both,
        size: 48,
        n_slices: Some(8),
        prevalence_bleed: 1.0,
        mr: MrConfig {
            size: 48,
            p_missing_sequence: 0.35,
            motion_deg: 0.0,
            motion_mm: 0.0,
            ..MrConfig::default()
        },
        ..SynthConfig::default()
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn dice(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count() as f64;
    let total = (a.iter().filter(|x| **x).count() + b.iter().filter(|x| **x).count()) as f64;
    2.0 * inter / total.max(1.0)
}

#[test]
fn mr_cohort_files_are_valid_told_apart_and_resampled_onto_one_grid() {
    let c = cfg();
    let dir = tempfile::tempdir().unwrap();
    let seed = 31;
    let n = 4;
    write_cohort_with_progress(&c, dir.path(), n, seed, OutputFormat::Both, false).unwrap();
    let mut saw_missing = false;
    let mut compared = 0;
    for i in 0..n {
        let truth = generate_mr_study(&c, seed, i).unwrap();
        let sdir = dir.path().join("studies").join(&truth.id);
        // CT of the same patient is there too (modality both).
        assert!(sdir.join("dicom").is_dir() && sdir.join("ct.nii.gz").is_file());
        for s in &truth.series {
            let q = s.sequence;
            let files = files_in(&sdir.join("mr").join(q.name()));
            assert_eq!(files.len(), s.volume.dims[2], "{q}");
            if i == 0 {
                // dcmtk parses every file without error or warning.
                let out = Command::new("dcmdump")
                    .arg("-E")
                    .args(&files)
                    .output()
                    .unwrap_or_else(|_| tool_missing("dcmdump (dcmtk)"));
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success() && stderr.trim().is_empty(),
                    "{q}: {stderr}"
                );
                assert!(String::from_utf8_lossy(&out.stdout).contains("MRImageStorage"));
                // dicom3tools: a valid MR Image IOD, no errors and no warnings.
                let out = Command::new("dciodvfy")
                    .arg(&files[files.len() / 2])
                    .output()
                    .unwrap_or_else(|_| tool_missing("dciodvfy (dicom3tools)"));
                let text = String::from_utf8_lossy(&out.stderr).into_owned()
                    + &String::from_utf8_lossy(&out.stdout);
                assert!(
                    text.contains("MRImage"),
                    "dciodvfy did not check MR: {text}"
                );
                let bad: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
                    .collect();
                assert!(bad.is_empty(), "{q}: {bad:#?}");
                // pydicom: the acquisition attributes a series rule needs, and the pixels.
                let script = r#"
import sys, pydicom, numpy as np
ds = [pydicom.dcmread(f) for f in sys.argv[1:]]
d = ds[0]
assert d.Modality == 'MR' and d.SOPClassUID == '1.2.840.10008.5.1.4.1.1.4'
ti = float(d.InversionTime) if 'InversionTime' in d else -1
print(d.SeriesDescription, '|', '\\'.join(d.ScanningSequence) if d['ScanningSequence'].VM > 1 else d.ScanningSequence,
      '|', float(d.RepetitionTime), float(d.EchoTime), ti,
      '|', float(np.stack([x.pixel_array for x in ds]).astype(np.float64).sum()))
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
                assert!(out.status.success(), "pydicom: {stderr}");
                let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let parts: Vec<&str> = line.split('|').map(str::trim).collect();
                let p = q.protocol();
                assert_eq!(parts[0], p.series_description, "{line}");
                assert_eq!(parts[1], p.scanning_sequence, "{line}");
                let times: Vec<f64> = parts[2]
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                assert_eq!(times[0], p.repetition_time_ms);
                assert_eq!(times[1], p.echo_time_ms);
                assert_eq!(times[2], p.inversion_time_ms.unwrap_or(-1.0));
                let sum: f64 = parts[3].parse().unwrap();
                let want: f64 = s.volume.data.iter().map(|v| f64::from(*v)).sum();
                assert!((sum - want).abs() < 0.5, "{q}: pydicom sum {sum} vs {want}");
                // nibabel reads the NIfTI image and its mask with the same shape.
                let nii = sdir.join(format!("mr_{}.nii.gz", q.name()));
                let mask = sdir.join(format!("mr_{}_mask.nii.gz", q.name()));
                let out = Command::new("python3")
                    .arg("-c")
                    .arg("import sys, nibabel as nib\nfor f in sys.argv[1:]: print(*nib.load(f).shape)")
                    .arg(&nii)
                    .arg(&mask)
                    .output()
                    .unwrap();
                let shapes = String::from_utf8_lossy(&out.stdout);
                let d = s.volume.dims;
                let want = format!("{} {} {}", d[0], d[1], d[2]);
                assert_eq!(shapes.lines().collect::<Vec<_>>(), vec![want.as_str(); 2]);
            }
        }

        // The project's reader tells the sequences apart from the attributes alone.
        let read = read_mr_study(&[sdir.join("mr")], &Default::default()).unwrap();
        let got: Vec<MrSequence> = read.sequences.iter().map(|s| s.sequence).collect();
        let want: Vec<MrSequence> = truth.series.iter().map(|s| s.sequence).collect();
        assert_eq!(got, want, "study {i}");
        assert_eq!(read.missing, truth.missing);
        saw_missing |= !read.missing.is_empty();
        for s in &read.sequences {
            assert!(
                !s.rule.contains("description"),
                "{}: {}",
                s.sequence,
                s.rule
            );
        }
        // Reading the study folder with the CT beside it: the CT series is not an MR sequence.
        let both = read_mr_study(std::slice::from_ref(&sdir), &Default::default()).unwrap();
        assert_eq!(both.sequences.len(), read.sequences.len());
        assert!(both.series.iter().any(|s| s.modality == "CT" && !s.chosen));

        // One grid: each sequence's lesion mask, brought onto the reference grid through world
        // coordinates, lies where the reference sequence's own mask is.
        let stack = read
            .on_one_grid(hn_imaging::mr::MrReduction::default(), None)
            .unwrap();
        let reference = truth
            .series
            .iter()
            .find(|s| s.sequence == stack.reference)
            .unwrap();
        let ref_vol = &reference.volume;
        // The grid as the files say (DS values: 6 decimals).
        let g = ref_vol.grid();
        assert_eq!(stack.grid.dims, g.dims);
        for a in 0..3 {
            assert!((stack.grid.spacing[a] - g.spacing[a]).abs() < 1e-4);
            assert!((stack.grid.origin[a] - g.origin[a]).abs() < 1e-4);
        }
        for ch in &stack.channels {
            assert_eq!(ch.volume.dims, ref_vol.dims);
            assert!(
                ch.coverage > 0.9,
                "{}: coverage {}",
                ch.sequence,
                ch.coverage
            );
            // Normalised: parenchyma near 1 whatever the series' stored scale.
            let mut fg: Vec<f32> = ch
                .volume
                .data
                .iter()
                .copied()
                .filter(|v| *v > 0.3)
                .collect();
            fg.sort_by(f32::total_cmp);
            let median = fg[fg.len() / 2];
            assert!(
                (0.6..1.6).contains(&median),
                "{}: median {median}",
                ch.sequence
            );
        }
        for s in truth
            .series
            .iter()
            .filter(|s| s.sequence != stack.reference)
        {
            let m = s
                .volume
                .with_data(s.mask.iter().map(|v| f32::from(u8::from(*v > 0))).collect())
                .unwrap();
            let (on_ref, _) = hn_imaging::transforms::resample_onto(
                &m,
                &ref_vol.grid(),
                0.0,
                hn_imaging::transforms::Footprint::Mean,
            )
            .unwrap();
            let a: Vec<bool> = on_ref.data.iter().map(|v| *v >= 0.5).collect();
            let b: Vec<bool> = reference.mask.iter().map(|v| *v > 0).collect();
            let big = b.iter().filter(|x| **x).count() > 60;
            if big {
                let d = dice(&a, &b);
                assert!(
                    d > 0.6,
                    "study {i} {} vs {}: Dice {d}",
                    s.sequence,
                    stack.reference
                );
                // Control: the same mask placed by index instead of world position misses.
                let shifted: Vec<bool> = (0..b.len())
                    .map(|k| {
                        a.get(k + 3 * ref_vol.dims[0] * ref_vol.dims[1])
                            .copied()
                            .unwrap_or(false)
                    })
                    .collect();
                assert!(dice(&shifted, &b) < d, "geometry must matter");
                compared += 1;
            }
        }
    }
    assert!(compared >= 3, "only {compared} lesion masks compared");
    assert!(
        saw_missing,
        "p_missing 0.35 over 4 studies: some sequence should be missing"
    );
}

#[test]
fn a_study_without_readable_sequences_is_an_error_that_says_what_each_series_was() {
    let c = cfg();
    let dir = tempfile::tempdir().unwrap();
    write_cohort_with_progress(
        &SynthConfig {
            modality: CohortModality::Ct,
            ..c
        },
        dir.path(),
        1,
        3,
        OutputFormat::Dicom,
        false,
    )
    .unwrap();
    let e = read_mr_study(
        &[dir.path().join("studies").join("SYNTH-000000")],
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no MR series") && e.contains("modality CT"),
        "{e}"
    );
}
