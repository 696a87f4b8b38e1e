//! Building the oriented volume of the chosen series: slice order along the normal, geometry
//! checks, and value conversion frame by frame.

#[allow(unused_imports)]
use super::*;

/// One decoded frame with its geometry.
pub(super) struct Frame {
    pub(super) ipp: Option<[f64; 3]>,
    pub(super) iop: Option<[f64; 6]>,
    pub(super) instance: Option<i64>,
    pub(super) file_index: usize,
    pub(super) frame_index: usize,
}

/// A file ready for conversion (see phase A in [`build_volume`]).
pub(super) struct Prepared<'a> {
    pub(super) stored: Stored<'a>,
    pub(super) maps: Vec<ValueMap>,
    pub(super) rsna: Vec<bool>,
    pub(super) pix: PixelInfo,
    pub(super) notes: Vec<String>,
}

/// The series as a volume, and for each slice `k` the index (into `series.headers`) of the
/// instance it came from.
pub(super) fn build_volume(
    series: Series,
    opts: &ReadOptions,
    root: &Path,
) -> Result<(Volume, Vec<usize>), ImagingError> {
    let first = series.first();
    let (rows, cols) = (first.pix.rows, first.pix.cols);
    for h in &series.headers {
        if h.pix.rows != rows || h.pix.cols != cols {
            return Err(ImagingError::InconsistentSeries {
                path: h.path.clone(),
                reason: format!(
                    "matrix {}x{} differs from {}x{} of {} in the same series",
                    h.pix.cols,
                    h.pix.rows,
                    cols,
                    rows,
                    first.path.display()
                ),
            });
        }
    }
    let modality = Modality::from_dicom_code(&first.modality);
    let mut notes: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let npx = rows * cols;

    // Phase A, in parallel over files (decompression dominates): stored samples (borrowed
    // in place for native data), per-frame value maps, notes. Nothing is converted yet.
    use rayon::prelude::*;
    let prepared: Vec<Result<Prepared, ImagingError>> = series
        .headers
        .par_iter()
        .map(|h| {
            let mut fnotes = Vec::new();
            let maps = value_maps(h, &mut fnotes)?;
            let stored = stored_samples(h)?;
            // Without padding handling the padding value is rescaled like any other voxel
            // (pydicom's behaviour), so the converters never see it.
            let pix = if opts.apply_padding {
                h.pix.clone()
            } else {
                PixelInfo {
                    padding: None,
                    padding_limit: None,
                    ..h.pix.clone()
                }
            };
            let per_frame = npx * pix.samples;
            let have = match &stored {
                Stored::Bytes(b) => b.len() / (pix.bits_allocated as usize / 8),
                Stored::Words(w) => w.len(),
            };
            if have < per_frame * pix.frames {
                return Err(ImagingError::Truncated {
                    path: h.path.clone(),
                    reason: format!(
                        "pixel data holds {have} samples, {} frame(s) of {}x{} need {}: {} bytes missing",
                        pix.frames,
                        pix.cols,
                        pix.rows,
                        per_frame * pix.frames,
                        (per_frame * pix.frames - have) * (pix.bits_allocated as usize / 8)
                    ),
                });
            }
            let rsna: Vec<bool> = maps
                .iter()
                .map(|m| opts.rsna_fix && rsna_applies(&pix, m))
                .collect();
            Ok(Prepared {
                stored,
                maps,
                rsna,
                pix,
                notes: fnotes,
            })
        })
        .collect();
    let prepared: Vec<Prepared> = prepared.into_iter().collect::<Result<_, _>>()?;
    let mut rsna_count = 0;
    for pr in &prepared {
        for x in &pr.notes {
            if !notes.contains(x) {
                notes.push(x.clone());
            }
        }
        rsna_count += pr.rsna.iter().any(|r| *r) as usize;
    }
    let any_pad = prepared.iter().any(|pr| pr.pix.padding.is_some());
    let mut frames: Vec<Frame> = Vec::new();
    for (fi, h) in series.headers.iter().enumerate() {
        for f in 0..h.pix.frames {
            let (ipp, iop) = h.frame_geom[f];
            frames.push(Frame {
                ipp,
                iop,
                instance: h.instance_number,
                file_index: fi,
                frame_index: f,
            });
        }
    }
    if rsna_count > 0 {
        notes.push(format!(
            "RSNA-2019 header fix applied to {rsna_count} file(s): stored+1000 wrapped at 4096, intercept -1000"
        ));
    }
    let ts_names: std::collections::BTreeSet<String> = series
        .headers
        .iter()
        .map(|h| {
            TransferSyntaxRegistry
                .get(&h.ts_uid)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|| h.ts_uid.clone())
        })
        .collect();
    notes.push(format!(
        "transfer syntax: {}",
        ts_names.into_iter().collect::<Vec<_>>().join(", ")
    ));

    // Order frames along the slice normal.
    let iop = frames.iter().find_map(|f| f.iop);
    let all_pos = frames.iter().all(|f| f.ipp.is_some());
    let (u, v) = match iop {
        Some(o) => {
            let u = [o[0], o[1], o[2]];
            let v = [o[3], o[4], o[5]];
            let (nu, nv) = (norm(u), norm(v));
            if nu < 1e-6 || nv < 1e-6 {
                return Err(bad_attr(
                    &first.path,
                    "ImageOrientationPatient",
                    "zero-length direction",
                ));
            }
            (u.map(|x| x / nu), v.map(|x| x / nv))
        }
        None => {
            warnings.push("no ImageOrientationPatient: identity orientation assumed".into());
            ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        }
    };
    let n = {
        let c = cross(u, v);
        let l = norm(c);
        c.map(|x| x / l)
    };
    if frames
        .iter()
        .filter_map(|f| f.iop)
        .any(|o| (0..6).any(|i| (o[i] - iop.unwrap_or(o)[i]).abs() > 1e-3))
    {
        warnings.push("ImageOrientationPatient differs between slices of the series".into());
    }
    if all_pos && iop.is_some() {
        frames.sort_by(|a, b| {
            dot(a.ipp.unwrap(), n)
                .total_cmp(&dot(b.ipp.unwrap(), n))
                .then(a.instance.cmp(&b.instance))
                .then(a.file_index.cmp(&b.file_index))
                .then(a.frame_index.cmp(&b.frame_index))
        });
        notes.push("slices ordered by ImagePositionPatient along the slice normal".into());
    } else if frames.len() > 1 {
        frames.sort_by(|a, b| {
            a.instance
                .cmp(&b.instance)
                .then(a.file_index.cmp(&b.file_index))
                .then(a.frame_index.cmp(&b.frame_index))
        });
        warnings.push(
            "slices lack ImagePositionPatient/ImageOrientationPatient: ordered by InstanceNumber and frame order; slice spacing is not known".into(),
        );
    }
    // Duplicates.
    if all_pos && iop.is_some() && frames.len() > 1 {
        let before = frames.len();
        let mut kept: Vec<Frame> = Vec::with_capacity(before);
        for f in frames {
            match kept.last() {
                Some(k)
                    if (dot(k.ipp.unwrap(), n) - dot(f.ipp.unwrap(), n)).abs() < 1e-3
                        && norm(sub(k.ipp.unwrap(), f.ipp.unwrap())) < 1e-3 => {}
                _ => kept.push(f),
            }
        }
        if kept.len() < before {
            warnings.push(format!(
                "{} slice(s) with duplicate ImagePositionPatient dropped (first kept)",
                before - kept.len()
            ));
        }
        frames = kept;
    }
    let nz = frames.len();
    let mut spacing_z = first.slice_thickness.filter(|t| *t > 0.0).unwrap_or(1.0);
    if all_pos && iop.is_some() && nz > 1 {
        let d: Vec<f64> = frames
            .windows(2)
            .map(|w| dot(sub(w[1].ipp.unwrap(), w[0].ipp.unwrap()), n))
            .collect();
        let mut s = d.clone();
        s.sort_by(f64::total_cmp);
        let med = s[s.len() / 2];
        if med > 1e-6 {
            spacing_z = med;
        }
        let gaps = d.iter().filter(|x| **x > 1.5 * med).count();
        if gaps > 0 {
            let worst = s.last().copied().unwrap_or(med);
            warnings.push(format!(
                "{gaps} gap(s) between slices: largest step {worst:.3} mm vs median {med:.3} mm"
            ));
        }
        if s[s.len() - 1] - s[0] > 0.01 * med + 1e-3 {
            warnings.push(format!(
                "non-uniform slice spacing: {:.3} to {:.3} mm (median {med:.3} mm used)",
                s[0],
                s[s.len() - 1]
            ));
        }
        // Gantry tilt: the slice-to-slice step is not along the normal.
        let step = sub(frames[nz - 1].ipp.unwrap(), frames[0].ipp.unwrap());
        let along = dot(step, n);
        let off = norm(sub(step, n.map(|x| x * along)));
        if off > 1e-2 * along.abs().max(1.0) {
            let angle = off.atan2(along.abs()).to_degrees();
            warnings.push(format!(
                "gantry tilt / sheared stack: slices step {angle:.2}° off the slice normal; the volume's affine ignores the shear"
            ));
        }
    } else if nz > 1 && !all_pos {
        // spacing unknown; keep thickness or 1
    } else if nz == 1 {
        notes.push(format!(
            "single slice: slice spacing {spacing_z} mm from SliceThickness (or 1)"
        ));
    }
    if let Some(t) = first.gantry_tilt.filter(|t| t.abs() > 0.01) {
        warnings.push(format!("GantryDetectorTilt is {t}°"));
    }
    let (sx, sy) = match first.pixel_spacing {
        Some([r, c]) if r > 0.0 && c > 0.0 => (c, r),
        _ => {
            warnings.push("no PixelSpacing: 1 mm assumed".into());
            (1.0, 1.0)
        }
    };
    // Phase B: convert each kept frame straight into its slot of the volume, in sorted order,
    // in parallel over slices (no per-slice buffers, no concatenation copy).
    let mut data = vec![0f32; npx * nz];
    data.par_chunks_mut(npx)
        .zip(frames.par_iter())
        .for_each(|(out, fr)| {
            let pr = &prepared[fr.file_index];
            let p = &pr.pix;
            let f = fr.frame_index;
            let m = &pr.maps[f];
            let rsna = pr.rsna[f];
            let per_frame = npx * p.samples;
            let base = f * per_frame;
            match &pr.stored {
                Stored::Words(w)
                    if m.lut.is_none() && !m.invert && !rsna && p.bits_stored <= 16 =>
                {
                    convert_u16_fast(&w[base..base + per_frame], p, m, out)
                }
                Stored::Words(w) => convert_frame(|i| w[i] as u32, base, p, m, rsna, out),
                Stored::Bytes(b) => match p.bits_allocated {
                    8 => convert_frame(|i| b[i] as u32, base, p, m, rsna, out),
                    16 => convert_frame(
                        |i| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32,
                        base,
                        p,
                        m,
                        rsna,
                        out,
                    ),
                    _ => convert_frame(
                        |i| {
                            u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
                        },
                        base,
                        p,
                        m,
                        rsna,
                        out,
                    ),
                },
            }
        });
    if any_pad {
        // Branch-free passes (padding voxels are scattered, so per-voxel branches mispredict).
        // Eight independent lanes so the minimum vectorises (a single fold is a serial chain).
        let mut lanes = [f32::INFINITY; 8];
        let chunks = data.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for l in 0..8 {
                lanes[l] = if c[l] < lanes[l] { c[l] } else { lanes[l] };
            }
        }
        let lowest = lanes
            .iter()
            .chain(tail)
            .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
        let fill = if modality == Modality::Ct {
            lowest.min(-1024.0)
        } else if lowest.is_finite() {
            lowest
        } else {
            0.0
        };
        let count = data.iter().map(|v| v.is_nan() as u32).sum::<u32>();
        for v in data.iter_mut() {
            let x = *v;
            *v = if x.is_nan() { fill } else { x };
        }
        if count > 0 {
            notes.push(format!(
                "PixelPaddingValue (and range limit, if any): {count} padding voxel(s) set to {fill} (lowest value)"
            ));
        }
    }
    let origin = frames[0].ipp.unwrap_or([0.0; 3]);
    let slice_files: Vec<usize> = frames.iter().map(|f| f.file_index).collect();
    let mut vol = Volume::new(
        data,
        [cols, rows, nz],
        [sx, sy, spacing_z],
        modality.clone(),
    )
    .map_err(|source| ImagingError::Volume {
        path: root.to_path_buf(),
        error: source,
    })?;
    vol.origin = origin;
    vol.direction = [[u[0], v[0], n[0]], [u[1], v[1], n[1]], [u[2], v[2], n[2]]];
    if modality == Modality::Ct
        && !series.headers.iter().any(|h| {
            let ds: &InMemDicomObject = &h.obj;
            ds.get(tags::RESCALE_INTERCEPT).is_some()
                || first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
                    .and_then(|g| first_item(g, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE))
                    .is_some()
                || items(ds, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).is_some()
                || ds.get(tags::MODALITY_LUT_SEQUENCE).is_some()
        })
    {
        warnings.push("CT without RescaleIntercept/Slope: stored values used as HU".into());
    }
    let mut sources: Vec<String> = series
        .headers
        .iter()
        .map(|h| h.path.display().to_string())
        .collect();
    sources.sort();
    vol.provenance = Provenance {
        sources,
        series_uid: Some(series.uid.clone()),
        notes,
        warnings,
    };
    Ok((vol, slice_files))
}

pub(super) fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// Read one DICOM file (single- or multi-frame) as a volume.
pub fn read_file(path: &Path, opts: &ReadOptions) -> Result<StudyRead, ImagingError> {
    read_series(&[path.to_path_buf()], opts)
}

/// Decode a single in-memory object (tests, synthetic data). The path is only used in errors.
pub fn read_object(
    obj: FileDicomObject<InMemDicomObject>,
    path: &Path,
    opts: &ReadOptions,
) -> Result<Volume, ImagingError> {
    let h = read_header(path, obj)?;
    if let Some(r) = unusable_reason(&h) {
        return Err(ImagingError::Unsupported {
            path: path.to_path_buf(),
            reason: r,
        });
    }
    let uid = h.series_uid.clone();
    build_volume(
        Series {
            uid,
            headers: vec![h],
        },
        opts,
        path,
    )
    .map(|(v, _)| v)
}
