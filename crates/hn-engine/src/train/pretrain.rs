//! Encoder pre-training on slices mixed across studies, and the pre-trained encoder's own
//! learning rate in the end-to-end epochs.

#[allow(unused_imports)]
use super::*;
use rand::seq::IndexedRandom;

/// A study whose every slice has labels (what pre-training can use).
pub(super) fn has_slice_labels(s: &StudySample) -> bool {
    s.slice_labels
        .as_ref()
        .is_some_and(|l| l.len() == s.shape[0])
}

/// Clean slices per pre-training epoch for `ratio` clean per bleeding slice: rounded, at
/// most what there is.
pub(super) fn clean_per_epoch(n_bleeding: usize, n_clean: usize, ratio: f64) -> usize {
    ((n_bleeding as f64 * ratio).round() as usize).min(n_clean)
}

/// One pre-training epoch's slices before shuffling: every bleeding slice, then `n_clean`
/// distinct clean ones drawn with `rng`.
pub(super) fn epoch_slices(
    bleeding: &[(usize, usize)],
    clean: &[(usize, usize)],
    n_clean: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, usize)> {
    let mut out = bleeding.to_vec();
    out.extend(clean.choose_multiple(rng, n_clean).copied());
    out
}

/// `lr` for every parameter and `group_lr` for those of `group`, in the form burn's
/// optimizer takes per-parameter rates (`ModuleLearningRate`, built through its
/// `ModuleLrScheduler` with constant sub-schedules: the schedule itself is ours, see
/// [`learning_rate`]).
pub(super) fn grouped_lr(
    lr: f64,
    group: &hn_model::burn::module::ParamGroup,
    group_lr: f64,
) -> hn_model::burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate {
    use hn_model::burn::optim::lr_scheduler::constant::ConstantLr;
    use hn_model::burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
    ModuleLrScheduler::new(ConstantLr::from(lr))
        .with_group(group.clone(), ConstantLr::from(group_lr))
        .step()
}

/// The cell labels of slice `sl` of `smp` pooled onto the network's `h × w` feature cells
/// (a cell has a label when any label-grid cell it overlaps has it; cell `(i, j)` covers the
/// pixels [`hn_model::HemorrhageNetConfig::cell_bounds`] says), mirrored when the slice was,
/// as `h·w` rows of `[any, 5 subtypes]` 0/1; `None` without cell labels.
pub(super) fn cell_rows(
    smp: &StudySample,
    sl: usize,
    net: &hn_model::HemorrhageNetConfig,
    flipped: bool,
) -> Option<Vec<f32>> {
    let labels = smp.cell_labels.as_ref()?;
    let g = hn_data::preprocess::CELL_LABEL_GRID;
    let [_, _, height, width] = smp.shape;
    let (fh, fw) = net.feature_hw_for(height, width);
    let grid = &labels[sl * g * g..(sl + 1) * g * g];
    // Label-grid cells overlapping pixels `r` of an axis of `n` pixels.
    let span = |r: std::ops::Range<usize>, n: usize| (r.start * g / n)..(r.end * g).div_ceil(n);
    let mut out = Vec::with_capacity(fh * fw * 6);
    for i in 0..fh {
        for j in 0..fw {
            // Mirrored, output column x shows input column `width - 1 - x`: the cell's pixels
            // come from the mirrored pixel range (not the mirrored cell index, which differs
            // when the width is not a multiple of the cell size).
            let (rows, cols) = net.cell_bounds(i, j, height, width);
            let cols = if flipped {
                (width - cols.end)..(width - cols.start)
            } else {
                cols
            };
            let mut bits = 0u8;
            for gy in span(rows, height) {
                for gx in span(cols.clone(), width) {
                    bits |= grid[gy * g + gx];
                }
            }
            out.extend((0..6).map(|b| f32::from((bits >> b) & 1)));
        }
    }
    Some(out)
}

/// Encoder pre-training on slices mixed across studies (see `hn_model::pretrain` for why):
/// `cfg.pretrain_epochs` passes over every labelled slice of the training split in shuffled
/// batches of `cfg.pretrain_batch`, each slice with its `k` context slices, augmented like
/// the studies (without slice dropout), AdamW with a short warm-up then cosine. Returns the
/// model with the trained encoder and the per-epoch records.
pub(super) fn pretrain_encoder(
    cfg: &TrainConfig,
    data: &Dataset,
    train_idx: &[usize],
    windows: &[(f32, f32)],
    model: Trainable,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Trainable, Vec<PretrainRecord>), TrainError> {
    let pairs: Vec<(usize, usize)> = train_idx
        .iter()
        .filter(|&&i| has_slice_labels(&data.samples[i]))
        .flat_map(|&i| (0..data.samples[i].shape[0]).map(move |k| (i, k)))
        .collect();
    if pairs.is_empty() {
        // CQ500 and most manifests have study labels only: nothing to pre-train on.
        tracing::warn!(
            "encoder pre-training skipped: no study in the training split has slice labels"
        );
        return Ok((model, Vec::new()));
    }
    // With a clean-slice ratio the epoch is every bleeding slice plus a fresh draw of clean
    // ones; without, every slice in the order above (what configs without the ratio did).
    let sampling = cfg.pretrain_clean_per_bleeding.map(|ratio| {
        let (bleeding, clean): (Vec<_>, Vec<_>) = pairs.iter().copied().partition(|&(i, k)| {
            data.samples[i]
                .slice_labels
                .as_ref()
                .expect("filtered above")[k]
                .any
        });
        let n_clean = clean_per_epoch(bleeding.len(), clean.len(), ratio);
        (bleeding, clean, n_clean)
    });
    let per_epoch = match &sampling {
        Some((bleeding, _, n_clean)) => bleeding.len() + n_clean,
        None => pairs.len(),
    };
    if per_epoch == 0 {
        tracing::warn!("encoder pre-training skipped: the ratio leaves no slice to train on");
        return Ok((model, Vec::new()));
    }
    if cfg.pretrain_cell_loss.is_some()
        && !train_idx
            .iter()
            .any(|&i| data.samples[i].cell_labels.is_some())
    {
        tracing::warn!(
            "pretrain_cell_loss is set but no training study has cell labels (only the \
             synthetic CT cohort has them): the slice loss alone"
        );
    }
    let Trainable { net, loss } = model;
    let mut pre = hn_model::SlicePretrainer::new(net, device);
    let mut optim = adamw(cfg).init();
    let k = cfg.net.neighbour_slices;
    let aug = AugmentConfig {
        slice_dropout: 0.0,
        ..cfg.augment
    };
    let bs = cfg.pretrain_batch;
    let steps = per_epoch.div_ceil(bs);
    let total = (steps * cfg.pretrain_epochs) as f64;
    let warm = (total * 0.05).max(1.0);
    let mut records = Vec::new();
    let mut step_no = 0usize;
    for epoch in 0..cfg.pretrain_epochs {
        let t0 = std::time::Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5EE_D0F5_11CE ^ (epoch as u64) << 40);
        let mut order = match &sampling {
            Some((bleeding, clean, n_clean)) => epoch_slices(bleeding, clean, *n_clean, &mut rng),
            None => pairs.clone(),
        };
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let slices_mr = order
            .iter()
            .filter(|&&(i, _)| data.samples[i].modality == hn_model::MODALITY_MR)
            .count();
        for (b, chunk) in order.chunks(bs).enumerate() {
            let [s, c, h, w] = data.samples[chunk[0].0].shape;
            let ctx = 2 * k + 1;
            let mut x = Vec::with_capacity(chunk.len() * ctx * c * h * w);
            let mut y = Vec::with_capacity(chunk.len() * 6);
            let mut modality = Vec::with_capacity(chunk.len());
            let mut cells: Vec<f32> = Vec::new();
            let mut cells_known: Vec<f32> = Vec::with_capacity(chunk.len());
            for &(i, sl) in chunk {
                let smp = &data.samples[i];
                let plane = c * h * w;
                let mut stack = Vec::with_capacity(ctx * plane);
                for off in 0..ctx {
                    let src = (sl + off).saturating_sub(k).min(s - 1);
                    stack.extend_from_slice(&smp.images[src * plane..(src + 1) * plane]);
                }
                // The context slices are stacked as channels in slice order, as in the model.
                let (pixels, flipped) = crate::augment::augment_and_say_if_flipped(
                    &stack,
                    [ctx, c, h, w],
                    smp.hu_windows(windows),
                    None,
                    &aug,
                    &mut rng,
                );
                x.extend(pixels);
                if cfg.pretrain_cell_loss.is_some() {
                    let net_cfg = pre.net.config();
                    match cell_rows(smp, sl, net_cfg, flipped) {
                        Some(rows) => {
                            cells.extend(rows);
                            cells_known.push(1.0);
                        }
                        None => {
                            let (fh, fw) = net_cfg.feature_hw_for(h, w);
                            cells.extend(std::iter::repeat_n(0.0, fh * fw * 6));
                            cells_known.push(0.0);
                        }
                    }
                }
                let labels = smp.slice_labels.as_ref().expect("filtered above");
                y.extend(
                    crate::sample::label_row(&labels[sl]).map(|v| if v { 1.0f32 } else { 0.0 }),
                );
                modality.push(smp.modality);
            }
            let n = chunk.len();
            let xt = Tensor::<4>::from_data(TensorData::new(x, [n, ctx * c, h, w]), device);
            let yt = Tensor::<2>::from_data(TensorData::new(y, [n, 6]), device);
            let mt = Tensor::<1, Int>::from_data(TensorData::new(modality, [n]), device);
            let l = match cfg.pretrain_cell_loss {
                Some(weight) => {
                    let (slice_logits, cell_logits) = pre.forward_with_cells(xt, mt);
                    let [_, n_cells, _] = cell_logits.dims();
                    let ct =
                        Tensor::<3>::from_data(TensorData::new(cells, [n, n_cells, 6]), device);
                    let known = Tensor::<1>::from_data(TensorData::new(cells_known, [n]), device);
                    hn_model::SlicePretrainer::loss(slice_logits, yt)
                        + hn_model::SlicePretrainer::cell_loss(cell_logits, ct, known)
                            .mul_scalar(weight)
                }
                None => hn_model::SlicePretrainer::loss(pre.forward(xt, mt), yt),
            };
            let value = f64::from(l.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(TrainError::Invalid(format!(
                    "pre-training loss became {value} at epoch {} step {b}; lower lr",
                    epoch + 1
                )));
            }
            loss_sum += value;
            let lr = warmup_cosine(cfg, step_no, warm, total);
            let grads = GradientsParams::from_grads(l.backward(), &pre);
            pre = optim.step(lr, pre, grads);
            step_no += 1;
            progress(Progress::PretrainStep {
                epoch: epoch + 1,
                epochs: cfg.pretrain_epochs,
                step: b + 1,
                steps,
                loss: value,
            });
        }
        let rec = PretrainRecord {
            epoch: epoch + 1,
            loss: loss_sum / steps as f64,
            slices: per_epoch,
            slices_mr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        progress(Progress::PretrainEpoch(&rec));
        records.push(rec);
    }
    Ok((
        Trainable {
            net: pre.into_net(),
            loss,
        },
        records,
    ))
}
