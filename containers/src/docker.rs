//! Container names from the Docker Engine API: the list of every
//! container at start (and after each reconnection), then the container
//! events as they come. A daemon that is missing, hangs, errs or answers
//! garbage is asked again with a growing pause; meanwhile the containers
//! known stay known and new ones are unnamed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Instant, SystemTime};

use bollard::models::{ContainerInspectResponse, ContainerSummary, EventMessage};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;

use crate::retry::{self, Streak, REQUEST_TIMEOUT};
use crate::{Config, ContainerFacts, ContainerIndex, Image, Runtime};

/// Keeps `index` up to date from the Docker daemon at
/// `config.docker_socket` until the task is dropped. Never returns.
pub async fn watch(config: Config, index: ContainerIndex) {
    let what = format!("the Docker API at {}", config.docker_socket.display());
    let sessions = index.clone();
    retry::forever(what, index, move |streak| {
        let (config, index) = (config.clone(), sessions.clone());
        async move { session(&config, &index, &streak).await }
    })
    .await;
}

/// Whether the Docker daemon at `socket` answers, for `flowtel check`:
/// the number of containers it lists, or why not. Must run inside a tokio
/// runtime.
pub async fn probe(socket: &Path) -> Result<usize, String> {
    let docker = connect(socket)?;
    let list = ListContainersOptionsBuilder::new().all(true).build();
    asked(docker.list_containers(Some(list)))
        .await
        .map(|containers| containers.len())
}

/// One connection: the list, then events until the stream ends (`Ok`) or
/// fails.
async fn session(config: &Config, index: &ContainerIndex, streak: &Streak) -> Result<(), String> {
    let docker = connect(&config.docker_socket)?;
    // Events from just before the list: none is missed between the two
    // (the daemon replays them), and one seen twice changes nothing.
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(1));
    let list = ListContainersOptionsBuilder::new().all(true).build();
    let summaries = asked(docker.list_containers(Some(list))).await?;
    let at = Instant::now();
    let mut alive = Vec::with_capacity(summaries.len());
    for summary in summaries {
        if let Some((id, facts)) = from_summary(summary) {
            alive.push(id.clone());
            index.insert(Runtime::Docker, id, facts);
        }
    }
    index.listed(Runtime::Docker, &alive, at);
    streak.answered();

    let filters = HashMap::from([("type", vec!["container"])]);
    let options = EventsOptionsBuilder::new()
        .since(&since.to_string())
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(options));
    loop {
        match events.next().await {
            None => return Ok(()),
            Some(Err(error)) => return Err(retry::short(&error.to_string())),
            Some(Ok(event)) => take_event(&docker, index, event).await,
        }
    }
}

fn connect(socket: &Path) -> Result<Docker, String> {
    if !socket.exists() {
        return Err("no such socket (is Docker running?)".to_owned());
    }
    let path = socket.to_string_lossy();
    // bollard's timeout bounds the answer's head; `asked` bounds the rest.
    Docker::connect_with_unix(&path, REQUEST_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
        .map_err(|e| e.to_string())
}

/// A request to the daemon, bounded in time (bollard's own timeout covers
/// only the answer's head, and says "Timeout error").
async fn asked<T>(
    request: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, String> {
    let described = async {
        request.await.map_err(|error| match error {
            bollard::errors::Error::RequestTimeoutError => retry::no_answer(),
            error => error.to_string(),
        })
    };
    retry::timed(described).await
}

async fn take_event(docker: &Docker, index: &ContainerIndex, event: EventMessage) {
    let Some(actor) = event.actor else { return };
    let Some(id) = actor.id else { return };
    match event.action.as_deref() {
        Some("create" | "rename") => {}
        Some("start") if index.get(&id).is_none() => {}
        Some("destroy") => {
            index.removed(&id, Instant::now());
            return;
        }
        _ => return,
    }
    match asked(docker.inspect_container(&id, None)).await {
        Ok(inspected) => {
            if let Some(facts) = from_inspect(inspected) {
                index.insert(Runtime::Docker, id, facts);
            }
        }
        Err(_) if event.action.as_deref() == Some("create") => {
            // Already gone (a container that lived milliseconds): its
            // create event still says what it was.
            index.insert(
                Runtime::Docker,
                id,
                from_create_attributes(actor.attributes.unwrap_or_default()),
            );
        }
        Err(_) => index.count_error(),
    }
}

fn from_summary(summary: ContainerSummary) -> Option<(String, ContainerFacts)> {
    let id = summary.id?;
    let name = summary
        .names
        .and_then(|names| names.into_iter().next())
        .map(|name| name.trim_start_matches('/').to_owned())
        .unwrap_or_default();
    let facts = ContainerFacts {
        name,
        image: Image::parse(summary.image.as_deref().unwrap_or_default()),
        labels: sorted(summary.labels),
    };
    Some((id, facts))
}

fn from_inspect(inspected: ContainerInspectResponse) -> Option<ContainerFacts> {
    let config = inspected.config.unwrap_or_default();
    Some(ContainerFacts {
        name: inspected.name?.trim_start_matches('/').to_owned(),
        image: Image::parse(config.image.as_deref().unwrap_or_default()),
        labels: sorted(config.labels),
    })
}

/// A create event's attributes are the container's labels with its
/// `name` and `image`.
fn from_create_attributes(mut attributes: HashMap<String, String>) -> ContainerFacts {
    let name = attributes.remove("name").unwrap_or_default();
    let image = attributes.remove("image").unwrap_or_default();
    ContainerFacts {
        name,
        image: Image::parse(&image),
        labels: attributes.into_iter().collect(),
    }
}

fn sorted(labels: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    labels.unwrap_or_default().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_event_names_a_container_already_gone() {
        let attributes = HashMap::from([
            ("name".to_owned(), "quick".to_owned()),
            ("image".to_owned(), "bb:test".to_owned()),
            ("team".to_owned(), "payments".to_owned()),
        ]);
        let facts = from_create_attributes(attributes);
        assert_eq!(facts.name, "quick");
        assert_eq!(facts.image, Image::parse("bb:test"));
        assert_eq!(
            facts.labels,
            BTreeMap::from([("team".to_owned(), "payments".to_owned())])
        );
    }

    #[test]
    fn a_summary_without_an_id_is_skipped() {
        assert!(from_summary(ContainerSummary::default()).is_none());
        let summary = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/web".into()]),
            image: Some("nginx:1.27".into()),
            ..ContainerSummary::default()
        };
        let (id, facts) = from_summary(summary).unwrap();
        assert_eq!((id.as_str(), facts.name.as_str()), ("abc", "web"));
        assert_eq!(facts.image.tag.as_deref(), Some("1.27"));
    }
}
