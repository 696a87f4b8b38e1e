//! The source study's identity: what a derived object (Structured Report, overlay series) must
//! copy to be filed into the same study in the PACS, and the instances it was computed from.
//!
//! This is the one place patient identifiers are kept after reading. `SourceStudy` is not
//! `Serialize` and its `Debug` output redacts every value, so a stray `{:?}` in a log cannot
//! leak a name; only the DICOM result writers ([`crate::dicom_write`]) read the values.
//!
//! Values are captured as found (leniently, so reading never fails on them) and checked when a
//! derived object is written ([`SourceStudy::check`]): a missing or malformed attribute is an
//! error naming it, never a malformed object.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use super::attributes::text;
use super::header::Header;

/// DICOM attribute type: 1 must have a value, 2 must be present (may be empty), 3 optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Type1,
    Type2,
    Type3,
}

/// An attribute copied from the source study into derived objects: Patient, Patient Study and
/// General Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2).
#[derive(Debug, Clone, Copy)]
pub struct CopiedAttribute {
    pub tag: Tag,
    pub vr: VR,
    pub keyword: &'static str,
    pub requirement: Requirement,
}

const fn copied(
    tag: Tag,
    vr: VR,
    keyword: &'static str,
    requirement: Requirement,
) -> CopiedAttribute {
    CopiedAttribute {
        tag,
        vr,
        keyword,
        requirement,
    }
}

/// Every attribute copied, in the order the writers put them (the one list: reader and
/// writers both use it).
pub const COPIED_ATTRIBUTES: &[CopiedAttribute] = &[
    copied(
        tags::PATIENT_NAME,
        VR::PN,
        "PatientName",
        Requirement::Type2,
    ),
    copied(tags::PATIENT_ID, VR::LO, "PatientID", Requirement::Type2),
    copied(
        tags::ISSUER_OF_PATIENT_ID,
        VR::LO,
        "IssuerOfPatientID",
        Requirement::Type3,
    ),
    copied(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        "PatientBirthDate",
        Requirement::Type2,
    ),
    copied(tags::PATIENT_SEX, VR::CS, "PatientSex", Requirement::Type2),
    copied(tags::PATIENT_AGE, VR::AS, "PatientAge", Requirement::Type3),
    copied(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        "StudyInstanceUID",
        Requirement::Type1,
    ),
    copied(tags::STUDY_DATE, VR::DA, "StudyDate", Requirement::Type2),
    copied(tags::STUDY_TIME, VR::TM, "StudyTime", Requirement::Type2),
    copied(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        "ReferringPhysicianName",
        Requirement::Type2,
    ),
    copied(tags::STUDY_ID, VR::SH, "StudyID", Requirement::Type2),
    copied(
        tags::ACCESSION_NUMBER,
        VR::SH,
        "AccessionNumber",
        Requirement::Type2,
    ),
    copied(
        tags::STUDY_DESCRIPTION,
        VR::LO,
        "StudyDescription",
        Requirement::Type3,
    ),
];

/// One source instance a result was computed from (for the SR's evidence sequence).
#[derive(Clone, PartialEq, Eq)]
pub struct SourceInstance {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
}

/// The identity of the study a volume was read from, and the instances of the chosen series.
#[derive(Clone, PartialEq)]
pub struct SourceStudy {
    /// Values of [`COPIED_ATTRIBUTES`], same order; `None` when absent or empty.
    pub values: Vec<Option<String>>,
    /// Attributes whose values differ between instances of the chosen series (keywords).
    pub inconsistent: Vec<&'static str>,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: Option<String>,
    /// The source series' modality (`CT`, `MR`).
    pub modality: String,
    /// The chosen series' instances, in the order they were read.
    pub instances: Vec<SourceInstance>,
    /// For each slice `k` of the volume read, the index into `instances` of the instance it
    /// came from (a multi-frame instance appears once per frame).
    pub slice_instances: Vec<usize>,
}

impl std::fmt::Debug for SourceStudy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceStudy")
            .field("values", &"<redacted>")
            .field("inconsistent", &self.inconsistent)
            .field("instances", &self.instances.len())
            .finish()
    }
}

impl std::fmt::Debug for SourceInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceInstance")
    }
}

/// A missing or malformed identity attribute of the source study.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("source study: {attribute}: {reason}")]
pub struct IdentityError {
    pub attribute: String,
    pub reason: String,
}

impl SourceStudy {
    pub(super) fn from_headers(series_uid: &str, headers: &[Header]) -> Self {
        let mut values: Vec<Option<String>> = vec![None; COPIED_ATTRIBUTES.len()];
        let mut inconsistent = Vec::new();
        for (i, a) in COPIED_ATTRIBUTES.iter().enumerate() {
            let mut seen: Option<Option<String>> = None;
            for h in headers {
                let v = text(&h.obj, a.tag);
                match &seen {
                    None => seen = Some(v),
                    Some(s) if *s != v => {
                        inconsistent.push(a.keyword);
                        break;
                    }
                    Some(_) => {}
                }
            }
            values[i] = seen.flatten();
        }
        let first = headers.first().map(|h| &h.obj);
        SourceStudy {
            values,
            inconsistent,
            series_instance_uid: series_uid.to_string(),
            frame_of_reference_uid: first.and_then(|o| text(o, tags::FRAME_OF_REFERENCE_UID)),
            modality: first
                .and_then(|o| text(o, tags::MODALITY))
                .unwrap_or_default(),
            instances: headers
                .iter()
                .map(|h| SourceInstance {
                    sop_class_uid: text(&h.obj, tags::SOP_CLASS_UID),
                    sop_instance_uid: text(&h.obj, tags::SOP_INSTANCE_UID),
                })
                .collect(),
            slice_instances: Vec::new(),
        }
    }

    /// The source instance slice `k` of the volume came from.
    pub fn slice_instance(&self, k: usize) -> Option<&SourceInstance> {
        self.instances.get(*self.slice_instances.get(k)?)
    }

    /// The value of a copied attribute (`None` when absent or not a copied attribute).
    pub fn value(&self, tag: Tag) -> Option<&str> {
        COPIED_ATTRIBUTES
            .iter()
            .position(|a| a.tag == tag)
            .and_then(|i| self.values.get(i)?.as_deref())
    }

    /// The StudyInstanceUID (unchecked; [`check`](Self::check) first).
    pub fn study_instance_uid(&self) -> &str {
        self.value(tags::STUDY_INSTANCE_UID).unwrap_or_default()
    }

    /// Check every value a derived object would carry: required attributes present, each
    /// value valid for its VR, the series' instances agreeing, every source instance with
    /// valid SOP class and instance UIDs.
    pub fn check(&self) -> Result<(), IdentityError> {
        let err = |attribute: &str, reason: String| IdentityError {
            attribute: attribute.to_string(),
            reason,
        };
        if let Some(k) = self.inconsistent.first() {
            return Err(err(
                k,
                "differs between instances of the source series, so the study it belongs to is \
                 ambiguous"
                    .into(),
            ));
        }
        for (a, v) in COPIED_ATTRIBUTES.iter().zip(&self.values) {
            let name = format!("{} ({:04X},{:04X})", a.keyword, a.tag.0, a.tag.1);
            match v {
                None if a.requirement == Requirement::Type1 => {
                    return Err(err(
                        &name,
                        "missing (required to file results into the study)".into(),
                    ));
                }
                None => {}
                Some(v) => {
                    check_value(a.vr, v).map_err(|r| err(&name, r))?;
                    if a.tag == tags::PATIENT_SEX && !matches!(v.as_str(), "M" | "F" | "O") {
                        return Err(err(&name, "not one of M, F, O".into()));
                    }
                }
            }
        }
        check_value(VR::UI, &self.series_instance_uid)
            .map_err(|r| err("SeriesInstanceUID (0020,000E)", r))?;
        if let Some(f) = &self.frame_of_reference_uid {
            check_value(VR::UI, f).map_err(|r| err("FrameOfReferenceUID (0020,0052)", r))?;
        }
        if self.instances.is_empty() {
            return Err(err(
                "SOPInstanceUID (0008,0018)",
                "no source instances".into(),
            ));
        }
        for (k, inst) in self.instances.iter().enumerate() {
            for (name, v) in [
                ("SOPClassUID (0008,0016)", &inst.sop_class_uid),
                ("SOPInstanceUID (0008,0018)", &inst.sop_instance_uid),
            ] {
                match v {
                    None => {
                        return Err(err(name, format!("missing in source instance {}", k + 1)));
                    }
                    Some(u) => check_value(VR::UI, u)
                        .map_err(|r| err(name, format!("source instance {}: {r}", k + 1)))?,
                }
            }
        }
        Ok(())
    }
}

/// Check one value against its VR's rules (PS3.5 6.2) — the VRs of [`COPIED_ATTRIBUTES`] and
/// UIDs. The reason quotes no value: identity values never go into messages.
pub fn check_value(vr: VR, v: &str) -> Result<(), String> {
    let chars = v.chars().count();
    let max_len = |n: usize| -> Result<(), String> {
        if chars > n {
            Err(format!("{chars} characters, {vr:?} allows at most {n}"))
        } else {
            Ok(())
        }
    };
    let no_control = || -> Result<(), String> {
        if v.chars().any(|c| c.is_control() && c != '\u{1b}') {
            Err("contains control characters".into())
        } else {
            Ok(())
        }
    };
    match vr {
        VR::UI => {
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.split('.').all(|c| {
                    !c.is_empty()
                        && c.bytes().all(|b| b.is_ascii_digit())
                        && (c == "0" || !c.starts_with('0'))
                });
            if ok {
                Ok(())
            } else {
                Err(
                    "not a valid UID (digits and dots, at most 64 characters, no leading zeros)"
                        .into(),
                )
            }
        }
        VR::DA => {
            let ok = v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()) && {
                let m: u32 = v[4..6].parse().unwrap_or(0);
                let d: u32 = v[6..8].parse().unwrap_or(0);
                (1..=12).contains(&m) && (1..=31).contains(&d)
            };
            if ok {
                Ok(())
            } else {
                Err("not a DICOM date (YYYYMMDD)".into())
            }
        }
        VR::TM => {
            let (hms, frac) = v.split_once('.').unwrap_or((v, ""));
            let ok = matches!(hms.len(), 2 | 4 | 6)
                && hms.bytes().all(|b| b.is_ascii_digit())
                && frac.len() <= 6
                && frac.bytes().all(|b| b.is_ascii_digit())
                && (frac.is_empty() || hms.len() == 6)
                && hms[..2].parse::<u32>().is_ok_and(|h| h < 24)
                && (hms.len() < 4 || hms[2..4].parse::<u32>().is_ok_and(|m| m < 60))
                && (hms.len() < 6 || hms[4..6].parse::<u32>().is_ok_and(|s| s < 61));
            if ok {
                Ok(())
            } else {
                Err("not a DICOM time (HHMMSS.FFFFFF)".into())
            }
        }
        VR::AS => {
            let b = v.as_bytes();
            if b.len() == 4 && b[..3].iter().all(u8::is_ascii_digit) && b"DWMY".contains(&b[3]) {
                Ok(())
            } else {
                Err("not a DICOM age (nnnD, nnnW, nnnM or nnnY)".into())
            }
        }
        VR::CS => {
            max_len(16)?;
            if v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_')
            {
                Ok(())
            } else {
                Err("code strings allow only A-Z, 0-9, space and underscore".into())
            }
        }
        VR::SH => {
            max_len(16)?;
            no_control()?;
            if v.contains('\\') {
                Err("contains a backslash".into())
            } else {
                Ok(())
            }
        }
        VR::LO => {
            max_len(64)?;
            no_control()?;
            if v.contains('\\') {
                Err("contains a backslash".into())
            } else {
                Ok(())
            }
        }
        VR::PN => {
            no_control()?;
            let groups: Vec<&str> = v.split('=').collect();
            if groups.len() > 3 {
                return Err("more than 3 component groups".into());
            }
            for g in groups {
                if g.chars().count() > 64 {
                    return Err("a component group longer than 64 characters".into());
                }
                if g.split('^').count() > 5 {
                    return Err("more than 5 name components".into());
                }
            }
            if v.contains('\\') {
                Err("contains a backslash (several names)".into())
            } else {
                Ok(())
            }
        }
        other => Err(format!("VR {other:?} is not checked here")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_by_vr() {
        assert!(check_value(VR::UI, "1.2.840.10008.5.1.4.1.1.2").is_ok());
        for bad in ["", "1.2.abc", "1..2", "1.02", &"1".repeat(65)] {
            assert!(check_value(VR::UI, bad).is_err(), "{bad}");
        }
        assert!(check_value(VR::DA, "20260131").is_ok());
        for bad in ["2026-01-31", "20261301", "2026013"] {
            assert!(check_value(VR::DA, bad).is_err(), "{bad}");
        }
        assert!(check_value(VR::TM, "235959.123").is_ok());
        assert!(check_value(VR::TM, "1230").is_ok());
        for bad in ["12:30", "2460", "1230.5"] {
            assert!(check_value(VR::TM, bad).is_err(), "{bad}");
        }
        assert!(check_value(VR::AS, "045Y").is_ok());
        assert!(check_value(VR::AS, "45Y").is_err());
        assert!(check_value(VR::CS, "F").is_ok());
        assert!(check_value(VR::CS, "f").is_err());
        assert!(check_value(VR::SH, &"A".repeat(17)).is_err());
        assert!(check_value(VR::PN, "DOE^JANE").is_ok());
        assert!(check_value(VR::PN, "A\\B").is_err());
    }

    #[test]
    fn debug_output_redacts_identity() {
        let s = SourceStudy {
            values: vec![Some("DOE^JANE".into()); COPIED_ATTRIBUTES.len()],
            inconsistent: vec![],
            series_instance_uid: "1.2.3".into(),
            frame_of_reference_uid: None,
            modality: "CT".into(),
            instances: vec![],
            slice_instances: vec![],
        };
        let d = format!("{s:?}");
        assert!(!d.contains("DOE") && !d.contains("1.2.3"), "{d}");
    }
}
