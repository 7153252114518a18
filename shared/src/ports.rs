//! Ports: the small traits the handlers talk to. Our own types in and out, so
//! handlers run unchanged against AWS (the adapters in [`crate::aws`]) or
//! against the in-memory fakes in `fakes` (feature `test-support`).

use async_trait::async_trait;

use std::collections::BTreeMap;

use crate::lifecycle::StorageClass;
use crate::model::{Image, LogGroup, Manifest, RunningTask, Service, Tags, TaskDefinition};
use crate::prune::RepoImage;
use crate::AwsError;

/// Read-only ECS: the clusters, services and task definitions in use.
#[async_trait]
pub trait EcsRead: Send + Sync {
    /// Every cluster ARN in the account and region.
    async fn list_clusters(&self) -> Result<Vec<String>, AwsError>;

    /// Every service ARN in `cluster` (a name or an ARN).
    async fn list_services(&self, cluster: &str) -> Result<Vec<String>, AwsError>;

    /// The named services with their tags. Services that do not exist are left
    /// out rather than failing the call.
    async fn describe_services(&self, cluster: &str, services: &[String]) -> Result<Vec<Service>, AwsError>;

    /// The tasks running in `cluster`, with the digests their containers run.
    async fn running_tasks(&self, cluster: &str) -> Result<Vec<RunningTask>, AwsError>;

    /// One task definition, by ARN or `family[:revision]`.
    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinition, AwsError>;
}

/// Whether CreateLogGroup made the group or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

/// CloudWatch Logs log groups.
#[async_trait]
pub trait LogGroupStore: Send + Sync {
    /// The group with exactly this name, with its tags, if it exists.
    async fn find(&self, name: &str) -> Result<Option<LogGroup>, AwsError>;

    /// Creates the group. "Already exists" is not an error: it is [`Created::AlreadyExisted`].
    async fn create(&self, name: &str, tags: &Tags, kms_key_id: Option<&str>) -> Result<Created, AwsError>;

    async fn put_retention(&self, name: &str, days: i32) -> Result<(), AwsError>;

    /// Adds or overwrites these tags on the group with this ARN.
    async fn tag(&self, arn: &str, tags: &Tags) -> Result<(), AwsError>;
}

/// ECS writes deploy-on-push makes.
#[async_trait]
pub trait EcsWrite: Send + Sync {
    /// Registers a new revision that copies every field of `source` that
    /// RegisterTaskDefinition accepts, with the images of the named containers
    /// replaced (`container name → image`) and `tags` added to its tags.
    async fn register_revision(
        &self,
        source: &str,
        images: &BTreeMap<String, String>,
        tags: &Tags,
    ) -> Result<TaskDefinition, AwsError>;

    /// Points the service at `task_definition_arn`.
    async fn update_service(&self, cluster: &str, service: &str, task_definition_arn: &str) -> Result<(), AwsError>;
}

/// ECR reads.
#[async_trait]
pub trait EcrRead: Send + Sync {
    /// The image with this digest, if the repository still has it.
    async fn describe_image(&self, repository: &str, digest: &str) -> Result<Option<Image>, AwsError>;

    /// The image a tag points at now, with the registry (account) it lives in.
    async fn resolve_tag(&self, repository: &str, tag: &str) -> Result<Option<(String, Image)>, AwsError>;

    /// What the manifest of this digest is: an index with its platforms, or a
    /// single manifest with its config descriptor (BatchGetImage, a pull).
    async fn manifest(&self, repository: &str, digest: &str) -> Result<Manifest, AwsError>;

    /// The bytes of a small blob (an image config): GetDownloadUrlForLayer, then
    /// one bounded GET of that URL. `None` when it is larger than `max_bytes`.
    async fn config_blob(&self, repository: &str, digest: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, AwsError>;
}

/// What ECS pinned and where: the reads deploy-on-push's rollback and
/// platform guards and its rollout follow-up need, apart from [`EcsRead`].
#[async_trait]
pub trait ServiceHistory: Send + Sync {
    /// The service's newest deployments (at most 20), newest first, each with
    /// the revision it deploys. Empty for a service that has none recorded.
    async fn service_deployments(
        &self,
        cluster: &str,
        service_arn: &str,
    ) -> Result<Vec<crate::model::ServiceDeployment>, AwsError>;

    /// The task definition of the deployment with this id (`ecs-svc/…`) as
    /// DescribeServices lists it, if it still does.
    async fn deployment_task_definition(
        &self,
        cluster: &str,
        service_arn: &str,
        deployment_id: &str,
    ) -> Result<Option<String>, AwsError>;

    /// `(container, digest)` as DescribeTasks reports them for the service's
    /// running tasks of this task definition.
    async fn task_digests(
        &self,
        cluster: &str,
        service_name: &str,
        task_definition: &str,
    ) -> Result<Vec<(String, String)>, AwsError>;

    /// The `(ecs.os-type, ecs.cpu-architecture)` of each EC2 container
    /// instance registered in the cluster (ListAttributes).
    async fn capacity_platforms(&self, cluster: &str) -> Result<Vec<crate::model::Platform>, AwsError>;
}

/// Where an operator hears about a failed rollout: the alarm topic.
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), AwsError>;
}

/// An ECR repository with its tags and the settings DescribeRepositories
/// reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    pub arn: String,
    pub registry_id: String,
    pub tags: Tags,
    /// `imageTagMutability`: `MUTABLE`, `IMMUTABLE`, or one of their
    /// `_WITH_EXCLUSION` forms.
    pub tag_mutability: Option<String>,
    /// `imageScanningConfiguration.scanOnPush` (the repository's own setting).
    pub scan_on_push: Option<bool>,
}

/// What BatchDeleteImage said, per digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub deleted: Vec<String>,
    /// `(digest, failure code, reason)`.
    pub failures: Vec<(String, String, String)>,
}

/// ECR as prune-images needs it.
#[async_trait]
pub trait Registry: Send + Sync {
    /// The named repositories (every repository when `names` is empty), with
    /// their tags when `with_tags` (one ListTagsForResource each).
    async fn repositories(&self, names: &[String], with_tags: bool) -> Result<Vec<Repository>, AwsError>;

    /// Every image row of a repository (DescribeImages, 1,000 a page).
    async fn images(&self, repository: &str) -> Result<Vec<RepoImage>, AwsError>;

    /// The digests each index references (platform manifests and attestations).
    async fn index_children(
        &self,
        repository: &str,
        indexes: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AwsError>;

    /// The layers (digest, size) of single-platform manifests, read with
    /// BatchGetImage: a pull, which moves their `lastRecordedPullTime`.
    async fn manifest_layers(&self, repository: &str, digests: &[String]) -> Result<Vec<(String, u64)>, AwsError>;

    /// BatchDeleteImage by digest, at most 100 a call.
    async fn delete(&self, repository: &str, digests: &[String]) -> Result<Deleted, AwsError>;

    /// UpdateImageStorageClass: moves one image to `target`
    /// ([`StorageClass::Archive`], or back to [`StorageClass::Standard`]).
    /// Returns where the image is after the call: `Archive`, `Standard`, or
    /// `Activating` while a restore is under way. One image per call (the
    /// API has no batch form); a refusal (`ImageNotFoundException`,
    /// `ImageStorageClassUpdateNotSupportedException`, …) is an error whose
    /// `code` names it.
    async fn update_storage_class(
        &self,
        repository: &str,
        digest: &str,
        target: StorageClass,
    ) -> Result<StorageClass, AwsError>;

    /// ListImageReferrers of each subject: subject digest → the digests of
    /// the artifacts (signatures, SBOMs, attestations) that name it. Subjects
    /// without referrers are left out.
    async fn referrers(&self, repository: &str, subjects: &[String])
        -> Result<BTreeMap<String, Vec<String>>, AwsError>;
}

/// What quota-scan's audit reads of a repository beyond its images.
#[async_trait]
pub trait RepositoryPolicies: Send + Sync {
    /// The native lifecycle policy's text (GetLifecyclePolicy); `None` when
    /// the repository has none (`LifecyclePolicyNotFoundException`).
    async fn lifecycle_policy(&self, repository: &str) -> Result<Option<String>, AwsError>;

    /// The repository's tags (ListTagsForResource).
    async fn repository_tags(&self, arn: &str) -> Result<Tags, AwsError>;
}

/// A container image as ECS recorded it: the reference the task definition
/// names, and the digest ECS resolved it to (when it has).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerImage {
    pub image: String,
    pub digest: Option<String>,
}

/// A service as "in use" needs it. EXTERNAL services may have no task
/// definition of their own: their task sets name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUsage {
    pub arn: String,
    pub name: String,
    pub cluster_arn: String,
    /// `ECS`, `CODE_DEPLOY` or `EXTERNAL`.
    pub controller: String,
    pub task_definition: Option<String>,
    /// Task definitions of the deployments DescribeServices lists (PRIMARY, ACTIVE).
    pub deployment_task_definitions: Vec<String>,
    /// Task definitions of the task sets (CODE_DEPLOY and EXTERNAL services).
    pub task_set_task_definitions: Vec<String>,
    /// The service's tags (`autopilot:deploy`, `autopilot:track`, …).
    pub tags: Tags,
}

/// One row of ListServiceDeployments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentBrief {
    pub arn: String,
    pub status: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub target_revision: Option<String>,
}

/// One DescribeServiceDeployments entry: where it goes, and where from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDeployment {
    pub arn: String,
    pub target_revision: Option<String>,
    pub source_revisions: Vec<String>,
}

/// One DescribeServiceRevisions entry: the digests ECS pinned when the
/// deployment started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRevision {
    pub arn: String,
    pub task_definition: Option<String>,
    pub images: Vec<ContainerImage>,
}

/// A task whose desired status is RUNNING or PENDING.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUsage {
    pub arn: String,
    pub task_definition: String,
    pub images: Vec<ContainerImage>,
}

/// ECS read as "in use" needs it, in one region.
#[async_trait]
pub trait EcsUsage: Send + Sync {
    async fn clusters(&self) -> Result<Vec<String>, AwsError>;
    /// ListServices and DescribeServices (task sets included) of one cluster.
    async fn services(&self, cluster: &str) -> Result<Vec<ServiceUsage>, AwsError>;
    /// Every page of ListServiceDeployments for one service.
    async fn service_deployments(&self, cluster: &str, service: &str) -> Result<Vec<DeploymentBrief>, AwsError>;
    /// DescribeServiceDeployments, 20 a call.
    async fn describe_service_deployments(&self, arns: &[String]) -> Result<Vec<ServiceDeployment>, AwsError>;
    /// DescribeServiceRevisions, 20 a call.
    async fn service_revisions(&self, arns: &[String]) -> Result<Vec<ServiceRevision>, AwsError>;
    /// Tasks desired RUNNING or PENDING in one cluster (standalone ones too).
    async fn tasks(&self, cluster: &str) -> Result<Vec<TaskUsage>, AwsError>;
    /// Families with at least one ACTIVE revision.
    async fn task_definition_families(&self) -> Result<Vec<String>, AwsError>;
    /// DescribeTaskDefinition of an ARN, `family:revision`, or a family (its
    /// latest ACTIVE revision). `None` when ECS does not know it.
    async fn task_definition(&self, name: &str) -> Result<Option<TaskDefinition>, AwsError>;
}

/// An ECS task definition a scheduled thing runs: `(who, task definition)`.
pub type EcsTarget = (String, String);

/// EventBridge: the ECS targets of every rule on every event bus.
#[async_trait]
pub trait RuleTargets: Send + Sync {
    async fn ecs_targets(&self) -> Result<Vec<EcsTarget>, AwsError>;
}

/// EventBridge Scheduler: the ECS targets of every schedule in every group.
#[async_trait]
pub trait ScheduleTargets: Send + Sync {
    async fn ecs_targets(&self) -> Result<Vec<EcsTarget>, AwsError>;
}

/// A Lambda function version packaged as a container image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionImage {
    /// `name:version`.
    pub name: String,
    pub image_uri: Option<String>,
    /// `repository@sha256:…`, what Lambda actually runs.
    pub resolved_image_uri: Option<String>,
}

/// Lambda: every function version whose PackageType is Image.
#[async_trait]
pub trait ImageFunctions: Send + Sync {
    async fn image_functions(&self) -> Result<Vec<FunctionImage>, AwsError>;
}

/// The work queue a large registry is fanned out over (SQS).
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Sends each body as one message. `Err` when any could not be sent;
    /// the ones that were sent stay sent (a consumer handles a batch twice
    /// safely: every batch is idempotent).
    async fn send(&self, bodies: &[String]) -> Result<(), AwsError>;
}
