//! `hemorrhagenet shift-suite`: how a trained model holds up away from its training
//! distribution. Writes shifted synthetic cohorts as DICOM (`hn_data::synth::shift_presets`,
//! and any `--cohort NAME=CONFIG.toml` of the user's), reads each back through a manifest —
//! decoding, resampling, the card's preprocessing, as a user's own archive — scores it with
//! the card as it is (`evaluate --split all`) and after recalibrating on half of it, and
//! writes one table (`shift_suite.md`, `shift_suite.json`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use hn_data::layouts::DatasetKind;
use hn_data::synth::{self, OutputFormat, SynthConfig};
use hn_engine::checkpoint::load_model;
use hn_engine::dataset::{Dataset, SplitConfig};
use hn_engine::envelope::Verdict;
use hn_engine::evaluate::{EvalSplit, Evaluation, evaluate, evaluate_recalibrated};
use hn_engine::metrics::Interval;
use serde::Serialize;

use super::data_args::{DataArgs, load};
use super::evaluate::{options, write_outputs};

#[derive(clap::Args, Debug)]
pub struct ShiftSuiteArgs {
    /// Model folder written by `train` (OUT/model).
    #[arg(long)]
    pub model: PathBuf,
    /// Output folder: one sub-folder per cohort (cohort, report, recalibrated report) and the
    /// table.
    #[arg(long)]
    pub out: PathBuf,
    /// Studies per cohort (half for recalibration, half to report on).
    #[arg(long, default_value_t = 200)]
    pub studies: usize,
    /// Cohort seed (the same patients' draws across cohorts).
    #[arg(long, default_value_t = 31)]
    pub seed: u64,
    /// Bootstrap resamples for the 95 % CIs.
    #[arg(long, default_value_t = 500)]
    pub bootstrap: usize,
    /// Only these built-in cohorts (comma-separated; default: all of them).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// An extra cohort of your own: `NAME=FILE.toml` (SynthConfig fields; repeatable).
    #[arg(long = "cohort", value_name = "NAME=FILE")]
    pub cohorts: Vec<String>,
    /// Keep each cohort's DICOM files (they are removed once scored, to spare the disk).
    #[arg(long)]
    pub keep_images: bool,
}

/// One row of the table.
#[derive(Debug, Serialize)]
struct Row {
    cohort: String,
    description: String,
    n: usize,
    any_auc: Option<Interval>,
    /// The subtype with the lowest AUC among those with at least [`MIN_POSITIVES`] positives.
    weakest_subtype: Option<(String, Interval)>,
    /// Every detection label's AUC (`None` where the cohort has no positives or negatives),
    /// with its count of positive studies, in the report's label order.
    detection: Vec<LabelAuc>,
    mortality_auc: Option<Interval>,
    ich_score_model_estimate_auc: Option<Interval>,
    clinical_only_auc: Option<Interval>,
    /// The model's mortality AUC minus each of those two on the same studies (paired
    /// bootstrap; the ICH score's studies are those with a recorded GCS and age).
    gain_over_ich_score: Option<Interval>,
    gain_over_clinical_only: Option<Interval>,
    /// 30-day mortality ECE on the reported half under the card's calibration, and after the
    /// recalibration on the other half.
    mortality_ece_card: Option<f64>,
    mortality_ece_recalibrated: Option<f64>,
    /// Share of all studies flagged for review under the card, for any reason (uncertainty,
    /// feature distance, training envelope): `predictions.csv`'s `review_flag`.
    review_rate: f64,
    /// Bleed-decision errors (at the card's threshold) among all studies, among the flagged
    /// ones and among the rest: the flag should rise where the errors are.
    error_rate: f64,
    error_rate_flagged: Option<f64>,
    error_rate_retained: Option<f64>,
    /// The same on the reported half after recalibration on the other half (thresholds,
    /// temperatures, referral refitted on this site's data).
    error_rate_recalibrated: f64,
    error_rate_flagged_recalibrated: Option<f64>,
    error_rate_retained_recalibrated: Option<f64>,
    /// Share referred by the feature distance alone.
    distance_rate: Option<f64>,
    /// Shares outside the training envelope (scored, referred) and refused by it.
    envelope_outside: f64,
    envelope_refused: f64,
}

pub fn run(args: ShiftSuiteArgs) -> anyhow::Result<ExitCode> {
    let device = hn_engine::devices::parse_devices("cpu").map_err(|e| anyhow::anyhow!(e))?;
    let model = load_model(&args.model, &device[0])?;
    model
        .card
        .validate(model.net.config())
        .map_err(|e| anyhow::anyhow!("{}: card.json: {e}", model.dir.display()))?;
    if args.studies < 20 {
        bail!(
            "--studies {}: at least 20 per cohort are needed",
            args.studies
        );
    }
    let presets = synth::shift_presets();
    if let Some(unknown) = args
        .only
        .iter()
        .find(|o| !presets.iter().any(|p| p.name == o.as_str()))
    {
        bail!("--only {unknown}: not a built-in cohort (see docs/RESULTS.md, shift suite)");
    }
    let mut cohorts: Vec<(String, String, SynthConfig)> = presets
        .into_iter()
        .filter(|p| args.only.is_empty() || args.only.iter().any(|o| o == p.name))
        .map(|p| (p.name.to_string(), p.description.to_string(), p.config))
        .collect();
    for c in &args.cohorts {
        let (name, file) = c
            .split_once('=')
            .with_context(|| format!("--cohort {c}: expected NAME=FILE.toml"))?;
        // The name becomes a folder under --out and a row of the table.
        let plain = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-';
        if name.is_empty() || !name.chars().all(plain) {
            bail!("--cohort {c}: NAME must be letters, digits, '_' or '-'");
        }
        if cohorts.iter().any(|(n, _, _)| n == name) {
            bail!("--cohort {c}: a cohort named {name} is already in the suite");
        }
        let cfg = SynthConfig::from_toml_file(Path::new(file))?;
        cfg.validate()
            .map_err(|m| anyhow::anyhow!("--cohort {c}: {m}"))?;
        cohorts.push((name.to_string(), format!("user config {file}"), cfg));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Half of each cohort to recalibrate on, half to report; nothing is trained.
    let split = SplitConfig {
        train: 0.0,
        validation: 0.5,
        test: 0.5,
        seed: args.seed,
    };
    let mut rows = Vec::new();
    for (name, description, cfg) in &cohorts {
        let dir = args.out.join(name);
        let cohort = dir.join("cohort");
        eprintln!("[{name}] writing {} studies as DICOM", args.studies);
        synth::write_cohort(cfg, &cohort, args.studies, args.seed, OutputFormat::Dicom)?;
        let manifest = synth::write_manifest(&cohort)?;
        let data_args = DataArgs {
            dataset: DatasetKind::Manifest,
            root: Some(manifest),
            studies: args.studies,
            synth_seed: args.seed,
            cache: Some(dir.join("cache")),
        };
        let data = load(&data_args, &model.card.preprocess, &split, None)?;
        let verdicts: Vec<Verdict> = data
            .samples
            .iter()
            .map(|s| {
                hn_engine::infer::assemble::input_gate(&model.card, s)
                    .map_or(Verdict::Inside, |g| g.verdict)
            })
            .collect();
        let share = |v: Verdict| {
            verdicts.iter().filter(|&&x| x == v).count() as f64 / verdicts.len().max(1) as f64
        };
        eprintln!(
            "[{name}] scoring {} studies with the card as it is",
            data.samples.len()
        );
        let all = evaluate(
            &model,
            &data,
            &options(EvalSplit::All, args.bootstrap, args.seed),
        )?;
        write_outputs(&all, &dir.join("report"))?;
        eprintln!("[{name}] recalibrating on half, reporting the other half");
        let (recal, recal_card) = evaluate_recalibrated(
            &model,
            &data,
            &options(EvalSplit::Test, args.bootstrap, args.seed),
        )?;
        write_outputs(&recal, &dir.join("recalibrated"))?;
        let errors = [
            ErrorRates::of(&model.card, &data, &all),
            ErrorRates::of(&recal_card, &data, &recal),
        ];
        rows.push(row(
            name,
            description,
            &all,
            &recal,
            errors,
            [share(Verdict::Outside), share(Verdict::Refused)],
        ));
        if !args.keep_images {
            std::fs::remove_dir_all(cohort.join("studies"))
                .with_context(|| format!("removing {}", cohort.join("studies").display()))?;
            std::fs::remove_dir_all(dir.join("cache")).ok();
        }
    }
    let table = markdown(&rows, &args);
    std::fs::write(args.out.join("shift_suite.md"), &table)?;
    std::fs::write(
        args.out.join("shift_suite.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    println!("{table}");
    eprintln!("wrote {}", args.out.join("shift_suite.md").display());
    Ok(ExitCode::SUCCESS)
}

/// Subtypes with fewer positives in a cohort are not ranked as its weakest (their AUC's CI
/// spans most of [0, 1]).
const MIN_POSITIVES: usize = 10;

/// One detection label's AUC in one cohort.
#[derive(Debug, Serialize)]
struct LabelAuc {
    label: String,
    n_positive: usize,
    auc: Option<Interval>,
}

/// Bleed-decision errors overall, among flagged and among retained studies.
struct ErrorRates {
    review: f64,
    all: f64,
    flagged: Option<f64>,
    retained: Option<f64>,
}

impl ErrorRates {
    fn of(card: &hn_engine::checkpoint::ModelCard, data: &Dataset, ev: &Evaluation) -> Self {
        let threshold = card.calibration.as_ref().map_or(0.5, |c| c.thresholds[0]);
        let by_key = data.by_key();
        let (mut n, mut wrong, mut nf, mut wf) = (0usize, 0usize, 0usize, 0usize);
        for r in &ev.predictions {
            let Some(y) = by_key
                .get(r.study_key.as_str())
                .and_then(|s| s.labels)
                .map(|l| l.any)
            else {
                continue;
            };
            let err = (r.any >= threshold) != y;
            n += 1;
            wrong += usize::from(err);
            if r.review_flag == 1 {
                nf += 1;
                wf += usize::from(err);
            }
        }
        let rate = |w: usize, n: usize| (n > 0).then(|| w as f64 / n as f64);
        let flagged = ev.predictions.iter().filter(|r| r.review_flag == 1).count();
        ErrorRates {
            review: flagged as f64 / ev.predictions.len().max(1) as f64,
            all: rate(wrong, n).unwrap_or(f64::NAN),
            flagged: rate(wf, nf),
            retained: rate(wrong - wf, n - nf),
        }
    }
}

fn row(
    name: &str,
    description: &str,
    all: &Evaluation,
    recal: &Evaluation,
    [errors, errors_recalibrated]: [ErrorRates; 2],
    [envelope_outside, envelope_refused]: [f64; 2],
) -> Row {
    let r = &all.report;
    let auc_of = |label: &str| {
        r.detection
            .iter()
            .find(|d| d.label == label)
            .and_then(|d| d.auc)
    };
    let weakest = r
        .detection
        .iter()
        .filter(|d| d.label != "any" && d.n_positive >= MIN_POSITIVES)
        .filter_map(|d| d.auc.map(|a| (d.label.clone(), a)))
        .min_by(|a, b| a.1.estimate.total_cmp(&b.1.estimate));
    let mort = r.prognosis.iter().find(|p| p.outcome == "mortality_30d");
    let baseline = |name: &str| {
        r.baselines
            .iter()
            .find(|b| b.name == name && b.task == "mortality_30d")
    };
    let (ich, clinical) = (
        baseline("ich_score_model_estimate"),
        baseline("clinical_only"),
    );
    let rc = recal.report.recalibration.as_ref();
    Row {
        cohort: name.into(),
        description: description.into(),
        n: r.dataset.n_studies,
        any_auc: auc_of("any"),
        weakest_subtype: weakest,
        detection: r
            .detection
            .iter()
            .map(|d| LabelAuc {
                label: d.label.clone(),
                n_positive: d.n_positive,
                auc: d.auc,
            })
            .collect(),
        mortality_auc: mort.and_then(|m| m.auc),
        ich_score_model_estimate_auc: ich.and_then(|b| b.auc),
        clinical_only_auc: clinical.and_then(|b| b.auc),
        gain_over_ich_score: ich.and_then(|b| b.model_gain),
        gain_over_clinical_only: clinical.and_then(|b| b.model_gain),
        mortality_ece_card: rc.and_then(|c| c.before.ece[1]),
        mortality_ece_recalibrated: rc.and_then(|c| c.after.ece[1]),
        review_rate: errors.review,
        error_rate: errors.all,
        error_rate_flagged: errors.flagged,
        error_rate_retained: errors.retained,
        error_rate_recalibrated: errors_recalibrated.all,
        error_rate_flagged_recalibrated: errors_recalibrated.flagged,
        error_rate_retained_recalibrated: errors_recalibrated.retained,
        distance_rate: r
            .referral
            .as_ref()
            .and_then(|f| f.distance.as_ref())
            .map(|d| d.test_rate),
        envelope_outside,
        envelope_refused,
    }
}

/// Every detection label per cohort (AUC [CI], positives), and — where the suite has the
/// `reference` cohort, the same patients without a shift — each AUC's change against it, so
/// what a shift costs is read apart from what the cohort's patients cost.
fn label_table(rows: &[Row]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let labels: Vec<&str> = first.detection.iter().map(|d| d.label.as_str()).collect();
    let auc = |r: &Row, label: &str| {
        r.detection
            .iter()
            .find(|d| d.label == label)
            .map(|d| (d.n_positive, d.auc))
    };
    let reference = rows.iter().find(|r| r.cohort == "reference");
    let mut s = format!(
        "\nEvery detection label (AUC [95 % CI], positive studies{}):\n\n| cohort |",
        if reference.is_some() {
            "; in brackets after it, the change against `reference`"
        } else {
            ""
        }
    );
    for l in &labels {
        s += &format!(" {l} |");
    }
    s += "\n|---|";
    s += &"---|".repeat(labels.len());
    s += "\n";
    for r in rows {
        s += &format!("| {} |", r.cohort);
        for l in &labels {
            let cell = match auc(r, l) {
                Some((n, Some(i))) => {
                    let delta = reference
                        .filter(|q| q.cohort != r.cohort)
                        .and_then(|q| auc(q, l))
                        .and_then(|(_, a)| a)
                        .map_or(String::new(), |a| {
                            format!(" ({:+.3})", i.estimate - a.estimate)
                        });
                    format!(
                        " {:.3} [{:.3}, {:.3}]{delta}, {n} |",
                        i.estimate, i.lo, i.hi
                    )
                }
                Some((n, None)) => format!(" –, {n} |"),
                None => " – |".into(),
            };
            s += &cell;
        }
        s += "\n";
    }
    s
}

fn markdown(rows: &[Row], args: &ShiftSuiteArgs) -> String {
    let ci = |i: &Option<Interval>| match i {
        Some(i) => format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi),
        None => "–".into(),
    };
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    // A baseline's AUC, then the model's paired gain over it.
    let versus = |auc: &Option<Interval>, gain: &Option<Interval>| match gain {
        Some(g) => format!(
            "{}; model {:+.3} [{:+.3}, {:+.3}]",
            ci(auc),
            g.estimate,
            g.lo,
            g.hi
        ),
        None => ci(auc),
    };
    let mut s = format!(
        "Shift suite: model {}, {} studies per cohort, cohort seed {}, {} bootstrap resamples \
         (`hemorrhagenet shift-suite --model {} --out OUT --studies {} --seed {}`).\n\n\
         | cohort | n | any AUC | weakest subtype (≥ {MIN_POSITIVES} positives) | mortality AUC | ICH score (model's read-out); the model's paired gain over it | clinical-only; the model's paired gain | mortality ECE: card → recalibrated | review rate (any reason) | by distance | outside envelope / refused | bleed-decision errors: all / flagged / retained | the same after recalibration |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        args.model.display(),
        args.studies,
        args.seed,
        args.bootstrap,
        args.model.display(),
        args.studies,
        args.seed
    );
    for r in rows {
        let weakest = match &r.weakest_subtype {
            Some((l, i)) => format!("{l} {}", ci(&Some(*i))),
            None => "–".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} → {} | {:.3} | {} | {:.3} / {:.3} | {:.3} / {} / {} | {:.3} / {} / {} |\n",
            r.cohort,
            r.n,
            ci(&r.any_auc),
            weakest,
            ci(&r.mortality_auc),
            versus(&r.ich_score_model_estimate_auc, &r.gain_over_ich_score),
            versus(&r.clinical_only_auc, &r.gain_over_clinical_only),
            f(r.mortality_ece_card),
            f(r.mortality_ece_recalibrated),
            r.review_rate,
            f(r.distance_rate),
            r.envelope_outside,
            r.envelope_refused,
            r.error_rate,
            f(r.error_rate_flagged),
            f(r.error_rate_retained),
            r.error_rate_recalibrated,
            f(r.error_rate_flagged_recalibrated),
            f(r.error_rate_retained_recalibrated)
        );
    }
    s += &label_table(rows);
    s += "\nCohorts:\n";
    for r in rows {
        s += &format!("* `{}`: {}\n", r.cohort, r.description);
    }
    s
}
