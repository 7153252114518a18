//! In-memory fakes of the ports (feature `test-support`), for handler tests
//! that need no emulator. They model the behaviour the handlers rely on:
//! "already exists", groups appearing concurrently, calls that fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::in_use::{InUse, InUseReader, SourceFailure};
use crate::lifecycle::StorageClass;
use crate::model::{Image, LogGroup, Manifest, Platform, RunningTask, Service, Tags, TaskDefinition};
use crate::ports::{
    Created, Deleted, DeploymentBrief, EcrRead, EcsRead, EcsTarget, EcsUsage, EcsWrite, FunctionImage, ImageFunctions,
    LogGroupStore, Notifier, Registry, Repository, RuleTargets, ScheduleTargets, ServiceDeployment, ServiceHistory,
    ServiceRevision, ServiceUsage, TaskUsage, WorkQueue,
};
use crate::prune::RepoImage;
use crate::AwsError;

fn denied(operation: &'static str, what: &str) -> AwsError {
    AwsError {
        operation,
        code: Some("AccessDeniedException".into()),
        message: format!("not authorized for {what}"),
        retryable: false,
        source: None,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
pub struct FakeLogs {
    groups: Mutex<BTreeMap<String, LogGroup>>,
    appear: Mutex<BTreeMap<String, LogGroup>>,
    failing: Mutex<BTreeSet<String>>,
    writes: Mutex<usize>,
}

impl FakeLogs {
    pub fn with(groups: Vec<LogGroup>) -> Self {
        let fake = FakeLogs::default();
        *lock(&fake.groups) = groups.into_iter().map(|g| (g.name.clone(), g)).collect();
        fake
    }

    /// The next create of `name` finds `group` already there.
    pub fn appear_on_create(&self, name: &str, group: LogGroup) {
        lock(&self.appear).insert(name.into(), group);
    }

    /// Every call about `name` is denied.
    pub fn fail_on(&self, name: &str) {
        lock(&self.failing).insert(name.into());
    }

    pub fn snapshot(&self) -> BTreeMap<String, LogGroup> {
        lock(&self.groups).clone()
    }

    /// How many write calls were made.
    pub fn writes(&self) -> usize {
        *lock(&self.writes)
    }

    fn check(&self, operation: &'static str, name: &str) -> Result<(), AwsError> {
        if lock(&self.failing).contains(name) {
            return Err(denied(operation, name));
        }
        Ok(())
    }
}

#[async_trait]
impl LogGroupStore for FakeLogs {
    async fn find(&self, name: &str) -> Result<Option<LogGroup>, AwsError> {
        self.check("DescribeLogGroups", name)?;
        Ok(lock(&self.groups).get(name).cloned())
    }

    async fn create(&self, name: &str, tags: &Tags, kms_key_id: Option<&str>) -> Result<Created, AwsError> {
        self.check("CreateLogGroup", name)?;
        *lock(&self.writes) += 1;
        let mut groups = lock(&self.groups);
        if let Some(group) = lock(&self.appear).remove(name) {
            groups.insert(name.into(), group);
        }
        if groups.contains_key(name) {
            return Ok(Created::AlreadyExisted);
        }
        groups.insert(
            name.into(),
            LogGroup {
                name: name.into(),
                arn: Some(format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}")),
                retention_days: None,
                kms_key_id: kms_key_id.map(String::from),
                tags: tags.clone(),
            },
        );
        Ok(Created::New)
    }

    async fn put_retention(&self, name: &str, days: i32) -> Result<(), AwsError> {
        self.check("PutRetentionPolicy", name)?;
        *lock(&self.writes) += 1;
        match lock(&self.groups).get_mut(name) {
            Some(group) => {
                group.retention_days = Some(days);
                Ok(())
            }
            None => Err(denied("PutRetentionPolicy", name)),
        }
    }

    async fn tag(&self, arn: &str, tags: &Tags) -> Result<(), AwsError> {
        *lock(&self.writes) += 1;
        let mut groups = lock(&self.groups);
        let group = groups.values_mut().find(|g| g.arn.as_deref() == Some(arn));
        match group {
            Some(group) => {
                group.tags.extend(tags.clone());
                Ok(())
            }
            None => Err(denied("TagResource", arn)),
        }
    }
}

/// ECS in memory: clusters → services, and task definitions by ARN, by
/// `family:revision` and by family (the latest). Writes change it, as ECS would.
#[derive(Default)]
pub struct FakeEcs {
    pub clusters: BTreeMap<String, Vec<Service>>,
    pub task_definitions: Vec<TaskDefinition>,
    pub updates: Mutex<Vec<(String, String, String)>>,
    pub registered: Mutex<Vec<TaskDefinition>>,
    /// How many of the next UpdateService calls fail (throttled).
    pub failing_updates: Mutex<usize>,
    /// How many of the next RegisterTaskDefinition calls register the
    /// revision and then lose the answer (a connection reset after ECS acted).
    pub lost_register_answers: Mutex<usize>,
    /// `(cluster, task)` pairs of running tasks.
    pub tasks: Vec<(String, RunningTask)>,
    /// `(service ARN, deployment)`: what ListServiceDeployments returns.
    pub deployments: Vec<(String, crate::model::ServiceDeployment)>,
    /// `(task definition, container, digest)`: what DescribeTasks reports.
    pub task_container_digests: Vec<(String, String, String)>,
    /// cluster name → the platforms of its container instances.
    pub capacity: BTreeMap<String, Vec<Platform>>,
}

fn not_found(operation: &'static str, code: &str, what: &str) -> AwsError {
    AwsError {
        operation,
        code: Some(code.into()),
        message: format!("{what} not found"),
        retryable: false,
        source: None,
    }
}

impl FakeEcs {
    fn services_in(&self, operation: &'static str, cluster: &str) -> Result<&Vec<Service>, AwsError> {
        let wanted = crate::model::cluster_name(cluster);
        self.clusters
            .iter()
            .find(|(arn, _)| crate::model::cluster_name(arn) == wanted)
            .map(|(_, services)| services)
            .ok_or_else(|| not_found(operation, "ClusterNotFoundException", cluster))
    }
}

#[async_trait]
impl EcsRead for FakeEcs {
    async fn list_clusters(&self) -> Result<Vec<String>, AwsError> {
        Ok(self.clusters.keys().cloned().collect())
    }

    async fn list_services(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
        let services = self.services_in("ListServices", cluster)?;
        Ok(services.iter().map(|s| s.arn.clone()).collect())
    }

    async fn describe_services(&self, cluster: &str, services: &[String]) -> Result<Vec<Service>, AwsError> {
        let all = self.services_in("DescribeServices", cluster)?;
        let updates = lock(&self.updates).clone();
        Ok(all
            .iter()
            .filter(|s| services.iter().any(|want| *want == s.arn || *want == s.name))
            .cloned()
            .map(|mut s| {
                // What UpdateService did, as ECS would show it.
                if let Some((_, _, td)) = updates.iter().rev().find(|(_, name, _)| *name == s.name) {
                    s.task_definition = td.clone();
                }
                s
            })
            .collect())
    }

    async fn running_tasks(&self, cluster: &str) -> Result<Vec<RunningTask>, AwsError> {
        self.services_in("ListTasks", cluster)?;
        Ok(self
            .tasks
            .iter()
            .filter(|(c, _)| crate::model::cluster_name(c) == crate::model::cluster_name(cluster))
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinition, AwsError> {
        let registered = lock(&self.registered).clone();
        let all: Vec<&TaskDefinition> = self.task_definitions.iter().chain(registered.iter()).collect();
        let exact = all
            .iter()
            .find(|td| td.arn == task_definition || format!("{}:{}", td.family, td.revision) == task_definition);
        let latest = || all.iter().filter(|td| td.family == task_definition).max_by_key(|td| td.revision);
        exact
            .or_else(latest)
            .map(|td| (*td).clone())
            .ok_or_else(|| not_found("DescribeTaskDefinition", "ClientException", task_definition))
    }
}

#[async_trait]
impl EcsWrite for FakeEcs {
    async fn register_revision(
        &self,
        source: &str,
        images: &BTreeMap<String, String>,
        tags: &Tags,
    ) -> Result<TaskDefinition, AwsError> {
        let mut td = self.describe_task_definition(source).await?;
        let latest = self.describe_task_definition(&td.family).await?.revision;
        td.revision = latest + 1;
        td.arn = format!("{}:{}", td.arn.rsplit_once(':').map_or(td.arn.as_str(), |(base, _)| base), td.revision);
        for container in &mut td.containers {
            if let Some(image) = images.get(&container.name) {
                container.image = image.clone();
            }
        }
        td.tags.extend(tags.clone());
        lock(&self.registered).push(td.clone());
        let mut lost = lock(&self.lost_register_answers);
        if *lost > 0 {
            *lost -= 1;
            return Err(AwsError {
                operation: "RegisterTaskDefinition",
                code: None,
                message: "connection reset by peer".into(),
                retryable: true,
                source: None,
            });
        }
        Ok(td)
    }

    async fn update_service(&self, cluster: &str, service: &str, task_definition_arn: &str) -> Result<(), AwsError> {
        let mut failing = lock(&self.failing_updates);
        if *failing > 0 {
            *failing -= 1;
            return Err(AwsError {
                operation: "UpdateService",
                code: Some("ThrottlingException".into()),
                message: "Rate exceeded".into(),
                retryable: true,
                source: None,
            });
        }
        lock(&self.updates).push((cluster.into(), service.into(), task_definition_arn.into()));
        Ok(())
    }
}

/// ECR in memory: images by digest, index platforms by digest, and config
/// blobs by image digest (a single manifest whose config is that blob).
/// A digest with neither is an image whose config says linux/arm64.
#[derive(Default)]
pub struct FakeEcr {
    pub images: BTreeMap<String, Image>,
    pub platforms: BTreeMap<String, Vec<Platform>>,
    /// image digest → (config media type, config blob bytes).
    pub configs: BTreeMap<String, (String, Vec<u8>)>,
}

#[async_trait]
impl EcrRead for FakeEcr {
    async fn describe_image(&self, _repository: &str, digest: &str) -> Result<Option<Image>, AwsError> {
        Ok(self.images.get(digest).cloned())
    }

    async fn resolve_tag(&self, _repository: &str, tag: &str) -> Result<Option<(String, Image)>, AwsError> {
        let image = self.images.values().find(|i| i.tags.iter().any(|t| t == tag)).cloned();
        Ok(image.map(|i| ("123456789012".to_string(), i)))
    }

    async fn manifest(&self, _repository: &str, digest: &str) -> Result<Manifest, AwsError> {
        if let Some(platforms) = self.platforms.get(digest) {
            return Ok(Manifest::Index { platforms: platforms.clone() });
        }
        let (media_type, blob) = self.config_of(digest);
        Ok(Manifest::Single {
            config_media_type: media_type,
            config_digest: format!("config-of-{digest}"),
            config_size: Some(blob.len() as u64),
            artifact_type: None,
        })
    }

    async fn config_blob(&self, _repository: &str, digest: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, AwsError> {
        let image = digest.strip_prefix("config-of-").unwrap_or(digest);
        let (_, blob) = self.config_of(image);
        Ok((blob.len() as u64 <= max_bytes).then_some(blob))
    }
}

impl FakeEcr {
    fn config_of(&self, digest: &str) -> (String, Vec<u8>) {
        self.configs.get(digest).cloned().unwrap_or_else(|| {
            (crate::media::OCI_IMAGE_CONFIG.to_string(), br#"{"architecture":"arm64","os":"linux"}"#.to_vec())
        })
    }
}

#[async_trait]
impl ServiceHistory for FakeEcs {
    async fn service_deployments(
        &self,
        _cluster: &str,
        service_arn: &str,
    ) -> Result<Vec<crate::model::ServiceDeployment>, AwsError> {
        let mut found: Vec<crate::model::ServiceDeployment> =
            self.deployments.iter().filter(|(s, _)| s == service_arn).map(|(_, d)| d.clone()).collect();
        found.sort_by_key(|d| std::cmp::Reverse(d.created_at));
        Ok(found)
    }

    async fn deployment_task_definition(
        &self,
        _cluster: &str,
        _service_arn: &str,
        _deployment_id: &str,
    ) -> Result<Option<String>, AwsError> {
        Ok(None)
    }

    async fn task_digests(
        &self,
        _cluster: &str,
        _service_name: &str,
        task_definition: &str,
    ) -> Result<Vec<(String, String)>, AwsError> {
        Ok(self
            .task_container_digests
            .iter()
            .filter(|(td, _, _)| td == task_definition)
            .map(|(_, c, d)| (c.clone(), d.clone()))
            .collect())
    }

    async fn capacity_platforms(&self, cluster: &str) -> Result<Vec<Platform>, AwsError> {
        Ok(self.capacity.get(crate::model::cluster_name(cluster)).cloned().unwrap_or_default())
    }
}

/// Notifications in memory.
#[derive(Default)]
pub struct FakeNotifier {
    pub published: Mutex<Vec<(String, String)>>,
}

impl FakeNotifier {
    pub fn messages(&self) -> Vec<(String, String)> {
        lock(&self.published).clone()
    }
}

#[async_trait]
impl Notifier for FakeNotifier {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), AwsError> {
        lock(&self.published).push((subject.to_string(), message.to_string()));
        Ok(())
    }
}

#[async_trait]
impl Notifier for std::sync::Arc<FakeNotifier> {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), AwsError> {
        self.as_ref().publish(subject, message).await
    }
}

/// One ECR repository in memory for prune-images: its images, what its
/// indexes reference, and per-digest failures. Every BatchDeleteImage call
/// is recorded, so tests can check the order of deletion; every
/// UpdateImageStorageClass call too, and it changes the image's row as ECR
/// would (archived now, or activating on a restore).
#[derive(Default)]
pub struct FakeRegistry {
    pub repository: String,
    pub images: Mutex<Vec<RepoImage>>,
    pub children: BTreeMap<String, Vec<String>>,
    /// digest → failure code BatchDeleteImage reports for it, and the error
    /// code UpdateImageStorageClass fails with for it.
    pub failing: BTreeMap<String, String>,
    pub delete_calls: Mutex<Vec<Vec<String>>>,
    /// `(digest, target)` of every UpdateImageStorageClass call, in order.
    pub storage_class_calls: Mutex<Vec<(String, StorageClass)>>,
    /// subject digest → its referrers (ListImageReferrers).
    pub referrers: BTreeMap<String, Vec<String>>,
    /// An index whose manifest cannot be read (BatchGetImage fails on it).
    pub broken_index: Option<String>,
    /// BatchDeleteImage is denied as a whole (outside PruneRepositoryArnPattern).
    pub delete_denied: bool,
    /// The rows from the second listing on, as though someone re-tagged or
    /// pushed after the first DescribeImages.
    pub relisted: Option<Vec<RepoImage>>,
    /// DescribeImages listings made so far.
    pub listings: Mutex<usize>,
    /// The repository is deleted after the first listing: later ones answer
    /// `RepositoryNotFoundException`.
    pub gone_after_listing: bool,
}

impl FakeRegistry {
    pub fn new(repository: &str, images: Vec<RepoImage>) -> Self {
        FakeRegistry { repository: repository.into(), images: Mutex::new(images), ..FakeRegistry::default() }
    }

    /// Every digest still there.
    pub fn digests(&self) -> Vec<String> {
        lock(&self.images).iter().map(|i| i.digest.clone()).collect()
    }
}

/// Several repositories in memory, each a [`FakeRegistry`], listed in order.
#[derive(Default)]
pub struct FakeRegistries(pub Vec<FakeRegistry>);

impl FakeRegistries {
    pub fn get(&self, repository: &str) -> Result<&FakeRegistry, AwsError> {
        self.0.iter().find(|r| r.repository == repository).ok_or_else(|| {
            not_found("DescribeImages", "RepositoryNotFoundException", &format!("repository {repository}"))
        })
    }
}

#[async_trait]
impl Registry for FakeRegistries {
    async fn repositories(&self, names: &[String], with_tags: bool) -> Result<Vec<Repository>, AwsError> {
        let mut all = Vec::new();
        for r in &self.0 {
            if names.is_empty() || names.contains(&r.repository) {
                all.extend(r.repositories(&[], with_tags).await?);
            }
        }
        Ok(all)
    }

    async fn images(&self, repository: &str) -> Result<Vec<RepoImage>, AwsError> {
        self.get(repository)?.images(repository).await
    }

    async fn index_children(
        &self,
        repository: &str,
        indexes: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
        self.get(repository)?.index_children(repository, indexes).await
    }

    async fn manifest_layers(&self, repository: &str, digests: &[String]) -> Result<Vec<(String, u64)>, AwsError> {
        self.get(repository)?.manifest_layers(repository, digests).await
    }

    async fn delete(&self, repository: &str, digests: &[String]) -> Result<Deleted, AwsError> {
        self.get(repository)?.delete(repository, digests).await
    }

    async fn referrers(
        &self,
        repository: &str,
        subjects: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
        self.get(repository)?.referrers(repository, subjects).await
    }

    async fn update_storage_class(
        &self,
        repository: &str,
        digest: &str,
        target: StorageClass,
    ) -> Result<StorageClass, AwsError> {
        self.get(repository)?.update_storage_class(repository, digest, target).await
    }
}

#[async_trait]
impl Registry for FakeRegistry {
    async fn repositories(&self, _names: &[String], _with_tags: bool) -> Result<Vec<Repository>, AwsError> {
        Ok(vec![Repository {
            name: self.repository.clone(),
            arn: format!("arn:aws:ecr:us-east-1:123456789012:repository/{}", self.repository),
            registry_id: "123456789012".into(),
            tags: Tags::new(),
            ..Repository::default()
        }])
    }

    async fn images(&self, _repository: &str) -> Result<Vec<RepoImage>, AwsError> {
        let mut listings = lock(&self.listings);
        *listings += 1;
        if *listings > 1 && self.gone_after_listing {
            return Err(not_found(
                "DescribeImages",
                "RepositoryNotFoundException",
                &format!("repository {}", self.repository),
            ));
        }
        if let (true, Some(rows)) = (*listings == 2, &self.relisted) {
            *lock(&self.images) = rows.clone();
        }
        Ok(lock(&self.images).clone())
    }

    async fn index_children(
        &self,
        _repository: &str,
        indexes: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
        if let Some(broken) = self.broken_index.as_ref().filter(|b| indexes.contains(b)) {
            return Err(AwsError::unexpected(
                "BatchGetImage",
                format!("{}@{broken}: invalid image index", self.repository),
            ));
        }
        Ok(self.children.iter().filter(|(i, _)| indexes.contains(i)).map(|(i, c)| (i.clone(), c.clone())).collect())
    }

    async fn manifest_layers(&self, _repository: &str, _digests: &[String]) -> Result<Vec<(String, u64)>, AwsError> {
        Ok(Vec::new())
    }

    async fn update_storage_class(
        &self,
        _repository: &str,
        digest: &str,
        target: StorageClass,
    ) -> Result<StorageClass, AwsError> {
        lock(&self.storage_class_calls).push((digest.to_string(), target));
        if let Some(code) = self.failing.get(digest) {
            return Err(AwsError {
                operation: "UpdateImageStorageClass",
                code: Some(code.clone()),
                message: format!("{digest}: refused by the fake"),
                retryable: false,
                source: None,
            });
        }
        let mut images = lock(&self.images);
        let Some(image) = images.iter_mut().find(|i| i.digest == digest) else {
            return Err(not_found("UpdateImageStorageClass", "ImageNotFoundException", digest));
        };
        image.storage_class = match target {
            StorageClass::Archive => StorageClass::Archive,
            // a restore takes a while: ECR reports ACTIVATING first
            StorageClass::Standard if image.storage_class == StorageClass::Archive => StorageClass::Activating,
            StorageClass::Standard => StorageClass::Standard,
            StorageClass::Activating => return Err(denied("UpdateImageStorageClass", "target activating")),
        };
        Ok(image.storage_class)
    }

    async fn delete(&self, _repository: &str, digests: &[String]) -> Result<Deleted, AwsError> {
        if self.delete_denied {
            return Err(denied("BatchDeleteImage", &self.repository));
        }
        lock(&self.delete_calls).push(digests.to_vec());
        let mut result = Deleted::default();
        let mut images = lock(&self.images);
        for digest in digests {
            match self.failing.get(digest) {
                Some(code) => result.failures.push((digest.clone(), code.clone(), "refused by the fake".into())),
                None => {
                    images.retain(|i| &i.digest != digest);
                    result.deleted.push(digest.clone());
                }
            }
        }
        Ok(result)
    }

    async fn referrers(
        &self,
        _repository: &str,
        subjects: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
        Ok(self.referrers.iter().filter(|(s, _)| subjects.contains(s)).map(|(s, r)| (s.clone(), r.clone())).collect())
    }
}

/// Every source of "in use" in memory, for one region: services with their
/// deployments and revisions, tasks, task definitions (their families are
/// listed), rule and schedule targets, Lambda image functions. One operation
/// can be made to fail with AccessDenied. Share it as `Arc<FakeUsage>`.
#[derive(Default)]
pub struct FakeUsage {
    pub services: Vec<ServiceUsage>,
    /// service ARN → its deployments.
    pub deployments: BTreeMap<String, Vec<(DeploymentBrief, ServiceDeployment)>>,
    pub revisions: Vec<ServiceRevision>,
    /// `(cluster ARN, task)`.
    pub tasks: Vec<(String, TaskUsage)>,
    pub task_definitions: Vec<TaskDefinition>,
    pub rules: Vec<EcsTarget>,
    pub schedules: Vec<EcsTarget>,
    pub functions: Vec<FunctionImage>,
    /// The operation (e.g. `ListSchedules`) that is denied.
    pub denied: Option<&'static str>,
}

impl FakeUsage {
    fn check(&self, operation: &'static str) -> Result<(), AwsError> {
        match self.denied {
            Some(op) if op == operation => Err(denied(operation, "this fake's denied operation")),
            _ => Ok(()),
        }
    }

    /// The four ports of one region, all backed by `fake`.
    pub fn region(fake: &std::sync::Arc<FakeUsage>, region: &str) -> crate::in_use::readers::RegionSources {
        crate::in_use::readers::RegionSources {
            region: region.into(),
            ecs: Box::new(fake.clone()),
            rules: Box::new(fake.clone()),
            schedules: Box::new(fake.clone()),
            functions: Box::new(fake.clone()),
        }
    }
}

#[async_trait]
impl EcsUsage for std::sync::Arc<FakeUsage> {
    async fn clusters(&self) -> Result<Vec<String>, AwsError> {
        self.check("ListClusters")?;
        let all: BTreeSet<String> = self
            .services
            .iter()
            .map(|s| s.cluster_arn.clone())
            .chain(self.tasks.iter().map(|(c, _)| c.clone()))
            .collect();
        Ok(all.into_iter().collect())
    }

    async fn services(&self, cluster: &str) -> Result<Vec<ServiceUsage>, AwsError> {
        self.check("DescribeServices")?;
        Ok(self.services.iter().filter(|s| s.cluster_arn == cluster).cloned().collect())
    }

    async fn service_deployments(&self, _cluster: &str, service: &str) -> Result<Vec<DeploymentBrief>, AwsError> {
        self.check("ListServiceDeployments")?;
        Ok(self.deployments.get(service).into_iter().flatten().map(|(b, _)| b.clone()).collect())
    }

    async fn describe_service_deployments(&self, arns: &[String]) -> Result<Vec<ServiceDeployment>, AwsError> {
        self.check("DescribeServiceDeployments")?;
        Ok(self.deployments.values().flatten().filter(|(b, _)| arns.contains(&b.arn)).map(|(_, d)| d.clone()).collect())
    }

    async fn service_revisions(&self, arns: &[String]) -> Result<Vec<ServiceRevision>, AwsError> {
        self.check("DescribeServiceRevisions")?;
        Ok(self.revisions.iter().filter(|r| arns.contains(&r.arn)).cloned().collect())
    }

    async fn tasks(&self, cluster: &str) -> Result<Vec<TaskUsage>, AwsError> {
        self.check("ListTasks")?;
        Ok(self.tasks.iter().filter(|(c, _)| c == cluster).map(|(_, t)| t.clone()).collect())
    }

    async fn task_definition_families(&self) -> Result<Vec<String>, AwsError> {
        self.check("ListTaskDefinitionFamilies")?;
        let families: BTreeSet<String> = self.task_definitions.iter().map(|t| t.family.clone()).collect();
        Ok(families.into_iter().collect())
    }

    async fn task_definition(&self, name: &str) -> Result<Option<TaskDefinition>, AwsError> {
        self.check("DescribeTaskDefinition")?;
        if !name.contains(':') {
            return Ok(self.task_definitions.iter().filter(|t| t.family == name).max_by_key(|t| t.revision).cloned());
        }
        Ok(self
            .task_definitions
            .iter()
            .find(|t| t.arn == name || format!("{}:{}", t.family, t.revision) == name)
            .cloned())
    }
}

#[async_trait]
impl RuleTargets for std::sync::Arc<FakeUsage> {
    async fn ecs_targets(&self) -> Result<Vec<EcsTarget>, AwsError> {
        self.check("ListRules")?;
        Ok(self.rules.clone())
    }
}

#[async_trait]
impl ScheduleTargets for std::sync::Arc<FakeUsage> {
    async fn ecs_targets(&self) -> Result<Vec<EcsTarget>, AwsError> {
        self.check("ListSchedules")?;
        Ok(self.schedules.clone())
    }
}

#[async_trait]
impl ImageFunctions for std::sync::Arc<FakeUsage> {
    async fn image_functions(&self) -> Result<Vec<FunctionImage>, AwsError> {
        self.check("ListFunctions")?;
        Ok(self.functions.clone())
    }
}

/// An "in use" reader that answers from a script: each read takes the next
/// answer; the last one repeats. Counts its reads.
pub struct ScriptedInUse {
    answers: Mutex<Vec<Result<InUse, SourceFailure>>>,
    pub reads: Mutex<usize>,
}

impl ScriptedInUse {
    /// `answers` in the order they are given out (at least one).
    pub fn new(answers: Vec<Result<InUse, SourceFailure>>) -> Self {
        let mut answers = answers;
        answers.reverse();
        ScriptedInUse { answers: Mutex::new(answers), reads: Mutex::new(0) }
    }

    pub fn always(set: InUse) -> Self {
        Self::new(vec![Ok(set)])
    }
}

#[async_trait]
impl InUseReader for ScriptedInUse {
    async fn read(&self) -> Result<InUse, SourceFailure> {
        *lock(&self.reads) += 1;
        let mut answers = lock(&self.answers);
        if answers.len() > 1 {
            return answers.pop().unwrap_or_else(|| Ok(InUse::default()));
        }
        match answers.last() {
            Some(Ok(set)) => Ok(set.clone()),
            Some(Err(f)) => Err(SourceFailure {
                source: f.source,
                region: f.region.clone(),
                permission: f.permission.clone(),
                error: Box::new(AwsError {
                    operation: f.error.operation,
                    code: f.error.code.clone(),
                    message: f.error.message.clone(),
                    retryable: f.error.retryable,
                    source: None,
                }),
            }),
            None => Ok(InUse::default()),
        }
    }
}

/// A work queue that keeps what it is sent; `fail` makes every send fail.
#[derive(Default)]
pub struct FakeQueue {
    pub sent: std::sync::Arc<Mutex<Vec<String>>>,
    pub fail: bool,
}

impl FakeQueue {
    /// The queue, and a handle on what it will have been sent.
    pub fn new() -> (FakeQueue, std::sync::Arc<Mutex<Vec<String>>>) {
        let queue = FakeQueue::default();
        let sent = queue.sent.clone();
        (queue, sent)
    }
}

#[async_trait]
impl WorkQueue for FakeQueue {
    async fn send(&self, bodies: &[String]) -> Result<(), AwsError> {
        if self.fail {
            return Err(AwsError { retryable: true, ..AwsError::unexpected("SendMessageBatch", "queue unavailable") });
        }
        self.sent.lock().expect("sent").extend(bodies.iter().cloned());
        Ok(())
    }
}
