//! N4 bias-field correction on a real brain: the MNI ICBM152 2009a T1 template (1 mm, from
//! nilearn) with its white- and grey-matter probability maps as the tissue truth. The template
//! is an average of 152 scans and nearly flat; a receive-coil-like field is put on it and must
//! come off, and the template alone must be left nearly as it is.

use std::path::{Path, PathBuf};

use hn_imaging::Volume;
use hn_imaging::bias::{BiasCorrectionConfig, correct_bias};
use hn_imaging::mr::foreground_threshold;
use hn_imaging::nifti::{NiftiReadOptions, read_volume};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/real-imaging/nifti")
        .join(rel)
}

fn read(name: &str) -> Volume {
    read_volume(&data(name), &NiftiReadOptions::default()).unwrap()
}

/// Mean and coefficient of variation of `v` over `mask`.
fn stats(v: &[f32], mask: &[bool]) -> (f64, f64) {
    let x: Vec<f64> = v
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(v, _)| f64::from(*v))
        .collect();
    let m = x.iter().sum::<f64>() / x.len() as f64;
    let sd = (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
    (m, sd / m)
}

#[test]
fn a_coil_field_on_the_mni_template_comes_off_and_the_template_stays() {
    let t1 = read("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz");
    let wm: Vec<bool> = read("mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
        .data
        .iter()
        .map(|p| *p > 230.0)
        .collect();
    let gm: Vec<bool> = read("mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
        .data
        .iter()
        .map(|p| *p > 230.0)
        .collect();
    // ×0.72 to ×1.35 over the head: a gradient towards a coil at the back left, and a
    // centre darker than the rim.
    let [nx, ny, _] = t1.dims;
    let field = |c: usize| {
        let (i, j, k) = (c % nx, (c / nx) % ny, c / (nx * ny));
        let w = t1.world([i as f64, j as f64, k as f64]);
        let u = [w[0] / 100.0, (w[1] + 18.0) / 100.0, (w[2] - 18.0) / 100.0];
        (0.3 * (0.7 * u[0] + 0.6 * u[1] - 0.3 * u[2]) + 0.15 * (u[0] * u[0] + u[1] * u[1])).exp()
    };
    let biased = t1
        .with_data(
            t1.data
                .iter()
                .enumerate()
                .map(|(c, x)| (f64::from(*x) * field(c)) as f32)
                .collect(),
        )
        .unwrap();
    let cfg = BiasCorrectionConfig::default();
    let threshold = |v: &Volume| foreground_threshold(&v.data).unwrap();
    let (corrected, est) = correct_bias(&biased, threshold(&biased), &cfg).unwrap();
    // White matter is as uniform again as on the template (CV 0.026; 0.117 with the field).
    let (wm_true, cv_true) = stats(&t1.data, &wm);
    let (_, cv_biased) = stats(&biased.data, &wm);
    let (wm_corr, cv_corrected) = stats(&corrected.data, &wm);
    assert!(cv_biased > 4.0 * cv_true, "{cv_biased} vs {cv_true}");
    assert!(
        cv_corrected < 1.3 * cv_true,
        "white matter CV: template {cv_true:.4}, with the field {cv_biased:.4}, corrected \
         {cv_corrected:.4}"
    );
    // The estimate follows the field put on (up to a constant) across white matter.
    let ratio: Vec<f32> = est
        .field
        .iter()
        .enumerate()
        .map(|(c, f)| (f64::from(*f) / field(c)) as f32)
        .collect();
    assert!(stats(&ratio, &wm).1 < 0.04, "{}", stats(&ratio, &wm).1);
    // Tissue contrast survives: white over grey matter within 8 % of the template's.
    let (gm_true, _) = stats(&t1.data, &gm);
    let (gm_corr, cv_gm) = stats(&corrected.data, &gm);
    let (contrast_true, contrast) = (wm_true / gm_true, wm_corr / gm_corr);
    assert!(
        contrast > 0.92 * contrast_true,
        "WM/GM {contrast_true:.3} → {contrast:.3}"
    );
    assert!(cv_gm < stats(&biased.data, &gm).1);
    // The flat template alone gets a field within ±10 %.
    let (_, own) = correct_bias(&t1, threshold(&t1), &cfg).unwrap();
    assert!(own.range.0 > 0.9 && own.range.1 < 1.1, "{:?}", own.range);
}
