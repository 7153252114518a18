//! ECR adapter: [`EcrRead`] on `aws-sdk-ecr`.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ecr::types::{DescribeImagesFilter, ImageIdentifier, ImageStatus, ImageStatusFilter, TargetStorageClass};
use aws_sdk_ecr::Client;
use oci_spec::image::ImageIndex;

use super::blob::BlobClient;
use super::{classify, ApiCalls};
use std::collections::BTreeMap;

use crate::lifecycle::StorageClass;
use crate::media::{
    is_index_media_type, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, IMAGE_MANIFESTS, OCI_INDEX, OCI_MANIFEST,
};
use crate::model::{Image, Manifest, Platform, Tags};
use crate::ports::{Deleted, EcrRead, Registry, Repository, RepositoryPolicies};
use crate::prune::RepoImage;
use crate::AwsError;

/// DescribeImages page size, the API's maximum.
pub const DESCRIBE_IMAGES_PAGE: i32 = 1000;
/// BatchGetImage and BatchDeleteImage take at most this many image ids.
pub const BATCH_IMAGES: usize = 100;

/// DescribeRepositories page size, the API's maximum.
pub const DESCRIBE_REPOSITORIES_PAGE: i32 = 1000;

pub struct EcrAdapter {
    client: Client,
    blobs: BlobClient,
}

impl EcrAdapter {
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls) -> Self {
        let config = aws_sdk_ecr::config::Builder::from(sdk).interceptor(calls.clone()).build();
        Self::from_client(Client::from_conf(config))
    }

    pub fn from_client(client: Client) -> Self {
        EcrAdapter { client, blobs: BlobClient::default() }
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

    async fn manifest(&self, repository: &str, digest: &str) -> Result<Manifest, AwsError> {
        // BatchGetImage counts as a pull (it updates lastRecordedPullTime);
        // deploy-on-push asks once per push that some service tracks.
        let output = self
            .client
            .batch_get_image()
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .set_accepted_media_types(Some(IMAGE_MANIFESTS.map(String::from).to_vec()))
            .send()
            .await
            .map_err(|e| classify("BatchGetImage", e))?;
        let Some(image) = output.images().first() else {
            // The digest was just described, so an empty answer is a failure
            // to read it: refuse rather than skip the guards.
            let why = output.failures().first().and_then(|f| f.failure_reason()).unwrap_or("no manifest returned");
            return Err(AwsError::unexpected("BatchGetImage", format!("{repository}@{digest}: {why}")));
        };
        let manifest = image.image_manifest().unwrap_or_default();
        manifest_of(image.image_manifest_media_type(), manifest)
            .map_err(|problem| AwsError::unexpected("BatchGetImage", format!("{repository}@{digest}: {problem}")))
    }

    async fn config_blob(&self, repository: &str, digest: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, AwsError> {
        // The download is a plain HTTPS GET, outside the SDK's retries: a
        // transient answer (429, 5xx, a reset) gets one more try, with a fresh
        // URL, before it fails the run as Retryable.
        match self.config_blob_once(repository, digest, max_bytes).await {
            Err(e) if e.retryable && e.operation == "GetConfigBlob" => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                self.config_blob_once(repository, digest, max_bytes).await
            }
            other => other,
        }
    }
}

impl EcrAdapter {
    async fn config_blob_once(
        &self,
        repository: &str,
        digest: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, AwsError> {
        let output = self
            .client
            .get_download_url_for_layer()
            .repository_name(repository)
            .layer_digest(digest)
            .send()
            .await
            .map_err(|e| classify("GetDownloadUrlForLayer", e))?;
        let url = output.download_url().ok_or_else(|| {
            AwsError::unexpected("GetDownloadUrlForLayer", format!("{repository}@{digest}: no download URL"))
        })?;
        self.blobs.get(url, max_bytes).await.map_err(|e| AwsError {
            operation: "GetConfigBlob",
            code: None,
            message: format!("{repository}@{digest}: {}", e.message),
            retryable: e.retryable,
            source: None,
        })
    }
}

#[async_trait]
impl RepositoryPolicies for EcrAdapter {
    async fn lifecycle_policy(&self, repository: &str) -> Result<Option<String>, AwsError> {
        match self.client.get_lifecycle_policy().repository_name(repository).send().await {
            Ok(output) => Ok(output.lifecycle_policy_text().map(String::from)),
            Err(e) => {
                let e = classify("GetLifecyclePolicy", e);
                // A repository without a native policy answers with this error.
                if e.code_is("LifecyclePolicyNotFoundException") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn repository_tags(&self, arn: &str) -> Result<Tags, AwsError> {
        let output = self
            .client
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| classify("ListTagsForResource", e))?;
        Ok(output.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
    }
}

#[async_trait]
impl Registry for EcrAdapter {
    async fn repositories(&self, names: &[String], with_tags: bool) -> Result<Vec<Repository>, AwsError> {
        let found: Vec<aws_sdk_ecr::types::Repository> = self
            .client
            .describe_repositories()
            .set_repository_names((!names.is_empty()).then(|| names.to_vec()))
            // 1,000 a page, the API's most; it takes no page size with names.
            .set_max_results(names.is_empty().then_some(DESCRIBE_REPOSITORIES_PAGE))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("DescribeRepositories", e))?;
        let mut repositories = Vec::with_capacity(found.len());
        for r in found {
            let (Some(name), Some(arn)) = (r.repository_name(), r.repository_arn()) else { continue };
            let tags = if with_tags { self.repository_tags(arn).await? } else { Default::default() };
            repositories.push(Repository {
                name: name.to_string(),
                arn: arn.to_string(),
                registry_id: r.registry_id().unwrap_or_default().to_string(),
                tags,
                tag_mutability: r.image_tag_mutability().map(|m| m.as_str().to_string()),
                scan_on_push: r.image_scanning_configuration().map(|c| c.scan_on_push()),
            });
        }
        Ok(repositories)
    }

    async fn images(&self, repository: &str) -> Result<Vec<RepoImage>, AwsError> {
        // Without a filter DescribeImages lists only ACTIVE images; archived
        // ones count towards storage and can expire, so ask for every status.
        let details: Vec<aws_sdk_ecr::types::ImageDetail> = self
            .client
            .describe_images()
            .repository_name(repository)
            .filter(DescribeImagesFilter::builder().image_status(ImageStatusFilter::Any).build())
            .max_results(DESCRIBE_IMAGES_PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("DescribeImages", e))?;
        Ok(details
            .iter()
            .filter_map(|d| {
                Some(RepoImage {
                    digest: d.image_digest()?.to_string(),
                    tags: d.image_tags().to_vec(),
                    pushed_at: d.image_pushed_at().map_or(0, |t| t.secs()),
                    last_pulled_at: d.last_recorded_pull_time().map(|t| t.secs()),
                    size_bytes: d.image_size_in_bytes(),
                    media_type: d.image_manifest_media_type().map(String::from),
                    artifact_type: d.artifact_media_type().map(String::from),
                    subject: d.subject_manifest_digest().map(String::from),
                    storage_class: storage_class_of(d.image_status()),
                    archived_at: d.last_archived_at().map(|t| t.secs()),
                    activated_at: d.last_activated_at().map(|t| t.secs()),
                })
            })
            .collect())
    }

    async fn index_children(
        &self,
        repository: &str,
        indexes: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
        let mut children = BTreeMap::new();
        for batch in indexes.chunks(BATCH_IMAGES) {
            let output = self
                .client
                .batch_get_image()
                .repository_name(repository)
                .set_image_ids(Some(batch.iter().map(|d| ImageIdentifier::builder().image_digest(d).build()).collect()))
                .set_accepted_media_types(Some([OCI_INDEX, DOCKER_MANIFEST_LIST].map(String::from).to_vec()))
                .send()
                .await
                .map_err(|e| classify("BatchGetImage", e))?;
            // An index we cannot read would leave its children unprotected:
            // that is an error, not a skip. One gone since the listing is gone.
            if let Some(f) =
                output.failures().iter().find(|f| f.failure_code().is_none_or(|c| c.as_str() != "ImageNotFound"))
            {
                let digest = f.image_id().and_then(|i| i.image_digest()).unwrap_or_default();
                return Err(AwsError::unexpected(
                    "BatchGetImage",
                    format!(
                        "{repository}@{digest} could not be read ({}: {}); its children cannot be protected",
                        f.failure_code().map(|c| c.as_str()).unwrap_or("unknown"),
                        f.failure_reason().unwrap_or_default()
                    ),
                ));
            }
            for image in output.images() {
                let Some(digest) = image.image_id().and_then(|i| i.image_digest()) else { continue };
                let index: ImageIndex =
                    serde_json::from_str(image.image_manifest().unwrap_or_default()).map_err(|e| {
                        AwsError::unexpected(
                            "BatchGetImage",
                            format!("{repository}@{digest}: invalid image index: {e}"),
                        )
                    })?;
                let kids = index.manifests().iter().map(|m| m.digest().to_string()).collect();
                children.insert(digest.to_string(), kids);
            }
        }
        Ok(children)
    }

    async fn manifest_layers(&self, repository: &str, digests: &[String]) -> Result<Vec<(String, u64)>, AwsError> {
        let mut layers = Vec::new();
        for batch in digests.chunks(BATCH_IMAGES) {
            let output = self
                .client
                .batch_get_image()
                .repository_name(repository)
                .set_image_ids(Some(batch.iter().map(|d| ImageIdentifier::builder().image_digest(d).build()).collect()))
                .set_accepted_media_types(Some([OCI_MANIFEST, DOCKER_MANIFEST].map(String::from).to_vec()))
                .send()
                .await
                .map_err(|e| classify("BatchGetImage", e))?;
            for image in output.images() {
                let manifest: serde_json::Value =
                    serde_json::from_str(image.image_manifest().unwrap_or_default()).unwrap_or_default();
                let blobs =
                    manifest["layers"].as_array().into_iter().flatten().chain(std::iter::once(&manifest["config"]));
                layers.extend(blobs.filter_map(|l| Some((l["digest"].as_str()?.to_string(), l["size"].as_u64()?))));
            }
        }
        Ok(layers)
    }

    async fn delete(&self, repository: &str, digests: &[String]) -> Result<Deleted, AwsError> {
        let mut result = Deleted::default();
        for batch in digests.chunks(BATCH_IMAGES) {
            let output = self
                .client
                .batch_delete_image()
                .repository_name(repository)
                .set_image_ids(Some(batch.iter().map(|d| ImageIdentifier::builder().image_digest(d).build()).collect()))
                .send()
                .await
                .map_err(|e| classify("BatchDeleteImage", e))?;
            let mut failed = std::collections::BTreeSet::new();
            for f in output.failures() {
                let Some(digest) = f.image_id().and_then(|i| i.image_digest()) else { continue };
                failed.insert(digest.to_string());
                let code = f.failure_code().map(|c| c.as_str().to_string()).unwrap_or_default();
                result.failures.push((digest.to_string(), code, f.failure_reason().unwrap_or_default().to_string()));
            }
            // What was asked and not reported failed is gone (real ECR lists it
            // in imageIds; moto leaves imageIds empty for untagged images).
            result.deleted.extend(batch.iter().filter(|d| !failed.contains(*d)).cloned());
        }
        Ok(result)
    }

    async fn update_storage_class(
        &self,
        repository: &str,
        digest: &str,
        target: StorageClass,
    ) -> Result<StorageClass, AwsError> {
        let target = match target {
            StorageClass::Standard => TargetStorageClass::Standard,
            StorageClass::Archive => TargetStorageClass::Archive,
            StorageClass::Activating => {
                return Err(AwsError::unexpected(
                    "UpdateImageStorageClass",
                    format!("{repository}@{digest}: activating is a state, not a storage class to move to"),
                ))
            }
        };
        let output = self
            .client
            .update_image_storage_class()
            .repository_name(repository)
            .image_id(ImageIdentifier::builder().image_digest(digest).build())
            .target_storage_class(target.clone())
            .send()
            .await
            .map_err(|e| classify("UpdateImageStorageClass", e))?;
        // The answer names the image's status after the call; none at all is
        // read as the class asked for.
        Ok(match output.image_status() {
            Some(status) => storage_class_of(Some(status)),
            None if target == TargetStorageClass::Archive => StorageClass::Archive,
            None => StorageClass::Standard,
        })
    }

    async fn referrers(
        &self,
        repository: &str,
        subjects: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
        let mut found = BTreeMap::new();
        for subject in subjects {
            let id = aws_sdk_ecr::types::SubjectIdentifier::builder()
                .image_digest(subject)
                .build()
                .map_err(|e| AwsError::unexpected("ListImageReferrers", e.to_string()))?;
            // Archived referrers too: they are deleted with their subject as well.
            let filter = aws_sdk_ecr::types::ListImageReferrersFilter::builder()
                .artifact_status(aws_sdk_ecr::types::ArtifactStatusFilter::Any)
                .build();
            let mut token: Option<String> = None;
            let mut digests: Vec<String> = Vec::new();
            loop {
                let result = self
                    .client
                    .list_image_referrers()
                    .repository_name(repository)
                    .subject_id(id.clone())
                    .filter(filter.clone())
                    .set_next_token(token.take())
                    .send()
                    .await;
                let output = match result {
                    Ok(output) => output,
                    Err(e) => {
                        let error = classify("ListImageReferrers", e);
                        // the subject went away since DescribeImages: no referrers to keep for it
                        if error.code_is("ImageNotFoundException") {
                            break;
                        }
                        return Err(error);
                    }
                };
                digests.extend(output.referrers().iter().map(|r| r.digest().to_string()));
                match output.next_token() {
                    Some(next) if !next.is_empty() => token = Some(next.to_string()),
                    _ => break,
                }
            }
            if !digests.is_empty() {
                found.insert(subject.clone(), digests);
            }
        }
        Ok(found)
    }
}

/// Where `imageStatus` puts an image. No status (older APIs, the emulator) is
/// standard; one this SDK does not know is treated as in flux, so no rule
/// acts on it.
fn storage_class_of(status: Option<&ImageStatus>) -> StorageClass {
    match status {
        None | Some(ImageStatus::Active) => StorageClass::Standard,
        Some(ImageStatus::Archived) => StorageClass::Archive,
        Some(_) => StorageClass::Activating,
    }
}

impl EcrAdapter {
    /// DescribeImages for one image id; "not found" (image or repository) is `None`.
    async fn describe_one(&self, repository: &str, id: ImageIdentifier) -> Result<Option<(String, Image)>, AwsError> {
        let result = self.client.describe_images().repository_name(repository).image_ids(id).send().await;
        let output = match result {
            Ok(output) => output,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_image_not_found_exception() || s.is_repository_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(classify("DescribeImages", e)),
        };
        Ok(output.image_details().first().and_then(|d| {
            let image = Image {
                digest: d.image_digest()?.to_string(),
                tags: d.image_tags().to_vec(),
                pushed_at: d.image_pushed_at().map_or(0, |t| t.secs()),
                size_bytes: d.image_size_in_bytes(),
                manifest_media_type: d.image_manifest_media_type().map(String::from),
                registry_id: d.registry_id().map(String::from),
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

/// What a manifest is: an index with its platforms, or a single manifest
/// with its config descriptor and OCI `artifactType`.
pub fn manifest_of(media_type: Option<&str>, manifest: &str) -> Result<Manifest, String> {
    if let Some(platforms) = platforms_of(media_type, manifest)? {
        return Ok(Manifest::Index { platforms });
    }
    let value: serde_json::Value = serde_json::from_str(manifest).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let config = &value["config"];
    let text = |v: &serde_json::Value| v.as_str().map(String::from);
    Ok(Manifest::Single {
        config_media_type: text(&config["mediaType"]).unwrap_or_default(),
        config_digest: text(&config["digest"]).unwrap_or_default(),
        config_size: config["size"].as_u64(),
        artifact_type: text(&value["artifactType"]),
    })
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

    /// GetLifecyclePolicy answers a repository without a policy with
    /// `LifecyclePolicyNotFoundException` (ECR API reference): that is "no
    /// policy", not a failure. Another error stays an error.
    #[tokio::test]
    async fn no_native_policy_is_none_and_other_errors_stay_errors() {
        let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#;
        let answers = mock!(Client::get_lifecycle_policy)
            .sequence()
            .http_status(
                400,
                Some(
                    r#"{"__type":"LifecyclePolicyNotFoundException","message":"Lifecycle policy does not exist"}"#
                        .into(),
                ),
            )
            .output(move || {
                aws_sdk_ecr::operation::get_lifecycle_policy::GetLifecyclePolicyOutput::builder()
                    .repository_name("users")
                    .lifecycle_policy_text(policy)
                    .build()
            })
            .http_status(400, Some(r#"{"__type":"AccessDeniedException","message":"not authorized"}"#.into()))
            .build();
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&answers]));
        assert_eq!(ecr.lifecycle_policy("users").await.expect("no policy is not an error"), None);
        assert_eq!(ecr.lifecycle_policy("users").await.expect("a policy").as_deref(), Some(policy));
        let denied = ecr.lifecycle_policy("users").await.expect_err("denied");
        assert!(denied.code_is("AccessDeniedException"), "{denied}");
        assert_eq!(denied.operation, "GetLifecyclePolicy");
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
    async fn describe_images_pages_a_thousand_at_a_time() {
        use aws_sdk_ecr::operation::describe_images::DescribeImagesOutput;
        use aws_sdk_ecr::types::ImageDetail;
        let page = |from: usize, to: usize, next: Option<&str>| {
            let details: Vec<ImageDetail> = (from..to)
                .map(|i| {
                    ImageDetail::builder().image_digest(format!("sha256:{i:064x}")).image_size_in_bytes(10).build()
                })
                .collect();
            DescribeImagesOutput::builder()
                .set_image_details(Some(details))
                .set_next_token(next.map(String::from))
                .build()
        };
        let rule = mock!(Client::describe_images)
            .match_requests(|r| r.max_results() == Some(DESCRIBE_IMAGES_PAGE))
            .sequence()
            .output(move || page(0, 1000, Some("2")))
            .output(move || page(1000, 2000, Some("3")))
            .output(move || page(2000, 2500, None))
            .build();
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&rule]));
        let images = ecr.images("users").await.expect("paged");
        assert_eq!(images.len(), 2500);
        assert_eq!(rule.num_calls(), 3, "ceil(2500 / 1000) calls");
    }

    #[tokio::test]
    async fn batch_delete_reports_partial_failures_per_image_and_retries_throttling() {
        use aws_sdk_ecr::operation::batch_delete_image::BatchDeleteImageOutput;
        use aws_sdk_ecr::types::{ImageFailure, ImageFailureCode};
        let digests: Vec<String> = (0..150).map(|i| format!("sha256:{i:064x}")).collect();
        let referenced = digests[3].clone();
        let rule = mock!(Client::batch_delete_image)
            .match_requests(|r| r.image_ids().len() <= BATCH_IMAGES)
            .sequence()
            .http_status(400, Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()))
            .output(move || {
                BatchDeleteImageOutput::builder()
                    .failures(
                        ImageFailure::builder()
                            .image_id(ImageIdentifier::builder().image_digest(referenced.clone()).build())
                            .failure_code(ImageFailureCode::ImageReferencedByManifestList)
                            .failure_reason("referenced by an index")
                            .build(),
                    )
                    .build()
            })
            .output(|| BatchDeleteImageOutput::builder().build())
            .build();
        let client = mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&rule], |b| {
            b.retry_config(aws_sdk_ecr::config::retry::RetryConfig::standard().with_max_attempts(3))
        });
        let result = EcrAdapter::from_client(client).delete("users", &digests).await.expect("deleted");
        assert_eq!(rule.num_calls(), 3, "a throttled first batch, its retry, the second batch");
        assert_eq!(result.deleted.len(), 149);
        assert_eq!(result.failures.len(), 1);
        assert_eq!(result.failures[0].1, "ImageReferencedByManifestList");
    }

    #[tokio::test]
    async fn a_thousand_repositories_across_pages_without_tag_reads() {
        use aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesOutput;
        use aws_sdk_ecr::types::Repository as SdkRepository;
        let page = |from: usize, to: usize, next: Option<&str>| {
            let repositories: Vec<SdkRepository> = (from..to)
                .map(|i| {
                    SdkRepository::builder()
                        .repository_name(format!("repo-{i}"))
                        .repository_arn(format!("arn:aws:ecr:us-east-1:123456789012:repository/repo-{i}"))
                        .registry_id("123456789012")
                        .build()
                })
                .collect();
            DescribeRepositoriesOutput::builder()
                .set_repositories(Some(repositories))
                .set_next_token(next.map(String::from))
                .build()
        };
        let pages = mock!(Client::describe_repositories)
            .sequence()
            .output(move || page(0, 400, Some("2")))
            .output(move || page(400, 800, Some("3")))
            .output(move || page(800, 1000, None))
            .build();
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&pages]));
        let repositories = ecr.repositories(&[], false).await.expect("listed");
        assert_eq!(repositories.len(), 1000);
        assert_eq!(repositories[999].name, "repo-999");
        assert_eq!(pages.num_calls(), 3, "one call per page and no ListTagsForResource");
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
        let manifest = ecr.manifest("users", D).await.expect("read");
        assert_eq!(
            manifest,
            Manifest::Index { platforms: vec![Platform { os: "linux".into(), architecture: "amd64".into() }] }
        );
        assert_eq!(rule.num_calls(), 1);
    }

    /// moto 5.2.5 ignores DescribeImages' filter and knows no image status
    /// (the test launcher in `tests/emulator` adds both for end-to-end runs);
    /// here, the filter we send and every status ECR can answer, including
    /// ACTIVATING, which the emulator only reaches by a test hook.
    #[tokio::test]
    async fn describe_images_asks_for_archived_images_too() {
        use aws_sdk_ecr::operation::describe_images::DescribeImagesOutput;
        use aws_sdk_ecr::primitives::DateTime;
        use aws_sdk_ecr::types::ImageDetail;
        let rule = mock!(Client::describe_images)
            .match_requests(|r| r.filter().and_then(|f| f.image_status()) == Some(&ImageStatusFilter::Any))
            .then_output(|| {
                DescribeImagesOutput::builder()
                    .image_details(
                        ImageDetail::builder().image_digest("sha256:a").image_status(ImageStatus::Active).build(),
                    )
                    .image_details(
                        ImageDetail::builder()
                            .image_digest("sha256:b")
                            .image_status(ImageStatus::Archived)
                            .last_archived_at(DateTime::from_secs(1_700_000_000))
                            .build(),
                    )
                    .image_details(
                        ImageDetail::builder()
                            .image_digest("sha256:c")
                            .image_status(ImageStatus::Activating)
                            .last_activated_at(DateTime::from_secs(1_700_000_500))
                            .build(),
                    )
                    .image_details(ImageDetail::builder().image_digest("sha256:d").build())
                    .build()
            });
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&rule]));
        let images = ecr.images("users").await.expect("listed");
        let classes: Vec<(&str, StorageClass, Option<i64>, Option<i64>)> =
            images.iter().map(|i| (i.digest.as_str(), i.storage_class, i.archived_at, i.activated_at)).collect();
        assert_eq!(
            classes,
            [
                ("sha256:a", StorageClass::Standard, None, None),
                ("sha256:b", StorageClass::Archive, Some(1_700_000_000), None),
                ("sha256:c", StorageClass::Activating, None, Some(1_700_000_500)),
                ("sha256:d", StorageClass::Standard, None, None),
            ]
        );
        assert_eq!(rule.num_calls(), 1);
    }

    /// moto 5.2.5 has no UpdateImageStorageClass (the test launcher in
    /// `tests/emulator` adds the happy path); the request's shape, the
    /// answer and ECR's refusals (which the emulator never sends) are checked
    /// against the SDK client here.
    #[tokio::test]
    async fn update_storage_class_archives_one_image_and_names_refusals() {
        use aws_sdk_ecr::operation::update_image_storage_class::UpdateImageStorageClassOutput;
        let archived = mock!(Client::update_image_storage_class)
            .match_requests(|r| {
                r.repository_name() == Some("users")
                    && r.image_id().and_then(|i| i.image_digest()) == Some(D)
                    && r.target_storage_class() == Some(&TargetStorageClass::Archive)
            })
            .then_output(|| {
                UpdateImageStorageClassOutput::builder()
                    .repository_name("users")
                    .image_id(ImageIdentifier::builder().image_digest(D).build())
                    .image_status(ImageStatus::Archived)
                    .build()
            });
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&archived]));
        assert_eq!(
            ecr.update_storage_class("users", D, StorageClass::Archive).await.expect("archived"),
            StorageClass::Archive
        );
        assert_eq!(archived.num_calls(), 1);

        let restoring = mock!(Client::update_image_storage_class)
            .match_requests(|r| r.target_storage_class() == Some(&TargetStorageClass::Standard))
            .then_output(|| UpdateImageStorageClassOutput::builder().image_status(ImageStatus::Activating).build());
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&restoring]));
        assert_eq!(
            ecr.update_storage_class("users", D, StorageClass::Standard).await.expect("restoring"),
            StorageClass::Activating
        );

        // refusals as ECR sends them, through the SDK's own deserializer
        let refused = mock!(Client::update_image_storage_class)
            .sequence()
            .http_status(
                400,
                Some(r#"{"__type":"ImageStorageClassUpdateNotSupportedException","message":"image is referenced by a manifest list"}"#.into()),
            )
            .http_status(400, Some(r#"{"__type":"ImageNotFoundException","message":"gone"}"#.into()))
            .build();
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&refused]));
        let first = ecr.update_storage_class("users", D, StorageClass::Archive).await.expect_err("refused");
        assert_eq!(first.operation, "UpdateImageStorageClass");
        assert!(first.code_is("ImageStorageClassUpdateNotSupportedException"), "{first}");
        assert!(!first.retryable);
        let second = ecr.update_storage_class("users", D, StorageClass::Archive).await.expect_err("gone");
        assert!(second.code_is("ImageNotFoundException"), "{second}");
        assert_eq!(refused.num_calls(), 2);

        // "activating" is not a target: refused before any call
        let none =
            mock!(Client::update_image_storage_class).then_output(|| UpdateImageStorageClassOutput::builder().build());
        let ecr = EcrAdapter::from_client(mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&none]));
        assert!(ecr.update_storage_class("users", D, StorageClass::Activating).await.is_err());
        assert_eq!(none.num_calls(), 0);
    }

    #[tokio::test]
    async fn update_storage_class_retries_throttling() {
        use aws_sdk_ecr::operation::update_image_storage_class::UpdateImageStorageClassOutput;
        let rule = mock!(Client::update_image_storage_class)
            .sequence()
            .http_status(400, Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()))
            .output(|| UpdateImageStorageClassOutput::builder().image_status(ImageStatus::Archived).build())
            .build();
        let client = mock_client!(aws_sdk_ecr, RuleMode::Sequential, [&rule], |b| {
            b.retry_config(aws_sdk_ecr::config::retry::RetryConfig::standard().with_max_attempts(3))
        });
        let archived = EcrAdapter::from_client(client).update_storage_class("users", D, StorageClass::Archive).await;
        assert_eq!(archived.expect("archived after a retry"), StorageClass::Archive);
        assert_eq!(rule.num_calls(), 2);
    }
}
