//! NIfTI reading against nibabel, and DICOM → NIfTI → read round trips.
//!
//! Reference values computed once with nibabel 5.4.2: `img.affine` with rows 0 and 1 negated
//! (RAS → LPS), and the float32 scaled data of volume 0 (min, max, float64 sum).

use std::path::{Path, PathBuf};

use hn_imaging::dicom::{ReadOptions, read_series};
use hn_imaging::nifti::{NiftiReadOptions, read_volume, write_mask, write_mask_i16, write_volume};
use hn_imaging::{ImagingError, Modality, Volume};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-imaging")
        .join(rel)
}

type Affine = [[f64; 4]; 3];

/// (file, dims of volume 0, min, max, sum, LPS affine rows from nibabel)
#[allow(clippy::type_complexity)]
const REFERENCE: &[(&str, [usize; 3], f32, f32, f64, Affine)] = &[
    (
        "S0_10slices.nii.gz",
        [128, 128, 10],
        0.0,
        4095.0,
        23236154.0,
        [
            [-2.0, 0.0, -30.0, 123.359253],
            [0.0, -2.0, -30.0, 102.854736],
            [0.0, 0.0, 32.0, -38.755863],
        ],
    ),
    (
        "anatomical.nii",
        [33, 41, 25],
        -610.0,
        30393.0,
        284166082.0,
        [
            [2.0, 0.0, 0.0, -32.0],
            [0.0, -2.0, 0.0, 40.0],
            [0.0, 0.0, 2.0, -16.0],
        ],
    ),
    (
        "aniso_vox.nii.gz",
        [58, 58, 24],
        0.0,
        2149.0,
        7763280.0,
        [
            [3.999787, 6e-06, 0.051636, -118.763443],
            [-0.023994, 3.256393, 2.903481, -132.198181],
            [-0.033626, -2.322909, 4.070274, 22.819555],
        ],
    ),
    (
        "example4d.nii.gz",
        [128, 96, 24],
        0.0,
        1162.0,
        50994397.0,
        [
            [2.0, 0.0, 0.0, -117.855103],
            [0.0, -1.973711, 0.355528, 35.722942],
            [0.0, 0.323208, 2.171082, -7.248798],
        ],
    ),
    (
        "functional.nii",
        [17, 21, 3],
        762.5424,
        5538.066,
        3883746.5529174805,
        [
            [4.0, 0.0, 0.0, -32.0],
            [0.0, -4.0, 0.0, 40.0],
            [0.0, 0.0, 8.0, 0.0],
        ],
    ),
    (
        "image_10426.nii.gz",
        [53, 63, 46],
        -7.941444,
        7.941345,
        3460.168992704268,
        [
            [3.0, 0.0, 0.0, -78.0],
            [0.0, -3.0, 0.0, 112.0],
            [0.0, 0.0, 3.0, -50.0],
        ],
    ),
    (
        "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        [197, 233, 189],
        0.0,
        255.0,
        257090788.0,
        [
            [-1.0, 0.0, 0.0, 98.0],
            [0.0, -1.0, 0.0, 134.0],
            [0.0, 0.0, 1.0, -72.0],
        ],
    ),
    (
        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        [197, 233, 189],
        0.0,
        255.0,
        333468829.0,
        [
            [-1.0, 0.0, 0.0, 98.0],
            [0.0, -1.0, 0.0, 134.0],
            [0.0, 0.0, 1.0, -72.0],
        ],
    ),
    (
        "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        [197, 233, 189],
        0.0,
        255.0,
        170935158.0,
        [
            [-1.0, 0.0, 0.0, 98.0],
            [0.0, -1.0, 0.0, 134.0],
            [0.0, 0.0, 1.0, -72.0],
        ],
    ),
    (
        "reoriented_anat_moved.nii",
        [21, 26, 22],
        0.0,
        21199.936,
        32739769.449157715,
        [
            [-4.0, 0.0, 0.0, 35.297897],
            [0.0, -4.0, 0.0, 47.977585],
            [0.0, 0.0, 4.0, -27.599409],
        ],
    ),
    (
        "small_25.nii.gz",
        [10, 8, 2],
        162.0,
        255.0,
        34548.0,
        [
            [-2.0, 0.0, 0.0, 80.0],
            [0.0, -2.0, 0.0, 120.0],
            [0.0, 0.0, 2.0, -60.0],
        ],
    ),
    (
        "small_64D.nii",
        [10, 10, 10],
        61.0,
        1675.0,
        378474.0,
        [
            [0.0, 2.0, 0.0, -20.0],
            [1.939744, 0.0, 0.487231, -25.170544],
            [-0.48723, 0.0, 1.939744, 12.320495],
        ],
    ),
];

fn sum(v: &[f32]) -> f64 {
    v.iter().map(|x| *x as f64).sum()
}

#[test]
fn every_nifti_matches_nibabel_values_and_affine() {
    let mut failures = Vec::new();
    for (file, dims, min, max, s, aff) in REFERENCE {
        let v = match read_volume(
            &data(&format!("nifti/{file}")),
            &NiftiReadOptions::default(),
        ) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let (lo, hi) = v.min_max().unwrap();
        let got = sum(&v.data);
        if v.dims != *dims
            || (lo - min).abs() > 1e-4 * min.abs().max(1.0)
            || (hi - max).abs() > 1e-4 * max.abs().max(1.0)
            || (got - s).abs() > 1e-6 * s.abs().max(1.0)
        {
            failures.push(format!(
                "{file}: dims {:?} min {lo} max {hi} sum {got}",
                v.dims
            ));
        }
        let a = v.affine();
        for r in 0..3 {
            for c in 0..4 {
                if (a[r][c] - aff[r][c]).abs() > 2e-5 {
                    failures.push(format!(
                        "{file}: affine[{r}][{c}] {} vs {}",
                        a[r][c], aff[r][c]
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn four_d_volume_index_selects_and_is_checked() {
    let p = data("nifti/example4d.nii.gz");
    let v0 = read_volume(&p, &NiftiReadOptions::default()).unwrap();
    let v1 = read_volume(
        &p,
        &NiftiReadOptions {
            volume_index: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v0.dims, v1.dims);
    assert_ne!(v0.data, v1.data);
    assert!(
        v1.provenance
            .notes
            .iter()
            .any(|n| n.contains("volume 1 of 2"))
    );
    let e = read_volume(
        &p,
        &NiftiReadOptions {
            volume_index: 2,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, ImagingError::Nifti { .. }));
    assert!(e.to_string().contains("example4d.nii.gz"));
}

/// A 4-D file cut inside its last volume is an error even when the volume asked for is whole:
/// the message names the file and the bytes missing.
#[test]
fn truncated_four_d_file_is_an_error_even_for_a_whole_volume() {
    use std::io::Read;
    let gz = std::fs::read(data("nifti/example4d.nii.gz")).unwrap();
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut4d.nii");
    // example4d holds 2 volumes; dropping the last 1 000 bytes leaves volume 0 whole.
    std::fs::write(&p, &raw[..raw.len() - 1000]).unwrap();
    let e = read_volume(&p, &NiftiReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::Truncated { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("cut4d.nii"), "{msg}");
    assert!(msg.contains("1000 bytes missing"), "{msg}");
    // The whole file still reads.
    std::fs::write(&p, &raw).unwrap();
    read_volume(&p, &NiftiReadOptions::default()).unwrap();
}

#[test]
fn dicom_to_nifti_round_trip_is_lossless() {
    let dicom = read_series(
        &[data("dicom/series-ct-head-16px")],
        &ReadOptions::default(),
    )
    .unwrap()
    .volume;
    let dir = tempfile::tempdir().unwrap();
    for name in ["ct.nii", "ct.nii.gz"] {
        let p = dir.path().join(name);
        write_volume(&p, &dicom).unwrap();
        let back = read_volume(
            &p,
            &NiftiReadOptions {
                modality: Some(Modality::Ct),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(back.data, dicom.data, "{name}");
        assert_eq!(back.dims, dicom.dims);
        let (a, b) = (back.affine(), dicom.affine());
        for r in 0..3 {
            for c in 0..4 {
                // sform is stored as float32.
                assert!((a[r][c] - b[r][c]).abs() < 1e-4, "{name} [{r}][{c}]");
            }
        }
    }
}

#[test]
fn oblique_volume_round_trips_through_qform_and_sform() {
    // A rotated, left-handed-free direction (30° about z) with anisotropic spacing.
    let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
    let data: Vec<f32> = (0..60).map(|v| v as f32 - 7.5).collect();
    let mut v = Volume::new(data, [5, 4, 3], [0.7, 0.9, 2.5], Modality::Ct).unwrap();
    v.direction = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    v.origin = [10.0, -20.0, 30.0];
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("obl.nii.gz");
    write_volume(&p, &v).unwrap();
    let back = read_volume(&p, &NiftiReadOptions::default()).unwrap();
    assert_eq!(back.data, v.data);
    for r in 0..3 {
        for k in 0..4 {
            assert!((back.affine()[r][k] - v.affine()[r][k]).abs() < 1e-5);
        }
    }
    // Check the qform too: patch sform_code to 0 so the reader must use the quaternion.
    let p2 = dir.path().join("obl_q.nii");
    write_volume(&p2, &v).unwrap();
    let mut b = std::fs::read(&p2).unwrap();
    b[254..256].copy_from_slice(&0i16.to_le_bytes());
    std::fs::write(&p2, &b).unwrap();
    let q = read_volume(&p2, &NiftiReadOptions::default()).unwrap();
    assert!(q.provenance.notes[0].contains("qform"));
    for r in 0..3 {
        for k in 0..4 {
            assert!(
                (q.affine()[r][k] - v.affine()[r][k]).abs() < 1e-5,
                "qform [{r}][{k}] {} vs {}",
                q.affine()[r][k],
                v.affine()[r][k]
            );
        }
    }
}

#[test]
fn masks_are_written_as_rounded_labels() {
    let v = Volume::new(
        vec![0.2, 0.7, 1.5, 2.4, -3.0, 300.0, 1.0, 0.0],
        [2, 2, 2],
        [1.0; 3],
        Modality::Ct,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mask.nii.gz");
    write_mask(&p, &v).unwrap();
    let back = read_volume(&p, &NiftiReadOptions::default()).unwrap();
    assert_eq!(back.data, vec![0.0, 1.0, 2.0, 2.0, 0.0, 255.0, 1.0, 0.0]);
    assert!(back.provenance.notes[0].contains("Uint8"));
    let p = dir.path().join("mask16.nii");
    write_mask_i16(&p, &v).unwrap();
    let back = read_volume(&p, &NiftiReadOptions::default()).unwrap();
    assert_eq!(back.data, vec![0.0, 1.0, 2.0, 2.0, -3.0, 300.0, 1.0, 0.0]);
}

/// Build a little-endian NIfTI-2 file by hand (no shared test file is NIfTI-2).
fn nifti2_bytes(big: bool) -> Vec<u8> {
    let mut h = vec![0u8; 544];
    macro_rules! put {
        ($o:expr, $v:expr) => {{
            let b = if big {
                $v.to_be_bytes()
            } else {
                $v.to_le_bytes()
            };
            h[$o..$o + b.len()].copy_from_slice(&b);
        }};
    }
    put!(0, 540i32);
    h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    put!(12, 4i16); // int16
    put!(14, 16i16);
    let dims = [3i64, 3, 2, 2, 1, 1, 1, 1];
    for (i, d) in dims.iter().enumerate() {
        put!(16 + 8 * i, *d);
    }
    let pix = [1f64, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0];
    for (i, d) in pix.iter().enumerate() {
        put!(104 + 8 * i, *d);
    }
    put!(168, 544i64);
    put!(176, 2.0f64); // scl_slope
    put!(184, -5.0f64); // scl_inter
    put!(348, 1i32); // sform_code
    let srow = [
        [2.0f64, 0.0, 0.0, -10.0],
        [0.0, 3.0, 0.0, 20.0],
        [0.0, 0.0, 4.0, 5.0],
    ];
    for r in 0..3 {
        for c in 0..4 {
            put!(400 + 32 * r + 8 * c, srow[r][c]);
        }
    }
    for v in 0..12i16 {
        let b = if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        h.extend_from_slice(&b);
    }
    h
}

#[test]
fn nifti2_headers_are_read_in_both_byte_orders() {
    let dir = tempfile::tempdir().unwrap();
    for big in [false, true] {
        let p = dir.path().join(format!("n2_{big}.nii"));
        std::fs::write(&p, nifti2_bytes(big)).unwrap();
        let v = read_volume(&p, &NiftiReadOptions::default()).unwrap();
        assert_eq!(v.dims, [3, 2, 2]);
        let want: Vec<f32> = (0..12).map(|x| (2 * x - 5) as f32).collect();
        assert_eq!(v.data, want);
        assert_eq!(v.spacing, [2.0, 3.0, 4.0]);
        // RAS (-10, 20, 5) is LPS (10, -20, 5); RAS +x is LPS -x.
        assert_eq!(v.origin, [10.0, -20.0, 5.0]);
        assert_eq!(v.direction[0][0], -1.0);
        assert_eq!(v.direction[1][1], -1.0);
        assert!(v.provenance.notes[0].starts_with("NIfTI-2"));
    }
}

#[test]
fn broken_nifti_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(data("nifti/anatomical.nii")).unwrap();
    let p = dir.path().join("short.nii");
    std::fs::write(&p, &src[..src.len() / 2]).unwrap();
    let e = read_volume(&p, &NiftiReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("short.nii"));
    let p = dir.path().join("junk.nii");
    std::fs::write(&p, vec![7u8; 400]).unwrap();
    let e = read_volume(&p, &NiftiReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::Nifti { .. }), "{e}");
}

#[test]
fn absurd_dimensions_are_errors_not_overflows() {
    let dir = tempfile::tempdir().unwrap();
    // NIfTI-2 with 2^40 voxels along x.
    let mut b = nifti2_bytes(false);
    b[24..32].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let p = dir.path().join("huge2.nii");
    std::fs::write(&p, &b).unwrap();
    let e = read_volume(&p, &NiftiReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::Nifti { .. }), "{e}");
    // NIfTI-1 claiming 4000^3 voxels: passes the size check, fails as truncated.
    let mut b = std::fs::read(data("nifti/anatomical.nii")).unwrap();
    for i in 0..3 {
        let o = 42 + 2 * i;
        // anatomical.nii is big-endian.
        b[o..o + 2].copy_from_slice(&4000i16.to_be_bytes());
    }
    let p = dir.path().join("huge1.nii");
    std::fs::write(&p, &b).unwrap();
    let e = read_volume(&p, &NiftiReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::Truncated { .. }), "{e}");
}

/// A NIfTI file's bytes read in memory exactly as the file (plain and gzip, told by magic);
/// writing into memory gives the file's bytes; errors name the given name.
#[test]
fn nifti_bytes_in_memory_read_and_write_like_files() {
    use hn_imaging::nifti::{read_volume_bytes, volume_bytes};
    let opts = NiftiReadOptions::default();
    for name in ["S0_10slices.nii.gz", "anatomical.nii"] {
        let p = data(&format!("nifti/{name}"));
        let file = read_volume(&p, &opts).unwrap();
        // No extension in the name: gzip is recognised by its magic.
        let mem =
            read_volume_bytes(Path::new("upload"), std::fs::read(&p).unwrap(), &opts).unwrap();
        assert_eq!(mem.data, file.data, "{name}");
        assert_eq!(mem.dims, file.dims);
        assert_eq!(mem.affine(), file.affine());
    }
    let vol = read_volume(&data("nifti/anatomical.nii"), &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (file, gz) in [("a.nii", false), ("a.nii.gz", true)] {
        let p = dir.path().join(file);
        write_volume(&p, &vol).unwrap();
        let bytes = volume_bytes(&vol, gz).unwrap();
        let back = read_volume_bytes(Path::new("x"), bytes.clone(), &opts).unwrap();
        assert_eq!(back.data, vol.data, "{file}");
        if !gz {
            assert_eq!(
                bytes,
                std::fs::read(&p).unwrap(),
                "{file}: same bytes as the file"
            );
        }
    }
    let e = read_volume_bytes(Path::new("request-9"), vec![0u8; 100], &opts).unwrap_err();
    assert!(e.to_string().contains("request-9"), "{e}");
    assert_eq!(e.fault(), hn_imaging::Fault::Input);
}
