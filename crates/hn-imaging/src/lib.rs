//! # hn-imaging — layer 1: imaging I/O
//!
//! Turns DICOM and NIfTI bytes into [`Volume`]s: oriented voxel grids of f32 values (Hounsfield
//! units for CT, stored intensities for MR) with spacing, origin, direction and provenance.
//! Windowing, resampling and masks are small composable [`transforms`].
//!
//! This crate knows nothing of machine learning, datasets or the model; every later layer
//! (data, model, engine, faces) builds on the [`Volume`] defined here.
//!
//! Coordinate convention: **LPS** (DICOM patient coordinates) everywhere. NIfTI's RAS+
//! world coordinates are converted on read and write (x and y negated).

pub mod dicom_write;
pub mod volume;

pub use volume::{Modality, Provenance, Volume, VolumeError};
