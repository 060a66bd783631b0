//! The sources of names for the ends of flows that run beside the
//! pipeline: the container runtime's API (and, opted in, Kubernetes).
//! Each feeds an index the processor reads when it names a window's
//! series; a source that fails leaves names absent, never the counting.

use std::sync::Arc;

use anyhow::Context as _;

use containers::ContainerIndex;
use health::PollHealth;
use processor::Processor;
use tokio::task::JoinHandle;

/// The running sources; dropping them stops their tasks.
pub struct EndNameSources {
    containers: Option<ContainerIndex>,
    kubernetes: Option<kubernetes::Index>,
    tasks: Vec<JoinHandle<()>>,
}

impl EndNameSources {
    /// Starts the sources `config` asks for, on the current tokio runtime,
    /// and gives `processor` their indexes. Fails only when the Kubernetes
    /// configuration cannot be used (a server that is down is retried).
    pub async fn start(
        config: &processor::Config,
        processor: &mut Processor,
    ) -> anyhow::Result<EndNameSources> {
        let mut sources = EndNameSources {
            containers: None,
            kubernetes: None,
            tasks: Vec::new(),
        };
        let runtimes = &config.containers;
        if runtimes.docker || runtimes.containerd {
            // One index: a container id is one runtime's.
            let index = ContainerIndex::new(runtimes.max_containers);
            let sweeping = index.clone().sweep(runtimes.keep_removed);
            sources.tasks.push(tokio::spawn(sweeping));
            if runtimes.docker {
                let watching = containers::docker::watch(runtimes.clone(), index.clone());
                sources.tasks.push(tokio::spawn(watching));
            }
            if runtimes.containerd {
                let watching = containers::containerd::watch(runtimes.clone(), index.clone());
                sources.tasks.push(tokio::spawn(watching));
            }
            processor.add_end_names(Arc::new(index.clone()));
            sources.containers = Some(index);
        }
        if let Some(config) = &config.kubernetes {
            let keep_deleted = config.keep_deleted.unwrap_or(processor.interval());
            let index = kubernetes::Index::start(config, keep_deleted)
                .await
                .context("could not start watching the Kubernetes API (processor.kubernetes)")?;
            let names = processor::KubernetesNames::new(index.clone(), config.node_name());
            processor.add_end_names(Arc::new(names));
            sources.kubernetes = Some(index);
        }
        Ok(sources)
    }

    /// Adds the sources' own trouble to a poll's health.
    pub fn add_health(&self, health: &mut PollHealth) {
        if let Some(index) = &self.containers {
            health.container_runtime_errors = index.runtime_errors();
        }
        if let Some(index) = &self.kubernetes {
            let counts = index.health().counts();
            health.kubernetes_relists = counts.relists;
            health.kubernetes_objects_malformed = counts.malformed;
            health.kubernetes_api_errors = counts.api_errors;
        }
    }
}

impl Drop for EndNameSources {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
