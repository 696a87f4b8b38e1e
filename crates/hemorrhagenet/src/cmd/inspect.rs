//! `hemorrhagenet inspect PATH [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A DICOM file, a folder of DICOM files (searched recursively) or a NIfTI file.
    pub path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("inspect {}: not implemented yet", args.path.display())
}
