//! One received DICOM instance, as the service admits it (parse, check) and as the reader
//! decodes it to a volume (headers, pixel data in any transfer syntax). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hn_serve::ingest::parse_part10("fuzz", data.to_vec(), 64 << 20);
    let _ = hn_imaging::dicom::read_series_from_memory(
        "fuzz",
        vec![hn_imaging::dicom::MemoryInstance {
            name: "instance 1".into(),
            data: hn_imaging::dicom::MemoryData::Bytes(data.to_vec()),
        }],
        &hn_imaging::ReadOptions::default(),
    );
});
