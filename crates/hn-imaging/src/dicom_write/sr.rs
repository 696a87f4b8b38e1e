//! DICOM Structured Report writer: a content tree ([`ContentItem`]) as an **Enhanced SR**
//! object (1.2.840.10008.5.1.4.1.1.88.22) filed into the source study.
//!
//! Why Enhanced SR: a measurement report (TID 1500) needs CONTAINER, CODE, NUM, TEXT, UIDREF
//! and IMAGE items with plain parent→child relationships. Enhanced SR holds exactly those and
//! is the most restrictive IOD that does, so more archives and viewers accept it than
//! Comprehensive SR (which adds by-reference relationships and spatial coordinates, unused
//! here). The source instances are listed in the Current Requested Procedure Evidence
//! Sequence.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::derived::{
    DerivedSeries, derived_object, evidence_item, put_seq, put_str, sop_reference,
};
use super::{DicomWriteError, ds, part10_bytes, valid_uid};
use crate::dicom::SourceStudy;

/// Enhanced SR Storage.
pub const ENHANCED_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.22";

/// A coded concept: (CodeValue, CodingSchemeDesignator, CodeMeaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Code {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }

    fn item(&self) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put_str(&mut o, tags::CODE_VALUE, VR::SH, &self.value);
        put_str(&mut o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &self.scheme);
        put_str(&mut o, tags::CODE_MEANING, VR::LO, &self.meaning);
        o
    }

    fn check(&self) -> Result<(), String> {
        let n = |s: &str| s.chars().count();
        if self.value.is_empty()
            || n(&self.value) > 16
            || self.scheme.is_empty()
            || n(&self.scheme) > 16
        {
            return Err(format!(
                "code ({}, {}): value and scheme must have 1–16 characters",
                self.value, self.scheme
            ));
        }
        if self.meaning.is_empty() || n(&self.meaning) > 64 {
            return Err(format!(
                "code ({}, {}): meaning must have 1–64 characters",
                self.value, self.scheme
            ));
        }
        Ok(())
    }
}

/// How a content item relates to its parent (PS3.3 C.17.3.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relationship {
    Contains,
    HasObsContext,
    HasConceptMod,
    HasProperties,
    InferredFrom,
}

impl Relationship {
    fn code(self) -> &'static str {
        match self {
            Relationship::Contains => "CONTAINS",
            Relationship::HasObsContext => "HAS OBS CONTEXT",
            Relationship::HasConceptMod => "HAS CONCEPT MOD",
            Relationship::HasProperties => "HAS PROPERTIES",
            Relationship::InferredFrom => "INFERRED FROM",
        }
    }
}

/// A content item's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentValue {
    /// Children in [`ContentItem::children`]; continuity SEPARATE.
    Container,
    Text(String),
    Code(Code),
    /// A number with its UCUM unit. Written as NumericValue (DS, at most 16 characters) and,
    /// for full precision, FloatingPointValue (FD).
    Num {
        value: f64,
        unit: Code,
    },
    UidRef(String),
    /// A reference to a composite instance (an image of the source series).
    Image {
        sop_class_uid: String,
        sop_instance_uid: String,
    },
}

impl ContentValue {
    fn value_type(&self) -> &'static str {
        match self {
            ContentValue::Container => "CONTAINER",
            ContentValue::Text(_) => "TEXT",
            ContentValue::Code(_) => "CODE",
            ContentValue::Num { .. } => "NUM",
            ContentValue::UidRef(_) => "UIDREF",
            ContentValue::Image { .. } => "IMAGE",
        }
    }
}

/// One node of the SR content tree.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentItem {
    pub relationship: Relationship,
    pub concept: Code,
    pub value: ContentValue,
    pub children: Vec<ContentItem>,
}

impl ContentItem {
    pub fn new(relationship: Relationship, concept: Code, value: ContentValue) -> Self {
        ContentItem {
            relationship,
            concept,
            value,
            children: Vec::new(),
        }
    }

    /// A CONTAINER with `children`.
    pub fn container(
        relationship: Relationship,
        concept: Code,
        children: Vec<ContentItem>,
    ) -> Self {
        ContentItem {
            relationship,
            concept,
            value: ContentValue::Container,
            children,
        }
    }

    /// Builder: add a child.
    pub fn with(mut self, child: ContentItem) -> Self {
        self.children.push(child);
        self
    }
}

/// A private coding scheme used by the tree, declared in the Coding Scheme Identification
/// Sequence so a reader can tell whose codes they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateScheme {
    /// Starts with `99` (PS3.16 8.2: private coding schemes).
    pub designator: String,
    pub name: String,
    pub responsible_organization: String,
}

/// A whole report: root concept, template, the tree under the root and the document flags.
#[derive(Debug, Clone, PartialEq)]
pub struct SrDocument {
    pub root: Code,
    /// `(MappingResource, TemplateIdentifier)` of the root template, e.g. `("DCMR", "1500")`.
    pub template: Option<(String, String)>,
    pub children: Vec<ContentItem>,
    /// The report is final as written (COMPLETE); it is never verified by a person here.
    pub complete: bool,
    pub private_schemes: Vec<PrivateScheme>,
}

fn content_item(item: &ContentItem, depth: usize) -> Result<InMemDicomObject, String> {
    if depth > 32 {
        return Err("content tree deeper than 32 levels".into());
    }
    item.concept.check()?;
    let mut o = InMemDicomObject::new_empty();
    put_str(
        &mut o,
        tags::RELATIONSHIP_TYPE,
        VR::CS,
        item.relationship.code(),
    );
    put_str(&mut o, tags::VALUE_TYPE, VR::CS, item.value.value_type());
    put_seq(
        &mut o,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![item.concept.item()],
    );
    let what = |m: &str| {
        format!(
            "{} ({}): {m}",
            item.concept.meaning,
            item.value.value_type()
        )
    };
    match &item.value {
        ContentValue::Container => {
            put_str(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
        }
        ContentValue::Text(t) => {
            if t.is_empty() {
                return Err(what("empty text"));
            }
            put_str(&mut o, tags::TEXT_VALUE, VR::UT, t);
        }
        ContentValue::Code(c) => {
            c.check()?;
            put_seq(&mut o, tags::CONCEPT_CODE_SEQUENCE, vec![c.item()]);
        }
        ContentValue::Num { value, unit } => {
            if !value.is_finite() {
                return Err(what("value is not finite"));
            }
            unit.check()?;
            let mut mv = InMemDicomObject::new_empty();
            put_seq(
                &mut mv,
                tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                vec![unit.item()],
            );
            put_str(&mut mv, tags::NUMERIC_VALUE, VR::DS, &ds(*value));
            mv.put(dicom_core::DataElement::new(
                tags::FLOATING_POINT_VALUE,
                VR::FD,
                dicom_core::value::PrimitiveValue::from(*value),
            ));
            put_seq(&mut o, tags::MEASURED_VALUE_SEQUENCE, vec![mv]);
        }
        ContentValue::UidRef(u) => {
            if !valid_uid(u) {
                return Err(what("not a valid UID"));
            }
            put_str(&mut o, tags::UID, VR::UI, u);
        }
        ContentValue::Image {
            sop_class_uid,
            sop_instance_uid,
        } => {
            if !valid_uid(sop_class_uid) || !valid_uid(sop_instance_uid) {
                return Err(what("reference with an invalid UID"));
            }
            put_seq(
                &mut o,
                tags::REFERENCED_SOP_SEQUENCE,
                vec![sop_reference(sop_class_uid, sop_instance_uid)],
            );
        }
    }
    if !item.children.is_empty() {
        let kids = item
            .children
            .iter()
            .map(|c| content_item(c, depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        put_seq(&mut o, tags::CONTENT_SEQUENCE, kids);
    }
    Ok(o)
}

/// Write `doc` as an Enhanced SR instance of `series` in the source study; the source series'
/// instances go into the evidence sequence. Returns the Part-10 bytes.
pub fn structured_report(
    source: &SourceStudy,
    series: &DerivedSeries,
    sop_instance_uid: &str,
    doc: &SrDocument,
) -> Result<Vec<u8>, DicomWriteError> {
    let mut o = derived_object(
        source,
        series,
        "SR",
        ENHANCED_SR_STORAGE,
        sop_instance_uid,
        1,
    )?;
    let tree = |m: String| DicomWriteError::Meta(format!("SR content: {m}"));
    doc.root.check().map_err(tree)?;
    // SR Document Series: no performed procedure step to reference (Type 2, empty).
    put_seq(
        &mut o,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        vec![],
    );
    // SR Document General.
    put_str(
        &mut o,
        tags::COMPLETION_FLAG,
        VR::CS,
        if doc.complete { "COMPLETE" } else { "PARTIAL" },
    );
    put_str(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_seq(&mut o, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]);
    put_seq(
        &mut o,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence_item(source)],
    );
    if !doc.private_schemes.is_empty() {
        let items = doc
            .private_schemes
            .iter()
            .map(|s| {
                let mut i = InMemDicomObject::new_empty();
                put_str(
                    &mut i,
                    tags::CODING_SCHEME_DESIGNATOR,
                    VR::SH,
                    &s.designator,
                );
                put_str(&mut i, tags::CODING_SCHEME_NAME, VR::ST, &s.name);
                put_str(
                    &mut i,
                    tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                    VR::ST,
                    &s.responsible_organization,
                );
                i
            })
            .collect();
        put_seq(&mut o, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, items);
    }
    // SR Document Content: the root container.
    put_str(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    put_seq(
        &mut o,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![doc.root.item()],
    );
    put_str(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    if let Some((resource, id)) = &doc.template {
        let mut t = InMemDicomObject::new_empty();
        put_str(&mut t, tags::MAPPING_RESOURCE, VR::CS, resource);
        put_str(&mut t, tags::TEMPLATE_IDENTIFIER, VR::CS, id);
        put_seq(&mut o, tags::CONTENT_TEMPLATE_SEQUENCE, vec![t]);
    }
    let kids = doc
        .children
        .iter()
        .map(|c| content_item(c, 1))
        .collect::<Result<Vec<_>, _>>()
        .map_err(tree)?;
    put_seq(&mut o, tags::CONTENT_SEQUENCE, kids);
    part10_bytes(o, "structured report")
}
