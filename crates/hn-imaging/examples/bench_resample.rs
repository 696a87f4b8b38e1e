//! Resampling throughput: a 512 × 512 × 192 CT-sized volume shrunk to the 128 × 128 × 24 model
//! grid with `Interp::Area` (anti-aliased) and `Interp::Linear`, for `bench/dicom/resample.sh`,
//! which runs PyTorch's `interpolate` (`area`, MONAI's default for `Resize`, and `trilinear`)
//! on the same volume in the same run.
//!
//! Usage: bench_resample ITERATIONS   prints one JSON line per method (best of ITERATIONS).
//! The volume is `((7i + 13j + 29k) mod 1000) − 500` HU, written the same way in resample.py.

use std::time::Instant;

use hn_imaging::transforms::{Interp, Resample, SliceTarget, Transform};
use hn_imaging::{Modality, Volume};

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: bench_resample ITERATIONS");
    let [nx, ny, nz] = [512usize, 512, 192];
    let mut data = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                data.push(((7 * i + 13 * j + 29 * k) % 1000) as f32 - 500.0);
            }
        }
    }
    let vol = Volume::new(data, [nx, ny, nz], [0.45, 0.45, 0.8], Modality::Ct).expect("volume");
    let threads = rayon::current_num_threads();
    for (name, interp) in [("area", Interp::Area), ("linear", Interp::Linear)] {
        let r = Resample {
            in_plane: Some((128, 128)),
            slices: SliceTarget::Count(24),
            interp,
        };
        let mut best = f64::INFINITY;
        let mut mean = 0.0;
        for _ in 0..iters.max(1) {
            let v = vol.clone();
            let t = Instant::now();
            let out = r.apply(v).expect("resample");
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
            mean = out.data.iter().map(|x| f64::from(*x)).sum::<f64>() / out.data.len() as f64;
        }
        println!(
            "{{\"impl\": \"hn-imaging {name}\", \"threads\": {threads}, \"ms\": {best:.1}, \"mean\": {mean:.4}}}"
        );
    }
}
