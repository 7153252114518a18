//! "In use": every image something in the account may still start, and who
//! would start it. prune-images keeps all of it; quota-scan's reclaimable
//! figures leave it out.
//!
//! The set is the union of one reader per source ([`readers`]), in every
//! region of `PROTECT_REGIONS`:
//! - service deployments: the task definitions DescribeServices lists, and
//!   the digests ECS pinned in the service revisions of the in-progress
//!   deployments and the latest finished one, with their source revisions
//!   (what a rollback goes back to);
//! - task sets of CODE_DEPLOY and EXTERNAL services;
//! - tasks desired RUNNING or PENDING in every cluster, standalone included;
//! - the latest ACTIVE revision of every task-definition family;
//! - the task definitions EventBridge rules (every bus) and EventBridge
//!   Scheduler schedules run;
//! - Lambda function versions packaged as images (the URI and the digest
//!   Lambda resolved).
//!
//! Reading is all or nothing: one source that cannot be read is a
//! [`SourceFailure`], and the caller deletes nothing.

pub mod fresh;
pub mod readers;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use crate::model::TaskDefinition;
use crate::AwsError;

/// Where a use was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    ServiceDeployment,
    TaskSet,
    Task,
    TaskDefinitionFamily,
    EventBridgeRule,
    SchedulerSchedule,
    LambdaFunction,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::ServiceDeployment,
        Source::TaskSet,
        Source::Task,
        Source::TaskDefinitionFamily,
        Source::EventBridgeRule,
        Source::SchedulerSchedule,
        Source::LambdaFunction,
    ];

    /// How a platform engineer would say it, in a reason or a log line.
    pub fn label(self) -> &'static str {
        match self {
            Source::ServiceDeployment => "service",
            Source::TaskSet => "task set of service",
            Source::Task => "task",
            Source::TaskDefinitionFamily => "task definition family",
            Source::EventBridgeRule => "EventBridge rule",
            Source::SchedulerSchedule => "Scheduler schedule",
            Source::LambdaFunction => "Lambda function",
        }
    }

    /// The source's name in reports: `serviceDeployments`, `lambdaFunctions`, …
    pub fn key(self) -> &'static str {
        match self {
            Source::ServiceDeployment => "serviceDeployments",
            Source::TaskSet => "taskSets",
            Source::Task => "tasks",
            Source::TaskDefinitionFamily => "taskDefinitionFamilies",
            Source::EventBridgeRule => "eventBridgeRules",
            Source::SchedulerSchedule => "schedulerSchedules",
            Source::LambdaFunction => "lambdaFunctions",
        }
    }
}

/// Who uses an image: the source, the thing's name there, and its region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct User {
    pub source: Source,
    pub name: String,
    pub region: String,
}

impl User {
    pub fn new(source: Source, name: impl Into<String>, region: &str) -> Self {
        User { source, name: name.into(), region: region.to_string() }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} in {}", self.source.label(), self.name, self.region)
    }
}

/// What a reader found a user to need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Used {
    /// A task definition: ARN, `family:revision`, or a family (its latest
    /// ACTIVE revision). Its containers' images are what is used.
    TaskDefinition(String),
    /// An image reference, by tag or by digest.
    Image(String),
    /// A digest, whatever repository it is in.
    Digest(String),
    /// deploy-on-push follows this task definition's images: the service's
    /// `autopilot:track` (`None`: the tag each container uses today) and
    /// `autopilot:containers` (`None`: every container). Not a use by
    /// itself: it tells quota-scan's audit which tags are tracked exactly.
    Tracks { task_definition: String, track: Option<String>, containers: Option<String> },
}

/// One finding of one reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    pub user: User,
    pub used: Used,
}

impl Use {
    pub fn new(user: &User, used: Used) -> Self {
        Use { user: user.clone(), used }
    }
}

/// The union: for each image reference and each digest, who uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InUse {
    /// Image reference (`registry/repository:tag` or `…@sha256:…`) → users.
    pub references: BTreeMap<String, BTreeSet<User>>,
    /// Digest → users. A digest protects that digest in every repository:
    /// the same digest is the same content, and keeping too much is safe.
    pub digests: BTreeMap<String, BTreeSet<User>>,
    /// `registry/repository:tag` → the deploy-on-push services that follow
    /// exactly that tag. Protects nothing; read by quota-scan's audit.
    pub tracked_tags: BTreeMap<String, BTreeSet<User>>,
}

impl InUse {
    pub fn add_reference(&mut self, reference: impl Into<String>, user: User) {
        self.references.entry(reference.into()).or_default().insert(user);
    }

    pub fn add_digest(&mut self, digest: impl Into<String>, user: User) {
        self.digests.entry(digest.into()).or_default().insert(user);
    }

    pub fn extend(&mut self, other: InUse) {
        for (reference, users) in other.references {
            self.references.entry(reference).or_default().extend(users);
        }
        for (digest, users) in other.digests {
            self.digests.entry(digest).or_default().extend(users);
        }
        for (reference, users) in other.tracked_tags {
            self.tracked_tags.entry(reference).or_default().extend(users);
        }
    }

    /// The set from readers' findings and the task definitions they name
    /// (described once each). A task definition that is not in `described`
    /// no longer exists: it names no image. Pure.
    pub fn from_uses(uses: &[Use], described: &BTreeMap<String, TaskDefinition>) -> InUse {
        let mut set = InUse::default();
        for u in uses {
            match &u.used {
                Used::Image(reference) => set.add_reference(reference.clone(), u.user.clone()),
                Used::Digest(digest) => set.add_digest(digest.clone(), u.user.clone()),
                Used::TaskDefinition(name) => {
                    let Some(td) = described.get(name) else { continue };
                    let user =
                        User { name: format!("{} ({}:{})", u.user.name, td.family, td.revision), ..u.user.clone() };
                    for c in &td.containers {
                        set.add_reference(c.image.clone(), user.clone());
                    }
                }
                Used::Tracks { task_definition, track, containers } => {
                    let Some(td) = described.get(task_definition) else { continue };
                    for reference in exactly_tracked(td, track.as_deref(), containers.as_deref()) {
                        set.tracked_tags.entry(reference).or_default().insert(u.user.clone());
                    }
                }
            }
        }
        set
    }

    /// How many references and digests each source contributed.
    pub fn count_by_source(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for users in self.references.values().chain(self.digests.values()) {
            let sources: BTreeSet<Source> = users.iter().map(|u| u.source).collect();
            for s in sources {
                *counts.entry(s.key()).or_default() += 1;
            }
        }
        counts
    }
}

/// The `registry/repository:tag` references a deploy-on-push service follows
/// exactly, as deploy-on-push reads its tags: an exact `autopilot:track`
/// applies to every container in scope; without one, each container follows
/// the tag in its image reference, or (pinned by digest after a rollout) the
/// tag recorded on the revision. `glob:`, `semver:` and `regex:` follow no
/// single tag. Pure.
pub fn exactly_tracked(td: &TaskDefinition, track: Option<&str>, containers: Option<&str>) -> Vec<String> {
    use crate::track::Track;
    let explicit = match track.map(Track::parse) {
        None => None,
        Some(Ok(Track::Exact(tag))) => Some(tag),
        Some(_) => return Vec::new(),
    };
    let scope: Option<Vec<&str>> = containers.map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect());
    let mut tracked = Vec::new();
    for c in &td.containers {
        if scope.as_ref().is_some_and(|names| !names.contains(&c.name.as_str())) {
            continue;
        }
        let Some(image) = crate::image_ref::ImageRef::parse(&c.image) else { continue };
        let tag = explicit
            .clone()
            .or_else(|| image.tag.clone())
            .or_else(|| td.tags.get(&crate::deploy::container_tag_key(&c.name)).cloned());
        if let Some(tag) = tag {
            let host = if image.host.is_empty() { String::new() } else { format!("{}/", image.host) };
            tracked.push(format!("{host}{}:{tag}", image.repository));
        }
    }
    tracked
}

/// A source that could not be read: nothing may be deleted in this run.
#[derive(Debug)]
pub struct SourceFailure {
    pub source: Source,
    pub region: String,
    /// The IAM action the failed call needs, e.g. `ecs:ListServiceDeployments`.
    pub permission: String,
    pub error: Box<AwsError>,
}

impl SourceFailure {
    pub fn new(source: Source, region: &str, service: &str, error: AwsError) -> Self {
        SourceFailure {
            source,
            region: region.to_string(),
            permission: format!("{service}:{}", error.operation),
            error: Box::new(error),
        }
    }
}

impl fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in-use source {} ({}) in {} could not be read: {} (needs {}); nothing is deleted in this run",
            self.source.key(),
            self.source.label(),
            self.region,
            self.error,
            self.permission
        )
    }
}

/// The report's view of a [`SourceFailure`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceFailureReport {
    pub source: &'static str,
    pub region: String,
    pub api: &'static str,
    pub permission: String,
    pub error: String,
}

impl From<&SourceFailure> for SourceFailureReport {
    fn from(f: &SourceFailure) -> Self {
        SourceFailureReport {
            source: f.source.key(),
            region: f.region.clone(),
            api: f.error.operation,
            permission: f.permission.clone(),
            error: f.error.to_string(),
        }
    }
}

impl From<SourceFailure> for crate::Error {
    fn from(f: SourceFailure) -> Self {
        crate::Error::InUseUnreadable {
            source_key: f.source.key(),
            region: f.region.clone(),
            permission: f.permission.clone(),
            retryable: f.error.retryable,
            message: f.to_string(),
        }
    }
}

/// Reads the whole set, every source in every region, or fails.
#[async_trait]
pub trait InUseReader: Send + Sync {
    async fn read(&self) -> Result<InUse, SourceFailure>;
}

/// `PROTECT_REGIONS` resolved: the configured regions, and the function's
/// own region always (its repositories' consumers live there first), each
/// once, in the order given.
pub fn protect_regions(configured: &[String], home: &str) -> Vec<String> {
    let mut regions = vec![home.to_string()];
    for r in configured {
        if !regions.contains(r) {
            regions.push(r.clone());
        }
    }
    regions
}

/// Is this a region name (`us-east-1`, `eu-central-2`, `us-gov-west-1`)?
pub fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Container;

    fn td(family: &str, revision: i32, images: &[&str]) -> TaskDefinition {
        TaskDefinition {
            arn: format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:{revision}"),
            family: family.into(),
            revision,
            containers: images
                .iter()
                .enumerate()
                .map(|(i, image)| Container { name: format!("c{i}"), image: image.to_string(), log: None })
                .collect(),
            cpu_architecture: None,
            tags: Default::default(),
            ..TaskDefinition::default()
        }
    }

    #[test]
    fn task_definitions_become_their_images_and_unknown_ones_name_nothing() {
        let rule = User::new(Source::EventBridgeRule, "default/nightly", "us-east-1");
        let lambda = User::new(Source::LambdaFunction, "resize:3", "eu-west-1");
        let uses = vec![
            Use::new(&rule, Used::TaskDefinition("nightly".into())),
            Use::new(&rule, Used::TaskDefinition("gone:1".into())),
            Use::new(&lambda, Used::Image("repo/resize@sha256:ab".into())),
            Use::new(&lambda, Used::Digest("sha256:ab".into())),
        ];
        let described = BTreeMap::from([("nightly".to_string(), td("nightly", 4, &["repo/batch:v1", "repo/side:v2"]))]);
        let set = InUse::from_uses(&uses, &described);
        assert_eq!(set.references.len(), 3);
        let users = &set.references["repo/batch:v1"];
        assert_eq!(
            users.iter().next().map(ToString::to_string).as_deref(),
            Some("EventBridge rule default/nightly (nightly:4) in us-east-1")
        );
        assert_eq!(set.digests["sha256:ab"].len(), 1);
        assert_eq!(set.count_by_source().get("eventBridgeRules"), Some(&2));
        assert_eq!(set.count_by_source().get("lambdaFunctions"), Some(&2));
    }

    #[test]
    fn exactly_tracked_tags_follow_deploy_on_push_rules() {
        const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let mut web =
            td("web", 3, &[&format!("{HOST}/users:latest"), &format!("{HOST}/proxy@sha256:{}", "a".repeat(64))]);
        // the second container was pinned by deploy-on-push, which recorded its tag
        web.tags.insert(crate::deploy::container_tag_key("c1"), "stable".into());
        assert_eq!(exactly_tracked(&web, None, None), [format!("{HOST}/users:latest"), format!("{HOST}/proxy:stable")]);
        assert_eq!(exactly_tracked(&web, Some("prod"), Some("c0")), [format!("{HOST}/users:prod")]);
        assert!(exactly_tracked(&web, Some("semver:^1"), None).is_empty(), "a range follows no single tag");
        assert!(exactly_tracked(&web, Some("glob:v*"), None).is_empty());

        let service = User::new(Source::ServiceDeployment, "prod/web", "us-east-1");
        let uses = vec![Use::new(
            &service,
            Used::Tracks { task_definition: "web:3".into(), track: None, containers: Some("c0".into()) },
        )];
        let set = InUse::from_uses(&uses, &BTreeMap::from([("web:3".to_string(), web)]));
        assert!(set.references.is_empty() && set.digests.is_empty(), "tracking alone protects nothing");
        assert_eq!(set.tracked_tags.keys().collect::<Vec<_>>(), [&format!("{HOST}/users:latest")]);
    }

    #[test]
    fn regions_always_include_home_once() {
        assert_eq!(protect_regions(&[], "us-east-1"), ["us-east-1"]);
        let configured = ["eu-west-1".to_string(), "us-east-1".to_string()];
        assert_eq!(protect_regions(&configured, "us-east-1"), ["us-east-1", "eu-west-1"]);
    }

    #[test]
    fn region_names() {
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-5"] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in ["", "us-east", "US-EAST-1", "us_east_1", "useast1", "us--1", "us-east-1a"] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_failure_names_source_region_and_permission() {
        let error = AwsError {
            operation: "ListSchedules",
            code: Some("AccessDeniedException".into()),
            message: "not authorized".into(),
            retryable: false,
            source: None,
        };
        let failure = SourceFailure::new(Source::SchedulerSchedule, "eu-west-1", "scheduler", error);
        let text = failure.to_string();
        assert!(text.contains("schedulerSchedules"), "{text}");
        assert!(text.contains("eu-west-1"), "{text}");
        assert!(text.contains("needs scheduler:ListSchedules"), "{text}");
        assert!(text.contains("AccessDeniedException"), "{text}");
    }
}
