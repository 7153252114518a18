//! deploy-on-push: an ECR push rolls the new image, pinned by digest, out to
//! every opted-in ECS service that tracks that repository and tag.
//!
//! snapshot (opted-in services, their task definitions, the images involved)
//! → plan ([`autopilot::deploy::plan_service`], per service) → apply (ensure
//! log groups, register a faithful copy with only the image changed, update
//! the service) → report.

pub mod config;
pub mod event;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use tracing::{info, instrument, warn};

use autopilot::aws::ecs::same_task_definition;
use autopilot::aws::ApiCalls;
use autopilot::deadline::Deadline;
use autopilot::deploy::{
    plan_service, ContainerChange, Decision, ImageFacts, OptIn, Push, ServicePlan, SkipClass, TAG_SOURCE_DIGEST,
    TAG_SOURCE_REVISION, TAG_SOURCE_TAG,
};
use autopilot::discover::{self, not_found_as};
use autopilot::ensure::{ensure_for_task_definition, GroupOutcome, GroupResult};
use autopilot::invocation::{settle, Envelope, Response};
use autopilot::log_groups::{Settings, Usage};
use autopilot::media::{self, is_index_media_type};
use autopilot::model::{Manifest, Platform, Service, TaskDefinition};
use autopilot::ports::{EcrRead, EcsRead, EcsWrite, LogGroupStore, Notifier, ServiceHistory};
use autopilot::telemetry::{Metrics, Unit};
use autopilot::Error;

pub use config::Config;
use event::{Input, RolloutEvent};

/// An image config blob larger than this is not an image config.
pub const CONFIG_BLOB_MAX_BYTES: u64 = 1024 * 1024;

/// ECS reads and writes, through one adapter so a new revision copies the
/// task definition discovery already read.
pub trait Ecs: EcsRead + EcsWrite + ServiceHistory {}
impl<T: EcsRead + EcsWrite + ServiceHistory> Ecs for T {}

pub struct Deps {
    pub config: Config,
    pub region: String,
    pub ecs: Box<dyn Ecs>,
    pub ecr: Box<dyn EcrRead>,
    pub logs: Box<dyn LogGroupStore>,
    /// The alarm topic, when `ALARM_TOPIC_ARN` is set.
    pub notifier: Option<Box<dyn Notifier>>,
    pub api_calls: ApiCalls,
}

/// What happened to one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Updated,
    /// A dry run: the change that would be made.
    Planned,
    Skipped,
    Failed,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    pub cluster: String,
    pub service: String,
    pub task_definition: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The class of a skip that `PushesSkipped` counts (its `Reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_class: Option<SkipClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ContainerChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_task_definition: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_groups: Vec<GroupOutcome>,
    #[serde(skip)]
    retryable: bool,
}

/// The invocation's plan/result document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub function: &'static str,
    pub trigger: &'static str,
    pub event_id: Option<String>,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Set when the whole event was skipped, with the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The class of a whole-push skip that `PushesSkipped` counts
    /// (`artifact`: the push is not a container image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_class: Option<SkipClass>,
    pub services: Vec<ServiceReport>,
    /// Opted-in services that do not run this repository.
    pub unrelated_services: usize,
    /// How a rollout ended, for an `ECS Deployment State Change` event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutReport>,
    /// Services (`cluster/service`) not started because the invocation's
    /// deadline was near (`DEADLINE_MARGIN_SECS`): the invocation fails,
    /// retryable, and Lambda's retry of the push rolls them out (the ones
    /// done are then on the digest already).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    pub api_calls: BTreeMap<String, u64>,
}

/// How one rollout of ours ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    Failed,
    RolledBack,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutReport {
    pub cluster: String,
    pub service: String,
    pub deployment_id: String,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A message went to the alarm topic.
    pub notified: bool,
}

impl Report {
    fn new(trigger: &'static str, event_id: Option<String>, dry_run: bool) -> Report {
        Report {
            function: "deploy-on-push",
            trigger,
            event_id,
            dry_run,
            repository: None,
            tag: None,
            digest: None,
            skipped: None,
            reason_class: None,
            services: Vec::new(),
            unrelated_services: 0,
            rollout: None,
            deferred: Vec::new(),
            api_calls: BTreeMap::new(),
        }
    }
}

/// The invocation as Lambda sees it: [`handle`], with a malformed or
/// unexpected EventBridge event rejected ([`autopilot::invocation`]) rather
/// than failed and retried. A manual preview still gets its error.
pub async fn invoke(deps: &Deps, payload: Value, deadline: Deadline) -> Result<Response<Report>, Error> {
    let envelope = Envelope::of(&payload);
    settle("deploy-on-push", &deps.config.metrics_namespace, envelope, handle_until(deps, payload, deadline).await)
}

pub async fn handle(deps: &Deps, payload: Value) -> Result<Report, Error> {
    handle_until(deps, payload, Deadline::none()).await
}

#[instrument(skip_all)]
pub async fn handle_until(deps: &Deps, payload: Value, deadline: Deadline) -> Result<Report, Error> {
    let calls_before = deps.api_calls.snapshot();
    let input = Input::parse(payload)?;
    let mut report = match input {
        Input::Ignore { event_id, reason } => {
            info!(event_id = %event_id, reason = %reason, "event ignored");
            let mut report = Report::new("push", Some(event_id), deps.config.dry_run);
            report.skipped = Some(reason);
            report
        }
        Input::Push { push, manifest_media_type, artifact_media_type } => {
            let dry_run = deps.config.dry_run;
            let mut report = Report::new("push", Some(push.event_id.clone()), dry_run);
            match not_an_image(artifact_media_type.as_deref(), manifest_media_type.as_deref()) {
                Some(reason) => {
                    info!(event_id = %push.event_id, reason = %reason, "push ignored");
                    report.repository = Some(push.repository.clone());
                    report.tag = Some(push.tag.clone());
                    report.digest = Some(push.digest.clone());
                    report.skipped = Some(reason);
                    report.reason_class = Some(SkipClass::Artifact);
                    report
                }
                None => roll_out(deps, report, &push, dry_run, deadline).await?,
            }
        }
        Input::Rollout(event) => {
            let report = Report::new("rollout", Some(event.event_id.clone()), deps.config.dry_run);
            follow_rollout(deps, report, &event).await?
        }
        Input::Manual(request) => {
            let dry_run = deps.config.dry_run || request.dry_run != Some(false);
            let Some((account, image)) = deps.ecr.resolve_tag(&request.repository, &request.tag).await? else {
                return Err(Error::NotFound(format!(
                    "image {}:{} (repository or tag does not exist)",
                    request.repository, request.tag
                )));
            };
            let push = Push {
                account,
                region: deps.region.clone(),
                repository: request.repository,
                digest: image.digest.clone(),
                tag: request.tag,
                event_id: "manual".into(),
            };
            let report = Report::new("manual", None, dry_run);
            roll_out(deps, report, &push, dry_run, deadline).await?
        }
    };
    report.api_calls = deps.api_calls.since(&calls_before);
    if let Some(outcome) = report.rollout.as_ref().and_then(|r| r.outcome) {
        rollout_metrics(&report, outcome, &deps.config.metrics_namespace).emit();
    } else if report.rollout.is_none()
        && (!report.dry_run || report.services.iter().any(|s| s.status == Status::Updated))
    {
        for metrics in metrics(&report, &deps.config.metrics_namespace) {
            metrics.emit();
        }
    }
    finish(report)
}

/// Why an event's `artifact-media-type` says the push is not a container
/// image, if it does. An event without one is checked on its manifest; an
/// index is checked through its platforms, whatever the event says.
pub fn not_an_image(artifact_media_type: Option<&str>, manifest_media_type: Option<&str>) -> Option<String> {
    let artifact = artifact_media_type.map(str::trim).filter(|a| !a.is_empty())?;
    if media::is_image_config_media_type(artifact) || manifest_media_type.is_some_and(is_index_media_type) {
        return None;
    }
    Some(format!("not a container image: the push is {}", media::describe(artifact)))
}

async fn roll_out(
    deps: &Deps,
    mut report: Report,
    push: &Push,
    dry_run: bool,
    deadline: Deadline,
) -> Result<Report, Error> {
    report.repository = Some(push.repository.clone());
    report.tag = Some(push.tag.clone());
    report.digest = Some(push.digest.clone());
    if push.region != deps.region {
        report.skipped = Some(format!("the push is in {}, this function serves {}", push.region, deps.region));
        return Ok(report);
    }

    // Snapshot: opted-in services (any autopilot:deploy value but off, so a
    // mistyped value is reported rather than ignored) and their task definitions.
    let services = discover::services(&*deps.ecs, &deps.config.clusters, deps.config.concurrency).await?;
    let candidates: Vec<&Service> = services.iter().filter(|s| OptIn::of(s) != Ok(OptIn::Off)).collect();
    let task_definitions = discover::task_definitions(
        &*deps.ecs,
        candidates.iter().map(|s| s.task_definition.as_str()),
        deps.config.concurrency,
    )
    .await?;
    let relevant: Vec<(&Service, &TaskDefinition)> = candidates
        .iter()
        .filter_map(|s| task_definitions.get(&s.task_definition).map(|td| (*s, td)))
        .filter(|(s, td)| !autopilot::deploy::matching_containers(push, s, td).is_empty())
        .collect();
    report.unrelated_services = candidates.len() - relevant.len();
    if relevant.is_empty() {
        report.skipped = Some(format!("no opted-in service runs repository {}", push.repository));
        info!(repository = %push.repository, "no service tracks this repository");
        return Ok(report);
    }

    let facts = match image_facts(deps, push, &relevant).await? {
        Ok(facts) => facts,
        Err(reason) => {
            info!(repository = %push.repository, reason = %reason, "push skipped");
            report.skipped = Some(reason);
            report.reason_class = Some(SkipClass::Artifact);
            return Ok(report);
        }
    };
    // An event forwarded from another account names that account's
    // registry; the repository of that name here is not the one pushed to.
    if let Some(owner) = facts.pushed.as_ref().and_then(|i| i.registry_id.as_deref()) {
        if owner != push.account {
            report.skipped = Some(format!(
                "the push is to account {}'s registry; repository {} here belongs to {owner}",
                push.account, push.repository
            ));
            return Ok(report);
        }
    }
    for (service, td) in relevant {
        let Some(plan) = plan_service(push, service, td, &facts, dry_run) else {
            report.unrelated_services += 1;
            continue;
        };
        // Never a service half rolled: the check is before it starts.
        if deadline.expiring() {
            report.deferred.push(format!("{}/{}", service.cluster_name(), service.name));
            continue;
        }
        report.services.push(apply(deps, push, service, td, plan).await);
    }
    Ok(report)
}

/// What AWS says: the pushed image (push time, current tags) and the
/// platforms it offers, what the relevant services run now (pinned by them,
/// or by ECS for a container that names a tag) and the capacity they run on.
/// `Err(Ok(reason))` when the push turns out not to be a runnable image.
async fn image_facts(
    deps: &Deps,
    push: &Push,
    relevant: &[(&Service, &TaskDefinition)],
) -> Result<Result<ImageFacts, String>, Error> {
    let mut facts =
        ImageFacts { pushed: deps.ecr.describe_image(&push.repository, &push.digest).await?, ..Default::default() };
    if facts.pushed.is_some() {
        match pushed_platforms(deps, push).await? {
            Ok(platforms) => facts.platforms = Some(platforms),
            Err(reason) => return Ok(Err(reason)),
        }
    }
    let mut running: Vec<String> = Vec::new();
    for (service, td) in relevant {
        let matching = autopilot::deploy::matching_containers(push, service, td);
        running.extend(matching.iter().filter_map(|(_, image)| image.digest.clone()));
        let by_tag: Vec<&str> = matching.iter().filter(|(_, i)| i.digest.is_none()).map(|(n, _)| *n).collect();
        if by_tag.is_empty() {
            continue;
        }
        for (container, digest) in pinned_by_ecs(deps, service).await? {
            if by_tag.contains(&container.as_str()) {
                running.push(digest.clone());
                facts.pinned_by_ecs.insert((service.arn.clone(), container), digest);
            }
        }
    }
    running.retain(|d| *d != push.digest);
    running.sort();
    running.dedup();
    for digest in running {
        if let Some(image) = deps.ecr.describe_image(&push.repository, &digest).await? {
            facts.running.insert(digest, image);
        }
    }
    for (service, td) in relevant {
        let needs_capacity = td.declared_platform().is_none() && !service.on_fargate();
        if needs_capacity && !facts.capacity.contains_key(service.cluster_name()) {
            let platforms = deps.ecs.capacity_platforms(&service.cluster_arn).await?;
            facts.capacity.insert(service.cluster_name().to_string(), platforms);
        }
    }
    Ok(Ok(facts))
}

/// `(container, digest)` ECS pinned for the service now: the newest service
/// revision of the task definition it runs, else its running tasks.
async fn pinned_by_ecs(deps: &Deps, service: &Service) -> Result<Vec<(String, String)>, Error> {
    let deployments = deps.ecs.service_deployments(&service.cluster_arn, &service.arn).await?;
    let revision = deployments
        .iter()
        .filter_map(|d| d.revision.as_ref())
        .find(|r| same_task_definition(&r.task_definition, &service.task_definition));
    if let Some(revision) = revision {
        return Ok(revision
            .containers
            .iter()
            .filter_map(|(name, _, digest)| Some((name.clone(), digest.clone()?)))
            .collect());
    }
    Ok(deps.ecs.task_digests(&service.cluster_arn, &service.name, &service.task_definition).await?)
}

/// The platforms the pushed image offers: an index's, or the one its config
/// blob names. `Err(Ok(reason))` for an artifact or an unusable config.
async fn pushed_platforms(deps: &Deps, push: &Push) -> Result<Result<Vec<Platform>, String>, Error> {
    let (config_media_type, config_digest, config_size, artifact_type) =
        match deps.ecr.manifest(&push.repository, &push.digest).await? {
            Manifest::Index { platforms } => return Ok(Ok(platforms)),
            Manifest::Single { config_media_type, config_digest, config_size, artifact_type } => {
                (config_media_type, config_digest, config_size, artifact_type)
            }
        };
    if let Some(artifact) = artifact_type.filter(|a| !media::is_image_config_media_type(a)) {
        return Ok(Err(format!("not a container image: the push is {}", media::describe(&artifact))));
    }
    if !media::is_image_config_media_type(&config_media_type) {
        let what =
            if config_media_type.is_empty() { "no config".to_string() } else { media::describe(&config_media_type) };
        return Ok(Err(format!("not a container image: its config is {what}")));
    }
    let too_large =
        || Ok(Err(format!("the image config blob {config_digest} is larger than 1 MiB: not an image config")));
    if config_size.is_some_and(|n| n > CONFIG_BLOB_MAX_BYTES) {
        return too_large();
    }
    let Some(blob) = deps.ecr.config_blob(&push.repository, &config_digest, CONFIG_BLOB_MAX_BYTES).await? else {
        return too_large();
    };
    Ok(platform_of_config(&blob)
        .map(|p| vec![p])
        .map_err(|problem| format!("the image config blob {config_digest} {problem}")))
}

/// The `os` and `architecture` an image config names.
pub fn platform_of_config(blob: &[u8]) -> Result<Platform, String> {
    let config: Value = serde_json::from_slice(blob).map_err(|e| format!("is not JSON: {e}"))?;
    let field = |name: &str| config.get(name).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty());
    match (field("os"), field("architecture")) {
        (Some(os), Some(architecture)) => Ok(Platform { os: os.to_string(), architecture: architecture.to_string() }),
        _ => Err("names no os and architecture".into()),
    }
}

async fn apply(deps: &Deps, push: &Push, service: &Service, td: &TaskDefinition, plan: ServicePlan) -> ServiceReport {
    let mut out = ServiceReport {
        cluster: service.cluster_name().to_string(),
        service: service.name.clone(),
        task_definition: td.arn.clone(),
        status: Status::Skipped,
        reason: None,
        reason_class: plan.skip_class,
        track: plan.track,
        changes: Vec::new(),
        new_task_definition: None,
        warnings: plan.warnings,
        log_groups: Vec::new(),
        retryable: false,
    };
    let (changes, dry_run) = match plan.decision {
        Decision::Skip(reason) => {
            // A push that should have reached production and did not: said
            // out loud. The other skips are routine.
            if matches!(plan.skip_class, Some(SkipClass::Platform | SkipClass::Older)) {
                warn!(service = %service.name, cluster = %out.cluster, digest = %push.digest, tag = %push.tag,
                      reason_class = plan.skip_class.map(SkipClass::as_str).unwrap_or_default(),
                      reason = %reason, "push skipped for this service");
            } else {
                info!(service = %service.name, reason = %reason, "skipped");
            }
            out.reason = Some(reason);
            return out;
        }
        Decision::Update { changes, dry_run } => (changes, dry_run),
    };
    out.changes = changes;
    if dry_run {
        out.status = Status::Planned;
        return out;
    }
    match roll(deps, push, service, td, &out.changes).await {
        Ok((revision, groups)) => {
            info!(service = %service.name, revision = %revision, digest = %push.digest, "deployed");
            out.status = Status::Updated;
            out.new_task_definition = Some(revision);
            out.log_groups = groups;
        }
        Err((error, groups)) => {
            warn!(service = %service.name, error = %error, "rollout failed");
            out.status = Status::Failed;
            out.retryable = error.is_retryable();
            out.reason = Some(error.to_string());
            out.log_groups = groups;
        }
    }
    out
}

type Rolled = Result<(String, Vec<GroupOutcome>), (Error, Vec<GroupOutcome>)>;

/// Log groups first, then the new revision (or one a replay already made),
/// then the service.
async fn roll(deps: &Deps, push: &Push, service: &Service, td: &TaskDefinition, changes: &[ContainerChange]) -> Rolled {
    let settings = Settings {
        home_region: deps.region.clone(),
        retention_days: deps.config.retention_days,
        kms_key_id: deps.config.kms_key_arn.clone(),
        dry_run: false,
    };
    let usage = Usage { cluster: Some(service.cluster_name().to_string()), service: Some(service.name.clone()) };
    let groups = ensure_for_task_definition(&*deps.logs, td, &usage, &settings).await;
    if let Some(failed) = groups.iter().find(|g| g.result == GroupResult::Failed) {
        let error = Error::Partial {
            failed: 1,
            total: groups.len(),
            first: format!("log group {}: {}", failed.log_group, failed.error.clone().unwrap_or_default()),
            retryable: failed.retryable,
        };
        return Err((error, groups));
    }
    let images: BTreeMap<String, String> = changes.iter().map(|c| (c.container.clone(), c.to.clone())).collect();
    let tags = push.revision_tags(&td.arn, images.keys().map(String::as_str));
    let revision = match reusable_revision(deps, push, td, &images).await {
        Some(arn) => arn,
        None => match deps.ecs.register_revision(&td.arn, &images, &tags).await {
            Ok(new) => new.arn,
            // ECS may have registered the revision and the answer been lost
            // (the adapter sends RegisterTaskDefinition once, without the
            // SDK's retries, because ECS has no idempotency token for it):
            // look for it before registering once more.
            Err(e) if e.retryable => match reusable_revision(deps, push, td, &images).await {
                Some(arn) => arn,
                None => match deps.ecs.register_revision(&td.arn, &images, &tags).await {
                    Ok(new) => new.arn,
                    Err(e) => return Err((e.into(), groups)),
                },
            },
            Err(e) => return Err((e.into(), groups)),
        },
    };
    match deps.ecs.update_service(&service.cluster_arn, &service.name, &revision).await {
        Ok(()) => Ok((revision, groups)),
        Err(e) => Err((e.into(), groups)),
    }
}

/// A replay after a rollout that registered its revision but failed to update
/// the service finds that revision as the family's latest: reuse it rather
/// than register another.
async fn reusable_revision(
    deps: &Deps,
    push: &Push,
    td: &TaskDefinition,
    images: &BTreeMap<String, String>,
) -> Option<String> {
    let latest = deps.ecs.describe_task_definition(&td.family).await.ok()?;
    let same_source = latest.tags.get(TAG_SOURCE_DIGEST) == Some(&push.digest)
        && latest.tags.get(TAG_SOURCE_REVISION) == Some(&td.arn)
        && latest.arn != td.arn;
    let same_images = latest.containers.iter().all(|c| images.get(&c.name).is_none_or(|want| *want == c.image))
        && latest.containers.len() == td.containers.len();
    (same_source && same_images).then_some(latest.arn)
}

/// The run's counts (dimension `Function`), and `PushesSkipped` per skip
/// class (dimensions `Function` and `Reason`), only for the classes that
/// occurred.
pub fn metrics(report: &Report, namespace: &str) -> Vec<Metrics> {
    let mut all = vec![counts(report, namespace)];
    let classes = report.reason_class.into_iter().chain(report.services.iter().filter_map(|s| s.reason_class));
    let mut skipped: BTreeMap<SkipClass, usize> = BTreeMap::new();
    for class in classes {
        *skipped.entry(class).or_default() += 1;
    }
    for (class, n) in skipped {
        let mut m = Metrics::new(namespace).dimension("Function", report.function).dimension("Reason", class.as_str());
        m.put("PushesSkipped", n as f64, Unit::Count);
        if let Some(repository) = &report.repository {
            m.property("repository", Value::String(repository.clone()));
        }
        all.push(m);
    }
    all
}

fn counts(report: &Report, namespace: &str) -> Metrics {
    let count = |status| report.services.iter().filter(|s| s.status == status).count() as f64;
    let mut m = Metrics::new(namespace).dimension("Function", report.function);
    m.put("ServicesUpdated", count(Status::Updated), Unit::Count)
        .put("ServicesPlanned", count(Status::Planned), Unit::Count)
        .put("ServicesSkipped", count(Status::Skipped), Unit::Count)
        .put("ServicesFailed", count(Status::Failed), Unit::Count)
        .put("ApiCalls", report.api_calls.values().sum::<u64>() as f64, Unit::Count);
    if let Some(repository) = &report.repository {
        m.property("repository", Value::String(repository.clone()));
    }
    m
}

/// An `ECS Deployment State Change`: which revision the deployment rolled
/// out, whether it is one of ours (`autopilot:source-digest`), how it ended;
/// a failure or a rollback is published to the alarm topic.
async fn follow_rollout(deps: &Deps, mut report: Report, event: &RolloutEvent) -> Result<Report, Error> {
    let service_name = event.service_arn.rsplit('/').next().unwrap_or_default().to_string();
    let mut rollout = RolloutReport {
        cluster: autopilot::model::cluster_name(&event.cluster).to_string(),
        service: service_name.clone(),
        deployment_id: event.deployment_id.clone(),
        event: event.event_name.clone(),
        outcome: None,
        task_definition: None,
        digest: None,
        tag: None,
        reason: event.reason.clone(),
        notified: false,
    };
    let finished = |mut report: Report, rollout: RolloutReport, skipped: Option<String>| {
        report.skipped = skipped;
        report.rollout = Some(rollout);
        Ok(report)
    };
    let completed = match event.event_name.as_str() {
        "SERVICE_DEPLOYMENT_COMPLETED" => true,
        "SERVICE_DEPLOYMENT_FAILED" => false,
        other => return finished(report, rollout, Some(format!("{other}: the rollout has not ended yet"))),
    };

    // The revision the deployment rolled out: from DescribeServices while it
    // lists the deployment, else the newest service deployment whose status
    // agrees with the event.
    let deployments = deps.ecs.service_deployments(&event.cluster, &event.service_arn).await?;
    let agrees = |status: &str| {
        if completed {
            status == "SUCCESSFUL"
        } else {
            matches!(status, "STOPPED" | "STOP_REQUESTED" | "FAILED") || status.starts_with("ROLLBACK_")
        }
    };
    let newest = deployments.iter().find(|d| d.revision.is_some() && agrees(&d.status));
    let listed = deps.ecs.deployment_task_definition(&event.cluster, &event.service_arn, &event.deployment_id).await?;
    let Some(task_definition) =
        listed.or_else(|| newest.and_then(|d| d.revision.as_ref()).map(|r| r.task_definition.clone()))
    else {
        let why =
            format!("deployment {} is no longer listed: which revision it rolled out is unknown", event.deployment_id);
        return finished(report, rollout, Some(why));
    };
    let revision = deps.ecs.describe_task_definition(&task_definition).await.map_err(|e| {
        not_found_as(e, || format!("task definition {task_definition:?} of deployment {}", event.deployment_id))
    })?;
    rollout.task_definition = Some(revision.arn.clone());
    let Some(digest) = revision.tags.get(TAG_SOURCE_DIGEST) else {
        let why = format!("not a rollout of ours: {} has no {TAG_SOURCE_DIGEST} tag", revision.arn);
        return finished(report, rollout, Some(why));
    };
    rollout.digest = Some(digest.clone());
    rollout.tag = revision.tags.get(TAG_SOURCE_TAG).cloned();
    let rolled_back = newest.is_some_and(|d| d.status.starts_with("ROLLBACK_"))
        || event.reason.as_deref().is_some_and(|r| {
            let r = r.to_ascii_lowercase();
            r.contains("rolling back") || r.contains("rolled back")
        });
    let outcome = match (completed, rolled_back) {
        (true, _) => Outcome::Succeeded,
        (false, true) => Outcome::RolledBack,
        (false, false) => Outcome::Failed,
    };
    rollout.outcome = Some(outcome);
    info!(service = %service_name, digest = %digest, outcome = ?outcome, "rollout ended");
    // DRY_RUN publishes nothing either; the report and metrics still tell.
    if outcome != Outcome::Succeeded && !report.dry_run {
        if let Some(notifier) = &deps.notifier {
            let verb = if outcome == Outcome::RolledBack { "rolled back" } else { "failed" };
            let subject = format!("ecr-autopilot: rollout to {}/{service_name} {verb}", rollout.cluster);
            let message = format!(
                "The rollout of {digest}{} to ECS service {service_name} (cluster {}) {verb}.\n\
                 Revision: {}\nDeployment: {}\nECS says: {}\n\n\
                 See it with: aws ecs list-service-deployments --cluster {} --service {service_name}",
                rollout.tag.as_deref().map(|t| format!(" (tag {t})")).unwrap_or_default(),
                rollout.cluster,
                revision.arn,
                event.deployment_id,
                event.reason.as_deref().unwrap_or("no reason given"),
                rollout.cluster,
            );
            notifier.publish(&subject, &message).await?;
            rollout.notified = true;
        }
    }
    report.rollout = Some(rollout);
    Ok(report)
}

fn rollout_metrics(report: &Report, outcome: Outcome, namespace: &str) -> Metrics {
    let is = |o| if outcome == o { 1.0 } else { 0.0 };
    let mut m = Metrics::new(namespace).dimension("Function", report.function);
    m.put("RolloutsSucceeded", is(Outcome::Succeeded), Unit::Count)
        .put("RolloutsFailed", is(Outcome::Failed), Unit::Count)
        .put("RolloutsRolledBack", is(Outcome::RolledBack), Unit::Count);
    if let Some(rollout) = &report.rollout {
        m.property("service", Value::String(format!("{}/{}", rollout.cluster, rollout.service)));
        if let Some(digest) = &rollout.digest {
            m.property("digest", Value::String(digest.clone()));
        }
    }
    m
}

/// A run with failed services is an error (Lambda retries it, then the
/// failure queue gets it); the full report is logged first.
fn finish(report: Report) -> Result<Report, Error> {
    let failed: Vec<&ServiceReport> = report.services.iter().filter(|s| s.status == Status::Failed).collect();
    if failed.is_empty() && !report.deferred.is_empty() {
        warn!(report = %serde_json::to_string(&report).unwrap_or_default(), deferred = report.deferred.len(),
              "deadline near: services deferred to the retry");
        return Err(Error::Partial {
            failed: report.deferred.len(),
            total: report.services.len() + report.deferred.len(),
            first: format!("{}: not started, the invocation's deadline was near", report.deferred[0]),
            retryable: true,
        });
    }
    let Some(first) = failed.first() else {
        info!(report = %serde_json::to_string(&report).unwrap_or_default(), "done");
        return Ok(report);
    };
    warn!(report = %serde_json::to_string(&report).unwrap_or_default(), "some services failed");
    Err(Error::Partial {
        failed: failed.len(),
        total: report.services.len(),
        first: format!("{}/{}: {}", first.cluster, first.service, first.reason.clone().unwrap_or_default()),
        retryable: failed.iter().any(|s| s.retryable),
    })
}

/// Handler tests over the in-memory fakes: orchestration the emulator cannot
/// show (a failing UpdateService, a failing log group), with no emulator.
/// The end-to-end tests in `tests/deploy_on_push.rs` run the binary on moto.
#[cfg(test)]
mod tests {
    use super::*;
    use autopilot::fakes::{FakeEcr, FakeEcs, FakeLogs};
    use autopilot::model::{Container, Image, LogConfiguration};
    use serde_json::json;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn users_td() -> TaskDefinition {
        TaskDefinition {
            arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/users:1".into(),
            family: "users".into(),
            revision: 1,
            containers: vec![Container {
                name: "users".into(),
                image: format!("{HOST}/users:latest"),
                log: Some(LogConfiguration {
                    driver: "awslogs".into(),
                    options: [("awslogs-group".to_string(), "/ecs/users".to_string())].into(),
                }),
            }],
            cpu_architecture: Some("ARM64".into()),
            os_family: None,
            tags: Default::default(),
        }
    }

    fn deps(ecs: FakeEcs, logs: FakeLogs) -> Deps {
        let image = Image {
            digest: NEW.into(),
            tags: vec!["latest".into(), "v2".into()],
            pushed_at: 100,
            size_bytes: Some(1),
            manifest_media_type: None,
            registry_id: None,
        };
        let mut ecs = ecs;
        ecs.task_definitions.insert(0, users_td());
        ecs.clusters.insert(
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod".into(),
            vec![Service {
                arn: "arn:aws:ecs:us-east-1:123456789012:service/prod/users".into(),
                name: "users".into(),
                cluster_arn: "arn:aws:ecs:us-east-1:123456789012:cluster/prod".into(),
                task_definition: users_td().arn,
                tags: [("autopilot:deploy".to_string(), "on".to_string()), ("autopilot:track".into(), "glob:*".into())]
                    .into(),
                circuit_breaker_rollback: true,
                ..Default::default()
            }],
        );
        Deps {
            config: Config::from_lookup(|_| None).expect("defaults"),
            region: "us-east-1".into(),
            ecs: Box::new(ecs),
            ecr: Box::new(FakeEcr { images: [(NEW.to_string(), image)].into(), ..Default::default() }),
            logs: Box::new(logs),
            notifier: None,
            api_calls: ApiCalls::default(),
        }
    }

    fn push(tag: &str, id: &str) -> Value {
        json!({"version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
               "account": "123456789012", "region": "us-east-1", "time": "2026-11-20T10:00:00Z", "resources": [],
               "detail": {"result": "SUCCESS", "repository-name": "users", "image-digest": NEW,
                          "action-type": "PUSH", "image-tag": tag}})
    }

    const SERVICE: &str = "arn:aws:ecs:us-east-1:123456789012:service/prod/users";

    /// users:2, a revision we made (or, without `ours`, one somebody else
    /// made), deployed by a service deployment in `status`.
    fn ecs_after_a_rollout(status: &str, ours: bool) -> FakeEcs {
        let mut ours_td = users_td();
        ours_td.arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/users:2".into();
        ours_td.revision = 2;
        if ours {
            ours_td.tags.insert(TAG_SOURCE_DIGEST.into(), NEW.into());
            ours_td.tags.insert(TAG_SOURCE_TAG.into(), "latest".into());
        }
        let deployment = autopilot::model::ServiceDeployment {
            arn: "arn:aws:ecs:us-east-1:123456789012:service-deployment/prod/users/abc".into(),
            status: status.into(),
            status_reason: None,
            created_at: 1_000,
            revision: Some(autopilot::model::ServiceRevision {
                arn: "arn:aws:ecs:us-east-1:123456789012:service-revision/prod/users/1".into(),
                task_definition: ours_td.arn.clone(),
                containers: vec![("users".into(), format!("{HOST}/users@{NEW}"), Some(NEW.into()))],
            }),
        };
        FakeEcs {
            task_definitions: vec![ours_td],
            deployments: vec![(SERVICE.into(), deployment)],
            ..FakeEcs::default()
        }
    }

    fn state_change(event_name: &str, reason: &str) -> Value {
        json!({"version": "0", "id": "d-1", "detail-type": "ECS Deployment State Change", "source": "aws.ecs",
               "account": "123456789012", "region": "us-east-1", "time": "2026-11-20T10:05:00Z",
               "resources": [SERVICE],
               "detail": {"eventType": "ERROR", "eventName": event_name, "deploymentId": "ecs-svc/1234567890",
                          "updatedAt": "2026-11-20T10:05:00Z", "reason": reason}})
    }

    #[tokio::test]
    async fn a_rolled_back_rollout_of_ours_is_reported_to_the_alarm_topic() {
        let notifier = std::sync::Arc::new(autopilot::fakes::FakeNotifier::default());
        let mut d = deps(ecs_after_a_rollout("ROLLBACK_SUCCESSFUL", true), FakeLogs::default());
        d.notifier = Some(Box::new(notifier.clone()));
        let report = handle(
            &d,
            state_change("SERVICE_DEPLOYMENT_FAILED", "ECS deployment circuit breaker: task failed to start."),
        )
        .await
        .expect("handled");
        let rollout = report.rollout.expect("a rollout report");
        assert_eq!(rollout.outcome, Some(Outcome::RolledBack));
        assert_eq!(rollout.digest.as_deref(), Some(NEW));
        assert!(rollout.notified);
        let messages = notifier.messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].0, "ecr-autopilot: rollout to prod/users rolled back");
        assert!(messages[0].1.contains(NEW) && messages[0].1.contains("task failed to start"), "{}", messages[0].1);
    }

    #[tokio::test]
    async fn a_failure_without_rollback_is_failed_and_a_success_notifies_nobody() {
        let notifier = std::sync::Arc::new(autopilot::fakes::FakeNotifier::default());
        let mut d = deps(ecs_after_a_rollout("STOPPED", true), FakeLogs::default());
        d.notifier = Some(Box::new(notifier.clone()));
        let report = handle(&d, state_change("SERVICE_DEPLOYMENT_FAILED", "tasks failed")).await.expect("handled");
        assert_eq!(report.rollout.and_then(|r| r.outcome), Some(Outcome::Failed));
        let mut d = deps(ecs_after_a_rollout("SUCCESSFUL", true), FakeLogs::default());
        d.notifier = Some(Box::new(notifier.clone()));
        let report = handle(&d, state_change("SERVICE_DEPLOYMENT_COMPLETED", "completed")).await.expect("handled");
        assert_eq!(report.rollout.and_then(|r| r.outcome), Some(Outcome::Succeeded));
        assert_eq!(notifier.messages().len(), 1, "only the failure was published");
    }

    #[tokio::test]
    async fn deployments_we_did_not_make_and_unfinished_ones_are_left_alone() {
        let notifier = std::sync::Arc::new(autopilot::fakes::FakeNotifier::default());
        let mut d = deps(ecs_after_a_rollout("ROLLBACK_SUCCESSFUL", false), FakeLogs::default());
        d.notifier = Some(Box::new(notifier.clone()));
        let report = handle(&d, state_change("SERVICE_DEPLOYMENT_FAILED", "x")).await.expect("handled");
        assert!(report.skipped.as_deref().unwrap_or_default().starts_with("not a rollout of ours"), "{report:?}");
        let report = handle(&d, state_change("SERVICE_DEPLOYMENT_IN_PROGRESS", "x")).await.expect("handled");
        assert!(report.skipped.as_deref().unwrap_or_default().contains("has not ended"));
        assert!(notifier.messages().is_empty());
    }

    #[test]
    fn pushes_skipped_is_counted_per_reason_with_its_dimension() {
        let skipped = |name: &str, class: Option<SkipClass>| ServiceReport {
            cluster: "prod".into(),
            service: name.into(),
            task_definition: String::new(),
            status: Status::Skipped,
            reason: Some("…".into()),
            reason_class: class,
            track: None,
            changes: Vec::new(),
            new_task_definition: None,
            warnings: Vec::new(),
            log_groups: Vec::new(),
            retryable: false,
        };
        let mut report = Report::new("push", Some("e-1".into()), false);
        report.repository = Some("users".into());
        report.services = vec![
            skipped("a", Some(SkipClass::Older)),
            skipped("b", Some(SkipClass::Platform)),
            skipped("c", Some(SkipClass::Older)),
            skipped("d", None),
        ];
        let docs: Vec<Value> = metrics(&report, "N").iter().flat_map(|m| m.documents(0)).collect();
        assert_eq!(docs.len(), 3, "the counts, then one document per reason that occurred: {docs:?}");
        assert_eq!(docs[0]["ServicesSkipped"], 4.0);
        assert!(docs[0].get("PushesSkipped").is_none());
        let skips: Vec<(Value, Value)> =
            docs[1..].iter().map(|d| (d["Reason"].clone(), d["PushesSkipped"].clone())).collect();
        assert_eq!(skips, [(json!("platform"), json!(1.0)), (json!("older"), json!(2.0))]);
        assert_eq!(docs[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function", "Reason"]]));
        // a whole push that is not an image counts once, as artifact
        let mut artifact = Report::new("push", Some("e-2".into()), false);
        artifact.reason_class = Some(SkipClass::Artifact);
        let docs: Vec<Value> = metrics(&artifact, "N").iter().flat_map(|m| m.documents(0)).collect();
        assert_eq!((docs[1]["Reason"].clone(), docs[1]["PushesSkipped"].clone()), (json!("artifact"), json!(1.0)));
    }

    #[test]
    fn artifact_media_types_that_are_not_images_are_skipped() {
        assert_eq!(not_an_image(Some("application/vnd.docker.container.image.v1+json"), None), None);
        assert_eq!(not_an_image(None, None), None, "no artifact type: the manifest is checked");
        let reason = not_an_image(Some("application/vnd.dev.cosign.artifact.sig.v1+json"), None).expect("skipped");
        assert!(reason.starts_with("not a container image: the push is a signature"), "{reason}");
        let unknown = not_an_image(Some("application/x-unknown"), None).expect("skipped");
        assert!(unknown.contains("application/x-unknown"));
        assert_eq!(not_an_image(Some("application/x-unknown"), Some("application/vnd.oci.image.index.v1+json")), None);
    }

    #[test]
    fn config_blobs_name_their_platform_or_are_refused() {
        assert_eq!(
            platform_of_config(br#"{"architecture":"arm64","os":"linux","rootfs":{}}"#),
            Ok(Platform { os: "linux".into(), architecture: "arm64".into() })
        );
        assert!(platform_of_config(b"\x89PNG").unwrap_err().starts_with("is not JSON"));
        assert_eq!(platform_of_config(br#"{"mediaType":"x"}"#), Err("names no os and architecture".into()));
    }

    /// A loopback HTTP server answering one GET with `body`, as S3 would a
    /// presigned URL.
    async fn blob_server(body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
        });
        format!("http://127.0.0.1:{port}/starport-layer-bucket/config")
    }

    /// The real ECR adapter over smithy mocks: the pushed image is a single
    /// manifest whose config (declared `size`) is served at `url`.
    fn mocked_ecr(url: String, size: u64) -> (autopilot::aws::ecr::EcrAdapter, aws_smithy_mocks::Rule) {
        use aws_sdk_ecr::operation::batch_get_image::BatchGetImageOutput;
        use aws_sdk_ecr::operation::describe_images::DescribeImagesOutput;
        use aws_sdk_ecr::operation::get_download_url_for_layer::GetDownloadUrlForLayerOutput;
        use aws_sdk_ecr::types::{Image as SdkImage, ImageDetail};
        use aws_sdk_ecr::Client;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        let config = "sha256:c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
        let describe = mock!(Client::describe_images).then_output(|| {
            DescribeImagesOutput::builder()
                .image_details(
                    ImageDetail::builder()
                        .image_digest(NEW)
                        .image_tags("latest")
                        .registry_id("123456789012")
                        .image_pushed_at(aws_smithy_types::DateTime::from_secs(100))
                        .build(),
                )
                .build()
        });
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": size},
            "layers": []})
        .to_string();
        let get = mock!(Client::batch_get_image).then_output(move || {
            BatchGetImageOutput::builder()
                .images(
                    SdkImage::builder()
                        .image_manifest(manifest.clone())
                        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
                        .build(),
                )
                .build()
        });
        let url_rule = mock!(Client::get_download_url_for_layer)
            .match_requests(move |r| r.layer_digest() == Some(config))
            .then_output(move || {
                GetDownloadUrlForLayerOutput::builder().download_url(url.clone()).layer_digest(config).build()
            });
        let client = mock_client!(aws_sdk_ecr, RuleMode::MatchAny, [&describe, &get, &url_rule]);
        (autopilot::aws::ecr::EcrAdapter::from_client(client), url_rule)
    }

    /// The config-blob platform guard, with the real ECR adapter over smithy
    /// mocks and a loopback server for the blob (moto has no
    /// GetDownloadUrlForLayer of its own): users runs ARM64.
    #[tokio::test]
    async fn the_config_blob_decides_the_platform_of_a_single_image() {
        let run = |ecr: autopilot::aws::ecr::EcrAdapter| async move {
            let mut d = deps(FakeEcs::default(), FakeLogs::default());
            d.ecr = Box::new(ecr);
            handle(&d, push("latest", "e-blob")).await.expect("handled")
        };
        // an amd64 image for an ARM64 service: refused, nothing written
        let (ecr, url_calls) = mocked_ecr(blob_server(br#"{"architecture":"amd64","os":"linux"}"#.to_vec()).await, 37);
        let report = run(ecr).await;
        assert_eq!(report.services[0].status, Status::Skipped);
        assert_eq!(
            report.services[0].reason.as_deref(),
            Some("platform mismatch: the service runs linux/arm64 (its runtimePlatform), the image offers linux/amd64")
        );
        assert_eq!(url_calls.num_calls(), 1);
        // an arm64 image: deployed
        let (ecr, _) = mocked_ecr(blob_server(br#"{"architecture":"arm64","os":"linux"}"#.to_vec()).await, 37);
        assert_eq!(run(ecr).await.services[0].status, Status::Updated);
        // a config that says it is over 1 MiB is not fetched; one that turns out larger is not read past 1 MiB
        let (ecr, url_calls) = mocked_ecr("https://never.fetched.invalid/".into(), CONFIG_BLOB_MAX_BYTES + 1);
        let report = run(ecr).await;
        assert!(report.skipped.as_deref().unwrap_or_default().contains("larger than 1 MiB"), "{report:?}");
        assert!(report.services.is_empty());
        assert_eq!(url_calls.num_calls(), 0);
        let (ecr, _) = mocked_ecr(blob_server(vec![b' '; CONFIG_BLOB_MAX_BYTES as usize + 10]).await, 37);
        assert!(run(ecr).await.skipped.as_deref().unwrap_or_default().contains("larger than 1 MiB"));
        // not JSON: skipped, naming the blob
        let (ecr, _) = mocked_ecr(blob_server(b"\x1f\x8b gzip".to_vec()).await, 37);
        let skipped = run(ecr).await.skipped.unwrap_or_default();
        assert!(skipped.contains("is not JSON"), "{skipped}");
    }

    #[tokio::test]
    async fn a_blob_url_that_fails_is_an_error_and_writes_nothing() {
        let (ecr, _) = mocked_ecr("http://198.51.100.7/not-loopback".into(), 37);
        let mut d = deps(FakeEcs::default(), FakeLogs::default());
        d.ecr = Box::new(ecr);
        let error = handle(&d, push("latest", "e-url")).await.expect_err("refused URL");
        assert!(error.to_string().contains("refused blob URL"), "{error}");
        assert!(!error.is_retryable(), "a URL we refuse will be refused again");
    }

    #[tokio::test]
    async fn near_the_deadline_no_service_starts_and_the_push_is_retried() {
        let d = deps(FakeEcs::default(), FakeLogs::default());
        let deadline = Deadline::in_(std::time::Duration::from_secs(5), std::time::Duration::from_secs(10));
        let error = handle_until(&d, push("latest", "e1"), deadline).await.expect_err("deferred");
        assert!(error.is_retryable(), "{error}");
        assert!(error.to_string().contains("not started, the invocation's deadline was near"), "{error}");
        // The retry, with time, rolls the service out.
        let retried = handle(&d, push("latest", "e1")).await.expect("rolled out");
        assert_eq!(retried.services[0].status, Status::Updated);
    }

    #[tokio::test]
    async fn two_tags_of_one_digest_make_one_rollout() {
        let d = deps(FakeEcs::default(), FakeLogs::default());
        let first = handle(&d, push("latest", "e1")).await.expect("first tag");
        assert_eq!(first.services[0].status, Status::Updated);
        let second = handle(&d, push("v2", "e2")).await.expect("second tag");
        assert_eq!(second.services[0].status, Status::Skipped);
        assert!(second.services[0].reason.as_deref().unwrap_or("").starts_with("already running"));
    }

    #[tokio::test]
    async fn a_failed_update_is_retryable_and_its_replay_reuses_the_revision() {
        let ecs = FakeEcs { failing_updates: std::sync::Mutex::new(1), ..FakeEcs::default() };
        let d = deps(ecs, FakeLogs::default());
        let error = handle(&d, push("latest", "e1")).await.expect_err("UpdateService throttled");
        assert!(error.is_retryable(), "{error}");
        // Lambda retries the same event: no second revision, the service moves.
        let report = handle(&d, push("latest", "e1")).await.expect("retry succeeds");
        assert_eq!(report.services[0].status, Status::Updated);
        assert_eq!(
            report.services[0].new_task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:123456789012:task-definition/users:2")
        );
        let again = handle(&d, push("latest", "e1")).await.expect("third delivery");
        assert_eq!(again.services[0].status, Status::Skipped);
    }

    #[tokio::test]
    async fn a_lost_register_answer_reuses_the_revision_ecs_made_rather_than_register_a_second() {
        let ecs = FakeEcs { lost_register_answers: std::sync::Mutex::new(1), ..FakeEcs::default() };
        let d = deps(ecs, FakeLogs::default());
        let report = handle(&d, push("latest", "e1")).await.expect("the rollout finds the revision");
        assert_eq!(report.services[0].status, Status::Updated);
        let users2 = "arn:aws:ecs:us-east-1:123456789012:task-definition/users:2";
        assert_eq!(report.services[0].new_task_definition.as_deref(), Some(users2));
        // A second registration would be users:3, the family's latest.
        let latest = d.ecs.describe_task_definition("users").await.expect("family");
        assert_eq!(latest.arn, users2, "exactly one revision for the digest");
    }

    #[tokio::test]
    async fn a_log_group_that_cannot_be_made_stops_the_rollout_before_any_write() {
        let logs = FakeLogs::default();
        logs.fail_on("/ecs/users");
        let d = deps(FakeEcs::default(), logs);
        let error = handle(&d, push("latest", "e1")).await.expect_err("log group denied");
        assert!(error.to_string().contains("log group /ecs/users"), "{error}");
        let again = deps(FakeEcs::default(), FakeLogs::default());
        // nothing was registered or updated in the failing run
        let report = handle(&again, push("latest", "e1")).await.expect("ok");
        assert_eq!(
            report.services[0].new_task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:123456789012:task-definition/users:2")
        );
    }
}
