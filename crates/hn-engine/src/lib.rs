//! # hn-engine — layer 4: engines
//!
//! Training, evaluation (metrics, baselines, calibration), inference and explanation, built on
//! `hn-data` and `hn-model`.

pub mod atomic;
pub mod augment;
pub mod bars;
pub mod baselines;
pub mod checkpoint;
pub mod dataset;
pub mod devices;
pub mod distance;
pub mod envelope;
pub mod evaluate;
pub mod infer;
pub mod metrics;
pub mod predictions;
pub mod report;
pub mod sample;
pub mod scoring;
pub mod train;
pub mod uncertainty;
