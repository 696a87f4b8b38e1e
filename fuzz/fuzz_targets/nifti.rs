//! An uploaded NIfTI file (plain or gzipped), read as the service checks it. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hn_serve::ingest::check_nifti(data);
});
