//! Derived objects filed into a source study (Enhanced SR, Secondary Capture), checked by
//! readers nobody here wrote: dicom3tools' `dciodvfy` (IOD rules), dcmtk's `dcmdump` and
//! `dsrdump` (parsing, the SR tree) and pydicom (identity and references).

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_dictionary_std::tags;
use hn_imaging::dicom::{ReadOptions, SourceStudy, read_series};
use hn_imaging::dicom_write::sr::PrivateScheme;
use hn_imaging::dicom_write::{
    Code, ContentItem, ContentValue, DerivedSeries, OverlayImage, Relationship, SeriesMeta,
    SrDocument, derived_uid, secondary_capture, structured_report, uid_from_hash, write_ct_series,
};
use hn_imaging::raster::heat_overlay;
use hn_imaging::{Modality, Volume};

fn tool_missing(what: &str) -> ! {
    panic!(
        "{what} is required by this test and was not found; install it (apt-get install dcmtk \
         dicom3tools; python3 -m pip install pydicom; or run scripts/test.sh, which installs them)"
    )
}

const PATIENT_NAME: &str = "MÜLLER^JÜRGEN";

fn source_series(dir: &Path) -> (SourceStudy, Vec<PathBuf>) {
    let n = 16 * 16 * 4;
    let vol = Volume::new(
        (0..n).map(|i| (i % 97) as f32).collect(),
        [16, 16, 4],
        [0.5, 0.5, 5.0],
        Modality::Ct,
    )
    .unwrap();
    let meta = SeriesMeta {
        patient_id: "TEST-0042".into(),
        patient_name: PATIENT_NAME.into(),
        study_instance_uid: uid_from_hash(101),
        series_instance_uid: uid_from_hash(102),
        frame_of_reference_uid: uid_from_hash(103),
        sop_uid_prefix: uid_from_hash(104),
        study_description: "HEAD CT".into(),
        series_description: "AXIAL 5MM".into(),
        image_comments: String::new(),
        study_date: "20261130".into(),
        study_time: "101500".into(),
        manufacturer: "test".into(),
        window_center: 40.0,
        window_width: 80.0,
        series_number: 2,
        skip_slices: vec![],
    };
    let files = write_ct_series(dir, &vol, &meta).unwrap();
    let read = read_series(&[dir.to_path_buf()], &ReadOptions::default()).unwrap();
    (
        read.source.expect("DICOM input has a source identity"),
        files,
    )
}

fn series(uid_parts: &[&str], number: u32) -> DerivedSeries {
    DerivedSeries {
        series_instance_uid: derived_uid(uid_parts),
        series_number: number,
        series_description: "HemorrhageNet test".into(),
        date: "20261201".into(),
        time: "093000".into(),
        manufacturer: "HemorrhageNet project".into(),
        model_name: "HemorrhageNet".into(),
        software_version: "0.1.0".into(),
    }
}

fn doc(source: &SourceStudy) -> SrDocument {
    let dcm = |v: &str, m: &str| Code::new(v, "DCM", m);
    let unit = Code::new("1", "UCUM", "no units");
    let group = ContentItem::container(
        Relationship::Contains,
        dcm("125007", "Measurement Group"),
        vec![
            ContentItem::new(
                Relationship::HasObsContext,
                dcm("112039", "Tracking Identifier"),
                ContentValue::Text("test finding".into()),
            ),
            ContentItem::new(
                Relationship::HasObsContext,
                dcm("112040", "Tracking Unique Identifier"),
                ContentValue::UidRef(derived_uid(&["tracking"])),
            ),
            ContentItem::new(
                Relationship::Contains,
                dcm("121071", "Finding"),
                ContentValue::Code(Code::new("1386000", "SCT", "Intracranial hemorrhage")),
            ),
            ContentItem::new(
                Relationship::Contains,
                dcm("122157", "Probability"),
                ContentValue::Num {
                    value: 0.123_456_789,
                    unit,
                },
            )
            .with(ContentItem::new(
                Relationship::HasConceptMod,
                Code::new("T1", "99TEST", "Test modifier"),
                ContentValue::Text("ünïcödé ≥ 4".into()),
            )),
        ],
    );
    let library = ContentItem::container(
        Relationship::Contains,
        dcm("111028", "Image Library"),
        vec![ContentItem::container(
            Relationship::Contains,
            dcm("126200", "Image Library Group"),
            source
                .instances
                .iter()
                .map(|i| {
                    ContentItem::new(
                        Relationship::Contains,
                        Code::new("260753009", "SCT", "Source"),
                        ContentValue::Image {
                            sop_class_uid: i.sop_class_uid.clone().unwrap(),
                            sop_instance_uid: i.sop_instance_uid.clone().unwrap(),
                        },
                    )
                })
                .collect(),
        )],
    );
    SrDocument {
        root: dcm("126000", "Imaging Measurement Report"),
        template: Some(("DCMR".into(), "1500".into())),
        children: vec![
            ContentItem::new(
                Relationship::HasConceptMod,
                dcm("121049", "Language of Content Item and Descendants"),
                ContentValue::Code(Code::new("en-US", "RFC5646", "English (United States)")),
            ),
            ContentItem::new(
                Relationship::HasObsContext,
                dcm("121005", "Observer Type"),
                ContentValue::Code(dcm("121007", "Device")),
            ),
            ContentItem::new(
                Relationship::HasObsContext,
                dcm("121012", "Device Observer UID"),
                ContentValue::UidRef(derived_uid(&["device"])),
            ),
            library,
            ContentItem::container(
                Relationship::Contains,
                dcm("126010", "Imaging Measurements"),
                vec![group],
            ),
        ],
        complete: true,
        private_schemes: vec![PrivateScheme {
            designator: "99TEST".into(),
            name: "Test codes".into(),
            responsible_organization: "HemorrhageNet tests".into(),
        }],
    }
}

fn dciodvfy_errors(f: &Path, iod: &str) -> Vec<String> {
    let out = Command::new("dciodvfy")
        .arg(f)
        .output()
        .unwrap_or_else(|_| tool_missing("dciodvfy (dicom3tools)"));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(iod), "dciodvfy did not check {iod}: {text}");
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

#[test]
fn sr_and_overlay_validate_and_carry_the_source_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, files) = source_series(&tmp.path().join("ct"));
    assert_eq!(source.instances.len(), 4);
    assert_eq!(source.value(tags::PATIENT_NAME), Some(PATIENT_NAME));
    source.check().unwrap();
    // Slice k of the volume came from the k-th file written (positions ascend with k).
    for k in 0..4 {
        assert_eq!(
            source.slice_instance(k).unwrap().sop_instance_uid,
            Some(format!("{}.{}", uid_from_hash(104), k + 1))
        );
    }

    let sr_series = series(&["study", "sr"], 9001);
    let sr_uid = derived_uid(&["study", "sr", "1"]);
    let sr = structured_report(&source, &sr_series, &sr_uid, &doc(&source)).unwrap();
    let sr_path = tmp.path().join("sr.dcm");
    std::fs::write(&sr_path, &sr).unwrap();

    let mut pic = heat_overlay(
        &(0..64 * 64).map(|i| (i % 64) as f32).collect::<Vec<_>>(),
        &(0..64 * 64).map(|i| (i / 64) as f32).collect::<Vec<_>>(),
        64,
        64,
    )
    .unwrap();
    pic = pic.with_banner(&[("NOT FOR DIAGNOSIS", [255, 255, 0])]);
    let sc_series = series(&["study", "overlay"], 9002);
    let sc = secondary_capture(
        &source,
        &sc_series,
        &OverlayImage {
            image: &pic,
            sop_instance_uid: derived_uid(&["study", "overlay", "1"]),
            instance_number: 1,
            derivation: "test picture".into(),
            comments: "NOT FOR DIAGNOSIS".into(),
            source_image: Some((
                source.instances[0].sop_class_uid.clone().unwrap(),
                source.instances[0].sop_instance_uid.clone().unwrap(),
            )),
        },
    )
    .unwrap();
    let sc_path = tmp.path().join("sc.dcm");
    std::fs::write(&sc_path, &sc).unwrap();

    assert_eq!(
        dciodvfy_errors(&sr_path, "EnhancedSR"),
        Vec::<String>::new()
    );
    assert_eq!(dciodvfy_errors(&sc_path, "SCImage"), Vec::<String>::new());

    for f in [&sr_path, &sc_path] {
        let out = Command::new("dcmdump")
            .arg(f)
            .output()
            .unwrap_or_else(|_| tool_missing("dcmdump (dcmtk)"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("E:"),
            "dcmdump: {err}"
        );
    }
    let out = Command::new("dsrdump")
        .arg(&sr_path)
        .output()
        .unwrap_or_else(|_| tool_missing("dsrdump (dcmtk)"));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dsrdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("Enhanced SR"), "{tree}");
    assert!(tree.contains("Imaging Measurement Report"), "{tree}");
    assert!(tree.contains("Intracranial hemorrhage"), "{tree}");
    assert!(tree.contains("0.123457"), "{tree}");

    // pydicom: identity decoded equal (UTF-8 here, ISO 8859-1 in the source), references.
    let script = r#"
import sys, pydicom
src = [pydicom.dcmread(f) for f in sys.argv[3:]]
sr = pydicom.dcmread(sys.argv[1]); sc = pydicom.dcmread(sys.argv[2])
s0 = src[0]
for d in (sr, sc):
    assert str(d.PatientName) == str(s0.PatientName) == "MÜLLER^JÜRGEN", d.PatientName
    assert d.PatientID == s0.PatientID and d.StudyInstanceUID == s0.StudyInstanceUID
    assert d.StudyDate == s0.StudyDate and d.AccessionNumber == s0.AccessionNumber
    assert d.SeriesInstanceUID != s0.SeriesInstanceUID
ev = sr.CurrentRequestedProcedureEvidenceSequence[0]
assert ev.StudyInstanceUID == s0.StudyInstanceUID
refs = {r.ReferencedSOPInstanceUID for r in ev.ReferencedSeriesSequence[0].ReferencedSOPSequence}
assert refs == {d.SOPInstanceUID for d in src}, refs
assert ev.ReferencedSeriesSequence[0].SeriesInstanceUID == s0.SeriesInstanceUID
px = sc.pixel_array
assert px.shape == (sc.Rows, sc.Columns, 3) and sc.BurnedInAnnotation == "YES"
mv = sr.ContentSequence[-1].ContentSequence[0].ContentSequence[3].MeasuredValueSequence[0]
assert abs(float(mv.FloatingPointValue) - 0.123456789) < 1e-12
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&sr_path)
        .arg(&sc_path)
        .args(&files)
        .output()
        .unwrap_or_else(|_| tool_missing("python3 with pydicom"));
    assert!(
        out.status.success(),
        "pydicom: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_or_malformed_identity_is_an_error_naming_the_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, _) = source_series(&tmp.path().join("ct"));
    let idx = |tag| {
        hn_imaging::dicom::identity::COPIED_ATTRIBUTES
            .iter()
            .position(|a| a.tag == tag)
            .unwrap()
    };
    let sr = |s: &SourceStudy| {
        structured_report(
            s,
            &series(&["x"], 9001),
            &derived_uid(&["x", "1"]),
            &doc(&source),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let mut s = source.clone();
    s.values[idx(tags::STUDY_INSTANCE_UID)] = None;
    let e = sr(&s);
    assert!(
        e.contains("StudyInstanceUID") && e.contains("missing"),
        "{e}"
    );

    let mut s = source.clone();
    s.values[idx(tags::PATIENT_BIRTH_DATE)] = Some("1950-01-02".into());
    let e = sr(&s);
    assert!(
        e.contains("PatientBirthDate") && e.contains("YYYYMMDD"),
        "{e}"
    );
    assert!(
        !e.contains("1950"),
        "identity values never go into messages: {e}"
    );

    let mut s = source.clone();
    s.values[idx(tags::PATIENT_SEX)] = Some("X".into());
    assert!(sr(&s).contains("PatientSex"));

    let mut s = source.clone();
    s.inconsistent = vec!["PatientID"];
    let e = sr(&s);
    assert!(e.contains("PatientID") && e.contains("differs"), "{e}");

    let mut s = source.clone();
    s.instances[2].sop_instance_uid = None;
    let e = sr(&s);
    assert!(
        e.contains("SOPInstanceUID") && e.contains("instance 3"),
        "{e}"
    );
}

#[test]
fn instances_of_two_studies_in_one_series_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    let (_, files) = source_series(&dir);
    // Rewrite one slice with another PatientID: the series now mixes two patients.
    let mut obj = dicom_object::open_file(&files[1]).unwrap();
    obj.put(dicom_core::DataElement::new(
        tags::PATIENT_ID,
        dicom_core::VR::LO,
        dicom_core::value::PrimitiveValue::from("OTHER-1"),
    ));
    obj.write_to_file(&files[1]).unwrap();
    let read = read_series(&[dir], &ReadOptions::default()).unwrap();
    let e = read.source.unwrap().check().unwrap_err().to_string();
    assert!(e.contains("PatientID") && !e.contains("OTHER"), "{e}");
}
