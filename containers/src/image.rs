//! An image reference (`[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`) split into
//! the OpenTelemetry `container.image.name` and `container.image.tag`.

/// A container's image, as its runtime names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    /// The repository with its registry, without tag or digest
    /// (`registry:5000/shop/billing`); an image id (`sha256:...`) when the
    /// container was made from one.
    pub name: String,
    /// The tag, where the reference has one.
    pub tag: Option<String>,
}

impl Image {
    /// Splits a reference. A `:` after the last `/` starts the tag; one
    /// before it is a registry's port.
    pub fn parse(reference: &str) -> Image {
        if reference.starts_with("sha256:") {
            return Image {
                name: reference.to_owned(),
                tag: None,
            };
        }
        let without_digest = reference.split('@').next().unwrap_or(reference);
        let last_slash = without_digest.rfind('/').map_or(0, |n| n + 1);
        match without_digest[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                Image {
                    name: without_digest[..colon].to_owned(),
                    tag: Some(without_digest[colon + 1..].to_owned()).filter(|t| !t.is_empty()),
                }
            }
            None => Image {
                name: without_digest.to_owned(),
                tag: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, tag: Option<&str>) -> Image {
        Image {
            name: name.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn splits_registry_repository_tag_and_digest() {
        assert_eq!(Image::parse("nginx"), image("nginx", None));
        assert_eq!(Image::parse("nginx:1.27"), image("nginx", Some("1.27")));
        assert_eq!(
            Image::parse("registry:5000/shop/billing:1.2"),
            image("registry:5000/shop/billing", Some("1.2"))
        );
        assert_eq!(
            Image::parse("registry:5000/shop/billing"),
            image("registry:5000/shop/billing", None)
        );
        assert_eq!(
            Image::parse("ghcr.io/o/app:v2@sha256:0123"),
            image("ghcr.io/o/app", Some("v2"))
        );
        assert_eq!(
            Image::parse("ghcr.io/o/app@sha256:0123"),
            image("ghcr.io/o/app", None)
        );
        assert_eq!(
            Image::parse("sha256:0123abcd"),
            image("sha256:0123abcd", None)
        );
        assert_eq!(Image::parse(""), image("", None));
        assert_eq!(Image::parse("app:"), image("app", None));
    }
}
