//! One module per subcommand.
pub mod inspect;
pub mod model_summary;
pub mod predict;
pub mod synth;
