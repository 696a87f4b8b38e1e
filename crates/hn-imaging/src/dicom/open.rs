//! Opening Part-10 files and bare data sets, from disk or from bytes already in memory, with
//! truncation caught before the parser sees it.

#[allow(unused_imports)]
use super::*;

pub(super) fn io_err(path: &Path, source: std::io::Error) -> ImagingError {
    ImagingError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

pub(super) fn looks_truncated(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("end of file")
        || m.contains("eof")
        || m.contains("fill whole buffer")
        || m.contains("unexpected end")
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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

/// Fail fast when any element declares more bytes than the file has left.
///
/// Hand-written on purpose: dicom-rs allocates and zero-fills an element's declared length
/// before reading it, so one corrupt length field (up to 4 GB) costs seconds and gigabytes
/// before the truncation error comes — from a network peer, a denial of service (found by the
/// `dicom_instance` fuzz target, docs/FUZZING.md). This walk reads only element headers, the
/// way dicom-rs's decoders do (an unknown explicit VR is UN with a 4-byte length): the file
/// meta group (always explicit VR little endian), then the data set in the transfer syntax the
/// meta names, into sequences and items, skipping only the fragments of encapsulated pixel
/// data; a deflated data set is inflated (at most [`MAX_INFLATED_BYTES`]) and walked.
pub(super) fn check_lengths(path: &Path, b: &[u8], magic_at: usize) -> Result<(), ImagingError> {
    walk_lengths(path, b, magic_at + 4, true, true, false)
}

/// [`check_lengths`] of a bare data set (no file meta) in the given encoding.
pub(super) fn check_bare_lengths(
    path: &Path,
    b: &[u8],
    explicit: bool,
) -> Result<(), ImagingError> {
    walk_lengths(path, b, 0, false, explicit, false)
}

/// Deflated Explicit VR Little Endian.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Most bytes a deflated data set may inflate to: a deflate bomb is refused here, before
/// dicom-rs inflates it without a bound.
pub const MAX_INFLATED_BYTES: u64 = 512 << 20;

/// Inflate (bounded) and walk a deflated data set.
fn check_deflated(path: &Path, deflated: &[u8]) -> Result<(), ImagingError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| ImagingError::Truncated {
            path: path.to_path_buf(),
            reason: format!("deflated data set does not inflate: {e}"),
        })?;
    if out.len() as u64 > MAX_INFLATED_BYTES {
        return Err(ImagingError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("deflated data set inflates to more than {MAX_INFLATED_BYTES} bytes"),
        });
    }
    walk_lengths(path, &out, 0, false, true, false)
}

/// [`check_lengths`] of a bare data set in transfer syntax `ts_uid` (a C-STORE data set, a
/// DIMSE command set): every declared length fits the bytes given, so parsing them cannot
/// allocate more than their size (a deflated one: [`MAX_INFLATED_BYTES`]).
pub fn check_dataset_lengths(name: &Path, b: &[u8], ts_uid: &str) -> Result<(), ImagingError> {
    match ts_uid.trim_end_matches(['\0', ' ']) {
        "1.2.840.10008.1.2" => walk_lengths(name, b, 0, false, false, false),
        "1.2.840.10008.1.2.2" => walk_lengths(name, b, 0, false, true, true),
        DEFLATED => check_deflated(name, b),
        _ => walk_lengths(name, b, 0, false, true, false),
    }
}

fn walk_lengths(
    path: &Path,
    b: &[u8],
    start: usize,
    mut in_meta: bool,
    mut explicit: bool,
    mut big: bool,
) -> Result<(), ImagingError> {
    use dicom_core::VR;
    // VRs with a 2-byte length in explicit VR (PS3.5 7.1.2), as dicom-rs decodes them.
    const SHORT_VRS: [VR; 21] = [
        VR::AE,
        VR::AS,
        VR::AT,
        VR::CS,
        VR::DA,
        VR::DS,
        VR::DT,
        VR::FL,
        VR::FD,
        VR::IS,
        VR::LO,
        VR::LT,
        VR::PN,
        VR::SH,
        VR::SL,
        VR::SS,
        VR::ST,
        VR::TM,
        VR::UI,
        VR::UL,
        VR::US,
    ];
    let len = b.len();
    let mut pos = start;
    let mut ts: Option<String> = None;
    let mut meta_end: Option<usize> = None;
    // Open undefined-length elements: true when their items are pixel-data fragments.
    let mut open: Vec<bool> = Vec::new();
    let truncated = |pos: usize, group: u16, elem: u16, length: u32, hdr: usize| {
        ImagingError::Truncated {
            path: path.to_path_buf(),
            reason: format!(
                "element ({group:04X},{elem:04X}) at byte {pos} declares {length} bytes, the file has {} left",
                len - (pos + hdr).min(len)
            ),
        }
    };
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
        // The meta group ends with the first element reaching its group length (dicom-rs reads
        // whole elements until that many bytes are read, whatever their tags), else at the
        // first element of another group.
        let meta_over = match meta_end {
            Some(end) => pos >= end,
            None => group != 0x0002,
        };
        if in_meta && meta_over {
            // Leaving the meta group: switch to the data set's encoding.
            in_meta = false;
            match ts.as_deref() {
                Some("1.2.840.10008.1.2") => explicit = false,
                Some("1.2.840.10008.1.2.2") => big = true,
                Some(DEFLATED) => return check_deflated(path, &b[pos..]),
                None => return Ok(()),
                Some(_) => {}
            }
            continue;
        }
        let elem = rd16(pos + 2);
        if group == 0xFFFE {
            // Item, item delimiter, sequence delimiter: tag and a 4-byte length, no VR.
            let length = rd32(pos + 4);
            match elem {
                0xE000 if length == u32::MAX => pos += 8,
                0xE000 => {
                    if pos as u64 + 8 + length as u64 > len as u64 {
                        return Err(truncated(pos, group, elem, length, 8));
                    }
                    // A fragment is raw bytes; an item of a sequence holds elements.
                    pos += if open.last() == Some(&true) {
                        8 + length as usize
                    } else {
                        8
                    };
                }
                0xE0DD => {
                    open.pop();
                    pos += 8;
                }
                _ => pos += 8,
            }
            continue;
        }
        let tag = dicom_core::Tag(group, elem);
        let (hdr, length, vr) = if explicit {
            let vr = VR::from_binary([b[pos + 4], b[pos + 5]]).unwrap_or(VR::UN);
            if SHORT_VRS.contains(&vr) {
                (8, rd16(pos + 6) as u32, vr)
            } else {
                if pos + 12 > len {
                    break;
                }
                (12, rd32(pos + 8), vr)
            }
        } else {
            (
                8,
                rd32(pos + 4),
                super::attributes::dict_vr(tag).unwrap_or(VR::UN),
            )
        };
        if length == u32::MAX {
            // dicom-rs reads every undefined-length element but encapsulated pixel data as a
            // sequence in the same encoding (an undefined-length UN included, whatever its
            // VR said), so the walk descends the same way.
            open.push(tag == dicom_dictionary_std::tags::PIXEL_DATA);
            pos += hdr;
            continue;
        }
        let end = pos as u64 + hdr as u64 + length as u64;
        if end > len as u64 {
            return Err(truncated(pos, group, elem, length, hdr));
        }
        if in_meta && group == 0x0002 && elem == 0x0000 && length == 4 && meta_end.is_none() {
            let v = &b[pos + hdr..end as usize];
            meta_end = Some(end as usize + u32::from_le_bytes([v[0], v[1], v[2], v[3]]) as usize);
        }
        if in_meta && group == 0x0002 && elem == 0x0010 {
            let v = &b[pos + hdr..end as usize];
            ts = Some(
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        }
        // Into a defined-length sequence (its items hold elements); past anything else.
        pos = if vr == VR::SQ {
            pos + hdr
        } else {
            end as usize
        };
    }
    Ok(())
}

/// Open a DICOM file: standard Part-10 first (with or without the 128-byte preamble), then as
/// a bare data set (implicit, then explicit VR little endian) for files without file meta.
pub(crate) fn open_dicom(path: &Path) -> Result<Obj, ImagingError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    open_dicom_bytes(path, &bytes)
}

/// [`open_dicom`] of bytes already in memory (a C-STORE or STOW-RS payload); `path` names
/// them in errors.
pub(super) fn open_dicom_bytes(path: &Path, bytes: &[u8]) -> Result<Obj, ImagingError> {
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
        check_lengths(path, bytes, off)?;
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
    check_bare_lengths(path, bytes, explicit)?;
    let ds = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|e| {
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
