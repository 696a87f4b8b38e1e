//! `hemorrhagenet evaluate`: metrics, baselines, the HTML report and `predictions.csv` for a
//! trained model on the held-out split of the data it was trained on, or on every study of an
//! external cohort (`--split all`), optionally after recalibrating on part of it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hn_engine::checkpoint::{LoadedModel, load_model};
use hn_engine::dataset::Dataset;
use hn_engine::evaluate::{EvalOptions, EvalSplit, Evaluation, evaluate};
use hn_engine::train::TrainConfig;

use super::data_args::{DataArgs, load};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SplitArg {
    /// The held-out test split of the patient-level split.
    Test,
    Validation,
    /// Every study (an external cohort): the card's calibration applied, nothing fitted.
    All,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RecalibrateArg {
    /// Refit on this data's validation split, report its test split before and after.
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
    /// Refit temperatures, Platt scaling, thresholds and the referral policy on this data's
    /// validation split (what a new site does before it trusts a model), report the test
    /// split before and after, and write the recalibrated model to OUT/model.
    #[arg(long, value_enum, conflicts_with = "split")]
    pub recalibrate_on: Option<RecalibrateArg>,
    /// Bootstrap resamples for the 95 % CIs.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap (MC dropout is seeded per study, from its key).
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// Where to run the model: `cpu` (default), or `cuda:N`, `libtorch`, `libtorch-cuda:N`
    /// in builds with those features (as `train --devices`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Synthetic data only: generate the cohort with this generator config (TOML, fields of
    /// SynthConfig, docs/SYNTH.md) instead of the one the model was trained with — another
    /// scanner, case mix or modality; evaluate it with `--split all` (an external cohort).
    #[arg(long)]
    pub synth_config: Option<PathBuf>,
}

/// The config the model was trained with (its split config decides the test split).
pub fn training_config(model: &LoadedModel) -> anyhow::Result<TrainConfig> {
    serde_json::from_value(model.card.train_config.clone())
        .with_context(|| format!("{}: card.json train_config", model.dir.display()))
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let device = hn_engine::devices::parse_devices(&args.device)
        .map_err(|e| anyhow::anyhow!("--device {}: {e}", args.device))?;
    if device.len() != 1 {
        anyhow::bail!("--device {}: evaluation runs on one device", args.device);
    }
    let model = load_model(&args.model, &device[0])?;
    model
        .card
        .validate(model.net.config())
        .map_err(|e| anyhow::anyhow!("{}: card.json: {e}", model.dir.display()))?;
    let cfg = training_config(&model)?;
    let synth = match &args.synth_config {
        Some(p) => Some(hn_data::synth::SynthConfig::from_toml_file(p)?),
        None => cfg.synth.clone(),
    };
    // The data preprocessed exactly as `predict` preprocesses a request: the card's contract.
    let data = load(
        &args.data,
        &model.card.preprocess,
        &cfg.split,
        synth.as_ref(),
    )?;
    if args.recalibrate_on.is_some() {
        let ev = run_recalibration(&model, &data, args.bootstrap, args.seed, &args.out)?;
        print_summary(&ev);
        return Ok(ExitCode::SUCCESS);
    }
    let split = match args.split {
        SplitArg::Test => EvalSplit::Test,
        SplitArg::Validation => EvalSplit::Validation,
        SplitArg::All => EvalSplit::All,
    };
    let ev = run_evaluation(&model, &data, split, args.bootstrap, args.seed, &args.out)?;
    print_summary(&ev);
    Ok(ExitCode::SUCCESS)
}

/// `--recalibrate-on validation`: the card's calibration and one refitted on this data's
/// validation split, both reported on its test split; the recalibrated model → OUT/model.
fn run_recalibration(
    model: &LoadedModel,
    data: &Dataset,
    bootstrap: usize,
    seed: u64,
    out: &Path,
) -> anyhow::Result<Evaluation> {
    eprintln!("recalibrating on the validation split of this data");
    let val = data.indices(hn_data::splits::Split::Validation);
    // A card with a calibration per modality refits each on that modality's studies alone.
    let groups: Vec<(&str, usize)> = if model.card.mr_calibration.is_some() {
        [
            ("CT ", hn_model::MODALITY_CT),
            ("MR ", hn_model::MODALITY_MR),
        ]
        .into_iter()
        .map(|(name, m)| {
            let n = val
                .iter()
                .filter(|&&i| data.samples[i].modality == m)
                .count();
            (name, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
    } else {
        vec![("", val.len())]
    };
    for (what, n_val) in groups {
        if n_val < hn_engine::evaluate::MIN_RECALIBRATION_STUDIES {
            eprintln!(
                "warning: only {n_val} {what}validation studies to recalibrate on (fewer than \
                 {}): the refitted temperatures, thresholds and referral policy will be noisy",
                hn_engine::evaluate::MIN_RECALIBRATION_STUDIES
            );
        }
    }
    let (ev, card) = hn_engine::evaluate::evaluate_recalibrated(
        model,
        data,
        &options(EvalSplit::Test, bootstrap, seed),
    )?;
    let model_out = out.join("model");
    hn_engine::checkpoint::save_model(&model_out, &model.net, &card)?;
    eprintln!("wrote the recalibrated model to {}", model_out.display());
    write_outputs(&ev, out)?;
    Ok(ev)
}

pub(crate) fn options(split: EvalSplit, bootstrap: usize, seed: u64) -> EvalOptions {
    EvalOptions {
        split,
        bootstrap_resamples: bootstrap,
        seed,
        ..Default::default()
    }
}

/// Evaluate and write the report folder.
pub fn run_evaluation(
    model: &LoadedModel,
    data: &Dataset,
    split: EvalSplit,
    bootstrap: usize,
    seed: u64,
    out: &Path,
) -> anyhow::Result<Evaluation> {
    let ev = evaluate_only(model, data, split, bootstrap, seed)?;
    write_outputs(&ev, out)?;
    write_per_modality(model, data, split, bootstrap, seed, out, &ev)?;
    Ok(ev)
}

/// On data with CT and MR studies: the same evaluation per modality (`OUT/ct/`, `OUT/mr/`)
/// and one table beside the combined figures (`OUT/modalities.md`, printed). Nothing when the
/// data hold one modality.
fn write_per_modality(
    model: &LoadedModel,
    data: &Dataset,
    split: EvalSplit,
    bootstrap: usize,
    seed: u64,
    out: &Path,
    all: &Evaluation,
) -> anyhow::Result<()> {
    use hn_model::{MODALITY_CT, MODALITY_MR};
    if !(data.has_modality(MODALITY_CT) && data.has_modality(MODALITY_MR)) {
        return Ok(());
    }
    let mut cols = vec![("all", all.report.clone())];
    for (name, m) in [("ct", MODALITY_CT), ("mr", MODALITY_MR)] {
        let opts = EvalOptions {
            modality: Some(m),
            ..options(split, bootstrap, seed)
        };
        eprintln!("evaluating the {} studies alone", name.to_uppercase());
        let mut ev = evaluate(model, data, &opts)?;
        ev.report.dataset.name = format!(
            "{} — {} studies",
            ev.report.dataset.name,
            name.to_uppercase()
        );
        write_outputs(&ev, &out.join(name))?;
        cols.push((name, ev.report));
    }
    let md = modality_table(&cols);
    let path = out.join("modalities.md");
    hn_engine::infer::output::write_file_atomic(&path, md.as_bytes())?;
    println!("{md}");
    Ok(())
}

/// Markdown: one row per detection label and prognosis outcome, one column per report (AUC
/// with its bootstrap CI and n).
pub fn modality_table(cols: &[(&str, hn_engine::report::MetricsReport)]) -> String {
    let ci = |i: &Option<hn_engine::metrics::Interval>| {
        i.as_ref()
            .map(|i| format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi))
            .unwrap_or_else(|| "–".into())
    };
    let mut md = String::from("| AUC |");
    for (name, r) in cols {
        md.push_str(&format!(
            " {} (n = {}) |",
            name.to_uppercase(),
            r.dataset.n_studies
        ));
    }
    md.push_str(&format!("\n|---|{}\n", "---|".repeat(cols.len())));
    let first = &cols[0].1;
    // One row: the first report's label, then each report's AUC at the same position.
    let mut row = |label: &str, auc: &dyn Fn(&hn_engine::report::MetricsReport) -> String| {
        md.push_str(&format!("| {label} |"));
        for (_, r) in cols {
            md.push_str(&format!(" {} |", auc(r)));
        }
        md.push('\n');
    };
    for (k, d) in first.detection.iter().enumerate() {
        row(&d.label, &|r| {
            r.detection.get(k).map(|x| ci(&x.auc)).unwrap_or_default()
        });
    }
    for (k, p) in first.prognosis.iter().enumerate() {
        row(&p.outcome, &|r| {
            r.prognosis.get(k).map(|x| ci(&x.auc)).unwrap_or_default()
        });
    }
    md
}

/// Evaluate without writing anything.
fn evaluate_only(
    model: &LoadedModel,
    data: &Dataset,
    split: EvalSplit,
    bootstrap: usize,
    seed: u64,
) -> anyhow::Result<Evaluation> {
    let own_data = data.digest().sha256 == model.card.dataset.sha256;
    if own_data && split == EvalSplit::All {
        eprintln!(
            "warning: this is the model's own training data; --split all reports every study, \
             including the ones it was trained on (use --split test for held-out figures)"
        );
    }
    if !own_data && split != EvalSplit::All {
        eprintln!(
            "warning: this data differs from the model's training data ({}); the {} split \
             is held out only if no patient of it was used in training (use --split all for \
             an external cohort)",
            model.card.dataset.name,
            split.name()
        );
    }
    let opts = options(split, bootstrap, seed);
    eprintln!(
        "evaluating on the {} split ({} bootstrap resamples)",
        split.name(),
        bootstrap
    );
    Ok(evaluate(model, data, &opts)?)
}

/// metrics.json, report.html and predictions.csv.
pub(crate) fn write_outputs(ev: &Evaluation, out: &Path) -> anyhow::Result<()> {
    let (json, html) = hn_engine::report::write_report(out, &ev.report, &ev.plots)?;
    let csv = out.join("predictions.csv");
    let bytes = hn_engine::predictions::to_csv(&ev.predictions)
        .with_context(|| format!("{}: CSV", csv.display()))?;
    hn_engine::infer::output::write_file_atomic(&csv, &bytes)?;
    eprintln!(
        "wrote {}, {} and {}",
        json.display(),
        html.display(),
        csv.display()
    );
    Ok(())
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
        "{} split of {} ({}), {} studies; test-time augmentation: {}",
        r.dataset.split,
        r.dataset.name,
        if r.dataset.training_distribution {
            "the model's training data"
        } else {
            "external to the model's training data"
        },
        r.dataset.n_studies,
        r.test_time_augmentation.name()
    );
    if let Some(rc) = &r.recalibration {
        let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
        for (j, task) in ["any", "mortality_30d", "poor_outcome_90d"]
            .iter()
            .enumerate()
        {
            println!(
                "recalibrated on {} {} studies: {task:<17} ECE {} → {}, Brier {} → {}",
                rc.n_fitted,
                rc.fitted_on,
                f(rc.before.ece[j]),
                f(rc.after.ece[j]),
                f(rc.before.brier[j]),
                f(rc.after.brier[j])
            );
        }
        println!(
            "referral rate on the {} reported studies: {:.3} → {:.3} (target {:.2})",
            rc.n_reported,
            rc.before.referral_rate,
            rc.after.referral_rate,
            rc.after.target_referral_rate
        );
    }
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
