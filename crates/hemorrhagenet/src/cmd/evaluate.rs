//! `hemorrhagenet evaluate`: metrics, baselines and the HTML report for a trained model on the
//! held-out split of the data it was trained on (or another dataset).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hn_data::splits::Split;
use hn_engine::checkpoint::{LoadedModel, load_model};
use hn_engine::dataset::Dataset;
use hn_engine::evaluate::{EvalOptions, Evaluation, evaluate};
use hn_engine::train::TrainConfig;

use super::data_args::{DataArgs, load};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SplitArg {
    Test,
    Validation,
}

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// Model folder written by `train` (OUT/model).
    #[arg(long)]
    pub model: PathBuf,
    /// Report folder (metrics.json, report.html).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Which split to report on.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Bootstrap resamples for the 95 % CIs.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap and MC dropout.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// Where to run the model: `cpu` (default), or `cuda:N`, `libtorch`, `libtorch-cuda:N`
    /// in builds with those features (as `train --devices`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Split config and grid the model was trained with.
pub fn training_setup(model: &LoadedModel) -> anyhow::Result<(TrainConfig, [usize; 3])> {
    let cfg: TrainConfig = serde_json::from_value(model.card.train_config.clone())
        .with_context(|| format!("{}: card.json train_config", model.dir.display()))?;
    let shape = model
        .card
        .preprocess
        .shape
        .with_context(|| format!("{}: card has no fixed grid", model.dir.display()))?;
    Ok((cfg, shape))
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let device = hn_engine::devices::parse_devices(&args.device)
        .map_err(|e| anyhow::anyhow!("--device {}: {e}", args.device))?;
    if device.len() != 1 {
        anyhow::bail!("--device {}: evaluation runs on one device", args.device);
    }
    let model = load_model(&args.model, &device[0])?;
    let (cfg, [s, _, w]) = training_setup(&model)?;
    let data = load(&args.data, s, w, &cfg.split)?;
    let split = match args.split {
        SplitArg::Test => Split::Test,
        SplitArg::Validation => Split::Validation,
    };
    let ev = run_evaluation(&model, &data, split, args.bootstrap, args.seed, &args.out)?;
    print_summary(&ev);
    Ok(ExitCode::SUCCESS)
}

/// Evaluate and write the report folder.
pub fn run_evaluation(
    model: &LoadedModel,
    data: &Dataset,
    split: Split,
    bootstrap: usize,
    seed: u64,
    out: &Path,
) -> anyhow::Result<Evaluation> {
    if data.digest().sha256 != model.card.dataset.sha256 {
        eprintln!(
            "warning: this data differs from the model's training data ({}); the {split:?} \
             split is held out only if no patient of it was used in training",
            model.card.dataset.name
        );
    }
    let opts = EvalOptions {
        split,
        bootstrap_resamples: bootstrap,
        seed,
        ..Default::default()
    };
    eprintln!(
        "evaluating on the {split:?} split ({} bootstrap resamples)",
        bootstrap
    );
    let windows = model.card.preprocess.windows.clone();
    let ev = evaluate(model, data, &opts, &|s, p| volume_estimate(s, p, &windows))?;
    let (json, html) = hn_engine::report::write_report(out, &ev.report, &ev.plots)?;
    eprintln!("wrote {} and {}", json.display(), html.display());
    Ok(ev)
}

/// One line per headline figure.
pub fn print_summary(ev: &Evaluation) {
    let r = &ev.report;
    let ci = |i: &Option<hn_engine::metrics::Interval>| {
        i.as_ref()
            .map(|i| format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi))
            .unwrap_or_else(|| "–".into())
    };
    println!(
        "test-time augmentation: {}",
        r.test_time_augmentation.name()
    );
    for d in &r.detection {
        println!(
            "AUC {:<18} {}  (n = {}, positive {})",
            d.label,
            ci(&d.auc),
            d.n,
            d.n_positive
        );
    }
    for p in &r.prognosis {
        println!(
            "AUC {:<18} {}  ECE {:.3} → {:.3} after T = {:.2} alone, {:.3} after {:?} \
             (z / {:.2} {:+.2}, fitted on validation)",
            p.outcome,
            ci(&p.auc),
            p.ece_before,
            p.ece_after_temperature,
            p.temperature,
            p.ece_after,
            p.calibration.method,
            p.calibration.temperature,
            p.calibration.bias
        );
    }
    for b in &r.baselines {
        println!(
            "  baseline {:<26} {:<17} AUC {}",
            b.name,
            b.task,
            ci(&b.auc)
        );
    }
    for b in &r.bayes_limit {
        println!(
            "  Bayes limit {:<23} AUC {:.3}  (ECE of the true probabilities here: {})",
            b.task,
            b.auc,
            b.ece
                .map(|e| format!("{e:.3}"))
                .unwrap_or_else(|| "–".into())
        );
    }
}

/// Image-derived hematoma volume for the model-estimated ICH score: the crude estimate of
/// [`hn_engine::infer::estimate_volume_ml`] on the model grid (`windows` = the card's).
pub fn volume_estimate(
    s: &hn_engine::sample::StudySample,
    slice_any: &[f64],
    windows: &[(f32, f32)],
) -> f64 {
    hn_engine::infer::estimate_volume_ml(s, slice_any, windows)
}
