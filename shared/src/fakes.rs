//! In-memory fakes of the ports (feature `test-support`), for handler tests
//! that need no emulator. They model the behaviour the handlers rely on:
//! "already exists", groups appearing concurrently, calls that fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::model::{LogGroup, Service, Tags, TaskDefinition};
use crate::ports::{Created, EcsRead, LogGroupStore};
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

/// ECS as a fixed snapshot: clusters → services, and task definitions by ARN
/// and by `family:revision`.
#[derive(Default)]
pub struct FakeEcs {
    pub clusters: BTreeMap<String, Vec<Service>>,
    pub task_definitions: Vec<TaskDefinition>,
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
        Ok(all
            .iter()
            .filter(|s| services.iter().any(|want| *want == s.arn || *want == s.name))
            .cloned()
            .collect())
    }

    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinition, AwsError> {
        self.task_definitions
            .iter()
            .find(|td| td.arn == task_definition || format!("{}:{}", td.family, td.revision) == task_definition)
            .cloned()
            .ok_or_else(|| not_found("DescribeTaskDefinition", "ClientException", task_definition))
    }
}
