//! Where the data comes from: the synthetic cohort (default) or a dataset layout on disk.
//! Shared by `train`, `evaluate` and `demo`.

use std::path::PathBuf;

use anyhow::Context;
use hn_data::layouts::{self, StudyIndex};
use hn_engine::dataset::{self, Dataset, SplitConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// Dataset layouts on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// The embedded synthetic cohort, generated in memory.
    Synthetic,
    /// RSNA 2019 (`stage_2_train.csv` + `stage_2_train/ID_*.dcm`).
    Rsna,
    /// CQ500 (`reads.csv` + `CQ500CT<N> ...` folders).
    Cq500,
    /// PhysioNet CT-ICH (`ct_scans/`, `masks/`, `hemorrhage_diagnosis_raw_ct.csv`).
    Ctich,
    /// Generic manifest CSV (docs/DATASETS.md); `--root` is the CSV file.
    Manifest,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset layout.
    #[arg(long, value_enum, default_value = "synthetic")]
    pub dataset: Layout,
    /// Dataset root folder (manifest: the CSV file). Not used for the synthetic cohort.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Synthetic cohort: number of studies.
    #[arg(long, default_value_t = 1000)]
    pub studies: usize,
    /// Synthetic cohort: generator seed.
    #[arg(long, default_value_t = 2026)]
    pub synth_seed: u64,
    /// Preprocessing cache folder for datasets on disk (default: ROOT/.hn-cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

fn index(args: &DataArgs) -> anyhow::Result<(StudyIndex, String)> {
    let root = args
        .root
        .clone()
        .with_context(|| format!("--dataset {:?} needs --root", args.dataset))?;
    let (ix, name) = match args.dataset {
        Layout::Rsna => (
            layouts::rsna::load(&root, &Default::default())?,
            "RSNA 2019",
        ),
        Layout::Cq500 => (layouts::cq500::load(&root)?, "CQ500"),
        Layout::Ctich => (layouts::ctich::load(&root)?, "PhysioNet CT-ICH"),
        Layout::Manifest => (layouts::manifest::load(&root)?, "manifest"),
        Layout::Synthetic => unreachable!(),
    };
    for w in &ix.warnings {
        tracing::warn!("{w}");
    }
    Ok((ix, format!("{name} ({})", root.display())))
}

/// Load the dataset at the model grid `[slices, size, size]`, with progress.
pub fn load(
    args: &DataArgs,
    slices: usize,
    size: usize,
    split: &SplitConfig,
) -> anyhow::Result<Dataset> {
    let pre = hn_engine::sample::default_preprocess(slices, size);
    let ds = match args.dataset {
        Layout::Synthetic => {
            let pb = bar(args.studies as u64, "synthesis");
            let synth = dataset::synth_config_for(slices, size);
            let ds = dataset::synthetic(
                &synth,
                args.studies,
                args.synth_seed,
                &pre,
                split,
                &mut |d, _| pb.set_position(d as u64),
            )?;
            pb.finish();
            ds
        }
        _ => {
            let (ix, name) = index(args)?;
            let cache = args.cache.clone().or_else(|| {
                args.root.as_ref().map(|r| {
                    if r.is_file() {
                        r.parent().unwrap_or(r).join(".hn-cache")
                    } else {
                        r.join(".hn-cache")
                    }
                })
            });
            let pb = bar(ix.studies.len() as u64, "decoding");
            let ds = dataset::from_index(&ix, &name, &pre, cache, split, &mut |d, _| {
                pb.set_position(d as u64)
            })?;
            pb.finish();
            for (key, cause) in &ds.failed {
                eprintln!("warning: study {key} left out: {cause}");
            }
            ds
        }
    };
    Ok(ds)
}
