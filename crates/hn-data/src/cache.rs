//! Preprocessing cache: one file per (study, preprocessing config) holding the windowed
//! channels `[C][S][H][W]` and labels, so training epochs do not decode DICOM again. What is
//! stored is defined by the preprocessing contract ([`crate::preprocess`]).
//!
//! # File format (`.hnc`, all integers little-endian)
//! ```text
//! 8 bytes   magic "HNCACHE1"
//! 4 bytes   u32 header length N
//! N bytes   header, UTF-8 JSON (CacheHeader: format version, study key, config + its hash,
//!           dtype, shape, labels, payload length)
//! P bytes   payload: C·S·H·W values, f32 / f16 / u8 little-endian, C-order
//! 32 bytes  SHA-256 of everything before it
//! ```
//! The file name is `<key-slug>-<key-hash8>.<config-hash16>.hnc`, so a changed config never
//! finds an old entry. On load the checksum, magic, format version, study key and config hash
//! are all verified; a corrupt or stale entry is an error from [`Cache::load`] and is rebuilt
//! by [`Cache::get_or_build`], never silently used. Writes go to a temporary file in the cache
//! folder that is fsync'ed and renamed over the target (atomic on POSIX and Windows).
//!
//! Hand-rolled rather than e.g. safetensors/npy because the entry also carries labels, the
//! config and a whole-file checksum; the format is ~100 lines and has no alignment needs.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StudyLabels;
pub use crate::preprocess::{CacheDtype, CachedStudy, PreprocessConfig, preprocess};
use crate::preprocess::{hex, u8_code, u8_value};

const MAGIC: &[u8; 8] = b"HNCACHE1";
/// Bumped whenever the layout of the file or the meaning of a config field changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheHeader {
    format_version: u32,
    study_key: String,
    config_hash: String,
    config: PreprocessConfig,
    shape: [usize; 4],
    labels: Option<StudyLabels>,
    slice_labels: Option<Vec<StudyLabels>>,
    spacing_mm: [f64; 3],
    payload_len: u64,
}

/// Cache errors. `Corrupt` and `Stale` entries are rebuilt by [`Cache::get_or_build`].
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt cache entry: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: stale cache entry: {reason}")]
    Stale { path: PathBuf, reason: String },
    #[error("cannot store study: {0}")]
    Invalid(String),
}

/// What [`Cache::get_or_build`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheOutcome {
    Hit,
    Built,
    /// A corrupt or stale entry was found and replaced; `reason` says why.
    Rebuilt {
        reason: String,
    },
}

/// A folder of cache entries for one preprocessing config.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    config: PreprocessConfig,
    config_hash: String,
}

impl Cache {
    /// Open (creating) the cache folder.
    pub fn new(dir: impl Into<PathBuf>, config: PreprocessConfig) -> Result<Self, CacheError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
        let config_hash = config.hash();
        Ok(Cache {
            dir,
            config,
            config_hash,
        })
    }

    pub fn config(&self) -> &PreprocessConfig {
        &self.config
    }

    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// Entry path of a study key.
    pub fn path_for(&self, key: &str) -> PathBuf {
        let slug: String = key
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let kh = &hex(&Sha256::digest(key.as_bytes()))[..8];
        self.dir
            .join(format!("{slug}-{kh}.{}.hnc", self.config_hash))
    }

    /// Encode an entry to bytes.
    fn encode(&self, key: &str, s: &CachedStudy) -> Result<Vec<u8>, CacheError> {
        let n: usize = s.shape.iter().product();
        if s.data.len() != n {
            return Err(CacheError::Invalid(format!(
                "data has {} values but shape {:?} needs {n}",
                s.data.len(),
                s.shape
            )));
        }
        if let Some(sl) = &s.slice_labels
            && sl.len() != s.shape[1]
        {
            return Err(CacheError::Invalid(format!(
                "{} slice labels for {} slices",
                sl.len(),
                s.shape[1]
            )));
        }
        let dtype = self.config.dtype;
        let header = CacheHeader {
            format_version: FORMAT_VERSION,
            study_key: key.to_string(),
            config_hash: self.config_hash.clone(),
            config: self.config.clone(),
            shape: s.shape,
            labels: s.labels,
            slice_labels: s.slice_labels.clone(),
            spacing_mm: s.spacing_mm,
            payload_len: (n * dtype.bytes()) as u64,
        };
        let hjson = serde_json::to_vec(&header).map_err(|e| CacheError::Invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(12 + hjson.len() + n * dtype.bytes() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(hjson.len() as u32).to_le_bytes());
        out.extend_from_slice(&hjson);
        match dtype {
            CacheDtype::F32 => s
                .data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            CacheDtype::F16 => s
                .data
                .iter()
                .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
            CacheDtype::U8 { lo, hi } => s.data.iter().for_each(|v| out.push(u8_code(*v, lo, hi))),
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Store an entry atomically (temporary file in the cache folder, fsync, rename).
    pub fn store(&self, key: &str, study: &CachedStudy) -> Result<PathBuf, CacheError> {
        let bytes = self.encode(key, study)?;
        let path = self.path_for(key);
        let io = |source| CacheError::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(".hnc")
            .tempfile_in(&self.dir)
            .map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(path)
    }

    /// Load an entry: `Ok(None)` when absent, `Err(Corrupt | Stale)` when it must be rebuilt.
    pub fn load(&self, key: &str) -> Result<Option<CachedStudy>, CacheError> {
        let path = self.path_for(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        let corrupt = |reason: String| CacheError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() < 12 + 32 || &bytes[..8] != MAGIC {
            return Err(corrupt("bad magic or truncated".into()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(corrupt("SHA-256 checksum mismatch".into()));
        }
        let hlen = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
        let hend = 12usize
            .checked_add(hlen)
            .filter(|e| *e <= body.len())
            .ok_or_else(|| corrupt("header length beyond end of file".into()))?;
        let header: CacheHeader =
            serde_json::from_slice(&body[12..hend]).map_err(|e| corrupt(format!("header: {e}")))?;
        let stale = |reason: String| CacheError::Stale {
            path: path.clone(),
            reason,
        };
        if header.format_version != FORMAT_VERSION {
            return Err(stale(format!(
                "format version {} (expected {FORMAT_VERSION})",
                header.format_version
            )));
        }
        if header.study_key != key {
            return Err(stale("entry belongs to another study".into()));
        }
        if header.config_hash != self.config_hash || header.config != self.config {
            return Err(stale(format!(
                "preprocessing config {} differs from {}",
                header.config_hash, self.config_hash
            )));
        }
        let payload = &body[hend..];
        let n: usize = header.shape.iter().product();
        let dtype = self.config.dtype;
        if payload.len() as u64 != header.payload_len || payload.len() != n * dtype.bytes() {
            return Err(corrupt(format!(
                "payload is {} bytes, shape {:?} needs {}",
                payload.len(),
                header.shape,
                n * dtype.bytes()
            )));
        }
        let data: Vec<f32> = match dtype {
            CacheDtype::F32 => payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            CacheDtype::F16 => payload
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            CacheDtype::U8 { lo, hi } => payload.iter().map(|q| u8_value(*q, lo, hi)).collect(),
        };
        Ok(Some(CachedStudy {
            shape: header.shape,
            data,
            labels: header.labels,
            slice_labels: header.slice_labels,
            spacing_mm: header.spacing_mm,
        }))
    }

    /// Load the entry, or build and store it when absent, corrupt or stale. I/O errors other
    /// than "not found" are returned, not papered over.
    pub fn get_or_build<E>(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<CachedStudy, E>,
    ) -> Result<(CachedStudy, CacheOutcome), E>
    where
        E: From<CacheError>,
    {
        let outcome = match self.load(key) {
            Ok(Some(s)) => return Ok((s, CacheOutcome::Hit)),
            Ok(None) => CacheOutcome::Built,
            Err(e @ (CacheError::Corrupt { .. } | CacheError::Stale { .. })) => {
                // No study key in the log: the reason only.
                let reason = match &e {
                    CacheError::Corrupt { reason, .. } => format!("corrupt: {reason}"),
                    CacheError::Stale { reason, .. } => format!("stale: {reason}"),
                    _ => unreachable!(),
                };
                tracing::warn!(config = %self.config_hash, "rebuilding cache entry ({reason})");
                CacheOutcome::Rebuilt { reason }
            }
            Err(e) => return Err(e.into()),
        };
        let study = build()?;
        self.store(key, &study)?;
        // Return what a later load will see (quantised), not the pre-store values.
        let stored = self
            .load(key)?
            .ok_or_else(|| CacheError::Invalid("entry vanished after store".into()))?;
        Ok((stored, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dtype: CacheDtype) -> PreprocessConfig {
        PreprocessConfig {
            windows: vec![(40.0, 80.0), (80.0, 200.0)],
            shape: Some([3, 4, 5]),
            spacing_mm: None,
            dtype,
            pipeline_version: "test-1".into(),
            antialias: false,
            mr_sequences: Vec::new(),
            mr_reduction: hn_imaging::mr::MrReduction::Mean,
            mr_bias_correction: None,
        }
    }

    fn study() -> CachedStudy {
        let n = 2 * 3 * 4 * 5;
        CachedStudy {
            shape: [2, 3, 4, 5],
            data: (0..n).map(|i| i as f32 / n as f32).collect(),
            labels: Some(StudyLabels::from_subtypes(&[crate::Subtype::Subdural])),
            slice_labels: Some(vec![StudyLabels::default(); 3]),
            spacing_mm: [0.5, 0.5, 5.0],
        }
    }

    #[derive(Debug)]
    struct E(#[allow(dead_code)] CacheError);
    impl From<CacheError> for E {
        fn from(e: CacheError) -> Self {
            E(e)
        }
    }

    /// A study quantised in memory (`CachedStudy::quantized`, what `predict` and uncached
    /// layouts do) holds exactly the values a stored entry gives back, for every dtype.
    #[test]
    fn quantized_in_memory_equals_a_stored_entry() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [
            CacheDtype::F32,
            CacheDtype::F16,
            CacheDtype::U8 { lo: 0.0, hi: 1.0 },
        ] {
            let c = Cache::new(dir.path(), config(dtype)).unwrap();
            let (stored, _) = c
                .get_or_build::<E>(&format!("q-{dtype:?}"), || Ok(study()))
                .unwrap();
            let q = study().quantized(dtype);
            assert_eq!(q.data, stored.data, "{dtype:?}");
            if dtype != CacheDtype::F32 {
                assert_ne!(q.data, study().data, "{dtype:?} changed nothing");
            }
        }
    }

    #[test]
    fn roundtrip_each_dtype() {
        let dir = tempfile::tempdir().unwrap();
        for (dtype, tol) in [
            (CacheDtype::F32, 0.0),
            (CacheDtype::F16, 1e-3),
            (CacheDtype::U8 { lo: 0.0, hi: 1.0 }, 0.5 / 255.0 + 1e-6),
        ] {
            let c = Cache::new(dir.path(), config(dtype)).unwrap();
            let s = study();
            c.store("CQ500-CT-1", &s).unwrap();
            let back = c.load("CQ500-CT-1").unwrap().unwrap();
            assert_eq!(back.shape, s.shape);
            assert_eq!(back.labels, s.labels);
            assert_eq!(back.slice_labels, s.slice_labels);
            for (a, b) in back.data.iter().zip(&s.data) {
                assert!((a - b).abs() <= tol, "{dtype:?}: {a} vs {b}");
            }
        }
        // Three configs -> three files, no temporaries left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.ends_with(".hnc") && !n.starts_with(".tmp"))
        );
    }

    #[test]
    fn corrupt_entry_is_detected_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path(), config(CacheDtype::F32)).unwrap();
        let path = c.store("k", &study()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() - 100;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(c.load("k"), Err(CacheError::Corrupt { .. })));
        let mut built = 0;
        let (s, outcome) = c
            .get_or_build::<E>("k", || {
                built += 1;
                Ok(study())
            })
            .unwrap();
        assert_eq!(built, 1);
        assert!(
            matches!(outcome, CacheOutcome::Rebuilt { .. }),
            "{outcome:?}"
        );
        assert_eq!(s, study());
        // Now a hit, builder not called.
        let (_, outcome) = c
            .get_or_build::<E>("k", || panic!("must not rebuild"))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
        // Truncated file.
        std::fs::write(&path, &bytes[..20]).unwrap();
        assert!(matches!(c.load("k"), Err(CacheError::Corrupt { .. })));
    }

    #[test]
    fn preprocess_windows_and_resamples() {
        let vol = hn_imaging::Volume::new(
            vec![40.0; 8 * 6 * 4],
            [8, 6, 4],
            [0.5, 0.5, 5.0],
            hn_imaging::Modality::Ct,
        )
        .unwrap();
        let cfg = config(CacheDtype::F16);
        // Input slice 1 of 4 shows a subdural bleed.
        let subdural = StudyLabels {
            any: true,
            subtypes: [false, true, false, false, false],
        };
        let mut labels = vec![StudyLabels::default(); 4];
        labels[1] = subdural;
        // shape [3, 4, 5] = S, H, W
        let s = preprocess(vol.clone(), None, Some(labels), &cfg).unwrap();
        assert_eq!(s.shape, [2, 3, 4, 5]);
        assert_eq!(s.data.len(), 2 * 3 * 4 * 5);
        // 40 HU: brain window 40/80 -> 0.5; window 80/200 -> (40 - (-20)) / 200 = 0.3
        assert!(s.data[..60].iter().all(|v| (v - 0.5).abs() < 1e-5));
        assert!(s.data[60..].iter().all(|v| (v - 0.3).abs() < 1e-5));
        // 4 -> 3 slices: model slice 0 spans input [0, 4/3), a quarter of it slice 1 (under
        // the third that makes it positive); model slice 1 spans [4/3, 8/3), half slice 1.
        assert_eq!(
            s.slice_labels,
            Some(vec![
                StudyLabels::default(),
                subdural,
                StudyLabels::default()
            ]),
            "slice labels carried through resampling by coverage"
        );
        let mut keep = cfg.clone();
        keep.shape = None;
        let s = preprocess(vol, None, Some(vec![StudyLabels::default(); 4]), &keep).unwrap();
        assert_eq!(s.shape, [2, 4, 6, 8]);
        assert_eq!(s.slice_labels.as_ref().map(Vec::len), Some(4));
    }

    #[test]
    fn antialias_is_keyed_and_old_configs_keep_their_keys() {
        let old = config(CacheDtype::F16);
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("antialias"), "false is not written: {json}");
        let back: PreprocessConfig = serde_json::from_str(&json).unwrap();
        assert!(!back.antialias);
        assert_eq!(back.hash(), old.hash());
        let mut aa = old.clone();
        aa.antialias = true;
        assert_ne!(aa.hash(), old.hash());
        // 16 columns -> 4 with a one-column rim of 80 HU at x = 4: trilinear samples columns
        // 1-2, 5-6, ... and misses it; area averaging gives that output column 80 / 4 = 20 HU.
        let mut data = vec![0.0; 16 * 4 * 2];
        for row in data.chunks_mut(16) {
            row[4] = 80.0;
        }
        let vol =
            hn_imaging::Volume::new(data, [16, 4, 2], [0.5, 0.5, 5.0], hn_imaging::Modality::Ct)
                .unwrap();
        let shrink = |cfg: &PreprocessConfig| {
            let mut cfg = cfg.clone();
            cfg.shape = Some([2, 4, 4]);
            cfg.windows = vec![(40.0, 80.0)];
            preprocess(vol.clone(), None, None, &cfg).unwrap().data
        };
        // Brain window 40/80: 0 HU -> 0.0, 20 HU -> 0.25.
        assert!(shrink(&old).iter().all(|&v| v == 0.0));
        let a = shrink(&aa);
        assert!(
            a.chunks(4)
                .all(|r| (r[1] - 0.25).abs() < 1e-5 && r[0] == 0.0 && r[2] == 0.0)
        );
        // On the model grid itself (the synthetic cohort is rendered there) both are the
        // identity, bit for bit, so runs before and after the field agree exactly.
        let noisy: Vec<f32> = (0..16 * 4 * 2)
            .map(|i| ((i * 37 % 101) as f32) - 30.5)
            .collect();
        let vol =
            hn_imaging::Volume::new(noisy, [16, 4, 2], [0.5, 0.5, 5.0], hn_imaging::Modality::Ct)
                .unwrap();
        let same = |cfg: &PreprocessConfig| {
            let mut cfg = cfg.clone();
            cfg.shape = Some([2, 4, 16]);
            preprocess(vol.clone(), None, None, &cfg).unwrap().data
        };
        assert_eq!(same(&old), same(&aa));
    }

    #[test]
    fn stale_entries_are_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path(), config(CacheDtype::F32)).unwrap();
        let p = c.store("a", &study()).unwrap();
        // A changed config is a different key: a miss, then a build.
        let mut cfg = config(CacheDtype::F32);
        cfg.windows[0].1 = 90.0;
        let c2 = Cache::new(dir.path(), cfg).unwrap();
        assert_ne!(c2.config_hash(), c.config_hash());
        assert!(c2.load("a").unwrap().is_none());
        // An entry of another study under this study's name is stale.
        std::fs::copy(&p, c.path_for("b")).unwrap();
        assert!(matches!(c.load("b"), Err(CacheError::Stale { .. })));
        let (_, outcome) = c.get_or_build::<E>("b", || Ok(study())).unwrap();
        assert!(matches!(outcome, CacheOutcome::Rebuilt { .. }));
        // Bad input is refused.
        let mut bad = study();
        bad.data.pop();
        assert!(matches!(c.store("x", &bad), Err(CacheError::Invalid(_))));
    }
}
