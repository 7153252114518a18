//! The deploy-on-push planner: given a push, one service, its current task
//! definition and what ECR says about the images involved, decide whether
//! and how to roll the new image out. Pure: no AWS, no clock.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::image_ref::ImageRef;
use crate::model::{Image, Platform, Service, Tags, TaskDefinition};
use crate::track::{version_of, Track};

pub const TAG_DEPLOY: &str = "autopilot:deploy";
pub const TAG_TRACK: &str = "autopilot:track";
pub const TAG_CONTAINERS: &str = "autopilot:containers";
pub const TAG_SOURCE_DIGEST: &str = "autopilot:source-digest";
pub const TAG_SOURCE_TAG: &str = "autopilot:source-tag";
/// The revision a new revision was copied from: a replay may reuse a
/// revision only if it was copied from the same one.
pub const TAG_SOURCE_REVISION: &str = "autopilot:source-revision";

/// `autopilot:source-tag:<container>`: the tag a container we pinned by
/// digest follows, carried from revision to revision.
pub fn container_tag_key(container: &str) -> String {
    format!("{TAG_SOURCE_TAG}:{container}")
}
pub const TAG_SOURCE_EVENT: &str = "autopilot:source-event";

/// A successful push of a tagged image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub account: String,
    pub region: String,
    pub repository: String,
    pub digest: String,
    pub tag: String,
    pub event_id: String,
}

impl Push {
    /// The tags a revision made for this push from `source` carries, with
    /// the tag each changed container now follows.
    pub fn revision_tags<'a>(&self, source: &str, containers: impl IntoIterator<Item = &'a str>) -> Tags {
        let mut tags: Tags = [
            (TAG_SOURCE_DIGEST, self.digest.as_str()),
            (TAG_SOURCE_TAG, self.tag.as_str()),
            (TAG_SOURCE_EVENT, self.event_id.as_str()),
            (TAG_SOURCE_REVISION, source),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        tags.extend(containers.into_iter().map(|c| (container_tag_key(c), self.tag.clone())));
        tags
    }
}

/// `autopilot:deploy` on a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptIn {
    Off,
    On,
    DryRun,
}

impl OptIn {
    pub fn of(service: &Service) -> Result<OptIn, String> {
        match service.tags.get(TAG_DEPLOY).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("off") => Ok(OptIn::Off),
            Some("on") => Ok(OptIn::On),
            Some("dry-run") => Ok(OptIn::DryRun),
            Some(other) => Err(format!("invalid {TAG_DEPLOY} value {other:?} (allowed: on, off, dry-run)")),
        }
    }
}

/// What AWS says about the pushed image, the images services run now and
/// the capacity they run on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// The pushed digest; `None` when the repository no longer has it.
    pub pushed: Option<Image>,
    /// The platforms the pushed image offers: an index's, or the one a single
    /// image's config blob names. `None` when not read.
    pub platforms: Option<Vec<Platform>>,
    /// Images services run now (pinned by them or by ECS), by digest.
    pub running: BTreeMap<String, Image>,
    /// `(service ARN, container)` → the digest ECS pinned for a container
    /// that names a tag (service revision, else DescribeTasks).
    pub pinned_by_ecs: BTreeMap<(String, String), String>,
    /// Cluster name → the platforms of its EC2 container instances.
    pub capacity: BTreeMap<String, Vec<Platform>>,
}

/// The platform a service's tasks run on, and how we know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicePlatform {
    Known { platform: Platform, source: &'static str },
    Unknown(String),
}

/// `runtimePlatform`, else Fargate's default (Linux on X86_64), else the
/// cluster's EC2 capacity when all of it agrees, else unknown.
pub fn service_platform(service: &Service, td: &TaskDefinition, capacity: Option<&Vec<Platform>>) -> ServicePlatform {
    if let Some(platform) = td.declared_platform() {
        return ServicePlatform::Known { platform, source: "its runtimePlatform" };
    }
    if service.on_fargate() {
        let platform = Platform { os: "linux".into(), architecture: "amd64".into() };
        return ServicePlatform::Known { platform, source: "Fargate's default" };
    }
    match capacity.map(Vec::as_slice) {
        Some([one]) => ServicePlatform::Known { platform: one.clone(), source: "its cluster's container instances" },
        Some(many) if !many.is_empty() => ServicePlatform::Unknown(format!(
            "no runtimePlatform, and the cluster's container instances run {}",
            many.iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect::<Vec<_>>().join(" and ")
        )),
        _ => ServicePlatform::Unknown(
            "no runtimePlatform, and no EC2 container instance reports ecs.cpu-architecture".into(),
        ),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerChange {
    pub container: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Update { changes: Vec<ContainerChange>, dry_run: bool },
    Skip(String),
}

/// Why a push did not reach a service, as the classes the `PushesSkipped`
/// metric counts (its `Reason` dimension) and the report's `reasonClass`.
/// Skips outside these classes (a replay of what runs already, an invalid
/// tag value, an image deleted since) are not counted there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipClass {
    /// The image has no variant for the service's platform.
    Platform,
    /// Older than what the service runs, or a tag that has moved on since.
    Older,
    /// The service does not follow the pushed tag.
    NotTracked,
    /// Not a container image (a signature, an SBOM, a chart…).
    Artifact,
    /// A CODE_DEPLOY or EXTERNAL service, which UpdateService cannot deploy.
    Controller,
}

impl SkipClass {
    pub const ALL: [SkipClass; 5] =
        [SkipClass::Platform, SkipClass::Older, SkipClass::NotTracked, SkipClass::Artifact, SkipClass::Controller];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipClass::Platform => "platform",
            SkipClass::Older => "older",
            SkipClass::NotTracked => "not-tracked",
            SkipClass::Artifact => "artifact",
            SkipClass::Controller => "controller",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub decision: Decision,
    /// The class of a skip, when it is one `PushesSkipped` counts.
    pub skip_class: Option<SkipClass>,
    /// The `autopilot:track` policy applied, as text.
    pub track: Option<String>,
    pub warnings: Vec<String>,
}

/// The containers of `td` that run the pushed repository in the pushed
/// registry (same account and region), within `autopilot:containers` if set.
pub fn matching_containers<'a>(push: &Push, service: &Service, td: &'a TaskDefinition) -> Vec<(&'a str, ImageRef)> {
    let scope: Option<Vec<&str>> =
        service.tags.get(TAG_CONTAINERS).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect());
    td.containers
        .iter()
        .filter(|c| scope.as_ref().is_none_or(|names| names.contains(&c.name.as_str())))
        .filter_map(|c| {
            let image = ImageRef::parse(&c.image)?;
            let registry = image.ecr_registry()?;
            let same = registry.account == push.account
                && registry.region == push.region
                && image.repository == push.repository;
            same.then_some((c.name.as_str(), image))
        })
        .collect()
}

/// Decides for one service. `None` when the service does not run the pushed
/// repository or has not opted in: it is not part of this push at all.
pub fn plan_service(
    push: &Push,
    service: &Service,
    td: &TaskDefinition,
    facts: &ImageFacts,
    dry_run: bool,
) -> Option<ServicePlan> {
    let matching = matching_containers(push, service, td);
    if matching.is_empty() {
        return None;
    }
    let mut plan =
        ServicePlan { decision: Decision::Skip(String::new()), skip_class: None, track: None, warnings: Vec::new() };
    let skip = |mut plan: ServicePlan, class: Option<SkipClass>, reason: String| {
        plan.decision = Decision::Skip(reason);
        plan.skip_class = class;
        Some(plan)
    };
    let opt_in = match OptIn::of(service) {
        Ok(OptIn::Off) => return None,
        Ok(o) => o,
        Err(reason) => return skip(plan, None, reason),
    };
    if let Some(controller) =
        service.deployment_controller.as_deref().filter(|c| matches!(*c, "CODE_DEPLOY" | "EXTERNAL"))
    {
        return skip(
            plan,
            Some(SkipClass::Controller),
            format!(
                "deployment controller {controller}: UpdateService cannot change this service's task definition; \
                 deploy it through {}",
                if controller == "CODE_DEPLOY" { "CodeDeploy" } else { "its external controller (task sets)" }
            ),
        );
    }
    if let Some(scope) = service.tags.get(TAG_CONTAINERS) {
        for name in scope.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !td.containers.iter().any(|c| c.name == name) {
                plan.warnings.push(format!("{TAG_CONTAINERS} names {name:?}, which the task definition does not have"));
            }
        }
    }

    // The tag each container follows: the service's policy, else the tag in
    // its image reference, else (pinned by digest after our rollout) the tag
    // recorded for that very container. Never another container's tag.
    let followed =
        |name: &str, image: &ImageRef| image.tag.clone().or_else(|| td.tags.get(&container_tag_key(name)).cloned());
    let explicit = match service.tags.get(TAG_TRACK) {
        Some(value) => match Track::parse(value) {
            Ok(track) => Some(track),
            Err(problem) => return skip(plan, None, format!("invalid {TAG_TRACK}: {problem}")),
        },
        None => None,
    };
    let mut accepted = Vec::new();
    let mut policies = Vec::new();
    for (name, image) in &matching {
        let track = match &explicit {
            Some(track) => track.clone(),
            None => match followed(name, image) {
                Some(tag) => Track::Exact(tag),
                None => {
                    policies.push(format!("{name}: none"));
                    continue;
                }
            },
        };
        policies.push(format!("{name}: {track}"));
        if track.accepts(&push.tag) {
            accepted.push((*name, image, track));
        }
    }
    plan.track = Some(policies.join(", "));
    if accepted.is_empty() {
        let reason = if policies.iter().all(|p| p.ends_with(": none")) {
            format!("no tag to track: the image is pinned by digest; set {TAG_TRACK}")
        } else {
            format!("tag {:?} is not tracked ({})", push.tag, policies.join(", "))
        };
        return skip(plan, Some(SkipClass::NotTracked), reason);
    }

    let Some(pushed) = &facts.pushed else {
        return skip(plan, None, format!("image {} is no longer in the repository", push.digest));
    };
    if !pushed.tags.contains(&push.tag) {
        return skip(
            plan,
            Some(SkipClass::Older),
            format!("stale event: tag {:?} now points to another image", push.tag),
        );
    }
    // What each accepted container runs now: its pinned digest, else the
    // digest ECS pinned when it resolved the container's tag.
    let running_digest = |name: &str, image: &ImageRef| -> Option<String> {
        image.digest.clone().or_else(|| facts.pinned_by_ecs.get(&(service.arn.clone(), name.to_string())).cloned())
    };
    if accepted.iter().all(|(name, image, _)| running_digest(name, image).as_deref() == Some(push.digest.as_str())) {
        return skip(plan, None, format!("already running {}", push.digest));
    }

    for (name, image, track) in &accepted {
        let running = running_digest(name, image).filter(|d| *d != push.digest);
        let running_image = running.as_ref().and_then(|d| facts.running.get(d));
        if track.is_semver() {
            // The version it runs: the tag it follows, or the highest version
            // among the tags ECR holds for the digest it runs.
            let from_tags = running_image.into_iter().flat_map(|i| i.tags.iter()).filter_map(|t| version_of(t));
            let running_version =
                followed(name, image).as_deref().and_then(version_of).into_iter().chain(from_tags).max();
            if let (Some(running_version), Some(pushed_version)) = (running_version, version_of(&push.tag)) {
                if pushed_version < running_version {
                    let at = running.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                    return skip(
                        plan,
                        Some(SkipClass::Older),
                        format!("older version: {name} runs {running_version}{at}, the push is {pushed_version}"),
                    );
                }
            }
        } else if let Some(running_image) = running_image {
            if running_image.pushed_at > pushed.pushed_at {
                let tags =
                    if running_image.tags.is_empty() { "untagged".into() } else { running_image.tags.join(", ") };
                return skip(
                    plan,
                    Some(SkipClass::Older),
                    format!("older push: {name} runs {} ({tags}), pushed after this image", running_image.digest),
                );
            }
        }
    }

    match service_platform(service, td, facts.capacity.get(service.cluster_name())) {
        ServicePlatform::Known { platform, source } => {
            if let Some(offered) = &facts.platforms {
                let fits = offered.iter().any(|p| p.architecture == platform.architecture && p.os == platform.os);
                if !fits {
                    let offered: Vec<String> = offered.iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
                    return skip(
                        plan,
                        Some(SkipClass::Platform),
                        format!(
                            "platform mismatch: the service runs {}/{} ({source}), the image offers {}",
                            platform.os,
                            platform.architecture,
                            if offered.is_empty() { "no platform".into() } else { offered.join(", ") }
                        ),
                    );
                }
            }
        }
        ServicePlatform::Unknown(why) => {
            plan.warnings.push(format!("platform unknown ({why}): the image's platform was not checked"));
        }
    }

    if !service.circuit_breaker_rollback {
        plan.warnings
            .push("no deployment circuit breaker with rollback: a failed rollout will not roll back by itself".into());
    }
    let changes = accepted
        .iter()
        .filter(|(_, image, _)| image.digest.as_deref() != Some(push.digest.as_str()))
        .map(|(name, image, _)| ContainerChange {
            container: name.to_string(),
            from: td.containers.iter().find(|c| c.name == *name).map(|c| c.image.clone()).unwrap_or_default(),
            to: image.pinned(&push.digest),
        })
        .collect();
    plan.decision = Decision::Update { changes, dry_run: dry_run || opt_in == OptIn::DryRun };
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Container;
    use proptest::prelude::*;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn push(tag: &str, d: u8) -> Push {
        Push {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            repository: "users".into(),
            digest: digest(d),
            tag: tag.into(),
            event_id: "evt-1".into(),
        }
    }

    fn service(tags: &[(&str, &str)]) -> Service {
        Service {
            arn: "arn:aws:ecs:us-east-1:123456789012:service/prod/users".into(),
            name: "users".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:123456789012:cluster/prod".into(),
            task_definition: "arn:aws:ecs:us-east-1:123456789012:task-definition/users:1".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            circuit_breaker_rollback: true,
            ..Default::default()
        }
    }

    fn td(containers: &[(&str, &str)]) -> TaskDefinition {
        TaskDefinition {
            arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/users:1".into(),
            family: "users".into(),
            revision: 1,
            containers: containers
                .iter()
                .map(|(name, image)| Container { name: name.to_string(), image: image.to_string(), log: None })
                .collect(),
            cpu_architecture: Some("ARM64".into()),
            os_family: Some("LINUX".into()),
            tags: Tags::new(),
        }
    }

    fn linux(architecture: &str) -> Platform {
        Platform { os: "linux".into(), architecture: architecture.into() }
    }

    fn image(d: u8, tags: &[&str], pushed_at: i64) -> Image {
        Image {
            digest: digest(d),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at,
            size_bytes: Some(1),
            manifest_media_type: None,
            registry_id: None,
        }
    }

    fn facts(pushed: Image) -> ImageFacts {
        ImageFacts { pushed: Some(pushed), ..Default::default() }
    }

    fn decision(p: &Push, s: &Service, t: &TaskDefinition, f: &ImageFacts) -> Decision {
        plan_service(p, s, t, f, false).expect("considered").decision
    }

    fn skipped(d: Decision) -> String {
        match d {
            Decision::Skip(reason) => reason,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn only_the_app_container_is_pinned_and_the_sidecar_stays() {
        let t =
            td(&[("users", &format!("{HOST}/users:latest")), ("envoy", "public.ecr.aws/appmesh/aws-appmesh-envoy:v1")]);
        let plan = plan_service(
            &push("latest", 2),
            &service(&[(TAG_DEPLOY, "on")]),
            &t,
            &facts(image(2, &["latest"], 100)),
            false,
        )
        .expect("considered");
        assert_eq!(
            plan.decision,
            Decision::Update {
                changes: vec![ContainerChange {
                    container: "users".into(),
                    from: format!("{HOST}/users:latest"),
                    to: format!("{HOST}/users@{}", digest(2)),
                }],
                dry_run: false,
            }
        );
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn services_not_opted_in_or_using_other_repositories_are_not_considered() {
        let t = td(&[("users", &format!("{HOST}/users:latest"))]);
        let f = facts(image(2, &["latest"], 100));
        assert_eq!(plan_service(&push("latest", 2), &service(&[]), &t, &f, false), None);
        assert_eq!(plan_service(&push("latest", 2), &service(&[(TAG_DEPLOY, "off")]), &t, &f, false), None);
        let other = td(&[("posts", &format!("{HOST}/posts:latest"))]);
        assert_eq!(plan_service(&push("latest", 2), &service(&[(TAG_DEPLOY, "on")]), &other, &f, false), None);
        // Another account's or region's repository of the same name is not ours.
        let elsewhere = td(&[("users", "210987654321.dkr.ecr.us-east-1.amazonaws.com/users:latest")]);
        assert_eq!(plan_service(&push("latest", 2), &service(&[(TAG_DEPLOY, "on")]), &elsewhere, &f, false), None);
        let eu = td(&[("users", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/users:latest")]);
        assert_eq!(plan_service(&push("latest", 2), &service(&[(TAG_DEPLOY, "on")]), &eu, &f, false), None);
    }

    #[test]
    fn invalid_tags_are_reported_not_applied() {
        let t = td(&[("users", &format!("{HOST}/users:latest"))]);
        let f = facts(image(2, &["latest"], 100));
        let reason = skipped(decision(&push("latest", 2), &service(&[(TAG_DEPLOY, "yes")]), &t, &f));
        assert!(reason.starts_with("invalid autopilot:deploy value \"yes\""), "{reason}");
        let reason =
            skipped(decision(&push("latest", 2), &service(&[(TAG_DEPLOY, "on"), (TAG_TRACK, "semver:nope")]), &t, &f));
        assert!(reason.starts_with("invalid autopilot:track"), "{reason}");
    }

    #[test]
    fn tracking_follows_the_deployed_tag_once_pinned() {
        // After our first rollout the image is pinned; the revision's source tag says what it tracks.
        let mut t = td(&[("users", &format!("{HOST}/users@{}", digest(1)))]);
        let s = service(&[(TAG_DEPLOY, "on")]);
        let f = ImageFacts {
            pushed: Some(image(2, &["latest"], 200)),
            running: [(digest(1), image(1, &[], 100))].into(),
            ..Default::default()
        };
        assert!(skipped(decision(&push("latest", 2), &s, &t, &f)).starts_with("no tag to track"));
        t.tags.insert(container_tag_key("users"), "latest".into());
        assert!(matches!(decision(&push("latest", 2), &s, &t, &f), Decision::Update { .. }));
        assert!(skipped(decision(&push("main", 2), &s, &t, &f)).starts_with("tag \"main\" is not tracked"));
    }

    #[test]
    fn each_container_follows_its_own_tag_after_being_pinned() {
        // GIVEN api and worker from one repository, each on its own tag; api was pinned by us
        let mut t = td(&[("api", &format!("{HOST}/users@{}", digest(1))), ("worker", &format!("{HOST}/users:worker"))]);
        t.tags.insert(container_tag_key("api"), "api".into());
        t.tags.insert(TAG_SOURCE_TAG.into(), "api".into());
        let s = service(&[(TAG_DEPLOY, "on")]);
        let changed = |tag: &str| match decision(&push(tag, 2), &s, &t, &facts(image(2, &[tag], 100))) {
            Decision::Update { changes, .. } => changes.into_iter().map(|c| c.container).collect::<Vec<_>>(),
            Decision::Skip(reason) => panic!("{tag}: {reason}"),
        };
        // THEN a push of api moves only api, and a push of worker only worker
        assert_eq!(changed("api"), ["api"]);
        assert_eq!(changed("worker"), ["worker"]);
    }

    #[test]
    fn a_container_pinned_by_a_person_is_not_adopted() {
        // A digest-pinned container with no recorded tag follows nothing, even
        // when the revision records the tag of another container.
        let mut t = td(&[("api", &format!("{HOST}/users@{}", digest(1)))]);
        t.tags.insert(TAG_SOURCE_TAG.into(), "latest".into());
        let reason = skipped(decision(
            &push("latest", 2),
            &service(&[(TAG_DEPLOY, "on")]),
            &t,
            &facts(image(2, &["latest"], 1)),
        ));
        assert!(reason.starts_with("no tag to track"), "{reason}");
    }

    #[test]
    fn replays_and_second_tags_of_the_same_digest_do_nothing() {
        let mut t = td(&[("users", &format!("{HOST}/users@{}", digest(2)))]);
        t.tags.insert(container_tag_key("users"), "latest".into());
        let s = service(&[(TAG_DEPLOY, "on"), (TAG_TRACK, "glob:*")]);
        let f = facts(image(2, &["latest", "v1.2.0"], 100));
        for tag in ["latest", "v1.2.0"] {
            assert!(skipped(decision(&push(tag, 2), &s, &t, &f)).starts_with("already running"), "{tag}");
        }
    }

    #[test]
    fn older_pushes_never_roll_back() {
        let t = td(&[("users", &format!("{HOST}/users:latest@{}", digest(3)))]);
        let s = service(&[(TAG_DEPLOY, "on")]);
        let f = ImageFacts {
            pushed: Some(image(2, &["latest"], 100)),
            running: [(digest(3), image(3, &[], 200))].into(),
            ..Default::default()
        };
        assert!(skipped(decision(&push("latest", 2), &s, &t, &f)).starts_with("older push"));
        // A stale event: the tag has moved on to another image since.
        let stale = facts(image(2, &["old"], 300));
        assert!(skipped(decision(&push("latest", 2), &s, &t, &stale)).starts_with("stale event"));
    }

    #[test]
    fn semver_compares_versions_not_push_times() {
        let mut t = td(&[("users", &format!("{HOST}/users@{}", digest(3)))]);
        t.tags.insert(container_tag_key("users"), "v1.4.0".into());
        let s = service(&[(TAG_DEPLOY, "on"), (TAG_TRACK, "semver:^1")]);
        // pushed later, but a lower version
        let f = ImageFacts {
            pushed: Some(image(2, &["1.3.9"], 500)),
            running: [(digest(3), image(3, &[], 100))].into(),
            ..Default::default()
        };
        assert!(skipped(decision(&push("1.3.9", 2), &s, &t, &f)).starts_with("older version"));
        let newer = ImageFacts { pushed: Some(image(2, &["v1.5.0"], 50)), ..f.clone() };
        assert!(matches!(decision(&push("v1.5.0", 2), &s, &t, &newer), Decision::Update { .. }));
        let major = ImageFacts { pushed: Some(image(2, &["2.0.0"], 600)), ..f };
        assert!(skipped(decision(&push("2.0.0", 2), &s, &t, &major)).starts_with("tag \"2.0.0\" is not tracked"));
    }

    #[test]
    fn an_amd64_only_index_is_refused_for_an_arm64_service() {
        let t = td(&[("users", &format!("{HOST}/users:latest"))]);
        let s = service(&[(TAG_DEPLOY, "on")]);
        let amd64 = Platform { os: "linux".into(), architecture: "amd64".into() };
        let f = ImageFacts {
            pushed: Some(image(2, &["latest"], 1)),
            platforms: Some(vec![amd64.clone()]),
            ..Default::default()
        };
        assert!(skipped(decision(&push("latest", 2), &s, &t, &f)).starts_with("platform mismatch"));
        let arm64 = Platform { os: "linux".into(), architecture: "arm64".into() };
        let multi = ImageFacts { platforms: Some(vec![amd64, arm64]), ..f };
        assert!(matches!(decision(&push("latest", 2), &s, &t, &multi), Decision::Update { .. }));
    }

    #[test]
    fn dry_run_by_tag_or_by_configuration_and_circuit_breaker_warning() {
        let t = td(&[("users", &format!("{HOST}/users:latest"))]);
        let f = facts(image(2, &["latest"], 1));
        let mut s = service(&[(TAG_DEPLOY, "dry-run")]);
        s.circuit_breaker_rollback = false;
        let plan = plan_service(&push("latest", 2), &s, &t, &f, false).expect("considered");
        assert!(matches!(plan.decision, Decision::Update { dry_run: true, .. }));
        assert_eq!(plan.warnings.len(), 1);
        let on = service(&[(TAG_DEPLOY, "on")]);
        assert!(matches!(decision_with(&on, &t, &f, true), Decision::Update { dry_run: true, .. }));
    }

    fn decision_with(s: &Service, t: &TaskDefinition, f: &ImageFacts, dry_run: bool) -> Decision {
        plan_service(&push("latest", 2), s, t, f, dry_run).expect("considered").decision
    }

    #[test]
    fn container_scope_limits_what_changes() {
        let t = td(&[("api", &format!("{HOST}/users:latest")), ("worker", &format!("{HOST}/users:latest"))]);
        let s = service(&[(TAG_DEPLOY, "on"), (TAG_CONTAINERS, "worker, ghost")]);
        let plan =
            plan_service(&push("latest", 2), &s, &t, &facts(image(2, &["latest"], 1)), false).expect("considered");
        let Decision::Update { changes, .. } = plan.decision else { panic!("expected update") };
        assert_eq!(changes.iter().map(|c| c.container.as_str()).collect::<Vec<_>>(), ["worker"]);
        assert!(plan.warnings.iter().any(|w| w.contains("\"ghost\"")));
    }

    #[test]
    fn skips_are_classified_for_the_pushes_skipped_metric() {
        let class = |p: &Push, s: &Service, t: &TaskDefinition, f: &ImageFacts| {
            plan_service(p, s, t, f, false).expect("considered").skip_class
        };
        let t = td(&[("users", &format!("{HOST}/users:latest"))]);
        let s = service(&[(TAG_DEPLOY, "on")]);
        let f = facts(image(2, &["latest"], 1));
        assert_eq!(class(&push("latest", 2), &s, &t, &f), None, "a deploy is no skip");
        let mut code_deploy = s.clone();
        code_deploy.deployment_controller = Some("CODE_DEPLOY".into());
        assert_eq!(class(&push("latest", 2), &code_deploy, &t, &f), Some(SkipClass::Controller));
        let main = facts(image(2, &["main"], 1));
        assert_eq!(class(&push("main", 2), &s, &t, &main), Some(SkipClass::NotTracked));
        let amd64 = ImageFacts { platforms: Some(vec![linux("amd64")]), ..f.clone() };
        assert_eq!(class(&push("latest", 2), &s, &t, &amd64), Some(SkipClass::Platform));
        let pinned = td(&[("users", &format!("{HOST}/users:latest@{}", digest(3)))]);
        let older =
            ImageFacts { running: [(digest(3), image(3, &[], 200))].into(), ..facts(image(2, &["latest"], 100)) };
        assert_eq!(class(&push("latest", 2), &s, &pinned, &older), Some(SkipClass::Older));
        let stale = facts(image(2, &["old"], 300));
        assert_eq!(class(&push("latest", 2), &s, &t, &stale), Some(SkipClass::Older), "a tag moved on");
        let running = td(&[("users", &format!("{HOST}/users:latest@{}", digest(2)))]);
        assert_eq!(class(&push("latest", 2), &s, &running, &f), None, "a replay is not counted");
        let invalid = service(&[(TAG_DEPLOY, "yes")]);
        assert_eq!(class(&push("latest", 2), &invalid, &t, &f), None);
        let names: Vec<&str> = SkipClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["platform", "older", "not-tracked", "artifact", "controller"]);
    }

    #[test]
    fn code_deploy_and_external_services_are_skipped_naming_their_controller() {
        let t = td(&[("users", &format!("{HOST}/users:latest"))]);
        let f = facts(image(2, &["latest"], 1));
        for controller in ["CODE_DEPLOY", "EXTERNAL"] {
            let mut s = service(&[(TAG_DEPLOY, "on")]);
            s.deployment_controller = Some(controller.into());
            let reason = skipped(decision(&push("latest", 2), &s, &t, &f));
            assert!(reason.starts_with(&format!("deployment controller {controller}")), "{reason}");
        }
        let mut ecs = service(&[(TAG_DEPLOY, "on")]);
        ecs.deployment_controller = Some("ECS".into());
        assert!(matches!(decision(&push("latest", 2), &ecs, &t, &f), Decision::Update { .. }));
    }

    #[test]
    fn a_container_naming_a_tag_is_compared_with_the_digest_ecs_pinned() {
        // GIVEN users names release-5's image by tag and tracks release-*;
        // ECS resolved that tag to digest 5, pushed at 500
        let t = td(&[("users", &format!("{HOST}/users:release-5"))]);
        for track in ["glob:release-*", "regex:release-[0-9]+"] {
            let s = service(&[(TAG_DEPLOY, "on"), (TAG_TRACK, track)]);
            let mut f = ImageFacts {
                pushed: Some(image(4, &["release-4"], 400)),
                running: [(digest(5), image(5, &["release-5"], 500))].into(),
                ..Default::default()
            };
            f.pinned_by_ecs.insert((s.arn.clone(), "users".into()), digest(5));
            // WHEN release-4's event arrives late THEN it is skipped, saying what runs
            let reason = skipped(decision(&push("release-4", 4), &s, &t, &f));
            assert!(reason.starts_with("older push: users runs"), "{track}: {reason}");
            assert!(reason.contains("release-5"), "{reason}");
            // AND a newer push deploys
            let newer = ImageFacts { pushed: Some(image(6, &["release-6"], 600)), ..f.clone() };
            assert!(matches!(decision(&push("release-6", 6), &s, &t, &newer), Decision::Update { .. }), "{track}");
            // AND the digest ECS already runs is not deployed again
            let same = ImageFacts { pushed: Some(image(5, &["release-5"], 500)), ..f };
            assert!(skipped(decision(&push("release-5", 5), &s, &t, &same)).starts_with("already running"));
        }
    }

    #[test]
    fn semver_reads_a_digest_pins_version_from_the_tags_ecr_holds() {
        // GIVEN a container pinned by a person to 1.4.0's digest, no recorded tag
        let t = td(&[("users", &format!("{HOST}/users@{}", digest(3)))]);
        let s = service(&[(TAG_DEPLOY, "on"), (TAG_TRACK, "semver:^1")]);
        let f = ImageFacts {
            pushed: Some(image(2, &["1.0.1"], 900)),
            running: [(digest(3), image(3, &["1.4.0", "stable"], 100))].into(),
            ..Default::default()
        };
        let reason = skipped(decision(&push("1.0.1", 2), &s, &t, &f));
        assert_eq!(reason, format!("older version: users runs 1.4.0 ({}), the push is 1.0.1", digest(3)));
        let higher = ImageFacts { pushed: Some(image(2, &["1.5.0"], 900)), ..f };
        assert!(matches!(decision(&push("1.5.0", 2), &s, &t, &higher), Decision::Update { .. }));
    }

    #[test]
    fn a_single_platform_image_is_checked_like_an_index() {
        let t = td(&[("users", &format!("{HOST}/users:latest"))]);
        let s = service(&[(TAG_DEPLOY, "on")]);
        let amd64 = ImageFacts { platforms: Some(vec![linux("amd64")]), ..facts(image(2, &["latest"], 1)) };
        let reason = skipped(decision(&push("latest", 2), &s, &t, &amd64));
        assert_eq!(
            reason,
            "platform mismatch: the service runs linux/arm64 (its runtimePlatform), the image offers linux/amd64"
        );
        let arm64 = ImageFacts { platforms: Some(vec![linux("arm64")]), ..amd64 };
        assert!(matches!(decision(&push("latest", 2), &s, &t, &arm64), Decision::Update { .. }));
    }

    #[test]
    fn windows_services_compare_the_os_too() {
        let mut t = td(&[("users", &format!("{HOST}/users:latest"))]);
        t.cpu_architecture = Some("X86_64".into());
        t.os_family = Some("WINDOWS_SERVER_2022_CORE".into());
        let s = service(&[(TAG_DEPLOY, "on")]);
        let linux_image = ImageFacts { platforms: Some(vec![linux("amd64")]), ..facts(image(2, &["latest"], 1)) };
        assert!(skipped(decision(&push("latest", 2), &s, &t, &linux_image)).contains("runs windows/amd64"));
        let windows = Platform { os: "windows".into(), architecture: "amd64".into() };
        let windows_image = ImageFacts { platforms: Some(vec![windows]), ..linux_image };
        assert!(matches!(decision(&push("latest", 2), &s, &t, &windows_image), Decision::Update { .. }));
    }

    #[test]
    fn without_runtime_platform_the_capacity_decides_else_unknown_is_reported() {
        let mut t = td(&[("users", &format!("{HOST}/users:latest"))]);
        t.cpu_architecture = None;
        t.os_family = None;
        let mut s = service(&[(TAG_DEPLOY, "on")]);
        s.launch_type = Some("EC2".into());
        let amd64_image = ImageFacts { platforms: Some(vec![linux("amd64")]), ..facts(image(2, &["latest"], 1)) };
        // Graviton capacity: an amd64 image is refused.
        let mut graviton = amd64_image.clone();
        graviton.capacity.insert("prod".into(), vec![linux("arm64")]);
        let reason = skipped(decision(&push("latest", 2), &s, &t, &graviton));
        assert!(reason.contains("linux/arm64 (its cluster's container instances)"), "{reason}");
        // Mixed or no capacity: unknown, reported, not refused.
        let mut mixed = amd64_image.clone();
        mixed.capacity.insert("prod".into(), vec![linux("amd64"), linux("arm64")]);
        let plan = plan_service(&push("latest", 2), &s, &t, &mixed, false).expect("considered");
        assert!(matches!(plan.decision, Decision::Update { .. }));
        assert!(plan.warnings.iter().any(|w| w.starts_with("platform unknown")), "{:?}", plan.warnings);
        let plan = plan_service(&push("latest", 2), &s, &t, &amd64_image, false).expect("considered");
        assert!(plan.warnings.iter().any(|w| w.contains("no EC2 container instance")), "{:?}", plan.warnings);
        // Fargate without runtimePlatform is Linux on X86_64.
        s.launch_type = Some("FARGATE".into());
        assert!(matches!(decision(&push("latest", 2), &s, &t, &amd64_image), Decision::Update { .. }));
    }

    fn arb_image() -> impl Strategy<Value = String> {
        let hosts = prop::sample::select(vec![
            HOST,
            "123456789012.dkr-ecr.us-east-1.on.aws",
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
            "210987654321.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "public.ecr.aws",
        ]);
        let repos = prop::sample::select(vec!["users", "posts", "team/users"]);
        let tags = prop::sample::select(vec!["", ":latest", ":v1.2.0", ":main"]);
        (hosts, repos, tags, 0u8..4).prop_map(|(h, r, t, d)| {
            let pin = if d == 0 { String::new() } else { format!("@{}", digest(d)) };
            format!("{h}/{r}{t}{pin}")
        })
    }

    proptest! {
        /// Whatever the service looks like, an update only ever pins containers
        /// that run the pushed repository in the pushed registry, inside the
        /// container scope, to exactly the pushed digest on the host they used.
        #[test]
        fn updates_touch_only_matching_containers(
            images in prop::collection::vec(arb_image(), 1..5),
            scope in prop::option::of(prop::collection::vec(0usize..5, 0..3)),
            track in prop::option::of(prop::sample::select(vec!["latest", "glob:*", "semver:^1", "regex:v?1\\..*", "main"])),
            tag in prop::sample::select(vec!["latest", "v1.2.0", "main", "1.9.9"]),
            pushed_tags_include in any::<bool>(),
        ) {
            let named: Vec<(String, String)> = images.iter().enumerate().map(|(i, img)| (format!("c{i}"), img.clone())).collect();
            let refs: Vec<(&str, &str)> = named.iter().map(|(n, i)| (n.as_str(), i.as_str())).collect();
            let t = td(&refs);
            let mut tags = vec![(TAG_DEPLOY.to_string(), "on".to_string())];
            if let Some(track) = track { tags.push((TAG_TRACK.into(), track.into())); }
            if let Some(scope) = &scope {
                tags.push((TAG_CONTAINERS.into(), scope.iter().map(|i| format!("c{i}")).collect::<Vec<_>>().join(",")));
            }
            let tag_refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let s = service(&tag_refs);
            let p = push(tag, 9);
            let pushed_tags: Vec<&str> = if pushed_tags_include { vec![tag] } else { vec!["other"] };
            let f = facts(image(9, &pushed_tags, 1_000));
            let Some(plan) = plan_service(&p, &s, &t, &f, false) else { return Ok(()) };
            if let Decision::Update { changes, .. } = plan.decision {
                prop_assert!(pushed_tags_include, "a stale event deployed");
                prop_assert!(!changes.is_empty());
                for change in changes {
                    let (_, original) = named.iter().find(|(n, _)| *n == change.container).expect("known container");
                    let r = ImageRef::parse(original).expect("parses");
                    let registry = r.ecr_registry().expect("an ECR registry");
                    prop_assert_eq!(registry.account.as_str(), "123456789012");
                    prop_assert_eq!(registry.region.as_str(), "us-east-1");
                    prop_assert_eq!(r.repository.as_str(), "users");
                    if let Some(scope) = &scope {
                        let in_scope = scope.iter().any(|i| format!("c{i}") == change.container);
                        prop_assert!(in_scope, "{} is outside the scope", change.container);
                    }
                    prop_assert_eq!(change.to, format!("{}/users@{}", r.host, digest(9)));
                }
            }
        }
    }
}
