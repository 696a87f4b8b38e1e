//! DICOM file → HU f32 throughput, one core (run with RAYON_NUM_THREADS=1), for
//! `bench/dicom/run.sh`, which runs pydicom on the same files in the same run.
//!
//! Usage: bench_dicom ITERATIONS FILE...   prints one JSON line per file.
//! mimalloc is the global allocator: with the system allocator every 0.5-2 MB slice buffer is
//! an mmap/munmap pair, which dominated a spike's profile.

use std::path::PathBuf;
use std::time::Instant;

use hn_imaging::dicom::{ReadOptions, read_series};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let iters: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: bench_dicom ITERATIONS FILE...");
    let opts = ReadOptions {
        apply_padding: false, // same values as pydicom's apply_modality_lut
        ..ReadOptions::default()
    };
    for f in args {
        let path = PathBuf::from(&f);
        let paths = [path];
        // Warm-up (page cache, lazy statics) and a checksum so the work is not optimised out.
        let v = read_series(&paths, &opts).expect("decode").volume;
        let check: f64 = v.data.iter().map(|x| *x as f64).sum();
        let t = Instant::now();
        for _ in 0..iters {
            let v = read_series(&paths, &opts).expect("decode").volume;
            std::hint::black_box(&v.data);
        }
        let per = t.elapsed().as_secs_f64() / iters as f64;
        println!(
            "{{\"impl\":\"hn-imaging\",\"file\":\"{f}\",\"iters\":{iters},\"ms_per_file\":{:.4},\"mvox_per_s\":{:.2},\"sum\":{check}}}",
            per * 1e3,
            v.data.len() as f64 / per / 1e6
        );
    }
}
