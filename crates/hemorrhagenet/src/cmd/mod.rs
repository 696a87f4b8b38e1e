//! One module per subcommand.
pub mod data_args;
pub mod inspect;
pub mod model_summary;
pub mod synth;
pub mod train;
