//! The sources of names for the ends of flows that run beside the
//! pipeline: the container runtime's API (and, opted in, Kubernetes).
//! Each feeds an index the processor reads when it names a window's
//! series; a source that fails leaves names absent, never the counting.

use std::sync::Arc;

use containers::ContainerIndex;
use processor::Processor;
use receiver::ReceiverHealth;
use tokio::task::JoinHandle;

/// The running sources; dropping them stops their tasks.
pub struct EndNameSources {
    containers: Option<ContainerIndex>,
    tasks: Vec<JoinHandle<()>>,
}

impl EndNameSources {
    /// Starts the sources `config` asks for, on the current tokio runtime,
    /// and gives `processor` their indexes.
    pub fn start(config: &processor::Config, processor: &mut Processor) -> EndNameSources {
        let mut sources = EndNameSources {
            containers: None,
            tasks: Vec::new(),
        };
        let runtimes = &config.containers;
        if runtimes.docker || runtimes.containerd {
            // One index: a container id is one runtime's.
            let index = ContainerIndex::new(runtimes.max_containers);
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
        sources
    }

    /// Adds the sources' own trouble to a poll's health.
    pub fn add_health(&self, health: &mut ReceiverHealth) {
        if let Some(index) = &self.containers {
            health.container_runtime_errors = index.runtime_errors();
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
