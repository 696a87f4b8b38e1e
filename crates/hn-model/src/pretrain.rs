//! Encoder pre-training on single slices mixed across studies.
//!
//! Why: trained end to end on whole studies (every batch = all slices of a few studies), the
//! per-slice evidence is learned very slowly — slice-level AUC stays at what the slice
//! position alone gives for hundreds of steps, in this network as in a plain PyTorch CNN
//! (docs/RESULTS.md) — while the same CNN trained on batches of slices drawn from many
//! studies learns where the blood is within a few epochs. So training can start with a
//! phase on mixed slices: the shared CNN plus this small slice head (max over the slice's
//! cells → linear → `[any, 5 subtypes | bleed]`), after which the head is dropped and the
//! encoder carries on inside the full model.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::heads::N_SUBTYPES;
use crate::loss::masked_bce;
use crate::model::HemorrhageNet;

/// The network plus the pre-training slice head.
#[derive(Module, Debug)]
pub struct SlicePretrainer {
    /// The network whose encoder is trained (the rest of it is untouched).
    pub net: HemorrhageNet,
    head: Linear,
}

impl SlicePretrainer {
    /// Wrap `net` with a fresh slice head.
    pub fn new(net: HemorrhageNet, device: &Device) -> Self {
        let d = net.config().d_model();
        Self {
            net,
            head: LinearConfig::new(d, 1 + N_SUBTYPES).init(device),
        }
    }

    /// `x [N, C·(2k+1), H, W]`, `modality [N]` → slice logits `[N, 6]`: column 0 any bleed,
    /// columns 1–5 each subtype given a bleed on the slice.
    pub fn forward(&self, x: Tensor<4>, modality: Tensor<1, Int>) -> Tensor<2> {
        let f = self.net.encode_slices(x, modality);
        let [n, d, h, w] = f.dims();
        let pooled = f.reshape([n, d, h * w]).max_dim(2).reshape([n, d]);
        self.head.forward(pooled)
    }

    /// [`forward`](Self::forward) plus the same head read at every cell of the feature map:
    /// `(slice logits [N, 6], cell logits [N, h·w, 6])`, cells row by row.
    ///
    /// Why cells: the slice head pools the most telling cell, so a slice with two kinds of
    /// blood, or a faint one, trains only the cells that already stand out; labels per cell
    /// (where the generator's masks say each type lies) train every cell with blood, and tell
    /// the encoder which cells hold which type.
    pub fn forward_with_cells(
        &self,
        x: Tensor<4>,
        modality: Tensor<1, Int>,
    ) -> (Tensor<2>, Tensor<3>) {
        let f = self.net.encode_slices(x, modality);
        let [n, d, h, w] = f.dims();
        let flat = f.reshape([n, d, h * w]);
        let pooled = flat.clone().max_dim(2).reshape([n, d]);
        let cells = flat.swap_dims(1, 2).reshape([n * h * w, d]);
        (
            self.head.forward(pooled),
            self.head.forward(cells).reshape([n, h * w, 1 + N_SUBTYPES]),
        )
    }

    /// Loss of `logits [N, 6]` against `labels [N, 6]` (0/1): BCE of "any" on every slice plus
    /// BCE of the subtypes on bleeding slices, the hierarchy of the slice loss in
    /// [`MultiTaskLoss`](crate::MultiTaskLoss).
    pub fn loss(logits: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
        let [n, _] = logits.dims();
        let known = Tensor::ones([n, 1], &logits.device());
        Self::masked_loss(logits, labels, known)
    }

    /// [`loss`](Self::loss) of cell logits `[N, h·w, 6]` against cell labels of the same
    /// shape, over the slices whose `known [N]` is 1 (the others have no cell labels).
    pub fn cell_loss(logits: Tensor<3>, labels: Tensor<3>, known: Tensor<1>) -> Tensor<1> {
        let [n, c, k] = logits.dims();
        let known = known.reshape([n, 1]).expand([n, c]).reshape([n * c, 1]);
        Self::masked_loss(
            logits.reshape([n * c, k]),
            labels.reshape([n * c, k]),
            known,
        )
    }

    /// The hierarchical loss over the rows whose `known [N, 1]` is 1.
    fn masked_loss(logits: Tensor<2>, labels: Tensor<2>, known: Tensor<2>) -> Tensor<1> {
        let [n, _] = logits.dims();
        let device = logits.device();
        let any_t = labels.clone().narrow(1, 0, 1);
        let any = masked_bce(
            logits.clone().narrow(1, 0, 1),
            any_t.clone(),
            known.clone(),
            Tensor::ones([1, 1], &device),
        );
        let sub = masked_bce(
            logits.narrow(1, 1, N_SUBTYPES),
            labels.narrow(1, 1, N_SUBTYPES),
            (any_t * known).expand([n, N_SUBTYPES]),
            Tensor::ones([1, N_SUBTYPES], &device),
        );
        any + sub
    }

    /// The network, without the pre-training head.
    pub fn into_net(self) -> HemorrhageNet {
        self.net
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HemorrhageNetConfig;

    /// A small network over 2 slices of 2 channels at 16².
    fn small() -> HemorrhageNetConfig {
        HemorrhageNetConfig::new()
            .with_slices(2)
            .with_channels(2)
            .with_height(16)
            .with_width(16)
            .with_widths(vec![8, 16])
            .with_n_heads(2)
            .with_d_attn(8)
    }

    #[test]
    fn pretraining_head_learns_and_the_encoder_is_the_networks() {
        let device = Device::flex().autodiff();
        device.seed(1);
        let cfg = small().with_neighbour_slices(1);
        let mut m = SlicePretrainer::new(cfg.init(&device), &device);
        // Slices with a bright square bleed (label 1, subtype 2) or not.
        let n = 8;
        let mut x = vec![0.3f32; n * 6 * 16 * 16];
        let mut y = vec![0.0f32; n * 6];
        for i in (0..n).step_by(2) {
            for ch in 0..6 {
                for r in 4..9 {
                    for c in 5..10 {
                        x[((i * 6 + ch) * 16 + r) * 16 + c] = 0.9;
                    }
                }
            }
            y[i * 6] = 1.0;
            y[i * 6 + 2] = 1.0;
        }
        let xt = Tensor::<4>::from_data(TensorData::new(x, [n, 6, 16, 16]), &device);
        let yt = Tensor::<2>::from_data(TensorData::new(y, [n, 6]), &device);
        let md = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64; n], [n]), &device);
        use burn::optim::{AdamWConfig, GradientsParams};
        let encoded = |m: &SlicePretrainer| -> Vec<f32> {
            m.net
                .encode_slices(xt.clone(), md.clone())
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let before = encoded(&m);
        let mut opt = AdamWConfig::new().init();
        let mut first = 0.0;
        let mut last = 0.0;
        for step in 0..60 {
            let l = SlicePretrainer::loss(m.forward(xt.clone(), md.clone()), yt.clone());
            let v = l.clone().into_scalar::<f32>();
            if step == 0 {
                first = v;
            }
            last = v;
            let g = GradientsParams::from_grads(l.backward(), &m);
            m = opt.step(5e-3, m, g);
        }
        assert!(last < 0.3 * first, "loss {first} → {last}");
        // What was trained is the network's own encoder.
        let after = encoded(&m);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(
            moved > before.len() / 2,
            "{moved} of {} values moved",
            before.len()
        );
        assert_eq!(m.into_net().config().d_model(), 16);
    }

    #[test]
    fn the_cell_loss_reads_the_slice_head_at_every_cell_and_only_where_labels_are_known() {
        let device = Device::flex().autodiff();
        device.seed(2);
        let m = SlicePretrainer::new(small().init(&device), &device);
        let n = 3;
        let x = Tensor::<4>::random([n, 2, 16, 16], burn::tensor::Distribution::Default, &device);
        let md = Tensor::<1, Int>::zeros([n], &device);
        let (slices, cells) = m.forward_with_cells(x.clone(), md.clone());
        assert_eq!(slices.dims(), [n, 6]);
        assert_eq!(cells.dims(), [n, 16, 6]);
        // The slice logits are forward's.
        let plain = m.forward(x, md).into_data().convert::<f32>();
        slices
            .into_data()
            .convert::<f32>()
            .assert_approx_eq::<f32>(&plain, Default::default());
        // No slice with labels: no loss; one: a positive loss with a gradient.
        let labels = Tensor::<3>::zeros([n, 16, 6], &device);
        let none =
            SlicePretrainer::cell_loss(cells.clone(), labels.clone(), Tensor::zeros([n], &device));
        assert_eq!(none.into_scalar::<f32>(), 0.0);
        let known = Tensor::<1>::from_data(TensorData::new(vec![0.0f32, 1.0, 0.0], [n]), &device);
        let some = SlicePretrainer::cell_loss(cells, labels, known);
        assert!(some.clone().into_scalar::<f32>() > 0.0);
        let grads = some.backward();
        assert!(m.head.weight.grad(&grads).is_some());
    }
}
