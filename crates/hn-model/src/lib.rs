//! # hn-model — layer 3: the network
//!
//! Takes tensors (windowed slices, clinical values + missing masks) and returns every output a
//! report needs. Knows nothing of files, datasets or the CLI.
//!
//! Built on burn 0.22, whose tensors carry their backend in the [`Device`](burn::prelude::Device):
//! `Device::flex()` is the pure-Rust CPU backend (inference), `Device::flex().autodiff()` the
//! same with gradients (training). There is no backend type parameter anywhere.
//!
//! * [`HemorrhageNetConfig`] → [`HemorrhageNet`]: `forward(ModelInput) -> ModelOutput`,
//!   [`ModelOutput::probabilities`], [`HemorrhageNet::forward_mc`], save/load, summary.
//! * [`MultiTaskLossConfig`] → [`MultiTaskLoss`]: `forward(&ModelOutput, &ModelTargets)`.
//! * [`Trainable`]: network + loss as one module, so one optimizer updates both.
//!
//! See `docs/MODEL.md` for the architecture and the API walk-through.

pub mod clinical;
// burn-tch (feature `tch`) is deprecated upstream; this project still offers it.
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod conv;
pub mod encoder;
pub mod fusion;
pub mod gather;
pub mod graph;
pub mod heads;
pub mod loss;
pub mod model;
pub mod norm;
pub mod pretrain;
pub mod uncertainty;
mod util;

pub use burn;
pub use graph::{NEIGHBOURS, RegionGraph};
pub use heads::{
    N_FACTS, N_LABELS, N_MRS_CLASSES, N_MRS_THRESHOLDS, N_SUBTYPES, POOR_OUTCOME_THRESHOLD,
};
pub use loss::{
    FACTS_LOG_SCALE, HematomaFacts, LossBreakdown, ModelTargets, MultiTaskLoss,
    MultiTaskLossConfig, TASKS, TargetRow,
};
pub use model::{
    EncodedBatch, HemorrhageNet, HemorrhageNetConfig, MODALITY_CT, MODALITY_MR, ModelInput,
    ModelIoError, ModelOutput, ModelProbabilities, ModelSummary, config_path,
};
pub use pretrain::SlicePretrainer;
pub use uncertainty::{McOutput, Temperatures, Uncertainty};
pub use util::McDropout;

use burn::prelude::*;

/// The network and its loss as one module, so a single optimizer step updates the weights and
/// the task log-variances together.
#[derive(Module, Debug)]
pub struct Trainable {
    /// The network.
    pub net: HemorrhageNet,
    /// The loss with its learned task weights.
    pub loss: MultiTaskLoss,
}

impl Trainable {
    /// Build both on `device` (use `Device::flex().autodiff()` to train).
    pub fn new(net: &HemorrhageNetConfig, loss: &MultiTaskLossConfig, device: &Device) -> Self {
        Self {
            net: net.init(device),
            loss: loss.init(device),
        }
    }

    /// Forward and loss.
    pub fn forward(
        &self,
        batch: ModelInput,
        targets: &ModelTargets,
    ) -> (ModelOutput, LossBreakdown) {
        let out = self.net.forward(batch);
        let loss = self.loss.forward(&out, targets);
        (out, loss)
    }
}
