//! DICOM study → one oriented [`Volume`] of Hounsfield units (CT) or stored intensities (MR).
//!
//! Why it is built this way:
//! * **Parsing** is dicom-rs (`dicom-object`), which handles every transfer syntax's data-set
//!   encoding (implicit/explicit VR, big endian, deflate). Files without preamble or file meta
//!   are retried as bare data sets, because such files still turn up in old archives.
//! * **Decompression** goes through dicom-rs's transfer-syntax registry (RLE, JPEG via
//!   `jpeg-decoder`, JPEG 2000 via the C OpenJPEG library, which `openjpeg-sys` compiles from
//!   its vendored sources with `cc`: no cmake, no system library, and the same decoder pydicom
//!   uses, so it is as fast; the pure-Rust `openjp2` port was 1.2–2.2× slower). dicom-rs's JPEG-LS adapter
//!   needs CharLS and cmake, so JPEG-LS is decoded here with the pure-Rust `jpegls` crate.
//!   Decoders run under `catch_unwind`: a corrupt stream must give an error, never a panic.
//! * **Values** (stored → HU) are computed here, not by dicom-pixeldata, because HU need rules
//!   its generic path does not apply: per-frame functional-group rescale (enhanced CT), Bits
//!   Stored masking and sign extension, pixel padding, attributes stored with VR UN, the RSNA
//!   header fix, and refusing non-quantitative images instead of guessing.
//! * **Geometry** comes from ImagePositionPatient projected on the slice normal, never from
//!   InstanceNumber or file names, which are unreliable in real exports.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
use dicom_object::file::ReadPreamble;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

use crate::{ImagingError, Modality, Provenance, Volume};

type Obj = FileDicomObject<InMemDicomObject>;

/// Options for [`read_series`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Use this SeriesInstanceUID instead of the automatic choice.
    pub series_uid: Option<String>,
    /// RSNA-2019 header fix. Some scans of the RSNA Intracranial Hemorrhage Detection data
    /// (Kaggle 2019) carry `BitsStored 12, PixelRepresentation 0` with a RescaleIntercept above
    /// -100 although their pixels were written shifted by -1000 and wrapped at 4096. With this
    /// switch on, such slices get `stored + 1000` (wrapped at 4096) and intercept -1000, the
    /// correction widely used on that data set. Off by default: on any other data it would
    /// corrupt correct values.
    pub rsna_fix: bool,
    /// Replace voxels equal to PixelPaddingValue (outside the scan field) by the lowest value
    /// of the volume (for CT at most -1024 HU, air). On by default; off gives the stored values
    /// rescaled like any other voxel (what pydicom's `apply_modality_lut` returns).
    pub apply_padding: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            series_uid: None,
            rsna_fix: false,
            apply_padding: true,
        }
    }
}

/// One series found in the input, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSummary {
    pub uid: String,
    pub modality: String,
    pub description: String,
    pub files: usize,
    /// Frames (slices) over all files of the series.
    pub frames: usize,
    pub rows: usize,
    pub cols: usize,
    /// `axial`, `coronal`, `sagittal`, `oblique` or `unknown` (no orientation).
    pub orientation: String,
    pub slice_thickness: Option<f64>,
    pub kernel: Option<String>,
    /// Why this series cannot be read as a volume, if it cannot.
    pub unusable: Option<String>,
    pub chosen: bool,
}

/// A file that was not used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// The result of reading a study: the chosen series as a volume, and what else was there.
#[derive(Debug, Clone)]
pub struct StudyRead {
    pub volume: Volume,
    /// Which rule picked the series (also in `volume.provenance.notes`).
    pub chosen_rule: String,
    /// Every series found, the chosen one marked.
    pub series: Vec<SeriesSummary>,
    pub skipped: Vec<SkippedFile>,
}

// ---------------------------------------------------------------------------------------------
// Attribute access

fn dict_vr(tag: Tag) -> Option<VR> {
    StandardDataDictionary
        .by_tag(tag)
        .and_then(|e| match e.vr() {
            VirtualVr::Exact(vr) => Some(vr),
            VirtualVr::Xs => Some(VR::US),
            _ => None,
        })
}

/// Numbers of an attribute, or `Ok(None)` when absent/empty. Values stored with VR UN (common
/// after anonymisers or private re-encoding) are re-read by the dictionary's VR: reading the
/// raw bytes of a DS "-1024" as numbers would give ASCII codes and absurd HU.
fn nums(obj: &InMemDicomObject, tag: Tag) -> Result<Option<Vec<f64>>, String> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    if e.value().primitive().is_some_and(|p| p.multiplicity() == 0) {
        return Ok(None);
    }
    if e.vr() == VR::UN {
        let bytes = e.value().to_bytes().map_err(|e| e.to_string())?;
        return un_numbers(tag, &bytes).map(Some);
    }
    match e.value() {
        Value::Primitive(PrimitiveValue::Str(s)) => parse_ds(s).map(Some),
        Value::Primitive(PrimitiveValue::Strs(s)) => {
            let mut out = Vec::new();
            for x in s.iter() {
                out.extend(parse_ds(x)?);
            }
            Ok(Some(out))
        }
        v => v
            .to_multi_float64()
            .map(Some)
            .map_err(|e| format!("not numeric: {e}")),
    }
}

fn parse_ds(s: &str) -> Result<Vec<f64>, String> {
    s.split('\\')
        .map(|x| x.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{x:?} is not a number"))
        })
        .collect()
}

fn un_numbers(tag: Tag, b: &[u8]) -> Result<Vec<f64>, String> {
    match dict_vr(tag) {
        Some(VR::DS) | Some(VR::IS) => {
            let s = std::str::from_utf8(b).map_err(|_| "VR UN value is not text".to_string())?;
            parse_ds(s)
        }
        Some(VR::US) => Ok(b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
            .collect()),
        Some(VR::SS) => Ok(b
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
            .collect()),
        Some(VR::UL) => Ok(b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()),
        Some(VR::FL) => Ok(b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()),
        Some(VR::FD) => Ok(b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()),
        other => Err(format!("VR UN value with dictionary VR {other:?}")),
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = if e.vr() == VR::UN {
        let b = e.value().to_bytes().ok()?;
        String::from_utf8_lossy(&b).into_owned()
    } else {
        e.value().to_str().ok()?.into_owned()
    };
    let s = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn items(obj: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag)?.value().items()
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    items(obj, tag)?.first()
}

// ---------------------------------------------------------------------------------------------
// Opening files

fn io_err(path: &Path, source: std::io::Error) -> ImagingError {
    ImagingError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

fn looks_truncated(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("end of file")
        || m.contains("eof")
        || m.contains("fill whole buffer")
        || m.contains("unexpected end")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

/// Fail fast when a top-level element declares more bytes than the file has left.
///
/// Hand-written on purpose: dicom-rs allocates and zero-fills an element's declared length
/// before reading it, so one corrupt length field (up to 4 GB) costs seconds and gigabytes
/// before the truncation error comes. This walk reads only element headers: the file meta
/// group (always explicit VR little endian), then the data set in the transfer syntax the meta
/// names. It stops, leaving the verdict to dicom-rs, at anything it cannot judge cheaply
/// (undefined lengths, deflated data sets, unknown VRs).
fn check_lengths(path: &Path, b: &[u8], magic_at: usize) -> Result<(), ImagingError> {
    const LONG_VRS: [&[u8; 2]; 13] = [
        b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"UC", b"UR", b"SV", b"UV",
    ];
    let len = b.len();
    let mut pos = magic_at + 4;
    let mut ts: Option<String> = None;
    let mut in_meta = true;
    let (mut explicit, mut big) = (true, false);
    while pos + 8 <= len {
        let rd16 = |o: usize| {
            let a = [b[o], b[o + 1]];
            if big {
                u16::from_be_bytes(a)
            } else {
                u16::from_le_bytes(a)
            }
        };
        let rd32 = |o: usize| {
            let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
            if big {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        let group = rd16(pos);
        if in_meta && group != 0x0002 {
            // Leaving the meta group: switch to the data set's encoding.
            in_meta = false;
            match ts.as_deref() {
                Some("1.2.840.10008.1.2") => explicit = false,
                Some("1.2.840.10008.1.2.2") => big = true,
                Some("1.2.840.10008.1.2.1.99") | None => return Ok(()),
                Some(_) => {}
            }
            continue;
        }
        let elem = rd16(pos + 2);
        let (hdr, length) = if explicit {
            let vr = [b[pos + 4], b[pos + 5]];
            if !vr.iter().all(|c| c.is_ascii_uppercase()) {
                return Ok(());
            }
            if LONG_VRS.iter().any(|v| **v == vr) {
                if pos + 12 > len {
                    break;
                }
                (12, rd32(pos + 8))
            } else {
                (8, rd16(pos + 6) as u32)
            }
        } else {
            (8, rd32(pos + 4))
        };
        if length == u32::MAX {
            return Ok(());
        }
        let end = pos as u64 + hdr as u64 + length as u64;
        if end > len as u64 {
            return Err(ImagingError::Truncated {
                path: path.to_path_buf(),
                reason: format!(
                    "element ({group:04X},{elem:04X}) at byte {pos} declares {length} bytes, the file has {} left",
                    len - (pos + hdr).min(len)
                ),
            });
        }
        if in_meta && elem == 0x0010 {
            let v = &b[pos + hdr..end as usize];
            ts = Some(
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        }
        pos = end as usize;
    }
    Ok(())
}

/// Open a DICOM file: standard Part-10 first (with or without the 128-byte preamble), then as
/// a bare data set (implicit, then explicit VR little endian) for files without file meta.
pub(crate) fn open_dicom(path: &Path) -> Result<Obj, ImagingError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let head = &bytes[..bytes.len().min(132)];
    let n = head.len();
    let magic_at = if n >= 132 && &head[128..132] == b"DICM" {
        Some(128)
    } else if n >= 4 && &head[0..4] == b"DICM" {
        Some(0)
    } else {
        None
    };
    if let Some(off) = magic_at {
        check_lengths(path, &bytes, off)?;
        return OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(&bytes[off..])
            .map_err(|e| {
                let msg = error_chain(&e);
                if looks_truncated(&msg) {
                    ImagingError::Truncated {
                        path: path.to_path_buf(),
                        reason: msg,
                    }
                } else {
                    ImagingError::NotDicom {
                        path: path.to_path_buf(),
                        reason: msg,
                    }
                }
            });
    }
    // No "DICM": maybe a bare data set. Accept it only if it starts with a plausible group-0008
    // element, so that random files are skipped quickly instead of being misparsed.
    if n < 8 || !(head[0] == 0x08 && head[1] == 0x00) {
        return Err(ImagingError::NotDicom {
            path: path.to_path_buf(),
            reason: "no DICM magic and no data set at the start of the file".into(),
        });
    }
    let explicit = head[4].is_ascii_uppercase() && head[5].is_ascii_uppercase();
    let (ts, uid) = if explicit {
        (
            dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            "1.2.840.10008.1.2.1",
        )
    } else {
        (
            dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            "1.2.840.10008.1.2",
        )
    };
    let ds = InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts).map_err(|e| {
        let msg = error_chain(&e);
        if looks_truncated(&msg) {
            ImagingError::Truncated {
                path: path.to_path_buf(),
                reason: format!("bare data set without file meta: {msg}"),
            }
        } else {
            ImagingError::NotDicom {
                path: path.to_path_buf(),
                reason: format!("no file meta, and not a bare data set: {msg}"),
            }
        }
    })?;
    let mut meta = dicom_object::meta::FileMetaTableBuilder::new().transfer_syntax(uid);
    if ds.get(tags::SOP_CLASS_UID).is_none() {
        meta = meta.media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7");
    }
    if ds.get(tags::SOP_INSTANCE_UID).is_none() {
        meta = meta.media_storage_sop_instance_uid("2.25.0");
    }
    ds.with_meta(meta).map_err(|e| ImagingError::NotDicom {
        path: path.to_path_buf(),
        reason: format!("bare data set: {e}"),
    })
}

// ---------------------------------------------------------------------------------------------
// Per-file header facts

/// Pixel-module facts that decide how stored values become numbers.
#[derive(Debug, Clone)]
struct PixelInfo {
    rows: usize,
    cols: usize,
    frames: usize,
    samples: usize,
    bits_allocated: u32,
    bits_stored: u32,
    high_bit: u32,
    signed: bool,
    photometric: String,
    padding: Option<i64>,
    /// PixelPaddingRangeLimit: padding is the range between it and `padding`.
    padding_limit: Option<i64>,
}

/// Per frame: (ImagePositionPatient, ImageOrientationPatient).
type FrameGeom = (Option<[f64; 3]>, Option<[f64; 6]>);

/// Everything we need from one file before decoding its pixels.
struct Header {
    path: PathBuf,
    obj: Obj,
    series_uid: String,
    modality: String,
    description: String,
    instance_number: Option<i64>,
    pix: PixelInfo,
    /// Per frame: (ImagePositionPatient, ImageOrientationPatient).
    frame_geom: Vec<FrameGeom>,
    /// (row spacing, column spacing) = PixelSpacing.
    pixel_spacing: Option<[f64; 2]>,
    slice_thickness: Option<f64>,
    kernel: Option<String>,
    gantry_tilt: Option<f64>,
    ts_uid: String,
}

fn bad_attr(path: &Path, attribute: &str, reason: impl Into<String>) -> ImagingError {
    ImagingError::BadAttribute {
        path: path.to_path_buf(),
        attribute: attribute.into(),
        reason: reason.into(),
    }
}

fn one_num(
    path: &Path,
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
) -> Result<Option<f64>, ImagingError> {
    let v = nums(obj, tag).map_err(|r| bad_attr(path, name, r))?;
    Ok(v.and_then(|v| v.first().copied()))
}

fn array<const N: usize>(
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

fn read_header(path: &Path, obj: Obj) -> Result<Header, ImagingError> {
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
    fn measures(fg: Option<&InMemDicomObject>) -> Option<&InMemDicomObject> {
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
        obj,
    })
}

/// Why an image cannot give quantitative values, if it cannot.
fn unusable_reason(h: &Header) -> Option<String> {
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

// ---------------------------------------------------------------------------------------------
// Pixel decoding

const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
const JPEG_LS_NEAR: &str = "1.2.840.10008.1.2.4.81";

fn decode_err(path: &Path, reason: impl Into<String>) -> ImagingError {
    ImagingError::Decode {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn panic_msg(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "decoder panicked".into())
}

/// Stored samples of all frames, little endian, `bits_allocated` per sample.
enum Stored<'a> {
    Bytes(Cow<'a, [u8]>),
    Words(&'a [u16]),
}

fn stored_samples<'a>(h: &'a Header) -> Result<Stored<'a>, ImagingError> {
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
struct ValueMap {
    slope: f64,
    intercept: f64,
    /// Modality LUT: (first mapped stored value, table).
    lut: Option<(i64, Vec<f64>)>,
    /// MONOCHROME1 without a rescale: invert within the stored range.
    invert: bool,
}

fn modality_lut(
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

fn value_maps(h: &Header, notes: &mut Vec<String>) -> Result<Vec<ValueMap>, ImagingError> {
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
fn rsna_applies(p: &PixelInfo, m: &ValueMap) -> bool {
    p.bits_stored == 12 && !p.signed && m.intercept > -100.0 && m.lut.is_none()
}

/// Hot path for 16-bit native samples with a plain rescale (every uncompressed CT slice):
/// straight loops over slices with the per-voxel branches hoisted out, so LLVM vectorises them.
/// The general [`convert_frame`] ran at ~3 ns/voxel and was 75% of a 512×512 slice's time.
/// Integer slope/intercept small enough for exact f32 arithmetic use f32, otherwise f64 (the
/// same rounding as pydicom's float64 rescale then a float32 cast).
fn convert_u16_fast(src: &[u16], p: &PixelInfo, m: &ValueMap, out: &mut [f32]) {
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
fn convert_frame<F: Fn(usize) -> u32>(
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

// ---------------------------------------------------------------------------------------------
// Series assembly

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn orientation_name(iop: Option<[f64; 6]>) -> &'static str {
    let Some(iop) = iop else { return "unknown" };
    let n = cross([iop[0], iop[1], iop[2]], [iop[3], iop[4], iop[5]]);
    let l = norm(n);
    if l < 1e-6 {
        return "unknown";
    }
    let a = [n[0].abs() / l, n[1].abs() / l, n[2].abs() / l];
    if a[2] > 0.8 {
        "axial"
    } else if a[1] > 0.8 {
        "coronal"
    } else if a[0] > 0.8 {
        "sagittal"
    } else {
        "oblique"
    }
}

struct Series {
    uid: String,
    headers: Vec<Header>,
}

impl Series {
    fn frames(&self) -> usize {
        self.headers.iter().map(|h| h.pix.frames).sum()
    }
    fn first(&self) -> &Header {
        &self.headers[0]
    }
    fn thickness(&self) -> Option<f64> {
        self.first()
            .slice_thickness
            .filter(|t| *t > 0.0 && *t < 20.0)
    }
    fn is_axial_ct(&self) -> bool {
        let h = self.first();
        h.modality == "CT" && orientation_name(h.frame_geom[0].1) == "axial"
    }
    /// Soft-tissue ("standard") kernels show blood best; sharp bone/lung kernels rank last.
    fn kernel_rank(&self) -> u8 {
        match &self.first().kernel {
            None => 1,
            Some(k) => {
                let k = k.to_ascii_uppercase();
                if [
                    "BONE", "LUNG", "SHARP", "EDGE", "DETAIL", "H70", "H60", "B70", "B60",
                ]
                .iter()
                .any(|s| k.contains(s))
                {
                    2
                } else {
                    0
                }
            }
        }
    }
    fn unusable(&self) -> Option<String> {
        self.headers.iter().find_map(unusable_reason)
    }
    fn summary(&self, chosen: bool) -> SeriesSummary {
        let h = self.first();
        SeriesSummary {
            uid: self.uid.clone(),
            modality: h.modality.clone(),
            description: h.description.clone(),
            files: self.headers.len(),
            frames: self.frames(),
            rows: h.pix.rows,
            cols: h.pix.cols,
            orientation: orientation_name(h.frame_geom[0].1).into(),
            slice_thickness: h.slice_thickness,
            kernel: h.kernel.clone(),
            unusable: self.unusable(),
            chosen,
        }
    }
}

/// Pick a series: axial CT first, then most slices, then thinnest plausible slice thickness,
/// then a soft-tissue kernel; ties go to the smallest UID (deterministic). Returns the index
/// and the rule that decided.
fn choose(series: &[Series]) -> Option<(usize, String)> {
    let usable: Vec<usize> = (0..series.len())
        .filter(|&i| series[i].unusable().is_none())
        .collect();
    if usable.is_empty() {
        return None;
    }
    if usable.len() == 1 {
        let why = if series.len() == 1 {
            "only series"
        } else {
            "only usable series (others unusable)"
        };
        return Some((usable[0], why.into()));
    }
    let key = |i: usize| {
        let s = &series[i];
        (
            !s.is_axial_ct(),
            std::cmp::Reverse(s.frames()),
            (s.thickness().unwrap_or(f64::INFINITY) * 1000.0) as i64,
            s.kernel_rank(),
        )
    };
    let mut order = usable.clone();
    order.sort_by(|&a, &b| key(a).cmp(&key(b)).then(series[a].uid.cmp(&series[b].uid)));
    let (a, b) = (key(order[0]), key(order[1]));
    let rule = if a.0 != b.0 {
        "axial CT first"
    } else if a.1 != b.1 {
        "most slices"
    } else if a.2 != b.2 {
        "thinnest slice thickness"
    } else if a.3 != b.3 {
        "soft-tissue kernel over sharp kernel"
    } else {
        "tie: smallest SeriesInstanceUID"
    };
    Some((order[0], rule.into()))
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImagingError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImagingError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            walk(&e, out)?;
        } else {
            out.push(e);
        }
    }
    Ok(())
}

fn display_root(paths: &[PathBuf]) -> PathBuf {
    match paths {
        [one] => one.clone(),
        [] => PathBuf::from("(no input)"),
        many => PathBuf::from(format!("{} (+{} more)", many[0].display(), many.len() - 1)),
    }
}

/// Read a study from files and/or folders (searched recursively): group by series, choose one
/// (see [`ReadOptions`]), decode it to a [`Volume`].
///
/// Non-DICOM files and non-image objects are skipped (listed in [`StudyRead::skipped`] and in
/// the volume's warnings) when more than one file is read; a DICOM file that is truncated or
/// broken is an error, because a missing slice would silently change the volume.
pub fn read_series(paths: &[PathBuf], opts: &ReadOptions) -> Result<StudyRead, ImagingError> {
    let root = display_root(paths);
    let files = collect_files(paths)?;
    let single = files.len() == 1;
    let mut skipped = Vec::new();
    let mut groups: BTreeMap<String, Vec<Header>> = BTreeMap::new();
    let mut first_err: Option<ImagingError> = None;
    for f in &files {
        let obj = match open_dicom(f) {
            Ok(o) => o,
            Err(e @ ImagingError::NotDicom { .. }) if !single => {
                tracing::warn!("skipping {}: {e}", f.display());
                skipped.push(SkippedFile {
                    path: f.display().to_string(),
                    reason: e.to_string(),
                });
                first_err.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        match read_header(f, obj) {
            Ok(h) => groups.entry(h.series_uid.clone()).or_default().push(h),
            Err(e @ ImagingError::NotImage { .. }) if !single => {
                tracing::warn!("skipping {}: {e}", f.display());
                skipped.push(SkippedFile {
                    path: f.display().to_string(),
                    reason: e.to_string(),
                });
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if groups.is_empty() {
        return Err(match first_err {
            Some(e) if skipped.len() == 1 => e,
            _ => ImagingError::NoSeries {
                path: root,
                reason: format!(
                    "{} file(s) looked at, {} skipped",
                    files.len(),
                    skipped.len()
                ),
            },
        });
    }
    let series: Vec<Series> = groups
        .into_iter()
        .map(|(uid, headers)| Series { uid, headers })
        .collect();
    let (idx, rule) = match &opts.series_uid {
        Some(uid) => {
            let i = series.iter().position(|s| &s.uid == uid).ok_or_else(|| {
                ImagingError::SeriesNotFound {
                    path: root.clone(),
                    uid: uid.clone(),
                    available: series
                        .iter()
                        .map(|s| s.uid.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            (i, "series_uid option".to_string())
        }
        None => match choose(&series) {
            Some(c) => c,
            None => {
                let s = &series[0];
                let h = s.first();
                return Err(ImagingError::Unsupported {
                    path: h.path.clone(),
                    reason: s.unusable().unwrap_or_default(),
                });
            }
        },
    };
    if let Some(r) = series[idx].unusable() {
        let h = series[idx]
            .headers
            .iter()
            .find(|h| unusable_reason(h).is_some())
            .unwrap_or(series[idx].first());
        return Err(ImagingError::Unsupported {
            path: h.path.clone(),
            reason: r,
        });
    }
    let summaries: Vec<SeriesSummary> = series
        .iter()
        .enumerate()
        .map(|(i, s)| s.summary(i == idx))
        .collect();
    let chosen = series.into_iter().nth(idx).expect("index from the list");
    let mut volume = build_volume(chosen, opts, &root)?;
    volume
        .provenance
        .notes
        .insert(0, format!("series chosen by rule: {rule}"));
    if summaries.len() > 1 {
        volume.provenance.notes.push(format!(
            "{} other series present (see series list)",
            summaries.len() - 1
        ));
    }
    for s in &skipped {
        volume
            .provenance
            .warnings
            .push(format!("skipped {}: {}", s.path, s.reason));
    }
    Ok(StudyRead {
        volume,
        chosen_rule: rule,
        series: summaries,
        skipped,
    })
}

/// One decoded frame with its geometry.
struct Frame {
    ipp: Option<[f64; 3]>,
    iop: Option<[f64; 6]>,
    instance: Option<i64>,
    file_index: usize,
    frame_index: usize,
}

/// A file ready for conversion (see phase A in [`build_volume`]).
struct Prepared<'a> {
    stored: Stored<'a>,
    maps: Vec<ValueMap>,
    rsna: Vec<bool>,
    pix: PixelInfo,
    notes: Vec<String>,
}

fn build_volume(series: Series, opts: &ReadOptions, root: &Path) -> Result<Volume, ImagingError> {
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
                        "pixel data holds {have} samples, {} frame(s) of {}x{} need {}",
                        pix.frames,
                        pix.cols,
                        pix.rows,
                        per_frame * pix.frames
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
    Ok(vol)
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
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
}
