//! `hemorrhagenet synth`: generate the synthetic head-CT cohort, a montage, or run the
//! ICH-score calibration check. A thin wrapper over `hn_data::synth`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hn_data::synth::{self, OutputFormat, SynthConfig};

#[derive(clap::Args)]
pub struct SynthArgs {
    /// Output directory of the cohort.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of studies.
    #[arg(long, default_value_t = 100)]
    pub studies: usize,
    /// Cohort seed (default: the config's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// TOML config (fields of SynthConfig; missing fields take defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Image output: dicom, nifti, both or none (CSVs only).
    #[arg(long, default_value = "dicom")]
    pub format: OutputFormat,
    /// In-plane matrix size (overrides the config).
    #[arg(long)]
    pub size: Option<usize>,
    /// Number of slices (overrides the config; 0 = draw thickness from the config range).
    #[arg(long)]
    pub slices: Option<usize>,
    /// How the DICOM files are arranged: `cohort` (a folder per study, with the cohort CSVs)
    /// or `rsna` (also the RSNA-2019 tree: `stage_2_train/ID_<slice>.dcm` and
    /// `stage_2_train.csv`, read back with `--dataset rsna`).
    #[arg(long, default_value = "cohort", value_parser = ["cohort", "rsna"])]
    pub layout: String,
    /// Modalities: `ct`, `mr` (T1, T2, FLAIR, T2*-GRE, SWI of the same patients) or `both`
    /// (overrides the config's `modality`).
    #[arg(long)]
    pub modality: Option<synth::CohortModality>,
    /// Write a PNG montage to this path: CT (negative + one study per subtype, window 40/80),
    /// or with `--modality mr` every sequence × bleed type and blood age.
    #[arg(long)]
    pub montage: Option<PathBuf>,
    /// Print the ICH-score calibration table over N bleeding patients (no images rendered).
    #[arg(long, value_name = "N")]
    pub calibration_check: Option<usize>,
    /// Tolerance (percentage points) for --calibration-check; exit code 1 when exceeded.
    #[arg(long, default_value_t = 7.0)]
    pub tolerance: f64,
}

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &args.config {
        Some(p) => SynthConfig::from_toml_file(p)?,
        None => SynthConfig::default(),
    };
    if let Some(s) = args.size {
        cfg.size = s;
    }
    if let Some(n) = args.slices {
        cfg.n_slices = if n == 0 { None } else { Some(n) };
    }
    if let Some(m) = args.modality {
        cfg.modality = m;
    }
    cfg.validate()
        .map_err(|m| anyhow::anyhow!("invalid synthetic config: {m}"))?;
    let seed = args.seed.unwrap_or(cfg.seed);
    let mut did = false;
    let mut code = ExitCode::SUCCESS;
    if let Some(n) = args.calibration_check {
        did = true;
        let t0 = std::time::Instant::now();
        let report = synth::calibration_check(&cfg, seed, n);
        let rows = &report.rows;
        println!("ICH-score calibration: {n} bleeding patients, seed {seed}");
        println!(
            "| ICH score | n | deaths | observed 30-d mortality | mean oracle | Hemphill 2001 | diff (points) |"
        );
        println!("|---|---|---|---|---|---|---|");
        let mut ok = true;
        for r in rows {
            let diff = (r.observed - r.target) * 100.0;
            if r.n > 0 && diff.abs() > args.tolerance {
                ok = false;
            }
            println!(
                "| {} | {} | {} | {:.1} % | {:.1} % | {:.0} % | {:+.1} |",
                r.score,
                r.n,
                r.deaths,
                r.observed * 100.0,
                r.mean_oracle * 100.0,
                r.target * 100.0,
                diff
            );
        }
        println!(
            "AUC for 30-day death: oracle {:.3}, ICH score {:.3}",
            report.auc_oracle, report.auc_ich_score
        );
        println!(
            "within ±{} points: {}  ({:.1} s)",
            args.tolerance,
            if ok { "yes" } else { "NO" },
            t0.elapsed().as_secs_f64()
        );
        if !ok {
            code = ExitCode::FAILURE;
        }
    }
    if let Some(p) = &args.montage {
        did = true;
        if cfg.modality == synth::CohortModality::Mr {
            synth::montage::write_mr_montage(&cfg, seed, p)
        } else {
            synth::montage::write_montage(&cfg, seed, p, true)
        }
        .with_context(|| format!("writing montage {}", p.display()))?;
        eprintln!("montage written to {}", p.display());
    }
    if let Some(out) = &args.out {
        did = true;
        let t0 = std::time::Instant::now();
        if args.layout == "rsna" && !matches!(args.format, OutputFormat::Dicom | OutputFormat::Both)
        {
            bail!("--layout rsna needs DICOM images (--format dicom or both)");
        }
        if args.layout == "rsna" && !cfg.modality.has_ct() {
            bail!("--layout rsna is a CT layout: it needs --modality ct or both");
        }
        let m = synth::write_cohort(&cfg, out, args.studies, seed, args.format)?;
        if args.layout == "rsna" {
            let n = synth::arrange_as_rsna(out)
                .with_context(|| format!("arranging {} as RSNA-2019", out.display()))?;
            eprintln!(
                "arranged as RSNA-2019: {n} slices in {}",
                out.join("stage_2_train").display()
            );
        }
        let dt = t0.elapsed().as_secs_f64();
        eprintln!(
            "wrote {} synthetic studies ({}x{}, seed {}) to {} in {:.1} s ({:.2} studies/s)",
            m.n_studies,
            cfg.size,
            cfg.size,
            seed,
            out.display(),
            dt,
            m.n_studies as f64 / dt.max(1e-9)
        );
    }
    if !did {
        bail!("nothing to do: give --out DIR, --montage PNG or --calibration-check N");
    }
    Ok(code)
}
