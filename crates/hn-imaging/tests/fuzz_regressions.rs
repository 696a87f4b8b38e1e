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
