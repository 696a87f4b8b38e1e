//! Write a [`Volume`] of Hounsfield units as a DICOM CT Image Storage series (one file per
//! slice, Explicit VR Little Endian, uncompressed).
//!
//! Why here: the synthetic cohort must produce files that the project's own DICOM reader and
//! third-party tools (dcmtk, pydicom) read exactly like scanner output, so the writer lives in
//! the imaging layer next to the reader and knows nothing about where the volume came from.
//! Pixel values are stored as unsigned 16-bit with RescaleIntercept −1024 / slope 1, so any
//! HU in −1024..=64511 round-trips to the nearest integer.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::Volume;

/// Identity and description of the series to write. UIDs must be valid DICOM UIDs
/// (digits and dots, ≤ 64 characters); [`uid_from_hash`] makes deterministic ones.
#[derive(Debug, Clone)]
pub struct CtSeriesMeta {
    pub patient_id: String,
    pub patient_name: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// SOP instance UID of slice k is `format!("{sop_uid_prefix}.{k+1}")`.
    pub sop_uid_prefix: String,
    pub study_description: String,
    pub series_description: String,
    /// Free text in ImageComments (0020,4000), e.g. a note that the data are synthetic.
    pub image_comments: String,
    /// DICOM DA (YYYYMMDD) and TM (HHMMSS).
    pub study_date: String,
    pub study_time: String,
    pub manufacturer: String,
    pub window_center: f64,
    pub window_width: f64,
    pub series_number: u32,
    /// Slice indices not to write (simulates a missing slice).
    pub skip_slices: Vec<usize>,
}

/// Errors from [`write_ct_series`].
#[derive(Debug, thiserror::Error)]
pub enum DicomWriteError {
    /// The cause is part of the message (not a `source()`), so error chains print it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {msg}", path.display())]
    Encode { path: PathBuf, msg: String },
    #[error("invalid series metadata: {0}")]
    Meta(String),
}

/// A DICOM UID under the 2.25 (UUID-derived) root from a 128-bit hash value.
pub fn uid_from_hash(h: u128) -> String {
    format!("2.25.{}", h.max(1))
}

fn ds(x: f64) -> String {
    // DS is at most 16 characters.
    for prec in (0..=6).rev() {
        let s = format!("{x:.prec$}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{x:.0}")
}

fn valid_uid(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !u.starts_with('.')
        && !u.ends_with('.')
}

/// Write the volume as one CT series in `dir` (`IM0001.dcm`, …). Returns the written paths in
/// slice order.
pub fn write_ct_series(
    dir: &Path,
    vol: &Volume,
    meta: &CtSeriesMeta,
) -> Result<Vec<PathBuf>, DicomWriteError> {
    for (name, u) in [
        ("study_instance_uid", &meta.study_instance_uid),
        ("series_instance_uid", &meta.series_instance_uid),
        ("frame_of_reference_uid", &meta.frame_of_reference_uid),
    ] {
        if !valid_uid(u) {
            return Err(DicomWriteError::Meta(format!(
                "{name} {u:?} is not a valid UID"
            )));
        }
    }
    let last_sop = format!("{}.{}", meta.sop_uid_prefix, vol.dims[2]);
    if !valid_uid(&last_sop) {
        return Err(DicomWriteError::Meta(format!(
            "sop_uid_prefix {:?} does not give valid UIDs",
            meta.sop_uid_prefix
        )));
    }
    if vol.dims[0] > u16::MAX as usize || vol.dims[1] > u16::MAX as usize {
        return Err(DicomWriteError::Meta("matrix larger than 65535".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| DicomWriteError::Io {
        path: dir.to_path_buf(),
        cause: e,
    })?;
    let [nx, ny, nz] = vol.dims;
    let d = vol.direction;
    let row = [d[0][0], d[1][0], d[2][0]];
    let col = [d[0][1], d[1][1], d[2][1]];
    let iop: Vec<String> = row.iter().chain(col.iter()).map(|v| ds(*v)).collect();
    let mut paths = Vec::with_capacity(nz);
    for k in 0..nz {
        if meta.skip_slices.contains(&k) {
            continue;
        }
        let path = dir.join(format!("IM{:04}.dcm", k + 1));
        let ipp = vol.world([0.0, 0.0, k as f64]);
        let sop = format!("{}.{}", meta.sop_uid_prefix, k + 1);
        let mut obj = InMemDicomObject::new_empty();
        let mut put_str = |tag: Tag, vr: VR, v: &str| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        };
        put_str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        put_str(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL");
        put_str(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
        put_str(tags::SOP_INSTANCE_UID, VR::UI, &sop);
        put_str(tags::STUDY_DATE, VR::DA, &meta.study_date);
        put_str(tags::SERIES_DATE, VR::DA, &meta.study_date);
        put_str(tags::CONTENT_DATE, VR::DA, &meta.study_date);
        put_str(tags::STUDY_TIME, VR::TM, &meta.study_time);
        put_str(tags::SERIES_TIME, VR::TM, &meta.study_time);
        put_str(tags::CONTENT_TIME, VR::TM, &meta.study_time);
        put_str(tags::ACCESSION_NUMBER, VR::SH, "");
        put_str(tags::MODALITY, VR::CS, "CT");
        put_str(tags::MANUFACTURER, VR::LO, &meta.manufacturer);
        put_str(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
        put_str(tags::STUDY_DESCRIPTION, VR::LO, &meta.study_description);
        put_str(tags::SERIES_DESCRIPTION, VR::LO, &meta.series_description);
        put_str(tags::PATIENT_NAME, VR::PN, &meta.patient_name);
        put_str(tags::PATIENT_ID, VR::LO, &meta.patient_id);
        put_str(tags::PATIENT_BIRTH_DATE, VR::DA, "");
        put_str(tags::PATIENT_SEX, VR::CS, "");
        put_str(tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
        put_str(tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
        put_str(tags::SLICE_THICKNESS, VR::DS, &ds(vol.spacing[2]));
        put_str(tags::KVP, VR::DS, "120");
        put_str(tags::PATIENT_POSITION, VR::CS, "HFS");
        put_str(tags::STUDY_INSTANCE_UID, VR::UI, &meta.study_instance_uid);
        put_str(tags::SERIES_INSTANCE_UID, VR::UI, &meta.series_instance_uid);
        put_str(tags::STUDY_ID, VR::SH, "1");
        put_str(tags::SERIES_NUMBER, VR::IS, &meta.series_number.to_string());
        put_str(tags::ACQUISITION_NUMBER, VR::IS, "1");
        put_str(tags::INSTANCE_NUMBER, VR::IS, &(k + 1).to_string());
        put_str(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &meta.frame_of_reference_uid,
        );
        put_str(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
        put_str(tags::SLICE_LOCATION, VR::DS, &ds(ipp[2]));
        put_str(tags::IMAGE_COMMENTS, VR::LT, &meta.image_comments);
        put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        put_str(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
        put_str(tags::RESCALE_SLOPE, VR::DS, "1");
        put_str(tags::RESCALE_TYPE, VR::LO, "HU");
        put_str(tags::WINDOW_CENTER, VR::DS, &ds(meta.window_center));
        put_str(tags::WINDOW_WIDTH, VR::DS, &ds(meta.window_width));
        put_str(tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        let strs = |v: Vec<String>| PrimitiveValue::Strs(v.into_iter().collect());
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            strs(ipp.iter().map(|v| ds(*v)).collect()),
        ));
        obj.put(DataElement::new(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            strs(iop.clone()),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_SPACING,
            VR::DS,
            // PixelSpacing = row spacing (between rows, j) \ column spacing (i).
            strs(vec![ds(vol.spacing[1]), ds(vol.spacing[0])]),
        ));
        let us = |v: u16| PrimitiveValue::from(v);
        obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(1)));
        obj.put(DataElement::new(tags::ROWS, VR::US, us(ny as u16)));
        obj.put(DataElement::new(tags::COLUMNS, VR::US, us(nx as u16)));
        obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(16)));
        obj.put(DataElement::new(tags::BITS_STORED, VR::US, us(16)));
        obj.put(DataElement::new(tags::HIGH_BIT, VR::US, us(15)));
        obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(0)));
        let px: Vec<u16> = vol
            .slice(k)
            .iter()
            .map(|hu| (hu.round() + 1024.0).clamp(0.0, 65535.0) as u16)
            .collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(px.into()),
        ));
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .implementation_class_uid("2.25.302247061530927526766617213151244419397")
                    .implementation_version_name("HEMORRHAGENET"),
            )
            .map_err(|e| DicomWriteError::Encode {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        file.write_to_file(&path)
            .map_err(|e| DicomWriteError::Encode {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Modality;

    fn meta() -> CtSeriesMeta {
        CtSeriesMeta {
            patient_id: "SYNTH-000001".into(),
            patient_name: "SYNTHETIC^PATIENT".into(),
            study_instance_uid: uid_from_hash(11),
            series_instance_uid: uid_from_hash(12),
            frame_of_reference_uid: uid_from_hash(13),
            sop_uid_prefix: uid_from_hash(14),
            study_description: String::new(),
            series_description: String::new(),
            image_comments: "SYNTHETIC".into(),
            study_date: "20260101".into(),
            study_time: "120000".into(),
            manufacturer: "test".into(),
            window_center: 40.0,
            window_width: 80.0,
            series_number: 1,
            skip_slices: vec![],
        }
    }

    #[test]
    fn ds_fits_sixteen_characters() {
        for x in [0.0, -111.489_843_75, 123_456.789_012, -1.0e9, 0.488_281_25] {
            let s = ds(x);
            assert!(s.len() <= 16, "{s}");
            assert!(
                (s.parse::<f64>().unwrap() - x).abs() <= 1e-6 * x.abs().max(1.0),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_bad_uids_and_writes_one_file_per_slice() {
        let vol = Volume::new(
            vec![0.0; 4 * 4 * 3],
            [4, 4, 3],
            [0.5, 0.5, 5.0],
            Modality::Ct,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("hn-dicom-write-{}", std::process::id()));
        let mut m = meta();
        m.series_instance_uid = "1.2.abc".into();
        let e = write_ct_series(&dir, &vol, &m).unwrap_err().to_string();
        assert!(e.contains("series_instance_uid"), "{e}");
        let mut m = meta();
        m.skip_slices = vec![1];
        let paths = write_ct_series(&dir, &vol, &m).unwrap();
        assert_eq!(paths.len(), 2);
        assert!(paths[1].ends_with("IM0003.dcm"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
