//! The registry audit quota-scan runs each hour: what a repository's native
//! ECR lifecycle policy will do to images something uses, and settings that
//! work against the way ecr-autopilot runs a repository. Pure.
//!
//! ECR evaluates a native lifecycle policy itself, within 24 hours, and knows
//! nothing of ECS, Lambda or schedules. Our engine ([`crate::lifecycle`])
//! reproduces ECR's documented semantics, so evaluating the native policy
//! now and at now + 24 h over the repository's images, against the "in use"
//! set ([`crate::in_use`]), names every image in use that ECR will expire
//! (or archive: an archived image cannot be pulled either) before it does.
//!
//! Other findings, one short line each:
//! - `mutableTrackedTag`: tags are MUTABLE and a deploy-on-push service
//!   follows one exact tag of the repository;
//! - `scanOnPushOff`: the repository's own scan-on-push setting is off;
//! - `twoDeleters`: a native policy and prune-images both delete here;
//! - `nativePolicyUnreadable`: the native policy does not parse (reported,
//!   never fatal; the in-use check is then not possible).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::image_ref::ImageRef;
use crate::in_use::InUse;
use crate::lifecycle::{Action, Candidate, Policy};
use crate::prune::{self, RepoImage, RepositoryId};

/// How far ahead the audit looks: ECR acts on a lifecycle policy within 24 hours.
pub const LOOKAHEAD_SECONDS: i64 = 86_400;

/// When the native policy acts on an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Due {
    /// The policy selects it now: ECR may act at any moment.
    Now,
    /// Not yet, but by now + 24 h.
    Within24h,
}

/// An image in use that the native policy expires or archives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InUseExpiry {
    pub digest: String,
    pub tags: Vec<String>,
    /// The `rulePriority` of the native rule that acts on it.
    pub rule_priority: u32,
    /// `expire` or `transition` (to archive).
    pub action: Action,
    pub due: Due,
    /// Who uses it, e.g. `service prod/web in us-east-1 (digest)`.
    pub used_by: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingKind {
    NativePolicyUnreadable,
    MutableTrackedTag,
    ScanOnPushOff,
    TwoDeleters,
}

/// One audit finding other than an in-use expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: FindingKind,
    pub message: String,
}

/// Whether the repository has a native lifecycle policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NativePolicy {
    #[default]
    None,
    Present,
    /// Present, but our engine cannot read it (see the findings).
    Unreadable,
}

/// One repository's audit, the `audit` field of its quota-scan report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryAudit {
    pub native_policy: NativePolicy,
    /// Images (in use or not) the native policy expires or archives now, and
    /// by now + 24 h.
    pub native_policy_acts_now: usize,
    pub native_policy_acts_within24h: usize,
    /// Images in use that the native policy expires or archives: the figure
    /// behind `NativePolicyInUseExpiries`. `None` when the "in use" set could
    /// not be read (nothing can be said) or there is no readable policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_expiries: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expiries: Vec<InUseExpiry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// A read the audit needed failed (the shell fills it in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the audit knows about one repository.
pub struct AuditInput<'a> {
    pub repository: &'a RepositoryId,
    /// `imageTagMutability`, if DescribeRepositories said.
    pub tag_mutability: Option<&'a str>,
    /// The repository's own `scanOnPush`, if DescribeRepositories said.
    pub scan_on_push: Option<bool>,
    /// GetLifecyclePolicy's text; `None`: no native policy.
    pub native_policy: Option<&'a str>,
    /// Whether prune-images deletes in this repository (its `autopilot:prune`
    /// tag, else `PRUNE_DEFAULT_MODE`), and how that was decided.
    pub pruned_by: Option<String>,
    pub images: &'a [RepoImage],
    /// `None` when an in-use source could not be read.
    pub uses: Option<&'a InUse>,
    pub now: i64,
}

/// Whether prune-images deletes in a repository with this `autopilot:prune`
/// tag value, given its `PRUNE_DEFAULT_MODE`: `Some(why)` when it does.
/// An invalid tag makes prune-images skip the repository.
pub fn prune_deletes(tag: Option<&str>, default_mode: &str) -> Option<String> {
    let on = |v: &str| v.trim().eq_ignore_ascii_case("on");
    match tag {
        Some(v) => on(v).then(|| format!("{}={}", prune::TAG_PRUNE, v.trim())),
        None => on(default_mode).then(|| "PRUNE_DEFAULT_MODE=on (no autopilot:prune tag)".to_string()),
    }
}

pub fn audit(input: &AuditInput) -> RepositoryAudit {
    let mut audit = RepositoryAudit::default();
    if let Some(text) = input.native_policy {
        match Policy::parse(text) {
            Ok(policy) => {
                audit.native_policy = NativePolicy::Present;
                native_policy_expiries(input, &policy, &mut audit);
            }
            Err(problem) => {
                audit.native_policy = NativePolicy::Unreadable;
                audit.findings.push(Finding {
                    kind: FindingKind::NativePolicyUnreadable,
                    message: format!(
                        "the native lifecycle policy cannot be evaluated ({problem}); what it will expire is not known"
                    ),
                });
            }
        }
        if let Some(why) = &input.pruned_by {
            audit.findings.push(Finding {
                kind: FindingKind::TwoDeleters,
                message: format!(
                    "two deleters: a native lifecycle policy and prune-images ({why}); keep prune-images, which never \
                     deletes an image in use, and remove the native policy (README: moving from a native lifecycle policy)"
                ),
            });
        }
    }
    if input.tag_mutability == Some("MUTABLE") {
        let tracked = tracked_tags(input);
        if !tracked.is_empty() {
            let who: Vec<String> =
                tracked.iter().map(|(tag, users)| format!("{tag} by {}", users.join(", "))).collect();
            audit.findings.push(Finding {
                kind: FindingKind::MutableTrackedTag,
                message: format!(
                    "tags are MUTABLE and deploy-on-push follows exact tags ({}): any push can move such a tag; \
                     set IMMUTABLE and track with semver: or glob:",
                    who.join("; ")
                ),
            });
        }
    }
    if input.scan_on_push == Some(false) {
        audit.findings.push(Finding {
            kind: FindingKind::ScanOnPushOff,
            message: "scan on push is off for this repository (its own setting; a registry-level scanning \
                      configuration, if you have one, takes precedence)"
                .into(),
        });
    }
    audit
}

/// Evaluates the native policy now and at now + 24 h and records the images
/// in use it acts on. Only standard and archive rows are candidates, as ECR
/// sees them.
fn native_policy_expiries(input: &AuditInput, policy: &Policy, audit: &mut RepositoryAudit) {
    let candidates: Vec<Candidate> = input.images.iter().map(RepoImage::candidate).collect();
    let now = policy.evaluate(&candidates, input.now);
    let later = policy.evaluate(&candidates, input.now + LOOKAHEAD_SECONDS);
    audit.native_policy_acts_now = now.len();
    audit.native_policy_acts_within24h = later.keys().filter(|d| !now.contains_key(*d)).count();
    let Some(uses) = input.uses else { return };
    let users = prune::users_of(input.repository, input.images, uses);
    let by_digest: BTreeMap<&str, &RepoImage> = input.images.iter().map(|i| (i.digest.as_str(), i)).collect();
    for (digest, who) in &users {
        let (decision, due) = match (now.get(digest), later.get(digest)) {
            (Some(d), _) => (d, Due::Now),
            (None, Some(d)) => (d, Due::Within24h),
            (None, None) => continue,
        };
        let mut used_by: Vec<String> = who.iter().map(|(user, how)| format!("{user} ({how})")).collect();
        used_by.sort();
        audit.expiries.push(InUseExpiry {
            digest: digest.clone(),
            tags: by_digest.get(digest.as_str()).map(|i| i.tags.clone()).unwrap_or_default(),
            rule_priority: decision.rule,
            action: decision.action,
            due,
            used_by,
        });
    }
    audit.in_use_expiries = Some(audit.expiries.len());
}

/// Tag → the deploy-on-push services that follow exactly that tag of this repository.
fn tracked_tags(input: &AuditInput) -> BTreeMap<String, Vec<String>> {
    let mut tracked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (reference, users) in input.uses.map(|u| &u.tracked_tags).into_iter().flatten() {
        let Some(image) = ImageRef::parse(reference) else { continue };
        let Some(tag) = image.tag.clone().filter(|_| prune::is_ours(input.repository, &image)) else { continue };
        tracked.entry(tag).or_default().extend(users.iter().map(ToString::to_string));
    }
    tracked.into_iter().map(|(tag, users)| (tag, users.into_iter().collect())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_use::{Source, User};

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;
    /// The tutorials' native policy: untagged images older than a day.
    const UNTAGGED_1_DAY: &str = r#"{"rules": [{"rulePriority": 1, "description": "untagged after a day",
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
        "action": {"type": "expire"}}]}"#;

    fn d(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    fn image(n: u32, tags: &[&str], pushed_at: i64) -> RepoImage {
        RepoImage {
            digest: d(n),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at,
            size_bytes: Some(100),
            ..RepoImage::default()
        }
    }

    fn repository() -> RepositoryId {
        RepositoryId { name: "users".into(), account: "123456789012".into(), region: "us-east-1".into() }
    }

    fn web() -> User {
        User::new(Source::ServiceDeployment, "prod/web", "us-east-1")
    }

    fn uses_pinning(n: u32) -> InUse {
        let mut uses = InUse::default();
        uses.add_digest(d(n), web());
        uses
    }

    fn input<'a>(
        repository: &'a RepositoryId,
        policy: Option<&'a str>,
        images: &'a [RepoImage],
        uses: Option<&'a InUse>,
    ) -> AuditInput<'a> {
        AuditInput {
            repository,
            tag_mutability: Some("IMMUTABLE"),
            scan_on_push: Some(true),
            native_policy: policy,
            pruned_by: None,
            images,
            uses,
            now: NOW,
        }
    }

    #[test]
    fn an_image_in_use_that_ages_past_the_rule_within_a_day_is_reported_as_due_within_24h() {
        // GIVEN an untagged image pushed 20 hours ago that a service pins,
        // one pushed 3 days ago that it also pins, and an old unused one
        let repository = repository();
        let images = [image(1, &[], NOW - 20 * 3600), image(2, &[], NOW - 3 * DAY), image(3, &[], NOW - 3 * DAY)];
        let mut uses = uses_pinning(1);
        uses.add_digest(d(2), web());
        // WHEN the native policy is audited
        let audit = audit(&input(&repository, Some(UNTAGGED_1_DAY), &images, Some(&uses)));
        // THEN both images in use are reported, with when and by which rule
        assert_eq!(audit.native_policy, NativePolicy::Present);
        assert_eq!(audit.in_use_expiries, Some(2));
        let due: Vec<(String, Due, u32)> =
            audit.expiries.iter().map(|e| (e.digest.clone(), e.due, e.rule_priority)).collect();
        assert_eq!(due, [(d(1), Due::Within24h, 1), (d(2), Due::Now, 1)]);
        assert_eq!(audit.expiries[0].used_by, ["service prod/web in us-east-1 (digest)"]);
        assert_eq!(audit.expiries[0].action, Action::Expire);
        // and the totals count every image the policy acts on, in use or not
        assert_eq!((audit.native_policy_acts_now, audit.native_policy_acts_within24h), (2, 1));
        assert!(audit.findings.is_empty(), "{:?}", audit.findings);
    }

    #[test]
    fn an_image_in_use_the_policy_does_not_reach_within_a_day_is_not_reported() {
        let untagged_3_days = UNTAGGED_1_DAY.replace(r#""countNumber": 1"#, r#""countNumber": 3"#);
        let repository = repository();
        // pushed an hour ago: the 3-day rule reaches it in 71 hours
        let images = [image(1, &[], NOW - 3600)];
        let uses = uses_pinning(1);
        let audit = audit(&input(&repository, Some(&untagged_3_days), &images, Some(&uses)));
        assert_eq!(audit.in_use_expiries, Some(0));
        assert!(audit.expiries.is_empty());
    }

    #[test]
    fn a_tag_a_service_names_counts_for_the_image_it_points_at() {
        // keep the newest 1 image: `v1` is expired, and a service runs `users:v1`
        let keep_one = r#"{"rules": [{"rulePriority": 7, "selection": {"tagStatus": "any",
            "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}"#;
        let repository = repository();
        let images = [image(1, &["v1"], NOW - 2 * DAY), image(2, &["v2"], NOW - DAY)];
        let mut uses = InUse::default();
        uses.add_reference(format!("{HOST}/users:v1"), web());
        uses.add_reference(format!("{HOST}/other:v2"), web());
        let audit = audit(&input(&repository, Some(keep_one), &images, Some(&uses)));
        assert_eq!(audit.expiries.len(), 1);
        assert_eq!((audit.expiries[0].digest.as_str(), audit.expiries[0].rule_priority), (d(1).as_str(), 7));
        assert_eq!(audit.expiries[0].tags, ["v1"]);
        assert_eq!(audit.expiries[0].used_by, ["service prod/web in us-east-1 (tag v1)"]);
    }

    #[test]
    fn a_repository_without_a_native_policy_has_nothing_to_expire() {
        let repository = repository();
        let images = [image(1, &[], NOW - 30 * DAY)];
        let uses = uses_pinning(1);
        let mut without = input(&repository, None, &images, Some(&uses));
        without.pruned_by = prune_deletes(None, "on");
        let audit = audit(&without);
        assert_eq!(audit.native_policy, NativePolicy::None);
        assert_eq!(audit.in_use_expiries, None);
        assert!(audit.expiries.is_empty());
        // prune-images alone is one deleter, not two
        assert!(audit.findings.is_empty(), "{:?}", audit.findings);
    }

    #[test]
    fn a_malformed_native_policy_is_a_finding_not_a_failure() {
        let repository = repository();
        let images = [image(1, &[], NOW - 30 * DAY)];
        let uses = uses_pinning(1);
        for broken in [
            "{not json",
            r#"{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "sometimes", "countType": "sinceImagePushed",
                "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}}]}"#,
            r#"{"rules": []}"#,
        ] {
            let audit = audit(&input(&repository, Some(broken), &images, Some(&uses)));
            assert_eq!(audit.native_policy, NativePolicy::Unreadable, "{broken}");
            assert_eq!(audit.in_use_expiries, None, "nothing can be said: {broken}");
            assert_eq!(audit.findings.len(), 1, "{broken}");
            assert_eq!(audit.findings[0].kind, FindingKind::NativePolicyUnreadable);
            let message = &audit.findings[0].message;
            assert!(message.starts_with("the native lifecycle policy cannot be evaluated ("), "{message}");
        }
    }

    #[test]
    fn without_the_in_use_set_the_policy_is_evaluated_but_no_figure_is_given() {
        let repository = repository();
        let images = [image(1, &[], NOW - 30 * DAY)];
        let audit = audit(&input(&repository, Some(UNTAGGED_1_DAY), &images, None));
        assert_eq!(audit.native_policy_acts_now, 1);
        assert_eq!(audit.in_use_expiries, None);
    }

    #[test]
    fn an_archive_rule_on_an_image_in_use_is_reported_too() {
        let archive = r#"{"rules": [{"rulePriority": 3, "selection": {"tagStatus": "any",
            "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30},
            "action": {"type": "transition", "targetStorageClass": "archive"}}]}"#;
        let repository = repository();
        let images = [image(1, &["v1"], NOW - 60 * DAY)];
        let uses = uses_pinning(1);
        let audit = audit(&input(&repository, Some(archive), &images, Some(&uses)));
        assert_eq!(audit.expiries.len(), 1);
        assert_eq!(audit.expiries[0].action, Action::Transition);
    }

    #[test]
    fn mutable_tags_followed_exactly_scan_on_push_and_two_deleters() {
        let repository = repository();
        let images = [image(1, &["latest"], NOW)];
        let mut uses = InUse::default();
        uses.tracked_tags.entry(format!("{HOST}/users:latest")).or_default().insert(web());
        // a tag of another repository is not this one's business
        uses.tracked_tags.entry(format!("{HOST}/posts:stable")).or_default().insert(web());
        let audit = audit(&AuditInput {
            tag_mutability: Some("MUTABLE"),
            scan_on_push: Some(false),
            pruned_by: prune_deletes(Some("on"), "off"),
            ..input(&repository, Some(UNTAGGED_1_DAY), &images, Some(&uses))
        });
        let kinds: Vec<FindingKind> = audit.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::TwoDeleters, FindingKind::MutableTrackedTag, FindingKind::ScanOnPushOff]);
        assert!(audit.findings[0].message.contains("autopilot:prune=on"), "{}", audit.findings[0].message);
        let mutable = &audit.findings[1].message;
        assert!(mutable.contains("latest by service prod/web in us-east-1"), "{mutable}");
        assert!(!mutable.contains("stable"), "{mutable}");

        // IMMUTABLE, scanning on, prune-images off: nothing to say
        let quiet = super::audit(&AuditInput {
            pruned_by: prune_deletes(Some("off"), "on"),
            ..input(&repository, Some(UNTAGGED_1_DAY), &images, Some(&uses))
        });
        assert!(quiet.findings.is_empty(), "{:?}", quiet.findings);
    }

    #[test]
    fn which_repositories_prune_images_deletes_in() {
        assert_eq!(prune_deletes(Some("on"), "off").as_deref(), Some("autopilot:prune=on"));
        assert_eq!(prune_deletes(Some("dry-run"), "on"), None);
        assert_eq!(prune_deletes(Some("off"), "on"), None);
        assert_eq!(prune_deletes(Some("yes"), "on"), None, "an invalid tag: prune-images skips the repository");
        assert!(prune_deletes(None, "on").is_some_and(|why| why.starts_with("PRUNE_DEFAULT_MODE=on")));
        assert_eq!(prune_deletes(None, "dry-run"), None);
    }
}
