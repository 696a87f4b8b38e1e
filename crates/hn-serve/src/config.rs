//! `serve.toml` and the command-line flags over it: one struct, every field documented in
//! docs/SERVICE.md. Flags win over the file; the file wins over the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the service is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The model folder a training run wrote (`run/model`).
    pub model: PathBuf,
    /// Where received studies, results and the job store live.
    pub data: PathBuf,
    /// HTTP listen address; `None` = no HTTP.
    pub http: Option<SocketAddr>,
    /// DICOM listen address; `None` = no DICOM listener.
    pub dicom: Option<SocketAddr>,
    /// This node's AE title.
    pub ae_title: String,
    /// Calling AE titles allowed to associate (empty = any).
    pub allowed_calling_ae_titles: Vec<String>,
    /// A DICOM study is complete after this many seconds without a new instance.
    pub study_timeout_s: f64,
    /// Send the SR and overlay series to this AE (`AE@HOST:PORT`) after scoring.
    pub forward: Option<String>,
    /// Our calling AE title when forwarding.
    pub forward_calling_ae_title: String,
    /// Forwarding attempts before a study's forward is marked failed.
    pub forward_attempts: u32,
    /// First retry delay (seconds); doubles per attempt up to `forward_max_backoff_s`.
    pub forward_backoff_s: f64,
    pub forward_max_backoff_s: f64,
    /// A file with one bearer token per line; every route but `/healthz` then needs one.
    pub token_file: Option<PathBuf>,
    /// Studies scored at once (each uses every core through the model's thread pool; 1 is
    /// right for a CPU node).
    pub workers: usize,
    /// Studies waiting to be scored before new studies are refused (HTTP 503, C-STORE
    /// A700 "out of resources").
    pub queue_capacity: usize,
    /// MC-dropout passes (default: the model card's).
    pub mc_passes: Option<usize>,
    pub limits: Limits,
    /// Fault injection for the durability tests (docs/SERVICE.md); zero in production.
    pub test_hooks: TestHooks,
}

/// Limits on what one request or association may bring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest HTTP request body (bytes).
    pub max_body_bytes: usize,
    /// Largest single DICOM instance (bytes), whatever the route.
    pub max_instance_bytes: usize,
    /// Most instances in one study.
    pub max_instances_per_study: usize,
    /// Most bytes in one study (all instances).
    pub max_study_bytes: u64,
    /// Most entries in an uploaded zip.
    pub max_zip_entries: usize,
    /// Concurrent DICOM associations.
    pub max_associations: usize,
}

/// Test-only delays that make crash windows wide enough to hit (docs/SERVICE.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestHooks {
    /// Sleep this long after a study is marked running, before scoring it.
    pub score_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 30,
            max_instance_bytes: 256 << 20,
            max_instances_per_study: 5000,
            max_study_bytes: 4 << 30,
            max_zip_entries: 10_000,
            max_associations: 16,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model: PathBuf::new(),
            data: PathBuf::new(),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            dicom: Some(SocketAddr::from(([127, 0, 0, 1], 11112))),
            ae_title: "HNET".into(),
            allowed_calling_ae_titles: Vec::new(),
            study_timeout_s: 10.0,
            forward: None,
            forward_calling_ae_title: "HNET".into(),
            forward_attempts: 8,
            forward_backoff_s: 2.0,
            forward_max_backoff_s: 300.0,
            token_file: None,
            workers: 1,
            queue_capacity: 64,
            mc_passes: None,
            limits: Limits::default(),
            test_hooks: TestHooks::default(),
        }
    }
}

impl ServeConfig {
    /// Read `serve.toml`; unknown fields are errors naming the file.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Check values a running service would trip over later.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.model.as_os_str().is_empty() {
            bail!("--model is required (or `model` in the config file)");
        }
        if self.data.as_os_str().is_empty() {
            bail!("--data is required (or `data` in the config file)");
        }
        if self.http.is_none() && self.dicom.is_none() {
            bail!("neither an HTTP nor a DICOM listen address: nothing could reach the service");
        }
        for (what, ae) in std::iter::once(("ae_title", &self.ae_title))
            .chain(std::iter::once((
                "forward_calling_ae_title",
                &self.forward_calling_ae_title,
            )))
            .chain(
                self.allowed_calling_ae_titles
                    .iter()
                    .map(|a| ("allowed_calling_ae_titles", a)),
            )
        {
            if ae.trim().is_empty() || ae.len() > 16 || ae.contains('\\') || !ae.is_ascii() {
                bail!("{what}: {ae:?} is not an AE title (1-16 ASCII characters, no backslash)");
            }
        }
        if !(self.study_timeout_s.is_finite() && self.study_timeout_s > 0.0) {
            bail!("study_timeout_s must be > 0");
        }
        if let Some(f) = &self.forward {
            crate::forward::ForwardTarget::parse(f)?;
        }
        if self.workers == 0 || self.queue_capacity == 0 {
            bail!("workers and queue_capacity must be at least 1");
        }
        if self.limits.max_associations == 0 {
            bail!("limits.max_associations must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_validates() {
        let c: ServeConfig = toml::from_str(include_str!("../../../deploy/serve.example.toml"))
            .expect("deploy/serve.example.toml");
        c.validate().unwrap();
        assert_eq!(c.forward.as_deref(), Some("PACS@pacs.example.invalid:104"));
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn toml_fields_and_unknown_fields() {
        let c: ServeConfig = toml::from_str(
            r#"
            model = "m"
            data = "d"
            ae_title = "NODE1"
            allowed_calling_ae_titles = ["CT1", "PACS"]
            [limits]
            max_associations = 4
            "#,
        )
        .unwrap();
        assert_eq!(c.ae_title, "NODE1");
        assert_eq!(c.limits.max_associations, 4);
        assert_eq!(c.queue_capacity, 64);
        c.validate().unwrap();
        assert!(toml::from_str::<ServeConfig>("colour = 1").is_err());
        let bad = ServeConfig {
            ae_title: "A-VERY-LONG-AE-TITLE".into(),
            ..c
        };
        assert!(bad.validate().unwrap_err().to_string().contains("ae_title"));
    }
}
