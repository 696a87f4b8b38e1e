//! `hemorrhagenet` — layer 5 (faces): the command line.
//!
//! Each subcommand lives in `cmd/<name>.rs` and is a thin wrapper over the library crates.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "hemorrhagenet",
    version,
    about = "Intracranial hemorrhage classification and prognosis from head CT/MR and clinical data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read a DICOM file/folder or a NIfTI volume and report what was found.
    Inspect(cmd::inspect::InspectArgs),
    /// Generate the synthetic head-CT cohort (images, labels, clinical data, outcomes).
    Synth(cmd::synth::SynthArgs),
    /// Print the network's parameter count per component and FLOPs per study.
    ModelSummary(cmd::model_summary::ModelSummaryArgs),
    /// Train on the synthetic cohort or a dataset on disk (checkpoints, resume, calibration).
    Train(cmd::train::TrainArgs),
    /// Evaluate a trained model: metrics with CIs, baselines, calibration, report.html.
    Evaluate(cmd::evaluate::EvaluateArgs),
    /// Synthesise a cohort, train, evaluate and predict a held-out study, in one command.
    Demo(cmd::demo::DemoArgs),
    /// Score a study (or a shard of a manifest): decision path, uncertainty, review flag,
    /// heatmaps. See docs/PREDICT.md.
    Predict(cmd::predict::PredictArgs),
    /// Run the triage service: DICOM node (C-ECHO, C-STORE), HTTP and DICOMweb STOW-RS,
    /// worklist, results back to the PACS. See docs/SERVICE.md.
    Serve(cmd::serve::ServeArgs),
    /// Score a trained model on shifted synthetic cohorts written as DICOM (scanner, slice
    /// thickness, case mix), before and after site recalibration: one table.
    ShiftSuite(cmd::shift_suite::ShiftSuiteArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEMORRHAGENET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,hn_serve=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::ModelSummary(args) => cmd::model_summary::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Evaluate(args) => cmd::evaluate::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::ShiftSuite(args) => cmd::shift_suite::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
