//! `hemorrhagenet model-summary [--slices S --channels C --size N --widths a,b,.. ...]`:
//! parameter count per component and forward FLOPs per study of a network configuration.

use std::process::ExitCode;

use hn_model::HemorrhageNetConfig;
use hn_model::burn::prelude::Device;

#[derive(clap::Args)]
pub struct ModelSummaryArgs {
    /// Slices per study.
    #[arg(long, default_value_t = 24)]
    pub slices: usize,
    /// Windowed channels per slice.
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Slice side in pixels (square slices).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// CNN widths, comma separated (stem first; the last is the node width).
    #[arg(long, value_delimiter = ',', default_values_t = vec![16, 32, 64, 128])]
    pub widths: Vec<usize>,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Graph-attention layers.
    #[arg(long, default_value_t = 2)]
    pub gat_layers: usize,
    /// Neighbour slices on each side fed as extra channels (2.5-D context).
    #[arg(long, default_value_t = 0)]
    pub neighbour_slices: usize,
    /// Clinical features.
    #[arg(long, default_value_t = 16)]
    pub clinical: usize,
    /// Use the GPU preset (32 × 3 × 256², widths 32,64,128,192,256); other flags are ignored.
    #[arg(long)]
    pub gpu: bool,
}

pub fn run(args: ModelSummaryArgs) -> anyhow::Result<ExitCode> {
    let config = if args.gpu {
        HemorrhageNetConfig::gpu()
    } else {
        HemorrhageNetConfig::new()
            .with_slices(args.slices)
            .with_channels(args.channels)
            .with_height(args.size)
            .with_width(args.size)
            .with_widths(args.widths)
            .with_n_heads(args.heads)
            .with_n_gat_layers(args.gat_layers)
            .with_neighbour_slices(args.neighbour_slices)
            .with_n_clinical(args.clinical)
    };
    anyhow::ensure!(
        !config.widths.is_empty(),
        "--widths needs at least one width"
    );
    anyhow::ensure!(config.n_gat_layers >= 1, "--gat-layers must be at least 1");
    anyhow::ensure!(
        config.n_heads >= 1 && config.d_model().is_multiple_of(config.n_heads),
        "--heads must divide the last width ({})",
        config.d_model()
    );
    // Parameters are counted from the real modules (built on the CPU backend).
    let net = config.init(&Device::flex());
    println!("{}", net.summary());
    Ok(ExitCode::SUCCESS)
}
