//! A container's name, image and labels from its runtime, for the local
//! end of a flow whose process runs in it.

use containers::ContainerIndex;
use receiver::ProcessInfo;

use crate::{Attributes, EndNames, RemoteEnd};

/// Where each of a container's labels goes: `source.container.label.KEY`,
/// the OpenTelemetry `container.label.<key>`.
pub const LABEL_PREFIX: &str = "source.container.label.";

impl EndNames for ContainerIndex {
    fn name_local(&self, process: &ProcessInfo, attributes: &mut Attributes) {
        let Some(facts) = process.container_id.as_deref().and_then(|id| self.get(id)) else {
            return;
        };
        if !facts.name.is_empty() {
            attributes.set("source.container.name", facts.name.as_str());
        }
        if !facts.image.name.is_empty() {
            attributes.set("source.container.image.name", facts.image.name.as_str());
        }
        if let Some(tag) = &facts.image.tag {
            attributes.set("source.container.image.tag", tag.as_str());
        }
        for (key, value) in &facts.labels {
            attributes.set(format!("{LABEL_PREFIX}{key}"), value.as_str());
        }
    }

    fn name_remote(&self, _remote: RemoteEnd, _attributes: &mut Attributes) {}
}
