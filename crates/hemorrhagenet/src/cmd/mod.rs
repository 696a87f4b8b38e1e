//! One module per subcommand.
pub mod data_args;
pub mod demo;
pub mod evaluate;
pub mod inspect;
pub mod model_summary;
pub mod predict;
pub mod serve;
pub mod shift_suite;
pub mod synth;
pub mod train;
