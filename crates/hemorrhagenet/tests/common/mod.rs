//! Fixtures shared by the CLI tests: a tiny saved model and synthetic DICOM studies with
//! sentinel patient identifiers (tests check they never leak).
#![allow(dead_code)]

use std::path::Path;

use hn_data::synth::{SynthConfig, generate_study};
use hn_engine::checkpoint::{
    Calibration, DatasetDigest, INTENDED_USE, ModelCard, TemperatureSet, save_model,
};
use hn_engine::metrics::ReferralPolicy;
use hn_engine::sample::default_preprocess;
use hn_imaging::dicom_write::{SeriesMeta, uid_from_hash, write_ct_series};
use hn_model::HemorrhageNetConfig;
use hn_model::burn::prelude::Device;

/// The PatientID and PatientName every fixture study carries.
pub const SENTINEL_ID: &str = "PIDSENTINEL77";
pub const SENTINEL_NAME: &str = "ZZSENTINEL^NAME";

/// The StudyInstanceUID of `write_dicom(_, idx)`.
pub fn study_uid(idx: usize) -> String {
    uid_from_hash(10 + idx as u128)
}

pub fn save_tiny_model(dir: &Path) {
    let net = HemorrhageNetConfig::new()
        .with_slices(8)
        .with_height(32)
        .with_width(32)
        .with_widths(vec![8, 16])
        .with_d_attn(16)
        .init(&Device::flex());
    let card = ModelCard {
        card_version: 1,
        code_version: "test".into(),
        created_unix: 0,
        preprocess: default_preprocess(8, 32),
        train_config: serde_json::json!({}),
        dataset: DatasetDigest {
            name: "synthetic-test".into(),
            synthetic: true,
            n_train: 0,
            n_validation: 0,
            n_test: 0,
            sha256: String::new(),
            train_labels: None,
        },
        epoch: 1,
        validation: serde_json::json!({}),
        calibration: Some(Calibration {
            temperatures: TemperatureSet::default(),
            thresholds: [0.5; 6],
            uncertainty: Default::default(),
            referral: ReferralPolicy {
                threshold: 0.5,
                target_rate: 0.2,
                validation_rate: 0.2,
            },
            mc_passes: 2,
            mortality_threshold: 0.3,
            tta: hn_engine::scoring::TestTimeAugmentation::Flip,
            facts: None,
            distance: None,
        }),
        intended_use: INTENDED_USE.into(),
        envelope: None,
        mr_envelope: None,
        mr_calibration: None,
    };
    save_model(dir, &net, &card).unwrap();
}

pub fn write_dicom(dir: &Path, idx: usize) {
    let cfg = SynthConfig {
        size: 40,
        n_slices: Some(8),
        p_missing_slice: 0.0,
        ..Default::default()
    };
    let st = generate_study(&cfg, 5, idx);
    let meta = SeriesMeta {
        patient_id: SENTINEL_ID.into(),
        patient_name: SENTINEL_NAME.into(),
        study_instance_uid: uid_from_hash(10 + idx as u128),
        series_instance_uid: uid_from_hash(20 + idx as u128),
        frame_of_reference_uid: uid_from_hash(30 + idx as u128),
        sop_uid_prefix: uid_from_hash(40 + idx as u128),
        study_description: "CT HEAD".into(),
        series_description: "AXIAL".into(),
        image_comments: String::new(),
        study_date: "20260101".into(),
        study_time: "120000".into(),
        manufacturer: "test".into(),
        window_center: 40.0,
        window_width: 80.0,
        series_number: 1,
        skip_slices: Vec::new(),
    };
    write_ct_series(dir, &st.volume, &meta).unwrap();
}

/// A test's peer tool is missing: say what to install (the peers are required, never skipped).
pub fn tool_missing(what: &str) -> ! {
    panic!(
        "{what} is required by this test and was not found; install it (apt-get install dcmtk \
         dicom3tools orthanc; python3 -m pip install -r bench/requirements-test.txt; or run \
         scripts/test.sh, which installs them)"
    )
}

/// A text attribute of a DICOM file, trailing padding removed.
pub fn dicom_text(path: &Path, tag: dicom_object::Tag) -> String {
    dicom_object::open_file(path)
        .unwrap()
        .element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_string()
}
