//! Seeded 3-D value noise (smooth, values in about -1..1) for sulci, texture and shapes.
//! Value noise on a hashed integer lattice is the cheapest smooth field that is fully
//! determined by a seed: eight table look-ups and a trilinear blend per call.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct Noise3 {
    perm: Box<[u8; 512]>,
    vals: Box<[f32; 256]>,
}

impl Noise3 {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_6973_6533);
        let mut p: Vec<u8> = (0..=255u8).collect();
        for i in (1..256).rev() {
            let j = rng.random_range(0..=i);
            p.swap(i, j);
        }
        let mut perm = Box::new([0u8; 512]);
        for i in 0..512 {
            perm[i] = p[i & 255];
        }
        let mut vals = Box::new([0f32; 256]);
        for v in vals.iter_mut() {
            *v = rng.random_range(-1.0f32..1.0);
        }
        Noise3 { perm, vals }
    }

    #[inline]
    fn lat(&self, x: i64, y: i64, z: i64) -> f32 {
        let h = self.perm[(self.perm
            [(self.perm[(x & 255) as usize] as usize + (y & 255) as usize) & 511]
            as usize
            + (z & 255) as usize)
            & 511];
        self.vals[h as usize]
    }

    /// Smooth noise at p (lattice spacing 1).
    #[inline]
    pub fn eval(&self, p: [f64; 3]) -> f32 {
        let fx = p[0].floor();
        let fy = p[1].floor();
        let fz = p[2].floor();
        let (x0, y0, z0) = (fx as i64, fy as i64, fz as i64);
        let s = |t: f64| (t * t * (3.0 - 2.0 * t)) as f32;
        let (tx, ty, tz) = (s(p[0] - fx), s(p[1] - fy), s(p[2] - fz));
        let l = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = l(self.lat(x0, y0, z0), self.lat(x0 + 1, y0, z0), tx);
        let c10 = l(self.lat(x0, y0 + 1, z0), self.lat(x0 + 1, y0 + 1, z0), tx);
        let c01 = l(self.lat(x0, y0, z0 + 1), self.lat(x0 + 1, y0, z0 + 1), tx);
        let c11 = l(
            self.lat(x0, y0 + 1, z0 + 1),
            self.lat(x0 + 1, y0 + 1, z0 + 1),
            tx,
        );
        l(l(c00, c10, ty), l(c01, c11, ty), tz)
    }
}
