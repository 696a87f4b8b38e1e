//! Where training runs: device lists (`--devices`) and data-parallel gradient steps.
//!
//! Data parallelism is burn's own machinery, the same pieces burn's multi-device learner is
//! built from: the model is `fork`ed to each worker device (same parameter ids, its own
//! autodiff graph), every worker runs forward + backward on its shard of the batch, the
//! workers' [`GradientsParams`] are moved to the main device (`to_device`) and summed by a
//! [`GradientsAccumulator`], and one optimizer step updates the main copy. As in PyTorch's
//! DistributedDataParallel, each worker's loss is the mean over its own shard and the shard
//! gradients are averaged (weighted by shard size); masked means (e.g. the subtype loss over
//! the shard's bleeds) therefore differ slightly from a single-device batch when label counts
//! differ between shards, and are identical when they do not (tested below).
//!
//! Workers on distinct devices (`cuda:0,cuda:1`) run in parallel threads; workers that are the
//! same device (`cpu,cpu`: only useful to exercise this path on a machine without GPUs) run one
//! after the other, which keeps the run deterministic.

use hn_model::burn::optim::{GradientsAccumulator, GradientsParams};
use hn_model::burn::prelude::*;
use hn_model::{ModelInput, ModelTargets, Trainable};

use crate::scoring::host;

/// Parse `--devices`: comma-separated `cpu` (burn's pure-Rust `flex` backend), and with the
/// matching cargo feature `cuda:N` (burn's CUDA backend), `libtorch` (libtorch CPU) or
/// `libtorch-cuda:N` (libtorch on GPU N). Returns plain (non-autodiff) devices, main first.
/// Errors name the offending entry and why; the caller adds the flag it came from.
pub fn parse_devices(spec: &str) -> Result<Vec<Device>, String> {
    let mut out = Vec::new();
    for raw in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(parse_one(raw).map_err(|why| format!("{raw}: {why}"))?);
    }
    if out.is_empty() {
        out.push(Device::flex());
    }
    Ok(out)
}

fn index(raw: &str, prefix: &str) -> Result<usize, String> {
    raw[prefix.len()..]
        .parse::<usize>()
        .map_err(|_| format!("expected {prefix}N with a device number N"))
}

// burn 0.22 marks the libtorch devices deprecated (burn-tch is kept but frozen); they are still
// the only way to PyTorch's own kernels, so they stay available behind the `tch` feature.
#[allow(deprecated)]
fn parse_one(raw: &str) -> Result<Device, String> {
    match raw {
        "cpu" | "flex" => return Ok(Device::flex()),
        #[cfg(feature = "tch")]
        "libtorch" => return Ok(Device::libtorch()),
        #[cfg(not(feature = "tch"))]
        "libtorch" => return Err(BUILT_WITHOUT_TCH.into()),
        _ => {}
    }
    if raw.starts_with("libtorch-cuda:") {
        let _n = index(raw, "libtorch-cuda:")?;
        #[cfg(feature = "tch")]
        return Ok(Device::libtorch_cuda(_n));
        #[cfg(not(feature = "tch"))]
        return Err(BUILT_WITHOUT_TCH.into());
    }
    if raw.starts_with("cuda:") {
        let _n = index(raw, "cuda:")?;
        #[cfg(feature = "cuda")]
        return Ok(Device::cuda(_n));
        #[cfg(not(feature = "cuda"))]
        return Err(
            "this build has no CUDA backend; rebuild with `--features cuda` \
                    (docs/BENCHMARKS.md says what that needs)"
                .into(),
        );
    }
    Err("unknown device; use cpu, cuda:N, libtorch or libtorch-cuda:N".into())
}

#[cfg(not(feature = "tch"))]
const BUILT_WITHOUT_TCH: &str = "this build has no libtorch backend; rebuild with `--features tch`";

/// One worker's share of a batch: its (autodiff) device, inputs and targets built on it, and
/// its weight (shard size / batch size).
pub struct Shard {
    pub device: Device,
    pub input: ModelInput,
    pub targets: ModelTargets,
    pub weight: f64,
}

/// Loss figures of one data-parallel step (weighted over shards).
#[derive(Debug, Clone, Default)]
pub struct StepLoss {
    pub total: f64,
    pub per_task: Vec<f64>,
    /// Task weights `exp(−s_t)` (the same on every worker).
    pub task_weights: Vec<f64>,
}

/// Forward + backward of one shard on its device; gradients come back on `main`, already
/// scaled by the shard's weight.
fn shard_grads(model: Trainable, shard: Shard, main: &Device) -> (StepLoss, GradientsParams) {
    let worker = if shard.device == *main {
        model
    } else {
        model.fork(&shard.device)
    };
    let (_, loss) = worker.forward(shard.input, &shard.targets);
    let step = StepLoss {
        total: host(loss.total.clone())[0] * shard.weight,
        per_task: host(loss.per_task.clone())
            .into_iter()
            .map(|v| v * shard.weight)
            .collect(),
        task_weights: host(loss.task_weights.clone()),
    };
    // A lone shard (one device) keeps its loss as is: the single-device step, unchanged.
    let scaled = if shard.weight == 1.0 {
        loss.total
    } else {
        loss.total * shard.weight
    };
    let grads = scaled.backward();
    let grads = GradientsParams::from_grads(grads, &worker);
    let grads = if shard.device == *main {
        grads
    } else {
        grads.to_device(main, &worker)
    };
    (step, grads)
}

/// Gradients of one batch split into `shards`, summed on `main` (the device `model` lives on).
/// Shards on distinct devices run in parallel threads, shards on one device in order.
pub fn data_parallel_grads(
    model: &Trainable,
    main: &Device,
    shards: Vec<Shard>,
) -> (StepLoss, GradientsParams) {
    let distinct = {
        let mut seen: Vec<&Device> = Vec::new();
        shards.iter().all(|s| {
            let new = !seen.contains(&&s.device);
            seen.push(&s.device);
            new
        })
    };
    let results: Vec<(StepLoss, GradientsParams)> = if distinct && shards.len() > 1 {
        std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .into_iter()
                .map(|shard| {
                    let m = model.clone();
                    scope.spawn(move || shard_grads(m, shard, main))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a training worker panicked"))
                .collect()
        })
    } else {
        shards
            .into_iter()
            .map(|shard| shard_grads(model.clone(), shard, main))
            .collect()
    };
    let mut acc = GradientsAccumulator::<Trainable>::new();
    let mut step = StepLoss::default();
    for (s, g) in results {
        acc.accumulate(model, g);
        step.total += s.total;
        if step.per_task.is_empty() {
            step.per_task = s.per_task;
            step.task_weights = s.task_weights;
        } else {
            for (a, v) in step.per_task.iter_mut().zip(s.per_task) {
                *a += v;
            }
        }
    }
    (step, acc.grads())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hn_model::{HemorrhageNetConfig, MultiTaskLossConfig, TargetRow};

    #[test]
    fn device_lists_parse_and_unknown_devices_are_clear_errors() {
        assert_eq!(parse_devices("cpu").unwrap().len(), 1);
        assert_eq!(parse_devices("").unwrap(), vec![Device::flex()]);
        assert_eq!(parse_devices("cpu, cpu").unwrap().len(), 2);
        let e = parse_devices("cpu,tpu:0").unwrap_err();
        assert!(e.contains("tpu:0") && e.contains("unknown device"), "{e}");
        let e = parse_devices("cuda:x").unwrap_err();
        assert!(e.contains("cuda:N"), "{e}");
        #[cfg(not(feature = "cuda"))]
        assert!(
            parse_devices("cuda:0")
                .unwrap_err()
                .contains("--features cuda")
        );
        #[cfg(not(feature = "tch"))]
        assert!(
            parse_devices("libtorch")
                .unwrap_err()
                .contains("--features tch")
        );
    }

    /// Study `i` of a batch whose halves have the same label structure.
    fn row(i: usize, s: usize) -> TargetRow {
        let bleed = i.is_multiple_of(2);
        let mut sub = [false; 5];
        sub[1] = bleed;
        TargetRow {
            study: Some((bleed, sub)),
            slices: Some(
                (0..s)
                    .map(|k| {
                        let on = bleed && k == 1;
                        [on, false, on, false, false, false]
                    })
                    .collect(),
            ),
            mortality: Some(bleed),
            mrs: Some(if bleed { 5 } else { 1 }),
            facts: Some(hn_model::HematomaFacts {
                hematoma_ml: if bleed { 25.0 } else { 0.0 },
                intraventricular_ml: 0.0,
                infratentorial: false,
            }),
        }
    }

    fn input(range: std::ops::Range<usize>, device: &Device) -> ModelInput {
        let (s, c, h, w, f) = (3, 2, 16, 16, 4);
        let n = range.len();
        let images: Vec<f32> = range
            .clone()
            .flat_map(|b| (0..s * c * h * w).map(move |p| ((p * 7 + b * 13) % 29) as f32 / 29.0))
            .collect();
        let clinical: Vec<f32> = range
            .clone()
            .flat_map(|b| (0..f).map(move |j| ((b + j) % 5) as f32 / 5.0 - 0.4))
            .collect();
        ModelInput::from_host(
            images,
            [n, s, c, h, w],
            clinical,
            vec![1.0; n * f],
            vec![0; n],
            device,
        )
    }

    /// Two workers on shards with the same label counts give the single-device gradient of
    /// the whole batch: the data-parallel path (fork, per-shard backward, move, accumulate)
    /// loses and double-counts nothing.
    #[test]
    fn two_workers_give_the_whole_batch_gradient() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let model = Trainable::new(
            &HemorrhageNetConfig::tiny(),
            &MultiTaskLossConfig::new(),
            &device,
        );
        let rows: Vec<TargetRow> = (0..4).map(|i| row(i, 3)).collect();

        let (_, loss) = model.forward(
            input(0..4, &device),
            &ModelTargets::from_rows(&rows, 3, &device),
        );
        let whole = host(loss.total.clone())[0];
        let g_whole = GradientsParams::from_grads(loss.total.backward(), &model);

        let shards = (0..2)
            .map(|k| Shard {
                device: device.clone(),
                input: input(2 * k..2 * k + 2, &device),
                targets: ModelTargets::from_rows(&rows[2 * k..2 * k + 2], 3, &device),
                weight: 0.5,
            })
            .collect();
        let (step, g_dp) = data_parallel_grads(&model, &device, shards);
        assert!(
            (step.total - whole).abs() < 1e-5 * whole.abs(),
            "{} vs {whole}",
            step.total
        );
        assert_eq!(step.per_task.len(), hn_model::TASKS.len());

        // Compare every parameter's gradient.
        struct Cmp<'a> {
            a: &'a GradientsParams,
            b: &'a GradientsParams,
            worst: f64,
            n: usize,
        }
        impl hn_model::burn::module::ModuleVisitor for Cmp<'_> {
            fn visit_float<const D: usize>(
                &mut self,
                p: &hn_model::burn::module::Param<Tensor<D>>,
            ) {
                let (Some(x), Some(y)) = (self.a.get::<D>(p.id), self.b.get::<D>(p.id)) else {
                    panic!("parameter {} has a gradient on one side only", p.id);
                };
                let scale = x.clone().abs().max().into_scalar::<f32>().max(1e-4) as f64; // gradients that cancel to ~0 compare absolutely
                let diff = (x - y).abs().max().into_scalar::<f32>() as f64;
                self.worst = self.worst.max(diff / scale);
                self.n += 1;
            }
        }
        let mut cmp = Cmp {
            a: &g_whole,
            b: &g_dp,
            worst: 0.0,
            n: 0,
        };
        model.visit(&mut cmp);
        assert!(cmp.n > 50, "{} parameters compared", cmp.n);
        assert!(
            cmp.worst < 1e-4,
            "worst relative gradient difference {}",
            cmp.worst
        );
    }
}
