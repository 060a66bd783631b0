//! [`PrometheusExporter`]: adds each closed window into the totals and
//! serves their text at `GET /metrics`.
//!
//! The server is axum (already the workspace's HTTP server, for the tests'
//! OTLP receiver) as a task on the agent's tokio runtime, like the OTLP
//! exporter's sending task: the agent's loop only renders the text once per
//! window, and a scrape only copies the last text out, so neither waits on
//! the other for more than that copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::header;
use axum::routing::get;
use axum::Router;
use processor::{PollReport, WindowReport};
use tokio::task::JoinHandle;

use super::exposition::Exposition;
use super::text::CONTENT_TYPE;
use super::PrometheusConfig;
use crate::{ConfigError, Error, Exporter};

/// The text the last window left, shared with the server.
type Page = Arc<Mutex<String>>;

/// Serves cumulative counters for Prometheus to scrape.
#[derive(Debug)]
pub struct PrometheusExporter {
    exposition: Exposition,
    page: Page,
    server: JoinHandle<()>,
    local_addr: std::net::SocketAddr,
}

impl PrometheusExporter {
    /// Listens on `config.listen` and starts serving. Must be called inside
    /// a tokio runtime: it spawns the server task. `resource_attributes` are
    /// the extra ones, shown in `target_info` with host.name, service.name
    /// and service.version.
    pub fn start(
        config: &PrometheusConfig,
        resource_attributes: &BTreeMap<String, String>,
    ) -> Result<PrometheusExporter, ConfigError> {
        let exposition = Exposition::new(
            &crate::metrics::resource(resource_attributes),
            config.idle_windows,
        );
        let cannot = |e: std::io::Error| {
            ConfigError::new(format!(
                "exporters.prometheus.listen: cannot listen on {}: {e}",
                config.listen
            ))
        };
        // Bound here, not in the task, so that a port in use stops the agent
        // at start with a message.
        let listener = std::net::TcpListener::bind(config.listen).map_err(cannot)?;
        listener.set_nonblocking(true).map_err(cannot)?;
        let local_addr = listener.local_addr().map_err(cannot)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(cannot)?;
        let page: Page = Arc::new(Mutex::new(exposition.render()));
        let shared = Arc::clone(&page);
        let router = Router::new().route(
            "/metrics",
            get(move || {
                let text = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], text) }
            }),
        );
        let listen = local_addr;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(%listen, "the Prometheus endpoint stopped: {e}");
            }
        });
        tracing::info!("flowtel: serving Prometheus metrics at http://{listen}/metrics");
        Ok(PrometheusExporter {
            exposition,
            page,
            server,
            local_addr,
        })
    }

    /// The address it listens on (the port the system chose for port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }
}

impl Exporter for PrometheusExporter {
    /// Polls are not exported: the counters move once per closed window.
    fn export_poll(&mut self, _report: &PollReport) -> Result<(), Error> {
        Ok(())
    }

    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error> {
        self.exposition.add(report);
        let text = self.exposition.render();
        *self.page.lock().unwrap_or_else(|e| e.into_inner()) = text;
        Ok(())
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::{Duration, UNIX_EPOCH};

    use processor::{FlowStats, Series};

    use super::*;

    /// `GET path` over plain HTTP/1.1; the whole response.
    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: flowtel\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn serves_the_last_window_at_metrics() {
        let config = PrometheusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..PrometheusConfig::default()
        };
        let mut exporter = PrometheusExporter::start(&config, &BTreeMap::new()).unwrap();
        let addr = exporter.local_addr();
        let window = WindowReport {
            start: UNIX_EPOCH,
            end: UNIX_EPOCH + Duration::from_secs(1),
            series: vec![Series {
                attributes: [("destination.port", processor::AttributeValue::Int(5432))]
                    .into_iter()
                    .collect(),
                stats: FlowStats {
                    bytes_sent: 7,
                    ..FlowStats::default()
                },
            }],
            overflowed_series: 0,
            dns: Vec::new(),
            overflowed_dns_series: 0,
        };
        exporter.export_window(&window).unwrap();
        exporter.export_window(&window).unwrap();
        let (metrics, missing) =
            tokio::task::spawn_blocking(move || (get(addr, "/metrics"), get(addr, "/nothing")))
                .await
                .unwrap();
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{metrics}"
        );
        assert!(metrics.contains("\ntarget_info{host_name="), "{metrics}");
        assert!(
            metrics.contains(
                "\nnetwork_flow_bytes_total{destination_port=\"5432\",network_io_direction=\"transmit\"} 14\n"
            ),
            "{metrics}"
        );
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let error = PrometheusExporter::start(
            &PrometheusConfig {
                listen: addr,
                ..PrometheusConfig::default()
            },
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "exporters.prometheus.listen: cannot listen on {addr}: "
            )),
            "{error}"
        );
    }
}
