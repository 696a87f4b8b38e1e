//! A DIMSE command set from an association peer. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hn_serve::dimse::parse(data);
});
