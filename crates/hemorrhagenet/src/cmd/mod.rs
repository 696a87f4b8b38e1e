//! One module per subcommand.
pub mod data_args;
pub mod demo;
pub mod evaluate;
pub mod inspect;
pub mod model_summary;
pub mod synth;
pub mod train;

/// Write one held-out test study of the demo cohort as DICOM and predict it.
/// MERGE-PENDING: wired to hn_engine::infer once the predict branch is merged.
pub fn predict_heldout(
    _model: &hn_engine::checkpoint::LoadedModel,
    _data: &hn_engine::dataset::Dataset,
    args: &demo::DemoArgs,
    _cfg: &hn_engine::train::TrainConfig,
) -> anyhow::Result<std::path::PathBuf> {
    Ok(args.out.join("prediction"))
}
