//! One module per subcommand.
pub mod data_args;
pub mod demo;
pub mod evaluate;
pub mod inspect;
pub mod model_summary;
pub mod predict;
pub mod synth;
pub mod train;

/// Write one held-out test study of the demo cohort as DICOM (the first test study with a
/// bleed, else the first test study) and predict it like `hemorrhagenet predict` would:
/// `OUT/heldout/<id>/dicom/` in, `OUT/prediction/<id>/` out. Returns the prediction folder.
pub fn predict_heldout(
    model: &hn_engine::checkpoint::LoadedModel,
    data: &hn_engine::dataset::Dataset,
    args: &demo::DemoArgs,
    cfg: &hn_engine::train::TrainConfig,
) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let test = data.indices(hn_data::splits::Split::Test);
    let k = test
        .iter()
        .copied()
        .find(|&k| data.samples[k].labels.is_some_and(|l| l.any))
        .or_else(|| test.first().copied())
        .context("the demo cohort has no test study to predict")?;
    // Dataset::synthetic keeps generation order: sample k is study k of the cohort.
    let synth = hn_engine::dataset::synth_config_for(cfg.net.slices, cfg.net.size);
    let study = hn_data::synth::generate_study(&synth, args.synth_seed, k);
    let study_dir = args.out.join("heldout").join(&study.id);
    hn_data::synth::io::write_study_images(
        &study,
        &study_dir,
        args.synth_seed,
        hn_data::synth::OutputFormat::Dicom,
    )?;
    let predictor = hn_engine::infer::Predictor::new(
        model.net.clone(),
        model.card.clone(),
        hn_model::burn::prelude::Device::flex(),
    );
    let res = predictor.predict_path(
        &study.id,
        &study_dir.join("dicom"),
        data.samples[k].clinical,
    )?;
    let dir = args
        .out
        .join("prediction")
        .join(hn_engine::infer::sanitize_key(&study.id));
    hn_engine::infer::write_study_dir(&res, &dir)?;
    Ok(dir)
}
