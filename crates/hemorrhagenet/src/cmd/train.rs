//! `hemorrhagenet train`: train HemorrhageNet on the synthetic cohort or a dataset on disk.

use std::path::PathBuf;
use std::process::ExitCode;

use hn_engine::train::{Progress, TrainConfig, train_on};

use super::data_args::{DataArgs, bar, load};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Output folder: `model/` (best, calibrated), `last/` (resume point), `history.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Training config (TOML, fields of TrainConfig; see docs/TRAINING.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Override the config's epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from OUT/last after an interruption (same config and data required).
    #[arg(long)]
    pub resume: bool,
    /// Devices, comma-separated, main first: `cpu` (default, pure-Rust flex backend);
    /// `cuda:N` with a `--features cuda` build; `libtorch` or `libtorch-cuda:N` with a
    /// `--features tch` build. Several devices train data-parallel (each batch split across
    /// them, gradients averaged).
    #[arg(long, default_value = "cpu")]
    pub devices: String,
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let devices = hn_engine::devices::parse_devices(&args.devices)
        .map_err(|e| anyhow::anyhow!("--devices {}: {e}", args.devices))?;
    let mut cfg = match &args.config {
        Some(p) => TrainConfig::from_toml_file(p)?,
        None => TrainConfig::default(),
    };
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    cfg.validate()
        .map_err(|m| anyhow::anyhow!("invalid training config: {m}"))?;
    // A manifest with MR rows trains a model with MR channels, as an MR synthetic cohort does.
    let mr = args.data.source(cfg.synth.as_ref()).holds_mr()?;
    let pre = cfg.preprocess_reading(mr);
    let data = load(&args.data, &pre, &cfg.split, cfg.synth.as_ref())?;
    let summary = run_training(&cfg, &data, &args.out, args.resume, &devices)?;
    let st = &summary.state;
    println!(
        "best epoch {} of {} (validation score {:.4}); model: {}",
        st.best_epoch,
        st.epoch,
        st.best_score,
        summary.model_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Train with a progress bar per epoch.
pub fn run_training(
    cfg: &TrainConfig,
    data: &hn_engine::dataset::Dataset,
    out: &std::path::Path,
    resume: bool,
    devices: &[hn_model::burn::prelude::Device],
) -> anyhow::Result<hn_engine::train::TrainSummary> {
    let mut pb: Option<indicatif::ProgressBar> = None;
    let mut steps = 0;
    let summary = train_on(cfg, data, out, resume, devices, &mut |p| match p {
        Progress::Start {
            epochs,
            steps_per_epoch,
            resumed_from,
        } => {
            steps = steps_per_epoch;
            if resumed_from > 0 {
                eprintln!("resuming after epoch {resumed_from} of {epochs}");
            }
        }
        Progress::Step { epoch, step, loss } => {
            let b = pb.get_or_insert_with(|| bar(steps as u64, &format!("epoch {epoch}")));
            b.set_position(step as u64);
            b.set_message(format!("loss {loss:.3}"));
        }
        Progress::Epoch(rec, improved) => {
            if let Some(b) = pb.take() {
                b.finish_and_clear();
            }
            let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into());
            eprintln!(
                "epoch {:>2}: loss {:.3}  val AUC any {} subtypes {} mortality {} (slice any {})  {:.0}s{}",
                rec.epoch,
                rec.train_loss,
                f(rec.val.auc_any),
                f(rec.val.auc_subtypes_mean),
                f(rec.val.auc_mortality),
                f(rec.val.auc_slice_any),
                rec.seconds,
                if improved { "  (best, saved)" } else { "" }
            );
        }
        Progress::PretrainStep {
            epoch,
            epochs,
            step,
            steps: n,
            loss,
        } => {
            let b = pb.get_or_insert_with(|| {
                bar(
                    n as u64,
                    &format!("pre-training on mixed slices, epoch {epoch}/{epochs}"),
                )
            });
            b.set_position(step as u64);
            b.set_message(format!("loss {loss:.3}"));
        }
        Progress::PretrainEpoch(rec) => {
            if let Some(b) = pb.take() {
                b.finish_and_clear();
            }
            let mr = if rec.slices_mr > 0 {
                format!(" ({} of them MR)", rec.slices_mr)
            } else {
                String::new()
            };
            eprintln!(
                "pre-training epoch {}: slice loss {:.3} over {} slices{mr}  {:.0}s",
                rec.epoch, rec.loss, rec.slices, rec.seconds
            );
        }
        Progress::Calibrating => eprintln!("calibrating on the validation split"),
    })?;
    Ok(summary)
}
