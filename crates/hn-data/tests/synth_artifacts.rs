//! The scanner effects of `[artifacts]` do what docs/SYNTH.md says, each alone, and never
//! change the truth.

use hn_data::synth::{ArtifactConfig, SynthConfig, SyntheticStudy, generate_study};

fn cfg(artifacts: ArtifactConfig) -> SynthConfig {
    SynthConfig {
        size: 64,
        n_slices: Some(12),
        artifacts,
        ..SynthConfig::default()
    }
}

fn pair(a: ArtifactConfig, index: usize) -> (SyntheticStudy, SyntheticStudy) {
    let clean = generate_study(&cfg(ArtifactConfig::default()), 7, index);
    let with = generate_study(&cfg(a), 7, index);
    (clean, with)
}

#[test]
fn the_holder_adds_dense_material_behind_the_head_only() {
    let a = ArtifactConfig {
        p_head_holder: 1.0,
        ..Default::default()
    };
    let (clean, with) = pair(a, 3);
    assert_eq!(clean.mask, with.mask);
    assert_eq!(clean.labels, with.labels);
    let plan = with.geometry.artifacts.head_holder.expect("a holder");
    let v = &with.volume;
    let [n, _, nz] = v.dims;
    // Voxels that were air and are now holder or table material: all posterior of the head.
    let mut dense = 0;
    for k in 0..nz {
        for j in 0..n {
            for i in 0..n {
                let idx = v.index(i, j, k);
                if clean.volume.data[idx] < -900.0 && v.data[idx] - clean.volume.data[idx] > 300.0 {
                    dense += 1;
                    let w = v.world([i as f64, j as f64, k as f64]);
                    assert!(
                        w[1] - with.pose.offset[1] > 0.2 * plan.radius_mm,
                        "dense voxel anterior of the holder at {w:?}"
                    );
                }
            }
        }
    }
    assert!(dense > 20, "only {dense} holder voxels");
    assert!(
        v.provenance.notes.iter().any(|n| n.contains("head holder")),
        "{:?}",
        v.provenance.notes
    );
}

#[test]
fn metal_saturates_and_is_not_blood() {
    let a = ArtifactConfig {
        p_metal: 1.0,
        ..Default::default()
    };
    for index in 0..4 {
        let (clean, with) = pair(a.clone(), index);
        assert_eq!(clean.mask, with.mask, "study {index}");
        assert_eq!(clean.labels, with.labels);
        // The voxel at each metal object is far denser than the tissue there.
        let m = with.geometry.artifacts.metal.as_ref().expect("metal");
        for q in &m.points {
            let w = hn_data::synth::render::world_from_head(&with.pose, q.centre);
            let v = &with.volume;
            let ijk: Vec<usize> = (0..3)
                .map(|c| {
                    ((w[c] - v.origin[c]) / v.spacing[c])
                        .round()
                        .clamp(0.0, (v.dims[c] - 1) as f64) as usize
                })
                .collect();
            let idx = v.index(ijk[0], ijk[1], ijk[2]);
            assert!(
                v.data[idx] > clean.volume.data[idx] + 150.0,
                "study {index} ({}): {} against {}",
                m.kind,
                v.data[idx],
                clean.volume.data[idx]
            );
        }
        // The streaks reach well beyond the metal itself.
        let changed = clean
            .volume
            .data
            .iter()
            .zip(&with.volume.data)
            .filter(|(a, b)| (*a - *b).abs() > 30.0)
            .count();
        assert!(changed > 200, "study {index}: {changed} voxels changed");
    }
}

#[test]
fn partial_coverage_never_cuts_a_lesion() {
    let a = ArtifactConfig {
        p_partial_coverage: 1.0,
        ..Default::default()
    };
    let mut cut = 0;
    for index in 0..24 {
        let (clean, with) = pair(a.clone(), index);
        assert_eq!(clean.labels, with.labels, "study {index}");
        assert_eq!(clean.facts, with.facts);
        let c = with.geometry.artifacts.coverage_cut_mm;
        let span = |s: &SyntheticStudy| s.geometry.n_slices as f64 * s.geometry.thickness_mm;
        assert!(
            (span(&clean) - span(&with) - c[0] - c[1]).abs() < 1e-6,
            "study {index}: coverage {} → {}, cut {c:?}",
            span(&clean),
            span(&with)
        );
        if c[0] + c[1] > 0.0 {
            cut += 1;
        }
        assert!(with.volume.provenance.warnings.is_empty(), "study {index}");
    }
    // Half the cohort has no bleed, so at least those are cut.
    assert!(cut >= 8, "only {cut} of 24 studies lost coverage");
}

#[test]
fn sharp_kernels_add_contrast_and_soft_ones_remove_it() {
    let sd_of = |s: f64| {
        let st = generate_study(
            &cfg(ArtifactConfig {
                sharpness: [s, s],
                ..Default::default()
            }),
            7,
            5,
        );
        let v = &st.volume;
        let k = v.dims[2] / 2;
        let xs: Vec<f64> = (24..40)
            .flat_map(|j| (24..40).map(move |i| (i, j)))
            .map(|(i, j)| f64::from(v.data[v.index(i, j, k)]))
            .collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
    };
    let (soft, standard, sharp) = (sd_of(-1.0), sd_of(0.0), sd_of(2.0));
    assert!(
        soft < standard && standard < sharp,
        "{soft} {standard} {sharp}"
    );
}

#[test]
fn motion_ghosts_its_slices_and_no_others() {
    let a = ArtifactConfig {
        p_motion: 1.0,
        ..Default::default()
    };
    let (clean, with) = pair(a, 2);
    assert_eq!(clean.mask, with.mask);
    let m = with.geometry.artifacts.motion.expect("motion");
    let nz = with.geometry.n_slices;
    let plane = with.geometry.size * with.geometry.size;
    for k in 0..nz {
        let same = clean.volume.data[k * plane..(k + 1) * plane]
            == with.volume.data[k * plane..(k + 1) * plane];
        let moved = (k + nz - m.first % nz) % nz < m.count;
        assert_eq!(same, !moved, "slice {k} (motion {m:?})");
    }
}

#[test]
fn offsets_shift_every_voxel_and_pose_noise_is_bounded() {
    let a = ArtifactConfig {
        hu_offset: [5.0, 5.0],
        off_centre_sd_mm: 6.0,
        rotation_sd_deg: 4.0,
        ..Default::default()
    };
    for index in 0..6 {
        let (clean, with) = pair(a.clone(), index);
        let d: Vec<f64> = (0..3)
            .map(|c| with.pose.offset[c] - clean.pose.offset[c])
            .collect();
        assert!(
            d[0].abs() <= 15.0 && d[1].abs() <= 15.0 && d[2] == 0.0,
            "{d:?}"
        );
        let turn = (with.pose.angles[2] - clean.pose.angles[2]).to_degrees();
        assert!(turn.abs() <= 10.0 + 1e-9, "{turn}");
        assert_eq!(clean.labels, with.labels, "study {index}");
    }
    let only_offset = ArtifactConfig {
        hu_offset: [5.0, 5.0],
        ..Default::default()
    };
    let (clean, with) = pair(only_offset, 1);
    let mean = |s: &SyntheticStudy| {
        s.volume
            .data
            .iter()
            .filter(|v| **v > -500.0)
            .map(|v| f64::from(*v))
            .sum::<f64>()
    };
    let n = clean.volume.data.iter().filter(|v| **v > -500.0).count() as f64;
    assert!(((mean(&with) - mean(&clean)) / n - 5.0).abs() < 0.5);
}

#[test]
fn an_artifacts_section_round_trips_through_toml_and_bad_values_name_the_field() {
    let text = "[artifacts]\np_metal = 0.2\nsharpness = [-0.5, 1.0]\n";
    let c: SynthConfig = toml::from_str(text).unwrap();
    assert_eq!(c.artifacts.p_metal, 0.2);
    assert_eq!(c.artifacts.sharpness, [-0.5, 1.0]);
    c.validate().unwrap();
    let bad: SynthConfig = toml::from_str("[artifacts]\np_motion = 2.0\n").unwrap();
    assert!(bad.validate().unwrap_err().contains("p_motion"));
    let typo = toml::from_str::<SynthConfig>("[artifacts]\np_metals = 0.2\n").unwrap_err();
    assert!(typo.to_string().contains("p_metals"), "{typo}");
}
