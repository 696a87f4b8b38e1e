//! Dataset layouts on tiny fake trees built in a tempdir from the real test files in
//! `testdata/real-imaging` (DICOM copies get rewritten UIDs and positions).

use std::fs;
use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::tags;
use hn_data::layouts::{self, DatasetKind, StudySource};
use hn_data::{SUBTYPES, Subtype};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/real-imaging")
}

fn ct_slice(i: usize) -> PathBuf {
    let names = ["17106.dcm", "17136.dcm", "17166.dcm", "17196.dcm"];
    testdata()
        .join("dicom/series-ct-head-16px")
        .join(names[i % 4])
}

/// Copy a real CT slice to `dst`, rewriting the UIDs, PatientID and position. The file meta
/// MediaStorageSOPInstanceUID gets `sop` too (RSNA style, `ID_...`).
fn write_slice(
    src: &Path,
    dst: &Path,
    sop: &str,
    study: &str,
    series: &str,
    patient: &str,
    z: f64,
) {
    write_slice_meta(src, dst, sop, study, series, patient, z, None)
}

/// As [`write_slice`], with `meta_sop` (when given) as the file-meta SOP instance UID.
fn write_slice_meta(
    src: &Path,
    dst: &Path,
    sop: &str,
    study: &str,
    series: &str,
    patient: &str,
    z: f64,
    meta_sop: Option<&str>,
) {
    let mut obj = dicom_object::open_file(src).unwrap();
    let put = |obj: &mut dicom_object::DefaultDicomObject, tag, vr, v: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, v));
    };
    put(
        &mut obj,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop),
    );
    put(
        &mut obj,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(study),
    );
    put(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(series),
    );
    put(
        &mut obj,
        tags::PATIENT_ID,
        VR::LO,
        PrimitiveValue::from(patient),
    );
    put(
        &mut obj,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        dicom_value!(Strs, ["-120", "-100", z.to_string().as_str()]),
    );
    put(
        &mut obj,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        dicom_value!(Strs, ["1", "0", "0", "0", "1", "0"]),
    );
    obj.update_meta(|m| m.media_storage_sop_instance_uid = meta_sop.unwrap_or(sop).to_string());
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    obj.write_to_file(dst).unwrap();
}

fn rsna_rows(slice: &str, any: bool, present: &[Subtype]) -> String {
    let mut s = format!("{slice}_any,{}\n", u8::from(any));
    for st in SUBTYPES {
        s += &format!(
            "{slice}_{},{}\n",
            st.rsna_name(),
            u8::from(present.contains(&st))
        );
    }
    s
}

#[test]
fn rsna_groups_studies_orders_slices_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let img = root.join("stage_2_train");
    // Study A: three slices written out of order (z = 10, 0, 5).
    write_slice(
        &ct_slice(0),
        &img.join("ID_a1.dcm"),
        "ID_a1",
        "ID_stA",
        "ID_seA",
        "ID_pA",
        10.0,
    );
    write_slice(
        &ct_slice(1),
        &img.join("ID_a2.dcm"),
        "ID_a2",
        "ID_stA",
        "ID_seA",
        "ID_pA",
        0.0,
    );
    write_slice(
        &ct_slice(2),
        &img.join("ID_a3.dcm"),
        "ID_a3",
        "ID_stA",
        "ID_seA",
        "ID_pA",
        5.0,
    );
    // Study B: two slices, same patient key as nobody else.
    write_slice(
        &ct_slice(3),
        &img.join("ID_b1.dcm"),
        "ID_b1",
        "ID_stB",
        "ID_seB",
        "ID_pB",
        -3.5,
    );
    write_slice(
        &ct_slice(0),
        &img.join("ID_b2.dcm"),
        "ID_b2",
        "ID_stB",
        "ID_seB",
        "ID_pB",
        -8.5,
    );
    // A broken file is skipped with a warning naming it.
    fs::write(img.join("ID_bad.dcm"), b"not a dicom file").unwrap();
    let mut csv = String::from("ID,Label\n");
    csv += &rsna_rows("ID_a1", true, &[Subtype::Subdural]);
    csv += &rsna_rows("ID_a2", false, &[]);
    csv += &rsna_rows(
        "ID_a3",
        true,
        &[Subtype::Subdural, Subtype::Intraventricular],
    );
    csv += &rsna_rows("ID_b1", false, &[]);
    csv += &rsna_rows("ID_b2", false, &[]);
    csv += &rsna_rows("ID_orphan", true, &[Subtype::Epidural]);
    csv += &rsna_rows("ID_b2", false, &[]); // exact duplicate rows are accepted
    fs::write(root.join("stage_2_train.csv"), csv).unwrap();

    let idx = layouts::rsna::load(root, &Default::default()).unwrap();
    assert_eq!(idx.dataset, DatasetKind::Rsna2019);
    assert_eq!(idx.studies.len(), 2, "{:?}", idx.warnings);
    let a = idx.get("ID_stA").unwrap();
    assert_eq!(a.patient_key, "ID_pA");
    let StudySource::Dicom {
        files,
        series_uid,
        rsna_fix,
    } = &a.source
    else {
        panic!("dicom source")
    };
    assert!(*rsna_fix);
    assert_eq!(series_uid.as_deref(), Some("ID_seA"));
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["ID_a2.dcm", "ID_a3.dcm", "ID_a1.dcm"]);
    let sl = a.slice_labels.as_ref().unwrap();
    let ids: Vec<_> = sl.iter().map(|s| s.slice_id.as_str()).collect();
    assert_eq!(ids, ["ID_a2", "ID_a3", "ID_a1"]);
    assert_eq!(sl[0].position_mm, Some(0.0));
    assert_eq!(sl[2].position_mm, Some(10.0));
    assert!(!sl[0].labels.any && sl[1].labels.any);
    let l = a.labels.unwrap();
    assert!(l.any);
    assert_eq!(l.subtypes, [false, true, false, false, true]);
    let b = idx.get("ID_stB").unwrap();
    assert!(!b.labels.unwrap().any);
    let StudySource::Dicom { files, .. } = &b.source else {
        panic!()
    };
    assert!(files[0].ends_with("ID_b2.dcm")); // z = -8.5 first
    // Warnings: the broken file and the orphan label rows.
    assert_eq!(idx.warnings.len(), 2, "{:?}", idx.warnings);
    assert!(idx.warnings.iter().any(|w| w.contains("ID_bad.dcm")));
    assert!(
        idx.warnings
            .iter()
            .any(|w| w.contains("1 labelled slices have no DICOM"))
    );

    // Without labels (test set): studies, no labels.
    let opts = layouts::rsna::RsnaOptions {
        labels_csv: None,
        ..Default::default()
    };
    let t = layouts::rsna::load(root, &opts).unwrap();
    assert_eq!(t.studies.len(), 2);
    assert!(t.studies.iter().all(|s| s.labels.is_none()));
}

/// With numeric file-meta UIDs (the strict header path), the index decodes through hn-imaging.
/// (hn-imaging's reader, like dicom-object, rejects `ID_...` meta UIDs: see the report.)
#[test]
fn rsna_index_decodes_through_hn_imaging() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let img = root.join("stage_2_train");
    for (i, z) in [(1, 10.0), (2, 0.0), (3, 5.0)] {
        let id = format!("ID_c{i}");
        let meta = format!("1.2.826.0.1.3680043.8.498.{i}");
        write_slice_meta(
            &ct_slice(i),
            &img.join(format!("{id}.dcm")),
            &id,
            "ID_stC",
            "ID_seC",
            "ID_pC",
            z,
            Some(&meta),
        );
    }
    let opts = layouts::rsna::RsnaOptions {
        labels_csv: None,
        ..Default::default()
    };
    let idx = layouts::rsna::load(root, &opts).unwrap();
    assert!(idx.warnings.is_empty(), "{:?}", idx.warnings);
    let c = idx.get("ID_stC").unwrap();
    let d = layouts::read_study(c, &Default::default()).unwrap();
    assert_eq!(d.volume.dims, [16, 16, 3]);
    assert!(d.mask.is_none());
    // Slices from z = 0 to z = 10 mm along the volume's k axis.
    let z0 = d.volume.world([0.0, 0.0, 0.0])[2];
    let z2 = d.volume.world([0.0, 0.0, 2.0])[2];
    assert!(
        ((z0 - 0.0).abs() < 1e-6 && (z2 - 10.0).abs() < 1e-6)
            || ((z0 - 10.0).abs() < 1e-6 && (z2 - 0.0).abs() < 1e-6),
        "{z0} {z2}"
    );
}

#[test]
fn rsna_csv_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stage_2_train.csv");
    fs::write(&p, "ID,Label\nID_a_any,1\nID_a_epidural,maybe\n").unwrap();
    let e = layouts::rsna::read_label_csv(&p).unwrap_err().to_string();
    assert!(
        e.contains("stage_2_train.csv") && e.contains("line 3") && e.contains("Label"),
        "{e}"
    );
    fs::write(&p, "ID,Label\nID_a_any,1\nID_a_any,0\n").unwrap();
    let e = layouts::rsna::read_label_csv(&p).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("conflicts"), "{e}");
    fs::write(&p, "ID,Label\nID_a_bleed,1\n").unwrap();
    let e = layouts::rsna::read_label_csv(&p).unwrap_err().to_string();
    assert!(e.contains("unknown label `bleed`"), "{e}");
    fs::write(&p, "Id,Value\n").unwrap();
    let e = layouts::rsna::read_label_csv(&p).unwrap_err().to_string();
    assert!(e.contains("required column") && e.contains("ID"), "{e}");
}

#[test]
fn cq500_majority_vote_and_folder_names() {
    let dir = tempfile::tempdir().unwrap();
    // An extra top folder from unzipping is fine.
    let root = dir.path();
    let s1 = root.join("qure/CQ500CT1 CQ500CT1/Unknown Study");
    for (i, series) in ["CT PLAIN THIN", "CT 5mm"].iter().enumerate() {
        for k in 0..2 {
            let dst = s1.join(series).join(format!("CT00000{k}.dcm"));
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(ct_slice(i * 2 + k), dst).unwrap();
        }
    }
    let s2 = root.join("CQ500CT27 CQ500CT27/Unknown Study/CT 4cm");
    fs::create_dir_all(&s2).unwrap();
    fs::copy(ct_slice(0), s2.join("CT000000.dcm")).unwrap();
    fs::create_dir_all(root.join("not-a-study")).unwrap();
    let header = "name,Category,R1:ICH,R1:IPH,R1:IVH,R1:SDH,R1:EDH,R1:SAH,R1:Fracture,\
R2:ICH,R2:IPH,R2:IVH,R2:SDH,R2:EDH,R2:SAH,R2:Fracture,\
R3:ICH,R3:IPH,R3:IVH,R3:SDH,R3:EDH,R3:SAH,R3:Fracture";
    let csv = format!(
        "{header}\n\
CQ500-CT-1,B1,1,1,0,1,0,0,0,1,1,0,0,0,0,0,0,1,0,0,0,1,0\n\
CQ500-CT-27,B2,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0\n\
CQ500-CT-99,B1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1\n"
    );
    fs::write(root.join("reads.csv"), csv).unwrap();
    let idx = layouts::cq500::load(root).unwrap();
    assert_eq!(idx.studies.len(), 2);
    let a = idx.get("CQ500-CT-1").unwrap();
    let l = a.labels.unwrap();
    // ICH 1,1,0 -> yes; IPH 1,1,1 -> yes; SDH 1,0,0 -> no; SAH 0,0,1 -> no.
    assert!(l.any);
    assert_eq!(l.subtypes, [false, false, false, true, false]);
    let StudySource::Dicom {
        files,
        series_uid,
        rsna_fix,
    } = &a.source
    else {
        panic!()
    };
    assert_eq!(files.len(), 4);
    assert!(series_uid.is_none() && !rsna_fix);
    assert_eq!(a.patient_key, "CQ500-CT-1");
    let b = idx.get("CQ500-CT-27").unwrap();
    assert!(!b.labels.unwrap().any);
    assert!(
        idx.warnings
            .iter()
            .any(|w| w.contains("1 rows have no study folder"))
    );

    // Bad vote value: file, line and column in the error.
    let bad = "name,R1:ICH,R1:IPH,R1:IVH,R1:SDH,R1:EDH,R1:SAH\nCQ500-CT-1,1,0,0,0,0,yes?\n";
    fs::write(root.join("reads.csv"), bad).unwrap();
    let e = layouts::cq500::load(root).unwrap_err().to_string();
    assert!(
        e.contains("reads.csv") && e.contains("line 2") && e.contains("R1:SAH"),
        "{e}"
    );
}

#[test]
fn ctich_volumes_masks_slice_labels_and_demographics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("ct_scans")).unwrap();
    fs::create_dir_all(root.join("masks")).unwrap();
    let nii = testdata().join("nifti/anatomical.nii");
    let niigz = testdata().join("nifti/aniso_vox.nii.gz");
    fs::copy(&nii, root.join("ct_scans/049.nii")).unwrap();
    fs::copy(&nii, root.join("masks/049.nii")).unwrap();
    fs::copy(&niigz, root.join("ct_scans/050.nii.gz")).unwrap();
    fs::write(
        root.join("hemorrhage_diagnosis_raw_ct.csv"),
        "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage,Fracture_Yes_No\n\
49,1,0,0,0,0,0,1,0\n49,2,0,1,0,0,0,0,1\n49,3,1,1,0,0,0,0,0\n50,1,0,0,0,0,0,1,0\n50,2,0,0,0,0,0,1,0\n51,1,0,0,0,0,0,1,0\n",
    )
    .unwrap();
    fs::write(
        root.join("Patient_demographics.csv"),
        "Patient Number,\"Age\n(years)\",Gender,Hemorrhage type\n49,72,Male,IPH\n50,35,Female,\n",
    )
    .unwrap();
    let idx = layouts::ctich::load(root).unwrap();
    assert_eq!(idx.studies.len(), 2);
    let a = idx.get("CTICH-049").unwrap();
    let StudySource::Nifti { path, mask } = &a.source else {
        panic!()
    };
    assert!(path.ends_with("ct_scans/049.nii"));
    assert!(mask.as_ref().unwrap().ends_with("masks/049.nii"));
    let l = a.labels.unwrap();
    assert!(l.any);
    assert_eq!(l.subtypes, [false, false, false, true, true]);
    let sl = a.slice_labels.as_ref().unwrap();
    assert_eq!(sl.len(), 3);
    assert_eq!(sl[1].index, Some(1));
    assert!(!sl[0].labels.any && sl[1].labels.any);
    assert_eq!(a.clinical.age, Some(72.0));
    assert_eq!(a.clinical.sex_male, Some(true));
    let d = layouts::read_study(a, &Default::default()).unwrap();
    assert_eq!(d.volume.dims, [33, 41, 25]);
    assert_eq!(d.mask.as_ref().unwrap().dims, d.volume.dims);
    let b = idx.get("CTICH-050").unwrap();
    assert!(!b.labels.unwrap().any);
    assert!(b.notes.iter().any(|n| n == "no mask"));
    assert_eq!(b.clinical.sex_male, Some(false));
    assert!(
        idx.warnings
            .iter()
            .any(|w| w.contains("1 patient numbers have no volume"))
    );
}

#[test]
fn manifest_reads_paths_labels_clinical_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let series = root.join("studies/s1");
    fs::create_dir_all(&series).unwrap();
    for i in 0..4 {
        fs::copy(ct_slice(i), series.join(format!("{i}.dcm"))).unwrap();
    }
    fs::copy(testdata().join("nifti/anatomical.nii"), root.join("s2.nii")).unwrap();
    let m = root.join("manifest.csv");
    fs::write(
        &m,
        "study_key,patient_key,path,mask,any,epidural,subdural,subarachnoid,intraparenchymal,intraventricular,age,gcs,sex_male,anticoagulant,premorbid_mrs,mortality_30d,mrs_90d,site\n\
s1,p1,studies/s1,,1,0,1,0,0,0,81,7,1,0,2,1,6,A\n\
s2,p1,s2.nii,s2.nii,,,,,,,45.5,,0,NA,,0,2,B\n\
s3,p2,missing.nii,,0,0,0,0,0,0,,,,,,,,C\n",
    )
    .unwrap();
    let idx = layouts::manifest::load(&m).unwrap();
    assert_eq!(idx.studies.len(), 3);
    let s1 = &idx.studies[0];
    assert_eq!((s1.key.as_str(), s1.patient_key.as_str()), ("s1", "p1"));
    let StudySource::Dicom { files, .. } = &s1.source else {
        panic!()
    };
    assert_eq!(files.len(), 4);
    let l = s1.labels.unwrap();
    assert!(l.any && l.subtypes[Subtype::Subdural.index()]);
    assert_eq!(s1.clinical.age, Some(81.0));
    assert_eq!(s1.clinical.gcs, Some(7));
    assert_eq!(s1.clinical.premorbid_mrs, Some(2));
    assert_eq!(s1.outcomes.mortality_30d, Some(true));
    assert_eq!(s1.outcomes.mrs_90d, Some(6));
    let s2 = &idx.studies[1];
    assert!(s2.labels.is_none());
    assert!(matches!(
        &s2.source,
        StudySource::Nifti { mask: Some(_), .. }
    ));
    assert_eq!(s2.clinical.gcs, None);
    assert_eq!(s2.clinical.anticoagulant, None);
    assert_eq!(s2.outcomes.mrs_90d, Some(2));
    assert!(
        idx.warnings
            .iter()
            .any(|w| w.contains("unknown columns: site"))
    );
    assert!(idx.warnings.iter().any(|w| w.contains("missing.nii")));
    assert!(
        idx.studies[2]
            .notes
            .iter()
            .any(|n| n.contains("does not exist"))
    );
}

#[test]
fn manifest_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.csv");
    let cases = [
        ("path,gcs\na.nii,2\n", "line 2, column gcs"),
        ("path,mrs_90d\na.nii,7\n", "line 2, column mrs_90d"),
        ("path,age\na.nii,old\n", "line 2, column age"),
        ("path,any,epidural\na.nii,1,0\n", "all six"),
        ("study_key,path\nx,a.nii\nx,b.nii\n", "duplicate study key"),
        ("study_key\nx\n", "required column is missing"),
        ("path,age\na.nii,1,2\n", "line 2"),
        ("path,modality\na.nii,PET\n", "line 2, column modality"),
        (
            "path,mask,modality\nmr1,m.nii,MR\n",
            "neither a mask nor a series UID",
        ),
    ];
    for (text, want) in cases {
        fs::write(&m, text).unwrap();
        let e = layouts::manifest::load(&m).unwrap_err().to_string();
        assert!(e.contains("m.csv") && e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn manifest_mr_rows_are_mr_studies_read_sequence_by_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // An MR study as a folder of NIfTI files named by sequence (a real 4 × 4 × 5 mm MR as
    // its T2), and a CT row beside it.
    let mr = root.join("mr1");
    fs::create_dir_all(&mr).unwrap();
    fs::copy(
        testdata().join("nifti/aniso_vox.nii.gz"),
        mr.join("t2.nii.gz"),
    )
    .unwrap();
    fs::copy(testdata().join("nifti/anatomical.nii"), root.join("ct.nii")).unwrap();
    fs::write(root.join("file.nii"), "not a folder").unwrap();
    let m = root.join("manifest.csv");
    fs::write(
        &m,
        "study_key,path,modality\nm1,mr1,mr\nc1,ct.nii,\nc2,ct.nii,CT\n",
    )
    .unwrap();
    let idx = layouts::manifest::load(&m).unwrap();
    assert!(idx.has_mr());
    assert!(matches!(&idx.studies[0].source, StudySource::Mr { path } if path == &mr));
    assert!(!idx.studies[1].source.is_mr() && !idx.studies[2].source.is_mr());
    // Read per sequence: T2 from its file name, the rest missing.
    let read = layouts::read_mr_study_record(&idx.studies[0]).unwrap();
    assert_eq!(read.sequences.len(), 1);
    assert_eq!(read.sequences[0].sequence, hn_imaging::mr::MrSequence::T2);
    assert_eq!(read.missing.len(), 4);
    // Neither reader takes the other's record.
    let e = layouts::read_study(&idx.studies[0], &Default::default()).unwrap_err();
    assert!(e.to_string().contains("sequence by sequence"), "{e}");
    assert!(layouts::read_mr_study_record(&idx.studies[1]).is_err());
    // An MR row's path must be a folder.
    fs::write(&m, "study_key,path,modality\nm1,file.nii,MR\n").unwrap();
    let e = layouts::manifest::load(&m).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("folder"), "{e}");
}
