//! Media types of the manifests and blobs a registry holds, and what they
//! mean to us. Plain data, shared by the planners and the ECR adapter, so a
//! planner never imports an adapter to ask "is this an index?".

/// An OCI image index (a multi-platform image).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker manifest list, the Docker schema 2 twin of [`OCI_INDEX`].
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A single-platform OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// A single-platform Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The config blob of an OCI image (OS, architecture, history).
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The config blob of a Docker image.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The manifest media types of a runnable image, indexes first.
pub const IMAGE_MANIFESTS: [&str; 4] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Is this media type an image index (a multi-platform image)?
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Is this media type a single-platform image manifest?
pub fn is_manifest_media_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Is this the config blob of a container image (as opposed to the config of
/// an artifact such as a signature, an SBOM or a Helm chart)? Also used for
/// ECR's `artifact-media-type` in push events.
pub fn is_image_config_media_type(media_type: &str) -> bool {
    let media_type = media_type.trim();
    media_type.eq_ignore_ascii_case(DOCKER_IMAGE_CONFIG) || media_type.eq_ignore_ascii_case(OCI_IMAGE_CONFIG)
}

/// A short human name for a well-known non-image artifact type, for skip
/// reasons ("a cosign signature"); `None` for anything else.
pub fn artifact_kind(media_type: &str) -> Option<&'static str> {
    let m = media_type.trim().to_ascii_lowercase();
    let kind = if m.starts_with("application/vnd.dev.cosign") || m.contains("sigstore") || m.contains("notary") {
        "a signature"
    } else if m.contains("spdx") || m.contains("cyclonedx") || m.contains("syft") || m.contains("in-toto") {
        "an SBOM or attestation"
    } else if m.starts_with("application/vnd.buildkit.cache") {
        "a BuildKit cache"
    } else if m.starts_with("application/vnd.cncf.helm") {
        "a Helm chart"
    } else if m.starts_with("application/vnd.oci.empty") {
        "an OCI artifact with an empty config"
    } else {
        return None;
    };
    Some(kind)
}

/// "a cosign signature (application/vnd.dev.cosign…)" or just the type.
pub fn describe(media_type: &str) -> String {
    match artifact_kind(media_type) {
        Some(kind) => format!("{kind} ({media_type})"),
        None => media_type.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_manifests_and_configs_are_told_apart() {
        assert!(is_index_media_type(OCI_INDEX) && is_index_media_type(DOCKER_MANIFEST_LIST));
        assert!(!is_index_media_type(OCI_MANIFEST) && !is_index_media_type(DOCKER_MANIFEST));
        assert!(is_manifest_media_type(OCI_MANIFEST) && is_manifest_media_type(DOCKER_MANIFEST));
        assert!(!is_manifest_media_type(OCI_INDEX));
        assert!(is_image_config_media_type(OCI_IMAGE_CONFIG) && is_image_config_media_type(DOCKER_IMAGE_CONFIG));
        // a cosign signature's config is not an image config
        assert!(!is_image_config_media_type("application/vnd.dev.cosign.artifact.sig.v1+json"));
        assert!(!is_index_media_type("") && !is_manifest_media_type("") && !is_image_config_media_type(""));
    }

    #[test]
    fn images_and_artifacts_are_told_apart() {
        assert!(is_image_config_media_type(DOCKER_IMAGE_CONFIG));
        assert!(is_image_config_media_type(OCI_IMAGE_CONFIG));
        for (t, kind) in [
            ("application/vnd.dev.cosign.artifact.sig.v1+json", "a signature"),
            ("application/spdx+json", "an SBOM or attestation"),
            ("application/vnd.buildkit.cacheconfig.v0", "a BuildKit cache"),
            ("application/vnd.cncf.helm.config.v1+json", "a Helm chart"),
        ] {
            assert!(!is_image_config_media_type(t), "{t}");
            assert_eq!(artifact_kind(t), Some(kind), "{t}");
        }
        assert_eq!(describe("text/plain"), "text/plain");
    }
}
