//! A prediction as DICOM objects that go back into the source study in the PACS: an Enhanced
//! SR measurement report (TID 1500 pattern) and a Secondary Capture series of the key-slice
//! overlays with burned-in warnings. Thin: this module only turns a [`Prediction`] into a
//! content tree and pictures; the imaging layer's writers ([`hn_imaging::dicom_write`]) make
//! the DICOM. The tree — every item, code and unit — is documented in `docs/PREDICT.md`.
//!
//! These are the only outputs carrying the patient's identifiers (copied from the source
//! study, so the PACS files them with it). UIDs are derived from the source study, the source
//! series and the model ([`ModelCard::fingerprint`]), so scoring the same study with the same
//! model again replaces the objects in the PACS instead of adding copies.

use hn_data::labels::Subtype;
use hn_imaging::dicom::SourceStudy;
use hn_imaging::dicom_write::sc::SECONDARY_CAPTURE_IMAGE_STORAGE;
use hn_imaging::dicom_write::sr::{ENHANCED_SR_STORAGE, PrivateScheme};
use hn_imaging::dicom_write::{
    Code, ContentItem, ContentValue, DerivedSeries, OverlayImage, Relationship, SrDocument,
    derived_uid, secondary_capture, structured_report,
};
use hn_imaging::raster::RgbImage;

use super::{InferError, Prediction};
use crate::checkpoint::ModelCard;
use crate::sample::StudySample;

/// Series number of the SR series (high, so it sorts after the acquired series).
pub const SR_SERIES_NUMBER: u32 = 9001;
/// Series number of the overlay series.
pub const OVERLAY_SERIES_NUMBER: u32 = 9002;
/// Larger side of an overlay picture (pixels, before the text band).
pub const OVERLAY_DISPLAY_SIZE: usize = 512;
/// The folder of the DICOM results inside a study's output folder.
pub const DICOM_DIR: &str = "dicom";

/// Our private coding scheme (PS3.16 8.2), for concepts no standard code covers.
pub const PRIVATE_SCHEME: &str = "99HNET";

/// The banner of every overlay.
pub const NOT_FOR_DIAGNOSIS: &str = "NOT FOR DIAGNOSIS";
/// The banner line added when the model was trained on synthetic data only.
pub const SYNTHETIC_MODEL: &str = "SYNTHETIC MODEL";

/// One DICOM object, encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomObject {
    /// File name inside [`DICOM_DIR`] (no identifiers: `sr.dcm`, `overlay_01.dcm`).
    pub file_name: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    /// Part-10 bytes (Explicit VR Little Endian).
    pub bytes: Vec<u8>,
}

/// The DICOM results of one study.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomResults {
    pub sr: DicomObject,
    pub overlays: Vec<DicomObject>,
}

impl DicomResults {
    /// Every object, SR first.
    pub fn objects(&self) -> impl Iterator<Item = &DicomObject> {
        std::iter::once(&self.sr).chain(&self.overlays)
    }
}

fn dcm(v: &str, m: &str) -> Code {
    Code::new(v, "DCM", m)
}
fn sct(v: &str, m: &str) -> Code {
    Code::new(v, "SCT", m)
}
fn ucum(v: &str, m: &str) -> Code {
    Code::new(v, "UCUM", m)
}

/// Private concepts: `(code value, meaning)`. One table, so a code means one thing.
const HN_CODES: &[(&str, &str)] = &[
    ("EDH", "Epidural hemorrhage"),
    ("SDH", "Subdural hemorrhage"),
    ("SAH", "Subarachnoid hemorrhage"),
    ("IPH", "Intraparenchymal hemorrhage"),
    ("IVH", "Intraventricular hemorrhage"),
    ("P-GIVEN-BLEED", "Probability given hemorrhage"),
    ("PROGNOSIS", "Outcome prognosis"),
    ("MORT30", "Probability of death within 30 days"),
    ("MORT30-THR", "30-day mortality operating threshold"),
    ("MORT30-HIGH", "High 30-day mortality risk"),
    ("MRS90-POOR", "Probability of 90-day mRS 4 or worse"),
    ("MRS90-0", "Probability of 90-day mRS 0"),
    ("MRS90-1", "Probability of 90-day mRS 1"),
    ("MRS90-2", "Probability of 90-day mRS 2"),
    ("MRS90-3", "Probability of 90-day mRS 3"),
    ("MRS90-4", "Probability of 90-day mRS 4"),
    ("MRS90-5", "Probability of 90-day mRS 5"),
    ("MRS90-6", "Probability of 90-day mRS 6"),
    ("REVIEW", "Referral for expert review"),
    ("REVIEW-REASON", "Reason for expert review decision"),
    ("WITHHELD", "Output not reported: its head never learned"),
    ("UNCERT", "Model uncertainty"),
    ("UNCERT-MEASURE", "Uncertainty measure"),
    ("UNCERT-THR", "Referral uncertainty threshold"),
    ("FEATWTS", "Clinical feature weights"),
    ("FEATW", "Clinical feature weight"),
    ("FEAT", "Clinical feature"),
    ("IVH-VOL", "Intraventricular blood volume"),
    ("P-INFRATENT", "Probability of infratentorial hemorrhage"),
    ("NOT-EVAL", "Not evaluated"),
    ("CALIBRATION", "Model calibration"),
    ("SYNTH-TRAINED", "Model trained on synthetic data only"),
    ("TRAIN-DATA", "Training dataset"),
    ("INTENDED-USE", "Intended use"),
];

fn hn(value: &str) -> Code {
    let meaning = HN_CODES
        .iter()
        .find(|(v, _)| *v == value)
        .map(|(_, m)| *m)
        .expect("code in HN_CODES");
    Code::new(value, PRIVATE_SCHEME, meaning)
}

/// The finding code of a subtype (private: see docs/PREDICT.md for why not SNOMED CT).
fn subtype_code(s: Subtype) -> Code {
    hn(match s {
        Subtype::Epidural => "EDH",
        Subtype::Subdural => "SDH",
        Subtype::Subarachnoid => "SAH",
        Subtype::Intraparenchymal => "IPH",
        Subtype::Intraventricular => "IVH",
    })
}

fn intracranial_hemorrhage() -> Code {
    sct("1386000", "Intracranial hemorrhage")
}
fn present(yes: bool) -> Code {
    if yes {
        sct("52101004", "Present")
    } else {
        sct("272519000", "Absent")
    }
}
fn yes_no(yes: bool) -> Code {
    if yes {
        sct("373066001", "Yes")
    } else {
        sct("373067005", "No")
    }
}
fn no_units() -> Code {
    ucum("1", "no units")
}

use Relationship::{Contains, HasConceptMod, HasObsContext};

fn text(rel: Relationship, concept: Code, t: &str) -> ContentItem {
    ContentItem::new(rel, concept, ContentValue::Text(t.to_string()))
}
fn code(rel: Relationship, concept: Code, value: Code) -> ContentItem {
    ContentItem::new(rel, concept, ContentValue::Code(value))
}
fn num(concept: Code, value: f64, unit: Code) -> ContentItem {
    ContentItem::new(Contains, concept, ContentValue::Num { value, unit })
}
fn prob(concept: Code, value: f64) -> ContentItem {
    num(concept, value, no_units())
}

/// What identifies one scoring of one study: the UIDs derive from it.
struct UidBase<'a> {
    study: &'a str,
    series: &'a str,
    model: String,
}

impl UidBase<'_> {
    fn uid(&self, parts: &[&str]) -> String {
        let mut all = vec![self.study, self.series, self.model.as_str()];
        all.extend_from_slice(parts);
        derived_uid(&all)
    }
}

/// TID 1501 measurement group: tracking identifier and UID, algorithm (TID 4019), then rows.
fn group(
    base: &UidBase<'_>,
    pred: &Prediction,
    tracking: &str,
    rows: Vec<ContentItem>,
) -> ContentItem {
    let mut items = vec![
        text(
            HasObsContext,
            dcm("112039", "Tracking Identifier"),
            tracking,
        ),
        ContentItem::new(
            HasObsContext,
            dcm("112040", "Tracking Unique Identifier"),
            ContentValue::UidRef(base.uid(&["tracking", tracking])),
        ),
        text(
            HasConceptMod,
            dcm("111001", "Algorithm Name"),
            "HemorrhageNet",
        ),
        text(
            HasConceptMod,
            dcm("111003", "Algorithm Version"),
            &pred.model.code_version,
        ),
    ];
    items.extend(rows);
    ContentItem::container(Contains, dcm("125007", "Measurement Group"), items)
}

/// The SR content tree of a prediction (root children; see docs/PREDICT.md).
fn sr_tree(base: &UidBase<'_>, pred: &Prediction, source: &SourceStudy) -> Vec<ContentItem> {
    let dp = &pred.decision_path;
    let mut root = vec![
        code(
            HasConceptMod,
            dcm("121049", "Language of Content Item and Descendants"),
            Code::new("en-US", "RFC5646", "English (United States)"),
        ),
        code(
            HasObsContext,
            dcm("121005", "Observer Type"),
            dcm("121007", "Device"),
        ),
        ContentItem::new(
            HasObsContext,
            dcm("121012", "Device Observer UID"),
            ContentValue::UidRef(derived_uid(&["HemorrhageNet device", &base.model])),
        ),
        text(
            HasObsContext,
            dcm("121013", "Device Observer Name"),
            "HemorrhageNet",
        ),
        text(
            HasObsContext,
            dcm("121014", "Device Observer Manufacturer"),
            MANUFACTURER,
        ),
        text(
            HasObsContext,
            dcm("121015", "Device Observer Model Name"),
            &pred.model.trained_with,
        ),
    ];
    if source.modality == "CT" {
        root.push(code(
            HasConceptMod,
            dcm("121058", "Procedure reported"),
            sct("303653007", "Computed tomography of head"),
        ));
    }
    // Image library (TID 1600): the source images the result was computed from.
    let images: Vec<ContentItem> = source
        .instances
        .iter()
        .map(|i| {
            ContentItem::new(
                Contains,
                sct("260753009", "Source"),
                ContentValue::Image {
                    sop_class_uid: i.sop_class_uid.clone().unwrap_or_default(),
                    sop_instance_uid: i.sop_instance_uid.clone().unwrap_or_default(),
                },
            )
        })
        .collect();
    root.push(ContentItem::container(
        Contains,
        dcm("111028", "Image Library"),
        vec![ContentItem::container(
            Contains,
            dcm("126200", "Image Library Group"),
            images,
        )],
    ));

    let mut groups = Vec::new();
    // Level 1: hemorrhage?
    let l1 = &dp.level_1;
    let mut rows = vec![
        code(
            Contains,
            dcm("121071", "Finding"),
            intracranial_hemorrhage(),
        ),
        prob(dcm("122157", "Probability"), l1.probability),
        prob(dcm("122411", "Threshold Value"), l1.threshold),
        code(Contains, intracranial_hemorrhage(), present(l1.decision)),
    ];
    if let Some(ml) = pred.hematoma_volume_ml {
        rows.push(
            num(sct("118565006", "Volume"), ml, ucum("ml", "milliliter")).with(text(
                HasConceptMod,
                sct("370129005", "Measurement Method"),
                &pred.hematoma_volume_method,
            )),
        );
    }
    if let Some(f) = &pred.estimated_facts {
        rows.push(num(
            hn("IVH-VOL"),
            f.intraventricular_ml,
            ucum("ml", "milliliter"),
        ));
        rows.push(prob(hn("P-INFRATENT"), f.p_infratentorial));
    }
    for (level, skipped) in [
        ("level 2 (subtypes)", &dp.level_2.skipped),
        ("level 3 (prognosis)", &dp.level_3.skipped),
    ] {
        if let Some(why) = skipped {
            rows.push(text(Contains, hn("NOT-EVAL"), &format!("{level}: {why}")));
        }
    }
    groups.push(group(base, pred, "level 1: intracranial hemorrhage", rows));

    // Level 2: which types?
    for d in &dp.level_2.subtypes {
        let Some(s) = Subtype::from_rsna_name(&d.subtype) else {
            continue;
        };
        let c = subtype_code(s);
        groups.push(group(
            base,
            pred,
            &format!("level 2: {}", d.subtype),
            vec![
                code(Contains, dcm("121071", "Finding"), c.clone()),
                prob(dcm("122157", "Probability"), d.probability),
                prob(hn("P-GIVEN-BLEED"), d.probability_given_bleed),
                prob(dcm("122411", "Threshold Value"), d.threshold),
                code(Contains, c, present(d.decision)),
            ],
        ));
    }

    // Level 3: prognosis?
    let l3 = &dp.level_3;
    if l3.evaluated {
        let mut rows = vec![code(Contains, dcm("121071", "Finding"), hn("PROGNOSIS"))];
        if let Some(p) = l3.p_mortality_30d {
            rows.push(prob(hn("MORT30"), p));
        }
        if let Some(t) = l3.mortality_threshold {
            rows.push(prob(hn("MORT30-THR"), t));
        }
        if let Some(h) = l3.high_mortality_risk {
            rows.push(code(Contains, hn("MORT30-HIGH"), yes_no(h)));
        }
        if let Some(p) = l3.p_poor_outcome_90d {
            rows.push(prob(hn("MRS90-POOR"), p));
        }
        if let Some(dist) = &l3.mrs_distribution {
            for (k, p) in dist.iter().enumerate() {
                rows.push(prob(hn(&format!("MRS90-{k}")), *p));
            }
        }
        for w in &l3.withheld {
            rows.push(text(Contains, hn("WITHHELD"), w));
        }
        groups.push(group(base, pred, "level 3: prognosis", rows));
    } else if !l3.withheld.is_empty() {
        // The bleed decision opened level 3 but no prognosis head learned: say so, rather
        // than leave a reader to wonder why a positive study has no prognosis.
        let mut rows = vec![code(Contains, dcm("121071", "Finding"), hn("PROGNOSIS"))];
        for w in &l3.withheld {
            rows.push(text(Contains, hn("WITHHELD"), w));
        }
        groups.push(group(base, pred, "level 3: prognosis", rows));
    }

    // Review flag.
    let r = &pred.review;
    let mut rows = vec![
        code(Contains, dcm("121071", "Finding"), hn("REVIEW")),
        code(Contains, hn("REVIEW"), yes_no(r.flag)),
        text(Contains, hn("REVIEW-REASON"), &r.reason),
    ];
    if r.uncertainty.is_finite() {
        rows.push(prob(hn("UNCERT"), r.uncertainty).with(text(
            HasConceptMod,
            hn("UNCERT-MEASURE"),
            &r.uncertainty_measure,
        )));
    }
    if let Some(t) = r.threshold {
        rows.push(prob(hn("UNCERT-THR"), t));
    }
    groups.push(group(base, pred, "expert review", rows));

    // This patient's clinical feature weights.
    if !pred.feature_weights.is_empty() {
        let mut rows = vec![code(Contains, dcm("121071", "Finding"), hn("FEATWTS"))];
        for f in &pred.feature_weights {
            let value = match &f.value {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let unit = if f.unit.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.unit)
            };
            rows.push(prob(hn("FEATW"), f.weight).with(text(
                HasConceptMod,
                hn("FEAT"),
                &format!("{} = {value}{unit}", f.name),
            )));
        }
        groups.push(group(base, pred, "clinical feature weights", rows));
    }
    root.push(ContentItem::container(
        Contains,
        dcm("126010", "Imaging Measurements"),
        groups,
    ));

    // The model: calibration, training data, intended use.
    let m = &pred.model;
    root.push(text(
        Contains,
        hn("CALIBRATION"),
        &format!(
            "{} (epoch {}, trained with HemorrhageNet {})",
            m.calibration, m.epoch, m.trained_with
        ),
    ));
    root.push(text(Contains, hn("TRAIN-DATA"), &m.dataset));
    root.push(code(Contains, hn("SYNTH-TRAINED"), yes_no(m.synthetic)));
    root.push(text(Contains, hn("INTENDED-USE"), &pred.intended_use));
    root
}

/// The manufacturer named in every object.
pub const MANUFACTURER: &str = "HemorrhageNet project";

/// The current local date and time as DICOM DA and TM.
fn now() -> (String, String) {
    let t = chrono::Local::now();
    (
        t.format("%Y%m%d").to_string(),
        t.format("%H%M%S").to_string(),
    )
}

/// The key-slice pictures of a prediction: the brain-window slice with the heatmap over it,
/// upscaled (nearest neighbour) until the larger side reaches `display` pixels.
pub fn key_slice_pictures(
    pred: &Prediction,
    sample: &StudySample,
    display: usize,
) -> Result<Vec<RgbImage>, InferError> {
    let [s, c, h, w] = sample.shape;
    let plane = h * w;
    // CT: the brain window; MR: the sequence the others were brought onto.
    let ch = match &pred.input.mr {
        Some(mr) => mr.reference.index(),
        None => super::volume::channel_covering(&pred.input.windows, 20.0, 60.0).unwrap_or(0),
    }
    .min(c.saturating_sub(1));
    let f = hn_imaging::raster::display_factor(w, h, display);
    pred.key_slices
        .iter()
        .map(|ks| {
            if ks.slice >= s || pred.heatmap.density.len() != s * plane {
                return Err(InferError::Invalid(format!(
                    "key slice {} outside the {s}-slice model grid",
                    ks.slice
                )));
            }
            let img = &sample.images[(ks.slice * c + ch) * plane..(ks.slice * c + ch + 1) * plane];
            let heat = &pred.heatmap.density[ks.slice * plane..(ks.slice + 1) * plane];
            hn_imaging::raster::heat_overlay(
                &hn_imaging::raster::upscale_nearest(img, w, h, f),
                &hn_imaging::raster::upscale_nearest(heat, w, h, f),
                w * f,
                h * f,
            )
            .map_err(InferError::Invalid)
        })
        .collect()
}

/// The DICOM results of a scored study. `source` is the study's identity as read; a study
/// without one (NIfTI input, a volume handed in directly) cannot be filed into a PACS study,
/// so this is an error saying so rather than objects with invented identifiers.
pub fn dicom_results(
    card: &ModelCard,
    pred: &Prediction,
    sample: &StudySample,
    source: Option<&SourceStudy>,
) -> Result<DicomResults, InferError> {
    let source = source.ok_or_else(|| InferError::Unusable {
        study: pred.study.clone(),
        reason: "DICOM results need a DICOM study: this input (NIfTI, or a volume without \
                 headers) carries no patient and study identity to file them under in a PACS"
            .into(),
    })?;
    let dicom_err = |e: hn_imaging::dicom_write::DicomWriteError| match e {
        hn_imaging::dicom_write::DicomWriteError::Identity(id) => InferError::Unusable {
            study: pred.study.clone(),
            reason: format!("cannot file results into the source study: {id}"),
        },
        other => InferError::Invalid(format!("{}: DICOM results: {other}", pred.study)),
    };
    source.check().map_err(|e| dicom_err(e.into()))?;
    let base = UidBase {
        study: source.study_instance_uid(),
        series: &source.series_instance_uid,
        model: card.fingerprint(),
    };
    let (date, time) = now();
    let series = |kind: &str, number: u32, description: &str| DerivedSeries {
        series_instance_uid: base.uid(&[kind]),
        series_number: number,
        series_description: description.to_string(),
        date: date.clone(),
        time: time.clone(),
        manufacturer: MANUFACTURER.into(),
        model_name: "HemorrhageNet".into(),
        software_version: pred.model.code_version.clone(),
    };
    let synthetic = pred.model.synthetic;
    let suffix = if synthetic { " (synthetic model)" } else { "" };

    let sr_series = series(
        "sr",
        SR_SERIES_NUMBER,
        &format!("HemorrhageNet report{suffix}"),
    );
    let doc = SrDocument {
        root: dcm("126000", "Imaging Measurement Report"),
        template: Some(("DCMR".into(), "1500".into())),
        children: sr_tree(&base, pred, source),
        complete: true,
        private_schemes: vec![PrivateScheme {
            designator: PRIVATE_SCHEME.into(),
            name: "HemorrhageNet local codes".into(),
            responsible_organization: MANUFACTURER.into(),
        }],
    };
    let sr_uid = base.uid(&["sr", "1"]);
    let sr = DicomObject {
        file_name: "sr.dcm".into(),
        sop_class_uid: ENHANCED_SR_STORAGE.into(),
        sop_instance_uid: sr_uid.clone(),
        series_instance_uid: sr_series.series_instance_uid.clone(),
        bytes: structured_report(source, &sr_series, &sr_uid, &doc).map_err(dicom_err)?,
    };

    let ov_series = series(
        "overlay",
        OVERLAY_SERIES_NUMBER,
        &format!("HemorrhageNet attention overlays{suffix}"),
    );
    let pictures = key_slice_pictures(pred, sample, OVERLAY_DISPLAY_SIZE)?;
    let n = pictures.len();
    let mut overlays = Vec::with_capacity(n);
    for (i, (ks, pic)) in pred.key_slices.iter().zip(&pictures).enumerate() {
        let mut lines: Vec<(String, [u8; 3])> = vec![(NOT_FOR_DIAGNOSIS.into(), [255, 255, 0])];
        if synthetic {
            lines.push((SYNTHETIC_MODEL.into(), [255, 160, 0]));
        }
        lines.push((
            format!(
                "HemorrhageNet key slice {}/{n}: P(bleed) {:.2}",
                i + 1,
                pred.decision_path.level_1.probability
            ),
            [255, 255, 255],
        ));
        lines.push((
            format!(
                "input slice {}, {:.0}% of the attention",
                ks.input_slice + 1,
                100.0 * ks.heat_mass
            ),
            [255, 255, 255],
        ));
        let banner: Vec<(&str, [u8; 3])> = lines.iter().map(|(t, c)| (t.as_str(), *c)).collect();
        let image = pic.with_banner(&banner);
        let number = (i + 1) as u32;
        let uid = base.uid(&["overlay", &number.to_string()]);
        let bytes = secondary_capture(
            source,
            &ov_series,
            &OverlayImage {
                image: &image,
                sop_instance_uid: uid.clone(),
                instance_number: number,
                derivation: format!(
                    "Brain window of model-grid slice {} (input slice {}) with the model's \
                     attention heatmap (relative: blue low, red, yellow high), upscaled x{} \
                     nearest neighbour",
                    ks.slice,
                    ks.input_slice + 1,
                    hn_imaging::raster::display_factor(
                        sample.shape[3],
                        sample.shape[2],
                        OVERLAY_DISPLAY_SIZE
                    )
                ),
                comments: if synthetic {
                    format!(
                        "{NOT_FOR_DIAGNOSIS}. {SYNTHETIC_MODEL}: trained on synthetic data only."
                    )
                } else {
                    format!("{NOT_FOR_DIAGNOSIS}.")
                },
                source_image: source
                    .slice_instance(ks.input_slice)
                    .and_then(|s| Some((s.sop_class_uid.clone()?, s.sop_instance_uid.clone()?))),
            },
        )
        .map_err(dicom_err)?;
        overlays.push(DicomObject {
            file_name: format!("overlay_{number:02}.dcm"),
            sop_class_uid: SECONDARY_CAPTURE_IMAGE_STORAGE.into(),
            sop_instance_uid: uid,
            series_instance_uid: ov_series.series_instance_uid.clone(),
            bytes,
        });
    }
    Ok(DicomResults { sr, overlays })
}
