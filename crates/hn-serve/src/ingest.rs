//! From received bytes to admitted instances: one DICOM instance (C-STORE data set, STOW-RS
//! part, zip entry) is parsed by the imaging layer's reader, checked (a CT image with valid
//! UIDs, within the size limits) and stored durably; a zip is unpacked defensively; a NIfTI
//! file is checked by the reader before it is admitted. Every refusal says why, naming the
//! part (never a patient).

use std::io::Read;
use std::path::Path;

use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

use crate::store::{Admission, JobStore, StoreError};

/// CT SOP classes (as the reader decodes them): every model reads CT.
pub const CT_SOP_CLASSES: &[&str] = &[
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
];

/// MR SOP classes, admitted when the model reads MR: single-frame MR Image Storage, and the
/// multi-frame Enhanced and Legacy Converted Enhanced MR classes, whose one file per series the
/// MR reader decodes frame by frame and whose sequence it tells from AcquisitionContrast and
/// the functional groups ([`hn_imaging::mr::classify`]).
pub const MR_SOP_CLASSES: &[&str] = &[
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
];

/// The SOP classes a node admits: CT, and MR when its model reads MR.
pub fn accepted_sop_classes(reads_mr: bool) -> Vec<&'static str> {
    let mut v = CT_SOP_CLASSES.to_vec();
    if reads_mr {
        v.extend_from_slice(MR_SOP_CLASSES);
    }
    v
}

/// Why a part was refused. `status` is the HTTP status; [`dimse_status`](Self::dimse_status)
/// the C-STORE one.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not DICOM, broken, or missing a required attribute.
    #[error("{part}: {reason}")]
    Invalid { part: String, reason: String },
    /// A DICOM object this node does not score (not a CT image, nor an MR image for a model
    /// that reads MR).
    #[error(
        "{part}: SOP class {sop_class} is not an image this model reads (CT; MR only for a model trained on MR)"
    )]
    Unsupported { part: String, sop_class: String },
    /// Over a size or count limit.
    #[error("{part}: {reason}")]
    TooLarge { part: String, reason: String },
    /// Too many studies waiting.
    #[error("the scoring queue is full; retry later")]
    QueueFull,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::Invalid { .. } => 400,
            IngestError::Unsupported { .. } => 415,
            IngestError::TooLarge { .. } => 413,
            IngestError::QueueFull => 503,
            // 507 Insufficient Storage (RFC 4918): the store's disk is full, retry later.
            IngestError::Store(e) if e.is_disk_full() => 507,
            IngestError::Store(_) => 500,
        }
    }

    /// The C-STORE response status (PS3.4 Annex B.2.3).
    pub fn dimse_status(&self) -> u16 {
        match self {
            IngestError::Invalid { .. } => 0xC000, // error: cannot understand
            IngestError::Unsupported { .. } => 0x0122, // refused: SOP class not supported
            IngestError::TooLarge { .. } | IngestError::QueueFull | IngestError::Store(_) => {
                0xA700 // refused: out of resources
            }
        }
    }
}

/// One instance ready to be admitted.
pub struct Instance {
    pub study_instance_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// Part-10 bytes (as received when they were Part-10; else with a file meta group added).
    pub part10: Vec<u8>,
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let s = obj.element(tag).ok()?.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn valid_uid(u: &str) -> bool {
    hn_imaging::dicom::identity::check_value(dicom_core::VR::UI, u).is_ok()
}

/// Check a parsed object and take its UIDs.
fn check_object(
    part: &str,
    obj: &InMemDicomObject,
    accepted: &[&str],
) -> Result<(String, String, String), IngestError> {
    let invalid = |reason: &str| IngestError::Invalid {
        part: part.to_string(),
        reason: reason.to_string(),
    };
    let class = text(obj, tags::SOP_CLASS_UID).ok_or_else(|| invalid("no SOPClassUID"))?;
    if !accepted.contains(&class.as_str()) {
        return Err(IngestError::Unsupported {
            part: part.to_string(),
            sop_class: class,
        });
    }
    let sop = text(obj, tags::SOP_INSTANCE_UID).ok_or_else(|| invalid("no SOPInstanceUID"))?;
    let study =
        text(obj, tags::STUDY_INSTANCE_UID).ok_or_else(|| invalid("no StudyInstanceUID"))?;
    if !valid_uid(&sop) {
        return Err(invalid("SOPInstanceUID is not a valid UID"));
    }
    if !valid_uid(&study) {
        return Err(invalid("StudyInstanceUID is not a valid UID"));
    }
    if obj.element(tags::PIXEL_DATA).is_err() {
        return Err(invalid("no Pixel Data"));
    }
    Ok((study, class, sop))
}

/// Parse one instance from Part-10 (or bare data set) bytes; `accepted`: the SOP classes the
/// node admits ([`accepted_sop_classes`]).
pub fn parse_part10(
    part: &str,
    bytes: Vec<u8>,
    max_bytes: usize,
    accepted: &[&str],
) -> Result<Instance, IngestError> {
    if bytes.len() > max_bytes {
        return Err(IngestError::TooLarge {
            part: part.to_string(),
            reason: format!("{} bytes, the limit is {max_bytes}", bytes.len()),
        });
    }
    let obj = hn_imaging::dicom::open_bytes(Path::new(part), &bytes).map_err(|e| {
        IngestError::Invalid {
            part: part.to_string(),
            reason: format!("not a readable DICOM instance ({})", e.kind()),
        }
    })?;
    let (study, class, sop) = check_object(part, &obj, accepted)?;
    let part10 = if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
        bytes
    } else {
        // A bare data set (or no preamble): store it as a proper Part-10 file.
        let mut out = Vec::new();
        obj.write_all(&mut out).map_err(|e| IngestError::Invalid {
            part: part.to_string(),
            reason: format!("cannot re-encode: {e}"),
        })?;
        out
    };
    Ok(Instance {
        study_instance_uid: study,
        sop_class_uid: class,
        sop_instance_uid: sop,
        part10,
    })
}

/// Parse a C-STORE data set received in transfer syntax `ts_uid`.
pub fn parse_dataset(
    part: &str,
    dataset: &[u8],
    ts_uid: &str,
    max_bytes: usize,
    accepted: &[&str],
) -> Result<Instance, IngestError> {
    use dicom_encoding::TransferSyntaxIndex;
    let invalid = |reason: String| IngestError::Invalid {
        part: part.to_string(),
        reason,
    };
    if dataset.len() > max_bytes {
        return Err(IngestError::TooLarge {
            part: part.to_string(),
            reason: format!("{} bytes, the limit is {max_bytes}", dataset.len()),
        });
    }
    let ts_uid = ts_uid.trim_end_matches('\0');
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| invalid(format!("transfer syntax {ts_uid} is unknown")))?;
    hn_imaging::dicom::check_dataset_lengths(Path::new(part), dataset, ts_uid)
        .map_err(|e| invalid(format!("cannot parse the data set: {e}")))?;
    let obj = InMemDicomObject::read_dataset_with_ts(dataset, ts)
        .map_err(|e| invalid(format!("cannot parse the data set: {e}")))?;
    let (study, class, sop) = check_object(part, &obj, accepted)?;
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class.clone())
        .media_storage_sop_instance_uid(sop.clone())
        .transfer_syntax(ts_uid)
        .implementation_class_uid(hn_imaging::dicom_write::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(hn_imaging::dicom_write::IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| invalid(format!("file meta: {e}")))?;
    // Preamble, meta group, then the data set bytes exactly as received (no re-encoding of
    // compressed pixel data).
    let mut part10 = vec![0u8; 128];
    part10.extend_from_slice(b"DICM");
    meta.write(&mut part10)
        .map_err(|e| invalid(format!("file meta: {e}")))?;
    part10.extend_from_slice(dataset);
    Ok(Instance {
        study_instance_uid: study,
        sop_class_uid: class,
        sop_instance_uid: sop,
        part10,
    })
}

/// Admit a parsed instance into the store.
pub fn admit(
    store: &JobStore,
    cfg: &crate::ServeConfig,
    inst: &Instance,
    part: &str,
) -> Result<(), IngestError> {
    match store.add_instance(
        &inst.study_instance_uid,
        &inst.sop_instance_uid,
        &inst.part10,
        cfg.queue_capacity,
        cfg.limits.max_instances_per_study,
        cfg.limits.max_study_bytes,
    )? {
        Admission::Stored => Ok(()),
        Admission::QueueFull => Err(IngestError::QueueFull),
        Admission::StudyTooLarge => Err(IngestError::TooLarge {
            part: part.to_string(),
            reason: format!(
                "the study would exceed {} instances or {} bytes",
                cfg.limits.max_instances_per_study, cfg.limits.max_study_bytes
            ),
        }),
    }
}

/// The DICOM instances of a zip archive, defensively: at most `max_entries` entries; entry
/// names with `..`, absolute paths or drive letters are refused (we never write by them, but
/// such an archive is not what a client meant to send); each entry read through a limit
/// whatever its header claims (zip bombs); non-DICOM entries and non-CT objects (DICOMDIR,
/// reports, scouts) skipped and counted.
pub fn unzip(
    bytes: &[u8],
    limits: &crate::config::Limits,
    accepted: &[&str],
) -> Result<(Vec<Instance>, usize), IngestError> {
    let invalid = |part: &str, reason: String| IngestError::Invalid {
        part: part.to_string(),
        reason,
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| invalid("zip", format!("not a readable zip archive: {e}")))?;
    if zip.len() > limits.max_zip_entries {
        return Err(IngestError::TooLarge {
            part: "zip".into(),
            reason: format!(
                "{} entries, the limit is {}",
                zip.len(),
                limits.max_zip_entries
            ),
        });
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let part = format!("zip entry {}", i + 1);
        let mut entry = zip
            .by_index(i)
            .map_err(|e| invalid(&part, format!("unreadable: {e}")))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .map_err(|e| invalid(&part, format!("unreadable entry name: {e}")))?;
        let unsafe_name = name.starts_with('/')
            || name.starts_with('\\')
            || name.split(['/', '\\']).any(|c| c == "..")
            || name.as_bytes().get(1) == Some(&b':');
        if unsafe_name {
            return Err(invalid(
                &part,
                "unsafe path in the archive (absolute or '..')".into(),
            ));
        }
        if entry.is_dir() {
            continue;
        }
        let cap = limits.max_instance_bytes as u64;
        let mut data = Vec::with_capacity(entry.size().min(cap) as usize);
        (&mut entry)
            .take(cap + 1)
            .read_to_end(&mut data)
            .map_err(|e| invalid(&part, format!("cannot decompress: {e}")))?;
        if data.len() as u64 > cap {
            return Err(IngestError::TooLarge {
                part,
                reason: format!("decompresses to more than {cap} bytes"),
            });
        }
        total += data.len() as u64;
        if total > limits.max_study_bytes {
            return Err(IngestError::TooLarge {
                part: "zip".into(),
                reason: format!("decompresses to more than {} bytes", limits.max_study_bytes),
            });
        }
        match parse_part10(&part, data, limits.max_instance_bytes, accepted) {
            Ok(inst) => out.push(inst),
            Err(IngestError::Invalid { .. } | IngestError::Unsupported { .. }) => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((out, skipped))
}

/// What an uploaded file is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Zip,
    /// NIfTI, gzipped or not.
    Nifti {
        gz: bool,
    },
    Dicom,
}

pub fn sniff(bytes: &[u8]) -> Option<Upload> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Some(Upload::Zip)
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(Upload::Nifti { gz: true })
    } else if bytes.len() >= 348
        && (i32::from_le_bytes(bytes[..4].try_into().unwrap()) == 348
            || i32::from_be_bytes(bytes[..4].try_into().unwrap()) == 348)
    {
        Some(Upload::Nifti { gz: false })
    } else if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
        Some(Upload::Dicom)
    } else {
        None
    }
}

/// Check NIfTI bytes with the reader (an HU head CT is checked again at scoring).
pub fn check_nifti(bytes: &[u8]) -> Result<(), IngestError> {
    hn_imaging::nifti::read_volume_bytes(
        Path::new("upload"),
        bytes.to_vec(),
        &hn_imaging::NiftiReadOptions::default(),
    )
    .map(|_| ())
    .map_err(|e| IngestError::Invalid {
        part: "NIfTI file".into(),
        reason: format!("not a readable NIfTI volume: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_with_traversal_or_bomb_is_refused() {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file("../../etc/evil.dcm", o).unwrap();
            w.write_all(b"x").unwrap();
            w.finish().unwrap();
        }
        let limits = crate::config::Limits::default();
        let e = unzip(buf.get_ref(), &limits, CT_SOP_CLASSES).err().unwrap();
        assert_eq!(e.http_status(), 400);
        assert!(e.to_string().contains("unsafe path"), "{e}");

        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file("zeros.dcm", o).unwrap();
            w.write_all(&vec![0u8; 4 << 20]).unwrap();
            w.finish().unwrap();
        }
        assert!(buf.get_ref().len() < 64 << 10, "deflate squeezes zeros");
        let small = crate::config::Limits {
            max_instance_bytes: 1 << 20,
            ..Default::default()
        };
        let e = unzip(buf.get_ref(), &small, CT_SOP_CLASSES).err().unwrap();
        assert_eq!(e.http_status(), 413, "{e}");
        assert!(unzip(b"PK\x03\x04garbage", &limits, CT_SOP_CLASSES).is_err());
    }

    #[test]
    fn mr_images_are_admitted_only_for_a_model_that_reads_mr() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/real-imaging/dicom/MR_small.dcm");
        let bytes = std::fs::read(&path).unwrap();
        let e = parse_part10("mr", bytes.clone(), 1 << 24, &accepted_sop_classes(false))
            .err()
            .unwrap();
        assert_eq!(e.http_status(), 415);
        assert_eq!(e.dimse_status(), 0x0122);
        assert!(
            e.to_string().contains("MR only for a model trained on MR"),
            "{e}"
        );
        let ok = parse_part10("mr", bytes, 1 << 24, &accepted_sop_classes(true)).unwrap();
        assert_eq!(ok.sop_class_uid, uids::MR_IMAGE_STORAGE);
        // A real multi-frame Enhanced MR file (Philips, 10 frames): the same rule.
        let bytes = std::fs::read(path.with_file_name("emri_small.dcm")).unwrap();
        let e = parse_part10("emr", bytes.clone(), 1 << 24, &accepted_sop_classes(false))
            .err()
            .unwrap();
        assert_eq!(e.dimse_status(), 0x0122, "{e}");
        let ok = parse_part10("emr", bytes, 1 << 24, &accepted_sop_classes(true)).unwrap();
        assert_eq!(ok.sop_class_uid, uids::ENHANCED_MR_IMAGE_STORAGE);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"PK\x03\x04...."), Some(Upload::Zip));
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Some(Upload::Nifti { gz: true }));
        let mut dcm = vec![0u8; 200];
        dcm[128..132].copy_from_slice(b"DICM");
        assert_eq!(sniff(&dcm), Some(Upload::Dicom));
        assert_eq!(sniff(b"hello"), None);
    }
}
