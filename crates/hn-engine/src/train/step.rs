//! One optimisation step of the end-to-end epochs, and the card a best epoch is saved with:
//! the two pieces of [`train_on`](super::train_on) that are more than orchestration.

#[allow(unused_imports)]
use super::*;

/// What every step of a run shares.
pub(super) struct StepContext<'a> {
    pub(super) cfg: &'a TrainConfig,
    pub(super) data: &'a Dataset,
    pub(super) windows: &'a [(f32, f32)],
    /// One autodiff device per data-parallel shard, the main one first.
    pub(super) workers: &'a [Device],
    pub(super) device: &'a Device,
    /// `[S, C, H, W]` of every study.
    pub(super) shape: [usize; 4],
    /// The pre-trained encoder's parameters, stepped at their own rate.
    pub(super) encoder_group: Option<&'a hn_model::burn::module::ParamGroup>,
}

/// Step batch `b` of `epoch` (the studies `chunk`) at rate `lr`: augmentation, modality
/// dropout (a batch without images trains prognosis only), one shard per device, backward,
/// AdamW. Every random draw is seeded by (seed, epoch, batch), so a resumed run steps exactly
/// as an uninterrupted one.
pub(super) fn train_step(
    ctx: &StepContext,
    model: Trainable,
    optim: &mut ModuleOptimizer,
    chunk: &[usize],
    epoch: usize,
    b: usize,
    lr: f64,
) -> Result<(Trainable, crate::devices::StepLoss), TrainError> {
    let cfg = ctx.cfg;
    let mut rng = ChaCha8Rng::seed_from_u64(
        cfg.seed ^ ((epoch * 100_003 + b) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    let refs: Vec<&StudySample> = chunk.iter().map(|&i| &ctx.data.samples[i]).collect();
    let mut rows = Vec::with_capacity(refs.len());
    let mut imgs = Vec::with_capacity(refs.len());
    for s in &refs {
        let mut sl = s.slice_labels.clone();
        imgs.push(augment(
            &s.images,
            s.shape,
            s.hu_windows(ctx.windows),
            sl.as_mut(),
            &cfg.augment,
            &mut rng,
        ));
        let mut row = s.target_row();
        row.slices = sl
            .filter(|v| v.len() == s.shape[0])
            .map(|v| v.iter().map(crate::sample::label_row).collect());
        rows.push(row);
    }
    let u: f64 = rand::Rng::random(&mut rng);
    let mask = InputMask {
        hide_clinical: u < cfg.hide_clinical,
        hide_images: u >= cfg.hide_clinical && u < cfg.hide_clinical + cfg.hide_images,
    };
    if mask.hide_images {
        // Without images the image labels are unknowable: train prognosis only.
        for r in &mut rows {
            r.study = None;
            r.slices = None;
        }
    }
    // One shard per device (a single device: the whole batch, weight 1, no copy).
    let per = refs.len().div_ceil(ctx.workers.len());
    let shards = ctx
        .workers
        .iter()
        .zip(refs.chunks(per).zip(imgs.chunks(per)).zip(rows.chunks(per)))
        .map(|(w, ((r, im), ro))| crate::devices::Shard {
            device: w.clone(),
            input: make_batch(r, Some(im), mask, w),
            targets: ModelTargets::from_rows(ro, ctx.shape[0], w),
            weight: r.len() as f64 / refs.len() as f64,
        })
        .collect();
    let (step_loss, grads) = crate::devices::data_parallel_grads(&model, ctx.device, shards);
    let value = step_loss.total;
    if !value.is_finite() {
        return Err(TrainError::Invalid(format!(
            "loss became {value} at epoch {} step {b}; lower lr (now {lr:.2e})",
            epoch + 1
        )));
    }
    let model = match ctx.encoder_group {
        Some(group) => optim.step(
            grouped_lr(lr, group, lr * cfg.encoder_lr_ratio),
            model,
            grads,
        ),
        None => optim.step(lr, model, grads),
    };
    Ok((model, step_loss))
}

/// The card of epoch `epoch`'s weights (uncalibrated: calibration fills it in after training).
pub(super) fn epoch_card(
    cfg: &TrainConfig,
    digest: &crate::checkpoint::DatasetDigest,
    preprocess: &hn_data::cache::PreprocessConfig,
    epoch: usize,
    val: &ValMetrics,
) -> ModelCard {
    ModelCard {
        card_version: checkpoint::CARD_VERSION,
        code_version: checkpoint::code_version(),
        created_unix: checkpoint::now_unix(),
        preprocess: preprocess.clone(),
        train_config: serde_json::to_value(cfg).expect("config serialises"),
        dataset: digest.clone(),
        epoch,
        validation: serde_json::to_value(val).expect("metrics serialise"),
        calibration: None,
        intended_use: INTENDED_USE.into(),
        envelope: None,
        mr_envelope: None,
        mr_calibration: None,
    }
}
