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

/// Fail fast when a top-level element declares more bytes than the file has left.
///
/// Hand-written on purpose: dicom-rs allocates and zero-fills an element's declared length
/// before reading it, so one corrupt length field (up to 4 GB) costs seconds and gigabytes
/// before the truncation error comes. This walk reads only element headers: the file meta
/// group (always explicit VR little endian), then the data set in the transfer syntax the meta
/// names. It stops, leaving the verdict to dicom-rs, at anything it cannot judge cheaply
/// (undefined lengths, deflated data sets, unknown VRs).
pub(super) fn check_lengths(path: &Path, b: &[u8], magic_at: usize) -> Result<(), ImagingError> {
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
