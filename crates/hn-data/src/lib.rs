//! # hn-data — layer 2: data
//!
//! What a study *means* for HemorrhageNet, independent of the network: the clinical schema
//! ([`clinical`]), hemorrhage labels and outcomes ([`labels`]), readers for the public
//! datasets' layouts, patient-level splits, the preprocessing cache, and the synthetic head-CT
//! cohort that is the project's embedded default.
//!
//! Depends only on `hn-imaging` (for [`hn_imaging::Volume`]); knows nothing of the model.

pub mod clinical;
pub mod ich;
pub mod labels;
pub mod synth;

pub use clinical::{CLINICAL_FEATURES, ClinicalFeature, ClinicalRecord, FeatureKind};
pub use labels::{Outcomes, SUBTYPES, StudyLabels, Subtype};
pub mod cache;
pub mod layouts;
pub mod preprocess;
pub mod splits;
pub mod stats;
