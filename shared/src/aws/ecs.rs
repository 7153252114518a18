//! ECS adapter: [`EcsRead`], [`EcsWrite`] and [`EcsUsage`] on `aws-sdk-ecs`,
//! paginated with the SDK's paginators.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ecs::types::{ServiceField, Tag, TaskDefinitionField};
use aws_sdk_ecs::Client;

use super::{classify, ApiCalls};
use crate::model::{Container, LogConfiguration, Platform, RunningTask, Service, Tags, TaskDefinition};
use crate::ports::{
    ContainerImage, DeploymentBrief, EcsRead, EcsUsage, EcsWrite, ServiceDeployment, ServiceHistory, ServiceRevision,
    ServiceUsage, TaskUsage,
};
use crate::AwsError;

/// The SDK's own view of a task definition and its tags, kept from
/// DescribeTaskDefinition so a new revision can copy every field without a
/// second read.
type FullTaskDefinition = (aws_sdk_ecs::types::TaskDefinition, Vec<Tag>);

/// DescribeServices takes at most this many services per call.
pub const DESCRIBE_SERVICES_BATCH: usize = 10;
/// DescribeServices calls in flight at once, per cluster. ECS throttles each
/// account and region with token buckets (DescribeClusters: a burst of 50,
/// refilled at 20 a second, per ECS's "Request throttling" page), and callers
/// may read several clusters at once; past the bucket, the SDK's retries
/// back off (exponentially, with jitter) instead of failing.
pub const DESCRIBE_SERVICES_CONCURRENCY: usize = 5;
/// Page size for ListClusters, ListServices, ListTasks and
/// ListTaskDefinitionFamilies: each API's maximum. Unasked, ECS returns 10.
pub const LIST_PAGE_SIZE: i32 = 100;
/// DescribeTasks takes at most this many tasks per call.
pub const DESCRIBE_TASKS_BATCH: usize = 100;

/// How many described task definitions the adapter keeps for
/// RegisterTaskDefinition to copy from. A warm container lives for many
/// invocations and every deploy makes a new revision, so the cache is bounded:
/// past this size the oldest entry goes (a miss only costs one more
/// DescribeTaskDefinition).
pub const DESCRIBED_CACHE_SIZE: usize = 256;

/// How many task-definition revisions and service revisions the "in use"
/// read keeps: both are immutable, so a later read in the same run (the
/// fresh read before deleting) or a later batch in the same warm container
/// needs no second DescribeTaskDefinition or DescribeServiceRevisions. The
/// bound keeps a long-lived container's memory flat (a few hundred bytes an
/// entry).
pub const IMMUTABLE_CACHE_SIZE: usize = 4_096;

pub struct EcsAdapter {
    client: Client,
    described: Mutex<Bounded<FullTaskDefinition>>,
    /// Task definitions the "in use" read described, by a name that pins a
    /// revision (`family:N` or its ARN); a family name alone is not kept.
    revisions: Mutex<Bounded<TaskDefinition>>,
    /// Service revisions by ARN.
    service_revisions: Mutex<Bounded<ServiceRevision>>,
}

/// A bounded map, the oldest entry out first.
struct Bounded<V> {
    entries: HashMap<String, V>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<V: Clone> Bounded<V> {
    fn new(capacity: usize) -> Self {
        Bounded { entries: HashMap::new(), order: VecDeque::new(), capacity }
    }

    fn get(&self, key: &str) -> Option<V> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: String, value: V) {
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// A service revision that can no longer change: it names containers, and
/// ECS has recorded the digest of every one.
fn is_final(revision: &ServiceRevision) -> bool {
    !revision.images.is_empty() && revision.images.iter().all(|c| c.digest.as_deref().is_some_and(|d| !d.is_empty()))
}

/// Does this task-definition name pin one revision (`family:7`, or an ARN
/// ending in `:7`)? Only such a name always describes the same thing.
fn pins_a_revision(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':')
        .is_some_and(|(family, n)| !family.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl EcsAdapter {
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls) -> Self {
        Self::in_region(sdk, calls, None)
    }

    /// A client for `region` (the SDK configuration's own when `None`).
    pub fn in_region(sdk: &SdkConfig, calls: &ApiCalls, region: Option<&str>) -> Self {
        let mut config = aws_sdk_ecs::config::Builder::from(sdk).interceptor(calls.clone());
        if let Some(region) = region {
            config = config.region(aws_config::Region::new(region.to_string()));
        }
        Self::from_client(Client::from_conf(config.build()))
    }

    pub fn from_client(client: Client) -> Self {
        EcsAdapter {
            client,
            described: Mutex::new(Bounded::new(DESCRIBED_CACHE_SIZE)),
            revisions: Mutex::new(Bounded::new(IMMUTABLE_CACHE_SIZE)),
            service_revisions: Mutex::new(Bounded::new(IMMUTABLE_CACHE_SIZE)),
        }
    }
}

#[async_trait]
impl EcsRead for EcsAdapter {
    async fn list_clusters(&self) -> Result<Vec<String>, AwsError> {
        self.client
            .list_clusters()
            .max_results(LIST_PAGE_SIZE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListClusters", e))
    }

    async fn list_services(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
        self.client
            .list_services()
            .cluster(cluster)
            .max_results(LIST_PAGE_SIZE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListServices", e))
    }

    async fn describe_services(&self, cluster: &str, services: &[String]) -> Result<Vec<Service>, AwsError> {
        in_batches(services, DESCRIBE_SERVICES_BATCH, DESCRIBE_SERVICES_CONCURRENCY, |batch| async move {
            let output = self
                .client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(batch))
                .include(ServiceField::Tags)
                .send()
                .await
                .map_err(|e| classify("DescribeServices", e))?;
            Ok(output.services().iter().filter_map(to_service).collect())
        })
        .await
    }

    async fn running_tasks(&self, cluster: &str) -> Result<Vec<RunningTask>, AwsError> {
        let arns: Vec<String> = self
            .client
            .list_tasks()
            .cluster(cluster)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .max_results(LIST_PAGE_SIZE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListTasks", e))?;
        let mut tasks = Vec::with_capacity(arns.len());
        for batch in arns.chunks(DESCRIBE_TASKS_BATCH) {
            let output = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeTasks", e))?;
            tasks.extend(output.tasks().iter().map(|t| RunningTask {
                arn: t.task_arn().unwrap_or_default().to_string(),
                task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
                digests: t.containers().iter().filter_map(|c| c.image_digest().map(String::from)).collect(),
            }));
        }
        Ok(tasks)
    }

    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinition, AwsError> {
        let output = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| classify("DescribeTaskDefinition", e))?;
        let tags = output.tags().to_vec();
        let full = output.task_definition.ok_or_else(|| {
            AwsError::unexpected(
                "DescribeTaskDefinition",
                format!("no task definition in the response for {task_definition}"),
            )
        })?;
        let ours = to_task_definition(&full, &tags).ok_or_else(|| {
            AwsError::unexpected(
                "DescribeTaskDefinition",
                format!("{task_definition}: the response has no ARN or family"),
            )
        })?;
        if let Ok(mut cache) = self.described.lock() {
            cache.insert(ours.arn.clone(), (full, tags));
        }
        Ok(ours)
    }
}

#[async_trait]
impl EcsWrite for EcsAdapter {
    async fn register_revision(
        &self,
        source: &str,
        images: &BTreeMap<String, String>,
        tags: &Tags,
    ) -> Result<TaskDefinition, AwsError> {
        let cached = self.described.lock().ok().and_then(|c| c.get(source));
        let (td, old_tags) = match cached {
            Some(full) => full,
            None => {
                self.describe_task_definition(source).await?;
                self.described.lock().ok().and_then(|c| c.get(source)).ok_or_else(|| {
                    AwsError::unexpected("DescribeTaskDefinition", format!("{source} could not be read back"))
                })?
            }
        };
        let containers = td
            .container_definitions()
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if let Some(image) = c.name.as_ref().and_then(|n| images.get(n)) {
                    c.image = Some(image.clone());
                }
                c
            })
            .collect();
        let output = self
            .client
            .register_task_definition()
            .set_family(td.family.clone())
            .set_task_role_arn(td.task_role_arn.clone())
            .set_execution_role_arn(td.execution_role_arn.clone())
            .set_network_mode(td.network_mode.clone())
            .set_container_definitions(Some(containers))
            .set_volumes(td.volumes.clone())
            .set_placement_constraints(td.placement_constraints.clone())
            .set_requires_compatibilities(td.requires_compatibilities.clone())
            .set_cpu(td.cpu.clone())
            .set_memory(td.memory.clone())
            .set_tags(Some(merged_tags(&old_tags, tags)))
            .set_pid_mode(td.pid_mode.clone())
            .set_ipc_mode(td.ipc_mode.clone())
            .set_proxy_configuration(td.proxy_configuration.clone())
            .set_ephemeral_storage(td.ephemeral_storage.clone())
            .set_runtime_platform(td.runtime_platform.clone())
            .set_enable_fault_injection(td.enable_fault_injection)
            // One attempt: ECS has no idempotency token for this call, so an
            // SDK retry after a lost answer would register a second revision.
            // The caller looks for the revision before it registers again.
            .customize()
            .config_override(
                aws_sdk_ecs::config::Config::builder()
                    .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| classify("RegisterTaskDefinition", e))?;
        let tags = output.tags().to_vec();
        let registered = output
            .task_definition
            .ok_or_else(|| AwsError::unexpected("RegisterTaskDefinition", "no task definition in the response"))?;
        to_task_definition(&registered, &tags)
            .ok_or_else(|| AwsError::unexpected("RegisterTaskDefinition", "the response has no ARN or family"))
    }

    async fn update_service(&self, cluster: &str, service: &str, task_definition_arn: &str) -> Result<(), AwsError> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(task_definition_arn)
            .send()
            .await
            .map_err(|e| classify("UpdateService", e))?;
        Ok(())
    }
}

/// DescribeServiceDeployments and DescribeServiceRevisions take at most 20 ARNs.
pub const DESCRIBE_DEPLOYMENTS_BATCH: usize = 20;
/// ListServiceDeployments page size, the API's maximum.
pub const SERVICE_DEPLOYMENTS_PAGE: i32 = 100;

#[async_trait]
impl EcsUsage for EcsAdapter {
    async fn clusters(&self) -> Result<Vec<String>, AwsError> {
        EcsRead::list_clusters(self).await
    }

    async fn services(&self, cluster: &str) -> Result<Vec<ServiceUsage>, AwsError> {
        let arns = EcsRead::list_services(self, cluster).await?;
        in_batches(&arns, DESCRIBE_SERVICES_BATCH, DESCRIBE_SERVICES_CONCURRENCY, |batch| async move {
            let output = self
                .client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(batch))
                // deploy-on-push's opt-in and tracking, for quota-scan's audit
                .include(ServiceField::Tags)
                .send()
                .await
                .map_err(|e| classify("DescribeServices", e))?;
            Ok(output.services().iter().filter_map(to_service_usage).collect())
        })
        .await
    }

    async fn service_deployments(&self, cluster: &str, service: &str) -> Result<Vec<DeploymentBrief>, AwsError> {
        let mut briefs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let output = self
                .client
                .list_service_deployments()
                .cluster(cluster)
                .service(service)
                .max_results(SERVICE_DEPLOYMENTS_PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify("ListServiceDeployments", e))?;
            briefs.extend(output.service_deployments().iter().filter_map(|d| {
                Some(DeploymentBrief {
                    arn: d.service_deployment_arn()?.to_string(),
                    status: d.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    created_at: d.created_at().map_or(0, |t| t.secs()),
                    target_revision: d.target_service_revision_arn().map(String::from),
                })
            }));
            match output.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(briefs)
    }

    async fn describe_service_deployments(&self, arns: &[String]) -> Result<Vec<ServiceDeployment>, AwsError> {
        let mut deployments = Vec::with_capacity(arns.len());
        for batch in arns.chunks(DESCRIBE_DEPLOYMENTS_BATCH) {
            let output = self
                .client
                .describe_service_deployments()
                .set_service_deployment_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeServiceDeployments", e))?;
            deployments.extend(output.service_deployments().iter().filter_map(|d| {
                Some(ServiceDeployment {
                    arn: d.service_deployment_arn()?.to_string(),
                    target_revision: d.target_service_revision().and_then(|r| r.arn()).map(String::from),
                    source_revisions: d
                        .source_service_revisions()
                        .iter()
                        .filter_map(|r| r.arn().map(String::from))
                        .collect(),
                })
            }));
        }
        Ok(deployments)
    }

    async fn service_revisions(&self, arns: &[String]) -> Result<Vec<ServiceRevision>, AwsError> {
        // A service revision never changes: those read before are not asked again.
        let (mut revisions, unread): (Vec<ServiceRevision>, Vec<String>) = {
            let known = self.service_revisions.lock().ok();
            let mut found = Vec::with_capacity(arns.len());
            let mut unread = Vec::new();
            for arn in arns {
                match known.as_ref().and_then(|k| k.get(arn)) {
                    Some(revision) => found.push(revision),
                    None => unread.push(arn.clone()),
                }
            }
            (found, unread)
        };
        let first_new = revisions.len();
        for batch in unread.chunks(DESCRIBE_DEPLOYMENTS_BATCH) {
            let output = self
                .client
                .describe_service_revisions()
                .set_service_revision_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeServiceRevisions", e))?;
            revisions.extend(output.service_revisions().iter().filter_map(|r| {
                Some(ServiceRevision {
                    arn: r.service_revision_arn()?.to_string(),
                    task_definition: r.task_definition().map(String::from),
                    images: r
                        .container_images()
                        .iter()
                        .filter_map(|c| {
                            Some(ContainerImage {
                                image: c.image()?.to_string(),
                                digest: c.image_digest().map(String::from),
                            })
                        })
                        .collect(),
                })
            }));
        }
        if let Ok(mut known) = self.service_revisions.lock() {
            // Only a revision whose digests are all known is final: ECS fills
            // a container's `imageDigest` in once it has resolved the image,
            // and a revision read before that must be read again.
            for revision in revisions[first_new..].iter().filter(|r| is_final(r)) {
                known.insert(revision.arn.clone(), revision.clone());
            }
        }
        Ok(revisions)
    }

    async fn tasks(&self, cluster: &str) -> Result<Vec<TaskUsage>, AwsError> {
        let mut arns: Vec<String> = Vec::new();
        // RUNNING includes tasks still starting (lastStatus PENDING or
        // PROVISIONING); PENDING is asked too, for tasks ECS has not yet
        // decided to run.
        for desired in [aws_sdk_ecs::types::DesiredStatus::Running, aws_sdk_ecs::types::DesiredStatus::Pending] {
            let page: Vec<String> = self
                .client
                .list_tasks()
                .cluster(cluster)
                .desired_status(desired)
                .max_results(LIST_PAGE_SIZE)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| classify("ListTasks", e))?;
            arns.extend(page);
        }
        arns.sort();
        arns.dedup();
        let mut tasks = Vec::with_capacity(arns.len());
        for batch in arns.chunks(DESCRIBE_TASKS_BATCH) {
            let output = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeTasks", e))?;
            tasks.extend(output.tasks().iter().map(|t| {
                TaskUsage {
                    arn: t.task_arn().unwrap_or_default().to_string(),
                    task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
                    images: t
                        .containers()
                        .iter()
                        .filter_map(|c| {
                            Some(ContainerImage {
                                image: c.image()?.to_string(),
                                digest: c.image_digest().map(String::from),
                            })
                        })
                        .collect(),
                }
            }));
        }
        Ok(tasks)
    }

    async fn task_definition_families(&self) -> Result<Vec<String>, AwsError> {
        self.client
            .list_task_definition_families()
            .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
            .max_results(LIST_PAGE_SIZE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListTaskDefinitionFamilies", e))
    }

    async fn task_definition(&self, name: &str) -> Result<Option<TaskDefinition>, AwsError> {
        // A pinned revision never changes; a family name follows its latest.
        let pinned = pins_a_revision(name);
        if pinned {
            if let Some(known) = self.revisions.lock().ok().and_then(|c| c.get(name)) {
                return Ok(Some(known));
            }
        }
        let result = self.client.describe_task_definition().task_definition(name).send().await;
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                let error = classify("DescribeTaskDefinition", e);
                // ECS says "Unable to describe task definition." as a
                // ClientException when the name is unknown.
                if error.code_is("ClientException") && error.message.to_ascii_lowercase().contains("unable to describe")
                {
                    return Ok(None);
                }
                return Err(error);
            }
        };
        let described = output.task_definition.as_ref().and_then(|td| to_task_definition(td, &[]));
        if let (true, Some(td), Ok(mut known)) = (pinned, &described, self.revisions.lock()) {
            known.insert(name.to_string(), td.clone());
        }
        Ok(described)
    }
}

fn to_service_usage(s: &aws_sdk_ecs::types::Service) -> Option<ServiceUsage> {
    Some(ServiceUsage {
        arn: s.service_arn()?.to_string(),
        name: s.service_name()?.to_string(),
        cluster_arn: s.cluster_arn()?.to_string(),
        controller: s
            .deployment_controller()
            .map(|c| c.r#type().as_str().to_string())
            .unwrap_or_else(|| "ECS".to_string()),
        task_definition: s.task_definition().map(String::from),
        deployment_task_definitions: s
            .deployments()
            .iter()
            .filter_map(|d| d.task_definition().map(String::from))
            .collect(),
        task_set_task_definitions: s.task_sets().iter().filter_map(|t| t.task_definition().map(String::from)).collect(),
        tags: tags_of(s.tags()),
    })
}

/// Service deployments and revisions, tasks' digests and container-instance
/// attributes: what deploy-on-push reads to know what ECS pinned and on what
/// capacity. Kept apart from [`EcsRead`] so prune-images' reads can grow
/// independently.
#[async_trait]
impl ServiceHistory for EcsAdapter {
    async fn service_deployments(
        &self,
        cluster: &str,
        service_arn: &str,
    ) -> Result<Vec<crate::model::ServiceDeployment>, AwsError> {
        let output = self
            .client
            .list_service_deployments()
            .cluster(cluster)
            .service(service_arn)
            .max_results(SERVICE_REVISIONS_BATCH as i32)
            .send()
            .await
            .map_err(|e| classify("ListServiceDeployments", e))?;
        let mut deployments: Vec<(crate::model::ServiceDeployment, Option<String>)> = output
            .service_deployments()
            .iter()
            .map(|d| {
                let deployment = crate::model::ServiceDeployment {
                    arn: d.service_deployment_arn().unwrap_or_default().to_string(),
                    status: d.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    status_reason: d.status_reason().map(String::from),
                    created_at: d.created_at().or(d.started_at()).map_or(0, |t| t.secs()),
                    revision: None,
                };
                (deployment, d.target_service_revision_arn().map(String::from))
            })
            .collect();
        deployments.sort_by_key(|d| std::cmp::Reverse(d.0.created_at));
        let arns: Vec<String> = deployments.iter().filter_map(|(_, r)| r.clone()).collect();
        let mut revisions = BTreeMap::new();
        for batch in arns.chunks(SERVICE_REVISIONS_BATCH) {
            let output = self
                .client
                .describe_service_revisions()
                .set_service_revision_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeServiceRevisions", e))?;
            for r in output.service_revisions() {
                let Some(arn) = r.service_revision_arn() else { continue };
                let revision = crate::model::ServiceRevision {
                    arn: arn.to_string(),
                    task_definition: r.task_definition().unwrap_or_default().to_string(),
                    containers: r
                        .container_images()
                        .iter()
                        .map(|c| {
                            (
                                c.container_name().unwrap_or_default().to_string(),
                                c.image().unwrap_or_default().to_string(),
                                c.image_digest().map(String::from),
                            )
                        })
                        .collect(),
                };
                revisions.insert(arn.to_string(), revision);
            }
        }
        Ok(deployments
            .into_iter()
            .map(|(mut d, revision)| {
                d.revision = revision.and_then(|r| revisions.get(&r).cloned());
                d
            })
            .collect())
    }

    async fn deployment_task_definition(
        &self,
        cluster: &str,
        service_arn: &str,
        deployment_id: &str,
    ) -> Result<Option<String>, AwsError> {
        let output = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service_arn)
            .send()
            .await
            .map_err(|e| classify("DescribeServices", e))?;
        Ok(output
            .services()
            .iter()
            .flat_map(|s| s.deployments())
            .find(|d| d.id() == Some(deployment_id))
            .and_then(|d| d.task_definition().map(String::from)))
    }

    async fn task_digests(
        &self,
        cluster: &str,
        service_name: &str,
        task_definition: &str,
    ) -> Result<Vec<(String, String)>, AwsError> {
        let arns: Vec<String> = self
            .client
            .list_tasks()
            .cluster(cluster)
            .service_name(service_name)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .max_results(LIST_PAGE_SIZE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListTasks", e))?;
        let mut digests = Vec::new();
        for batch in arns.chunks(DESCRIBE_TASKS_BATCH) {
            let output = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeTasks", e))?;
            let of_service = output.tasks().iter().filter(|t| {
                t.group().is_none_or(|g| g == format!("service:{service_name}"))
                    && t.task_definition_arn().is_some_and(|arn| same_task_definition(arn, task_definition))
            });
            for task in of_service {
                for c in task.containers() {
                    if let (Some(name), Some(digest)) = (c.name(), c.image_digest()) {
                        digests.push((name.to_string(), digest.to_string()));
                    }
                }
            }
        }
        digests.sort();
        digests.dedup();
        Ok(digests)
    }

    async fn capacity_platforms(&self, cluster: &str) -> Result<Vec<Platform>, AwsError> {
        let mut by_instance: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for (attribute, os) in [("ecs.cpu-architecture", false), ("ecs.os-type", true)] {
            let attributes: Vec<aws_sdk_ecs::types::Attribute> = self
                .client
                .list_attributes()
                .cluster(cluster)
                .target_type(aws_sdk_ecs::types::TargetType::ContainerInstance)
                .attribute_name(attribute)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| classify("ListAttributes", e))?;
            for a in attributes {
                let (Some(target), Some(value)) = (a.target_id(), a.value()) else { continue };
                let entry = by_instance.entry(target.to_string()).or_default();
                if os {
                    entry.0 = Some(value.to_string());
                } else {
                    entry.1 = Some(value.to_string());
                }
            }
        }
        let mut platforms: Vec<Platform> = by_instance
            .into_values()
            .filter_map(|(os, arch)| {
                Some(Platform {
                    os: crate::model::oci_os(os.as_deref().unwrap_or("linux")).to_string(),
                    architecture: crate::model::oci_architecture(&arch?).to_string(),
                })
            })
            .collect();
        platforms.sort();
        platforms.dedup();
        Ok(platforms)
    }
}

/// `ids` split into batches of `batch`, `call` made for each with at most
/// `concurrency` in flight; the results in the order of `ids`. The first error
/// ends the walk (calls still in flight are dropped).
async fn in_batches<T, F, Fut>(ids: &[String], batch: usize, concurrency: usize, call: F) -> Result<Vec<T>, AwsError>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, AwsError>>,
{
    use futures::{StreamExt, TryStreamExt};
    // Owned batches: a closure over borrowed chunks makes the future not
    // `Send` for async_trait (a higher-ranked lifetime it cannot name).
    let batches: Vec<Vec<String>> = ids.chunks(batch.max(1)).map(<[String]>::to_vec).collect();
    futures::stream::iter(batches)
        .map(call)
        .buffered(concurrency.max(1))
        .try_fold(Vec::with_capacity(ids.len()), |mut all, some| async move {
            all.extend(some);
            Ok(all)
        })
        .await
}

/// DescribeServiceRevisions takes at most this many ARNs per call.
pub const SERVICE_REVISIONS_BATCH: usize = 20;

/// The same revision, named by ARN or by `family:revision` (moto stores the latter).
pub fn same_task_definition(a: &str, b: &str) -> bool {
    let short = |s: &str| s.rsplit_once(":task-definition/").map_or(s, |(_, r)| r).to_string();
    short(a) == short(b)
}

/// The source revision's tags with ours laid over them. `aws:` keys are
/// AWS-managed and RegisterTaskDefinition refuses them.
fn merged_tags(old: &[Tag], ours: &Tags) -> Vec<Tag> {
    let mut merged: BTreeMap<String, String> = old
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .filter(|(k, _)| !k.starts_with("aws:"))
        .collect();
    merged.extend(ours.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn to_service(s: &aws_sdk_ecs::types::Service) -> Option<Service> {
    Some(Service {
        arn: s.service_arn()?.to_string(),
        name: s.service_name()?.to_string(),
        cluster_arn: s.cluster_arn()?.to_string(),
        task_definition: s.task_definition()?.to_string(),
        tags: tags_of(s.tags()),
        circuit_breaker_rollback: s
            .deployment_configuration()
            .and_then(|c| c.deployment_circuit_breaker())
            .is_some_and(|b| b.enable && b.rollback),
        deployments: s
            .deployments()
            .iter()
            .filter(|d| matches!(d.status(), Some("PRIMARY" | "ACTIVE")))
            .filter_map(|d| d.task_definition().map(String::from))
            .collect(),
        deployment_controller: s.deployment_controller().map(|c| c.r#type().as_str().to_string()),
        launch_type: s.launch_type().map(|t| t.as_str().to_string()),
        capacity_providers: s.capacity_provider_strategy().iter().map(|p| p.capacity_provider().to_string()).collect(),
    })
}

fn tags_of(tags: &[Tag]) -> Tags {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect()
}

fn to_task_definition(td: &aws_sdk_ecs::types::TaskDefinition, tags: &[Tag]) -> Option<TaskDefinition> {
    Some(TaskDefinition {
        arn: td.task_definition_arn()?.to_string(),
        family: td.family()?.to_string(),
        revision: td.revision(),
        containers: td
            .container_definitions()
            .iter()
            .map(|c| Container {
                name: c.name().unwrap_or_default().to_string(),
                image: c.image().unwrap_or_default().to_string(),
                log: c.log_configuration().map(|l| LogConfiguration {
                    driver: l.log_driver().as_str().to_string(),
                    options: l
                        .options()
                        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                }),
            })
            .collect(),
        cpu_architecture: td.runtime_platform().and_then(|p| p.cpu_architecture()).map(|a| a.as_str().to_string()),
        os_family: td.runtime_platform().and_then(|p| p.operating_system_family()).map(|o| o.as_str().to_string()),
        tags: tags_of(tags),
    })
}

/// Paging and batching against the real SDK client with `aws-smithy-mocks`:
/// moto ignores `maxResults` and never returns a second page.
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
    use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
    use aws_sdk_ecs::operation::list_services::ListServicesOutput;
    use aws_sdk_ecs::types::{ContainerDefinition, LogConfiguration as SdkLog, LogDriver, Service as SdkService, Tag};
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    fn adapter(rules: &[&Rule]) -> EcsAdapter {
        EcsAdapter::from_client(mock_client!(aws_sdk_ecs, RuleMode::Sequential, rules))
    }

    fn arn(name: &str) -> String {
        format!("arn:aws:ecs:us-east-1:123456789012:service/prod/{name}")
    }

    #[tokio::test]
    async fn list_services_follows_every_page() {
        let pages = mock!(Client::list_services)
            .sequence()
            .output(|| {
                ListServicesOutput::builder().service_arns(arn("a")).service_arns(arn("b")).next_token("2").build()
            })
            .output(|| ListServicesOutput::builder().service_arns(arn("c")).next_token("3").build())
            .output(|| ListServicesOutput::builder().service_arns(arn("d")).build())
            .build();
        let services = adapter(&[&pages]).list_services("prod").await.expect("listed");
        assert_eq!(services, ["a", "b", "c", "d"].map(arn));
        assert_eq!(pages.num_calls(), 3);
    }

    /// moto ignores `maxResults`, so only the request shows the page size.
    #[tokio::test]
    async fn list_services_asks_for_pages_of_100() {
        let asked = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let pages = mock!(Client::list_services)
            .match_requests(move |r| {
                seen.lock().expect("lock").push(r.max_results());
                true
            })
            .sequence()
            .output(|| ListServicesOutput::builder().service_arns(arn("a")).next_token("2").build())
            .output(|| ListServicesOutput::builder().service_arns(arn("b")).build())
            .build();
        let services = adapter(&[&pages]).list_services("prod").await.expect("listed");
        assert_eq!(services, ["a", "b"].map(arn));
        assert_eq!(*asked.lock().expect("lock"), [Some(100), Some(100)], "every page asks for the API's maximum");
    }

    #[tokio::test]
    async fn batches_run_concurrently_within_the_bound_and_keep_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ids: Vec<String> = (0..95).map(|i| format!("s{i:02}")).collect();
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let sizes = Mutex::new(Vec::new());
        let described = in_batches(&ids, DESCRIBE_SERVICES_BATCH, DESCRIBE_SERVICES_CONCURRENCY, |batch| {
            let (in_flight, most, sizes) = (&in_flight, &most, &sizes);
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                sizes.lock().expect("lock").push(batch.len());
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(batch)
            }
        })
        .await
        .expect("described");
        assert_eq!(described, ids, "results in the order asked");
        assert_eq!(most.load(Ordering::SeqCst), DESCRIBE_SERVICES_CONCURRENCY, "concurrent, and never past the bound");
        assert_eq!(*sizes.lock().expect("lock"), [10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_the_whole_walk() {
        let ids: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
        let result = in_batches(&ids, 10, 3, |batch| async move {
            if batch[0] == "s10" {
                Err(AwsError::unexpected("DescribeServices", "boom"))
            } else {
                Ok(batch)
            }
        })
        .await;
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn describe_services_asks_ten_at_a_time_and_keeps_tags() {
        let names: Vec<String> = (0..25).map(|i| arn(&format!("s{i}"))).collect();
        let rule = mock!(Client::describe_services)
            .match_requests(|r| r.services().len() <= DESCRIBE_SERVICES_BATCH)
            .sequence()
            .output(|| {
                DescribeServicesOutput::builder()
                    .services(
                        SdkService::builder()
                            .service_arn(arn("s0"))
                            .service_name("s0")
                            .cluster_arn("arn:aws:ecs:us-east-1:123456789012:cluster/prod")
                            .task_definition("arn:aws:ecs:us-east-1:123456789012:task-definition/s0:3")
                            .tags(Tag::builder().key("autopilot:deploy").value("on").build())
                            .build(),
                    )
                    .build()
            })
            .output(|| DescribeServicesOutput::builder().build())
            .times(2)
            .build();
        let services = adapter(&[&rule]).describe_services("prod", &names).await.expect("described");
        assert_eq!(rule.num_calls(), 3, "ceil(25 / 10) calls");
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].cluster_name(), "prod");
        assert_eq!(services[0].tags.get("autopilot:deploy").map(String::as_str), Some("on"));
    }

    #[tokio::test]
    async fn task_definition_keeps_log_configuration() {
        let rule = mock!(Client::describe_task_definition).then_output(|| {
            DescribeTaskDefinitionOutput::builder()
                .task_definition(
                    aws_sdk_ecs::types::TaskDefinition::builder()
                        .task_definition_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/users:4")
                        .family("users")
                        .revision(4)
                        .container_definitions(
                            ContainerDefinition::builder()
                                .name("users")
                                .image("123456789012.dkr.ecr.us-east-1.amazonaws.com/users:latest")
                                .log_configuration(
                                    SdkLog::builder()
                                        .log_driver(LogDriver::Awslogs)
                                        .options("awslogs-group", "/ecs/users")
                                        .build()
                                        .expect("valid"),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let td = adapter(&[&rule]).describe_task_definition("users:4").await.expect("described");
        assert_eq!(td.revision, 4);
        let log = td.containers[0].log.as_ref().expect("log configuration");
        assert_eq!(log.driver, "awslogs");
        assert_eq!(log.options.get("awslogs-group").map(String::as_str), Some("/ecs/users"));
    }

    #[tokio::test]
    async fn missing_cluster_keeps_its_error_code() {
        let rule = mock!(Client::list_services)
            .sequence()
            .http_status(400, Some(r#"{"__type":"ClusterNotFoundException","message":"Cluster not found."}"#.into()))
            .build();
        let error = adapter(&[&rule]).list_services("nope").await.expect_err("missing");
        assert!(error.code_is("ClusterNotFoundException"));
        assert!(!error.retryable);
    }

    /// A warm container deploys many revisions; the cache of described task
    /// definitions must not grow with each (issue: memory in warm containers).
    #[test]
    fn the_described_cache_is_bounded_and_drops_the_oldest() {
        let mut cache = Bounded::new(DESCRIBED_CACHE_SIZE);
        let full = || (aws_sdk_ecs::types::TaskDefinition::builder().build(), Vec::<Tag>::new());
        for n in 0..DESCRIBED_CACHE_SIZE + 50 {
            cache.insert(format!("users:{n}"), full());
        }
        // the same key again is no new entry
        cache.insert(format!("users:{}", DESCRIBED_CACHE_SIZE + 49), full());
        assert_eq!(cache.entries.len(), DESCRIBED_CACHE_SIZE);
        assert_eq!(cache.order.len(), DESCRIBED_CACHE_SIZE);
        assert!(cache.get("users:0").is_none() && cache.get("users:49").is_none());
        assert!(cache.get("users:50").is_some());
    }

    /// EC2 capacity: every container instance's ecs.cpu-architecture and
    /// ecs.os-type, across pages (moto registers instances without them).
    #[tokio::test]
    async fn capacity_platforms_come_from_container_instance_attributes() {
        use aws_sdk_ecs::operation::list_attributes::ListAttributesOutput;
        use aws_sdk_ecs::types::{Attribute, TargetType};
        let attribute = |name: &str, value: &str, instance: &str| {
            Attribute::builder()
                .name(name)
                .value(value)
                .target_type(TargetType::ContainerInstance)
                .target_id(format!("arn:aws:ecs:us-east-1:123456789012:container-instance/prod/{instance}"))
                .build()
                .expect("attribute")
        };
        let arch = mock!(Client::list_attributes)
            .match_requests(|r| r.attribute_name() == Some("ecs.cpu-architecture"))
            .sequence()
            .output(move || {
                ListAttributesOutput::builder()
                    .attributes(attribute("ecs.cpu-architecture", "arm64", "i-1"))
                    .next_token("2")
                    .build()
            })
            .output(move || {
                ListAttributesOutput::builder().attributes(attribute("ecs.cpu-architecture", "arm64", "i-2")).build()
            })
            .build();
        let os = mock!(Client::list_attributes)
            .match_requests(|r| r.attribute_name() == Some("ecs.os-type"))
            .then_output(move || {
                ListAttributesOutput::builder()
                    .attributes(attribute("ecs.os-type", "linux", "i-1"))
                    .attributes(attribute("ecs.os-type", "linux", "i-2"))
                    .build()
            });
        let ecs = EcsAdapter::from_client(mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&arch, &os]));
        let platforms = ecs.capacity_platforms("prod").await.expect("read");
        assert_eq!(platforms, [Platform { os: "linux".into(), architecture: "arm64".into() }]);
        assert_eq!(arch.num_calls(), 2, "both pages");
    }

    /// Service deployments newest first, each with its revision's pinned digests.
    #[tokio::test]
    async fn service_deployments_carry_the_digests_ecs_pinned() {
        use aws_sdk_ecs::operation::describe_service_revisions::DescribeServiceRevisionsOutput;
        use aws_sdk_ecs::operation::list_service_deployments::ListServiceDeploymentsOutput;
        use aws_sdk_ecs::types::{
            ContainerImage, ServiceDeploymentBrief, ServiceDeploymentStatus, ServiceRevision as R,
        };
        let brief = |n: i64, status: ServiceDeploymentStatus| {
            ServiceDeploymentBrief::builder()
                .service_deployment_arn(format!("arn:aws:ecs:us-east-1:123456789012:service-deployment/prod/users/{n}"))
                .target_service_revision_arn(format!(
                    "arn:aws:ecs:us-east-1:123456789012:service-revision/prod/users/{n}"
                ))
                .status(status)
                .created_at(aws_smithy_types::DateTime::from_secs(n))
                .build()
        };
        let list = mock!(Client::list_service_deployments).then_output(move || {
            ListServiceDeploymentsOutput::builder()
                .service_deployments(brief(1, ServiceDeploymentStatus::Successful))
                .service_deployments(brief(2, ServiceDeploymentStatus::RollbackSuccessful))
                .build()
        });
        let revisions = mock!(Client::describe_service_revisions)
            .match_requests(|r| r.service_revision_arns().len() == 2)
            .then_output(|| {
                let revision = |n: u8| {
                    R::builder()
                        .service_revision_arn(format!(
                            "arn:aws:ecs:us-east-1:123456789012:service-revision/prod/users/{n}"
                        ))
                        .task_definition(format!("arn:aws:ecs:us-east-1:123456789012:task-definition/users:{n}"))
                        .container_images(
                            ContainerImage::builder()
                                .container_name("users")
                                .image("123456789012.dkr.ecr.us-east-1.amazonaws.com/users:latest")
                                .image_digest(format!("sha256:{}", format!("{n:02x}").repeat(32)))
                                .build(),
                        )
                        .build()
                };
                DescribeServiceRevisionsOutput::builder()
                    .service_revisions(revision(1))
                    .service_revisions(revision(2))
                    .build()
            });
        let ecs = EcsAdapter::from_client(mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&list, &revisions]));
        let deployments = ServiceHistory::service_deployments(&ecs, "prod", &arn("users")).await.expect("read");
        assert_eq!(
            deployments.iter().map(|d| d.status.as_str()).collect::<Vec<_>>(),
            ["ROLLBACK_SUCCESSFUL", "SUCCESSFUL"]
        );
        let first = deployments[1].revision.as_ref().expect("revision");
        assert!(same_task_definition(&first.task_definition, "users:1"));
        assert_eq!(first.containers[0].2.as_deref(), Some(format!("sha256:{}", "01".repeat(32)).as_str()));
        assert_eq!(revisions.num_calls(), 1, "one DescribeServiceRevisions for both");
    }

    /// Revisions never change, so the "in use" read describes each once per
    /// container: the fresh read before deleting, and a later batch, ask
    /// again only for a family name (which follows its latest revision) and
    /// for revisions not seen yet.
    #[tokio::test]
    async fn pinned_task_definitions_and_service_revisions_are_described_once() {
        use aws_sdk_ecs::operation::describe_service_revisions::DescribeServiceRevisionsOutput;
        use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
        use aws_sdk_ecs::types::ServiceRevision as R;
        let td = mock!(Client::describe_task_definition).then_output(|| {
            DescribeTaskDefinitionOutput::builder()
                .task_definition(
                    aws_sdk_ecs::types::TaskDefinition::builder()
                        .task_definition_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/users:4")
                        .family("users")
                        .revision(4)
                        .build(),
                )
                .build()
        });
        let revision_arn = |n: u8| format!("arn:aws:ecs:us-east-1:123456789012:service-revision/prod/users/{n}");
        let revisions = mock!(Client::describe_service_revisions).then_output(move || {
            let revision = |n: u8| {
                R::builder()
                    .service_revision_arn(revision_arn(n))
                    .container_images(
                        aws_sdk_ecs::types::ContainerImage::builder()
                            .image("123456789012.dkr.ecr.us-east-1.amazonaws.com/users:latest")
                            .image_digest(format!("sha256:{}", n.to_string().repeat(64)))
                            .build(),
                    )
                    .build()
            };
            DescribeServiceRevisionsOutput::builder()
                .service_revisions(revision(1))
                .service_revisions(revision(2))
                .build()
        });
        let ecs = EcsAdapter::from_client(mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&td, &revisions]));
        for _ in 0..3 {
            let read = EcsUsage::task_definition(&ecs, "users:4").await.expect("read").expect("found");
            assert_eq!(read.revision, 4);
        }
        EcsUsage::task_definition(&ecs, "arn:aws:ecs:us-east-1:123456789012:task-definition/users:4")
            .await
            .expect("read");
        assert_eq!(td.num_calls(), 2, "once per pinned name");
        for _ in 0..2 {
            EcsUsage::task_definition(&ecs, "users").await.expect("read");
        }
        assert_eq!(td.num_calls(), 4, "a family name is asked every time");

        let both = [revision_arn(1), revision_arn(2)];
        let first = EcsUsage::service_revisions(&ecs, &both).await.expect("read");
        let again = EcsUsage::service_revisions(&ecs, &both).await.expect("read");
        assert_eq!(first.len(), 2);
        assert_eq!(again.len(), 2);
        assert_eq!(revisions.num_calls(), 1, "the second read comes from what the first found");
    }

    /// ECS records a container's digest once it has resolved the image: a
    /// revision read before that is not final, and is asked again, so the
    /// digest it pins is protected once ECS knows it.
    #[tokio::test]
    async fn a_service_revision_without_its_digest_yet_is_read_again() {
        use aws_sdk_ecs::operation::describe_service_revisions::DescribeServiceRevisionsOutput;
        use aws_sdk_ecs::types::{ContainerImage as C, ServiceRevision as R};
        let arn = "arn:aws:ecs:us-east-1:123456789012:service-revision/prod/users/7";
        let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/users:latest";
        let digest = format!("sha256:{}", "d".repeat(64));
        let answer = |digest: Option<String>| {
            DescribeServiceRevisionsOutput::builder()
                .service_revisions(
                    R::builder()
                        .service_revision_arn(arn)
                        .container_images(C::builder().image(image).set_image_digest(digest).build())
                        .build(),
                )
                .build()
        };
        let (early, later) = (answer(None), answer(Some(digest.clone())));
        let revisions = mock!(Client::describe_service_revisions)
            .sequence()
            .output(move || early.clone())
            .output(move || later.clone())
            .build();
        let ecs = EcsAdapter::from_client(mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&revisions]));
        let arns = [arn.to_string()];
        let first = EcsUsage::service_revisions(&ecs, &arns).await.expect("read");
        assert_eq!(first[0].images[0].digest, None);
        let second = EcsUsage::service_revisions(&ecs, &arns).await.expect("read");
        assert_eq!(second[0].images[0].digest.as_deref(), Some(digest.as_str()), "asked again, digest now known");
        // A third call would find the mock's answers used up, and fail.
        let third = EcsUsage::service_revisions(&ecs, &arns).await.expect("read from the cache");
        assert_eq!(third[0].images[0].digest.as_deref(), Some(digest.as_str()));
        assert_eq!(revisions.num_calls(), 2, "cached once final");
    }

    #[test]
    fn a_name_pins_a_revision_when_it_ends_in_one() {
        for pinned in ["users:4", "arn:aws:ecs:us-east-1:123456789012:task-definition/users:12"] {
            assert!(pins_a_revision(pinned), "{pinned}");
        }
        for family in ["users", "arn:aws:ecs:us-east-1:123456789012:task-definition/users", ":4", "users:", "users:v4"]
        {
            assert!(!pins_a_revision(family), "{family}");
        }
    }
}
