//! Secondary Capture Image Storage writer: an RGB picture (e.g. a slice with its heat map and
//! burned-in warnings, [`crate::raster`]) as one instance of a new series in the source study.
//!
//! Why single-frame Secondary Capture: every PACS viewer shows it, as it is, with no
//! reconstruction or colour handling of its own; the burned-in text therefore reaches the
//! reader whatever the viewer. `BurnedInAnnotation` is YES accordingly.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use super::derived::{DerivedSeries, derived_object, put_seq, put_str, sop_reference};
use super::{DicomWriteError, part10_bytes, put_pixel_description};
use crate::dicom::SourceStudy;
use crate::raster::RgbImage;

/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

/// One overlay picture and what to say about it.
#[derive(Debug, Clone)]
pub struct OverlayImage<'a> {
    pub image: &'a RgbImage,
    pub sop_instance_uid: String,
    /// 1-based position in the series.
    pub instance_number: u32,
    /// How the picture was made (DerivationDescription, at most 1024 characters).
    pub derivation: String,
    /// ImageComments.
    pub comments: String,
    /// The source instance the picture shows, when known (SourceImageSequence).
    pub source_image: Option<(String, String)>,
}

/// Write `img` as a Secondary Capture instance of `series` in the source study.
pub fn secondary_capture(
    source: &SourceStudy,
    series: &DerivedSeries,
    img: &OverlayImage<'_>,
) -> Result<Vec<u8>, DicomWriteError> {
    let (w, h) = (img.image.width, img.image.height);
    if w == 0 || h == 0 || w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(DicomWriteError::Meta(format!(
            "overlay {}: {w}×{h} pixels is not a valid image size",
            img.instance_number
        )));
    }
    if img.image.data.len() != 3 * w * h {
        return Err(DicomWriteError::Meta(format!(
            "overlay {}: {} bytes for {w}×{h} RGB",
            img.instance_number,
            img.image.data.len()
        )));
    }
    let mut o = derived_object(
        source,
        series,
        "OT",
        SECONDARY_CAPTURE_IMAGE_STORAGE,
        &img.sop_instance_uid,
        img.instance_number,
    )?;
    // General Series: the head is an unpaired body part, so Laterality (2C) is absent.
    put_str(&mut o, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
    // SC Equipment: made on a workstation from other images.
    put_str(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
    // General Image.
    put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
    put_str(&mut o, tags::PATIENT_ORIENTATION, VR::CS, "");
    put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put_str(&mut o, tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO");
    put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(
        &mut o,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        &img.derivation,
    );
    if !img.comments.is_empty() {
        put_str(&mut o, tags::IMAGE_COMMENTS, VR::LT, &img.comments);
    }
    if let Some((class, instance)) = &img.source_image {
        put_seq(
            &mut o,
            tags::SOURCE_IMAGE_SEQUENCE,
            vec![sop_reference(class, instance)],
        );
    }
    // SC Image.
    put_str(
        &mut o,
        tags::DATE_OF_SECONDARY_CAPTURE,
        VR::DA,
        &series.date,
    );
    put_str(
        &mut o,
        tags::TIME_OF_SECONDARY_CAPTURE,
        VR::TM,
        &series.time,
    );
    // Image Pixel: 8-bit RGB, colour-by-pixel.
    put_str(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    put_pixel_description(&mut o, h as u16, w as u16, 3, 8);
    let mut px = img.image.data.clone();
    if px.len() % 2 == 1 {
        px.push(0); // OB values have even length.
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(px.into()),
    ));
    part10_bytes(o, &format!("overlay {}", img.instance_number))
}
