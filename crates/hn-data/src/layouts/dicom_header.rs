//! Header-only DICOM reads for indexing: the UIDs and geometry needed to group files into
//! studies/series and order slices, read up to (not including) PixelData.

use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

use super::LayoutError;

/// What indexing needs from one DICOM file.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceHeader {
    pub path: PathBuf,
    pub sop_instance_uid: Option<String>,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_id: Option<String>,
    pub image_position: Option<[f64; 3]>,
    pub image_orientation: Option<[f64; 6]>,
    pub instance_number: Option<i32>,
}

impl SliceHeader {
    /// Position along the slice normal (row × column direction cosines) in mm; the z
    /// coordinate when orientation is missing.
    pub fn position_along_normal(&self) -> Option<f64> {
        let p = self.image_position?;
        match self.image_orientation {
            Some(o) => {
                let n = [
                    o[1] * o[5] - o[2] * o[4],
                    o[2] * o[3] - o[0] * o[5],
                    o[0] * o[4] - o[1] * o[3],
                ];
                Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
            }
            None => Some(p[2]),
        }
    }
}

/// An error and its sources, `: `-separated (dicom-rs puts the useful part in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

/// Open a Part-10 file whose meta group has invalid UI values: the meta group is copied with
/// every UI value's characters other than digits, '.', NUL and space replaced by '9' (same
/// length, so group lengths stay valid), then the rest of the file is streamed after it.
/// Only the meta group is touched; indexing reads UIDs from the data set.
fn open_masking_meta_uids(path: &Path) -> Result<dicom_object::DefaultDicomObject, String> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
    let mut pre = [0u8; 132];
    f.read_exact(&mut pre)
        .map_err(|e| format!("too short: {e}"))?;
    if &pre[128..132] != b"DICM" {
        return Err("no DICM preamble".into());
    }
    let mut meta = b"DICM".to_vec();
    let mut pending = Vec::new();
    loop {
        let mut h = [0u8; 8];
        if f.read_exact(&mut h).is_err() {
            break;
        }
        if u16::from_le_bytes([h[0], h[1]]) != 0x0002 {
            pending.extend_from_slice(&h);
            break;
        }
        let vr = [h[4], h[5]];
        let long = matches!(&vr, b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN");
        let mut head = h.to_vec();
        let len = if long {
            let mut l = [0u8; 4];
            f.read_exact(&mut l).map_err(|e| e.to_string())?;
            head.extend_from_slice(&l);
            u32::from_le_bytes(l) as usize
        } else {
            usize::from(u16::from_le_bytes([h[6], h[7]]))
        };
        if len > 1 << 20 {
            return Err(format!("meta element of {len} bytes"));
        }
        let mut value = vec![0u8; len];
        f.read_exact(&mut value).map_err(|e| e.to_string())?;
        if &vr == b"UI" {
            for b in &mut value {
                if !(b.is_ascii_digit() || *b == b'.' || *b == 0 || *b == b' ') {
                    *b = b'9';
                }
            }
        }
        meta.extend_from_slice(&head);
        meta.extend_from_slice(&value);
    }
    let reader = std::io::Cursor::new(meta)
        .chain(std::io::Cursor::new(pending))
        .chain(f);
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(reader)
        .map_err(|e| error_chain(&e))
}

/// Read the header of `path`, stopping before PixelData.
pub fn read_slice_header(path: &Path) -> Result<SliceHeader, LayoutError> {
    let obj = match OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
    {
        Ok(o) => o,
        // RSNA-2019 files carry non-numeric UIDs (`ID_...`) in the file meta group, which
        // dicom-object rejects; retry with those meta UIDs masked (the data set is untouched).
        Err(first) => open_masking_meta_uids(path).map_err(|second| LayoutError::Dicom {
            path: path.to_path_buf(),
            msg: format!(
                "cannot read DICOM header: {} (lenient retry: {second})",
                error_chain(&first)
            ),
        })?,
    };
    let text = |tag| -> Option<String> {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let floats = |tag| -> Option<Vec<f64>> {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_float64().ok())
    };
    let required = |tag, name: &str| {
        text(tag).ok_or_else(|| LayoutError::Dicom {
            path: path.to_path_buf(),
            msg: format!("{name} is missing"),
        })
    };
    Ok(SliceHeader {
        path: path.to_path_buf(),
        sop_instance_uid: text(tags::SOP_INSTANCE_UID),
        study_instance_uid: required(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
        series_instance_uid: required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        patient_id: text(tags::PATIENT_ID),
        image_position: floats(tags::IMAGE_POSITION_PATIENT)
            .filter(|v| v.len() == 3 && v.iter().all(|x| x.is_finite()))
            .map(|v| [v[0], v[1], v[2]]),
        image_orientation: floats(tags::IMAGE_ORIENTATION_PATIENT)
            .filter(|v| v.len() == 6 && v.iter().all(|x| x.is_finite()))
            .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]),
        instance_number: obj
            .element_opt(tags::INSTANCE_NUMBER)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<i32>().ok()),
    })
}

/// Sort the slices of one series: by position along the slice normal (ascending), else by
/// InstanceNumber, else by path. Returns a note when the fallback was used.
pub fn order_slices(slices: &mut [SliceHeader]) -> Option<String> {
    if slices.iter().all(|s| s.position_along_normal().is_some()) {
        slices.sort_by(|a, b| {
            a.position_along_normal()
                .unwrap_or(0.0)
                .total_cmp(&b.position_along_normal().unwrap_or(0.0))
                .then_with(|| a.path.cmp(&b.path))
        });
        None
    } else if slices.iter().all(|s| s.instance_number.is_some()) {
        slices.sort_by(|a, b| {
            a.instance_number
                .cmp(&b.instance_number)
                .then_with(|| a.path.cmp(&b.path))
        });
        Some("ImagePositionPatient missing on some slices: ordered by InstanceNumber".into())
    } else {
        slices.sort_by(|a, b| a.path.cmp(&b.path));
        Some("slice position and InstanceNumber missing: ordered by file name".into())
    }
}
