//! Where the data comes from (`--dataset`, `--root`, ...): the arguments of
//! [`hn_engine::dataset::DataSource`], with progress bars. Shared by `train`, `evaluate` and
//! `demo`.

use std::path::PathBuf;

use hn_data::layouts::DatasetKind;
use hn_data::preprocess::PreprocessConfig;
use hn_engine::dataset::{DataSource, Dataset, LoadProgress, SplitConfig};
use indicatif::{ProgressBar, ProgressStyle};

fn dataset_kind_parser() -> impl clap::builder::TypedValueParser<Value = DatasetKind> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        DatasetKind::ALL.map(|k| PossibleValue::new(k.cli_name()).help(k.describe())),
    )
    .map(|s| {
        s.parse::<DatasetKind>()
            .expect("one of the possible values")
    })
}

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset layout.
    #[arg(long, default_value = "synthetic", value_parser = dataset_kind_parser())]
    pub dataset: DatasetKind,
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

impl DataArgs {
    /// Where the data comes from; `synth` is the training config's generator config for the
    /// synthetic cohort (`None`: rendered at the model grid).
    pub fn source(&self, synth: Option<&hn_data::synth::SynthConfig>) -> DataSource {
        DataSource {
            kind: self.dataset,
            root: self.root.clone(),
            studies: self.studies,
            synth_seed: self.synth_seed,
            cache: self.cache.clone(),
            synth: synth.cloned(),
        }
    }
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

/// Load the dataset at the preprocessing `pre` (the model's grid), with progress.
pub fn load(
    args: &DataArgs,
    pre: &PreprocessConfig,
    split: &SplitConfig,
    synth: Option<&hn_data::synth::SynthConfig>,
) -> anyhow::Result<Dataset> {
    let what = if args.dataset == DatasetKind::Synthetic {
        "synthesis"
    } else {
        "decoding"
    };
    let pb = bar(0, what);
    let ds = args.source(synth).load(pre, split, &mut |p| match p {
        LoadProgress::Warning(w) => tracing::warn!("{w}"),
        LoadProgress::Studies { done, total } => {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        }
    })?;
    pb.finish();
    for (key, cause) in &ds.failed {
        eprintln!("warning: study {key} left out: {cause}");
    }
    Ok(ds)
}
