//! DICOM writers: the synthetic cohort's CT series ([`ct`]) and the objects a scored study
//! sends back into its PACS study — a Structured Report ([`sr`]) and Secondary Capture overlay
//! images ([`sc`]), both carrying the source study's identity ([`derived`]).
//!
//! Writers know nothing of the model: they take a content tree, pictures and an identity, and
//! return Part-10 bytes (Explicit VR Little Endian). Every object they write is checked by
//! dicom3tools' `dciodvfy`, dcmtk and pydicom in the tests.

pub mod derived;
pub mod sc;
pub mod series;
pub mod sr;

use std::path::PathBuf;

use dicom_dictionary_std::uids;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use sha2::{Digest, Sha256};

pub use derived::DerivedSeries;
pub use sc::{OverlayImage, secondary_capture};
pub use series::{
    DEIDENTIFICATION_METHOD, MrSeriesInfo, SeriesMeta, write_ct_series, write_mr_series,
};
pub use sr::{Code, ContentItem, ContentValue, Relationship, SrDocument, structured_report};

/// Errors of the DICOM writers.
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
    /// The source study cannot give its identity to a derived object.
    #[error(transparent)]
    Identity(#[from] crate::dicom::IdentityError),
}

/// Our implementation's identity in every file meta group.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.302247061530927526766617213151244419397";
pub const IMPLEMENTATION_VERSION_NAME: &str = "HEMORRHAGENET";

/// A DICOM UID under the 2.25 (UUID-derived) root from a 128-bit hash value.
pub fn uid_from_hash(h: u128) -> String {
    format!("2.25.{}", h.max(1))
}

/// A deterministic UID from `parts` (SHA-256, first 128 bits, under 2.25): the same parts
/// always give the same UID, so an object written again replaces the first in a PACS instead
/// of duplicating it.
pub fn derived_uid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    uid_from_hash(u128::from_be_bytes(
        d[..16].try_into().expect("32-byte digest"),
    ))
}

/// A decimal string (DS) of at most 16 characters.
pub(crate) fn ds(x: f64) -> String {
    for prec in (0..=6).rev() {
        let s = format!("{x:.prec$}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{x:.0}")
}

pub(crate) fn valid_uid(u: &str) -> bool {
    crate::dicom::identity::check_value(dicom_core::VR::UI, u).is_ok()
}

/// The Image Pixel module's unsigned-integer description (pixel data not included):
/// `samples` per pixel, `bits` allocated = stored, high bit `bits − 1`, unsigned, and for colour
/// images colour-by-pixel planar configuration.
pub(crate) fn put_pixel_description(
    obj: &mut InMemDicomObject,
    rows: u16,
    cols: u16,
    samples: u16,
    bits: u16,
) {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;
    let mut us = |tag, v: u16| obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    us(tags::SAMPLES_PER_PIXEL, samples);
    if samples > 1 {
        us(tags::PLANAR_CONFIGURATION, 0);
    }
    us(tags::ROWS, rows);
    us(tags::COLUMNS, cols);
    us(tags::BITS_ALLOCATED, bits);
    us(tags::BITS_STORED, bits);
    us(tags::HIGH_BIT, bits - 1);
    us(tags::PIXEL_REPRESENTATION, 0);
}

/// File meta for Explicit VR Little Endian with our implementation identity.
pub(crate) fn file_meta() -> FileMetaTableBuilder {
    FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
}

/// A data set as Part-10 bytes (preamble, file meta, Explicit VR Little Endian). `what` names
/// the object in errors.
pub(crate) fn part10_bytes(obj: InMemDicomObject, what: &str) -> Result<Vec<u8>, DicomWriteError> {
    let enc = |msg: String| DicomWriteError::Encode {
        path: PathBuf::from(what),
        msg,
    };
    let file = obj.with_meta(file_meta()).map_err(|e| enc(e.to_string()))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| enc(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn derived_uids_are_deterministic_valid_and_distinct() {
        let a = derived_uid(&["1.2.3", "model", "sr"]);
        assert_eq!(a, derived_uid(&["1.2.3", "model", "sr"]));
        assert_ne!(a, derived_uid(&["1.2.3", "model", "overlay"]));
        // Part boundaries matter: ("ab", "c") is not ("a", "bc").
        assert_ne!(derived_uid(&["ab", "c"]), derived_uid(&["a", "bc"]));
        assert!(valid_uid(&a) && a.len() <= 64, "{a}");
    }
}
