//! `hemorrhagenet predict`: a thin wrapper over [`hn_engine::infer`].
//!
//! * Single study: `predict STUDY --model DIR [--clinical FILE] [--out DIR]` writes
//!   `OUT/<key>/{prediction.json, overlay_sliceNN.png, heatmap.nii.gz}` (key = `--key`, else
//!   the STUDY's file/folder name) and prints `prediction.json` on stdout. With `--dicom`
//!   also `OUT/<key>/dicom/{sr.dcm, overlay_NN.dcm}` for the source study's PACS.
//! * Batch: `predict --manifest CSV --shard-index I --shard-count N --model DIR --out DIR`
//!   predicts the manifest's studies of shard I (stable SHA-256 hash of the study key), one
//!   folder per study, skipping finished ones, and prints the shard summary JSON on stdout.
//!   Exit code 1 when any study failed. `--shard-index` defaults to `JOB_COMPLETION_INDEX`
//!   (Kubernetes Indexed Job) or `SLURM_ARRAY_TASK_ID` (Slurm array).
//!
//! See docs/PREDICT.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use hn_engine::infer::{
    BatchEvent, PredictOptions, Predictor, predict_batch, read_clinical, sanitize_key,
    write_study_dir,
};

#[derive(clap::Args)]
pub struct PredictArgs {
    /// A DICOM folder (searched recursively), a DICOM file or a NIfTI file (.nii, .nii.gz).
    #[arg(required_unless_present = "manifest", conflicts_with = "manifest")]
    pub study: Option<PathBuf>,
    /// The model folder a training run wrote (`run/model`, with card.json and model.bpk).
    #[arg(long)]
    pub model: PathBuf,
    /// The patient's clinical data: a JSON object or a one-row CSV of features named as in
    /// CLINICAL_FEATURES (single-study mode; a manifest carries its own clinical columns).
    #[arg(long, conflicts_with = "manifest")]
    pub clinical: Option<PathBuf>,
    /// Single-study mode: the study key used in the report and as the output folder name
    /// (default: the STUDY's file or folder name).
    #[arg(long, conflicts_with = "manifest")]
    pub key: Option<String>,
    /// Output folder; each study's results go to OUT/<study key>/.
    #[arg(long, default_value = "predictions")]
    pub out: PathBuf,
    /// Clinical features listed in `feature_weights`.
    #[arg(long, default_value_t = hn_engine::infer::DEFAULT_TOP_FEATURES)]
    pub top_features: usize,
    /// MC-dropout passes (default: the model card's, else 10; 0 = one deterministic pass).
    #[arg(long)]
    pub mc_passes: Option<usize>,
    /// Batch mode: a study manifest CSV (docs/DATASETS.md).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// This shard (0-based). Default: $JOB_COMPLETION_INDEX, else $SLURM_ARRAY_TASK_ID, else 0
    /// when --shard-count is 1.
    #[arg(long, requires = "manifest")]
    pub shard_index: Option<u32>,
    /// Number of shards the manifest is split into.
    #[arg(long, default_value_t = 1, requires = "manifest")]
    pub shard_count: u32,
    /// Single-study mode: print nothing on stdout (the files are still written).
    #[arg(long)]
    pub quiet: bool,
    /// What the study is, instead of what its files say: `mr` reads an MR study (a DICOM
    /// folder, a folder of NIfTI files named by sequence, or one NIfTI file named by its
    /// sequence, e.g. flair.nii.gz, which NIfTI alone cannot tell from a CT); `ct` reads one CT
    /// series whatever else the folder holds
    #[arg(long, conflicts_with = "manifest")]
    pub modality: Option<hn_engine::infer::StudyModality>,
    /// Also write the results as DICOM for the source study's PACS: an Enhanced SR and a
    /// Secondary Capture overlay series in OUT/<key>/dicom/ (docs/PREDICT.md). They carry the
    /// patient's and study's identifiers, copied from the input; DICOM input only.
    #[arg(long)]
    pub dicom: bool,
    /// Where to run the model: `cpu` (default), or `cuda:N`, `libtorch`, `libtorch-cuda:N`
    /// in builds with those features (as `train --devices`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn shard_index_from_env(count: u32) -> anyhow::Result<u32> {
    for var in ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return v
                .trim()
                .parse()
                .with_context(|| format!("${var} = {v:?} is not a shard index"));
        }
    }
    if count == 1 {
        return Ok(0);
    }
    bail!(
        "--shard-index is required with --shard-count {count} (or set JOB_COMPLETION_INDEX / \
         SLURM_ARRAY_TASK_ID)"
    )
}

fn print_stdout(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The study key in single mode: the STUDY's file or folder name, nothing from its headers.
fn study_key(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "study".into())
}

pub fn run(args: PredictArgs) -> anyhow::Result<ExitCode> {
    if !args.model.exists() {
        bail!(
            "{}: model folder does not exist (pass the `model` folder a training run wrote)",
            args.model.display()
        );
    }
    let device = hn_engine::devices::parse_devices(&args.device)
        .map_err(|e| anyhow::anyhow!("--device {}: {e}", args.device))?;
    if device.len() != 1 {
        bail!("--device {}: prediction runs on one device", args.device);
    }
    let predictor =
        Predictor::load_on(&args.model, device[0].clone())?.with_options(PredictOptions {
            top_features: args.top_features,
            mc_passes: args.mc_passes,
            ..Default::default()
        });
    match &args.manifest {
        Some(m) => run_batch(&args, m, &predictor),
        None => run_single(&args, &predictor),
    }
}

fn run_single(args: &PredictArgs, predictor: &Predictor) -> anyhow::Result<ExitCode> {
    let study = args
        .study
        .as_ref()
        .expect("clap requires STUDY without --manifest");
    let clinical = match &args.clinical {
        Some(p) => read_clinical(p)?,
        None => Default::default(),
    };
    let key = match &args.key {
        Some(k) if !k.trim().is_empty() => k.clone(),
        Some(_) => bail!("--key must not be empty"),
        None => study_key(study),
    };
    let res = predictor.predict_path_as(&key, study, clinical, args.modality)?;
    let dicom = if args.dicom {
        Some(predictor.dicom_results(&res)?)
    } else {
        None
    };
    let dir = args.out.join(sanitize_key(&key));
    write_study_dir(&res, &dir, dicom.as_ref())?;
    let p = &res.prediction;
    eprintln!(
        "{key}: P(hemorrhage) {:.3} → {}; review {}; results in {}",
        p.decision_path.level_1.probability,
        if p.decision_path.level_1.decision {
            "hemorrhage"
        } else {
            "no hemorrhage"
        },
        if p.review.flag {
            "FLAGGED"
        } else {
            "not flagged"
        },
        dir.display()
    );
    if !args.quiet {
        print_stdout(&(serde_json::to_string_pretty(p)? + "\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_batch(
    args: &PredictArgs,
    manifest: &Path,
    predictor: &Predictor,
) -> anyhow::Result<ExitCode> {
    let index = match args.shard_index {
        Some(i) => i,
        None => shard_index_from_env(args.shard_count)?,
    };
    if args.shard_count == 0 || index >= args.shard_count {
        bail!(
            "--shard-index {index} must be in 0..{} (--shard-count {})",
            args.shard_count,
            args.shard_count
        );
    }
    let studies = hn_data::layouts::manifest::load(manifest)?;
    for w in &studies.warnings {
        eprintln!("warning: {w}");
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "predict shard {msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{index}/{}", args.shard_count));
    let mut on_event = |e: &BatchEvent| match e {
        BatchEvent::Started { in_shard } => bar.set_length(*in_shard as u64),
        BatchEvent::Done { .. } | BatchEvent::Skipped { .. } => bar.inc(1),
        BatchEvent::Failed { key, error } => {
            bar.suspend(|| eprintln!("failed: {key}: {error}"));
            bar.inc(1);
        }
    };
    let summary = predict_batch(
        predictor,
        &studies,
        index,
        args.shard_count,
        &args.out,
        args.dicom,
        &mut on_event,
    )?;
    bar.finish_and_clear();
    eprintln!(
        "shard {index}/{}: {} studies, {} predicted, {} already done, {} failed; results in {}",
        args.shard_count,
        summary.in_shard,
        summary.done,
        summary.skipped_existing,
        summary.failed.len(),
        args.out.display()
    );
    print_stdout(&(serde_json::to_string_pretty(&summary)? + "\n"))?;
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
