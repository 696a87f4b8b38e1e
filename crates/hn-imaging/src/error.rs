//! One error type for every reader and writer in the crate.
//!
//! Each variant carries the file (or folder) it concerns, because a user who points the tool at
//! a folder of hundreds of slices needs to know *which* file was bad and *why*; callers (and
//! tests) can match on the variant to tell a rejected image apart from a broken file.

use std::path::PathBuf;

/// Errors from reading or writing imaging files. `Display` names the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The file could not be opened or read.
    /// (The I/O error is part of the message, not a `source()`, so printers that walk the
    /// chain do not repeat it.)
    #[error("{path}: cannot read: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The bytes are not a DICOM data set (or not one we can parse).
    #[error("{path}: not a DICOM file: {reason}")]
    NotDicom { path: PathBuf, reason: String },
    /// The file ends before the data it announces (truncated copy, interrupted transfer).
    #[error("{path}: truncated: {reason}")]
    Truncated { path: PathBuf, reason: String },
    /// A DICOM object without pixel data (structured report, presentation state, ...).
    #[error("{path}: not an image: {reason}")]
    NotImage { path: PathBuf, reason: String },
    /// An image we refuse to turn into quantitative values (colour, YBR, 8-bit lossy "CT", ...).
    #[error("{path}: unsupported image: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// A compressed pixel stream that does not decode.
    #[error("{path}: pixel data does not decode: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// An attribute with a value we cannot use (non-numeric rescale, bad geometry, ...).
    #[error("{path}: bad attribute {attribute}: {reason}")]
    BadAttribute {
        path: PathBuf,
        attribute: String,
        reason: String,
    },
    /// Files of one series that cannot be stacked (mixed matrix sizes, ...).
    #[error("{path}: inconsistent series: {reason}")]
    InconsistentSeries { path: PathBuf, reason: String },
    /// Nothing usable was found at the path.
    #[error("{path}: no DICOM image series found: {reason}")]
    NoSeries { path: PathBuf, reason: String },
    /// `series_uid` was given but no such series exists.
    #[error("{path}: series {uid} not found (available: {available})")]
    SeriesNotFound {
        path: PathBuf,
        uid: String,
        available: String,
    },
    /// A NIfTI file that cannot be read.
    #[error("{path}: bad NIfTI: {reason}")]
    Nifti { path: PathBuf, reason: String },
    /// Writing failed.
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    /// The decoded grid does not make a valid volume.
    #[error("{path}: {error}")]
    Volume {
        path: PathBuf,
        error: crate::VolumeError,
    },
}

impl ImagingError {
    /// The file or folder the error concerns.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ImagingError::Io { path, .. }
            | ImagingError::NotDicom { path, .. }
            | ImagingError::Truncated { path, .. }
            | ImagingError::NotImage { path, .. }
            | ImagingError::Unsupported { path, .. }
            | ImagingError::Decode { path, .. }
            | ImagingError::BadAttribute { path, .. }
            | ImagingError::InconsistentSeries { path, .. }
            | ImagingError::NoSeries { path, .. }
            | ImagingError::SeriesNotFound { path, .. }
            | ImagingError::Nifti { path, .. }
            | ImagingError::Write { path, .. }
            | ImagingError::Volume { path, .. } => path,
        }
    }

    /// Whose fault the error is: the input's (a server answers 4xx) or ours (5xx).
    pub fn fault(&self) -> Fault {
        match self {
            ImagingError::Write { .. } => Fault::Internal,
            ImagingError::Io { error, .. } => Fault::of_io(error),
            _ => Fault::Input,
        }
    }

    /// A short stable name of the kind of error (`"unsupported"`, `"truncated"`, ...), for
    /// reports and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            ImagingError::Io { .. } => "io",
            ImagingError::NotDicom { .. } => "not-dicom",
            ImagingError::Truncated { .. } => "truncated",
            ImagingError::NotImage { .. } => "not-image",
            ImagingError::Unsupported { .. } => "unsupported",
            ImagingError::Decode { .. } => "decode",
            ImagingError::BadAttribute { .. } => "bad-attribute",
            ImagingError::InconsistentSeries { .. } => "inconsistent-series",
            ImagingError::NoSeries { .. } => "no-series",
            ImagingError::SeriesNotFound { .. } => "series-not-found",
            ImagingError::Nifti { .. } => "nifti",
            ImagingError::Write { .. } => "write",
            ImagingError::Volume { .. } => "volume",
        }
    }
}

/// Whose fault an error is, carried from imaging up through the engine: a request's (an
/// unusable study, a bad value: `4xx` for a server) or ours (`5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    Input,
    Internal,
}

impl Fault {
    /// A missing or malformed input is the caller's; any other I/O failure (disk full,
    /// permissions) is ours.
    pub fn of_io(e: &std::io::Error) -> Fault {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound | InvalidData | InvalidInput | UnexpectedEof => Fault::Input,
            _ => Fault::Internal,
        }
    }
}
