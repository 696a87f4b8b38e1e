//! An uploaded NIfTI file (plain or gzipped), read as the service checks it. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The reader runs third-party decoders under `catch_unwind` (a corrupt stream is an
    // error, not a crash); libfuzzer-sys's hook would abort on those caught panics, so it is
    // replaced by a silent one. A panic that escapes still aborts (libfuzzer-sys catches it
    // at the target's edge) and is reported as a crash.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = hn_serve::ingest::check_nifti(data);
});
