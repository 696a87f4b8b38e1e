//! The evaluation report: `metrics.json` (schema in `docs/METRICS.md`, the serde structs
//! below) and a self-contained `report.html` (inline SVG plots drawn by plotters, heatmap
//! overlays as base64 PNG).
//!
//! Plots use plotters' SVG backend with no font feature: text becomes SVG `<text>` elements
//! laid out by the browser, so nothing needs fontconfig or system fonts at build or run time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::metrics::{
    self, ECE_BINS, Interval, MetricsError, OperatingPoint, ReferralPoint, ReferralPolicy,
    ReliabilityBin, RocPoint,
};
use crate::scoring::TestTimeAugmentation;

mod schema;
pub use schema::*;
mod build;
pub use build::*;
mod plots;
pub use plots::*;
mod overlay;
pub use overlay::*;
mod html;
pub use html::*;
#[cfg(test)]
mod overlay_tests;
#[cfg(test)]
mod tests;

/// Version of the `metrics.json` schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 2;

/// Report errors.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plot: {0}")]
    Plot(String),
    #[error("{0}")]
    Invalid(String),
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::atomic::write_file(path, bytes)
        .map_err(|(path, source)| ReportError::Io { path, source })
}

/// Write `metrics.json` and `report.html` into `dir` (created). Returns their paths.
pub fn write_report(
    dir: &Path,
    r: &MetricsReport,
    plots: &ReportPlots,
) -> Result<(PathBuf, PathBuf), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_vec_pretty(r).map_err(|e| ReportError::Invalid(e.to_string()))?;
    let html = render_html(r, plots)?;
    let (jp, hp) = (dir.join("metrics.json"), dir.join("report.html"));
    write_atomic(&jp, &json)?;
    write_atomic(&hp, html.as_bytes())?;
    Ok((jp, hp))
}
