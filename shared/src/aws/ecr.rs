//! ECR adapter: [`EcrRead`] on `aws-sdk-ecr`.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ecr::types::ImageIdentifier;
use aws_sdk_ecr::Client;
use oci_spec::image::ImageIndex;

use super::{classify, ApiCalls};
use crate::model::{Image, Platform};
use crate::ports::EcrRead;
use crate::AwsError;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Is this media type an image index (a multi-platform image)?
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub struct EcrAdapter {
    client: Client,
}

impl EcrAdapter {
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls) -> Self {
        let config = aws_sdk_ecr::config::Builder::from(sdk).interceptor(calls.clone()).build();
        Self::from_client(Client::from_conf(config))
    }

    pub fn from_client(client: Client) -> Self {
        EcrAdapter { client }
    }
}

#[async_trait]
impl EcrRead for EcrAdapter {
    async fn describe_image(&self, repository: &str, digest: &str) -> Result<Option<Image>, AwsError> {
        let id = ImageIdentifier::builder().image_digest(digest).build();
        Ok(self.describe_one(repository, id).await?.map(|(_, image)| image))
    }

    async fn resolve_tag(&self, repository: &str, tag: &str) -> Result<Option<(String, Image)>, AwsError> {
        self.describe_one(repository, ImageIdentifier::builder().image_tag(tag).build()).await
    }

    async fn index_platforms(&self, repository: &str, digest: &str) -> Result<Option<Vec<Platform>>, AwsError> {
        // BatchGetImage counts as a pull (it updates lastRecordedPullTime), so
        // callers ask only when the push event says, or does not say, "index".
        let output = self
            .client
            .batch_get_image()
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .set_accepted_media_types(Some(
                [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST].map(String::from).to_vec(),
            ))
            .send()
            .await
            .map_err(|e| classify("BatchGetImage", e))?;
        let Some(image) = output.images().first() else {
            return Ok(None);
        };
        let manifest = image.image_manifest().unwrap_or_default();
        platforms_of(image.image_manifest_media_type(), manifest)
            .map_err(|problem| AwsError::unexpected("BatchGetImage", format!("{repository}@{digest}: {problem}")))
    }
}

impl EcrAdapter {
    /// DescribeImages for one image id; "not found" (image or repository) is `None`.
    async fn describe_one(&self, repository: &str, id: ImageIdentifier) -> Result<Option<(String, Image)>, AwsError> {
        let result = self.client.describe_images().repository_name(repository).image_ids(id).send().await;
        let output = match result {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_image_not_found_exception()) => return Ok(None),
            Err(e) => return Err(classify("DescribeImages", e)),
        };
        Ok(output.image_details().first().and_then(|d| {
            let image = Image {
                digest: d.image_digest()?.to_string(),
                tags: d.image_tags().to_vec(),
                pushed_at: d.image_pushed_at().map_or(0, |t| t.secs()),
                size_bytes: d.image_size_in_bytes(),
                manifest_media_type: d.image_manifest_media_type().map(String::from),
            };
            Some((d.registry_id().unwrap_or_default().to_string(), image))
        }))
    }
}

/// The runnable platforms of an index manifest (attestation manifests left
/// out), or `None` for a single-platform manifest.
pub fn platforms_of(media_type: Option<&str>, manifest: &str) -> Result<Option<Vec<Platform>>, String> {
    let declared: Option<String> = serde_json::from_str::<serde_json::Value>(manifest)
        .map_err(|e| format!("manifest is not JSON: {e}"))?
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(String::from);
    let media_type = media_type.map(String::from).or(declared).unwrap_or_default();
    if !is_index_media_type(&media_type) {
        return Ok(None);
    }
    let index: ImageIndex = serde_json::from_str(manifest).map_err(|e| format!("invalid image index: {e}"))?;
    let mut platforms: Vec<Platform> = index
        .manifests()
        .iter()
        .filter(|m| {
            let attestation = m
                .annotations()
                .as_ref()
                .and_then(|a| a.get("vnd.docker.reference.type"))
                .is_some_and(|t| t == "attestation-manifest");
            !attestation
        })
        .filter_map(|m| m.platform().as_ref())
        .map(|p| Platform { os: p.os().to_string(), architecture: p.architecture().to_string() })
        .filter(|p| p.architecture != "unknown")
        .collect();
    platforms.sort();
    platforms.dedup();
    Ok(Some(platforms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecr::operation::batch_get_image::BatchGetImageOutput;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn buildx_index(archs: &[&str]) -> String {
        let mut manifests: Vec<serde_json::Value> = archs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                serde_json::json!({"mediaType": OCI_MANIFEST, "size": 100 + i, "digest": format!("sha256:{}", format!("{i}").repeat(64)),
                                   "platform": {"architecture": a, "os": "linux"}})
            })
            .collect();
        // buildx adds one attestation manifest per platform
        manifests.push(
            serde_json::json!({"mediaType": OCI_MANIFEST, "size": 50, "digest": format!("sha256:{}", "a".repeat(64)),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": D}}),
        );
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).to_string()
    }

    #[test]
    fn index_platforms_leave_out_attestations() {
        let platforms =
            platforms_of(Some(OCI_INDEX), &buildx_index(&["amd64", "arm64"])).expect("parses").expect("an index");
        let archs: Vec<&str> = platforms.iter().map(|p| p.architecture.as_str()).collect();
        assert_eq!(archs, ["amd64", "arm64"]);
    }

    #[test]
    fn single_manifests_have_no_platform_list() {
        let manifest =
            serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": {}, "layers": []})
                .to_string();
        assert_eq!(platforms_of(None, &manifest), Ok(None));
        assert!(platforms_of(Some(OCI_INDEX), "{not json").is_err());
    }

    #[tokio::test]
    async fn batch_get_image_asks_for_index_media_types() {
        let rule = mock!(Client::batch_get_image)
            .match_requests(|r| r.accepted_media_types().iter().any(|m| m == OCI_INDEX))
            .then_output(|| {
                BatchGetImageOutput::builder()
                    .images(
                        aws_sdk_ecr::types::Image::builder()
                            .image_manifest(buildx_index(&["amd64"]))
                            .image_manifest_media_type(OCI_INDEX)
                            .build(),
                    )
                    .build()
            });
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&rule]));
        let platforms = ecr.index_platforms("users", D).await.expect("read").expect("an index");
        assert_eq!(platforms, [Platform { os: "linux".into(), architecture: "amd64".into() }]);
        assert_eq!(rule.num_calls(), 1);
    }
}
