//! `hemorrhagenet serve`: the triage service ([`hn_serve`]). Flags override `--config`
//! (serve.toml); docs/SERVICE.md documents both. Once listening it prints one JSON line on
//! stdout, `{"http": "ADDR", "dicom": "ADDR"}` (port 0 picks a free port).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use hn_serve::ServeConfig;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The model folder a training run wrote (`run/model`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where received studies, results and the job store (SQLite) live.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// HTTP listen address (default 127.0.0.1:8080; `none` = no HTTP).
    #[arg(long)]
    pub http: Option<String>,
    /// DICOM listen address (default 127.0.0.1:11112; `none` = no DICOM).
    #[arg(long)]
    pub dicom: Option<String>,
    /// This node's AE title (default HNET).
    #[arg(long)]
    pub ae_title: Option<String>,
    /// Seconds without a new instance after which a DICOM study is complete (default 10).
    #[arg(long)]
    pub study_timeout: Option<f64>,
    /// Send each study's SR and overlays to this AE by C-STORE: AE@HOST:PORT.
    #[arg(long)]
    pub forward: Option<String>,
    /// Bearer tokens, one per line; every route but /healthz then requires one.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// serve.toml (every field: docs/SERVICE.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn addr(flag: &str, v: &str) -> anyhow::Result<Option<SocketAddr>> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:8080)"))
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &args.config {
        Some(p) => ServeConfig::from_toml_file(p)?,
        None => ServeConfig::default(),
    };
    if let Some(m) = args.model {
        cfg.model = m;
    }
    if let Some(d) = args.data {
        cfg.data = d;
    }
    if let Some(h) = &args.http {
        cfg.http = addr("--http", h)?;
    }
    if let Some(d) = &args.dicom {
        cfg.dicom = addr("--dicom", d)?;
    }
    if let Some(a) = args.ae_title {
        cfg.ae_title = a;
    }
    if let Some(t) = args.study_timeout {
        cfg.study_timeout_s = t;
    }
    if let Some(f) = args.forward {
        cfg.forward = Some(f);
    }
    if let Some(t) = args.token_file {
        cfg.token_file = Some(t);
    }
    hn_serve::run(cfg, |l| {
        println!("{}", serde_json::to_string(l).expect("addresses serialise"));
    })?;
    Ok(ExitCode::SUCCESS)
}
