//! The log-group planner: which `awslogs` groups a set of task definitions
//! writes to, and what to do about each one. Pure: no AWS, no clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{LogGroup, Tags, TaskDefinition};

/// The retention values CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS_ALLOWED: &[i32] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

pub const TAG_MANAGED: &str = "autopilot:managed";
pub const TAG_CLUSTER: &str = "autopilot:cluster";
pub const TAG_SERVICE: &str = "autopilot:service";
/// `autopilot:retention=manual` on a group: never touch it.
pub const TAG_RETENTION: &str = "autopilot:retention";

/// What the planner needs to know besides the groups themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The region the function runs in; groups elsewhere are skipped.
    pub home_region: String,
    pub retention_days: i32,
    pub kms_key_id: Option<String>,
    pub dry_run: bool,
}

/// Where a task definition is used, when known (a sweep or a service event).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usage {
    pub cluster: Option<String>,
    pub service: Option<String>,
}

/// One log group that containers write to, with everyone who writes to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub task_definitions: BTreeSet<String>,
    pub containers: BTreeSet<String>,
    pub clusters: BTreeSet<String>,
    pub services: BTreeSet<String>,
    /// A service in use writes to it (not only a revision an event named).
    pub in_use: bool,
}

impl Target {
    /// The tags we put on a group we create or take over. Cluster and service
    /// are added only when exactly one uses the group: a shared group gets no
    /// tag that would name just one of its writers.
    pub fn tags(&self) -> Tags {
        let mut tags = Tags::new();
        tags.insert(TAG_MANAGED.into(), "true".into());
        if let [cluster] = self.clusters.iter().collect::<Vec<_>>()[..] {
            tags.insert(TAG_CLUSTER.into(), cluster.clone());
        }
        if let [service] = self.services.iter().collect::<Vec<_>>()[..] {
            tags.insert(TAG_SERVICE.into(), service.clone());
        }
        tags
    }
}

/// Why a group, or a container's log configuration, is left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum SkipReason {
    /// `awslogs-region` names another region than the function's.
    OtherRegion { region: String },
    /// The group carries `autopilot:retention=manual`.
    ManualRetention,
    /// `awslogs-group` is not a valid log group name.
    InvalidName,
    /// An `awslogs` container without an `awslogs-group` option.
    MissingGroupOption,
    /// The group exists and only revisions nothing uses name it: its
    /// retention is someone else's business (an audit log, say).
    NotInUse,
    /// Like [`SkipReason::NotInUse`], for a group under `/aws/`, which AWS
    /// services own.
    AwsOwnedNotInUse,
}

impl SkipReason {
    pub fn describe(&self) -> String {
        match self {
            SkipReason::OtherRegion { region } => format!("log group is in another region ({region})"),
            SkipReason::ManualRetention => format!("log group is tagged {TAG_RETENTION}=manual"),
            SkipReason::InvalidName => "awslogs-group is not a valid log group name".into(),
            SkipReason::MissingGroupOption => "awslogs container has no awslogs-group option".into(),
            SkipReason::NotInUse => {
                "log group exists and no service in use writes to it (only an unused revision names it)".into()
            }
            SkipReason::AwsOwnedNotInUse => {
                "log group is under /aws/ and no service in use writes to it: left to the AWS service that owns it"
                    .into()
            }
        }
    }
}

/// A container whose log configuration we cannot act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedUse {
    pub log_group: String,
    pub task_definition: String,
    pub container: String,
    pub reason: SkipReason,
}

/// Gathers the awslogs groups of these task definitions, each with where it is
/// used. Groups in other regions and unusable options come back as skips.
pub fn targets<'a>(
    uses: impl IntoIterator<Item = (&'a TaskDefinition, &'a Usage)>,
    home_region: &str,
) -> (Vec<Target>, Vec<SkippedUse>) {
    let mut by_name: BTreeMap<String, Target> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (td, usage) in uses {
        for container in &td.containers {
            let Some(log) = container.log.as_ref().filter(|l| l.driver == "awslogs") else {
                continue;
            };
            let group = log.options.get("awslogs-group").map(|g| g.trim().to_string());
            let skip = |log_group: String, reason| SkippedUse {
                log_group,
                task_definition: td.arn.clone(),
                container: container.name.clone(),
                reason,
            };
            let Some(group) = group.filter(|g| !g.is_empty()) else {
                skipped.push(skip(String::new(), SkipReason::MissingGroupOption));
                continue;
            };
            if !is_valid_log_group_name(&group) {
                skipped.push(skip(group, SkipReason::InvalidName));
                continue;
            }
            if let Some(region) = log.options.get("awslogs-region").map(|r| r.trim()) {
                if !region.is_empty() && region != home_region {
                    let reason = SkipReason::OtherRegion { region: region.to_string() };
                    skipped.push(skip(group, reason));
                    continue;
                }
            }
            let target = by_name.entry(group.clone()).or_insert_with(|| Target { name: group, ..Target::default() });
            target.task_definitions.insert(td.arn.clone());
            target.containers.insert(container.name.clone());
            target.clusters.extend(usage.cluster.clone());
            target.services.extend(usage.service.clone());
            target.in_use |= usage.service.is_some();
        }
    }
    (by_name.into_values().collect(), skipped)
}

/// CloudWatch Logs' rule: 1 to 512 of `A-Za-z0-9`, `.`, `-`, `_`, `/`, `#`.
pub fn is_valid_log_group_name(name: &str) -> bool {
    (1..=512).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'#'))
}

/// What to do with one target group, given what exists now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Missing: create it with these tags, then set retention.
    Create {
        tags: Tags,
        retention_days: i32,
        kms_key_id: Option<String>,
    },
    /// Exists with no retention ("never expire"): set ours and tag it.
    SetRetention {
        arn: Option<String>,
        tags: Tags,
        retention_days: i32,
    },
    /// Exists with a retention someone chose; we never shorten or lengthen it.
    Compliant {
        retention_days: i32,
    },
    Skip(SkipReason),
}

pub fn decide(target: &Target, existing: Option<&LogGroup>, settings: &Settings) -> Decision {
    let Some(group) = existing else {
        return Decision::Create {
            tags: target.tags(),
            retention_days: settings.retention_days,
            kms_key_id: settings.kms_key_id.clone(),
        };
    };
    if group.tags.get(TAG_RETENTION).is_some_and(|v| v.trim().eq_ignore_ascii_case("manual")) {
        return Decision::Skip(SkipReason::ManualRetention);
    }
    // An existing group is changed only for a writer in use: registering a
    // revision that names `/aws/cloudtrail/org` must not make an audit log expire.
    if !target.in_use && group.retention_days.is_none() {
        let aws_owned = group.name.starts_with("/aws/");
        return Decision::Skip(if aws_owned { SkipReason::AwsOwnedNotInUse } else { SkipReason::NotInUse });
    }
    match group.retention_days {
        Some(days) => Decision::Compliant { retention_days: days },
        None => Decision::SetRetention {
            arn: group.arn.clone(),
            tags: target.tags(),
            retention_days: settings.retention_days,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, LogConfiguration};

    fn settings() -> Settings {
        Settings { home_region: "us-east-1".into(), retention_days: 30, kms_key_id: None, dry_run: false }
    }

    fn awslogs(name: &str, options: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            image: format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}:latest"),
            log: Some(LogConfiguration {
                driver: "awslogs".into(),
                options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }),
        }
    }

    fn td(family: &str, containers: Vec<Container>) -> TaskDefinition {
        TaskDefinition {
            arn: format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:1"),
            family: family.into(),
            revision: 1,
            containers,
            cpu_architecture: None,
            os_family: None,
            tags: Tags::new(),
        }
    }

    fn existing(name: &str, retention: Option<i32>, tags: &[(&str, &str)]) -> LogGroup {
        LogGroup {
            name: name.into(),
            arn: Some(format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}")),
            retention_days: retention,
            kms_key_id: None,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn used_by(cluster: &str, service: &str) -> Usage {
        Usage { cluster: Some(cluster.into()), service: Some(service.into()) }
    }

    #[test]
    fn two_containers_two_groups() {
        // GIVEN a task definition whose app and sidecar log to different groups
        let def = td(
            "users",
            vec![
                awslogs("app", &[("awslogs-group", "/ecs/users")]),
                awslogs("envoy", &[("awslogs-group", "/ecs/users-envoy")]),
            ],
        );
        // WHEN we gather targets
        let usage = used_by("prod", "users");
        let (targets, skipped) = targets([(&def, &usage)], "us-east-1");
        // THEN both groups are targets, tagged with the one service that uses them
        assert!(skipped.is_empty());
        let names: Vec<_> = targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["/ecs/users", "/ecs/users-envoy"]);
        let tags = targets[0].tags();
        assert_eq!(tags.get(TAG_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(tags.get(TAG_CLUSTER).map(String::as_str), Some("prod"));
        assert_eq!(tags.get(TAG_SERVICE).map(String::as_str), Some("users"));
    }

    #[test]
    fn shared_group_is_not_tagged_with_one_service() {
        let a = td("users", vec![awslogs("app", &[("awslogs-group", "cruddur")])]);
        let b = td("posts", vec![awslogs("app", &[("awslogs-group", "cruddur")])]);
        let (ua, ub) = (used_by("prod", "users"), used_by("prod", "posts"));
        let (targets, _) = targets([(&a, &ua), (&b, &ub)], "us-east-1");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].services.len(), 2);
        let tags = targets[0].tags();
        assert_eq!(tags.get(TAG_CLUSTER).map(String::as_str), Some("prod"));
        assert!(!tags.contains_key(TAG_SERVICE));
    }

    #[test]
    fn other_region_invalid_and_missing_groups_are_skipped_with_reasons() {
        let def = td(
            "mixed",
            vec![
                awslogs("eu", &[("awslogs-group", "/ecs/eu"), ("awslogs-region", "eu-west-1")]),
                awslogs("home", &[("awslogs-group", "/ecs/home"), ("awslogs-region", "us-east-1")]),
                awslogs("bad", &[("awslogs-group", "has space")]),
                awslogs("none", &[("awslogs-stream-prefix", "ecs")]),
                Container { name: "plain".into(), image: "nginx".into(), log: None },
            ],
        );
        let usage = Usage::default();
        let (targets, skipped) = targets([(&def, &usage)], "us-east-1");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].name, "/ecs/home");
        let reasons: Vec<_> = skipped.iter().map(|s| (s.container.as_str(), s.reason.clone())).collect();
        assert_eq!(
            reasons,
            [
                ("eu", SkipReason::OtherRegion { region: "eu-west-1".into() }),
                ("bad", SkipReason::InvalidName),
                ("none", SkipReason::MissingGroupOption),
            ]
        );
    }

    #[test]
    fn non_awslogs_drivers_are_ignored() {
        let mut c = awslogs("app", &[("awslogs-group", "/ecs/x")]);
        c.log.as_mut().unwrap().driver = "awsfirelens".into();
        let def = td("x", vec![c]);
        let usage = Usage::default();
        let (targets, skipped) = targets([(&def, &usage)], "us-east-1");
        assert!(targets.is_empty() && skipped.is_empty());
    }

    #[test]
    fn missing_group_is_created_with_retention_and_kms() {
        let target = Target { name: "/ecs/users".into(), ..Default::default() };
        let mut s = settings();
        s.kms_key_id = Some("arn:aws:kms:us-east-1:123456789012:key/k".into());
        match decide(&target, None, &s) {
            Decision::Create { retention_days, kms_key_id, tags } => {
                assert_eq!(retention_days, 30);
                assert_eq!(kms_key_id, s.kms_key_id);
                assert_eq!(tags.get(TAG_MANAGED).map(String::as_str), Some("true"));
            }
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn existing_retention_is_never_changed_even_if_shorter_or_longer() {
        let target = Target { name: "g".into(), ..Default::default() };
        for days in [1, 30, 3653] {
            let group = existing("g", Some(days), &[]);
            assert_eq!(decide(&target, Some(&group), &settings()), Decision::Compliant { retention_days: days });
        }
    }

    #[test]
    fn never_expiring_group_gets_retention_only_when_in_use() {
        let in_use = Target { name: "g".into(), in_use: true, ..Default::default() };
        let group = existing("g", None, &[]);
        assert!(matches!(
            decide(&in_use, Some(&group), &settings()),
            Decision::SetRetention { retention_days: 30, .. }
        ));
        // Only an unused revision names it (a RegisterTaskDefinition event).
        let unused = Target { name: "g".into(), ..Default::default() };
        assert_eq!(decide(&unused, Some(&group), &settings()), Decision::Skip(SkipReason::NotInUse));
        // An AWS-owned audit log is reported as such, and left alone.
        let trail = Target { name: "/aws/cloudtrail/org".into(), ..Default::default() };
        let group = existing("/aws/cloudtrail/org", None, &[]);
        assert_eq!(decide(&trail, Some(&group), &settings()), Decision::Skip(SkipReason::AwsOwnedNotInUse));
        let trail_in_use = Target { in_use: true, ..trail.clone() };
        assert!(matches!(decide(&trail_in_use, Some(&group), &settings()), Decision::SetRetention { .. }));
        // A missing group is still created for any revision an event names.
        assert!(matches!(decide(&trail, None, &settings()), Decision::Create { .. }));
    }

    #[test]
    fn a_service_usage_marks_its_groups_in_use() {
        let def = td("users", vec![awslogs("app", &[("awslogs-group", "/ecs/users")])]);
        let (unused, _) = targets([(&def, &Usage::default())], "us-east-1");
        assert!(!unused[0].in_use);
        let (used, _) = targets([(&def, &Usage::default()), (&def, &used_by("prod", "users"))], "us-east-1");
        assert!(used[0].in_use);
    }

    #[test]
    fn manual_tag_wins_over_everything() {
        let target = Target { name: "g".into(), ..Default::default() };
        for retention in [None, Some(1)] {
            let group = existing("g", retention, &[(TAG_RETENTION, "Manual")]);
            assert_eq!(decide(&target, Some(&group), &settings()), Decision::Skip(SkipReason::ManualRetention));
        }
    }

    #[test]
    fn log_group_names() {
        assert!(is_valid_log_group_name("/ecs/users"));
        assert!(is_valid_log_group_name("/aws/lambda/x#1.y_z-2"));
        assert!(!is_valid_log_group_name(""));
        assert!(!is_valid_log_group_name("a b"));
        assert!(!is_valid_log_group_name("a:b"));
        assert!(!is_valid_log_group_name(&"a".repeat(513)));
    }
}
