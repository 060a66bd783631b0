//! Container names from containerd's own API (gRPC), for the containers
//! Docker does not make: Kubernetes' CRI (namespace `k8s.io`) and nerdctl
//! (`default`). Docker's own (`moby`) carry neither name nor image there.
//! The list of each namespace's containers at start (and after each
//! reconnection), then the container events.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use containerd_client::events::{ContainerCreate, ContainerDelete, ContainerUpdate};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{
    Container, GetContainerRequest, ListContainersRequest, SubscribeRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use prost::Message as _;

use crate::retry::{self, timed, Streak};
use crate::{Config, ContainerFacts, ContainerIndex, Image, Runtime};

/// Labels that name a container: the kubelet's (through the CRI), then
/// nerdctl's. Without either the name is the id.
const NAME_LABELS: [&str; 2] = ["io.kubernetes.container.name", "nerdctl/name"];

/// Keeps `index` up to date from containerd at `config.containerd_socket`
/// until the task is dropped. Never returns.
pub async fn watch(config: Config, index: ContainerIndex) {
    let what = format!("containerd's API at {}", config.containerd_socket.display());
    let sessions = index.clone();
    retry::forever(what, index, move |streak| {
        let (config, index) = (config.clone(), sessions.clone());
        async move { session(&config, &index, &streak).await }
    })
    .await;
}

/// Whether containerd at `socket` answers, for `flowtel check`: the
/// containers of `namespaces`, or why not.
pub async fn probe(socket: &Path, namespaces: &[String]) -> Result<usize, String> {
    let channel = connect(socket).await?;
    let mut containers = ContainersClient::new(channel);
    let mut n = 0;
    for namespace in namespaces {
        n += list(&mut containers, namespace).await?.len();
    }
    Ok(n)
}

async fn connect(socket: &Path) -> Result<Channel, String> {
    if !socket.exists() {
        return Err("no such socket (is containerd running?)".to_owned());
    }
    timed(containerd_client::connect(socket)).await
}

fn in_namespace<T>(message: T, namespace: &str) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    let value = namespace
        .parse()
        .map_err(|_| format!("`{namespace}` is not a containerd namespace name"))?;
    request.metadata_mut().insert("containerd-namespace", value);
    Ok(request)
}

async fn list(
    containers: &mut ContainersClient<Channel>,
    namespace: &str,
) -> Result<Vec<Container>, String> {
    let request = in_namespace(ListContainersRequest::default(), namespace)?;
    let listed = timed(containers.list(request)).await?;
    Ok(listed.into_inner().containers)
}

async fn session(config: &Config, index: &ContainerIndex, streak: &Streak) -> Result<(), String> {
    let channel = connect(&config.containerd_socket).await?;
    // Subscribed before the lists: a container made between the two is
    // seen at least once.
    let subscribe = SubscribeRequest {
        filters: vec![r#"topic~="/containers/""#.to_owned()],
    };
    let mut events = timed(EventsClient::new(channel.clone()).subscribe(subscribe))
        .await?
        .into_inner();
    let mut containers = ContainersClient::new(channel);
    let mut alive = Vec::new();
    let at = Instant::now();
    for namespace in &config.containerd_namespaces {
        for container in list(&mut containers, namespace).await? {
            alive.push(container.id.clone());
            index.insert(Runtime::Containerd, container.id.clone(), facts(container));
        }
    }
    index.listed(Runtime::Containerd, &alive, at);
    streak.answered();

    loop {
        let envelope = match events.message().await {
            Ok(None) => return Ok(()),
            Err(status) => return Err(retry::short(&status.to_string())),
            Ok(Some(envelope)) => envelope,
        };
        if !config.containerd_namespaces.contains(&envelope.namespace) {
            continue;
        }
        let Some(payload) = envelope.event else {
            continue;
        };
        let value = payload.value.as_slice();
        let id = match envelope.topic.as_str() {
            "/containers/create" => ContainerCreate::decode(value).map(|e| e.id),
            "/containers/update" => ContainerUpdate::decode(value).map(|e| e.id),
            "/containers/delete" => {
                if let Ok(deleted) = ContainerDelete::decode(value) {
                    index.removed(&deleted.id, Instant::now());
                }
                continue;
            }
            _ => continue,
        };
        let Ok(id) = id else {
            index.count_error();
            continue;
        };
        let request = in_namespace(GetContainerRequest { id }, &envelope.namespace)?;
        match timed(containers.get(request)).await {
            Ok(got) => {
                if let Some(container) = got.into_inner().container {
                    index.insert(Runtime::Containerd, container.id.clone(), facts(container));
                }
            }
            // Gone already, or a hiccup: unnamed, counted.
            Err(_) => index.count_error(),
        }
    }
}

fn facts(container: Container) -> ContainerFacts {
    let labels: BTreeMap<String, String> = container.labels.into_iter().collect();
    let name = NAME_LABELS
        .iter()
        .find_map(|label| labels.get(*label))
        .cloned()
        .unwrap_or_else(|| container.id.clone());
    ContainerFacts {
        name,
        image: Image::parse(&container.image),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cri_container_is_named_by_the_kubelets_label() {
        let container = Container {
            id: "abc".into(),
            image: "registry.k8s.io/pause:3.10".into(),
            labels: [("io.kubernetes.container.name".to_owned(), "web".to_owned())].into(),
            ..Container::default()
        };
        let facts = facts(container);
        assert_eq!(facts.name, "web");
        assert_eq!(facts.image.tag.as_deref(), Some("3.10"));
        assert_eq!(facts.labels.len(), 1);
    }

    #[test]
    fn without_a_name_label_the_name_is_the_id() {
        let container = Container {
            id: "abc".into(),
            ..Container::default()
        };
        assert_eq!(facts(container).name, "abc");
    }
}
