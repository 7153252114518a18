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

use autopilot::aws::ApiCalls;
use autopilot::deploy::{
    plan_service, ContainerChange, Decision, ImageFacts, OptIn, Push, ServicePlan, TAG_SOURCE_DIGEST,
    TAG_SOURCE_REVISION,
};
use autopilot::discover;
use autopilot::ensure::{ensure_for_task_definition, GroupOutcome, GroupResult};
use autopilot::image_ref::ImageRef;
use autopilot::log_groups::{Settings, Usage};
use autopilot::media::is_index_media_type;
use autopilot::model::{Service, TaskDefinition};
use autopilot::ports::{EcrRead, EcsRead, EcsWrite, LogGroupStore};
use autopilot::telemetry::{Metrics, Unit};
use autopilot::Error;

pub use config::Config;
use event::Input;

/// ECS reads and writes, through one adapter so a new revision copies the
/// task definition discovery already read.
pub trait Ecs: EcsRead + EcsWrite {}
impl<T: EcsRead + EcsWrite> Ecs for T {}

pub struct Deps {
    pub config: Config,
    pub region: String,
    pub ecs: Box<dyn Ecs>,
    pub ecr: Box<dyn EcrRead>,
    pub logs: Box<dyn LogGroupStore>,
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
    pub services: Vec<ServiceReport>,
    /// Opted-in services that do not run this repository.
    pub unrelated_services: usize,
    pub api_calls: BTreeMap<String, u64>,
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
            services: Vec::new(),
            unrelated_services: 0,
            api_calls: BTreeMap::new(),
        }
    }
}

#[instrument(skip_all)]
pub async fn handle(deps: &Deps, payload: Value) -> Result<Report, Error> {
    let calls_before = deps.api_calls.snapshot();
    let input = Input::parse(payload)?;
    let mut report = match input {
        Input::Ignore { event_id, reason } => {
            info!(event_id = %event_id, reason = %reason, "event ignored");
            let mut report = Report::new("push", Some(event_id), deps.config.dry_run);
            report.skipped = Some(reason);
            report
        }
        Input::Push { push, manifest_media_type } => {
            let dry_run = deps.config.dry_run;
            let report = Report::new("push", Some(push.event_id.clone()), dry_run);
            roll_out(deps, report, &push, manifest_media_type.as_deref(), dry_run).await?
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
            roll_out(deps, report, &push, image.manifest_media_type.as_deref(), dry_run).await?
        }
    };
    report.api_calls = deps.api_calls.since(&calls_before);
    if !report.dry_run || report.services.iter().any(|s| s.status == Status::Updated) {
        metrics(&report, &deps.config.metrics_namespace).emit();
    }
    finish(report)
}

async fn roll_out(
    deps: &Deps,
    mut report: Report,
    push: &Push,
    media_type: Option<&str>,
    dry_run: bool,
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

    let facts = image_facts(deps, push, media_type, &relevant).await?;
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
        report.services.push(apply(deps, push, service, td, plan).await);
    }
    Ok(report)
}

/// What ECR says: the pushed image (push time, current tags), its platforms
/// if it is an index, and the images the relevant services are pinned to.
async fn image_facts(
    deps: &Deps,
    push: &Push,
    media_type: Option<&str>,
    relevant: &[(&Service, &TaskDefinition)],
) -> Result<ImageFacts, Error> {
    let mut facts =
        ImageFacts { pushed: deps.ecr.describe_image(&push.repository, &push.digest).await?, ..Default::default() };
    let maybe_index = media_type.is_none_or(is_index_media_type);
    if facts.pushed.is_some() && maybe_index {
        facts.platforms = deps.ecr.index_platforms(&push.repository, &push.digest).await?;
    }
    let mut running: Vec<String> = relevant
        .iter()
        .flat_map(|(s, td)| autopilot::deploy::matching_containers(push, s, td))
        .filter_map(|(_, image): (&str, ImageRef)| image.digest)
        .filter(|d| *d != push.digest)
        .collect();
    running.sort();
    running.dedup();
    for digest in running {
        if let Some(image) = deps.ecr.describe_image(&push.repository, &digest).await? {
            facts.running.insert(digest, image);
        }
    }
    Ok(facts)
}

async fn apply(deps: &Deps, push: &Push, service: &Service, td: &TaskDefinition, plan: ServicePlan) -> ServiceReport {
    let mut out = ServiceReport {
        cluster: service.cluster_name().to_string(),
        service: service.name.clone(),
        task_definition: td.arn.clone(),
        status: Status::Skipped,
        reason: None,
        track: plan.track,
        changes: Vec::new(),
        new_task_definition: None,
        warnings: plan.warnings,
        log_groups: Vec::new(),
        retryable: false,
    };
    let (changes, dry_run) = match plan.decision {
        Decision::Skip(reason) => {
            info!(service = %service.name, reason = %reason, "skipped");
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
    let revision = match reusable_revision(deps, push, td, &images).await {
        Some(arn) => arn,
        None => match deps
            .ecs
            .register_revision(&td.arn, &images, &push.revision_tags(&td.arn, images.keys().map(String::as_str)))
            .await
        {
            Ok(new) => new.arn,
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

fn metrics(report: &Report, namespace: &str) -> Metrics {
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

/// A run with failed services is an error (Lambda retries it, then the
/// failure queue gets it); the full report is logged first.
fn finish(report: Report) -> Result<Report, Error> {
    let failed: Vec<&ServiceReport> = report.services.iter().filter(|s| s.status == Status::Failed).collect();
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
        ecs.task_definitions = vec![users_td()];
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
                deployments: vec![],
            }],
        );
        Deps {
            config: Config::from_lookup(|_| None).expect("defaults"),
            region: "us-east-1".into(),
            ecs: Box::new(ecs),
            ecr: Box::new(FakeEcr { images: [(NEW.to_string(), image)].into(), platforms: Default::default() }),
            logs: Box::new(logs),
            api_calls: ApiCalls::default(),
        }
    }

    fn push(tag: &str, id: &str) -> Value {
        json!({"version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
               "account": "123456789012", "region": "us-east-1", "time": "2026-11-20T10:00:00Z", "resources": [],
               "detail": {"result": "SUCCESS", "repository-name": "users", "image-digest": NEW,
                          "action-type": "PUSH", "image-tag": tag}})
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
