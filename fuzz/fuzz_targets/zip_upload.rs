//! An uploaded zip (`POST /v1/studies`), unpacked with the service's limits. Must never
//! panic, and never use more than the limits allow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = hn_serve::config::Limits {
        max_instance_bytes: 8 << 20,
        max_study_bytes: 32 << 20,
        max_zip_entries: 256,
        ..Default::default()
    };
    let _ = hn_serve::ingest::unzip(data, &limits);
});
