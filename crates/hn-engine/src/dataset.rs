//! A dataset ready for the engine: preprocessed [`StudySample`]s and their patient-level split.
//!
//! Two sources: the synthetic cohort (generated in memory at the model grid, so per-slice
//! labels stay aligned) and any [`StudyIndex`] read from a layout (RSNA 2019, CQ500, CT-ICH,
//! manifest), decoded through `hn-imaging` and stored once in the preprocessing [`Cache`].

use rayon::prelude::*;
use std::path::PathBuf;

use hn_data::cache::{Cache, PreprocessConfig};
use hn_data::layouts::{StudyIndex, read_study};
use hn_data::splits::{Split, SplitItem, patient_split};
use hn_data::synth::SynthConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::DatasetDigest;
use crate::sample::StudySample;

/// Dataset errors.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("synthetic cohort: {0}")]
    Synth(#[from] hn_data::synth::SynthError),
    #[error("split: {0}")]
    Split(#[from] hn_data::splits::SplitError),
    #[error("cache: {0}")]
    Cache(#[from] hn_data::cache::CacheError),
    #[error("preprocessing: {0}")]
    Transform(#[from] hn_imaging::transforms::TransformError),
    #[error(transparent)]
    Layout(#[from] hn_data::layouts::LayoutError),
    #[error("{0}")]
    Invalid(String),
}

/// Samples with their split.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub synthetic: bool,
    pub samples: Vec<StudySample>,
    pub splits: Vec<Split>,
    /// The preprocessing every sample went through (what a model trained on them reads).
    pub preprocess: PreprocessConfig,
    /// Studies that could not be decoded: (key, cause). Patient data never appears here.
    pub failed: Vec<(String, String)>,
}

/// Train/validation/test fractions and the split seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            train: 0.6,
            validation: 0.2,
            test: 0.2,
            seed: 7,
        }
    }
}

impl Dataset {
    /// The samples by study key.
    pub fn by_key(&self) -> std::collections::HashMap<&str, &StudySample> {
        self.samples.iter().map(|s| (s.key.as_str(), s)).collect()
    }

    /// The indices among `idx` of studies of `modality` (`None`: all of them).
    pub fn of_modality(&self, idx: Vec<usize>, modality: Option<i64>) -> Vec<usize> {
        match modality {
            Some(m) => idx
                .into_iter()
                .filter(|&i| self.samples[i].modality == m)
                .collect(),
            None => idx,
        }
    }

    /// Whether any study is of `modality`.
    pub fn has_modality(&self, modality: i64) -> bool {
        self.samples.iter().any(|s| s.modality == modality)
    }

    /// Indices of the samples in `split`.
    pub fn indices(&self, split: Split) -> Vec<usize> {
        (0..self.samples.len())
            .filter(|&i| self.splits[i] == split)
            .collect()
    }

    /// Clinical features (indices into `CLINICAL_FEATURES`) that no study of `idx` carries:
    /// a network trained on them never learns those inputs
    /// (`HemorrhageNetConfig::clinical_unlearned`).
    pub fn clinical_never_given(&self, idx: &[usize]) -> Vec<usize> {
        let mut given = [false; hn_data::clinical::N_CLINICAL];
        for &i in idx {
            for (g, v) in given.iter_mut().zip(self.samples[i].clinical.values()) {
                *g |= v.is_some();
            }
        }
        (0..given.len()).filter(|&f| !given[f]).collect()
    }

    /// What the training split can teach each head.
    pub fn train_label_counts(&self) -> crate::checkpoint::TrainingLabelCounts {
        let train = || {
            self.samples
                .iter()
                .zip(&self.splits)
                .filter(|(_, sp)| **sp == Split::Train)
                .map(|(s, _)| s)
        };
        crate::checkpoint::TrainingLabelCounts {
            detection: train().filter(|s| s.labels.is_some()).count(),
            slices: train().filter(|s| s.slice_labels.is_some()).count(),
            mortality_30d: train()
                .filter(|s| s.outcomes.mortality_30d.is_some())
                .count(),
            mrs_90d: train().filter(|s| s.outcomes.mrs_90d.is_some()).count(),
        }
    }

    /// Identity of the data for the model card: counts and a SHA-256 over the sorted
    /// `key,split,labels,outcomes` lines.
    pub fn digest(&self) -> DatasetDigest {
        let mut lines: Vec<String> = self
            .samples
            .iter()
            .zip(&self.splits)
            .map(|(s, sp)| {
                format!(
                    "{},{:?},{:?},{:?}",
                    s.key,
                    sp,
                    s.labels.map(|l| crate::sample::label_row(&l)),
                    s.outcomes
                )
            })
            .collect();
        lines.sort();
        let mut h = Sha256::new();
        for l in &lines {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
        let count = |sp: Split| self.splits.iter().filter(|s| **s == sp).count();
        DatasetDigest {
            name: self.name.clone(),
            synthetic: self.synthetic,
            n_train: count(Split::Train),
            n_validation: count(Split::Validation),
            n_test: count(Split::Test),
            sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            train_labels: Some(self.train_label_counts()),
        }
    }

    fn split_samples(&mut self, cfg: &SplitConfig) -> Result<(), DatasetError> {
        let items: Vec<SplitItem> = self
            .samples
            .iter()
            .map(|s| SplitItem {
                patient_key: s.patient_key.clone(),
                any_bleed: s.labels.map(|l| l.any),
                outcome: s.outcomes.mortality_30d,
            })
            .collect();
        self.splits = patient_split(&items, [cfg.train, cfg.validation, cfg.test], cfg.seed)?;
        Ok(())
    }
}

/// The synthetic generator config for a model grid of `slices` × `size`².
pub fn synth_config_for(slices: usize, size: usize) -> SynthConfig {
    SynthConfig {
        size,
        n_slices: Some(slices),
        ..SynthConfig::default()
    }
}

/// Generate `n` synthetic studies (cohort `seed`) with `synth`, bring them to the
/// preprocessing grid (resampled like a decoded DICOM study when `synth` renders another
/// grid; slice labels follow by coverage) and split them. `progress(done, total)` is called
/// as chunks finish.
pub fn synthetic(
    synth: &SynthConfig,
    n: usize,
    seed: u64,
    pre: &PreprocessConfig,
    split: &SplitConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset, DatasetError> {
    if pre.shape.is_none() {
        return Err(DatasetError::Invalid(
            "synthetic data needs a fixed preprocessing shape".into(),
        ));
    }
    synth
        .validate()
        .map_err(|m| DatasetError::Invalid(format!("synthetic generator config: {m}")))?;
    let m = synth.modality;
    if m.has_mr() && pre.mr_sequences.is_empty() {
        return Err(DatasetError::Invalid(
            "the synthetic cohort has MR studies but the preprocessing has no MR channels".into(),
        ));
    }
    let mut samples = Vec::with_capacity(n * (usize::from(m.has_ct()) + usize::from(m.has_mr())));
    const CHUNK: usize = 64;
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        // Studies are brought to the grid in parallel (resampling, and N4 on MR, run on one
        // thread per study); `collect` keeps their order.
        if m.has_ct() {
            let studies = hn_data::synth::generate_studies(synth, seed, start..end)?;
            let chunk: Result<Vec<_>, _> = studies
                .par_iter()
                .map(|st| StudySample::from_synthetic(st, pre))
                .collect();
            samples.extend(chunk?);
        }
        if m.has_mr() {
            let studies = hn_data::synth::generate_mr_studies(synth, seed, start..end)?;
            let chunk: Result<Vec<_>, _> = studies
                .par_iter()
                .map(|st| StudySample::from_synthetic_mr(st, pre))
                .collect();
            samples.extend(chunk?);
        }
        start = end;
        progress(start, n);
    }
    let modality = match m {
        hn_data::synth::CohortModality::Ct => "",
        hn_data::synth::CohortModality::Mr => ", MR",
        hn_data::synth::CohortModality::Both => ", CT and MR of each",
    };
    let mut ds = Dataset {
        name: format!("synthetic (hn-synth, seed {seed}, {n} studies{modality})"),
        synthetic: true,
        samples,
        splits: Vec::new(),
        preprocess: pre.clone(),
        failed: Vec::new(),
    };
    ds.split_samples(split)?;
    Ok(ds)
}

/// Decode, preprocess (through the cache when given) and split every study of an index.
/// Studies that fail to decode are recorded in `failed` and left out.
pub fn from_index(
    index: &StudyIndex,
    name: &str,
    pre: &PreprocessConfig,
    cache_dir: Option<PathBuf>,
    split: &SplitConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset, DatasetError> {
    let cache = match cache_dir {
        Some(d) => Some(Cache::new(d, pre.clone())?),
        None => None,
    };
    let nifti = hn_imaging::NiftiReadOptions {
        modality: Some(hn_imaging::Modality::Ct),
        ..Default::default()
    };
    let mut samples = Vec::new();
    let mut failed = Vec::new();
    let n = index.studies.len();
    for (i, rec) in index.studies.iter().enumerate() {
        let build = || -> Result<hn_data::preprocess::CachedStudy, String> {
            if rec.source.is_mr() {
                return preprocess_mr_record(rec, pre);
            }
            let decoded = read_study(rec, &nifti).map_err(|e| e.to_string())?;
            let slice_labels = rec
                .slice_labels
                .as_ref()
                .map(|v| v.iter().map(|s| s.labels).collect::<Vec<_>>());
            hn_data::preprocess::preprocess(decoded.volume, rec.labels, slice_labels, pre)
                .map(|c| c.quantized(pre.dtype))
                .map_err(|e| e.to_string())
        };
        // An MR study's entry has its own key: a row that changes modality under the same key
        // must not be served the other modality's grid.
        let cache_key = if rec.source.is_mr() {
            format!("{}#mr", rec.key)
        } else {
            rec.key.clone()
        };
        let got = match &cache {
            Some(c) => c
                .get_or_build(&cache_key, || build().map_err(CacheOrDecode::Decode))
                .map(|(s, _)| s)
                .map_err(|e| match e {
                    CacheOrDecode::Decode(m) => m,
                    CacheOrDecode::Cache(c) => c.to_string(),
                }),
            None => build(),
        };
        match got {
            Ok(cached) => {
                let mut s = StudySample::from_cached(
                    &rec.key,
                    &rec.patient_key,
                    cached,
                    rec.clinical,
                    rec.outcomes,
                );
                if rec.source.is_mr() {
                    s.modality = hn_model::MODALITY_MR;
                }
                samples.push(s)
            }
            Err(cause) => {
                tracing::warn!(study = i, "study left out: {cause}");
                failed.push((rec.key.clone(), cause));
            }
        }
        progress(i + 1, n);
    }
    if samples.is_empty() {
        return Err(DatasetError::Invalid(format!(
            "no study of {} could be decoded ({} failed)",
            index.root.display(),
            failed.len()
        )));
    }
    let mut ds = Dataset {
        name: name.to_string(),
        synthetic: false,
        samples,
        splits: Vec::new(),
        preprocess: pre.clone(),
        failed,
    };
    ds.split_samples(split)?;
    Ok(ds)
}

/// An MR study of an index, read sequence by sequence, brought onto one grid and preprocessed
/// as the synthetic MR studies are (no slice labels: a manifest gives study labels only).
fn preprocess_mr_record(
    rec: &hn_data::layouts::StudyRecord,
    pre: &PreprocessConfig,
) -> Result<hn_data::preprocess::CachedStudy, String> {
    if pre.mr_sequences.is_empty() {
        return Err(
            "an MR study, and this preprocessing has no MR channels (a CT-only model)".into(),
        );
    }
    let mr = hn_data::layouts::read_mr_study_record(rec).map_err(|e| e.to_string())?;
    let stack = mr
        .on_one_grid(pre.mr_reduction, pre.mr_bias_correction.as_ref())
        .map_err(|e| e.to_string())?;
    hn_data::preprocess::preprocess_mr(&stack, rec.labels, None, pre)
        .map(|c| c.quantized(pre.dtype))
        .map_err(|e| e.to_string())
}

enum CacheOrDecode {
    Cache(hn_data::cache::CacheError),
    Decode(String),
}

impl From<hn_data::cache::CacheError> for CacheOrDecode {
    fn from(e: hn_data::cache::CacheError) -> Self {
        CacheOrDecode::Cache(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_dataset_is_split_by_patient_and_digest_tracks_content() {
        let pre = crate::sample::default_preprocess(4, 16);
        let synth = synth_config_for(4, 16);
        let split = SplitConfig::default();
        let mut calls = 0;
        let ds = synthetic(&synth, 20, 9, &pre, &split, &mut |_, _| calls += 1).unwrap();
        assert!(calls >= 1);
        assert_eq!(ds.samples.len(), 20);
        assert!(ds.synthetic);
        for s in &ds.samples {
            assert_eq!(s.shape, [4, 3, 16, 16]);
            assert_eq!(s.slice_labels.as_ref().map(|v| v.len()), Some(4));
            assert!(s.truth.is_some());
            assert!(s.images.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        for sp in [Split::Train, Split::Validation, Split::Test] {
            assert!(!ds.indices(sp).is_empty(), "{sp:?} empty");
        }
        let d1 = ds.digest();
        assert_eq!(d1.n_train + d1.n_validation + d1.n_test, 20);
        let again = synthetic(&synth, 20, 9, &pre, &split, &mut |_, _| {}).unwrap();
        assert_eq!(again.digest(), d1, "same seed, same data, same digest");
        let other = synthetic(&synth, 20, 10, &pre, &split, &mut |_, _| {}).unwrap();
        assert_ne!(other.digest().sha256, d1.sha256);
        // Rendered as a scanner would (32², 10 slices) and brought to the 16² × 4 grid by
        // the preprocessing: the grid of the model, slice labels carried along (a negative
        // study has no positive slice; bleeding studies keep positive slices).
        let scanner = synth_config_for(10, 32);
        let ds = synthetic(&scanner, 12, 9, &pre, &split, &mut |_, _| {}).unwrap();
        let mut bleeding_with_slices = 0;
        for s in &ds.samples {
            assert_eq!(s.shape, [4, 3, 16, 16]);
            let sl = s.slice_labels.as_ref().unwrap();
            assert_eq!(sl.len(), 4);
            let any_slice = sl.iter().any(|l| l.any);
            if !s.labels.unwrap().any {
                assert!(!any_slice, "{}", s.key);
            }
            bleeding_with_slices += usize::from(any_slice);
        }
        assert!(bleeding_with_slices > 0);
        // An invalid generator config is an error, not a panic.
        let bad = SynthConfig {
            fov_mm: [10.0, 5.0],
            ..scanner
        };
        assert!(synthetic(&bad, 4, 9, &pre, &split, &mut |_, _| {}).is_err());
    }

    /// A feature no study of the split carries is listed; one that a single study carries
    /// is not.
    #[test]
    fn clinical_features_no_study_gives_are_listed() {
        let pre = crate::sample::default_preprocess(4, 16);
        let mut ds = synthetic(
            &synth_config_for(4, 16),
            6,
            9,
            &pre,
            &SplitConfig::default(),
            &mut |_, _| {},
        )
        .unwrap();
        let all: Vec<usize> = (0..ds.samples.len()).collect();
        for s in &mut ds.samples {
            s.clinical = hn_data::ClinicalRecord::default();
        }
        assert_eq!(
            ds.clinical_never_given(&all),
            (0..hn_data::clinical::N_CLINICAL).collect::<Vec<_>>()
        );
        ds.samples[3].clinical.gcs = Some(12);
        let never = ds.clinical_never_given(&all);
        assert_eq!(never.len(), hn_data::clinical::N_CLINICAL - 1);
        assert!(!never.contains(&2), "gcs is feature 2");
        assert_eq!(
            ds.clinical_never_given(&[0, 1]).len(),
            hn_data::clinical::N_CLINICAL
        );
    }
}

/// Where a dataset comes from: the synthetic cohort, or a layout on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub kind: hn_data::layouts::DatasetKind,
    /// Dataset root (manifest: the CSV file); not used for the synthetic cohort.
    pub root: Option<PathBuf>,
    /// Synthetic cohort: number of studies and generator seed.
    pub studies: usize,
    pub synth_seed: u64,
    /// Preprocessing cache folder (default: ROOT/.hn-cache, beside a manifest file).
    pub cache: Option<PathBuf>,
    /// Synthetic cohort: the generator config (`None`: rendered at the model grid,
    /// [`synth_config_for`]).
    pub synth: Option<SynthConfig>,
}

/// What [`load`] reports while it works.
pub enum LoadProgress<'a> {
    /// The layout's index warnings (unknown columns, missing files, ...).
    Warning(&'a str),
    /// `done` of `total` studies generated or decoded.
    Studies { done: usize, total: usize },
}

impl DataSource {
    /// Whether the source holds MR studies (a manifest with `modality = MR` rows; the
    /// synthetic cohort as its generator config says), so that a model trained on it needs
    /// MR channels.
    pub fn holds_mr(&self) -> Result<bool, DatasetError> {
        use hn_data::layouts::DatasetKind;
        match (self.kind, &self.root) {
            (DatasetKind::Synthetic, _) => {
                Ok(self.synth.as_ref().is_some_and(|s| s.modality.has_mr()))
            }
            (DatasetKind::Manifest, Some(root)) => Ok(self.kind.load_index(root)?.has_mr()),
            _ => Ok(false),
        }
    }

    /// The dataset at the preprocessing `pre` (its grid: the model's), split by `split`.
    pub fn load(
        &self,
        pre: &PreprocessConfig,
        split: &SplitConfig,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Dataset, DatasetError> {
        use hn_data::layouts::DatasetKind;
        if self.kind == DatasetKind::Synthetic {
            let Some([s, _, w]) = pre.shape else {
                return Err(DatasetError::Invalid(
                    "synthetic data needs a fixed preprocessing shape".into(),
                ));
            };
            let grid = synth_config_for(s, w);
            return synthetic(
                self.synth.as_ref().unwrap_or(&grid),
                self.studies,
                self.synth_seed,
                pre,
                split,
                &mut |done, total| progress(LoadProgress::Studies { done, total }),
            );
        }
        let root = self.root.as_ref().ok_or_else(|| {
            DatasetError::Invalid(format!(
                "--dataset {} needs --root: {}",
                self.kind.cli_name(),
                self.kind.describe()
            ))
        })?;
        let index = self.kind.load_index(root)?;
        for w in &index.warnings {
            progress(LoadProgress::Warning(w));
        }
        let cache = self.cache.clone().unwrap_or_else(|| {
            if root.is_file() {
                root.parent().unwrap_or(root).join(".hn-cache")
            } else {
                root.join(".hn-cache")
            }
        });
        let name = format!("{} ({})", self.kind.title(), root.display());
        from_index(
            &index,
            &name,
            pre,
            Some(cache),
            split,
            &mut |done, total| progress(LoadProgress::Studies { done, total }),
        )
    }
}
