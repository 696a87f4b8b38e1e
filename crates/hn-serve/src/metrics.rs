//! Prometheus metrics (prometheus-client), names prefixed `hemorrhagenet_`. Counts and
//! durations only: no label ever carries a study, patient or AE title.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub studies_received: Counter,
    pub instances_received: Counter,
    pub instances_refused: Counter,
    pub studies_scored: Counter,
    pub studies_failed: Counter,
    pub queue_depth: Gauge,
    /// Seconds from a worker taking a study to its results written.
    pub scoring_seconds: Histogram,
    pub associations: Counter,
    pub associations_active: Gauge,
    pub associations_rejected: Counter,
    pub forward_sent: Counter,
    pub forward_failed: Counter,
    pub http_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("hemorrhagenet");
        let m = Metrics {
            studies_received: Counter::default(),
            instances_received: Counter::default(),
            instances_refused: Counter::default(),
            studies_scored: Counter::default(),
            studies_failed: Counter::default(),
            queue_depth: Gauge::default(),
            scoring_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            associations: Counter::default(),
            associations_active: Gauge::default(),
            associations_rejected: Counter::default(),
            forward_sent: Counter::default(),
            forward_failed: Counter::default(),
            http_rejected: Counter::default(),
            registry: Registry::default(),
        };
        r.register(
            "studies_received",
            "Studies first seen (DICOM or HTTP)",
            m.studies_received.clone(),
        );
        r.register(
            "instances_received",
            "DICOM instances received (all routes)",
            m.instances_received.clone(),
        );
        r.register(
            "instances_refused",
            "DICOM instances refused (invalid, unsupported, over a limit, queue full)",
            m.instances_refused.clone(),
        );
        r.register("studies_scored", "Studies scored", m.studies_scored.clone());
        r.register(
            "studies_failed",
            "Studies whose scoring failed",
            m.studies_failed.clone(),
        );
        r.register(
            "queue_depth",
            "Studies waiting for a worker",
            m.queue_depth.clone(),
        );
        r.register(
            "scoring_seconds",
            "Time to score a study and write its results",
            m.scoring_seconds.clone(),
        );
        r.register(
            "associations",
            "DICOM associations requested",
            m.associations.clone(),
        );
        r.register(
            "associations_active",
            "DICOM associations open now",
            m.associations_active.clone(),
        );
        r.register(
            "associations_rejected",
            "DICOM associations rejected or failed",
            m.associations_rejected.clone(),
        );
        r.register(
            "forward_sent",
            "Studies whose results were sent to the forward AE",
            m.forward_sent.clone(),
        );
        r.register(
            "forward_failed",
            "Forwarding attempts that failed",
            m.forward_failed.clone(),
        );
        r.register(
            "http_rejected",
            "HTTP requests answered 4xx or 5xx",
            m.http_rejected.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
