//! A tutorial-like world on moto: the "break the monolith" cluster with its
//! `users`, `threads` and `posts` services, each logging with `awslogs` to a
//! group that does not exist yet. `threads` also runs an Envoy sidecar that
//! logs to a second group.

use std::collections::HashMap;

use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_ecr::Client as EcrClient;
use aws_sdk_ecs::types::{
    ContainerDefinition, CpuArchitecture, LogConfiguration, LogDriver, OsFamily, RuntimePlatform, Tag,
};
use aws_sdk_ecs::Client as EcsClient;
use sha2::{Digest, Sha256};

use crate::{moto, ACCOUNT, REGION};

pub const CLUSTER: &str = "microservices";
pub const SERVICES: [&str; 3] = ["users", "threads", "posts"];

/// The tutorial's services and the log groups their task definitions name.
pub fn tutorial_groups() -> Vec<&'static str> {
    vec!["/ecs/posts", "/ecs/threads", "/ecs/threads-envoy", "/ecs/users"]
}

pub struct World {
    pub ecs: EcsClient,
    pub logs: LogsClient,
    pub ecr: EcrClient,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A pushed manifest: its digest (sha256 of its bytes, as ECR computes it),
/// size and platform.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub digest: String,
    pub size: usize,
    pub architecture: String,
}

/// A log group as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub retention_days: Option<i32>,
    pub kms_key_id: Option<String>,
    pub tags: HashMap<String, String>,
}

pub fn image(repository: &str, tag: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}:{tag}")
}

impl World {
    pub async fn new() -> World {
        let sdk = moto().sdk_config().await;
        World { ecs: EcsClient::new(&sdk), logs: LogsClient::new(&sdk), ecr: EcrClient::new(&sdk) }
    }

    /// The cluster, the three services and their task definitions.
    pub async fn tutorial(&self) {
        self.cluster(CLUSTER).await;
        for service in SERVICES {
            let mut containers = vec![(service, format!("/ecs/{service}"))];
            if service == "threads" {
                containers.push(("envoy", "/ecs/threads-envoy".to_string()));
            }
            let containers: Vec<(&str, &str)> = containers.iter().map(|(c, g)| (*c, g.as_str())).collect();
            let arn = self.task_definition(service, &containers).await;
            self.service(CLUSTER, service, &arn).await;
        }
    }

    pub async fn cluster(&self, name: &str) {
        self.ecs.create_cluster().cluster_name(name).send().await.expect("create_cluster");
    }

    /// Registers `family` with one container per `(name, awslogs-group)`; an
    /// empty group name means a container without a log configuration.
    pub async fn task_definition(&self, family: &str, containers: &[(&str, &str)]) -> String {
        self.task_definition_logging_to(family, containers, REGION).await
    }

    /// Like [`World::task_definition`], with `awslogs-region` set to `log_region`.
    pub async fn task_definition_logging_to(
        &self,
        family: &str,
        containers: &[(&str, &str)],
        log_region: &str,
    ) -> String {
        self.register(family, family, containers, log_region).await
    }

    /// Like [`World::task_definition`], with the app containers running `repository:latest`.
    pub async fn task_definition_of(&self, family: &str, repository: &str, containers: &[(&str, &str)]) -> String {
        self.register(family, repository, containers, REGION).await
    }

    async fn register(&self, family: &str, repository: &str, containers: &[(&str, &str)], log_region: &str) -> String {
        let definitions = containers.iter().map(|(name, group)| {
            let mut c = ContainerDefinition::builder()
                .name(*name)
                .image(if *name == "envoy" {
                    "public.ecr.aws/appmesh/aws-appmesh-envoy:v1.29.12.1-prod".to_string()
                } else {
                    image(repository, "latest")
                })
                .essential(*name != "envoy");
            if !group.is_empty() {
                c = c.log_configuration(
                    LogConfiguration::builder()
                        .log_driver(LogDriver::Awslogs)
                        .options("awslogs-group", *group)
                        .options("awslogs-region", log_region)
                        .options("awslogs-stream-prefix", "ecs")
                        .build()
                        .expect("log configuration"),
                );
            }
            c.build()
        });
        let output = self
            .ecs
            .register_task_definition()
            .family(family)
            .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
            .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .runtime_platform(
                RuntimePlatform::builder()
                    .cpu_architecture(CpuArchitecture::Arm64)
                    .operating_system_family(OsFamily::Linux)
                    .build(),
            )
            .set_container_definitions(Some(definitions.collect()))
            .send()
            .await
            .expect("register_task_definition");
        output.task_definition().and_then(|t| t.task_definition_arn()).expect("task definition ARN").to_string()
    }

    /// A one-container task definition running exactly `image`.
    pub async fn task_definition_running(&self, family: &str, image: &str) -> String {
        let output = self
            .ecs
            .register_task_definition()
            .family(family)
            .container_definitions(ContainerDefinition::builder().name(family).image(image).memory(512).build())
            .send()
            .await
            .expect("register_task_definition");
        output.task_definition().and_then(|t| t.task_definition_arn()).expect("task definition ARN").to_string()
    }

    pub async fn service(&self, cluster: &str, name: &str, task_definition: &str) {
        self.ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(task_definition)
            .desired_count(1)
            .tags(Tag::builder().key("team").value("platform").build())
            .send()
            .await
            .expect("create_service");
    }

    pub async fn service_tagged(&self, cluster: &str, name: &str, task_definition: &str, tags: &[(&str, &str)]) {
        self.ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(task_definition)
            .desired_count(1)
            .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect()))
            .send()
            .await
            .expect("create_service");
    }

    /// A service scaled to zero (desiredCount 0): it runs no task, yet the
    /// revision ECS recorded pins its image, and a scale-up starts from it.
    pub async fn service_scaled_to_zero(&self, cluster: &str, name: &str, task_definition: &str) {
        self.ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(task_definition)
            .desired_count(0)
            .send()
            .await
            .expect("create_service");
    }

    /// Puts a native ECR lifecycle policy on a repository (ECR applies it on
    /// its own; moto stores and validates it, never applies it).
    pub async fn native_lifecycle_policy(&self, repository: &str, policy: &str) {
        self.ecr
            .put_lifecycle_policy()
            .repository_name(repository)
            .lifecycle_policy_text(policy)
            .send()
            .await
            .expect("put_lifecycle_policy");
    }

    /// A service with the given deployment controller (`ECS`, `CODE_DEPLOY`,
    /// `EXTERNAL`). EXTERNAL services take no task definition: pass `None`
    /// and add task sets.
    pub async fn service_with_controller(
        &self,
        cluster: &str,
        name: &str,
        task_definition: Option<&str>,
        controller: aws_sdk_ecs::types::DeploymentControllerType,
    ) {
        self.ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .set_task_definition(task_definition.map(String::from))
            .desired_count(1)
            .deployment_controller(
                aws_sdk_ecs::types::DeploymentController::builder().r#type(controller).build().expect("controller"),
            )
            .send()
            .await
            .expect("create_service");
    }

    /// The task definition a service runs now, as moto stores it.
    pub async fn service_task_definition(&self, cluster: &str, service: &str) -> String {
        let out = self.ecs.describe_services().cluster(cluster).services(service).send().await.expect("describe");
        out.services()[0].task_definition().expect("task definition").to_string()
    }

    pub async fn describe_task_definition(&self, td: &str) -> (aws_sdk_ecs::types::TaskDefinition, Vec<Tag>) {
        let out = self
            .ecs
            .describe_task_definition()
            .task_definition(td)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await
            .expect("describe_task_definition");
        (out.task_definition.expect("task definition"), out.tags.unwrap_or_default())
    }

    /// Every revision ARN of a family.
    pub async fn revisions(&self, family: &str) -> Vec<String> {
        let out = self.ecs.list_task_definitions().family_prefix(family).send().await.expect("list");
        out.task_definition_arns().iter().filter(|a| a.contains(&format!("/{family}:"))).cloned().collect()
    }

    pub async fn repository(&self, name: &str) {
        self.ecr.create_repository().repository_name(name).send().await.expect("create_repository");
    }

    async fn put(&self, repository: &str, manifest: &str, media_type: &str, tag: Option<&str>) -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(manifest.as_bytes())));
        self.ecr
            .put_image()
            .repository_name(repository)
            .image_manifest(manifest)
            .image_manifest_media_type(media_type)
            .image_digest(&digest)
            .set_image_tag(tag.map(String::from))
            .send()
            .await
            .expect("put_image");
        digest
    }

    /// Pushes a single-platform image with a layer of its own, tagged `tags`.
    pub async fn push_image(&self, repository: &str, tags: &[&str], architecture: &str, seed: &str) -> Pushed {
        let layer = format!("sha256:{}", hex::encode(Sha256::digest(format!("{repository}/{seed}").as_bytes())));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1469,
                       "digest": format!("sha256:{}", hex::encode(Sha256::digest(format!("config/{seed}/{architecture}").as_bytes())))},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 3_208_942, "digest": layer}],
        })
        .to_string();
        let mut digest = String::new();
        for (i, tag) in tags.iter().enumerate() {
            let pushed = self.put(repository, &manifest, OCI_MANIFEST, Some(tag)).await;
            if i == 0 {
                digest = pushed;
            }
        }
        if tags.is_empty() {
            digest = self.put(repository, &manifest, OCI_MANIFEST, None).await;
        }
        Pushed { digest, size: manifest.len(), architecture: architecture.into() }
    }

    /// Pushes a single-platform image whose config blob is real: a JSON image
    /// config naming `architecture` and `os`, registered with the local AWS so
    /// `GetDownloadUrlForLayer` serves it. Tagged `tags` (none: untagged).
    pub async fn push_image_with_config(
        &self,
        repository: &str,
        tags: &[&str],
        architecture: &str,
        os: &str,
        seed: &str,
    ) -> Pushed {
        let layer = format!("sha256:{}", hex::encode(Sha256::digest(format!("{repository}/{seed}/layer").as_bytes())));
        let config = serde_json::json!({
            "architecture": architecture,
            "os": os,
            "config": {"Env": [format!("SEED={seed}")]},
            "rootfs": {"type": "layers", "diff_ids": [layer]},
        })
        .to_string();
        let config_digest = moto().put_blob(repository, config.as_bytes());
        self.push_manifest(repository, tags, OCI_CONFIG, &config_digest, config.len(), &layer, architecture).await
    }

    /// Pushes an OCI artifact (a signature, an SBOM, ...) whose `subject` is
    /// `subject`, untagged, as cosign and oras do with the referrers API.
    /// Returns its digest.
    pub async fn push_referrer(&self, repository: &str, subject: &Pushed, artifact_type: &str, seed: &str) -> String {
        let mut manifest = artifact_manifest(repository, seed);
        manifest["artifactType"] = artifact_type.into();
        manifest["subject"] =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.size});
        self.put(repository, &manifest.to_string(), OCI_MANIFEST, None).await
    }

    /// Pushes an OCI artifact that refers to nothing (a Helm chart, say),
    /// untagged, its config of media type `config_type`. Returns its digest.
    pub async fn push_artifact(&self, repository: &str, config_type: &str, seed: &str) -> String {
        let mut manifest = artifact_manifest(repository, seed);
        manifest["config"]["mediaType"] = config_type.into();
        self.put(repository, &manifest.to_string(), OCI_MANIFEST, None).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_manifest(
        &self,
        repository: &str,
        tags: &[&str],
        config_media_type: &str,
        config_digest: &str,
        config_size: usize,
        layer: &str,
        architecture: &str,
    ) -> Pushed {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_media_type, "size": config_size, "digest": config_digest},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 3_208_942, "digest": layer}],
        })
        .to_string();
        let mut digest = String::new();
        for tag in tags {
            digest = self.put(repository, &manifest, OCI_MANIFEST, Some(tag)).await;
        }
        if tags.is_empty() {
            digest = self.put(repository, &manifest, OCI_MANIFEST, None).await;
        }
        Pushed { digest, size: manifest.len(), architecture: architecture.into() }
    }

    /// Pushes an image index over `children`, as buildx does, tagged `tag`.
    pub async fn push_index(&self, repository: &str, tag: &str, children: &[Pushed]) -> String {
        let manifests: Vec<serde_json::Value> = children
            .iter()
            .map(|c| {
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": c.digest, "size": c.size,
                                         "platform": {"architecture": c.architecture, "os": "linux"}})
            })
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).to_string();
        self.put(repository, &index, OCI_INDEX, Some(tag)).await
    }

    pub async fn create_log_group(&self, name: &str, retention_days: Option<i32>, tags: &[(&str, &str)]) {
        let tags: HashMap<String, String> = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.logs
            .create_log_group()
            .log_group_name(name)
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .expect("create_log_group");
        if let Some(days) = retention_days {
            self.logs
                .put_retention_policy()
                .log_group_name(name)
                .retention_in_days(days)
                .send()
                .await
                .expect("put_retention_policy");
        }
    }

    /// Every log group name, sorted.
    pub async fn log_group_names(&self) -> Vec<String> {
        let groups: Vec<_> = self
            .logs
            .describe_log_groups()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .expect("describe_log_groups");
        let mut names: Vec<String> = groups.iter().filter_map(|g| g.log_group_name().map(String::from)).collect();
        names.sort();
        names
    }

    pub async fn log_group(&self, name: &str) -> Option<GroupView> {
        let groups =
            self.logs.describe_log_groups().log_group_name_prefix(name).send().await.expect("describe_log_groups");
        let group = groups.log_groups().iter().find(|g| g.log_group_name() == Some(name))?.clone();
        let arn = group.log_group_arn().map(String::from).unwrap_or_default();
        let tags = self
            .logs
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .expect("list_tags_for_resource")
            .tags
            .unwrap_or_default();
        Some(GroupView {
            retention_days: group.retention_in_days(),
            kms_key_id: group.kms_key_id().map(String::from),
            tags,
        })
    }

    /// Every image of `repository`: digest → tags (for the demo's prune table).
    pub async fn image_tags(&self, repository: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let images = self.ecr.describe_images().repository_name(repository).send().await.expect("describe_images");
        images
            .image_details()
            .iter()
            .filter_map(|i| Some((i.image_digest()?.to_string(), i.image_tags().to_vec())))
            .collect()
    }
}

/// An OCI artifact manifest with an empty config and one layer, unique to
/// `repository` and `seed`.
fn artifact_manifest(repository: &str, seed: &str) -> serde_json::Value {
    let blob = format!("sha256:{}", hex::encode(Sha256::digest(format!("{repository}/{seed}/blob").as_bytes())));
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [{"mediaType": "application/octet-stream", "size": 512, "digest": blob}],
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    })
}
