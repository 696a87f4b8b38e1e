//! What every object filed into the source study carries: the source's Patient and Study
//! modules (copied, checked first), a new series, the equipment that made it, SOP Common.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{DicomWriteError, valid_uid};
use crate::dicom::SourceStudy;
use crate::dicom::identity::{COPIED_ATTRIBUTES, Requirement, check_value};

/// A new series in the source study, and the software that wrote it.
#[derive(Debug, Clone)]
pub struct DerivedSeries {
    pub series_instance_uid: String,
    pub series_number: u32,
    pub series_description: String,
    /// DICOM DA (YYYYMMDD) and TM (HHMMSS) of this result: series, content and instance
    /// creation date/time.
    pub date: String,
    pub time: String,
    pub manufacturer: String,
    pub model_name: String,
    pub software_version: String,
}

impl DerivedSeries {
    pub(crate) fn check(&self) -> Result<(), DicomWriteError> {
        let bad = |what: &str, r: String| DicomWriteError::Meta(format!("{what}: {r}"));
        if !valid_uid(&self.series_instance_uid) {
            return Err(bad("series_instance_uid", "not a valid UID".into()));
        }
        check_value(VR::DA, &self.date).map_err(|r| bad("date", r))?;
        check_value(VR::TM, &self.time).map_err(|r| bad("time", r))?;
        for (what, v) in [
            ("series_description", &self.series_description),
            ("manufacturer", &self.manufacturer),
            ("model_name", &self.model_name),
            ("software_version", &self.software_version),
        ] {
            check_value(VR::LO, v).map_err(|r| bad(what, r))?;
        }
        Ok(())
    }
}

/// Put a string element.
pub(crate) fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Put a sequence element.
pub(crate) fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A data set with the modules every derived object shares: SOP Common (UTF-8, SOP class and
/// instance), Patient and General Study copied from `source`, General Series (`modality`) and
/// General Equipment. Checks the source identity and the series first.
pub(crate) fn derived_object(
    source: &SourceStudy,
    series: &DerivedSeries,
    modality: &str,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    instance_number: u32,
) -> Result<InMemDicomObject, DicomWriteError> {
    source.check()?;
    series.check()?;
    if !valid_uid(sop_instance_uid) {
        return Err(DicomWriteError::Meta(format!(
            "SOP instance UID {sop_instance_uid:?} is not valid"
        )));
    }
    let mut o = InMemDicomObject::new_empty();
    // Identity values arrive decoded from the source's character set; UTF-8 holds them all.
    put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, sop_class_uid);
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid);
    put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &series.date);
    put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &series.time);
    for (a, v) in COPIED_ATTRIBUTES.iter().zip(&source.values) {
        match (v, a.requirement) {
            (Some(v), _) => put_str(&mut o, a.tag, a.vr, v),
            (None, Requirement::Type2) => put_str(&mut o, a.tag, a.vr, ""),
            (None, _) => {}
        }
    }
    put_str(&mut o, tags::MODALITY, VR::CS, modality);
    put_str(
        &mut o,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &series.series_instance_uid,
    );
    put_str(
        &mut o,
        tags::SERIES_NUMBER,
        VR::IS,
        &series.series_number.to_string(),
    );
    put_str(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &series.series_description,
    );
    put_str(&mut o, tags::SERIES_DATE, VR::DA, &series.date);
    put_str(&mut o, tags::SERIES_TIME, VR::TM, &series.time);
    put_str(&mut o, tags::CONTENT_DATE, VR::DA, &series.date);
    put_str(&mut o, tags::CONTENT_TIME, VR::TM, &series.time);
    put_str(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &instance_number.to_string(),
    );
    put_str(&mut o, tags::MANUFACTURER, VR::LO, &series.manufacturer);
    put_str(
        &mut o,
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        &series.model_name,
    );
    put_str(
        &mut o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        &series.software_version,
    );
    Ok(o)
}

/// An item `{ReferencedSOPClassUID, ReferencedSOPInstanceUID}`.
pub(crate) fn sop_reference(class: &str, instance: &str) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    put_str(&mut r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put_str(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance);
    r
}

/// The source series as one item of a hierarchical reference (Study → Series → SOP):
/// `{StudyInstanceUID, ReferencedSeriesSequence[{SeriesInstanceUID, ReferencedSOPSequence}]}`.
/// Call after `source.check()`.
pub(crate) fn evidence_item(source: &SourceStudy) -> InMemDicomObject {
    let sops: Vec<InMemDicomObject> = source
        .instances
        .iter()
        .map(|i| {
            sop_reference(
                i.sop_class_uid.as_deref().unwrap_or_default(),
                i.sop_instance_uid.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    let mut series = InMemDicomObject::new_empty();
    put_str(
        &mut series,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &source.series_instance_uid,
    );
    put_seq(&mut series, tags::REFERENCED_SOP_SEQUENCE, sops);
    let mut study = InMemDicomObject::new_empty();
    put_str(
        &mut study,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        source.study_instance_uid(),
    );
    put_seq(&mut study, tags::REFERENCED_SERIES_SEQUENCE, vec![series]);
    study
}
