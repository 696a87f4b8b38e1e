//! Header traps that no shared test file carries, built as small in-memory DICOM objects:
//! the RSNA-2019 fix, VR UN rescale, non-numeric rescale, MONOCHROME1, Modality LUT,
//! mixed matrix sizes, duplicate positions and gantry tilt, missing pixel data.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};
use hn_imaging::ImagingError;
use hn_imaging::dicom::{ReadOptions, read_object, read_series};

fn s(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

/// A 4x3 CT slice with 12-bit unsigned stored values.
fn slice(pixels: &[u16], rows: u16, cols: u16, z: f64) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    o.put(s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
    o.put(s(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        &format!("2.25.{}", (z * 10.0) as i64 + 1000),
    ));
    o.put(s(tags::MODALITY, VR::CS, "CT"));
    o.put(s(tags::SERIES_INSTANCE_UID, VR::UI, "2.25.42"));
    o.put(s(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        "1\\0\\0\\0\\1\\0",
    ));
    o.put(s(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &format!("0\\0\\{z}"),
    ));
    o.put(s(tags::PIXEL_SPACING, VR::DS, "0.5\\0.5"));
    o.put(s(tags::SLICE_THICKNESS, VR::DS, "2"));
    o.put(us(tags::SAMPLES_PER_PIXEL, 1));
    o.put(s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    o.put(us(tags::ROWS, rows));
    o.put(us(tags::COLUMNS, cols));
    o.put(us(tags::BITS_ALLOCATED, 16));
    o.put(us(tags::BITS_STORED, 12));
    o.put(us(tags::HIGH_BIT, 11));
    o.put(us(tags::PIXEL_REPRESENTATION, 0));
    o.put(s(tags::RESCALE_SLOPE, VR::DS, "1"));
    o.put(s(tags::RESCALE_INTERCEPT, VR::DS, "-1024"));
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.to_vec().into()),
    ));
    o
}

fn file(o: InMemDicomObject) -> FileDicomObject<InMemDicomObject> {
    o.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .unwrap()
}

fn p() -> &'static Path {
    Path::new("synthetic.dcm")
}

#[test]
fn plain_synthetic_slice_rescales() {
    let v = read_object(
        file(slice(&[0, 1024, 2048, 4095], 2, 2, 0.0)),
        p(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(v.data, vec![-1024.0, 0.0, 1024.0, 3071.0]);
    assert_eq!(v.spacing, [0.5, 0.5, 2.0]);
}

#[test]
fn rsna_fix_shifts_and_wraps_only_when_switched_on() {
    // An RSNA-2019 style slice: stored values written as (HU + 1000) - 1000 wrapped at 4096,
    // with a bogus intercept of 0. Air -1000 HU was stored as 4096 - 1000 + ... => 3096.
    let mut o = slice(&[3096, 0, 40, 1000], 2, 2, 0.0);
    o.put(s(tags::RESCALE_INTERCEPT, VR::DS, "0"));
    let off = read_object(file(o.clone()), p(), &ReadOptions::default()).unwrap();
    assert_eq!(
        off.data,
        vec![3096.0, 0.0, 40.0, 1000.0],
        "off: values as stored"
    );
    let on = ReadOptions {
        rsna_fix: true,
        ..ReadOptions::default()
    };
    let fixed = read_object(file(o), p(), &on).unwrap();
    // (3096+1000) wraps to 0 -> -1000 HU; 0 -> 1000-1000 = 0; 40 -> 40; 1000 -> 1000.
    assert_eq!(fixed.data, vec![-1000.0, 0.0, 40.0, 1000.0]);
    assert!(fixed.provenance.notes.iter().any(|n| n.contains("RSNA")));
    // A normal slice (intercept -1024) is left alone even with the switch on.
    let normal = read_object(file(slice(&[0, 1024, 2048, 4095], 2, 2, 0.0)), p(), &on).unwrap();
    assert_eq!(normal.data, vec![-1024.0, 0.0, 1024.0, 3071.0]);
}

#[test]
fn rescale_stored_as_vr_un_is_read_by_dictionary_vr() {
    let mut o = slice(&[0, 1024, 2048, 4095], 2, 2, 0.0);
    o.put(DataElement::new(
        tags::RESCALE_INTERCEPT,
        VR::UN,
        PrimitiveValue::from(b"-1024 ".to_vec()),
    ));
    o.put(DataElement::new(
        tags::RESCALE_SLOPE,
        VR::UN,
        PrimitiveValue::from(b"1 ".to_vec()),
    ));
    let v = read_object(file(o), p(), &ReadOptions::default()).unwrap();
    assert_eq!(v.data, vec![-1024.0, 0.0, 1024.0, 3071.0]);
}

#[test]
fn non_numeric_rescale_is_an_error() {
    let mut o = slice(&[0, 1, 2, 3], 2, 2, 0.0);
    o.put(s(tags::RESCALE_INTERCEPT, VR::DS, "minus1024"));
    let e = read_object(file(o), p(), &ReadOptions::default()).unwrap_err();
    match &e {
        ImagingError::BadAttribute { attribute, .. } => assert_eq!(attribute, "RescaleIntercept"),
        other => panic!("wrong error {other}"),
    }
    assert!(e.to_string().contains("synthetic.dcm"));
}

#[test]
fn missing_pixel_data_is_not_an_image() {
    let mut o = slice(&[0, 1, 2, 3], 2, 2, 0.0);
    o.remove_element(tags::PIXEL_DATA);
    let e = read_object(file(o), p(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::NotImage { .. }), "{e}");
}

#[test]
fn short_pixel_data_is_truncated() {
    let o = slice(&[0, 1, 2], 2, 2, 0.0);
    let e = read_object(file(o), p(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::Truncated { .. }), "{e}");
    // One 16-bit sample short of 2 × 2, named with the file.
    let msg = e.to_string();
    assert!(
        msg.contains("2 bytes missing") && msg.contains("synthetic.dcm"),
        "{msg}"
    );
}

#[test]
fn signed_bits_stored_are_sign_extended() {
    // 12-bit signed: 0x0FFF is -1, 0x0800 is -2048; high bits beyond BitsStored are junk.
    let mut o = slice(&[0xFFFF, 0x0800, 0x07FF, 0xF001], 2, 2, 0.0);
    o.put(us(tags::PIXEL_REPRESENTATION, 1));
    o.put(s(tags::RESCALE_INTERCEPT, VR::DS, "0"));
    let v = read_object(file(o), p(), &ReadOptions::default()).unwrap();
    assert_eq!(v.data, vec![-1.0, -2048.0, 2047.0, 1.0]);
}

#[test]
fn monochrome1_without_rescale_is_inverted() {
    let mut o = slice(&[0, 1, 4094, 4095], 2, 2, 0.0);
    o.put(s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1"));
    o.put(s(tags::MODALITY, VR::CS, "CR"));
    o.remove_element(tags::RESCALE_INTERCEPT);
    o.remove_element(tags::RESCALE_SLOPE);
    let v = read_object(file(o), p(), &ReadOptions::default()).unwrap();
    assert_eq!(v.data, vec![4095.0, 4094.0, 1.0, 0.0]);
}

#[test]
fn modality_lut_sequence_is_applied() {
    let mut o = slice(&[0, 1, 2, 3], 2, 2, 0.0);
    o.remove_element(tags::RESCALE_INTERCEPT);
    o.remove_element(tags::RESCALE_SLOPE);
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::LUT_DESCRIPTOR,
        VR::US,
        PrimitiveValue::U16(vec![3u16, 1, 16].into()),
    ));
    item.put(DataElement::new(
        tags::LUT_DATA,
        VR::OW,
        PrimitiveValue::U16(vec![100u16, 200, 300].into()),
    ));
    o.put(DataElement::new(
        tags::MODALITY_LUT_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![item]),
    ));
    let v = read_object(file(o), p(), &ReadOptions::default()).unwrap();
    // 0 is below the first mapped value (1): clamps to the first entry.
    assert_eq!(v.data, vec![100.0, 100.0, 200.0, 300.0]);
}

fn write_series(dir: &Path, objs: Vec<InMemDicomObject>) -> Vec<PathBuf> {
    objs.into_iter()
        .enumerate()
        .map(|(i, o)| {
            let path = dir.join(format!("{i}.dcm"));
            file(o).write_to_file(&path).unwrap();
            path
        })
        .collect()
}

#[test]
fn mixed_matrix_sizes_in_a_series_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_series(
        dir.path(),
        vec![slice(&[0; 4], 2, 2, 0.0), slice(&[0; 6], 2, 3, 2.0)],
    );
    let e = read_series(&[dir.path().to_path_buf()], &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, ImagingError::InconsistentSeries { .. }), "{e}");
}

#[test]
fn duplicates_and_uneven_spacing_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_series(
        dir.path(),
        vec![
            slice(&[1; 4], 2, 2, 4.0),
            slice(&[2; 4], 2, 2, 0.0),
            slice(&[3; 4], 2, 2, 2.0),
            slice(&[4; 4], 2, 2, 2.0),
            slice(&[5; 4], 2, 2, 10.0),
        ],
    );
    let v = read_series(&[dir.path().to_path_buf()], &ReadOptions::default())
        .unwrap()
        .volume;
    assert_eq!(v.dims[2], 4, "one duplicate dropped");
    assert_eq!(v.slice(0)[0], 2.0 - 1024.0, "z=0 first");
    assert_eq!(v.slice(3)[0], 5.0 - 1024.0, "z=10 last");
    assert_eq!(v.spacing[2], 2.0, "median of 2, 2, 6");
    let w = v.provenance.warnings.join("\n");
    assert!(w.contains("duplicate"), "{w}");
    assert!(w.contains("gap"), "{w}");
}

#[test]
fn gantry_tilt_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let objs = (0..3)
        .map(|k| {
            let mut o = slice(&[0; 4], 2, 2, 0.0);
            let z = 2.0 * k as f64;
            o.put(s(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &format!("0\\{}\\{z}", 0.5 * k as f64),
            ));
            o.put(s(tags::SOP_INSTANCE_UID, VR::UI, &format!("2.25.9{k}")));
            o
        })
        .collect();
    write_series(dir.path(), objs);
    let v = read_series(&[dir.path().to_path_buf()], &ReadOptions::default())
        .unwrap()
        .volume;
    assert!(
        v.provenance.warnings.iter().any(|w| w.contains("tilt")),
        "{:?}",
        v.provenance.warnings
    );
}

#[test]
fn axial_ct_beats_a_longer_localizer_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut objs: Vec<InMemDicomObject> = (0..3)
        .map(|k| slice(&[0; 4], 2, 2, 2.0 * k as f64))
        .collect();
    // A sagittal series with more slices.
    for k in 0..5 {
        let mut o = slice(&[0; 4], 2, 2, 0.0);
        o.put(s(tags::SERIES_INSTANCE_UID, VR::UI, "2.25.7"));
        o.put(s(tags::SOP_INSTANCE_UID, VR::UI, &format!("2.25.8{k}")));
        o.put(s(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            "0\\1\\0\\0\\0\\-1",
        ));
        o.put(s(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("{k}\\0\\0"),
        ));
        objs.push(o);
    }
    write_series(dir.path(), objs);
    let st = read_series(&[dir.path().to_path_buf()], &ReadOptions::default()).unwrap();
    assert_eq!(st.chosen_rule, "axial CT first");
    assert_eq!(st.volume.provenance.series_uid.as_deref(), Some("2.25.42"));
    assert_eq!(st.series.len(), 2);
    assert!(st.volume.provenance.notes[0].contains("axial CT first"));
}

#[test]
fn non_image_objects_in_a_folder_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = slice(&[0; 4], 2, 2, 0.0);
    report.remove_element(tags::PIXEL_DATA);
    report.put(s(tags::SOP_INSTANCE_UID, VR::UI, "2.25.555"));
    write_series(
        dir.path(),
        vec![slice(&[1; 4], 2, 2, 0.0), slice(&[2; 4], 2, 2, 2.0), report],
    );
    let st = read_series(&[dir.path().to_path_buf()], &ReadOptions::default()).unwrap();
    assert_eq!(st.volume.dims, [2, 2, 2]);
    assert_eq!(st.skipped.len(), 1);
    assert!(
        st.skipped[0].reason.contains("not an image"),
        "{:?}",
        st.skipped
    );
    assert!(
        st.volume
            .provenance
            .warnings
            .iter()
            .any(|w| w.contains("skipped"))
    );
}

#[test]
fn single_slice_spacing_comes_from_slice_thickness() {
    let v = read_object(
        file(slice(&[0; 4], 2, 2, 5.0)),
        p(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(v.spacing[2], 2.0);
    assert_eq!(v.origin, [0.0, 0.0, 5.0]);
}

#[test]
fn pixel_padding_value_and_range_limit() {
    // Stored 0..=2 is padding (range), 3000 is real; CT fill is at most -1024 HU.
    let mut o = slice(&[0, 1, 2, 3000], 2, 2, 0.0);
    o.put(us(tags::PIXEL_PADDING_VALUE, 2));
    o.put(us(tags::PIXEL_PADDING_RANGE_LIMIT, 0));
    let v = read_object(file(o.clone()), p(), &ReadOptions::default()).unwrap();
    assert_eq!(v.data, vec![-1024.0, -1024.0, -1024.0, 1976.0]);
    assert!(
        v.provenance
            .notes
            .iter()
            .any(|n| n.contains("3 padding voxel"))
    );
    // Padding off: plain rescale, like pydicom.
    let raw = ReadOptions {
        apply_padding: false,
        ..ReadOptions::default()
    };
    let v = read_object(file(o), p(), &raw).unwrap();
    assert_eq!(v.data, vec![-1024.0, -1023.0, -1022.0, 1976.0]);
    // Without a range limit only the single value is padding.
    let mut o = slice(&[0, 1, 2, 3000], 2, 2, 0.0);
    o.put(us(tags::PIXEL_PADDING_VALUE, 2));
    let v = read_object(file(o), p(), &ReadOptions::default()).unwrap();
    assert_eq!(v.data, vec![-1024.0, -1023.0, -1024.0, 1976.0]);
}
