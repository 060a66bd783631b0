//! The agent's own health as OTLP metrics (`flowtel.*`), made with the
//! OpenTelemetry SDK: instruments read the receiver's loss counters, the
//! map's fill, the export queue, and time each poll. At each closed window
//! the SDK's reader is flushed into a [`Capture`] exporter, and the request
//! travels to the backend in the same queue as the windows, with the same
//! retries, TLS and headers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use health::PollHealth;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::Resource;
use processor::dns::DnsHealth;

/// The processor's DNS losses as health counters: name, unit, description,
/// field.
type DnsCounter = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DnsHealth) -> u64,
);
const DNS_HEALTH: [DnsCounter; 2] = [
    (
        "flowtel.dns.pending.overflowed",
        "{query}",
        "DNS queries not matched with their answer: the table of pending queries (processor.dns.max_pending) was full.",
        |h| h.pending_overflowed,
    ),
    (
        "flowtel.dns.names.dropped",
        "{name}",
        "Names from DNS answers not kept: the name cache (processor.dns.max_names) was full of live names.",
        |h| h.names_dropped,
    ),
];

use crate::otlp::delivery::Losses;

/// The instrumentation scope of the health metrics (the flows' is `flowtel`).
pub const HEALTH_SCOPE: &str = "flowtel.health";

/// The health metrics of one OTLP destination.
pub struct Health {
    provider: SdkMeterProvider,
    captured: Arc<Mutex<Option<ExportMetricsServiceRequest>>>,
    /// The last poll's receiver health, which the observable instruments
    /// read.
    last_poll: Arc<Mutex<PollHealth>>,
    /// The last poll's DNS losses, likewise.
    dns: Arc<Mutex<DnsHealth>>,
    poll_duration: Histogram<f64>,
    overflowed_series: Counter<u64>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

/// The SDK's exporter end: keeps the last collection as an OTLP request
/// for [`Health::collect`] to take.
#[derive(Debug)]
struct Capture {
    captured: Arc<Mutex<Option<ExportMetricsServiceRequest>>>,
    temporality: Temporality,
}

impl PushMetricExporter for Capture {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let request = ExportMetricsServiceRequest::from(metrics);
        *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(request);
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        self.temporality
    }
}

/// The reader only collects when flushed, at each window; its own timer
/// is set beyond any agent's life.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Health {
    /// Health metrics with `resource_attributes` (as the windows'), in
    /// `temporality`, reading the export `losses` of their destination.
    pub fn new(
        resource_attributes: &BTreeMap<String, String>,
        delta: bool,
        losses: Arc<Losses>,
        queued: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Health {
        let temporality = if delta {
            Temporality::Delta
        } else {
            Temporality::Cumulative
        };
        let captured = Arc::new(Mutex::new(None));
        let reader = PeriodicReader::builder(Capture {
            captured: Arc::clone(&captured),
            temporality,
        })
        .with_interval(NEVER)
        .build();
        let resource = Resource::builder_empty()
            .with_attributes(
                resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let meter = provider.meter_with_scope(
            opentelemetry::InstrumentationScope::builder(HEALTH_SCOPE)
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let dns = Arc::new(Mutex::new(DnsHealth::default()));
        for (name, unit, description, field) in DNS_HEALTH {
            let dns = Arc::clone(&dns);
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |o| {
                    o.observe(field(&dns.lock().unwrap_or_else(|e| e.into_inner())), &[])
                })
                .build();
        }
        let last_poll = Arc::new(Mutex::new(PollHealth::default()));
        let read = |field: fn(&PollHealth) -> u64| {
            let last_poll = Arc::clone(&last_poll);
            move || field(&last_poll.lock().unwrap_or_else(|e| e.into_inner()))
        };
        // A cumulative count the kernel side keeps, read off the last poll.
        let receiver_counter = |name: &'static str,
                                unit: &'static str,
                                description: &'static str,
                                field: fn(&PollHealth) -> u64| {
            let value = read(field);
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |o| o.observe(value(), &[]))
                .build();
        };
        receiver_counter(
            "flowtel.connections.dropped",
            "{connection}",
            "New TCP connections not tracked: the connection map was full.",
            |h| h.connections_dropped,
        );
        receiver_counter(
            "flowtel.events.untracked",
            "{event}",
            "Socket events of connections left out of the full map.",
            |h| h.untracked_events,
        );
        receiver_counter(
            "flowtel.udp.releases.lost",
            "{socket}",
            "UDP socket releases lost to a full ring buffer: their flows end when idle.",
            |h| h.udp_releases_lost,
        );
        receiver_counter(
            "flowtel.tcp.closes.missed",
            "{connection}",
            "Established TCP connections whose close the kernel skipped reporting, found gone by the next walk: what they moved after the walk before is lost.",
            |h| h.tcp_closes_missed,
        );
        receiver_counter(
            "flowtel.map.insert.failures",
            "{event}",
            "Events not counted: the kernel refused a new entry though the map had room.",
            |h| h.insert_failures,
        );
        receiver_counter(
            "flowtel.containers.cgroups.lost",
            "{cgroup}",
            "Container cgroups made or removed that flowtel could not keep (its ring buffer or table full): their connections show no container.",
            |h| h.cgroups_lost,
        );
        receiver_counter(
            "flowtel.containers.runtime.errors",
            "{error}",
            "Failed requests to the container runtime's API (missing socket, timeout, error status, garbage) and containers left out of its full index: those containers have no name.",
            |h| h.container_runtime_errors,
        );
        receiver_counter(
            "flowtel.kernel.runs.missed",
            "{run}",
            "Runs of flowtel's tracing programs the kernel skipped (a run of the same program under way on that CPU): their events were not counted.",
            |h| h.runs_missed,
        );
        receiver_counter(
            "flowtel.nat.resyncs",
            "{resync}",
            "Conntrack sockets that overflowed (ENOBUFS) and were read again by a dump: NAT events were lost meanwhile.",
            |h| h.nat_resyncs,
        );
        receiver_counter(
            "flowtel.nat.entries.dropped",
            "{entry}",
            "Translated conntrack entries not held because the NAT table was full: those connections show no translation.",
            |h| h.nat_entries_dropped,
        );
        receiver_counter(
            "flowtel.kubernetes.relists",
            "{list}",
            "Kubernetes watches started again from a new list (410 Gone or a lost resource version): names may have been stale meanwhile.",
            |h| h.kubernetes_relists,
        );
        receiver_counter(
            "flowtel.kubernetes.objects.malformed",
            "{object}",
            "Kubernetes objects skipped because they could not be read: their pods, services or nodes are not named.",
            |h| h.kubernetes_objects_malformed,
        );
        receiver_counter(
            "flowtel.kubernetes.api.errors",
            "{error}",
            "Failed requests to the Kubernetes API server, each retried with a backoff: names may be missing or stale meanwhile.",
            |h| h.kubernetes_api_errors,
        );
        receiver_counter(
            "flowtel.dns.messages.lost",
            "{message}",
            "DNS messages not read: the kernel's ring buffer or the receiver's inbox was full, or the client read an answer where flowtel cannot see it (recvmmsg, io_uring).",
            |h| h.dns_lost + h.dns_overflowed,
        );
        receiver_counter(
            "flowtel.dns.messages.malformed",
            "{message}",
            "Packets to or from the DNS port that were no DNS message flowtel can read (cut, compression loops, wrong counts).",
            |h| h.dns_malformed,
        );
        let unreachable = read(|h| h.namespaces_unreachable);
        meter
            .u64_observable_gauge("flowtel.netns.unreachable")
            .with_unit("{namespace}")
            .with_description(
                "Network namespaces with TCP connections the last poll could not enter: their bytes wait for the close.",
            )
            .with_callback(move |o| o.observe(unreachable(), &[]))
            .build();
        let features = Arc::clone(&last_poll);
        meter
            .u64_observable_gauge("flowtel.feature.state")
            .with_description("Each feature's state on this kernel: 2 on, 1 fallback, 0 off.")
            .with_callback(move |o| {
                let levels = features.lock().unwrap_or_else(|e| e.into_inner()).features;
                for (feature, level) in levels.iter() {
                    o.observe(level as u64, &[KeyValue::new("feature", feature.name())]);
                }
            })
            .build();
        let (tracked, capacity) = (read(|h| h.tracked_connections), read(|h| h.map_capacity));
        meter
            .f64_observable_gauge("flowtel.map.fill")
            .with_unit("1")
            .with_description("Tracked connections over the connection map's capacity.")
            .with_callback(move |o| {
                let capacity = capacity();
                if capacity > 0 {
                    o.observe(tracked() as f64 / capacity as f64, &[]);
                }
            })
            .build();
        let windows_dropped = Arc::clone(&losses);
        meter
            .u64_observable_counter("flowtel.windows.dropped")
            .with_unit("{window}")
            .with_description("Oldest windows dropped because the export queue was full.")
            .with_callback(move |o| {
                o.observe(windows_dropped.queue_full.load(Ordering::Relaxed), &[])
            })
            .build();
        meter
            .u64_observable_gauge("flowtel.windows.queued")
            .with_unit("{window}")
            .with_description("Windows waiting for the backend.")
            .with_callback(move |o| o.observe(queued(), &[]))
            .build();
        let refused = Arc::clone(&losses);
        meter
            .u64_observable_counter("flowtel.export.failures")
            .with_unit("{request}")
            .with_description("Requests the backend refused for good.")
            .with_callback(move |o| o.observe(refused.refused.load(Ordering::Relaxed), &[]))
            .build();
        let not_otlp = Arc::clone(&losses);
        meter
            .u64_observable_counter("flowtel.export.not_otlp")
            .with_unit("{response}")
            .with_description(
                "2xx answers that were not OTLP responses (another service at the endpoint); the requests are retried.",
            )
            .with_callback(move |o| o.observe(not_otlp.not_otlp.load(Ordering::Relaxed), &[]))
            .build();
        meter
            .u64_observable_counter("flowtel.queue.write_failures")
            .with_unit("{window}")
            .with_description(
                "Windows that could not be written to the queue directory (held in memory only).",
            )
            .with_callback(move |o| o.observe(losses.disk_failures.load(Ordering::Relaxed), &[]))
            .build();
        let poll_duration = meter
            .f64_histogram("flowtel.poll.duration")
            .with_unit("s")
            .with_description("Time to read the kernel's maps and fold them, per poll.")
            .build();
        let overflowed_series = meter
            .u64_counter("flowtel.series.overflowed")
            .with_unit("{series}")
            .with_description("Series summed into the flowtel.overflow series.")
            .build();
        Health {
            provider,
            captured,
            last_poll,
            dns,
            poll_duration,
            overflowed_series,
        }
    }

    /// Takes one poll's receiver health.
    pub fn record_poll(&self, health: &PollHealth) {
        *self.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = *health;
        self.poll_duration
            .record(health.poll_duration.as_secs_f64(), &[]);
    }

    /// Takes one poll's DNS losses (cumulative).
    pub fn record_dns(&self, health: &DnsHealth) {
        *self.dns.lock().unwrap_or_else(|e| e.into_inner()) = *health;
    }

    /// Counts the series a window folded into its overflow series.
    pub fn record_overflow(&self, series: u64) {
        self.overflowed_series.add(series, &[]);
    }

    /// Collects every instrument now, as one OTLP request.
    pub fn collect(&self) -> Option<ExportMetricsServiceRequest> {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!("flowtel: could not collect the health metrics: {e}");
            return None;
        }
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;

    use super::*;

    fn value(request: &ExportMetricsServiceRequest, name: &str) -> Option<f64> {
        let scope = &request.resource_metrics[0].scope_metrics[0];
        let identity = scope.scope.as_ref().unwrap();
        assert_eq!(identity.name, HEALTH_SCOPE);
        assert_eq!(identity.version, env!("CARGO_PKG_VERSION"));
        let metric = scope.metrics.iter().find(|m| m.name == name)?;
        let point = match metric.data.as_ref()? {
            Data::Sum(sum) => sum.data_points.first()?,
            Data::Gauge(gauge) => gauge.data_points.first()?,
            Data::Histogram(h) => return Some(h.data_points.first()?.count as f64),
            _ => return None,
        };
        match point.value? {
            Value::AsInt(n) => Some(n as f64),
            Value::AsDouble(d) => Some(d),
        }
    }

    #[test]
    fn health_figures_become_otlp_metrics() {
        let losses = Arc::new(Losses::default());
        losses.queue_full.store(3, Ordering::Relaxed);
        losses.disk_failures.store(4, Ordering::Relaxed);
        losses.not_otlp.store(6, Ordering::Relaxed);
        let health = Health::new(
            &BTreeMap::from([("host.name".to_owned(), "h1".to_owned())]),
            false,
            Arc::clone(&losses),
            Arc::new(|| 2),
        );
        health.record_poll(&PollHealth {
            connections_dropped: 7,
            untracked_events: 11,
            tracked_connections: 16,
            map_capacity: 64,
            poll_duration: Duration::from_millis(3),
            ..PollHealth::default()
        });
        health.record_overflow(5);
        let request = health.collect().unwrap();
        assert_eq!(value(&request, "flowtel.connections.dropped"), Some(7.0));
        assert_eq!(value(&request, "flowtel.events.untracked"), Some(11.0));
        assert_eq!(value(&request, "flowtel.map.fill"), Some(0.25));
        assert_eq!(value(&request, "flowtel.windows.dropped"), Some(3.0));
        assert_eq!(value(&request, "flowtel.windows.queued"), Some(2.0));
        assert_eq!(value(&request, "flowtel.export.failures"), Some(0.0));
        assert_eq!(value(&request, "flowtel.queue.write_failures"), Some(4.0));
        assert_eq!(value(&request, "flowtel.export.not_otlp"), Some(6.0));
        assert_eq!(value(&request, "flowtel.series.overflowed"), Some(5.0));
        assert_eq!(value(&request, "flowtel.poll.duration"), Some(1.0));
        assert_eq!(value(&request, "flowtel.udp.releases.lost"), Some(0.0));
        assert_eq!(value(&request, "flowtel.map.insert.failures"), Some(0.0));
        assert_eq!(value(&request, "flowtel.kernel.runs.missed"), Some(0.0));
        assert_eq!(value(&request, "flowtel.netns.unreachable"), Some(0.0));
        let states = request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "flowtel.feature.state")
            .and_then(|m| match m.data.as_ref()? {
                Data::Gauge(gauge) => Some(gauge.data_points.len()),
                _ => None,
            });
        assert_eq!(
            states,
            Some(health::Feature::ALL.len()),
            "one point per feature"
        );
        let resource = request.resource_metrics[0].resource.as_ref().unwrap();
        assert!(resource.attributes.iter().any(|kv| kv.key == "host.name"));
    }
}
