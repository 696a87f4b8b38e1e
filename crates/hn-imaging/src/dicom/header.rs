//! Per-file header facts: everything needed from one instance before its pixels are decoded.

#[allow(unused_imports)]
use super::*;

/// Pixel-module facts that decide how stored values become numbers.
#[derive(Debug, Clone)]
pub(super) struct PixelInfo {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) frames: usize,
    pub(super) samples: usize,
    pub(super) bits_allocated: u32,
    pub(super) bits_stored: u32,
    pub(super) high_bit: u32,
    pub(super) signed: bool,
    pub(super) photometric: String,
    pub(super) padding: Option<i64>,
    /// PixelPaddingRangeLimit: padding is the range between it and `padding`.
    pub(super) padding_limit: Option<i64>,
}

/// Per frame: (ImagePositionPatient, ImageOrientationPatient).
pub(super) type FrameGeom = (Option<[f64; 3]>, Option<[f64; 6]>);

/// Everything we need from one file before decoding its pixels.
pub(super) struct Header {
    pub(super) path: PathBuf,
    pub(super) obj: Obj,
    pub(super) series_uid: String,
    pub(super) modality: String,
    pub(super) description: String,
    pub(super) instance_number: Option<i64>,
    pub(super) pix: PixelInfo,
    /// Per frame: (ImagePositionPatient, ImageOrientationPatient).
    pub(super) frame_geom: Vec<FrameGeom>,
    /// (row spacing, column spacing) = PixelSpacing.
    pub(super) pixel_spacing: Option<[f64; 2]>,
    pub(super) slice_thickness: Option<f64>,
    pub(super) kernel: Option<String>,
    pub(super) gantry_tilt: Option<f64>,
    pub(super) ts_uid: String,
    /// MR acquisition attributes (MR instances only).
    pub(super) mr: Option<crate::mr::MrAcquisition>,
}

pub(super) fn bad_attr(path: &Path, attribute: &str, reason: impl Into<String>) -> ImagingError {
    ImagingError::BadAttribute {
        path: path.to_path_buf(),
        attribute: attribute.into(),
        reason: reason.into(),
    }
}

pub(super) fn one_num(
    path: &Path,
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
) -> Result<Option<f64>, ImagingError> {
    let v = nums(obj, tag).map_err(|r| bad_attr(path, name, r))?;
    Ok(v.and_then(|v| v.first().copied()))
}

pub(super) fn array<const N: usize>(
    path: &Path,
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
) -> Result<Option<[f64; N]>, ImagingError> {
    match nums(obj, tag).map_err(|r| bad_attr(path, name, r))? {
        None => Ok(None),
        Some(v) if v.len() >= N => Ok(Some(std::array::from_fn(|i| v[i]))),
        Some(v) => Err(bad_attr(
            path,
            name,
            format!("{} values, need {N}", v.len()),
        )),
    }
}

pub(super) fn read_header(path: &Path, obj: Obj) -> Result<Header, ImagingError> {
    let ds: &InMemDicomObject = &obj;
    if ds.get(tags::PIXEL_DATA).is_none() {
        let what = if ds.get(tags::FLOAT_PIXEL_DATA).is_some()
            || ds.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some()
        {
            "float pixel data (parametric map) is not supported"
        } else {
            "no Pixel Data (7FE0,0010)"
        };
        return Err(ImagingError::NotImage {
            path: path.to_path_buf(),
            reason: what.into(),
        });
    }
    let need = |tag: Tag, name: &str| -> Result<f64, ImagingError> {
        one_num(path, ds, tag, name)?
            .ok_or_else(|| bad_attr(path, name, "missing (required for an image)"))
    };
    let rows = need(tags::ROWS, "Rows")? as usize;
    let cols = need(tags::COLUMNS, "Columns")? as usize;
    let bits_allocated = need(tags::BITS_ALLOCATED, "BitsAllocated")? as u32;
    let bits_stored = one_num(path, ds, tags::BITS_STORED, "BitsStored")?
        .map(|v| v as u32)
        .unwrap_or(bits_allocated);
    let high_bit = one_num(path, ds, tags::HIGH_BIT, "HighBit")?
        .map(|v| v as u32)
        .unwrap_or(bits_stored.saturating_sub(1));
    let signed =
        one_num(path, ds, tags::PIXEL_REPRESENTATION, "PixelRepresentation")?.unwrap_or(0.0) == 1.0;
    let samples =
        one_num(path, ds, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1.0) as usize;
    let frames = one_num(path, ds, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?
        .unwrap_or(1.0)
        .max(1.0) as usize;
    let photometric = text(ds, tags::PHOTOMETRIC_INTERPRETATION)
        .unwrap_or_else(|| "MONOCHROME2".into())
        .to_ascii_uppercase();
    if rows == 0 || cols == 0 {
        return Err(bad_attr(path, "Rows/Columns", "zero image size"));
    }
    if !matches!(bits_allocated, 8 | 16 | 32) {
        return Err(ImagingError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("BitsAllocated {bits_allocated} (only 8, 16, 32 are supported)"),
        });
    }
    if bits_stored == 0
        || bits_stored > bits_allocated
        || high_bit >= bits_allocated
        || high_bit + 1 < bits_stored
    {
        return Err(bad_attr(
            path,
            "BitsStored/HighBit",
            format!(
                "BitsStored {bits_stored}, HighBit {high_bit} do not fit BitsAllocated {bits_allocated}"
            ),
        ));
    }
    // US or SS depending on PixelRepresentation: keep the raw 16-bit pattern and interpret it
    // like a stored pixel later.
    let raw_pad = |tag: Tag| match ds.get(tag) {
        None => None,
        Some(e) if e.vr() == VR::SS => e.value().to_int::<i32>().ok().map(|v| v as i64),
        Some(_) => nums(ds, tag)
            .ok()
            .flatten()
            .and_then(|v| v.first().map(|x| *x as i64)),
    };
    let padding = raw_pad(tags::PIXEL_PADDING_VALUE);
    let padding_limit = padding.and(raw_pad(tags::PIXEL_PADDING_RANGE_LIMIT));
    // Refuse absurd sizes before allocating for them (a corrupt NumberOfFrames must not abort
    // the process with an allocation failure).
    let samples_total =
        (rows as u128) * (cols as u128) * (frames as u128) * (samples.max(1) as u128);
    if samples_total > (1u128 << 31) || samples == 0 || samples > 4 {
        return Err(bad_attr(
            path,
            "Rows/Columns/NumberOfFrames/SamplesPerPixel",
            format!(
                "{cols}x{rows}, {frames} frame(s), {samples} sample(s): implausible image size"
            ),
        ));
    }
    let pix = PixelInfo {
        rows,
        cols,
        frames,
        samples,
        bits_allocated,
        bits_stored,
        high_bit,
        signed,
        photometric,
        padding,
        padding_limit,
    };

    // Geometry: classic attributes, or functional groups of enhanced multi-frame objects.
    let shared = first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = items(ds, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let fg_nums = |fg: Option<&InMemDicomObject>, seq: Tag, tag: Tag, name: &str| match fg
        .and_then(|g| first_item(g, seq))
    {
        Some(it) => nums(it, tag).map_err(|r| bad_attr(path, name, r)),
        None => Ok(None),
    };
    let top_iop = array::<6>(
        path,
        ds,
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient",
    )?;
    let top_ipp = array::<3>(
        path,
        ds,
        tags::IMAGE_POSITION_PATIENT,
        "ImagePositionPatient",
    )?;
    let shared_iop = fg_nums(
        shared,
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient",
    )?;
    let mut frame_geom = Vec::with_capacity(frames);
    for f in 0..frames {
        let pf = per_frame.and_then(|p| p.get(f));
        let ipp = fg_nums(
            pf,
            tags::PLANE_POSITION_SEQUENCE,
            tags::IMAGE_POSITION_PATIENT,
            "ImagePositionPatient",
        )?;
        let iop = fg_nums(
            pf,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient",
        )?
        .or_else(|| shared_iop.clone());
        let ipp = match ipp {
            Some(v) if v.len() >= 3 => Some([v[0], v[1], v[2]]),
            _ if frames == 1 => top_ipp,
            _ => None,
        };
        let iop = match iop {
            Some(v) if v.len() >= 6 => Some(std::array::from_fn(|i| v[i])),
            _ => top_iop,
        };
        frame_geom.push((ipp, iop));
    }
    pub(super) fn measures(fg: Option<&InMemDicomObject>) -> Option<&InMemDicomObject> {
        fg.and_then(|g| first_item(g, tags::PIXEL_MEASURES_SEQUENCE))
    }
    let pm = measures(per_frame.and_then(|p| p.first())).or(measures(shared));
    let pixel_spacing = match pm {
        Some(it) => array::<2>(path, it, tags::PIXEL_SPACING, "PixelSpacing")?,
        None => None,
    }
    .or(array::<2>(path, ds, tags::PIXEL_SPACING, "PixelSpacing")?);
    let slice_thickness = match pm {
        Some(it) => one_num(path, it, tags::SLICE_THICKNESS, "SliceThickness")?,
        None => None,
    }
    .or(one_num(path, ds, tags::SLICE_THICKNESS, "SliceThickness")?);
    let kernel = text(ds, tags::CONVOLUTION_KERNEL).or_else(|| {
        shared
            .and_then(|g| first_item(g, tags::CT_RECONSTRUCTION_SEQUENCE))
            .and_then(|it| text(it, tags::CONVOLUTION_KERNEL))
    });
    let gantry_tilt = one_num(path, ds, tags::GANTRY_DETECTOR_TILT, "GantryDetectorTilt")
        .ok()
        .flatten();
    let series_uid =
        text(ds, tags::SERIES_INSTANCE_UID).unwrap_or_else(|| "(no SeriesInstanceUID)".into());
    let modality = text(ds, tags::MODALITY).unwrap_or_default();
    let description = text(ds, tags::SERIES_DESCRIPTION).unwrap_or_default();
    let instance_number = one_num(path, ds, tags::INSTANCE_NUMBER, "InstanceNumber")
        .ok()
        .flatten()
        .map(|v| v as i64);
    let mr = (modality == "MR").then(|| {
        // Where the first frame's attribute lives: the top level (MR Image Storage), else one
        // macro deep in its functional groups, per-frame before shared (Enhanced MR: MR
        // Timing and Related Parameters, MR Echo, MR Modifier, MR Image Frame Type; Legacy
        // Converted Enhanced MR: the unassigned converted attributes).
        let groups: Vec<&InMemDicomObject> = [per_frame.and_then(|p| p.first()), shared]
            .into_iter()
            .flatten()
            .collect();
        let holder = |tag: Tag| -> Option<&InMemDicomObject> {
            if ds.get(tag).is_some() {
                return Some(ds);
            }
            groups
                .iter()
                .flat_map(|g| g.iter())
                .filter_map(|e| e.value().items().and_then(|it| it.first()))
                .find(|it| it.get(tag).is_some())
        };
        let text_at = |tag: Tag| holder(tag).and_then(|o| text(o, tag));
        let words = |tag: Tag| -> Vec<String> {
            text_at(tag)
                .map(|t| {
                    t.split('\\')
                        .map(|w| w.trim().to_string())
                        .filter(|w| !w.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        // Malformed timing values are treated as absent: the rule then says it fell back.
        let num = |tag: Tag| {
            holder(tag)
                .and_then(|o| nums(o, tag).ok().flatten())
                .and_then(|v| v.first().copied())
        };
        // Enhanced MR states the echo type (SPIN, GRADIENT, BOTH) and inversion recovery
        // instead of ScanningSequence.
        let mut scanning = words(tags::SCANNING_SEQUENCE);
        if scanning.is_empty() {
            for w in words(tags::ECHO_PULSE_SEQUENCE) {
                match w.to_ascii_uppercase().as_str() {
                    "SPIN" => scanning.push("SE".into()),
                    "GRADIENT" => scanning.push("GR".into()),
                    "BOTH" => scanning.extend(["SE".into(), "GR".into()]),
                    _ => {}
                }
            }
            if words(tags::INVERSION_RECOVERY)
                .iter()
                .any(|w| w.eq_ignore_ascii_case("YES"))
            {
                scanning.push("IR".into());
            }
        }
        crate::mr::MrAcquisition {
            scanning_sequence: scanning,
            sequence_variant: words(tags::SEQUENCE_VARIANT),
            image_type: words(tags::IMAGE_TYPE),
            repetition_time_ms: num(tags::REPETITION_TIME),
            echo_time_ms: num(tags::ECHO_TIME).or_else(|| num(tags::EFFECTIVE_ECHO_TIME)),
            inversion_time_ms: num(tags::INVERSION_TIME).or_else(|| num(tags::INVERSION_TIMES)),
            flip_angle_deg: num(tags::FLIP_ANGLE),
            description: description.clone(),
            sequence_name: text_at(tags::SEQUENCE_NAME)
                .or_else(|| text_at(tags::PULSE_SEQUENCE_NAME))
                .unwrap_or_default(),
            acquisition_contrast: words(tags::ACQUISITION_CONTRAST),
        }
    });
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    Ok(Header {
        path: path.to_path_buf(),
        series_uid,
        modality,
        description,
        instance_number,
        pix,
        frame_geom,
        pixel_spacing,
        slice_thickness,
        kernel,
        gantry_tilt,
        ts_uid,
        mr,
        obj,
    })
}

/// Why an image cannot give quantitative values, if it cannot.
pub(super) fn unusable_reason(h: &Header) -> Option<String> {
    let p = &h.pix;
    if p.samples != 1 || !p.photometric.starts_with("MONOCHROME") {
        let mut r = format!(
            "colour image ({}, {} samples per pixel): no quantitative values",
            p.photometric, p.samples
        );
        if h.modality == "CT" {
            r.push_str(&format!(
                "; a {}-bit {} \"CT\" is a screen capture, not Hounsfield units",
                p.bits_stored, p.photometric
            ));
        }
        return Some(r);
    }
    if h.modality == "CT" && p.bits_stored <= 8 {
        return Some(format!(
            "CT with BitsStored {}: too few bits to hold Hounsfield units (likely a lossy screen capture)",
            p.bits_stored
        ));
    }
    None
}
