//! `hemorrhagenet inspect PATH [--json] [--series UID]`: a thin printer over
//! [`hn_imaging::inspect`], so the report is the same wherever it is built.

use std::path::PathBuf;
use std::process::ExitCode;

use hn_imaging::AnyReadOptions;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A DICOM file, a folder of DICOM files (searched recursively) or a NIfTI file.
    pub path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Use this SeriesInstanceUID instead of the automatic series choice.
    #[arg(long)]
    pub series: Option<String>,
    /// Apply the RSNA-2019 header fix (see docs/IMAGING.md).
    #[arg(long)]
    pub rsna_fix: bool,
    /// Volume index of a 4-D NIfTI file.
    #[arg(long, default_value_t = 0)]
    pub volume: usize,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut opts = AnyReadOptions::default();
    opts.dicom.series_uid = args.series.clone();
    opts.dicom.rsna_fix = args.rsna_fix;
    opts.nifti.volume_index = args.volume;
    // ImagingError's Display names the file and the cause; main prints it on stderr.
    let report = hn_imaging::inspect::inspect(&args.path, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
