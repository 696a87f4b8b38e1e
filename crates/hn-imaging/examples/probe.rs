//! Print what hn-imaging reads from each path given (developer probe).
use hn_imaging::{AnyReadOptions, read_any};
use std::path::Path;

fn main() {
    let raw = std::env::var("RAW").is_ok();
    for a in std::env::args().skip(1) {
        let mut o = AnyReadOptions::default();
        o.dicom.apply_padding = !raw;
        match read_any(Path::new(&a), &o) {
            Ok(s) => {
                let v = &s.volume;
                if let Ok(out) = std::env::var("OUT") {
                    hn_imaging::nifti::write_volume(Path::new(&out), v).unwrap();
                }
                let (lo, hi) = v.min_max().unwrap();
                let sum: f64 = v.data.iter().map(|x| *x as f64).sum();
                println!(
                    "{a}: {:?} dims {:?} sp {:?} min {lo} max {hi} sum {sum} rule {} warn {:?}",
                    v.modality, v.dims, v.spacing, s.chosen_rule, v.provenance.warnings
                );
            }
            Err(e) => println!("{a}: ERR [{}] {e}", e.kind()),
        }
    }
}
