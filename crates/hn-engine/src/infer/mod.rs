//! Inference: one study → a [`Prediction`] report, heatmaps and overlays; batch prediction
//! over a manifest shard.

pub mod volume;

pub use volume::{VolumeEstimateConfig, estimate_volume_ml, estimate_volume_ml_with};
