//! A PNG montage of representative slices (one negative and one study per subtype, brain
//! window 40/80), so that a person can judge at a glance whether the phantom looks like CT.

use std::path::Path;

use super::{SynthConfig, SynthError, sample_case, try_generate_study};

/// Write a 3×2 (or 3×4 with `with_masks`) montage: negative, EDH, SDH, SAH, IPH, IVH.
/// With `with_masks`, a second copy of each tile shows the lesion mask outlined in white.
pub fn write_montage(
    cfg: &SynthConfig,
    seed: u64,
    path: &Path,
    with_masks: bool,
) -> Result<(), SynthError> {
    cfg.validate()
        .map_err(|msg| SynthError::Config { path: None, msg })?;
    // Find one study per category using the cheap case sampler.
    let mut picks: [Option<usize>; 6] = [None; 6];
    for i in 0..5000 {
        let c = sample_case(cfg, seed, i);
        let n = c.planned_subtypes.iter().filter(|b| **b).count();
        let cat = if n == 0 {
            Some(0)
        } else if n == 1 || (c.planned_subtypes[3] && c.planned_subtypes[4]) {
            // Single subtype (IVH also from IPH extension when no primary IVH is found).
            let t = c.planned_subtypes.iter().position(|b| *b).unwrap_or(0);
            if n == 1 { Some(t + 1) } else { None }
        } else {
            None
        };
        if let Some(cat) = cat
            && picks[cat].is_none()
            && (cat == 0 || c.facts.acuity == Some(super::Acuity::Acute))
            && (cat == 0 || c.facts.total_ml > 4.0)
        {
            picks[cat] = Some(i);
        }
        if picks.iter().all(|p| p.is_some()) {
            break;
        }
    }
    let n = cfg.size;
    let brain = hn_imaging::transforms::Window::brain();
    let rows_per = if with_masks { 2 } else { 1 };
    let (tw, th) = (3 * n, 2 * rows_per * n);
    let mut img = vec![0u8; tw * th];
    for (slot, pick) in picks.iter().enumerate() {
        let Some(i) = pick else { continue };
        let st = try_generate_study(cfg, seed, *i)?;
        let plane = n * n;
        let nz = st.geometry.n_slices;
        let k = if slot == 0 {
            nz * 3 / 5
        } else {
            (nz / 4..nz * 4 / 5)
                .max_by_key(|k| {
                    st.mask[k * plane..(k + 1) * plane]
                        .iter()
                        .filter(|m| **m as usize == slot)
                        .count()
                })
                .unwrap_or(nz / 2)
        };
        let sl = st.volume.slice(k);
        let ms = &st.mask[k * plane..(k + 1) * plane];
        let (cx, cy) = (slot % 3, slot / 3);
        for j in 0..n {
            for i2 in 0..n {
                let v = brain.apply(sl[j * n + i2]);
                let g = (v * 255.0).round() as u8;
                let oy = cy * rows_per * n;
                img[(oy + j) * tw + cx * n + i2] = g;
                if with_masks {
                    let m = ms[j * n + i2];
                    let edge = m > 0
                        && (i2 == 0
                            || j == 0
                            || i2 + 1 == n
                            || j + 1 == n
                            || ms[j * n + i2 - 1] != m
                            || ms[j * n + i2 + 1] != m
                            || ms[(j - 1) * n + i2] != m
                            || ms[(j + 1) * n + i2] != m);
                    img[(oy + n + j) * tw + cx * n + i2] = if edge { 255 } else { g / 2 };
                }
            }
        }
    }
    let f = std::fs::File::create(path).map_err(|e| SynthError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), tw as u32, th as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let werr = |e: png::EncodingError| SynthError::Write {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut w = enc.write_header().map_err(werr)?;
    w.write_image_data(&img).map_err(werr)?;
    Ok(())
}

/// Write the MR montage: one column per sequence (T1, T2, FLAIR, T2*-GRE, SWI), one row per
/// bleed type (negative, EDH, SDH, SAH, IPH, IVH: acute blood) and then one row per blood age
/// (an intraparenchymal bleed hyperacute, acute, early/late subacute, chronic, and a small
/// chronic one: the haemosiderin scar), labelled.
/// Each tile is the slice of that sequence nearest the lesion's largest cross-section, shown
/// between its own 1st and 99.5th percentile (MR has no absolute scale).
pub fn write_mr_montage(cfg: &SynthConfig, seed: u64, path: &Path) -> Result<(), SynthError> {
    use super::mr::{BloodAge, blood_ages, generate_mr_study};
    use hn_imaging::mr::MrSequence;
    cfg.validate()
        .map_err(|msg| SynthError::Config { path: None, msg })?;
    let mut cfg = cfg.clone();
    cfg.mr.p_missing_sequence = 0.0;
    let ages = [
        BloodAge::Hyperacute,
        BloodAge::Acute,
        BloodAge::EarlySubacute,
        BloodAge::LateSubacute,
        BloodAge::Chronic,
        BloodAge::HaemosiderinScar,
    ];
    // Rows: (label, subtype slot 0..=5, wanted IPH age).
    let mut rows: Vec<(String, usize, Option<BloodAge>, Option<usize>)> = [
        "no bleed",
        "epidural",
        "subdural",
        "subarachnoid",
        "intraparenchymal",
        "intraventricular",
    ]
    .iter()
    .enumerate()
    .map(|(s, n)| (format!("{n} (acute)"), s, None, None))
    .collect();
    rows[0].0 = "no bleed".into();
    for a in ages {
        rows.push((format!("IPH {a:?}"), 4, Some(a), None));
    }
    for i in 0..20000 {
        if rows.iter().all(|r| r.3.is_some()) {
            break;
        }
        let c = sample_case(&cfg, seed, i);
        let n = c.planned_subtypes.iter().filter(|b| **b).count();
        let age = blood_ages(&cfg.mr, &c, seed, i);
        for r in rows.iter_mut().filter(|r| r.3.is_none()) {
            let ok = if r.1 == 0 {
                n == 0
            } else {
                let t = r.1 - 1;
                let want = r.2.unwrap_or(BloodAge::Acute);
                // A scar is a small bleed by definition; the other rows want large ones.
                let big_enough = if want == BloodAge::HaemosiderinScar {
                    c.facts.total_ml > 0.5
                } else {
                    c.facts.total_ml > if t == 3 { 8.0 } else { 4.0 }
                };
                n == 1
                    && c.planned_subtypes[t]
                    && big_enough
                    && c.phantom.lesions.iter().zip(&age).all(|(_, a)| *a == want)
            };
            if ok {
                r.3 = Some(i);
                break;
            }
        }
    }
    let n = cfg.mr.size;
    let label_w = 8 * 24;
    let head_h = 14;
    let (tw, th) = (label_w + 5 * n, head_h + rows.len() * n);
    let mut img = hn_imaging::raster::RgbImage::black(tw, th);
    for (c, q) in MrSequence::ALL.iter().enumerate() {
        img.draw_text(label_w + c * n + 2, 3, q.name(), 1, [255, 255, 0]);
    }
    for (r, (label, slot, _, pick)) in rows.iter().enumerate() {
        let y0 = head_h + r * n;
        img.draw_text(2, y0 + n / 2 - 4, label, 1, [255, 255, 255]);
        let Some(i) = pick else {
            img.draw_text(label_w + 2, y0 + n / 2 - 4, "(none found)", 1, [255, 0, 0]);
            continue;
        };
        let st = generate_mr_study(&cfg, seed, *i)?;
        // World z of the largest cross-section on T2 (the reference), else the head centre.
        let t2 = &st.series[MrSequence::T2.index()];
        let plane = n * n;
        let k_ref = (0..t2.volume.dims[2])
            .max_by_key(|k| {
                t2.mask[k * plane..(k + 1) * plane]
                    .iter()
                    .filter(|m| **m as usize == *slot && *slot > 0)
                    .count()
            })
            .filter(|_| *slot > 0)
            .unwrap_or(t2.volume.dims[2] * 3 / 5);
        let z = t2.volume.world([0.0, 0.0, k_ref as f64])[2];
        for (c, s) in st.series.iter().enumerate() {
            let v = &s.volume;
            let k =
                (((z - v.origin[2]) / v.spacing[2]).round().max(0.0) as usize).min(v.dims[2] - 1);
            let sl = v.slice(k);
            let mut sorted: Vec<f32> = sl.to_vec();
            sorted.sort_unstable_by(f32::total_cmp);
            let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
            let (lo, hi) = (q(0.01), q(0.995).max(q(0.01) + 1.0));
            for j in 0..n {
                for x in 0..n {
                    let g = (((sl[j * n + x] - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
                    let idx = 3 * ((y0 + j) * tw + label_w + c * n + x);
                    img.data[idx..idx + 3].copy_from_slice(&[g, g, g]);
                }
            }
        }
    }
    let png = img.to_png().map_err(|msg| SynthError::Write {
        path: path.to_path_buf(),
        msg,
    })?;
    std::fs::write(path, png).map_err(|e| SynthError::Io {
        path: path.to_path_buf(),
        cause: e,
    })
}
