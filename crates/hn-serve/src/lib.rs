//! # hn-serve — layer 5 (faces): the triage service
//!
//! `hemorrhagenet serve` runs one model beside a PACS: a DICOM node (C-ECHO, C-STORE SCP over
//! dicom-ul) and an HTTP API (axum: DICOMweb STOW-RS, a JSON study API, a worklist page,
//! health, Prometheus metrics) feed a durable job store (SQLite + fsynced files); scoring
//! workers run the engine's `Predictor` and write the prediction and its DICOM results; a
//! forwarder sends the SR and overlays back to the PACS by C-STORE.
//!
//! The shape follows text-embeddings-inference: the faces (SCP, router) only validate and
//! admit; the queue is the store; workers own the model; errors map to DICOM statuses and HTTP
//! codes by whose fault they are. Nothing here logs a patient identifier or a study UID
//! (studies appear in logs by a hashed name, [`store::log_name`]). docs/SERVICE.md documents
//! every route, config field and metric.

pub mod config;
pub mod dimse;
pub mod forward;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod scp;
pub mod store;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use config::ServeConfig;
use hn_engine::infer::{PredictOptions, Predictor};

/// Everything the faces and workers share.
pub struct App {
    pub cfg: ServeConfig,
    pub store: store::JobStore,
    pub predictor: Predictor,
    pub metrics: metrics::Metrics,
    pub forward: Option<forward::ForwardTarget>,
    /// The SOP classes admitted: CT, and MR when the model reads MR.
    pub accepted_sop_classes: Vec<&'static str>,
    /// Accepted bearer tokens (empty: no authentication).
    pub tokens: Vec<String>,
    pub shutdown: AtomicBool,
    /// Why the service is not ready (a store error), cleared by a successful probe.
    unready: Mutex<Option<String>>,
    work: (Mutex<()>, Condvar),
}

impl App {
    pub fn wake_workers(&self) {
        self.work.1.notify_all();
    }

    pub fn wait_for_work(&self, timeout: Duration) {
        let guard = self.work.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.work.1.wait_timeout(guard, timeout);
    }

    /// Record a store failure: `readyz` answers 503 until a probe succeeds.
    pub fn set_unready(&self, why: &str) {
        tracing::error!("job store: {why}");
        *self.unready.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
    }

    /// `Ok` when the model is loaded and the store writable (probed now).
    pub fn readiness(&self) -> Result<(), String> {
        match self.store.probe() {
            Ok(()) => {
                *self.unready.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                *self.unready.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                Err(msg)
            }
        }
    }

    pub(crate) fn note_received(&self, study_uid: &str) {
        tracing::debug!("{}: instance stored", store::log_name(study_uid));
    }

    /// Whether the model was trained on synthetic data only (the page's banner).
    pub fn synthetic_model(&self) -> bool {
        self.predictor.card.dataset.synthetic
    }
}

fn read_tokens(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        anyhow::bail!("--token-file {}: no token in the file", path.display());
    }
    Ok(tokens)
}

/// The addresses actually listened on (port 0 in the config picks a free one).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listening {
    pub http: Option<String>,
    pub dicom: Option<String>,
}

/// Run the service until SIGTERM / Ctrl-C. `on_listening` is called once both listeners are
/// bound (the CLI prints the addresses as one JSON line on stdout).
pub fn run(cfg: ServeConfig, on_listening: impl FnOnce(&Listening)) -> anyhow::Result<()> {
    cfg.validate()?;
    let predictor = Predictor::load(&cfg.model)?.with_options(PredictOptions {
        mc_passes: cfg.mc_passes,
        ..Default::default()
    });
    let store = store::JobStore::open(&cfg.data)?;
    store.probe()?;
    let tokens = match &cfg.token_file {
        Some(p) => read_tokens(p)?,
        None => Vec::new(),
    };
    let forward = cfg
        .forward
        .as_deref()
        .map(forward::ForwardTarget::parse)
        .transpose()?;
    let dicom_listener = cfg
        .dicom
        .map(|a| std::net::TcpListener::bind(a).map_err(|e| anyhow::anyhow!("--dicom {a}: {e}")))
        .transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let http_listener = match cfg.http {
        Some(a) => Some(
            rt.block_on(tokio::net::TcpListener::bind(a))
                .map_err(|e| anyhow::anyhow!("--http {a}: {e}"))?,
        ),
        None => None,
    };
    let listening = Listening {
        http: http_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string()),
        dicom: dicom_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string()),
    };
    let accepted_sop_classes = ingest::accepted_sop_classes(predictor.reads_mr());
    let app = Arc::new(App {
        cfg,
        store,
        accepted_sop_classes,
        predictor,
        metrics: metrics::Metrics::default(),
        forward,
        tokens,
        shutdown: AtomicBool::new(false),
        unready: Mutex::new(None),
        work: (Mutex::new(()), Condvar::new()),
    });
    let mut threads = Vec::new();
    for _ in 0..app.cfg.workers {
        let a = app.clone();
        threads.push(std::thread::spawn(move || worker::worker(a)));
    }
    {
        let a = app.clone();
        threads.push(std::thread::spawn(move || worker::scheduler(a)));
        let a = app.clone();
        threads.push(std::thread::spawn(move || worker::forwarder(a)));
    }
    if let Some(l) = dicom_listener {
        let a = app.clone();
        threads.push(std::thread::spawn(move || scp::run(l, a)));
    }
    tracing::info!(
        "serving: http {:?}, dicom {:?} (AE {})",
        listening.http,
        listening.dicom,
        app.cfg.ae_title
    );
    on_listening(&listening);
    rt.block_on(async {
        let signal = shutdown_signal();
        match http_listener {
            Some(l) => {
                let router = http::router(app.clone());
                if let Err(e) = axum::serve(l, router).with_graceful_shutdown(signal).await {
                    tracing::error!("HTTP server: {e}");
                }
            }
            None => signal.await,
        }
    });
    tracing::info!("shutting down: finishing the studies being scored");
    app.shutdown.store(true, Ordering::SeqCst);
    app.wake_workers();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
