//! Inputs found by the fuzz targets (docs/FUZZING.md), kept as tests.

use std::path::Path;

use hn_imaging::ImagingError;

fn testdata(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

/// `dicom_instance` fuzz target, first minute: a 46 KB instance (a mutated real test file)
/// whose element (EE04,DF03) has a non-standard VR and so a 4-byte length of 3 942 914 564.
/// dicom-rs would allocate that before failing; the reader's length walk refuses it first,
/// without allocating.
#[test]
fn a_declared_length_beyond_the_file_is_refused_before_any_allocation() {
    let p = testdata("fuzz/dicom-oom-declared-length.dcm");
    let bytes = std::fs::read(&p).unwrap();
    let e = hn_imaging::dicom::open_bytes(&p, &bytes).unwrap_err();
    assert!(matches!(e, ImagingError::Truncated { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("(EE04,DF03)") && msg.contains("declares 3942914564 bytes"),
        "{msg}"
    );
    // The same bytes as a C-STORE data set (no preamble, explicit VR little endian).
    let start = bytes.windows(4).position(|w| w == b"DICM").unwrap() + 4;
    let e = hn_imaging::dicom::check_dataset_lengths(&p, &bytes[start..], "1.2.840.10008.1.2.1");
    assert!(e.is_err());
}

/// `dicom_instance` fuzz target, second run: a deflated data set (transfer syntax
/// 1.2.840.10008.1.2.1.99) whose inflated elements declare gigabytes. The walk now inflates
/// (bounded) and checks the inflated data set too.
#[test]
fn a_deflated_data_set_is_walked_after_a_bounded_inflate() {
    let p = testdata("fuzz/dicom-oom-deflated.dcm");
    let bytes = std::fs::read(&p).unwrap();
    let e = hn_imaging::dicom::open_bytes(&p, &bytes).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("declares") || msg.contains("inflate"),
        "refused by the walk, not by dicom-rs after allocating: {msg}"
    );
}

/// `dicom_instance` fuzz target, third run: an RLE stream that makes dicom-rs's RLE decoder
/// index out of bounds (a panic inside the dependency). The reader runs decoders under
/// `catch_unwind`, so the study is refused with an error and the caller (a service worker)
/// goes on.
#[test]
fn a_panicking_codec_is_an_error_not_a_crash() {
    let p = testdata("fuzz/dicom-rle-decoder-panic.dcm");
    let r = hn_imaging::dicom::read_series_from_memory(
        "fuzz",
        vec![hn_imaging::dicom::MemoryInstance {
            name: "instance 1".into(),
            data: hn_imaging::dicom::MemoryData::Bytes(std::fs::read(&p).unwrap()),
        }],
        &hn_imaging::ReadOptions::default(),
    );
    assert!(r.is_err());
}

/// `dicom_instance` fuzz target, fourth run: a foreign tag (007A,0003) inside the file meta
/// group. dicom-rs reads the meta by its group length and goes on to an element declaring
/// 3.1 GB; the walk now ends the meta where the group length says, as dicom-rs does.
#[test]
fn the_meta_group_ends_where_its_group_length_says() {
    let p = testdata("fuzz/dicom-oom-foreign-tag-in-meta.dcm");
    let bytes = std::fs::read(&p).unwrap();
    let msg = hn_imaging::dicom::open_bytes(&p, &bytes)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("declares"), "refused by the walk: {msg}");
}

/// `dicom_instance` fuzz target, fifth run: the meta group length ends inside an element;
/// dicom-rs finishes that element and starts the data set after it, where a (0000,0000)
/// element declares 4.3 GB. The walk follows the same rule.
#[test]
fn the_meta_group_ends_after_the_element_that_reaches_its_length() {
    let p = testdata("fuzz/dicom-oom-meta-overshoot.dcm");
    let bytes = std::fs::read(&p).unwrap();
    let msg = hn_imaging::dicom::open_bytes(&p, &bytes)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("declares"), "refused by the walk: {msg}");
}

/// `dicom_instance` fuzz target, sixth run: a 3.5 KB JPEG 2000 instance with an element
/// (0008,DEEE) of unknown VR (so UN) and undefined length. dicom-rs reads it as a sequence in
/// the same explicit encoding and, inside its item, allocates 2.76 GB for (1D34,160D); the walk
/// used to stop at undefined-length UN elements and now descends into them the same way.
#[test]
fn an_undefined_length_un_element_is_walked_as_a_sequence() {
    let p = testdata("fuzz/dicom-oom-undefined-length-un.dcm");
    let bytes = std::fs::read(&p).unwrap();
    let msg = hn_imaging::dicom::open_bytes(&p, &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("(1D34,160D)") && msg.contains("declares 2760537443 bytes"),
        "refused by the walk: {msg}"
    );
}
