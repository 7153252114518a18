//! One reader per source of "in use", and [`Sources`], which runs them all in
//! every protected region. A reader turns what its port returns into
//! [`Use`]s; task definitions are described once, at the end, for all of them.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{InUse, InUseReader, Source, SourceFailure, Use, Used, User};
use crate::deploy::{TAG_CONTAINERS, TAG_DEPLOY, TAG_TRACK};
use crate::model::{cluster_name, TaskDefinition};
use crate::ports::{DeploymentBrief, EcsUsage, ImageFunctions, RuleTargets, ScheduleTargets, ServiceUsage};
use crate::AwsError;

/// The ports of one region.
pub struct RegionSources {
    pub region: String,
    pub ecs: Box<dyn EcsUsage>,
    pub rules: Box<dyn RuleTargets>,
    pub schedules: Box<dyn ScheduleTargets>,
    pub functions: Box<dyn ImageFunctions>,
}

/// Every source in every region of `PROTECT_REGIONS`.
pub struct Sources {
    pub regions: Vec<RegionSources>,
    /// Calls in flight per region (`SWEEP_CONCURRENCY`).
    pub concurrency: usize,
}

#[async_trait]
impl InUseReader for Sources {
    async fn read(&self) -> Result<InUse, SourceFailure> {
        let per_region: Vec<InUse> =
            stream::iter(&self.regions).then(|r| read_region(r, self.concurrency)).try_collect().await?;
        let mut set = InUse::default();
        for part in per_region {
            set.extend(part);
        }
        Ok(set)
    }
}

/// All sources of one region.
pub async fn read_region(r: &RegionSources, concurrency: usize) -> Result<InUse, SourceFailure> {
    let region = r.region.as_str();
    let ecs = &*r.ecs;
    let concurrency = concurrency.max(1);
    let ecs_side = async {
        let clusters =
            ecs.clusters().await.map_err(|e| SourceFailure::new(Source::ServiceDeployment, region, "ecs", e))?;
        let services = services(ecs, region, &clusters, concurrency).await?;
        let mut uses = service_deployments(ecs, region, &services, concurrency).await?;
        uses.extend(task_sets(region, &services));
        uses.extend(tasks(ecs, region, &clusters, concurrency).await?);
        uses.extend(task_definition_families(ecs, region).await?);
        Ok::<_, SourceFailure>(uses)
    };
    let (mut uses, rules, schedules, functions) = futures::try_join!(
        ecs_side,
        event_bridge_rules(&*r.rules, region),
        scheduler_schedules(&*r.schedules, region),
        lambda_functions(&*r.functions, region),
    )?;
    uses.extend(rules);
    uses.extend(schedules);
    uses.extend(functions);
    let described = describe_task_definitions(ecs, region, &uses, concurrency).await?;
    Ok(InUse::from_uses(&uses, &described))
}

fn gone(e: &AwsError) -> bool {
    e.code_is("ClusterNotFoundException") || e.code_is("ServiceNotFoundException")
}

/// Every service of every cluster (a cluster deleted meanwhile has none).
pub async fn services(
    ecs: &dyn EcsUsage,
    region: &str,
    clusters: &[String],
    concurrency: usize,
) -> Result<Vec<ServiceUsage>, SourceFailure> {
    // Owned items: a closure over borrowed ones is not `Send` enough for async-trait.
    let per_cluster: Vec<Vec<ServiceUsage>> = stream::iter(clusters.to_vec())
        .map(|cluster| async move {
            match ecs.services(&cluster).await {
                Err(e) if gone(&e) => Ok(Vec::new()),
                other => other,
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .map_err(|e| SourceFailure::new(Source::ServiceDeployment, region, "ecs", e))?;
    let mut all: Vec<ServiceUsage> = per_cluster.into_iter().flatten().collect();
    all.sort_by(|a, b| a.arn.cmp(&b.arn));
    Ok(all)
}

/// `autopilot:deploy` is `on` or `dry-run`: deploy-on-push follows the service.
fn deploys_on_push(s: &ServiceUsage) -> bool {
    s.tags.get(TAG_DEPLOY).is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "on" | "dry-run"))
}

fn service_user(source: Source, s: &ServiceUsage, region: &str) -> User {
    User::new(source, format!("{}/{}", cluster_name(&s.cluster_arn), s.name), region)
}

/// Deployment statuses after which ECS no longer moves tasks.
const FINISHED: &[&str] = &["SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"];
const SUCCEEDED: &[&str] = &["SUCCESSFUL", "ROLLBACK_SUCCESSFUL"];

/// Which deployments of one service to protect: every one not finished
/// (an unknown status counts as not finished), the newest finished one, and
/// the newest successful one (what a rollback returns to). Pure.
pub fn deployments_to_protect(briefs: &[DeploymentBrief]) -> Vec<String> {
    let mut chosen: BTreeSet<String> =
        briefs.iter().filter(|b| !FINISHED.contains(&b.status.as_str())).map(|b| b.arn.clone()).collect();
    let newest = |filter: &dyn Fn(&DeploymentBrief) -> bool| {
        briefs.iter().filter(|b| filter(b)).max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.arn.cmp(&b.arn)))
    };
    if let Some(b) = newest(&|b| FINISHED.contains(&b.status.as_str())) {
        chosen.insert(b.arn.clone());
    }
    if let Some(b) = newest(&|b| SUCCEEDED.contains(&b.status.as_str())) {
        chosen.insert(b.arn.clone());
    }
    chosen.into_iter().collect()
}

/// Source "service deployments": the task definitions DescribeServices
/// names, and the pinned digests of the service revisions of the deployments
/// [`deployments_to_protect`] picks, with their source revisions.
pub async fn service_deployments(
    ecs: &dyn EcsUsage,
    region: &str,
    services: &[ServiceUsage],
    concurrency: usize,
) -> Result<Vec<Use>, SourceFailure> {
    let fail = |e| SourceFailure::new(Source::ServiceDeployment, region, "ecs", e);
    let mut uses = Vec::new();
    for s in services {
        let user = service_user(Source::ServiceDeployment, s, region);
        for td in s.task_definition.iter().chain(&s.deployment_task_definitions) {
            uses.push(Use::new(&user, Used::TaskDefinition(td.clone())));
        }
        if let (true, Some(td)) = (deploys_on_push(s), &s.task_definition) {
            uses.push(Use::new(
                &user,
                Used::Tracks {
                    task_definition: td.clone(),
                    track: s.tags.get(TAG_TRACK).cloned(),
                    containers: s.tags.get(TAG_CONTAINERS).cloned(),
                },
            ));
        }
    }
    let briefs: Vec<(usize, Vec<DeploymentBrief>)> = stream::iter(0..services.len())
        .map(|i| async move {
            let s = &services[i];
            match ecs.service_deployments(&s.cluster_arn, &s.arn).await {
                Ok(b) => Ok((i, b)),
                Err(e) if gone(&e) => Ok((i, Vec::new())),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .map_err(fail)?;
    // revision ARN → the services whose deployments name it
    let mut revisions: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut deployment_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, b) in &briefs {
        let chosen = deployments_to_protect(b);
        for brief in b.iter().filter(|d| chosen.contains(&d.arn)) {
            if let Some(target) = &brief.target_revision {
                revisions.entry(target.clone()).or_default().insert(*i);
            }
            deployment_of.insert(brief.arn.clone(), *i);
        }
    }
    let arns: Vec<String> = deployment_of.keys().cloned().collect();
    if !arns.is_empty() {
        for d in ecs.describe_service_deployments(&arns).await.map_err(fail)? {
            let Some(i) = deployment_of.get(&d.arn) else { continue };
            for revision in d.target_revision.iter().chain(&d.source_revisions) {
                revisions.entry(revision.clone()).or_default().insert(*i);
            }
        }
    }
    let arns: Vec<String> = revisions.keys().cloned().collect();
    if !arns.is_empty() {
        for revision in ecs.service_revisions(&arns).await.map_err(fail)? {
            let Some(owners) = revisions.get(&revision.arn) else { continue };
            for i in owners {
                let user = service_user(Source::ServiceDeployment, &services[*i], region);
                for image in &revision.images {
                    uses.push(Use::new(&user, Used::Image(image.image.clone())));
                    if let Some(digest) = &image.digest {
                        uses.push(Use::new(&user, Used::Digest(digest.clone())));
                    }
                }
                if revision.images.is_empty() {
                    if let Some(td) = &revision.task_definition {
                        uses.push(Use::new(&user, Used::TaskDefinition(td.clone())));
                    }
                }
            }
        }
    }
    Ok(uses)
}

/// Source "task sets": what CODE_DEPLOY and EXTERNAL services run. Pure:
/// DescribeServices already returned them.
pub fn task_sets(region: &str, services: &[ServiceUsage]) -> Vec<Use> {
    services
        .iter()
        .flat_map(|s| {
            let user = service_user(Source::TaskSet, s, region);
            s.task_set_task_definitions.iter().map(move |td| Use::new(&user, Used::TaskDefinition(td.clone())))
        })
        .collect()
}

/// Source "tasks": tasks desired RUNNING or PENDING in every cluster,
/// standalone tasks (RunTask, schedules, Step Functions) included.
pub async fn tasks(
    ecs: &dyn EcsUsage,
    region: &str,
    clusters: &[String],
    concurrency: usize,
) -> Result<Vec<Use>, SourceFailure> {
    let per_cluster: Vec<(String, Vec<crate::ports::TaskUsage>)> = stream::iter(clusters.to_vec())
        .map(|cluster| async move {
            match ecs.tasks(&cluster).await {
                Ok(t) => Ok((cluster, t)),
                Err(e) if gone(&e) => Ok((cluster, Vec::new())),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .map_err(|e| SourceFailure::new(Source::Task, region, "ecs", e))?;
    let mut uses = Vec::new();
    for (cluster, tasks) in per_cluster {
        for t in tasks {
            let id = t.arn.rsplit('/').next().unwrap_or(&t.arn);
            let user = User::new(Source::Task, format!("{}/{id}", cluster_name(&cluster)), region);
            for image in &t.images {
                uses.push(Use::new(&user, Used::Image(image.image.clone())));
                if let Some(digest) = &image.digest {
                    uses.push(Use::new(&user, Used::Digest(digest.clone())));
                }
            }
            // A pending task may not report its containers yet.
            if t.images.is_empty() && !t.task_definition.is_empty() {
                uses.push(Use::new(&user, Used::TaskDefinition(t.task_definition.clone())));
            }
        }
    }
    Ok(uses)
}

/// Source "task-definition families": the latest ACTIVE revision of each,
/// which is what RunTask, Step Functions or a console user gets by family name.
pub async fn task_definition_families(ecs: &dyn EcsUsage, region: &str) -> Result<Vec<Use>, SourceFailure> {
    let families = ecs
        .task_definition_families()
        .await
        .map_err(|e| SourceFailure::new(Source::TaskDefinitionFamily, region, "ecs", e))?;
    Ok(families
        .into_iter()
        .map(|f| Use::new(&User::new(Source::TaskDefinitionFamily, f.clone(), region), Used::TaskDefinition(f)))
        .collect())
}

/// A task definition as a target names it. An ARN without a revision means
/// the family's latest ACTIVE revision: describe it by family name.
pub fn target_task_definition(arn: &str) -> String {
    match arn.rsplit_once(":task-definition/") {
        Some((_, rest)) if !rest.contains(':') => rest.to_string(),
        _ => arn.to_string(),
    }
}

/// Source "EventBridge rules": ECS targets on every event bus.
pub async fn event_bridge_rules(port: &dyn RuleTargets, region: &str) -> Result<Vec<Use>, SourceFailure> {
    let targets =
        port.ecs_targets().await.map_err(|e| SourceFailure::new(Source::EventBridgeRule, region, "events", e))?;
    Ok(targets
        .into_iter()
        .map(|(who, td)| {
            Use::new(
                &User::new(Source::EventBridgeRule, who, region),
                Used::TaskDefinition(target_task_definition(&td)),
            )
        })
        .collect())
}

/// Source "Scheduler schedules": ECS targets of every schedule in every group.
pub async fn scheduler_schedules(port: &dyn ScheduleTargets, region: &str) -> Result<Vec<Use>, SourceFailure> {
    let targets =
        port.ecs_targets().await.map_err(|e| SourceFailure::new(Source::SchedulerSchedule, region, "scheduler", e))?;
    Ok(targets
        .into_iter()
        .map(|(who, td)| {
            Use::new(
                &User::new(Source::SchedulerSchedule, who, region),
                Used::TaskDefinition(target_task_definition(&td)),
            )
        })
        .collect())
}

/// Source "Lambda functions": image URI and resolved digest of every
/// version packaged as an image.
pub async fn lambda_functions(port: &dyn ImageFunctions, region: &str) -> Result<Vec<Use>, SourceFailure> {
    let functions =
        port.image_functions().await.map_err(|e| SourceFailure::new(Source::LambdaFunction, region, "lambda", e))?;
    let mut uses = Vec::new();
    for f in functions {
        let user = User::new(Source::LambdaFunction, f.name.clone(), region);
        if let Some(uri) = f.image_uri {
            uses.push(Use::new(&user, Used::Image(uri)));
        }
        if let Some(resolved) = f.resolved_image_uri {
            if let Some((_, digest)) = resolved.split_once('@') {
                uses.push(Use::new(&user, Used::Digest(digest.to_string())));
            }
            uses.push(Use::new(&user, Used::Image(resolved)));
        }
    }
    Ok(uses)
}

/// DescribeTaskDefinition once per distinct name. Families go first, so a
/// service's ARN that is its family's latest revision is not described twice.
pub async fn describe_task_definitions(
    ecs: &dyn EcsUsage,
    region: &str,
    uses: &[Use],
    concurrency: usize,
) -> Result<BTreeMap<String, TaskDefinition>, SourceFailure> {
    let mut named_by: BTreeMap<&str, Source> = BTreeMap::new();
    for u in uses {
        if let Used::TaskDefinition(name) | Used::Tracks { task_definition: name, .. } = &u.used {
            named_by.entry(name.as_str()).or_insert(u.user.source);
        }
    }
    let named_by = &named_by;
    let (families, others): (Vec<&str>, Vec<&str>) = named_by.keys().copied().partition(|n| !n.contains(':'));
    let mut described: BTreeMap<String, TaskDefinition> = BTreeMap::new();
    for phase in [families, others] {
        let by_arn: BTreeMap<String, TaskDefinition> =
            described.values().map(|td| (td.arn.clone(), td.clone())).collect();
        let todo: Vec<String> = phase
            .into_iter()
            .filter(|n| match by_arn.get(*n) {
                Some(td) => {
                    described.insert(n.to_string(), td.clone());
                    false
                }
                None => true,
            })
            .map(String::from)
            .collect();
        let found: Vec<(String, Option<TaskDefinition>)> = stream::iter(todo)
            .map(|name| async move {
                ecs.task_definition(&name).await.map(|td| (name.clone(), td)).map_err(|e| {
                    let source = named_by.get(name.as_str()).copied().unwrap_or(Source::ServiceDeployment);
                    SourceFailure::new(source, region, "ecs", e)
                })
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        described.extend(found.into_iter().filter_map(|(name, td)| Some((name, td?))));
    }
    Ok(described)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(arn: &str, status: &str, created_at: i64) -> DeploymentBrief {
        DeploymentBrief { arn: arn.into(), status: status.into(), created_at, target_revision: None }
    }

    #[test]
    fn in_progress_deployments_and_the_latest_finished_and_successful_ones_are_protected() {
        let briefs = [
            brief("d1", "SUCCESSFUL", 1),
            brief("d2", "SUCCESSFUL", 2),
            brief("d3", "ROLLBACK_FAILED", 3),
            brief("d4", "IN_PROGRESS", 4),
            brief("d5", "SOMETHING_NEW", 5),
            brief("d0", "STOPPED", 0),
        ];
        assert_eq!(deployments_to_protect(&briefs), ["d2", "d3", "d4", "d5"]);
        assert!(deployments_to_protect(&[]).is_empty());
        assert_eq!(deployments_to_protect(&[brief("a", "STOPPED", 1)]), ["a"]);
    }

    #[test]
    fn a_target_without_revision_means_the_family() {
        let base = "arn:aws:ecs:us-east-1:123456789012:task-definition/nightly";
        assert_eq!(target_task_definition(base), "nightly");
        assert_eq!(target_task_definition(&format!("{base}:7")), format!("{base}:7"));
        assert_eq!(target_task_definition("nightly:7"), "nightly:7");
    }
}
