//! Media types deploy-on-push reasons about: what is a container image, and
//! what the common non-image artifacts pushed to ECR are called.

/// The config media types of a runnable container image.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Is this the config media type (or ECR's `artifact-media-type`) of a container image?
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
