//! Every DICOM file under `testdata/real-imaging/dicom` decodes to the values pydicom gives.
//!
//! Reference numbers were computed once with pydicom 3.0.2 + pylibjpeg (libjpeg 2.5, openjpeg
//! 2.6, rle 2.2) as `apply_modality_lut(ds.pixel_array, ds).astype(float32)`; "sum" is the
//! float64 sum of those float32 values (a full-array checksum: one changed voxel changes it).
//! min/max are also in `testdata/real-imaging/README.md`.

use std::path::{Path, PathBuf};

use hn_imaging::dicom::{ReadOptions, read_series};
use hn_imaging::{ImagingError, Modality};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-imaging/dicom")
        .join(rel)
}

fn raw_opts() -> ReadOptions {
    // Padding off: pydicom does not apply PixelPaddingValue, so compare like with like.
    ReadOptions {
        apply_padding: false,
        ..ReadOptions::default()
    }
}

fn sum(v: &[f32]) -> f64 {
    v.iter().map(|x| *x as f64).sum()
}

/// (file, dims, min, max, sum) from pydicom.
const REFERENCE: &[(&str, [usize; 3], f32, f32, f64)] = &[
    ("693_J2KR.dcm", [512, 512, 1], -3024.0, 1468.0, -271466631.0),
    ("693_UNCR.dcm", [512, 512, 1], -3024.0, 1468.0, -271466631.0),
    ("CT_small.dcm", [128, 128, 1], -896.0, 1167.0, -1950906.0),
    ("JPEG-LL.dcm", [256, 1024, 1], 0.0, 278.0, 3596452.0),
    ("JPEG2000.dcm", [256, 1024, 1], -30.0, 245.0, 3527976.0),
    (
        "JPEGLSNearLossless_16.dcm",
        [10, 50, 1],
        0.0,
        65535.0,
        6007250.0,
    ),
    (
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
        [1024, 768, 1],
        0.0,
        255.0,
        13572107.0,
    ),
    (
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        [484, 484, 1],
        0.0,
        1123.0,
        28033480.0,
    ),
    ("MR_small.dcm", [64, 64, 1], 127.0, 2145.0, 2125338.0),
    ("MR_small_RLE.dcm", [64, 64, 1], 127.0, 2145.0, 2125338.0),
    (
        "MR_small_bigendian.dcm",
        [64, 64, 1],
        127.0,
        2145.0,
        2125338.0,
    ),
    (
        "MR_small_implicit.dcm",
        [64, 64, 1],
        127.0,
        2145.0,
        2125338.0,
    ),
    (
        "MR_small_jp2klossless.dcm",
        [64, 64, 1],
        127.0,
        2145.0,
        2125338.0,
    ),
    (
        "MR_small_jpeg_ls_lossless.dcm",
        [64, 64, 1],
        127.0,
        2145.0,
        2125338.0,
    ),
    ("MR_small_padded.dcm", [64, 64, 1], 127.0, 2145.0, 2125338.0),
    (
        "decimal_rescale.dcm",
        [128, 96, 1],
        -4096.0,
        -4096.0,
        -50331648.0,
    ),
    ("emri_small.dcm", [64, 64, 10], 0.0, 467.0, 4493276.0),
    ("emri_small_RLE.dcm", [64, 64, 10], 0.0, 467.0, 4493276.0),
    (
        "emri_small_jpeg_2k_lossless.dcm",
        [64, 64, 10],
        0.0,
        467.0,
        4493276.0,
    ),
    ("image_dfl.dcm", [512, 512, 1], 0.0, 255.0, 33322688.0),
    ("siemens_dti_0.dcm", [256, 256, 1], 0.0, 4095.0, 134184960.0),
];

#[test]
fn every_decodable_file_matches_pydicom() {
    let mut failures = Vec::new();
    for (file, dims, min, max, s) in REFERENCE {
        match read_series(&[data(file)], &raw_opts()) {
            Ok(st) => {
                let v = &st.volume;
                let (lo, hi) = v.min_max().unwrap();
                let got = sum(&v.data);
                if v.dims != *dims || lo != *min || hi != *max || got != *s {
                    failures.push(format!(
                        "{file}: dims {:?} min {lo} max {hi} sum {got}, want {dims:?} {min} {max} {s}",
                        v.dims
                    ));
                }
            }
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lossy_jpeg2000_ct_within_pydicom_tolerance() {
    // Lossy J2K: different decoders may round differently; the pure-Rust openjp2 port and
    // OpenJPEG (used now) agree here exactly, but allow 0.5 HU mean difference so a decoder update is not a false alarm.
    let v = read_series(&[data("693_J2KI.dcm")], &raw_opts())
        .unwrap()
        .volume;
    let (lo, hi) = v.min_max().unwrap();
    assert!(
        (lo - -3995.0).abs() <= 2.0 && (hi - 1812.0).abs() <= 2.0,
        "{lo} {hi}"
    );
    let mean_diff = (sum(&v.data) - -270617240.0).abs() / v.len() as f64;
    assert!(mean_diff < 0.5, "mean difference {mean_diff} HU");
    assert_eq!(v.modality, Modality::Ct);
}

#[test]
fn mr_non_integer_rescale_matches_pydicom() {
    let v = read_series(&[data("MR2_UNCR.dcm")], &raw_opts())
        .unwrap()
        .volume;
    let (lo, hi) = v.min_max().unwrap();
    assert!((lo - 6.1e-5).abs() < 1e-9, "{lo}");
    assert!((hi - 2245.598).abs() < 1e-3, "{hi}");
    // pydicom: 297139221.47783935 (float64 rescale, then float32 like ours).
    assert!((sum(&v.data) - 297139221.478).abs() < 0.05);
    assert_eq!(v.modality, Modality::Mr);
}

#[test]
fn enhanced_ct_uses_functional_group_rescale() {
    let st = read_series(&[data("eCT_Supplemental.dcm")], &ReadOptions::default()).unwrap();
    let v = &st.volume;
    assert_eq!(v.dims, [512, 512, 2]);
    assert_eq!(v.min_max(), Some((-1024.0, 172.0)));
    // Raw pydicom sum 199249408 minus 1024 per voxel.
    assert_eq!(sum(&v.data), 199249408.0 - 1024.0 * 512.0 * 512.0 * 2.0);
    assert_eq!(v.spacing[0], 0.388672);
    assert!(
        v.provenance
            .notes
            .iter()
            .any(|n| n.contains("functional groups"))
    );
    // Direction from the shared Plane Orientation Sequence: row axis is -x.
    assert_eq!(v.direction[0][0], -1.0);
}

#[test]
fn pixel_padding_becomes_lowest_value_and_is_noted() {
    let v = read_series(&[data("693_UNCR.dcm")], &ReadOptions::default())
        .unwrap()
        .volume;
    // The -2000 stored padding (-3024 HU after rescale) is gone; air is the floor.
    assert_eq!(v.min_max(), Some((-1024.0, 1468.0)));
    assert_eq!(sum(&v.data), -159922631.0);
    assert!(
        v.provenance
            .notes
            .iter()
            .any(|n| n.contains("PixelPaddingValue"))
    );
}

#[test]
fn rejected_files_give_clear_error_kinds() {
    for (file, kind, needle) in [
        ("SC_rgb_rle.dcm", "unsupported", "RGB"),
        ("ctbrain1.dcm", "unsupported", "YBR_FULL_422"),
        ("JPGExtended.dcm", "unsupported", "12"),
    ] {
        let e = read_series(&[data(file)], &ReadOptions::default()).unwrap_err();
        assert_eq!(e.kind(), kind, "{file}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(file), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert!(matches!(e, ImagingError::Unsupported { .. }));
    }
}

/// (file, ImagePositionPatient z, pydicom per-slice sum)
const SERIES: &[(&str, f64, f64)] = &[
    ("17106.dcm", -99.480003, -158395.0),
    ("17136.dcm", 103.019997, 140192.0),
    ("17166.dcm", 104.269997, 360990.0),
    ("17196.dcm", 105.519997, 228448.0),
];

#[test]
fn head_series_sorts_by_position_not_name() {
    // Copy the files under names whose order is the reverse of their positions, so a reader
    // that sorted by file name (or trusted directory order) would fail.
    let dir = tempfile::tempdir().unwrap();
    for (i, (f, _, _)) in SERIES.iter().enumerate() {
        std::fs::copy(
            data("series-ct-head-16px").join(f),
            dir.path().join(format!("slice_{}.dcm", 9 - i)),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("README.txt"), "not dicom").unwrap();
    let st = read_series(&[dir.path().to_path_buf()], &ReadOptions::default()).unwrap();
    let v = &st.volume;
    assert_eq!(v.dims, [16, 16, 4]);
    // SERIES is listed by increasing z, so slice k must be the k-th entry.
    assert!(SERIES.windows(2).all(|w| w[0].1 < w[1].1));
    for (k, (f, _z, s)) in SERIES.iter().enumerate() {
        assert_eq!(sum(v.slice(k)), *s, "slice {k} should be {f}");
    }
    assert_eq!(v.origin, [-125.0, -128.100006, -99.480003]);
    assert!((v.spacing[2] - 1.25).abs() < 1e-4, "median spacing");
    assert!(v.provenance.warnings.iter().any(|w| w.contains("gap")));
    assert!(
        v.provenance
            .warnings
            .iter()
            .any(|w| w.contains("non-uniform"))
    );
    assert_eq!(st.skipped.len(), 1, "README.txt skipped");
    assert!(st.skipped[0].path.ends_with("README.txt"));
    assert_eq!(st.series.len(), 1);
    assert!(st.series[0].chosen);
    assert_eq!(st.chosen_rule, "only series");
}

#[test]
fn truncated_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(data("693_UNCR.dcm")).unwrap();
    for cut in [600usize, 300_000] {
        let p = dir.path().join(format!("cut{cut}.dcm"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = read_series(std::slice::from_ref(&p), &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, ImagingError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains(&format!("cut{cut}.dcm")));
    }
}

#[test]
fn corrupt_compressed_streams_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for src in ["MR_small_jpeg_ls_lossless.dcm", "JPEG-LL.dcm"] {
        let mut b = std::fs::read(data(src)).unwrap();
        let n = b.len();
        for i in n - n / 3..n - n / 3 + 200 {
            b[i] = if i % 2 == 1 { 0xFF } else { 0x00 };
        }
        let p = dir.path().join(src);
        std::fs::write(&p, &b).unwrap();
        let e = match read_series(&[p], &ReadOptions::default()) {
            Ok(_) => panic!("{src}: damaged stream decoded without error"),
            Err(e) => e,
        };
        assert!(matches!(e, ImagingError::Decode { .. }), "{src}: {e}");
    }
    // JPEG 2000 has no checksum over its coded data: damage inside code blocks decodes to wrong
    // pixels in every decoder (pydicom + OpenJPEG included), so only damage the decoder can see
    // is tested here: a broken image-size (SIZ) marker segment and a stream cut before its data.
    for src in ["693_J2KI.dcm", "MR_small_jp2klossless.dcm"] {
        let orig = std::fs::read(data(src)).unwrap();
        let soc = orig
            .windows(4)
            .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
            .expect("J2K codestream");
        let mut siz = orig.clone();
        siz[soc + 6..soc + 22].fill(0xFF);
        let cut = orig[..soc + 40].to_vec();
        for (what, bytes) in [("siz", siz), ("cut", cut)] {
            let p = dir.path().join(format!("{what}_{src}"));
            std::fs::write(&p, &bytes).unwrap();
            let e = match read_series(std::slice::from_ref(&p), &ReadOptions::default()) {
                Ok(_) => panic!("{src} ({what}): damaged stream decoded without error"),
                Err(e) => e,
            };
            assert!(e.to_string().contains(&format!("{what}_{src}")), "{e}");
        }
    }
}

/// JPEG 2000 is decoded by C code (OpenJPEG), where a bad stream could crash the process
/// instead of panicking; damage the codestreams at many places, and cut them short, and require
/// every read to come back (a crash fails the whole test binary).
#[test]
fn mutated_jpeg2000_streams_never_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut errors = 0;
    let mut tried = 0;
    for src in [
        "693_J2KI.dcm",
        "MR_small_jp2klossless.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
    ] {
        let orig = std::fs::read(data(src)).unwrap();
        // The codestream starts at its SOC marker (FF 4F FF 51).
        let soc = orig
            .windows(4)
            .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
            .expect("J2K codestream");
        let len = orig.len() - soc;
        let step = (len / 80).max(1);
        for (n, pos) in (soc..orig.len()).step_by(step).enumerate() {
            let mut b = orig.clone();
            match n % 4 {
                0 => b[pos..(pos + 8).min(orig.len())].fill(0xFF),
                1 => b[pos..(pos + 8).min(orig.len())].fill(0x00),
                2 => {
                    for (k, v) in b[pos..(pos + 64).min(orig.len())].iter_mut().enumerate() {
                        *v = v.wrapping_mul(31).wrapping_add(k as u8);
                    }
                }
                _ => b.truncate(pos.max(soc + 2)),
            }
            let p = dir.path().join(format!("j{n}_{src}"));
            std::fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(|| {
                read_series(std::slice::from_ref(&p), &ReadOptions::default())
            });
            assert!(r.is_ok(), "panic on {src} mutated at {pos}");
            if let Ok(Err(e)) = r {
                assert!(e.to_string().contains(&format!("j{n}_{src}")), "{e}");
                errors += 1;
            }
            tried += 1;
        }
    }
    assert!(tried > 200, "{tried}");
    // Damage must be noticed at least sometimes (not every mutation hits coded data).
    assert!(
        errors > 20,
        "only {errors} of {tried} damaged streams were errors"
    );
}

#[test]
fn file_without_preamble_or_meta_reads_as_bare_data_set() {
    let b = std::fs::read(data("MR_small_implicit.dcm")).unwrap();
    assert_eq!(&b[128..132], b"DICM");
    // (0002,0000) UL group length, explicit VR LE: tag(4) VR(2) len(2) value(4).
    let glen = u32::from_le_bytes(b[140..144].try_into().unwrap()) as usize;
    let body = &b[144 + glen..];
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bare.dcm");
    std::fs::write(&p, body).unwrap();
    let v = read_series(&[p], &ReadOptions::default()).unwrap().volume;
    assert_eq!(v.min_max(), Some((127.0, 2145.0)));
    assert_eq!(sum(&v.data), 2125338.0);
    // Meta kept but no 128-byte preamble: "DICM" at byte 0.
    let p = dir.path().join("nopreamble.dcm");
    std::fs::write(&p, &b[128..]).unwrap();
    let v = read_series(&[p], &ReadOptions::default()).unwrap().volume;
    assert_eq!(sum(&v.data), 2125338.0);
}

#[test]
fn non_dicom_only_input_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "hello").unwrap();
    let e = read_series(&[p], &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::NotDicom { .. }));
    assert!(e.to_string().contains("notes.txt"));
}

#[test]
fn series_uid_option_overrides_and_unknown_uid_errors() {
    let uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2";
    let opts = ReadOptions {
        series_uid: Some(uid.into()),
        ..ReadOptions::default()
    };
    let st = read_series(&[data("series-ct-head-16px")], &opts).unwrap();
    assert_eq!(st.chosen_rule, "series_uid option");
    assert_eq!(st.volume.provenance.series_uid.as_deref(), Some(uid));
    let opts = ReadOptions {
        series_uid: Some("1.2.3".into()),
        ..ReadOptions::default()
    };
    let e = read_series(&[data("series-ct-head-16px")], &opts).unwrap_err();
    assert!(matches!(e, ImagingError::SeriesNotFound { .. }), "{e}");
}

#[test]
fn transfer_syntax_twins_decode_identically() {
    let base = read_series(&[data("MR_small.dcm")], &ReadOptions::default())
        .unwrap()
        .volume;
    for twin in [
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
    ] {
        let v = read_series(&[data(twin)], &ReadOptions::default())
            .unwrap()
            .volume;
        assert_eq!(v.data, base.data, "{twin}");
        assert_eq!(v.affine(), base.affine(), "{twin}");
    }
}

#[test]
fn mutated_files_never_panic() {
    // Overwrite bytes at many places of a real file (header and pixel data) with patterns that
    // break lengths, VRs and values: every read must return (Ok or Err), never panic.
    // (Some positions turn a length field into ~2 GB: dicom-rs then allocates and zeroes that
    // much before failing as truncated, which is slow; the set below keeps the test short.)
    let dir = tempfile::tempdir().unwrap();
    let mut tried = 0;
    for src in [
        "CT_small.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
    ] {
        let orig = std::fs::read(data(src)).unwrap();
        let step = (orig.len() / 60).max(1);
        for (n, pos) in (132..orig.len()).step_by(step).enumerate() {
            let mut b = orig.clone();
            let pattern: &[u8] = match n % 3 {
                0 => &[0xFF, 0xFF, 0xFF, 0xFF],
                1 => &[0x00, 0x00, 0x00, 0x00],
                _ => &[0x7F, 0x45, 0x00, 0x80],
            };
            for (k, v) in pattern.iter().enumerate() {
                if pos + k < b.len() {
                    b[pos + k] = *v;
                }
            }
            let p = dir.path().join(format!("m{n}_{src}"));
            std::fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(|| {
                read_series(std::slice::from_ref(&p), &ReadOptions::default())
            });
            assert!(r.is_ok(), "panic on {src} mutated at {pos}");
            if let Ok(Err(e)) = r {
                assert!(e.to_string().contains(&format!("m{n}_{src}")), "{e}");
            }
            tried += 1;
        }
    }
    assert!(tried > 150);
}

/// Instances held in memory (bytes, or parsed objects) read exactly as the same files on disk:
/// same series choice, order, geometry, values and warnings; errors name the study and the
/// instance instead of a path.
#[test]
fn instances_in_memory_read_like_files() {
    use hn_imaging::dicom::{MemoryData, MemoryInstance, read_series_from_memory};
    let folder = data("series-ct-head-16px");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // Reversed, with a non-DICOM blob among them, as a network receiver might hold them.
    let mut instances: Vec<MemoryInstance> = files
        .iter()
        .rev()
        .enumerate()
        .map(|(i, f)| MemoryInstance {
            name: format!("instance-{i}"),
            data: MemoryData::Bytes(std::fs::read(f).unwrap()),
        })
        .collect();
    instances.push(MemoryInstance {
        name: "junk".into(),
        data: MemoryData::Bytes(b"not dicom at all".to_vec()),
    });
    let from_files = read_series(std::slice::from_ref(&folder), &ReadOptions::default()).unwrap();
    let from_memory =
        read_series_from_memory("request-1", instances, &ReadOptions::default()).unwrap();
    let (a, b) = (&from_files.volume, &from_memory.volume);
    assert_eq!(a.dims, b.dims);
    assert_eq!(a.data, b.data, "values");
    assert_eq!(
        (a.origin, a.spacing, a.direction),
        (b.origin, b.spacing, b.direction)
    );
    assert_eq!(a.modality, b.modality);
    assert_eq!(from_files.chosen_rule, from_memory.chosen_rule);
    assert_eq!(from_memory.skipped.len(), 1);
    assert!(from_memory.skipped[0].path.contains("request-1/junk"));
    assert!(b.provenance.warnings.iter().any(|w| w.contains("gap")));

    // Parsed objects go through the same path.
    let objects: Vec<MemoryInstance> = files
        .iter()
        .map(|f| MemoryInstance {
            name: f.file_name().unwrap().to_string_lossy().into_owned(),
            data: MemoryData::Object(Box::new(dicom_object::open_file(f).unwrap())),
        })
        .collect();
    let from_objects =
        read_series_from_memory("request-2", objects, &ReadOptions::default()).unwrap();
    assert_eq!(from_objects.volume.data, a.data);

    // A truncated instance is an error naming the request and the instance.
    let bytes = std::fs::read(data("693_UNCR.dcm")).unwrap();
    let cut = vec![MemoryInstance {
        name: "instance-7".into(),
        data: MemoryData::Bytes(bytes[..600].to_vec()),
    }];
    let e = read_series_from_memory("request-3", cut, &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("request-3/instance-7"), "{e}");
    assert_eq!(e.fault(), hn_imaging::Fault::Input);
    let none = read_series_from_memory("request-4", Vec::new(), &ReadOptions::default());
    assert!(none.unwrap_err().to_string().contains("request-4"));
}

#[test]
fn real_mr_files_are_told_apart_by_their_acquisition_attributes() {
    use hn_imaging::dicom::read_mr_study;
    use hn_imaging::mr::MrSequence;
    // (file, contrast a radiologist reads from its TR/TE/sequence): pydicom's MR_small is a
    // spin echo TR 4000 / TE 240, MR2 a spin echo TR 350 / TE 27, the Siemens file a 3-D
    // spoiled gradient echo TR 5.5 / TE 2.8 / flip 10 ("fl3d").
    for (f, want) in [
        ("MR_small.dcm", MrSequence::T2),
        ("MR2_UNCR.dcm", MrSequence::T1),
        ("MR-SIEMENS-DICOM-WithOverlays.dcm", MrSequence::T1),
    ] {
        let r = read_mr_study(&[data(f)], &ReadOptions::default())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(r.sequences.len(), 1, "{f}");
        assert_eq!(
            r.sequences[0].sequence, want,
            "{f}: {}",
            r.sequences[0].rule
        );
        assert!(!r.sequences[0].rule.contains("description"), "{f}");
        assert_eq!(r.missing.len(), 4);
    }
    // A CT is not an MR study.
    let e = read_mr_study(&[data("CT_small.dcm")], &ReadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("modality CT"), "{e}");
}

/// The series rule reads the contrast of a real Enhanced MR Image Storage file (Philips,
/// pydicom's `emri_small.dcm`: no ScanningSequence, EchoTime or RepetitionTime at the top
/// level; AcquisitionContrast T1, EchoPulseSequence GRADIENT, PulseSequenceName T1TFE) from the
/// Enhanced MR attributes, and still reads a classic MR Image Storage file (`MR_small.dcm`:
/// spin echo, TR 4000 ms, TE 240 ms) from its classic ones.
#[test]
fn series_rule_reads_enhanced_and_classic_mr_files() {
    use hn_imaging::mr::MrSequence;
    let decision = |file: &str| {
        let read = read_series(&[data(file)], &ReadOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(read.series.len(), 1, "{file}");
        read.series[0]
            .mr
            .clone()
            .unwrap_or_else(|| panic!("{file}: an MR series without a sequence decision"))
    };
    let enhanced = decision("emri_small.dcm");
    assert_eq!(enhanced.sequence, Some(MrSequence::T1), "{}", enhanced.rule);
    assert!(
        enhanced.rule.contains("AcquisitionContrast T1"),
        "{}",
        enhanced.rule
    );
    let classic = decision("MR_small.dcm");
    assert_eq!(classic.sequence, Some(MrSequence::T2), "{}", classic.rule);
    assert!(
        !classic.rule.contains("AcquisitionContrast"),
        "{}",
        classic.rule
    );
}

/// Enhanced MR files keep the acquisition physics in functional-group macros. The real
/// Enhanced MR file with its top-level statements taken out (no AcquisitionContrast, no
/// PulseSequenceName) and an inversion-recovery spin echo put in its shared functional groups
/// (MR Timing and Related Parameters, MR Echo, MR Modifier): the rule reads TR, the effective
/// echo time, InversionRecovery and InversionTimes from there and calls it FLAIR; the same in
/// the first frame's per-frame groups.
#[test]
fn series_rule_reads_enhanced_mr_physics_from_the_functional_groups() {
    use dicom_core::value::{DataSetSequence, PrimitiveValue};
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use hn_imaging::mr::MrSequence;

    let item = |elements: Vec<DataElement<InMemDicomObject>>| {
        InMemDicomObject::from_element_iter(elements)
    };
    let seq = |tag, items: Vec<InMemDicomObject>| {
        DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
    };
    let fd = |tag, v: f64| DataElement::new(tag, VR::FD, PrimitiveValue::F64(vec![v].into()));
    let group = item(vec![
        seq(
            tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE,
            vec![item(vec![fd(tags::REPETITION_TIME, 9000.0)])],
        ),
        seq(
            tags::MR_ECHO_SEQUENCE,
            vec![item(vec![fd(tags::EFFECTIVE_ECHO_TIME, 120.0)])],
        ),
        seq(
            tags::MR_MODIFIER_SEQUENCE,
            vec![item(vec![
                DataElement::new(tags::INVERSION_RECOVERY, VR::CS, "YES"),
                fd(tags::INVERSION_TIMES, 2500.0),
            ])],
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    for (name, where_) in [
        ("shared", tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE),
        ("per-frame", tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE),
    ] {
        let mut obj = dicom_object::open_file(data("emri_small.dcm")).unwrap();
        for tag in [
            tags::ACQUISITION_CONTRAST,
            tags::PULSE_SEQUENCE_NAME,
            tags::ECHO_PULSE_SEQUENCE,
        ] {
            assert!(obj.remove_element(tag), "{name}: the file has {tag}");
        }
        obj.put(DataElement::new(tags::ECHO_PULSE_SEQUENCE, VR::CS, "SPIN"));
        let frames = if where_ == tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE {
            10
        } else {
            1
        };
        obj.put(seq(where_, vec![group.clone(); frames]));
        let path = dir.path().join(format!("{name}.dcm"));
        obj.write_to_file(&path).unwrap();
        let read = read_series(&[path], &ReadOptions::default()).unwrap();
        let d = read.series[0].mr.clone().expect("an MR decision");
        assert_eq!(d.sequence, Some(MrSequence::Flair), "{name}: {}", d.rule);
        assert!(d.rule.contains("2500"), "{name}: {}", d.rule);
    }
}
