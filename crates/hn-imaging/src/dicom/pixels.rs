//! Pixel decoding: stored samples of every transfer syntax, then Modality LUT / rescale to
//! numbers (HU for CT).

#[allow(unused_imports)]
use super::*;

pub(super) const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
pub(super) const JPEG_LS_NEAR: &str = "1.2.840.10008.1.2.4.81";

pub(super) fn decode_err(path: &Path, reason: impl Into<String>) -> ImagingError {
    ImagingError::Decode {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(super) fn panic_msg(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "decoder panicked".into())
}

/// Stored samples of all frames, little endian, `bits_allocated` per sample.
pub(super) enum Stored<'a> {
    Bytes(Cow<'a, [u8]>),
    Words(&'a [u16]),
}

pub(super) fn stored_samples<'a>(h: &'a Header) -> Result<Stored<'a>, ImagingError> {
    let path = &h.path;
    let p = &h.pix;
    let elem = h
        .obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| ImagingError::NotImage {
            path: path.clone(),
            reason: "no Pixel Data".into(),
        })?;
    let frame_samples = p.rows * p.cols * p.samples;
    match elem.value() {
        Value::Primitive(prim) => match prim {
            PrimitiveValue::U16(w) if p.bits_allocated == 16 => Ok(Stored::Words(&w[..])),
            PrimitiveValue::U8(b) => Ok(Stored::Bytes(Cow::Borrowed(&b[..]))),
            other => Ok(Stored::Bytes(Cow::Owned(other.to_bytes().into_owned()))),
        },
        Value::PixelSequence(seq) => {
            let frags = seq.fragments();
            if frags.is_empty() {
                return Err(decode_err(path, "encapsulated pixel data has no fragments"));
            }
            if h.ts_uid == JPEG_LS_LOSSLESS || h.ts_uid == JPEG_LS_NEAR {
                if p.samples != 1 {
                    return Err(ImagingError::Unsupported {
                        path: path.clone(),
                        reason: "multi-sample JPEG-LS".into(),
                    });
                }
                // One fragment per frame is the common layout; a single-frame image may be
                // split over several fragments, which are then concatenated.
                let frame_streams: Vec<Vec<u8>> = if frags.len() == p.frames {
                    frags.iter().map(|f| f.to_vec()).collect()
                } else if p.frames == 1 {
                    vec![frags.iter().flatten().copied().collect()]
                } else {
                    return Err(decode_err(
                        path,
                        format!(
                            "{} JPEG-LS fragments for {} frames (fragmented frames are not supported)",
                            frags.len(),
                            p.frames
                        ),
                    ));
                };
                let bytes_per = (p.bits_allocated / 8) as usize;
                let mut out = Vec::with_capacity(frame_samples * p.frames * bytes_per);
                for (i, s) in frame_streams.iter().enumerate() {
                    let res = std::panic::catch_unwind(|| {
                        jpegls::decode(s, p.cols as u32, p.rows as u32)
                    })
                    .map_err(|e| {
                        decode_err(path, format!("JPEG-LS frame {i}: {}", panic_msg(e)))
                    })?;
                    let (px, w, hgt) =
                        res.map_err(|e| decode_err(path, format!("JPEG-LS frame {i}: {e}")))?;
                    if w as usize != p.cols || hgt as usize != p.rows || px.len() != p.rows * p.cols
                    {
                        return Err(decode_err(
                            path,
                            format!(
                                "JPEG-LS frame {i} is {w}x{hgt}, header says {}x{}",
                                p.cols, p.rows
                            ),
                        ));
                    }
                    for v in px {
                        match bytes_per {
                            1 => out.push(v as u8),
                            2 => out.extend_from_slice(&v.to_le_bytes()),
                            _ => out.extend_from_slice(&(v as u32).to_le_bytes()),
                        }
                    }
                }
                return Ok(Stored::Bytes(Cow::Owned(out)));
            }
            let ts =
                TransferSyntaxRegistry
                    .get(&h.ts_uid)
                    .ok_or_else(|| ImagingError::Unsupported {
                        path: path.clone(),
                        reason: format!("unknown transfer syntax {}", h.ts_uid),
                    })?;
            let Codec::EncapsulatedPixelData(Some(reader), _) = ts.codec() else {
                return Err(ImagingError::Unsupported {
                    path: path.clone(),
                    reason: format!(
                        "no decoder built in for transfer syntax {} ({})",
                        h.ts_uid,
                        ts.name()
                    ),
                });
            };
            let mut out = Vec::new();
            let obj = &h.obj;
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                reader.decode(obj, &mut out)
            }))
            .map_err(|e| decode_err(path, format!("{}: {}", ts.name(), panic_msg(e))))?;
            res.map_err(|e| {
                let msg = error_chain(&e);
                if msg.contains("SamplePrecision(12)") || msg.contains("SamplePrecision(16)") {
                    // jpeg-decoder (and zune-jpeg) decode 8-bit DCT JPEG only.
                    ImagingError::Unsupported {
                        path: path.clone(),
                        reason: format!(
                            "{}: 12/16-bit DCT JPEG (process 4) has no pure-Rust decoder here (jpeg-decoder and zune-jpeg decode 8-bit DCT only): {msg}",
                            ts.name()
                        ),
                    }
                } else {
                    decode_err(path, format!("{}: {msg}", ts.name()))
                }
            })?;
            Ok(Stored::Bytes(Cow::Owned(out)))
        }
        Value::Sequence(_) => Err(decode_err(path, "Pixel Data is a sequence")),
    }
}

/// How stored values of one frame become numbers.
#[derive(Debug, Clone)]
pub(super) struct ValueMap {
    pub(super) slope: f64,
    pub(super) intercept: f64,
    /// Modality LUT: (first mapped stored value, table).
    pub(super) lut: Option<(i64, Vec<f64>)>,
    /// MONOCHROME1 without a rescale: invert within the stored range.
    pub(super) invert: bool,
}

pub(super) fn modality_lut(
    path: &Path,
    ds: &InMemDicomObject,
) -> Result<Option<(i64, Vec<f64>)>, ImagingError> {
    let Some(item) = first_item(ds, tags::MODALITY_LUT_SEQUENCE) else {
        return Ok(None);
    };
    let desc = nums(item, tags::LUT_DESCRIPTOR)
        .map_err(|r| bad_attr(path, "LUTDescriptor", r))?
        .filter(|d| d.len() >= 3)
        .ok_or_else(|| bad_attr(path, "LUTDescriptor", "missing or fewer than 3 values"))?;
    let n = if desc[0] == 0.0 {
        65536
    } else {
        desc[0] as usize
    };
    let mut first = desc[1] as i64;
    // The first-mapped value is US or SS by PixelRepresentation; a large value read as US is a
    // negative SS.
    if first > 32767 {
        first -= 65536;
    }
    let bits = desc[2] as u32;
    let e = item
        .get(tags::LUT_DATA)
        .ok_or_else(|| bad_attr(path, "LUTData", "missing"))?;
    let data: Vec<f64> = match e.value() {
        Value::Primitive(PrimitiveValue::U16(w)) => w.iter().map(|v| *v as f64).collect(),
        Value::Primitive(PrimitiveValue::U8(b)) if bits > 8 => b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
            .collect(),
        v => v
            .to_multi_float64()
            .map_err(|e| bad_attr(path, "LUTData", e.to_string()))?,
    };
    if data.len() < n {
        return Err(bad_attr(
            path,
            "LUTData",
            format!("{} entries, descriptor says {n}", data.len()),
        ));
    }
    Ok(Some((first, data[..n].to_vec())))
}

pub(super) fn value_maps(
    h: &Header,
    notes: &mut Vec<String>,
) -> Result<Vec<ValueMap>, ImagingError> {
    let path = &h.path;
    let ds: &InMemDicomObject = &h.obj;
    let lut = modality_lut(path, ds)?;
    let top_slope = one_num(path, ds, tags::RESCALE_SLOPE, "RescaleSlope")?;
    let top_inter = one_num(path, ds, tags::RESCALE_INTERCEPT, "RescaleIntercept")?;
    let shared = first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = items(ds, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let fg_rescale =
        |g: Option<&InMemDicomObject>| -> Result<(Option<f64>, Option<f64>), ImagingError> {
            match g.and_then(|g| first_item(g, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE)) {
                Some(it) => Ok((
                    one_num(path, it, tags::RESCALE_SLOPE, "RescaleSlope")?,
                    one_num(path, it, tags::RESCALE_INTERCEPT, "RescaleIntercept")?,
                )),
                None => Ok((None, None)),
            }
        };
    let (sh_slope, sh_inter) = fg_rescale(shared)?;
    let photometric_m1 = h.pix.photometric == "MONOCHROME1";
    let mut maps = Vec::with_capacity(h.pix.frames);
    let mut used_fg = false;
    for f in 0..h.pix.frames {
        let (pf_slope, pf_inter) = fg_rescale(per_frame.and_then(|p| p.get(f)))?;
        let slope = pf_slope.or(sh_slope);
        let inter = pf_inter.or(sh_inter);
        if slope.is_some() || inter.is_some() {
            used_fg = true;
        }
        let slope = slope.or(top_slope);
        let inter = inter.or(top_inter);
        let has_rescale = slope.is_some() || inter.is_some() || lut.is_some();
        let slope = slope.unwrap_or(1.0);
        let intercept = inter.unwrap_or(0.0);
        if slope == 0.0 {
            return Err(bad_attr(path, "RescaleSlope", "is 0"));
        }
        maps.push(ValueMap {
            slope,
            intercept,
            lut: lut.clone(),
            invert: photometric_m1 && !has_rescale,
        });
    }
    if used_fg {
        notes.push("rescale from enhanced functional groups (per-frame/shared)".into());
    }
    if lut.is_some() {
        notes.push("Modality LUT Sequence applied".into());
    }
    if photometric_m1 {
        notes.push(if maps.iter().any(|m| m.invert) {
            "MONOCHROME1 without rescale: values inverted within the stored range".into()
        } else {
            "MONOCHROME1 with rescale: values are quantitative, not inverted".into()
        });
    }
    Ok(maps)
}

/// The RSNA-2019 condition (see [`ReadOptions::rsna_fix`]).
pub(super) fn rsna_applies(p: &PixelInfo, m: &ValueMap) -> bool {
    p.bits_stored == 12 && !p.signed && m.intercept > -100.0 && m.lut.is_none()
}

/// Hot path for 16-bit native samples with a plain rescale (every uncompressed CT slice):
/// straight loops over slices with the per-voxel branches hoisted out, so LLVM vectorises them.
/// The general [`convert_frame`] ran at ~3 ns/voxel and was 75% of a 512×512 slice's time.
/// Integer slope/intercept small enough for exact f32 arithmetic use f32, otherwise f64 (the
/// same rounding as pydicom's float64 rescale then a float32 cast).
pub(super) fn convert_u16_fast(src: &[u16], p: &PixelInfo, m: &ValueMap, out: &mut [f32]) {
    let shift = p.high_bit + 1 - p.bits_stored;
    let up = 32 - p.bits_stored;
    let dec_s = |r: u16| -> i32 { ((((r as u32) >> shift) << up) as i32) >> up };
    let dec_u = |r: u16| -> i32 { ((((r as u32) >> shift) << up) >> up) as i32 };
    let dec_pad = |pv: i64| {
        if p.signed {
            dec_s(pv as u16)
        } else {
            dec_u(pv as u16)
        }
    };
    let pad: Option<(i32, i32)> = p.padding.map(|pv| {
        let (a, b) = (dec_pad(pv), dec_pad(p.padding_limit.unwrap_or(pv)));
        (a.min(b), a.max(b))
    });
    let exact_f32 = m.slope.fract() == 0.0
        && m.intercept.fract() == 0.0
        && m.slope.abs() * 65536.0 + m.intercept.abs() < 16_777_216.0;
    let (s32, b32) = (m.slope as f32, m.intercept as f32);
    let (s64, b64) = (m.slope, m.intercept);
    let map32 = |v: i32| v as f32 * s32 + b32;
    let map64 = |v: i32| (v as f64 * s64 + b64) as f32;
    macro_rules! go {
        ($dec:expr, $map:expr) => {
            match pad {
                None => {
                    for (o, &r) in out.iter_mut().zip(src) {
                        *o = $map($dec(r));
                    }
                }
                Some((lo, hi)) => {
                    for (o, &r) in out.iter_mut().zip(src) {
                        let v = $dec(r);
                        let y = $map(v);
                        *o = if (v >= lo) & (v <= hi) { f32::NAN } else { y };
                    }
                }
            }
        };
    }
    match (p.signed, exact_f32) {
        (true, true) => go!(dec_s, map32),
        (true, false) => go!(dec_s, map64),
        (false, true) => go!(dec_u, map32),
        (false, false) => go!(dec_u, map64),
    }
}

/// Convert one frame's stored samples to numbers; padding voxels become NaN (filled later).
pub(super) fn convert_frame<F: Fn(usize) -> u32>(
    get: F,
    base: usize,
    p: &PixelInfo,
    m: &ValueMap,
    rsna: bool,
    out: &mut [f32],
) {
    let shift = p.high_bit + 1 - p.bits_stored;
    let mask: u32 = if p.bits_stored >= 32 {
        u32::MAX
    } else {
        (1u32 << p.bits_stored) - 1
    };
    let sign_bit: u32 = 1u32 << (p.bits_stored - 1);
    let signed = p.signed;
    let decode = |raw: u32| -> i64 {
        let v = (raw >> shift) & mask;
        if signed && (v & sign_bit) != 0 {
            v as i64 - (mask as i64 + 1)
        } else {
            v as i64
        }
    };
    let alloc_mask = if p.bits_allocated >= 32 {
        u32::MAX
    } else {
        (1u32 << p.bits_allocated) - 1
    };
    let pad = p.padding.map(|pv| {
        let a = decode(pv as u32 & alloc_mask);
        let b = decode(p.padding_limit.unwrap_or(pv) as u32 & alloc_mask);
        (a.min(b), a.max(b))
    });
    let is_pad = |v: i64| pad.is_some_and(|(lo, hi)| v >= lo && v <= hi);
    let (slope, intercept) = if rsna {
        (m.slope, -1000.0)
    } else {
        (m.slope, m.intercept)
    };
    let max_stored = mask as i64;
    let n = out.len();
    if m.lut.is_none() && !m.invert && !rsna {
        // Hot path (every CT slice): mask, sign-extend, rescale.
        match pad {
            None => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (decode(get(base + i)) as f64 * slope + intercept) as f32;
                }
            }
            Some(_) => {
                for (i, o) in out.iter_mut().enumerate() {
                    let v = decode(get(base + i));
                    *o = if is_pad(v) {
                        f32::NAN
                    } else {
                        (v as f64 * slope + intercept) as f32
                    };
                }
            }
        }
        return;
    }
    for i in 0..n {
        let mut v = decode(get(base + i));
        if is_pad(v) {
            out[i] = f32::NAN;
            continue;
        }
        if rsna {
            v += 1000;
            if v >= 4096 {
                v -= 4096;
            }
        }
        if m.invert {
            v = if signed { -v - 1 } else { max_stored - v };
        }
        out[i] = match &m.lut {
            Some((first, table)) => {
                let idx = (v - first).clamp(0, table.len() as i64 - 1) as usize;
                table[idx] as f32
            }
            None => (v as f64 * slope + intercept) as f32,
        };
    }
}
