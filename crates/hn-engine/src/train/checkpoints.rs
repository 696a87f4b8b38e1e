//! The `last/` checkpoint (weights, optimizer state, training state) that `--resume` continues
//! from.

#[allow(unused_imports)]
use super::*;

pub(super) fn save_last(
    dir: &Path,
    model: &Trainable,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> Result<(), CheckpointError> {
    write_dir_atomic(dir, |tmp| {
        let p = tmp.join("trainable.bpk");
        model
            .clone()
            .save_file(&p)
            .map_err(|e| CheckpointError::Format {
                path: p.clone(),
                msg: e.to_string(),
            })?;
        let o = tmp.join("optimizer.bpk");
        optim
            .to_record()
            .save(&o)
            .map_err(|e| CheckpointError::Format {
                path: o.clone(),
                msg: e.to_string(),
            })?;
        write_json(&tmp.join("state.json"), state)
    })
}

pub(super) fn load_last(
    dir: &Path,
    model: Trainable,
    optim: ModuleOptimizer,
) -> Result<(Trainable, ModuleOptimizer, TrainState), CheckpointError> {
    let dir = checkpoint::resolve_dir(dir).ok_or_else(|| CheckpointError::Format {
        path: dir.to_path_buf(),
        msg: "no checkpoint to resume from (state.json missing)".into(),
    })?;
    let state: TrainState = read_json(&dir.join("state.json"))?;
    let p = dir.join("trainable.bpk");
    let model = model
        .try_load_file(&p)
        .map_err(|e| CheckpointError::Format {
            path: p.clone(),
            msg: e.to_string(),
        })?;
    let o = dir.join("optimizer.bpk");
    let rec =
        hn_model::burn::optim::OptimizerRecord::load(&o).map_err(|e| CheckpointError::Format {
            path: o.clone(),
            msg: e.to_string(),
        })?;
    Ok((model, optim.load_record(rec), state))
}
