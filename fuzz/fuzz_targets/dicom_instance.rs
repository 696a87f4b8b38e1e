//! One received DICOM instance, as the service admits it (parse, check) and as the reader
//! decodes it to a volume (headers, pixel data in any transfer syntax). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The reader runs third-party decoders under `catch_unwind` (a corrupt stream is an
    // error, not a crash); libfuzzer-sys's hook would abort on those caught panics, so it is
    // replaced by a silent one. A panic that escapes still aborts (libfuzzer-sys catches it
    // at the target's edge) and is reported as a crash.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = hn_serve::ingest::parse_part10(
        "fuzz",
        data.to_vec(),
        64 << 20,
        &hn_serve::ingest::accepted_sop_classes(true),
    );
    let _ = hn_imaging::dicom::read_series_from_memory(
        "fuzz",
        vec![hn_imaging::dicom::MemoryInstance {
            name: "instance 1".into(),
            data: hn_imaging::dicom::MemoryData::Bytes(data.to_vec()),
        }],
        &hn_imaging::ReadOptions::default(),
    );
});
