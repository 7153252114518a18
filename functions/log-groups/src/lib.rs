//! log-groups: makes sure every `awslogs-group` that an ECS task definition in
//! use writes to exists, tagged, with a retention, before its tasks start.
//!
//! snapshot (the task definitions in use, read from ECS, never from the event
//! alone) → plan ([`autopilot::log_groups`]) → apply
//! ([`autopilot::ensure`]) → report.

pub mod config;
pub mod event;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use tracing::{info, instrument, warn};

use autopilot::aws::ApiCalls;
use autopilot::deadline::Deadline;
use autopilot::discover::{self, not_found_as};
use autopilot::ensure::{ensure_log_groups_until, GroupOutcome, GroupResult};
use autopilot::log_groups::{targets, Settings, Usage};
use autopilot::model::{cluster_name, TaskDefinition};
use autopilot::origin::{account_of_arn, Origin};
use autopilot::ports::{EcsRead, LogGroupStore};
use autopilot::telemetry::{Metrics, Unit};
use autopilot::Error;

pub use config::Config;
use event::{ApiCall, ManualRequest, Trigger};

pub struct Deps {
    pub config: Config,
    /// The region the function runs in; log groups elsewhere are skipped.
    pub region: String,
    pub ecs: Box<dyn EcsRead>,
    pub logs: Box<dyn LogGroupStore>,
    /// Counts the AWS calls the adapters make, for the report.
    pub api_calls: ApiCalls,
}

/// The invocation's result document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub function: &'static str,
    pub trigger: String,
    pub dry_run: bool,
    pub region: String,
    pub retention_days: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub task_definitions: Vec<String>,
    pub created: Vec<String>,
    pub retention_set: Vec<String>,
    pub already_compliant: Vec<String>,
    pub skipped: Vec<Skipped>,
    pub failed: Vec<Failed>,
    /// Groups not started: the invocation's deadline was near.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    pub groups: Vec<GroupOutcome>,
    /// AWS calls this invocation made, per operation (pages and retries count).
    pub api_calls: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    pub log_group: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failed {
    pub log_group: String,
    pub error: String,
}

/// The invocation as Lambda sees it: [`handle`], with a malformed or
/// unexpected EventBridge event rejected ([`autopilot::invocation`]) rather
/// than failed and retried. A manual request still gets its error.
pub async fn invoke(
    deps: &Deps,
    payload: Value,
    deadline: Deadline,
) -> Result<autopilot::invocation::Response<Report>, Error> {
    let envelope = autopilot::invocation::Envelope::of(&payload);
    let result = handle_until(deps, payload, deadline).await;
    autopilot::invocation::settle("log-groups", &deps.config.metrics_namespace, envelope, result)
}

pub async fn handle(deps: &Deps, payload: Value) -> Result<Report, Error> {
    handle_until(deps, payload, Deadline::none()).await
}

/// A group not started because the deadline was near is `deferred`, and the
/// run fails retryable after its report: Lambda's retry (or the next sweep)
/// makes it, and finds the ones made already compliant.
#[instrument(skip_all)]
pub async fn handle_until(deps: &Deps, payload: Value, deadline: Deadline) -> Result<Report, Error> {
    let origin = Origin::of(&payload);
    let trigger = Trigger::parse(payload)?;
    if let Some(origin) = &origin {
        origin.check_region(&deps.region)?;
    }
    let calls_before = deps.api_calls.snapshot();
    let dry_run = deps.config.dry_run || trigger.dry_run();
    info!(trigger = %trigger.name(), dry_run, "invoked");

    let (in_use, note) = match &trigger {
        Trigger::ApiCall(ApiCall { error_code: Some(code), event_name, .. }) => {
            (vec![], Some(format!("the {event_name} call failed ({code}): it changed nothing, so neither do we")))
        }
        Trigger::ApiCall(call) => (task_definitions_of_call(deps, call).await?, None),
        Trigger::Schedule => (sweep(deps, &deps.config.clusters).await?, None),
        Trigger::Manual(request) => (manual(deps, request).await?, None),
    };

    // What an event from another account names is not ours to act on: the
    // task definitions read here carry this account in their ARNs.
    if let Some(origin) = &origin {
        for (td, _) in &in_use {
            if let Some(owner) = account_of_arn(&td.arn) {
                origin.check_account(owner, &format!("task definition {}", td.arn))?;
            }
        }
    }
    let (targets, skipped) = targets(in_use.iter().map(|(td, usage)| (td, usage)), &deps.region);
    let settings = Settings {
        home_region: deps.region.clone(),
        retention_days: deps.config.retention_days,
        kms_key_id: deps.config.kms_key_arn.clone(),
        dry_run,
    };
    let mut groups: Vec<GroupOutcome> = skipped.iter().map(GroupOutcome::skipped_use).collect();
    groups.extend(ensure_log_groups_until(&*deps.logs, targets, &settings, deps.config.concurrency, deadline).await);

    let task_definitions: BTreeSet<String> = in_use.iter().map(|(td, _)| td.arn.clone()).collect();
    let mut report = Report::new(&trigger, &settings, note, task_definitions.into_iter().collect(), groups);
    report.api_calls = deps.api_calls.since(&calls_before);
    if !dry_run {
        report.metrics(&deps.config.metrics_namespace).emit();
    }
    report.into_result()
}

type InUse = Vec<(TaskDefinition, Usage)>;

/// The task definitions an ECS API call touched, read back from ECS: the
/// service's current one (what its tasks start from now) and the one the call
/// named, if different.
async fn task_definitions_of_call(deps: &Deps, call: &ApiCall) -> Result<InUse, Error> {
    let mut wanted: BTreeMap<String, Usage> = BTreeMap::new();
    let mut usage = Usage::default();
    if let Some(service) = &call.service {
        // ECS's own default when a call names no cluster.
        let cluster = call.cluster.as_deref().unwrap_or("default");
        let found =
            deps.ecs.describe_services(cluster, std::slice::from_ref(service)).await.map_err(|e| {
                not_found_as(e, || format!("cluster {cluster:?} named by the {} event", call.event_name))
            })?;
        usage = Usage {
            cluster: Some(cluster_name(cluster).to_string()),
            service: Some(service_name(service).to_string()),
        };
        if let Some(current) = found.first() {
            usage.cluster = Some(current.cluster_name().to_string());
            wanted.insert(current.task_definition.clone(), usage.clone());
        }
    }
    if let Some(named) = &call.task_definition {
        wanted.entry(named.clone()).or_insert_with(|| usage.clone());
    }
    if wanted.is_empty() {
        return Err(Error::NotFound(format!(
            "service {:?} in cluster {:?} (from the {} event) does not exist",
            call.service.as_deref().unwrap_or_default(),
            call.cluster.as_deref().unwrap_or("default"),
            call.event_name
        )));
    }
    describe_all(deps, wanted.into_iter().map(|(td, usage)| (td, vec![usage])).collect()).await
}

async fn manual(deps: &Deps, request: &ManualRequest) -> Result<InUse, Error> {
    match (&request.clusters, &request.task_definitions) {
        (None, Some(named)) => {
            let wanted = named.iter().map(|td| (td.clone(), vec![Usage::default()])).collect();
            describe_all(deps, wanted).await
        }
        (clusters, named) => {
            let clusters = clusters.as_ref().unwrap_or(&deps.config.clusters);
            let mut in_use = sweep(deps, clusters).await?;
            let extra = named.iter().flatten().map(|td| (td.clone(), vec![Usage::default()])).collect();
            in_use.extend(describe_all(deps, extra).await?);
            Ok(in_use)
        }
    }
}

/// Every service's current task definition in these clusters (all when empty).
async fn sweep(deps: &Deps, clusters: &[String]) -> Result<InUse, Error> {
    let services = discover::services(&*deps.ecs, clusters, deps.config.concurrency).await?;
    let mut wanted: BTreeMap<String, Vec<Usage>> = BTreeMap::new();
    for service in &services {
        wanted
            .entry(service.task_definition.clone())
            .or_default()
            .push(Usage { cluster: Some(service.cluster_name().to_string()), service: Some(service.name.clone()) });
    }
    info!(services = services.len(), task_definitions = wanted.len(), "swept services");
    describe_all(deps, wanted).await
}

/// DescribeTaskDefinition once per distinct task definition, bounded.
async fn describe_all(deps: &Deps, wanted: BTreeMap<String, Vec<Usage>>) -> Result<InUse, Error> {
    let mut described =
        discover::task_definitions(&*deps.ecs, wanted.keys().map(String::as_str), deps.config.concurrency).await?;
    Ok(wanted
        .into_iter()
        .filter_map(|(name, usages)| described.remove(&name).map(|td| (td, usages)))
        .flat_map(|(td, usages)| usages.into_iter().map(move |u| (td.clone(), u)))
        .collect())
}

/// `arn:aws:ecs:…:service/cluster/name` → `name`.
fn service_name(service: &str) -> &str {
    if service.starts_with("arn:") {
        service.rsplit('/').next().unwrap_or(service)
    } else {
        service
    }
}

impl Report {
    fn new(
        trigger: &Trigger,
        settings: &Settings,
        note: Option<String>,
        task_definitions: Vec<String>,
        groups: Vec<GroupOutcome>,
    ) -> Report {
        let named = |result: GroupResult| -> Vec<String> {
            groups.iter().filter(|g| g.result == result).map(|g| g.log_group.clone()).collect()
        };
        Report {
            function: "log-groups",
            trigger: trigger.name(),
            dry_run: settings.dry_run,
            region: settings.home_region.clone(),
            retention_days: settings.retention_days,
            note,
            task_definitions,
            created: named(GroupResult::Created),
            retention_set: named(GroupResult::RetentionSet),
            already_compliant: named(GroupResult::AlreadyCompliant),
            skipped: groups
                .iter()
                .filter(|g| g.result == GroupResult::Skipped)
                .map(|g| Skipped { log_group: g.log_group.clone(), reason: g.reason.clone().unwrap_or_default() })
                .collect(),
            failed: groups
                .iter()
                .filter(|g| g.result == GroupResult::Failed)
                .map(|g| Failed { log_group: g.log_group.clone(), error: g.error.clone().unwrap_or_default() })
                .collect(),
            deferred: groups
                .iter()
                .filter(|g| g.result == GroupResult::Deferred)
                .map(|g| g.log_group.clone())
                .collect(),
            groups,
            api_calls: BTreeMap::new(),
        }
    }

    pub fn metrics(&self, namespace: &str) -> Metrics {
        let mut metrics = Metrics::new(namespace).dimension("Function", self.function);
        metrics
            .put("LogGroupsCreated", self.created.len() as f64, Unit::Count)
            .put("LogGroupsRetentionSet", self.retention_set.len() as f64, Unit::Count)
            .put("LogGroupsCompliant", self.already_compliant.len() as f64, Unit::Count)
            .put("LogGroupsSkipped", self.skipped.len() as f64, Unit::Count)
            .put("LogGroupsFailed", self.failed.len() as f64, Unit::Count)
            .put("LogGroupsDeferred", self.deferred.len() as f64, Unit::Count)
            .put("ApiCalls", self.api_calls.values().sum::<u64>() as f64, Unit::Count)
            .property("trigger", Value::String(self.trigger.clone()));
        metrics
    }

    /// A run with failed groups is an error, so Lambda retries it and the
    /// on-failure destination gets it; the full report is logged first.
    fn into_result(self) -> Result<Report, Error> {
        if self.failed.is_empty() && !self.deferred.is_empty() {
            warn!(report = %serde_json::to_string(&self).unwrap_or_default(), deferred = self.deferred.len(),
                  "deadline near: log groups deferred to the retry");
            return Err(Error::Partial {
                failed: self.deferred.len(),
                total: self.groups.len(),
                first: format!("{}: not started, the invocation's deadline was near", self.deferred[0]),
                retryable: true,
            });
        }
        let Some(first) = self.failed.first() else {
            info!(report = %serde_json::to_string(&self).unwrap_or_default(), "done");
            return Ok(self);
        };
        warn!(report = %serde_json::to_string(&self).unwrap_or_default(), "some log groups failed");
        Err(Error::Partial {
            failed: self.failed.len(),
            total: self.groups.len(),
            first: format!("{}: {}", first.log_group, first.error),
            retryable: self.groups.iter().any(|g| g.result == GroupResult::Failed && g.retryable),
        })
    }
}

/// Handler tests over the in-memory fakes: the orchestration (which task
/// definitions are read for which trigger, what the report says), with no
/// emulator. The end-to-end tests in `tests/log_groups.rs` run the binary.
#[cfg(test)]
mod tests {
    use super::*;
    use autopilot::fakes::{FakeEcs, FakeLogs};
    use autopilot::model::{Container, LogConfiguration, Service};
    use serde_json::json;

    const ACCOUNT: &str = "123456789012";

    fn td(family: &str, groups: &[&str]) -> TaskDefinition {
        TaskDefinition {
            arn: format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/{family}:1"),
            family: family.into(),
            revision: 1,
            containers: groups
                .iter()
                .enumerate()
                .map(|(i, g)| Container {
                    name: format!("{family}-{i}"),
                    image: "nginx".into(),
                    log: Some(LogConfiguration {
                        driver: "awslogs".into(),
                        options: [("awslogs-group".to_string(), g.to_string())].into(),
                    }),
                })
                .collect(),
            cpu_architecture: None,
            os_family: None,
            tags: Default::default(),
        }
    }

    fn service(cluster: &str, name: &str) -> Service {
        Service {
            arn: format!("arn:aws:ecs:us-east-1:{ACCOUNT}:service/{cluster}/{name}"),
            name: name.into(),
            cluster_arn: format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{cluster}"),
            task_definition: format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/{name}:1"),
            tags: Default::default(),
            circuit_breaker_rollback: false,
            ..Default::default()
        }
    }

    fn deps(logs: FakeLogs, config: Config) -> Deps {
        let mut clusters = BTreeMap::new();
        clusters.insert(format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/prod"), vec![service("prod", "users")]);
        clusters.insert(format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/staging"), vec![service("staging", "posts")]);
        let ecs = FakeEcs {
            clusters,
            task_definitions: vec![
                td("users", &["/ecs/users", "/ecs/users-envoy"]),
                td("posts", &["/ecs/posts"]),
                td("batch", &["/ecs/batch"]),
            ],
            ..FakeEcs::default()
        };
        Deps {
            config,
            region: "us-east-1".into(),
            ecs: Box::new(ecs),
            logs: Box::new(logs),
            api_calls: ApiCalls::default(),
        }
    }

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::from_lookup(autopilot::config::lookup_from(pairs)).expect("valid")
    }

    fn cloudtrail(event_name: &str, detail: Value) -> Value {
        let mut d = json!({"eventSource": "ecs.amazonaws.com", "eventName": event_name});
        d.as_object_mut().expect("object").extend(detail.as_object().expect("object").clone());
        json!({"source": "aws.ecs", "detail-type": "AWS API Call via CloudTrail", "detail": d})
    }

    #[tokio::test]
    async fn near_the_deadline_no_group_is_started_and_the_run_is_retried() {
        let d = deps(FakeLogs::default(), config(&[]));
        let deadline = Deadline::in_(std::time::Duration::ZERO, std::time::Duration::from_secs(10));
        let sweep = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        let error = handle_until(&d, sweep.clone(), deadline).await.expect_err("deferred");
        assert!(error.is_retryable() && error.to_string().contains("deadline was near"), "{error}");
        let report = handle(&d, sweep).await.expect("the retry makes them");
        assert_eq!(report.created, ["/ecs/posts", "/ecs/users", "/ecs/users-envoy"], "none was made before");
    }

    #[tokio::test]
    async fn sweep_covers_every_cluster_unless_clusters_is_set() {
        let all = deps(FakeLogs::default(), config(&[]));
        let report = handle(&all, json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}))
            .await
            .expect("ok");
        assert_eq!(report.created, ["/ecs/posts", "/ecs/users", "/ecs/users-envoy"]);

        let prod_only = deps(FakeLogs::default(), config(&[("CLUSTERS", "prod")]));
        let report = handle(&prod_only, json!({"dryRun": false})).await.expect("ok");
        assert_eq!(report.created, ["/ecs/users", "/ecs/users-envoy"]);
    }

    #[tokio::test]
    async fn update_service_reads_the_service_current_task_definition() {
        let d = deps(FakeLogs::default(), config(&[]));
        let event =
            cloudtrail("UpdateService", json!({"requestParameters": {"cluster": "staging", "service": "posts"}}));
        let report = handle(&d, event).await.expect("ok");
        assert_eq!(report.created, ["/ecs/posts"]);
        assert_eq!(report.groups[0].services, ["posts"]);
        assert_eq!(report.groups[0].clusters, ["staging"]);
    }

    #[tokio::test]
    async fn register_task_definition_ensures_an_unused_revision_too() {
        let d = deps(FakeLogs::default(), config(&[]));
        let event = cloudtrail(
            "RegisterTaskDefinition",
            json!({"responseElements": {"taskDefinition": {"taskDefinitionArn": format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/batch:1")}}}),
        );
        assert_eq!(handle(&d, event).await.expect("ok").created, ["/ecs/batch"]);
    }

    #[tokio::test]
    async fn a_failed_api_call_reads_and_writes_nothing() {
        let logs = FakeLogs::default();
        logs.fail_on("/ecs/users");
        let d = deps(logs, config(&[]));
        let event = cloudtrail(
            "CreateService",
            json!({"errorCode": "InvalidParameterException", "requestParameters": {"cluster": "prod", "serviceName": "users"}}),
        );
        let report = handle(&d, event).await.expect("ok");
        assert!(report.groups.is_empty());
        assert!(report.note.as_deref().unwrap_or("").contains("InvalidParameterException"));
    }

    #[tokio::test]
    async fn a_missing_service_is_not_found() {
        let d = deps(FakeLogs::default(), config(&[]));
        let event = cloudtrail("UpdateService", json!({"requestParameters": {"cluster": "prod", "service": "gone"}}));
        let error = handle(&d, event).await.expect_err("not found");
        assert!(matches!(error, Error::NotFound(_)), "{error}");
    }

    #[tokio::test]
    async fn failed_groups_fail_the_invocation_after_the_others_are_done() {
        let logs = FakeLogs::default();
        logs.fail_on("/ecs/users-envoy");
        let d = deps(logs, config(&[("CLUSTERS", "prod")]));
        let error = handle(&d, json!({"dryRun": false})).await.expect_err("partial failure");
        match error {
            Error::Partial { failed, total, retryable, ref first } => {
                assert_eq!((failed, total, retryable), (1, 2, false));
                assert!(first.starts_with("/ecs/users-envoy: "), "{first}");
            }
            other => panic!("expected Partial, got {other}"),
        }
    }
}
