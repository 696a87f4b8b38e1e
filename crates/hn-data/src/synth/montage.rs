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
