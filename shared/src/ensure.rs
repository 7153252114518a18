//! "Ensure log groups": read each target group, decide with the pure planner
//! ([`crate::log_groups::decide`]), apply, and say what happened.
//!
//! `log-groups` runs this over every task definition in use; `deploy-on-push`
//! runs it over a new revision before pointing a service at it, so tasks never
//! start against a missing `awslogs-group`.

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tracing::{info, warn};

use crate::deadline::Deadline;
use crate::log_groups::{decide, targets, Decision, Settings, SkipReason, SkippedUse, Target, Usage};
use crate::model::TaskDefinition;
use crate::ports::{Created, LogGroupStore};
use crate::AwsError;

/// What happened to one log group. In a dry run `applied` is false and the
/// result is what would have happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupResult {
    Created,
    RetentionSet,
    AlreadyCompliant,
    Skipped,
    Failed,
    /// Not started: the invocation's deadline was near.
    Deferred,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOutcome {
    pub log_group: String,
    pub result: GroupResult,
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub retryable: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_definitions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

impl GroupOutcome {
    fn of(target: &Target, result: GroupResult) -> Self {
        GroupOutcome {
            log_group: target.name.clone(),
            result,
            applied: false,
            retention_days: None,
            reason: None,
            error: None,
            retryable: false,
            task_definitions: target.task_definitions.iter().cloned().collect(),
            containers: target.containers.iter().cloned().collect(),
            clusters: target.clusters.iter().cloned().collect(),
            services: target.services.iter().cloned().collect(),
        }
    }

    /// A container whose configuration could not be acted on at all.
    pub fn skipped_use(skip: &SkippedUse) -> Self {
        GroupOutcome {
            log_group: skip.log_group.clone(),
            result: GroupResult::Skipped,
            applied: false,
            retention_days: None,
            reason: Some(skip.reason.describe()),
            error: None,
            retryable: false,
            task_definitions: vec![skip.task_definition.clone()],
            containers: vec![skip.container.clone()],
            clusters: vec![],
            services: vec![],
        }
    }
}

/// Ensures the log groups of one task definition (deploy-on-push's entry).
pub async fn ensure_for_task_definition(
    store: &dyn LogGroupStore,
    task_definition: &TaskDefinition,
    usage: &Usage,
    settings: &Settings,
) -> Vec<GroupOutcome> {
    let (targets, skipped) = targets([(task_definition, usage)], &settings.home_region);
    let mut outcomes: Vec<GroupOutcome> = skipped.iter().map(GroupOutcome::skipped_use).collect();
    outcomes.extend(ensure_log_groups(store, targets, settings, 4).await);
    outcomes
}

/// Ensures every target, at most `concurrency` at a time. Never fails as a
/// whole: a group whose calls fail is reported as [`GroupResult::Failed`].
pub async fn ensure_log_groups(
    store: &dyn LogGroupStore,
    targets: Vec<Target>,
    settings: &Settings,
    concurrency: usize,
) -> Vec<GroupOutcome> {
    ensure_log_groups_until(store, targets, settings, concurrency, Deadline::none()).await
}

/// [`ensure_log_groups`], starting no group once the deadline is near: such
/// a group is [`GroupResult::Deferred`], never half made.
pub async fn ensure_log_groups_until(
    store: &dyn LogGroupStore,
    targets: Vec<Target>,
    settings: &Settings,
    concurrency: usize,
    deadline: Deadline,
) -> Vec<GroupOutcome> {
    let mut outcomes: Vec<GroupOutcome> = stream::iter(targets)
        .map(|target| async move {
            if deadline.expiring() {
                return GroupOutcome::of(&target, GroupResult::Deferred);
            }
            match ensure_one(store, &target, settings).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    warn!(log_group = %target.name, error = %error, "log group could not be ensured");
                    let mut outcome = GroupOutcome::of(&target, GroupResult::Failed);
                    outcome.retryable = error.retryable;
                    outcome.error = Some(error.to_string());
                    outcome
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    outcomes.sort_by(|a, b| a.log_group.cmp(&b.log_group));
    outcomes
}

async fn ensure_one(store: &dyn LogGroupStore, target: &Target, settings: &Settings) -> Result<GroupOutcome, AwsError> {
    let existing = store.find(&target.name).await?;
    let decision = decide(target, existing.as_ref(), settings);
    if settings.dry_run {
        return Ok(outcome_of(target, &decision, false));
    }
    if let Decision::Create { tags, retention_days, kms_key_id } = &decision {
        match store.create(&target.name, tags, kms_key_id.as_deref()).await? {
            Created::New => {
                store.put_retention(&target.name, *retention_days).await?;
                info!(log_group = %target.name, retention_days, "created log group");
                return Ok(outcome_of(target, &decision, true));
            }
            Created::AlreadyExisted => {
                // Someone (often the awslogs driver itself) created it between
                // our read and our write: decide again from what is there now.
                let now = store.find(&target.name).await?;
                let again = decide(target, now.as_ref(), settings);
                if matches!(again, Decision::Create { .. }) {
                    return Err(vanished(&target.name));
                }
                return apply_existing(store, target, again).await;
            }
        }
    }
    apply_existing(store, target, decision).await
}

async fn apply_existing(
    store: &dyn LogGroupStore,
    target: &Target,
    decision: Decision,
) -> Result<GroupOutcome, AwsError> {
    if let Decision::SetRetention { arn, tags, retention_days } = &decision {
        store.put_retention(&target.name, *retention_days).await?;
        if let Some(arn) = arn {
            store.tag(arn, tags).await?;
        }
        info!(log_group = %target.name, retention_days, "set retention on a never-expiring log group");
    }
    Ok(outcome_of(target, &decision, true))
}

fn outcome_of(target: &Target, decision: &Decision, wrote: bool) -> GroupOutcome {
    let (result, retention_days, reason) = match decision {
        Decision::Create { retention_days, .. } => (GroupResult::Created, Some(*retention_days), None),
        Decision::SetRetention { retention_days, .. } => (GroupResult::RetentionSet, Some(*retention_days), None),
        Decision::Compliant { retention_days } => (GroupResult::AlreadyCompliant, Some(*retention_days), None),
        Decision::Skip(reason) => (GroupResult::Skipped, None, Some(reason)),
    };
    let mut outcome = GroupOutcome::of(target, result);
    let writes = matches!(result, GroupResult::Created | GroupResult::RetentionSet);
    outcome.applied = wrote && writes;
    outcome.retention_days = retention_days;
    outcome.reason = reason.map(SkipReason::describe);
    outcome
}

fn vanished(name: &str) -> AwsError {
    AwsError {
        operation: "DescribeLogGroups",
        code: None,
        message: format!("log group {name} reported as existing but could not be read back"),
        retryable: true,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeLogs;
    use crate::log_groups::TAG_RETENTION;
    use crate::model::LogGroup;

    fn settings(dry_run: bool) -> Settings {
        Settings { home_region: "us-east-1".into(), retention_days: 7, kms_key_id: None, dry_run }
    }

    fn target(name: &str) -> Target {
        Target { name: name.into(), in_use: true, ..Default::default() }
    }

    fn group(name: &str, retention: Option<i32>, manual: bool) -> LogGroup {
        let mut tags = crate::model::Tags::new();
        if manual {
            tags.insert(TAG_RETENTION.into(), "manual".into());
        }
        LogGroup {
            name: name.into(),
            arn: Some(format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}")),
            retention_days: retention,
            kms_key_id: None,
            tags,
        }
    }

    #[tokio::test]
    async fn creates_sets_retention_and_leaves_the_rest() {
        // GIVEN one missing, one never-expiring, one with retention, one manual group
        let logs = FakeLogs::with(vec![group("b", None, false), group("c", Some(3653), false), group("d", None, true)]);
        // WHEN we ensure all four
        let targets = ["a", "b", "c", "d"].map(target).to_vec();
        let out = ensure_log_groups(&logs, targets, &settings(false), 2).await;
        // THEN each gets its own result and only a and b were written
        let results: Vec<_> = out.iter().map(|o| (o.log_group.as_str(), o.result, o.applied)).collect();
        assert_eq!(
            results,
            [
                ("a", GroupResult::Created, true),
                ("b", GroupResult::RetentionSet, true),
                ("c", GroupResult::AlreadyCompliant, false),
                ("d", GroupResult::Skipped, false),
            ]
        );
        let now = logs.snapshot();
        assert_eq!(now["a"].retention_days, Some(7));
        assert_eq!(now["b"].retention_days, Some(7));
        assert_eq!(now["c"].retention_days, Some(3653));
        assert_eq!(now["d"].retention_days, None);
        assert_eq!(now["d"].tags.len(), 1, "manual group must not be tagged");
    }

    #[tokio::test]
    async fn dry_run_writes_nothing() {
        let logs = FakeLogs::with(vec![group("b", None, false)]);
        let out = ensure_log_groups(&logs, vec![target("a"), target("b")], &settings(true), 4).await;
        assert_eq!(out[0].result, GroupResult::Created);
        assert!(out.iter().all(|o| !o.applied));
        assert_eq!(logs.writes(), 0);
        assert!(!logs.snapshot().contains_key("a"));
    }

    #[tokio::test]
    async fn already_exists_race_is_success_and_rechecked() {
        // GIVEN the group appears (created by someone else) between read and create
        let logs = FakeLogs::with(vec![]);
        logs.appear_on_create("a", group("a", Some(1), false));
        let out = ensure_log_groups(&logs, vec![target("a")], &settings(false), 1).await;
        // THEN it is compliant with the retention the other writer chose
        assert_eq!(out[0].result, GroupResult::AlreadyCompliant);
        assert_eq!(logs.snapshot()["a"].retention_days, Some(1));
    }

    #[tokio::test]
    async fn a_failing_group_is_reported_and_the_others_proceed() {
        let logs = FakeLogs::with(vec![]);
        logs.fail_on("a");
        let out = ensure_log_groups(&logs, vec![target("a"), target("b")], &settings(false), 2).await;
        assert_eq!(out[0].result, GroupResult::Failed);
        assert!(out[0].error.as_deref().unwrap_or("").contains("AccessDeniedException"));
        assert_eq!(out[1].result, GroupResult::Created);
    }
}
